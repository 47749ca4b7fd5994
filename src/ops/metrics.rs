//! `/metrics` in the Prometheus text format. Every metric name the proxy exports is in this file, with
//! its help text, so dashboards have one place to look.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::shared::Shared;
use crate::stats::{Histogram, ProxyStats};
use crate::upstream::{BackendCounters, BackendState};

/// (metric name, help text, how to read it)
type Counter<T> = (&'static str, &'static str, for<'a> fn(&'a T) -> &'a AtomicU64);
type Gauge<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Proxy-wide counters.
const PROXY_COUNTERS: &[Counter<ProxyStats>] = &[
    ("influx_proxy_write_requests_total", "Requests to /write.", |s| &s.write_requests),
    ("influx_proxy_write_lines_total", "Lines stored in at least one outbox.", |s| &s.write_lines),
    ("influx_proxy_write_bytes_total", "Body bytes of /write requests (after gunzip).", |s| &s.write_bytes),
    ("influx_proxy_lines_unrouted_total", "Lines whose measurement no keymap routes.", |s| &s.lines_unrouted),
    ("influx_proxy_lines_unparsable_total", "Lines that are not line protocol.", |s| &s.lines_unparsable),
    ("influx_proxy_lines_refused_total", "Lines no backend could store (answered 503).", |s| &s.lines_refused),
    ("influx_proxy_prom_samples_skipped_total", "Remote-write samples skipped (NaN/Inf, bad time/labels).", |s| {
        &s.prom_samples_skipped
    }),
    ("influx_proxy_query_requests_total", "Requests to /query.", |s| &s.query_requests),
    ("influx_proxy_queries_refused_total", "Queries refused by the filter or planner.", |s| &s.queries_refused),
    ("influx_proxy_http_client_errors_total", "Answers with a 4xx status.", |s| &s.client_errors),
    ("influx_proxy_http_server_errors_total", "Answers with a 5xx status.", |s| &s.server_errors),
    ("influx_proxy_auth_failures_total", "Requests refused with 401.", |s| &s.auth_failures),
    ("influx_proxy_connections_accepted_total", "Client connections accepted.", |s| &s.connections_accepted),
    ("influx_proxy_connections_refused_total", "Client connections closed at once (limit).", |s| {
        &s.connections_refused
    }),
    ("influx_proxy_connections_shed_total", "Client connections closed at once: out of file descriptors.", |s| {
        &s.connections_shed
    }),
    ("influx_proxy_writer_pauses_total", "Writer connections paused: a backend took batches slower.", |s| {
        &s.writer_pauses
    }),
    ("influx_proxy_config_reloads_total", "New configurations applied.", |s| &s.config_reloads),
    ("influx_proxy_config_failures_total", "Configurations rejected or unreadable.", |s| &s.config_failures),
];

/// Per-backend counters: (name, help, field).
const BACKEND_COUNTERS: &[Counter<BackendCounters>] = &[
    ("influx_proxy_backend_lines_in_total", "Lines stored in the backend's outbox.", |c| &c.lines_in),
    (
        "influx_proxy_backend_bytes_in_total",
        "Bytes stored in the backend's outbox (compressed, for batches stored gzip).",
        |c| &c.bytes_in,
    ),
    ("influx_proxy_backend_lines_sent_total", "Lines the backend acknowledged.", |c| &c.lines_sent),
    ("influx_proxy_backend_batches_sent_total", "Batches the backend acknowledged.", |c| &c.batches_sent),
    ("influx_proxy_backend_bytes_sent_total", "Payload bytes (as stored) the backend acknowledged.", |c| &c.bytes_sent),
    ("influx_proxy_backend_retries_total", "Failed sends kept for retry.", |c| &c.retries),
    ("influx_proxy_backend_lines_parked_total", "Lines set aside until their database exists.", |c| &c.parked),
    ("influx_proxy_backend_recovery_cut_bytes_total", "Damaged log bytes cut at start.", |c| &c.recovery_cut_bytes),
    ("influx_proxy_backend_queries_total", "Queries the backend answered.", |c| &c.queries),
    ("influx_proxy_backend_query_errors_total", "Failed query attempts.", |c| &c.query_errors),
];

