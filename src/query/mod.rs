//! `/query`: InfluxQL in, one InfluxDB-shaped answer out.
//!
//! The flow: read `q` and the parameters (URL, or form body on POST) → split `q` into statements and
//! classify each (`influxql`) → judge each against the node's policy (`filter`; one refused statement
//! refuses the query, so `SELECT ...; DROP ...` cannot slip through) → plan each onto backends (`plan`)
//! → if one backend can answer everything, relay its answer as a stream (`exec::Relay`: chunked and
//! gzip answers included, never buffered whole); otherwise send each statement (or run of statements)
//! to its backend(s) and merge the answers (`exec::Gather`, `merge`) with the right `statement_id`s.

pub mod attempt;
pub mod exec;
pub mod filter;
pub mod influxql;
pub mod merge;
pub mod plan;
pub mod prom_read;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::{Registry, Token};

use crate::config::Config;
use crate::http::params::Params;
use crate::http::request::{Head, Method};
use crate::http::response::write_error;
use crate::stats::ProxyStats;
use crate::upstream::BackendState;
use exec::{Attempt, RequestSpec, Task, TaskKind, Unit};
use influxql::Source;
use plan::{Plan, Planned};

/// Why a query is answered at once with an error, before any backend is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    MissingQ,
    /// Not InfluxQL the classifier understands.
    Parse(String),
    /// The node's policy refuses a statement.
    Refused(String),
    /// A database other than the node's own.
    DatabaseNotFound(String),
    /// No backend holds what a statement reads.
    Plan(String),
}

impl QueryError {
    pub fn status(&self) -> u16 {
        match self {
            QueryError::DatabaseNotFound(_) => 404,
            _ => 400,
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::MissingQ => f.write_str("missing required parameter \"q\""),
            QueryError::Parse(e) => write!(f, "error parsing query: {e}"),
            QueryError::Refused(e) | QueryError::Plan(e) => f.write_str(e),
            QueryError::DatabaseNotFound(db) => write!(f, "database not found: \"{db}\""),
        }
    }
}

/// What to do with a query request.
pub enum Prepared {
    /// Forward unchanged to one of these backends (in order) and stream the answer.
    Relay { candidates: Vec<usize>, spec: RequestSpec },
    /// Send these sub-requests and merge their answers.
    Gather { parts: Vec<(Vec<usize>, RequestSpec)>, units: Vec<Unit>, pretty: bool },
}

/// What a query request needs from the worker that received it.
pub struct QueryContext<'a> {
    /// The snapshot the query is planned with; the task keeps it until the answer is complete, so a
    /// reload meanwhile changes nothing for it.
    pub config: Arc<Config>,
    pub stats: &'a ProxyStats,
    pub registry: &'a Registry,
    pub peer: SocketAddr,
    /// Gives each upstream connection of the task a token of the worker's poll.
    pub new_token: &'a mut dyn FnMut() -> Token,
    /// `--max-body-bytes`: also the limit of a decompressed remote-read request.
    pub max_body: usize,
}

/// Starts answering a query: an error is written to `out` at once (`None`); otherwise the task that
/// will produce the answer is returned for the worker to drive.
pub fn start(cx: QueryContext, head: &Head, body: &[u8], close: bool, out: &mut Vec<u8>) -> Option<Task> {
    let now = Instant::now();
    BackendState::add(&cx.stats.query_requests, 1);
    let config = cx.config;
    if config.node.query_tracing {
        trace(cx.peer, head, body);
    }
    let kind = match prepare(&config, head, body) {
        Err(e) => {
            cx.stats.query_latency.observe(now.elapsed());
            BackendState::add(&cx.stats.queries_refused, 1);
            let counter = if e.status() >= 500 { &cx.stats.server_errors } else { &cx.stats.client_errors };
            BackendState::add(counter, 1);
            write_error(out, e.status(), &e.to_string(), close);
            return None;
        }
        Ok(Prepared::Relay { candidates, spec }) => {
            let mut attempt = Attempt::new((cx.new_token)(), candidates, spec);
            attempt.start_next(&config, cx.registry, now);
            TaskKind::Relay(Box::new(exec::Relay::new(attempt, close, head.http10)))
        }
        Ok(Prepared::Gather { parts, units, pretty }) => {
            let parts = parts
                .into_iter()
                .map(|(candidates, spec)| {
                    let mut attempt = Attempt::new((cx.new_token)(), candidates, spec);
                    let answer =
                        (!attempt.start_next(&config, cx.registry, now)).then(|| Err(attempt.failures.join("; ")));
                    exec::Part { attempt, answer, bytes: 0 }
                })
                .collect();
            TaskKind::Gather(exec::Gather { parts, units, pretty, close })
        }
    };
    Some(Task::new(config, now, kind))
}

