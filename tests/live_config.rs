//! Live configuration: changes in Redis (or in a `--config` JSON file) reach a running proxy through the
//! config poller without losing or duplicating a line; invalid or unreadable configs are rejected while the
//! old one keeps serving; Redis outages are survived, also across a restart (the cached config); `/reload`
//! applies at once; a changed `listenaddr` waits for a restart; startup errors are one clear line.
//!
//! Backends are mostly `FakeBackend`s, which record every line they receive, so that "every line exactly
//! once" can be checked exactly; a real `influxd` is used where a backend must go down and come back with
//! its data.

mod util;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::fake::{lines_of, wait_lines};
use util::http::{self, HttpConn, Response};
use util::inspect::health;
use util::site::{APPLY, DB, FAST, POLL_MS, WAIT, polling_proxy, with_node};
use util::{FakeBackend, Influxd, Proxy, ProxyConfig, Redis, TempDir, free_port, wait_until};

// ------------------------------------------------------------------------------------------------ helpers

/// Backends `a` and `b` (both `FAST`) and `m:cpu` → `target`, for node `l1` on `port`.
fn two_backends(a: &FakeBackend, b: &FakeBackend, target: &str, port: u16) -> ProxyConfig {
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).backend("b", &b.url(), FAST).keymap("cpu", &[target]);
    with_node(config, port, &[])
}

fn write(addr: &str, body: &str) -> Response {
    http::request(addr, "POST", &format!("/write?db={DB}"), &[], body.as_bytes())
}

fn write_ok(addr: &str, body: &str) {
    let r = write(addr, body);
    assert_eq!(r.status, 204, "write of {body:?} answered {}: {}", r.status, r.text());
}

/// One request on a fresh keep-alive connection (no `Connection: close`): answers that come later than the
/// request (`/reload`, `/query`) are tested for `Connection: close` clients separately.
fn request_ka(addr: &str, method: &str, path: &str) -> Response {
    let mut conn = HttpConn::connect(addr);
    conn.send(method, path, &[], b"");
    conn.read_response()
}

fn config_version(addr: &str) -> u64 {
    let h = health(addr);
    h["config"]["version"].as_u64().unwrap_or_else(|| panic!("/health without config.version: {h}"))
}

fn last_error(addr: &str) -> Option<String> {
    health(addr)["config"]["last_error"].as_str().map(str::to_string)
}

fn wait_version(addr: &str, version: u64, timeout: Duration) {
    wait_until(timeout, &format!("config version {version} in /health"), || config_version(addr) >= version);
    assert_eq!(config_version(addr), version, "config applied more often than expected");
}

/// The `/health` entry of backend `name`, if listed.
fn backend_health(addr: &str, name: &str) -> Option<Value> {
    let h = health(addr);
    let list = h["backends"].as_array().unwrap_or_else(|| panic!("/health without backends: {h}")).clone();
    list.into_iter().find(|b| b["name"] == name)
}

/// The timestamp (last token) of each line.
fn timestamps(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            let ts = l.rsplit(' ').next().unwrap_or_default();
            ts.parse().unwrap_or_else(|_| panic!("line without a timestamp: {l:?}"))
        })
        .collect()
}

