//! Repair and rebalance jobs: make every replica of a measurement hold the same points.
//!
//! * `POST /repair?db=..` — every healthy holder of each measurement (the backends the keymap routes
//!   it to, `nexts` included) ends up with the union of the holders' points.
//! * `POST /rebalance?db=..[&cleanup=true]` — each measurement's history is copied to the holders that
//!   lack it, from any backend that has it; with `cleanup`, once the copy is verified on every holder,
//!   the measurement is dropped from backends the keymap no longer routes it to (never from a holder).
//! * `GET /jobs`, `GET /jobs/ID`, `DELETE /jobs/ID` (cancel).
//!
//! How (`run.rs`, `copy.rs`, `digest.rs`): per measurement and retention policy, each participant is
//! asked for a cheap digest per time window (`count(*)` per field, plus `sum(*)` with `values=true`,
//! `GROUP BY time(shard group duration)`); only windows that differ are compared per series
//! (`GROUP BY *`), and only series-windows that differ are copied, page by page (`epoch=ns`), from the
//! participant with the most points, turned back into line protocol with each field's declared type
//! (`lines.rs`). Copies are written to the lacking backend THROUGH ITS OUTBOX: the job thread hands a
//! [`Batch`] to a worker, which appends it to that backend's outbox log and acknowledges once it is
//! committed there (durable, ordered, counted like any write).
//!
//! Invariants:
//! * A job's checkpoint (`<data-dir>/jobs/<id>.json`) only moves past a window once every batch of
//!   that window is committed to an outbox; after a kill -9 the job resumes at that window.
//! * Memory is bounded by one page of points ([`PAGE_POINTS`]) and one window's per-series digest,
//!   whatever the window size; writes are throttled to the job's `rate` (lines/s).
//! * While a job copies into a backend for a target, that backend counts as lagging for it
//!   (`upstream::lag`), so reads go to a replica that has caught up.
//! * One job runs at a time, on its own thread; workers only ever see committed batches.

mod copy;
mod digest;
pub mod influx;
pub mod lines;
mod run;

pub use run::spawn;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::http::params::Params;
use crate::http::request::Method;
use crate::outbox::Outbox;
use crate::upstream::unix_ms;

/// Lines per second a job writes when the request names no `rate`: a fraction of what one InfluxDB
/// ingests here (~500k/s), so live writes keep most of the backend.
pub const DEFAULT_RATE: u64 = 100_000;
/// Points read from a backend per page, and so at most per batch handed to a worker.
pub const PAGE_POINTS: usize = 10_000;
/// Finished jobs kept in the table (and their checkpoint files); older ones are forgotten.
const KEEP_FINISHED: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Repair,
    Rebalance,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Repair => "repair",
            Kind::Rebalance => "rebalance",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<State> {
        [State::Queued, State::Running, State::Done, State::Failed, State::Cancelled]
            .into_iter()
            .find(|x| x.as_str() == s)
    }

    fn finished(self) -> bool {
        matches!(self, State::Done | State::Failed | State::Cancelled)
    }
}

/// What a job was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub kind: Kind,
    pub db: String,
    pub rp: Option<String>,
    /// Only these measurements (all when empty).
    pub measurements: Vec<String>,
    /// `[start, end)` in ns; all time when absent.
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub dry_run: bool,
    pub rate: u64,
    pub cleanup: bool,
    /// Also compare sums of numeric fields, so equal counts with different values are found (each
    /// backend then reads every value: about twice the digest cost).
    pub values: bool,
}

/// What a job has done so far; also its resume point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub measurements_total: u64,
    pub measurements_done: u64,
    /// `rp.measurement` being worked on.
    pub current: String,
    pub windows_compared: u64,
    pub windows_differing: u64,
    pub series_differing: u64,
    pub lines_copied: u64,
    /// Dry run: lines a real run would copy (an upper bound: whole series-windows).
    pub lines_to_copy: u64,
    pub lines_deleted: u64,
    /// Lines written per backend.
    pub copied_to: BTreeMap<String, u64>,
    /// Notes: backends skipped because they were down, cleanups not done and why.
    pub notes: Vec<String>,
    /// Work items (`rp\nmeasurement`) finished.
    pub done: Vec<String>,
    /// The item being worked on and its first window not yet finished (ns).
    pub resume_item: String,
    pub resume_window: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub spec: Spec,
    pub state: State,
    pub error: Option<String>,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub progress: Progress,
    cancel: bool,
}

