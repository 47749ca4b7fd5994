//! The health checker: one thread that pings every backend of the current config (`GET /ping`) every
//! `checkinterval` ms and publishes up/down in the backend's `BackendState`. Workers read that flag to
//! decide whether to send writes and where to send queries; they wake on their own tick, so nothing has
//! to be signalled. A backend found up again loses its `last_error`, so `/health` never shows a
//! recovered backend with the failure it recovered from. An https backend is pinged over TLS with its
//! own trust settings, so a certificate problem marks it down with a `last_error` that names it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Backend;
use crate::http::client::UpstreamRequest;
use crate::shared::Shared;

/// A ping never waits longer than this, so one hung backend cannot delay the others' checks much.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How the checker's own errors begin in a backend's `last_error`.
const HEALTH_ERROR: &str = "health check: ";

/// One `GET /ping`; `Err` says why the backend is not healthy.
pub fn ping(backend: &Backend) -> Result<(), String> {
    let timeout = backend.timeout.min(PING_TIMEOUT).min(backend.check_interval.max(Duration::from_millis(200)));
    let mut stream = TcpStream::connect_timeout(&backend.addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    match &backend.tls {
        None => exchange(&mut stream, backend).map_err(|e| e.to_string()),
        Some(tls) => {
            let conn = tls.connection().map_err(|e| crate::net::tls::describe(&e, Some(&tls.trust)))?;
            let mut stream = rustls::StreamOwned::new(conn, stream);
            exchange(&mut stream, backend).map_err(|e| match e {
                PingError::Io(what, e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls_error) => crate::net::tls::describe(tls_error, Some(&tls.trust)),
                    None => format!("{what}: {e}"),
                },
                PingError::Answer(msg) => msg,
            })
        }
    }
}

/// Why a ping failed: the socket (kept as `io::Error` so that a TLS cause can be told), or the answer.
enum PingError {
    Io(&'static str, std::io::Error),
    Answer(String),
}

impl std::fmt::Display for PingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PingError::Io(what, e) => write!(f, "{what}: {e}"),
            PingError::Answer(msg) => f.write_str(msg),
        }
    }
}

fn exchange(stream: &mut (impl Read + Write), backend: &Backend) -> Result<(), PingError> {
    let mut req = Vec::with_capacity(128);
    UpstreamRequest { close: true, ..UpstreamRequest::get("/ping", &backend.host) }.write_to(&mut req);
    stream.write_all(&req).map_err(|e| PingError::Io("write", e))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        if let Ok(Some(head)) = crate::http::client::parse_response_head(&buf) {
            return match head.status {
                200..=299 => Ok(()),
                s => Err(PingError::Answer(format!("/ping answered HTTP {s}"))),
            };
        }
        if buf.len() > 16 << 10 {
            return Err(PingError::Answer("/ping answer too large".into()));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(PingError::Answer("connection closed before an answer to /ping".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(PingError::Io("read", e)),
        }
    }
}

/// Runs until shutdown.
pub fn run(shared: Arc<Shared>) {
    let mut next: HashMap<(String, String), Instant> = HashMap::new();
    while !shared.shutting_down() {
        let config = shared.config_status(|s| s.current.clone());
        let now = Instant::now();
        for backend in &config.backends {
            let key = (backend.name.clone(), backend.url.clone());
            if next.get(&key).is_some_and(|t| *t > now) {
                continue;
            }
            next.insert(key, now + backend.check_interval);
            check(backend);
        }
        next.retain(|(name, url), _| config.backends.iter().any(|b| &b.name == name && &b.url == url));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check(backend: &Arc<Backend>) {
    let state = &backend.state;
    match ping(backend) {
        Ok(()) => {
            if state.set_up(true, None) {
                log::info!("backend {} ({}) is up again", backend.name, backend.url);
                // Whatever failed before it went down is history now; a failure that persists (a
                // write or query error) is set again by the next attempt.
                state.set_error("");
            } else if state.last_error().starts_with(HEALTH_ERROR) {
                // Up all along (e.g. marked up by a delivered batch first): our own verdict is stale.
                state.set_error("");
            }
        }
        Err(e) => {
            let msg = format!("{HEALTH_ERROR}{e}");
            if state.set_up(false, Some(&msg)) {
                log::warn!("backend {} ({}) is down: {e}; writes wait on disk", backend.name, backend.url);
            }
        }
    }
}
