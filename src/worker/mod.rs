//! A worker: one thread, one `mio::Poll`, its own `SO_REUSEPORT` listener, its client connections, its
//! outboxes (one per backend) and the query tasks in flight. Workers share nothing on the request path;
//! they meet only in atomics (`Shared`, `BackendState`) touched once per request or batch.
//!
//! The worker is only the loop: it accepts, turns readiness into calls on a connection
//! (`http::conn`), hands each complete request to the handler its route names (`http::router` →
//! `write`, `query`, `ops`), drives query tasks and outboxes, and sleeps until the nearest deadline of
//! any of them — there is no fixed tick.
//!
//! Tokens: 0 is the listener, 1 the waker (messages, shutdown); tokens from 2 are slab slots naming a
//! client connection or a query task's upstream connection; outboxes have a range of their own
//! (`outbox::set::FIRST_TOKEN`).

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::Config;
use crate::control::{ClientRef, Message, ReloadRequest};
use crate::defaults::{ACCEPT_RETRY, HEALTH_RECHECK, MAX_READ_ROUNDS, PAUSE_RECHECK, STOP_STEP, SWEEP_EVERY};
use crate::http::auth;
use crate::http::conn::{Connection, Next, Producer, ReadEnd, Request, State, Verdict};
use crate::http::params::Params;
use crate::http::request::Head;
use crate::http::response::{Response, write_error};
use crate::http::router::{self, Route};
use crate::net::stream::Stream;
use crate::net::{self, Accepted, FdReserve};
use crate::ops;
use crate::outbox::LogOptions;
use crate::outbox::set::{self, Outboxes};
use crate::query::exec::{Task, TaskState};
use crate::query::{self, QueryContext};
use crate::shared::Shared;
use crate::slab::Slab;
use crate::upstream::BackendState;
use crate::write::handler::{self as write_handler, WriteContext};
use crate::write::{self, WriteParams};

const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);
const FIRST_SLOT: usize = 2;

/// What a slab slot names.
enum Slot {
    Client(Box<Connection>),
    /// An upstream connection of the query task with this id.
    Query(usize),
}

/// A query task and the client it answers.
struct Running {
    client: usize,
    task: Task,
}

/// One of the worker's timer duties.
type Timer = fn(&mut Worker, Instant);

/// How a request was handled.
enum Handled {
    /// The answer is complete in the output.
    Answered,
    /// The answer comes later, from this producer.
    Awaiting(Producer),
}

pub struct Worker {
    id: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    /// A spare descriptor to shed connections with when the process runs out (see `net::fds`).
    fd_reserve: crate::net::FdReserve,
    shared: Arc<Shared>,
    inbox: Receiver<Message>,
    config: Arc<Config>,
    slots: Slab<Slot>,
    clients: usize,
    /// Connections accepted so far: each one's generation.
    accepted: u64,
    outboxes: Outboxes,
    tasks: Slab<Running>,
    /// Clients with unread data the last turn did not get to (readiness is edge-triggered).
    revisit: Vec<usize>,
    /// Writers' connections not read while a backend is outpaced (see `client_ready`).
    paused: Vec<usize>,
    scratch: write::Scratch,
    request_seq: u64,
    next_sweep: Instant,
    /// When worker 0 writes the next self-statistics point.
    next_stats: Instant,
    /// `accept` failed with connections possibly still queued (edge-triggered: no event will come).
    accept_again: Option<Instant>,
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

fn slot_of(token: Token) -> Option<usize> {
    token.0.checked_sub(FIRST_SLOT)
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
        let WorkerSetup { id, poll, mut listener, .. } = setup;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let s = &shared.settings;
        let log_opts = LogOptions {
            data_dir: s.data_dir.clone(),
            worker: id,
            threads: s.threads,
            segment_bytes: s.segment_bytes,
            sync: s.sync,
        };
        let outboxes = Outboxes::open(&config, log_opts, &shared.registry);
        let now = Instant::now();
        Ok(Worker {
            id,
            poll,
            listener: Some(listener),
            fd_reserve: FdReserve::new()?,
            shared,
            inbox,
            config,
            slots: Slab::default(),
            clients: 0,
            accepted: 0,
            outboxes,
            tasks: Slab::default(),
            revisit: Vec::new(),
            paused: Vec::new(),
            scratch: write::Scratch::default(),
            request_seq: 0,
            next_sweep: now + SWEEP_EVERY,
            next_stats: now,
            accept_again: None,
            stop_deadline: None,
        })
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        // Recovered logs are sent without waiting for the first event.
        self.timers(Instant::now());
        loop {
            let timeout = self.until_next_deadline(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                log::error!("worker {}: poll failed: {e}", self.id);
                return;
            }
            for event in events.iter() {
                let token = event.token();
                if catch_unwind(AssertUnwindSafe(|| self.on_event(token))).is_err() {
                    log::error!("worker {}: bug: panic while handling token {}; connection dropped", self.id, token.0);
                    self.drop_token(token);
                }
            }
            self.resume_writers();
            for i in std::mem::take(&mut self.revisit) {
                if catch_unwind(AssertUnwindSafe(|| self.client_ready(i))).is_err() {
                    log::error!("worker {}: bug: panic while reading client {i}; connection dropped", self.id);
                    self.close_client(i);
                }
            }
            self.timers(Instant::now());
            if self.shared.shutting_down() && self.stop_step(Instant::now()) {
                break;
            }
        }
        log::debug!("worker {} stopped", self.id);
    }