/// Writes a fresh `cpu` probe line every 100 ms until one arrives on `fake`; panics after `timeout`.
/// Returns how long it took. Probes may be refused (400) while the config is being replaced.
fn probe_until_routed_to(addr: &str, fake: &FakeBackend, ts: &mut u64, timeout: Duration, who: &str) -> Duration {
    let started = Instant::now();
    let before = lines_of(fake, "cpu").len();
    loop {
        *ts += 1;
        let _ = write(addr, &format!("cpu,probe=1 v=1i {ts}\n"));
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline {
            if lines_of(fake, "cpu").len() > before {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(started.elapsed() < timeout, "cpu lines still not routed to {who} after {timeout:?}");
    }
}

// ------------------------------------------------------------------------------------------------ tests

/// Rewriting `m:cpu` from A to B while a client writes without pause: every acknowledged line ends up on
/// exactly one of the two backends, and the switch is one clean cut in the request sequence.
#[test]
fn moving_a_measurement_under_load_loses_and_duplicates_nothing() {
    let (a, b) = (FakeBackend::start(), FakeBackend::start());
    let redis = Redis::start();
    let port = free_port();
    two_backends(&a, &b, "a", port).write_to(&redis);
    let proxy = polling_proxy(&redis, port);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addr, stop) = (proxy.addr(), stop.clone());
        std::thread::spawn(move || {
            // One keep-alive connection: one worker serves all its requests in order, so the switch
            // must show as a single cut between "all on a" and "all on b".
            let mut conn = HttpConn::connect(&addr);
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut ts = 1_000_000_000u64;
            while !stop.load(Ordering::Relaxed) {
                let body: String = (ts..ts + 5).map(|t| format!("cpu,w=1 v={t}i {t}\n")).collect();
                conn.send("POST", &format!("/write?db={DB}"), &[], body.as_bytes());
                let r = conn.read_response();
                if r.status == 204 {
                    acked.extend(ts..ts + 5);
                } else {
                    failed.push(format!("{} {}", r.status, r.text()));
                }
                ts += 5;
                // Paces the writer: a steady stream across the config change.
                std::thread::sleep(Duration::from_millis(2));
            }
            (acked, failed)
        })
    };

    wait_until(WAIT, "100 cpu lines on a before the change", || lines_of(&a, "cpu").len() >= 100);
    let changed = Instant::now();
    two_backends(&a, &b, "b", port).write_to(&redis);
    wait_until(APPLY, "the first cpu line on b after m:cpu moved to b", || !lines_of(&b, "cpu").is_empty());
    let took = changed.elapsed();
    wait_until(WAIT, "100 cpu lines on b after the change", || lines_of(&b, "cpu").len() >= 100);
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.join().expect("writer thread panicked");
    assert!(failed.is_empty(), "writes refused around the config change: {failed:?}");

    wait_until(WAIT, "every acknowledged line delivered", || {
        lines_of(&a, "cpu").len() + lines_of(&b, "cpu").len() >= acked.len()
    });
    // A duplicate would be sent in the same or a later batch: give it time to show.
    std::thread::sleep(Duration::from_millis(300));
    let (on_a, on_b) = (timestamps(&lines_of(&a, "cpu")), timestamps(&lines_of(&b, "cpu")));
    let (set_a, set_b): (BTreeSet<u64>, BTreeSet<u64>) =
        (on_a.iter().copied().collect(), on_b.iter().copied().collect());
    assert_eq!(set_a.len(), on_a.len(), "a received some lines twice");
    assert_eq!(set_b.len(), on_b.len(), "b received some lines twice");
    let both: Vec<_> = set_a.intersection(&set_b).collect();
    assert!(both.is_empty(), "{} lines went to both a and b, e.g. {:?}", both.len(), &both[..both.len().min(5)]);
    assert_eq!(on_a.len() + on_b.len(), acked.len(), "count(a) + count(b) != acknowledged lines");
    let union: BTreeSet<u64> = set_a.union(&set_b).copied().collect();
    let acked: BTreeSet<u64> = acked.into_iter().collect();
    assert_eq!(union, acked, "the lines delivered are not exactly the acknowledged ones");
    let (last_a, first_b) = (set_a.last().copied().unwrap_or(0), set_b.first().copied().unwrap_or(u64::MAX));
    assert!(last_a < first_b, "no clean cut: a has {last_a} but b already had {first_b}");
    eprintln!("m:cpu change applied after {took:?}; {} lines on a, {} on b", set_a.len(), set_b.len());
    assert_eq!(config_version(&proxy.addr()), 2);
}

