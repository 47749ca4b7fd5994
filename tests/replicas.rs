//! Replicas readers can trust (issue #9): reads avoid replicas that are behind, and repair/rebalance jobs
//! make replicas whole. Black box: real influxd and redis-server, the proxy's HTTP API; results checked
//! on the InfluxDB servers directly.

mod util;

use std::time::{Duration, Instant};

use serde_json::Value;
use util::http;
use util::site::{DB, FAST, Site, WAIT, influxd_with_db};
use util::{Influxd, Proxy, ProxyConfig, wait_until};

/// 2023-11-14T22:13:20Z: fixed, so windows (7-day shard groups) are the same on every run.
const BASE: i64 = 1_700_000_000_000_000_000;
const HOUR: i64 = 3_600_000_000_000;

/// `per_series` points for each host, one per `step`, every field type, and a tag and a field both
/// named `t`.
fn points(measurement: &str, hosts: &[&str], per_series: i64, step: i64) -> String {
    let mut out = String::new();
    for (h, host) in hosts.iter().enumerate() {
        for i in 0..per_series {
            let id = h as i64 * 1_000_000 + i;
            out.push_str(&format!(
                "{measurement},host={host},t=tag\\ {h} v={},i={id}i,s=\"s \\\"{id}\\\"\",b={},t={}i {}\n",
                id as f64 * 0.5 + 0.1,
                i % 2 == 0,
                i % 7,
                BASE + i * step
            ));
        }
    }
    out
}

