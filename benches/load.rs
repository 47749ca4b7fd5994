//! End-to-end load harness: the real proxy binary relaying to two minimal sink backends that answer 204,
//! driven by several keep-alive client connections posting 5000-line batches, plain and gzip.
//!
//! Prints, per mode: lines/s acknowledged to clients, client latency p50/p99, the proxy's CPU seconds
//! per million lines (from /proc, so the load generator and sinks on the same machine do not count)
//! and its peak RSS. Every line is relayed to BOTH sinks (replication), as in the original's benchmark.
//!
//! `cargo bench --bench load` — knobs: LOAD_SECS (default 10), LOAD_CONNS (default 4),
//! LOAD_THREADS (proxy workers, default 2), LOAD_GZIP_LEVEL (backend gzip, default 1).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const LINES_PER_BATCH: usize = 5000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A backend that reads requests and answers 204, counting body bytes.
struct Sink {
    port: u16,
    bytes: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

fn start_sink() -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let port = listener.local_addr().expect("sink addr").port();
    let bytes = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let (b, r) = (bytes.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (b, r) = (b.clone(), r.clone());
            std::thread::spawn(move || serve_sink(stream, &b, &r));
        }
    });
    Sink { port, bytes, requests }
}

fn serve_sink(stream: TcpStream, bytes: &AtomicU64, requests: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut line = String::new();
    let mut body = vec![0u8; 1 << 20];
    loop {
        let mut length = 0usize;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut left = length;
        while left > 0 {
            let n = left.min(body.len());
            if reader.read_exact(&mut body[..n]).is_err() {
                return;
            }
            left -= n;
        }
        bytes.fetch_add(length as u64, Relaxed);
        requests.fetch_add(1, Relaxed);
        if writer.write_all(b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: sink\r\n\r\n").is_err() {
            return;
        }
    }
}

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
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).expect("level"));
    let mut out = vec![0; c.gzip_compress_bound(data.len())];
    let n = c.gzip_compress(data, &mut out).expect("gzip");
    out.truncate(n);
    out
}

/// Reads one response; returns its status.
fn read_response(reader: &mut BufReader<TcpStream>) -> Option<u16> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(status)
}

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; here 11 and 12 after the ')'.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn proc_peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn wait_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 204") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("proxy did not start");
}

fn run(mode: &str, gzip_body: bool, secs: u64, conns: usize, threads: u64, level: u64) {
    let (a, b) = (start_sink(), start_sink());
    let dir = std::env::temp_dir().join(format!("ifxp-load-{}-{mode}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("load dir");
    let port = free_port();
    let config = format!(
        r#"{{"NODES": {{"load": {{"listenaddr": "127.0.0.1:{port}", "interval": "0"}}}},
            "BACKENDS": {{"a": {{"url": "http://127.0.0.1:{}", "gzip": "{level}"}},
                          "b": {{"url": "http://127.0.0.1:{}", "gzip": "{level}"}}}},
            "KEYMAPS": {{"_default_": ["a", "b"]}}}}"#,
        a.port, b.port
    );
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config).expect("write config");
    let proxy = Proc {
        child: Command::new(env!("CARGO_BIN_EXE_influx-proxy"))
            .args(["--config", &config_path.to_string_lossy(), "--node", "load", "--log-level", "warn"])
            .args(["--threads", &threads.to_string(), "--data-dir", &dir.join("data").to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start proxy"),
    };
    wait_ping(port);
    let pid = proxy.child.id();

    let bodies: Vec<Vec<u8>> = (0..8).map(|s| if gzip_body { gzip(&batch(s)) } else { batch(s) }).collect::<Vec<_>>();
    let bodies = Arc::new(bodies);
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = proc_cpu_seconds(pid);
    let started = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|c| {
            let (bodies, stop) = (bodies.clone(), stop.clone());
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect proxy");
                let _ = stream.set_nodelay(true);
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::with_capacity(64 << 10, stream);
                let mut latencies = Vec::new();
                let mut i = c;
                while !stop.load(Relaxed) {
                    let body = &bodies[i % bodies.len()];
                    i += 1;
                    let enc = if gzip_body { "Content-Encoding: gzip\r\n" } else { "" };
                    let head = format!(
                        "POST /write?db=load HTTP/1.1\r\nHost: x\r\n{enc}Content-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let t = Instant::now();
                    writer.write_all(head.as_bytes()).expect("send head");
                    writer.write_all(body).expect("send body");
                    match read_response(&mut reader) {
                        Some(204) => latencies.push(t.elapsed()),
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
    let cpu = proc_cpu_seconds(pid) - cpu_before;
    let rss = proc_peak_rss_mb(pid);
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
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that short.
    let quick = std::env::args().all(|a| a != "--bench");
    let secs = if quick { 1 } else { env_or("LOAD_SECS", 10) };
    let conns = env_or("LOAD_CONNS", 4) as usize;
    let threads = env_or("LOAD_THREADS", 2);
    let level = env_or("LOAD_GZIP_LEVEL", 1);
    println!(
        "load: {conns} keep-alive connections x {LINES_PER_BATCH}-line batches for {secs} s, proxy --threads {threads}, \
         2 sinks (every line replicated to both), backend gzip level {level}"
    );
    run("plain", false, secs, conns, threads, level);
    run("gzip", true, secs, conns, threads, level);
}
