//! Clients that do not speak `/write` + `/query`: v2 writers (`/api/v2/write`, InfluxDB 1.8's
//! compatibility API) and Prometheus (`/api/v1/prom/write`, `/api/v1/prom/read`), through the proxy to
//! real influxd backends. What the proxy stores and answers is compared with what a real influxd does
//! with the same request. Also: the answers client retry logic depends on (`Retry-After` on every 503,
//! 413 before reading an oversized body).

mod util;

use std::time::Duration;

use influx_proxy::prom::{self, MatchType, Matcher, OwnedSeries, Sample};
use serde_json::Value;
use util::http::{self, HttpConn};
use util::site::{DB, FAST, WAIT, influxd_with_db};
use util::{Influxd, Proxy, ProxyConfig, Redis, free_port, wait_until};

/// Backends i1, i2 (database `db`, retention policy `short` too); `cpu` on both, `only_b` on i2 only,
/// everything else on i1.
struct Rig {
    proxy: Proxy,
    _redis: Redis,
    i1: Influxd,
    i2: Influxd,
}

impl Rig {
    fn start(node_extra: &[(&str, &str)], args: &[&str]) -> Rig {
        let (i1, i2) = (influxd_with_db(), influxd_with_db());
        for i in [&i1, &i2] {
            let q = format!("CREATE RETENTION POLICY short ON {DB} DURATION 1h REPLICATION 1");
            let response = http::post(&i.addr(), &format!("/query?{}", http::query_string(&[("q", &q)])), b"");
            assert_eq!(response.status, 200, "{}", response.text());
        }
        let redis = Redis::start();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut node = vec![("listenaddr", listen.as_str()), ("interval", "0")];
        node.extend_from_slice(node_extra);
        ProxyConfig::new()
            .backend("i1", &i1.url(), FAST)
            .backend("i2", &i2.url(), FAST)
            .keymap("cpu", &["i1", "i2"])
            .keymap("only_b", &["i2"])
            .keymap("_default_", &["i1"])
            .node("l1", &node)
            .write_to(&redis);
        let mut builder = Proxy::builder(&redis, "l1", port);
        for a in args {
            builder = builder.arg(*a);
        }
        Rig { proxy: builder.start(), _redis: redis, i1, i2 }
    }
}

/// `SELECT *` rows of a measurement in `db.rp`, with nanosecond times.
fn rows(influxd: &Influxd, rp: &str, measurement: &str) -> Vec<Vec<Value>> {
    influxd.values(DB, &format!("SELECT * FROM {DB}.{rp}.{measurement}"))
}

fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> OwnedSeries {
    OwnedSeries {
        labels: labels.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
        samples: samples.iter().map(|&(value, timestamp_ms)| Sample { value, timestamp_ms }).collect(),
    }
}

fn snappy_post(addr: &str, path: &str, body: &[u8]) -> http::Response {
    let headers = [("Content-Type", "application/x-protobuf"), ("Content-Encoding", "snappy")];
    http::request(addr, "POST", path, &headers, body)
}