fn time_json(ms: Option<u64>) -> Value {
    ms.map_or(Value::Null, |ms| {
        Value::String(crate::logger::utc_timestamp(std::time::UNIX_EPOCH + Duration::from_millis(ms)))
    })
}

impl Job {
    pub fn is_finished(&self) -> bool {
        self.state.finished()
    }

    /// The job as `/jobs` shows it.
    pub fn to_json(&self) -> Value {
        let p = &self.progress;
        let s = &self.spec;
        json!({
            "id": self.id,
            "kind": s.kind.as_str(),
            "state": self.state.as_str(),
            "db": s.db,
            "rp": s.rp,
            "measurements": s.measurements,
            "start": s.start,
            "end": s.end,
            "dry_run": s.dry_run,
            "rate": s.rate,
            "cleanup": s.cleanup,
            "values": s.values,
            "lines_copied": p.lines_copied,
            "lines_to_copy": p.lines_to_copy,
            "lines_deleted": p.lines_deleted,
            "windows_compared": p.windows_compared,
            "windows_differing": p.windows_differing,
            "series_differing": p.series_differing,
            "copied_to": p.copied_to,
            "error": self.error,
            "notes": p.notes,
            "created_at": time_json(Some(self.created_ms)),
            "started_at": time_json(self.started_ms),
            "finished_at": time_json(self.finished_ms),
            "progress": {
                "measurements_total": p.measurements_total,
                "measurements_done": p.measurements_done,
                "current": p.current,
            },
        })
    }

    /// The checkpoint: the public JSON plus what resuming needs.
    fn checkpoint(&self) -> Value {
        let mut v = self.to_json();
        v["created_ms"] = json!(self.created_ms);
        v["started_ms"] = json!(self.started_ms);
        v["finished_ms"] = json!(self.finished_ms);
        v["resume"] = json!({
            "done": self.progress.done,
            "item": self.progress.resume_item,
            "window": self.progress.resume_window,
        });
        v
    }

    fn from_checkpoint(v: &Value) -> Option<Job> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        let strings = |x: Option<&Value>| -> Vec<String> {
            x.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let kind = match s("kind")?.as_str() {
            "repair" => Kind::Repair,
            "rebalance" => Kind::Rebalance,
            _ => return None,
        };
        let spec = Spec {
            kind,
            db: s("db")?,
            rp: s("rp"),
            measurements: strings(v.get("measurements")),
            start: v.get("start").and_then(Value::as_i64),
            end: v.get("end").and_then(Value::as_i64),
            dry_run: v.get("dry_run").and_then(Value::as_bool).unwrap_or(false),
            rate: u("rate").unwrap_or(DEFAULT_RATE).max(1),
            cleanup: v.get("cleanup").and_then(Value::as_bool).unwrap_or(false),
            values: v.get("values").and_then(Value::as_bool).unwrap_or(false),
        };
        let copied_to = v
            .get("copied_to")
            .and_then(Value::as_object)
            .map(|o| o.iter().filter_map(|(k, n)| Some((k.clone(), n.as_u64()?))).collect())
            .unwrap_or_default();
        let pr = v.get("progress");
        let progress = Progress {
            measurements_total: pr.and_then(|p| p.get("measurements_total")).and_then(Value::as_u64).unwrap_or(0),
            measurements_done: pr.and_then(|p| p.get("measurements_done")).and_then(Value::as_u64).unwrap_or(0),
            current: pr.and_then(|p| p.get("current")).and_then(Value::as_str).unwrap_or("").to_string(),
            windows_compared: u("windows_compared").unwrap_or(0),
            windows_differing: u("windows_differing").unwrap_or(0),
            series_differing: u("series_differing").unwrap_or(0),
            lines_copied: u("lines_copied").unwrap_or(0),
            lines_to_copy: u("lines_to_copy").unwrap_or(0),
            lines_deleted: u("lines_deleted").unwrap_or(0),
            copied_to,
            notes: strings(v.get("notes")),
            done: strings(v.get("resume").and_then(|r| r.get("done"))),
            resume_item: v.get("resume").and_then(|r| r.get("item")).and_then(Value::as_str).unwrap_or("").to_string(),
            resume_window: v.get("resume").and_then(|r| r.get("window")).and_then(Value::as_i64),
        };
        Some(Job {
            id: u("id")?,
            spec,
            state: State::parse(&s("state")?)?,
            error: s("error"),
            created_ms: u("created_ms").unwrap_or(0),
            started_ms: u("started_ms"),
            finished_ms: u("finished_ms"),
            progress,
            cancel: false,
        })
    }
}

