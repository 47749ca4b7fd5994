//! Digests: what a backend holds of a measurement per time window or per series (point counts per
//! field, and sums of numeric fields when values are compared), read from `count(*)`/`sum(*)` answers,
//! and the choice of the participant that fills the others where digests differ.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Per-window (or per-series) digest of one backend: point counts per field, and sums per numeric field
/// when the job compares values.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Digest {
    counts: BTreeMap<String, i64>,
    sums: BTreeMap<String, f64>,
}

impl Digest {
    pub(super) fn from_row(columns: &[Value], row: &[Value]) -> Digest {
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
    pub(super) fn points(&self) -> u64 {
        self.counts.values().copied().max().unwrap_or(0).max(0) as u64
    }

    /// Same counts, and sums equal up to float rounding (sums of the same values in another order).
    pub(super) fn matches(&self, other: &Digest) -> bool {
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
    pub(super) fn covers(&self, other: &Digest) -> bool {
        other.counts.iter().all(|(f, n)| self.counts.get(f).copied().unwrap_or(0) >= *n)
    }
}

/// A series: its tags as `GROUP BY *` reports them (every tag key, `""` when absent), sorted.
pub(super) type SeriesTags = Vec<(String, String)>;

pub(super) fn tags_of(series: &Value) -> SeriesTags {
    let mut tags: SeriesTags = series
        .get("tags")
        .and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

pub(super) fn columns_values(series: &Value) -> (&[Value], &[Value]) {
    let cols = series.get("columns").and_then(Value::as_array).map_or(&[][..], |v| v);
    let vals = series.get("values").and_then(Value::as_array).map_or(&[][..], |v| v);
    (cols, vals)
}

/// Digests by key from an answer's series (rows without any count are left out).
pub(super) fn collect_digests<K: Ord>(
    series: &[Value],
    key: impl Fn(&Value, &[Value]) -> Option<K>,
) -> BTreeMap<K, Digest> {
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

/// For one window or series: the participant with the most points and the fill targets whose digest
/// differs from it. `None` when nobody has anything.
pub(super) fn differs(participants: &[usize], fill: &[usize], ds: &[Option<&Digest>]) -> Option<(usize, Vec<usize>)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
