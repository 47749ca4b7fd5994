//! Running a planned query on the worker's poll: upstream exchanges with failover, the streaming relay
//! of a single backend's answer, and the gathering of several answers for merging.
//!
//! A relay never holds more than about `MAX_CLIENT_OUTPUT_BYTES` of an answer: it reads from the
//! backend only while the client's output buffer has room, and is resumed when the client drains. A
//! gather buffers its sub-answers (they are parsed and merged), `MAX_GATHER_BYTES` for all of them.

use std::sync::Arc;
use std::time::Instant;

use mio::{Registry, Token};
use serde_json::{Value, json};

pub use super::attempt::{Attempt, MAX_GATHER_BYTES, RequestSpec, TaskState};
use crate::config::Config;
use crate::defaults::READ_CHUNK;
use crate::http::output::Output;
use crate::http::response::reason;
use crate::query::merge::{self, PartAnswer};
use crate::query::plan::MergeKind;
use crate::query::prom_read::PromRead;
use crate::upstream::BackendState;

/// Streams one backend's answer to the client.
pub struct Relay {
    pub attempt: Attempt,
    head_sent: bool,
    chunked_out: bool,
    /// The client asked to close after this answer, or speaks HTTP/1.0.
    close: bool,
    http10: bool,
}

impl Relay {
    pub fn new(attempt: Attempt, close: bool, http10: bool) -> Relay {
        Relay { attempt, head_sent: false, chunked_out: false, close, http10 }
    }

    /// Moves the answer along as far as the client's room allows.
    pub fn pump(&mut self, out: &mut Output, config: &Config, registry: &Registry, now: Instant) -> TaskState {
        loop {
            let room = out.room();
            if room == 0 {
                return TaskState::Running;
            }
            let step = self.attempt.drive(room.min(4 * READ_CHUNK), registry);
            let step = match step {
                Ok(d) => {
                    if !self.head_sent && self.attempt.head().is_some() {
                        let status = self.attempt.status();
                        if status >= 500 && self.attempt.has_candidates() {
                            self.attempt.fail_current(config, format!("HTTP {status}"), registry);
                            if !self.attempt.start_next(config, registry, now) {
                                return self.give_up(out);
                            }
                            continue;
                        }
                        self.send_head(out.buf());
                    }
                    d
                }
                Err(e) => {
                    if self.head_sent {
                        self.attempt.fail_current(config, e, registry);
                        return TaskState::Broken;
                    }
                    self.attempt.fail_current(config, e, registry);
                    if self.attempt.start_next(config, registry, now) {
                        continue;
                    }
                    return self.give_up(out);
                }
            };
            if self.head_sent && !self.attempt.body.is_empty() {
                let body = std::mem::take(&mut self.attempt.body);
                let buf = out.buf();
                if self.chunked_out {
                    buf.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                    buf.extend_from_slice(&body);
                    buf.extend_from_slice(b"\r\n");
                } else {
                    buf.extend_from_slice(&body);
                }
                self.attempt.body = body;
                self.attempt.body.clear();
            }
            if step.done {
                if self.chunked_out {
                    out.buf().extend_from_slice(b"0\r\n\r\n");
                }
                if let Some(b) = self.attempt.backend.and_then(|b| config.backends.get(b)) {
                    BackendState::add(&b.state.counters.queries, 1);
                }
                self.attempt.close(registry);
                return TaskState::Done { close: self.close };
            }
            if step.blocked {
                return TaskState::Running;
            }
        }
    }

