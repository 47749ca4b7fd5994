//! Measurement → backends. Built once per config snapshot; the per-line cost is one hash lookup when the
//! measurement has its own keymap.
//!
//! Lookup order, as REDIS-SCHEMA.md fixes it: the exact name, then the longest keymap that is a prefix of
//! the name, then `_default_`. The original proxy took whichever prefix its map iteration met first; here
//! the longest wins, so the answer never depends on hash order. Every route also includes the node's
//! `nexts` backends; a measurement that matches nothing goes to the `nexts` alone, or nowhere.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Index of a route: a set of backend indices.
pub type RouteId = u32;

#[derive(Debug, Default)]
pub struct Routes {
    exact: HashMap<Box<[u8]>, RouteId, BuildHasherDefault<FxHasher>>,
    /// Distinct keymap lengths, longest first, for the prefix search.
    prefix_lens: Vec<usize>,
    default: Option<RouteId>,
    /// Route of a measurement nothing matches (the `nexts` alone), if there are `nexts`.
    fallback: Option<RouteId>,
    sets: Vec<Box<[u16]>>,
}

impl Routes {
    /// `keymaps`: (measurement or prefix, backend indices); `default_key` names the catch-all.
    pub fn build(keymaps: &[(&[u8], Vec<usize>)], default_key: &[u8], nexts: &[usize]) -> Routes {
        let mut routes = Routes::default();
        let add_set = |backends: &[usize], sets: &mut Vec<Box<[u16]>>| -> RouteId {
            let mut set: Vec<u16> = Vec::new();
            for &b in backends.iter().chain(nexts) {
                let b = u16::try_from(b).unwrap_or(u16::MAX);
                if !set.contains(&b) {
                    set.push(b);
                }
            }
            // Identical sets share an id, which keeps `sets` small and lets callers compare routes.
            if let Some(i) = sets.iter().position(|s| **s == *set) {
                return i as RouteId;
            }
            sets.push(set.into_boxed_slice());
            (sets.len() - 1) as RouteId
        };
        let mut sets = Vec::new();
        for (key, backends) in keymaps {
            let id = add_set(backends, &mut sets);
            if *key == default_key {
                routes.default = Some(id);
            } else {
                routes.exact.insert((*key).into(), id);
                if !routes.prefix_lens.contains(&key.len()) {
                    routes.prefix_lens.push(key.len());
                }
            }
        }
        if !nexts.is_empty() {
            routes.fallback = Some(add_set(&[], &mut sets));
        }
        routes.prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
        routes.sets = sets;
        routes
    }

    /// The route of a measurement, `None` when no backend takes it.
    #[inline]
    pub fn lookup(&self, measurement: &[u8]) -> Option<RouteId> {
        if let Some(&id) = self.exact.get(measurement) {
            return Some(id);
        }
        for &len in &self.prefix_lens {
            if len < measurement.len()
                && let Some(&id) = self.exact.get(&measurement[..len])
            {
                return Some(id);
            }
        }
        self.default.or(self.fallback)
    }

    /// Backend indices of a route.
    #[inline]
    pub fn backends(&self, route: RouteId) -> &[u16] {
        self.sets.get(route as usize).map_or(&[], |s| s)
    }

    /// Number of distinct routes (ids are `0..count`).
    pub fn count(&self) -> usize {
        self.sets.len()
    }
}

/// The multiply-rotate hash rustc uses: a few cycles for a short measurement name, where SipHash costs
/// tens of nanoseconds. Keys come from our own config, so hash flooding by clients is not a concern:
/// clients only ever look names up.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(nexts: &[usize]) -> Routes {
        let maps: Vec<(&[u8], Vec<usize>)> = vec![
            (b"cpu", vec![0]),
            (b"cpu_load", vec![1]),
            (b"cpu_load_short", vec![0, 1]),
            (b"disk", vec![1, 1]),
            (b"_default_", vec![2]),
        ];
        Routes::build(&maps, b"_default_", nexts)
    }

    fn lookup<'a>(r: &'a Routes, m: &str) -> &'a [u16] {
        r.lookup(m.as_bytes()).map_or(&[], |id| r.backends(id))
    }

    #[test]
    fn exact_then_longest_prefix_then_default() {
        let r = routes(&[]);
        assert_eq!(lookup(&r, "cpu"), [0]);
        assert_eq!(lookup(&r, "cpu_load"), [1]);
        assert_eq!(lookup(&r, "cpu_load_short"), [0, 1]);
        assert_eq!(lookup(&r, "cpu_load_shortish"), [0, 1]);
        assert_eq!(lookup(&r, "cpu_loads"), [1]);
        assert_eq!(lookup(&r, "cpux"), [0]);
        assert_eq!(lookup(&r, "cp"), [2]);
        assert_eq!(lookup(&r, "memory"), [2]);
        assert_eq!(lookup(&r, "disk"), [1], "duplicates in a keymap are removed");
    }

    #[test]
    fn nexts_join_every_route() {
        let r = routes(&[3, 0]);
        assert_eq!(lookup(&r, "cpu"), [0, 3]);
        assert_eq!(lookup(&r, "memory"), [2, 3, 0]);
    }

    #[test]
    fn unmatched_goes_to_nexts_or_nowhere() {
        let maps: Vec<(&[u8], Vec<usize>)> = vec![(b"cpu", vec![0])];
        let r = Routes::build(&maps, b"_default_", &[]);
        assert_eq!(r.lookup(b"mem"), None);
        let r = Routes::build(&maps, b"_default_", &[1]);
        assert_eq!(lookup(&r, "mem"), [1]);
        assert_eq!(lookup(&r, "cpu"), [0, 1]);
    }

    #[test]
    fn identical_sets_share_an_id() {
        let maps: Vec<(&[u8], Vec<usize>)> = vec![(b"a", vec![0, 1]), (b"b", vec![0, 1]), (b"c", vec![1])];
        let r = Routes::build(&maps, b"_default_", &[]);
        assert_eq!(r.lookup(b"a"), r.lookup(b"b"));
        assert_eq!(r.count(), 2);
    }
}