/// A backend added in Redis starts receiving its lines; a backend removed stops receiving.
#[test]
fn backends_added_and_removed_live() {
    let (a, c) = (FakeBackend::start(), FakeBackend::start());
    let redis = Redis::start();
    let port = free_port();
    with_node(ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["a"]), port, &[]).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();

    let r = write(&addr, "mem,h=1 v=1i 1000\n");
    assert_eq!(r.status, 400, "mem has no keymap yet: {}", r.text());
    assert!(r.text().contains("mem"), "{}", r.text());

    // Add b:c and m:mem → c.
    let added = ProxyConfig::new()
        .backend("a", &a.url(), FAST)
        .backend("c", &c.url(), FAST)
        .keymap("cpu", &["a"])
        .keymap("mem", &["c"]);
    with_node(added, port, &[]).write_to(&redis);
    wait_version(&addr, 2, APPLY);
    let c_health = backend_health(&addr, "c").expect("/health does not list the added backend c");
    assert_eq!(c_health["in_config"], true, "{c_health}");
    write_ok(&addr, "mem,h=1 v=1i 2000\nmem,h=1 v=2i 2001\nmem,h=1 v=3i 2002\ncpu,h=1 v=1i 2003\n");
    wait_lines(&c, "mem", 3, "the added backend c");
    wait_lines(&a, "cpu", 1, "a");
    assert!(lines_of(&a, "mem").is_empty(), "mem lines reached a: {:?}", a.write_lines());

    // Remove c; m:mem → a.
    let removed = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["a"]).keymap("mem", &["a"]);
    with_node(removed, port, &[]).write_to(&redis);
    wait_version(&addr, 3, APPLY);
    write_ok(&addr, "mem,h=1 v=4i 3000\nmem,h=1 v=5i 3001\n");
    wait_lines(&a, "mem", 2, "a (new home of mem)");
    // Kept sleep: an absence is watched for a while (the removed c must receive nothing more).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines_of(&c, "mem").len(), 3, "the removed backend c still receives lines: {:?}", c.write_lines());
    if let Some(entry) = backend_health(&addr, "c") {
        assert_eq!(entry["in_config"], false, "{entry}");
        assert_eq!(entry["backlog_records"], 0, "c had nothing left to send: {entry}");
    }
}

/// A backend removed while it is down and holds a backlog: it takes no new lines, `/health` lists it
/// with `in_config: false` and its backlog, and its data is still delivered once it is back.
#[test]
fn removed_backend_still_delivers_its_backlog() {
    let mut x = Influxd::start();
    x.create_db(DB);
    let a = FakeBackend::start();
    let redis = Redis::start();
    let port = free_port();
    let config = ProxyConfig::new()
        .backend("a", &a.url(), FAST)
        .backend("x", &x.url(), FAST)
        .keymap("cpu", &["a"])
        .keymap("disk", &["x"]);
    with_node(config, port, &[]).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();

    write_ok(&addr, "disk,h=1 v=0i 1000000000\n");
    wait_until(WAIT, "the first disk point on x", || x.count(DB, "disk") == 1);

    x.stop();
    wait_until(WAIT, "x reported down in /health", || backend_health(&addr, "x").is_some_and(|b| b["up"] == false));
    let backlog: String = (1..=10).map(|i| format!("disk,h=1 v={i}i {}\n", 1_000_000_000 + i)).collect();
    write_ok(&addr, &backlog);
    wait_until(WAIT, "x's backlog in /health", || {
        backend_health(&addr, "x").is_some_and(|b| b["backlog_records"].as_u64().unwrap_or(0) > 0)
    });

    // Remove x (and m:disk) while it is down.
    with_node(ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["a"]), port, &[]).write_to(&redis);
    wait_version(&addr, 2, APPLY);
    let entry = backend_health(&addr, "x").expect("/health no longer lists the removed backend x with its backlog");
    assert_eq!(entry["in_config"], false, "{entry}");
    assert!(entry["backlog_records"].as_u64().unwrap_or(0) > 0, "backlog of x not shown: {entry}");
    assert!(entry["backlog_bytes"].as_u64().unwrap_or(0) > 0, "backlog of x not shown: {entry}");
    assert_eq!(entry["url"], x.url(), "{entry}");
    assert_eq!(health(&addr)["status"], "ok", "a removed backend must not make the proxy degraded");
    let r = write(&addr, "disk,h=1 v=99i 1000000099\n");
    assert_eq!(r.status, 400, "disk has no keymap any more, the removed x must take no new line: {}", r.text());

    x.start_again();
    let delivered = Instant::now();
    let deadline = delivered + WAIT;
    loop {
        let got = x.count(DB, "disk");
        if got >= 11 {
            assert_eq!(got, 11, "x received lines written after it was removed");
            break;
        }
        if Instant::now() >= deadline {
            let entry = backend_health(&addr, "x");
            panic!(
                "the backlog of the removed backend x was not delivered {WAIT:?} after x came back: \
                 {got} of 11 points on x; /health entry of x: {entry:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until(WAIT, "x's backlog gone from /health", || {
        backend_health(&addr, "x").is_none_or(|b| b["backlog_records"] == 0)
    });
}

