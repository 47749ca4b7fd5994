//! The `/query` path end to end: test data is written DIRECTLY into real `influxd` backends (so the
//! query path is tested independently of the write path), the proxy is configured through a real
//! Redis so that keymaps say which backend holds which measurement, and every answer the proxy
//! gives is compared with what the backend holding the data answers directly: byte for byte where
//! the proxy relays one backend's answer, JSON-equal where it merges several (then against a
//! reference `influxd` that holds the union of all the data, i.e. what one InfluxDB would answer).

mod util;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::http::{self, HttpConn, Response};
use util::site::{DB, FAST, Rig, WAIT};
use util::{Behavior, FakeBackend, Influxd, ProxyConfig, wait_until};

/// 2023-11-14T22:13:20Z, in ns and ms: test data lives in the hour after it.
const T0_NS: i64 = 1_700_000_000_000_000_000;
const T0_MS: i64 = 1_700_000_000_000;

/// Queries through a rig's proxy, each on a fresh connection.
trait Queries {
    fn get(&self, params: &[(&str, &str)]) -> Response;
    fn post(&self, params: &[(&str, &str)]) -> Response;
}

impl Queries for Rig {
    fn get(&self, params: &[(&str, &str)]) -> Response {
        query(&self.addr(), Via::Get, params)
    }

    fn post(&self, params: &[(&str, &str)]) -> Response {
        query(&self.addr(), Via::Post, params)
    }
}

/// One query parameter, name and value.
type Param<'a> = (&'a str, &'a str);

/// How a query request carries its parameters.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// Everything in the URL.
    Get,
    /// `q` in an `application/x-www-form-urlencoded` body, the rest in the URL (as Grafana does).
    Post,
    /// Everything in the form body.
    PostForm,
}

/// One `/query` request to `addr` on a fresh connection.
fn query(addr: &str, via: Via, params: &[(&str, &str)]) -> Response {
    query_with(addr, via, params, &[])
}

fn query_with(addr: &str, via: Via, params: &[(&str, &str)], headers: &[(&str, &str)]) -> Response {
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    match via {
        Via::Get => {
            let path = format!("/query?{}", http::query_string(params));
            exchange(addr, "GET", &path, headers, b"")
        }
        Via::Post | Via::PostForm => {
            let (in_body, in_url): (Vec<Param>, Vec<Param>) =
                params.iter().partition(|(k, _)| matches!(via, Via::PostForm) || *k == "q");
            let path = if in_url.is_empty() {
                "/query".to_string()
            } else {
                format!("/query?{}", http::query_string(&in_url))
            };
            let mut all = headers.to_vec();
            all.push(form_type);
            let body = http::query_string(&in_body);
            exchange(addr, "POST", &path, &all, body.as_bytes())
        }
    }
}

/// One request on a fresh keep-alive connection (as Grafana and most clients send them; the
/// harness's `http::request` adds `Connection: close` unless told otherwise, and
/// `connection_close_clients` covers that case).
fn exchange(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_exchange(addr, method, path, headers, body, http::DEFAULT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr} failed: {e}"))
}

fn try_exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut all = headers.to_vec();
    all.push(("Connection", "keep-alive"));
    http::try_request(addr, method, path, &all, body, timeout)
}

/// `n` influxd instances, each with database `db`.
fn influxds(n: usize) -> Vec<Influxd> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            thread::spawn(|| {
                let influxd = Influxd::start();
                influxd.create_db(DB);
                influxd
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("influxd start panicked")).collect()
}

/// Line protocol: `n` points of `series` (measurement and tags) with `field` = base + i, one
/// every 5 s from T0 + 5 s.
fn points(series: &str, field: &str, n: i64, base: f64) -> String {
    (0..n)
        .map(|i| {
            let ts = T0_NS + (i + 1) * 5_000_000_000;
            format!("{series} {field}={} {ts}\n", base + i as f64)
        })
        .collect()
}

/// A ProxyConfig with the given backends (all FAST) and keymaps.
fn config(backends: &[(&str, &Influxd)], keymaps: &[(&str, &[&str])]) -> ProxyConfig {
    let mut c = ProxyConfig::new();
    for (name, influxd) in backends {
        c = c.backend(name, &influxd.url(), FAST);
    }
    for (m, names) in keymaps {
        c = c.keymap(m, names);
    }
    c
}

/// The proxy relayed the backend's answer: same status, Content-Type and body bytes.
fn assert_relayed(got: &Response, want: &Response, what: &str) {
    assert_eq!(got.status, want.status, "{what}: status differs\nproxy:   {}\nbackend: {}", got.text(), want.text());
    assert_eq!(got.text(), want.text(), "{what}: proxy's body differs from the backend's");
    assert_eq!(got.header("content-type"), want.header("content-type"), "{what}: Content-Type differs");
}

/// The proxy's merged answer is the JSON the reference InfluxDB gives.
fn assert_json_same(got: &Response, want: &Response, what: &str) {
    assert_eq!(
        got.status,
        want.status,
        "{what}: status differs\nproxy:     {}\nreference: {}",
        got.text(),
        want.text()
    );
    assert_eq!(
        got.json(),
        want.json(),
        "{what}: proxy's JSON differs from the reference\nproxy:     {}\nreference: {}",
        got.text(),
        want.text()
    );
}

/// Asserts an InfluxDB-style JSON error answer with `status` whose message contains `needle`;
/// returns the message.
fn assert_error(r: &Response, status: u16, needle: &str) -> String {
    assert_eq!(r.status, status, "unexpected answer: {}", r.text());
    let json = r.json();
    let error = json["error"].as_str().unwrap_or_else(|| panic!("no \"error\" string in {}", r.text())).to_string();
    assert!(error.contains(needle), "error {error:?} does not contain {needle:?}");
    error
}

