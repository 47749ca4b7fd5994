//! The proxy under test: its configuration in Redis and its process.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use super::TempDir;
use super::procs::{Process, Redis, ping_ok};

const PROXY_BIN: &str = env!("CARGO_BIN_EXE_influx-proxy");
const START_TIMEOUT: Duration = Duration::from_secs(20);
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);

type Fields = Vec<(String, String)>;

/// The proxy's configuration, stored in Redis in the Go influx-proxy's key layout:
/// hashes `default_node`, `n:<node>` and `b:<backend>`, and lists `m:<measurement>` of
/// backend names.
#[derive(Clone, Debug, Default)]
pub struct ProxyConfig {
    default_node: Option<Fields>,
    nodes: Vec<(String, Fields)>,
    backends: Vec<(String, Fields)>,
    keymaps: Vec<(String, Vec<String>)>,
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl ProxyConfig {
    pub fn new() -> ProxyConfig {
        ProxyConfig::default()
    }

    /// `b:<name>` with `url` plus the given fields (db, zone, interval, timeout, ...).
    pub fn backend(mut self, name: &str, url: &str, extra: &[(&str, &str)]) -> Self {
        let mut all = vec![("url".to_string(), url.to_string())];
        all.extend(fields(extra));
        self.backends.push((name.to_string(), all));
        self
    }

    /// `m:<measurement>`, the backends in the given order.
    pub fn keymap(mut self, measurement: &str, backends: &[&str]) -> Self {
        let backends = backends.iter().map(|b| b.to_string()).collect();
        self.keymaps.push((measurement.to_string(), backends));
        self
    }

    pub fn node(mut self, name: &str, node_fields: &[(&str, &str)]) -> Self {
        self.nodes.push((name.to_string(), fields(node_fields)));
        self
    }

    pub fn default_node(mut self, node_fields: &[(&str, &str)]) -> Self {
        self.default_node = Some(fields(node_fields));
        self
    }

    /// Replaces whatever proxy configuration `redis` holds with this one, in one
    /// MULTI/EXEC so a proxy reading meanwhile never sees half of it.
    pub fn write_to(&self, redis: &Redis) {
        let mut conn = redis.conn();
        let mut stale = vec!["default_node".to_string()];
        for pattern in ["n:*", "b:*", "m:*"] {
            stale.extend(scan(&mut conn, pattern));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("DEL").arg(&stale).ignore();
        let hashes = self.default_node.iter().map(|f| ("default_node".to_string(), f));
        let hashes = hashes
            .chain(self.nodes.iter().map(|(name, f)| (format!("n:{name}"), f)))
            .chain(self.backends.iter().map(|(name, f)| (format!("b:{name}"), f)));
        for (key, hash) in hashes.filter(|(_, f)| !f.is_empty()) {
            let mut hset = redis::cmd("HSET");
            hset.arg(key);
            for (field, value) in hash {
                hset.arg(field).arg(value);
            }
            pipe.add_command(hset).ignore();
        }
        for (measurement, backends) in self.keymaps.iter().filter(|(_, b)| !b.is_empty()) {
            pipe.cmd("RPUSH").arg(format!("m:{measurement}")).arg(backends).ignore();
        }
        pipe.query::<()>(&mut conn).unwrap_or_else(|e| panic!("writing proxy config to redis: {e}"));
    }

    /// The same configuration as a `--config FILE` text (the structure `config.py --json` prints;
    /// DEFAULT_NODE only if set), for [`Proxy::builder_with_file`].
    pub fn to_json(&self) -> String {
        let object = |fields: &Fields| {
            let map = fields.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())));
            serde_json::Value::Object(map.collect())
        };
        let named = |entries: &[(String, Fields)]| {
            serde_json::Value::Object(entries.iter().map(|(name, f)| (name.clone(), object(f))).collect())
        };
        let mut top = serde_json::Map::new();
        if let Some(fields) = &self.default_node {
            top.insert("DEFAULT_NODE".into(), object(fields));
        }
        top.insert("NODES".into(), named(&self.nodes));
        top.insert("BACKENDS".into(), named(&self.backends));
        let keymaps = self.keymaps.iter().map(|(m, backends)| (m.clone(), serde_json::json!(backends)));
        top.insert("KEYMAPS".into(), serde_json::Value::Object(keymaps.collect()));
        serde_json::to_string_pretty(&top).expect("proxy config json")
    }
}

fn scan(conn: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
        let (next, batch): (u64, Vec<String>) = scan.query(conn).unwrap_or_else(|e| panic!("SCAN {pattern}: {e}"));
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

pub struct ProxyBuilder {
    redis_addr: String,
    /// `--config FILE` instead of `--redis`, when set.
    config_file: Option<PathBuf>,
    node: String,
    port: u16,
    data_dir: Option<PathBuf>,
    threads: usize,
    log_level: String,
    inherit_stderr: bool,
    args: Vec<String>,
}

impl ProxyBuilder {
    /// Default: a temp dir owned by the `Proxy`.
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// `--log-level`; default "debug".
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }

    /// The proxy's output goes to this process's stderr instead of its log file, which stays
    /// empty (`log`, `log_tail` and the tail printed by a panicking test have nothing to show).
    pub fn inherit_stderr(mut self) -> Self {
        self.inherit_stderr = true;
        self
    }

    /// Appended after the standard arguments.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts the proxy and waits until it answers `GET /ping` with 204.
    pub fn start(self) -> Proxy {
        let mut proxy = self.spawn();
        proxy.wait_ready();
        proxy
    }

    /// Starts the proxy without waiting, e.g. for one that must refuse to start.
    pub fn spawn(self) -> Proxy {
        let dir = TempDir::new("proxy");
        let data_dir = self.data_dir.unwrap_or_else(|| dir.join("data"));
        let [source_flag, source] = match self.config_file {
            Some(file) => ["--config".to_string(), file.display().to_string()],
            None => ["--redis".to_string(), self.redis_addr],
        };
        let mut args: Vec<String> = vec![
            source_flag,
            source,
            "--node".into(),
            self.node,
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--log-level".into(),
            self.log_level,
            "--threads".into(),
            self.threads.to_string(),
        ];
        args.extend(self.args);
        Proxy::launch(args, Some(self.port), dir, self.inherit_stderr)
    }
}

