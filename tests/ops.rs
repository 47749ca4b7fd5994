//! The operations surface: client authentication (and that passwords stay out of logs and away from
//! backends), credentials toward backends, `/health`, `/metrics` (exact counts, valid Prometheus text),
//! the `influxdb.cluster` self-statistics point, and write/query tracing.

mod util;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::fake::wait_lines;
use util::http::{self, HttpConn, Response};
use util::inspect::{backend_health, health};
use util::procs::quote_ident;
use util::site::{APPLY, DB, FAST, WAIT, polling_proxy, with_node};
use util::{FakeBackend, Influxd, Proxy, ProxyConfig, Redis, free_port, set_toml, wait_until};

/// Name/value pairs: request headers, metric labels.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

const USER: &str = "admin";
/// Distinctive, so that finding it in a log cannot be a coincidence.
const PASSWORD: &str = "Zq7-pw-Xy9k3";

// ------------------------------------------------------------------------------------------------ helpers

/// One request on a fresh keep-alive connection (answers that come after the request is handed on,
/// like `/query`, are not what these tests are about; `Connection: close` is tested elsewhere).
fn request_ka(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut conn = HttpConn::connect(addr);
    conn.send(method, path, headers, body);
    conn.read_response()
}

fn query_path(q: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![("db", DB), ("q", q)];
    params.extend_from_slice(extra);
    format!("/query?{}", http::query_string(&params))
}

