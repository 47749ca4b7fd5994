//! Which backends answer each statement of a query.
//!
//! * Reads of known measurements go to ONE backend that holds all of them (`One`, candidates in order
//!   of preference for failover): healthy first, same zone as the node first, never a write-only one.
//! * Reads whose measurements live on different backends, or that name a regex, go to several backends
//!   and their answers are merged by series (`Merge { kind: Series }`).
//! * Schema exploration without FROM (`SHOW MEASUREMENTS`, `SHOW DATABASES`, `SHOW TAG KEYS`, ...) goes
//!   to every healthy backend; answers are merged as sets, LIMIT/OFFSET applied after the merge
//!   (`Merge { kind: Show }`).
//! * Statements that change a backend (CREATE DATABASE, DROP, GRANT, ...; whatever the filter lets
//!   through) go to every backend that should see them (`Broadcast`).
//!
//! Reads avoid lagging replicas (`upstream::lag`): among healthy holders, those that are not behind for
//! the statement's target (database, retention policy) come first, zone order applying among them. When
//! every healthy holder lags, the least-behind one answers and the result carries a `messages` warning
//! (the plan becomes a one-backend `Merge` with `notes`). Fan-outs leave out a lagging backend when
//! every measurement route it serves has a caught-up healthy holder that is asked instead.

use std::time::Instant;

use crate::config::Config;
use crate::query::influxql::{Kind, ShowKind, Source, Statement};
use crate::upstream::lag::{self, Lag, Target};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One backend answers; candidates in order (the next one is tried on failure).
    One(Vec<usize>),
    /// Several backends answer the same statement; answers merged. `notes` are warnings for the
    /// result's `messages` (e.g. every replica lags).
    Merge { backends: Vec<usize>, skipped: Vec<usize>, kind: MergeKind, notes: Vec<String> },
    /// Every listed backend applies the statement; the answer reports the first error.
    Broadcast { backends: Vec<usize>, skipped: Vec<usize> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeKind {
    /// Schema listings: union of rows, sorted, de-duplicated, LIMIT/OFFSET after merging.
    Show { limit: Option<u64>, offset: Option<u64> },
    /// Data: union of series; a series several backends return (replicas) is taken once.
    Series,
}

#[derive(Debug)]
pub struct Planned<'q> {
    pub text: &'q str,
    pub statement: Statement,
    pub plan: Plan,
}

impl Planned<'_> {
    /// The text to send to backends: without LIMIT/OFFSET when they are applied after a merge.
    pub fn backend_text(&self) -> String {
        match self.plan {
            Plan::Merge { kind: MergeKind::Show { .. }, .. } => self.statement.text_without_limit_offset(self.text),
            _ => self.text.to_string(),
        }
    }
}

/// What a read asks for: its target and the moment lags are judged at.
#[derive(Debug, Clone)]
pub struct ReadContext {
    pub target: Target,
    pub now: Instant,
}

impl ReadContext {
    /// The request's `db` and `rp` (empty when not given).
    pub fn new(db: &str, rp: &str) -> ReadContext {
        ReadContext { target: Target::new(db, rp), now: Instant::now() }
    }

    /// The target of a statement: a qualified source or `ON db` wins over the request's.
    fn for_statement(&self, statement: &Statement) -> ReadContext {
        let qualified = statement.sources.iter().find_map(|s| match s {
            Source::Measurement { db: Some(db), rp, .. } | Source::Regex { db: Some(db), rp, .. } => {
                Some(Target::new(db, rp.as_deref().unwrap_or("")))
            }
            Source::Measurement { db: None, rp: Some(rp), .. } | Source::Regex { db: None, rp: Some(rp), .. } => {
                Some(Target::new(&self.target.db, rp))
            }
            _ => None,
        });
        let target = qualified
            .or_else(|| statement.on_db.as_deref().map(|db| Target::new(db, "")))
            .unwrap_or_else(|| self.target.clone());
        ReadContext { target, now: self.now }
    }

    /// Backend `b`'s lag for this target (writes to a backend with its own `db` went there).
    fn lag(&self, config: &Config, b: usize) -> Lag {
        let be = &config.backends[b];
        match &be.db {
            Some(db) => be.state.lag.lag(&Target::new(db, &self.target.rp), self.now),
            None => be.state.lag.lag(&self.target, self.now),
        }
    }

