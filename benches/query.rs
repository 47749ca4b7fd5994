//! The proxy on the query path: added latency over asking influxd directly, and memory while relaying a
//! large chunked answer.
//!
//! 1. Latency: a private influxd with 1000 points of `cpu`, the proxy in front of it. One keep-alive
//!    connection to each; `QUERY_N` (default 2000) rounds of two small SELECTs, direct and through the
//!    proxy alternately (the order flips every round), so both share the machine's noise. p50/p99 of
//!    each and the difference; the answers must be byte-identical.
//! 2. Memory: a fake backend in this process answers `/query` with `RELAY_MB` MiB (default 1024) of
//!    chunked JSON (`"partial":true` results). A client asks for it through the proxy (`chunked=true`) and
//!    reads it as fast as it can, checking every byte; the proxy's VmRSS is sampled every 50 ms. Then the
//!    same with a slow client (64 KiB reads, 1 ms sleeps) for `RELAY_SLOW_MB` MiB (default 100): memory
//!    must stay bounded when the client is slower than the backend. Each run has a fresh proxy, so VmHWM
//!    is that run's peak.
//!
//! `cargo bench --bench query`; without `--bench` (as in `cargo test --benches`) everything is tiny.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::util::http::{self, HttpConn};
use common::util::{Influxd, Proxy, ProxyConfig, TempDir};
use common::{env_or, mb, mean_ms, pct_ms, proxy_builder, proxy_cpu, proxy_pid, start_influxd};

const DB: &str = "bench";
const THREADS: usize = 2;
const TIMEOUT: Duration = Duration::from_secs(60);

fn start_proxy(dir: &TempDir, tag: &str, backend_url: &str) -> Proxy {
    let config = ProxyConfig::new().backend("backend", backend_url, &[]).keymap("_default_", &["backend"]);
    let builder = proxy_builder(&dir.join(format!("proxy-{tag}.json")), "bench", config, THREADS, "warn");
    builder.data_dir(dir.join(format!("data-{tag}"))).inherit_stderr().start()
}

/// `/query?db=DB&q=Q` plus `extra` parameters.
fn query_path(q: &str, extra: &[(&str, &str)]) -> String {
    let params = [&[("db", DB), ("q", q)], extra].concat();
    format!("/query?{}", http::query_string(&params))
}

// ------------------------------------------------------------------------------------------ latency

