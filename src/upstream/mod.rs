//! Everything about talking to backends: the non-blocking HTTP client connection workers use, the health
//! checker thread, and the per-backend state they share.
//!
//! `BackendState` is the only thing threads share about a backend: atomics that workers bump once per
//! request or batch (never per line), read by `/health`, `/metrics` and the health checker.

pub mod conn;
pub mod health;
pub mod lag;
pub mod pool;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Counters of one backend, summed over workers. Names and help texts are in `ops::metrics`.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Lines routed to this backend and stored in its outbox.
    pub lines_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Lines and batches the backend acknowledged with 2xx.
    pub lines_sent: AtomicU64,
    pub batches_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Failed sends that will be retried (network error, timeout, 5xx).
    pub retries: AtomicU64,
    /// Lines the backend refused as bad data (400): dropped, InfluxDB kept the good lines of the batch.
    pub dropped_bad_data: AtomicU64,
    /// Lines dropped because this backend's logs reached `maxdisk` or the disk failed.
    pub dropped_disk: AtomicU64,
    /// Lines dropped for another 4xx answer (e.g. 413 from a backend with a smaller body limit).
    pub dropped_rejected: AtomicU64,
    /// Lines set aside because their database or retention policy does not exist on the backend yet.
    pub parked: AtomicU64,
    /// Bytes of damaged log records cut during recovery.
    pub recovery_cut_bytes: AtomicU64,
    /// Queries answered by this backend, and failed query attempts.
    pub queries: AtomicU64,
    pub query_errors: AtomicU64,
}

#[derive(Debug)]
pub struct BackendState {
    pub name: String,
    pub url: String,
    /// Health as the checker last saw it. Starts up: until the first ping says otherwise, sending is
    /// how we find out.
    up: AtomicBool,
    /// Unix ms of the last up/down change.
    since_ms: AtomicU64,
    last_error: Mutex<String>,
    /// Bytes of outbox segment files on disk, all workers together (checked against `maxdisk`).
    pub disk_bytes: AtomicU64,
    /// Payload bytes and records written but not yet acknowledged by the backend.
    pub backlog_bytes: AtomicU64,
    pub backlog_records: AtomicU64,
    pub counters: BackendCounters,
    /// How far behind this backend is, per target (see `lag`).
    pub lag: lag::LagBoard,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl BackendState {
    pub fn new(name: &str, url: &str) -> Self {
        BackendState {
            name: name.to_string(),
            url: url.to_string(),
            up: AtomicBool::new(true),
            since_ms: AtomicU64::new(unix_ms(SystemTime::now())),
            last_error: Mutex::new(String::new()),
            disk_bytes: AtomicU64::new(0),
            backlog_bytes: AtomicU64::new(0),
            backlog_records: AtomicU64::new(0),
            counters: BackendCounters::default(),
            lag: lag::LagBoard::default(),
        }
    }

    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    pub fn since_ms(&self) -> u64 {
        self.since_ms.load(Relaxed)
    }

    /// Records a health verdict; returns true when it changed the state.
    pub fn set_up(&self, up: bool, error: Option<&str>) -> bool {
        if let Some(e) = error {
            self.set_error(e);
        }
        let changed = self.up.swap(up, Relaxed) != up;
        if changed {
            self.since_ms.store(unix_ms(SystemTime::now()), Relaxed);
        }
        changed
    }

    pub fn set_error(&self, e: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            last.clear();
            last.push_str(e);
        }
    }

    pub fn last_error(&self) -> String {
        self.last_error.lock().map(|e| e.clone()).unwrap_or_default()
    }

    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// Saturating decrement for gauges that several workers move.
    pub fn sub(gauge: &AtomicU64, n: u64) {
        let _ = gauge.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }
}

/// Backend states by identity (name + url), so snapshots that keep a backend share its state.
#[derive(Debug, Default)]
pub struct Registry {
    states: Mutex<HashMap<(String, String), Arc<BackendState>>>,
}

impl Registry {
    pub fn state(&self, name: &str, url: &str) -> Arc<BackendState> {
        let mut map = match self.states.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry((name.to_string(), url.to_string())).or_insert_with(|| Arc::new(BackendState::new(name, url))).clone()
    }

    /// Every state ever registered (current and removed backends), for /health and /metrics.
    pub fn all(&self) -> Vec<Arc<BackendState>> {
        let map = match self.states.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by(|a, b| (&a.name, &a.url).cmp(&(&b.name, &b.url)));
        v
    }
}
