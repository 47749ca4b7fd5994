//! The work of one job: list measurements and retention policies, then per (rp, measurement) compare
//! window digests, compare per series where a window differs, and copy the series-windows that differ
//! (see the module doc of `jobs` for the guarantees).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::influx::{self, QueryError, ident, literal};
use super::lines::{FieldType, rows_to_lines, series_key};
use super::{Batch, Deliver, Kind, PAGE_POINTS, Progress, Spec, State};
use crate::config::{Backend, Config};
use crate::http::params::encode;
use crate::shared::Shared;
use crate::upstream::lag::Target;
use crate::upstream::unix_ms;

/// Whole time when a job names no range (InfluxDB's own limits).
const MIN_TIME: i64 = -9_223_372_036_854_775_806;
const MAX_TIME: i64 = 9_223_372_036_854_775_806;
/// Window when a retention policy's shard group duration cannot be read.
const DEFAULT_WINDOW_NS: i64 = 7 * 24 * 3600 * 1_000_000_000;
/// How long the end of a job waits for its copies to be delivered, and a cleanup for them to match.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a job stopped before its end.
#[derive(Debug)]
enum Stop {
    Cancelled,
    /// The proxy is stopping: the job stays `running` in its checkpoint and resumes at the next start.
    Shutdown,
    Failed(JobError),
}

#[derive(Debug)]
enum JobError {
    Query { backend: String, error: QueryError },
    Commit(String),
    Config(String),
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Query { backend, error } => write!(f, "backend {backend}: {error}"),
            JobError::Commit(e) => write!(f, "cannot store copied lines: {e}"),
            JobError::Config(e) => f.write_str(e),
        }
    }
}

impl From<JobError> for Stop {
    fn from(e: JobError) -> Stop {
        Stop::Failed(e)
    }
}

/// Per-window (or per-series) digest of one backend: point counts per field, and sums per numeric field
/// when the job compares values.
#[derive(Debug, Clone, Default, PartialEq)]
struct Digest {
    counts: BTreeMap<String, i64>,
    sums: BTreeMap<String, f64>,
}

impl Digest {
    fn from_row(columns: &[Value], row: &[Value]) -> Digest {
        let mut d = Digest::default();
        for (c, v) in columns.iter().zip(row).skip(1) {
            let Some(c) = c.as_str() else { continue };
            if let Some(f) = c.strip_prefix("count_") {
                if let Some(n) = v.as_i64().filter(|&n| n != 0) {
                    d.counts.insert(f.to_string(), n);
                }
            } else if let Some(f) = c.strip_prefix("sum_")
                && let Some(x) = v.as_f64()
            {
                d.sums.insert(f.to_string(), x);
            }
        }
        d
    }

    /// Points: a point has at least one field, so at least the largest field count.
    fn points(&self) -> u64 {
        self.counts.values().copied().max().unwrap_or(0).max(0) as u64
    }

