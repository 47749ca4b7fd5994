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

use crate::config::Config;
use crate::query::influxql::{Kind, ShowKind, Source, Statement};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One backend answers; candidates in order (the next one is tried on failure).
    One(Vec<usize>),
    /// Several backends answer the same statement; answers merged.
    Merge { backends: Vec<usize>, skipped: Vec<usize>, kind: MergeKind },
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

/// Backends in order of preference for reads: healthy before down, same zone before others, config
/// order otherwise. Write-only backends are left out.
pub fn read_candidates(config: &Config, backends: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let zone = &config.node.zone;
    let mut v: Vec<usize> = backends.into_iter().filter(|&b| !config.backends[b].write_only).collect();
    v.sort_by_key(|&b| {
        let be = &config.backends[b];
        (!be.state.is_up(), zone.is_empty() || be.zone != *zone, b)
    });
    v.dedup();
    v
}

/// Every readable backend, split into healthy ones and down ones.
fn all_readable(config: &Config) -> (Vec<usize>, Vec<usize>) {
    (0..config.backends.len())
        .filter(|&b| !config.backends[b].write_only)
        .partition(|&b| config.backends[b].state.is_up())
}

fn split_up(config: &Config, backends: Vec<usize>) -> (Vec<usize>, Vec<usize>) {
    backends.into_iter().partition(|&b| config.backends[b].state.is_up())
}

/// Why a statement cannot be planned: a 400 for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

/// Plans one classified statement.
pub fn plan(config: &Config, statement: &Statement) -> Result<Plan, PlanError> {
    let merge_show = || MergeKind::Show { limit: statement.limit, offset: statement.offset };
    match &statement.kind {
        Kind::Select | Kind::Explain { .. } => by_sources(config, statement, MergeKind::Series),
        Kind::Show(show) => match show {
            ShowKind::TagKeys | ShowKind::TagValues | ShowKind::FieldKeys | ShowKind::Series
                if !statement.sources.is_empty() =>
            {
                by_sources(config, statement, merge_show())
            }
            ShowKind::Measurements if !statement.sources.is_empty() => by_sources(config, statement, merge_show()),
            ShowKind::Databases
            | ShowKind::Measurements
            | ShowKind::RetentionPolicies
            | ShowKind::TagKeys
            | ShowKind::TagValues
            | ShowKind::FieldKeys
            | ShowKind::Series => {
                let (backends, skipped) = all_readable(config);
                Ok(Plan::Merge { backends, skipped, kind: merge_show() })
            }
            // Cardinalities, users, stats, ...: one backend's view.
            _ if !statement.sources.is_empty() => by_sources(config, statement, merge_show()),
            _ => Ok(Plan::One(read_candidates(config, 0..config.backends.len()))),
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
        Kind::Other(_) => Ok(Plan::One(read_candidates(config, 0..config.backends.len()))),
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

/// Plans a read by the measurements it names.
fn by_sources(config: &Config, statement: &Statement, merge: MergeKind) -> Result<Plan, PlanError> {
    if statement.sources.is_empty() {
        return Ok(Plan::One(read_candidates(config, 0..config.backends.len())));
    }
    let regex = statement.sources.iter().any(|s| matches!(s, Source::Regex { .. }));
    if regex {
        let (backends, skipped) = all_readable(config);
        return Ok(Plan::Merge { backends, skipped, kind: merge });
    }
    let mut sets = Vec::with_capacity(statement.sources.len());
    for s in &statement.sources {
        let set = read_candidates(config, holders(config, s)?);
        if set.is_empty() {
            return Err(PlanError(format!("no readable backend holds {}", source_name(s))));
        }
        sets.push(set);
    }
    let common: Vec<usize> = sets[0].iter().copied().filter(|b| sets[1..].iter().all(|s| s.contains(b))).collect();
    if !common.is_empty() {
        return Ok(Plan::One(common));
    }
    // Measurements on different backends: one holder of each (preferring ones already picked).
    let mut picked: Vec<usize> = Vec::new();
    for set in &sets {
        if !set.iter().any(|b| picked.contains(b)) {
            picked.push(set[0]);
        }
    }
    let (backends, skipped) = split_up(config, picked);
    Ok(Plan::Merge { backends, skipped, kind: merge })
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
        plan(c, &classify(q).unwrap()).unwrap()
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
    fn split_sources_and_regexes_merge() {
        let c = config();
        assert_eq!(
            p(&c, "SELECT v FROM cpu, mem WHERE time > 0"),
            Plan::Merge { backends: vec![1, 2], skipped: vec![], kind: MergeKind::Series }
        );
        assert_eq!(
            p(&c, "SELECT v FROM /c.*/ WHERE time > 0"),
            Plan::Merge { backends: vec![0, 1, 2], skipped: vec![], kind: MergeKind::Series }
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
                kind: MergeKind::Show { limit: Some(10), offset: Some(2) }
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
                    Planned { text: t, plan: plan(&c, &s).unwrap(), statement: s }
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
        let e = plan(&c, &classify("SELECT v FROM mem WHERE time > 0").unwrap()).unwrap_err();
        assert!(e.0.contains("\"mem\""), "{e:?}");
    }
}
