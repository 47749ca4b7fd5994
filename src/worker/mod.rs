//! A worker: one thread, one `mio::Poll`, its own `SO_REUSEPORT` listener, its client connections, its
//! outboxes (one per backend) and their upstream connections. Workers share nothing on the request path;
//! they meet only in atomics (`Shared`, `BackendState`) touched once per request or batch.
//!
//! Tokens: 0 is the listener, 1 the waker (config changes, shutdown); every other token is a slab index
//! + 2, naming a client connection, an outbox's upstream connection, or a query's upstream connection.

pub mod client;
pub mod slab;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::poller::ReloadRequest;
use crate::config::{Backend, Config};
use crate::defaults::TICK;
use crate::http::auth;
use crate::http::params::Params;
use crate::http::request::Method;
use crate::http::response::{Response, write_error};
use crate::ops;
use crate::outbox::deflate::Deflate;
use crate::outbox::{Cx, LogOptions, Outbox};
use crate::query::{self, Prepared, exec};
use crate::shared::Shared;
use crate::upstream::BackendState;
use crate::write;
use client::{Client, Next, ReadEnd, Request};
use exec::{Task, TaskKind, TaskState};
use slab::Slab;

const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);
const FIRST_SLOT: usize = 2;
/// How long a closing connection keeps draining what the client still sends (see `client_ready`).
const LINGER: Duration = Duration::from_secs(1);

/// What a worker is told from outside.
pub enum Message {
    Config(Arc<Config>),
    /// The answer to a `/reload` this worker forwarded for client slot `client`.
    Reloaded {
        client: usize,
        status: u16,
        error: Option<String>,
    },
    /// Lines a repair/rebalance job copies, to commit to one backend's outbox.
    Job(crate::jobs::Batch),
}

/// What a token names.
enum Slot {
    Client(Box<Client>),
    Outbox(usize),
    /// An upstream connection of a query task.
    Query(usize),
}

pub struct Worker {
    id: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    shared: Arc<Shared>,
    inbox: Receiver<Message>,
    config: Arc<Config>,
    slots: Slab<Slot>,
    clients: usize,
    outboxes: Slab<Outbox>,
    tasks: Slab<Task>,
    /// Gzip for every outbox of this worker (replicas share identical batches).
    deflate: Deflate,
    /// Clients with unread data the last turn did not get to (readiness is edge-triggered).
    revisit: Vec<usize>,
    /// Config backend index → outbox id.
    outbox_of: Vec<usize>,
    log_opts: LogOptions,
    scratch: write::Scratch,
    request_seq: u64,
    next_sweep: Instant,
    /// When worker 0 writes the next self-statistics point.
    next_stats: Instant,
    stop_deadline: Option<Instant>,
}

/// Everything a worker thread needs, made on the main thread so the waker exists before it starts.
pub struct WorkerSetup {
    pub id: usize,
    pub poll: Poll,
    pub waker: Arc<Waker>,
    pub listener: TcpListener,
}

impl WorkerSetup {
    pub fn new(id: usize, listener: TcpListener) -> std::io::Result<WorkerSetup> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(WorkerSetup { id, poll, waker, listener })
    }
}

fn token_of(slot: usize) -> Token {
    Token(slot + FIRST_SLOT)
}

