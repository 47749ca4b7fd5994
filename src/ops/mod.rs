//! The proxy's operations surface: proxy-wide counters and latency histograms (shared by workers, bumped
//! once per request), `/health` (JSON), `/metrics` (Prometheus text; every name in `metrics.rs`) and the
//! self-statistics point of measurement `influxdb.cluster`.

pub mod metrics;
pub mod stats_point;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::http::params::Params;
use crate::http::response::Response;
use crate::shared::Shared;
use crate::upstream::unix_ms;

/// Proxy-wide counters; per-backend ones live in `upstream::BackendCounters`.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub write_requests: AtomicU64,
    /// Lines accepted into at least one outbox.
    pub write_lines: AtomicU64,
    pub write_bytes: AtomicU64,
    /// Lines no keymap matched (and no `nexts` backend took).
    pub lines_unrouted: AtomicU64,
    /// Lines that are not line protocol.
    pub lines_unparsable: AtomicU64,
    /// Lines none of whose backends could store them (disk limit): answered 503.
    pub lines_refused: AtomicU64,
    /// Prometheus remote-write samples not stored (NaN/±Inf, time out of range, inexpressible labels).
    pub prom_samples_skipped: AtomicU64,
    pub query_requests: AtomicU64,
    pub queries_refused: AtomicU64,
    /// Answers with status >= 400, by class.
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    pub auth_failures: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Connections closed at once because the process was out of file descriptors (`net::fds`).
    pub connections_shed: AtomicU64,
    pub config_reloads: AtomicU64,
    pub config_failures: AtomicU64,
    pub write_latency: Histogram,
    pub query_latency: Histogram,
    /// When the process started serving, for `process_start_time_seconds`.
    pub started: StartTime,
}

/// The time the stats were created: at start, before any worker runs.
#[derive(Debug, Clone, Copy)]
pub struct StartTime(pub SystemTime);

impl Default for StartTime {
    fn default() -> Self {
        StartTime(SystemTime::now())
    }
}

/// `/ping`: 204, or with `verbose` 200 and the version as JSON (as InfluxDB 1.7+ documents).
pub fn ping(params: &Params, head_only: bool, close: bool, out: &mut Vec<u8>) {
    if params.get("verbose").is_some_and(|v| v == "true" || v == "1") {
        let body = format!("{{\"version\":\"{}\"}}\n", crate::defaults::INFLUXDB_VERSION);
        Response { close, head_only, ..Response::json(200, body.as_bytes()) }.write_to(out);
    } else {
        Response { close, content_type: Some("application/json"), ..Response::new(204) }.write_to(out);
    }
}

/// `/health`: the JSON of `health_json`.
pub fn serve_health(shared: &Shared, head_only: bool, close: bool, out: &mut Vec<u8>) {
    let body = serde_json::to_vec_pretty(&health_json(shared)).unwrap_or_default();
    Response { close, head_only, ..Response::json(200, &body) }.write_to(out);
}

/// `/metrics`: Prometheus text.
pub fn serve_metrics(shared: &Shared, head_only: bool, close: bool, out: &mut Vec<u8>) {
    let body = metrics::render(shared);
    let ct = Some("text/plain; version=0.0.4; charset=utf-8");
    Response { close, head_only, content_type: ct, ..Response::new(200) }.with_body(body.as_bytes(), out);
}

/// Upper bounds of the latency buckets, in microseconds.
pub const BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 10_000_000,
];

/// A Prometheus-style cumulative histogram of durations, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// (upper bound in seconds or None for +Inf, cumulative count), sum in seconds, count.
    pub fn snapshot(&self) -> (Vec<(Option<f64>, u64)>, f64, u64) {
        let mut cumulative = 0;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Relaxed);
            out.push((BUCKETS_US.get(i).map(|&us| us as f64 / 1e6), cumulative));
        }
        (out, self.sum_us.load(Relaxed) as f64 / 1e6, self.count.load(Relaxed))
    }
}

fn rfc3339_ms(ms: u64) -> String {
    crate::logger::utc_timestamp(std::time::UNIX_EPOCH + Duration::from_millis(ms))
}

/// `/health`: backend states, backlogs, config version. `status` is `ok` when every configured
/// backend is up and the last read of the config source went well, `degraded` otherwise; `problems`
/// says why, one sentence per reason.
pub fn health_json(shared: &Shared) -> Value {
    let (config, version, last_error, source) =
        shared.config_status(|s| (s.current.clone(), s.version, s.last_error.clone(), s.source.clone()));
    let mut problems = Vec::new();
    let backends: Vec<Value> = shared
        .registry
        .all()
        .iter()
        .filter_map(|st| {
            let in_config = config.backends.iter().any(|b| std::sync::Arc::ptr_eq(&b.state, st));
            let backlog = st.backlog_records.load(Relaxed);
            if !in_config && backlog == 0 && st.disk_bytes.load(Relaxed) == 0 {
                return None;
            }
            if in_config && !st.is_up() {
                problems.push(format!("backend {} is down", st.name));
            }
            let error = st.last_error();
            let backend = config.backends.iter().find(|b| std::sync::Arc::ptr_eq(&b.state, st));
            let tls = backend.and_then(|b| b.tls.as_ref()).map(|t| match &t.trust {
                crate::net::tls::Trust::Insecure => "certificate NOT verified (tlsinsecure)".to_string(),
                trust => format!("certificate verified against {trust}"),
            });
            let (lag, parked_targets) = st.lag.summary(std::time::Instant::now());
            let bound = crate::upstream::lag::bound(backend.map(|b| b.interval).unwrap_or_default());
            Some(json!({
                "name": st.name,
                "url": st.url,
                "in_config": in_config,
                "up": st.is_up(),
                "since": rfc3339_ms(st.since_ms()),
                "last_error": if error.is_empty() { Value::Null } else { Value::String(error) },
                "backlog_bytes": st.backlog_bytes.load(Relaxed),
                "backlog_records": st.backlog_records.load(Relaxed),
                "disk_bytes": st.disk_bytes.load(Relaxed),
                "lines_parked_total": st.counters.parked.load(Relaxed),
                "tls": tls,
                "lag_ms": lag.behind.as_millis() as u64,
                "lagging": lag.is_lagging(bound),
                "parked_targets": parked_targets,
                "repairing": lag.copying,
            }))
        })
        .collect();
    if let Some(e) = &last_error {
        problems.push(format!("the last config read failed, the previous config stays in force: {e}"));
    }
    json!({
        "status": if problems.is_empty() { "ok" } else { "degraded" },
        "problems": problems,
        "node": config.node.name,
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "version": version,
            "loaded_at": rfc3339_ms(unix_ms(config.loaded_at)),
            "source": source,
            "last_error": last_error,
            "warnings": config.warnings,
        },
        "backends": backends,
        // The certificate files the listener serves new connections with (null: plain HTTP).
        "tls": config.node.tls.as_ref().map(|t| t.files().map(|p| p.display().to_string()).collect::<Vec<_>>()),
        "jobs": shared.jobs.snapshot().iter().filter(|j| !j.is_finished()).map(crate::jobs::Job::to_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (buckets, sum, count) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.0031).abs() < 1e-6);
        assert_eq!(buckets[0], (Some(0.00025), 1));
        assert_eq!(buckets[4], (Some(0.005), 2));
        assert_eq!(buckets.last(), Some(&(None, 3)));
    }
}
