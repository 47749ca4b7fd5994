//! The `/write` path end to end: clients talk to a real proxy configured through a real
//! Redis, and every result is checked by querying the real `influxd` backends directly.
//! Covers routing (exact, prefix, `_default_`, `nexts`, replication), body encodings
//! (gzip, multi-member gzip, chunked, `Expect: 100-continue`), line-protocol corner
//! cases, `precision` and `rp` passing, receive-time stamping, keep-alive and pipelining,
//! InfluxDB-style error answers, and delivery across backend outages and bad batches.

mod util;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use util::http::{self, HttpConn, Response};
use util::inspect;
use util::site::{DB, FAST, FAST_RETRY, Rig, WAIT, influxd_with_db};
use util::{Behavior, FakeBackend, Influxd, ProxyConfig, wait_until};

/// `n` influxd instances, each with database `db`.
/// Two influxd replicas, and a proxy sending each of `keymaps` to both.
fn replicated_rig(keymaps: &[&str]) -> ([Influxd; 2], Rig) {
    let [a, b]: [Influxd; 2] = influxds(2).try_into().ok().expect("two influxds");
    let mut config = ProxyConfig::new().backend("a", &a.url(), FAST).backend("b", &b.url(), FAST);
    for keymap in keymaps {
        config = config.keymap(keymap, &["a", "b"]);
    }
    let rig = Rig::start(config, &[]);
    ([a, b], rig)
}

fn influxds(n: usize) -> Vec<Influxd> {
    (0..n).map(|_| influxd_with_db()).collect()
}

/// Waits until `measurement` on `influxd` holds `want` points, then checks it holds no more.
fn wait_count(influxd: &Influxd, db: &str, measurement: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = influxd.count(db, measurement);
        if got >= want {
            assert_eq!(got, want, "{measurement} on {}: more points than written", influxd.addr());
            return;
        }
        if Instant::now() >= deadline {
            panic!("{measurement} on {}: {got} of {want} points after {WAIT:?}", influxd.addr());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Rows of `q` (epoch=ns) on database `db`.
fn rows(influxd: &Influxd, q: &str) -> Vec<Vec<serde_json::Value>> {
    influxd.values(DB, q)
}

fn times(rows: &[Vec<serde_json::Value>]) -> Vec<u64> {
    rows.iter().map(|r| r[0].as_u64().unwrap_or_else(|| panic!("bad time in {r:?}"))).collect()
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970").as_nanos() as u64
}

/// Runs an InfluxQL statement on `influxd` directly (POST /query), asserting success.
fn influx_exec(influxd: &Influxd, q: &str) {
    let path = format!("/query?{}", http::query_string(&[("q", q)]));
    let r = http::request(&influxd.addr(), "POST", &path, &[], b"");
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    assert!(r.json()["results"][0]["error"].is_null(), "{q}: {}", r.text());
}

/// Asserts an InfluxDB-style JSON error answer: status, `{"error": ...}` containing
/// `needle`, the same message in `X-Influxdb-Error`, and `X-Influxdb-Version`.
fn assert_json_error(r: &Response, status: u16, needle: &str) -> String {
    assert_eq!(r.status, status, "unexpected answer: {}", r.text());
    let json = r.json();
    let error = json["error"].as_str().unwrap_or_else(|| panic!("no \"error\" string in {}", r.text())).to_string();
    assert!(error.contains(needle), "error {error:?} does not contain {needle:?}");
    let header =
        r.header("X-Influxdb-Error").unwrap_or_else(|| panic!("{status} answer without X-Influxdb-Error: {r:?}"));
    assert!(header.contains(needle), "X-Influxdb-Error {header:?} does not contain {needle:?}");
    assert_version_header(r);
    error
}

fn assert_version_header(r: &Response) {
    let version = r
        .header("X-Influxdb-Version")
        .unwrap_or_else(|| panic!("{} answer without X-Influxdb-Version: {r:?}", r.status));
    assert!(version.starts_with("1."), "X-Influxdb-Version {version:?}");
}

#[test]
fn routing_exact_prefix_default_replication_and_nexts() {
    let [a, b, c, n]: [Influxd; 4] = influxds(4).try_into().ok().expect("four influxd");
    let config = ProxyConfig::new()
        .backend("a", &a.url(), FAST)
        .backend("b", &b.url(), FAST)
        .backend("c", &c.url(), FAST)
        .backend("n", &n.url(), FAST)
        .keymap("cpu", &["a"])
        .keymap("cpu_lo", &["b"])
        .keymap("mem", &["a", "b"])
        .keymap("disk", &["c"])
        .keymap("_default_", &["c"]);
    let rig = Rig::start(config, &[("nexts", "n")]);

    // One request, so each backend's lines of it travel in one batch: once a backend has
    // the lines meant for it, any misrouted line would have arrived with them.
    rig.write_ok(
        b"cpu,h=1 v=1 1000000000\n\
          cpu_load,h=1 v=2 1000000000\n\
          cpu_total,h=1 v=3 1000000000\n\
          mem,h=1 v=4 1000000000\n\
          disk,h=1 v=5 1000000000\n\
          swap,h=1 v=6 1000000000\n",
    );

    let expected: [(&Influxd, &str, &[&str]); 4] = [
        (&a, "a", &["cpu", "cpu_total", "mem"]),
        (&b, "b", &["cpu_load", "mem"]),
        (&c, "c", &["disk", "swap"]),
        (&n, "n (nexts)", &["cpu", "cpu_load", "cpu_total", "mem", "disk", "swap"]),
    ];
    for (influxd, _, present) in expected {
        for m in present {
            wait_count(influxd, DB, m, 1);
        }
    }
    let all = ["cpu", "cpu_load", "cpu_total", "mem", "disk", "swap"];
    for (influxd, name, present) in expected {
        for m in all.iter().filter(|m| !present.contains(m)) {
            assert_eq!(influxd.count(DB, m), 0, "measurement {m} must not reach backend {name}");
        }
    }
    // The values arrived intact.
    assert_eq!(rows(&a, "SELECT v FROM cpu_total"), [[serde_json::json!(1_000_000_000u64), serde_json::json!(3)]]);
    assert_eq!(rows(&n, "SELECT v FROM swap"), [[serde_json::json!(1_000_000_000u64), serde_json::json!(6)]]);
}

#[test]
fn gzip_bodies_single_and_multi_member() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);
    let gz = [("Content-Encoding", "gzip")];
    let query = format!("db={DB}");

    let body = "gz,t=x v=1 1000\ngz,t=x v=2 2000\ngz,t=y v=3 3000\n";
    let r = rig.write_with(&query, &gz, &http::gzip(body.as_bytes()));
    assert_eq!(r.status, 204, "{}", r.text());
    wait_count(&a, DB, "gz", 3);
    let got = rows(&a, "SELECT v, t FROM gz");
    assert_eq!(
        got,
        [
            [serde_json::json!(1000), serde_json::json!(1), serde_json::json!("x")],
            [serde_json::json!(2000), serde_json::json!(2), serde_json::json!("x")],
            [serde_json::json!(3000), serde_json::json!(3), serde_json::json!("y")],
        ]
    );

    // Two gzip members back to back (as `gzip -c a b` makes): both must be read.
    let mut two = http::gzip(b"gz2 v=1 1000\ngz2 v=2 2000\n");
    two.extend_from_slice(&http::gzip(b"gz2 v=3 3000\ngz2 v=4 4000\n"));
    let r = rig.write_with(&query, &gz, &two);
    assert_eq!(r.status, 204, "{}", r.text());
    wait_count(&a, DB, "gz2", 4);
    assert_eq!(times(&rows(&a, "SELECT v FROM gz2")), [1000, 2000, 3000, 4000]);
}