    fn send_head(&mut self, out: &mut Vec<u8>) {
        let Some(head) = self.attempt.head() else {
            return;
        };
        out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", head.status, reason(head.status)).as_bytes());
        for (name, value) in &head.headers {
            let hop = ["connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"];
            // CORS headers are the proxy's to give (`http::cors`), whatever a backend says.
            let cors = name.get(..15).is_some_and(|p| p.eq_ignore_ascii_case("access-control-"));
            if cors || hop.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                continue;
            }
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if head.status == 503 && head.header("retry-after").is_none() {
            // Every 503 a client gets from the proxy says when to retry, a relayed one too.
            out.extend_from_slice(b"Retry-After: 1\r\n");
        }
        let no_body = head.status == 204 || head.status == 304 || head.status < 200;
        match head.content_length {
            Some(n) if !head.chunked => out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes()),
            _ if no_body => {}
            _ if self.http10 => self.close = true,
            _ => {
                self.chunked_out = true;
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.head_sent = true;
    }

    /// No backend could answer: a 503 naming what was tried.
    fn give_up(&mut self, out: &mut Output) -> TaskState {
        let msg = if self.attempt.failures.is_empty() {
            "no backend available for this query".to_string()
        } else {
            format!("no backend could answer: {}", self.attempt.failures.join("; "))
        };
        crate::http::response::write_error(out.buf(), 503, &msg, self.close);
        TaskState::Done { close: self.close }
    }
}

/// One sub-request of a gather and its outcome.
pub struct Part {
    pub attempt: Attempt,
    pub answer: Option<PartAnswer>,
    /// Answer bytes it took (counted against `MAX_GATHER_BYTES`).
    pub bytes: usize,
}

/// How parts' answers become statement results.
pub enum Unit {
    /// Statements `first..first+count` sent together to one backend: its results, renumbered.
    Group { first: usize, count: usize, part: usize },
    /// One statement answered by several parts, merged (`None`: broadcast semantics).
    Merge { id: usize, kind: Option<MergeKind>, parts: Vec<usize>, warnings: Vec<String> },
}

/// Several sub-requests whose answers are merged into one response.
pub struct Gather {
    pub parts: Vec<Part>,
    pub units: Vec<Unit>,
    pub pretty: bool,
    pub close: bool,
}

impl Gather {
    pub fn pump(&mut self, out: &mut Output, config: &Config, registry: &Registry, now: Instant) -> TaskState {
        for i in 0..self.parts.len() {
            if self.parts[i].answer.is_some() {
                continue;
            }
            let buffered: usize = self.parts.iter().map(|p| p.bytes.max(p.attempt.body.len())).sum();
            let room = MAX_GATHER_BYTES.saturating_sub(buffered - self.parts[i].attempt.body.len());
            let part = &mut self.parts[i];
            part.answer = advance_part(&mut part.attempt, room, config, registry, now);
            if part.answer.is_some() {
                part.bytes = part.attempt.body.len();
                part.attempt.body = Vec::new();
            }
        }
        if self.parts.iter().any(|p| p.answer.is_none()) {
            return TaskState::Running;
        }
        // A statement a backend cannot parse fails the whole query, as on InfluxDB.
        let refused = self.parts.iter().find_map(|p| match (&p.answer, p.attempt.status()) {
            (Some(Ok(v)), 400) => Some(v.get("error").and_then(Value::as_str).unwrap_or("bad query").to_string()),
            _ => None,
        });
        if let Some(msg) = refused {
            crate::http::response::write_error(out.buf(), 400, &msg, self.close);
            for part in &mut self.parts {
                part.attempt.close(registry);
            }
            return TaskState::Done { close: self.close };
        }
        let body = self.assemble(config);
        let close = self.close;
        crate::http::response::Response { close, ..crate::http::response::Response::json(200, &body) }
            .write_to(out.buf());
        for part in &mut self.parts {
            part.attempt.close(registry);
        }
        TaskState::Done { close }
    }

    fn assemble(&mut self, config: &Config) -> Vec<u8> {
        let name = |p: &Part| {
            p.attempt.backend.and_then(|b| config.backends.get(b)).map_or_else(|| "?".to_string(), |b| b.name.clone())
        };
        let mut results: Vec<(usize, Value)> = Vec::new();
        for unit in &mut self.units {
            match unit {
                Unit::Group { first, count, part } => {
                    let answers = statement_results(self.parts[*part].answer.take(), *count);
                    for (k, r) in answers.into_iter().enumerate() {
                        results.push((*first + k, r));
                    }
                }
                Unit::Merge { id, kind, parts, warnings } => {
                    let answers: Vec<(String, PartAnswer)> = parts
                        .iter()
                        .map(|&p| {
                            let answer = self.parts[p].answer.take().unwrap_or_else(|| Err("no answer".into()));
                            let first = answer.map(|v| statement_results(Some(Ok(v)), 1).remove(0));
                            (name(&self.parts[p]), first)
                        })
                        .collect();
                    results.push((*id, merge::merge(*kind, answers, std::mem::take(warnings))));
                }
            }
        }
        results.sort_by_key(|(id, _)| *id);
        merge::assemble(results.into_iter().map(|(id, r)| merge::with_statement_id(r, id)).collect(), self.pretty)
    }
}

/// Drives a part; `Some` once it has an answer (or has failed for good).
fn advance_part(
    a: &mut Attempt,
    room: usize,
    config: &Config,
    registry: &Registry,
    now: Instant,
) -> Option<PartAnswer> {
    loop {
        match a.drive(4 * READ_CHUNK, registry) {
            Ok(d) => {
                if a.body.len() > room {
                    a.close(registry);
                    return Some(Err(format!(
                        "the answers are too large to merge in the proxy (over {} MiB): narrow the query or send \
                         its statements separately",
                        MAX_GATHER_BYTES >> 20
                    )));
                }
                if a.head().is_some() && a.status() >= 500 && a.has_candidates() {
                    let status = a.status();
                    a.fail_current(config, format!("HTTP {status}"), registry);
                    if !a.start_next(config, registry, now) {
                        return Some(Err(a.failures.join("; ")));
                    }
                    continue;
                }
                if d.done {
                    if let Some(b) = a.backend.and_then(|b| config.backends.get(b)) {
                        BackendState::add(&b.state.counters.queries, 1);
                    }
                    a.close(registry);
                    return Some(parse_answer(a.status(), &a.body));
                }
                if d.blocked {
                    return None;
                }
            }
            Err(e) => {
                a.fail_current(config, e, registry);
                if !a.start_next(config, registry, now) {
                    return Some(Err(a.failures.join("; ")));
                }
            }
        }
    }
}

/// A backend's whole answer: `{"results":[...]}` on 200, `{"error":..}` otherwise.
fn parse_answer(status: u16, body: &[u8]) -> PartAnswer {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("HTTP {status}: unreadable answer: {e}"))?;
    if status == 200 {
        return Ok(value);
    }
    let msg = value.get("error").and_then(Value::as_str).unwrap_or("error").to_string();
    Ok(json!({ "error": msg }))
}

