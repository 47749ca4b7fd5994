//! What TLS costs the proxy: CPU per line relaying the load bench's batches (keep-alive clients posting
//! 5000-line batches, every line replicated to two sinks) with TLS off, on the client side only, and on
//! both sides (clients → https listener, proxy → two https sinks); then the cost of a new connection
//! (full handshake, resumed handshake, plain TCP) as proxy CPU and client wall time per connection.
//!
//! The sinks are the same code with and without TLS (read a request, answer 204), so the difference is
//! TLS alone. Certificates are made with `openssl` (ECDSA P-256, as a modern deployment would use).
//!
//! `cargo bench --bench tls` — knobs: LOAD_SECS (default 10), LOAD_CONNS (4), LOAD_THREADS (2),
//! LOAD_GZIP_LEVEL (backend gzip, 1), TLS_HANDSHAKES (new connections per handshake mode, 500).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::util::{Proxy, ProxyConfig, TempDir};
use common::{env_or, proc_cpu_seconds, proxy_builder, proxy_pid};
use rustls::pki_types::pem::PemObject;

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

fn openssl(args: &[&str]) {
    let ok = Command::new("openssl").args(args).stdin(Stdio::null()).stderr(Stdio::null()).status();
    assert!(ok.is_ok_and(|s| s.success()), "openssl {args:?}");
}

/// `ca.pem` and `srv.pem`/`srv.key` for 127.0.0.1 in `dir`.
fn certificates(dir: &TempDir) -> [String; 3] {
    let p = |n: &str| dir.join(n).display().to_string();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[&["req", "-x509"], &ec[..], &["-keyout", &p("ca.key"), "-out", &p("ca.pem"), "-subj", "/CN=bench CA"]]
            .concat(),
    );
    openssl(
        &[&["req"], &ec[..], &["-keyout", &p("srv.key"), "-out", &p("srv.csr"), "-subj", "/CN=127.0.0.1"]].concat(),
    );
    std::fs::write(p("ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("srv.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-set_serial",
        "7",
        "-extfile",
        &p("ext"),
        "-out",
        &p("srv.pem"),
    ]);
    [p("ca.pem"), p("srv.pem"), p("srv.key")]
}

fn client_config(ca: &str, resume: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("ca cert")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

fn try_connect(port: u16, tls: Option<&Arc<rustls::ClientConfig>>) -> std::io::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    let _ = tcp.set_nodelay(true);
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(match tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            let conn = rustls::ClientConnection::new(config.clone(), name).expect("client session");
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    })
}

fn connect(port: u16, tls: Option<&Arc<rustls::ClientConfig>>) -> Box<dyn Io> {
    try_connect(port, tls).expect("connect")
}

/// Reads one response head (bodies here are empty) and returns its status.
fn try_read_status(io: &mut dyn Io, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = io.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(std::str::from_utf8(&buf[9..12]).ok().and_then(|s| s.parse().ok()).unwrap_or(0))
}

fn read_status(io: &mut dyn Io, buf: &mut Vec<u8>) -> u16 {
    try_read_status(io, buf).expect("read answer")
}

/// A backend that answers 204 to everything, with or without TLS; counts `/write` requests.
struct Sink {
    port: u16,
    requests: Arc<AtomicU64>,
}

fn start_sink(tls: Option<Arc<rustls::ServerConfig>>) -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (counter, tls) = (counter.clone(), tls.clone());
            std::thread::spawn(move || {
                let _ = tcp.set_nodelay(true);
                let io: Box<dyn Io> = match tls {
                    None => Box::new(tcp),
                    Some(c) => match rustls::ServerConnection::new(c) {
                        Ok(conn) => Box::new(rustls::StreamOwned::new(conn, tcp)),
                        Err(_) => return,
                    },
                };
                serve(io, &counter);
            });
        }
    });
    Sink { port, requests }
}

fn serve(mut io: Box<dyn Io>, requests: &AtomicU64) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 256 << 10];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let length: usize = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .unwrap_or(0);
                let write = req.path.is_some_and(|p| p.starts_with("/write"));
                while buf.len() < head + length {
                    match io.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..head + length);
                if write {
                    requests.fetch_add(1, Relaxed);
                }
                if io.write_all(b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: sink\r\n\r\n").is_err() {
                    return;
                }
            }
            Ok(httparse::Status::Partial) => match io.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            Err(_) => return,
        }
    }
}