/// Dropped lines by reason, one metric with a `reason` label.
const DROPPED: &str = "influx_proxy_backend_lines_dropped_total";
type Reason = (&'static str, fn(&BackendCounters) -> &AtomicU64);
const DROPPED_REASONS: &[Reason] =
    &[("bad_data", |c| &c.dropped_bad_data), ("disk", |c| &c.dropped_disk), ("rejected", |c| &c.dropped_rejected)];

/// Per-backend gauges.
const BACKEND_GAUGES: &[Gauge<BackendState>] = &[
    ("influx_proxy_backend_up", "1 when the last health check succeeded.", |s| u64::from(s.is_up())),
    ("influx_proxy_backend_backlog_bytes", "Payload bytes waiting for the backend.", |s| s.backlog_bytes.load(Relaxed)),
    ("influx_proxy_backend_backlog_records", "Batches waiting for the backend.", |s| s.backlog_records.load(Relaxed)),
    ("influx_proxy_backend_disk_bytes", "Bytes of the backend's outbox files.", |s| s.disk_bytes.load(Relaxed)),
    ("influx_proxy_backend_lag_milliseconds", "Age of the oldest data waiting for the backend (any target).", |s| {
        s.lag.summary(std::time::Instant::now()).0.behind.as_millis() as u64
    }),
    ("influx_proxy_backend_parked", "1 while the backend has parked data (lagging for its targets).", |s| {
        u64::from(s.lag.summary(std::time::Instant::now()).0.parked)
    }),
    ("influx_proxy_backend_repairing", "1 while a repair or rebalance job copies into the backend.", |s| {
        u64::from(s.lag.summary(std::time::Instant::now()).0.copying)
    }),
];

/// Repair and rebalance jobs, over every job since start.
const JOB_COUNTERS: &[Counter<crate::jobs::Jobs>] = &[
    ("influx_proxy_job_lines_copied_total", "Lines jobs committed to outboxes.", |j| &j.lines_copied),
    ("influx_proxy_job_lines_deleted_total", "Points rebalance cleanups removed.", |j| &j.lines_deleted),
    ("influx_proxy_job_windows_compared_total", "Windows jobs compared.", |j| &j.windows_compared),
    ("influx_proxy_job_windows_differing_total", "Windows jobs found different.", |j| &j.windows_differing),
];

const WRITE_DURATION: &str = "influx_proxy_write_duration_seconds";
const QUERY_DURATION: &str = "influx_proxy_query_duration_seconds";

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let (buckets, sum, count) = h.snapshot();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (le, n) in buckets {
        let le = le.map_or_else(|| "+Inf".to_string(), |s| s.to_string());
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
}

const BUILD_INFO: &str = "influx_proxy_build_info";
const START_TIME: &str = "process_start_time_seconds";

pub fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(8192);
    let stats = &shared.stats;
    let _ = writeln!(
        out,
        "# HELP {BUILD_INFO} The running build; the value is always 1.\n# TYPE {BUILD_INFO} gauge\n\
         {BUILD_INFO}{{version=\"{}\"}} 1",
        label(env!("CARGO_PKG_VERSION"))
    );
    let started = stats.started.0.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let _ = writeln!(
        out,
        "# HELP {START_TIME} Start time of the process since the Unix epoch in seconds.\n\
         # TYPE {START_TIME} gauge\n{START_TIME} {:.3}",
        started.as_secs_f64()
    );
    for (name, help, field) in PROXY_COUNTERS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", field(stats).load(Relaxed));
    }
    let version = shared.config_status(|s| s.version);
    let _ = writeln!(
        out,
        "# HELP influx_proxy_config_version Number of configurations applied since start.\n\
         # TYPE influx_proxy_config_version gauge\ninflux_proxy_config_version {version}"
    );
    let _ = writeln!(
        out,
        "# HELP influx_proxy_inflight_request_bytes Request bytes buffered now.\n\
         # TYPE influx_proxy_inflight_request_bytes gauge\ninflux_proxy_inflight_request_bytes {}",
        shared.inflight_bytes()
    );
    histogram(&mut out, WRITE_DURATION, "Time from a complete /write request to its answer.", &stats.write_latency);
    histogram(
        &mut out,
        QUERY_DURATION,
        "Time from a complete /query request to its full answer.",
        &stats.query_latency,
    );

    let backends = shared.registry.all();
    let labels: Vec<String> =
        backends.iter().map(|b| format!("backend=\"{}\",url=\"{}\"", label(&b.name), label(&b.url))).collect();
    for (name, help, field) in BACKEND_COUNTERS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (b, l) in backends.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", field(&b.counters).load(Relaxed));
        }
    }
    let _ = writeln!(out, "# HELP {DROPPED} Lines dropped for good, by reason.\n# TYPE {DROPPED} counter");
    for (b, l) in backends.iter().zip(&labels) {
        for (reason, field) in DROPPED_REASONS {
            let _ = writeln!(out, "{DROPPED}{{{l},reason=\"{reason}\"}} {}", field(&b.counters).load(Relaxed));
        }
    }
    for (name, help, value) in BACKEND_GAUGES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (b, l) in backends.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", value(b));
        }
    }
    for (name, help, field) in JOB_COUNTERS {
        let _ =
            writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", field(&shared.jobs).load(Relaxed));
    }
    let (queued, running) = shared.jobs.active();
    let _ = writeln!(
        out,
        "# HELP influx_proxy_jobs Repair and rebalance jobs by state.\n# TYPE influx_proxy_jobs gauge\n\
         influx_proxy_jobs{{state=\"queued\"}} {queued}\ninflux_proxy_jobs{{state=\"running\"}} {running}"
    );
    out
}

/// Counter values for the self-statistics point: (field name, value).
pub fn stats_fields(shared: &Shared) -> Vec<(&'static str, u64)> {
    let s = &shared.stats;
    let backends = shared.registry.all();
    let sum = |f: fn(&BackendState) -> u64| backends.iter().map(|b| f(b)).sum::<u64>();
    vec![
        ("write_requests", s.write_requests.load(Relaxed)),
        ("write_lines", s.write_lines.load(Relaxed)),
        ("write_bytes", s.write_bytes.load(Relaxed)),
        ("lines_unrouted", s.lines_unrouted.load(Relaxed)),
        ("lines_unparsable", s.lines_unparsable.load(Relaxed)),
        ("lines_refused", s.lines_refused.load(Relaxed)),
        ("query_requests", s.query_requests.load(Relaxed)),
        ("queries_refused", s.queries_refused.load(Relaxed)),
        ("backlog_bytes", sum(|b| b.backlog_bytes.load(Relaxed))),
        ("backlog_records", sum(|b| b.backlog_records.load(Relaxed))),
        ("backends_down", sum(|b| u64::from(!b.is_up()))),
    ]
}