#[test]
fn precision_seconds_and_milliseconds_stored_exactly() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);

    let r = rig.write(&format!("db={DB}&precision=s"), b"prec_s v=1 1700000000\nprec_s v=2 1700000001\n");
    assert_eq!(r.status, 204, "{}", r.text());
    let r = rig.write(&format!("db={DB}&precision=ms"), b"prec_ms v=1 1700000000123\nprec_ms v=2 1700000000124\n");
    assert_eq!(r.status, 204, "{}", r.text());
    let r = rig.write(&format!("db={DB}&precision=u"), b"prec_u v=1 1700000000123456\n");
    assert_eq!(r.status, 204, "{}", r.text());

    wait_count(&a, DB, "prec_s", 2);
    wait_count(&a, DB, "prec_ms", 2);
    wait_count(&a, DB, "prec_u", 1);
    assert_eq!(times(&rows(&a, "SELECT v FROM prec_s")), [1_700_000_000_000_000_000, 1_700_000_001_000_000_000]);
    assert_eq!(times(&rows(&a, "SELECT v FROM prec_ms")), [1_700_000_000_123_000_000, 1_700_000_000_124_000_000]);
    assert_eq!(times(&rows(&a, "SELECT v FROM prec_u")), [1_700_000_000_123_456_000]);
}

#[test]
fn retention_policy_reaches_both_backends() {
    let [a, b]: [Influxd; 2] = influxds(2).try_into().ok().expect("two influxd");
    for influxd in [&a, &b] {
        influx_exec(influxd, "CREATE RETENTION POLICY \"short\" ON \"db\" DURATION 2h REPLICATION 1");
    }
    let config =
        ProxyConfig::new().backend("a", &a.url(), FAST).backend("b", &b.url(), FAST).keymap("rpm", &["a", "b"]);
    let rig = Rig::start(config, &[]);

    // Recent timestamps: the policy only keeps two hours.
    let t = now_ns() / 1_000_000_000 * 1_000_000_000;
    let body = format!("rpm,k=1 v=1 {t}\nrpm,k=2 v=2 {}\n", t + 1);
    let r = rig.write(&format!("db={DB}&rp=short"), body.as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());

    for influxd in [&a, &b] {
        let q = "SELECT v FROM \"db\".\"short\".\"rpm\"";
        wait_until(WAIT, &format!("2 points in rp \"short\" on {}", influxd.addr()), || rows(influxd, q).len() >= 2);
        assert_eq!(
            rows(influxd, q),
            [[serde_json::json!(t), serde_json::json!(1)], [serde_json::json!(t + 1), serde_json::json!(2)]],
            "rp \"short\" on {}",
            influxd.addr()
        );
        let default_rp = rows(influxd, "SELECT v FROM \"db\".\"autogen\".\"rpm\"");
        assert!(
            default_rp.is_empty(),
            "points written with rp=short landed in autogen on {}: {default_rp:?}",
            influxd.addr()
        );
    }
}

#[test]
fn points_without_timestamp_get_one_receive_time_on_every_replica() {
    let ([a, b], rig) = replicated_rig(&["nots", "nots_s"]);

    let before = now_ns();
    rig.write_ok(b"nots,k=1 v=1\nnots,k=2 v=2\n");
    let r = rig.write(&format!("db={DB}&precision=s"), b"nots_s v=1\n");
    assert_eq!(r.status, 204, "{}", r.text());
    let after = now_ns();

    for influxd in [&a, &b] {
        wait_count(influxd, DB, "nots", 2);
        wait_count(influxd, DB, "nots_s", 1);
    }
    let q = "SELECT v, k FROM nots";
    let (ra, rb) = (rows(&a, q), rows(&b, q));
    assert_eq!(ra, rb, "replicas disagree on points without timestamp");
    let t = times(&ra);
    assert_eq!(t[0], t[1], "two points of one request got different times");
    let slack = 1_000_000_000;
    assert!(t[0] + slack >= before && t[0] <= after + slack, "receive time {} not within [{before}, {after}]", t[0]);

    let q = "SELECT v FROM nots_s";
    let (sa, sb) = (times(&rows(&a, q)), times(&rows(&b, q)));
    assert_eq!(sa, sb, "replicas disagree on a precision=s point");
    assert_eq!(sa[0] % 1_000_000_000, 0, "precision=s stamp not whole seconds");
    assert!(
        sa[0] + slack >= before && sa[0] <= after + slack,
        "precision=s receive time {} not within [{before}, {after}]",
        sa[0]
    );
}

