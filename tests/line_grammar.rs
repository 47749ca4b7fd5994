//! The proxy's verdict on generated lines against the reference port of InfluxDB 1.6's parser (the
//! checks of the `line_verdict` fuzz target, `fuzz/checks/line_verdict.rs`).
//!
//! The fuzzer finds odd bytes; this test makes lines that are *almost* right in every way the quick
//! path (`lineproto::fast`) must tell apart: values of every length around its 16-byte window and its
//! 64-byte blocks, numbers with one byte wrong, timestamps at the edge of the storable range in every
//! precision, tags out of order and repeated, doubled or odd separators, a `\r`, a quote or backslash
//! somewhere ahead; one line in eight also gets a byte or two replaced or inserted
//! at random. Bodies are many lines long so lines start at every offset of a block. Deterministic
//! (a fixed seed), bounded (a few seconds).

#[path = "../fuzz/checks/line_verdict.rs"]
mod line_verdict;
mod util;

use util::rng::Rng;

/// `n` random decimal digits.
fn digits(r: &mut Rng, n: usize) -> String {
    (0..n).map(|_| char::from(b'0' + r.below(10) as u8)).collect()
}

const NAMES: [&str; 8] = ["cpu", "m", "disk_io", "a=b", "x,y", "", "net\\ x", "q\"r"];
const KEYS: [&str; 9] = ["host", "region", "cpu", "az", "a", "b", "h", "", "k\\=k"];
const ODD_VALUES: [&str; 24] = [
    "t",
    "T",
    "true",
    "True",
    "TRUE",
    "f",
    "false",
    "FALSE",
    "tru",
    "yes",
    "1e5",
    "-1.5E-3",
    "1e",
    "NaN",
    "1u",
    "1i2",
    "--1",
    "-",
    ".",
    "1..2",
    "\"s\"",
    "\"a b,c=d\"",
    "1.5i",
    "",
];
const TIMESTAMPS: [&str; 10] = [
    "9223372036854775806",
    "9223372036854775807",
    "-9223372036854775806",
    "-9223372036854775807",
    "9300000000",
    "9223372036",
    "-1",
    "0",
    "12a",
    "1 2",
];

fn number(r: &mut Rng) -> String {
    let mut v = String::new();
    if r.chance(4) {
        v.push('-');
    }
    // Lengths around the quick path's 16-byte window and InfluxDB's range-check lengths.
    let int = r.below(21);
    v.push_str(&digits(r, int));
    match r.below(4) {
        0 => v.push('i'),
        1 => {
            v.push('.');
            let frac = r.below(8);
            v.push_str(&digits(r, frac));
        }
        _ => {}
    }
    if r.chance(30) {
        // One byte wrong somewhere.
        let at = r.below(v.len() + 1);
        v.insert(at, char::from(*b"x.-i e+\t".get(r.below(8)).unwrap_or(&b'x')));
    }
    v
}

fn value(r: &mut Rng) -> String {
    if r.chance(5) { r.one(&ODD_VALUES).to_string() } else { number(r) }
}

fn timestamp(r: &mut Rng) -> String {
    if r.chance(6) {
        return r.one(&TIMESTAMPS).to_string();
    }
    let n = 1 + r.below(20);
    let mut t = digits(r, n);
    if n == 19 && r.chance(2) {
        // Near the largest storable time.
        t.replace_range(0..4, "9223");
    }
    t
}

fn separator(r: &mut Rng) -> &'static str {
    if r.chance(25) { r.one(&["  ", "\t", " \t", ""]) } else { " " }
}

fn line(r: &mut Rng) -> String {
    let mut l = String::from(if r.chance(10) { r.one(&NAMES) } else { "cpu" });
    let most = if r.chance(20) { 20 } else { 5 };
    let tags = r.below(most);
    for _ in 0..tags {
        l.push(',');
        l.push_str(if r.chance(15) { r.one(&KEYS) } else { KEYS[r.below(4)] });
        if !r.chance(40) {
            l.push('=');
        }
        let n = if r.chance(30) { 0 } else { 1 + r.below(70) };
        l.push_str(&digits(r, n));
    }
    l.push_str(separator(r));
    let fields = 1 + r.below(4);
    for f in 0..fields {
        if f > 0 {
            l.push(',');
        }
        l.push_str(if r.chance(30) { "" } else { ["usage_user", "v", "idle", "used_percent"][f] });
        l.push('=');
        l.push_str(&value(r));
    }
    if !r.chance(5) {
        l.push_str(separator(r));
        l.push_str(&timestamp(r));
    }
    if r.chance(40) {
        l.push(' ');
    }
    if r.chance(40) {
        l.push('\r');
    }
    l
}

/// One or two bytes replaced or inserted at random, from those that mean something to the parser.
fn mutate(r: &mut Rng, l: &mut String) {
    const BYTES: &[u8] = b" ,=\n\r\t\0\"\\-.i9t0e1uEfT#";
    for _ in 0..1 + r.below(2) {
        let at = r.below(l.len() + 1);
        let b = char::from(BYTES[r.below(BYTES.len())]);
        if r.chance(2) && at < l.len() {
            l.replace_range(at..at + 1, b.encode_utf8(&mut [0; 4]));
        } else {
            l.insert(at, b);
        }
    }
}

#[test]
fn generated_lines_get_influxdbs_verdict() {
    let mut r = Rng(0x5eed_1f1a_0000_0001);
    let mut lines = 0;
    for _ in 0..3000 {
        let mut body = String::new();
        for _ in 0..1 + r.below(40) {
            let mut l = line(&mut r);
            if r.chance(8) {
                mutate(&mut r, &mut l);
            }
            body.push_str(&l);
            body.push('\n');
            lines += 1;
        }
        if r.chance(3) {
            body.pop();
        }
        // `run` checks with nanoseconds and with a precision picked from the body's length.
        line_verdict::run(body.as_bytes());
    }
    assert!(lines > 50_000, "{lines}");
}