pub use crate::control::JobBatch as Batch;

/// Appends `batch` to `outbox` as one request `request` and commits it (called by the worker that
/// owns the outbox).
pub fn commit(outbox: &mut Outbox, request: u64, batch: &Batch) -> Result<(), String> {
    if outbox.retired {
        return Err(format!("backend {} left the config", batch.backend));
    }
    outbox.enter_request(request, batch.target.as_bytes());
    let mut lines = 0u64;
    let mut bytes = 0u64;
    let mut result = Ok(());
    for line in batch.lines.split_inclusive('\n') {
        if let Err(e) = outbox.append_line(&[line.as_bytes()]) {
            result = Err(format!("backend {}: {e}", batch.backend));
            break;
        }
        lines += 1;
        bytes += line.len() as u64;
    }
    outbox.finish_request(lines, bytes);
    result
}

/// Hands a batch to a worker; false when no worker takes messages any more (shutdown).
pub type Deliver = Box<dyn Fn(Batch) -> bool + Send + Sync>;

/// The job table, shared by the endpoints (workers) and the job thread.
#[derive(Debug, Default)]
pub struct Jobs {
    table: Mutex<Vec<Job>>,
    wake: Condvar,
    next_id: AtomicU64,
    /// Totals over every job since start, for `/metrics`.
    pub lines_copied: AtomicU64,
    pub lines_deleted: AtomicU64,
    pub windows_compared: AtomicU64,
    pub windows_differing: AtomicU64,
}

/// Why a job request is refused: a 400 for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError(pub String);

impl Jobs {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Job>) -> R) -> R {
        match self.table.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    pub fn snapshot(&self) -> Vec<Job> {
        self.with(|t| t.clone())
    }

    fn get(&self, id: u64) -> Option<Job> {
        self.with(|t| t.iter().find(|j| j.id == id).cloned())
    }

    /// Changes job `id` with `f`, then saves its checkpoint.
    fn update(&self, dir: &Path, id: u64, f: impl FnOnce(&mut Job)) -> Option<Job> {
        let job = self.with(|t| {
            let j = t.iter_mut().find(|j| j.id == id)?;
            f(j);
            Some(j.clone())
        })?;
        save(dir, &job);
        Some(job)
    }

    fn cancelled(&self, id: u64) -> bool {
        self.with(|t| t.iter().find(|j| j.id == id).is_none_or(|j| j.cancel))
    }

    /// Adds a queued job and wakes the job thread.
    fn submit(&self, dir: &Path, spec: Spec) -> Job {
        let job = Job {
            id: self.next_id.fetch_add(1, Relaxed) + 1,
            spec,
            state: State::Queued,
            error: None,
            created_ms: unix_ms(SystemTime::now()),
            started_ms: None,
            finished_ms: None,
            progress: Progress::default(),
            cancel: false,
        };
        save(dir, &job);
        self.with(|t| {
            t.push(job.clone());
            prune(dir, t);
        });
        self.wake.notify_all();
        job
    }