#[test]
fn string_field_with_newline_stored_intact_on_every_replica() {
    let ([a, b], rig) = replicated_rig(&["_default_"]);

    rig.write_ok(
        b"log,h=x msg=\"line one\nline two\" 1000\n\
          log,h=x msg=\"after\" 2000\n",
    );
    for influxd in [&a, &b] {
        wait_count(influxd, DB, "log", 2);
        assert_eq!(
            rows(influxd, "SELECT msg FROM log"),
            [
                [serde_json::json!(1000), serde_json::json!("line one\nline two")],
                [serde_json::json!(2000), serde_json::json!("after")]
            ],
            "on {}",
            influxd.addr()
        );
    }
}

#[test]
fn escaped_measurement_routed_by_unescaped_name() {
    let [a, b]: [Influxd; 2] = influxds(2).try_into().ok().expect("two influxd");
    let config = ProxyConfig::new()
        .backend("a", &a.url(), FAST)
        .backend("b", &b.url(), FAST)
        .keymap("my m,x", &["a"])
        .keymap("_default_", &["b"]);
    let rig = Rig::start(config, &[]);

    rig.write_ok(b"my\\ m\\,x,t=1 v=1 1000\nmarker v=1 1000\n");
    wait_count(&b, DB, "marker", 1);
    wait_count(&a, DB, "my m,x", 1);
    assert_eq!(b.count(DB, "my m,x"), 0, "escaped measurement went to _default_");
    assert_eq!(a.count(DB, "marker"), 0);
    let measurements = rows(&a, "SHOW MEASUREMENTS");
    assert_eq!(measurements, [[serde_json::json!("my m,x")]]);
}

#[test]
fn comments_blank_lines_and_crlf() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);

    let before = now_ns();
    rig.write_ok(
        b"# a comment\n\
          \n\
          \x20\x20\x20\n\
          \t\n\
          crlf,t=a v=1 1000\r\n\
          # another comment\r\n\
          \x20\x20# indented comment\n\
          \r\n\
          \x20\t\r\n\
          crlf,t=b v=2,s=\"x\" 2000\r\n\
          crlf,t=c v=3\r\n\
          crlf,t=d v=4 4000\r\n\
          crlf,t=e v=5\r\n\
          crlf,t=f v=6 6000",
    );
    let after = now_ns();
    wait_count(&a, DB, "crlf", 6);
    assert_eq!(
        rows(&a, "SHOW MEASUREMENTS"),
        [[serde_json::json!("crlf")]],
        "comments or blank lines became measurements"
    );
    let tags = influx_tag_values(&a, "crlf", "t");
    assert_eq!(tags, ["a", "b", "c", "d", "e", "f"]);
    let got = rows(&a, "SELECT v, t FROM crlf WHERE t = 'a' OR t = 'b' OR t = 'd'");
    assert_eq!(
        got,
        [
            [serde_json::json!(1000), serde_json::json!(1), serde_json::json!("a")],
            [serde_json::json!(2000), serde_json::json!(2), serde_json::json!("b")],
            [serde_json::json!(4000), serde_json::json!(4), serde_json::json!("d")],
        ]
    );
    assert_eq!(rows(&a, "SELECT s FROM crlf WHERE t = 'b'"), [[serde_json::json!(2000), serde_json::json!("x")]]);
    // The last line has no newline at all; the two without timestamp got receive time.
    assert_eq!(rows(&a, "SELECT v FROM crlf WHERE t = 'f'"), [[serde_json::json!(6000), serde_json::json!(6)]]);
    for (tag, value) in [("c", serde_json::json!(3)), ("e", serde_json::json!(5))] {
        let got = rows(&a, &format!("SELECT v FROM crlf WHERE t = '{tag}'"));
        assert_eq!(got.len(), 1, "t={tag}: {got:?}");
        assert_eq!(got[0][1], value, "t={tag}");
        let t = got[0][0].as_u64().expect("time");
        assert!(
            t + 1_000_000_000 >= before && t <= after + 1_000_000_000,
            "t={tag}: receive time {t} not within [{before}, {after}]"
        );
    }
}

/// Values of tag `key` in `measurement`, sorted.
fn influx_tag_values(influxd: &Influxd, measurement: &str, key: &str) -> Vec<String> {
    let q = format!("SHOW TAG VALUES FROM \"{measurement}\" WITH KEY = \"{key}\"");
    let mut values: Vec<String> =
        rows(influxd, &q).iter().map(|r| r[1].as_str().expect("tag value").to_string()).collect();
    values.sort();
    values
}

