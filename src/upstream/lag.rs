//! Replica lag: how far behind a backend is for one target (database, retention policy), so that reads
//! go to replicas that have caught up.
//!
//! A backend lags for a target while
//! * an outbox of this proxy holds data for that target older than a small bound (twice the backend's
//!   batch `interval`, at least [`MIN_LAG_BOUND`]),
//! * an outbox holds data recovered from disk at start (its target is not known without reading every
//!   record, so it counts for every target until delivered),
//! * an outbox has parked data for the target (its database or retention policy is missing), or
//! * a repair or rebalance job is copying into the backend for that target.
//!
//! Each outbox keeps a [`LagTracker`] (worker thread only) that learns when a batch is begun and when it
//! is acknowledged, and publishes only changes of "oldest pending batch of a target" into the backend's
//! shared [`LagBoard`] — once per batch, never per line. Readers (the planner, `/health`, `/metrics`)
//! ask the board.
//!
//! Memory is bounded: a tracker keeps at most [`MAX_BUCKETS`] time buckets per target; when a long outage
//! would need more, the two oldest are merged (keeping the older time), which can only overstate a lag.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::params::Params;

/// A backend never counts as lagging for data younger than this (a batch is sealed after `interval`
/// and its send takes a little while; below this, a read would flap between replicas).
pub const MIN_LAG_BOUND: Duration = Duration::from_secs(1);

/// Time buckets a tracker keeps per target.
const MAX_BUCKETS: usize = 64;
/// Batches begun this close together share a bucket.
const BUCKET_WIDTH: Duration = Duration::from_millis(100);

/// (database, retention policy); an empty rp is the database's default.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub db: String,
    pub rp: String,
}

impl Target {
    pub fn new(db: &str, rp: &str) -> Target {
        Target { db: db.to_string(), rp: rp.to_string() }
    }

    /// The target of an outbox record: its `db=..&rp=..&precision=..` query string.
    pub fn from_query(q: &[u8]) -> Target {
        let p = Params::parse(&String::from_utf8_lossy(q));
        Target::new(p.get("db").unwrap_or(""), p.get("rp").unwrap_or(""))
    }

    /// Whether data written to `self` can answer a read of `other`: same database, and the same
    /// retention policy or one of them the default (unknown here, so assumed to match).
    pub fn overlaps(&self, other: &Target) -> bool {
        self.db == other.db && (self.rp == other.rp || self.rp.is_empty() || other.rp.is_empty())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.rp.is_empty() { write!(f, "{}", self.db) } else { write!(f, "{}.{}", self.db, self.rp) }
    }
}

/// How far behind a backend is for a target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Age of the oldest data this proxy still has to deliver for the target.
    pub behind: Duration,
    /// Data for the target is parked (its database or rp is missing on the backend).
    pub parked: bool,
    /// A repair or rebalance job is copying into the backend for the target.
    pub copying: bool,
}

impl Lag {
    pub fn is_lagging(&self, bound: Duration) -> bool {
        self.parked || self.copying || self.behind > bound
    }

    /// Orders replicas from least to most behind: parked data and running copies are worse than any
    /// age, since how much is missing is unknown.
    pub fn rank(&self) -> (bool, Duration) {
        (self.parked || self.copying, self.behind)
    }
}

/// The bound past which a backend with batch interval `interval` lags.
pub fn bound(interval: Duration) -> Duration {
    (interval * 2).max(MIN_LAG_BOUND)
}

#[derive(Debug, Default)]
struct Inner {
    /// (worker, record target bytes) → the target and when its oldest pending batch was begun. Keyed
    /// by the raw bytes: `db=x` and `db=x&precision=s` are one `Target` but separate queues.
    pending: HashMap<(usize, Vec<u8>), (Target, Instant)>,
    /// Worker → since when it holds recovered data of unknown target.
    recovered: HashMap<usize, Instant>,
    parked: HashSet<(usize, Target)>,
    /// Jobs copying into the backend, per target.
    copying: HashMap<Target, u32>,
}

/// The shared lag state of one backend (lives in `BackendState`).
#[derive(Debug, Default)]
pub struct LagBoard {
    inner: Mutex<Inner>,
}