impl Worker {
    /// Opens this worker's outboxes (recovering their logs) for `config` and for backends that only
    /// have data left on disk.
    pub fn new(
        setup: WorkerSetup,
        shared: Arc<Shared>,
        inbox: Receiver<Message>,
        config: Arc<Config>,
    ) -> std::io::Result<Worker> {
        let WorkerSetup { id, poll, listener, .. } = setup;
        let mut listener = listener;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let s = &shared.settings;
        let log_opts = LogOptions {
            data_dir: s.data_dir.clone(),
            worker: id,
            threads: s.threads,
            segment_bytes: s.segment_bytes,
            sync: s.sync,
        };
        let mut w = Worker {
            id,
            poll,
            listener: Some(listener),
            shared: shared.clone(),
            inbox,
            config: config.clone(),
            slots: Slab::default(),
            clients: 0,
            outboxes: Slab::default(),
            tasks: Slab::default(),
            deflate: Deflate::default(),
            revisit: Vec::new(),
            outbox_of: Vec::new(),
            log_opts,
            scratch: write::Scratch::default(),
            request_seq: 0,
            next_sweep: Instant::now(),
            next_stats: Instant::now(),
            stop_deadline: None,
        };
        w.apply_config(config)?;
        // Data of backends that left the config while we were down is still delivered.
        for (name, fields) in crate::outbox::stored_backends(&w.log_opts.data_dir) {
            let url = fields.get("url").cloned().unwrap_or_default();
            if w.config.backends.iter().any(|b| b.name == name && b.url == url) {
                continue;
            }
            match Config::retired_backend(&name, &fields, &shared.registry) {
                Ok(b) => {
                    if let Some(oid) = w.open_outbox(Arc::new(b))
                        && let Some(o) = w.outboxes.get_mut(oid)
                    {
                        o.retired = true;
                    }
                }
                Err(e) => {
                    log::error!("cannot deliver stored data of removed backend {name} ({url}): {e}")
                }
            }
        }
        Ok(w)
    }

    /// Opens (or reuses) outboxes for every backend of `config`; outboxes of removed backends are
    /// retired: they take no new lines and are dropped once drained.
    fn apply_config(&mut self, config: Arc<Config>) -> std::io::Result<()> {
        let mut outbox_of = Vec::with_capacity(config.backends.len());
        for backend in &config.backends {
            let existing = self.outboxes.iter().find(|(_, o)| o.backend.same_identity(backend)).map(|(i, _)| i);
            let oid = match existing {
                Some(oid) => {
                    if let Some(o) = self.outboxes.get_mut(oid) {
                        o.update(backend.clone());
                    }
                    oid
                }
                None => match self.open_outbox(backend.clone()) {
                    Some(oid) => oid,
                    None => usize::MAX,
                },
            };
            outbox_of.push(oid);
        }
        for (oid, o) in self.outboxes.iter_mut() {
            if !outbox_of.contains(&oid) && !o.retired {
                o.retired = true;
                log::info!(
                    "backend {} ({}) left the config: delivering what it still has",
                    o.backend.name,
                    o.backend.url
                );
            }
        }
        self.outbox_of = outbox_of;
        self.config = config;
        Ok(())
    }

