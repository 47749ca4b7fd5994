//! End-to-end load harness on data that looks like production: the real proxy binary relaying to two
//! sink backends that decompress and count lines, driven by keep-alive client connections posting
//! 5000-line batches of varied data (thousands of series, random values, unique timestamps, ~80–120 B
//! lines), plain or gzip.
//!
//! Every line is relayed to BOTH sinks (replication). Per mode it prints: lines/s acknowledged to
//! clients, **delivered** lines/s (acknowledged lines / time until both sinks counted every one of
//! them), client latency p50/p99, the proxy's CPU-µs per line (user + sys from /proc, so the load
//! generator and sinks on the same machine do not count), its peak RSS, and the compressed size per
//! line the sinks received. A last pair of rows runs the clients straight to the sinks (each batch
//! posted to both), for context: what the sinks and clients alone manage on this machine.
//!
//! `cargo bench --bench load` — knobs: LOAD_SECS (default 10), LOAD_CONNS (default 4),
//! LOAD_THREADS (proxy workers, default 2), LOAD_SERIES (default 5000), LOAD_LINES (lines per
//! request, default 5000), LOAD_BATCHES (distinct pre-built batches cycled through, default 40:
//! timestamps are unique within them), LOAD_ORDER (`random`, the default: each batch interleaves its
//! measurements line by line; `runs`: each measurement's lines together, as one Telegraf agent sends them),
//! LOAD_MODES (comma list of b1c0,b1c1,b0c0,b0c1,sink0,sink1: backend gzip 1/off × client gzip
//! off/on, and sinks alone; default all, in quick mode b1c1,b0c0,sink1).

mod common;

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::util::http::{self, HttpConn};
use common::util::rng::Rng;
use common::util::{ProxyConfig, TempDir};
use common::varied;
use common::{env_or, proxy_builder, proxy_pid};
use influx_proxy::gunzip::Gunzip;
use influx_proxy::outbox::deflate::Deflate;
use libdeflater::CompressionLvl;

// ------------------------------------------------------------------------------------------ data

/// CPU seconds of the calling thread.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn gzip(data: &[u8]) -> Vec<u8> {
    http::gzip_with(data, CompressionLvl::new(1).expect("level"))
}

// ------------------------------------------------------------------------------------------ sinks

/// A backend that answers 204 to everything and, for `/write`, decompresses the body when it is gzip
/// (any number of members) and counts its lines as InfluxDB would see them: non-empty, not comments.
struct Sink {
    port: u16,
    lines: Arc<AtomicU64>,
    wire_bytes: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

fn start_sink() -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let port = listener.local_addr().expect("sink addr").port();
    let sink = Sink {
        port,
        lines: Arc::new(AtomicU64::new(0)),
        wire_bytes: Arc::new(AtomicU64::new(0)),
        errors: Arc::new(AtomicU64::new(0)),
    };
    let counts = (sink.lines.clone(), sink.wire_bytes.clone(), sink.errors.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counts = counts.clone();
            std::thread::spawn(move || serve_sink(stream, &counts.0, &counts.1, &counts.2));
        }
    });
    sink
}

