//! How a job brings the holders of one (retention policy, measurement) in line: window digests, then
//! per-series digests where a window differs, then copying the series-windows that differ page by page
//! and committing them through the lacking backend's outbox; settling at the end of the job, and the
//! rebalance cleanup (dropping a measurement from a backend no longer routed to, once covered).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::digest::{Digest, SeriesTags, collect_digests, columns_values, differs, tags_of};
use super::influx::{self, QueryError, ident, literal};
use super::lines::{FieldType, rows_to_lines, series_key};
use super::run::{JobError, Runner, Stop};
use super::{Batch, PAGE_POINTS};
use crate::http::params::encode;
use crate::upstream::lag::Target;

/// How long the end of a job waits for its copies to be delivered, and a cleanup for them to match.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Runner<'_> {
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
    pub(super) fn sync_item(
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
    pub(super) fn settle(&self) -> bool {
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
    pub(super) fn cleanup(
        &mut self,
        m: &str,
        rps: &[String],
        healthy: &[usize],
        has: &[BTreeSet<String>],
    ) -> Result<(), Stop> {
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
