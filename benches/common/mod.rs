//! Helpers shared by the end-to-end bench programs (`load`, `recovery`, `query`): temp dirs, child
//! processes killed on drop, /proc CPU and memory readings, free ports, a small blocking HTTP/1.1
//! client, a sink backend that answers 204, the proxy's JSON config, and private `influxd` instances.
//!
//! Every wait here is bounded; every child is killed and reaped when its guard is dropped.

#![allow(dead_code)]

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const PROXY: &str = env!("CARGO_BIN_EXE_influx-proxy");

/// `cargo bench` passes `--bench`; `cargo test --benches` (and a plain run) does not: keep those short.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
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

// ------------------------------------------------------------------------------------------ temp dirs

/// A fresh directory under the system temp dir, removed on drop (kept with `KEEP_BENCH_DIRS=1`).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("ifxp-bench-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_BENCH_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            eprintln!("kept {}", self.0.display());
        }
    }
}

/// Apparent size (file lengths), allocated size (blocks) and number of files under `dir`.
pub fn dir_usage(dir: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut apparent, mut allocated, mut files) = (0, 0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                apparent += meta.len();
                allocated += meta.blocks() * 512;
                files += 1;
            }
        }
    }
    (apparent, allocated, files)
}

// ------------------------------------------------------------------------------------------ processes

/// A child process, killed and reaped on drop. Its output goes to `log` (stdout and stderr) or, without
/// one, stderr is inherited and stdout dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    pid: u32,
    log: Option<PathBuf>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: Option<&Path>) -> Proc {
        cmd.stdin(Stdio::null());
        match log {
            Some(path) => {
                let open = || fs::OpenOptions::new().create(true).append(true).open(path);
                let (out, err) = match (open(), open()) {
                    (Ok(o), Ok(e)) => (o, e),
                    (Err(e), _) | (_, Err(e)) => panic!("cannot open log {}: {e}", path.display()),
                };
                cmd.stdout(out).stderr(err);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        let pid = child.id();
        Proc { name: name.to_string(), child: Some(child), status: None, pid, log: log.map(Path::to_path_buf) }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status once the process has exited, without blocking.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            self.status = Some(status);
        }
        self.status
    }

    /// SIGTERM, then up to `grace` for the exit; None if it is still running.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.exited().is_none() {
            // Not reaped yet, so the pid is still ours.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGTERM with `grace`, SIGKILL after it.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        match self.terminate(grace) {
            Some(s) => Some(s),
            None => {
                eprintln!("{} did not exit within {grace:?} of SIGTERM: killed", self.name);
                self.kill();
                None
            }
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.status = child.wait().ok();
        }
    }

    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.pid)
    }

    /// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`, `RssAnon`, `RssFile`, ...).
    pub fn status_kb(&self, field: &str) -> u64 {
        proc_status_kb(self.pid, field)
    }

    /// Waits until `GET /ping` on `port` answers 204; returns how long that took. Panics (with the log
    /// tail) if the process exits first or at the deadline.
    pub fn wait_ping(&mut self, port: u16, timeout: Duration) -> Duration {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            if let Some(status) = self.exited() {
                panic!("{} exited ({status}) before answering /ping; log tail:\n{}", self.name, self.log_tail(30));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.kill();
                panic!(
                    "{} did not answer /ping on port {port} within {timeout:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            // A connection accepted before the server serves waits for its answer, so the time is exact.
            if ping(port, left.min(Duration::from_secs(10))) {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; here 11 and 12 after the ')'.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

// ------------------------------------------------------------------------------------------ HTTP client

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The head of a response: status, headers, and how its body is framed.
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub chunked: bool,
    pub content_length: Option<u64>,
}

/// One blocking keep-alive HTTP/1.1 connection to 127.0.0.1; every read and write has a timeout.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    writer: TcpStream,
    head: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16, timeout: Duration) -> io::Result<Client> {
        Client::connect_with(port, timeout, 64 << 10)
    }

    pub fn connect_with(port: u16, timeout: Duration, buffer: usize) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        Ok(Client { reader: BufReader::with_capacity(buffer, stream), writer, head: Vec::with_capacity(512) })
    }

    /// Sends a request; `headers` are complete header lines (`"Name: value\r\n"`).
    pub fn send(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> io::Result<()> {
        self.head.clear();
        write!(self.head, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}")?;
        if !body.is_empty() || method == "POST" {
            write!(self.head, "Content-Length: {}\r\n", body.len())?;
        }
        self.head.extend_from_slice(b"\r\n");
        self.writer.write_all(&self.head)?;
        if !body.is_empty() {
            self.writer.write_all(body)?;
        }
        Ok(())
    }

    pub fn read_head(&mut self) -> io::Result<Head> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the answer"));
        }
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        let status = status.ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
        let mut head = Head { status, headers: Vec::new(), chunked: false, content_length: None };
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the head"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else { continue };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                head.content_length = value.parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                head.chunked = true;
            }
            head.headers.push((name.to_string(), value.to_string()));
        }
        Ok(head)
    }

    /// The size of the next chunk of a chunked body (0: the end, trailers consumed).
    pub fn read_chunk_size(&mut self) -> io::Result<u64> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let hex = line.trim_end().split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(hex, 16).map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            loop {
                line.clear();
                if self.reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    break;
                }
            }
        }
        Ok(size)
    }

    /// The CRLF after a chunk's data.
    pub fn read_chunk_end(&mut self) -> io::Result<()> {
        let mut crlf = [0u8; 2];
        self.reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(io::Error::other("chunk data not followed by CRLF"));
        }
        Ok(())
    }

    pub fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let head = self.read_head()?;
        let mut body = Vec::new();
        let no_body = head_request || head.status == 204 || head.status == 304 || head.status < 200;
        if no_body {
        } else if head.chunked {
            loop {
                let size = self.read_chunk_size()?;
                if size == 0 {
                    break;
                }
                let at = body.len();
                body.resize(at + size as usize, 0);
                self.reader.read_exact(&mut body[at..])?;
                self.read_chunk_end()?;
            }
        } else if let Some(n) = head.content_length {
            body.resize(n as usize, 0);
            self.reader.read_exact(&mut body)?;
        } else {
            self.reader.read_to_end(&mut body)?;
        }
        Ok(Response { status: head.status, headers: head.headers, body })
    }

    pub fn request(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> io::Result<Response> {
        self.send(method, path, headers, body)?;
        self.read_response(method == "HEAD")
    }
}