/// Starts answering a remote read: an error is written to `out` at once (`None`); otherwise the task
/// that will produce the answer is returned for the worker to drive.
pub fn start_remote_read(cx: QueryContext, head: &Head, body: &[u8], close: bool, out: &mut Vec<u8>) -> Option<Task> {
    let now = Instant::now();
    BackendState::add(&cx.stats.query_requests, 1);
    let config = cx.config;
    let prepared = match prom_read::prepare(&config, head, body, cx.max_body) {
        Ok(p) => p,
        Err(e) => {
            BackendState::add(&cx.stats.client_errors, 1);
            write_error(out, e.status(), &e.to_string(), close);
            return None;
        }
    };
    let parts = prepared
        .parts
        .into_iter()
        .map(|(candidates, spec)| {
            let mut attempt = Attempt::new((cx.new_token)(), candidates, spec);
            let answer = (!attempt.start_next(&config, cx.registry, now))
                .then(|| Err(prom_read::PartError::Failed(attempt.failures.join("; "))));
            prom_read::Part { attempt, answer }
        })
        .collect();
    let kind = TaskKind::PromRead(prom_read::PromRead { parts, queries: prepared.queries, close, decoded: 0 });
    Some(Task::new(config, now, kind))
}

fn trace(peer: SocketAddr, head: &Head, body: &[u8]) {
    let params = Params::parse(&head.query);
    let mut q = params.get("q").unwrap_or("").to_string();
    if q.is_empty() && head.form_body {
        q = Params::parse(&String::from_utf8_lossy(body)).get("q").unwrap_or("").to_string();
    }
    log::info!("query from {peer}: db={} q={q}", params.get("db").unwrap_or(""));
}

/// Parameters the proxy sets itself for sub-requests whose answers it merges.
const MERGE_DROPS: &[&str] = &["chunked", "chunk_size", "pretty", "q"];

