//! The proxy as a host runs it: who may listen on its address, the open-file limit, how bad flags and
//! start-up errors read, `/health` and `/metrics` facts about the process, and the scripts a newcomer
//! runs first.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::http::{self, HttpConn};
use util::{FakeBackend, Process, Proxy, TempDir, free_port, wait_until};

const PROXY_BIN: &str = env!("CARGO_BIN_EXE_influx-proxy");
const WAIT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------------------------ helpers

/// A `--config FILE` config: node `l1` on `port`, one backend, everything to it.
fn config_json(backend: &FakeBackend, port: u16, node: &[(&str, &str)]) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("listenaddr".into(), json!(format!("127.0.0.1:{port}")));
    fields.insert("interval".into(), json!("0"));
    for (k, v) in node {
        fields.insert(k.to_string(), json!(v));
    }
    let config = json!({
        "NODES": {"l1": fields},
        "BACKENDS": {"a": {"url": backend.url(), "interval": "50", "checkinterval": "100", "rewriteinterval": "500"}},
        "KEYMAPS": {"_default_": ["a"]},
    });
    serde_json::to_string_pretty(&config).expect("json")
}

fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config file");
    std::fs::rename(&tmp, path).expect("rename config file");
}

/// A config file in a temp dir, for node `l1` on a fresh port.
struct Setup {
    dir: TempDir,
    file: PathBuf,
    port: u16,
    backend: FakeBackend,
}

fn setup(label: &str, node: &[(&str, &str)]) -> Setup {
    let dir = TempDir::new(label);
    let file = dir.join("proxy.json");
    let port = free_port();
    let backend = FakeBackend::start();
    write_file(&file, &config_json(&backend, port, node));
    Setup { dir, file, port, backend }
}

/// Output of a proxy that must refuse to start: it exits with status 1 within 15 s, and prints exactly
/// one line, `influx-proxy: ...`, which is returned.
fn refused_start(mut proxy: Proxy, what: &str) -> String {
    let status = proxy.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| panic!("{what}: the proxy did not exit"));
    let out = proxy.log();
    assert_eq!(status.code(), Some(1), "{what}: exit status {status}; output:\n{out}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("influx-proxy: ")).collect();
    assert_eq!(errors.len(), 1, "{what}: want one 'influx-proxy: ' line; output:\n{out}");
    // Log lines before it are fine (start-up info), but no other error and nothing like a panic.
    for bad in ["panicked", "RUST_BACKTRACE", " ERROR "] {
        assert!(!out.contains(bad), "{what}: output has {bad:?}:\n{out}");
    }
    errors[0].to_string()
}

fn health(addr: &str) -> Value {
    let r = http::get(addr, "/health");
    assert_eq!(r.status, 200, "/health: {}", r.text());
    r.json()
}

/// `cmd` run through `sh -c` in a process group of its own, so that it and its children can be killed
/// together.
fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    cmd.process_group(0);
    cmd
}

/// Raises this test process's own soft open-file limit to its hard limit (the clients need files too).
fn raise_own_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read or write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(1 << 20);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// The proxy started by `sh -c 'ulimit ...; exec influx-proxy ...'`, with its output in the temp dir.
fn proxy_under_ulimit(s: &Setup, ulimit: &str, extra: &str) -> Process {
    let script = format!(
        "{ulimit}; exec '{PROXY_BIN}' --config '{}' --node l1 --data-dir '{}' --threads 2 --log-level info {extra}",
        s.file.display(),
        s.dir.join("data").display()
    );
    let mut cmd = sh(&script);
    Process::spawn("influx-proxy", &mut cmd, &s.dir.join("proxy.log"))
}

/// How a fresh `GET /ping` went: answered 204, closed by the proxy, or nothing within `within`.
#[derive(Debug, PartialEq)]
enum PingOutcome {
    Answered,
    Closed,
    Stalled,
}

fn fresh_ping(addr: &str, within: Duration) -> PingOutcome {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().expect("addr"), within) else {
        return PingOutcome::Closed;
    };
    let _ = s.set_read_timeout(Some(within));
    if s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
        return PingOutcome::Closed;
    }
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => PingOutcome::Closed,
        Ok(n) if buf[..n].starts_with(b"HTTP/1.1 204") => PingOutcome::Answered,
        Ok(n) => panic!("unexpected answer to /ping: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            PingOutcome::Stalled
        }
        Err(_) => PingOutcome::Closed,
    }
}

