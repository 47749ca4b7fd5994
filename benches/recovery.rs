//! Recovery time for a large backlog, and the replay throughput to a real influxd.
//!
//! 1. A private influxd gets the database, then is stopped: its port is the proxy's only backend, and
//!    nothing listens there while the backlog is written.
//! 2. The proxy (`--threads 2`, backend `interval` 1000, `maxrowlimit` 10000, `gzip` 1) takes
//!    `RECOVERY_MB` MiB (default 1024) of 100-byte lines (distinct timestamps, one measurement) in
//!    5000-line requests from 4 keep-alive connections; every request must get 204.
//! 3. SIGTERM, size of the data dir, restart: the time from spawn to the first 204 on `/ping` is the
//!    recovery time (every segment opened and every record checksummed before the workers serve).
//! 4. influxd starts again on the backend's port: the time until `/health` shows no backlog and
//!    influxd counts every line, with the proxy's CPU seconds meanwhile.
//!
//! `cargo bench --bench recovery`; without `--bench` (as in `cargo test --benches`) it writes 2 MiB.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::util::http::HttpConn;
use common::util::{Influxd, Proxy, ProxyConfig, TempDir, inspect};
use common::{dir_usage, env_or, influxd_cpu, mb, pct_ms, proc_status_kb, proxy_builder, proxy_cpu, proxy_pid};

const LINE_BYTES: usize = 100;
const LINES_PER_REQUEST: usize = 5000;
const CONNS: usize = 4;
const THREADS: usize = 2;
const DB: &str = "bench";
const BASE_TS: u64 = 1_700_000_000_000_000_000;

/// Where the varying digits sit in the fixed 100-byte line
/// `m,host=hHH,dc=<pad> v=VVVVVVVVVVi,u=0.5 TTTTTTTTTTTTTTTTTTT\n`.
struct LineLayout {
    template: Vec<u8>,
    host: usize,
    value: usize,
    ts: usize,
}

impl LineLayout {
    fn new() -> LineLayout {
        let (head, mid, tail) = ("m,host=h00,dc=", " v=0000000000i,u=0.5 ", "0000000000000000000\n");
        let pad_len = LINE_BYTES - head.len() - mid.len() - tail.len();
        let pad: String = "eu-west-1a.rack-07.".chars().cycle().take(pad_len).collect();
        let template = format!("{head}{pad}{mid}{tail}").into_bytes();
        assert_eq!(template.len(), LINE_BYTES);
        let value = head.len() + pad_len + " v=".len();
        LineLayout { template, host: "m,host=h".len(), value, ts: LINE_BYTES - tail.len() }
    }

    fn body(&self, lines: usize) -> Vec<u8> {
        self.template.repeat(lines)
    }

    /// Sets the lines of `body` to global line numbers `first..`.
    fn fill(&self, body: &mut [u8], first: u64) {
        for (j, line) in body.chunks_exact_mut(LINE_BYTES).enumerate() {
            let n = first + j as u64;
            digits(&mut line[self.host..self.host + 2], n % 100);
            digits(&mut line[self.value..self.value + 10], n);
            digits(&mut line[self.ts..self.ts + 19], BASE_TS + n);
        }
    }
}

/// Writes `n` right-aligned, zero-padded, into `out`.
fn digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The proxy's `/health` entry for its backend: (up, backlog_records, backlog_bytes, disk_bytes).
fn backend_health(proxy: &Proxy) -> Option<(bool, u64, u64, u64)> {
    let b = inspect::try_backend_health(&proxy.addr(), "influx")?;
    let n = |k: &str| b[k].as_u64().unwrap_or(0);
    Some((b["up"].as_bool().unwrap_or(false), n("backlog_records"), n("backlog_bytes"), n("disk_bytes")))
}

