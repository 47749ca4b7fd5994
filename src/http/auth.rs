//! Client authentication, as InfluxDB 1.x accepts credentials: `u`/`p` parameters, HTTP Basic, or
//! `Authorization: Token user:password`. When the node has `username`/`password`, `/write`, `/query` and
//! `/reload` require them; `/ping`, `/health` and `/metrics` stay open.

use super::base64_decode;
use super::params::Params;
use super::request::Head;
use crate::config::Credentials;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials in any accepted form.
    Missing,
    Wrong,
}

impl AuthError {
    /// InfluxDB's messages.
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "unable to parse authentication credentials",
            AuthError::Wrong => "authorization failed",
        }
    }
}

/// InfluxDB's 401 answer.
pub fn write_unauthorized(out: &mut Vec<u8>, e: AuthError, close: bool) {
    let body = super::response::error_body(e.message());
    super::response::Response {
        close,
        headers: &[("Www-Authenticate", "Basic realm=\"InfluxDB\"")],
        ..super::response::Response::json(401, body.as_bytes())
    }
    .write_to(out);
}

/// The credentials a request presents, in InfluxDB's order of precedence.
pub fn presented(head: &Head, params: &Params) -> Option<(String, String)> {
    if let Some(u) = params.non_empty("u") {
        return Some((u.to_string(), params.get("p").unwrap_or("").to_string()));
    }
    let header = head.authorization.as_deref()?;
    let (scheme, rest) = header.split_once(' ')?;
    let pair = if scheme.eq_ignore_ascii_case("basic") {
        String::from_utf8(base64_decode(rest.trim())?).ok()?
    } else if scheme.eq_ignore_ascii_case("token") {
        rest.trim().to_string()
    } else {
        return None;
    };
    let (u, p) = pair.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

pub fn check(required: &Credentials, head: &Head, params: &Params) -> Result<(), AuthError> {
    let (u, p) = presented(head, params).ok_or(AuthError::Missing)?;
    // Both comparisons always run, in time independent of where the bytes differ.
    let ok = same(u.as_bytes(), required.username.as_bytes()) & same(p.as_bytes(), required.password.as_bytes());
    if ok { Ok(()) } else { Err(AuthError::Wrong) }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_head;

    fn head(auth: Option<&str>) -> Head {
        let h = match auth {
            Some(a) => format!("GET /query HTTP/1.1\r\nAuthorization: {a}\r\n\r\n"),
            None => "GET /query HTTP/1.1\r\n\r\n".to_string(),
        };
        parse_head(h.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn every_accepted_form() {
        let creds = Credentials { username: "admin".into(), password: "s3cret".into() };
        let none = Params::default();
        assert_eq!(check(&creds, &head(None), &Params::parse("u=admin&p=s3cret")), Ok(()));
        assert_eq!(check(&creds, &head(Some("Basic YWRtaW46czNjcmV0")), &none), Ok(()));
        assert_eq!(check(&creds, &head(Some("Token admin:s3cret")), &none), Ok(()));
        assert_eq!(check(&creds, &head(None), &none), Err(AuthError::Missing));
        assert_eq!(check(&creds, &head(Some("Bearer xyz")), &none), Err(AuthError::Missing));
        assert_eq!(check(&creds, &head(None), &Params::parse("u=admin&p=nope")), Err(AuthError::Wrong));
        assert_eq!(check(&creds, &head(Some("Token admin:s3cre")), &none), Err(AuthError::Wrong));
        assert_eq!(check(&creds, &head(Some("Basic !!!")), &none), Err(AuthError::Missing));
    }
}