    fn lagging(&self, config: &Config, b: usize) -> bool {
        self.lag(config, b).is_lagging(lag::bound(config.backends[b].interval))
    }
}

/// Backends in order of preference for reads, and a warning when every healthy one lags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    pub order: Vec<usize>,
    pub warning: Option<String>,
}

/// Backends in order of preference for reads: healthy before down, caught up before lagging, same zone
/// before others, config order otherwise; if every healthy one lags, the least behind first. Write-only
/// backends are left out.
pub fn read_candidates(config: &Config, cx: &ReadContext, backends: impl IntoIterator<Item = usize>) -> Candidates {
    let zone = &config.node.zone;
    let mut v: Vec<usize> = backends.into_iter().filter(|&b| !config.backends[b].write_only).collect();
    v.sort_unstable();
    v.dedup();
    let lags: Vec<(usize, Lag, bool)> = v.iter().map(|&b| (b, cx.lag(config, b), cx.lagging(config, b))).collect();
    let lag_of = |b: usize| lags.iter().find(|l| l.0 == b).map_or((Lag::default(), false), |l| (l.1, l.2));
    let healthy: Vec<usize> = v.iter().copied().filter(|&b| config.backends[b].state.is_up()).collect();
    let all_lag = !healthy.is_empty() && healthy.iter().all(|&b| lag_of(b).1);
    v.sort_by_key(|&b| {
        let be = &config.backends[b];
        let (lag, lagging) = lag_of(b);
        let rank = if all_lag { lag.rank() } else { (lagging, std::time::Duration::ZERO) };
        (!be.state.is_up(), rank, zone.is_empty() || be.zone != *zone, b)
    });
    let warning = all_lag.then(|| {
        let first = v[0];
        let lag = lag_of(first).0;
        let why = if lag.copying {
            "a repair is copying into it".to_string()
        } else if lag.parked {
            "it has parked writes".to_string()
        } else {
            format!("its oldest pending write is {} ms old", lag.behind.as_millis())
        };
        format!(
            "every replica is catching up for {}; answered by backend {}, the least behind ({why}): recent points may be missing",
            cx.target, config.backends[first].name
        )
    });
    Candidates { order: v, warning }
}

/// Every readable backend, split into healthy ones and down ones; healthy ones that lag are left out
/// when every route they serve has another healthy, caught-up holder.
fn all_readable(config: &Config, cx: &ReadContext) -> (Vec<usize>, Vec<usize>) {
    let (up, down): (Vec<usize>, Vec<usize>) = (0..config.backends.len())
        .filter(|&b| !config.backends[b].write_only)
        .partition(|&b| config.backends[b].state.is_up());
    let fresh = |b: usize| !cx.lagging(config, b);
    let replaceable = |b: usize| {
        let mut serves = false;
        for r in 0..config.routes.count() {
            let set = config.routes.backends(r as u32);
            if set.iter().any(|&x| usize::from(x) == b) {
                serves = true;
                let covered = set.iter().map(|&x| usize::from(x)).any(|x| x != b && up.contains(&x) && fresh(x));
                if !covered {
                    return false;
                }
            }
        }
        serves
    };
    let kept = up.iter().copied().filter(|&b| fresh(b) || !replaceable(b)).collect();
    (kept, down)
}

fn split_up(config: &Config, backends: Vec<usize>) -> (Vec<usize>, Vec<usize>) {
    backends.into_iter().partition(|&b| config.backends[b].state.is_up())
}

/// Why a statement cannot be planned: a 400 for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

