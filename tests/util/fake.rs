//! A scriptable fake InfluxDB HTTP server, for the failures a real influxd cannot
//! produce on demand: error statuses, hangs, connection resets and slow answers. It
//! records every request it receives.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::site::WAIT;
use super::{free_port, http, wait_until};

/// What the fake does with a request once it has read it whole.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// 204 for /write and /ping, 200 `{"results":[{"statement_id":0}]}` for /query.
    Ok,
    /// `body` is sent as JSON; from 400 on, its "error" also goes in `X-Influxdb-Error`.
    Respond { status: u16, body: String },
    /// Never answer, keep the connection open.
    Hang,
    /// Close with SO_LINGER 0, so the client sees a connection reset.
    Reset,
    /// Send a 200 head announcing a chunked body and the first chunk, then stall (socket kept open).
    HeadThenHang,
    /// Wait this many milliseconds, then behave as told.
    Delay(u64, Box<Behavior>),
}

impl Behavior {
    pub fn respond(status: u16, body: impl Into<String>) -> Behavior {
        Behavior::Respond { status, body: body.into() }
    }

    pub fn delay(ms: u64, then: Behavior) -> Behavior {
        Behavior::Delay(ms, Box::new(then))
    }
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Percent-decoded.
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// Gunzipped if the request had `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// The body as it came on the wire.
    pub raw: Vec<u8>,
    /// Which connection it came on (numbered in accept order), to see connection reuse.
    pub conn: u64,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        http::find_header(&self.headers, name)
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone, Copy)]
enum Route {
    Write,
    Query,
    Ping,
    Other,
}

impl Route {
    fn of(path: &str) -> Route {
        match path {
            "/write" => Route::Write,
            "/query" => Route::Query,
            "/ping" => Route::Ping,
            _ => Route::Other,
        }
    }
}

struct Shared {
    /// For /write, /query and /ping.
    behaviors: Mutex<[Behavior; 3]>,
    requests: Mutex<Vec<Recorded>>,
    /// A handle on every open connection, so `stop` can shut them all down.
    conns: Mutex<HashMap<u64, TcpStream>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    stopping: AtomicBool,
    /// Close the connection of the next `/query` request without answering it (once).
    drop_next_query: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct FakeBackend {
    shared: Arc<Shared>,
    port: u16,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl FakeBackend {
    pub fn start() -> FakeBackend {
        let shared = Arc::new(Shared {
            behaviors: Mutex::new([Behavior::Ok, Behavior::Ok, Behavior::Ok]),
            requests: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
            workers: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            drop_next_query: AtomicBool::new(false),
        });
        let (listener, port) = (0..20)
            .find_map(|_| {
                let port = free_port();
                TcpListener::bind(("127.0.0.1", port)).ok().map(|l| (l, port))
            })
            .expect("fake backend: no port could be bound");
        let fake = FakeBackend { shared, port, acceptor: Mutex::new(None) };
        fake.serve(listener);
        fake
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(listener, shared));
        *lock(&self.acceptor) = Some(acceptor);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The same behaviour for /write, /query and /ping.
    pub fn set(&self, behavior: Behavior) {
        *lock(&self.shared.behaviors) = [behavior.clone(), behavior.clone(), behavior];
    }

    pub fn set_write(&self, behavior: Behavior) {
        lock(&self.shared.behaviors)[Route::Write as usize] = behavior;
    }

    pub fn set_query(&self, behavior: Behavior) {
        lock(&self.shared.behaviors)[Route::Query as usize] = behavior;
    }

    /// The next `/query` request (only that one) has its connection closed without an answer: what a
    /// client sees when a backend closes an idle keep-alive connection just as it is reused.
    pub fn drop_next_query(&self) {
        self.shared.drop_next_query.store(true, Ordering::SeqCst);
    }

    pub fn set_ping(&self, behavior: Behavior) {
        lock(&self.shared.behaviors)[Route::Ping as usize] = behavior;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        lock(&self.shared.requests).iter().filter(|r| r.path == path).cloned().collect()
    }

    /// The non-empty lines of all /write bodies, in arrival order.
    pub fn write_lines(&self) -> Vec<String> {
        let writes = self.requests_to("/write");
        let lines = writes.iter().flat_map(|r| r.text().lines().map(String::from).collect::<Vec<_>>());
        lines.filter(|l| !l.trim().is_empty()).collect()
    }

    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Closes the listener and every connection; requests in progress are abandoned.
    pub fn stop(&self) {
        let Some(acceptor) = lock(&self.acceptor).take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the acceptor sees `stopping` and drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = acceptor.join();
        for (_, conn) in lock(&self.shared.conns).drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        let workers: Vec<_> = lock(&self.shared.workers).drain(..).collect();
        for worker in workers {
            let _ = worker.join();
        }
        self.shared.stopping.store(false, Ordering::SeqCst);
    }

    /// Listens again on the same port after `stop`, keeping behaviours and records.
    pub fn start_again(&self) {
        self.stop();
        // Sockets of the old listener can take a moment to go away (a peer still holding a connection
        // it is being reset on): retry for a bounded time.
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline && e.kind() == io::ErrorKind::AddrInUse => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("fake backend cannot bind port {} again: {e}", self.port),
            }
        };
        self.serve(listener);
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for (id, incoming) in (0u64..).zip(listener.incoming()) {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = incoming else {
            std::thread::sleep(Duration::from_millis(10)); // e.g. out of file descriptors
            continue;
        };
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        lock(&shared.conns).insert(id, handle);
        let worker_shared = shared.clone();
        let worker = std::thread::spawn(move || serve_connection(&worker_shared, id, stream));
        let mut workers = lock(&shared.workers);
        workers.retain(|w| !w.is_finished());
        workers.push(worker);
    }
}

enum Next {
    KeepAlive,
    Close,
    Reset,
}

fn serve_connection(shared: &Shared, id: u64, stream: TcpStream) {
    let mut reader = BufReader::new(&stream);
    let ending = loop {
        let (mut recorded, close) = match read_request(&mut reader, &stream) {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => break Next::Close,
        };
        recorded.conn = id;
        let route = Route::of(&recorded.path);
        if matches!(route, Route::Query) && shared.drop_next_query.swap(false, Ordering::SeqCst) {
            lock(&shared.requests).push(recorded);
            break Next::Close;
        }
        let behavior = match route {
            Route::Other => Behavior::Ok,
            route => lock(&shared.behaviors)[route as usize].clone(),
        };
        let head_only = recorded.method == "HEAD";
        lock(&shared.requests).push(recorded);
        match act(shared, &behavior, route, &stream, &mut reader, head_only, close) {
            Next::KeepAlive if !close => continue,
            Next::KeepAlive => break Next::Close,
            other => break other,
        }
    };
    drop(reader);
    // A reset needs the last descriptor of the socket closed with SO_LINGER 0, so the
    // registry's handle must go first.
    lock(&shared.conns).remove(&id);
    if let Next::Reset = ending {
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        let size = std::mem::size_of::<libc::linger>() as libc::socklen_t;
        let linger_ptr = (&linger as *const libc::linger).cast();
        // SAFETY: `linger_ptr` points to `linger`, a live local of exactly `size` bytes that
        // setsockopt only reads; the descriptor belongs to `stream`, which is open for the call.
        unsafe { libc::setsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, linger_ptr, size) };
    }
}