#[test]
fn v2_write_bucket_forms_precision_and_gzip_reach_both_replicas() {
    let rig = Rig::start(&[], &[]);
    let addr = rig.proxy.addr();
    let write = |query: &str, headers: &[(&str, &str)], body: &[u8]| {
        http::request(&addr, "POST", &format!("/api/v2/write?{query}"), headers, body)
    };
    let r = write("org=anything&bucket=db&precision=s", &[], b"cpu,f=a v=1 1700000000\n");
    assert_eq!(r.status, 204, "{}", r.text());
    let r =
        write("bucket=db/&precision=ms", &[("Content-Encoding", "gzip")], &http::gzip(b"cpu,f=b v=2 1700000000001"));
    assert_eq!(r.status, 204, "{}", r.text());
    // Retention policy `short` keeps an hour: a recent point.
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let r = write("bucket=db/short&precision=us", &[], format!("cpu,f=c v=3 {now_us}").as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    let r = write(
        "bucket=db/autogen&precision=ns",
        &[("Authorization", "Token any:thing")],
        b"cpu,f=d v=4 1700000000000000003",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let r = write("bucket=db", &[], b"cpu,f=e v=5");
    assert_eq!(r.status, 204, "{}", r.text());

    for i in [&rig.i1, &rig.i2] {
        wait_until(WAIT, "v2 writes on both replicas", || {
            rows(i, "autogen", "cpu").len() == 4 && rows(i, "short", "cpu").len() == 1
        });
        let autogen = rows(i, "autogen", "cpu");
        let times: Vec<(i64, &str)> =
            autogen.iter().map(|r| (r[0].as_i64().unwrap_or(0), r[1].as_str().unwrap_or(""))).collect();
        assert_eq!(
            &times[..3],
            &[(1_700_000_000_000_000_000, "a"), (1_700_000_000_000_000_003, "d"), (1_700_000_000_001_000_000, "b")][..]
        );
        assert_eq!(times[3].1, "e", "a point without time is stamped at receive time");
        let short = rows(i, "short", "cpu");
        assert_eq!(short[0][0].as_i64(), Some(now_us * 1000));
    }

    // InfluxDB 1.8's answers for parameters v1 cannot express.
    let r = write("org=x", &[], b"cpu v=1");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "bucket name \"\" is missing a slash; not in \"database/retention-policy\" format");
    let r = write("bucket=/autogen", &[], b"cpu v=1");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "bucket name \"/autogen\" is in db/rp form but has an empty database");
    let r = write("bucket=db&precision=h", &[], b"cpu v=1");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid precision \"h\" (use ns, us, ms or s)");
    let r = http::request(&addr, "GET", "/api/v2/write?bucket=db", &[], b"");
    assert_eq!(r.status, 405);
}

#[test]
fn v2_write_takes_token_credentials_of_the_node() {
    let rig = Rig::start(&[("username", "admin"), ("password", "s3cret")], &[]);
    let addr = rig.proxy.addr();
    let path = "/api/v2/write?bucket=db&precision=s";
    let r = http::request(&addr, "POST", path, &[("Authorization", "Token admin:s3cret")], b"cpu,f=t v=1 1700000000");
    assert_eq!(r.status, 204, "{}", r.text());
    let r = http::request(&addr, "POST", path, &[("Authorization", "Token admin:wrong")], b"cpu,f=t v=1 1700000000");
    assert_eq!(r.status, 401);
    let r = http::request(&addr, "POST", path, &[], b"cpu,f=t v=1 1700000000");
    assert_eq!(r.status, 401);
    let r = snappy_post(&addr, "/api/v1/prom/write?db=db", &prom::snappy(b""));
    assert_eq!(r.status, 401);
    wait_until(WAIT, "the authenticated write", || rows(&rig.i2, "autogen", "cpu").len() == 1);
}

/// The remote write every Prometheus test sends: a metric only i2 holds, one on the default
/// backend, a replicated one, odd labels, and samples InfluxDB skips.
fn remote_write() -> Vec<OwnedSeries> {
    let t = 1_700_000_000_000;
    vec![
        series(&[("__name__", "only_b"), ("job", "api"), ("instance", "h:9090")], &[(1.5, t), (2.5, t + 1000)]),
        series(&[("__name__", "only_b"), ("job", "db"), ("instance", "h:9090")], &[(f64::NAN, t), (7.0, t + 2000)]),
        series(
            &[("__name__", "other"), ("path", "a b,c=d"), ("empty", ""), ("esc", "x\\y")],
            &[(1e300, t), (-1e-7, t + 1)],
        ),
        series(&[("instance", "x"), ("__name__", "cpu")], &[(0.25, t)]),
    ]
}

fn show_series(influxd: &Influxd, measurement: &str) -> Vec<Vec<Value>> {
    influxd.values(DB, &format!("SHOW SERIES FROM {measurement}"))
}