/// `text` cut to its first and last 300 characters, for failure messages.
fn short(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 700 {
        return text.to_string();
    }
    let head: String = chars[..300].iter().collect();
    let tail: String = chars[chars.len() - 300..].iter().collect();
    format!("{head} … {tail}")
}

/// Runs a statement directly on `influxd`, asserting success.
fn exec(influxd: &Influxd, q: &str) {
    let r = query(&influxd.addr(), Via::Post, &[("q", q)]);
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    assert!(r.json()["results"][0]["error"].is_null(), "{q}: {}", r.text());
}

/// The series of the first result of an answer (panics on a statement error).
fn series(r: &Response) -> Vec<Value> {
    let json = r.json();
    let result = &json["results"][0];
    assert!(result["error"].is_null(), "statement error: {}", r.text());
    result["series"].as_array().cloned().unwrap_or_default()
}

fn without_id(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.remove("statement_id");
    }
    v
}

/// The newline-separated JSON objects of a (chunked) query answer.
fn json_objects(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split('\n')
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON object {l:?}: {e}")))
        .collect()
}

// 1 ----------------------------------------------------------------------------------------------

#[test]
fn original_proxy_expectations() {
    let [i1]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    i1.write(DB, &points("cpu,host=a", "value", 3, 1.0));
    let rig = Rig::start(config(&[("i1", &i1)], &[("cpu", &["i1"]), ("_default_", &["i1"])]), &[]);

    let r = rig.get(&[("db", DB), ("q", "select * from cpu")]);
    let e = assert_error(&r, 400, "select_star");
    assert!(e.contains("select * from cpu"), "{e:?} does not quote it");
    assert_eq!(r.header("X-Influxdb-Error").map(str::to_string), Some(e), "X-Influxdb-Error");

    let r = rig.get(&[("db", DB), ("q", "select value from cpu")]);
    assert_error(&r, 400, "select_no_time");

    let params = [("db", DB), ("q", "select value from cpu where time < now()")];
    let r = rig.get(&params);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_relayed(&r, &query(&i1.addr(), Via::Get, &params), "time < now()");
    assert_eq!(series(&r)[0]["values"].as_array().map(Vec::len), Some(3));
}

// 2 ----------------------------------------------------------------------------------------------

/// Data for the Grafana-shaped queries: cpu on i1, mem on i2, disk on both.
fn grafana_data(i1: &Influxd, i2: &Influxd, all: &Influxd) {
    let cpu = points("cpu,host=a,cpu=cpu-total", "usage_idle", 12, 90.0)
        + &points("cpu,host=b,cpu=cpu-total", "usage_idle", 12, 50.0)
        + &points("cpu,host=a,cpu=cpu0", "usage_user", 4, 3.0);
    let mem = points("mem,host=a", "used", 5, 100.0);
    let disk = points("disk,host=a,path=/", "free", 3, 7.0);
    let cpu_load = points("cpu_load,host=a", "load1", 2, 0.5);
    i1.write(DB, &(cpu.clone() + &disk + &cpu_load));
    i2.write(DB, &(mem.clone() + &disk));
    all.write(DB, &(cpu + &mem + &disk + &cpu_load));
}

#[test]
fn grafana_query_shapes_get_and_post() {
    let [i1, i2, all]: [Influxd; 3] = influxds(3).try_into().ok().expect("three influxd");
    grafana_data(&i1, &i2, &all);
    let rig = Rig::start(
        config(
            &[("i1", &i1), ("i2", &i2)],
            &[
                ("cpu", &["i1"]),
                ("cpu_load", &["i1"]),
                ("mem", &["i2"]),
                ("disk", &["i1", "i2"]),
                ("_default_", &["i1"]),
            ],
        ),
        &[],
    );

    let panel = format!(
        "SELECT mean(\"usage_idle\") FROM \"autogen\".\"cpu\" WHERE (\"host\" = 'a') AND time >= {}ms and time <= {}ms GROUP BY time(10s), \"host\" fill(null)",
        T0_MS,
        T0_MS + 3_600_000
    );
    let rp = format!("SHOW RETENTION POLICIES on \"{DB}\"");
    // (statement, extra params, answered by one backend: Some(it) / merged: None)
    let cases: Vec<(&str, Vec<Param>, Option<&Influxd>)> = vec![
        ("SHOW MEASUREMENTS LIMIT 100", vec![], None),
        ("SHOW MEASUREMENTS WITH MEASUREMENT =~ /cp/ LIMIT 100", vec![], None),
        ("SHOW TAG KEYS FROM \"cpu\"", vec![], Some(&i1)),
        ("SHOW TAG VALUES FROM \"cpu\" WITH KEY = \"host\"", vec![], Some(&i1)),
        ("SHOW FIELD KEYS FROM \"cpu\"", vec![], Some(&i1)),
        (&rp, vec![], None),
        ("SHOW DATABASES", vec![], None),
        (&panel, vec![("epoch", "ms")], Some(&i1)),
    ];
    for (q, extra, holder) in &cases {
        for via in [Via::Get, Via::Post, Via::PostForm] {
            let mut params = vec![("db", DB), ("q", *q)];
            params.extend(extra.iter().copied());
            let got = query(&rig.addr(), via, &params);
            let what = format!("{q} ({via:?})");
            assert_eq!(got.status, 200, "{what}: {}", got.text());
            // The reference holds everything: every answer must equal it as JSON.
            assert_json_same(&got, &query(&all.addr(), via, &params), &what);
            if let Some(holder) = holder {
                assert_relayed(&got, &query(&holder.addr(), via, &params), &what);
            }
        }
    }

    // The panel answer has data: host a's mean over the first 10 s bucket that holds points.
    let got = rig.get(&[("db", DB), ("q", &panel), ("epoch", "ms")]);
    let s = series(&got);
    assert_eq!(s.len(), 1, "{}", got.text());
    assert_eq!(s[0]["tags"]["host"], "a");
    let rows = s[0]["values"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows[0][0].as_i64(), Some(T0_MS), "{}", got.text());
    assert_eq!(rows[0][1].as_f64(), Some(90.0), "{}", got.text());
    assert_eq!(rows[1][1].as_f64(), Some(91.5), "{}", got.text());

    // The merged SHOW MEASUREMENTS holds both backends' measurements.
    let got = rig.get(&[("db", DB), ("q", "SHOW MEASUREMENTS LIMIT 100")]);
    assert_eq!(series(&got)[0]["values"], serde_json::json!([["cpu"], ["cpu_load"], ["disk"], ["mem"]]));
}

