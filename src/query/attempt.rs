//! One exchange with a backend that several backends could answer: the request (`RequestSpec`,
//! written by the one upstream request writer), the connection, failover to the next candidate on a
//! failure, `timeoutquery` as a bound on every pause. Query tasks (`exec`, `prom_read`) are built from
//! attempts; an attempt's backend indices mean the config snapshot its task owns.

use std::collections::VecDeque;
use std::time::Instant;

use mio::{Registry, Token};

use crate::config::{Backend, Config};
use crate::http::client::UpstreamRequest;
use crate::http::params::encode_into;
use crate::upstream::conn::{Conn, ConnError, Drive, Exchange, LentBody};
use crate::upstream::{BackendState, pool};

/// Answer bytes one merged query may buffer, all its sub-answers together (parsed JSON takes a few
/// times more).
pub const MAX_GATHER_BYTES: usize = 16 << 20;

/// What to ask a backend, independent of which backend it is.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub post: bool,
    /// Parameters other than `q` from the URL, and (POST) from the form body, each kept where the client
    /// put it: InfluxDB reads some (`pretty`) from the URL only.
    pub url_params: Vec<(String, String)>,
    pub form_params: Vec<(String, String)>,
    pub q: String,
    pub accept: Option<String>,
    pub accept_encoding: Option<String>,
    /// The client's Authorization header, passed on unless the backend has its own credentials.
    pub authorization: Option<String>,
    /// Not InfluxQL: POST this snappy protobuf body to this path (Prometheus remote read).
    pub snappy_post: Option<(&'static str, Vec<u8>)>,
}