pub fn prepare(config: &Config, head: &Head, body: &[u8]) -> Result<Prepared, QueryError> {
    let mut url = Params::parse(&head.query);
    let mut form = Params::default();
    // Only a form is read for parameters, as Go's `ParseForm` reads it.
    if head.method == Method::Post && head.form_body && !body.is_empty() {
        form.extend_from(body);
    }
    // Go's FormValue, which InfluxDB uses: the form body wins over the URL.
    let value = |name: &str| form.non_empty(name).or_else(|| url.non_empty(name)).map(str::to_string);
    let Some(q) = value("q") else {
        return Err(QueryError::MissingQ);
    };
    if let Some(node_db) = &config.node.db {
        match value("db") {
            Some(db) if db != *node_db => return Err(QueryError::DatabaseNotFound(db)),
            Some(_) => {}
            None => {
                url.0.retain(|(k, _)| k != "db");
                form.0.retain(|(k, _)| k != "db");
                url.0.push(("db".into(), node_db.clone()));
            }
        }
    }

    let param = |name: &str| form.non_empty(name).or_else(|| url.non_empty(name)).unwrap_or("").to_string();
    let read = plan::ReadContext::new(&param("db"), &param("rp"));
    let mut planned = Vec::new();
    for text in influxql::split_statements(&q) {
        let statement = match influxql::classify(text) {
            Ok(s) => s,
            Err(e) => return Err(QueryError::Parse(e.to_string())),
        };
        if let Err(refusal) = config.node.policy.check(&statement, text) {
            return Err(QueryError::Refused(refusal.to_string()));
        }
        if let Some(node_db) = &config.node.db
            && let Some(other) = foreign_db(&statement, node_db)
        {
            return Err(QueryError::DatabaseNotFound(other));
        }
        match plan::plan(config, &statement, &read) {
            Ok(plan) => planned.push(Planned { text, statement, plan }),
            Err(e) => return Err(QueryError::Plan(e.0)),
        }
    }
    if planned.is_empty() {
        return Err(QueryError::Parse("empty query".into()));
    }

    // With proxy authentication on, the client's credentials are the proxy's, not the backends'.
    let own_auth = config.node.auth.is_some();
    let keep = |drops: &[&str], p: &Params| -> Vec<(String, String)> {
        p.0.iter()
            .filter(|(k, _)| k != "q" && !drops.contains(&k.as_str()) && !(own_auth && (k == "u" || k == "p")))
            .cloned()
            .collect()
    };
    let spec = RequestSpec {
        post: head.method == Method::Post,
        url_params: keep(&[], &url),
        form_params: keep(&[], &form),
        q: q.clone(),
        accept: head.accept.clone(),
        accept_encoding: head.accept_encoding.clone(),
        authorization: head.authorization.clone().filter(|_| !own_auth),
        snappy_post: None,
    };
    if let Some(candidates) = plan::single_backend(&planned) {
        return Ok(Prepared::Relay { candidates, spec });
    }

    // Answers to merge must be plain, whole JSON documents.
    let merge_spec = |q: String| RequestSpec {
        url_params: keep(MERGE_DROPS, &url),
        form_params: keep(MERGE_DROPS, &form),
        q,
        accept: None,
        accept_encoding: None,
        ..spec.clone()
    };
    let name = |b: &usize| config.backends.get(*b).map_or("?", |b| b.name.as_str());
    let mut parts: Vec<(Vec<usize>, RequestSpec)> = Vec::new();
    let mut units = Vec::new();
    let mut i = 0;
    while i < planned.len() {
        match &planned[i].plan {
            Plan::One(first) => {
                // A run of statements one backend can answer together travels as one request.
                let mut common = first.clone();
                let mut end = i + 1;
                while let Some(Plan::One(next)) = planned.get(end).map(|p| &p.plan) {
                    let both: Vec<usize> = common.iter().copied().filter(|b| next.contains(b)).collect();
                    if both.is_empty() {
                        break;
                    }
                    common = both;
                    end += 1;
                }
                let text = planned[i..end].iter().map(|p| p.text).collect::<Vec<_>>().join(";\n");
                parts.push((common, merge_spec(text)));
                units.push(Unit::Group { first: i, count: end - i, part: parts.len() - 1 });
                i = end;
            }
            Plan::Merge { backends, skipped, kind, notes } => {
                let text = planned[i].backend_text();
                let ids = push_each(&mut parts, backends, || merge_spec(text.clone()));
                let mut warnings: Vec<String> =
                    skipped.iter().map(|b| format!("backend {} is down: its answer is missing", name(b))).collect();
                warnings.extend(notes.iter().cloned());
                units.push(Unit::Merge { id: i, kind: Some(*kind), parts: ids, warnings });
                i += 1;
            }
            Plan::Broadcast { backends, skipped } => {
                let text = planned[i].text.to_string();
                let ids = push_each(&mut parts, backends, || merge_spec(text.clone()));
                let warnings = skipped
                    .iter()
                    .map(|b| format!("backend {} is down: the statement was not applied there", name(b)))
                    .collect();
                units.push(Unit::Merge { id: i, kind: None, parts: ids, warnings });
                i += 1;
            }
        }
    }
    // InfluxDB reads `pretty` from the URL only.
    let pretty = url.get("pretty") == Some("true");
    Ok(Prepared::Gather { parts, units, pretty })
}

fn push_each(
    parts: &mut Vec<(Vec<usize>, RequestSpec)>,
    backends: &[usize],
    spec: impl Fn() -> RequestSpec,
) -> Vec<usize> {
    backends
        .iter()
        .map(|&b| {
            parts.push((vec![b], spec()));
            parts.len() - 1
        })
        .collect()
}

/// A database the statement names other than the node's.
fn foreign_db(statement: &influxql::Statement, node_db: &str) -> Option<String> {
    if let Some(db) = statement.on_db.as_deref().filter(|db| *db != node_db) {
        return Some(db.to_string());
    }
    statement.sources.iter().find_map(|s| {
        let db = match s {
            Source::Measurement { db, .. } | Source::Regex { db, .. } => db.as_deref(),
        };
        db.filter(|db| *db != node_db).map(str::to_string)
    })
}