impl LagBoard {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The backend's lag for reads of `target` at `now`.
    pub fn lag(&self, target: &Target, now: Instant) -> Lag {
        self.with(|i| {
            let oldest = i
                .pending
                .values()
                .filter(|(t, _)| t.overlaps(target))
                .map(|&(_, since)| since)
                .chain(i.recovered.values().copied())
                .min();
            Lag {
                behind: oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                parked: i.parked.iter().any(|(_, t)| t.overlaps(target)),
                copying: i.copying.iter().any(|(t, &n)| n > 0 && t.overlaps(target)),
            }
        })
    }

    /// The worst lag over every target (for `/health` and `/metrics`).
    pub fn summary(&self, now: Instant) -> (Lag, Vec<String>) {
        self.with(|i| {
            let oldest = i.pending.values().map(|&(_, t)| t).chain(i.recovered.values().copied()).min();
            let mut parked: Vec<String> = i.parked.iter().map(|(_, t)| t.to_string()).collect();
            parked.sort();
            parked.dedup();
            let lag = Lag {
                behind: oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                parked: !parked.is_empty(),
                copying: i.copying.values().any(|&n| n > 0),
            };
            (lag, parked)
        })
    }

    /// A job starts (`true`) or stops copying into the backend for `target`.
    pub fn set_copying(&self, target: &Target, on: bool) {
        self.with(|i| {
            let n = i.copying.entry(target.clone()).or_insert(0);
            if on {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    i.copying.remove(target);
                }
            }
        });
    }

    fn set_pending(&self, worker: usize, raw: &[u8], target: &Target, oldest: Option<Instant>) {
        self.with(|i| match oldest {
            Some(t) => {
                i.pending.insert((worker, raw.to_vec()), (target.clone(), t));
            }
            None => {
                i.pending.remove(&(worker, raw.to_vec()));
            }
        });
    }

    fn set_recovered(&self, worker: usize, since: Option<Instant>) {
        self.with(|i| match since {
            Some(t) => {
                i.recovered.insert(worker, t);
            }
            None => {
                i.recovered.remove(&worker);
            }
        });
    }

    fn set_parked(&self, worker: usize, targets: Vec<Target>) {
        self.with(|i| {
            i.parked.retain(|(w, _)| *w != worker);
            i.parked.extend(targets.into_iter().map(|t| (worker, t)));
        });
    }
}

#[derive(Debug)]
struct Pending {
    target: Target,
    /// (when begun, batches) oldest first.
    buckets: VecDeque<(Instant, u64)>,
}

/// The lag bookkeeping of one outbox (one worker, one backend).
#[derive(Debug)]
pub struct LagTracker {
    worker: usize,
    /// By the raw target bytes of the outbox records.
    targets: HashMap<Vec<u8>, Pending>,
    /// Batches recovered from disk at start and not yet delivered.
    recovered: u64,
}

impl LagTracker {
    pub fn new(worker: usize) -> LagTracker {
        LagTracker { worker, targets: HashMap::new(), recovered: 0 }
    }

    /// `batches` of unknown target were recovered from disk.
    pub fn recovered(&mut self, board: &LagBoard, batches: u64, now: Instant) {
        self.recovered = batches;
        board.set_recovered(self.worker, (batches > 0).then_some(now));
    }

    /// A batch for `target` (the record's query string) was begun at `now`.
    pub fn begun(&mut self, board: &LagBoard, target: &[u8], now: Instant) {
        let p = self
            .targets
            .entry(target.to_vec())
            .or_insert_with(|| Pending { target: Target::from_query(target), buckets: VecDeque::new() });
        let first = p.buckets.is_empty();
        match p.buckets.back_mut() {
            Some((t, n)) if now.saturating_duration_since(*t) < BUCKET_WIDTH => *n += 1,
            _ => p.buckets.push_back((now, 1)),
        }
        if p.buckets.len() > MAX_BUCKETS
            && let Some((oldest, n)) = p.buckets.pop_front()
            && let Some(front) = p.buckets.front_mut()
        {
            // Keep the older time: the merged bucket may overstate the lag, never understate it.
            *front = (oldest, front.1 + n);
        }
        if first {
            board.set_pending(self.worker, target, &p.target, Some(now));
        }
    }

