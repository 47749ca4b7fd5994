//! The job thread and the run of one job: [`spawn`] starts the thread that resumes checkpointed jobs
//! and runs queued ones one at a time; [`run`] drives one job to its end through a [`Runner`] (its
//! progress, checkpoint and throttle), listing the measurements and retention policies and handing each
//! (rp, measurement) to the digest comparison and copy (`copy.rs`, with `digest.rs`). See the module
//! doc of `jobs` for the guarantees.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::digest::columns_values;
use super::influx::{self, QueryError};
use super::{Deliver, Kind, Progress, Spec, State};
use crate::config::{Backend, Config};
use crate::shared::Shared;
use crate::upstream::lag::Target;
use crate::upstream::unix_ms;

/// Whole time when a job names no range (InfluxDB's own limits).
const MIN_TIME: i64 = -9_223_372_036_854_775_806;
const MAX_TIME: i64 = 9_223_372_036_854_775_806;
/// Window when a retention policy's shard group duration cannot be read.
const DEFAULT_WINDOW_NS: i64 = 7 * 24 * 3600 * 1_000_000_000;

/// Why a job stopped before its end.
#[derive(Debug)]
pub(super) enum Stop {
    Cancelled,
    /// The proxy is stopping: the job stays `running` in its checkpoint and resumes at the next start.
    Shutdown,
    Failed(JobError),
}

#[derive(Debug)]
pub(super) enum JobError {
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
pub(super) struct Throttle {
    rate: u64,
    started: Instant,
    lines: u64,
}

impl Throttle {
    pub(super) fn wait(&mut self, lines: u64) {
        self.lines += lines;
        let due = Duration::from_secs_f64(self.lines as f64 / self.rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep((due - elapsed).min(Duration::from_secs(5)));
        }
    }
}

pub(super) struct Runner<'a> {
    pub(super) shared: &'a Shared,
    pub(super) deliver: &'a Deliver,
    dir: &'a Path,
    pub(super) id: u64,
    pub(super) spec: Spec,
    pub(super) progress: Progress,
    pub(super) config: Arc<Config>,
    pub(super) throttle: Throttle,
    /// (backend index, target) this job has written to: lagging while the job runs.
    pub(super) copying: HashSet<(usize, Target)>,
    pub(super) last_commit: Option<Instant>,
    /// Progress reaches `/jobs` and the checkpoint at least this often while copying.
    pub(super) last_publish: Instant,
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
    pub(super) fn publish(&mut self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress);
        self.last_publish = Instant::now();
        let p = self.progress.clone();
        self.shared.jobs.update(self.dir, self.id, |j| j.progress = p);
    }

    pub(super) fn check(&self) -> Result<(), Stop> {
        if self.shared.shutting_down() {
            return Err(Stop::Shutdown);
        }
        if self.shared.jobs.cancelled(self.id) {
            return Err(Stop::Cancelled);
        }
        Ok(())
    }

    pub(super) fn backend(&self, b: usize) -> &Backend {
        &self.config.backends[b]
    }

    /// The database the job's data lives in on backend `b` (a backend's own `db` wins).
    pub(super) fn db_of(&self, b: usize) -> String {
        self.backend(b).db.clone().unwrap_or_else(|| self.spec.db.clone())
    }

    pub(super) fn query(&self, b: usize, q: &str) -> Result<Vec<Value>, JobError> {
        influx::query(self.backend(b), &self.db_of(b), q, false)
            .map_err(|error| JobError::Query { backend: self.backend(b).name.clone(), error })
    }

    pub(super) fn note(&mut self, text: String) {
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
    pub(super) fn holders(&self, m: &str) -> Vec<usize> {
        let routes = &self.config.routes;
        routes
            .lookup(m.as_bytes())
            .map(|r| routes.backends(r).iter().map(|&b| usize::from(b)).collect())
            .unwrap_or_default()
    }

    pub(super) fn range(&self) -> (i64, i64) {
        (self.spec.start.unwrap_or(MIN_TIME), self.spec.end.unwrap_or(MAX_TIME))
    }
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

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_ns("168h0m0s"), Some(DEFAULT_WINDOW_NS));
        assert_eq!(go_duration_ns("1h0m0s"), Some(3_600_000_000_000));
        assert_eq!(go_duration_ns("0s"), Some(0));
        assert_eq!(go_duration_ns("5x"), None);
        assert_eq!(go_duration_ns("12"), None);
    }
}