#[test]
fn hundred_thousand_lines_in_one_request_on_two_replicas() {
    let ([a, b], rig) = replicated_rig(&["big"]);

    const N: u64 = 100_000;
    let base = 1_600_000_000_000_000_000u64;
    let mut body = String::with_capacity(N as usize * 40);
    for i in 0..N {
        body += &format!("big,host=h{} v={i}i {}\n", i % 7, base + i * 1000);
    }
    let r = rig.write(&format!("db={DB}"), body.as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    for influxd in [&a, &b] {
        wait_count(influxd, DB, "big", N);
        let sum = rows(influxd, "SELECT sum(v) FROM big");
        assert_eq!(sum[0][1], serde_json::json!(N * (N - 1) / 2), "on {}", influxd.addr());
    }
}

#[test]
fn thousand_requests_on_one_keep_alive_connection() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);

    let mut conn = HttpConn::connect(&rig.addr());
    let path = format!("/write?db={DB}");
    for i in 0..1000u64 {
        let body = format!("ka,c=1 v={i}i {}\n", 1_000_000 + i);
        conn.send("POST", &path, &[], body.as_bytes());
        let r = conn.read_response();
        assert_eq!(r.status, 204, "request {i}: {}", r.text());
        assert_eq!(r.header("Connection"), None, "request {i} closes: {r:?}");
    }
    wait_count(&a, DB, "ka", 1000);
}

#[test]
fn pipelined_requests_answered_in_order() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);

    let mut raw = Vec::new();
    for i in 0..20u64 {
        let body = format!("pipe,r={i} v={i}i 1000\npipe,r={i} v={i}i 2000\n");
        raw.extend_from_slice(
            format!("POST /write?db={DB} HTTP/1.1\r\nHost: proxy\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                .as_bytes(),
        );
    }
    // A request of another kind in the middle: its answer must come at its place.
    let ping = b"GET /ping?verbose=true HTTP/1.1\r\nHost: proxy\r\n\r\n";
    let mid = raw.len() / 2;
    let mut with_ping = raw[..mid].to_vec();
    // `mid` may fall inside a request: put the ping after the request it cuts.
    let cut = find_request_end(&raw, mid);
    with_ping.extend_from_slice(&raw[mid..cut]);
    with_ping.extend_from_slice(ping);
    with_ping.extend_from_slice(&raw[cut..]);
    let requests_before_ping = count_occurrences(&raw[..cut], b"POST ");

    let mut conn = HttpConn::connect(&rig.addr());
    conn.send_raw(&with_ping);
    for i in 0..21 {
        let r = conn.read_response();
        if i == requests_before_ping {
            assert_eq!(r.status, 200, "answer {i} should be the ping's: {r:?}");
            assert!(r.text().contains("version"), "{}", r.text());
        } else {
            assert_eq!(r.status, 204, "answer {i}: {}", r.text());
        }
    }
    wait_count(&a, DB, "pipe", 40);
    assert_eq!(influx_tag_values(&a, "pipe", "r").len(), 20);
}

/// The end of the pipelined request that contains byte `at` (or `at` if a request starts there).
fn find_request_end(raw: &[u8], at: usize) -> usize {
    let mut pos = 0;
    while pos < at {
        let head_end = raw[pos..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| pos + i + 4).expect("request head");
        let head = String::from_utf8_lossy(&raw[pos..head_end]);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("Content-Length");
        pos = head_end + len;
    }
    pos
}

fn count_occurrences(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[test]
fn node_db_is_enforced() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    a.create_db("app");
    a.create_db("other");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[("db", "app")]);

    let r = rig.write("db=other", b"nodedb v=1 1000\n");
    let error = assert_json_error(&r, 404, "database not found");
    assert_eq!(error, "database not found: \"other\"");

    let r = rig.write("", b"nodedb v=2 2000\n");
    assert_eq!(r.status, 204, "write without db: {}", r.text());
    let r = rig.write("db=app", b"nodedb v=3 3000\n");
    assert_eq!(r.status, 204, "write with db=app: {}", r.text());

    wait_count(&a, "app", "nodedb", 2);
    assert_eq!(times(&a.values("app", "SELECT v FROM nodedb")), [2000, 3000]);
    assert_eq!(a.count("other", "nodedb"), 0, "refused write was stored");
    assert_eq!(a.count(DB, "nodedb"), 0);
}

#[test]
fn error_answers_are_influxdb_style() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start_with(config, &[], 2, &["--max-body-bytes", "1000"]);
    let query = format!("db={DB}");
    let gz = [("Content-Encoding", "gzip")];

    // Undecodable gzip.
    let r = rig.write_with(&query, &gz, b"this is not gzip at all\n");
    assert_json_error(&r, 400, "");

    // Wrong method.
    let r = http::request(&rig.addr(), "GET", &format!("/write?{query}"), &[], b"");
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.text().trim(), "Method Not Allowed");
    assert_version_header(&r);

    // No db, and the node has none.
    let r = rig.write("", b"nodb v=1 1000\n");
    assert_json_error(&r, 400, "database is required");

    // A plain body over --max-body-bytes.
    let big = "toolarge,tag=aaaaaaaaaaaaaaaa v=1 1000\n".repeat(50);
    assert!(big.len() > 1000);
    let r = rig.write(&query, big.as_bytes());
    assert_eq!(r.status, 413, "plain body of {} bytes: {}", big.len(), r.text());
    assert_version_header(&r);
    assert!(r.json()["error"].is_string(), "{}", r.text());
    assert!(r.header("X-Influxdb-Error").is_some(), "{r:?}");

    // A small gzip body that inflates past the limit.
    let bomb = http::gzip(big.repeat(4).as_bytes());
    assert!(bomb.len() < 1000, "gzip body of {} bytes", bomb.len());
    let r = rig.write_with(&query, &gz, &bomb);
    assert_eq!(r.status, 413, "gzip body of {} bytes inflating to {}: {}", bomb.len(), big.len() * 4, r.text());
    assert_version_header(&r);
    assert!(r.json()["error"].is_string(), "{}", r.text());
    assert!(r.header("X-Influxdb-Error").is_some(), "{r:?}");

    // Unknown path.
    let r = http::get(&rig.addr(), "/nope");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_version_header(&r);

    // A body within the limit still works after all that, and nothing refused was stored.
    rig.write_ok(b"fine v=1 1000\n");
    wait_count(&a, DB, "fine", 1);
    assert_eq!(a.count(DB, "toolarge"), 0);
    assert_eq!(a.count(DB, "nodb"), 0);
}