    /// The oldest pending batch of `target` left the main log (delivered, dropped, or parked);
    /// `recovered` when it came from data recovered at start.
    pub fn done(&mut self, board: &LagBoard, target: &[u8], recovered: bool) {
        if recovered && self.recovered > 0 {
            self.recovered -= 1;
            if self.recovered == 0 {
                board.set_recovered(self.worker, None);
            }
            return;
        }
        let Some(p) = self.targets.get_mut(target) else { return };
        let before = p.buckets.front().map(|b| b.0);
        if let Some(front) = p.buckets.front_mut() {
            front.1 = front.1.saturating_sub(1);
            if front.1 == 0 {
                p.buckets.pop_front();
            }
        }
        let after = p.buckets.front().map(|b| b.0);
        if after != before {
            board.set_pending(self.worker, target, &p.target, after);
        }
        if p.buckets.is_empty() {
            self.targets.remove(target);
        }
    }

    /// The set of parked targets of this outbox changed.
    pub fn parked<'a>(&self, board: &LagBoard, targets: impl Iterator<Item = &'a [u8]>) {
        board.set_parked(self.worker, targets.map(Target::from_query).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_batches_age_until_delivered() {
        let board = LagBoard::default();
        let mut t = LagTracker::new(0);
        let start = Instant::now();
        let cpu = Target::new("db", "");
        t.begun(&board, b"db=db&precision=ns", start);
        t.begun(&board, b"db=db&precision=ns", start + Duration::from_secs(3));
        assert_eq!(board.lag(&cpu, start + Duration::from_secs(5)).behind, Duration::from_secs(5));
        assert!(board.lag(&cpu, start + Duration::from_secs(5)).is_lagging(bound(Duration::from_millis(50))));
        assert_eq!(board.lag(&Target::new("other", ""), start + Duration::from_secs(5)), Lag::default());
        t.done(&board, b"db=db&precision=ns", false);
        assert_eq!(board.lag(&cpu, start + Duration::from_secs(5)).behind, Duration::from_secs(2));
        t.done(&board, b"db=db&precision=ns", false);
        assert_eq!(board.lag(&cpu, start + Duration::from_secs(5)), Lag::default());
    }

    #[test]
    fn recovered_parked_and_copying_lag_every_matching_target() {
        let board = LagBoard::default();
        let mut t = LagTracker::new(1);
        let now = Instant::now();
        t.recovered(&board, 2, now);
        assert!(board.lag(&Target::new("x", ""), now + Duration::from_secs(2)).behind >= Duration::from_secs(2));
        t.done(&board, b"db=x", true);
        t.done(&board, b"db=x", true);
        assert_eq!(board.lag(&Target::new("x", ""), now), Lag::default());
        t.parked(&board, [&b"db=a&rp=r1"[..]].into_iter());
        assert!(board.lag(&Target::new("a", "r1"), now).parked);
        assert!(board.lag(&Target::new("a", ""), now).parked, "the default rp may be r1");
        assert!(!board.lag(&Target::new("a", "r2"), now).parked);
        t.parked(&board, std::iter::empty());
        assert!(!board.lag(&Target::new("a", "r1"), now).parked);
        board.set_copying(&Target::new("a", ""), true);
        assert!(board.lag(&Target::new("a", "r1"), now).copying);
        board.set_copying(&Target::new("a", ""), false);
        assert!(!board.lag(&Target::new("a", "r1"), now).copying);
    }

    #[test]
    fn targets_that_differ_only_in_precision_queue_apart() {
        let board = LagBoard::default();
        let mut t = LagTracker::new(0);
        let now = Instant::now();
        t.begun(&board, b"db=d", now);
        t.begun(&board, b"db=d&precision=s", now);
        t.done(&board, b"db=d&precision=s", false);
        assert_eq!(board.lag(&Target::new("d", ""), now + Duration::from_secs(2)).behind, Duration::from_secs(2));
    }

    #[test]
    fn buckets_stay_bounded_and_never_understate() {
        let board = LagBoard::default();
        let mut t = LagTracker::new(0);
        let start = Instant::now();
        for i in 0..1000u64 {
            t.begun(&board, b"db=d", start + Duration::from_secs(i));
        }
        assert!(t.targets[&b"db=d"[..]].buckets.len() <= MAX_BUCKETS);
        let at = start + Duration::from_secs(1000);
        assert_eq!(board.lag(&Target::new("d", ""), at).behind, Duration::from_secs(1000));
        for _ in 0..999 {
            t.done(&board, b"db=d", false);
        }
        assert_eq!(board.lag(&Target::new("d", ""), at).behind, Duration::from_secs(1));
        t.done(&board, b"db=d", false);
        assert_eq!(board.lag(&Target::new("d", ""), at), Lag::default());
    }
}