#[test]
fn prom_write_is_stored_as_influxd_stores_it_and_routed_by_metric_name() {
    let rig = Rig::start(&[], &[]);
    let reference = influxd_with_db();
    let body = prom::snappy(&prom::encode_write_request(&remote_write()));
    let direct = snappy_post(&reference.addr(), &format!("/api/v1/prom/write?db={DB}"), &body);
    assert_eq!(direct.status, 204, "influxd: {}", direct.text());
    let proxied = snappy_post(&rig.proxy.addr(), &format!("/api/v1/prom/write?db={DB}"), &body);
    assert_eq!(proxied.status, 204, "proxy: {}", proxied.text());

    wait_until(WAIT, "only_b on i2", || rows(&rig.i2, "autogen", "only_b").len() == 3);
    wait_until(WAIT, "other on i1", || rows(&rig.i1, "autogen", "other").len() == 2);
    wait_until(WAIT, "cpu on i1 and i2", || {
        rows(&rig.i1, "autogen", "cpu").len() == 1 && rows(&rig.i2, "autogen", "cpu").len() == 1
    });
    for (holder, m) in [(&rig.i2, "only_b"), (&rig.i1, "other"), (&rig.i1, "cpu"), (&rig.i2, "cpu")] {
        assert_eq!(show_series(holder, m), show_series(&reference, m), "series of {m}");
        assert_eq!(rows(holder, "autogen", m), rows(&reference, "autogen", m), "points of {m}");
        let fields = holder.values(DB, &format!("SHOW FIELD KEYS FROM {m}"));
        assert_eq!(fields, reference.values(DB, &format!("SHOW FIELD KEYS FROM {m}")));
    }
    // The keymap names only i2 for only_b: nothing of it on i1.
    assert!(show_series(&rig.i1, "only_b").is_empty());
    assert!(show_series(&rig.i2, "other").is_empty());
    let skipped = util::inspect::metric(&rig.proxy.addr(), "influx_proxy_prom_samples_skipped_total", &[]);
    assert_eq!(skipped, Some(1.0), "the NaN sample");

    // ±Inf: influxd 1.6.7 refuses the whole request (400, nothing stored); the proxy skips and counts the
    // sample and stores the rest, as NaN, so one odd value does not lose a whole Prometheus batch.
    let inf = prom::snappy(&prom::encode_write_request(&[series(
        &[("__name__", "inf_test")],
        &[(f64::INFINITY, 1_700_000_000_000), (f64::NEG_INFINITY, 1_700_000_000_001), (4.0, 1_700_000_000_002)],
    )]));
    let direct = snappy_post(&reference.addr(), &format!("/api/v1/prom/write?db={DB}"), &inf);
    assert_eq!(direct.status, 400, "influxd 1.6.7 on ±Inf: {}", direct.text());
    let proxied = snappy_post(&rig.proxy.addr(), &format!("/api/v1/prom/write?db={DB}"), &inf);
    assert_eq!(proxied.status, 204, "{}", proxied.text());
    wait_until(WAIT, "the finite sample", || rows(&rig.i1, "autogen", "inf_test").len() == 1);
    let skipped = util::inspect::metric(&rig.proxy.addr(), "influx_proxy_prom_samples_skipped_total", &[]);
    assert_eq!(skipped, Some(3.0));

    // The node's database rule and the usual answers.
    let r = snappy_post(&rig.proxy.addr(), "/api/v1/prom/write", &body);
    assert_eq!((r.status, r.json()["error"].clone()), (400, Value::from("database is required")));
    let r = http::request(&rig.proxy.addr(), "GET", "/api/v1/prom/write?db=db", &[], b"");
    assert_eq!(r.status, 405);
}

fn read_request(queries: &[Vec<u8>]) -> Vec<u8> {
    let mut req = Vec::new();
    for q in queries {
        req.extend_from_slice(&prom::read_request_of(q));
    }
    prom::snappy(&req)
}

/// A remote-read answer, decoded, with each series' labels sorted, series sorted.
fn decode_answer(r: &http::Response) -> Vec<Vec<OwnedSeries>> {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Encoding"), Some("snappy"));
    let mut raw = Vec::new();
    prom::unsnappy(&r.body, 1 << 30, &mut raw).expect("snappy answer");
    let mut results = prom::decode_read_response(&raw).expect("ReadResponse");
    for list in &mut results {
        for s in list.iter_mut() {
            s.labels.sort();
        }
        list.sort_by(|a, b| a.labels.cmp(&b.labels));
    }
    results
}