fn write(addr: &str, body: &str) {
    for chunk in body.split_inclusive('\n').collect::<Vec<_>>().chunks(5000) {
        let path = format!("/write?db={DB}");
        let r = http::request(addr, "POST", &path, &[], chunk.concat().as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

/// Waits until every line stored for these backends was acknowledged by them (open batches too).
fn drained(addr: &str, backends: &[&str]) {
    for b in backends {
        wait_until(WAIT, &format!("backend {b} drained"), || {
            let text = http::get(addr, "/metrics").text();
            let m = |name: &str| util::inspect::metric_in(&text, name, &[("backend", b)]).unwrap_or(-1.0);
            // After a restart, lines recovered from the logs are sent without being counted in again.
            m("influx_proxy_backend_lines_sent_total") >= m("influx_proxy_backend_lines_in_total")
                && m("influx_proxy_backend_backlog_records") == 0.0
        });
    }
}

fn start_job(addr: &str, path: &str) -> u64 {
    let r = http::request(addr, "POST", path, &[], b"");
    assert_eq!(r.status, 202, "{path}: {}", r.text());
    let job = r.json();
    assert_eq!(job["state"], "queued", "{job}");
    job["id"].as_u64().expect("job id")
}

fn job(addr: &str, id: u64) -> Value {
    let r = http::get(addr, &format!("/jobs/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits for the job to finish; asserts it is done without error.
fn finished(addr: &str, id: u64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let j = job(addr, id);
        match j["state"].as_str() {
            Some("done") => {
                assert!(j["error"].is_null(), "{j}");
                return j;
            }
            Some("failed") | Some("cancelled") => panic!("job ended badly: {j}"),
            _ if Instant::now() >= deadline => panic!("job not finished after {timeout:?}: {j}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// What must be identical on two replicas: per-series counts, every row, and the field keys.
fn snapshot(influxd: &Influxd, measurement: &str) -> Vec<Value> {
    let m = util::procs::quote_ident(measurement);
    [
        format!("SELECT count(*) FROM {m} GROUP BY *"),
        format!("SELECT * FROM {m} GROUP BY *"),
        format!("SHOW FIELD KEYS FROM {m}"),
        format!("SHOW TAG KEYS FROM {m}"),
    ]
    .iter()
    .map(|q| influxd.query(DB, q)["results"].clone())
    .collect()
}

fn series_count(influxd: &Influxd, measurement: &str) -> usize {
    let q = format!("SELECT count(*) FROM {} GROUP BY *", util::procs::quote_ident(measurement));
    influxd.query(DB, &q)["results"][0]["series"].as_array().map_or(0, Vec::len)
}

fn pair(label: &str) -> (Influxd, Influxd, Site, Proxy) {
    let a = influxd_with_db();
    let b = influxd_with_db();
    let config = ProxyConfig::new()
        .backend("a", &a.url(), FAST)
        .backend("b", &b.url(), FAST)
        .keymap("cpu", &["a", "b"])
        .keymap("_default_", &["a", "b"]);
    let site = Site::new(config, label);
    let proxy = site.proxy(2, &[]);
    (a, b, site, proxy)
}

#[test]
fn repair_restores_a_dropped_series_and_a_half_deleted_one_exactly() {
    let (a, b, site, proxy) = pair("replicas-repair");
    let addr = proxy.addr();
    // 5 series over ~12 days: two shard-group windows.
    write(&addr, &points("cpu", &["h0", "h1", "h2", "h3", "h4"], 300, HOUR));
    drained(&addr, &["a", "b"]);
    let reference = snapshot(&a, "cpu");
    assert_eq!(snapshot(&b, "cpu"), reference);

    b.query(DB, "DROP SERIES FROM cpu WHERE host = 'h1'");
    b.query(DB, &format!("DELETE FROM cpu WHERE host = 'h2' AND time < {}", BASE + 150 * HOUR));
    assert_eq!(series_count(&b, "cpu"), 4);
    assert!(b.count(DB, "cpu") < a.count(DB, "cpu"));
    let damaged = snapshot(&b, "cpu");

    // Dry run: compares and reports, changes nothing.
    let id = start_job(&addr, &format!("/repair?db={DB}&dry_run=true"));
    let j = finished(&addr, id, WAIT);
    assert_eq!(j["lines_copied"], 0, "{j}");
    assert!(j["lines_to_copy"].as_u64().unwrap() >= 450, "{j}");
    assert!(j["windows_differing"].as_u64().unwrap() >= 1, "{j}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(snapshot(&b, "cpu"), damaged, "a dry run changed b");

    let id = start_job(&addr, &format!("/repair?db={DB}"));
    let j = finished(&addr, id, WAIT);
    assert!(j["lines_copied"].as_u64().unwrap() >= 450, "{j}");
    assert_eq!(j["copied_to"]["a"], Value::Null, "nothing is written to the replica that agrees: {j}");
    drained(&addr, &["a", "b"]);
    assert_eq!(snapshot(&b, "cpu"), reference, "b is not an exact copy of a after the repair");
    assert_eq!(snapshot(&a, "cpu"), reference, "a changed");

    // Nothing left to do: a second run copies nothing.
    let id = start_job(&addr, &format!("/repair?db={DB}"));
    let j = finished(&addr, id, WAIT);
    assert_eq!(j["lines_copied"], 0, "{j}");
    assert_eq!(j["windows_differing"], 0, "{j}");
    assert!(j["windows_compared"].as_u64().unwrap() >= 2, "{j}");

    let list = http::get(&addr, "/jobs").json();
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(3), "{list}");
    let metrics = http::get(&addr, "/metrics").text();
    assert!(metrics.contains("influx_proxy_job_lines_copied_total"), "{metrics}");
    drop(site);
}

#[test]
fn differences_on_both_sides_are_filled_both_ways() {
    let (a, b, _site, proxy) = pair("replicas-both");
    let addr = proxy.addr();
    write(&addr, &points("cpu", &["x", "y", "z"], 100, HOUR / 2));
    write(&addr, &points("mem", &["m1", "m2"], 50, HOUR));
    drained(&addr, &["a", "b"]);
    let reference = (snapshot(&a, "cpu"), snapshot(&a, "mem"));
    a.query(DB, "DROP SERIES FROM cpu WHERE host = 'x'");
    b.query(DB, "DROP SERIES FROM cpu WHERE host = 'y'");
    b.query(DB, "DROP MEASUREMENT mem");
    // Same count, another value: only a comparison of values (`values=true`) sees it.
    b.write(DB, &format!("cpu,host=z,t=tag\\ 2 v=999 {}", BASE + 5 * (HOUR / 2)));

    let id = start_job(&addr, &format!("/repair?db={DB}&rp=autogen&rate=1000000&values=true"));
    let j = finished(&addr, id, WAIT);
    assert_eq!(j["copied_to"]["a"], 100, "{j}");
    // y and mem (200), and z's points in the window of the changed value (not all of z's 100).
    let to_b = j["copied_to"]["b"].as_u64().unwrap_or(0);
    assert!(to_b > 200 && to_b < 300, "{j}");
    drained(&addr, &["a", "b"]);
    assert_eq!((snapshot(&a, "cpu"), snapshot(&a, "mem")), reference);
    assert_eq!((snapshot(&b, "cpu"), snapshot(&b, "mem")), reference);
}

#[test]
fn rebalance_copies_history_to_the_new_holder_and_cleanup_removes_it_from_the_old() {
    let a = influxd_with_db();
    let b = influxd_with_db();
    let config = |mem: &[&str]| {
        ProxyConfig::new()
            .backend("a", &a.url(), FAST)
            .backend("b", &b.url(), FAST)
            .keymap("cpu", &["a", "b"])
            .keymap("mem", mem)
    };
    let site = Site::new(config(&["a"]), "replicas-rebalance");
    let proxy = site.proxy(2, &[]);
    let addr = proxy.addr();
    write(&addr, &points("mem", &["m1", "m2", "m3"], 200, HOUR));
    write(&addr, &points("cpu", &["c1"], 20, HOUR));
    drained(&addr, &["a", "b"]);
    let history = snapshot(&a, "mem");
    assert_eq!(b.count(DB, "mem"), 0);

    // mem moves from a to b: new lines go to b, its history must follow.
    config(&["b"]).node("l1", &[("listenaddr", &site.addr()), ("interval", "0")]).write_to(&site.redis);
    assert_eq!(http::get(&addr, "/reload").status, 204);

    let id = start_job(&addr, &format!("/rebalance?db={DB}"));
    let j = finished(&addr, id, WAIT);
    assert_eq!(j["copied_to"]["b"], 600, "{j}");
    assert_eq!(j["lines_deleted"], 0, "{j}");
    drained(&addr, &["a", "b"]);
    assert_eq!(snapshot(&b, "mem"), history);
    assert_eq!(snapshot(&a, "mem"), history, "without cleanup the old copy stays");

    let id = start_job(&addr, &format!("/rebalance?db={DB}&cleanup=true"));
    let j = finished(&addr, id, WAIT);
    assert_eq!(j["lines_copied"], 0, "{j}");
    assert_eq!(j["lines_deleted"], 600, "{j}");
    assert_eq!(a.count(DB, "mem"), 0, "the old holder still has mem");
    assert_eq!(snapshot(&b, "mem"), history, "the holder lost data");
    assert_eq!(a.count(DB, "cpu"), 20, "a measurement a still holds was touched");
}

#[test]
fn a_job_killed_mid_copy_resumes_after_restart_and_finishes() {
    let (a, b, _site, mut proxy) = pair("replicas-kill");
    let addr = proxy.addr();
    let hosts: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    write(&addr, &points("cpu", &hosts, 1000, 1_000_000_000));
    drained(&addr, &["a", "b"]);
    let reference = snapshot(&a, "cpu");
    b.query(DB, "DROP MEASUREMENT cpu");

    // 20,000 lines at 4,000 lines/s: about 5 s.
    let id = start_job(&addr, &format!("/repair?db={DB}&rate=4000"));
    wait_until(WAIT, "the job copying", || job(&addr, id)["lines_copied"].as_u64().unwrap_or(0) >= 4000);
    proxy.kill9();
    proxy.restart();
    let j = finished(&addr, id, Duration::from_secs(30));
    assert!(j["lines_copied"].as_u64().unwrap() < 40_000, "the job started over: {j}");
    drained(&addr, &["a", "b"]);
    assert_eq!(snapshot(&b, "cpu"), reference);
    assert!(proxy.log().contains("resum"), "{}", proxy.log_tail(30));
}

/// Counts `cpu` through the proxy.
fn count_via_proxy(addr: &str) -> u64 {
    let q = http::encode("SELECT count(v) FROM cpu WHERE time > 0");
    let r = http::get(addr, &format!("/query?db={DB}&q={q}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or(0)
}

#[test]
fn reads_answer_from_a_caught_up_replica_while_another_replays_or_is_repaired() {
    let a = influxd_with_db();
    let mut b = influxd_with_db();
    // b shares the node's zone: it is preferred for reads whenever it is caught up.
    // Health checks at 1 s (their timeout follows): under the load of a replay on 2 cores, a 200 ms
    // ping can time out and mark the caught-up replica down, which is not what this test is about.
    let fast_z = |zone: &'static str| {
        let mut v: Vec<(&str, &str)> = FAST.iter().copied().filter(|(k, _)| *k != "checkinterval").collect();
        v.push(("checkinterval", "1000"));
        v.push(("zone", zone));
        v
    };
    let config = ProxyConfig::new()
        .backend("a", &a.url(), &fast_z("z1"))
        .backend("b", &b.url(), &fast_z("z2"))
        .keymap("cpu", &["a", "b"]);
    let site = Site::with_node(config, &[("zone", "z2")], "replicas-reads");
    let proxy = site.proxy(2, &[]);
    let addr = proxy.addr();

    // Replay: b misses 200,000 lines while down, then catches up while we read.
    b.stop();
    let hosts: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    write(&addr, &points("cpu", &hosts, 5000, 1_000_000_000));
    let total = 200_000;
    wait_until(WAIT, "a has everything", || a.count(DB, "cpu") == total);
    std::thread::sleep(Duration::from_millis(1200));
    b.start_again();
    let mut reads = 0;
    let mut while_behind = 0;
    // influxd's restart and the replay share 2 cores with other tests: allow for a slow machine.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let before = util::inspect::backend_health(&addr, "b");
        let backlog = before["backlog_records"].as_u64().unwrap_or(0);
        let n = count_via_proxy(&addr);
        reads += 1;
        if n != total {
            let after = util::inspect::backend_health(&addr, "b");
            let a_now = util::inspect::backend_health(&addr, "a");
            panic!("read {reads} answered {n} of {total}: b before {before}\nb after {after}\na {a_now}");
        }
        if backlog == 0 {
            break;
        }
        while_behind += 1;
        assert!(Instant::now() < deadline, "b never caught up: {before}\n{}", proxy.log_tail(20));
    }
    assert!(while_behind > 0, "the replay ended before any read: nothing was tested");
    wait_until(WAIT, "b caught up", || b.count(DB, "cpu") == total);

    // Repair: b loses series; while the job copies into it, reads come from a.
    b.query(DB, "DROP SERIES FROM cpu WHERE host =~ /r1./");
    let id = start_job(&addr, &format!("/repair?db={DB}&rate=20000"));
    let mut during = 0;
    loop {
        let state = job(&addr, id)["state"].as_str().unwrap_or("").to_string();
        let health = util::inspect::backend_health(&addr, "b");
        let n = count_via_proxy(&addr);
        if state == "running" && health["repairing"] == true {
            during += 1;
            assert_eq!(n, total, "a read during the repair came from the replica being repaired");
            assert_eq!(health["lagging"], true, "{health}");
        }
        if state == "done" {
            break;
        }
        assert!(state == "queued" || state == "running", "job: {}", job(&addr, id));
    }
    assert!(during > 0, "no read happened while the repair ran");
    drained(&addr, &["a", "b"]);
    assert_eq!(b.count(DB, "cpu"), total);
    assert_eq!(count_via_proxy(&addr), total);
}

#[test]
fn every_replica_behind_answers_with_a_warning() {
    let a = influxd_with_db();
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["a"]);
    let site = Site::new(config, "replicas-warning");
    let proxy = site.proxy(1, &[]);
    let addr = proxy.addr();
    // Lines to a database that does not exist are parked: a lags for it.
    let r = http::request(&addr, "POST", "/write?db=nope", &[], b"cpu v=1 1\n");
    assert_eq!(r.status, 204);
    wait_until(WAIT, "parked", || util::inspect::backend_health(&addr, "a")["lagging"] == true);
    let q = http::encode("SELECT count(v) FROM cpu WHERE time > 0");
    let r = http::get(&addr, &format!("/query?db=nope&q={q}")).json();
    let text = r["results"][0]["messages"][0]["text"].as_str().unwrap_or("").to_string();
    assert!(text.contains("catching up"), "{r}");
    // Another database is not affected.
    let r = http::get(&addr, &format!("/query?db={DB}&q={q}")).json();
    assert!(r["results"][0]["messages"].is_null(), "{r}");
}

#[test]
fn job_requests_are_checked_and_cancellable() {
    let (_a, b, _site, proxy) = pair("replicas-api");
    let addr = proxy.addr();
    assert_eq!(http::request(&addr, "POST", "/repair", &[], b"").status, 400);
    assert_eq!(http::request(&addr, "POST", "/repair?db=x&rate=0", &[], b"").status, 400);
    assert_eq!(http::get(&addr, "/repair?db=x").status, 405);
    assert_eq!(http::get(&addr, "/jobs/99").status, 404);
    write(&addr, &points("cpu", &["c0", "c1", "c2"], 2000, 1_000_000_000));
    drained(&addr, &["a", "b"]);
    b.query(DB, "DROP MEASUREMENT cpu");
    let id = start_job(&addr, &format!("/repair?db={DB}&rate=500"));
    wait_until(WAIT, "running", || job(&addr, id)["state"] == "running");
    let r = http::request(&addr, "DELETE", &format!("/jobs/{id}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(WAIT, "cancelled", || job(&addr, id)["state"] == "cancelled");
    let health = http::get(&addr, "/health").json();
    assert_eq!(health["jobs"].as_array().map(Vec::len), Some(0), "{health}");
    assert_eq!(util::inspect::backend_health(&addr, "b")["repairing"], false);
}

#[test]
fn job_endpoints_take_the_node_credentials() {
    let a = influxd_with_db();
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["a"]);
    let site = Site::with_node(config, &[("username", "ops"), ("password", "s3cret")], "replicas-auth");
    let proxy = site.proxy(1, &[]);
    let addr = proxy.addr();
    assert_eq!(http::request(&addr, "POST", &format!("/repair?db={DB}"), &[], b"").status, 401);
    assert_eq!(http::get(&addr, "/jobs").status, 401);
    assert_eq!(http::get(&addr, "/jobs?u=ops&p=wrong").status, 401);
    let id = start_job(&addr, &format!("/repair?db={DB}&u=ops&p=s3cret"));
    assert_eq!(http::get(&addr, &format!("/jobs/{id}?u=ops&p=s3cret")).status, 200);
}