/// Plans one classified statement; `cx` holds the request's target (`db`, `rp`).
pub fn plan(config: &Config, statement: &Statement, cx: &ReadContext) -> Result<Plan, PlanError> {
    let cx = &cx.for_statement(statement);
    let merge_show = || MergeKind::Show { limit: statement.limit, offset: statement.offset };
    match &statement.kind {
        Kind::Select | Kind::Explain { .. } => by_sources(config, cx, statement, MergeKind::Series),
        Kind::Show(show) => match show {
            ShowKind::TagKeys | ShowKind::TagValues | ShowKind::FieldKeys | ShowKind::Series
                if !statement.sources.is_empty() =>
            {
                by_sources(config, cx, statement, merge_show())
            }
            ShowKind::Measurements if !statement.sources.is_empty() => by_sources(config, cx, statement, merge_show()),
            ShowKind::Databases
            | ShowKind::Measurements
            | ShowKind::RetentionPolicies
            | ShowKind::TagKeys
            | ShowKind::TagValues
            | ShowKind::FieldKeys
            | ShowKind::Series => {
                let (backends, skipped) = all_readable(config, cx);
                Ok(Plan::Merge { backends, skipped, kind: merge_show(), notes: Vec::new() })
            }
            // Cardinalities, users, stats, ...: one backend's view.
            _ if !statement.sources.is_empty() => by_sources(config, cx, statement, merge_show()),
            _ => Ok(one(read_candidates(config, cx, 0..config.backends.len()), merge_show())),
        },
        Kind::Delete | Kind::Drop(_) if !statement.sources.is_empty() => {
            let mut all = Vec::new();
            for s in &statement.sources {
                all.extend(holders(config, s)?);
            }
            all.sort_unstable();
            all.dedup();
            let (backends, skipped) = split_up(config, all);
            Ok(Plan::Broadcast { backends, skipped })
        }
        Kind::Other(_) => Ok(Plan::One(read_candidates(config, cx, 0..config.backends.len()).order)),
        // CREATE, DROP DATABASE, ALTER, GRANT, REVOKE, KILL, SET PASSWORD, DELETE without FROM: every
        // backend, write-only ones included (they receive writes, so they need the databases too).
        _ => {
            let (backends, skipped) = split_up(config, (0..config.backends.len()).collect());
            Ok(Plan::Broadcast { backends, skipped })
        }
    }
}

/// Backends that hold a source (route of the measurement; every backend for a regex).
fn holders(config: &Config, source: &Source) -> Result<Vec<usize>, PlanError> {
    match source {
        Source::Measurement { name, .. } => match config.routes.lookup(name.as_bytes()) {
            Some(route) => Ok(config.routes.backends(route).iter().map(|&b| usize::from(b)).collect()),
            None => Err(PlanError(format!(
                "measurement \"{name}\" is not routed to any backend (no m:{name}, prefix or m:_default_ key)"
            ))),
        },
        Source::Regex { .. } => Ok((0..config.backends.len()).collect()),
    }
}

/// A one-backend read: `One`, or, when every replica lags, the least-behind one with a warning.
fn one(c: Candidates, kind: MergeKind) -> Plan {
    match (c.warning, c.order.first()) {
        (Some(w), Some(&first)) => Plan::Merge { backends: vec![first], skipped: Vec::new(), kind, notes: vec![w] },
        _ => Plan::One(c.order),
    }
}

/// Plans a read by the measurements it names.
fn by_sources(config: &Config, cx: &ReadContext, statement: &Statement, merge: MergeKind) -> Result<Plan, PlanError> {
    if statement.sources.is_empty() {
        return Ok(one(read_candidates(config, cx, 0..config.backends.len()), merge));
    }
    let regex = statement.sources.iter().any(|s| matches!(s, Source::Regex { .. }));
    if regex {
        let (backends, skipped) = all_readable(config, cx);
        return Ok(Plan::Merge { backends, skipped, kind: merge, notes: Vec::new() });
    }
    let mut all = Vec::new();
    let mut sets = Vec::with_capacity(statement.sources.len());
    for s in &statement.sources {
        let set = holders(config, s)?;
        if read_candidates(config, cx, set.iter().copied()).order.is_empty() {
            return Err(PlanError(format!("no readable backend holds {}", source_name(s))));
        }
        all.extend_from_slice(&set);
        sets.push(set);
    }
    let ordered = read_candidates(config, cx, all);
    let common: Vec<usize> = ordered.order.iter().copied().filter(|b| sets.iter().all(|s| s.contains(b))).collect();
    if !common.is_empty() {
        return Ok(one(read_candidates(config, cx, common), merge));
    }
    let sets: Vec<Vec<usize>> = sets.into_iter().map(|s| read_candidates(config, cx, s).order).collect();
    // Measurements on different backends: one holder of each (preferring ones already picked).
    let mut picked: Vec<usize> = Vec::new();
    for set in &sets {
        if !set.iter().any(|b| picked.contains(b)) {
            picked.push(set[0]);
        }
    }
    let (backends, skipped) = split_up(config, picked);
    Ok(Plan::Merge { backends, skipped, kind: merge, notes: Vec::new() })
}

