//! Child processes that die with their handle, and private `redis-server` and `influxd`
//! instances built on them.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port, http};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A child process with stdout and stderr appended to a log file, killed and reaped
/// on drop.
pub struct Process {
    name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Process {
        Process::start(name, cmd, Some(log))
    }

    /// Like [`Process::spawn`], but stderr is this process's own (shown as it comes) and stdout
    /// is dropped; [`Process::log`] is then empty.
    pub fn spawn_inheriting_stderr(name: &str, cmd: &mut Command) -> Process {
        Process::start(name, cmd, None)
    }

    fn start(name: &str, cmd: &mut Command, log: Option<&Path>) -> Process {
        cmd.stdin(Stdio::null());
        match log {
            Some(log) => {
                let open = || OpenOptions::new().create(true).append(true).open(log);
                let (out, err) = match (open(), open()) {
                    (Ok(out), Ok(err)) => (out, err),
                    (Err(e), _) | (_, Err(e)) => panic!("cannot open log {}: {e}", log.display()),
                };
                cmd.stdout(out).stderr(err);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        let log = log.map_or_else(PathBuf::new, Path::to_path_buf);
        Process { name: name.to_string(), child: Some(child), status: None, log }
    }

    /// None once the process has been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has exited, without blocking.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            self.status = Some(status);
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    pub fn signal(&mut self, signal: libc::c_int) {
        // Only a process not yet reaped: its pid cannot have been reused.
        if self.is_running()
            && let Some(pid) = self.pid()
        {
            // SAFETY: kill(2) takes no pointers, so memory safety asks nothing of the call; that the
            // signal reaches our child and no other process is what the check above ensures (this
            // thread is the only one that reaps it, and it is not reaped yet).
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL and reap; returns the exit status (also of an already exited process).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.status = child.wait().ok();
        }
        self.status
    }

    /// SIGTERM, then up to `grace` for the process to exit; None if it is still running.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit(grace)
    }

    /// Polls `ready` until it holds; `Err` with the exit status if the process exits
    /// first, so callers can retry on a bind failure. Panics at the deadline.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        what: &str,
        ready: impl FnMut(&Process) -> bool,
    ) -> Result<(), ExitStatus> {
        self.poll_ready(timeout, Duration::from_millis(10), what, ready)
    }

    /// Polls `GET /ping` on `port` every 2 ms until it answers 204 and returns how long that took
    /// from this call: a timing, e.g. of a start. Each try waits up to 10 s for its answer, so a
    /// connection the server accepts before it serves is answered as soon as it does. Panics with
    /// the log tail if the process exits first or after `timeout`.
    pub fn wait_ping(&mut self, port: u16, timeout: Duration) -> Duration {
        let started = Instant::now();
        let deadline = started + timeout;
        let addr = format!("127.0.0.1:{port}");
        let ping = |_: &Process| {
            let left = deadline.saturating_duration_since(Instant::now());
            !left.is_zero() && ping_within(&addr, left.min(Duration::from_secs(10)))
        };
        if let Err(status) = self.poll_ready(timeout, Duration::from_millis(2), "GET /ping", ping) {
            panic!("{} exited ({status}) before answering /ping; log tail:\n{}", self.name, self.log_tail(30));
        }
        started.elapsed()
    }

    fn poll_ready(
        &mut self,
        timeout: Duration,
        every: Duration,
        what: &str,
        mut ready: impl FnMut(&Process) -> bool,
    ) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(status);
            }
            if ready(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("{} not ready ({what}) after {timeout:?}; log tail:\n{}", self.name, self.log_tail(40));
            }
            std::thread::sleep(every);
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether this very process has a socket listening on `port`. Readiness checks use
    /// it so that a server of another test binary that got the same port is not taken
    /// for ours.
    pub fn listens_on(&self, port: u16) -> bool {
        let Some(pid) = self.pid() else { return false };
        let inodes = listening_inodes(port);
        if inodes.is_empty() {
            return false;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            let target = fs::read_link(fd.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            let inode = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'));
            inode.and_then(|i| i.parse::<u64>().ok()).is_some_and(|i| inodes.contains(&i))
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Socket inodes of TCP listeners on `port`, from /proc/net/tcp{,6}.
fn listening_inodes(port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1).and_then(|a| a.rsplit(':').next());
            let local_port = local_port.and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && fields.get(3) == Some(&LISTEN) {
                inodes.extend(fields.get(9).and_then(|i| i.parse::<u64>().ok()));
            }
        }
    }
    inodes
}