    fn open_outbox(&mut self, backend: Arc<Backend>) -> Option<usize> {
        let slot = self.slots.insert(Slot::Outbox(self.outboxes.vacant()));
        match Outbox::open(backend.clone(), token_of(slot), &self.log_opts) {
            Ok((outbox, recovery)) => {
                if recovery.records > 0 {
                    log::info!(
                        "backend {}: worker {} recovered {} batches ({} bytes) from {} segments",
                        backend.name,
                        self.id,
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
                self.slots.remove(slot);
                log::error!("backend {}: cannot open outbox logs: {e}; its lines will be refused", backend.name);
                None
            }
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.revisit.is_empty() { TICK } else { Duration::ZERO };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                log::error!("worker {}: poll failed: {e}", self.id);
                return;
            }
            for event in events.iter() {
                let token = event.token();
                let outcome = catch_unwind(AssertUnwindSafe(|| self.on_event(token)));
                if outcome.is_err() {
                    log::error!("worker {}: bug: panic while handling token {}; connection dropped", self.id, token.0);
                    self.drop_slot(token);
                }
            }
            for i in std::mem::take(&mut self.revisit) {
                if catch_unwind(AssertUnwindSafe(|| self.client_ready(i))).is_err() {
                    log::error!("worker {}: bug: panic while reading client {i}; connection dropped", self.id);
                    self.close_client(i);
                }
            }
            let now = Instant::now();
            if catch_unwind(AssertUnwindSafe(|| self.tick(now))).is_err() {
                log::error!("worker {}: bug: panic in timers", self.id);
            }
            if self.shared.shutting_down() && self.stop_step(now) {
                break;
            }
        }
        log::debug!("worker {} stopped", self.id);
    }

    fn on_event(&mut self, token: Token) {
        match token {
            LISTENER => self.accept(),
            WAKER => self.read_inbox(),
            Token(t) => match self.slots.get(t - FIRST_SLOT) {
                Some(Slot::Client(_)) => self.client_ready(t - FIRST_SLOT),
                Some(Slot::Outbox(oid)) => {
                    let oid = *oid;
                    if let Some(o) = self.outboxes.get_mut(oid) {
                        let cx =
                            &mut Cx { now: Instant::now(), registry: self.poll.registry(), deflate: &mut self.deflate };
                        o.on_event(cx);
                    }
                }
                Some(Slot::Query(task)) => {
                    let task = *task;
                    self.pump_task(task);
                }
                None => {}
            },
        }
    }

    fn drop_slot(&mut self, token: Token) {
        let Some(i) = token.0.checked_sub(FIRST_SLOT) else {
            return;
        };
        match self.slots.get(i) {
            Some(Slot::Client(_)) => self.close_client(i),
            Some(Slot::Query(task)) => {
                if let Some(client) = self.tasks.get(*task).map(|t| t.client) {
                    self.close_client(client);
                }
            }
            Some(Slot::Outbox(oid)) => {
                let oid = *oid;
                if let Some(o) = self.outboxes.get_mut(oid) {
                    o.reset_sender(self.poll.registry());
                }
            }
            None => {}
        }
    }

    fn read_inbox(&mut self) {
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                Message::Config(config) => {
                    if let Err(e) = self.apply_config(config) {
                        log::error!("worker {}: applying the new config failed: {e}", self.id);
                    }
                }
                Message::Reloaded { client, status, error } => self.reloaded(client, status, error),
                Message::Job(batch) => {
                    let backend =
                        self.config.backends.iter().position(|b| b.name == batch.backend && b.url == batch.url);
                    let outbox = backend.and_then(|b| self.outbox_of.get(b)).and_then(|&o| self.outboxes.get_mut(o));
                    self.request_seq += 1;
                    let result = match outbox {
                        Some(o) => crate::jobs::commit(o, self.request_seq, &batch),
                        None => Err(format!("backend {} has no outbox", batch.backend)),
                    };
                    let _ = batch.done.send(result);
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.clients >= self.shared.settings.max_connections {
                        BackendState::add(&self.shared.stats.connections_refused, 1);
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let slot = self.slots.vacant();
                    let mut client = Box::new(Client::new(stream, peer, token_of(slot)));
                    if self.poll.registry().register(&mut client.stream, token_of(slot), Interest::READABLE).is_err() {
                        continue;
                    }
                    self.slots.insert(Slot::Client(client));
                    self.clients += 1;
                    BackendState::add(&self.shared.stats.connections_accepted, 1);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: try again on the next readiness.
                    log::warn!("worker {}: accept failed: {e}", self.id);
                    return;
                }
            }
        }
    }

    fn client_mut(&mut self, i: usize) -> Option<&mut Client> {
        match self.slots.get_mut(i) {
            Some(Slot::Client(c)) => Some(c),
            _ => None,
        }
    }

    fn close_client(&mut self, i: usize) {
        if !matches!(self.slots.get(i), Some(Slot::Client(_))) {
            return;
        }
        if let Some(Slot::Client(mut c)) = self.slots.remove(i) {
            log::trace!("closing client {} (rbuf {} bytes, wbuf {} bytes)", c.peer, c.rbuf.len(), c.pending_output());
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.shared.release(c.reserved);
            self.clients -= 1;
            if let Some(task) = c.task {
                self.end_task(task);
            }
        }
    }

