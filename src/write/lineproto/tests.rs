use super::*;

type Parsed = Result<(String, String, bool), (String, String)>;

fn lines_in(body: &str, precision: Option<&str>) -> Vec<Parsed> {
    let mut scratch = Vec::new();
    Lines::with_precision(body.as_bytes(), precision)
        .map(|r| match r {
            Ok(l) => Ok((
                String::from_utf8_lossy(l.text).into_owned(),
                String::from_utf8_lossy(l.measurement(&mut scratch)).into_owned(),
                l.has_timestamp,
            )),
            Err(b) => Err((String::from_utf8_lossy(b.text).into_owned(), b.error.to_string())),
        })
        .collect()
}

fn lines(body: &str) -> Vec<Parsed> {
    lines_in(body, None)
}

fn ok(text: &str, m: &str, ts: bool) -> Parsed {
    Ok((text.into(), m.into(), ts))
}

/// The reason InfluxDB gives for a one-line body, or "" when it takes the line.
fn reason(line: &str) -> String {
    match lines(line).as_slice() {
        [Ok(_)] => String::new(),
        [Err((_, e))] => e.clone(),
        other => panic!("{line:?} gave {other:?}"),
    }
}

#[test]
fn plain_lines() {
    assert_eq!(
        lines("cpu,host=a value=1 1700000000\nmem free=2i\n"),
        vec![ok("cpu,host=a value=1 1700000000", "cpu", true), ok("mem free=2i", "mem", false)]
    );
}

#[test]
fn blank_comment_crlf_and_leading_space() {
    let body = "\n   \n# comment\n  # indented comment\r\ncpu v=1 10\r\n\t disk v=2\r\n\r\n  \r\n";
    assert_eq!(lines(body), vec![ok("cpu v=1 10", "cpu", true), ok("disk v=2", "disk", false)]);
    assert_eq!(lines("cpu v=1\r"), vec![ok("cpu v=1", "cpu", false)]);
}

#[test]
fn trailing_blanks_are_not_a_timestamp() {
    assert_eq!(lines("cpu v=1   \n"), vec![ok("cpu v=1   ", "cpu", false)]);
    assert_eq!(lines("cpu  v=1   5\n"), vec![ok("cpu  v=1   5", "cpu", true)]);
    assert_eq!(lines("cpu v=1 5   \n"), vec![ok("cpu v=1 5   ", "cpu", true)]);
}

#[test]
fn newline_inside_a_quoted_string_field() {
    let body = "log,host=a msg=\"line one\nline two\" 5\nnext v=1\n";
    assert_eq!(
        lines(body),
        vec![ok("log,host=a msg=\"line one\nline two\" 5", "log", true), ok("next v=1", "next", false)]
    );
    assert_eq!(lines("log msg=\"a b\"\n"), vec![ok("log msg=\"a b\"", "log", false)]);
    assert_eq!(lines("log msg=\"a b\" 7"), vec![ok("log msg=\"a b\" 7", "log", true)]);
}

#[test]
fn quotes_in_keys_are_literal() {
    assert_eq!(lines("c\"pu,t=\"x v=1\nm v=2\n"), vec![ok("c\"pu,t=\"x v=1", "c\"pu", false), ok("m v=2", "m", false)]);
    assert_eq!(reason("cpu \"v\"=1"), "");
}

#[test]
fn escaped_newline_continues_the_line() {
    assert_eq!(lines("cpu,t=a\\\nb v=1\nm v=1"), vec![ok("cpu,t=a\\\nb v=1", "cpu", false), ok("m v=1", "m", false)]);
}