/// A running influx-proxy. Dropping it kills it; if the test is panicking, the tail of
/// the proxy's log is printed so the failure shows why.
pub struct Proxy {
    process: Process,
    args: Vec<String>,
    port: Option<u16>,
    dir: TempDir,
    inherit_stderr: bool,
}

impl Proxy {
    /// `listen_port` must match the node's `listenaddr` in the Redis config.
    pub fn builder(redis: &Redis, node: &str, listen_port: u16) -> ProxyBuilder {
        Proxy::builder_from(redis.addr(), None, node, listen_port)
    }

    /// Like [`Proxy::builder`], but the proxy reads its configuration from the JSON file
    /// `config` (`--config FILE`, the structure `config.py --json` prints) instead of Redis.
    pub fn builder_with_file(config: impl AsRef<Path>, node: &str, listen_port: u16) -> ProxyBuilder {
        Proxy::builder_from(String::new(), Some(config.as_ref().to_path_buf()), node, listen_port)
    }

    fn builder_from(redis_addr: String, config_file: Option<PathBuf>, node: &str, port: u16) -> ProxyBuilder {
        ProxyBuilder {
            redis_addr,
            config_file,
            node: node.to_string(),
            port,
            data_dir: None,
            threads: 2,
            log_level: "debug".into(),
            inherit_stderr: false,
            args: Vec::new(),
        }
    }

    /// The binary with exactly `args`, without waiting for anything: for tests of
    /// command-line handling. `addr` and `restart`'s wait are unavailable.
    pub fn spawn_raw(args: &[&str]) -> Proxy {
        let args = args.iter().map(|a| a.to_string()).collect();
        Proxy::launch(args, None, TempDir::new("proxy"), false)
    }

    fn launch(args: Vec<String>, port: Option<u16>, dir: TempDir, inherit_stderr: bool) -> Proxy {
        let process = Proxy::spawn_process(&args, &dir, inherit_stderr);
        Proxy { process, args, port, dir, inherit_stderr }
    }

    fn spawn_process(args: &[String], dir: &TempDir, inherit_stderr: bool) -> Process {
        let mut cmd = Command::new(PROXY_BIN);
        cmd.args(args);
        if inherit_stderr {
            Process::spawn_inheriting_stderr("influx-proxy", &mut cmd)
        } else {
            Process::spawn("influx-proxy", &mut cmd, &dir.join("proxy.log"))
        }
    }

    fn wait_ready(&mut self) {
        let Some(port) = self.port else { return };
        let addr = self.addr();
        let ready = |p: &Process| p.listens_on(port) && ping_ok(&addr);
        if let Err(status) = self.process.wait_ready(START_TIMEOUT, "GET /ping", ready) {
            panic!("influx-proxy exited ({status}) before answering /ping; its log tail follows");
        }
    }

    pub fn port(&self) -> u16 {
        self.port.expect("a proxy from spawn_raw has no known port")
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    pub fn signal(&mut self, signal: libc::c_int) {
        self.process.signal(signal);
    }

    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// SIGTERM and wait for the exit; panics if the proxy is still running after 30 s.
    pub fn terminate(&mut self) -> ExitStatus {
        match self.process.terminate(TERMINATE_TIMEOUT) {
            Some(status) => status,
            None => panic!("influx-proxy still running {TERMINATE_TIMEOUT:?} after SIGTERM"),
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// Starts again with the same arguments and data dir (SIGKILLing it first if it is
    /// still running) and waits for /ping; the log file is appended to.
    pub fn restart(&mut self) {
        self.respawn();
        self.wait_ready();
    }

    /// Like [`Proxy::restart`], without waiting for anything (see [`Proxy::wait_ping`]).
    pub fn respawn(&mut self) {
        self.process.kill();
        self.process = Proxy::spawn_process(&self.args, &self.dir, self.inherit_stderr);
    }

    /// Waits up to `timeout` for the first 204 on `GET /ping` and returns how long that took from
    /// this call, polling every 2 ms (see [`Process::wait_ping`]): the time a (re)start took, when
    /// called right after `spawn` or `respawn`.
    pub fn wait_ping(&mut self, timeout: Duration) -> Duration {
        let port = self.port();
        self.process.wait_ping(port, timeout)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() && !self.inherit_stderr {
            eprintln!("---- last 100 lines of influx-proxy log ({}) ----", self.log_path().display());
            eprintln!("{}", self.process.log_tail(100));
            eprintln!("---- end of influx-proxy log ----");
        }
    }
}