#[test]
fn prom_read_through_the_proxy_answers_what_the_holders_answer() {
    let rig = Rig::start(&[], &[]);
    let body = prom::snappy(&prom::encode_write_request(&remote_write()));
    let r = snappy_post(&rig.proxy.addr(), &format!("/api/v1/prom/write?db={DB}"), &body);
    assert_eq!(r.status, 204, "{}", r.text());
    wait_until(WAIT, "the remote write on its backends", || {
        rows(&rig.i2, "autogen", "only_b").len() == 3
            && rows(&rig.i1, "autogen", "other").len() == 2
            && rows(&rig.i2, "autogen", "cpu").len() == 1
    });

    let (start, end) = (1_600_000_000_000, 1_800_000_000_000);
    let eq = |name: &'static str| encode(start, end, &[(MatchType::Eq, "__name__", name)]);
    let path = format!("/api/v1/prom/read?db={DB}");
    let read = |addr: &str, queries: &[Vec<u8>]| decode_answer(&snappy_post(addr, &path, &read_request(queries)));

    // A metric one backend holds: exactly its answer.
    let only_b = read(&rig.proxy.addr(), &[eq("only_b")]);
    assert_eq!(only_b, read(&rig.i2.addr(), &[eq("only_b")]));
    assert_eq!(only_b[0].len(), 2, "{only_b:?}");
    // With a label matcher too.
    let api = encode(start, end, &[(MatchType::Eq, "__name__", "only_b"), (MatchType::Eq, "job", "api")]);
    let via_proxy = read(&rig.proxy.addr(), std::slice::from_ref(&api));
    assert_eq!(via_proxy, read(&rig.i2.addr(), &[api]));
    assert_eq!(via_proxy[0].len(), 1);
    // Replicated: one replica's answer.
    assert_eq!(read(&rig.proxy.addr(), &[eq("cpu")]), read(&rig.i1.addr(), &[eq("cpu")]));
    // A regex on the name: every backend asked, answers merged, replicas collapsed.
    let re = encode(start, end, &[(MatchType::Re, "__name__", "only_b|other|cpu")]);
    let merged = read(&rig.proxy.addr(), std::slice::from_ref(&re));
    let mut expected: Vec<OwnedSeries> = read(&rig.i1.addr(), std::slice::from_ref(&re)).remove(0);
    expected.extend(read(&rig.i2.addr(), std::slice::from_ref(&re)).remove(0));
    expected.sort_by(|a, b| a.labels.cmp(&b.labels));
    expected.dedup_by(|a, b| a.labels == b.labels);
    assert_eq!(merged, vec![expected]);
    // Several queries in one request (influxd itself takes one): one result each, in order.
    let several = read(&rig.proxy.addr(), &[eq("other"), eq("only_b"), eq("unrouted_metric")]);
    assert_eq!(several.len(), 3);
    assert_eq!(several[0], read(&rig.i1.addr(), &[eq("other")])[0]);
    assert_eq!(several[1], only_b[0]);
    assert!(several[2].is_empty());

    let r = snappy_post(&rig.proxy.addr(), &path, b"\x05garbage");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].is_string());
}

fn encode(start: i64, end: i64, matchers: &[(MatchType, &'static str, &'static str)]) -> Vec<u8> {
    let m: Vec<Matcher> = matchers
        .iter()
        .map(|&(kind, name, value)| Matcher { kind, name: name.as_bytes(), value: value.as_bytes() })
        .collect();
    prom::encode_query(start, end, &m)
}

#[test]
fn garbage_and_snappy_bombs_are_refused_and_nothing_is_stored() {
    let rig = Rig::start(&[], &["--max-body-bytes", "100000"]);
    let addr = rig.proxy.addr();
    let path = format!("/api/v1/prom/write?db={DB}");
    let reference = influxd_with_db();
    let garbage: &[&[u8]] = &[b"plain text, not snappy", &prom::snappy(b"\x0a\x05\x01"), &prom::snappy(b"\x0b\x00")];
    for body in garbage {
        let r = snappy_post(&addr, &path, body);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.json()["error"].is_string());
        // influxd refuses the same bodies.
        assert_eq!(snappy_post(&reference.addr(), &path, body).status, 400);
    }
    // A header announcing 1 GiB, and a real body that decompresses past the limit.
    let r = snappy_post(&addr, &path, &[0x80, 0x80, 0x80, 0x80, 0x04, 0x00]);
    assert_eq!(r.status, 413, "{}", r.text());
    let big = prom::encode_write_request(&[series(&[("__name__", "m"), ("t", &"x".repeat(200_000))], &[(1.0, 1)])]);
    let r = snappy_post(&addr, &path, &prom::snappy(&big));
    assert_eq!(r.status, 413, "{}", r.text());
    let r = snappy_post(&addr, &format!("/api/v1/prom/read?db={DB}"), &[0x80, 0x80, 0x80, 0x80, 0x04, 0x00]);
    assert_eq!(r.status, 413, "{}", r.text());

    // A body the Content-Length says is too large: 413 at once, before it is sent.
    let mut conn = HttpConn::connect(&addr);
    conn.send_raw(b"POST /api/v1/prom/write?db=db HTTP/1.1\r\nHost: x\r\nContent-Length: 100001\r\n\r\n");
    let r = conn.read_response();
    assert_eq!(r.status, 413);

    std::thread::sleep(Duration::from_millis(300));
    for i in [&rig.i1, &rig.i2] {
        assert!(i.values(DB, "SHOW MEASUREMENTS").is_empty(), "nothing stored");
    }
}

