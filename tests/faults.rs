//! What the proxy does with each kind of backend failure (see the answer table in
//! `src/outbox/mod.rs`): 5xx, timeouts and resets keep the data and retry it until it is accepted;
//! 400 drops the batch once and counts it; "database not found" / "retention policy not found" park
//! the batch per target without holding up other targets; a failing health check stops sending
//! until the backend is back; a full outbox disk (`maxdisk`) drops lines for that backend, counted,
//! and answers 503 only when no backend of a line could store it. Throughout, the other backends
//! get their data without delay.
//!
//! A `FakeBackend` plays the failures a real InfluxDB cannot produce on demand; everything else is a
//! real `influxd`, checked by querying it directly.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use util::http;
use util::inspect;
use util::load::{self, LoadSpec};
use util::site::{DB, FAST, FAST_RETRY, Site, WAIT, fast_with, influxd_with_db};
use util::{Behavior, FakeBackend, Influxd, ProxyConfig, wait_until};

/// Runs an InfluxQL statement on `influxd` directly, asserting success.
fn influx_exec(influxd: &Influxd, q: &str) {
    let path = format!("/query?{}", http::query_string(&[("q", q)]));
    let r = http::request(&influxd.addr(), "POST", &path, &[], b"");
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    assert!(r.json()["results"][0]["error"].is_null(), "{q}: {}", r.text());
}

/// From now on the fake answers /write with `behavior`, and its records hold only requests that
/// got that answer: it is stopped (no request half answered), cleared, and started again.
fn switch_fake(fake: &FakeBackend, behavior: Behavior) {
    fake.stop();
    fake.clear();
    fake.set_write(behavior);
    fake.start_again();
}

/// The lines of `ids` as writer `w` of `spec` wrote them.
fn lines_of(spec: &LoadSpec, w: usize, ids: &BTreeSet<u64>) -> BTreeSet<String> {
    ids.iter().map(|&id| spec.line(w, id)).collect()
}

/// Waits until the fake holds every line of `expected`, lets retries settle, then checks that each
/// arrived exactly once and nothing else did.
fn assert_fake_got_exactly(fake: &FakeBackend, expected: &BTreeSet<String>) {
    wait_until(WAIT, "every acknowledged line on the fake", || {
        let got: BTreeSet<String> = fake.write_lines().into_iter().collect();
        expected.iter().all(|l| got.contains(l))
    });
    // Kept sleep: an absence (a duplicate sent by a retry) can only be watched for a while.
    std::thread::sleep(Duration::from_millis(700));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in fake.write_lines() {
        *counts.entry(l).or_default() += 1;
    }
    let unknown: Vec<&String> = counts.keys().filter(|l| !expected.contains(*l)).collect();
    assert!(unknown.is_empty(), "unexpected lines on the fake: {:?}", &unknown[..unknown.len().min(5)]);
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{} lines accepted more than once, e.g. {:?}", twice.len(), &twice[..twice.len().min(3)]);
}

/// Requests to /write on the fake that carry `line`.
fn sends_of(fake: &FakeBackend, line: &str) -> usize {
    fake.requests_to("/write").iter().filter(|r| r.text().lines().any(|l| l == line)).count()
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970").as_nanos() as u64
}

// ------------------------------------------------------------------------------------------------ 1, 2, 5, 6