/// Invalid configs in Redis (bad url, keymap naming an unknown backend, non-numeric interval) are
/// rejected: the old config keeps routing, `/health` names the problem, `/reload` answers 400 with a
/// JSON error; a fixed config clears the error and is applied.
#[test]
fn invalid_configs_are_rejected_and_the_old_one_keeps_serving() {
    let (a, b) = (FakeBackend::start(), FakeBackend::start());
    let redis = Redis::start();
    let port = free_port();
    two_backends(&a, &b, "a", port).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();
    write_ok(&addr, "cpu,h=1 v=0i 1000\n");
    wait_lines(&a, "cpu", 1, "a");

    // Each invalid config would also move cpu to b: lines still arriving on a show the old config serves.
    let moved = || ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["b"]);
    let cases: Vec<(&str, ProxyConfig, &[&str])> = vec![
        ("bad url", moved().backend("b", &b.url(), FAST).backend("bad", "ftp://x", FAST), &["b:bad", "ftp"]),
        (
            "keymap naming an unknown backend",
            moved().backend("b", &b.url(), FAST).keymap("mem", &["nope"]),
            &["m:mem", "nope"],
        ),
        (
            "non-numeric interval",
            ProxyConfig::new()
                .backend("a", &a.url(), &[("interval", "fast"), ("checkinterval", "100")])
                .backend("b", &b.url(), FAST)
                .keymap("cpu", &["b"]),
            &["b:a", "interval", "fast"],
        ),
    ];
    for (i, (what, config, needles)) in cases.into_iter().enumerate() {
        with_node(config, port, &[]).write_to(&redis);
        wait_until(APPLY, &format!("/health config.last_error naming the {what}"), || {
            last_error(&addr).is_some_and(|e| needles.iter().all(|n| e.contains(n)))
        });
        assert_eq!(config_version(&addr), 1, "{what}: an invalid config was applied");
        // Serving, but on an older config than the source's: not "ok" (the backends themselves are up).
        let h = health(&addr);
        assert_eq!(h["status"], "degraded", "{what}: {h}");
        assert!(h["backends"].as_array().is_some_and(|b| b.iter().all(|b| b["up"] == true)), "{what}: {h}");

        let ts = 2000 + i as u64;
        write_ok(&addr, &format!("cpu,h=1 v={ts}i {ts}\n"));
        wait_lines(&a, "cpu", 2 + i, "a (old config)");

        let method = if i % 2 == 0 { "POST" } else { "GET" };
        let r = request_ka(&addr, method, "/reload");
        assert_eq!(r.status, 400, "{what}: {method} /reload answered {}: {}", r.status, r.text());
        let ct = r.header("Content-Type").unwrap_or_default();
        assert!(ct.contains("application/json"), "{what}: /reload error Content-Type {ct:?}");
        let error =
            r.json()["error"].as_str().unwrap_or_else(|| panic!("{what}: no error in {}", r.text())).to_string();
        assert!(needles.iter().all(|n| error.contains(n)), "{what}: /reload error {error:?} lacks {needles:?}");
        assert!(proxy.log().contains(needles[0]), "{what}: the rejection is not logged");
    }
    assert!(lines_of(&b, "cpu").is_empty(), "an invalid config routed lines to b: {:?}", b.write_lines());

    // Fixed: applied, error cleared.
    two_backends(&a, &b, "b", port).write_to(&redis);
    wait_version(&addr, 2, APPLY);
    assert_eq!(last_error(&addr), None, "last_error not cleared by a good config");
    write_ok(&addr, "cpu,h=1 v=9i 9000\n");
    wait_lines(&b, "cpu", 1, "b (fixed config)");
    assert_eq!(lines_of(&a, "cpu").len(), 4, "a received lines after cpu moved to b");
}