    /// Same counts, and sums equal up to float rounding (sums of the same values in another order).
    fn matches(&self, other: &Digest) -> bool {
        if self.counts != other.counts {
            return false;
        }
        let keys: BTreeSet<&String> = self.sums.keys().chain(other.sums.keys()).collect();
        keys.into_iter().all(|k| {
            let (a, b) = (self.sums.get(k).copied().unwrap_or(0.0), other.sums.get(k).copied().unwrap_or(0.0));
            (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
        })
    }

    /// Every field count at least `other`'s.
    fn covers(&self, other: &Digest) -> bool {
        other.counts.iter().all(|(f, n)| self.counts.get(f).copied().unwrap_or(0) >= *n)
    }
}

/// A series: its tags as `GROUP BY *` reports them (every tag key, `""` when absent), sorted.
type SeriesTags = Vec<(String, String)>;

fn tags_of(series: &Value) -> SeriesTags {
    let mut tags: SeriesTags = series
        .get("tags")
        .and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

fn columns_values(series: &Value) -> (&[Value], &[Value]) {
    let cols = series.get("columns").and_then(Value::as_array).map_or(&[][..], |v| v);
    let vals = series.get("values").and_then(Value::as_array).map_or(&[][..], |v| v);
    (cols, vals)
}

/// Parses a Go duration as InfluxDB prints it (`168h0m0s`, `1h0m0s`, `30m0s`).
fn go_duration_ns(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        let unit: i64 = match c {
            'h' => 3_600_000_000_000,
            'm' => 60_000_000_000,
            's' => 1_000_000_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    num.is_empty().then_some(total)
}

/// Lines per second, measured from the job's (re)start.
struct Throttle {
    rate: u64,
    started: Instant,
    lines: u64,
}

impl Throttle {
    fn wait(&mut self, lines: u64) {
        self.lines += lines;
        let due = Duration::from_secs_f64(self.lines as f64 / self.rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep((due - elapsed).min(Duration::from_secs(5)));
        }
    }
}

struct Runner<'a> {
    shared: &'a Shared,
    deliver: &'a Deliver,
    dir: &'a Path,
    id: u64,
    spec: Spec,
    progress: Progress,
    config: Arc<Config>,
    throttle: Throttle,
    /// (backend index, target) this job has written to: lagging while the job runs.
    copying: HashSet<(usize, Target)>,
    last_commit: Option<Instant>,
    /// Progress reaches `/jobs` and the checkpoint at least this often while copying.
    last_publish: Instant,
}

/// Runs job `id` to its end (or to a cancel, failure, or shutdown).
pub fn run(shared: &Shared, deliver: &Deliver, dir: &Path, id: u64) {
    let now_ms = unix_ms(SystemTime::now());
    let Some(job) = shared.jobs.update(dir, id, |j| {
        // A job cancelled between being picked and now stays cancelled.
        if j.state == State::Queued {
            j.state = State::Running;
            j.started_ms.get_or_insert(now_ms);
        }
    }) else {
        return;
    };
    if job.state != State::Running {
        return;
    }
    log::info!(
        "job {id}: {} of database {}{} started{}",
        if job.spec.kind == Kind::Repair { "repair" } else { "rebalance" },
        job.spec.db,
        job.spec.rp.as_deref().map(|r| format!(" rp {r}")).unwrap_or_default(),
        if job.progress.done.is_empty() && job.progress.resume_window.is_none() {
            ""
        } else {
            " (resumed from its checkpoint)"
        }
    );
    let mut r = Runner {
        shared,
        deliver,
        dir,
        id,
        throttle: Throttle { rate: job.spec.rate.max(1), started: Instant::now(), lines: 0 },
        spec: job.spec,
        progress: job.progress,
        config: shared.config_status(|s| s.current.clone()),
        copying: HashSet::new(),
        last_commit: None,
        last_publish: Instant::now(),
    };
    let started = Instant::now();
    let outcome = r.run_all();
    let delivered = r.settle();
    for (b, t) in r.copying.drain() {
        if let Some(be) = r.config.backends.get(b) {
            be.state.lag.set_copying(&t, false);
        }
    }
    let (state, error) = match outcome {
        Ok(()) if !delivered => {
            (State::Done, Some("copies not yet delivered to every backend when the job ended".to_string()))
        }
        Ok(()) => (State::Done, None),
        Err(Stop::Cancelled) => (State::Cancelled, None),
        Err(Stop::Failed(e)) => (State::Failed, Some(e.to_string())),
        Err(Stop::Shutdown) => {
            r.publish(|_| {});
            log::info!("job {id}: interrupted by shutdown; it resumes at the next start");
            return;
        }
    };
    let p = r.progress.clone();
    shared.jobs.update(dir, id, |j| {
        j.progress = p.clone();
        j.state = state;
        j.error = error.clone();
        j.finished_ms = Some(unix_ms(SystemTime::now()));
    });
    log::info!(
        "job {id}: {} in {:.1} s: {} windows compared, {} differing, {} lines copied{}, {} lines deleted{}",
        state.as_str(),
        started.elapsed().as_secs_f64(),
        p.windows_compared,
        p.windows_differing,
        p.lines_copied,
        if r.spec.dry_run { format!(" ({} would be copied)", p.lines_to_copy) } else { String::new() },
        p.lines_deleted,
        error.map(|e| format!(": {e}")).unwrap_or_default()
    );
}

impl Runner<'_> {
    /// Saves the progress into the table and the checkpoint.
    fn publish(&mut self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress);
        self.last_publish = Instant::now();
        let p = self.progress.clone();
        self.shared.jobs.update(self.dir, self.id, |j| j.progress = p);
    }

    fn check(&self) -> Result<(), Stop> {
        if self.shared.shutting_down() {
            return Err(Stop::Shutdown);
        }
        if self.shared.jobs.cancelled(self.id) {
            return Err(Stop::Cancelled);
        }
        Ok(())
    }