// 3 ----------------------------------------------------------------------------------------------

#[test]
fn panel_of_three_statements_on_three_backends() {
    let [i1, i2, i3]: [Influxd; 3] = influxds(3).try_into().ok().expect("three influxd");
    i1.write(DB, &points("cpu,host=a", "usage_idle", 10, 90.0));
    i2.write(DB, &points("mem,host=a", "used", 10, 1000.0));
    i3.write(DB, &(points("net,host=a", "rx", 10, 5.0) + &points("net,host=b", "rx", 10, 50.0)));
    let rig = Rig::start(
        config(
            &[("i1", &i1), ("i2", &i2), ("i3", &i3)],
            &[("cpu", &["i1"]), ("mem", &["i2"]), ("net", &["i3"]), ("_default_", &["i1"])],
        ),
        &[],
    );
    let range = format!("time >= {}ms and time <= {}ms", T0_MS, T0_MS + 3_600_000);
    let cpu = format!("SELECT mean(\"usage_idle\") FROM \"cpu\" WHERE {range} GROUP BY time(10s) fill(null)");
    let mem = format!("SELECT max(\"used\") FROM \"mem\" WHERE {range} GROUP BY time(20s)");
    let net = format!("SELECT last(\"rx\") FROM \"net\" WHERE {range} GROUP BY \"host\"");
    let cpu2 = format!("SELECT count(\"usage_idle\") FROM \"cpu\" WHERE {range}");
    let mem2 = format!("SELECT min(\"used\") FROM \"mem\" WHERE {range}");
    let panels: [Vec<(&str, &Influxd)>; 2] = [
        // The panel of the brief: one statement per backend.
        vec![(&cpu, &i1), (&mem, &i2), (&net, &i3)],
        // Runs of statements for one backend, and a backend coming back later.
        vec![(&cpu, &i1), (&cpu2, &i1), (&mem, &i2), (&net, &i3), (&mem2, &i2)],
    ];
    for panel in &panels {
        let joined = panel.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(";");
        for via in [Via::Get, Via::Post] {
            let r = query(&rig.addr(), via, &[("db", DB), ("q", &joined), ("epoch", "ms")]);
            assert_eq!(r.status, 200, "{via:?}: {}", r.text());
            let json = r.json();
            let results = json["results"].as_array().unwrap_or_else(|| panic!("no results: {}", r.text()));
            assert_eq!(results.len(), panel.len(), "{}", r.text());
            for (k, (statement, holder)) in panel.iter().enumerate() {
                assert_eq!(results[k]["statement_id"], k, "{}", r.text());
                let alone = query(&holder.addr(), Via::Get, &[("db", DB), ("q", statement), ("epoch", "ms")]);
                let alone = alone.json()["results"][0].clone();
                assert!(alone["series"].is_array(), "statement {k} has no data: {alone}");
                assert_eq!(
                    without_id(results[k].clone()),
                    without_id(alone),
                    "{via:?}: statement {k} of {joined:?} differs from its backend's own answer"
                );
            }
        }
    }

    // A statement InfluxDB cannot parse makes the whole request a 400, as InfluxDB answers it.
    let bad = format!("{cpu};SELECT max(\"used\") FROM \"mem\" WHERE {range} GROUP BY time(1x)");
    let params = [("db", DB), ("q", bad.as_str())];
    let direct = query(&i2.addr(), Via::Get, &params);
    assert_eq!(direct.status, 400, "influxd: {}", direct.text());
    let got = rig.get(&params);
    assert_eq!(
        got.status,
        400,
        "a panel with an unparseable statement: proxy answered {}, influxd answers {}",
        short(&got.text()),
        direct.text()
    );
    assert!(got.json()["error"].is_string(), "{}", got.text());
}

// 4 ----------------------------------------------------------------------------------------------

#[test]
fn select_then_drop_is_refused_and_nothing_is_dropped() {
    let [i1, i2]: [Influxd; 2] = influxds(2).try_into().ok().expect("two influxd");
    i1.write(DB, &points("cpu,host=a", "v", 3, 1.0));
    i2.write(DB, &points("x,host=a", "v", 3, 1.0));
    let rig = Rig::start(
        config(&[("i1", &i1), ("i2", &i2)], &[("cpu", &["i1"]), ("x", &["i2"]), ("_default_", &["i1"])]),
        &[],
    );
    for q in [
        "SELECT v FROM cpu WHERE time > 0; DROP MEASUREMENT x",
        "SELECT v FROM cpu WHERE time > 0;DROP MEASUREMENT \"x\"",
        "select v from x where time > 0;\n drop measurement x;",
        "DROP MEASUREMENT x; SELECT v FROM cpu WHERE time > 0",
        "SELECT v FROM cpu WHERE time > 0; DROP SERIES FROM x",
        "SELECT v FROM cpu WHERE time > 0; DELETE FROM x",
    ] {
        for via in [Via::Get, Via::Post, Via::PostForm] {
            let r = query(&rig.addr(), via, &[("db", DB), ("q", q)]);
            let e = assert_error(&r, 400, "forbidden by rule");
            assert!(e.contains("rule drop") || e.contains("rule delete"), "{q:?}: {e}");
        }
    }
    assert_eq!(i2.count(DB, "x"), 3, "x was dropped");
    let r = rig.get(&[("db", DB), ("q", "SELECT v FROM x WHERE time > 0")]);
    assert_eq!(series(&r)[0]["values"].as_array().map(Vec::len), Some(3));
}