struct WritePhase {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// How to post line batches.
#[derive(Clone, Copy)]
struct Posting {
    /// Of a proxy or influxd on 127.0.0.1.
    port: u16,
    db: &'static str,
    conns: usize,
    lines_per_request: usize,
    requests: u64,
    gzip: bool,
}

/// Posts `requests` requests from `conns` keep-alive connections, lines numbered from 0; panics unless
/// every one gets 204.
fn post_batches(p: Posting) -> WritePhase {
    let layout = Arc::new(LineLayout::new());
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let error: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let clients: Vec<_> = (0..p.conns)
        .map(|_| {
            let (layout, next, failed, error, latencies) =
                (layout.clone(), next.clone(), failed.clone(), error.clone(), latencies.clone());
            std::thread::spawn(move || {
                let mut body = layout.body(p.lines_per_request);
                let mut compressor =
                    libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).expect("gzip level"));
                let mut gz = vec![0; compressor.gzip_compress_bound(body.len())];
                let mut mine = Vec::new();
                let fail = |e: String| {
                    let _ = error.set(e);
                    failed.store(true, Relaxed);
                };
                let addr = format!("127.0.0.1:{}", p.port);
                let mut client = match HttpConn::try_connect(&addr, Duration::from_secs(60)) {
                    Ok(c) => c,
                    Err(e) => return fail(format!("connect: {e}")),
                };
                let path = format!("/write?db={}", p.db);
                while !failed.load(Relaxed) {
                    let k = next.fetch_add(1, Relaxed);
                    if k >= p.requests {
                        break;
                    }
                    layout.fill(&mut body, k * p.lines_per_request as u64);
                    let t = Instant::now();
                    let sent = if p.gzip {
                        let n = compressor.gzip_compress(&body, &mut gz).expect("gzip");
                        client.try_send("POST", &path, &[("Content-Encoding", "gzip")], &gz[..n])
                    } else {
                        client.try_send("POST", &path, &[], &body)
                    };
                    let sent = sent.and_then(|()| client.try_read_response());
                    match sent {
                        Ok(r) if r.status == 204 => mine.push(t.elapsed()),
                        Ok(r) => fail(format!("request {k}: HTTP {} {}", r.status, r.text())),
                        Err(e) => fail(format!("request {k}: {e}")),
                    }
                }
                latencies.lock().expect("latencies").extend(mine);
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let elapsed = started.elapsed();
    if let Some(e) = error.get() {
        panic!("a write to port {} failed: {e}", p.port);
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().expect("latencies"));
    latencies.sort();
    WritePhase { elapsed, latencies }
}

/// Writes back and drops the page cache of every file under `dir` (only these files), so the next
/// start reads the segments from the disk. Returns (seconds spent in fdatasync, MiB still resident).
fn evict_page_cache(dir: &Path) -> (f64, f64) {
    use std::os::fd::AsRawFd;
    let files = inspect::files_ending(dir, "");
    let t = Instant::now();
    for f in &files {
        if let Ok(file) = std::fs::File::open(f) {
            let _ = file.sync_data();
        }
    }
    let synced = t.elapsed().as_secs_f64();
    let mut resident = 0u64;
    for f in &files {
        let Ok(file) = std::fs::File::open(f) else { continue };
        // SAFETY: posix_fadvise takes a descriptor and a byte range, no pointers; `file` keeps the
        // descriptor open for the call, and the advice only drops clean page-cache pages.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        resident += resident_bytes(&file);
    }
    (synced, mb(resident))
}

/// Bytes of `file` in the page cache (mincore).
fn resident_bytes(file: &std::fs::File) -> u64 {
    use std::os::fd::AsRawFd;
    let Ok(len) = usize::try_from(file.metadata().map_or(0, |m| m.len())) else { return 0 };
    // SAFETY: sysconf reads a system setting; it takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let Some(page) = usize::try_from(page).ok().filter(|&p| p > 0) else { return 0 };
    if len == 0 {
        return 0;
    }
    // SAFETY: a new read-only mapping at an address the kernel picks (null hint), so no memory of
    // the process changes; the result is checked against MAP_FAILED before use, and the mapping is
    // never read (only passed to mincore and munmap), so a file shrinking meanwhile cannot fault us.
    let map = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
    if map == libc::MAP_FAILED {
        return 0;
    }
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `map` is the page-aligned start of a live mapping of `len` bytes, and mincore writes one
    // byte per page of it: `len.div_ceil(page)` bytes with the kernel's own page size, which is
    // exactly `vec`'s length.
    let ok = unsafe { libc::mincore(map, len, vec.as_mut_ptr()) } == 0;
    // SAFETY: unmaps exactly the mapping made above; nothing refers to it any more.
    unsafe { libc::munmap(map, len) };
    if ok { vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * page as u64 } else { 0 }
}

/// Sums the workers' "worker W recovered N batches (B bytes) from S segments" log lines; also returns
/// "wW: N" per worker.
fn recovered_from_log(log: &str) -> (u64, u64, u64, String) {
    let mut total = (0, 0, 0);
    let mut per_worker = Vec::new();
    for line in log.lines().filter(|l| l.contains(" recovered ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let before = |w: &str| {
            words.iter().position(|x| x.trim_start_matches('(') == w).and_then(|i| words.get(i.checked_sub(1)?))
        };
        let after = |w: &str| words.iter().position(|x| *x == w).and_then(|i| words.get(i + 1));
        let num = |w: Option<&&str>| w.and_then(|s| s.trim_start_matches('(').parse::<u64>().ok()).unwrap_or(0);
        let batches = num(before("batches"));
        total.0 += batches;
        total.1 += num(before("bytes)"));
        total.2 += num(before("segments"));
        per_worker.push(format!("w{}: {batches}", after("worker").unwrap_or(&"?")));
    }
    per_worker.sort();
    (total.0, total.1, total.2, per_worker.join(", "))
}

/// Starts the (stopped) proxy again; returns the time from spawn to its first 204 on `/ping`, and the
/// time until it logged "listening on" (which it does once every worker has opened and checked its logs:
/// a worker serves its own listener as soon as its own recovery is done). Prints what it logged about
/// recovery.
fn restart(proxy: &mut Proxy, label: &str, payload: u64) -> (Duration, Duration) {
    let log_before = std::fs::metadata(proxy.log_path()).map_or(0, |m| m.len() as usize);
    let spawned = Instant::now();
    proxy.respawn();
    let first_ping = proxy.wait_ping(Duration::from_secs(600));
    let logged = |proxy: &Proxy| proxy.log().get(log_before..).unwrap_or_default().to_string();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !logged(proxy).contains(" listening on ") {
        assert!(Instant::now() < deadline, "no 'listening on' log line; log:\n{}", proxy.log_tail(20));
        std::thread::sleep(Duration::from_millis(1));
    }
    let all = spawned.elapsed();
    let restart_log = logged(proxy);
    let pid = proxy_pid(proxy);
    let (batches, bytes, segments, per_worker) = recovered_from_log(&restart_log);
    println!(
        "  recovery ({label}): spawn → first /ping 204 {:.3} s, → all workers recovered ('listening on' logged) \
         {:.3} s; logged: {batches} batches ({per_worker}), {:.1} MiB, {segments} segments ({:.0} MB/s); VmRSS \
         {:.0} MB (RssFile {:.0} MB, RssAnon {:.0} MB)",
        first_ping.as_secs_f64(),
        all.as_secs_f64(),
        mb(bytes),
        mb(bytes) / all.as_secs_f64(),
        proc_status_kb(pid, "VmRSS") as f64 / 1024.0,
        proc_status_kb(pid, "RssFile") as f64 / 1024.0,
        proc_status_kb(pid, "RssAnon") as f64 / 1024.0,
    );
    for line in restart_log.lines().filter(|l| l.contains(" recovered ") || l.contains("WARN") || l.contains("ERROR")) {
        println!("    log: {line}");
    }
    if bytes != payload {
        println!("  WARNING: the proxy recovered {bytes} payload bytes, {payload} were written");
    }
    if all > first_ping + Duration::from_millis(100) {
        println!(
            "  NOTE: /ping answered {:.3} s before every worker had recovered (a worker serves its own listener as \
             soon as its own logs are checked)",
            (all - first_ping).as_secs_f64()
        );
    }
    (first_ping, all)
}

/// SIGTERM; the time until the proxy exited, which it must do cleanly within 60 s.
fn stop(proxy: &mut Proxy) -> Duration {
    let t = Instant::now();
    proxy.signal(libc::SIGTERM);
    match proxy.wait_exit(Duration::from_secs(60)) {
        Some(s) if s.success() => t.elapsed(),
        other => panic!("proxy did not exit cleanly on SIGTERM: {other:?}; log:\n{}", proxy.log_tail(20)),
    }
}

fn main() {
    let full = common::full_run();
    if !Influxd::available() {
        assert!(!full, "recovery bench: `influxd` not found (apt-get install influxdb)");
        println!("recovery: influxd not found; skipped");
        return;
    }
    let target_mb = if full { env_or("RECOVERY_MB", 1024) } else { 2 };
    let baseline_mb = if full { env_or("RECOVERY_BASELINE_MB", 128) } else { 1 };
    let request_bytes = (LINES_PER_REQUEST * LINE_BYTES) as u64;
    let requests = (target_mb << 20).div_ceil(request_bytes);
    let lines = requests * LINES_PER_REQUEST as u64;
    let payload = lines * LINE_BYTES as u64;

    let dir = TempDir::new("recovery");
    let data_dir = dir.join("proxy-data");

    // 1. The database exists, influxd is down; its port is the backend.
    let mut influxd = common::start_influxd();
    influxd.create_db(DB);
    influxd.stop();

    // 2. The proxy takes the backlog.
    let backend = [("interval", "1000"), ("maxrowlimit", "10000"), ("gzip", "1")];
    let config = ProxyConfig::new().backend("influx", &influxd.url(), &backend).keymap("_default_", &["influx"]);
    let mut proxy =
        proxy_builder(&dir.join("proxy.json"), "bench", config, THREADS, "info").data_dir(&data_dir).start();
    let port = proxy.port();
    println!(
        "recovery: {} MiB = {lines} lines of {LINE_BYTES} B in {requests} requests of {LINES_PER_REQUEST} lines, \
         {CONNS} connections, proxy --threads {THREADS}, backend down",
        mb(payload) as u64
    );
    let cpu_before = proxy_cpu(&proxy);
    let posting = Posting { port, db: DB, conns: CONNS, lines_per_request: LINES_PER_REQUEST, requests, gzip: false };
    let w = post_batches(posting);
    let write_cpu = proxy_cpu(&proxy) - cpu_before;
    let write_secs = w.elapsed.as_secs_f64();
    println!(
        "  write:    {:.2} s  {:.0} lines/s  {:.1} MB/s  request p50 {:.1} ms p99 {:.1} ms  proxy CPU {:.2} s \
         ({:.2} µs/line)  VmHWM {:.0} MB (RssAnon {:.0} MB)",
        write_secs,
        lines as f64 / write_secs,
        mb(payload) / write_secs,
        pct_ms(&w.latencies, 0.5),
        pct_ms(&w.latencies, 0.99),
        write_cpu,
        write_cpu / lines as f64 * 1e6,
        proc_status_kb(proxy_pid(&proxy), "VmHWM") as f64 / 1024.0,
        proc_status_kb(proxy_pid(&proxy), "RssAnon") as f64 / 1024.0,
    );
    // Let the last open batches seal (backend `interval`), so /health shows the whole backlog.
    std::thread::sleep(Duration::from_millis(1200));
    if let Some((up, records, bytes, disk)) = backend_health(&proxy) {
        println!("  /health after writing: up={up} backlog_records={records} backlog_bytes={bytes} disk_bytes={disk}");
        if up {
            println!("  WARNING: the backend is reported up while nothing should listen on {}", influxd.url());
        }
    }

    // 3. Stop, measure, restart with the segments in the page cache, then again after evicting them.
    let stop_time = stop(&mut proxy);
    let (apparent, allocated, files) = dir_usage(&data_dir);
    println!(
        "  SIGTERM → exit {:.2} s; data dir {:.1} MiB apparent, {:.1} MiB allocated, {files} files ({:.3}× the line \
         bytes)",
        stop_time.as_secs_f64(),
        mb(apparent),
        mb(allocated),
        apparent as f64 / payload as f64
    );
    let (warm, warm_all) = restart(&mut proxy, "page cache warm", payload);
    stop(&mut proxy);
    let (synced, resident) = evict_page_cache(&data_dir);
    println!("  evicted the data dir from the page cache (fdatasync {synced:.2} s; {resident:.1} MiB still resident)");
    let (cold, cold_all) = restart(&mut proxy, "from disk", payload);
    let Some((_, initial_records, _, _)) = backend_health(&proxy) else { panic!("no /health for the backend") };
    println!("  /health after restart: backlog_records={initial_records}");

    // 4. influxd back: replay.
    let log_before = proxy.log().len();
    let cpu_before = proxy_cpu(&proxy);
    let t0 = Instant::now();
    influxd.start_again();
    let influx_ready = t0.elapsed();
    let influx_cpu_before = influxd_cpu(&influxd);
    let deadline = t0 + Duration::from_secs(120 + lines / 20_000);
    let mut first_ack = None;
    let mut drained = None;
    let mut last = initial_records;
    while Instant::now() < deadline {
        if let Some((_, records, _, _)) = backend_health(&proxy) {
            if records < last && first_ack.is_none() {
                first_ack = Some(t0.elapsed());
            }
            last = records;
            if records == 0 {
                drained = Some(t0.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(drained) = drained else {
        panic!("backlog not drained in time: {last} records left; proxy log:\n{}", proxy.log_tail(20))
    };
    let cpu = proxy_cpu(&proxy) - cpu_before;
    let influx_cpu = influxd_cpu(&influxd) - influx_cpu_before;
    let mut count = influxd.count_field(DB, "m", "v");
    while count != lines && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        count = influxd.count_field(DB, "m", "v");
    }
    let counted = t0.elapsed();
    let first_ack = first_ack.unwrap_or(drained);
    let replay = drained.as_secs_f64();
    let steady = (drained - first_ack).as_secs_f64().max(1e-6);
    println!(
        "  replay:   influxd spawn → /ping {:.2} s, → first batch acknowledged {:.2} s, → backlog 0 {:.2} s, \
         → count {count}/{lines} {:.2} s",
        influx_ready.as_secs_f64(),
        first_ack.as_secs_f64(),
        replay,
        counted.as_secs_f64()
    );
    println!(
        "            {:.0} lines/s {:.1} MB/s overall ({:.0} lines/s {:.1} MB/s from the first acknowledgement); \
         proxy CPU {:.2} s ({:.2} µs/line), influxd CPU {:.1} s",
        lines as f64 / replay,
        mb(payload) / replay,
        lines as f64 / steady,
        mb(payload) / steady,
        cpu,
        cpu / lines as f64 * 1e6,
        influx_cpu
    );
    if count != lines {
        println!("  WARNING: influxd counts {count} points, {lines} were written");
    }
    stop(&mut proxy);
    let (apparent, _, files) = dir_usage(&data_dir);
    println!("  after the replay and SIGTERM: data dir {:.1} MiB in {files} files", mb(apparent));
    for line in proxy.log().get(log_before..).unwrap_or_default().lines().filter(|l| l.contains("ERROR")) {
        println!("    log: {line}");
    }
    drop(proxy);

    // The same influxd written directly: shaped like the replay (one 10000-line gzip-1 batch in flight per
    // proxy worker), and with 4 connections of 5000-line plain requests (FACTS.md's ingest figure).
    influxd.create_db("baseline");
    let direct = |conns: usize, lines_per_request: usize, gzip: bool| {
        let requests = (baseline_mb << 20).div_ceil((lines_per_request * LINE_BYTES) as u64).max(1);
        let port = influxd.port();
        let b = post_batches(Posting { port, db: "baseline", conns, lines_per_request, requests, gzip });
        let rate = (requests * lines_per_request as u64) as f64 / b.elapsed.as_secs_f64();
        println!(
            "  influxd direct: {} lines, {conns} connections x {lines_per_request}-line {} requests: {:.0} lines/s, \
             request p50 {:.1} ms p99 {:.1} ms",
            requests * lines_per_request as u64,
            if gzip { "gzip-1" } else { "plain" },
            rate,
            pct_ms(&b.latencies, 0.5),
            pct_ms(&b.latencies, 0.99)
        );
        rate
    };
    let baseline_rate = direct(THREADS, 10_000, true);
    direct(CONNS, LINES_PER_REQUEST, false);
    influxd.stop();
    println!(
        "summary: {} MiB backlog: written at {:.0} lines/s; recovery (first /ping 204 / all workers) {:.2} / \
         {:.2} s page cache warm, {:.2} / {:.2} s from disk; replayed to influxd at {:.0} lines/s ({:.1} MB/s, \
         {:.2} proxy CPU-µs/line; influxd direct, same shape: {:.0} lines/s); all {count} lines counted: {}",
        mb(payload) as u64,
        lines as f64 / write_secs,
        warm.as_secs_f64(),
        warm_all.as_secs_f64(),
        cold.as_secs_f64(),
        cold_all.as_secs_f64(),
        lines as f64 / replay,
        mb(payload) / replay,
        cpu / lines as f64 * 1e6,
        baseline_rate,
        count == lines
    );
}