fn encode_pairs(out: &mut String, pairs: &[(String, String)], skip_credentials: bool) {
    for (k, v) in pairs {
        if skip_credentials && (k == "u" || k == "p") {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        encode_into(out, k);
        out.push('=');
        encode_into(out, v);
    }
}

impl RequestSpec {
    fn build(&self, backend: &Backend, out: &mut Vec<u8>) {
        let own_credentials = backend.auth.is_some();
        let mut url = String::new();
        encode_pairs(&mut url, &self.url_params, own_credentials);
        let mut form = String::new();
        encode_pairs(&mut form, &self.form_params, own_credentials);
        encode_pairs(&mut form, &[("q".to_string(), self.q.clone())], false);
        let authorization = match (&backend.auth, &self.authorization) {
            (Some(c), _) => Some(crate::http::basic_auth(&c.username, &c.password)),
            (None, a) => a.clone(),
        };
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(4);
        let optional =
            [("Accept", &self.accept), ("Accept-Encoding", &self.accept_encoding), ("Authorization", &authorization)];
        for (name, value) in optional {
            if let Some(v) = value {
                headers.push((name, v));
            }
        }
        out.clear();
        if let Some((path, body)) = &self.snappy_post {
            headers.extend([
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
                ("X-Prometheus-Remote-Read-Version", "0.1.0"),
            ]);
            let request = UpstreamRequest::post(path, &backend.host, body);
            UpstreamRequest { query: url.as_bytes(), headers: &headers, ..request }.write_to(out);
        } else if self.post {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
            let request = UpstreamRequest::post("/query", &backend.host, form.as_bytes());
            UpstreamRequest { query: url.as_bytes(), headers: &headers, ..request }.write_to(out);
        } else {
            if !url.is_empty() {
                url.push('&');
            }
            url.push_str(&form);
            let request = UpstreamRequest::get("/query", &backend.host);
            UpstreamRequest { query: url.as_bytes(), headers: &headers, ..request }.write_to(out);
        }
    }
}

/// One request to one of several equivalent backends, moving to the next on failure.
///
/// Connections come from the worker's pool of idle keep-alive connections when it has one for the
/// backend (see `upstream::pool`) and go back to it when the exchange ended cleanly. A reused
/// connection that fails before any answer byte (the backend may have closed it just then) is retried
/// once on a fresh connection to the same backend, without counting as a failure of the backend.
pub struct Attempt {
    pub token: Token,
    candidates: VecDeque<usize>,
    pub backend: Option<usize>,
    /// The pool key of the current backend (where the connection goes back to).
    key: Option<pool::Key>,
    /// TLS settings of the current backend, for a fresh connection after a reused one failed.
    tls: Option<std::sync::Arc<crate::net::tls::ClientTls>>,
    conn: Option<Conn>,
    /// The connection came from the pool: `request` holds a copy of the request, for the retry.
    reused: bool,
    request: Vec<u8>,
    /// Some answer byte has arrived on the current connection.
    answered: bool,
    ex: Exchange,
    spec: RequestSpec,
    deadline: Option<Instant>,
    /// `timeoutquery` of the current backend.
    timeout: std::time::Duration,
    /// Decoded answer bytes not yet taken by the caller.
    pub body: Vec<u8>,
    pub failures: Vec<String>,
    /// A failure noticed outside `drive` (timeout), reported by the next `drive`.
    pending_error: Option<String>,
}

impl Attempt {
    pub fn new(token: Token, candidates: Vec<usize>, spec: RequestSpec) -> Attempt {
        Attempt {
            token,
            candidates: candidates.into(),
            backend: None,
            key: None,
            tls: None,
            conn: None,
            reused: false,
            request: Vec::new(),
            answered: false,
            ex: Exchange::default(),
            spec,
            deadline: None,
            timeout: std::time::Duration::ZERO,
            body: Vec::new(),
            failures: Vec::new(),
            pending_error: None,
        }
    }

    pub fn status(&self) -> u16 {
        self.ex.status()
    }

    pub fn head(&self) -> Option<&crate::http::client::ResponseHead> {
        self.ex.head.as_ref()
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Connects to the next candidate. `false` when none is left.
    pub fn start_next(&mut self, config: &Config, registry: &Registry, now: Instant) -> bool {
        self.close(registry);
        while let Some(b) = self.candidates.pop_front() {
            let Some(backend) = config.backends.get(b) else {
                continue;
            };
            let key = (backend.addr, backend.tls.is_some());
            let pooled = pool::take(key, self.token, registry, now);
            match pooled.map_or_else(|| Conn::connect(backend, self.token, registry), Ok) {
                Ok(mut conn) => {
                    self.spec.build(backend, &mut conn.out);
                    self.reused = conn.exchanges > 0;
                    self.request.clear();
                    if self.reused {
                        self.request.extend_from_slice(&conn.out);
                    }
                    self.answered = false;
                    self.key = Some(key);
                    self.tls = backend.tls.clone();
                    self.conn = Some(conn);
                    self.backend = Some(b);
                    self.ex = Exchange::default();
                    self.body.clear();
                    self.deadline = Some(now + backend.timeout_query);
                    self.timeout = backend.timeout_query;
                    return true;
                }
                Err(e) => self.note_failure(backend, format!("connect: {e}")),
            }
        }
        false
    }

    pub fn has_candidates(&self) -> bool {
        !self.candidates.is_empty()
    }

    fn note_failure(&mut self, backend: &Backend, why: String) {
        BackendState::add(&backend.state.counters.query_errors, 1);
        // Logged when the failure is new for this backend, not once per query of a dashboard.
        let msg = format!("query failed: {why}");
        if backend.state.last_error() != msg {
            log::warn!("backend {}: {msg}", backend.name);
            backend.state.set_error(&msg);
        }
        self.failures.push(format!("backend {}: {why}", backend.name));
    }

    /// Records the failure of the current backend.
    pub fn fail_current(&mut self, config: &Config, why: String, registry: &Registry) {
        if let Some(backend) = self.backend.and_then(|b| config.backends.get(b)) {
            self.note_failure(backend, why);
        }
        self.close(registry);
    }

    /// Moves the exchange forward, reading at most `budget` answer bytes into `body`.
    pub fn drive(&mut self, budget: usize, registry: &Registry) -> Result<Drive, String> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(ConnError::NotConnected.to_string());
        };
        let d = match conn.drive(&mut self.ex, &mut self.body, budget, registry, LentBody::default()) {
            Ok(d) => d,
            Err(e) if self.reused && !self.answered && conn.inbuf.is_empty() && self.ex.head.is_none() => {
                return self.retry_fresh(registry, e);
            }
            Err(e) => return Err(e.to_string()),
        };
        if d.read > 0 {
            self.answered = true;
        }
        if d.read > 0
            && let Some(deadline) = &mut self.deadline
        {
            // `timeoutquery` bounds the wait for the answer and then every pause inside it: a
            // backend that stalls mid-answer is given up on like one that never answers.
            *deadline = Instant::now() + self.timeout;
        }
        if d.done {
            self.deadline = None;
        }
        Ok(d)
    }

    /// A backend silent for its `timeoutquery` (before or during its answer) is failed; the next
    /// `drive` reports it, so the caller fails over as for any other failure.
    pub fn check_timeout(&mut self, config: &Config, registry: &Registry, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            let ms = self.backend.and_then(|b| config.backends.get(b)).map_or(0, |b| b.timeout_query.as_millis());
            self.pending_error = Some(format!("no answer for timeoutquery ({ms} ms)"));
            self.deadline = None;
            self.close(registry);
        }
    }

    /// A reused connection failed before any answer: the same request on a fresh connection, once.
    fn retry_fresh(&mut self, registry: &Registry, why: ConnError) -> Result<Drive, String> {
        self.reused = false;
        if let Some(mut c) = self.conn.take() {
            c.deregister(registry);
        }
        let Some((addr, _)) = self.key else { return Err(why.to_string()) };
        match Conn::connect_to(addr, self.tls.as_deref(), self.token, registry) {
            Ok(mut conn) => {
                conn.out = std::mem::take(&mut self.request);
                self.ex = Exchange::default();
                self.conn = Some(conn);
                // The connect completes with a writable event, which drives the exchange again.
                Ok(Drive { done: false, blocked: true, read: 0 })
            }
            Err(e) => Err(format!("{why} (on a reused connection); connect: {e}")),
        }
    }

    /// Lets go of the connection: back to the worker's pool if its exchange ended cleanly and it can
    /// carry another request, closed otherwise.
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut c) = self.conn.take() {
            c.deregister(registry);
            if self.ex.done
                && self.ex.reusable
                && let Some(key) = self.key
            {
                pool::put(key, c, Instant::now());
            }
        }
    }
}

/// Where a task is.
#[derive(Debug, PartialEq, Eq)]
pub enum TaskState {
    Running,
    /// The answer is complete in the client's output; `close`: the connection must close after it.
    Done {
        close: bool,
    },
    /// The answer cannot be completed; the client connection must be closed.
    Broken,
}