// 5 ----------------------------------------------------------------------------------------------

#[test]
fn qualified_quoted_regex_and_subquery_sources_route_correctly() {
    let [i1, i2, all]: [Influxd; 3] = influxds(3).try_into().ok().expect("three influxd");
    // i2 holds cpu, cpu.load and c"pu; i1 (also the _default_) holds cx: a misrouted query
    // lands on i1 and finds nothing.
    let on_i2 = points("cpu,host=a", "v", 4, 1.0)
        + &points("cpu,host=b", "v", 4, 10.0)
        + &points("cpu.load,host=a", "v", 3, 0.25)
        + &points("c\"pu,host=q", "v", 2, 42.0);
    let on_i1 = points("cx,host=a", "v", 2, 7.0);
    i2.write(DB, &on_i2);
    i1.write(DB, &on_i1);
    all.write(DB, &(on_i2 + &on_i1));
    let rig = Rig::start(
        config(
            &[("i1", &i1), ("i2", &i2)],
            &[("cpu", &["i2"]), ("cpu.load", &["i2"]), ("c\"pu", &["i2"]), ("cx", &["i1"]), ("_default_", &["i1"])],
        ),
        &[],
    );

    let relayed = [
        "SELECT v FROM \"db\".\"autogen\".\"cpu\" WHERE time > 0",
        "SELECT v FROM db..cpu WHERE time > 0",
        "SELECT v FROM \"db\"..\"cpu\" WHERE time > 0 GROUP BY host",
        "SELECT v FROM \"autogen\".\"cpu\" WHERE time > 0",
        "SELECT v FROM autogen.cpu WHERE time > 0",
        "SELECT v FROM \"cpu.load\" WHERE time > 0",
        "SELECT v FROM \"db\".\"autogen\".\"cpu.load\" WHERE time > 0",
        "SELECT v FROM \"c\\\"pu\" WHERE time > 0",
        "SHOW TAG KEYS FROM \"cpu.load\"",
        "SELECT max(m) FROM (SELECT mean(v) AS m FROM cpu WHERE time > 0 GROUP BY time(1h))",
    ];
    for q in relayed {
        let params = [("db", DB), ("q", q)];
        let direct = query(&i2.addr(), Via::Get, &params);
        assert!(!series(&direct).is_empty(), "{q}: no data on i2: {}", direct.text());
        let got = rig.get(&params);
        assert_relayed(&got, &direct, q);
    }

    // Bound parameters travel with the query.
    let params = [("db", DB), ("q", "SELECT v FROM cpu WHERE host = $h AND time > 0"), ("params", "{\"h\":\"b\"}")];
    let direct = query(&i2.addr(), Via::Get, &params);
    assert_eq!(series(&direct).len(), 1, "{}", direct.text());
    assert_relayed(&rig.get(&params), &direct, "bound parameters");

    // A regex source spans both backends: both backends' series, merged as one InfluxDB would.
    for q in [
        "SELECT v FROM /c.*/ WHERE time > 0",
        "SELECT v FROM /c.*/ WHERE time > 0 GROUP BY host",
        "SELECT v FROM \"db\".\"autogen\"./^c/ WHERE time > 0",
        "SELECT v FROM cpu, cx WHERE time > 0",
    ] {
        let params = [("db", DB), ("q", q)];
        let got = rig.get(&params);
        assert_json_same(&got, &query(&all.addr(), Via::Get, &params), q);
        let names: Vec<String> =
            series(&got).iter().map(|s| s["name"].as_str().unwrap_or_default().to_string()).collect();
        assert!(names.contains(&"cx".to_string()) && names.contains(&"cpu".to_string()), "{q}: {names:?}");
    }
}

// 6 ----------------------------------------------------------------------------------------------

