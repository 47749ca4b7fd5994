//! Which endpoint a request is for: path + method → `Route`. Pure: the worker calls the handler the
//! route names (`write`, `query`, `ops`), and the 404/405 answers are InfluxDB's own.

use crate::http::request::Method;
use crate::http::response::Response;

/// An endpoint, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Ping,
    Write,
    /// `/api/v2/write` (InfluxDB 1.8's v2 compatibility endpoint).
    WriteV2,
    /// `/api/v1/prom/write`, `/api/v1/prom/read`: Prometheus remote storage.
    PromWrite,
    PromRead,
    Query,
    Health,
    Metrics,
    Reload,
    /// `/repair`, `/rebalance`, `/jobs`, `/jobs/ID`: `jobs::handle` checks the method itself.
    Jobs,
    /// `OPTIONS` on an endpoint InfluxDB answers it for (`/write`, `/api/v2/write`, `/query`): a
    /// browser's preflight, 200 with no body (`http::cors`).
    Options,
    /// Known path, wrong method: 405 with these allowed methods.
    MethodNotAllowed {
        allow: &'static str,
    },
    NotFound,
}

impl Route {
    /// Endpoints that take the node's credentials when it has some.
    pub fn needs_auth(self) -> bool {
        matches!(
            self,
            Route::Write
                | Route::WriteV2
                | Route::PromWrite
                | Route::PromRead
                | Route::Query
                | Route::Reload
                | Route::Jobs
        )
    }

    /// An endpoint's answer, as opposed to the router's 404 and 405: InfluxDB puts its CORS headers on
    /// those only (`http::cors`).
    pub fn is_endpoint(self) -> bool {
        !matches!(self, Route::MethodNotAllowed { .. } | Route::NotFound)
    }

    /// Answers that do not depend on anything but the route.
    pub fn write_static(self, close: bool, out: &mut Vec<u8>) {
        match self {
            Route::Options => Response { close, ..Response::new(200) }.write_to(out),
            Route::MethodNotAllowed { allow } => Response {
                close,
                content_type: Some("text/plain; charset=utf-8"),
                headers: &[("Allow", allow), ("X-Content-Type-Options", "nosniff")],
                ..Response::new(405)
            }
            .with_body(b"Method Not Allowed\n", out),
            _ => Response { close, content_type: Some("text/plain; charset=utf-8"), ..Response::new(404) }
                .with_body(b"404 page not found\n", out),
        }
    }
}

/// The route of `method path`. A trailing slash is ignored (InfluxDB 1.6 answers 404 to `/write/`; no
/// client relies on that, and a path typed with one is not worth a refusal).
pub fn route(method: Method, path: &str) -> Route {
    let path = path.trim_end_matches('/');
    if method == Method::Options && matches!(path, "/write" | "/api/v2/write" | "/query") {
        return Route::Options;
    }
    let get = matches!(method, Method::Get | Method::Head);
    let post = method == Method::Post;
    let (ok, route, allow) = match path {
        "/ping" => (get, Route::Ping, "GET, HEAD"),
        "/write" => (post, Route::Write, "OPTIONS, POST"),
        "/api/v2/write" => (post, Route::WriteV2, "OPTIONS, POST"),
        "/api/v1/prom/write" => (post, Route::PromWrite, "POST"),
        "/api/v1/prom/read" => (post, Route::PromRead, "POST"),
        "/query" => (matches!(method, Method::Get | Method::Post), Route::Query, "OPTIONS, GET, POST"),
        "/health" => (get, Route::Health, "GET, HEAD"),
        "/metrics" => (get, Route::Metrics, "GET, HEAD"),
        "/reload" => (matches!(method, Method::Get | Method::Post), Route::Reload, "GET, POST"),
        p if crate::jobs::is_jobs_path(p) => return Route::Jobs,
        _ => return Route::NotFound,
    };
    if ok { route } else { Route::MethodNotAllowed { allow } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_methods() {
        use Method::*;
        assert_eq!(route(Get, "/ping"), Route::Ping);
        assert_eq!(route(Head, "/ping/"), Route::Ping);
        assert_eq!(route(Post, "/ping"), Route::MethodNotAllowed { allow: "GET, HEAD" });
        assert_eq!(route(Post, "/write"), Route::Write);
        assert_eq!(route(Get, "/write"), Route::MethodNotAllowed { allow: "OPTIONS, POST" });
        assert_eq!(route(Get, "/query"), Route::Query);
        assert_eq!(route(Post, "/query"), Route::Query);
        assert_eq!(route(Head, "/query"), Route::MethodNotAllowed { allow: "OPTIONS, GET, POST" });
        assert_eq!(route(Get, "/health"), Route::Health);
        assert_eq!(route(Head, "/metrics"), Route::Metrics);
        assert_eq!(route(Post, "/metrics"), Route::MethodNotAllowed { allow: "GET, HEAD" });
        assert_eq!(route(Post, "/reload"), Route::Reload);
        assert_eq!(route(Post, "/api/v2/write"), Route::WriteV2);
        assert_eq!(route(Get, "/api/v2/write"), Route::MethodNotAllowed { allow: "OPTIONS, POST" });
        assert_eq!(route(Post, "/api/v1/prom/write"), Route::PromWrite);
        assert_eq!(route(Post, "/api/v1/prom/read/"), Route::PromRead);
        assert_eq!(route(Get, "/api/v1/prom/read"), Route::MethodNotAllowed { allow: "POST" });
        assert_eq!(route(Post, "/repair"), Route::Jobs);
        assert_eq!(route(Delete, "/jobs/3"), Route::Jobs);
        assert_eq!(route(Get, "/nope"), Route::NotFound);
        assert_eq!(route(Options, "/write/"), Route::Options);
        assert_eq!(route(Options, "/query"), Route::Options);
        assert_eq!(route(Options, "/api/v2/write"), Route::Options);
        assert_eq!(route(Options, "/ping"), Route::MethodNotAllowed { allow: "GET, HEAD" });
        assert_eq!(route(Options, "/api/v1/prom/write"), Route::MethodNotAllowed { allow: "POST" });
        assert!(!Route::Options.needs_auth() && Route::Options.is_endpoint());
        assert!(!route(Get, "/write").is_endpoint() && !route(Get, "/nope").is_endpoint());
        assert_eq!(route(Get, "/"), Route::NotFound);
    }

    #[test]
    fn only_data_and_reload_need_credentials() {
        assert!(Route::Write.needs_auth() && Route::Query.needs_auth() && Route::Reload.needs_auth());
        assert!(Route::WriteV2.needs_auth() && Route::PromWrite.needs_auth() && Route::PromRead.needs_auth());
        assert!(Route::Jobs.needs_auth());
        assert!(!Route::Ping.needs_auth() && !Route::Health.needs_auth() && !Route::Metrics.needs_auth());
        assert!(!Route::NotFound.needs_auth());
    }

    #[test]
    fn static_answers() {
        let mut out = Vec::new();
        Route::NotFound.write_static(false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n") && text.ends_with("404 page not found\n"));
        let mut out = Vec::new();
        Route::MethodNotAllowed { allow: "GET, HEAD" }.write_static(true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 ") && text.contains("Allow: GET, HEAD\r\n"));
    }
}