/// Redis goes away under a running proxy: writes and queries go on, `/health` shows the error; Redis
/// comes back empty, the config is written again (changed) and is picked up.
#[test]
fn redis_outage_while_running() {
    let (a, b) = (FakeBackend::start(), FakeBackend::start());
    let mut redis = Redis::start();
    let port = free_port();
    two_backends(&a, &b, "a", port).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();

    redis.stop();
    wait_until(APPLY, "/health config.last_error about Redis", || {
        last_error(&addr).is_some_and(|e| e.contains(&redis.addr()))
    });
    write_ok(&addr, "cpu,h=1 v=1i 1000\ncpu,h=1 v=2i 1001\n");
    wait_lines(&a, "cpu", 2, "a");
    let q = format!("/query?{}", http::query_string(&[("db", DB), ("q", "SELECT v FROM cpu WHERE time > 0")]));
    let r = request_ka(&addr, "GET", &q);
    assert_eq!(r.status, 200, "query while Redis is down: {}", r.text());
    let r = request_ka(&addr, "POST", "/reload");
    assert_eq!(r.status, 503, "/reload while Redis is down: {} {}", r.status, r.text());
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains(&redis.addr())), "{}", r.text());
    // The config cannot be refreshed: not "ok", but that must not hide that the backends are fine.
    let h = health(&addr);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["backends"].as_array().is_some_and(|b| b.iter().all(|b| b["up"] == true)), "{h}");
    assert_eq!(config_version(&addr), 1);

    redis.start_again();
    two_backends(&a, &b, "b", port).write_to(&redis);
    let mut ts = 5000;
    let took = probe_until_routed_to(&addr, &b, &mut ts, APPLY, "b after Redis came back");
    eprintln!("config from the restarted Redis applied after {took:?}");
    wait_until(APPLY, "last_error cleared", || last_error(&addr).is_none());
    assert!(health(&addr)["config"]["source"].as_str().is_some_and(|s| s == format!("redis {}", redis.addr())));
}

/// A Redis without persistence comes back from a crash EMPTY: no `default_node`, no `n:*`, `b:*`, `m:*`.
/// That is lost data, not a config: applying it would drop every backend and answer every write with
/// 400 "has no backend" (lines dropped for good) until someone runs config.py again. The config in force
/// must keep serving, and `/health` must say why it is not replaced.
#[test]
fn empty_redis_after_a_crash_does_not_wipe_the_config() {
    let a = FakeBackend::start();
    let mut redis = Redis::start();
    let port = free_port();
    with_node(ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["a"]), port, &[]).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();

    redis.start_again();
    let until = Instant::now() + Duration::from_millis(1000);
    let (mut ts, mut refused) = (1000u64, Vec::new());
    while Instant::now() < until {
        ts += 1;
        let r = write(&addr, &format!("cpu,h=1 v=1i {ts}\n"));
        if r.status != 204 {
            refused.push(format!("{} {}", r.status, r.text()));
        }
        // Paces the probes over the watched second (several poll intervals of the empty Redis).
        std::thread::sleep(Duration::from_millis(50));
    }
    let version = config_version(&addr);
    assert!(
        refused.is_empty() && version == 1,
        "the empty Redis replaced the config (config version {version}); {} of {} writes refused, e.g. {:?}",
        refused.len(),
        ts - 1000,
        refused.first()
    );
    wait_lines(&a, "cpu", (ts - 1000) as usize, "a");
    assert!(last_error(&addr).is_some(), "/health does not say why the empty Redis config is not applied");
}