/// Replica `f` fails every write with `failure` while replica `a` (a real influxd) works; then `f`
/// recovers. `a` gets everything at once, `f` keeps and retries its data and gets every line once.
fn failing_replica_then_ok(failure: Behavior, f_fields: &[(&str, &str)]) {
    let a = influxd_with_db();
    let fake = FakeBackend::start();
    fake.set_write(failure);
    let config = ProxyConfig::new()
        .backend("a", &a.url(), FAST)
        .backend("f", &fake.url(), &fast_with(f_fields))
        .keymap("rep", &["a", "f"]);
    let site = Site::new(config, "faults-data");
    let proxy = site.proxy(2, &[]);
    let spec = LoadSpec { lines_per_request: 20, ..site.spec(DB, "rep") };

    let first = load::write_acked(&spec, 0, 0, 10, Duration::from_millis(20));
    let t = Instant::now();
    load::wait_for_ids(&a, DB, "rep", &first, &first, Duration::from_secs(2));
    let a_latency = t.elapsed();

    // f gets the data, fails, and gets the same data again: kept and retried.
    let first_line = spec.line(0, 0);
    wait_until(Duration::from_secs(5), "f receiving its first batch again", || sends_of(&fake, &first_line) >= 2);
    // a is not held up by f's trouble: later writes reach it at once too.
    let second = load::write_acked(&spec, 1, 100_000, 5, Duration::from_millis(20));
    let t = Instant::now();
    let both: BTreeSet<u64> = first.union(&second).copied().collect();
    load::wait_for_ids(&a, DB, "rep", &both, &both, Duration::from_secs(2));
    let a_latency = a_latency.max(t.elapsed());
    assert!(a_latency < Duration::from_millis(1500), "a got its data only after {a_latency:?}");
    let retries = inspect::metric(&proxy.addr(), "influx_proxy_backend_retries_total", &[("backend", "f")]);
    assert!(retries.is_some_and(|r| r >= 1.0), "retries_total for f: {retries:?}");
    let health = site.health("f");
    assert!(health["backlog_records"].as_u64().is_some_and(|n| n > 0), "f's data not kept: {health}");
    assert!(health["last_error"].is_string(), "f's failure not in /health: {health}");

    switch_fake(&fake, Behavior::Ok);
    let mut expected = lines_of(&spec, 0, &first);
    expected.extend(lines_of(&spec, 1, &second));
    assert_fake_got_exactly(&fake, &expected);
    wait_until(WAIT, "f's backlog drained", || site.health("f")["backlog_records"] == 0);
    assert_eq!(a.count(DB, "rep"), both.len() as u64);
    let dropped: f64 = ["bad_data", "disk", "rejected"]
        .iter()
        .filter_map(|r| {
            inspect::metric(
                &proxy.addr(),
                "influx_proxy_backend_lines_dropped_total",
                &[("backend", "f"), ("reason", r)],
            )
        })
        .sum();
    assert_eq!(dropped, 0.0, "lines dropped for f although it only failed temporarily");
}

