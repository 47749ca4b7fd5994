//! Checks for the `influxql` fuzz target: `split_statements` and `classify` on the input read as
//! UTF-8 (lossily).
//!
//! Statements are non-empty, trimmed subslices of the query, in order, not overlapping. `classify`
//! (of each statement and of the whole text) never panics; its error positions and LIMIT/OFFSET
//! spans are byte offsets into the statement on char boundaries; and the statement with its outer
//! LIMIT/OFFSET removed, as the planner sends it to backends, classifies again to the same
//! statement without LIMIT/OFFSET (the policy judged what the backends run).
//!
//! Shared by `fuzz/fuzz_targets/influxql.rs` and `tests/fuzz_regressions.rs`: public API only.

use influx_proxy::query::influxql::{Statement, classify, split_statements};

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let q: &str = &text;
    let base = q.as_ptr() as usize;
    let mut prev_end = 0;
    for st in split_statements(q) {
        let start = (st.as_ptr() as usize).wrapping_sub(base);
        assert!(start <= q.len() && st.len() <= q.len() - start, "statement outside the query");
        assert!(start >= prev_end, "statement at {start} overlaps the previous one");
        prev_end = start + st.len();
        assert!(!st.is_empty(), "empty statement at {start}");
        assert_eq!(st, st.trim_matches(is_space), "untrimmed statement at {start}");
        statement(st);
    }
    statement(q);
}

/// The whitespace the lexer skips between tokens.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn statement(s: &str) {
    let st = match classify(s) {
        Ok(st) => st,
        Err(e) => {
            assert!(e.position <= s.len() && s.is_char_boundary(e.position), "error position {e:?} in {s:?}");
            assert!(!e.message.is_empty());
            return;
        }
    };
    for span in &st.limit_offset_spans {
        assert!(span.start <= span.end && s.get(span.clone()).is_some(), "span {span:?} in {s:?}");
    }
    let stripped = st.text_without_limit_offset(s);
    if st.limit_offset_spans.is_empty() {
        return;
    }
    let again = classify(&stripped)
        .unwrap_or_else(|e| panic!("{s:?} without LIMIT/OFFSET is {stripped:?}, which does not classify: {e}"));
    assert_eq!((again.limit, again.offset), (None, None), "{s:?} without LIMIT/OFFSET is {stripped:?}");
    assert_eq!(
        same_meaning(&st),
        same_meaning(&again),
        "{s:?} (left) without LIMIT/OFFSET is {stripped:?} (right), which means something else"
    );
}

/// Everything the policy and the planner look at, except the outer LIMIT/OFFSET.
fn same_meaning(st: &Statement) -> impl PartialEq + std::fmt::Debug + '_ {
    (&st.kind, &st.sources, st.has_subquery, st.has_time_condition, st.select_star, st.into, &st.on_db)
}