    /// Readiness on a client: write what is pending, read, answer every complete request.
    fn client_ready(&mut self, i: usize) {
        let max_body = self.shared.settings.max_body_bytes;
        let Some(c) = self.client_mut(i) else { return };
        if c.linger_until.is_some() {
            // Answered and half-closed: drop what the client still sends until it closes too.
            let (_, end) = crate::net::read_into(&mut c.stream, &mut c.rbuf, 1 << 20);
            c.rbuf.clear();
            if !matches!(end, crate::net::SocketResult::WouldBlock) {
                self.close_client(i);
            }
            return;
        }
        if !c.flush() {
            return self.close_client(i);
        }
        if let Some(task) = c.task {
            // The client made room: the relay may read more from its backend.
            self.pump_task(task);
            if self.client_mut(i).is_none_or(|c| c.busy) {
                return;
            }
        }
        let mut open = true;
        let shared = self.shared.clone();
        // Read and answer until the socket is drained; a client with more to say than a few rounds
        // is revisited after the other ready connections had their turn.
        for round in 0.. {
            let Some(c) = self.client_mut(i) else { return };
            let mut more = false;
            // While a query is answered the client is still read (so its going away is noticed), but
            // only up to the buffer limit: pipelined requests wait in the socket after that.
            let limit = c.read_limit();
            let room = !c.busy || c.rbuf.len() < limit;
            if !c.closing && room && c.pending_output() < crate::defaults::MAX_CLIENT_OUTPUT_BYTES {
                match c.read(limit) {
                    ReadEnd::Drained => {}
                    ReadEnd::Limit => more = !c.busy,
                    ReadEnd::Closed => open = false,
                }
            }
            loop {
                let Some(c) = self.client_mut(i) else { return };
                if c.busy || c.closing || c.pending_output() >= crate::defaults::MAX_CLIENT_OUTPUT_BYTES {
                    break;
                }
                match c.next_request(max_body, |n| shared.reserve(n)) {
                    Next::Wait => break,
                    Next::Close => break,
                    Next::Request(req) => self.handle(i, req),
                }
            }
            if !more {
                break;
            }
            if round >= 8 {
                self.revisit.push(i);
                break;
            }
        }
        let registry = self.poll.registry();
        let Some(Slot::Client(c)) = self.slots.get_mut(i) else {
            return;
        };
        if !c.flush() {
            return self.close_client(i);
        }
        if c.closing && c.pending_output() == 0 && !c.busy {
            if !open {
                return self.close_client(i);
            }
            // Closing at once with request bytes still unread would reset the connection and could
            // destroy the answer (a 413 for a big body) before the client reads it: shut down our side
            // and keep reading (and dropping) a little while, as Go's server does.
            c.linger_until = Some(Instant::now() + LINGER);
            c.rbuf = Vec::new();
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            c.update_interest(registry);
            return;
        }
        if !open {
            // The client is gone (or half-closed): a query still in flight for it is abandoned, as
            // proxies do; pending output is still written before closing.
            if c.busy || c.pending_output() == 0 {
                return self.close_client(i);
            }
            c.closing = true;
        }
        c.update_interest(registry);
    }

    /// Answers one complete request.
    fn handle(&mut self, i: usize, req: Request) {
        let Some(c) = self.client_mut(i) else { return };
        // Known before dispatching: a query or reload that ends at once reads it.
        c.close_when_done = !req.head.keep_alive;
        let mut rbuf = std::mem::take(&mut c.rbuf);
        let body: &[u8] = match &req.decoded {
            Some(b) => b,
            None => &rbuf[..req.len.min(rbuf.len())],
        };
        self.dispatch(i, &req, body);
        let shared = self.shared.clone();
        if let Some(c) = self.client_mut(i) {
            // Anything the client sent after this request is still in rbuf, after the body.
            rbuf.drain(..req.len.min(rbuf.len()));
            c.rbuf = rbuf;
            c.consumed(0);
            shared.release(c.reserved);
            c.reserved = 0;
            // A client that asked to close gets its answer first: at once, or when the busy
            // operation (query, reload) completes.
            if c.close_when_done && !c.busy {
                c.closing = true;
            }
        }
    }