fn assert_401(r: &Response, message: &str, what: &str) {
    assert_eq!(r.status, 401, "{what}: answered {} {}", r.status, r.text());
    assert_eq!(r.json(), json!({ "error": message }), "{what}: body");
    assert_eq!(r.header("Www-Authenticate"), Some("Basic realm=\"InfluxDB\""), "{what}: Www-Authenticate header");
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

// ------------------------------------------------------------------------------------------------ auth

/// Node credentials set: `/write`, `/query` (and `/reload`) need them in any of InfluxDB's forms; the
/// open endpoints stay open; the password reaches neither the log (debug level, tracing on) nor the
/// backends.
#[test]
fn client_auth_required_when_the_node_has_credentials() {
    let a = FakeBackend::start();
    let redis = Redis::start();
    let port = free_port();
    let node = [("username", USER), ("password", PASSWORD), ("writetracing", "1"), ("querytracing", "1")];
    with_node(ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["a"]), port, &node).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();
    let write = format!("/write?db={DB}");
    let select = "SELECT v FROM cpu WHERE time > 0";
    let mut failures = 0;

    // No credentials.
    let missing = "unable to parse authentication credentials";
    assert_401(&request_ka(&addr, "POST", &write, &[], b"cpu v=1i 1\n"), missing, "write without credentials");
    assert_401(&request_ka(&addr, "GET", &query_path(select, &[]), &[], b""), missing, "GET query without credentials");
    let form = http::query_string(&[("q", select)]);
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = request_ka(&addr, "POST", &format!("/query?db={DB}"), &ct, form.as_bytes());
    assert_401(&r, missing, "POST query without credentials");
    assert_401(&request_ka(&addr, "POST", "/reload", &[], b""), missing, "/reload without credentials");
    let bearer = [("Authorization", "Bearer abc")];
    assert_401(&request_ka(&addr, "POST", &write, &bearer, b"cpu v=1i 1\n"), missing, "unknown auth scheme");
    failures += 5;

    // Wrong credentials, in each form.
    let wrong = "authorization failed";
    let bad_up = format!("{write}&u={USER}&p=nope");
    assert_401(&request_ka(&addr, "POST", &bad_up, &[], b"cpu v=1i 1\n"), wrong, "u/p with a wrong password");
    let bad_user = format!("{write}&u=root&p={PASSWORD}");
    assert_401(&request_ka(&addr, "POST", &bad_user, &[], b"cpu v=1i 1\n"), wrong, "u/p with a wrong user");
    let bad_basic = [("Authorization", basic(USER, "nope"))];
    let bad_basic: Vec<(&str, &str)> = bad_basic.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_401(&request_ka(&addr, "POST", &write, &bad_basic, b"cpu v=1i 1\n"), wrong, "Basic, wrong password");
    let bad_token = [("Authorization", "Token admin:nope")];
    let r = request_ka(&addr, "GET", &query_path(select, &[]), &bad_token, b"");
    assert_401(&r, wrong, "Token, wrong password");
    failures += 4;

    // Every accepted form.
    let good_basic = basic(USER, PASSWORD);
    let good_token = format!("Token {USER}:{PASSWORD}");
    let up = format!("{write}&u={USER}&p={PASSWORD}");
    let forms: [(&str, String, Pairs); 3] = [
        ("u/p parameters", up, vec![]),
        ("Basic header", write.clone(), vec![("Authorization", good_basic.as_str())]),
        ("Token header", write.clone(), vec![("Authorization", good_token.as_str())]),
    ];
    for (i, (what, path, headers)) in forms.iter().enumerate() {
        let body = format!("cpu,form={i} v={i}i {}\n", 1000 + i);
        let r = request_ka(&addr, "POST", path, headers, body.as_bytes());
        assert_eq!(r.status, 204, "write with {what}: {} {}", r.status, r.text());
        let qpath = if path.contains("&u=") {
            query_path(select, &[("u", USER), ("p", PASSWORD)])
        } else {
            query_path(select, &[])
        };
        let r = request_ka(&addr, "GET", &qpath, headers, b"");
        assert_eq!(r.status, 200, "query with {what}: {} {}", r.status, r.text());
    }
    let r = request_ka(&addr, "POST", "/reload", &[("Authorization", good_token.as_str())], b"");
    assert_eq!(r.status, 204, "/reload with credentials: {}", r.text());
    wait_lines(&a, "cpu", 3, "a");

    // Open endpoints.
    assert_eq!(http::get(&addr, "/ping").status, 204, "/ping without credentials");
    assert_eq!(http::get(&addr, "/health").status, 200, "/health without credentials");
    let metrics = http::get(&addr, "/metrics");
    assert_eq!(metrics.status, 200, "/metrics without credentials");
    let auth_failures =
        metrics.text().lines().find_map(|l| l.strip_prefix("influx_proxy_auth_failures_total ")).map(str::to_string);
    assert_eq!(auth_failures.as_deref(), Some(failures.to_string().as_str()), "influx_proxy_auth_failures_total");

    // The proxy's credentials are not the backend's: they must not be forwarded.
    for r in a.requests() {
        let leaked = r.param("p").is_some() || r.param("u").is_some() || r.header("Authorization").is_some();
        assert!(!leaked, "client credentials forwarded to the backend: {} {} {:?}", r.method, r.path, r.query);
    }

    // Nothing in the log (debug level, write and query tracing on) shows the password.
    let log = proxy.log();
    assert!(log.contains("write from") && log.contains("query from"), "tracing is not on, the check is void");
    for secret in [PASSWORD.to_string(), base64(format!("{USER}:{PASSWORD}").as_bytes()), http::encode(PASSWORD)] {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(&secret)).collect();
        assert!(leaks.is_empty(), "the password ({secret}) appears in the proxy log: {leaks:#?}");
    }
}