    /// How long the poll may sleep: until the nearest deadline of an outbox, a query, the idle sweep,
    /// the self-statistics point or a stop step; forever when nothing is due.
    fn until_next_deadline(&self, now: Instant) -> Option<Duration> {
        if !self.revisit.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.outboxes.next_deadline(now, HEALTH_RECHECK);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for (_, r) in self.tasks.iter() {
            if let Some(d) = r.task.deadline() {
                consider(d);
            }
        }
        if self.clients > 0 || crate::upstream::pool::idle_count() > 0 {
            consider(self.next_sweep);
        }
        if let Some(t) = self.accept_again {
            consider(t);
        }
        if !self.paused.is_empty() {
            consider(now + PAUSE_RECHECK);
        }
        if self.id == 0 && self.config.node.stats_interval.is_some() && !self.shared.shutting_down() {
            consider(self.next_stats);
        }
        if self.shared.shutting_down() {
            consider(now + STOP_STEP);
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    fn on_event(&mut self, token: Token) {
        match token {
            LISTENER => self.accept(),
            WAKER => self.read_inbox(),
            t => {
                if let Some(id) = set::outbox_of(t) {
                    self.outboxes.on_event(id, self.poll.registry(), Instant::now());
                    return;
                }
                match slot_of(t).and_then(|i| self.slots.get(i).map(|s| (i, s))) {
                    Some((i, Slot::Client(_))) => self.client_ready(i),
                    Some((_, Slot::Query(task))) => {
                        let task = *task;
                        self.pump_task(task);
                    }
                    None => {}
                }
            }
        }
    }

    /// After a caught panic: forget what the token names, so the bug cannot repeat on it.
    fn drop_token(&mut self, token: Token) {
        if let Some(id) = set::outbox_of(token) {
            self.outboxes.reset(id, self.poll.registry());
            return;
        }
        let Some(i) = slot_of(token) else { return };
        match self.slots.get(i) {
            Some(Slot::Client(_)) => self.close_client(i),
            Some(Slot::Query(task)) => {
                if let Some(client) = self.tasks.get(*task).map(|r| r.client) {
                    self.close_client(client);
                }
            }
            None => {}
        }
    }

    fn read_inbox(&mut self) {
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                Message::Config(config) => {
                    self.outboxes.apply(&config);
                    self.config = config;
                }
                Message::Reloaded { client, status, error } => self.reloaded(client, status, error),
                Message::Job(batch) => {
                    let backend =
                        self.config.backends.iter().position(|b| b.name == batch.backend && b.url == batch.url);
                    self.request_seq += 1;
                    let result = match backend.and_then(|b| self.outboxes.of(b)) {
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
            match net::accept(listener, &mut self.fd_reserve) {
                Accepted::Connection(stream, peer) => {
                    if self.clients >= self.shared.settings.max_connections {
                        BackendState::add(&self.shared.stats.connections_refused, 1);
                        drop(stream);
                        continue;
                    }
                    self.admit(stream, peer);
                }
                Accepted::Shed => BackendState::add(&self.shared.stats.connections_shed, 1),
                Accepted::Drained => return,
                Accepted::Failed(e) => {
                    log::warn!("worker {}: accept failed: {e}", self.id);
                    self.accept_again = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: mio::net::TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        // The certificate in force when the connection arrives serves it to the end.
        let stream = match &self.config.node.tls {
            None => Stream::Plain(stream),
            Some(tls) => match Stream::server(stream, &tls.config) {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let slot = self.slots.vacant();
        self.accepted += 1;
        let mut conn = Box::new(Connection::new(stream, peer, token_of(slot), self.accepted));
        if self.poll.registry().register(&mut conn.stream, token_of(slot), Interest::READABLE).is_err() {
            return;
        }
        self.slots.insert(Slot::Client(conn));
        self.clients += 1;
        BackendState::add(&self.shared.stats.connections_accepted, 1);
    }

    fn conn_mut(&mut self, i: usize) -> Option<&mut Connection> {
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
            let (rbuf, wbuf) = c.buffered();
            log::trace!("closing client {} (rbuf {rbuf} bytes, wbuf {wbuf} bytes)", c.peer);
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.shared.release(c.take_reserved());
            self.clients -= 1;
            if let Some(task) = c.task() {
                self.end_task(task);
            }
        }
    }

    /// Some backend that takes batches gets them more slowly than this worker's writers bring them: its
    /// backlog has grown by more than `--pause-backlog-bytes` (`Outbox::outpaced`). Growing it further
    /// only costs disk and delays every line behind it (a backend that is down or failing is another
    /// matter: its backlog is what the outbox is for, and never pauses anyone).
    fn writers_outpace(&mut self) -> bool {
        let limit = self.shared.settings.pause_backlog_bytes;
        limit > 0 && !self.shared.shutting_down() && self.outboxes.outpaced(limit)
    }

    /// Reads the paused writers again once no backend is outpaced any more.
    fn resume_writers(&mut self) {
        if self.paused.is_empty() || self.writers_outpace() {
            return;
        }
        for i in std::mem::take(&mut self.paused) {
            if let Some(c) = self.conn_mut(i) {
                c.paused = false;
                self.revisit.push(i);
            }
        }
    }

    /// Readiness on a client: write what is pending, move its query along, read, answer every
    /// complete request, then let the connection settle its state. A connection that has sent writes
    /// is not read while a backend is outpaced (`writers_outpace`): its requests wait in the socket, and
    /// TCP slows its client down to what the backends take.
    fn client_ready(&mut self, i: usize) {
        // Only a writer between requests may be paused: the outboxes are looked at for it alone.
        let pause = self.conn_mut(i).is_some_and(|c| c.may_pause()) && self.writers_outpace();
        let Some(c) = self.conn_mut(i) else { return };
        if let State::Lingering { .. } = c.state() {
            if !c.drain_lingering() {
                self.close_client(i);
            }
            return;
        }
        if !c.flush() {
            return self.close_client(i);
        }
        let hold = pause && c.may_pause();
        let newly_paused = hold && !std::mem::replace(&mut c.paused, true);
        if let Some(task) = c.task() {
            // The client made room: the relay may read more from its backend.
            self.pump_task(task);
        }
        if newly_paused {
            self.paused.push(i);
            BackendState::add(&self.shared.stats.writer_pauses, 1);
        }
        if !hold {
            self.read_requests(i);
        }
        let registry = self.poll.registry();
        if let Some(Slot::Client(c)) = self.slots.get_mut(i)
            && c.settle(registry, Instant::now()) == Verdict::Close
        {
            self.close_client(i);
        }
    }

    /// Reads what client `i` sent and handles every complete request, a few rounds at most (then it is
    /// revisited after the other events).
    fn read_requests(&mut self, i: usize) {
        let max_body = self.shared.settings.max_body_bytes;
        let shared = self.shared.clone();
        for round in 0.. {
            let Some(c) = self.conn_mut(i) else { return };
            let more = c.read() == ReadEnd::Limit;
            loop {
                let Some(c) = self.conn_mut(i) else { return };
                match c.next_request(max_body, |n| shared.reserve(n)) {
                    Next::Wait => break,
                    Next::Request(req) => self.handle(i, req),
                }
            }
            if !more {
                break;
            }
            if round >= MAX_READ_ROUNDS {
                self.revisit.push(i);
                break;
            }
        }
    }

    /// Answers one complete request, at once or by starting what will answer it.
    fn handle(&mut self, i: usize, mut req: Request) {
        let Some(c) = self.conn_mut(i) else { return };
        let body = c.take_body(&mut req);
        let peer = c.peer;
        let generation = c.generation;
        let close = !req.head.keep_alive || self.shared.shutting_down();
        let route = router::route(req.head.method, &req.head.path);
        let mut out = Vec::new();
        let handled = self.dispatch(
            ClientRef { worker: self.id, conn: i, generation },
            peer,
            route,
            &req.head,
            body.bytes(),
            close,
            &mut out,
        );
        let cors_origin = crate::http::cors::origin_to_echo(&req.head, route);
        let shared = self.shared.clone();
        let Some(c) = self.conn_mut(i) else { return };
        c.give_back(body);
        if let (Some(origin), Handled::Answered) = (&cors_origin, &handled) {
            crate::http::cors::add_headers(&mut out, 0, origin);
        }
        c.out.buf().extend_from_slice(&out);
        shared.release(c.take_reserved());
        match handled {
            Handled::Answered => c.answered(close),
            Handled::Awaiting(by) => {
                c.cors_origin = cors_origin;
                c.await_answer(by, close);
                if let Producer::Query(task) = by {
                    self.pump_task(task);
                }
            }
        }
    }

    /// Calls the handler of the request's route.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        client: ClientRef,
        peer: SocketAddr,
        route: Route,
        head: &Head,
        body: &[u8],
        close: bool,
        out: &mut Vec<u8>,
    ) -> Handled {
        if route.needs_auth()
            && let Some(required) = &self.config.node.auth
            && let Err(e) = auth::check(required, head, &Params::parse(&head.query))
        {
            BackendState::add(&self.shared.stats.auth_failures, 1);
            BackendState::add(&self.shared.stats.client_errors, 1);
            auth::write_unauthorized(out, e, close);
            return Handled::Answered;
        }
        let head_only = head.method == crate::http::request::Method::Head;
        match route {
            Route::Ping => ops::ping(&Params::parse(&head.query), head_only, close, out),
            Route::Write | Route::WriteV2 | Route::PromWrite => {
                if let Some(c) = self.conn_mut(client.conn) {
                    c.wrote = true;
                }
                self.request_seq += 1;
                let cx = WriteContext {
                    config: &self.config,
                    outboxes: &mut self.outboxes,
                    scratch: &mut self.scratch,
                    stats: &self.shared.stats,
                    max_body: self.shared.settings.max_body_bytes,
                    request: self.request_seq,
                    peer,
                };
                match route {
                    Route::WriteV2 => crate::write::v2::serve(cx, head, body, close, out),
                    Route::PromWrite => crate::write::prom::serve(cx, head, body, close, out),
                    _ => write_handler::serve(cx, head, body, close, out),
                }
            }
            Route::Query | Route::PromRead => {
                let task_id = self.tasks.vacant();
                let slots = &mut self.slots;
                let mut new_token = || token_of(slots.insert(Slot::Query(task_id)));
                let cx = QueryContext {
                    config: self.config.clone(),
                    stats: &self.shared.stats,
                    registry: self.poll.registry(),
                    peer,
                    new_token: &mut new_token,
                    max_body: self.shared.settings.max_body_bytes,
                };
                let started = match route {
                    Route::PromRead => query::start_remote_read(cx, head, body, close, out),
                    _ => query::start(cx, head, body, close, out),
                };
                if let Some(task) = started {
                    let id = self.tasks.insert(Running { client: client.conn, task });
                    debug_assert_eq!(id, task_id);
                    return Handled::Awaiting(Producer::Query(id));
                }
            }
            Route::Health => ops::serve_health(&self.shared, head_only, close, out),
            Route::Metrics => ops::serve_metrics(&self.shared, head_only, close, out),
            Route::Reload => {
                if self.shared.reloads.send(ReloadRequest { client: Some(client) }).is_ok() {
                    // The answer comes back as Message::Reloaded.
                    return Handled::Awaiting(Producer::Reload);
                }
                write_error(out, 503, "the config thread is not running", close);
            }
            Route::Jobs => {
                let path = head.path.trim_end_matches('/');
                let (status, body) = crate::jobs::handle(
                    &self.shared.jobs,
                    &self.shared.settings.data_dir,
                    head.method,
                    path,
                    &Params::parse(&head.query),
                );
                Response { close, head_only, ..Response::json(status, &body) }.write_to(out);
            }
            Route::Options | Route::MethodNotAllowed { .. } | Route::NotFound => route.write_static(close, out),
        }
        Handled::Answered
    }

    /// The config thread's answer to a `/reload`.
    fn reloaded(&mut self, client: ClientRef, status: u16, error: Option<String>) {
        let Some(c) = self.conn_mut(client.conn) else { return };
        let State::Awaiting { by: Producer::Reload, close_after } = c.state() else { return };
        if c.generation != client.generation {
            return;
        }
        let at = c.out.buf().len();
        match error {
            None => Response { close: close_after, content_type: Some("application/json"), ..Response::new(status) }
                .write_to(c.out.buf()),
            Some(e) => write_error(c.out.buf(), status, &e, close_after),
        }
        c.add_cors_headers(at);
        c.answer_complete(false);
        self.revisit.push(client.conn);
    }

    /// Moves a query task along; finishes it when its answer is complete.
    fn pump_task(&mut self, task: usize) {
        let now = Instant::now();
        let Worker { tasks, slots, poll, .. } = self;
        let Some(r) = tasks.get_mut(task) else { return };
        let ci = r.client;
        let Some(Slot::Client(c)) = slots.get_mut(ci) else {
            self.end_task(task);
            return;
        };
        // A relay stops when the client's output is full. If writing then empties it, no event may
        // come for the backend (its answer can already sit in our socket): pump again at once.
        let mut rounds = 0;
        let (state, alive, again) = loop {
            let at = c.out.buf().len();
            let state = r.task.pump(&mut c.out, poll.registry(), now);
            c.add_cors_headers(at);
            let full = c.out.room() == 0;
            let alive = c.flush();
            let again = state == TaskState::Running && alive && full && c.out.room() > 0;
            rounds += 1;
            if !again || rounds >= MAX_READ_ROUNDS {
                break (state, alive, again);
            }
        };
        match state {
            TaskState::Running if alive => {
                c.update_interest(poll.registry());
                if again {
                    // More than a turn's worth: the client's next turn pumps again.
                    self.revisit.push(ci);
                }
            }
            TaskState::Running | TaskState::Broken => {
                self.end_task(task);
                self.close_client(ci);
            }
            TaskState::Done { close } => {
                if !alive {
                    self.end_task(task);
                    return self.close_client(ci);
                }
                c.answer_complete(close);
                self.end_task(task);
                // Requests pipelined behind the query can go now — on the next turn, never from inside
                // the handling of the request that started the query.
                self.revisit.push(ci);
            }
        }
    }

    /// Removes a task and the slots of its upstream connections.
    fn end_task(&mut self, task: usize) {
        let Some(mut r) = self.tasks.remove(task) else {
            return;
        };
        self.shared.stats.query_latency.observe(r.task.started.elapsed());
        r.task.close(self.poll.registry());
        for token in r.task.tokens() {
            if let Some(i) = slot_of(token) {
                self.slots.remove(i);
            }
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
        let wp = WriteParams { request: self.request_seq, db, rp: None, precision: None, gzip: None };
        let r = write::store(&config, &wp, line.as_bytes(), &mut self.outboxes, &mut self.scratch, &self.shared.stats);
        if r.status != 204 {
            log::debug!("self-statistics point not stored: {}", r.error.unwrap_or_default());
        }
    }

    /// Whatever is due: query timeouts, outbox flush ages, sends, retries; idle clients once a second.
    /// Each part is guarded on its own, so a bug that repeats in one cannot stop the others.
    fn timers(&mut self, now: Instant) {
        let parts: [(&str, Timer); 4] = [
            ("self-statistics", Worker::self_statistics),
            ("query timeouts", Worker::query_timeouts),
            ("outboxes", Worker::outbox_timers),
            ("connection timers", Worker::connection_timers),
        ];
        for (what, part) in parts {
            if catch_unwind(AssertUnwindSafe(|| part(self, now))).is_err() {
                log::error!("worker {}: bug: panic in {what}", self.id);
            }
        }
    }

    fn query_timeouts(&mut self, now: Instant) {
        let late: Vec<usize> =
            self.tasks.iter().filter(|(_, r)| r.task.deadline().is_some_and(|d| now >= d)).map(|(id, _)| id).collect();
        for id in late {
            if let Some(r) = self.tasks.get_mut(id) {
                r.task.check_timeouts(self.poll.registry(), now);
            }
            self.pump_task(id);
        }
    }

    fn outbox_timers(&mut self, now: Instant) {
        self.outboxes.tick(self.poll.registry(), now);
    }

    fn connection_timers(&mut self, now: Instant) {
        if self.accept_again.is_some_and(|t| now >= t) {
            self.accept_again = None;
            self.accept();
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            // Idle pooled backend connections past their timeout (see `upstream::pool`).
            crate::upstream::pool::prune(now);
            let idle = self.config.node.idle_timeout;
            let stopping = self.shared.shutting_down();
            let expired: Vec<usize> = self
                .slots
                .iter()
                .filter_map(|(i, s)| match s {
                    Slot::Client(c) if c.expired(now, idle, stopping) => Some(i),
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
            self.next_sweep = now;
        }
        let idle: Vec<usize> = self
            .slots
            .iter()
            .filter_map(|(i, s)| match s {
                Slot::Client(c) if c.is_idle() => Some(i),
                _ => None,
            })
            .collect();
        for i in idle {
            self.close_client(i);
        }
        self.outboxes.seal_open();
        if (self.clients == 0 && self.outboxes.settled(now)) || now >= deadline {
            let left = self.outboxes.pending_records();
            if left > 0 {
                log::info!("worker {}: {left} batches stay in the outbox logs for the next start", self.id);
            }
            return true;
        }
        false
    }
}