    fn dispatch(&mut self, i: usize, req: &Request, body: &[u8]) {
        let head = &req.head;
        let mut out = Vec::new();
        let close = !head.keep_alive || self.shared.shutting_down();
        let params = Params::parse(&head.query);
        let path = head.path.trim_end_matches('/');
        if (matches!(path, "/write" | "/query" | "/reload") || crate::jobs::is_jobs_path(path))
            && let Some(required) = &self.config.node.auth
            && let Err(e) = auth::check(required, head, &params)
        {
            BackendState::add(&self.shared.stats.auth_failures, 1);
            BackendState::add(&self.shared.stats.client_errors, 1);
            let body = crate::http::response::error_body(e.message());
            Response {
                close,
                headers: &[("Www-Authenticate", "Basic realm=\"InfluxDB\"")],
                ..Response::json(401, body.as_bytes())
            }
            .write_to(&mut out);
            return self.reply(i, &out);
        }
        let get = matches!(head.method, Method::Get | Method::Head);
        let head_only = head.method == Method::Head;
        match path {
            "/ping" if get => {
                if params.get("verbose").is_some_and(|v| v == "true" || v == "1") {
                    let body = format!("{{\"version\":\"{}\"}}\n", crate::defaults::INFLUXDB_VERSION);
                    Response { close, head_only, ..Response::json(200, body.as_bytes()) }.write_to(&mut out);
                } else {
                    Response { close, content_type: Some("application/json"), ..Response::new(204) }.write_to(&mut out);
                }
            }
            "/ping" => method_not_allowed(&mut out, "GET, HEAD", close),
            "/write" if head.method == Method::Post => {
                let started = Instant::now();
                self.write(i, head, &params, body, close, &mut out);
                self.shared.stats.write_latency.observe(started.elapsed());
            }
            "/write" => method_not_allowed(&mut out, "OPTIONS, POST", close),
            "/query" if matches!(head.method, Method::Get | Method::Post) => {
                return self.query(i, head, body, close);
            }
            "/query" => method_not_allowed(&mut out, "OPTIONS, GET, POST", close),
            "/health" if get => {
                let body = serde_json::to_vec_pretty(&ops::health_json(&self.shared)).unwrap_or_default();
                Response { close, head_only, ..Response::json(200, &body) }.write_to(&mut out);
            }
            "/metrics" if get => {
                let body = ops::metrics::render(&self.shared);
                let ct = Some("text/plain; version=0.0.4; charset=utf-8");
                Response { close, head_only, content_type: ct, ..Response::new(200) }
                    .with_body(body.as_bytes(), &mut out);
            }
            "/reload" if matches!(head.method, Method::Get | Method::Post) => {
                let request = ReloadRequest { worker: self.id, client: i };
                if self.shared.reloads.send(request).is_ok() {
                    // The answer comes back as Message::Reloaded; nothing else runs on this
                    // connection until then.
                    if let Some(c) = self.client_mut(i) {
                        c.busy = true;
                    }
                    return;
                }
                write_error(&mut out, 503, "the config thread is not running", close);
            }
            p if crate::jobs::is_jobs_path(p) => {
                let (status, body) = crate::jobs::handle(&self.shared, head.method, p, &params);
                Response { close, head_only, ..Response::json(status, &body) }.write_to(&mut out);
            }
            "/health" | "/metrics" => method_not_allowed(&mut out, "GET, HEAD", close),
            "/reload" => method_not_allowed(&mut out, "GET, POST", close),
            _ => {
                Response { close, content_type: Some("text/plain; charset=utf-8"), ..Response::new(404) }
                    .with_body(b"404 page not found\n", &mut out);
            }
        }
        self.reply(i, &out);
    }