#[test]
fn schema_listings_merge_across_backends() {
    let [i1, i2, all]: [Influxd; 3] = influxds(3).try_into().ok().expect("three influxd");
    let on_i1 = points("cpu,host=a", "usage", 2, 1.0)
        + &points("cx,host=a", "v", 2, 1.0)
        + &points("disk,host=a", "free", 2, 1.0);
    let on_i2 = points("mem,host=a", "used", 2, 1.0)
        + &points("net,iface=eth0", "rx", 2, 1.0)
        + &points("disk,path=/", "inodes", 2, 1.0);
    i1.write(DB, &on_i1);
    i2.write(DB, &on_i2);
    all.write(DB, &(on_i1 + &on_i2));
    for (influxd, dbs) in [
        (&i1, &["extra1", "shared"][..]),
        (&i2, &["extra2", "shared"][..]),
        (&all, &["extra1", "extra2", "shared"][..]),
    ] {
        for db in dbs {
            influxd.create_db(db);
        }
    }
    for influxd in [&i2, &all] {
        exec(influxd, "CREATE RETENTION POLICY week ON db DURATION 7d REPLICATION 1");
    }
    let rig = Rig::start(
        config(
            &[("i1", &i1), ("i2", &i2)],
            &[
                ("cpu", &["i1"]),
                ("cx", &["i1"]),
                ("mem", &["i2"]),
                ("net", &["i2"]),
                ("disk", &["i1", "i2"]),
                ("_default_", &["i1"]),
            ],
        ),
        &[],
    );
    for q in [
        "SHOW MEASUREMENTS",
        "SHOW MEASUREMENTS LIMIT 2 OFFSET 1",
        "SHOW MEASUREMENTS LIMIT 2",
        "SHOW MEASUREMENTS OFFSET 3",
        "SHOW MEASUREMENTS OFFSET 10",
        "SHOW MEASUREMENTS ON db",
        "SHOW MEASUREMENTS WHERE host = 'a'",
        "SHOW TAG VALUES WITH KEY = \"host\"",
        "SHOW TAG VALUES WITH KEY IN (\"host\", \"path\")",
        "SHOW SERIES",
        "SHOW SERIES LIMIT 2 OFFSET 1",
        "SHOW TAG VALUES WITH KEY = \"host\" LIMIT 1",
        "SHOW TAG KEYS LIMIT 1 OFFSET 1",
        "SHOW TAG KEYS SLIMIT 2",
        "SHOW TAG KEYS SLIMIT 2 SOFFSET 1",
        "SHOW FIELD KEYS LIMIT 1",
        "SHOW RETENTION POLICIES ON db",
        "SHOW TAG KEYS",
        "SHOW FIELD KEYS",
        "SHOW DATABASES",
        "show databases",
    ] {
        let params = [("db", DB), ("q", q)];
        let got = rig.get(&params);
        assert_json_same(&got, &query(&all.addr(), Via::Get, &params), q);
    }

    let r = rig.get(&[("db", DB), ("q", "SHOW MEASUREMENTS")]);
    assert_eq!(series(&r)[0]["values"], serde_json::json!([["cpu"], ["cx"], ["disk"], ["mem"], ["net"]]));
    let r = rig.get(&[("db", DB), ("q", "SHOW MEASUREMENTS LIMIT 2 OFFSET 1")]);
    assert_eq!(series(&r)[0]["values"], serde_json::json!([["cx"], ["disk"]]));
    let r = rig.get(&[("db", DB), ("q", "SHOW DATABASES")]);
    let dbs = series(&r)[0]["values"].clone();
    assert_eq!(dbs, serde_json::json!([["db"], ["extra1"], ["extra2"], ["shared"]]));
    let r = rig.get(&[("db", DB), ("q", "SHOW TAG KEYS")]);
    let disk =
        series(&r).into_iter().find(|s| s["name"] == "disk").unwrap_or_else(|| panic!("no disk series: {}", r.text()));
    assert_eq!(disk["values"], serde_json::json!([["host"], ["path"]]));

    // A statement error every backend reports is the statement's error.
    let params = [("db", "nope"), ("q", "SHOW MEASUREMENTS")];
    let got = rig.get(&params);
    assert_json_same(&got, &query(&all.addr(), Via::Get, &params), "db=nope");

    // A chunked request for a merged statement: the same JSON objects as one InfluxDB sends.
    let params = [("db", DB), ("q", "SHOW MEASUREMENTS"), ("chunked", "true"), ("chunk_size", "1")];
    let got = rig.get(&params);
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        json_objects(&got.body),
        json_objects(&query(&all.addr(), Via::Get, &params).body),
        "chunked SHOW MEASUREMENTS"
    );
}

// 7 ----------------------------------------------------------------------------------------------

#[test]
fn chunked_gzip_epoch_and_pretty_as_on_the_backend() {
    let [i1]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    i1.write(DB, &(points("cpu,host=a", "usage", 6, 1.0) + &points("cpu,host=b", "usage", 6, 10.0)));
    let rig = Rig::start(config(&[("i1", &i1)], &[("cpu", &["i1"]), ("_default_", &["i1"])]), &[]);
    let q = "SELECT usage FROM cpu WHERE time > 0 GROUP BY host";

    // Chunked: every chunk relayed, in order.
    let params = [("db", DB), ("q", q), ("chunked", "true"), ("chunk_size", "1")];
    let direct = query(&i1.addr(), Via::Get, &params);
    let got = rig.get(&params);
    assert_eq!(got.status, 200, "{}", got.text());
    let want_objects = json_objects(&direct.body);
    assert!(want_objects.len() >= 12, "backend sent only {} chunks", want_objects.len());
    assert_eq!(json_objects(&got.body), want_objects, "chunk sequence differs");
    assert_relayed(&got, &direct, "chunked");

    // gzip: a valid gzip answer whose content is the plain answer.
    let plain_params = [("db", DB), ("q", q)];
    let plain = rig.get(&plain_params);
    assert_eq!(plain.status, 200, "{}", plain.text());
    for params in [&plain_params[..], &params[..]] {
        let gz = query_with(&rig.addr(), Via::Get, params, &[("Accept-Encoding", "gzip")]);
        assert_eq!(gz.status, 200, "{}", gz.text());
        assert_eq!(gz.header("content-encoding"), Some("gzip"), "gzip asked for, headers {:?}", gz.headers);
        let unzipped = http::try_gunzip(&gz.body).unwrap_or_else(|| panic!("not a valid gzip stream: {:?}", gz.text()));
        let want = query(&i1.addr(), Via::Get, params);
        assert_eq!(
            String::from_utf8_lossy(&unzipped),
            want.text(),
            "gunzipped answer differs from the plain answer ({params:?})"
        );
    }
    // A merged answer may be plain or gzip, but must be what the header says.
    let gz =
        query_with(&rig.addr(), Via::Get, &[("db", DB), ("q", "SHOW MEASUREMENTS")], &[("Accept-Encoding", "gzip")]);
    let body = match gz.header("content-encoding") {
        Some("gzip") => http::gunzip(&gz.body),
        None => gz.body.clone(),
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    };
    let v: Value = serde_json::from_slice(&body).expect("merged answer is JSON");
    assert_eq!(v["results"][0]["series"][0]["values"][0][0], "cpu");

    // epoch and pretty: the backend's bytes.
    for extra in [
        vec![("epoch", "s")],
        vec![("epoch", "ms")],
        vec![("pretty", "true")],
        vec![("pretty", "true"), ("epoch", "s")],
    ] {
        let mut params = vec![("db", DB), ("q", q)];
        params.extend(extra.iter().copied());
        assert_relayed(&rig.get(&params), &query(&i1.addr(), Via::Get, &params), &format!("{extra:?}"));
    }
    let r = rig.get(&[("db", DB), ("q", q), ("epoch", "s")]);
    assert_eq!(series(&r)[0]["values"][0][0].as_i64(), Some(T0_NS / 1_000_000_000 + 5));

    // CSV: InfluxDB answers `Accept: application/csv` in CSV; so must the relayed answer.
    let params = [("db", DB), ("q", q), ("epoch", "s")];
    let accept = [("Accept", "application/csv")];
    let direct = query_with(&i1.addr(), Via::Get, &params, &accept);
    assert!(direct.text().starts_with("name,tags,time,usage"), "influxd CSV: {}", direct.text());
    assert_relayed(&query_with(&rig.addr(), Via::Get, &params, &accept), &direct, "Accept: application/csv");
}