#[test]
fn expect_continue_and_chunked_bodies() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);
    let path = format!("/write?db={DB}");

    let mut conn = HttpConn::connect(&rig.addr());
    let body = b"expect v=1 1000\nexpect v=2 2000\n";
    let len = body.len().to_string();
    // The head alone: the body follows only after the interim answer.
    conn.send("POST", &path, &[("Expect", "100-continue"), ("Content-Length", &len)], b"");
    let interim = conn.read_response();
    assert_eq!(interim.status, 100, "{interim:?}");
    conn.send_raw(body);
    let r = conn.read_response();
    assert_eq!(r.status, 204, "{}", r.text());

    // Chunked, with chunk borders inside lines and inside a number.
    let chunks: [&[u8]; 4] = [b"chunk,t=a v=1 10", b"00\nchunk,t=b v", b"=2 2000\nchu", b"nk,t=c v=3 3000\n"];
    conn.send("POST", &path, &[("Transfer-Encoding", "chunked")], &http::chunked(&chunks));
    let r = conn.read_response();
    assert_eq!(r.status, 204, "{}", r.text());

    wait_count(&a, DB, "expect", 2);
    wait_count(&a, DB, "chunk", 3);
    assert_eq!(times(&rows(&a, "SELECT v FROM expect")), [1000, 2000]);
    assert_eq!(
        rows(&a, "SELECT v, t FROM chunk"),
        [
            [serde_json::json!(1000), serde_json::json!(1), serde_json::json!("a")],
            [serde_json::json!(2000), serde_json::json!(2), serde_json::json!("b")],
            [serde_json::json!(3000), serde_json::json!(3), serde_json::json!("c")],
        ]
    );
}

#[test]
fn backend_down_for_a_while_gets_everything_after_it_returns() {
    let [a, mut b]: [Influxd; 2] = influxds(2).try_into().ok().expect("two influxd");
    let config =
        ProxyConfig::new().backend("a", &a.url(), FAST).backend("b", &b.url(), FAST).keymap("_default_", &["a", "b"]);
    let rig = Rig::start(config, &[]);

    b.stop();
    const REQUESTS: u64 = 50;
    const LINES: u64 = 100;
    let base = 1_600_000_000_000_000_000u64;
    for r in 0..REQUESTS {
        let mut body = String::new();
        for l in 0..LINES {
            let i = r * LINES + l;
            body += &format!("outage,w=1 v={i}i {}\n", base + i);
        }
        let answer = rig.write(&format!("db={DB}"), body.as_bytes());
        assert_eq!(answer.status, 204, "request {r} while b is down: {}", answer.text());
        // Kept sleep: spreading the requests over more than one batch interval is the point, so the
        // backlog holds many batches rather than a few large ones.
        std::thread::sleep(Duration::from_millis(40));
    }
    wait_count(&a, DB, "outage", REQUESTS * LINES);
    b.start_again();
    wait_count(&b, DB, "outage", REQUESTS * LINES);
    for influxd in [&a, &b] {
        let sum = rows(influxd, "SELECT sum(v) FROM outage");
        let n = REQUESTS * LINES;
        assert_eq!(sum[0][1], serde_json::json!(n * (n - 1) / 2), "on {}", influxd.addr());
    }
}

#[test]
fn rejected_batch_does_not_block_later_data_fake_backend() {
    let fake = FakeBackend::start();
    let config = ProxyConfig::new().backend("f", &fake.url(), FAST).keymap("_default_", &["f"]);
    let rig = Rig::start(config, &[]);

    fake.set_write(Behavior::respond(
        400,
        r#"{"error":"partial write: field type conflict: input field \"v\" on measurement \"bad\" is type string, already exists as type float dropped=1"}"#,
    ));
    rig.write_ok(b"bad v=\"s\" 1000\n");
    wait_until(WAIT, "the bad batch reaching the fake", || fake.write_lines().iter().any(|l| l == "bad v=\"s\" 1000"));
    fake.set_write(Behavior::Ok);
    rig.write_ok(b"good v=1 2000\n");
    rig.write_ok(b"good v=2 3000\n");
    wait_until(WAIT, "the later batches reaching the fake", || {
        let lines = fake.write_lines();
        lines.iter().any(|l| l == "good v=1 2000") && lines.iter().any(|l| l == "good v=2 3000")
    });
    // Kept sleep: an absence is watched for a while. Several retry periods: a retried 400 batch
    // would show again.
    std::thread::sleep(5 * FAST_RETRY);
    let lines = fake.write_lines();
    let bad = lines.iter().filter(|l| *l == "bad v=\"s\" 1000").count();
    assert!((1..=2).contains(&bad), "the 400 batch was sent {bad} times: {lines:?}");
    let good = lines.iter().filter(|l| l.starts_with("good ")).count();
    assert_eq!(good, 2, "good lines sent more than once: {lines:?}");
    // Kept sleep: still no retry a few retry periods later.
    std::thread::sleep(3 * FAST_RETRY);
    let again = fake.write_lines().iter().filter(|l| *l == "bad v=\"s\" 1000").count();
    assert_eq!(again, bad, "the 400 batch keeps being retried");
}