#[test]
fn every_503_carries_retry_after() {
    // A backend nobody listens on, a small outbox cap, a tiny in-flight budget.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let redis = Redis::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut fields: Vec<(&str, &str)> = FAST.to_vec();
    fields.push(("maxdisk", "196608"));
    ProxyConfig::new()
        .backend("dead", &dead, &fields)
        .keymap("_default_", &["dead"])
        .node("l1", &[("listenaddr", listen.as_str()), ("interval", "0")])
        .write_to(&redis);
    let proxy = Proxy::builder(&redis, "l1", port)
        .threads(1)
        .arg("--segment-bytes")
        .arg("65536")
        .arg("--max-inflight-bytes")
        .arg("300000")
        .arg("--max-body-bytes")
        .arg("300000")
        .start();
    let addr = proxy.addr();
    let retry_after = |r: &http::Response| -> u64 {
        assert_eq!(r.status, 503, "{}", r.text());
        let v = r.header("Retry-After").unwrap_or_else(|| panic!("no Retry-After on {:?}", r.headers));
        v.parse().unwrap_or_else(|_| panic!("Retry-After {v:?}"))
    };

    // A query no backend can answer.
    let r = http::get(&addr, "/query?db=db&q=SELECT%20v%20FROM%20m%20WHERE%20time%20%3E%200");
    assert!(retry_after(&r) >= 1);
    // A remote read no backend can answer.
    let q = encode(0, 1, &[(MatchType::Eq, "__name__", "m")]);
    let r = snappy_post(&addr, "/api/v1/prom/read?db=db", &read_request(&[q]));
    assert!(retry_after(&r) >= 1);
    // More request data in flight than the budget: one body still arriving holds most of it.
    let mut holder = HttpConn::connect(&addr);
    holder.send_raw(b"POST /write?db=db HTTP/1.1\r\nHost: x\r\nContent-Length: 250000\r\n\r\nm v=1\n");
    std::thread::sleep(Duration::from_millis(200));
    let r = http::post(&addr, "/write?db=db", &vec![b'x'; 100_000]);
    assert!(retry_after(&r) >= 1);
    drop(holder);
    // The outbox of the only backend is full.
    let line = format!("m,t={} v=1 1\n", "x".repeat(100));
    let body = line.repeat(500);
    let mut refused = None;
    for _ in 0..100 {
        let r = http::post(&addr, "/write?db=db", body.as_bytes());
        if r.status == 503 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let r = refused.expect("the full outbox answers 503");
    assert!(retry_after(&r) >= 1);
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("retry later")), "{}", r.text());
}

#[test]
fn a_backend_503_relayed_to_the_client_carries_retry_after() {
    let fake = util::FakeBackend::start();
    fake.set_query(util::Behavior::respond(503, "{\"error\":\"busy\"}\n"));
    let redis = Redis::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    ProxyConfig::new()
        .backend("f", &fake.url(), FAST)
        .keymap("_default_", &["f"])
        .node("l1", &[("listenaddr", listen.as_str()), ("interval", "0")])
        .write_to(&redis);
    let proxy = Proxy::builder(&redis, "l1", port).start();
    let r = http::get(&proxy.addr(), "/query?db=db&q=SELECT%20v%20FROM%20m%20WHERE%20time%20%3E%200");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(r.json()["error"], "busy");
}