/// One request on a new connection.
pub fn request(port: u16, method: &str, path: &str, body: &[u8], timeout: Duration) -> io::Result<Response> {
    Client::connect(port, timeout)?.request(method, path, "Connection: close\r\n", body)
}

pub fn get(port: u16, path: &str) -> io::Result<Response> {
    request(port, "GET", path, b"", Duration::from_secs(30))
}

/// Whether `GET /ping` answers 204 within `timeout`.
pub fn ping(port: u16, timeout: Duration) -> bool {
    request(port, "GET", "/ping", b"", timeout).is_ok_and(|r| r.status == 204)
}

/// Percent-encoding of a query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/query?db=DB&q=Q` plus `extra` (already encoded, `&`-prefixed).
pub fn query_path(db: &str, q: &str, extra: &str) -> String {
    format!("/query?db={}&q={}{extra}", url_encode(db), url_encode(q))
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

/// Reads a request head: method, target, Content-Length. None at the end of the connection.
pub fn read_request_head(reader: &mut impl BufRead) -> Option<(String, String, usize)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let (method, target) = (words.next()?.to_string(), words.next()?.to_string());
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    Some((method, target, length))
}

// ------------------------------------------------------------------------------------------ the proxy

/// A JSON config (`--config FILE`) for node `node` listening on `port`, self-statistics off, with the
/// given backends (name, fields including `url`) and `_default_` routed to all of them.
pub fn proxy_config(node: &str, port: u16, backends: &[(&str, Value)]) -> String {
    let names: Vec<&str> = backends.iter().map(|(n, _)| *n).collect();
    let backends: serde_json::Map<String, Value> = backends.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    let config = json!({
        "NODES": {node: {"listenaddr": format!("127.0.0.1:{port}"), "interval": "0"}},
        "BACKENDS": backends,
        "KEYMAPS": {"_default_": names},
    });
    serde_json::to_string_pretty(&config).expect("config json")
}