#[test]
fn field_type_conflict_does_not_block_later_data_real_influxd() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);

    rig.write_ok(b"conf v=1 1000000000\n");
    wait_count(&a, DB, "conf", 1);
    // The proxy cannot know: it accepts, influxd refuses the batch with 400.
    rig.write_ok(b"conf v=\"str\" 2000000000\n");
    // The conflicting batch goes out (and is refused) on its own, before the next write.
    wait_until(WAIT, "influxd refusing the conflicting batch", || {
        let labels = [("backend", "a"), ("reason", "bad_data")];
        inspect::metric(&rig.addr(), "influx_proxy_backend_lines_dropped_total", &labels).is_some_and(|n| n >= 1.0)
    });
    rig.write_ok(b"conf v=3 3000000000\nconf_after v=1 3000000000\n");
    wait_count(&a, DB, "conf_after", 1);
    wait_count(&a, DB, "conf", 2);
    assert_eq!(
        rows(&a, "SELECT v FROM conf"),
        [
            [serde_json::json!(1_000_000_000u64), serde_json::json!(1)],
            [serde_json::json!(3_000_000_000u64), serde_json::json!(3)]
        ]
    );
}

#[test]
fn unrouted_measurement_is_a_partial_write() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["a"]);
    let rig = Rig::start(config, &[]);

    let r = rig.write(&format!("db={DB}"), b"cpu v=1 1000\nnowhere v=2 2000\ncpu v=3 3000\n");
    let error = assert_json_error(&r, 400, "partial write");
    assert!(error.contains("nowhere"), "error does not name it: {error:?}");
    assert!(!error.contains("cpu"), "error names a routed measurement: {error:?}");
    wait_count(&a, DB, "cpu", 2);
    assert_eq!(times(&rows(&a, "SELECT v FROM cpu")), [1000, 3000]);
    assert_eq!(a.count(DB, "nowhere"), 0);
}

#[test]
fn ping_get_head_and_verbose() {
    let [a]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);

    let r = http::get(&rig.addr(), "/ping");
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty());
    assert_version_header(&r);

    let mut conn = HttpConn::connect(&rig.addr());
    conn.send("HEAD", "/ping", &[], b"");
    let r = conn.read_response();
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty());
    assert_version_header(&r);
    // The connection stays usable: the HEAD answer carried no stray body.
    conn.send("GET", "/ping?verbose=true", &[], b"");
    let r = conn.read_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_version_header(&r);
    let version = r.json()["version"].as_str().unwrap_or_else(|| panic!("no version in {}", r.text())).to_string();
    assert!(version.starts_with("1."), "{version}");
    assert_eq!(Some(version.as_str()), r.header("X-Influxdb-Version"));

    conn.send("HEAD", "/ping?verbose=true", &[], b"");
    let r = conn.read_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty());
    conn.send("GET", "/ping", &[], b"");
    assert_eq!(conn.read_response().status, 204);
}

