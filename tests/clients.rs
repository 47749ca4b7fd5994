//! Real InfluxDB clients pointed at the proxy: the `influx` CLI (Debian `influxdb-client`) and the
//! Python `influxdb` package. They must work as they do against an InfluxDB: writes through
//! `/write`, reads through `/query`, `/ping`, and the query policy's refusals shown as errors.

mod util;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::site::{DB, FAST, Rig, WAIT, influxd_with_db};
use util::{Influxd, ProxyConfig, wait_until};

/// Two backends with database `db` and a proxy routing `cpu` to both, everything else to i1.
struct Clients {
    /// First: the proxy goes before its backends on drop.
    rig: Rig,
    i1: Influxd,
    i2: Influxd,
}

impl Clients {
    fn start() -> Clients {
        let (i1, i2) = (influxd_with_db(), influxd_with_db());
        let config = ProxyConfig::new()
            .backend("i1", &i1.url(), FAST)
            .backend("i2", &i2.url(), FAST)
            .keymap("cpu", &["i1", "i2"])
            .keymap("_default_", &["i1"]);
        Clients { rig: Rig::start(config, &[]), i1, i2 }
    }
}

/// Runs a command with a deadline; panics if it cannot start or outlives it.
fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            // SAFETY: kill(2) takes no pointers, so memory safety asks nothing of the call. The
            // child had not been reaped when the wait timed out, and its pid is not reused before it
            // is; only a child that exits in this very instant could be reaped first.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what} still running after {timeout:?}");
        }
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether `cmd` starts and exits with success.
fn works(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Installs a missing tool with `install` (each a command line), panicking if it still lacks.
fn ensure(what: &str, present: impl Fn() -> bool, installs: &[&[&str]]) {
    if present() {
        return;
    }
    let mut log = String::new();
    for argv in installs {
        let out = Command::new(argv[0]).args(&argv[1..]).output();
        match out {
            Ok(o) => log += &format!("{argv:?}: {}\n", text(&o)),
            Err(e) => log += &format!("{argv:?}: {e}\n"),
        }
        if present() {
            return;
        }
    }
    panic!("{what} is missing and could not be installed:\n{log}");
}

fn ensure_influx_cli() {
    ensure(
        "the influx CLI",
        || works(Command::new("influx").arg("-version")),
        &[
            &["apt-get", "install", "-y", "influxdb-client"],
            &["apt-get", "update"],
            &["apt-get", "install", "-y", "influxdb-client"],
        ],
    );
}

fn ensure_python_influxdb() {
    ensure(
        "the Python influxdb package",
        || works(Command::new("python3").args(["-c", "import influxdb"])),
        &[
            &["python3", "-m", "pip", "install", "influxdb"],
            &["python3", "-m", "pip", "install", "--break-system-packages", "influxdb"],
            &["apt-get", "install", "-y", "python3-influxdb"],
        ],
    );
}

/// `influx -host 127.0.0.1 -port P -database db [extra] -execute statement`.
fn influx(rig: &Clients, extra: &[&str], statement: &str) -> Output {
    let port = rig.rig.port().to_string();
    let mut cmd = Command::new("influx");
    cmd.args(["-host", "127.0.0.1", "-port", &port, "-database", DB]).args(extra).args(["-execute", statement]);
    run(&mut cmd, Duration::from_secs(20))
}

fn databases(influxd: &Influxd) -> Vec<String> {
    let json = influxd.query("", "SHOW DATABASES");
    json["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r[0].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn influx_cli_through_the_proxy() {
    ensure_influx_cli();
    let rig = Clients::start();

    // CREATE DATABASE passes the default policy and reaches every backend.
    let out = influx(&rig, &[], "CREATE DATABASE clidb");
    assert!(out.status.success(), "CREATE DATABASE: {}", text(&out));
    for (name, influxd) in [("i1", &rig.i1), ("i2", &rig.i2)] {
        let dbs = databases(influxd);
        assert!(dbs.contains(&"clidb".to_string()), "clidb not created on {name}: {dbs:?}");
    }

    // A statement the default policy refuses is shown as the proxy's error.
    let out = influx(&rig, &[], "DROP MEASUREMENT cpu");
    let all = text(&out);
    assert!(all.contains("forbidden by rule drop"), "DROP MEASUREMENT: {all}");
    assert!(!out.status.success(), "refused statement exited 0: {all}");
    let out = influx(&rig, &[], "SELECT * FROM cpu");
    assert!(text(&out).contains("select_star"), "{}", text(&out));

    // INSERT goes through /write, to both replicas of cpu.
    let out = influx(&rig, &[], "INSERT cpu,host=a v=1");
    assert!(out.status.success(), "INSERT: {}", text(&out));
    for (name, influxd) in [("i1", &rig.i1), ("i2", &rig.i2)] {
        wait_until(WAIT, &format!("the CLI's point on {name}"), || influxd.count(DB, "cpu") == 1);
    }

    // SELECT reads it back, as JSON and as the CLI's column format.
    let out = influx(&rig, &["-format", "json"], "SELECT v FROM cpu WHERE time > now() - 1h");
    assert!(out.status.success(), "SELECT: {}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("CLI JSON output unreadable ({e}): {}", text(&out)));
    let series = &json["results"][0]["series"][0];
    assert_eq!(series["name"], "cpu", "{json}");
    assert_eq!(series["columns"], serde_json::json!(["time", "v"]), "{json}");
    assert_eq!(series["values"][0][1], 1, "{json}");
    let out = influx(&rig, &[], "SELECT v, host FROM cpu WHERE time > now() - 1h");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "SELECT: {}", text(&out));
    assert!(stdout.contains("name: cpu") && stdout.lines().any(|l| l.ends_with(" 1 a")), "{}", text(&out));

    // SHOW MEASUREMENTS (a fan-out) lists it.
    let out = influx(&rig, &["-format", "json"], "SHOW MEASUREMENTS");
    assert!(out.status.success(), "SHOW MEASUREMENTS: {}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("CLI JSON output unreadable ({e}): {}", text(&out)));
    assert_eq!(json["results"][0]["series"][0]["values"], serde_json::json!([["cpu"]]), "{json}");
    let out = influx(&rig, &[], "SHOW DATABASES");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && stdout.lines().any(|l| l.trim() == "clidb"), "{}", text(&out));
}

const PYTHON_CLIENT: &str = r#"
import json, sys, time
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError

c = InfluxDBClient(host="127.0.0.1", port=int(sys.argv[1]), database="db", timeout=10)
out = {"ping": c.ping()}
out["write_ns"] = c.write_points([
    {"measurement": "py", "tags": {"host": "a"}, "time": 1700000000000000000, "fields": {"v": 1.5}},
    {"measurement": "py", "tags": {"host": "b"}, "time": 1700000001000000000, "fields": {"v": 2.0}},
])
out["write_s"] = c.write_points([
    {"measurement": "py", "tags": {"host": "a"}, "time": 1700000010, "fields": {"v": 3.25}},
    {"measurement": "py", "tags": {"host": "c"}, "time": 1700000011, "fields": {"v": 4.0}},
], time_precision="s")
deadline = time.time() + 15
while True:
    points = list(c.query("SELECT v, host FROM py WHERE time > 0", epoch="s").get_points())
    if len(points) >= 4 or time.time() > deadline:
        break
    time.sleep(0.05)
out["points"] = points
out["measurements"] = list(c.query("SHOW MEASUREMENTS").get_points())
out["post"] = list(c.query("SELECT count(v) FROM py WHERE time > 0", method="POST").get_points())
try:
    c.query("SELECT * FROM py")
    out["refused"] = None
except InfluxDBClientError as e:
    out["refused"] = {"code": e.code, "content": str(e.content)}
print(json.dumps(out))
"#;

#[test]
fn python_influxdb_client_through_the_proxy() {
    ensure_python_influxdb();
    let rig = Clients::start();
    let port = rig.rig.port().to_string();
    let started = Instant::now();
    let out = run(Command::new("python3").args(["-c", PYTHON_CLIENT, &port]), Duration::from_secs(40));
    assert!(out.status.success(), "python client: {}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("python output unreadable ({e}): {}", text(&out)));
    assert!(json["ping"].as_str().is_some_and(|v| v.starts_with("1.")), "ping() returned {}", json["ping"]);
    assert_eq!(json["write_ns"], true, "{json}");
    assert_eq!(json["write_s"], true, "{json}");
    // The client asks for msgpack (`Accept: application/x-msgpack`), which the proxy relays as InfluxDB
    // would answer it: float fields stay floats (JSON would have turned 2.0 into 2).
    assert_eq!(
        json["points"],
        serde_json::json!([
            {"time": 1700000000, "v": 1.5, "host": "a"},
            {"time": 1700000001, "v": 2.0, "host": "b"},
            {"time": 1700000010, "v": 3.25, "host": "a"},
            {"time": 1700000011, "v": 4.0, "host": "c"},
        ]),
        "{json}"
    );
    assert_eq!(json["measurements"], serde_json::json!([{"name": "py"}]), "{json}");
    assert_eq!(json["post"][0]["count"], 4, "{json}");
    assert_eq!(json["refused"]["code"], 400, "{json}");
    assert!(json["refused"]["content"].as_str().is_some_and(|c| c.contains("select_star")), "{json}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // The points are on the backend `_default_` names, exactly.
    let rows = rig.i1.values(DB, "SELECT v FROM py");
    let times: Vec<u64> = rows.iter().filter_map(|r| r[0].as_u64()).collect();
    assert_eq!(
        times,
        [1_700_000_000_000_000_000, 1_700_000_001_000_000_000, 1_700_000_010_000_000_000, 1_700_000_011_000_000_000]
    );
    assert_eq!(rig.i2.count(DB, "py"), 0);
}

type Headers<'a> = &'a [(&'a str, &'a str)];

/// The CORS headers of an answer, names in lower case, sorted.
fn cors_headers(r: &util::Response) -> Vec<(String, String)> {
    let mut cors: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(name, _)| name.to_ascii_lowercase().starts_with("access-control-"))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect();
    cors.sort();
    cors
}

/// A web page (Grafana's "browser" access, a dashboard of one's own) talks to InfluxDB across
/// origins: a preflight `OPTIONS`, then requests whose answers must name its origin. Each request is
/// sent to a real influxd and to the proxy in front of it: same status, same CORS headers (none on
/// the router's 404 and 405, none without an `Origin`). The proxy's own endpoints and a node with
/// credentials answer the same way (no credentials asked for a preflight, CORS on the 401).
#[test]
fn a_browser_gets_influxdbs_cors_answers() {
    let c = Clients::start();
    let origin = ("Origin", "http://dashboards.example:3000");
    let preflight =
        [origin, ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "authorization")];
    let (with_origin, none): (Headers, Headers) = (&[origin], &[]);
    let show = format!("/query?q={}", util::http::encode("SHOW DATABASES"));
    let write = format!("/write?db={DB}");
    let cases: Vec<(&str, &str, Headers, &[u8])> = vec![
        ("OPTIONS", write.as_str(), &preflight, b""),
        ("OPTIONS", "/query", &preflight, b""),
        ("OPTIONS", write.as_str(), none, b""),
        ("OPTIONS", "/ping", with_origin, b""),
        ("OPTIONS", "/api/v1/prom/write", with_origin, b""),
        ("GET", "/ping", with_origin, b""),
        ("GET", "/ping", none, b""),
        ("GET", show.as_str(), with_origin, b""),
        ("POST", write.as_str(), with_origin, b"cors value=1 1600000000000000000\n"),
        ("POST", write.as_str(), with_origin, b"cors value=\n"),
        ("GET", write.as_str(), with_origin, b""),
        ("GET", "/nowhere", with_origin, b""),
    ];
    let (proxy, influxd) = (c.rig.addr(), c.i1.addr());
    for (method, path, headers, body) in cases {
        let want = util::http::request(&influxd, method, path, headers, body);
        let got = util::http::request(&proxy, method, path, headers, body);
        let what = format!("{method} {path} {headers:?}");
        assert_eq!(got.status, want.status, "{what}: {}", got.text());
        assert_eq!(cors_headers(&got), cors_headers(&want), "{what}");
        if method == "OPTIONS" && got.status == 200 {
            assert_eq!((got.header("content-length"), got.body.len()), (Some("0"), 0), "{what}");
        }
    }
    let echoed = |r: &util::Response| r.header("access-control-allow-origin") == Some(origin.1);
    assert!(echoed(&util::http::request(&proxy, "GET", show.as_str(), &[origin], b"")), "a query answer");
    let reload = util::http::request(&proxy, "POST", "/reload", &[origin], b"");
    assert!(reload.status == 204 && echoed(&reload), "/reload, answered later: {:?}", reload.headers);
    let health = util::http::request(&proxy, "GET", "/health", &[origin], b"");
    assert!(health.status == 200 && echoed(&health), "/health");

    // With credentials on the node: a preflight needs none; a request without them gets a 401 the
    // page can read.
    let locked = Rig::start(
        ProxyConfig::new().backend("i1", &c.i1.url(), FAST).keymap("_default_", &["i1"]),
        &[("username", "admin"), ("password", "s3cret")],
    );
    let r = util::http::request(&locked.addr(), "OPTIONS", "/query", &preflight, b"");
    assert!(r.status == 200 && echoed(&r), "preflight with credentials on the node: {}", r.status);
    let r = util::http::request(&locked.addr(), "GET", show.as_str(), &[origin], b"");
    assert!(r.status == 401 && echoed(&r), "401: {} {:?}", r.status, r.headers);
    let r = util::http::request(&locked.addr(), "GET", &format!("{show}&u=admin&p=s3cret"), &[origin], b"");
    assert!(r.status == 200 && echoed(&r), "with credentials: {}", r.status);

    // On one keep-alive connection, requests sent back to back: each answer carries the headers its
    // own request asks for, answered at once (ping) or later (a query relayed from one backend, one
    // merged from two), never those of the request before.
    let select = format!("/query?db={DB}&q={}", util::http::encode("SELECT count(value) FROM cors WHERE time > 0"));
    let requests = [
        (select.as_str(), with_origin),
        (select.as_str(), none),
        ("/ping", with_origin),
        (show.as_str(), none),
        (show.as_str(), with_origin),
        ("/ping", none),
    ];
    let mut conn = util::HttpConn::connect(&proxy);
    for (path, headers) in requests {
        conn.send("GET", path, headers, b"");
    }
    for (path, headers) in requests {
        let r = conn.read_response();
        assert!(r.status < 300, "{path}: {} {}", r.status, r.text());
        assert_eq!(echoed(&r), !headers.is_empty(), "{path} {headers:?}: {:?}", r.headers);
        assert_eq!(cors_headers(&r).len(), if headers.is_empty() { 0 } else { 4 }, "{path}: {:?}", r.headers);
    }
    // Refused before its body is read (too large), a request is still answered with its CORS headers.
    let mut conn = util::HttpConn::connect(&proxy);
    conn.send_raw(
        format!("POST {write} HTTP/1.1\r\nHost: x\r\nOrigin: {}\r\nContent-Length: 999999999999\r\n\r\n", origin.1)
            .as_bytes(),
    );
    let r = conn.read_response();
    assert!(r.status == 413 && echoed(&r), "{} {:?}", r.status, r.headers);
}

/// The headers InfluxDB puts on its answers are on the proxy's too (a `Date` among them), with the
/// same `Content-Type`, for what clients ask most: a ping, writes good and bad, queries answered by
/// one backend or merged from two. Only InfluxDB's request ids are left out: no client reads them.
#[test]
fn answers_carry_the_headers_influxdbs_do() {
    let c = Clients::start();
    let show = format!("/query?db={DB}&q={}", util::http::encode("SHOW DATABASES"));
    let select = format!("/query?db={DB}&q={}", util::http::encode("SELECT count(value) FROM cpu WHERE time > 0"));
    let write = format!("/write?db={DB}");
    let cases: Vec<(&str, &str, &[u8])> = vec![
        ("GET", "/ping", b""),
        ("HEAD", "/ping", b""),
        ("POST", write.as_str(), b"cpu value=1 1600000000000000000\n"),
        ("POST", write.as_str(), b"cpu value=\n"),
        ("GET", show.as_str(), b""),
        ("GET", select.as_str(), b""),
    ];
    let names = |r: &util::Response| -> std::collections::BTreeSet<String> {
        // Request ids, and the framing, which is each server's own choice (a length or chunks).
        let not = ["request-id", "x-request-id", "content-length", "transfer-encoding", "connection"];
        r.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).filter(|n| !not.contains(&n.as_str())).collect()
    };
    let (proxy, influxd) = (c.rig.addr(), c.i1.addr());
    for (method, path, body) in cases {
        let want = util::http::request(&influxd, method, path, &[], body);
        let got = util::http::request(&proxy, method, path, &[], body);
        let what = format!("{method} {path}");
        assert_eq!(got.status, want.status, "{what}: {}", got.text());
        let missing: Vec<String> = names(&want).difference(&names(&got)).cloned().collect();
        assert!(missing.is_empty(), "{what}: the proxy's answer lacks {missing:?}: {:?}", got.headers);
        assert_eq!(got.header("content-type"), want.header("content-type"), "{what}");
        let date = got.header("date").unwrap_or_default();
        assert!(date.ends_with(" GMT") && date.len() == 29, "{what}: Date {date:?}");
    }
}