/// The proxy with an https listener when `listener_tls`, relaying to `backends`.
fn start_proxy(
    dir: &TempDir,
    certs: &[String; 3],
    listener_tls: bool,
    backends: [(u16, bool); 2],
    level: u64,
) -> Proxy {
    let level = level.to_string();
    let mut config = ProxyConfig::new();
    for (name, (port, tls)) in ["a", "b"].iter().zip(backends) {
        let scheme = if tls { "https" } else { "http" };
        let ca: &[(&str, &str)] = if tls { &[("tlsca", &certs[0])] } else { &[] };
        let fields = [&[("gzip", level.as_str())], ca].concat();
        config = config.backend(name, &format!("{scheme}://127.0.0.1:{port}"), &fields);
    }
    config = config.keymap("_default_", &["a", "b"]);
    if listener_tls {
        config = config.default_node(&[("tlscert", &certs[1]), ("tlskey", &certs[2])]);
    }
    let threads = env_or("LOAD_THREADS", 2) as usize;
    let proxy = proxy_builder(&dir.join("config.json"), "tls", config, threads, "warn")
        .data_dir(dir.join("data"))
        .inherit_stderr()
        .spawn();
    let tls = listener_tls.then(|| client_config(&certs[0], true));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ping = || -> std::io::Result<u16> {
            let mut io = try_connect(proxy.port(), tls.as_ref())?;
            io.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")?;
            try_read_status(&mut *io, &mut Vec::new())
        };
        if ping().is_ok_and(|s| s == 204) {
            return proxy;
        }
        assert!(Instant::now() < deadline, "the proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn relay(mode: &str, listener_tls: bool, backend_tls: bool, secs: u64) {
    let dir = TempDir::new(&format!("tls-bench-{mode}"));
    let certs = certificates(&dir);
    let server = backend_tls.then(|| {
        let t = influx_proxy::net::tls::ServerTls::load(certs[1].as_ref(), certs[2].as_ref(), None).expect("sink TLS");
        t.config
    });
    let (a, b) = (start_sink(server.clone()), start_sink(server));
    let level = env_or("LOAD_GZIP_LEVEL", 1);
    let proxy = start_proxy(&dir, &certs, listener_tls, [(a.port, backend_tls), (b.port, backend_tls)], level);
    let pid = proxy_pid(&proxy);
    let tls = listener_tls.then(|| client_config(&certs[0], true));
    let bodies = Arc::new((0..8).map(batch).collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = proc_cpu_seconds(pid);
    let started = Instant::now();
    let conns = env_or("LOAD_CONNS", 4) as usize;
    let clients: Vec<_> = (0..conns)
        .map(|c| {
            let (bodies, stop, tls, port) = (bodies.clone(), stop.clone(), tls.clone(), proxy.port());
            std::thread::spawn(move || {
                let mut io = connect(port, tls.as_ref());
                let (mut sent, mut i, mut buf) = (0u64, c, Vec::new());
                while !stop.load(Relaxed) {
                    let body = &bodies[i % bodies.len()];
                    i += 1;
                    let head =
                        format!("POST /write?db=load HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
                    io.write_all(head.as_bytes()).expect("send");
                    io.write_all(body).expect("send body");
                    assert_eq!(read_status(&mut *io, &mut buf), 204);
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Relaxed);
    let batches: u64 = clients.into_iter().map(|c| c.join().expect("client")).sum();
    let elapsed = started.elapsed().as_secs_f64();
    // Until the sinks stop receiving (outbox batches are not client batches), so the CPU includes
    // sending what was acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, Instant::now());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = (a.requests.load(Relaxed), b.requests.load(Relaxed));
        if now.0 == now.1 && now.0 == last.0 && last.1.elapsed() > Duration::from_millis(1000) {
            break;
        }
        if now.0 != last.0 {
            last = (now.0, Instant::now());
        }
    }
    let cpu = proc_cpu_seconds(pid) - cpu_before;
    let lines = (batches as usize * LINES_PER_BATCH) as f64;
    println!(
        "{mode:<22} lines/s {:>10.0}  proxy {:.3} CPU-µs/line  ({batches} client batches; the sinks got {} + {} outbox batches)",
        lines / elapsed,
        cpu / lines * 1e6,
        a.requests.load(Relaxed),
        b.requests.load(Relaxed)
    );
}

fn handshakes(n: usize) {
    let dir = TempDir::new("tls-bench-handshakes");
    let certs = certificates(&dir);
    let sink = start_sink(None);
    let tls_proxy = start_proxy(&dir, &certs, true, [(sink.port, false), (sink.port, false)], 1);
    let plain_dir = TempDir::new("tls-bench-handshakes-plain");
    let plain_proxy = start_proxy(&plain_dir, &certs, false, [(sink.port, false), (sink.port, false)], 1);
    let modes: [(&str, &Proxy, Option<Arc<rustls::ClientConfig>>); 3] = [
        ("full TLS 1.3 handshake", &tls_proxy, Some(client_config(&certs[0], false))),
        ("resumed TLS 1.3 session", &tls_proxy, Some(client_config(&certs[0], true))),
        ("plain TCP", &plain_proxy, None),
    ];
    for (mode, proxy, tls) in modes {
        let pid = proxy_pid(proxy);
        let cpu_before = proc_cpu_seconds(pid);
        let started = Instant::now();
        let mut buf = Vec::new();
        for _ in 0..n {
            let mut io = connect(proxy.port(), tls.as_ref());
            io.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("ping");
            assert_eq!(read_status(&mut *io, &mut buf), 204);
        }
        let wall = started.elapsed().as_secs_f64() / n as f64;
        // Closing connections are reaped on the proxy's next turns; let them be counted.
        std::thread::sleep(Duration::from_millis(300));
        let cpu = (proc_cpu_seconds(pid) - cpu_before) / n as f64;
        println!(
            "new connection + GET /ping, {mode:<24} proxy {:>6.0} CPU-µs/connection, client wall {:>6.0} µs",
            cpu * 1e6,
            wall * 1e6
        );
    }
}

fn main() {
    let quick = !common::full_run();
    let secs = if quick { 1 } else { env_or("LOAD_SECS", 10) };
    println!(
        "tls: {} keep-alive connections x {LINES_PER_BATCH}-line batches for {secs} s, proxy --threads {}, 2 sinks, backend gzip {}",
        env_or("LOAD_CONNS", 4),
        env_or("LOAD_THREADS", 2),
        env_or("LOAD_GZIP_LEVEL", 1)
    );
    relay("plain", false, false, secs);
    relay("TLS clients", true, false, secs);
    relay("TLS clients + backends", true, true, secs);
    handshakes(if quick { 20 } else { env_or("TLS_HANDSHAKES", 500) as usize });
}
