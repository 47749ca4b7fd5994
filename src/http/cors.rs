//! Cross-origin requests as InfluxDB 1.x answers them, so that a web page (Grafana's "browser"
//! access, a dashboard of one's own) can read and write through the proxy as it does with InfluxDB:
//! a request carrying an `Origin` gets it back in `Access-Control-Allow-Origin`, with the methods and
//! headers a browser may use, on every answer of a known endpoint (401s and errors included; not on
//! 404 and 405, which InfluxDB's router gives without them); and `OPTIONS` on the write and query
//! endpoints, a browser's preflight, is answered 200 with no body and no credentials asked.
//!
//! Any origin is allowed, as InfluxDB allows it; no `Access-Control-Allow-Credentials` is sent, so a
//! browser never attaches cookies or its own HTTP authentication: a page must give credentials itself.

use crate::http::request::Head;
use crate::http::router::Route;

const ALLOW: &[u8] = b"Access-Control-Allow-Headers: Accept, Accept-Encoding, Authorization, Content-Length, \
Content-Type, X-CSRF-Token, X-HTTP-Method-Override\r\n\
Access-Control-Allow-Methods: DELETE, GET, OPTIONS, POST, PUT\r\n\
Access-Control-Expose-Headers: Date, X-InfluxDB-Version, X-InfluxDB-Build\r\n\
Access-Control-Allow-Origin: ";

/// The `Origin` the answer to `head`, going to `route`, must echo: the request's own, for an endpoint.
pub fn origin_to_echo(head: &Head, route: Route) -> Option<String> {
    head.origin.clone().filter(|_| route.is_endpoint())
}

/// Puts the CORS headers for `origin` right after the status line of the answer that starts at `at`
/// in `buf`. `false` (nothing changed) while no status line is complete there.
pub fn add_headers(buf: &mut Vec<u8>, at: usize, origin: &str) -> bool {
    let Some(line_end) = buf.get(at..).and_then(|answer| memchr::memmem::find(answer, b"\r\n")) else {
        return false;
    };
    let after = at + line_end + 2;
    let headers = ALLOW.iter().chain(origin.as_bytes()).chain(b"\r\n");
    buf.splice(after..after, headers.copied());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_go_after_the_status_line_of_the_answer_at_hand() {
        let earlier = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
        let mut buf = earlier.clone();
        assert!(!add_headers(&mut buf, earlier.len(), "http://a"), "no answer there yet");
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert!(add_headers(&mut buf, earlier.len(), "http://a"));
        let text = String::from_utf8(buf).unwrap();
        let (before, answer) = text.split_at(earlier.len());
        assert_eq!(before.as_bytes(), earlier, "the answer before is untouched");
        let lines: Vec<&str> = answer.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 200 OK");
        assert!(lines[1].starts_with("Access-Control-Allow-Headers: Accept, "));
        assert_eq!(lines[2], "Access-Control-Allow-Methods: DELETE, GET, OPTIONS, POST, PUT");
        assert_eq!(lines[3], "Access-Control-Expose-Headers: Date, X-InfluxDB-Version, X-InfluxDB-Build");
        assert_eq!(lines[4], "Access-Control-Allow-Origin: http://a");
        assert_eq!(&lines[5..], ["Content-Length: 2", "", "ok"]);
    }
}