/// The proxy restarted while Redis is down starts from its cached config and serves; Redis back with a
/// changed config: applied.
#[test]
fn restart_while_redis_is_down_uses_the_cached_config() {
    let (a, b) = (FakeBackend::start(), FakeBackend::start());
    let mut redis = Redis::start();
    let port = free_port();
    two_backends(&a, &b, "a", port).write_to(&redis);
    let mut proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();
    // The cache must hold the last applied config, not only the one the proxy started with.
    two_backends(&a, &b, "b", port).write_to(&redis);
    wait_version(&addr, 2, APPLY);

    redis.stop();
    proxy.restart();
    let log = proxy.log();
    assert!(log.contains("starting from the cached config"), "the log does not say the cache was used");
    let source = health(&addr)["config"]["source"].as_str().unwrap_or_default().to_string();
    assert!(source.starts_with("cache"), "config.source after a start from the cache: {source:?}");
    write_ok(&addr, "cpu,h=1 v=1i 1000\n");
    wait_lines(&b, "cpu", 1, "b (per the cached config)");
    let q = format!("/query?{}", http::query_string(&[("db", DB), ("q", "SELECT v FROM cpu WHERE time > 0")]));
    assert_eq!(request_ka(&addr, "GET", &q).status, 200, "query on the cached config");
    wait_until(APPLY, "/health naming the Redis error", || last_error(&addr).is_some_and(|e| e.contains("redis")));

    redis.start_again();
    two_backends(&a, &b, "a", port).write_to(&redis);
    let mut ts = 5000;
    probe_until_routed_to(&addr, &a, &mut ts, APPLY, "a after Redis came back with a changed config");
    wait_until(APPLY, "last_error cleared", || last_error(&addr).is_none());
    let source = health(&addr)["config"]["source"].as_str().unwrap_or_default().to_string();
    assert_eq!(source, format!("redis {}", redis.addr()));
    assert!(lines_of(&a, "cpu").iter().all(|l| l.contains("probe")), "{:?}", a.write_lines());
}

/// Stderr of a proxy that must refuse to start: non-zero exit soon, exactly one `influx-proxy: ` error
/// line, nothing that looks like a panic. Returns the error line.
fn startup_error(args: &[&str]) -> String {
    let mut proxy = Proxy::spawn_raw(args);
    let status = proxy.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| panic!("proxy {args:?} did not exit"));
    let out = proxy.log();
    assert!(!status.success(), "proxy {args:?} exited with success; output:\n{out}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "thread '"] {
        assert!(!out.contains(bad), "proxy {args:?} output looks like a panic ({bad:?}):\n{out}");
    }
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("influx-proxy: ")).collect();
    assert_eq!(errors.len(), 1, "want exactly one 'influx-proxy: ...' error line; output:\n{out}");
    let error = errors[0].to_string();
    // Anything else printed is a log line of the same error, not extra noise.
    let message = error.trim_start_matches("influx-proxy: ");
    for line in out.lines().filter(|l| !l.trim().is_empty() && **l != *error) {
        assert!(line.contains(message), "unexpected output line {line:?}; output:\n{out}");
    }
    error
}

#[test]
fn no_redis_and_no_cache_is_a_one_line_startup_error() {
    let dir = TempDir::new("no-cache");
    let data = dir.join("data");
    let redis_addr = format!("127.0.0.1:{}", free_port());
    let error = startup_error(&["--redis", &redis_addr, "--node", "l1", "--data-dir", &data.display().to_string()]);
    assert!(error.contains(&redis_addr), "the error does not name the Redis address: {error}");
    assert!(error.contains("cache"), "the error does not say there is no cached config: {error}");
}

#[test]
fn bad_redis_value_is_a_clear_error() {
    let dir = TempDir::new("bad-redis");
    let data = dir.join("data").display().to_string();
    for bad in ["nonsense", "127.0.0.1:99999", "127.0.0.1:"] {
        let error = startup_error(&["--redis", bad, "--node", "l1", "--data-dir", &data]);
        assert!(error.contains("--redis") && error.contains(bad), "error for --redis {bad:?}: {error}");
        assert!(error.contains("HOST:PORT"), "error for --redis {bad:?} does not say what is expected: {error}");
    }
}

/// `--config FILE` mode: write `value` to `path` atomically (the proxy never reads half a file).
fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config file");
    std::fs::rename(&tmp, path).expect("rename config file");
}

fn file_config(a: &FakeBackend, b: &FakeBackend, target: &str, port: u16) -> String {
    let backend = |url: String| {
        let mut fields: serde_json::Map<String, Value> = FAST.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        fields.insert("url".into(), json!(url));
        Value::Object(fields)
    };
    let config = json!({
        "DEFAULT_NODE": {"interval": "0"},
        "NODES": {"l1": {"listenaddr": format!("127.0.0.1:{port}")}},
        "BACKENDS": {"a": backend(a.url()), "b": backend(b.url())},
        "KEYMAPS": {"cpu": [target]},
    });
    serde_json::to_string_pretty(&config).expect("json")
}