    fn backend(&self, b: usize) -> &Backend {
        &self.config.backends[b]
    }

    /// The database the job's data lives in on backend `b` (a backend's own `db` wins).
    fn db_of(&self, b: usize) -> String {
        self.backend(b).db.clone().unwrap_or_else(|| self.spec.db.clone())
    }

    fn query(&self, b: usize, q: &str) -> Result<Vec<Value>, JobError> {
        influx::query(self.backend(b), &self.db_of(b), q, false)
            .map_err(|error| JobError::Query { backend: self.backend(b).name.clone(), error })
    }

    fn note(&mut self, text: String) {
        if !self.progress.notes.contains(&text) {
            log::warn!("job {}: {text}", self.id);
            self.progress.notes.push(text);
        }
    }

    fn run_all(&mut self) -> Result<(), Stop> {
        let n = self.config.backends.len();
        let healthy: Vec<usize> = (0..n).filter(|&b| self.backend(b).state.is_up()).collect();
        for b in (0..n).filter(|b| !healthy.contains(b)) {
            let name = self.backend(b).name.clone();
            self.note(format!("backend {name} is down: left out of this job"));
        }
        // Which backend has which measurement; retention policies and their shard durations.
        let mut has: Vec<BTreeSet<String>> = vec![BTreeSet::new(); n];
        let mut rps: BTreeMap<String, i64> = BTreeMap::new();
        for &b in &healthy {
            match self.query(b, "SHOW MEASUREMENTS") {
                Ok(series) => has[b] = influx::first_column(&series).into_iter().collect(),
                Err(JobError::Query { error: QueryError::Statement(e), .. }) if e.contains("database not found") => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            for s in self.query(b, "SHOW RETENTION POLICIES")? {
                let (cols, vals) = columns_values(&s);
                let at = |name: &str| cols.iter().position(|c| c.as_str() == Some(name));
                let (Some(ni), Some(di)) = (at("name"), at("shardGroupDuration")) else { continue };
                for row in vals.iter().filter_map(Value::as_array) {
                    let Some(name) = row.get(ni).and_then(Value::as_str) else { continue };
                    let window = row.get(di).and_then(Value::as_str).and_then(go_duration_ns).filter(|&w| w > 0);
                    rps.entry(name.to_string()).or_insert(window.unwrap_or(DEFAULT_WINDOW_NS));
                }
            }
        }
        if let Some(rp) = &self.spec.rp {
            rps.retain(|name, _| name == rp);
            if rps.is_empty() {
                return Err(
                    JobError::Config(format!("retention policy \"{rp}\" not found on any healthy backend")).into()
                );
            }
        }
        let mut measurements: BTreeSet<String> = has.iter().flatten().cloned().collect();
        if !self.spec.measurements.is_empty() {
            measurements.retain(|m| self.spec.measurements.contains(m));
        }
        let items: Vec<(String, i64, String)> =
            rps.iter().flat_map(|(rp, w)| measurements.iter().map(move |m| (rp.clone(), *w, m.clone()))).collect();
        log::info!(
            "job {}: {} measurement(s) × {} retention polic(ies) on {} healthy backend(s)",
            self.id,
            measurements.len(),
            rps.len(),
            healthy.len()
        );
        self.publish(|p| p.measurements_total = items.len() as u64);
        for (rp, window, m) in &items {
            let key = format!("{rp}\n{m}");
            if self.progress.done.contains(&key) {
                continue;
            }
            self.check()?;
            let holders = self.holders(m);
            let healthy_holders: Vec<usize> = holders.iter().copied().filter(|b| healthy.contains(b)).collect();
            let participants: Vec<usize> = match self.spec.kind {
                Kind::Repair => healthy_holders.clone(),
                Kind::Rebalance => {
                    healthy.iter().copied().filter(|&b| healthy_holders.contains(&b) || has[b].contains(m)).collect()
                }
            };
            if self.progress.resume_item != key {
                self.progress.resume_item = key.clone();
                self.progress.resume_window = None;
            }
            self.progress.current = format!("{rp}.{m}");
            if participants.len() >= 2 && !healthy_holders.is_empty() {
                self.sync_item(rp, *window, m, &participants, &healthy_holders)?;
            }
            self.publish(|p| {
                p.done.push(key);
                p.measurements_done += 1;
                p.resume_window = None;
            });
        }
        if self.spec.kind == Kind::Rebalance && self.spec.cleanup && !self.spec.dry_run {
            for m in &measurements {
                let key = format!("cleanup\n{m}");
                if self.progress.done.contains(&key) {
                    continue;
                }
                self.check()?;
                let rps: Vec<String> = rps.keys().cloned().collect();
                self.cleanup(m, &rps, &healthy, &has)?;
                self.publish(|p| p.done.push(key));
            }
        }
        self.progress.current.clear();
        Ok(())
    }

    /// Backends the current keymap routes `m` to (`nexts` included).
    fn holders(&self, m: &str) -> Vec<usize> {
        let routes = &self.config.routes;
        routes
            .lookup(m.as_bytes())
            .map(|r| routes.backends(r).iter().map(|&b| usize::from(b)).collect())
            .unwrap_or_default()
    }

    fn range(&self) -> (i64, i64) {
        (self.spec.start.unwrap_or(MIN_TIME), self.spec.end.unwrap_or(MAX_TIME))
    }

    /// Digests of `m` on backend `b` over `[from, to)`: per window of `window` ns (`by_series` false) or
    /// per series (`by_series` true).
    fn digests<K: Ord>(
        &self,
        b: usize,
        rp: &str,
        m: &str,
        (from, to): (i64, i64),
        group: &str,
        key: impl Fn(&Value, &[Value]) -> Option<K>,
    ) -> Result<BTreeMap<K, Digest>, JobError> {
        let source = format!("{}.{}", ident(rp), ident(m));
        let cond = format!("time >= {from} AND time < {to}");
        let counts = format!("SELECT count(*) FROM {source} WHERE {cond} GROUP BY {group}");
        if !self.spec.values {
            return Ok(collect_digests(&self.query(b, &counts)?, key));
        }
        let with_sums = format!("SELECT count(*), sum(*) FROM {source} WHERE {cond} GROUP BY {group}");
        let series = match self.query(b, &with_sums) {
            Ok(s) => s,
            // A measurement without numeric fields may refuse sum(*): counts alone then.
            Err(JobError::Query { error: QueryError::Statement(_), .. }) => self.query(b, &counts)?,
            Err(e) => return Err(e),
        };
        Ok(collect_digests(&series, key))
    }

    /// Makes every healthy holder of `rp.m` hold what the participants hold.
    fn sync_item(
        &mut self,
        rp: &str,
        window: i64,
        m: &str,
        participants: &[usize],
        fill: &[usize],
    ) -> Result<(), Stop> {
        let started = Instant::now();
        let before = (self.progress.windows_compared, self.progress.windows_differing, self.progress.lines_copied);
        let (start, end) = self.range();
        let from = self.progress.resume_window.map_or(start, |w| w.max(start));
        let group = format!("time({window}ns) fill(none)");
        let coarse = each(participants, |b| {
            self.digests(b, rp, m, (from, end), &group, |_, row| row.first().and_then(Value::as_i64))
        })?;
        let windows: BTreeSet<i64> = coarse.iter().flat_map(|d| d.keys().copied()).collect();
        let mut fields: Option<BTreeMap<String, FieldType>> = None;
        for w in windows {
            self.check()?;
            let (ws, we) = (w.max(from), w.saturating_add(window).min(end));
            let ds: Vec<Option<&Digest>> = coarse.iter().map(|d| d.get(&w)).collect();
            self.progress.windows_compared += 1;
            self.shared.jobs.windows_compared.fetch_add(1, Relaxed);
            if differs(participants, fill, &ds).is_none_or(|(_, lacking)| lacking.is_empty()) {
                continue;
            }
            self.progress.windows_differing += 1;
            self.shared.jobs.windows_differing.fetch_add(1, Relaxed);
            let per_series = each(participants, |b| self.digests(b, rp, m, (ws, we), "*", |s, _| Some(tags_of(s))))?;
            let all: BTreeSet<&SeriesTags> = per_series.iter().flat_map(|d| d.keys()).collect();
            for tags in all {
                let ds: Vec<Option<&Digest>> = per_series.iter().map(|d| d.get(tags)).collect();
                let Some((best, lacking)) = differs(participants, fill, &ds) else { continue };
                if lacking.is_empty() {
                    continue;
                }
                self.progress.series_differing += 1;
                let points = ds.iter().flatten().map(|d| d.points()).max().unwrap_or(0);
                if self.spec.dry_run {
                    self.progress.lines_to_copy += points * lacking.len() as u64;
                    continue;
                }
                if fields.is_none() {
                    fields = Some(self.field_types(participants, rp, m)?);
                }
                let f = fields.take().unwrap_or_default();
                self.copy_series(best, &lacking, rp, m, tags, (ws, we), &f)?;
                fields = Some(f);
            }
            self.publish(|p| p.resume_window = Some(w.saturating_add(window)));
        }
        let (wc, wd, lc) = (
            self.progress.windows_compared - before.0,
            self.progress.windows_differing - before.1,
            self.progress.lines_copied - before.2,
        );
        log::info!(
            "job {}: {rp}.{m}: {wc} windows compared, {wd} differing, {lc} lines copied ({:.1} s)",
            self.id,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Field types of `m` as the participants declare them (the first declaration wins).
    fn field_types(&self, participants: &[usize], rp: &str, m: &str) -> Result<BTreeMap<String, FieldType>, JobError> {
        let mut out = BTreeMap::new();
        for &b in participants {
            for s in self.query(b, &format!("SHOW FIELD KEYS FROM {}.{}", ident(rp), ident(m)))? {
                let (_, vals) = columns_values(&s);
                for row in vals.iter().filter_map(Value::as_array) {
                    if let (Some(k), Some(t)) = (
                        row.first().and_then(Value::as_str),
                        row.get(1).and_then(Value::as_str).and_then(FieldType::parse),
                    ) {
                        out.entry(k.to_string()).or_insert(t);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Copies one series-window from `from` to each of `to`, page by page.
    #[allow(clippy::too_many_arguments)]
    fn copy_series(
        &mut self,
        from: usize,
        to: &[usize],
        rp: &str,
        m: &str,
        tags: &SeriesTags,
        (ws, we): (i64, i64),
        fields: &BTreeMap<String, FieldType>,
    ) -> Result<(), Stop> {
        if fields.is_empty() {
            return Ok(());
        }
        let select: Vec<String> = fields.keys().map(|f| format!("{}::field", ident(f))).collect();
        let mut cond: Vec<String> = tags.iter().map(|(k, v)| format!("{}::tag = {}", ident(k), literal(v))).collect();
        let key = series_key(m, tags);
        let mut cursor = ws.saturating_sub(1);
        loop {
            self.check()?;
            cond.truncate(tags.len());
            cond.push(format!("time > {cursor} AND time < {we}"));
            let q = format!(
                "SELECT {} FROM {}.{} WHERE {} ORDER BY time ASC LIMIT {PAGE_POINTS}",
                select.join(", "),
                ident(rp),
                ident(m),
                cond.join(" AND ")
            );
            let series = self.query(from, &q)?;
            let Some(s) = series.first() else { break };
            let (cols, vals) = columns_values(s);
            let typed: Vec<(String, FieldType)> = cols
                .iter()
                .skip(1)
                .map(|c| {
                    let name = c.as_str().unwrap_or("").to_string();
                    let t = fields.get(&name).copied().unwrap_or(FieldType::Float);
                    (name, t)
                })
                .collect();
            let mut text = String::new();
            let (n, last) = rows_to_lines(&key, &typed, vals, &mut text)
                .map_err(|e| Stop::Failed(JobError::Commit(format!("{rp}.{m}: {e}"))))?;
            if n > 0 {
                for &b in to {
                    self.commit(b, rp, &text, n)?;
                }
                self.throttle.wait(n * to.len() as u64);
            }
            match last {
                Some(t) if vals.len() >= PAGE_POINTS => cursor = t,
                _ => break,
            }
        }
        Ok(())
    }

    /// Hands `lines` to a worker for backend `b`'s outbox and waits until they are committed there.
    fn commit(&mut self, b: usize, rp: &str, lines: &str, n: u64) -> Result<(), Stop> {
        let db = self.db_of(b);
        let be = self.config.backends[b].clone();
        let target = Target::new(&db, rp);
        if self.copying.insert((b, target.clone())) {
            be.state.lag.set_copying(&target, true);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let batch = Batch {
            backend: be.name.clone(),
            url: be.url.clone(),
            target: format!("db={}&rp={}&precision=ns", encode(&db), encode(rp)),
            lines: lines.to_string(),
            count: n,
            done: tx,
        };
        if !(self.deliver)(batch) {
            return Err(Stop::Shutdown);
        }
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(JobError::Commit(e).into()),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if !self.shared.shutting_down() => continue,
                Err(_) => return Err(Stop::Shutdown),
            }
        }
        self.last_commit = Some(Instant::now());
        self.progress.lines_copied += n;
        *self.progress.copied_to.entry(be.name.clone()).or_insert(0) += n;
        self.shared.jobs.lines_copied.fetch_add(n, Relaxed);
        if self.last_publish.elapsed() >= Duration::from_secs(1) {
            self.publish(|_| {});
        }
        Ok(())
    }

    /// Waits until every batch the job committed has left the outboxes (delivered). False on timeout.
    fn settle(&self) -> bool {
        let Some(last) = self.last_commit else { return true };
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let now = Instant::now();
            let pending = self.copying.iter().any(|(b, t)| {
                self.config.backends.get(*b).is_some_and(|be| {
                    let lag = be.state.lag.lag(t, now);
                    // Anything still pending that was begun before our last commit may be ours.
                    !lag.behind.is_zero() && now.saturating_duration_since(last) <= lag.behind
                })
            });
            if !pending {
                return true;
            }
            if now >= deadline || self.shared.shutting_down() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Drops `m` from healthy backends the keymap no longer routes it to, once every healthy holder
    /// covers, window by window, what that backend has. Never from a holder.
    fn cleanup(&mut self, m: &str, rps: &[String], healthy: &[usize], has: &[BTreeSet<String>]) -> Result<(), Stop> {
        // The keymap in force now: a reload during the job must not turn a holder into a victim.
        self.config = self.shared.config_status(|s| s.current.clone());
        let holders = self.holders(m);
        let n = self.config.backends.len();
        let victims: Vec<usize> = healthy
            .iter()
            .copied()
            .filter(|&b| b < n && !holders.contains(&b) && has.get(b).is_some_and(|h| h.contains(m)))
            .collect();
        if victims.is_empty() {
            return Ok(());
        }
        if holders.is_empty() || holders.iter().any(|&h| !self.backend(h).state.is_up()) {
            self.note(format!("{m}: not removed from the old backends: a holder is down or none is configured"));
            return Ok(());
        }
        if !self.settle() {
            self.note(format!("{m}: not removed from the old backends: the copies are not delivered yet"));
            return Ok(());
        }
        let (start, end) = self.range();
        let group = "time(604800000000000ns) fill(none)";
        for &x in &victims {
            let mut points;
            let deadline = Instant::now() + SETTLE_TIMEOUT;
            let verified = loop {
                self.check()?;
                let mut ok = true;
                points = 0;
                for rp in rps {
                    let theirs =
                        self.digests(x, rp, m, (start, end), group, |_, row| row.first().and_then(Value::as_i64))?;
                    points += theirs.values().map(Digest::points).sum::<u64>();
                    for &h in &holders {
                        let ours =
                            self.digests(h, rp, m, (start, end), group, |_, row| row.first().and_then(Value::as_i64))?;
                        ok &= theirs.iter().all(|(w, d)| ours.get(w).is_some_and(|o| o.covers(d)));
                    }
                }
                if ok || Instant::now() >= deadline {
                    break ok;
                }
                std::thread::sleep(Duration::from_millis(250));
            };
            let name = self.backend(x).name.clone();
            if !verified {
                self.note(format!("{m}: not removed from backend {name}: the holders do not hold all of its points"));
                continue;
            }
            influx::query(self.backend(x), &self.db_of(x), &format!("DROP MEASUREMENT {}", ident(m)), true)
                .map_err(|error| JobError::Query { backend: name.clone(), error })?;
            log::info!("job {}: {m}: removed from backend {name} ({points} points; every holder has them)", self.id);
            self.progress.lines_deleted += points;
            self.shared.jobs.lines_deleted.fetch_add(points, Relaxed);
        }
        Ok(())
    }
}

/// Digests by key from an answer's series (rows without any count are left out).
fn collect_digests<K: Ord>(series: &[Value], key: impl Fn(&Value, &[Value]) -> Option<K>) -> BTreeMap<K, Digest> {
    let mut out = BTreeMap::new();
    for s in series {
        let (cols, vals) = columns_values(s);
        for row in vals.iter().filter_map(Value::as_array) {
            let d = Digest::from_row(cols, row);
            if d.counts.is_empty() {
                continue;
            }
            if let Some(k) = key(s, row) {
                out.insert(k, d);
            }
        }
    }
    out
}

/// `f` for every participant at once (each backend scans its own data: the digests of a window take
/// as long as the slowest backend, not the sum), results in participant order.
fn each<T: Send>(participants: &[usize], f: impl Fn(usize) -> Result<T, JobError> + Sync) -> Result<Vec<T>, JobError> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = participants.iter().map(|&b| s.spawn(move || f(b))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(JobError::Config("bug: a digest thread panicked".into()))))
            .collect()
    })
}

/// For one window or series: the participant with the most points and the fill targets whose digest
/// differs from it. `None` when nobody has anything.
fn differs(participants: &[usize], fill: &[usize], ds: &[Option<&Digest>]) -> Option<(usize, Vec<usize>)> {
    let best = (0..participants.len()).filter(|&i| ds[i].is_some()).max_by(|&a, &b| {
        let (pa, pb) = (ds[a].map_or(0, Digest::points), ds[b].map_or(0, Digest::points));
        // Ties go to the first participant (config order).
        pa.cmp(&pb).then(b.cmp(&a))
    })?;
    let best_d = ds[best]?;
    let lacking = (0..participants.len())
        .filter(|&i| i != best && fill.contains(&participants[i]))
        .filter(|&i| ds[i].is_none_or(|d| !d.matches(best_d)))
        .map(|i| participants[i])
        .collect();
    Some((participants[best], lacking))
}

/// Starts the job thread: resumes unfinished jobs from their checkpoints, then runs queued jobs one at
/// a time until shutdown.
pub fn spawn(shared: Arc<Shared>, deliver: Deliver) -> std::io::Result<std::thread::JoinHandle<()>> {
    // Loaded here, before the caller lets workers serve: a job submitted meanwhile would take an id
    // some checkpoint already has.
    let dir = super::jobs_dir(&shared.settings.data_dir);
    shared.jobs.load(&dir);
    std::thread::Builder::new().name("jobs".into()).spawn(move || {
        while !shared.shutting_down() {
            let Some(id) = shared.jobs.next_queued(Duration::from_millis(500)) else { continue };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&shared, &deliver, &dir, id)));
            if outcome.is_err() {
                log::error!("job {id}: bug: panic; the job is marked failed");
                shared.jobs.update(&dir, id, |j| {
                    j.state = State::Failed;
                    j.error = Some("internal error (panic); see the log".into());
                    j.finished_ms = Some(unix_ms(SystemTime::now()));
                });
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_ns("168h0m0s"), Some(DEFAULT_WINDOW_NS));
        assert_eq!(go_duration_ns("1h0m0s"), Some(3_600_000_000_000));
        assert_eq!(go_duration_ns("0s"), Some(0));
        assert_eq!(go_duration_ns("5x"), None);
        assert_eq!(go_duration_ns("12"), None);
    }

    #[test]
    fn digests_compare_counts_and_sums() {
        let cols = vec![json!("time"), json!("count_a"), json!("count_s"), json!("sum_a")];
        let a = Digest::from_row(&cols, &[json!(0), json!(3), json!(1), json!(0.30000000000000004)]);
        let b = Digest::from_row(&cols, &[json!(0), json!(3), json!(1), json!(0.3)]);
        let c = Digest::from_row(&cols, &[json!(0), json!(3), json!(1), json!(0.4)]);
        let d = Digest::from_row(&cols, &[json!(0), json!(2), json!(null), json!(0.3)]);
        assert!(a.matches(&b), "float rounding is not a difference");
        assert!(!a.matches(&c));
        assert!(!a.matches(&d));
        assert_eq!(a.points(), 3);
        assert!(a.covers(&d) && !d.covers(&a));
    }

    #[test]
    fn the_fuller_participant_fills_the_others() {
        let cols = vec![json!("time"), json!("count_v")];
        let full = Digest::from_row(&cols, &[json!(0), json!(10)]);
        let half = Digest::from_row(&cols, &[json!(0), json!(5)]);
        // participants 4, 7, 9; only 4 and 7 are fill targets (9 is an old holder).
        assert_eq!(differs(&[4, 7, 9], &[4, 7], &[Some(&half), None, Some(&full)]), Some((9, vec![4, 7])));
        assert_eq!(differs(&[4, 7], &[4, 7], &[Some(&full), Some(&full)]), Some((4, vec![])));
        assert_eq!(differs(&[4, 7], &[4, 7], &[None, Some(&half)]), Some((7, vec![4])));
        assert_eq!(differs(&[4, 7], &[4, 7], &[None, None]), None);
    }
}