    /// Appends a finished answer to a client's output.
    fn reply(&mut self, i: usize, out: &[u8]) {
        if let Some(c) = self.client_mut(i) {
            c.wbuf.extend_from_slice(out);
        }
    }

    /// The config thread's answer to a `/reload`.
    fn reloaded(&mut self, i: usize, status: u16, error: Option<String>) {
        let mut out = Vec::new();
        let Some(c) = self.client_mut(i) else { return };
        if !c.busy || c.task.is_some() {
            return;
        }
        c.busy = false;
        let close = c.close_when_done;
        c.closing |= close;
        match error {
            None => {
                Response { close, content_type: Some("application/json"), ..Response::new(status) }.write_to(&mut out)
            }
            Some(e) => write_error(&mut out, status, &e, close),
        }
        c.wbuf.extend_from_slice(&out);
        self.revisit.push(i);
    }

    fn write(
        &mut self,
        i: usize,
        head: &crate::http::request::Head,
        params: &Params,
        raw: &[u8],
        close: bool,
        out: &mut Vec<u8>,
    ) {
        let stats = &self.shared.stats;
        BackendState::add(&stats.write_requests, 1);
        let config = self.config.clone();
        let mut wp = match write::params(&config, params) {
            Ok(p) => p,
            Err(r) => return respond(out, &r, close, stats),
        };
        let mut inflated = std::mem::take(&mut self.scratch.inflated);
        let body: &[u8] = if head.gzip_body {
            match self.scratch.gunzip.decompress(raw, self.shared.settings.max_body_bytes, &mut inflated) {
                Ok(()) => &inflated,
                Err(e) => {
                    let status = if e == write::gunzip::GunzipError::TooLarge { 413 } else { 400 };
                    let r = write::WriteResult { status, error: Some(e.to_string()), lines: 0 };
                    self.scratch.inflated = inflated;
                    return respond(out, &r, close, stats);
                }
            }
        } else {
            raw
        };
        if config.node.write_tracing {
            let peer = self.client_mut(i).map(|c| c.peer.to_string()).unwrap_or_default();
            let shown = &body[..body.len().min(64 << 10)];
            log::info!(
                "write from {peer}: db={} rp={} precision={} ({} bytes): {}",
                wp.db,
                wp.rp.unwrap_or(""),
                wp.precision.unwrap_or(""),
                body.len(),
                String::from_utf8_lossy(shown)
            );
        }
        self.request_seq += 1;
        wp.request = self.request_seq;
        let result = write::store(
            &config,
            &wp,
            body,
            &mut self.outboxes,
            &self.outbox_of,
            &mut self.scratch,
            &self.shared.stats,
        );
        if inflated.capacity() > 4 << 20 {
            inflated = Vec::new();
        }
        self.scratch.inflated = inflated;
        respond(out, &result, close, &self.shared.stats);
    }