// 8 ----------------------------------------------------------------------------------------------

#[test]
fn failover_to_the_other_replica() {
    let [mut i1, i2]: [Influxd; 2] = influxds(2).try_into().ok().expect("two influxd");
    // Same series on both, different values: the answer tells which backend gave it.
    i1.write(DB, &points("disk,host=a", "free", 3, 1.0));
    i2.write(DB, &(points("disk,host=a", "free", 3, 100.0) + &points("mem,host=a", "used", 2, 1.0)));
    let rig = Rig::start(
        config(&[("i1", &i1), ("i2", &i2)], &[("disk", &["i1", "i2"]), ("mem", &["i2"]), ("_default_", &["i1"])]),
        &[],
    );
    let params = [("db", DB), ("q", "SELECT free FROM disk WHERE time > 0")];
    let from_i1 = query(&i1.addr(), Via::Get, &params);
    let from_i2 = query(&i2.addr(), Via::Get, &params);
    assert_ne!(from_i1.text(), from_i2.text());
    // The preferred backend is the first healthy one in config (name) order: i1.
    assert_relayed(&rig.get(&params), &from_i1, "both up");
    let show = [("db", DB), ("q", "SHOW MEASUREMENTS")];
    let i2_show = query(&i2.addr(), Via::Get, &show);

    i1.stop();
    let check = |when: &str| {
        let started = Instant::now();
        assert_relayed(&rig.get(&params), &from_i2, &format!("i1 stopped, {when}"));
        assert_relayed(&rig.post(&params), &from_i2, &format!("i1 stopped, {when}, POST"));
        assert!(started.elapsed() < Duration::from_secs(3), "failover took {:?}", started.elapsed());
        let r = rig.get(&show);
        assert_eq!(r.status, 200, "{when}: {}", r.text());
        let json = r.json();
        let result = &json["results"][0];
        assert_eq!(
            result["series"],
            i2_show.json()["results"][0]["series"],
            "{when}: SHOW MEASUREMENTS with i1 down: {}",
            r.text()
        );
        let messages =
            result["messages"].as_array().unwrap_or_else(|| panic!("{when}: no messages warning: {}", r.text()));
        assert!(
            messages.iter().any(|m| m["level"] == "warning" && m["text"].as_str().is_some_and(|t| t.contains("i1"))),
            "{when}: no warning naming i1: {}",
            r.text()
        );
    };
    check("right after the stop");
    wait_until(WAIT, "proxy log: backend i1 is down", || {
        rig.proxy.log().lines().any(|l| l.contains("backend i1 (") && l.contains("is down"))
    });
    check("after health checks marked it down");
}

// 9 ----------------------------------------------------------------------------------------------

#[test]
fn node_db_is_enforced_for_queries() {
    let i1 = Influxd::start();
    i1.create_db("app");
    i1.create_db("other");
    i1.write("app", &points("cpu,host=a", "v", 3, 1.0));
    i1.write("other", &points("cpu,host=a", "v", 3, 100.0));
    let rig = Rig::start(config(&[("i1", &i1)], &[("cpu", &["i1"]), ("_default_", &["i1"])]), &[("db", "app")]);
    let q = "SELECT v FROM cpu WHERE time > 0";
    for via in [Via::Get, Via::Post, Via::PostForm] {
        for q in [q, "SHOW MEASUREMENTS"] {
            let r = query(&rig.addr(), via, &[("db", "other"), ("q", q)]);
            let e = assert_error(&r, 404, "database not found");
            assert_eq!(e, "database not found: \"other\"", "{via:?} {q}");
        }
        let direct = query(&i1.addr(), Via::Get, &[("db", "app"), ("q", q)]);
        assert!(!series(&direct).is_empty());
        let r = query(&rig.addr(), via, &[("q", q)]);
        assert_relayed(&r, &direct, &format!("{via:?} without db"));
        let r = query(&rig.addr(), via, &[("db", "app"), ("q", q)]);
        assert_relayed(&r, &direct, &format!("{via:?} db=app"));
    }
    let r = rig.get(&[("q", "SELECT v FROM other..cpu WHERE time > 0")]);
    assert_error(&r, 404, "database not found: \"other\"");
}

// 10 ---------------------------------------------------------------------------------------------