/// Without node credentials nothing asks for them; turning auth on in Redis takes effect within the
/// poll interval.
#[test]
fn client_auth_off_then_turned_on_live() {
    let a = FakeBackend::start();
    let redis = Redis::start();
    let port = free_port();
    let config = || ProxyConfig::new().backend("a", &a.url(), FAST).keymap("cpu", &["a"]);
    with_node(config(), port, &[]).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();
    let write = format!("/write?db={DB}");

    let r = request_ka(&addr, "POST", &write, &[], b"cpu v=1i 1000\n");
    assert_eq!(r.status, 204, "write without auth configured: {}", r.text());
    let r = request_ka(&addr, "GET", &query_path("SELECT v FROM cpu WHERE time > 0", &[]), &[], b"");
    assert_eq!(r.status, 200, "query without auth configured: {}", r.text());
    assert_eq!(request_ka(&addr, "POST", "/reload", &[], b"").status, 204, "/reload without auth configured");
    // Credentials sent anyway are simply not needed.
    let r = request_ka(&addr, "POST", &format!("{write}&u=x&p=y"), &[], b"cpu v=2i 2000\n");
    assert_eq!(r.status, 204, "write with unneeded credentials: {}", r.text());
    wait_lines(&a, "cpu", 2, "a");

    let changed = Instant::now();
    with_node(config(), port, &[("username", USER), ("password", PASSWORD)]).write_to(&redis);
    // Probes accepted before the change took effect are delivered like any write.
    let mut accepted = 0;
    wait_until(APPLY, "writes without credentials refused after auth was turned on", || {
        let status = request_ka(&addr, "POST", &write, &[], b"cpu v=3i 3000\n").status;
        accepted += usize::from(status == 204);
        status == 401
    });
    eprintln!("auth turned on after {:?}", changed.elapsed());
    let r = request_ka(&addr, "POST", &write, &[], b"cpu v=3i 3000\n");
    assert_401(&r, "unable to parse authentication credentials", "write after auth was turned on");
    let r = request_ka(&addr, "POST", &format!("{write}&u={USER}&p={PASSWORD}"), &[], b"cpu v=4i 4000\n");
    assert_eq!(r.status, 204, "write with credentials: {}", r.text());
    wait_lines(&a, "cpu", 3 + accepted, "a");
}

// ------------------------------------------------------------------------------------------------ backend auth

/// `q` on `influxd` as admin; the JSON answer.
fn influx_as_admin(influxd: &Influxd, method: &str, params: &[(&str, &str)]) -> Value {
    let mut all = vec![("u", USER), ("p", "pw")];
    all.extend_from_slice(params);
    let r = http::request(&influxd.addr(), method, &format!("/query?{}", http::query_string(&all)), &[], b"");
    assert_eq!(r.status, 200, "{params:?}: {}", r.text());
    r.json()
}

