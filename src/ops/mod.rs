//! The proxy's operations surface: counters shared by workers, and (later in the flow) `/health`,
//! `/metrics` and the self-statistics point.

use std::sync::atomic::AtomicU64;

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
    pub query_requests: AtomicU64,
    pub queries_refused: AtomicU64,
    /// Answers with status >= 400, by class.
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub config_reloads: AtomicU64,
    pub config_failures: AtomicU64,
}