fn wait_ping(process: &mut Process, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fresh_ping(addr, Duration::from_secs(2)) != PingOutcome::Answered {
        assert!(process.is_running(), "the proxy exited; log:\n{}", process.log_tail(30));
        assert!(Instant::now() < deadline, "no /ping answer within 20 s; log:\n{}", process.log_tail(30));
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------------------------------ busy address

/// A second proxy with the same listenaddr (another data dir) must not join the first one's
/// SO_REUSEPORT group and take half its clients.
#[test]
fn second_proxy_on_the_same_address_is_refused() {
    let s = setup("busy-proxy", &[]);
    let first = Proxy::builder_with_file(&s.file, "l1", s.port).start();
    let other = TempDir::new("busy-proxy-2");
    let second = Proxy::builder_with_file(&s.file, "l1", s.port).data_dir(other.join("data")).spawn();
    let error = refused_start(second, "second proxy");
    assert_eq!(
        error,
        format!("influx-proxy: cannot listen on 127.0.0.1:{}: address already in use by another influx-proxy", s.port)
    );
    // Every client of the address still reaches the first proxy.
    for _ in 0..20 {
        assert_eq!(http::get(&first.addr(), "/ping").status, 204);
    }
}

/// Whoever holds the port first, a plain listener or a SO_REUSEPORT one of the same user, the proxy
/// refuses to start instead of sharing it.
#[test]
fn address_held_by_another_process_is_refused() {
    for reuseport in [false, true] {
        let s = setup("busy-other", &[]);
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket.set_reuse_port(reuseport).expect("SO_REUSEPORT");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", s.port).parse().expect("addr");
        socket.bind(&addr.into()).expect("bind");
        socket.listen(16).expect("listen");
        let proxy = Proxy::builder_with_file(&s.file, "l1", s.port).spawn();
        let error = refused_start(proxy, &format!("held by a listener with SO_REUSEPORT={reuseport}"));
        assert_eq!(error, format!("influx-proxy: cannot listen on {addr}: address already in use by another process"));
    }
}

// ------------------------------------------------------------------------------------ open files

/// Started under the common soft limit of 1024 open files, the proxy raises it and serves 1500
/// clients at once; each of them, and a fresh one, is answered.
#[test]
fn soft_file_limit_is_raised_and_1500_clients_are_served() {
    let own = raise_own_nofile();
    assert!(own >= 3200, "this test needs a hard open-file limit of at least 3200, the host gives {own}");
    let s = setup("nofile-soft", &[("idletimeout", "120")]);
    let mut proxy = proxy_under_ulimit(&s, "ulimit -Sn 1024", "");
    let addr = format!("127.0.0.1:{}", s.port);
    wait_ping(&mut proxy, &addr);

    let mut clients: Vec<HttpConn> = Vec::with_capacity(1500);
    for i in 0..1500 {
        let conn = HttpConn::try_connect(&addr, Duration::from_secs(5)).unwrap_or_else(|e| panic!("client {i}: {e}"));
        clients.push(conn);
    }
    // All connected: a fresh client is answered at once, and so is every one of the 1500.
    assert_eq!(fresh_ping(&addr, Duration::from_secs(5)), PingOutcome::Answered, "log:\n{}", proxy.log_tail(20));
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_timeout(Duration::from_secs(5));
        c.send("GET", "/ping", &[], b"");
        let r = c
            .try_read_response()
            .unwrap_or_else(|e| panic!("client {i} got no answer: {e}; log:\n{}", proxy.log_tail(20)));
        assert_eq!(r.status, 204, "client {i}");
    }
    let log = proxy.log();
    assert!(log.contains("open-file limit raised from 1024 to"), "the raise is not logged:\n{log}");
    assert!(log.contains("client connections per worker: 4096"), "the connection limit is not logged:\n{log}");
}

/// With a hard limit too low for the clients, connections past what fits are closed at once: a fresh
/// client gets an answer or a closed connection quickly, never a hang in the listen queue, and once
/// clients leave the proxy serves normally again.
#[test]
fn out_of_files_never_stalls_the_listener() {
    raise_own_nofile();
    let s = setup("nofile-hard", &[("idletimeout", "120")]);
    let mut proxy = proxy_under_ulimit(&s, "ulimit -n 256", "");
    let addr = format!("127.0.0.1:{}", s.port);
    wait_ping(&mut proxy, &addr);

    let mut clients = Vec::new();
    for _ in 0..400 {
        // Past the limit the proxy closes them; the connect itself still succeeds (listen queue).
        if let Ok(c) = TcpStream::connect(&addr) {
            clients.push(c);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for attempt in 0..5 {
        let started = Instant::now();
        let outcome = fresh_ping(&addr, Duration::from_secs(3));
        assert_ne!(
            outcome,
            PingOutcome::Stalled,
            "attempt {attempt}: a fresh client hangs; log:\n{}",
            proxy.log_tail(20)
        );
        assert!(started.elapsed() < Duration::from_secs(2), "attempt {attempt}: took {:?}", started.elapsed());
    }
    assert!(proxy.is_running(), "the proxy died; log:\n{}", proxy.log_tail(20));
    let log = proxy.log();
    assert!(log.contains("not --max-connections 4096"), "the lowered connection limit is not logged:\n{log}");

    drop(clients);
    wait_until(WAIT, "a fresh /ping answered after the clients left", || {
        fresh_ping(&addr, Duration::from_secs(2)) == PingOutcome::Answered
    });
    let metrics = http::get(&addr, "/metrics").text();
    let refused = util::inspect::metric_in(&metrics, "influx_proxy_connections_refused_total", &[]).unwrap_or(0.0)
        + util::inspect::metric_in(&metrics, "influx_proxy_connections_shed_total", &[]).unwrap_or(0.0);
    assert!(refused > 0.0, "no connection counted as refused or shed:\n{metrics}");
}

// ------------------------------------------------------------------------------------ flags and errors

#[test]
fn bad_log_level_is_one_line_and_exit_1() {
    let s = setup("bad-level", &[]);
    let file = s.file.display().to_string();
    let proxy = Proxy::spawn_raw(&["--config", &file, "--log-level", "loud"]);
    let error = refused_start(proxy, "--log-level loud");
    assert!(error.contains("--log-level") && error.contains("\"loud\"") && error.contains("off"), "{error}");
}

#[test]
fn bad_flags_are_one_line_and_exit_1() {
    for (args, needle) in [
        (&["--bogus"][..], "--bogus"),
        (&["--sync", "sometimes"], "--sync must be never, batch or always"),
        (&["--threads"], "--threads"),
    ] {
        let error = refused_start(Proxy::spawn_raw(args), &format!("{args:?}"));
        assert!(error.contains(needle), "{args:?}: {error}");
        assert!(error.ends_with("(see influx-proxy --help)"), "{args:?}: {error}");
    }
}

#[test]
fn help_lists_the_off_log_level() {
    let out = Command::new(PROXY_BIN).arg("--help").stdin(Stdio::null()).output().expect("run --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line: String = text.lines().skip_while(|l| !l.trim_start().starts_with("--log-level")).take(2).collect();
    assert!(line.contains("trace or off"), "{text}");
}

/// With `--config FILE` there is no cache to fall back on, so the error says nothing about one.
#[test]
fn config_file_errors_do_not_mention_a_cache() {
    let dir = TempDir::new("file-errors");
    let missing = dir.join("missing.json");
    let data = dir.join("data");
    let proxy =
        Proxy::spawn_raw(&["--config", &missing.display().to_string(), "--data-dir", &data.display().to_string()]);
    let error = refused_start(proxy, "missing config file");
    assert!(error.contains("missing.json"), "{error}");
    assert!(!error.contains("cache"), "{error}");

    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{\"BACKENDS\": {}}").expect("write");
    let proxy =
        Proxy::spawn_raw(&["--config", &broken.display().to_string(), "--data-dir", &data.display().to_string()]);
    let error = refused_start(proxy, "invalid config file");
    assert!(error.contains("invalid config"), "{error}");
    assert!(!error.contains("cache"), "{error}");
}

// ------------------------------------------------------------------------------------ /health, /metrics

/// `status` is not `ok` while the config source holds a config that was rejected.
#[test]
fn health_is_degraded_while_the_config_is_rejected() {
    let s = setup("health-config", &[]);
    let proxy = Proxy::builder_with_file(&s.file, "l1", s.port).arg("--poll-interval").arg("100").start();
    let addr = proxy.addr();
    wait_until(WAIT, "status ok", || health(&addr)["status"] == "ok");
    assert_eq!(health(&addr)["problems"], json!([]));

    let good = std::fs::read_to_string(&s.file).expect("read");
    write_file(&s.file, &good.replace("\"_default_\": [", "\"_default_\": [\"nope\", "));
    wait_until(WAIT, "status degraded by the rejected config", || {
        let h = health(&addr);
        h["status"] == "degraded" && h["config"]["last_error"].is_string()
    });
    let h = health(&addr);
    let problems = h["problems"].to_string();
    assert!(problems.contains("nope") && h["backends"][0]["up"] == true, "{h}");

    write_file(&s.file, &good);
    wait_until(WAIT, "status ok again", || health(&addr)["status"] == "ok");
}

/// A backend that was down and came back shows no stale `last_error`.
#[test]
fn backend_last_error_clears_when_it_recovers() {
    let s = setup("health-backend", &[]);
    let proxy = Proxy::builder_with_file(&s.file, "l1", s.port).start();
    let addr = proxy.addr();
    let backend = |h: &Value| h["backends"][0].clone();
    wait_until(WAIT, "backend up", || backend(&health(&addr))["up"] == true);

    s.backend.stop();
    wait_until(WAIT, "backend down with an error", || {
        let b = backend(&health(&addr));
        b["up"] == false && b["last_error"].is_string()
    });
    s.backend.start_again();
    wait_until(WAIT, "backend up again", || backend(&health(&addr))["up"] == true);
    let b = backend(&health(&addr));
    assert_eq!(b["last_error"], Value::Null, "stale error after recovery: {b}");
}

#[test]
fn metrics_show_build_and_start_time() {
    let s = setup("metrics-build", &[]);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    let proxy = Proxy::builder_with_file(&s.file, "l1", s.port).start();
    let text = http::get(&proxy.addr(), "/metrics").text();
    let version = env!("CARGO_PKG_VERSION");
    assert!(text.contains(&format!("influx_proxy_build_info{{version=\"{version}\"}} 1\n")), "{text}");
    assert!(text.contains("# TYPE process_start_time_seconds gauge"), "{text}");
    let start = util::inspect::metric_in(&text, "process_start_time_seconds", &[]).expect("process_start_time_seconds");
    assert!((before - 1.0..before + 30.0).contains(&start), "start {start}, test began {before}");
}

// ------------------------------------------------------------------------------------ scripts

/// `scripts/test.sh --help` prints its usage and exits, instead of starting the whole suite.
#[test]
fn test_script_help_prints_usage_only() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test.sh");
    let mut child = sh(&format!("exec bash '{}' --help", script.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/test.sh --help");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            // SAFETY: the group is the script's own (process_group(0)).
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            panic!("scripts/test.sh --help was still running after 10 s: it started the suite");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("read");
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains("Usage: scripts/test.sh"), "{out}");
    assert!(!out.contains("==>"), "it started running steps:\n{out}");
}

// ------------------------------------------------------------------------------------ query filter

/// A refused query says which `queryallow` rules would let it through, and lifting exactly those does.
#[test]
fn filter_refusal_names_the_queryallow_rules() {
    let s = setup("filter-hint", &[]);
    let proxy = Proxy::builder_with_file(&s.file, "l1", s.port).arg("--poll-interval").arg("100").start();
    let addr = proxy.addr();
    let q = format!("/query?{}", http::query_string(&[("db", "db"), ("q", "SELECT * FROM cpu")]));
    let r = http::get(&addr, &q);
    assert_eq!(r.status, 400, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    let hint = "(to allow it, add select_star,select_no_time to the node's queryallow)";
    assert!(error.starts_with("query forbidden by rule select_star: ") && error.ends_with(hint), "{error}");
    assert_eq!(r.header("X-Influxdb-Error"), Some(error.as_str()));

    write_file(&s.file, &config_json(&s.backend, s.port, &[("queryallow", "select_star,select_no_time")]));
    wait_until(WAIT, "the query allowed once the named rules are lifted", || http::get(&addr, &q).status == 200);
}
