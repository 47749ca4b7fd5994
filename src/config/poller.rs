//! The config thread: reads the source (Redis or file) every `--poll-interval` ms and whenever a worker
//! forwards a `/reload`, validates a changed config into a new snapshot and hands it to every worker.
//!
//! A source that cannot be read, or a config that does not validate, changes nothing: the snapshot in
//! force keeps serving, the reason is logged (once per distinct reason) and shown by `/health`. A good
//! change is also written to the cache in the data dir, so the next start works without Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::source::{self, Source};
use super::{Config, ConfigError};
use crate::control::{Message, ReloadRequest, WorkerHandle};
use crate::shared::Shared;
use crate::upstream::BackendState;

pub struct Poller {
    shared: Arc<Shared>,
    source: Source,
    node: String,
    workers: Vec<WorkerHandle>,
    interval: Duration,
    last_problem: Option<String>,
}

/// How a refresh ended.
pub enum Refresh {
    Unchanged,
    Applied(u64),
    /// The source could not be read (503) or its config is invalid (400).
    Failed(u16, String),
}

impl Poller {
    pub fn new(
        shared: Arc<Shared>,
        source: Source,
        node: String,
        workers: Vec<WorkerHandle>,
        interval: Duration,
    ) -> Self {
        Poller { shared, source, node, workers, interval: interval.max(Duration::from_millis(100)), last_problem: None }
    }

    pub fn run(mut self, reloads: Receiver<ReloadRequest>) {
        let mut next = Instant::now() + self.interval;
        while !self.shared.shutting_down() {
            let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
            match reloads.recv_timeout(wait) {
                Ok(req) => {
                    let result = self.refresh();
                    let (status, error) = match result {
                        Refresh::Unchanged | Refresh::Applied(_) => (204, None),
                        Refresh::Failed(status, e) => (status, Some(e)),
                    };
                    if let Some(client) = req.client
                        && let Some(w) = self.workers.get(client.worker)
                    {
                        w.send(Message::Reloaded { client, status, error });
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= next => {
                    self.refresh();
                    next = Instant::now() + self.interval;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
        }
    }

    /// Reads, validates and (if changed) applies the config.
    pub fn refresh(&mut self) -> Refresh {
        let current = self.shared.config_status(|s| s.current.clone());
        let raw = match self.source.load() {
            Ok(raw) => raw,
            Err(e) => return self.problem(503, format!("cannot read the config ({e}); keeping the current one")),
        };
        // A certificate file that changed on disk is a change too (rotation without a restart).
        if raw == current.raw && !current.tls_files_changed() {
            self.recovered();
            return Refresh::Unchanged;
        }
        let config = match Config::build(raw, &self.node, &self.shared.registry) {
            Ok(c) => c,
            Err(ConfigError(e)) => {
                return self.problem(400, format!("new config rejected, keeping the current one: {e}"));
            }
        };
        if config.node.listen_raw != current.node.listen_raw {
            log::warn!(
                "config: listenaddr changed from {} to {}: takes effect at the next restart",
                current.node.listen_raw,
                config.node.listen_raw
            );
        }
        for w in &config.warnings {
            log::warn!("config: {w}");
        }
        if self.source.uses_cache()
            && let Err(e) = source::save_cache(&self.shared.settings.data_dir, &config.raw)
        {
            log::warn!("cannot cache the config: {e}");
        }
        let config = Arc::new(config);
        let version = match self.shared.config.lock() {
            Ok(mut s) => {
                s.current = config.clone();
                s.version += 1;
                s.last_error = None;
                s.source = self.source.describe();
                s.version
            }
            Err(_) => return Refresh::Failed(500, "config state poisoned".into()),
        };
        self.last_problem = None;
        BackendState::add(&self.shared.stats.config_reloads, 1);
        log::info!(
            "config version {version} applied: {} backends, {} keymaps",
            config.backends.len(),
            config.raw.keymaps.len()
        );
        for w in &self.workers {
            w.send(Message::Config(config.clone()));
        }
        Refresh::Applied(version)
    }

    fn problem(&mut self, status: u16, msg: String) -> Refresh {
        BackendState::add(&self.shared.stats.config_failures, 1);
        if self.last_problem.as_deref() != Some(&msg) {
            log::error!("{msg}");
            self.last_problem = Some(msg.clone());
        }
        if let Ok(mut s) = self.shared.config.lock() {
            s.last_error = Some(msg.clone());
        }
        Refresh::Failed(status, msg)
    }

    fn recovered(&mut self) {
        if self.last_problem.take().is_some() {
            log::info!("config source readable again; config unchanged");
        }
        if let Ok(mut s) = self.shared.config.lock() {
            s.last_error = None;
            // A start from the cache is now backed by the source itself.
            s.source = self.source.describe();
        }
    }
}