    /// Starts answering a query: at once for errors, else by creating a task.
    fn query(&mut self, i: usize, head: &crate::http::request::Head, body: &[u8], close: bool) {
        let now = Instant::now();
        BackendState::add(&self.shared.stats.query_requests, 1);
        let config = self.config.clone();
        let prepared = query::prepare(&config, head, body);
        if config.node.query_tracing {
            let peer = self.client_mut(i).map(|c| c.peer.to_string()).unwrap_or_default();
            let params = Params::parse(&head.query);
            let mut q = params.get("q").unwrap_or("").to_string();
            if q.is_empty() {
                q = Params::parse(&String::from_utf8_lossy(body)).get("q").unwrap_or("").to_string();
            }
            log::info!("query from {peer}: db={} q={q}", params.get("db").unwrap_or(""));
        }
        let task_id = self.tasks.vacant();
        let new_attempt = |slots: &mut Slab<Slot>, candidates: Vec<usize>, spec| {
            let slot = slots.insert(Slot::Query(task_id));
            exec::Attempt::new(token_of(slot), candidates, spec)
        };
        let registry = self.poll.registry();
        let kind = match prepared {
            Prepared::Error(status, msg) => {
                self.shared.stats.query_latency.observe(now.elapsed());
                BackendState::add(&self.shared.stats.queries_refused, 1);
                let counter =
                    if status >= 500 { &self.shared.stats.server_errors } else { &self.shared.stats.client_errors };
                BackendState::add(counter, 1);
                if let Some(c) = self.client_mut(i) {
                    write_error(&mut c.wbuf, status, &msg, close);
                }
                return;
            }
            Prepared::Relay { candidates, spec } => {
                let mut attempt = new_attempt(&mut self.slots, candidates, spec);
                attempt.start_next(&config, registry, now);
                TaskKind::Relay(Box::new(exec::Relay::new(attempt, close, head.http10)))
            }
            Prepared::Gather { parts, units, pretty } => {
                let parts = parts
                    .into_iter()
                    .map(|(candidates, spec)| {
                        let mut attempt = new_attempt(&mut self.slots, candidates, spec);
                        let answer =
                            (!attempt.start_next(&config, registry, now)).then(|| Err(attempt.failures.join("; ")));
                        exec::Part { attempt, answer, bytes: 0 }
                    })
                    .collect();
                TaskKind::Gather(exec::Gather { parts, units, pretty, close })
            }
        };
        let task = self.tasks.insert(Task { client: i, started: now, kind });
        if let Some(c) = self.client_mut(i) {
            c.busy = true;
            c.task = Some(task);
        }
        self.pump_task(task);
    }

    /// Moves a query task along; finishes it when its answer is complete.
    fn pump_task(&mut self, task: usize) {
        let now = Instant::now();
        let Worker { tasks, slots, config, poll, .. } = self;
        let Some(t) = tasks.get_mut(task) else { return };
        let ci = t.client;
        let Some(Slot::Client(client)) = slots.get_mut(ci) else {
            self.end_task(task);
            return;
        };
        let state = t.pump(client, config, poll.registry(), now);
        let alive = client.flush();
        match state {
            TaskState::Running if alive => client.update_interest(poll.registry()),
            TaskState::Running | TaskState::Broken => {
                self.end_task(task);
                self.close_client(ci);
            }
            TaskState::Done => {
                self.end_task(task);
                if !alive {
                    return self.close_client(ci);
                }
                // Requests pipelined behind the query can go now — on the next turn, never from inside
                // the handling of the request that started the query.
                self.revisit.push(ci);
            }
        }
    }

    /// Removes a task and its upstream slots; frees its client for the next request.
    fn end_task(&mut self, task: usize) {
        let Some(mut t) = self.tasks.remove(task) else {
            return;
        };
        self.shared.stats.query_latency.observe(t.started.elapsed());
        let registry = self.poll.registry();
        t.close(registry);
        for a in t.attempts_mut() {
            self.slots.remove(a.token.0 - FIRST_SLOT);
        }
        if let Some(Slot::Client(c)) = self.slots.get_mut(t.client) {
            c.busy = false;
            c.task = None;
            c.closing |= c.close_when_done;
        }
    }

    /// Worker 0 writes the `influxdb.cluster` point every node `interval` seconds.
    fn self_statistics(&mut self, now: Instant) {
        let Some(every) = self.config.node.stats_interval else { return };
        if self.id != 0 || now < self.next_stats || self.shared.shutting_down() {
            return;
        }
        self.next_stats = now + every;
        let config = self.config.clone();
        let line = ops::stats_point::line(&self.shared, &ops::stats_point::hostname(), &config.node.listen_raw);
        self.request_seq += 1;
        let db = config.node.db.as_deref().unwrap_or(ops::stats_point::FALLBACK_DB);
        let wp = write::WriteParams { request: self.request_seq, db, rp: None, precision: None };
        let r = write::store(
            &config,
            &wp,
            line.as_bytes(),
            &mut self.outboxes,
            &self.outbox_of,
            &mut self.scratch,
            &self.shared.stats,
        );
        if r.status != 204 {
            log::debug!("self-statistics point not stored: {}", r.error.unwrap_or_default());
        }
    }