/// The first `count` statement results of an answer (errors repeated for each statement).
fn statement_results(answer: Option<PartAnswer>, count: usize) -> Vec<Value> {
    let error = |e: String| vec![json!({ "error": e }); count];
    match answer {
        None => error("no answer".into()),
        Some(Err(e)) => error(e),
        Some(Ok(v)) => {
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                return error(e.to_string());
            }
            let mut results: Vec<Value> = v.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
            results.resize(count, json!({}));
            results.truncate(count);
            results
        }
    }
}

/// A query in flight for a client. It owns the config snapshot it was planned with: its backend
/// indices mean that snapshot's backends, whatever reloads happen before it completes.
pub struct Task {
    config: Arc<Config>,
    pub started: Instant,
    kind: TaskKind,
}

pub enum TaskKind {
    Relay(Box<Relay>),
    Gather(Gather),
    PromRead(PromRead),
}

impl Task {
    pub fn new(config: Arc<Config>, started: Instant, kind: TaskKind) -> Task {
        Task { config, started, kind }
    }

    /// Moves the answer along as far as the client's room allows.
    pub fn pump(&mut self, out: &mut Output, registry: &Registry, now: Instant) -> TaskState {
        let config = &self.config;
        match &mut self.kind {
            TaskKind::Relay(r) => r.pump(out, config, registry, now),
            TaskKind::Gather(g) => g.pump(out, config, registry, now),
            TaskKind::PromRead(p) => p.pump(out, config, registry, now),
        }
    }

    /// The earliest moment a backend of this task times out.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.kind {
            TaskKind::Relay(r) => r.attempt.deadline(),
            TaskKind::Gather(g) => g.parts.iter().filter_map(|p| p.attempt.deadline()).min(),
            TaskKind::PromRead(p) => p.parts.iter().filter_map(|p| p.attempt.deadline()).min(),
        }
    }

    /// The tokens of the task's upstream connections.
    pub fn tokens(&self) -> Vec<Token> {
        match &self.kind {
            TaskKind::Relay(r) => vec![r.attempt.token],
            TaskKind::Gather(g) => g.parts.iter().map(|p| p.attempt.token).collect(),
            TaskKind::PromRead(p) => p.parts.iter().map(|p| p.attempt.token).collect(),
        }
    }

    fn attempts_mut(&mut self) -> Vec<&mut Attempt> {
        match &mut self.kind {
            TaskKind::Relay(r) => vec![&mut r.attempt],
            TaskKind::Gather(g) => g.parts.iter_mut().map(|p| &mut p.attempt).collect(),
            TaskKind::PromRead(p) => p.parts.iter_mut().map(|p| &mut p.attempt).collect(),
        }
    }

    /// A backend silent for its `timeoutquery` (before or during its answer): fail it (over to the next
    /// candidate when nothing was relayed yet).
    pub fn check_timeouts(&mut self, registry: &Registry, now: Instant) {
        let config = self.config.clone();
        for a in self.attempts_mut() {
            a.check_timeout(&config, registry, now);
        }
    }

    pub fn close(&mut self, registry: &Registry) {
        for a in self.attempts_mut() {
            a.close(registry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_results_pad_and_repeat_errors() {
        let r = statement_results(Some(Ok(json!({"results": [{"statement_id": 0}]}))), 2);
        assert_eq!(r, vec![json!({"statement_id": 0}), json!({})]);
        let r = statement_results(Some(Err("down".into())), 2);
        assert_eq!(r, vec![json!({"error": "down"}), json!({"error": "down"})]);
        let r = statement_results(Some(Ok(json!({"error": "bad"}))), 1);
        assert_eq!(r, vec![json!({"error": "bad"})]);
    }

    #[test]
    fn answers_are_parsed() {
        assert_eq!(parse_answer(200, b"{\"results\":[]}").unwrap(), json!({"results": []}));
        assert_eq!(parse_answer(400, b"{\"error\":\"bad q\"}").unwrap(), json!({"error": "bad q"}));
        assert!(parse_answer(200, b"garbage").is_err());
    }
}
