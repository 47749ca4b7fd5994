//! Writing responses to clients the way InfluxDB 1.x writes them: `X-Influxdb-Version` and
//! `X-Influxdb-Build` on every answer, a `Date` on every final one, errors as `{"error":"..."}` with
//! the message repeated in `X-Influxdb-Error`.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::defaults::INFLUXDB_VERSION;

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A response about to be appended to a connection's output buffer.
pub struct Response<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// Ask the client to close (and the caller closes after writing).
    pub close: bool,
    /// HEAD: headers as for GET but no body bytes.
    pub head_only: bool,
}

impl<'a> Response<'a> {
    pub fn new(status: u16) -> Self {
        Response { status, content_type: None, headers: &[], body: b"", close: false, head_only: false }
    }

    pub fn json(status: u16, body: &'a [u8]) -> Self {
        Response { content_type: Some("application/json"), body, ..Response::new(status) }
    }

    /// Writes the response with `body`.
    pub fn with_body(self, body: &[u8], out: &mut Vec<u8>) {
        Response { body, ..self }.write_to(out);
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nX-Influxdb-Build: OSS\r\nX-Influxdb-Version: {}\r\n",
            self.status,
            reason(self.status),
            INFLUXDB_VERSION
        );
        // As InfluxDB's (Go's) server, and as RFC 9110 asks of a server with a clock: not on 1xx.
        if self.status >= 200 {
            write_date(out);
        }
        if let Some(ct) = self.content_type {
            let _ = write!(out, "Content-Type: {ct}\r\n");
        }
        for (name, value) in self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        // 1xx and 204 carry no body and no length (RFC 9110 8.6).
        if self.status >= 200 && self.status != 204 {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only && self.status != 204 {
            out.extend_from_slice(self.body);
        }
    }
}

/// Appends the `Date` header of the current second. Made once a second per thread: answers come by
/// the hundred thousand a second.
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(secs, line)| {
        if *secs != now {
            *secs = now;
            *line = format!("Date: {}\r\n", http_date(now));
        }
        out.extend_from_slice(line.as_bytes());
    });
}

/// `secs` after the epoch as HTTP dates are written (IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::logger::civil_from_days(days as i64);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m as usize - 1) % 12],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `{"error":"msg"}` as InfluxDB writes it, with `X-Influxdb-Error`. A 503 tells the client when to
/// retry (`Retry-After: 1`); callers that know better use [`write_error_retry`].
pub fn write_error(out: &mut Vec<u8>, status: u16, msg: &str, close: bool) {
    write_error_retry(out, status, msg, close, (status == 503).then_some(1));
}

/// [`write_error`] with `Retry-After: secs` (client retry logic — Telegraf, Prometheus, the client
/// libraries — waits that long before the next attempt).
pub fn write_error_retry(out: &mut Vec<u8>, status: u16, msg: &str, close: bool, retry_after: Option<u64>) {
    let body = error_body(msg);
    let header_msg = header_safe(msg);
    let secs = retry_after.map(|s| s.to_string());
    let with_retry = [("X-Influxdb-Error", header_msg.as_str()), ("Retry-After", secs.as_deref().unwrap_or(""))];
    let headers = if secs.is_some() { &with_retry[..] } else { &with_retry[..1] };
    Response { close, headers, ..Response::json(status, body.as_bytes()) }.write_to(out);
}

pub fn error_body(msg: &str) -> String {
    let mut s = String::with_capacity(msg.len() + 14);
    s.push_str("{\"error\":");
    json_string(&mut s, msg);
    s.push_str("}\n");
    s
}

/// Appends `value` as a JSON string literal.
pub fn json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A header value cannot hold control characters; error messages may quote client bytes.
fn header_safe(msg: &str) -> String {
    let mut s: String = msg.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.len() > 1024 {
        let mut cut = 1024;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT"); // RFC 9110's example
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(http_date(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
        let mut out = Vec::new();
        Response::new(204).write_to(&mut out);
        Response::new(100).write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        let (final_answer, interim) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(final_answer.matches("\r\nDate: ").count(), 1, "{final_answer}");
        assert!(!interim.contains("Date"), "{interim}");
    }

    #[test]
    fn error_is_influx_json() {
        let mut out = Vec::new();
        write_error(&mut out, 404, "database not found: \"x\"", false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("X-Influxdb-Version: 1."));
        assert!(text.contains("X-Influxdb-Error: database not found: \"x\"\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"database not found: \\\"x\\\"\"}\n"));
        let body_len = "{\"error\":\"database not found: \\\"x\\\"\"}\n".len();
        assert!(text.contains(&format!("Content-Length: {body_len}\r\n")));
    }

    #[test]
    fn every_503_says_when_to_retry() {
        let mut out = Vec::new();
        write_error(&mut out, 503, "busy", false);
        assert!(String::from_utf8(out).unwrap().contains("\r\nRetry-After: 1\r\n"));
        let mut out = Vec::new();
        write_error_retry(&mut out, 503, "disk full", false, Some(8));
        assert!(String::from_utf8(out).unwrap().contains("\r\nRetry-After: 8\r\n"));
        let mut out = Vec::new();
        write_error(&mut out, 400, "bad", false);
        assert!(!String::from_utf8(out).unwrap().contains("Retry-After"));
    }

    #[test]
    fn no_content_has_no_length() {
        let mut out = Vec::new();
        Response::new(204).write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn control_bytes_never_reach_headers() {
        let mut out = Vec::new();
        write_error(&mut out, 400, "bad\r\nX-Evil: 1", true);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("\r\nX-Evil"));
        assert!(text.contains("Connection: close"));
        assert!(text.contains("\"bad\\r\\nX-Evil: 1\""));
    }
}
