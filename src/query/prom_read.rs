//! Prometheus remote read (`/api/v1/prom/read`): which backends answer each query of a `ReadRequest`,
//! and one `ReadResponse` made of their answers.
//!
//! InfluxDB 1.x answers one query per request, so each query travels alone, to:
//! * the holders of its metric when it names one (an `EQ` matcher on `__name__`): one of them answers,
//!   the next is tried on failure, as for an InfluxQL `SELECT`;
//! * every readable backend when it does not (a regex or no name matcher): their answers are merged;
//! * nobody when the metric matches no keymap: nothing of it was ever stored, the result is empty.
//!
//! The merge is a union of series by label set; a series several backends return (replicas) has its
//! samples sorted by time with duplicate timestamps collapsed. The answer is what InfluxDB would send:
//! a snappy-compressed `ReadResponse`, one `QueryResult` per query, in order.
//!
//! Bounds: the request is decompressed within `--max-body-bytes`; the answers of all backends together
//! within `MAX_GATHER_BYTES` on the wire and `MAX_DECODED_BYTES` decompressed.

use std::collections::HashMap;
use std::time::Instant;

use mio::Registry;

use crate::config::Config;
use crate::defaults::READ_CHUNK;
use crate::http::output::Output;
use crate::http::params::Params;
use crate::http::request::Head;
use crate::http::response::{Response, write_error};
use crate::prom::{self, DecodeError, MatchType, OwnedSeries, Query};
use crate::query::attempt::{Attempt, MAX_GATHER_BYTES, RequestSpec, TaskState};
use crate::query::plan::{ReadContext, read_candidates};
use crate::upstream::BackendState;

/// Which backends answer one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One of these answers, in this order (failover).
    One(Vec<usize>),
    /// Each of these answers; the answers are merged.
    Each(Vec<usize>),
    /// No backend can hold the metric: the result is empty.
    Nothing,
}

/// The metric a query names exactly, if any.
pub fn metric<'a>(q: &Query<'a>) -> Option<&'a [u8]> {
    q.matchers.iter().find(|m| m.kind == MatchType::Eq && m.name == b"__name__").map(|m| m.value)
}

pub fn route(config: &Config, q: &Query) -> Route {
    if let Some(name) = metric(q) {
        return match config.routes.lookup(name) {
            Some(r) => {
                // No database here: lag by target is not judged (only data recovered at start counts).
                let cx = ReadContext::new("", "");
                let holders =
                    read_candidates(config, &cx, config.routes.backends(r).iter().map(|&b| usize::from(b))).order;
                if holders.is_empty() { Route::Nothing } else { Route::One(holders) }
            }
            None => Route::Nothing,
        };
    }
    let readable: Vec<usize> = (0..config.backends.len()).filter(|&b| !config.backends[b].write_only).collect();
    let up: Vec<usize> = readable.iter().copied().filter(|&b| config.backends[b].state.is_up()).collect();
    // With every backend down, asking them all anyway costs nothing and finds one that just came back.
    Route::Each(if up.is_empty() { readable } else { up })
}

/// One query, routed, with the request that asks a backend for it alone (snappy `ReadRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub route: Route,
    pub request: Vec<u8>,
}

/// Decodes a remote-read body and routes each of its queries.
pub fn plan(config: &Config, body: &[u8], max_body: usize) -> Result<Vec<Planned>, DecodeError> {
    let mut proto = Vec::new();
    prom::unsnappy(body, max_body, &mut proto)?;
    let queries = prom::decode_read_request(&proto)?;
    Ok(queries
        .iter()
        .map(|q| Planned { route: route(config, q), request: prom::snappy(&prom::read_request_of(q.raw)) })
        .collect())
}

/// What the worker starts for a remote read: per part, its candidate backends (in failover order) and
/// its request; per query of the request, the parts whose answers make its result.
pub struct Prepared {
    pub parts: Vec<(Vec<usize>, RequestSpec)>,
    pub queries: Vec<Vec<usize>>,
}

/// Why a remote read is answered at once with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// A database other than the node's own.
    DatabaseNotFound(String),
    /// Not a snappy `ReadRequest`, or one too large once decompressed.
    Decode(DecodeError),
}