#[test]
fn uncompressed_batches_far_larger_than_a_socket_buffer_arrive_whole() {
    // `gzip 0`: the batch is sent straight from the outbox log (not copied into the request), over
    // many writable events; both replicas must get every line, byte for byte.
    let [a, b]: [Influxd; 2] = influxds(2).try_into().ok().expect("two influxds");
    let plain = util::site::fast_with(&[("gzip", "0"), ("interval", "200")]);
    let config = ProxyConfig::new()
        .backend("a", &a.url(), &plain)
        .backend("b", &b.url(), &plain)
        .keymap("_default_", &["a", "b"]);
    let rig = Rig::start(config, &[]);
    let mut body = String::new();
    for i in 0..40_000u64 {
        body.push_str(&format!(
            "big,host=h{},region=r{} value={i},pad=\"{}\" {}\n",
            i % 97,
            i % 5,
            "x".repeat(40),
            1_000 + i
        ));
    }
    assert!(body.len() > 3 << 20, "{} bytes", body.len());
    let r = rig.write(&format!("db={DB}"), body.as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    for influxd in [&a, &b] {
        wait_count(influxd, DB, "big", 40_000);
        let sums = rows(influxd, "SELECT sum(value) FROM big");
        assert_eq!(sums[0][1], serde_json::json!((0..40_000u64).sum::<u64>()), "{}", influxd.addr());
    }
}

/// `n` lines of measurement `m`, each with its own series, value and timestamp.
fn stamped_lines(m: &str, n: u64) -> String {
    (0..n).map(|i| format!("{m},host=h{} value={i},load={}.5 {}\n", i % 50, i % 7, 1_000_000 + i)).collect()
}

#[test]
fn a_large_gzip_write_reaches_its_backends_as_the_client_compressed_it() {
    // Every line good, stamped and routed to the same backends: the batch is the client's body, so
    // backends that take gzip get the client's own bytes (no second compression), byte for byte.
    let (a, b, c, d) = (FakeBackend::start(), FakeBackend::start(), FakeBackend::start(), FakeBackend::start());
    let plain = util::site::fast_with(&[("gzip", "0")]);
    let capped = util::site::fast_with(&[("maxrowlimit", "1500")]);
    let config = ProxyConfig::new()
        .backend("a", &a.url(), FAST)
        .backend("b", &b.url(), FAST)
        .backend("c", &c.url(), &plain)
        .backend("d", &d.url(), &capped)
        .keymap("fwd", &["a", "b", "c"])
        .keymap("solo", &["a"])
        .keymap("capped", &["b", "d"])
        .keymap("_default_", &["a", "b"]);
    let rig = Rig::start(config, &[]);
    let gz = [("Content-Encoding", "gzip")];
    let query = format!("db={DB}&precision=ns");
    let body = stamped_lines("fwd", 2000);
    assert!(body.len() > 64 << 10, "{} bytes", body.len());
    let sent = http::gzip_two_members(body.as_bytes());

    let r = rig.write_with(&query, &gz, &sent);
    assert_eq!(r.status, 204, "{}", r.text());
    for (fake, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        util::fake::wait_lines(fake, "fwd", 2000, name);
        let writes = fake.requests_to("/write");
        assert_eq!(writes.len(), 1, "{name}: one batch");
        assert_eq!(writes[0].text(), body, "{name}");
        assert_eq!(writes[0].param("precision"), Some("ns"), "{name}");
        if name == "c" {
            assert_eq!(writes[0].header("Content-Encoding"), None, "c takes batches uncompressed");
        } else {
            assert_eq!(writes[0].header("Content-Encoding"), Some("gzip"), "{name}");
            assert!(writes[0].raw == sent, "{name}: the client's gzip members, forwarded unchanged");
        }
    }
    // Bytes in and sent are bytes as stored: the client's gzip (and its line count), or the body.
    for (name, stored) in [("a", sent.len() + 8), ("c", body.len())] {
        for metric in ["influx_proxy_backend_bytes_in_total", "influx_proxy_backend_bytes_sent_total"] {
            let got = || inspect::metric(&rig.addr(), metric, &[("backend", name)]);
            wait_until(WAIT, &format!("{metric} of {name}"), || got().is_some_and(|v| v >= stored as f64));
            assert_eq!(got(), Some(stored as f64), "{metric} of {name}");
        }
    }

    // Bodies whose batches are not exactly the body are compressed by the proxy, and arrive whole.
    let without_stamp = format!("{body}fwd,host=late value=1\n");
    let (first, second) = body.split_at(body[..body.len() / 2].rfind('\n').map_or(0, |i| i + 1));
    let with_blank = format!("{first}\n{second}");
    let mixed = format!("{body}solo value=1 1\n");
    let small = stamped_lines("fwd", 100);
    for (what, text, lines) in [
        ("a line without a timestamp", &without_stamp, 2001),
        ("a blank line", &with_blank, 2000),
        ("lines for other backends", &mixed, 2000),
        ("a small body", &small, 100),
    ] {
        for fake in [&a, &b, &c] {
            fake.clear();
        }
        let sent = http::gzip_two_members(text.as_bytes());
        let r = rig.write_with(&query, &gz, &sent);
        assert_eq!(r.status, 204, "{what}: {}", r.text());
        for (fake, name) in [(&a, "a"), (&b, "b")] {
            util::fake::wait_lines(fake, "fwd", lines, name);
            for w in fake.requests_to("/write") {
                assert!(w.raw != sent, "{what}: {name} got the client's bytes");
                assert_eq!(w.header("Content-Encoding"), Some("gzip"), "{what}");
            }
        }
    }

    // More lines than a batch of one of the backends may hold: batches of `maxrowlimit` lines.
    let sent = http::gzip_two_members(stamped_lines("capped", 2000).as_bytes());
    let r = rig.write_with(&query, &gz, &sent);
    assert_eq!(r.status, 204, "{}", r.text());
    for (fake, name) in [(&b, "b"), (&d, "d")] {
        util::fake::wait_lines(fake, "capped", 2000, name);
        assert!(fake.requests_to("/write").iter().all(|w| w.raw != sent), "{name} got the client's bytes");
    }
    let sizes: Vec<usize> = d.requests_to("/write").iter().map(|w| w.text().lines().count()).collect();
    assert_eq!(sizes, [1500, 500], "d's batches");
}

#[test]
fn a_body_that_begins_as_a_batch_is_stored_line_by_line_from_its_first_line() {
    // Stamped lines for one route, then a line for other backends: the body is not one batch, and the
    // lines the batch check has read are stored line by line without being checked again. Each must
    // arrive once, in order, and a string holding a newline stays one line, also where `maxrowlimit`
    // ends a batch right after it.
    let (a, b) = (FakeBackend::start(), FakeBackend::start());
    let capped = util::site::fast_with(&[("gzip", "0"), ("maxrowlimit", "651")]);
    let plain = util::site::fast_with(&[("gzip", "0")]);
    let config = ProxyConfig::new()
        .backend("a", &a.url(), &capped)
        .backend("b", &b.url(), &plain)
        .keymap("first", &["a"])
        .keymap("_default_", &["b"]);
    let rig = Rig::start(config, &[]);
    let two_rows = "first,host=s text=\"two\nrows\",value=1 999\n";
    let for_a = [stamped_lines("first", 650).as_str(), two_rows, &stamped_lines("first", 1000)].concat();
    let (other, tail) = (stamped_lines("other", 10), stamped_lines("first", 5));
    let body = format!("{for_a}{other}{tail}");
    assert!(body.len() > 64 << 10, "{} bytes", body.len());

    let r = rig.write(&format!("db={DB}&precision=ns"), body.as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    util::fake::wait_lines(&b, "other", 10, "b");
    util::fake::wait_lines(&a, "first", 1656, "a");
    let batches: Vec<String> = a.requests_to("/write").iter().map(|w| w.text()).collect();
    assert_eq!(batches.concat(), format!("{for_a}{tail}"), "a: every line once, in order");
    assert!(batches[0].ends_with(two_rows), "the first batch ends with the 651st line, whole");
    assert_eq!(b.requests_to("/write").iter().map(|w| w.text()).collect::<String>(), other);

    // A blank and a comment line among the first lines: they are not part of what is stored.
    let (first, second) = (stamped_lines("first", 600), stamped_lines("first", 1000));
    for gap in ["\n", "# a comment\n", "  \n"] {
        a.clear();
        let body = format!("{first}{gap}{second}{other}");
        assert!(body.len() > 64 << 10, "{} bytes", body.len());
        let r = rig.write(&format!("db={DB}&precision=ns"), body.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
        util::fake::wait_lines(&a, "first", 1600, "a");
        let stored: String = a.requests_to("/write").iter().map(|w| w.text()).collect();
        assert_eq!(stored, format!("{first}{second}"), "{gap:?}");
    }
}

#[test]
fn forwarded_gzip_members_are_stored_by_influxd() {
    // The client's members go to influxd as they came: it must read every member, on both replicas.
    let ([a, b], rig) = replicated_rig(&["_default_"]);
    let body = stamped_lines("members", 3000);
    let r =
        rig.write_with(&format!("db={DB}"), &[("Content-Encoding", "gzip")], &http::gzip_two_members(body.as_bytes()));
    assert_eq!(r.status, 204, "{}", r.text());
    for influxd in [&a, &b] {
        wait_count(influxd, DB, "members", 3000);
        let sums = rows(influxd, "SELECT sum(value) FROM members");
        assert_eq!(sums[0][1], serde_json::json!((0..3000u64).sum::<u64>()), "{}", influxd.addr());
    }
}

/// Deflate bits, least significant first; Huffman codes go most significant bit first.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn bits(&mut self, v: u64, n: u32) {
        self.acc |= v << self.n;
        self.n += n;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn code(&mut self, code: u64, n: u32) {
        let reversed = (0..n).fold(0, |r, i| (r << 1) | ((code >> i) & 1));
        self.bits(reversed, n);
    }

    /// A literal byte with the fixed Huffman code.
    fn literal(&mut self, b: u8) {
        match b {
            0..=143 => self.code(0x30 + u64::from(b), 8),
            _ => self.code(0x190 + u64::from(b) - 144, 9),
        }
    }
}

#[test]
fn a_gzip_body_influxd_cannot_read_is_still_delivered() {
    // libdeflate reads length code 286 as a copy of 258 bytes; Go's reader (InfluxDB's) calls it corrupt.
    // The proxy takes the body, so it must not lose it when the backend cannot read the client's bytes.
    let a = influxd_with_db();
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);
    let lines: Vec<String> =
        (0..1600u64).map(|i| format!("oddgzipcodes v={i:06}i {}\n", 1_600_000_000_000_000_000 + i)).collect();
    assert!(lines.iter().all(|l| l.len() == 43), "258 bytes must be 6 whole lines");
    let mut plain = lines.concat().into_bytes();
    let mut bits = Bits::default();
    bits.bits(1, 1); // last block
    bits.bits(1, 2); // fixed Huffman codes
    for &b in &plain {
        bits.literal(b);
    }
    bits.code(0xc0 + (286 - 280), 8); // length code 286
    bits.code(16, 5); // distance code 16: 257 + 7 extra bits
    bits.bits(1, 7);
    bits.code(0, 7); // end of block
    bits.bits(0, 7);
    let copied = plain[plain.len() - 258..].to_vec();
    plain.extend_from_slice(&copied);
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    gz.extend_from_slice(&bits.out);
    gz.extend_from_slice(&inspect::crc32(&plain).to_le_bytes());
    gz.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    assert_eq!(http::gunzip(&gz), plain, "libdeflate reads it");

    let r = rig.write_with(&format!("db={DB}"), &[("Content-Encoding", "gzip")], &gz);
    assert_eq!(r.status, 204, "{}", r.text());
    wait_count(&a, DB, "oddgzipcodes", 1600);
}

#[test]
fn a_gzip_body_padded_past_its_lines_is_not_forwarded() {
    // Gzip allows padding (here thousands of empty members): forwarded, such a body would make a batch
    // far larger than its lines, past the limits every other batch keeps to.
    let a = FakeBackend::start();
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);
    let body = stamped_lines("padded", 2000);
    let mut sent = http::gzip_two_members(body.as_bytes());
    let empty = http::gzip(b"");
    while sent.len() <= body.len() {
        sent.extend_from_slice(&empty);
    }
    let r = rig.write_with(&format!("db={DB}"), &[("Content-Encoding", "gzip")], &sent);
    assert_eq!(r.status, 204, "{}", r.text());
    util::fake::wait_lines(&a, "padded", 2000, "a");
    for w in a.requests_to("/write") {
        assert!(w.raw.len() < body.len(), "a batch of {} bytes for {} bytes of lines", w.raw.len(), body.len());
    }
}

