//! Regression tests, each named after a bug found by review or by the benchmarks, against the real proxy
//! (fake backends only for what a real influxd cannot do on demand).

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use util::http::{HttpConn, request};
use util::site::{FAST, Site, WAIT, fast_with};
use util::{Behavior, FakeBackend, ProxyConfig, free_port, wait_until};

fn body_of(lines: usize, tag: &str) -> String {
    (0..lines).map(|i| format!("big,tag={tag} field=\"{}\",n={i}i {}\n", "x".repeat(60), 1_700_000_000 + i)).collect()
}

/// A backend that reads request bodies slowly (so a big batch fills the proxy's socket buffer) and
/// answers 204, keeping connections alive. Returns its url and the body bytes of the writes it answered.
fn slow_reading_backend() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::BufRead;
    // A small receive buffer (inherited by accepted sockets) keeps the kernel from absorbing a whole
    // batch on its own.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(32 << 10).expect("rcvbuf");
    socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr").into()).expect("bind");
    socket.listen(16).expect("listen");
    let listener: std::net::TcpListener = socket.into();
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = std::io::BufReader::with_capacity(16 << 10, stream);
                loop {
                    let (mut line, mut length, mut post) = (String::new(), 0usize, None);
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        post.get_or_insert(line.starts_with("POST"));
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let body_len = length;
                    let mut chunk = vec![0u8; 64 << 10];
                    while length > 0 {
                        let n = length.min(chunk.len());
                        if reader.read_exact(&mut chunk[..n]).is_err() {
                            return;
                        }
                        length -= n;
                        // Reading slowly is this backend's whole point.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if writer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err() {
                        return;
                    }
                    if post == Some(true) {
                        count.fetch_add(body_len, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (url, answered)
}

/// A keep-alive connection to a backend only listened for reads once idle; a batch larger than the
/// socket buffer sent on it later waited for a writable event that never came, until `timeout`.
#[test]
fn a_reused_backend_connection_sends_batches_larger_than_the_socket_buffer() {
    let (url, answered) = slow_reading_backend();
    let fields = fast_with(&[("gzip", "0"), ("timeout", "30000"), ("maxrowlimit", "1000000")]);
    let site = Site::new(ProxyConfig::new().backend("s", &url, &fields).keymap("big", &["s"]), "reg-big");
    let _proxy = site.proxy(1, &[]);
    // ~4.5 MB per request: a 4 MiB batch (the byte cap) and the rest. A 4 MiB batch does not fit in
    // the proxy's socket send buffer while the backend reads slowly.
    let mut sent = 0;
    for round in 0..3 {
        let started = Instant::now();
        let body = body_of(45_000, &round.to_string());
        sent += body.len();
        let r = request(&site.addr(), "POST", "/write?db=db&precision=s", &[], body.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
        wait_until(Duration::from_secs(25), "the batches of this round", || {
            answered.load(std::sync::atomic::Ordering::SeqCst) >= sent
        });
        assert!(started.elapsed() < Duration::from_secs(10), "round {round} took {:?}", started.elapsed());
    }
}

/// A parked target whose retry failed with a 5xx kept its retry time in the past and was sent again at
/// once, thousands of times a second.
#[test]
fn a_parked_target_backs_off_when_its_retry_fails() {
    let fake = FakeBackend::start();
    fake.set_write(Behavior::respond(404, r#"{"error":"database not found: \"db\""}"#));
    let site = Site::new(ProxyConfig::new().backend("f", &fake.url(), FAST).keymap("m", &["f"]), "reg-park");
    let _proxy = site.proxy(1, &[]);
    let r = request(&site.addr(), "POST", "/write?db=db", &[], b"m v=1 1\n");
    assert_eq!(r.status, 204);
    wait_until(Duration::from_secs(5), "the first send", || !fake.requests_to("/write").is_empty());
    fake.set_write(Behavior::respond(503, r#"{"error":"overloaded"}"#));
    // Kept sleep: the rate of sends over a fixed time is the thing tested.
    std::thread::sleep(Duration::from_secs(2));
    let sends = fake.requests_to("/write").len();
    assert!(sends < 40, "{sends} sends in about 2 s: the parked target does not back off");
}

/// A query that fails at once (its only backend is down) used to re-enter the client's request loop
/// while the request buffer was lent out: pipelined requests behind it were misread.
#[test]
fn requests_pipelined_behind_a_query_that_fails_at_once_are_answered_in_order() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let fields = fast_with(&[("checkinterval", "60000")]);
    let site = Site::new(ProxyConfig::new().backend("d", &dead, &fields).keymap("_default_", &["d"]), "reg-pipe");
    let _proxy = site.proxy(1, &[]);
    let write_body = body_of(3000, "p");
    let mut raw = b"GET /query?db=db&q=SHOW+DATABASES HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    raw.extend(
        format!("POST /write?db=db HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", write_body.len()).bytes(),
    );
    raw.extend(write_body.bytes());
    raw.extend(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut conn = HttpConn::connect(&site.addr());
    conn.send_raw(&raw);
    let answers: Vec<_> = (0..3).map(|_| conn.read_response()).collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 204, 204], "{}", answers[0].text());
    // The merged SHOW had no healthy backend to ask: its result says so.
    assert!(answers[0].text().contains("no backend"), "{}", answers[0].text());
}

/// `timeoutquery` stopped applying once a backend's answer had started: a backend that stalled after
/// its head kept the client's and the backend's connections open forever.
#[test]
fn a_query_answer_that_stalls_after_its_head_is_given_up() {
    let fake = FakeBackend::start();
    fake.set_query(Behavior::HeadThenHang);
    let fields = fast_with(&[("timeoutquery", "500")]);
    let site = Site::new(ProxyConfig::new().backend("f", &fake.url(), &fields).keymap("cpu", &["f"]), "reg-stall");
    let _proxy = site.proxy(1, &[]);
    let mut stream = TcpStream::connect(site.addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
        .write_all(b"GET /query?db=db&q=SELECT+v+FROM+cpu+WHERE+time+%3E+0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert!(started.elapsed() < Duration::from_secs(5), "the stalled answer was held {:?}", started.elapsed());
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
}

/// An error answered before the body was read (413) was followed by an immediate close, which resets
/// the connection while the client still sends: the client saw a reset, not the 413.
#[test]
fn an_oversized_body_gets_its_413_not_a_reset() {
    let fake = FakeBackend::start();
    let site = Site::new(ProxyConfig::new().backend("f", &fake.url(), FAST).keymap("m", &["f"]), "reg-413");
    let _proxy = site.proxy(1, &["--max-body-bytes", "1000"]);
    for _ in 0..5 {
        let mut stream = TcpStream::connect(site.addr()).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let body = vec![b'x'; 4 << 20];
        let head = format!("POST /write?db=db HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
        let mut writer = stream.try_clone().expect("clone");
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(head.as_bytes());
            let _ = writer.write_all(&body);
        });
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        let _ = sender.join();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 413"), "got {:?}", text.chars().take(200).collect::<String>());
    }
}

/// A query task kept backend *indices* and resolved them against the worker's *current* config when it
/// failed over. Backends are sorted by name, so a reload during a slow query that adds a backend
/// sorting first shifted them: the failover went back to the failing backend instead of the other
/// replica. A task now owns the config snapshot it was planned with.
#[test]
fn a_reload_during_a_query_does_not_redirect_its_failover() {
    let slow = FakeBackend::start();
    slow.set_query(Behavior::delay(1500, Behavior::respond(500, r#"{"error":"slow and failing"}"#)));
    let good = FakeBackend::start();
    good.set_query(Behavior::respond(200, r#"{"results":[{"statement_id":0,"series":[{"name":"from_good"}]}]}"#));
    let newcomer = FakeBackend::start();
    newcomer.set_query(Behavior::respond(200, r#"{"results":[{"statement_id":0,"series":[{"name":"wrong"}]}]}"#));
    let before = ProxyConfig::new()
        .backend("b_slow", &slow.url(), FAST)
        .backend("c_good", &good.url(), FAST)
        .keymap("cpu", &["b_slow", "c_good"]);
    let site = Site::new(before.clone(), "reg-reload-query");
    let _proxy = site.proxy(1, &[]);
    let addr = site.addr();

    let in_flight = std::thread::spawn(move || {
        request(&addr, "GET", "/query?db=db&q=SELECT+v+FROM+cpu+WHERE+time+%3E+0", &[], b"")
    });
    wait_until(Duration::from_secs(5), "the query reaches b_slow", || !slow.requests_to("/query").is_empty());
    // a_new sorts before both: every index of the old config now names another backend.
    let after = before.backend("a_new", &newcomer.url(), FAST);
    util::site::with_node(after, site.port, &[]).write_to(&site.redis);
    let r = request(&site.addr(), "POST", "/reload", &[], b"");
    assert_eq!(r.status, 204, "reload: {}", r.text());

    let answer = in_flight.join().expect("query thread");
    assert_eq!(answer.status, 200, "the failover answered {}: {}", answer.status, answer.text());
    assert!(answer.text().contains("from_good"), "answered by the wrong backend: {}", answer.text());
    assert_eq!(slow.requests_to("/query").len(), 1, "the failing backend was asked again");
    assert!(newcomer.requests_to("/query").is_empty(), "a backend the query was not planned with was asked");
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 11 and 12 after the ')'; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU the proxy uses over `window` while nothing is asked of it.
fn idle_cpu(pid: u32, window: Duration) -> f64 {
    let before = cpu_seconds(pid);
    // Kept sleep: the window over which an idle proxy must stay idle.
    std::thread::sleep(window);
    cpu_seconds(pid) - before
}

/// With the fixed tick gone, a deadline that had passed but could not be acted on made a worker poll
/// with timeout 0 in a loop (100% CPU): a retry time left behind by a batch then dropped as bad data,
/// and a retry due while the health checker says the backend is down.
#[test]
fn an_outage_or_a_dropped_batch_does_not_spin_the_workers() {
    let fake = FakeBackend::start();
    let site = Site::new(ProxyConfig::new().backend("f", &fake.url(), FAST).keymap("m", &["f"]), "reg-spin");
    let proxy = site.proxy(1, &[]);
    let pid = proxy.pid().expect("proxy pid");
    let window = Duration::from_secs(2);

    fake.set_write(Behavior::respond(500, r#"{"error":"boom"}"#));
    assert_eq!(request(&site.addr(), "POST", "/write?db=db", &[], b"m v=1 1\n").status, 204);
    wait_until(WAIT, "the first attempt", || !fake.requests_to("/write").is_empty());
    fake.set_write(Behavior::respond(400, r#"{"error":"partial write: unable to parse 'm v=1 1': bad dropped=1"}"#));
    wait_until(WAIT, "the retry, answered 400", || fake.requests_to("/write").len() >= 2);
    let spent = idle_cpu(pid, window);
    assert!(spent < 0.3, "idle after a dropped batch, the proxy used {spent:.2} CPU-s in {window:?}");

    fake.set_write(Behavior::respond(500, r#"{"error":"boom"}"#));
    fake.set_ping(Behavior::respond(503, r#"{"error":"down"}"#));
    assert_eq!(request(&site.addr(), "POST", "/write?db=db", &[], b"m v=2 2\n").status, 204);
    wait_until(WAIT, "f marked down", || util::inspect::backend_health(&site.addr(), "f")["up"] == false);
    let spent = idle_cpu(pid, window);
    assert!(spent < 0.3, "with its backend down, the proxy used {spent:.2} CPU-s in {window:?}");

    // And the data still goes once the backend is back.
    fake.set_write(Behavior::Ok);
    fake.set_ping(Behavior::Ok);
    wait_until(WAIT, "m v=2 delivered", || fake.write_lines().iter().any(|l| l.starts_with("m v=2")));
}
