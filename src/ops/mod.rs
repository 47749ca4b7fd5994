//! The proxy's operations surface: `/ping`, `/health` (JSON), `/metrics` (Prometheus text; every name in
//! `metrics.rs`) and the self-statistics point of measurement `influxdb.cluster`. It reads the
//! counters (`crate::stats`) and states every other module keeps; nothing below imports it.

pub mod metrics;
pub mod stats_point;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::params::Params;
use crate::http::response::Response;
use crate::shared::Shared;
use crate::upstream::unix_ms;

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
