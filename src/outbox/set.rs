//! The outboxes of one worker: one per backend of the config in force, plus retired ones (backends
//! that left the config, or only have data left on disk) until they have delivered everything.
//!
//! Invariants: a backend identity (name + url) has at most one outbox per worker, so a reload that
//! keeps a backend keeps its log and its place in the send order; `of(i)` follows the config's backend
//! order, and changes only in `apply`. Each outbox's upstream connection is registered with the
//! token `token_of(id)`, a range of its own, so the worker needs no table to find the outbox of an
//! event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::deflate::Deflate;
use super::{Cx, LogOptions, Outbox};
use crate::config::{Backend, Config};
use crate::slab::Slab;
use crate::upstream::Registry as States;

/// Outbox tokens start here, half way up the token space (any pointer width); tokens below belong to
/// the worker (listener, waker, connections).
pub const FIRST_TOKEN: usize = usize::MAX / 2 + 1;

pub struct Outboxes {
    outboxes: Slab<Outbox>,
    /// Config backend index → outbox id (`None`: its logs could not be opened).
    by_backend: Vec<Option<usize>>,
    opts: LogOptions,
    /// Gzip for every outbox of this worker (replicas share identical batches).
    deflate: Deflate,
}

/// The token of outbox `id`, and back.
fn token_of(id: usize) -> Token {
    Token(FIRST_TOKEN + id)
}

pub fn outbox_of(token: Token) -> Option<usize> {
    token.0.checked_sub(FIRST_TOKEN)
}

impl Outboxes {
    /// Opens outboxes for every backend of `config` (recovering their logs), and retired ones for
    /// backends that only have data left on disk, so that data is still delivered.
    pub fn open(config: &Config, opts: LogOptions, states: &States) -> Outboxes {
        let mut set = Outboxes { outboxes: Slab::default(), by_backend: Vec::new(), opts, deflate: Deflate::default() };
        set.apply(config);
        for (name, fields) in super::stored_backends(&set.opts.data_dir) {
            let url = fields.get("url").cloned().unwrap_or_default();
            if config.backends.iter().any(|b| b.name == name && b.url == url) {
                continue;
            }
            match Config::retired_backend(&name, &fields, states) {
                Ok(b) => {
                    if let Some(o) = set.open_one(Arc::new(b)).and_then(|id| set.outboxes.get_mut(id)) {
                        o.retired = true;
                    }
                }
                Err(e) => log::error!("cannot deliver stored data of removed backend {name} ({url}): {e}"),
            }
        }
        set
    }

    /// Follows a new config: backends it keeps keep their outbox (with the new settings), new ones get
    /// one, removed ones are retired: they take no new lines and close once drained.
    pub fn apply(&mut self, config: &Config) {
        let mut by_backend = Vec::with_capacity(config.backends.len());
        for backend in &config.backends {
            let existing = self.outboxes.iter().find(|(_, o)| o.backend.same_identity(backend)).map(|(i, _)| i);
            let id = match existing {
                Some(id) => {
                    if let Some(o) = self.outboxes.get_mut(id) {
                        o.update(backend.clone());
                    }
                    Some(id)
                }
                None => self.open_one(backend.clone()),
            };
            by_backend.push(id);
        }
        for (id, o) in self.outboxes.iter_mut() {
            if !by_backend.contains(&Some(id)) && !o.retired {
                o.retired = true;
                log::info!(
                    "backend {} ({}) left the config: delivering what it still has",
                    o.backend.name,
                    o.backend.url
                );
            }
        }
        self.by_backend = by_backend;
    }

    fn open_one(&mut self, backend: Arc<Backend>) -> Option<usize> {
        let id = self.outboxes.vacant();
        match Outbox::open(backend.clone(), token_of(id), &self.opts) {
            Ok((outbox, recovery)) => {
                if recovery.records > 0 {
                    log::info!(
                        "backend {}: worker {} recovered {} batches ({} bytes) from {} segments",
                        backend.name,
                        self.opts.worker,
                        recovery.records,
                        recovery.payload_bytes,
                        recovery.segments
                    );
                }
                for p in &recovery.problems {
                    log::warn!("backend {}: {p}", backend.name);
                }
                Some(self.outboxes.insert(outbox))
            }
            Err(e) => {
                log::error!("backend {}: cannot open outbox logs: {e}; its lines will be refused", backend.name);
                None
            }
        }
    }

    /// The outbox of config backend `i`.
    #[inline]
    pub fn of(&mut self, i: usize) -> Option<&mut Outbox> {
        let id = (*self.by_backend.get(i)?)?;
        self.outboxes.get_mut(id)
    }

    /// `plain` gzipped at `level` into the start of `out`, with the worker's compressor (see
    /// `Deflate::gzip_into`).
    pub fn gzip_into(&mut self, level: u32, plain: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        self.deflate.gzip_into(level, plain, out)
    }

    /// Readiness on outbox `id`'s connection.
    pub fn on_event(&mut self, id: usize, registry: &Registry, now: Instant) {
        let Outboxes { outboxes, deflate, .. } = self;
        if let Some(o) = outboxes.get_mut(id) {
            o.on_event(&mut Cx { now, registry, deflate });
        }
    }

    /// A bug was caught while handling outbox `id`: forget its send (the batch stays in the log).
    pub fn reset(&mut self, id: usize, registry: &Registry) {
        if let Some(o) = self.outboxes.get_mut(id) {
            o.reset_sender(registry);
        }
    }

    /// Timers of every outbox (flush ages, send timeouts, retries); closes retired outboxes that
    /// delivered everything.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        let Outboxes { outboxes, deflate, .. } = self;
        // Every batch due is sealed and compressed before any is sent: replicas' identical batches
        // then meet in the compressor's cache and are compressed once.
        for (_, o) in outboxes.iter_mut() {
            o.seal_aged(now);
        }
        for (_, o) in outboxes.iter_mut() {
            o.gzip_sealed(deflate);
        }
        for (_, o) in outboxes.iter_mut() {
            o.tick(&mut Cx { now, registry, deflate });
        }
        let drained: Vec<usize> =
            outboxes.iter().filter(|(_, o)| o.retired && o.is_drained()).map(|(i, _)| i).collect();
        for id in drained {
            if let Some(o) = outboxes.remove(id) {
                log::info!("backend {} ({}): all its data delivered; outbox closed", o.backend.name, o.backend.url);
            }
        }
    }

    /// When the next outbox needs `tick` (see `Outbox::next_deadline`).
    pub fn next_deadline(&self, now: Instant, recheck: Duration) -> Option<Instant> {
        self.outboxes.iter().filter_map(|(_, o)| o.next_deadline(now, recheck)).min()
    }

    /// Seals every open batch (shutdown: send everything now).
    pub fn seal_open(&mut self) {
        for (_, o) in self.outboxes.iter_mut() {
            o.seal_open();
        }
    }

    /// Nothing more will happen soon in any outbox (see `Outbox::settled`).
    pub fn settled(&self, now: Instant) -> bool {
        self.outboxes.iter().all(|(_, o)| o.settled(now))
    }

    /// Some outbox's backend takes batches more slowly than writers bring them (`Outbox::outpaced`).
    /// Every outbox is looked at, so each one's least backlog stays current.
    pub fn outpaced(&mut self, limit: u64) -> bool {
        self.outboxes.iter_mut().fold(false, |any, (_, o)| o.outpaced(limit) | any)
    }

    /// Batches not yet acknowledged, all outboxes together.
    pub fn pending_records(&self) -> u64 {
        self.outboxes.iter().map(|(_, o)| o.pending_records()).sum()
    }
}
