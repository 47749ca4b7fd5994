//! The job thread's blocking InfluxQL client: one request per connection to a backend, answers parsed
//! with `http::client`, statement errors surfaced as errors. Only the job thread uses it, so blocking
//! (bounded by the backend's `timeoutquery`) costs no worker anything.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::config::Backend;
use crate::http::client::{BodyReader, UpstreamRequest, parse_response_head};
use crate::http::params::encode;

/// Largest answer the job reads from one query; its queries are paged to stay far below.
const MAX_ANSWER_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// Connecting, sending or reading failed.
    Io(String),
    /// The backend answered, but not 200 with a JSON body.
    Http(u16, String),
    /// A statement of the query failed.
    Statement(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Io(e) => write!(f, "{e}"),
            QueryError::Http(s, body) => write!(f, "HTTP {s}: {body}"),
            QueryError::Statement(e) => write!(f, "{e}"),
        }
    }
}

/// Sends `q` to `backend` (database `db`, times in ns) and returns the first result's `series`.
/// `write`: POST (statements that change data) instead of GET.
pub fn query(backend: &Backend, db: &str, q: &str, write: bool) -> Result<Vec<Value>, QueryError> {
    let io = |e: std::io::Error| QueryError::Io(format!("backend {} ({}): {e}", backend.name, backend.url));
    let timeout = backend.timeout_query.max(Duration::from_secs(1));
    let mut stream =
        TcpStream::connect_timeout(&backend.addr, backend.timeout.max(Duration::from_millis(100))).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let params = format!("db={}&epoch=ns&q={}", encode(db), encode(q));
    let auth = backend.auth.as_ref().map(|a| crate::http::basic_auth(&a.username, &a.password));
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    // Statements that change data go in a POST body, as InfluxDB requires; reads in the URL.
    let request = if write {
        UpstreamRequest {
            headers: &headers,
            close: true,
            ..UpstreamRequest::post("/query", &backend.host, params.as_bytes())
        }
    } else {
        let request = UpstreamRequest::get("/query", &backend.host);
        UpstreamRequest { query: params.as_bytes(), headers: &headers[1..], close: true, ..request }
    };
    let mut req = Vec::with_capacity(params.len() + 256);
    request.write_to(&mut req);
    match &backend.tls {
        None => exchange(&mut stream, backend, &req),
        Some(tls) => {
            let conn = tls.connection().map_err(|e| {
                QueryError::Io(format!("backend {}: {}", backend.name, crate::net::tls::describe(&e, Some(&tls.trust))))
            })?;
            exchange(&mut rustls::StreamOwned::new(conn, stream), backend, &req)
        }
    }
}

/// Sends `req` and reads the answer (the whole body, bounded), over plain TCP or TLS.
fn exchange(stream: &mut (impl Read + Write), backend: &Backend, req: &[u8]) -> Result<Vec<Value>, QueryError> {
    let io = |e: std::io::Error| QueryError::Io(format!("backend {} ({}): {e}", backend.name, backend.url));
    stream.write_all(req).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut buf = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    let head = loop {
        let n = stream.read(&mut chunk).map_err(io)?;
        if n == 0 {
            return Err(QueryError::Io(format!("backend {}: closed before answering", backend.name)));
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_response_head(&buf) {
            Ok(Some(h)) => break h,
            Ok(None) => continue,
            Err(e) => return Err(QueryError::Io(e.to_string())),
        }
    };
    let mut reader = BodyReader::new(&head, false);
    let mut body = Vec::new();
    let mut pending: Vec<u8> = buf[head.len..].to_vec();
    loop {
        let used = reader.read(&pending, &mut body).map_err(|e| QueryError::Io(e.to_string()))?;
        pending.drain(..used);
        if reader.is_done() {
            break;
        }
        if body.len() > MAX_ANSWER_BYTES {
            return Err(QueryError::Io(format!(
                "backend {}: answer larger than {MAX_ANSWER_BYTES} bytes",
                backend.name
            )));
        }
        let n = stream.read(&mut chunk).map_err(io)?;
        if n == 0 {
            reader.eof().map_err(|e| QueryError::Io(e.to_string()))?;
            break;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&body);
    if head.status != 200 {
        return Err(QueryError::Http(head.status, text.chars().take(300).collect()));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        QueryError::Http(head.status, format!("answer is not JSON ({e}): {}", &text[..text.len().min(200)]))
    })?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(QueryError::Statement(e.to_string()));
    }
    let first = v.get("results").and_then(|r| r.get(0));
    if let Some(e) = first.and_then(|r| r.get("error")).and_then(Value::as_str) {
        return Err(QueryError::Statement(e.to_string()));
    }
    Ok(first.and_then(|r| r.get("series")).and_then(Value::as_array).cloned().unwrap_or_default())
}

/// Quotes an identifier for InfluxQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Quotes a string literal for InfluxQL.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The first column of every row of every series, as strings (SHOW ... answers).
pub fn first_column(series: &[Value]) -> Vec<String> {
    series
        .iter()
        .filter_map(|s| s.get("values").and_then(Value::as_array))
        .flatten()
        .filter_map(|row| row.get(0).and_then(Value::as_str).map(str::to_string))
        .collect()
}