fn act(
    shared: &Shared,
    behavior: &Behavior,
    route: Route,
    mut stream: &TcpStream,
    reader: &mut impl BufRead,
    head_only: bool,
    close: bool,
) -> Next {
    let (status, body) = match behavior {
        Behavior::Ok => match route {
            Route::Write | Route::Ping => (204, ""),
            Route::Query => (200, "{\"results\":[{\"statement_id\":0}]}\n"),
            Route::Other => (404, "{\"error\":\"not found\"}\n"),
        },
        Behavior::Respond { status, body } => (*status, body.as_str()),
        Behavior::HeadThenHang => {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
                  e\r\n{\"results\":[]}\r\n",
            );
            let _ = io::copy(reader, &mut io::sink());
            return Next::Close;
        }
        Behavior::Hang => {
            // Consume whatever else comes until the peer or `stop` closes the socket.
            let _ = io::copy(reader, &mut io::sink());
            return Next::Close;
        }
        Behavior::Reset => return Next::Reset,
        Behavior::Delay(ms, then) => {
            let until = Instant::now() + Duration::from_millis(*ms);
            while Instant::now() < until {
                if shared.stopping.load(Ordering::SeqCst) {
                    return Next::Close;
                }
                std::thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(10)));
            }
            return act(shared, then, route, stream, reader, head_only, close);
        }
    };
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    head += "Content-Type: application/json\r\nX-Influxdb-Version: 1.6.7\r\nX-Influxdb-Build: OSS\r\n";
    if status >= 400 {
        head += &format!("X-Influxdb-Error: {}\r\n", error_message(body));
    }
    if close {
        head += "Connection: close\r\n";
    }
    let has_body = status != 204 && status != 304 && status >= 200;
    if has_body {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    head += "\r\n";
    if has_body && !head_only {
        head += body;
    }
    match stream.write_all(head.as_bytes()) {
        Ok(()) => Next::KeepAlive,
        Err(_) => Next::Close,
    }
}

/// A whole request, and whether the connection is to be closed after answering it.
/// `Ok(None)` when the client closed the connection between requests.
fn read_request(reader: &mut impl BufRead, mut stream: &TcpStream) -> io::Result<Option<(Recorded, bool)>> {
    let line = match http::read_line(reader) {
        Ok(line) => line,
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m.to_string(), t.to_string(), v.to_string()),
        _ => {
            return Err(io::Error::new(ErrorKind::InvalidData, format!("bad request line {line:?}")));
        }
    };
    let headers = http::read_headers(reader)?;
    let has = |name: &str, value: &str| {
        http::find_header(&headers, name).is_some_and(|v| v.to_ascii_lowercase().contains(value))
    };
    if has("expect", "100-continue") {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let raw = http::read_body(reader, &headers, false)?;
    let body = if has("content-encoding", "gzip") { http::try_gunzip(&raw) } else { None };
    let body = body.unwrap_or_else(|| raw.clone());
    let close = has("connection", "close") || (version == "HTTP/1.0" && !has("connection", "keep-alive"));
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (path, query) = (path.to_string(), http::parse_query(query));
    Ok(Some((Recorded { method, path, query, headers, body, raw, conn: 0 }, close)))
}

fn error_message(body: &str) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = json.as_ref().and_then(|j| j["error"].as_str()).unwrap_or(body);
    error.replace(['\r', '\n'], " ").trim().to_string()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Lines of measurement `m` that `fake` received in /write bodies.
pub fn lines_of(fake: &FakeBackend, m: &str) -> Vec<String> {
    fake.write_lines()
        .into_iter()
        .filter(|l| l.starts_with(&format!("{m},")) || l.starts_with(&format!("{m} ")))
        .collect()
}

/// Waits until `fake` holds `want` lines of `m`, then checks it holds no more.
pub fn wait_lines(fake: &FakeBackend, m: &str, want: usize, who: &str) {
    wait_until(WAIT, &format!("{want} {m} lines on {who}"), || lines_of(fake, m).len() >= want);
    let got = lines_of(fake, m);
    assert_eq!(got.len(), want, "{m} lines on {who}: more than written: {got:?}");
}
