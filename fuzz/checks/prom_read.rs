//! Checks for the `prom_read` fuzz target: the `ReadRequest` and `ReadResponse` decoders, their
//! encoders, and `query::prom_read::merge`.
//!
//! The input is taken as a `ReadRequest`, and as a `ReadResponse`. Whatever it is: no panic. A request
//! that decodes gives queries whose `raw` bytes lie inside the input; a request rebuilt from them (one
//! `read_request_of` per query, as the proxy sends them) decodes to the same queries. A response that
//! decodes, encoded again, decodes to the same results (values compared bit for bit), and encoding is
//! stable from then on. Merging the results as answers to one query keeps every (label set, time) of
//! the inputs, gives each label set once, and each series' times strictly increasing.
//!
//! Shared by `fuzz/fuzz_targets/prom_read.rs` and `tests/fuzz_regressions.rs`: public API only.

use std::collections::BTreeSet;

use influx_proxy::prom::{self, LabelSet, OwnedSeries};
use influx_proxy::query::prom_read::merge;

pub fn run(data: &[u8]) {
    if let Ok(queries) = prom::decode_read_request(data) {
        let range = data.as_ptr_range();
        let mut rebuilt = Vec::new();
        for q in &queries {
            let r = q.raw.as_ptr_range();
            assert!(q.raw.is_empty() || (range.start <= r.start && r.end <= range.end), "raw outside the input");
            rebuilt.extend_from_slice(&prom::read_request_of(q.raw));
        }
        let again = prom::decode_read_request(&rebuilt).expect("a rebuilt request decodes");
        assert_eq!(again.len(), queries.len());
        for (a, b) in again.iter().zip(&queries) {
            assert_eq!((a.start_ms, a.end_ms, &a.matchers), (b.start_ms, b.end_ms, &b.matchers));
        }
    }

    let Ok(results) = prom::decode_read_response(data) else { return };
    let encoded = prom::encode_read_response(&results);
    let decoded = prom::decode_read_response(&encoded).expect("an encoded response decodes");
    assert!(same(&results, &decoded), "response changed by a round trip");
    assert!(prom::encode_read_response(&decoded) == encoded, "encoding is not stable");

    let answers: Vec<Vec<OwnedSeries>> = results;
    let mut want: BTreeSet<(LabelSet, i64)> = BTreeSet::new();
    for s in answers.iter().flatten() {
        let key = sorted(&s.labels);
        for x in &s.samples {
            want.insert((key.clone(), x.timestamp_ms));
        }
    }
    let merged = merge(answers);
    let mut got: BTreeSet<(LabelSet, i64)> = BTreeSet::new();
    let mut seen: BTreeSet<LabelSet> = BTreeSet::new();
    for s in &merged {
        let key = sorted(&s.labels);
        assert!(seen.insert(key.clone()), "label set twice in a merge");
        assert!(s.samples.windows(2).all(|w| w[0].timestamp_ms < w[1].timestamp_ms), "times not strictly increasing");
        for x in &s.samples {
            got.insert((key.clone(), x.timestamp_ms));
        }
    }
    assert!(got == want, "the merge lost or invented samples");
}

fn sorted(labels: &LabelSet) -> LabelSet {
    let mut l = labels.clone();
    l.sort();
    l
}

fn same(a: &[Vec<OwnedSeries>], b: &[Vec<OwnedSeries>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(s, t)| {
                    s.labels == t.labels
                        && s.samples.len() == t.samples.len()
                        && s.samples
                            .iter()
                            .zip(&t.samples)
                            .all(|(p, q)| p.value.to_bits() == q.value.to_bits() && p.timestamp_ms == q.timestamp_ms)
                })
        })
}