#[test]
fn escaped_measurement_names() {
    assert_eq!(lines("my\\ m\\,x,t=1 v=1\n"), vec![ok("my\\ m\\,x,t=1 v=1", "my m,x", false)]);
    assert_eq!(lines("a=b v=1\n"), vec![ok("a=b v=1", "a=b", false)]);
    assert_eq!(lines("a\\\"b v=1\n"), vec![ok("a\\\"b v=1", "a\\\"b", false)]);
    // A byte after a backslash never ends the measurement, even after `\\`: InfluxDB's rule.
    assert_eq!(lines("a\\\\,b=c v=1\n"), vec![ok("a\\\\,b=c v=1", "a\\,b=c", false)]);
}

#[test]
fn escaped_quote_in_string_value() {
    assert_eq!(lines("m s=\"say \\\"hi\\\"\" 1\n"), vec![ok("m s=\"say \\\"hi\\\"\" 1", "m", true)]);
}

#[test]
fn the_reasons_influxd_gives() {
    // Each case was sent to influxd 1.6.7; tests/line_validation.rs asks a live one for many more.
    for (line, want) in [
        ("cpu", "missing fields"),
        ("cpu,host=a", "missing fields"),
        ("cpu ", "invalid field format"),
        (",t=1 v=1", "missing measurement"),
        ("m s=\"open", "unbalanced quotes"),
        ("cpu value=", "missing field value"),
        ("cpu value=1 notatime", "bad timestamp"),
        ("cpu value=1i2", "invalid number"),
        ("cpu value=tru", "invalid boolean"),
        ("cpu,host= value=1", "missing tag value"),
        ("cpu value=1 123 456", "point is invalid"),
        ("cpu value=1,", "invalid field format"),
        ("cpu,=x value=1", "missing tag key"),
        ("cpu, v=1", "missing tag key"),
        ("cpu,a v=1", "missing tag value"),
        ("cpu,a=b=c v=1", "invalid tag format"),
        ("cpu,a=1,a=2 v=1", "duplicate tags"),
        ("cpu,b=1,a=2,b=3 v=1", "duplicate tags"),
        ("cpu =1", "missing field key"),
        ("cpu v=1,=2", "missing field key"),
        ("cpu v", "invalid field format"),
        ("cpu v=1u", "invalid number"),
        ("cpu v=NaN", "invalid number"),
        ("cpu v=-Inf", "invalid number"),
        ("cpu v=Inf", "invalid boolean"),
        ("cpu v=+1", "invalid boolean"),
        ("cpu v=tRUE", "invalid boolean"),
        ("cpu v=1e400", "invalid float"),
        ("cpu v=.e5", "invalid float"),
        ("cpu v=1ee5", "invalid float"),
        ("cpu v=1e+-5", "invalid number"),
        ("cpu v=.", "invalid number"),
        ("cpu v=-i", "invalid number"),
        ("cpu v=1.2.3,w=t", "invalid number"),
        ("cpu v=\"x\"y=1", "invalid field format"),
        ("cpu v=1 5-", "bad timestamp"),
        ("cpu v=1 123\t", "bad timestamp"),
        ("cpu,a=b\\ v=1", "invalid tag format"),
        ("cpu v=1\\", "invalid number"),
        ("cpu v=\"a\\", "unbalanced quotes"),
        (
            "cpu value=99999999999999999999i",
            "unable to parse integer 99999999999999999999: strconv.ParseInt: parsing \"99999999999999999999\": value out of range",
        ),
        (
            "cpu v=-9223372036854775809i",
            "unable to parse integer -9223372036854775809: strconv.ParseInt: parsing \"-9223372036854775809\": value out of range",
        ),
        ("cpu value=1 99999999999999999999", "strconv.ParseInt: parsing \"99999999999999999999\": value out of range"),
        ("cpu value=1 -", "strconv.ParseInt: parsing \"-\": invalid syntax"),
        ("cpu v=1 9223372036854775807", "time outside range -9223372036854775806 - 9223372036854775806"),
        ("cpu v=1 -9223372036854775807", "time outside range -9223372036854775806 - 9223372036854775806"),
    ] {
        assert_eq!(reason(line), want, "{line:?}");
    }
}