/// Starts the proxy binary (not waiting for it): `--config`, `--node`, `--data-dir`, `--threads`,
/// `--log-level` and `extra` arguments; output to `log`, or stderr inherited without one.
pub fn spawn_proxy(
    config: &Path,
    node: &str,
    data_dir: &Path,
    threads: u64,
    log_level: &str,
    extra: &[&str],
    log: Option<&Path>,
) -> Proc {
    let mut cmd = Command::new(PROXY);
    cmd.arg("--config").arg(config).args(["--node", node, "--log-level", log_level]);
    cmd.arg("--threads").arg(threads.to_string()).arg("--data-dir").arg(data_dir).args(extra);
    Proc::spawn("influx-proxy", &mut cmd, log)
}

// ------------------------------------------------------------------------------------------ influxd

/// A private `influxd` with its config, data and log under `dir`; created stopped.
pub struct Influxd {
    dir: PathBuf,
    pub http_port: u16,
    rpc_port: u16,
    proc: Option<Proc>,
}

impl Influxd {
    /// Whether an `influxd` binary can be run.
    pub fn available() -> bool {
        Command::new("influxd")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Writes the config (fresh ports) under `dir`; does not start.
    pub fn new(dir: &Path) -> Influxd {
        fs::create_dir_all(dir).expect("influxd dir");
        let influxd = Influxd { dir: dir.to_path_buf(), http_port: free_port(), rpc_port: free_port(), proc: None };
        influxd.write_config();
        influxd
    }

    fn write_config(&self) {
        let (dir, http, rpc) = (self.dir.display(), self.http_port, self.rpc_port);
        let config = format!(
            r#"reporting-enabled = false
bind-address = "127.0.0.1:{rpc}"

[meta]
  dir = "{dir}/meta"
  logging-enabled = false

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  bind-address = "127.0.0.1:{http}"
  bind-socket = "{dir}/influxd.sock"
  log-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"#
        );
        fs::write(self.dir.join("influxd.toml"), config).expect("write influxd.toml");
    }

    /// Starts it and waits for `/ping`; returns the time from spawn to the first 204.
    pub fn start(&mut self) -> Duration {
        assert!(self.proc.is_none(), "influxd already running");
        let mut cmd = Command::new("influxd");
        cmd.arg("run").arg("-config").arg(self.dir.join("influxd.toml"));
        let mut proc = Proc::spawn("influxd", &mut cmd, Some(&self.dir.join("influxd.log")));
        let took = proc.wait_ping(self.http_port, Duration::from_secs(60));
        self.proc = Some(proc);
        took
    }

    /// SIGTERM, SIGKILL after 20 s.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    pub fn cpu_seconds(&self) -> f64 {
        self.pid().map_or(0.0, proc_cpu_seconds)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// GET /query; panics unless 200.
    pub fn query(&self, db: &str, q: &str) -> Value {
        let r = get(self.http_port, &query_path(db, q, "")).unwrap_or_else(|e| panic!("influxd query {q}: {e}"));
        assert_eq!(r.status, 200, "influxd {q}: {}", r.text());
        r.json()
    }

    pub fn create_db(&self, db: &str) {
        let r = request(
            self.http_port,
            "POST",
            &query_path("", &format!("CREATE DATABASE \"{db}\""), ""),
            b"",
            Duration::from_secs(30),
        )
        .expect("CREATE DATABASE");
        assert!(r.status == 200 && r.json()["results"][0]["error"].is_null(), "CREATE DATABASE: {}", r.text());
    }

    pub fn write(&self, db: &str, lines: &[u8]) {
        let r =
            request(self.http_port, "POST", &format!("/write?db={}", url_encode(db)), lines, Duration::from_secs(60))
                .expect("influxd write");
        assert_eq!(r.status, 204, "influxd write: {}", r.text());
    }

    /// `SELECT count(field) FROM measurement` (0 when there are no points).
    pub fn count(&self, db: &str, measurement: &str, field: &str) -> u64 {
        let v = self.query(db, &format!("SELECT count(\"{field}\") FROM \"{measurement}\""));
        let result = &v["results"][0];
        assert!(result["error"].is_null(), "count: {}", result["error"]);
        result["series"][0]["values"][0][1].as_u64().unwrap_or(0)
    }
}
