//! What the end-to-end bench programs (`load`, `recovery`, `query`) share beyond the integration-test
//! harness they are built on (`util`, i.e. `tests/util`: child processes, temp dirs, ports, the HTTP
//! client, `influxd`, the proxy): the run mode and knobs, /proc CPU and memory readings, percentiles, a
//! sink backend that answers 204, and how the benches start the proxy.
//!
//! The harness's rules hold here too: every wait is bounded, every child is killed and reaped when its
//! handle is dropped, and temp dirs are removed unless `KEEP_TEST_DIRS=1`.

#![allow(dead_code)]

#[path = "../../tests/util/mod.rs"]
pub mod util;
pub mod varied;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use util::{Influxd, Proxy, ProxyBuilder, ProxyConfig, free_port, http, inspect, set_toml};

/// `cargo bench` passes `--bench`; `cargo test --benches` (and a plain run) does not: keep those short.
/// A quick run says so first, so its figures are not mistaken for a measurement.
pub fn full_run() -> bool {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| println!("{}", quick_mode_banner()));
    }
    full
}

/// The line a quick run starts with.
pub fn quick_mode_banner() -> String {
    let bench = std::env::args()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| n.split('-').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    format!("QUICK MODE: a smoke run on tiny inputs, NOT a measurement; for figures run `cargo bench --bench {bench}`")
}

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The value at quantile `q` of sorted durations, in ms.
pub fn pct_ms(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

pub fn mean_ms(v: &[Duration]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1e3 }
}

/// Apparent size (file lengths), allocated size (blocks) and number of files under `dir`.
pub fn dir_usage(dir: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut apparent, mut allocated, mut files) = (0, 0, 0);
    for meta in inspect::files_ending(dir, "").iter().filter_map(|f| fs::metadata(f).ok()) {
        apparent += meta.len();
        allocated += meta.blocks() * 512;
        files += 1;
    }
    (apparent, allocated, files)
}

// ------------------------------------------------------------------------------------------ /proc

pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let (user, system) = proc_user_system_seconds(pid);
    user + system
}

/// CPU seconds of a process so far: in user space, and in the kernel on its behalf.
pub fn proc_user_system_seconds(pid: u32) -> (f64, f64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; here 11 and 12 after the ')'.
    // SAFETY: sysconf reads a system setting; it takes no pointers and has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) / hz, ticks(12) / hz)
}

/// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`, `RssAnon`, `RssFile`, ...).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn proc_peak_rss_mb(pid: u32) -> f64 {
    proc_status_kb(pid, "VmHWM") as f64 / 1024.0
}

/// The pid of a running proxy, for the readers above.
pub fn proxy_pid(proxy: &Proxy) -> u32 {
    proxy.pid().expect("the proxy is not running")
}

/// The proxy's CPU seconds so far.
pub fn proxy_cpu(proxy: &Proxy) -> f64 {
    proc_cpu_seconds(proxy_pid(proxy))
}

// ------------------------------------------------------------------------------------------ sink backend

/// A backend that reads requests and answers 204, counting `/write` requests and their body bytes.
pub struct Sink {
    pub port: u16,
    pub bytes: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
}

pub fn start_sink() -> Sink {
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
    let mut body = vec![0u8; 1 << 20];
    while let Some((_, target, length)) = read_request_head(&mut reader) {
        let mut left = length;
        while left > 0 {
            let n = left.min(body.len());
            if reader.read_exact(&mut body[..n]).is_err() {
                return;
            }
            left -= n;
        }
        // Only writes: health checks (`/ping` every second) would keep the counts moving forever.
        if target.starts_with("/write") {
            bytes.fetch_add(length as u64, Relaxed);
            requests.fetch_add(1, Relaxed);
        }
        if writer.write_all(b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: sink\r\n\r\n").is_err() {
            return;
        }
    }
}

/// Reads a request head: method, target, Content-Length (0 without one). None at the end of the
/// connection or on a malformed head; the body is left to the caller.
pub fn read_request_head(reader: &mut impl BufRead) -> Option<(String, String, usize)> {
    let line = http::read_line(reader).ok()?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next()?.to_string(), words.next()?.to_string());
    let headers = http::read_headers(reader).ok()?;
    let length = http::find_header(&headers, "content-length").map_or(Some(0), |v| v.parse().ok())?;
    Some((method, target, length))
}

// ------------------------------------------------------------------------------------------ servers

/// A builder of the proxy as the benches run it: node `node` on a fresh port, self-statistics off,
/// reading `config` plus that node from the JSON file `file` (`--config`), with `--threads threads`
/// and `--log-level level`.
pub fn proxy_builder(file: &Path, node: &str, config: ProxyConfig, threads: usize, level: &str) -> ProxyBuilder {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = config.node(node, &[("listenaddr", listen.as_str()), ("interval", "0")]);
    fs::write(file, config.to_json()).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
    Proxy::builder_with_file(file, node, port).threads(threads).log_level(level)
}

/// A private `influxd`, started, with continuous queries off.
pub fn start_influxd() -> Influxd {
    Influxd::start_with(|config| set_toml(config, "continuous_queries", "enabled", "false"))
}

/// An influxd's CPU seconds so far (0 while it is stopped).
pub fn influxd_cpu(influxd: &Influxd) -> f64 {
    influxd.pid().map_or(0.0, proc_cpu_seconds)
}