impl ReadError {
    pub fn status(&self) -> u16 {
        match self {
            ReadError::DatabaseNotFound(_) => 404,
            ReadError::Decode(DecodeError::TooLarge { .. }) => 413,
            ReadError::Decode(_) => 400,
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::DatabaseNotFound(db) => write!(f, "database not found: \"{db}\""),
            ReadError::Decode(e) => e.fmt(f),
        }
    }
}

/// Checks `db` against the node's, decodes and routes the request.
pub fn prepare(config: &Config, head: &Head, body: &[u8], max_body: usize) -> Result<Prepared, ReadError> {
    let mut url = Params::parse(&head.query);
    match (&config.node.db, url.non_empty("db")) {
        (Some(node_db), Some(db)) if db != node_db => return Err(ReadError::DatabaseNotFound(db.to_string())),
        (Some(node_db), None) => {
            url.0.retain(|(k, _)| k != "db");
            url.0.push(("db".into(), node_db.clone()));
        }
        _ => {}
    }
    let planned = plan(config, body, max_body).map_err(ReadError::Decode)?;
    // With proxy authentication on, the client's credentials are the proxy's, not the backends'.
    let own_auth = config.node.auth.is_some();
    let url_params: Vec<(String, String)> =
        url.0.into_iter().filter(|(k, _)| !(own_auth && (k == "u" || k == "p"))).collect();
    let spec = |request: Vec<u8>| RequestSpec {
        post: true,
        url_params: url_params.clone(),
        form_params: Vec::new(),
        q: String::new(),
        accept: None,
        accept_encoding: None,
        authorization: head.authorization.clone().filter(|_| !own_auth),
        snappy_post: Some(("/api/v1/prom/read", request)),
    };
    let mut prepared = Prepared { parts: Vec::new(), queries: Vec::new() };
    for p in planned {
        let lists = match p.route {
            Route::One(candidates) => vec![candidates],
            Route::Each(backends) => backends.into_iter().map(|b| vec![b]).collect(),
            Route::Nothing => Vec::new(),
        };
        let mut ids = Vec::new();
        for candidates in lists {
            ids.push(prepared.parts.len());
            prepared.parts.push((candidates, spec(p.request.clone())));
        }
        prepared.queries.push(ids);
    }
    Ok(prepared)
}

/// Union of the series of several answers to one query: a label set (in any order) is one series;
/// its samples are sorted by time, one per timestamp (the first answer's wins). Series keep the order
/// in which they first appear.
pub fn merge(answers: Vec<Vec<OwnedSeries>>) -> Vec<OwnedSeries> {
    let mut merged: Vec<OwnedSeries> = Vec::new();
    let mut index: HashMap<prom::LabelSet, usize> = HashMap::new();
    let mut grown: Vec<bool> = Vec::new();
    for series in answers.into_iter().flatten() {
        let mut key = series.labels.clone();
        key.sort();
        match index.get(&key) {
            Some(&i) => {
                merged[i].samples.extend(series.samples);
                grown[i] = true;
            }
            None => {
                index.insert(key, merged.len());
                grown.push(false);
                merged.push(series);
            }
        }
    }
    for (s, grown) in merged.iter_mut().zip(grown) {
        if grown || !s.samples.windows(2).all(|w| w[0].timestamp_ms < w[1].timestamp_ms) {
            s.samples.sort_by_key(|x| x.timestamp_ms);
            s.samples.dedup_by_key(|x| x.timestamp_ms);
        }
    }
    merged
}

/// The answer of one backend to one query, or why there is none.
pub type PartAnswer = Result<Vec<OwnedSeries>, PartError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartError {
    /// The backend refused the query (4xx): its status and message go to the client.
    Refused(u16, String),
    /// No backend could answer (network, 5xx, timeout, unreadable answer).
    Failed(String),
}

/// Decompressed answer bytes one remote read may hold, all its parts together.
pub const MAX_DECODED_BYTES: usize = 4 * MAX_GATHER_BYTES;