    /// Timers: outbox flush ages, retries and timeouts; idle clients once a second.
    fn tick(&mut self, now: Instant) {
        self.self_statistics(now);
        let timed: Vec<usize> = self
            .tasks
            .iter_mut()
            .filter_map(|(id, t)| {
                let late = t.attempts_mut().iter().any(|a| a.deadline().is_some_and(|d| now >= d));
                late.then_some(id)
            })
            .collect();
        for id in timed {
            if let Some(t) = self.tasks.get_mut(id) {
                t.check_timeouts(&self.config, self.poll.registry(), now);
            }
            self.pump_task(id);
        }
        let registry = self.poll.registry();
        for (_, o) in self.outboxes.iter_mut() {
            o.tick(&mut Cx { now, registry, deflate: &mut self.deflate });
        }
        let drained: Vec<usize> =
            self.outboxes.iter().filter(|(_, o)| o.retired && o.is_drained()).map(|(i, _)| i).collect();
        for oid in drained {
            if let Some(o) = self.outboxes.remove(oid) {
                log::info!("backend {} ({}): all its data delivered; outbox closed", o.backend.name, o.backend.url);
                let slot = o.token.0 - FIRST_SLOT;
                drop(o);
                self.slots.remove(slot);
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + Duration::from_secs(1);
            let idle = self.config.node.idle_timeout;
            let stopping = self.shared.shutting_down();
            let expired: Vec<usize> = self
                .slots
                .iter()
                .filter_map(|(i, s)| match s {
                    Slot::Client(c) if c.linger_until.is_some_and(|t| now >= t) => Some(i),
                    Slot::Client(c)
                        if !c.busy && (now.duration_since(c.last_active) > idle || stopping && c.is_idle()) =>
                    {
                        Some(i)
                    }
                    _ => None,
                })
                .collect();
            for i in expired {
                self.close_client(i);
            }
        }
    }

    /// One step of a graceful stop; true when the worker may exit.
    fn stop_step(&mut self, now: Instant) -> bool {
        let deadline = *self.stop_deadline.get_or_insert_with(|| now + self.shared.settings.shutdown_timeout);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
            for (_, o) in self.outboxes.iter_mut() {
                o.seal_open();
            }
            self.next_sweep = now;
        }
        let idle_clients: Vec<usize> = self
            .slots
            .iter()
            .filter_map(|(i, s)| match s {
                Slot::Client(c) if c.is_idle() => Some(i),
                _ => None,
            })
            .collect();
        for i in idle_clients {
            self.close_client(i);
        }
        for (_, o) in self.outboxes.iter_mut() {
            o.seal_open();
        }
        let settled = self.outboxes.iter().all(|(_, o)| o.settled(now));
        if (self.clients == 0 && settled) || now >= deadline {
            let left: u64 = self.outboxes.iter().map(|(_, o)| o.pending_records()).sum();
            if left > 0 {
                log::info!("worker {}: {left} batches stay in the outbox logs for the next start", self.id);
            }
            return true;
        }
        false
    }
}

fn respond(out: &mut Vec<u8>, r: &write::WriteResult, close: bool, stats: &crate::ops::ProxyStats) {
    match &r.error {
        None => Response { close, content_type: Some("application/json"), ..Response::new(r.status) }.write_to(out),
        Some(msg) => {
            let counter = if r.status >= 500 { &stats.server_errors } else { &stats.client_errors };
            BackendState::add(counter, 1);
            write_error(out, r.status, msg, close);
        }
    }
}

fn method_not_allowed(out: &mut Vec<u8>, allow: &str, close: bool) {
    Response {
        close,
        content_type: Some("text/plain; charset=utf-8"),
        headers: &[("Allow", allow), ("X-Content-Type-Options", "nosniff")],
        ..Response::new(405)
    }
    .with_body(b"Method Not Allowed\n", out);
}
