//! The `/write` endpoint: a parsed request in, an InfluxDB-shaped answer out. Checks the parameters,
//! gunzips the body within the body limit, traces it if asked, stores its lines (`store`) and writes
//! the answer to the client's output. It touches no connection and no worker: everything it needs is
//! in `WriteContext`.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Scratch, WriteParams, WriteResult, params, store};
use crate::config::Config;
use crate::http::params::Params;
use crate::http::request::Head;
use crate::http::response::{Response, write_error_retry};
use crate::outbox::set::Outboxes;
use crate::stats::ProxyStats;
use crate::upstream::BackendState;

/// What a write needs from the worker that received it.
pub struct WriteContext<'a> {
    pub config: &'a Config,
    pub outboxes: &'a mut Outboxes,
    pub scratch: &'a mut Scratch,
    pub stats: &'a ProxyStats,
    /// `--max-body-bytes`: the limit of a decompressed body too.
    pub max_body: usize,
    /// Number of this request on its worker (outboxes tell a request's first line by it).
    pub request: u64,
    pub peer: SocketAddr,
}

/// Handles one `/write`; the answer is complete in `out` when it returns.
pub fn serve(mut cx: WriteContext, head: &Head, raw: &[u8], close: bool, out: &mut Vec<u8>) {
    serve_with(&mut cx, head, &Params::parse(&head.query), raw, close, out);
}

/// [`serve`] with `/write` parameters given: `/api/v2/write` and Prometheus remote write translate
/// theirs (`write::v2`, `write::prom`) and come here.
pub fn serve_with(cx: &mut WriteContext, head: &Head, query: &Params, raw: &[u8], close: bool, out: &mut Vec<u8>) {
    let started = Instant::now();
    BackendState::add(&cx.stats.write_requests, 1);
    let result = handle(cx, head, query, raw);
    respond(out, &result, close, cx.stats);
    cx.stats.write_latency.observe(started.elapsed());
}

fn handle(cx: &mut WriteContext, head: &Head, query: &Params, raw: &[u8]) -> WriteResult {
    let WriteContext { config, outboxes, scratch, stats, max_body, request, peer } = cx;
    let (config, stats, max_body, request, peer) = (*config, *stats, *max_body, *request, *peer);
    let mut wp: WriteParams = match params(config, query) {
        Ok(p) => p,
        Err(r) => return r,
    };
    wp.request = request;
    let mut inflated = std::mem::take(&mut scratch.inflated);
    let body: &[u8] = if head.gzip_body {
        if let Err(e) = scratch.gunzip.decompress(raw, max_body, &mut inflated) {
            scratch.inflated = inflated;
            return WriteResult::error(e.status(), e.to_string());
        }
        // Should the body be a batch as it stands, the client's compression may be forwarded: when it
        // is no larger than the lines themselves (gzip allows padding, e.g. empty members, that would
        // make a batch far larger than the batch limits let any other be).
        if scratch.gunzip.forwardable() && raw.len() <= inflated.len() {
            wp.gzip = Some(raw);
        }
        &inflated
    } else {
        raw
    };
    if config.node.write_tracing {
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
    let result = store(config, &wp, body, outboxes, scratch, stats);
    // Keep the buffer for the next gzip body, unless one huge body grew it.
    if inflated.capacity() > 4 << 20 {
        inflated = Vec::new();
    }
    scratch.inflated = inflated;
    result
}

/// Writes the answer to a write (or a self-statistics point's outcome is dropped by the caller).
pub fn respond(out: &mut Vec<u8>, r: &WriteResult, close: bool, stats: &ProxyStats) {
    match &r.error {
        None => Response { close, content_type: Some("application/json"), ..Response::new(r.status) }.write_to(out),
        Some(msg) => {
            let counter = if r.status >= 500 { &stats.server_errors } else { &stats.client_errors };
            BackendState::add(counter, 1);
            write_error_retry(out, r.status, msg, close, r.retry_after);
        }
    }
}