#[test]
fn missing_q_wrong_method_and_syntax_errors() {
    let [i1]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    i1.write(DB, &points("cpu,host=a", "v", 3, 1.0));
    let rig = Rig::start(config(&[("i1", &i1)], &[("cpu", &["i1"]), ("_default_", &["i1"])]), &[]);
    let addr = rig.addr();

    for r in [
        exchange(&addr, "GET", "/query?db=db", &[], b""),
        exchange(&addr, "GET", "/query?db=db&q=", &[], b""),
        exchange(&addr, "POST", "/query?db=db", &[("Content-Type", "application/x-www-form-urlencoded")], b""),
    ] {
        let e = assert_error(&r, 400, "missing required parameter");
        assert_eq!(e, "missing required parameter \"q\"");
    }

    let path = format!("/query?{}", http::query_string(&[("db", DB), ("q", "SHOW DATABASES")]));
    for method in ["PUT", "DELETE", "PATCH"] {
        let r = exchange(&addr, method, &path, &[], b"");
        assert_eq!(r.status, 405, "{method} /query: {}", r.text());
    }

    for q in [
        "SELEC v FROM cpu WHERE time > 0",
        "SELECT v FROM \"cpu WHERE time > 0",
        "SELECT v FROM cpu WHERE time > 0 AND (",
        "SELECT FROM WHERE",
    ] {
        let params = [("db", DB), ("q", q)];
        let direct = query(&i1.addr(), Via::Get, &params);
        assert_eq!(direct.status, 400, "influxd on {q:?}: {}", direct.text());
        let r = rig.get(&params);
        assert_eq!(r.status, 400, "{q:?}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{q:?}: no JSON error: {}", r.text());
    }

    // `q` both in the URL and in a POST form body: InfluxDB (Go's FormValue) takes the body's.
    let path = format!("/query?{}", http::query_string(&[("db", DB), ("q", "SHOW DATABASES")]));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let body = http::query_string(&[("q", "SELECT v FROM cpu WHERE time > 0")]);
    let direct = exchange(&i1.addr(), "POST", &path, &form, body.as_bytes());
    assert_eq!(series(&direct)[0]["name"], "cpu", "{}", direct.text());
    let got = exchange(&addr, "POST", &path, &form, body.as_bytes());
    assert_relayed(&got, &direct, "q in URL and body");

    // A body that is not a form (another Content-Type, or none) is not read for parameters: with `q`
    // only there, InfluxDB answers that it is missing.
    for ct in [&[("Content-Type", "text/plain")][..], &[]] {
        let direct = exchange(&i1.addr(), "POST", &format!("/query?db={DB}"), ct, body.as_bytes());
        let got = exchange(&addr, "POST", &format!("/query?db={DB}"), ct, body.as_bytes());
        assert_eq!((got.status, got.text()), (direct.status, direct.text()), "q in a body of type {ct:?}");
        assert_eq!(direct.status, 400, "{}", direct.text());
    }
}

// 11 ---------------------------------------------------------------------------------------------

#[test]
fn multi_statement_on_one_backend_forwarded_as_is() {
    let [i1, i2]: [Influxd; 2] = influxds(2).try_into().ok().expect("two influxd");
    i1.write(DB, &(points("cpu,host=a", "usage_idle", 4, 90.0) + &points("disk,host=a", "free", 3, 5.0)));
    i2.write(DB, &points("disk,host=a", "free", 3, 5.0));
    let rig = Rig::start(
        config(&[("i1", &i1), ("i2", &i2)], &[("cpu", &["i1"]), ("disk", &["i1", "i2"]), ("_default_", &["i2"])]),
        &[],
    );
    let q = "SELECT usage_idle FROM cpu WHERE time > 0; SELECT free FROM disk WHERE time > 0;\nSHOW TAG KEYS FROM cpu; SELECT count(free) FROM disk WHERE time > 0 GROUP BY host";
    for via in [Via::Get, Via::Post, Via::PostForm] {
        for extra in [vec![], vec![("epoch", "ms")], vec![("pretty", "true")]] {
            let mut params = vec![("db", DB), ("q", q)];
            params.extend(extra.iter().copied());
            let direct = query(&i1.addr(), via, &params);
            assert_eq!(direct.status, 200);
            assert_eq!(direct.json()["results"].as_array().map(Vec::len), Some(4), "{}", direct.text());
            let got = query(&rig.addr(), via, &params);
            assert_relayed(&got, &direct, &format!("{via:?} {extra:?}"));
        }
    }
}

// 12 ---------------------------------------------------------------------------------------------

