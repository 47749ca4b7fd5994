//! Proxy-wide counters and latency histograms: bumped by workers once per request (never per line),
//! read by `ops` for `/metrics`, `/health` and the self-statistics point. A leaf: it imports nothing
//! of the crate, so every step of the flow can count without depending on the operations surface.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

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
    /// Writers' connections paused (each time one is) because a backend was outpaced.
    pub writer_pauses: AtomicU64,
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
