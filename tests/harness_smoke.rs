//! Checks the test harness itself against redis-server, influxd and the fake backend,
//! without the proxy.

mod util;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use util::http::{self, HttpConn};
use util::{Behavior, FakeBackend, Influxd, ProxyConfig, Redis, free_port, wait_until};

fn hgetall(conn: &mut redis::Connection, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query(conn).expect("HGETALL")
}

fn lrange(conn: &mut redis::Connection, key: &str) -> Vec<String> {
    redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(conn).expect("LRANGE")
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn redis_holds_proxy_config_and_restarts() {
    let mut redis = Redis::start();
    let mut conn = redis.conn();
    redis::cmd("HSET").arg("b:stale").arg("url").arg("http://x").exec(&mut conn).unwrap();
    redis::cmd("SET").arg("unrelated").arg("kept").exec(&mut conn).unwrap();

    let listen = format!("127.0.0.1:{}", free_port());
    ProxyConfig::new()
        .backend("b1", "http://127.0.0.1:1", &[("db", "db1"), ("zone", "z1")])
        .backend("b2", "http://127.0.0.1:2", &[("db", "db1")])
        .keymap("cpu", &["b1", "b2"])
        .keymap("mem", &["b2"])
        .node("n1", &[("listenaddr", &listen), ("db", "db1")])
        .default_node(&[("listenaddr", &listen)])
        .write_to(&redis);

    let b1 = map(&[("url", "http://127.0.0.1:1"), ("db", "db1"), ("zone", "z1")]);
    assert_eq!(hgetall(&mut conn, "b:b1"), b1);
    assert_eq!(hgetall(&mut conn, "n:n1"), map(&[("listenaddr", &listen), ("db", "db1")]));
    assert_eq!(hgetall(&mut conn, "default_node"), map(&[("listenaddr", &listen)]));
    assert_eq!(lrange(&mut conn, "m:cpu"), ["b1", "b2"]);
    assert_eq!(lrange(&mut conn, "m:mem"), ["b2"]);
    assert!(hgetall(&mut conn, "b:stale").is_empty(), "stale backend key not removed");

    // Writing a new config replaces the whole previous one.
    ProxyConfig::new().backend("b3", "http://127.0.0.1:3", &[]).keymap("cpu", &["b3"]).write_to(&redis);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.sort();
    assert_eq!(keys, ["b:b3", "m:cpu", "unrelated"]);

    redis.stop();
    assert!(TcpStream::connect(redis.addr()).is_err(), "redis port still open after stop");
    redis.start_again();
    let mut conn = redis.conn();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
    let size: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(size, 0);
}

#[test]
fn influxd_write_query_and_restart() {
    let mut a = Influxd::start();
    let mut b = Influxd::start_with(|cfg| util::set_toml(cfg, "http", "max-row-limit", "10000"));
    assert_ne!(a.port(), b.port());
    for (influxd, host) in [(&a, "a"), (&b, "b")] {
        influxd.create_db("db1");
        let lines = format!(
            "cpu,host={host} usage=1,idle=9 1000000000\ncpu,host={host} usage=2 2000000000\ncpu,host={host} usage=3 3000000000"
        );
        influxd.write("db1", &lines);
        assert_eq!(influxd.count("db1", "cpu"), 3);
        assert_eq!(influxd.count_field("db1", "cpu", "idle"), 1);
        assert_eq!(influxd.count("db1", "absent"), 0);
        let rows = influxd.values("db1", "SELECT usage, host FROM cpu");
        let times: Vec<u64> = rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
        assert_eq!(times, [1_000_000_000, 2_000_000_000, 3_000_000_000]);
        assert_eq!(rows[2][1], 3);
        assert_eq!(rows[0][2], host);
        assert!(influxd.values("db1", "SELECT * FROM absent").is_empty());
    }

    // A chunked query answer exercises the client's chunked decoding.
    let q = http::query_string(&[("db", "db1"), ("q", "SELECT * FROM cpu"), ("chunked", "true")]);
    let response = http::get(&a.url(), &format!("/query?{q}"));
    assert_eq!(response.status, 200);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.json()["results"][0]["series"][0]["values"].as_array().unwrap().len(), 3);

    a.stop();
    assert!(!a.is_running());
    assert!(TcpStream::connect(a.addr()).is_err(), "influxd port still open after stop");
    a.start_again();
    assert_eq!(a.count("db1", "cpu"), 3, "data lost over a clean restart");
    b.kill();
    b.start_again();
    assert_eq!(b.count("db1", "cpu"), 3, "data lost over SIGKILL (WAL replay)");
}