/// A request answered within `limit`; returns the response.
fn prompt(addr: &str, method: &str, path: &str, body: &[u8], limit: Duration, what: &str) -> Response {
    let started = Instant::now();
    let r =
        try_exchange(addr, method, path, &[], body, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{what}: {e}"));
    let took = started.elapsed();
    assert!(took < limit, "{what} took {took:?} (limit {limit:?})");
    r
}

#[test]
fn slow_backend_blocks_nothing_else() {
    let [i1]: [Influxd; 1] = influxds(1).try_into().ok().expect("one influxd");
    i1.write(DB, &points("cpu,host=a", "v", 3, 1.0));
    let slow = FakeBackend::start();
    slow.set_query(Behavior::delay(1500, Behavior::Ok));
    let hang = FakeBackend::start();
    hang.set_query(Behavior::Hang);
    let mut slow_fields = FAST.to_vec();
    slow_fields.push(("timeoutquery", "10000"));
    let mut hang_fields = FAST.to_vec();
    hang_fields.push(("timeoutquery", "500"));
    let config = ProxyConfig::new()
        .backend("i1", &i1.url(), FAST)
        .backend("slow", &slow.url(), &slow_fields)
        .backend("zhang", &hang.url(), &hang_fields)
        .keymap("cpu", &["i1"])
        .keymap("slowm", &["slow"])
        .keymap("hangm", &["zhang"])
        .keymap("_default_", &["i1"]);
    let rig = Rig::start_threads(config, &[], 1);
    let addr = rig.addr();
    let cpu_q = [("db", DB), ("q", "SELECT v FROM cpu WHERE time > 0")];
    let cpu_direct = query(&i1.addr(), Via::Get, &cpu_q);
    let cpu_path = format!("/query?{}", http::query_string(&cpu_q));
    let limit = Duration::from_millis(700);

    let mut written = 0;
    let mut others_answer = |what: &str| {
        let r = prompt(&addr, "GET", "/ping", b"", limit, &format!("{what}: /ping"));
        assert_eq!(r.status, 204);
        written += 1;
        let line = format!("wr,host=w v={written} {}", T0_NS + written * 1_000_000_000);
        let r = prompt(&addr, "POST", "/write?db=db", line.as_bytes(), limit, &format!("{what}: /write"));
        assert_eq!(r.status, 204, "{what}: /write: {}", r.text());
        let r = prompt(&addr, "GET", &cpu_path, b"", limit, &format!("{what}: query to i1"));
        assert_relayed(&r, &cpu_direct, &format!("{what}: query to i1"));
    };

    // A slow answer (1.5 s): everything else goes on meanwhile, then it arrives.
    let in_flight = |fake: &FakeBackend, q: &'static str| {
        let a = addr.clone();
        let handle = thread::spawn(move || {
            let started = Instant::now();
            let path = format!("/query?{}", http::query_string(&[("db", DB), ("q", q)]));
            let r = try_exchange(&a, "GET", &path, &[], b"", Duration::from_secs(20));
            (r, started.elapsed())
        });
        wait_until(WAIT, "the query reaching the fake backend", || !fake.requests_to("/query").is_empty());
        handle
    };
    let handle = in_flight(&slow, "SELECT v FROM slowm WHERE time > 0");
    others_answer("slow query in flight");
    assert!(!handle.is_finished(), "the slow query answered too early");
    let (r, took) = handle.join().expect("slow query thread");
    let r = r.expect("slow query failed");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "{\"results\":[{\"statement_id\":0}]}\n");
    assert!(took >= Duration::from_millis(1400), "slow answer after {took:?}");

    // A hanging backend: others go on, and timeoutquery = 500 ms ends the hanging query.
    let handle = in_flight(&hang, "SELECT v FROM hangm WHERE time > 0");
    let started = Instant::now();
    others_answer("hanging query in flight");
    let (r, took) = handle.join().expect("hang query thread");
    let r = r.expect("the hanging query got no answer from the proxy");
    assert!(r.status >= 500, "hanging query answered {}: {}", r.status, r.text());
    assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "no JSON error: {}", r.text());
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
        "hanging query answered after {took:?} with timeoutquery = 500 ms"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A fan-out with a hanging part is answered once that part times out, naming it.
    let started = Instant::now();
    let path = format!("/query?{}", http::query_string(&[("db", DB), ("q", "SHOW MEASUREMENTS")]));
    let r = try_exchange(&addr, "GET", &path, &[], b"", Duration::from_secs(10))
        .expect("fan-out with a hanging backend got no answer");
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(took < Duration::from_secs(4), "fan-out answered after {took:?}");
    let json = r.json();
    let result = &json["results"][0];
    assert!(
        result["series"][0]["values"].as_array().is_some_and(|v| v.contains(&serde_json::json!(["cpu"]))),
        "{}",
        r.text()
    );
    assert!(
        result["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["text"].as_str().is_some_and(|t| t.contains("zhang")))),
        "no warning naming the hanging backend: {}",
        r.text()
    );

    // The writes made while queries were in flight arrived.
    wait_until(WAIT, "the writes on i1", || i1.values(DB, "SELECT v FROM wr").len() == 2);
}

// Clients that close after one answer --------------------------------------------------------------

/// `Connection: close` and HTTP/1.0 clients (curl -0, scripts, load balancers' health checks) must
/// get the whole answer, relayed and merged, before the proxy closes the connection.
#[test]
fn connection_close_clients() {
    let [i1, i2]: [Influxd; 2] = influxds(2).try_into().ok().expect("two influxd");
    i1.write(DB, &points("cpu,host=a", "v", 3, 1.0));
    i2.write(DB, &points("mem,host=a", "v", 3, 1.0));
    let rig = Rig::start(
        config(&[("i1", &i1), ("i2", &i2)], &[("cpu", &["i1"]), ("mem", &["i2"]), ("_default_", &["i1"])]),
        &[],
    );
    let relayed = [("db", DB), ("q", "SELECT v FROM cpu WHERE time > 0")];
    let merged = [("db", DB), ("q", "SHOW MEASUREMENTS")];
    let want_relayed = query(&i1.addr(), Via::Get, &relayed);
    // Whether the answer completes before the connection is closed can depend on timing: try often.
    const TRIES: usize = 20;
    let mut failures = Vec::new();
    for (params, what) in [(&relayed, "relayed"), (&merged, "merged")] {
        let path = format!("/query?{}", http::query_string(params));
        let mut unanswered = [0, 0];
        for _ in 0..TRIES {
            let close = [("Connection", "close")];
            match http::try_request(&rig.addr(), "GET", &path, &close, b"", Duration::from_secs(10)) {
                Ok(r) if what == "relayed" => assert_relayed(&r, &want_relayed, "Connection: close"),
                Ok(r) => assert_eq!(series(&r)[0]["values"], serde_json::json!([["cpu"], ["mem"]])),
                Err(_) => unanswered[0] += 1,
            }
            let mut conn = HttpConn::connect(&rig.addr());
            conn.send_raw(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes());
            match conn.try_read_response() {
                Ok(r) => {
                    assert_eq!(r.status, 200, "{what} HTTP/1.0: {}", r.text());
                    assert!(r.json()["results"][0]["series"].is_array(), "{what} HTTP/1.0: {}", r.text());
                }
                Err(_) => unanswered[1] += 1,
            }
        }
        for (n, how) in unanswered.iter().zip(["with Connection: close", "over HTTP/1.0"]) {
            if *n > 0 {
                failures.push(format!("{n} of {TRIES} {what} queries {how} closed without an answer"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("; "));
}