#[test]
fn what_influxd_takes() {
    for line in [
        "cpu value=1,value=2",
        "cpu  value=2",
        "cpu \t=1",
        "cpu,a==b v=1",
        "cpu v=1e-400",
        "cpu v=1.",
        "cpu v=-.5",
        "cpu v=1.e5",
        "cpu v=1E+5",
        "cpu v=\"x\"y",
        "cpu v=t,w=T,x=true,y=True,z=TRUE",
        "cpu v=f,w=F,x=false,y=False,z=FALSE",
        "cpu v=1 123 ",
        "cpu v=1 \t123",
        "cpu  v=1  1  ",
        "cpu v=1 -5",
        "cpu v=00000000000000000000000000001i",
        "cpu v=-9223372036854775808i",
        "cpu v=9223372036854775807i",
        "cpu v=1 9223372036854775806",
        "cpu v=1 -9223372036854775806",
        "a\\\\,b=c v=1",
        "cpu\\ x v=1",
        "cpu,b=1,a=2 v=1",
    ] {
        assert_eq!(reason(line), "", "{line:?}");
    }
}

#[test]
fn precision_scales_the_time_range() {
    let r = |line: &str, p: &str| match lines_in(line, Some(p)).as_slice() {
        [Ok(_)] => String::new(),
        [Err((_, e))] => e.clone(),
        other => panic!("{other:?}"),
    };
    let outside = "time outside range -9223372036854775806 - 9223372036854775806";
    assert_eq!(r("cpu v=1 9223372036854", "ms"), "");
    assert_eq!(r("cpu v=1 9223372036855", "ms"), outside);
    assert_eq!(r("cpu v=1 9223372036855", "us"), "", "influxd reads `us` as nanoseconds");
    assert_eq!(r("cpu v=1 9223372036854776", "u"), outside);
    assert_eq!(r("cpu v=1 2562047", "h"), "");
    assert_eq!(r("cpu v=1 2562048", "h"), outside);
}

#[test]
fn key_length_limits() {
    let key = format!("m,t={}", "a".repeat(65520));
    assert_eq!(key.len(), 65524);
    assert_eq!(reason(&format!("{key} vv=1")), "");
    let long = format!("{key}aaaaaaaa v=1 x");
    assert_eq!(reason(&long), "max key length exceeded: 65537 > 65535");
    let longer = format!("{key}aaaaaaaaaaaa v=1");
    assert_eq!(reason(&longer), "max key length exceeded: 65536 > 65535");
    // The same with an escape, through the careful path.
    assert_eq!(reason(&format!("{key}\\ aaaaaa v=1 x")), "max key length exceeded: 65537 > 65535");
    assert_eq!(reason(&format!("{key} {}=1", "f".repeat(8))), "max key length exceeded: 65536 > 65535");
}

#[test]
fn many_unsorted_tags_find_duplicates() {
    let mut tags: Vec<String> = (0..100).rev().map(|i| format!("k{i}=v")).collect();
    let good = format!("m,{} v=1", tags.join(","));
    assert_eq!(reason(&good), "");
    tags.push("k42=w".into());
    assert_eq!(reason(&format!("m,{} v=1", tags.join(","))), "duplicate tags");
}

#[test]
fn a_string_open_to_the_end_of_the_body_is_quoted_without_its_last_newline() {
    // The unclosed quote takes the newlines in; influxd quotes the block without the last one.
    assert_eq!(lines("m v=\"open\nm v=1\n"), vec![Err(("m v=\"open\nm v=1".into(), "unbalanced quotes".into()))]);
}

#[test]
fn several_lines_and_errors_keep_their_text() {
    let got = lines("cpu v=1\n cpu v=\ncpu v=2 x\r\nmem v=3");
    assert_eq!(
        got,
        vec![
            ok("cpu v=1", "cpu", false),
            Err(("cpu v=".into(), "missing field value".into())),
            Err(("cpu v=2 x".into(), "bad timestamp".into())),
            ok("mem v=3", "mem", false),
        ]
    );
}