    /// Loads checkpoints from `dir`; jobs that were queued or running are queued again.
    pub fn load(&self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut found = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let parsed = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            match parsed.as_ref().and_then(Job::from_checkpoint) {
                Some(mut job) => {
                    if !job.state.finished() {
                        job.state = State::Queued;
                    }
                    found.push(job);
                }
                None => log::warn!("jobs: ignoring unreadable checkpoint {}", path.display()),
            }
        }
        found.sort_by_key(|j| j.id);
        let max = found.iter().map(|j| j.id).max().unwrap_or(0);
        self.next_id.fetch_max(max, Relaxed);
        let resumed = found.iter().filter(|j| j.state == State::Queued).count();
        if resumed > 0 {
            log::info!("jobs: resuming {resumed} unfinished job(s) from {}", dir.display());
        }
        self.with(|t| *t = found);
    }

    /// Waits (up to `timeout`) for a queued job; returns its id.
    fn next_queued(&self, timeout: Duration) -> Option<u64> {
        let pick = |t: &Vec<Job>| t.iter().filter(|j| j.state == State::Queued).map(|j| j.id).min();
        let guard = match self.table.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(id) = pick(&guard) {
            return Some(id);
        }
        let (guard, _) = match self.wake.wait_timeout(guard, timeout) {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        pick(&guard)
    }

    /// `(queued, running)` for `/health`.
    pub fn active(&self) -> (usize, usize) {
        self.with(|t| {
            (
                t.iter().filter(|j| j.state == State::Queued).count(),
                t.iter().filter(|j| j.state == State::Running).count(),
            )
        })
    }
}

/// Where job checkpoints live.
pub fn jobs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("jobs")
}

/// Writes a job's checkpoint atomically (temp file + rename): a crash leaves the old or the new one.
fn save(dir: &Path, job: &Job) {
    let path = dir.join(format!("{}.json", job.id));
    let tmp = dir.join(format!("{}.json.tmp", job.id));
    let text = job.checkpoint().to_string();
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, text.as_bytes()))
        .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        log::error!("job {}: cannot save its checkpoint {}: {e}", job.id, path.display());
    }
}

/// Forgets the oldest finished jobs past [`KEEP_FINISHED`].
fn prune(dir: &Path, table: &mut Vec<Job>) {
    let finished = table.iter().filter(|j| j.state.finished()).count();
    if finished <= KEEP_FINISHED {
        return;
    }
    let mut drop = finished - KEEP_FINISHED;
    table.retain(|j| {
        if drop > 0 && j.state.finished() {
            drop -= 1;
            let _ = std::fs::remove_file(dir.join(format!("{}.json", j.id)));
            false
        } else {
            true
        }
    });
}

/// True for the paths this module answers.
pub fn is_jobs_path(path: &str) -> bool {
    path == "/repair" || path == "/rebalance" || path == "/jobs" || path.starts_with("/jobs/")
}

fn parse_bool(params: &Params, name: &str) -> Result<bool, RequestError> {
    match params.get(name) {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(v) => Err(RequestError(format!("{name}: expected true or false, got \"{v}\""))),
    }
}

fn parse_i64(params: &Params, name: &str) -> Result<Option<i64>, RequestError> {
    params
        .non_empty(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| RequestError(format!("{name}: expected nanoseconds since the epoch, got \"{v}\"")))
        })
        .transpose()
}

/// Reads a `/repair` or `/rebalance` request.
pub fn parse_spec(kind: Kind, params: &Params) -> Result<Spec, RequestError> {
    let db = params.non_empty("db").ok_or_else(|| RequestError("missing required parameter \"db\"".into()))?;
    let rate = match params.non_empty("rate") {
        None => DEFAULT_RATE,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(RequestError(format!("rate: expected a positive number of lines per second, got \"{v}\"")));
            }
        },
    };
    let (start, end) = (parse_i64(params, "start")?, parse_i64(params, "end")?);
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        return Err(RequestError("start must be before end".into()));
    }
    let cleanup = parse_bool(params, "cleanup")?;
    if cleanup && kind == Kind::Repair {
        return Err(RequestError("cleanup is a rebalance option".into()));
    }
    let mut measurements: Vec<String> =
        params.0.iter().filter(|(k, v)| k == "measurement" && !v.is_empty()).map(|(_, v)| v.clone()).collect();
    measurements.sort();
    measurements.dedup();
    Ok(Spec {
        kind,
        db: db.to_string(),
        rp: params.non_empty("rp").map(str::to_string),
        measurements,
        start,
        end,
        dry_run: parse_bool(params, "dry_run")?,
        rate,
        cleanup,
        values: parse_bool(params, "values")?,
    })
}