#[test]
fn fake_backend_behaviours_and_recording() {
    let fake = FakeBackend::start();
    let addr = fake.addr();

    let ping = http::get(&addr, "/ping");
    assert_eq!(ping.status, 204);
    assert_eq!(ping.header("x-influxdb-version"), Some("1.6.7"));
    let query = http::get(&fake.url(), &format!("/query?{}", http::query_string(&[("q", "SHOW DATABASES")])));
    assert_eq!(query.json(), serde_json::json!({"results": [{"statement_id": 0}]}));

    let lines = "cpu,host=a usage=1 1\ncpu,host=b usage=2 2\n";
    let gzipped = http::gzip(lines.as_bytes());
    assert_eq!(http::gunzip(&gzipped), lines.as_bytes());
    let headers = [("Content-Encoding", "gzip")];
    let write = http::request(&addr, "POST", "/write?db=my%20db&precision=s&rp=a+b", &headers, &gzipped);
    assert_eq!(write.status, 204);
    let recorded = fake.requests_to("/write").pop().expect("write not recorded");
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.param("db"), Some("my db"));
    assert_eq!(recorded.param("rp"), Some("a b"));
    assert_eq!(recorded.header("content-encoding"), Some("gzip"));
    assert_eq!(recorded.text(), lines);
    assert_eq!(fake.write_lines(), ["cpu,host=a usage=1 1", "cpu,host=b usage=2 2"]);
    assert_eq!(fake.requests().len(), 3);

    fake.set_write(Behavior::respond(500, r#"{"error":"engine: boom"}"#));
    let failed = http::post(&addr, "/write?db=x", b"m f=1");
    assert_eq!(failed.status, 500);
    assert_eq!(failed.header("X-Influxdb-Error"), Some("engine: boom"));
    assert_eq!(failed.json()["error"], "engine: boom");
    assert_eq!(http::get(&addr, "/ping").status, 204, "set_write must not affect /ping");

    fake.set_query(Behavior::Hang);
    let started = Instant::now();
    let hung = http::try_request(&addr, "GET", "/query?q=x", &[], b"", Duration::from_millis(300));
    let kind = hung.expect_err("a hanging backend answered").kind();
    assert!(matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut), "{kind:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_until(Duration::from_secs(5), "hung query recorded", || fake.requests_to("/query").len() == 2);

    fake.set_write(Behavior::Reset);
    let reset = http::try_request(&addr, "POST", "/write?db=x", &[], b"m f=1", Duration::from_secs(5));
    assert_eq!(reset.expect_err("a resetting backend answered").kind(), ErrorKind::ConnectionReset);

    fake.set(Behavior::delay(150, Behavior::Ok));
    let started = Instant::now();
    assert_eq!(http::get(&addr, "/ping").status, 204);
    assert!(started.elapsed() >= Duration::from_millis(150));

    // Keep-alive, pipelining, chunked request bodies and Expect: 100-continue.
    fake.set(Behavior::Ok);
    fake.clear();
    let mut conn = HttpConn::connect(&addr);
    let body = http::chunked(&[b"m,t=1 f=1 1\n", b"m,t=2 f=2 2"]);
    let mut pipelined = b"POST /write?db=c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    pipelined.extend_from_slice(&body);
    pipelined.extend_from_slice(b"GET /query?q=SHOW+DATABASES HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.send_raw(&pipelined);
    assert_eq!(conn.read_response().status, 204);
    assert_eq!(conn.read_response().status, 200);
    conn.send("POST", "/write?db=c", &[("Expect", "100-continue")], b"m f=3 3");
    assert_eq!(conn.read_response().status, 100);
    assert_eq!(conn.read_response().status, 204);
    conn.send("HEAD", "/query", &[], b"");
    let head = conn.read_response();
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(fake.write_lines(), ["m,t=1 f=1 1", "m,t=2 f=2 2", "m f=3 3"]);
    assert_eq!(fake.requests()[1].param("q"), Some("SHOW DATABASES"));
    conn.send("GET", "/ping", &[("Connection", "close")], b"");
    assert_eq!(conn.read_response().status, 204);
    assert!(conn.closed_by_peer(Duration::from_secs(5)));

    // A hanging connection must not keep stop() from returning.
    fake.set(Behavior::Hang);
    let mut idle = HttpConn::connect(&addr);
    idle.send("GET", "/ping", &[], b"");
    wait_until(Duration::from_secs(5), "hanging ping recorded", || fake.requests_to("/ping").len() == 2);
    fake.stop();
    assert!(idle.closed_by_peer(Duration::from_secs(5)));
    assert!(TcpStream::connect(&addr).is_err(), "fake backend still listening after stop");
    fake.set(Behavior::Ok);
    fake.start_again();
    assert_eq!(http::get(&addr, "/ping").status, 204);
}
