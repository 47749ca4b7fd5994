//! Checks for the `lines` fuzz target: `Lines` over a line-protocol body, and `Line::measurement`.
//!
//! The input is the body. Every line (good or bad) must be a non-empty subslice of the body, after
//! the previous one; none starts with a blank (space, tab, NUL) or `#`; each ends where the body
//! ends or right before `\n` or `\r\n` (so a text ends with `\r` only when the body had `\r\r`: the
//! module drops one `\r`, as InfluxDB does); together they are never longer than the body. A good
//! line's measurement is non-empty and no longer than as written. For a body with no `"` and no
//! `\` (no quoting, no escapes), the lines are exactly a plain split on `\n`.
//!
//! Shared by `fuzz/fuzz_targets/lines.rs` and `tests/fuzz_regressions.rs`: public API only.

use influx_proxy::write::lineproto::Lines;

pub fn run(data: &[u8]) {
    let base = data.as_ptr() as usize;
    let mut scratch = Vec::new();
    let mut texts: Vec<&[u8]> = Vec::new();
    let mut prev_end = 0;
    let mut total = 0;
    for item in Lines::new(data) {
        let text = match item {
            Ok(line) => {
                let text = line.text;
                assert!(
                    line.measurement_len > 0 && line.measurement_len <= text.len(),
                    "measurement_len {} in a line of {} bytes",
                    line.measurement_len,
                    text.len()
                );
                let m = line.measurement(&mut scratch);
                assert!(!m.is_empty() && m.len() <= line.measurement_len, "measurement {m:?}");
                if !line.measurement_escaped {
                    assert_eq!(m, &text[..line.measurement_len]);
                    assert!(!m.contains(&b',') && !m.contains(&b' '), "unescaped measurement {m:?}");
                }
                text
            }
            Err(bad) => {
                assert!(!bad.error.to_string().is_empty());
                bad.text
            }
        };
        let start = (text.as_ptr() as usize).wrapping_sub(base);
        assert!(start <= data.len() && text.len() <= data.len() - start, "text outside the body");
        let end = start + text.len();
        assert!(start >= prev_end, "line at {start} overlaps the previous one (ends at {prev_end})");
        prev_end = end;
        total += text.len();

        assert!(!text.is_empty(), "empty line returned at {start}");
        assert!(!matches!(text[0], b' ' | b'\t' | 0), "line at {start} starts with a blank");
        assert_ne!(text[0], b'#', "comment returned at {start}");
        let rest = &data[end..];
        let after_cr = rest.strip_prefix(b"\r").unwrap_or(rest);
        assert!(
            after_cr.is_empty() || after_cr[0] == b'\n',
            "line at {start}..{end} ends neither at a newline nor at the end of the body"
        );
        if text.ends_with(b"\r") {
            assert!(rest.starts_with(b"\r"), "line at {start} keeps the \\r of its \\r\\n");
        }
        texts.push(text);
    }
    assert!(total <= data.len());

    if !data.contains(&b'"') && !data.contains(&b'\\') {
        let want: Vec<&[u8]> = data
            .split(|&b| b == b'\n')
            .filter_map(|raw| {
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let first = raw.iter().position(|&b| !matches!(b, b' ' | b'\t' | 0))?;
                Some(&raw[first..]).filter(|t| t[0] != b'#')
            })
            .collect();
        assert_eq!(texts, want, "lines of a body without quotes or escapes");
    }
}