/// Calls `launch` until it returns a running server, trying again (on fresh ports, if
/// `launch` draws them) when the server died because its port was taken meanwhile by
/// another test binary. `launch` returns the server's log tail when it died.
fn retry_on_port_clash<T>(what: &str, mut launch: impl FnMut() -> Result<T, String>) -> T {
    const ATTEMPTS: u32 = 5;
    for attempt in 1..=ATTEMPTS {
        match launch() {
            Ok(server) => return server,
            Err(log) if attempt < ATTEMPTS && log.to_lowercase().contains("address already in use") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(log) => {
                panic!("{what} exited during startup (attempt {attempt}); log tail:\n{log}")
            }
        }
    }
    unreachable!()
}

/// Whether `GET /ping` on `addr` answers 204 within 2 s.
pub fn ping_ok(addr: &str) -> bool {
    ping_within(addr, Duration::from_secs(2))
}

/// Whether `GET /ping` on `addr` answers 204 within `timeout`.
pub fn ping_within(addr: &str, timeout: Duration) -> bool {
    let ping = http::try_request(addr, "GET", "/ping", &[], b"", timeout);
    ping.is_ok_and(|r| r.status == 204)
}

/// A private `redis-server` without persistence, on its own port.
pub struct Redis {
    process: Process,
    port: u16,
    dir: TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = TempDir::new("redis");
        let (process, port) = retry_on_port_clash("redis-server", || {
            let port = free_port();
            Redis::launch(&dir, port).map(|p| (p, port))
        });
        Redis { process, port, dir }
    }

    fn launch(dir: &TempDir, port: u16) -> Result<Process, String> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
        cmd.args(["--save", "", "--appendonly", "no", "--dir"]).arg(dir.path());
        let mut process = Process::spawn("redis-server", &mut cmd, &dir.join("redis.log"));
        let url = format!("redis://127.0.0.1:{port}/");
        match process.wait_ready(START_TIMEOUT, "PING", |p| p.listens_on(port) && redis_ping(&url)) {
            Ok(()) => Ok(process),
            Err(_) => Err(process.log_tail(40)),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        let conn = redis::Client::open(self.url()).and_then(|c| c.get_connection());
        let conn = conn.unwrap_or_else(|e| panic!("cannot connect to redis at {}: {e}", self.addr()));
        conn.set_read_timeout(Some(http::DEFAULT_TIMEOUT)).expect("redis set_read_timeout");
        conn
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGKILL and reap: when this returns, the port is closed.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts a new, empty server on the same port (stopping the current one first).
    pub fn start_again(&mut self) {
        self.stop();
        let (dir, port) = (&self.dir, self.port);
        self.process = retry_on_port_clash("redis-server", || Redis::launch(dir, port));
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

fn redis_ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

/// Sets `key = value` (a TOML literal, quotes included for strings) in `[section]` of a
/// TOML text, adding the key or the section when missing; "" is the top level. For
/// `Influxd::start_with` hooks.
pub fn set_toml(config: &mut String, section: &str, key: &str, value: &str) {
    let mut lines: Vec<String> = config.lines().map(String::from).collect();
    let header = format!("[{section}]");
    let line = format!("  {key} = {value}");
    let body_start =
        if section.is_empty() { Some(0) } else { lines.iter().position(|l| l.trim() == header).map(|i| i + 1) };
    match body_start {
        None => lines.extend([String::new(), header, line]),
        Some(start) => {
            let end =
                lines[start..].iter().position(|l| l.trim_start().starts_with('[')).map_or(lines.len(), |i| start + i);
            let existing = lines[start..end].iter().position(|l| l.split('=').next().map(str::trim) == Some(key));
            match existing {
                Some(i) => lines[start + i] = line,
                None => lines.insert(start, line),
            }
        }
    }
    *config = lines.join("\n") + "\n";
}

/// A private `influxd` (InfluxDB 1.x) with its data, config and log in a temp dir.
pub struct Influxd {
    process: Process,
    dir: TempDir,
    http_port: u16,
}

impl Influxd {
    pub fn start() -> Influxd {
        Influxd::start_with(|_| {})
    }

    /// `edit` may change the generated config text (see [`set_toml`]), except for
    /// addresses and directories.
    pub fn start_with(mut edit: impl FnMut(&mut String)) -> Influxd {
        let dir = TempDir::new("influxd");
        let (process, http_port) = retry_on_port_clash("influxd", || {
            let (http_port, rpc_port) = (free_port(), free_port());
            let mut config = base_config(dir.path(), http_port, rpc_port);
            edit(&mut config);
            fs::write(dir.join("influxd.toml"), config).expect("write influxd.toml");
            Influxd::launch(&dir, http_port).map(|p| (p, http_port))
        });
        Influxd { process, dir, http_port }
    }

    fn launch(dir: &TempDir, http_port: u16) -> Result<Process, String> {
        let mut cmd = Command::new("influxd");
        cmd.arg("run").arg("-config").arg(dir.join("influxd.toml"));
        let mut process = Process::spawn("influxd", &mut cmd, &dir.join("influxd.log"));
        let addr = format!("127.0.0.1:{http_port}");
        match process.wait_ready(START_TIMEOUT, "GET /ping", |p| p.listens_on(http_port) && ping_ok(&addr)) {
            Ok(()) => Ok(process),
            Err(_) => Err(process.log_tail(40)),
        }
    }

    pub fn port(&self) -> u16 {
        self.http_port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Clean shutdown: SIGTERM, then SIGKILL if still running after 10 s.
    pub fn stop(&mut self) {
        if self.process.terminate(Duration::from_secs(10)).is_none() {
            self.process.kill();
        }
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Restarts on the same data, config and ports (stopping it first if running).
    pub fn start_again(&mut self) {
        self.stop();
        let (dir, port) = (&self.dir, self.http_port);
        self.process = retry_on_port_clash("influxd", || Influxd::launch(dir, port));
    }

    /// Whether an `influxd` binary can be run (`influxd version` succeeds).
    pub fn available() -> bool {
        let mut cmd = Command::new("influxd");
        cmd.arg("version").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }

    /// None while it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn create_db(&self, name: &str) {
        let q = format!("CREATE DATABASE {}", quote_ident(name));
        let path = format!("/query?{}", http::query_string(&[("q", &q)]));
        let response = http::request(&self.addr(), "POST", &path, &[], b"");
        let error = &response.json()["results"][0]["error"];
        assert!(response.status == 200 && error.is_null(), "{q}: {} {}", response.status, response.text());
    }

    /// GET /query with `epoch=ns`; panics unless the status is 200.
    pub fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let path = format!("/query?{}", http::query_string(&[("db", db), ("q", q), ("epoch", "ns")]));
        let response = http::get(&self.addr(), &path);
        assert_eq!(response.status, 200, "{q}: {}", response.text());
        response.json()
    }

    /// The rows of the first series of the first result; empty if there is none.
    /// Panics on a statement error (e.g. "database not found").
    pub fn values(&self, db: &str, q: &str) -> Vec<Vec<serde_json::Value>> {
        self.first_series(db, q).map(|(_, rows)| rows).unwrap_or_default()
    }

    fn first_series(&self, db: &str, q: &str) -> Option<(Vec<String>, Vec<Vec<serde_json::Value>>)> {
        let result = &self.query(db, q)["results"][0];
        assert!(result["error"].is_null(), "{q} on {db}: {}", result["error"]);
        let series = &result["series"][0];
        let columns = series["columns"].as_array()?.iter().map(|c| c.as_str().unwrap_or_default().to_string());
        let rows = series["values"].as_array()?.iter().map(|r| r.as_array().cloned().unwrap_or_default());
        Some((columns.collect(), rows.collect()))
    }

    /// Points in `measurement` (0 if absent): the largest per-field count, since
    /// `count(*)` counts each field separately.
    pub fn count(&self, db: &str, measurement: &str) -> u64 {
        let q = format!("SELECT count(*) FROM {}", quote_ident(measurement));
        let Some((columns, rows)) = self.first_series(db, &q) else {
            return 0;
        };
        let Some(row) = rows.first() else { return 0 };
        let counts = columns.iter().zip(row).filter(|(c, _)| *c != "time");
        counts.filter_map(|(_, v)| v.as_u64()).max().unwrap_or(0)
    }

    /// Points of `measurement` that have `field`.
    pub fn count_field(&self, db: &str, measurement: &str, field: &str) -> u64 {
        let q = format!("SELECT count({}) FROM {}", quote_ident(field), quote_ident(measurement));
        let rows = self.values(db, &q);
        rows.first().and_then(|row| row.get(1)?.as_u64()).unwrap_or(0)
    }

    /// POST /write (nanosecond timestamps); asserts 204.
    pub fn write(&self, db: &str, lines: &str) {
        let path = format!("/write?{}", http::query_string(&[("db", db)]));
        let response = http::post(&self.addr(), &path, lines.as_bytes());
        assert_eq!(response.status, 204, "write to {db}: {}", response.text());
    }
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn base_config(dir: &Path, http_port: u16, rpc_port: u16) -> String {
    let dir = dir.display();
    format!(
        r#"reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

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

[http]
  bind-address = "127.0.0.1:{http_port}"
  bind-socket = "{dir}/influxd.sock"
  log-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"#
    )
}