/// A backend's whole answer; a 200 answer may decompress to `max_decoded` bytes, which `decoded` counts.
pub fn parse_answer(status: u16, body: &[u8], max_decoded: usize, decoded: &mut usize) -> PartAnswer {
    if status == 200 {
        let mut proto = Vec::new();
        let results = prom::unsnappy(body, max_decoded, &mut proto)
            .and_then(|()| {
                *decoded += proto.len();
                prom::decode_read_response(&proto)
            })
            .map_err(|e| PartError::Failed(format!("unreadable remote-read answer: {e}")))?;
        // InfluxDB answers the one query it was asked with one result.
        return Ok(results.into_iter().next().unwrap_or_default());
    }
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    if (400..500).contains(&status) {
        Err(PartError::Refused(status, msg))
    } else {
        Err(PartError::Failed(format!("HTTP {status}: {msg}")))
    }
}

/// One sub-request of a remote read.
pub struct Part {
    pub attempt: Attempt,
    pub answer: Option<PartAnswer>,
}

/// A remote read in flight: its parts, and which parts answer which query.
pub struct PromRead {
    pub parts: Vec<Part>,
    /// Per query of the request, its parts (empty: the result is empty).
    pub queries: Vec<Vec<usize>>,
    pub close: bool,
    /// Decompressed answer bytes so far (bounded by `MAX_DECODED_BYTES`).
    pub decoded: usize,
}

impl PromRead {
    pub fn pump(&mut self, out: &mut Output, config: &Config, registry: &Registry, now: Instant) -> TaskState {
        for i in 0..self.parts.len() {
            if self.parts[i].answer.is_some() {
                continue;
            }
            let others: usize =
                self.parts.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, p)| p.attempt.body.len()).sum();
            let room = MAX_GATHER_BYTES.saturating_sub(others);
            let part = &mut self.parts[i];
            part.answer = advance(&mut part.attempt, room, config, registry, now).map(|raw| {
                let (status, body) = raw?;
                parse_answer(status, &body, MAX_DECODED_BYTES.saturating_sub(self.decoded), &mut self.decoded)
            });
        }
        if self.parts.iter().any(|p| p.answer.is_none()) {
            return TaskState::Running;
        }
        for p in &mut self.parts {
            p.attempt.close(registry);
        }
        let answers: Vec<PartAnswer> = self
            .parts
            .iter_mut()
            .map(|p| p.answer.take().unwrap_or(Err(PartError::Failed("no answer".into()))))
            .collect();
        let refused = answers.iter().find_map(|a| match a {
            Err(PartError::Refused(status, msg)) => Some((*status, msg.clone())),
            _ => None,
        });
        let failed: Vec<String> = answers
            .iter()
            .filter_map(|a| match a {
                Err(PartError::Failed(why)) => Some(why.clone()),
                _ => None,
            })
            .collect();
        if let Some((status, msg)) = refused {
            write_error(out.buf(), status, &msg, self.close);
        } else if !failed.is_empty() {
            let msg = format!("no backend could answer the remote read: {}", failed.join("; "));
            write_error(out.buf(), 503, &msg, self.close);
        } else {
            let mut answers: Vec<Option<Vec<OwnedSeries>>> = answers.into_iter().map(Result::ok).collect();
            let results: prom::Results = self
                .queries
                .iter()
                .map(|parts| merge(parts.iter().filter_map(|&p| answers.get_mut(p).and_then(Option::take)).collect()))
                .collect();
            let body = prom::snappy(&prom::encode_read_response(&results));
            Response {
                close: self.close,
                content_type: Some("application/x-protobuf"),
                headers: &[("Content-Encoding", "snappy")],
                ..Response::new(200)
            }
            .with_body(&body, out.buf());
        }
        TaskState::Done { close: self.close }
    }
}

/// A backend's status and whole answer body.
type RawAnswer = Result<(u16, Vec<u8>), PartError>;