fn latency(dir: &TempDir, n: usize) {
    let mut influxd = start_influxd();
    influxd.create_db(DB);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let points: String = (0..1000u64)
        .map(|i| format!("cpu,host=server-{:02} v={}.25 {}\n", i % 10, i % 97, now - (i + 1) * 3_000_000_000))
        .collect();
    influxd.write(DB, &points);
    let proxy = start_proxy(dir, "latency", &influxd.url());

    let queries = [
        ("mean(v) over 1h", "SELECT mean(v) FROM cpu WHERE time > now() - 1h"),
        ("v LIMIT 10", "SELECT v FROM cpu WHERE time > 0 LIMIT 10"),
    ];
    let paths: Vec<String> = queries.iter().map(|(_, q)| query_path(q, &[])).collect();
    let mut direct = HttpConn::try_connect(&influxd.addr(), TIMEOUT).expect("connect influxd");
    let mut proxied = HttpConn::try_connect(&proxy.addr(), TIMEOUT).expect("connect proxy");
    let timed = |c: &mut HttpConn, path: &str| {
        let t = Instant::now();
        let r = c.try_send("GET", path, &[], b"").and_then(|()| c.try_read_response()).expect("query");
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        (took, r.body)
    };
    // Warm-up: connections, influxd's caches, the proxy's backend connection.
    for _ in 0..20 {
        for p in &paths {
            timed(&mut direct, p);
            timed(&mut proxied, p);
        }
    }
    let mut times = vec![(Vec::with_capacity(n), Vec::with_capacity(n)); queries.len()];
    let mut mismatches = vec![0u64; queries.len()];
    let cpu_before = proxy_cpu(&proxy);
    let started = Instant::now();
    for round in 0..n {
        for (qi, p) in paths.iter().enumerate() {
            let (d, x) = if round % 2 == 0 {
                let d = timed(&mut direct, p);
                (d, timed(&mut proxied, p))
            } else {
                let x = timed(&mut proxied, p);
                (timed(&mut direct, p), x)
            };
            times[qi].0.push(d.0);
            times[qi].1.push(x.0);
            if d.1 != x.1 && without_times(&d.1) != without_times(&x.1) {
                mismatches[qi] += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu = proxy_cpu(&proxy) - cpu_before;
    println!(
        "query latency: {n} rounds x {} queries, direct and via the proxy alternately (one keep-alive connection \
         each), {:.1} s, proxy --threads {THREADS}",
        queries.len(),
        elapsed.as_secs_f64()
    );
    for (qi, (name, _)) in queries.iter().enumerate() {
        let (d, x) = &mut times[qi];
        d.sort();
        x.sort();
        println!(
            "  {name:<16} direct p50 {:.3} ms p99 {:.3} ms mean {:.3} | proxy p50 {:.3} ms p99 {:.3} ms mean {:.3} | \
             added p50 {:+.3} ms p99 {:+.3} ms; answers differing: {}",
            pct_ms(d, 0.5),
            pct_ms(d, 0.99),
            mean_ms(d),
            pct_ms(x, 0.5),
            pct_ms(x, 0.99),
            mean_ms(x),
            pct_ms(x, 0.5) - pct_ms(d, 0.5),
            pct_ms(x, 0.99) - pct_ms(d, 0.99),
            mismatches[qi]
        );
    }
    let proxied_queries = (n * queries.len()) as f64;
    println!("  proxy CPU {:.3} s = {:.1} CPU-µs per relayed query", cpu, cpu / proxied_queries * 1e6);
    drop(proxy);
    influxd.stop();
}

/// The answer with every row's time blanked: an aggregate over `now() - 1h` is stamped with its start,
/// which moves between two queries.
fn without_times(body: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    for result in v["results"].as_array_mut().into_iter().flatten() {
        for series in result["series"].as_array_mut().into_iter().flatten() {
            for row in series["values"].as_array_mut().into_iter().flatten() {
                row[0] = serde_json::Value::Null;
            }
        }
    }
    v
}

// ------------------------------------------------------------------------------------------ relay

/// The answer the fake backend streams: `count` copies of `partial`, then `last`.
struct Answer {
    partial: Vec<u8>,
    last: Vec<u8>,
    count: u64,
}

impl Answer {
    fn new(total: u64) -> Answer {
        let line = |rows: usize, partial: bool| {
            let values: Vec<String> =
                (0..rows).map(|i| format!("[{},{}.5]", 1_700_000_000_000_000_000u64 + i as u64, i % 1000)).collect();
            let series = format!(r#"{{"name":"cpu","columns":["time","v"],"values":[{}]}}"#, values.join(","));
            let partial = if partial { r#","partial":true"# } else { "" };
            format!(r#"{{"results":[{{"statement_id":0,"series":[{series}]{partial}}}]}}"#) + "\n"
        };
        // About 64 KiB per chunk.
        let partial = line(2000, true).into_bytes();
        let last = line(10, false).into_bytes();
        let count = (total.saturating_sub(last.len() as u64) / partial.len() as u64).max(1);
        Answer { partial, last, count }
    }

    fn len(&self) -> u64 {
        self.count * self.partial.len() as u64 + self.last.len() as u64
    }

    /// Whether `data` is the answer's bytes at `pos`.
    fn matches(&self, mut pos: u64, mut data: &[u8]) -> bool {
        let plen = self.partial.len() as u64;
        while !data.is_empty() {
            let (src, off) = if pos < self.count * plen {
                (&self.partial, (pos % plen) as usize)
            } else {
                (&self.last, (pos - self.count * plen) as usize)
            };
            if off >= src.len() {
                return false;
            }
            let k = (src.len() - off).min(data.len());
            if data[..k] != src[off..off + k] {
                return false;
            }
            pos += k as u64;
            data = &data[k..];
        }
        true
    }
}

/// A backend answering `/ping` 204 and `/query` with the chunked `answer`; counts answer bytes sent.
struct FakeBackend {
    port: u16,
    sent: Arc<AtomicU64>,
}

fn start_fake_backend(answer: Arc<Answer>) -> FakeBackend {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake backend");
    let port = listener.local_addr().expect("addr").port();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    // The framed chunks, 16 per write.
    let mut block = Vec::new();
    for _ in 0..16 {
        block.extend_from_slice(format!("{:x}\r\n", answer.partial.len()).as_bytes());
        block.extend_from_slice(&answer.partial);
        block.extend_from_slice(b"\r\n");
    }
    let block = Arc::new(block);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (answer, block, sent) = (answer.clone(), block.clone(), counter.clone());
            std::thread::spawn(move || serve_fake(stream, &answer, &block, &sent));
        }
    });
    FakeBackend { port, sent }
}

fn serve_fake(stream: TcpStream, answer: &Answer, block: &[u8], sent: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let Ok(mut w) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while let Some((method, target, length)) = common::read_request_head(&mut reader) {
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let ok = if target.starts_with("/ping") {
            w.write_all(b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: 1.6.7-fake\r\n\r\n").is_ok()
        } else if target.starts_with("/query") && method != "HEAD" {
            stream_answer(&mut w, answer, block, sent).is_ok()
        } else {
            w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").is_ok()
        };
        if !ok {
            return;
        }
    }
}

fn stream_answer(w: &mut TcpStream, answer: &Answer, block: &[u8], sent: &AtomicU64) -> std::io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Influxdb-Version: 1.6.7-fake\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )?;
    let per_block = 16;
    let plen = answer.partial.len() as u64;
    let mut left = answer.count;
    while left >= per_block {
        w.write_all(block)?;
        sent.fetch_add(per_block * plen, Relaxed);
        left -= per_block;
    }
    let one = block.len() / per_block as usize;
    w.write_all(&block[..one * left as usize])?;
    sent.fetch_add(left * plen, Relaxed);
    w.write_all(format!("{:x}\r\n", answer.last.len()).as_bytes())?;
    w.write_all(&answer.last)?;
    w.write_all(b"\r\n0\r\n\r\n")?;
    sent.fetch_add(answer.last.len() as u64, Relaxed);
    Ok(())
}

struct RelayResult {
    received: u64,
    intact: bool,
    elapsed: Duration,
    baseline_rss_kb: u64,
    peak_rss_kb: u64,
    peak_anon_kb: u64,
    hwm_kb: u64,
    /// Largest (sent by the backend − received by the client) seen: bytes in sockets and the proxy.
    peak_in_between: u64,
    cpu: f64,
    samples: usize,
}

/// One transfer through a fresh proxy; `slow`: 64 KiB reads with a 1 ms sleep after each.
fn relay(dir: &TempDir, tag: &str, total: u64, slow: bool) -> RelayResult {
    let answer = Arc::new(Answer::new(total));
    let backend = start_fake_backend(answer.clone());
    let proxy = start_proxy(dir, tag, &format!("http://127.0.0.1:{}", backend.port));
    let pid = proxy_pid(&proxy);
    let baseline_rss_kb = common::proc_status_kb(pid, "VmRSS");
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (received, done, sent) = (received.clone(), done.clone(), backend.sent.clone());
        std::thread::spawn(move || {
            let (mut rss, mut anon, mut between, mut samples) = (0, 0, 0, 0);
            while !done.load(Relaxed) {
                rss = rss.max(common::proc_status_kb(pid, "VmRSS"));
                anon = anon.max(common::proc_status_kb(pid, "RssAnon"));
                between = between.max(sent.load(Relaxed).saturating_sub(received.load(Relaxed)));
                samples += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (rss, anon, between, samples)
        })
    };
    let cpu_before = common::proc_cpu_seconds(pid);
    let started = Instant::now();
    let q = "SELECT v FROM cpu WHERE time > 0";
    let buffer = if slow { 64 << 10 } else { 1 << 20 };
    let mut client = HttpConn::try_connect_buffered(&proxy.addr(), TIMEOUT, buffer).expect("connect");
    client.try_send("GET", &query_path(q, &[("chunked", "true")]), &[], b"").expect("send query");
    let mut streamed = client.try_read_streamed().expect("answer head");
    assert_eq!(streamed.status, 200, "relay answer status");
    // Each read takes what is there, up to the buffer and the end of the current chunk.
    let mut buf = vec![0u8; buffer];
    let mut pos = 0u64;
    let mut intact = true;
    loop {
        let n = streamed.body.read(&mut buf).unwrap_or_else(|e| panic!("reading the answer at {pos} bytes: {e}"));
        if n == 0 {
            break;
        }
        intact &= answer.matches(pos, &buf[..n]);
        pos += n as u64;
        received.store(pos, Relaxed);
        if slow {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let elapsed = started.elapsed();
    let cpu = common::proc_cpu_seconds(pid) - cpu_before;
    done.store(true, Relaxed);
    let (peak_rss_kb, peak_anon_kb, peak_in_between, samples) = sampler.join().expect("sampler");
    let hwm_kb = common::proc_status_kb(pid, "VmHWM");
    let intact = intact && pos == answer.len();
    RelayResult {
        received: pos,
        intact,
        elapsed,
        baseline_rss_kb,
        peak_rss_kb,
        peak_anon_kb,
        hwm_kb,
        peak_in_between,
        cpu,
        samples,
    }
}

fn print_relay(name: &str, r: &RelayResult) {
    let secs = r.elapsed.as_secs_f64();
    println!(
        "  {name:<5} {:.0} MiB in {:.2} s = {:.0} MB/s, intact: {}; proxy RSS before {:.1} MB, sampled peak VmRSS \
         {:.1} MB (RssAnon {:.1} MB, {} samples), VmHWM {:.1} MB; CPU {:.2} s ({:.2} s/GiB); max backend-sent minus \
         client-received {:.1} MiB",
        mb(r.received),
        secs,
        mb(r.received) / secs,
        r.intact,
        r.baseline_rss_kb as f64 / 1024.0,
        r.peak_rss_kb as f64 / 1024.0,
        r.peak_anon_kb as f64 / 1024.0,
        r.samples,
        r.hwm_kb as f64 / 1024.0,
        r.cpu,
        r.cpu / (r.received as f64 / (1u64 << 30) as f64),
        mb(r.peak_in_between),
    );
}

fn main() {
    let full = common::full_run();
    let n = if full { env_or("QUERY_N", 2000) as usize } else { 50 };
    let relay_mb = if full { env_or("RELAY_MB", 1024) } else { 8 };
    let slow_mb = if full { env_or("RELAY_SLOW_MB", 100) } else { 4 };
    let dir = TempDir::new("query");

    if Influxd::available() {
        latency(&dir, n);
    } else {
        assert!(!full, "query bench: `influxd` not found (apt-get install influxdb)");
        println!("query latency: influxd not found; skipped");
    }

    println!("chunked relay through the proxy (fake backend, chunked=true, ~64 KiB JSON chunks, VmRSS every 50 ms):");
    let fast = relay(&dir, "fast", relay_mb << 20, false);
    print_relay("fast", &fast);
    let slow = relay(&dir, "slow", slow_mb << 20, true);
    print_relay("slow", &slow);
    assert!(fast.intact && slow.intact, "a relayed answer arrived damaged or incomplete");
    // The relay reads from the backend only while the client's output holds under 4 MiB, so memory should
    // not follow the answer's size.
    for (name, r) in [("fast", &fast), ("slow", &slow)] {
        let grown = r.hwm_kb.saturating_sub(r.baseline_rss_kb) << 10;
        if grown > 32 << 20 && grown > r.received / 4 {
            println!(
                "  WARNING: {name} client: the proxy's RSS grew by {:.0} MB while relaying {:.0} MiB (bytes between \
                 backend and client never over {:.1} MiB): memory follows the answer's size",
                mb(grown),
                mb(r.received),
                mb(r.peak_in_between)
            );
        }
    }
    println!(
        "summary: relay {:.0} MB/s with peak RSS {:.1} MB ({} MiB answer); slow client peak RSS {:.1} MB ({} MiB)",
        mb(fast.received) / fast.elapsed.as_secs_f64(),
        fast.hwm_kb as f64 / 1024.0,
        relay_mb,
        slow.hwm_kb as f64 / 1024.0,
        slow_mb
    );
}