#[test]
fn a_gzip_batch_refused_as_a_whole_is_sent_once_more_compressed_by_the_proxy() {
    // The backend answers every write 400 without naming a line, as influxd does when it cannot read
    // the gzip: the forwarded batch goes once more, compressed by the proxy, then counts as dropped.
    let a = FakeBackend::start();
    a.set_write(Behavior::respond(400, r#"{"error":"gzip: invalid header"}"#));
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let rig = Rig::start(config, &[]);
    let gz = [("Content-Encoding", "gzip")];
    let query = format!("db={DB}");
    let body = stamped_lines("refused", 2000);
    let sent = http::gzip_two_members(body.as_bytes());
    assert_eq!(rig.write_with(&query, &gz, &sent).status, 204);
    let dropped = || inspect::metric(&rig.addr(), "influx_proxy_backend_lines_dropped_total", &[("backend", "a")]);
    wait_until(WAIT, "the batch counted as dropped", || dropped() == Some(2000.0));
    let writes = a.requests_to("/write");
    assert_eq!(writes.len(), 2, "sent as it came, then once more");
    assert!(writes[0].raw == sent, "first as the client compressed it");
    assert!(writes[1].raw != sent && writes[1].text() == body, "then compressed by the proxy");

    // A 400 that names lines is the backend's verdict on them: nothing is sent again.
    a.clear();
    a.set_write(Behavior::respond(400, r#"{"error":"partial write: unable to parse 'x': bad dropped=0"}"#));
    let body = stamped_lines("named", 2000);
    assert_eq!(rig.write_with(&query, &gz, &http::gzip_two_members(body.as_bytes())).status, 204);
    wait_until(WAIT, "the second batch answered", || dropped().is_some_and(|d| d > 2000.0));
    // Kept sleep: an absence (no second send) is watched for a while.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(a.requests_to("/write").len(), 1, "a 400 naming lines is final");
}