#[test]
fn backend_credentials_are_used_for_writes_and_queries() {
    let x = Influxd::start_with(|c| set_toml(c, "http", "auth-enabled", "true"));
    // influxd accepts the first user without credentials, and only an admin one.
    let create = "CREATE USER admin WITH PASSWORD 'pw' WITH ALL PRIVILEGES";
    let r = http::request(&x.addr(), "POST", &format!("/query?{}", http::query_string(&[("q", create)])), &[], b"");
    assert_eq!(r.status, 200, "{create}: {}", r.text());
    let created = influx_as_admin(&x, "POST", &[("q", &format!("CREATE DATABASE {DB}"))]);
    assert!(created["results"][0]["error"].is_null(), "{created}");
    let r = http::get(&x.addr(), &query_path("SHOW MEASUREMENTS", &[]));
    assert_eq!(r.status, 401, "influxd does not enforce auth, the test is void: {}", r.text());

    let redis = Redis::start();
    let port = free_port();
    let mut fields = FAST.to_vec();
    fields.extend([("username", USER), ("password", "pw")]);
    with_node(ProxyConfig::new().backend("x", &x.url(), &fields).keymap("cpu", &["x"]), port, &[]).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();

    let r = http::post(
        &addr,
        &format!("/write?db={DB}"),
        b"cpu,h=1 v=1 1000000000\ncpu,h=1 v=2 2000000000\ncpu,h=2 v=3 3000000000\n",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let count = || {
        let v = influx_as_admin(&x, "GET", &[("db", DB), ("q", "SELECT count(v) FROM cpu")]);
        v["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or(0)
    };
    wait_until(WAIT, "3 points on the auth-enabled influxd", || count() >= 3);
    assert_eq!(count(), 3);
    let b = backend_health(&addr, "x");
    assert_eq!((b["up"].clone(), b["last_error"].clone()), (json!(true), Value::Null), "{b}");

    let r = request_ka(&addr, "GET", &query_path("SELECT count(v) FROM cpu WHERE time > 0", &[]), &[], b"");
    assert_eq!(r.status, 200, "query through the proxy: {}", r.text());
    let v = r.json();
    assert!(v["results"][0]["error"].is_null(), "{v}");
    assert_eq!(v["results"][0]["series"][0]["values"][0][1], 3, "{v}");
}

// ------------------------------------------------------------------------------------------------ /health

fn assert_rfc3339(v: &Value, what: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let ok = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && s.ends_with('Z');
    assert!(ok, "{what} is not an RFC 3339 UTC time: {s:?}");
}

fn check_backend_entry(b: &Value, name: &str, url: &str) {
    assert_eq!(b["name"], name, "{b}");
    assert_eq!(b["url"], url, "{b}");
    assert!(b["in_config"].is_boolean() && b["up"].is_boolean(), "{b}");
    assert_rfc3339(&b["since"], &format!("backends[{name}].since"));
    assert!(b["last_error"].is_null() || b["last_error"].is_string(), "{b}");
    for k in ["backlog_bytes", "backlog_records", "disk_bytes", "lines_parked_total"] {
        assert!(b[k].is_u64(), "backends[{name}].{k} is not a whole number: {b}");
    }
}

#[test]
fn health_shape_and_degraded_state() {
    let (a, b) = (FakeBackend::start(), FakeBackend::start());
    let redis = Redis::start();
    let port = free_port();
    let config =
        ProxyConfig::new().backend("a", &a.url(), FAST).backend("b", &b.url(), FAST).keymap("cpu", &["a", "b"]);
    with_node(config, port, &[]).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();

    for r in 0..2 {
        let body: String = (0..3).map(|i| format!("cpu,r={r} v={i}i {}\n", 1000 + r * 10 + i)).collect();
        assert_eq!(http::post(&addr, &format!("/write?db={DB}"), body.as_bytes()).status, 204);
    }
    wait_lines(&a, "cpu", 6, "a");
    wait_lines(&b, "cpu", 6, "b");
    wait_until(WAIT, "backlogs drained in /health", || {
        health(&addr)["backends"].as_array().is_some_and(|l| l.iter().all(|b| b["backlog_records"] == 0))
    });

    let r = http::get(&addr, "/health");
    assert!(r.header("Content-Type").is_some_and(|c| c.contains("application/json")), "{:?}", r.headers);
    let h = r.json();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["node"], "l1", "{h}");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"), "{h}");
    let c = &h["config"];
    assert_eq!(c["version"], 1, "{h}");
    assert_rfc3339(&c["loaded_at"], "config.loaded_at");
    assert_eq!(c["source"], format!("redis {}", redis.addr()), "{h}");
    assert!(c.get("last_error").is_some_and(Value::is_null), "config.last_error must be present and null: {h}");
    let list = h["backends"].as_array().unwrap_or_else(|| panic!("backends is not a list: {h}"));
    assert_eq!(list.len(), 2, "{h}");
    for (entry, (name, url)) in list.iter().zip([("a", a.url()), ("b", b.url())]) {
        check_backend_entry(entry, name, &url);
        assert_eq!(entry["in_config"], true, "{entry}");
        assert_eq!(entry["up"], true, "{entry}");
        assert_eq!(entry["last_error"], Value::Null, "{entry}");
        assert_eq!((entry["backlog_bytes"].as_u64(), entry["backlog_records"].as_u64()), (Some(0), Some(0)), "{entry}");
        assert_eq!(entry["lines_parked_total"], 0, "{entry}");
    }
    let since_up = backend_health(&addr, "b")["since"].as_str().unwrap_or_default().to_string();

    // b down: degraded, b's error and backlog shown, a unaffected.
    b.stop();
    wait_until(WAIT, "status degraded with b down", || {
        let h = health(&addr);
        h["status"] == "degraded" && backend_health(&addr, "b")["up"] == false
    });
    let body: String = (0..4).map(|i| format!("cpu,r=9 v={i}i {}\n", 2000 + i)).collect();
    assert_eq!(http::post(&addr, &format!("/write?db={DB}"), body.as_bytes()).status, 204);
    wait_lines(&a, "cpu", 10, "a");
    wait_until(WAIT, "b's backlog in /health", || backend_health(&addr, "b")["backlog_records"].as_u64() > Some(0));
    let down = backend_health(&addr, "b");
    check_backend_entry(&down, "b", &b.url());
    assert!(down["backlog_bytes"].as_u64() > Some(0), "{down}");
    assert!(down["last_error"].as_str().is_some_and(|e| !e.is_empty()), "no last_error for b while down: {down}");
    assert!(
        down["since"].as_str().unwrap_or_default() > since_up.as_str(),
        "since not updated: {down} (was {since_up})"
    );
    let up = backend_health(&addr, "a");
    assert_eq!((up["up"].clone(), up["last_error"].clone()), (json!(true), Value::Null), "{up}");

    b.start_again();
    wait_until(WAIT, "status ok with b back and drained", || {
        health(&addr)["status"] == "ok" && backend_health(&addr, "b")["backlog_records"] == 0
    });
    wait_lines(&b, "cpu", 10, "b after it came back");
}

// ------------------------------------------------------------------------------------------------ /metrics

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{k="v",...}` → labels; panics on anything the text format does not allow.
fn parse_labels(s: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad labels in {line:?}"));
        assert!(valid_name(key) && !key.starts_with("__"), "bad label name {key:?} in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        assert!(labels.insert(key.to_string(), value).is_none(), "label {key} twice in {line:?}");
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

/// Parses `/metrics`, checking the Prometheus text format (0.0.4): `# HELP` and `# TYPE` once per family
/// and before its samples, families not interleaved, every sample `name{labels} value`, no duplicate
/// series, histogram buckets cumulative with `+Inf` equal to `_count`.
fn parse_metrics(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the exposition must end with a newline");
    let mut help: HashMap<String, ()> = HashMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut samples: Vec<Sample> = Vec::new();
    let mut series = std::collections::HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(valid_name(name), "bad name in {line:?}");
            assert!(rest.len() > name.len() + 1, "HELP without text: {line:?}");
            assert!(help.insert(name.to_string(), ()).is_none(), "second HELP for {name}");
            assert!(
                !finished.contains(&name.to_string()) && current.as_deref() != Some(name),
                "HELP after samples: {line:?}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            assert!(valid_name(name), "bad name in {line:?}");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "bad type in {line:?}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "second TYPE for {name}");
            assert!(
                !finished.contains(&name.to_string()) && current.as_deref() != Some(name),
                "TYPE after samples: {line:?}"
            );
            continue;
        }
        assert!(!line.starts_with('#') || line.starts_with("# "), "bad comment line {line:?}");
        if line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = if let Some(close) = line.rfind('}') {
            (&line[..=close], line[close + 1..].trim_start_matches(' '))
        } else {
            line.split_once(' ').unwrap_or_else(|| panic!("sample without value: {line:?}"))
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => {
                (n, parse_labels(l.strip_suffix('}').unwrap_or_else(|| panic!("bad labels {line:?}")), line))
            }
            None => (name_labels, BTreeMap::new()),
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        let value_token = value.split(' ').next().unwrap_or_default();
        assert!(value.split(' ').count() <= 2, "trailing garbage in {line:?}");
        let value: f64 = match value_token {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|base| types.get(*base).is_some_and(|t| t == "histogram")))
            .unwrap_or(name)
            .to_string();
        assert!(help.contains_key(&family), "sample before (or without) # HELP {family}: {line:?}");
        assert!(types.contains_key(&family), "sample before (or without) # TYPE {family}: {line:?}");
        if current.as_deref() != Some(family.as_str()) {
            assert!(!finished.contains(&family), "family {family} interleaved with others: {line:?}");
            if let Some(prev) = current.take() {
                finished.push(prev);
            }
            current = Some(family.clone());
        }
        assert!(series.insert(format!("{name}{labels:?}")), "duplicate series {line:?}");
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    // Histograms: cumulative buckets, +Inf == _count.
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let buckets: Vec<&Sample> = samples.iter().filter(|s| s.name == format!("{family}_bucket")).collect();
        assert!(!buckets.is_empty(), "histogram {family} without buckets");
        let les: Vec<f64> = buckets
            .iter()
            .map(|s| match s.labels.get("le").map(String::as_str) {
                Some("+Inf") => f64::INFINITY,
                Some(le) => le.parse().unwrap_or_else(|_| panic!("bad le {le:?} in {family}")),
                None => panic!("bucket of {family} without le"),
            })
            .collect();
        assert!(les.windows(2).all(|w| w[0] < w[1]), "{family}: le not increasing: {les:?}");
        assert_eq!(les.last().copied(), Some(f64::INFINITY), "{family}: no +Inf bucket");
        assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value), "{family}: buckets not cumulative");
        let count = samples.iter().find(|s| s.name == format!("{family}_count")).map(|s| s.value);
        assert_eq!(count, buckets.last().map(|b| b.value), "{family}: +Inf bucket != _count");
        assert!(samples.iter().any(|s| s.name == format!("{family}_sum")), "{family}: no _sum");
    }
    samples
}