#[test]
fn a_special_byte_far_ahead_keeps_fast_lines_fast() {
    let mut body = String::new();
    for i in 0..100 {
        body.push_str(&format!("m{i} v={i} {i}\n"));
    }
    body.push_str("q s=\"x\ny\"\n");
    let got = lines(&body);
    assert_eq!(got.len(), 101);
    assert_eq!(got[100], ok("q s=\"x\ny\"", "q", false));
}

#[test]
fn fast_and_careful_paths_agree() {
    // Each line alone, followed by a line with a quote (which changes how far the fast walk sees), and
    // followed by a longer line (the fast path reads values 16 bytes at a time, so it only runs where
    // that many bytes follow).
    let samples = [
        "cpu,host=a,region=b usage=1.5,idle=2i,ok=t 1700000000000000000",
        "cpu,b=1,a=2 v=1",
        // Repeated tag keys, side by side and apart; distinct keys the fast path files under one bit.
        "cpu,host=1,host=2 v=1",
        "cpu,a=1,b=2,a=3 v=1",
        "cpu,abc=1,axc=2 v=1",
        "cpu,t0=a,t1=a,t2=a,t3=a,t4=a,t5=a,t6=a,t7=a,t8=a,t9=a,ta=a,tb=a,tc=a,td=a,t7=b v=1",
        // A `\` or `"` ends the fast walk: read as ordinary bytes they would hide an escape or a string.
        "cpu,a=1\\,b=2 v=1",
        "cpu\\ x,a=b v=1",
        "cpu v=1,w=\"a b\" 1700000000000000000",
        "cpu v=\"a=1,b\" 1",
        "cpu v=1 123 456",
        "cpu,a=b v=1e5,w=-3 -5",
        "cpu v=tru",
        "cpu,a=1 v=1\r",
        "cpu v=1 1\r",
        "cpu,a v=1",
        "cpu v=1,",
        "x",
    ];
    // Many tags: the fast path compares keys that share a mask bit, up to 32 tags, and leaves more to
    // the other paths.
    let many = |n: usize, repeat: Option<(usize, usize)>| {
        let key = |k: usize| repeat.filter(|&(_, to)| to == k).map_or(k, |(from, _)| from);
        let tags: String = (0..n).map(|k| format!(",k{}=v", key(k))).collect();
        format!("cpu{tags} v=1 1700000000000000000")
    };
    let many =
        [many(20, None), many(20, Some((3, 17))), many(32, Some((0, 31))), many(40, None), many(40, Some((5, 39)))];
    for line in samples.iter().copied().chain(many.iter().map(String::as_str)) {
        let mut tag_keys = Vec::new();
        let text = line.strip_suffix('\r').unwrap_or(line).as_bytes();
        let want = parse_point(text, 1, &mut tag_keys).map(|l| l.measurement_len).map_err(|e| e.to_string());
        let followed = [format!("{line}\nq s=\"x\"\n"), format!("{line}\nmem used=1i,free=2i 1700000000000000000\n")];
        for body in [line.to_string(), format!("{line}\n")].into_iter().chain(followed) {
            let got = Lines::new(body.as_bytes())
                .next()
                .map(|r| r.map(|l| l.measurement_len).map_err(|b| b.error.to_string()));
            assert_eq!(got, Some(want.clone()), "{body:?}");
        }
    }
}

#[test]
fn odd_bytes_never_panic() {
    for body in [
        "\\",
        "\"",
        "m \"",
        "m v=\"\\",
        "\\\n\\\n",
        "m v=1 \\",
        "\0\0\n",
        "m,\\",
        "m,a=\\",
        "m,a=b \\",
        "m v=-",
        "m v=1e",
        "\r",
        "\r\r",
        "m v=1\r\r",
        ",",
        "m,",
        "m v=\"",
        "m v=\"\\\"",
        " m=\"x\ny\"",
    ] {
        let _ = lines(body);
    }
}