fn source_name(s: &Source) -> String {
    match s {
        Source::Measurement { name, .. } => format!("measurement \"{name}\""),
        Source::Regex { pattern, .. } => format!("/{pattern}/"),
    }
}

/// The backends a whole query can be forwarded to unchanged: every statement is a `One` and they
/// share candidates. `None` when the statements must be split.
pub fn single_backend(plans: &[Planned]) -> Option<Vec<usize>> {
    let mut common: Option<Vec<usize>> = None;
    for p in plans {
        let Plan::One(c) = &p.plan else { return None };
        common = Some(match common {
            None => c.clone(),
            Some(prev) => prev.into_iter().filter(|b| c.contains(b)).collect(),
        });
    }
    common.filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;
    use crate::query::influxql::classify;
    use crate::upstream::Registry;

    fn config() -> Config {
        let raw = RawConfig::from_json(
            r#"{"NODES": {"l1": {"zone": "z2"}},
                "BACKENDS": {
                    "a": {"url": "http://127.0.0.1:1", "zone": "z1"},
                    "b": {"url": "http://127.0.0.1:2", "zone": "z2"},
                    "c": {"url": "http://127.0.0.1:3"},
                    "w": {"url": "http://127.0.0.1:4", "writeonly": "1"}},
                "KEYMAPS": {"cpu": ["a", "b", "w"], "mem": ["c"], "disk": ["a"], "_default_": ["c"]}}"#,
        )
        .unwrap();
        Config::build(raw, "l1", &Registry::default()).unwrap()
    }

    fn p(c: &Config, q: &str) -> Plan {
        plan(c, &classify(q).unwrap(), &ReadContext::new("db", "")).unwrap()
    }

    #[test]
    fn reads_go_to_one_holder_same_zone_first() {
        let c = config();
        // a=0, b=1, c=2, w=3; node zone z2 prefers b.
        assert_eq!(p(&c, "SELECT v FROM cpu WHERE time > now() - 1h"), Plan::One(vec![1, 0]));
        assert_eq!(p(&c, "SELECT v FROM mem WHERE time > 0"), Plan::One(vec![2]));
        assert_eq!(p(&c, "SELECT v FROM other WHERE time > 0"), Plan::One(vec![2]));
        assert_eq!(p(&c, "SELECT v FROM cpu, disk WHERE time > 0"), Plan::One(vec![0]));
    }

    #[test]
    fn down_backends_go_last() {
        let c = config();
        c.backends[1].state.set_up(false, None);
        assert_eq!(p(&c, "SELECT v FROM cpu WHERE time > 0"), Plan::One(vec![0, 1]));
    }

    #[test]
    fn lagging_replicas_go_after_caught_up_ones() {
        let c = config();
        // b (same zone, preferred) is copying into db: a answers first.
        c.backends[1].state.lag.set_copying(&Target::new("db", ""), true);
        assert_eq!(p(&c, "SELECT v FROM cpu WHERE time > 0"), Plan::One(vec![0, 1]));
        // Another database is not affected.
        let other = plan(&c, &classify("SELECT v FROM cpu WHERE time > 0").unwrap(), &ReadContext::new("x", ""));
        assert_eq!(other.unwrap(), Plan::One(vec![1, 0]));
        // Both lag: the least behind (a, only pending data) answers, with a warning.
        c.backends[0].state.lag.set_copying(&Target::new("db", ""), true);
        match p(&c, "SELECT v FROM cpu WHERE time > 0") {
            Plan::Merge { backends, notes, .. } => {
                assert_eq!(backends.len(), 1);
                assert!(notes[0].contains("catching up"), "{notes:?}");
            }
            other => panic!("{other:?}"),
        }
        c.backends[0].state.lag.set_copying(&Target::new("db", ""), false);
        c.backends[1].state.lag.set_copying(&Target::new("db", ""), false);
        assert_eq!(p(&c, "SELECT v FROM cpu WHERE time > 0"), Plan::One(vec![1, 0]));
    }

    #[test]
    fn fan_out_skips_a_lagging_backend_whose_routes_are_covered() {
        let c = config();
        c.backends[1].state.lag.set_copying(&Target::new("db", ""), true);
        // b only serves cpu, which a also holds and a is caught up: b is not asked.
        match p(&c, "SHOW MEASUREMENTS") {
            Plan::Merge { backends, .. } => assert_eq!(backends, vec![0, 2]),
            other => panic!("{other:?}"),
        }
        // c is the only holder of mem: it is asked even while it lags.
        c.backends[2].state.lag.set_copying(&Target::new("db", ""), true);
        match p(&c, "SHOW MEASUREMENTS") {
            Plan::Merge { backends, .. } => assert_eq!(backends, vec![0, 2]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn split_sources_and_regexes_merge() {
        let c = config();
        assert_eq!(
            p(&c, "SELECT v FROM cpu, mem WHERE time > 0"),
            Plan::Merge { backends: vec![1, 2], skipped: vec![], kind: MergeKind::Series, notes: vec![] }
        );
        assert_eq!(
            p(&c, "SELECT v FROM /c.*/ WHERE time > 0"),
            Plan::Merge { backends: vec![0, 1, 2], skipped: vec![], kind: MergeKind::Series, notes: vec![] }
        );
    }

    #[test]
    fn schema_listings_fan_out() {
        let c = config();
        c.backends[2].state.set_up(false, None);
        assert_eq!(
            p(&c, "SHOW MEASUREMENTS LIMIT 10 OFFSET 2"),
            Plan::Merge {
                backends: vec![0, 1],
                skipped: vec![2],
                kind: MergeKind::Show { limit: Some(10), offset: Some(2) },
                notes: vec![]
            }
        );
        assert!(matches!(p(&c, "SHOW TAG KEYS FROM cpu"), Plan::One(_)));
        assert!(matches!(p(&c, "SHOW DATABASES"), Plan::Merge { .. }));
    }

    #[test]
    fn changes_are_broadcast() {
        let c = config();
        assert_eq!(p(&c, "CREATE DATABASE x"), Plan::Broadcast { backends: vec![0, 1, 2, 3], skipped: vec![] });
        assert_eq!(p(&c, "DROP MEASUREMENT cpu"), Plan::Broadcast { backends: vec![0, 1, 3], skipped: vec![] });
    }

    #[test]
    fn whole_query_to_one_backend_when_possible() {
        let c = config();
        let plans = |q: &'static str| -> Vec<Planned<'static>> {
            crate::query::influxql::split_statements(q)
                .into_iter()
                .map(|t| {
                    let s = classify(t).unwrap();
                    Planned { text: t, plan: plan(&c, &s, &ReadContext::new("db", "")).unwrap(), statement: s }
                })
                .collect()
        };
        assert_eq!(
            single_backend(&plans("SELECT v FROM cpu WHERE time>0; SELECT v FROM disk WHERE time>0")),
            Some(vec![0])
        );
        assert_eq!(single_backend(&plans("SELECT v FROM cpu WHERE time>0; SELECT v FROM mem WHERE time>0")), None);
        assert_eq!(single_backend(&plans("SHOW MEASUREMENTS")), None);
    }

    #[test]
    fn unrouted_measurement_is_an_error() {
        let raw =
            RawConfig::from_json(r#"{"BACKENDS": {"a": {"url": "http://127.0.0.1:1"}}, "KEYMAPS": {"cpu": ["a"]}}"#)
                .unwrap();
        let c = Config::build(raw, "l1", &Registry::default()).unwrap();
        let e =
            plan(&c, &classify("SELECT v FROM mem WHERE time > 0").unwrap(), &ReadContext::new("db", "")).unwrap_err();
        assert!(e.0.contains("\"mem\""), "{e:?}");
    }
}