fn metrics(addr: &str) -> Vec<Sample> {
    let r = http::get(addr, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("Content-Type").unwrap_or_default();
    assert!(ct.starts_with("text/plain") && ct.contains("version=0.0.4"), "Content-Type {ct:?}");
    parse_metrics(&r.text())
}

/// The value of `name` with labels containing `labels`; panics if absent.
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[test]
fn metrics_counts_are_exact() {
    let (a, b) = (FakeBackend::start(), FakeBackend::start());
    let redis = Redis::start();
    let port = free_port();
    let config =
        || ProxyConfig::new().backend("a", &a.url(), FAST).backend("b", &b.url(), FAST).keymap("cpu", &["a", "b"]);
    with_node(config(), port, &[]).write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();
    let write = format!("/write?db={DB}");

    let before = metrics(&addr);
    assert_eq!(metric(&before, "influx_proxy_write_requests_total", &[]), 0.0);
    assert_eq!(metric(&before, "influx_proxy_config_version", &[]), 1.0);

    // N requests of M cpu lines (routed to a and b), U requests of unroutable lines only.
    let (n, m, u, unrouted_per) = (5, 4, 2, 3);
    let (mut body_bytes, mut line_bytes) = (0usize, 0usize);
    for r in 0..n {
        let body: String = (0..m).map(|i| format!("cpu,req={r} v={i}i {}\n", 1_000 + r * 100 + i)).collect();
        body_bytes += body.len();
        line_bytes += body.len(); // each line with its newline, stored as sent
        let resp = request_ka(&addr, "POST", &write, &[], body.as_bytes());
        assert_eq!(resp.status, 204, "{}", resp.text());
    }
    for r in 0..u {
        let body: String = (0..unrouted_per).map(|i| format!("nomap,req={r} v={i}i {}\n", 9_000 + i)).collect();
        body_bytes += body.len();
        let resp = request_ka(&addr, "POST", &write, &[], body.as_bytes());
        assert_eq!(resp.status, 400, "unroutable lines: {}", resp.text());
    }
    // K queries relayed, R refused by the filter.
    let k = 3;
    for _ in 0..k {
        let r = request_ka(&addr, "GET", &query_path("SELECT count(v) FROM cpu WHERE time > 0", &[]), &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let refused = ["DROP MEASUREMENT cpu", "SELECT v FROM cpu"];
    for q in refused {
        let r = request_ka(&addr, "GET", &query_path(q, &[]), &[], b"");
        assert_eq!(r.status, 400, "{q} must be refused: {}", r.text());
    }
    let lines = n * m;
    wait_lines(&a, "cpu", lines, "a");
    wait_lines(&b, "cpu", lines, "b");
    wait_until(WAIT, "lines_sent of a and b after the flush", || {
        let s = metrics(&addr);
        ["a", "b"]
            .iter()
            .all(|be| metric(&s, "influx_proxy_backend_lines_sent_total", &[("backend", be)]) >= lines as f64)
    });

    // A config change counts as one reload (and changes no traffic counter).
    with_node(config().keymap("mem", &["a"]), port, &[]).write_to(&redis);
    wait_until(APPLY, "config version 2 in /metrics", || {
        metric(&metrics(&addr), "influx_proxy_config_version", &[]) == 2.0
    });

    let s = metrics(&addr);
    let mut want: Vec<(&str, Pairs, f64)> = vec![
        ("influx_proxy_write_requests_total", vec![], (n + u) as f64),
        ("influx_proxy_write_lines_total", vec![], lines as f64),
        ("influx_proxy_write_bytes_total", vec![], body_bytes as f64),
        ("influx_proxy_lines_unrouted_total", vec![], (u * unrouted_per) as f64),
        ("influx_proxy_lines_unparsable_total", vec![], 0.0),
        ("influx_proxy_lines_refused_total", vec![], 0.0),
        ("influx_proxy_query_requests_total", vec![], (k + refused.len()) as f64),
        ("influx_proxy_queries_refused_total", vec![], refused.len() as f64),
        ("influx_proxy_http_client_errors_total", vec![], (u + refused.len()) as f64),
        ("influx_proxy_http_server_errors_total", vec![], 0.0),
        ("influx_proxy_auth_failures_total", vec![], 0.0),
        ("influx_proxy_config_reloads_total", vec![], 1.0),
        ("influx_proxy_config_failures_total", vec![], 0.0),
        ("influx_proxy_config_version", vec![], 2.0),
        ("influx_proxy_write_duration_seconds_count", vec![], (n + u) as f64),
        ("influx_proxy_write_duration_seconds_bucket", vec![("le", "+Inf")], (n + u) as f64),
        // Every /query request is answered, refused ones included, as every /write is timed.
        ("influx_proxy_query_duration_seconds_count", vec![], (k + refused.len()) as f64),
    ];
    for be in ["a", "b"] {
        want.extend([
            ("influx_proxy_backend_lines_in_total", vec![("backend", be)], lines as f64),
            ("influx_proxy_backend_bytes_in_total", vec![("backend", be)], line_bytes as f64),
            ("influx_proxy_backend_lines_sent_total", vec![("backend", be)], lines as f64),
            ("influx_proxy_backend_up", vec![("backend", be)], 1.0),
            ("influx_proxy_backend_backlog_records", vec![("backend", be)], 0.0),
            ("influx_proxy_backend_retries_total", vec![("backend", be)], 0.0),
            ("influx_proxy_backend_lines_dropped_total", vec![("backend", be), ("reason", "bad_data")], 0.0),
        ]);
    }
    let mut wrong = Vec::new();
    for (name, labels, value) in &want {
        let got = metric(&s, name, labels);
        if got != *value {
            wrong.push(format!("{name}{labels:?} = {got}, want {value}"));
        }
    }
    let url_a = a.url();
    assert_eq!(
        metric(&s, "influx_proxy_backend_lines_in_total", &[("backend", "a"), ("url", url_a.as_str())]),
        lines as f64
    );
    let queries = metric(&s, "influx_proxy_backend_queries_total", &[("backend", "a")])
        + metric(&s, "influx_proxy_backend_queries_total", &[("backend", "b")]);
    if queries != k as f64 {
        wrong.push(format!("influx_proxy_backend_queries_total a+b = {queries}, want {k}"));
    }
    assert!(wrong.is_empty(), "wrong metric values:\n{}", wrong.join("\n"));
}

// ------------------------------------------------------------------------------------------------ self-statistics

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0, "gethostname failed");
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[test]
fn self_statistics_points_arrive_every_interval() {
    let x = Influxd::start();
    x.create_db("stats");
    let redis = Redis::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    ProxyConfig::new()
        .backend("x", &x.url(), FAST)
        .keymap("_default_", &["x"])
        .node("l1", &[("listenaddr", listen.as_str()), ("interval", "1"), ("db", "stats")])
        .write_to(&redis);
    let proxy = polling_proxy(&redis, port);
    let addr = proxy.addr();
    for i in 0..3 {
        let r = http::post(&addr, "/write?db=stats", format!("app,h=1 v={i}i\n").as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let m = quote_ident("influxdb.cluster");
    wait_until(Duration::from_secs(12), "4 influxdb.cluster points", || x.count("stats", "influxdb.cluster") >= 4);

    let rows = x.values("stats", &format!("SELECT write_requests, host, addr FROM {m}"));
    assert!(rows.len() >= 4, "{rows:?}");
    let host = hostname();
    let mut last_requests = 0;
    for row in &rows {
        assert_eq!(row[2], host.as_str(), "host tag: {row:?}");
        assert_eq!(row[3], listen.as_str(), "addr tag: {row:?}");
        let n = row[1].as_u64().unwrap_or_else(|| panic!("write_requests is not an integer: {row:?}"));
        assert!(n >= last_requests, "write_requests went down: {rows:?}");
        last_requests = n;
    }
    assert_eq!(last_requests, 3, "write_requests of the latest point: {rows:?}");
    let times: Vec<u64> = rows.iter().map(|r| r[0].as_u64().expect("time")).collect();
    for w in times.windows(2) {
        let gap = Duration::from_nanos(w[1] - w[0]);
        assert!(
            gap >= Duration::from_millis(700) && gap <= Duration::from_millis(1500),
            "gap {gap:?} between points: {times:?}"
        );
    }
    // Every field is an integer counter.
    let fields = x.values("stats", &format!("SHOW FIELD KEYS FROM {m}"));
    let kinds: BTreeMap<String, String> = fields
        .iter()
        .map(|r| (r[0].as_str().unwrap_or_default().into(), r[1].as_str().unwrap_or_default().into()))
        .collect();
    for f in ["write_requests", "write_lines", "query_requests", "backlog_records"] {
        assert!(kinds.contains_key(f), "field {f} missing: {kinds:?}");
    }
    assert!(kinds.values().all(|k| k == "integer"), "not all fields are integers: {kinds:?}");
}

// ------------------------------------------------------------------------------------------------ tracing

#[test]
fn write_and_query_tracing_follow_the_node_fields() {
    let a = FakeBackend::start();
    let redis = Redis::start();
    let (p1, p2) = (free_port(), free_port());
    let (l1, l2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    ProxyConfig::new()
        .backend("a", &a.url(), FAST)
        .keymap("cpu", &["a"])
        .node("l1", &[("listenaddr", l1.as_str()), ("interval", "0"), ("writetracing", "1"), ("querytracing", "1")])
        .node("l2", &[("listenaddr", l2.as_str()), ("interval", "0"), ("writetracing", "0"), ("querytracing", "0")])
        .write_to(&redis);
    let traced = Proxy::builder(&redis, "l1", p1).start();
    let silent = Proxy::builder(&redis, "l2", p2).start();

    for (proxy, node) in [(&traced, "l1"), (&silent, "l2")] {
        let mut conn = HttpConn::connect(&proxy.addr());
        let client = conn.stream().local_addr().expect("local addr").to_string();
        let body = format!("cpu,wmark=w_{node} v=1i 1000\n");
        conn.send("POST", &format!("/write?db={DB}"), &[], body.as_bytes());
        assert_eq!(conn.read_response().status, 204);
        let q = format!("SELECT v FROM cpu WHERE qmark = 'q_{node}' AND time > 0");
        conn.send("GET", &query_path(&q, &[]), &[], b"");
        assert_eq!(conn.read_response().status, 200);
        let log = proxy.log();
        let write_line = log.lines().find(|l| l.contains(&format!("w_{node}")));
        let query_line = log.lines().find(|l| l.contains(&format!("q_{node}")));
        if node == "l1" {
            let w = write_line.unwrap_or_else(|| panic!("writetracing=1 but the write body is not logged:\n{log}"));
            assert!(w.contains(&client), "traced write line lacks the client address {client}: {w}");
            let q = query_line.unwrap_or_else(|| panic!("querytracing=1 but the query is not logged:\n{log}"));
            assert!(q.contains(&client), "traced query line lacks the client address {client}: {q}");
        } else {
            assert_eq!(write_line, None, "writetracing=0 but the write body is logged");
            assert_eq!(query_line, None, "querytracing=0 but the query is logged");
        }
    }
}
