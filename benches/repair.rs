//! Repair throughput and the cost of a no-op repair, against two real influxd.
//!
//! 1. Two private influxd get database `bench`; A gets `REPAIR_POINTS` points (default 2,000,000:
//!    100 series × 20,000 points, a float and an integer field, 1 s apart), B only the first half of
//!    the series (it misses 1,000,000 points). Both are written directly, not through the proxy.
//! 2. The proxy (`--threads 2`, keymap `m → [a, b]`) runs `POST /repair?db=bench&rate=REPAIR_RATE`
//!    (default 10,000,000 lines/s, i.e. unthrottled); reported: wall time until the job is done (its
//!    copies delivered to B), lines/s, the proxy's CPU seconds and peak RSS; then B must count every
//!    point.
//! 3. A second repair of the now matching data: wall time and proxy CPU of the digest pass alone.
//!
//! `cargo bench --bench repair`; without `--bench` (as in `cargo test --benches`) 20,000 points.

mod common;

use std::time::{Duration, Instant};

use common::util::{Influxd, ProxyConfig, TempDir, http};
use common::{env_or, full_run, influxd_cpu, proc_peak_rss_mb, proxy_builder, proxy_cpu, proxy_pid, start_influxd};

const DB: &str = "bench";
const SERIES: u64 = 100;
const BASE_TS: u64 = 1_700_000_000_000_000_000;

fn fill(influxd: &Influxd, series: std::ops::Range<u64>, per_series: u64) {
    let mut body = String::with_capacity(10_000 * 64);
    for s in series {
        for i in 0..per_series {
            body.push_str(&format!(
                "m,host=h{s:03},dc=eu-west-1 v={},n={}i {}\n",
                (s * per_series + i) as f64 * 0.25,
                i,
                BASE_TS + i * 1_000_000_000
            ));
            if body.len() > 600_000 {
                influxd.write(DB, &body);
                body.clear();
            }
        }
    }
    if !body.is_empty() {
        influxd.write(DB, &body);
    }
}

fn wait_job(addr: &str, id: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let j = http::get(addr, &format!("/jobs/{id}")).json();
        match j["state"].as_str() {
            Some("done") => return j,
            Some("failed") | Some("cancelled") => panic!("job ended badly: {j}"),
            _ if Instant::now() > deadline => panic!("job not done: {j}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn repair(addr: &str, rate: u64) -> serde_json::Value {
    let r = http::request(addr, "POST", &format!("/repair?db={DB}&rate={rate}"), &[], b"");
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_u64().expect("job id");
    wait_job(addr, id)
}

fn main() {
    let points = if full_run() { env_or("REPAIR_POINTS", 2_000_000) } else { 20_000 };
    let rate = env_or("REPAIR_RATE", 10_000_000);
    let per_series = points / SERIES;
    let a = start_influxd();
    let b = start_influxd();
    a.create_db(DB);
    b.create_db(DB);
    let t = Instant::now();
    fill(&a, 0..SERIES, per_series);
    fill(&b, 0..SERIES / 2, per_series);
    println!(
        "prepared: a {} points, b {} points ({:.1} s)",
        a.count(DB, "m"),
        b.count(DB, "m"),
        t.elapsed().as_secs_f64()
    );

    let dir = TempDir::new("bench-repair");
    let fast = &[("interval", "200"), ("checkinterval", "500")];
    let config = ProxyConfig::new().backend("a", &a.url(), fast).backend("b", &b.url(), fast).keymap("m", &["a", "b"]);
    let proxy = proxy_builder(&dir.join("proxy.json"), "l1", config, 2, "info").data_dir(dir.join("data")).start();
    let addr = proxy.addr();

    let (cpu0, influx0) = (proxy_cpu(&proxy), influxd_cpu(&a) + influxd_cpu(&b));
    let t = Instant::now();
    let j = repair(&addr, rate);
    let secs = t.elapsed().as_secs_f64();
    let copied = j["lines_copied"].as_u64().unwrap_or(0);
    let cpu = proxy_cpu(&proxy) - cpu0;
    let influx_cpu = influxd_cpu(&a) + influxd_cpu(&b) - influx0;
    let health = common::util::inspect::backend_health(&addr, "b");
    let b_count = b.count(DB, "m");
    if b_count != points {
        println!("b has {b_count} right after the job; proxy health of b: {health}");
        let t = Instant::now();
        while b.count(DB, "m") != points && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("b has {} after {:.1} s more", b.count(DB, "m"), t.elapsed().as_secs_f64());
    }
    let b_count = b.count(DB, "m");
    println!(
        "repair of {} missing points: {secs:.2} s, {:.0} lines/s, {} windows compared / {} differing, \
         {} series copied, proxy CPU {cpu:.2} s ({:.2} µs/line), influxd CPU {influx_cpu:.2} s, proxy peak RSS {:.1} MB",
        points / 2,
        copied as f64 / secs,
        j["windows_compared"],
        j["windows_differing"],
        j["series_differing"],
        cpu * 1e6 / copied.max(1) as f64,
        proc_peak_rss_mb(proxy_pid(&proxy)),
    );
    assert_eq!(copied, points / 2, "{j}");
    assert_eq!(b_count, points, "b does not hold every point after the repair");

    let (cpu0, influx0) = (proxy_cpu(&proxy), influxd_cpu(&a) + influxd_cpu(&b));
    let t = Instant::now();
    let j = repair(&addr, rate);
    println!(
        "no-op repair of {points} matching points: {:.2} s, {} windows compared, {} lines copied, proxy CPU {:.3} s, \
         influxd CPU {:.2} s",
        t.elapsed().as_secs_f64(),
        j["windows_compared"],
        j["lines_copied"],
        proxy_cpu(&proxy) - cpu0,
        influxd_cpu(&a) + influxd_cpu(&b) - influx0,
    );
    assert_eq!(j["lines_copied"], 0, "{j}");
}