fn serve_sink(stream: TcpStream, lines: &AtomicU64, wire: &AtomicU64, errors: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut gunzip = Gunzip::new();
    let mut plain = Vec::new();
    loop {
        let Ok(line) = http::read_line(&mut reader) else { return };
        let target = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let Ok(headers) = http::read_headers(&mut reader) else { return };
        let Ok(body) = http::read_body(&mut reader, &headers, false) else { return };
        if target.starts_with("/write") {
            wire.fetch_add(body.len() as u64, Relaxed);
            let gzipped = http::find_header(&headers, "content-encoding").is_some_and(|v| v.contains("gzip"));
            let text: &[u8] = if gzipped {
                plain.clear();
                if gunzip.decompress(&body, 1 << 30, &mut plain).is_err() {
                    errors.fetch_add(1, Relaxed);
                }
                &plain
            } else {
                &body
            };
            let n = text.split(|&b| b == b'\n').filter(|l| l.first().is_some_and(|&c| c != b'#')).count();
            lines.fetch_add(n as u64, Relaxed);
        }
        if writer.write_all(b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: sink\r\n\r\n").is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------------------------------------ runs

struct Knobs {
    secs: u64,
    conns: usize,
    threads: usize,
    /// Lines per request.
    lines: usize,
}

/// Client connections posting `bodies` round robin to `targets` (each body to every target in turn)
/// for `secs`; returns the latencies of all requests (one per body per target) and the lines acked
/// (counted once per body).
fn drive(targets: &[String], bodies: &Arc<Vec<Vec<u8>>>, gzip_body: bool, k: &Knobs) -> (Vec<Duration>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let lines_per_body = k.lines as u64;
    let workers: Vec<_> = (0..k.conns)
        .map(|c| {
            let (bodies, stop, targets) = (bodies.clone(), stop.clone(), targets.to_vec());
            std::thread::spawn(move || {
                let mut clients: Vec<HttpConn> = targets
                    .iter()
                    .map(|t| HttpConn::try_connect(t, Duration::from_secs(60)).expect("connect"))
                    .collect();
                let (mut latencies, mut lines) = (Vec::new(), 0u64);
                let mut i = c * 7;
                while !stop.load(Relaxed) {
                    let body = &bodies[i % bodies.len()];
                    i += 1;
                    let enc: &[(&str, &str)] = if gzip_body { &[("Content-Encoding", "gzip")] } else { &[] };
                    for client in &mut clients {
                        let t = Instant::now();
                        let answer = client
                            .try_send("POST", "/write?db=load", enc, body)
                            .and_then(|()| client.try_read_response());
                        match answer.map(|r| r.status) {
                            Ok(204) => latencies.push(t.elapsed()),
                            other => panic!("unexpected answer {other:?}"),
                        }
                    }
                    lines += lines_per_body;
                }
                (latencies, lines)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(k.secs));
    stop.store(true, Relaxed);
    let mut all = (Vec::new(), 0);
    for w in workers {
        let (l, n) = w.join().expect("client thread");
        all.0.extend(l);
        all.1 += n;
    }
    all.0.sort();
    all
}

/// Waits (bounded) until both sinks counted `want` lines; the instant they did, or None.
fn wait_delivered(sinks: &[&Sink], want: u64) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if sinks.iter().all(|s| s.lines.load(Relaxed) >= want) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn report(mode: &str, elapsed: f64, delivered: Option<f64>, latencies: &[Duration], lines: u64, tail: &str) {
    let delivered = delivered.map_or("   (not all)".to_string(), |secs| format!("{:>12.0}", lines as f64 / secs));
    println!(
        "{mode:<30} client {:>10.0} lines/s  delivered {delivered} lines/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {tail}",
        lines as f64 / elapsed,
        common::pct_ms(latencies, 0.50),
        common::pct_ms(latencies, 0.99),
    );
}

fn run_proxy(mode: &str, backend_level: u32, bodies: &Arc<Vec<Vec<u8>>>, gzip_body: bool, k: &Knobs) {
    let (a, b) = (start_sink(), start_sink());
    let dir = TempDir::new(&format!("load-{mode}"));
    let level = backend_level.to_string();
    let config = ProxyConfig::new()
        .backend("a", &format!("http://127.0.0.1:{}", a.port), &[("gzip", &level)])
        .backend("b", &format!("http://127.0.0.1:{}", b.port), &[("gzip", &level)])
        .keymap("_default_", &["a", "b"]);
    let builder = proxy_builder(&dir.join("config.json"), "load", config, k.threads, "warn");
    let proxy = builder.data_dir(dir.join("data")).inherit_stderr().start();
    let (addr, pid) = (proxy.addr(), proxy_pid(&proxy));

    let (user_before, system_before) = common::proc_user_system_seconds(pid);
    let started = Instant::now();
    let (latencies, lines) = drive(&[addr], bodies, gzip_body, k);
    let elapsed = started.elapsed().as_secs_f64();
    let done = wait_delivered(&[&a, &b], lines);
    let (user, system) = common::proc_user_system_seconds(pid);
    let (user, system) = (user - user_before, system - system_before);
    let per_line = |secs: f64| secs / lines.max(1) as f64 * 1e6;
    let rss = common::proc_peak_rss_mb(pid);
    let errors = a.errors.load(Relaxed) + b.errors.load(Relaxed);
    let extra = (a.lines.load(Relaxed) + b.lines.load(Relaxed)).saturating_sub(2 * lines);
    let tail = format!(
        "proxy {:.3} CPU-µs/line ({:.3} user + {:.3} kernel)  peak RSS {:>5.1} MB  sink wire {:.1} B/line{}{}",
        per_line(user + system),
        per_line(user),
        per_line(system),
        rss,
        a.wire_bytes.load(Relaxed) as f64 / lines.max(1) as f64,
        if errors > 0 { format!("  SINK GUNZIP ERRORS {errors}") } else { String::new() },
        if extra > 0 { format!("  {extra} LINES MORE THAN SENT") } else { String::new() },
    );
    let delivered = done.map(|t| t.duration_since(started).as_secs_f64());
    report(mode, elapsed, delivered, &latencies, lines, &tail);
    drop(proxy);
}

fn run_sinks_alone(mode: &str, bodies: &Arc<Vec<Vec<u8>>>, gzip_body: bool, k: &Knobs) {
    let (a, b) = (start_sink(), start_sink());
    let targets = [format!("127.0.0.1:{}", a.port), format!("127.0.0.1:{}", b.port)];
    let started = Instant::now();
    let (latencies, lines) = drive(&targets, bodies, gzip_body, k);
    let elapsed = started.elapsed().as_secs_f64();
    let done = wait_delivered(&[&a, &b], lines);
    let delivered = done.map(|t| t.duration_since(started).as_secs_f64());
    report(mode, elapsed, delivered, &latencies, lines, "(no proxy: each batch posted to both sinks)");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that short.
    let quick = !common::full_run();
    let k = Knobs {
        secs: if quick { 1 } else { env_or("LOAD_SECS", 10) },
        conns: env_or("LOAD_CONNS", 4) as usize,
        threads: env_or("LOAD_THREADS", 2) as usize,
        lines: env_or("LOAD_LINES", 5000).max(1) as usize,
    };
    let series = env_or("LOAD_SERIES", 5000) as usize;
    let runs = match std::env::var("LOAD_ORDER").as_deref() {
        Ok("runs") => true,
        Ok("random") | Err(_) => false,
        Ok(other) => panic!("LOAD_ORDER is random or runs, not {other:?}"),
    };
    let batches = if quick { 4 } else { env_or("LOAD_BATCHES", 40) as usize };
    // A quick run smokes the paths (gzip both ways, plain, sinks alone), not every combination.
    let all = if quick { "b1c1,b0c0,sink1" } else { "b1c0,b1c1,b0c0,b0c1,sink0,sink1" };
    let modes = std::env::var("LOAD_MODES").unwrap_or_else(|_| all.into());

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let plain: Vec<Vec<u8>> = (0..batches).map(|b| varied::batch(b, k.lines, series, runs, &mut rng)).collect();
    let total: usize = plain.iter().map(Vec::len).sum();
    let t = thread_cpu();
    let zipped: Vec<Vec<u8>> = plain.iter().map(|b| gzip(b)).collect();
    let gzip_us = (thread_cpu() - t) * 1e6 / (batches * k.lines) as f64;
    let (mut deflate, mut out) = (Deflate::default(), Vec::new());
    let t = thread_cpu();
    for b in &plain {
        deflate.gzip_into(1, b, &mut out).expect("the proxy's gzip");
    }
    let proxy_gzip_us = (thread_cpu() - t) * 1e6 / (batches * k.lines) as f64;
    let t = thread_cpu();
    let mut gunzip = Gunzip::new();
    let mut out = Vec::new();
    for z in &zipped {
        gunzip.decompress(z, 1 << 30, &mut out).expect("gunzip of our own gzip");
    }
    let gunzip_us = (thread_cpu() - t) * 1e6 / (batches * k.lines) as f64;
    let ztotal: usize = zipped.iter().map(Vec::len).sum();
    let nlines = (batches * k.lines) as f64;
    let order = if runs { "each measurement's lines in a run" } else { "measurements interleaved line by line" };
    println!(
        "load: {} keep-alive connections x {}-line batches for {} s, proxy --threads {}, 2 sinks \
         (every line replicated to both; sinks gunzip and count lines); {series} series, {batches} distinct batches ({order}), \
         {:.1} B/line plain, {:.1} B/line client gzip 1 (libdeflate here: gzip 1 {gzip_us:.3} CPU-µs/line, \
         gunzip {gunzip_us:.3} CPU-µs/line; the proxy's gzip 1, ISA-L: {proxy_gzip_us:.3} CPU-µs/line)",
        k.conns,
        k.lines,
        k.secs,
        k.threads,
        total as f64 / nlines,
        ztotal as f64 / nlines
    );
    let (plain, zipped) = (Arc::new(plain), Arc::new(zipped));
    for mode in modes.split(',').map(str::trim) {
        match mode {
            "b1c0" => run_proxy("backend gzip 1, client plain", 1, &plain, false, &k),
            "b1c1" => run_proxy("backend gzip 1, client gzip", 1, &zipped, true, &k),
            "b0c0" => run_proxy("backend plain, client plain", 0, &plain, false, &k),
            "b0c1" => run_proxy("backend plain, client gzip", 0, &zipped, true, &k),
            "sink0" => run_sinks_alone("sinks alone, client plain", &plain, false, &k),
            "sink1" => run_sinks_alone("sinks alone, client gzip", &zipped, true, &k),
            other => println!("unknown mode {other:?} (LOAD_MODES)"),
        }
    }
}