/// Drives a part; `Some` once it has an answer or has failed for good.
fn advance(a: &mut Attempt, room: usize, config: &Config, registry: &Registry, now: Instant) -> Option<RawAnswer> {
    loop {
        let failure = match a.drive(4 * READ_CHUNK, registry) {
            Ok(d) => {
                if a.body.len() > room {
                    a.close(registry);
                    return Some(Err(PartError::Failed(format!(
                        "the answers are too large to merge in the proxy (over {} MiB)",
                        MAX_GATHER_BYTES >> 20
                    ))));
                }
                if a.head().is_some() && a.status() >= 500 && a.has_candidates() {
                    format!("HTTP {}", a.status())
                } else if d.done {
                    if let Some(b) = a.backend.and_then(|b| config.backends.get(b)) {
                        BackendState::add(&b.state.counters.queries, 1);
                    }
                    a.close(registry);
                    return Some(Ok((a.status(), std::mem::take(&mut a.body))));
                } else if d.blocked {
                    return None;
                } else {
                    continue;
                }
            }
            Err(e) => e,
        };
        a.fail_current(config, failure, registry);
        if !a.start_next(config, registry, now) {
            return Some(Err(PartError::Failed(a.failures.join("; "))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::Sample;

    fn s(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> OwnedSeries {
        OwnedSeries {
            labels: labels.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
            samples: samples.iter().map(|&(value, timestamp_ms)| Sample { value, timestamp_ms }).collect(),
        }
    }

    #[test]
    fn merge_unions_by_label_set_and_collapses_duplicates() {
        let a = vec![
            s(&[("__name__", "up"), ("job", "a")], &[(1.0, 10), (2.0, 20)]),
            s(&[("__name__", "up"), ("job", "b")], &[(5.0, 10)]),
        ];
        let b = vec![
            s(&[("job", "a"), ("__name__", "up")], &[(3.0, 30), (9.0, 20), (0.5, 5)]),
            s(&[("__name__", "up"), ("job", "c")], &[(7.0, 1)]),
        ];
        let merged = merge(vec![a, b]);
        assert_eq!(
            merged,
            vec![
                s(&[("__name__", "up"), ("job", "a")], &[(0.5, 5), (1.0, 10), (2.0, 20), (3.0, 30)]),
                s(&[("__name__", "up"), ("job", "b")], &[(5.0, 10)]),
                s(&[("__name__", "up"), ("job", "c")], &[(7.0, 1)]),
            ]
        );
    }

    #[test]
    fn merge_of_one_answer_is_that_answer() {
        let a = vec![s(&[("b", "1"), ("a", "2")], &[(1.0, 1), (2.0, 2)]), s(&[("a", "1")], &[])];
        assert_eq!(merge(vec![a.clone()]), a);
        assert_eq!(merge(vec![]), vec![]);
    }

    #[test]
    fn answers_are_parsed() {
        let results = vec![vec![s(&[("__name__", "up")], &[(1.0, 1)])]];
        let body = prom::snappy(&prom::encode_read_response(&results));
        assert_eq!(parse_answer(200, &body, 1 << 20, &mut 0), Ok(results[0].clone()));
        assert_eq!(parse_answer(200, &prom::snappy(b""), 1 << 20, &mut 0), Ok(vec![]));
        assert!(matches!(parse_answer(200, b"junk", 1 << 20, &mut 0), Err(PartError::Failed(_))));
        assert_eq!(
            parse_answer(400, b"{\"error\":\"bad matcher\"}\n", 0, &mut 0),
            Err(PartError::Refused(400, "bad matcher".into()))
        );
        assert!(matches!(parse_answer(500, b"oops", 0, &mut 0), Err(PartError::Failed(_))));
    }

    #[test]
    fn routing_by_metric_name() {
        use crate::config::RawConfig;
        use crate::prom::Matcher;
        let raw = RawConfig::from_json(
            r#"{"NODES": {"l1": {"zone": "z2"}},
                "BACKENDS": {
                    "a": {"url": "http://127.0.0.1:1", "zone": "z1"},
                    "b": {"url": "http://127.0.0.1:2", "zone": "z2"},
                    "w": {"url": "http://127.0.0.1:4", "writeonly": "1"}},
                "KEYMAPS": {"cpu": ["a", "b", "w"], "disk": ["a"], "wo": ["w"]}}"#,
        )
        .unwrap();
        let c = Config::build(raw, "l1", &crate::upstream::Registry::default()).unwrap();
        let q = |kind, value: &'static str| Query {
            raw: b"",
            start_ms: 0,
            end_ms: 0,
            matchers: vec![Matcher { kind, name: b"__name__", value: value.as_bytes() }],
        };
        // Same zone first, write-only never.
        assert_eq!(route(&c, &q(MatchType::Eq, "cpu")), Route::One(vec![1, 0]));
        assert_eq!(route(&c, &q(MatchType::Eq, "disk")), Route::One(vec![0]));
        assert_eq!(route(&c, &q(MatchType::Eq, "nowhere")), Route::Nothing);
        assert_eq!(route(&c, &q(MatchType::Eq, "wo")), Route::Nothing);
        assert_eq!(route(&c, &q(MatchType::Re, "cpu|disk")), Route::Each(vec![0, 1]));
        c.backends[0].state.set_up(false, None);
        assert_eq!(route(&c, &q(MatchType::Eq, "cpu")), Route::One(vec![1, 0]));
        assert_eq!(route(&c, &q(MatchType::Neq, "x")), Route::Each(vec![1]));
        c.backends[1].state.set_up(false, None);
        assert_eq!(route(&c, &q(MatchType::Neq, "x")), Route::Each(vec![0, 1]));
    }

    #[test]
    fn prepare_checks_db_splits_queries_and_drops_proxy_credentials() {
        use crate::config::RawConfig;
        use crate::prom::Matcher;
        let raw = RawConfig::from_json(
            r#"{"NODES": {"l1": {"db": "prom", "username": "u", "password": "p"}},
                "BACKENDS": {"a": {"url": "http://127.0.0.1:1"}, "b": {"url": "http://127.0.0.1:2"}},
                "KEYMAPS": {"up": ["b", "a"], "_default_": ["a"]}}"#,
        )
        .unwrap();
        let c = Config::build(raw, "l1", &crate::upstream::Registry::default()).unwrap();
        let head = |path: &str| {
            crate::http::request::parse_head(
                format!("POST {path} HTTP/1.1\r\nAuthorization: Token u:p\r\n\r\n").as_bytes(),
            )
            .unwrap()
            .unwrap()
        };
        let eq = Matcher { kind: MatchType::Eq, name: b"__name__", value: b"up" };
        let re = Matcher { kind: MatchType::Re, name: b"__name__", value: b".+" };
        let mut req = prom::read_request_of(&prom::encode_query(1, 2, &[eq]));
        req.extend(prom::read_request_of(&prom::encode_query(1, 2, &[re])));
        let body = prom::snappy(&req);

        let p = prepare(&c, &head("/api/v1/prom/read?u=u&p=p&rp=r"), &body, 1 << 20).unwrap();
        assert_eq!(p.queries, vec![vec![0], vec![1, 2]]);
        let candidates: Vec<&Vec<usize>> = p.parts.iter().map(|(c, _)| c).collect();
        assert_eq!(candidates, [&vec![0, 1], &vec![0], &vec![1]]);
        let spec = &p.parts[0].1;
        assert_eq!(spec.url_params, vec![("rp".to_string(), "r".to_string()), ("db".to_string(), "prom".to_string())]);
        assert_eq!(spec.authorization, None);
        let (path, sent) = spec.snappy_post.clone().unwrap();
        assert_eq!(path, "/api/v1/prom/read");
        let mut one = Vec::new();
        prom::unsnappy(&sent, 1 << 20, &mut one).unwrap();
        assert_eq!(one, prom::read_request_of(&prom::encode_query(1, 2, &[eq])));

        let e = prepare(&c, &head("/api/v1/prom/read?db=other"), &body, 1 << 20).err();
        assert_eq!(e.as_ref().map(ReadError::status), Some(404));
        assert_eq!(e.map(|e| e.to_string()).as_deref(), Some("database not found: \"other\""));
        assert_eq!(prepare(&c, &head("/api/v1/prom/read"), b"junk", 1 << 20).err().map(|e| e.status()), Some(400));
        assert_eq!(prepare(&c, &head("/api/v1/prom/read"), &body, 10).err().map(|e| e.status()), Some(413));
    }

    #[test]
    fn metric_is_the_eq_name_matcher() {
        use crate::prom::Matcher;
        let q = |m: Vec<Matcher<'static>>| Query { raw: b"", start_ms: 0, end_ms: 0, matchers: m };
        let eq = Matcher { kind: MatchType::Eq, name: b"__name__", value: b"up" };
        let re = Matcher { kind: MatchType::Re, name: b"__name__", value: b"u.*" };
        let job = Matcher { kind: MatchType::Eq, name: b"job", value: b"x" };
        assert_eq!(metric(&q(vec![job, eq])), Some(&b"up"[..]));
        assert_eq!(metric(&q(vec![re, job])), None);
        assert_eq!(metric(&q(vec![])), None);
    }
}
