//! End-to-end load harness: the real proxy binary relaying to two minimal sink backends that answer 204,
//! driven by several keep-alive client connections posting 5000-line batches, plain and gzip.
//!
//! Prints, per mode: lines/s acknowledged to clients, client latency p50/p99, the proxy's CPU seconds
//! per million lines (from /proc, so the load generator and sinks on the same machine do not count)
//! and its peak RSS. Every line is relayed to BOTH sinks (replication), as in the original's benchmark.
//!
//! `cargo bench --bench load` — knobs: LOAD_SECS (default 10), LOAD_CONNS (default 4),
//! LOAD_THREADS (proxy workers, default 2), LOAD_GZIP_LEVEL (backend gzip, default 1).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::util::http::{self, HttpConn};
use common::util::{ProxyConfig, TempDir};
use common::{env_or, proxy_builder, proxy_pid, start_sink};
use libdeflater::CompressionLvl;

const LINES_PER_BATCH: usize = 5000;

fn batch(seed: usize) -> Vec<u8> {
    let mut body = String::with_capacity(LINES_PER_BATCH * 120);
    for i in 0..LINES_PER_BATCH {
        let m = ["cpu", "mem", "disk", "net", "system"][i / 1000];
        body.push_str(&format!(
            "{m},host=server-{:02},region=eu-west usage_user={}.5,usage_idle=84.25,count={}i {}\n",
            (seed + i) % 50,
            i % 100,
            i,
            1_700_000_000_000_000_000u64 + (seed * LINES_PER_BATCH + i) as u64
        ));
    }
    body.into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    http::gzip_with(data, CompressionLvl::new(1).expect("level"))
}

fn run(mode: &str, gzip_body: bool, secs: u64, conns: usize, threads: usize, level: u64) {
    let (a, b) = (start_sink(), start_sink());
    let dir = TempDir::new(&format!("load-{mode}"));
    let level = level.to_string();
    let config = ProxyConfig::new()
        .backend("a", &format!("http://127.0.0.1:{}", a.port), &[("gzip", &level)])
        .backend("b", &format!("http://127.0.0.1:{}", b.port), &[("gzip", &level)])
        .keymap("_default_", &["a", "b"]);
    let builder = proxy_builder(&dir.join("config.json"), "load", config, threads, "warn");
    let proxy = builder.data_dir(dir.join("data")).inherit_stderr().start();
    let (addr, pid) = (proxy.addr(), proxy_pid(&proxy));

    let bodies: Vec<Vec<u8>> = (0..8).map(|s| if gzip_body { gzip(&batch(s)) } else { batch(s) }).collect::<Vec<_>>();
    let bodies = Arc::new(bodies);
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = common::proc_cpu_seconds(pid);
    let started = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|c| {
            let (bodies, stop, addr) = (bodies.clone(), stop.clone(), addr.clone());
            std::thread::spawn(move || {
                let mut client = HttpConn::try_connect(&addr, Duration::from_secs(60)).expect("connect proxy");
                let mut latencies = Vec::new();
                let mut i = c;
                while !stop.load(Relaxed) {
                    let body = &bodies[i % bodies.len()];
                    i += 1;
                    let enc: &[(&str, &str)] = if gzip_body { &[("Content-Encoding", "gzip")] } else { &[] };
                    let t = Instant::now();
                    let answer =
                        client.try_send("POST", "/write?db=load", enc, body).and_then(|()| client.try_read_response());
                    match answer.map(|r| r.status) {
                        Ok(204) => latencies.push(t.elapsed()),
                        other => panic!("unexpected answer {other:?}"),
                    }
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Relaxed);
    let mut latencies: Vec<Duration> = workers.into_iter().flat_map(|w| w.join().expect("client thread")).collect();
    let elapsed = started.elapsed().as_secs_f64();
    // Let the outboxes drain to the sinks, so CPU includes the sending of what was acknowledged.
    let expected = a.requests.load(Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (expected, Instant::now());
    while Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = (a.requests.load(Relaxed), b.requests.load(Relaxed));
        if now.0 == now.1 && now.0 == last.0 && last.1.elapsed() > Duration::from_millis(1500) {
            break;
        }
        if now.0 != last.0 {
            last = (now.0, Instant::now());
        }
    }
    let cpu = common::proc_cpu_seconds(pid) - cpu_before;
    let rss = common::proc_peak_rss_mb(pid);
    latencies.sort();
    let lines = (latencies.len() * LINES_PER_BATCH) as f64;
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
    println!(
        "{mode:<6} lines/s {:>10.0}  p50 {:>7.2} ms  p99 {:>7.2} ms  proxy CPU {:.3} s per million lines ({:.3} CPU-µs/line)  peak RSS {:.1} MB  sink bytes a={} b={}",
        lines / elapsed,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        cpu / (lines / 1e6),
        cpu / lines * 1e6,
        rss,
        a.bytes.load(Relaxed),
        b.bytes.load(Relaxed),
    );
    drop(proxy);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that short.
    let quick = !common::full_run();
    let secs = if quick { 1 } else { env_or("LOAD_SECS", 10) };
    let conns = env_or("LOAD_CONNS", 4) as usize;
    let threads = env_or("LOAD_THREADS", 2) as usize;
    let level = env_or("LOAD_GZIP_LEVEL", 1);
    println!(
        "load: {conns} keep-alive connections x {LINES_PER_BATCH}-line batches for {secs} s, proxy --threads {threads}, \
         2 sinks (every line replicated to both), backend gzip level {level}"
    );
    run("plain", false, secs, conns, threads, level);
    run("gzip", true, secs, conns, threads, level);
}