#[test]
fn config_file_mode_applies_edits_and_rejects_broken_ones() {
    let (a, b) = (FakeBackend::start(), FakeBackend::start());
    let dir = TempDir::new("config-file");
    let file = dir.join("proxy.json");
    let port = free_port();
    write_file(&file, &file_config(&a, &b, "a", port));
    let proxy = Proxy::builder_with_file(&file, "l1", port).arg("--poll-interval").arg(POLL_MS).start();
    let addr = proxy.addr();
    assert_eq!(health(&addr)["config"]["source"], format!("file {}", file.display()));

    write_ok(&addr, "cpu,h=1 v=1i 1000\n");
    wait_lines(&a, "cpu", 1, "a");

    // A live edit moving cpu to b.
    write_file(&file, &file_config(&a, &b, "b", port));
    let mut ts = 2000;
    let took = probe_until_routed_to(&addr, &b, &mut ts, APPLY, "b after the file edit");
    eprintln!("file edit applied after {took:?}");
    assert_eq!(config_version(&addr), 2);

    // A broken edit: rejected, b keeps receiving.
    write_file(&file, "{\"NODES\": {\"l1\": ");
    wait_until(APPLY, "/health config.last_error about the broken file", || {
        last_error(&addr).is_some_and(|e| e.contains("JSON") && e.contains("proxy.json"))
    });
    let on_b = lines_of(&b, "cpu").len();
    write_ok(&addr, "cpu,h=1 v=3i 3000\n");
    wait_lines(&b, "cpu", on_b + 1, "b (config in force before the broken edit)");
    let r = request_ka(&addr, "POST", "/reload");
    assert!(matches!(r.status, 400 | 503), "/reload with a broken file: {} {}", r.status, r.text());
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("JSON")), "{}", r.text());
    assert_eq!(config_version(&addr), 2);

    // Fixed: applied, error cleared.
    write_file(&file, &file_config(&a, &b, "a", port));
    wait_version(&addr, 3, APPLY);
    assert_eq!(last_error(&addr), None);
    let on_a = lines_of(&a, "cpu").len();
    write_ok(&addr, "cpu,h=1 v=4i 4000\n");
    wait_lines(&a, "cpu", on_a + 1, "a (fixed file)");
}

/// What `python3 config.py --json` prints for config.py's built-in example is a valid `--config` file.
/// Only the listen port is changed (the example's `:6666` may be taken on a test machine).
#[test]
fn config_py_json_output_is_accepted_by_config_mode() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.py");
    let out = Command::new("python3").arg(&script).arg("--json").output().expect("run python3 config.py --json");
    assert!(out.status.success(), "config.py --json failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut config: Value = serde_json::from_slice(&out.stdout).expect("config.py --json output is not JSON");
    let sections: Vec<&String> = config.as_object().expect("top level object").keys().collect();
    assert_eq!(sections.len(), 4, "sections: {sections:?}");
    for s in ["DEFAULT_NODE", "NODES", "BACKENDS", "KEYMAPS"] {
        assert!(config.get(s).is_some_and(Value::is_object), "missing section {s}");
    }
    let port = free_port();
    let listen = Value::String(format!("127.0.0.1:{port}"));
    config["DEFAULT_NODE"]["listenaddr"] = listen.clone();
    for node in config["NODES"].as_object_mut().expect("NODES").values_mut() {
        if node.get("listenaddr").is_some() {
            node["listenaddr"] = listen.clone();
        }
    }
    let dir = TempDir::new("config-py");
    let file = dir.join("example.json");
    write_file(&file, &serde_json::to_string_pretty(&config).expect("json"));
    let proxy = Proxy::builder_with_file(&file, "l1", port).start();
    let h = health(&proxy.addr());
    assert_eq!(h["config"]["last_error"], Value::Null, "{h}");
    let mut names: Vec<&str> =
        h["backends"].as_array().expect("backends").iter().filter_map(|b| b["name"].as_str()).collect();
    names.sort();
    let mut want: Vec<&str> = config["BACKENDS"].as_object().expect("BACKENDS").keys().map(String::as_str).collect();
    want.sort();
    assert_eq!(names, want, "backends of the example config");
}