#[test]
fn http_500_keeps_and_retries_while_other_replica_flows() {
    failing_replica_then_ok(Behavior::respond(500, r#"{"error":"engine: write failed: disk I/O error"}"#), &[]);
}

#[test]
fn http_503_keeps_and_retries_while_other_replica_flows() {
    failing_replica_then_ok(Behavior::respond(503, r#"{"error":"service unavailable"}"#), &[]);
}

#[test]
fn hang_past_timeout_is_retried_while_other_replica_flows() {
    failing_replica_then_ok(Behavior::Hang, &[("timeout", "300")]);
}

#[test]
fn connection_resets_are_retried_while_other_replica_flows() {
    failing_replica_then_ok(Behavior::Reset, &[]);
}

// ------------------------------------------------------------------------------------------------ 3

#[test]
fn http_400_drops_the_batch_once_counts_it_and_later_batches_flow() {
    let fake = FakeBackend::start();
    fake.set_write(Behavior::respond(
        400,
        r#"{"error":"partial write: field type conflict: input field \"v\" on measurement \"bad\" is type integer, already exists as type float dropped=25"}"#,
    ));
    let config = ProxyConfig::new().backend("f", &fake.url(), FAST).keymap("bad", &["f"]);
    let site = Site::new(config, "faults-data");
    let proxy = site.proxy(2, &[]);
    let spec = LoadSpec { lines_per_request: 25, ..site.spec(DB, "bad") };

    let bad = load::write_acked(&spec, 0, 0, 1, Duration::ZERO);
    let bad_line = spec.line(0, 0);
    wait_until(WAIT, "the batch reaching the fake", || sends_of(&fake, &bad_line) >= 1);
    // Kept sleep: an absence is watched for several retry periods; a retried batch would show again.
    std::thread::sleep(4 * FAST_RETRY);
    assert_eq!(sends_of(&fake, &bad_line), 1, "the 400 batch was sent more than once");
    let dropped = inspect::metric(
        &proxy.addr(),
        "influx_proxy_backend_lines_dropped_total",
        &[("backend", "f"), ("reason", "bad_data")],
    );
    assert_eq!(dropped, Some(bad.len() as f64), "lines_dropped_total{{reason=\"bad_data\"}} for f");
    let health = site.health("f");
    assert!(health["last_error"].as_str().is_some_and(|e| e.contains("400")), "{health}");

    fake.set_write(Behavior::Ok);
    let good = load::write_acked(&spec, 1, 1000, 3, Duration::from_millis(20));
    let mut expected = lines_of(&spec, 0, &bad);
    expected.extend(lines_of(&spec, 1, &good));
    assert_fake_got_exactly(&fake, &expected);
    assert_eq!(sends_of(&fake, &bad_line), 1, "the 400 batch was sent again later");
}

// ------------------------------------------------------------------------------------------------ 4

#[test]
fn missing_database_and_retention_policy_park_only_their_target() {
    let a = Influxd::start();
    a.create_db("y");
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let site = Site::new(config, "faults-data");
    let _proxy = site.proxy(2, &[]);
    // Recent timestamps: retention policy `nope` will keep one hour only.
    let base = now_ns() / 1_000_000_000 * 1_000_000_000 - 600_000_000_000;
    let spec = |query: &str, m: &str| LoadSpec {
        query: query.to_string(),
        lines_per_request: 10,
        base_ns: base,
        ..LoadSpec::new(&site.addr(), DB, m)
    };
    let (to_x, to_y) = (spec("db=x", "px"), spec("db=y", "py"));
    let parked = || site.health("a")["lines_parked_total"].as_u64().unwrap_or(0);

    // Database x does not exist: its batches are parked, y's keep arriving.
    let mut x = load::write_acked(&to_x, 0, 0, 5, Duration::from_millis(20));
    let mut y = load::write_acked(&to_y, 0, 0, 5, Duration::from_millis(20));
    load::wait_for_ids(&a, "y", "py", &y, &y, Duration::from_secs(3));
    wait_until(Duration::from_secs(5), "x's lines parked (/health lines_parked_total)", || parked() > 0);
    x.extend(load::write_acked(&to_x, 0, 1000, 3, Duration::from_millis(20)));
    y.extend(load::write_acked(&to_y, 0, 1000, 3, Duration::from_millis(20)));
    load::wait_for_ids(&a, "y", "py", &y, &y, Duration::from_secs(2));
    // Every x line, the later ones too, waits in the parked log before x appears.
    wait_until(WAIT, "every x line parked", || parked() >= x.len() as u64);
    influx_exec(&a, "CREATE DATABASE x");
    let stored = load::wait_for_ids(&a, "x", "px", &x, &x, WAIT);
    assert_eq!(stored.len(), x.len());

    // Retention policy `nope` does not exist on y: parked too, while y's default policy flows.
    let parked_before = parked();
    let to_rp = spec("db=y&rp=nope", "prp");
    let to_y2 = spec("db=y", "py2");
    let mut rp = load::write_acked(&to_rp, 0, 0, 5, Duration::from_millis(20));
    let mut y2 = load::write_acked(&to_y2, 0, 0, 5, Duration::from_millis(20));
    load::wait_for_ids(&a, "y", "py2", &y2, &y2, Duration::from_secs(3));
    wait_until(Duration::from_secs(5), "rp=nope lines parked", || parked() > parked_before);
    rp.extend(load::write_acked(&to_rp, 0, 1000, 3, Duration::from_millis(20)));
    y2.extend(load::write_acked(&to_y2, 0, 1000, 3, Duration::from_millis(20)));
    load::wait_for_ids(&a, "y", "py2", &y2, &y2, Duration::from_secs(2));
    wait_until(WAIT, "every rp=nope line parked", || parked() >= parked_before + rp.len() as u64);
    influx_exec(&a, "CREATE RETENTION POLICY nope ON y DURATION 1h REPLICATION 1");
    let stored = load::wait_for_ids_from(&a, "y", "\"y\".\"nope\".\"prp\"", &rp, &rp, WAIT);
    assert_eq!(stored.len(), rp.len());
    assert_eq!(load::count_from(&a, "y", "\"y\".\"autogen\".\"prp\""), 0, "rp=nope lines landed in autogen");
    wait_until(WAIT, "a's backlog drained", || site.health("a")["backlog_records"] == 0);
}

#[test]
fn large_bodies_stored_gzip_are_parked_and_delivered_whole() {
    // Bodies that are batches as they stand are stored gzip (the client's own bytes, or compressed by
    // the proxy); parked for a missing database, they must come out as the same gzip records.
    let a = Influxd::start();
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("_default_", &["a"]);
    let site = Site::new(config, "faults-data");
    let _proxy = site.proxy(2, &[]);
    let parked = || site.health("a")["lines_parked_total"].as_u64().unwrap_or(0);
    let spec = |gzip: bool| LoadSpec { query: "db=x".into(), lines_per_request: 2000, gzip, ..site.spec(DB, "pgz") };
    let mut ids = load::write_acked(&spec(true), 0, 0, 3, Duration::ZERO);
    ids.extend(load::write_acked(&spec(false), 1, 100_000, 2, Duration::ZERO));
    wait_until(WAIT, "every line parked", || parked() >= ids.len() as u64);
    influx_exec(&a, "CREATE DATABASE x");
    let stored = load::wait_for_ids(&a, "x", "pgz", &ids, &ids, WAIT);
    assert_eq!(stored.len(), ids.len());
}

// ------------------------------------------------------------------------------------------------ 7

#[test]
fn failing_health_check_marks_backend_down_and_data_waits_for_it() {
    let fake = FakeBackend::start();
    let config = ProxyConfig::new().backend("f", &fake.url(), FAST).keymap("hc", &["f"]);
    let site = Site::new(config, "faults-data");
    let proxy = site.proxy(2, &[]);
    let up_metric = || inspect::metric(&proxy.addr(), "influx_proxy_backend_up", &[("backend", "f")]);
    wait_until(Duration::from_secs(3), "f up", || site.health("f")["up"] == true);
    assert_eq!(up_metric(), Some(1.0));

    fake.set_ping(Behavior::respond(500, r#"{"error":"not ready"}"#));
    let t = Instant::now();
    wait_until(Duration::from_secs(3), "/health showing f down", || site.health("f")["up"] == false);
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1000), "down only {took:?} after /ping started failing (checkinterval 100)");
    assert_eq!(up_metric(), Some(0.0), "influx_proxy_backend_up for f");
    let health = site.health("f");
    assert!(health["last_error"].as_str().is_some_and(|e| e.contains("500")), "{health}");

    // Written while f is down: acknowledged, kept, not sent.
    let spec = LoadSpec { lines_per_request: 20, ..site.spec(DB, "hc") };
    let ids = load::write_acked(&spec, 0, 0, 5, Duration::from_millis(20));
    // Kept sleep: nothing may be sent to f during several batch intervals and health checks.
    std::thread::sleep(Duration::from_millis(600));
    let early = lines_of(&spec, 0, &ids).iter().filter(|l| sends_of(&fake, l) > 0).count();
    assert_eq!(early, 0, "lines were sent to a backend whose health check fails");
    assert!(site.health("f")["backlog_records"].as_u64().is_some_and(|n| n > 0));

    fake.set_ping(Behavior::Ok);
    wait_until(Duration::from_secs(3), "/health showing f up again", || site.health("f")["up"] == true);
    assert_eq!(up_metric(), Some(1.0), "influx_proxy_backend_up for f after recovery");
    assert_fake_got_exactly(&fake, &lines_of(&spec, 0, &ids));
}

// ------------------------------------------------------------------------------------------------ 8

#[test]
fn disk_cap_with_two_workers() {
    disk_cap_drops_lines_for_the_full_backend_only_and_503_when_nothing_can_store(2);
}

/// More workers than the cap has segments: each worker's last segment stays on disk once
/// acknowledged, and must not keep the backend's lines out after it drained.
#[test]
fn disk_cap_with_four_workers() {
    disk_cap_drops_lines_for_the_full_backend_only_and_503_when_nothing_can_store(4);
}

fn disk_cap_drops_lines_for_the_full_backend_only_and_503_when_nothing_can_store(threads: usize) {
    const SEGMENT: u64 = 65536;
    let workers = threads as u64;
    let max_disk = (3 * SEGMENT).to_string();
    let a = influxd_with_db();
    let mut b = influxd_with_db();
    let config = ProxyConfig::new()
        .backend("a", &a.url(), FAST)
        .backend("b", &b.url(), &fast_with(&[("maxdisk", &max_disk)]))
        .keymap("both", &["a", "b"])
        .keymap("solo", &["b"]);
    let site = Site::new(config, "faults-data");
    let proxy = site.proxy(threads, &["--segment-bytes", "65536"]);
    b.stop();
    wait_until(WAIT, "b reported down", || site.health("b")["up"] == false);

    // Replicated lines: always 204 (a takes them), b keeps what fits.
    let both = LoadSpec { lines_per_request: 200, ..site.spec(DB, "both") };
    let mut acked = BTreeSet::new();
    for w in 0..6u64 {
        acked.extend(load::write_acked(&both, w as usize, w * 100_000, 10, Duration::ZERO));
    }
    let bound = 3 * SEGMENT + workers * SEGMENT;
    let on_disk = inspect::segment_bytes_on_disk(site.data.path(), "b");
    assert!(on_disk <= bound, "b's segment files hold {on_disk} bytes, cap {} (+ one segment per worker)", 3 * SEGMENT);
    let health = site.health("b");
    assert!(health["disk_bytes"].as_u64().is_some_and(|d| d <= bound), "{health}");
    let dropped = inspect::metric(
        &proxy.addr(),
        "influx_proxy_backend_lines_dropped_total",
        &[("backend", "b"), ("reason", "disk")],
    );
    assert!(dropped.is_some_and(|d| d > 0.0), "lines_dropped_total{{backend=\"b\",reason=\"disk\"}}: {dropped:?}");
    assert_eq!(
        inspect::metric(
            &proxy.addr(),
            "influx_proxy_backend_lines_dropped_total",
            &[("backend", "a"), ("reason", "disk")]
        ),
        Some(0.0)
    );
    load::wait_for_ids(&a, DB, "both", &acked, &acked, WAIT);

    // Lines only b could store: 503 with an InfluxDB-style error once b's cap is reached.
    let solo = LoadSpec { lines_per_request: 200, ..site.spec(DB, "solo") };
    let (mut solo_acked, mut solo_attempted) = (BTreeSet::new(), BTreeSet::new());
    let mut refused = None;
    for r in 0..100u64 {
        let ids: BTreeSet<u64> = (r * 1000..r * 1000 + solo.lines_per_request).collect();
        let body: String = ids.iter().map(|&id| solo.line(0, id) + "\n").collect();
        solo_attempted.extend(ids.iter().copied());
        let answer = http::post(&site.addr(), &format!("/write?db={DB}"), body.as_bytes());
        match answer.status {
            204 => solo_acked.extend(ids),
            503 => {
                refused = Some(answer);
                break;
            }
            s => panic!("solo write {r}: unexpected {s}: {}", answer.text()),
        }
    }
    let refused = refused.expect("no 503 although b's outbox is full and no other backend takes solo");
    let error = refused.json()["error"].as_str().map(String::from);
    assert!(error.as_ref().is_some_and(|e| !e.is_empty()), "503 without an error message: {}", refused.text());
    assert!(refused.header("X-Influxdb-Error").is_some(), "503 without X-Influxdb-Error: {refused:?}");
    assert!(refused.header("X-Influxdb-Version").is_some(), "503 without X-Influxdb-Version: {refused:?}");

    // b returns and drains: writes for it are taken again.
    b.start_again();
    wait_until(WAIT, "b's backlog drained", || site.health("b")["backlog_records"] == 0);
    // On several connections, so that every worker takes some, and more than one segment's worth
    // per worker, so that every worker needs a new segment (the old ones are all acknowledged).
    for c in 0..8u64 {
        let mut conn = http::HttpConn::connect(&site.addr());
        for r in 0..5u64 {
            let first = 900_000 + c * 10_000 + r * solo.lines_per_request;
            let ids: BTreeSet<u64> = (first..first + solo.lines_per_request).collect();
            let body: String = ids.iter().map(|&id| solo.line(0, id) + "\n").collect();
            conn.send("POST", &format!("/write?db={DB}"), &[], body.as_bytes());
            let answer = conn.read_response();
            solo_attempted.extend(ids.iter().copied());
            assert_eq!(
                answer.status,
                204,
                "connection {c}, request {r}: a write for b alone after b came back and drained its backlog: \
                 {}; /health of b: {}; b's segment files: {:?}",
                answer.text(),
                site.health("b"),
                inspect::segment_files(site.data.path(), "b")
            );
            solo_acked.extend(ids);
            // Paces the requests, so they spread over several batches.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    load::wait_for_ids(&b, DB, "solo", &solo_acked, &solo_attempted, WAIT);
    let on_b: BTreeSet<u64> = load::stored_ids(&b, DB, "both").into_iter().collect();
    assert!(on_b.is_subset(&acked), "b holds replicated lines that were never acknowledged");
    assert!(on_b.len() < acked.len(), "b holds every replicated line although lines were dropped");
}

// ------------------------------------------------------------------------------------------------ 9

/// A backend that is up but takes batches more slowly than a writer sends them: once the backlog has
/// grown by `--pause-backlog-bytes` the proxy stops reading the writer (TCP slows it down) instead of
/// growing the backlog, and every acknowledged line arrives once. A backend that is down pauses no one:
/// its backlog is what the outbox is for. Nor does that backlog, once the backend is back, pause writers
/// who write more slowly than it drains.
#[test]
fn slow_backend_pauses_writers_and_a_down_one_does_not() {
    const LIMIT: u64 = 128 << 10;
    let fake = FakeBackend::start();
    // 1000-line batches, one every 50 ms at most: about 0.8 MB/s of these lines.
    fake.set_write(Behavior::delay(50, Behavior::Ok));
    let config =
        ProxyConfig::new().backend("f", &fake.url(), &fast_with(&[("maxrowlimit", "1000")])).keymap("slow", &["f"]);
    let site = Site::new(config, "pause-data");
    let limit = LIMIT.to_string();
    let proxy = site.proxy(1, &["--segment-bytes", "32768", "--pause-backlog-bytes", &limit]);
    let spec = LoadSpec { lines_per_request: 500, ..site.spec(DB, "slow") };

    // 2 MB of lines, sent as fast as the proxy reads them, while /health is watched.
    let writer = {
        let spec = spec.clone();
        std::thread::spawn(move || load::write_acked(&spec, 0, 0, 100, Duration::ZERO))
    };
    let mut most = 0;
    while !writer.is_finished() {
        most = most.max(site.health("f")["backlog_bytes"].as_u64().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
    }
    let acked = writer.join().expect("writer");
    // The limit, plus what can come on top before a pause: the segment being filled, the request being
    // read and the open batch.
    assert!(most <= 4 * LIMIT, "the backlog grew to {most} bytes although the backend took batches");
    let pauses = inspect::metric(&proxy.addr(), "influx_proxy_writer_pauses_total", &[]);
    assert!(pauses.is_some_and(|p| p >= 1.0), "writer_pauses_total: {pauses:?}");
    assert_fake_got_exactly(&fake, &lines_of(&spec, 0, &acked));

    // Down: the same amount is taken at once, far past the limit.
    fake.stop();
    fake.clear();
    let t = Instant::now();
    let while_down = load::write_acked(&spec, 1, 0, 100, Duration::ZERO);
    assert!(t.elapsed() < Duration::from_secs(10), "writes took {:?} while the backend was down", t.elapsed());
    let backlog = site.health("f")["backlog_bytes"].as_u64().unwrap_or(0);
    assert!(backlog > 4 * LIMIT, "backlog of {backlog} bytes while down: were the writes held back?");

    // Back (as slow as before): a writer slower than the drain is not paused by the backlog.
    let pauses = inspect::metric(&proxy.addr(), "influx_proxy_writer_pauses_total", &[]);
    fake.start_again();
    wait_until(WAIT, "the first batch delivered after the outage", || !fake.write_lines().is_empty());
    let trickle = LoadSpec { lines_per_request: 100, ..spec.clone() };
    let after = load::write_acked(&trickle, 2, 0, 10, Duration::from_millis(20));
    let backlog = site.health("f")["backlog_bytes"].as_u64().unwrap_or(0);
    assert!(backlog > LIMIT, "the outage's backlog ({backlog} bytes left) drained before the test wrote on");
    let pauses_after = inspect::metric(&proxy.addr(), "influx_proxy_writer_pauses_total", &[]);
    assert_eq!(pauses_after, pauses, "a writer was paused by the backlog the outage left");
    let mut expected = lines_of(&spec, 1, &while_down);
    expected.extend(lines_of(&trickle, 2, &after));
    assert_fake_got_exactly(&fake, &expected);
}

/// Stopping the proxy while a writer is paused (behind a batch the backend has not answered yet) answers
/// the request waiting in its socket: a stop resumes paused connections and reads them before closing.
#[test]
fn a_writer_paused_at_stop_gets_its_answer() {
    let fake = FakeBackend::start();
    fake.set_write(Behavior::delay(300, Behavior::Ok));
    let fields = fast_with(&[("maxrowlimit", "1000"), ("timeout", "20000")]);
    let config = ProxyConfig::new().backend("f", &fake.url(), &fields).keymap("slow", &["f"]);
    let site = Site::new(config, "pause-stop-data");
    let args = ["--segment-bytes", "32768", "--pause-backlog-bytes", "65536", "--shutdown-timeout", "3"];
    let mut proxy = site.proxy(1, &args);
    let spec = LoadSpec { lines_per_request: 500, ..site.spec(DB, "slow") };
    let addr = site.addr();
    // Writes until told to close; the number of requests answered, or what went wrong.
    let writer = std::thread::spawn(move || {
        let mut conn = http::HttpConn::connect(&addr);
        conn.set_timeout(WAIT);
        for r in 0..100_000u64 {
            let body: String = (r * 500..(r + 1) * 500).map(|id| spec.line(0, id) + "\n").collect();
            if let Err(e) = conn.try_send("POST", &format!("/write?db={DB}"), &[], body.as_bytes()) {
                return Err(format!("request {r}: not sent: {e}"));
            }
            match conn.try_read_response() {
                Ok(a) if a.status == 204 && a.header("connection") == Some("close") => return Ok(r + 1),
                Ok(a) if a.status == 204 => {}
                Ok(a) => return Err(format!("request {r}: {} {}", a.status, a.text())),
                Err(e) => return Err(format!("request {r}: no answer: {e}")),
            }
        }
        Err("never told to close".to_string())
    });
    wait_until(WAIT, "the writer paused", || {
        inspect::metric(&site.addr(), "influx_proxy_writer_pauses_total", &[]).is_some_and(|p| p >= 1.0)
    });
    // From now on no batch is answered: the writer stays paused until the stop.
    fake.set_write(Behavior::Hang);
    // Kept sleep: the batches sent before are answered, and the writer is paused again behind the next.
    std::thread::sleep(Duration::from_secs(1));
    proxy.signal(libc::SIGTERM);
    let answered = writer.join().expect("writer thread");
    assert!(answered.is_ok(), "the writer paused at stop: {answered:?}");
    assert!(proxy.wait_exit(WAIT).is_some(), "the proxy did not stop");
}