/// Answers a request to a jobs path: (status, JSON body).
pub fn handle(jobs: &Jobs, data_dir: &Path, method: Method, path: &str, params: &Params) -> (u16, Vec<u8>) {
    let dir = jobs_dir(data_dir);
    let body = |v: Value| {
        let mut b = serde_json::to_vec(&v).unwrap_or_default();
        b.push(b'\n');
        b
    };
    let error = |status: u16, msg: &str| (status, body(json!({ "error": msg })));
    let kind = match path {
        "/repair" => Some(Kind::Repair),
        "/rebalance" => Some(Kind::Rebalance),
        _ => None,
    };
    if let Some(kind) = kind {
        if method != Method::Post {
            return error(405, "use POST");
        }
        return match parse_spec(kind, params) {
            Ok(spec) => {
                let job = jobs.submit(&dir, spec);
                log::info!("job {}: {} of database {} queued", job.id, job.spec.kind.as_str(), job.spec.db);
                (202, body(job.to_json()))
            }
            Err(e) => error(400, &e.0),
        };
    }
    if path == "/jobs" {
        if !matches!(method, Method::Get | Method::Head) {
            return error(405, "use GET");
        }
        let all: Vec<Value> = jobs.snapshot().iter().map(Job::to_json).collect();
        return (200, body(json!({ "jobs": all })));
    }
    let Some(id) = path.strip_prefix("/jobs/").and_then(|s| s.parse::<u64>().ok()) else {
        return error(404, "no such job");
    };
    match method {
        Method::Get | Method::Head => match jobs.get(id) {
            Some(j) => (200, body(j.to_json())),
            None => error(404, "no such job"),
        },
        Method::Delete => {
            let updated = jobs.update(&dir, id, |j| {
                if j.state == State::Queued {
                    j.state = State::Cancelled;
                    j.finished_ms = Some(unix_ms(SystemTime::now()));
                } else if j.state == State::Running {
                    j.cancel = true;
                }
            });
            match updated {
                Some(j) => {
                    log::info!("job {id}: cancel requested");
                    (200, body(j.to_json()))
                }
                None => error(404, "no such job"),
            }
        }
        _ => error(405, "use GET or DELETE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked() {
        let p = |q: &str| Params::parse(q);
        let s =
            parse_spec(Kind::Repair, &p("db=x&measurement=b&measurement=a&dry_run=true&rate=5&start=1&end=9")).unwrap();
        assert_eq!(s.measurements, vec!["a", "b"]);
        assert!(s.dry_run);
        assert_eq!((s.rate, s.start, s.end), (5, Some(1), Some(9)));
        assert!(parse_spec(Kind::Repair, &p("rp=x")).is_err());
        assert!(parse_spec(Kind::Repair, &p("db=x&rate=0")).is_err());
        assert!(parse_spec(Kind::Repair, &p("db=x&cleanup=true")).is_err());
        assert!(parse_spec(Kind::Rebalance, &p("db=x&cleanup=true")).unwrap().cleanup);
        assert!(parse_spec(Kind::Repair, &p("db=x&start=5&end=5")).is_err());
        assert!(parse_spec(Kind::Repair, &p("db=x&dry_run=maybe")).is_err());
    }

    #[test]
    fn checkpoints_round_trip() {
        let spec = parse_spec(Kind::Rebalance, &Params::parse("db=d&cleanup=true&rp=r")).unwrap();
        let mut job = Job {
            id: 7,
            spec,
            state: State::Running,
            error: None,
            created_ms: 5,
            started_ms: Some(6),
            finished_ms: None,
            progress: Progress::default(),
            cancel: false,
        };
        job.progress.done = vec!["r\ncpu".into()];
        job.progress.resume_window = Some(-5);
        job.progress.resume_item = "r\nmem".into();
        job.progress.lines_copied = 12;
        job.progress.copied_to.insert("b".into(), 12);
        let back = Job::from_checkpoint(&job.checkpoint()).unwrap();
        assert_eq!(back.spec, job.spec);
        assert_eq!(back.progress, job.progress);
        assert_eq!((back.id, back.state, back.started_ms), (7, State::Running, Some(6)));
    }
}