/// With a long poll interval only `/reload` can explain a change taking effect; it answers 204 once
/// the change is in force.
#[test]
fn reload_applies_a_redis_change_at_once() {
    let (a, b) = (FakeBackend::start(), FakeBackend::start());
    let redis = Redis::start();
    let port = free_port();
    two_backends(&a, &b, "a", port).write_to(&redis);
    let proxy = Proxy::builder(&redis, "l1", port).arg("--poll-interval").arg("60000").start();
    let addr = proxy.addr();

    // Nothing changed: 204 all the same, on GET and POST.
    for method in ["GET", "POST"] {
        let r = request_ka(&addr, method, "/reload");
        assert_eq!(r.status, 204, "{method} /reload without a change: {}", r.text());
    }
    assert_eq!(config_version(&addr), 1);

    two_backends(&a, &b, "b", port).write_to(&redis);
    // Kept sleep: time in which a poller would have applied the change; with a 60 s poll interval
    // only /reload may apply it.
    std::thread::sleep(Duration::from_millis(600));
    write_ok(&addr, "cpu,h=1 v=1i 1000\n");
    wait_lines(&a, "cpu", 1, "a (change in Redis not applied before /reload)");
    assert_eq!(config_version(&addr), 1, "the change was applied without /reload");

    // /reload, then a write on the same connection: it must follow the new config.
    let mut conn = HttpConn::connect(&addr);
    let started = Instant::now();
    conn.send("POST", "/reload", &[], b"");
    let r = conn.read_response();
    assert_eq!(r.status, 204, "/reload answered {}: {}", r.status, r.text());
    assert!(started.elapsed() < Duration::from_secs(2), "/reload took {:?}", started.elapsed());
    conn.send("POST", &format!("/write?db={DB}"), &[], b"cpu,h=1 v=2i 2000\n");
    let r = conn.read_response();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(config_version(&addr), 2);
    wait_lines(&b, "cpu", 1, "b (after /reload)");
    // Kept sleep: an absence is watched for a while (a must receive nothing more).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines_of(&a, "cpu").len(), 1, "a received a line after /reload moved cpu to b");

    // A client that sends `Connection: close` (curl -H, most scripts' HTTP/1.0 clients) gets its answer
    // too before the connection is closed.
    for method in ["GET", "POST"] {
        let r = http::try_request(&addr, method, "/reload", &[("Connection", "close")], b"", Duration::from_secs(5));
        let r = r.unwrap_or_else(|e| panic!("{method} /reload with Connection: close got no answer: {e}"));
        assert_eq!(r.status, 204, "{method} /reload with Connection: close: {}", r.text());
    }
}

/// A changed `listenaddr` is logged as needing a restart; the proxy keeps serving on the old address.
#[test]
fn listenaddr_change_needs_a_restart() {
    let a = FakeBackend::start();
    let redis = Redis::start();
    let port = free_port();
    let config = |listen_port: u16| {
        with_node(ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["a"]), listen_port, &[])
    };
    config(port).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();

    let new_port = free_port();
    config(new_port).write_to(&redis);
    let (old, new) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{new_port}"));
    wait_until(APPLY, "a log line about listenaddr needing a restart", || {
        proxy.log().lines().any(|l| l.contains("listenaddr") && l.contains(&new) && l.contains("restart"))
    });
    let line =
        proxy.log().lines().find(|l| l.contains("listenaddr") && l.contains(&new)).unwrap_or_default().to_string();
    assert!(line.contains(&old), "the log line does not name the old address: {line}");

    assert!(util::procs::ping_ok(&addr), "/ping on the old address after the change");
    write_ok(&addr, "cpu,h=1 v=1i 1000\n");
    wait_lines(&a, "cpu", 1, "a");
    assert!(TcpStream::connect(&new).is_err(), "something listens on the new address {new} without a restart");
}
