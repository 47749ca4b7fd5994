//! `/api/v2/write`, the InfluxDB 1.8 compatibility endpoint that v2 clients (Telegraf's
//! `outputs.influxdb_v2`, the v2 client libraries) write to: its parameters are translated into `/write`
//! parameters, and the request then takes the `/write` path unchanged.
//!
//! As InfluxDB 1.8 does: `bucket` is `database/retention-policy` (`db` or `db/` for the default policy;
//! no database is a 404), `org` is accepted and ignored, `precision` is one of `ns`, `us`, `ms`, `s`
//! (anything else is a 400). Credentials come as `Authorization: Token user:password`, which `http::auth`
//! already accepts.

use crate::http::params::Params;
use crate::http::request::Head;
use crate::upstream::BackendState;
use crate::write::WriteResult;
use crate::write::handler::{WriteContext, respond, serve_with};

/// Handles one `/api/v2/write`: its parameters translated, the `/write` path.
pub fn serve(mut cx: WriteContext, head: &Head, raw: &[u8], close: bool, out: &mut Vec<u8>) {
    match translate(&Params::parse(&head.query)) {
        Ok(v1) => serve_with(&mut cx, head, &v1, raw, close, out),
        Err(e) => {
            BackendState::add(&cx.stats.write_requests, 1);
            respond(out, &WriteResult::error(e.status(), e.to_string()), close, cx.stats);
        }
    }
}

/// Why v2 parameters have no v1 equivalent: the status and InfluxDB 1.8's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Error {
    Precision(String),
    NoDatabase(String),
    EmptyDatabase(String),
}

impl V2Error {
    pub fn status(&self) -> u16 {
        match self {
            V2Error::Precision(_) => 400,
            V2Error::NoDatabase(_) | V2Error::EmptyDatabase(_) => 404,
        }
    }
}

impl std::fmt::Display for V2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            V2Error::Precision(p) => write!(f, "invalid precision {p:?} (use ns, us, ms or s)"),
            V2Error::NoDatabase(b) => {
                write!(f, "bucket name {b:?} is missing a slash; not in \"database/retention-policy\" format")
            }
            V2Error::EmptyDatabase(b) => write!(f, "bucket name {b:?} is in db/rp form but has an empty database"),
        }
    }
}

/// The `/write` parameters equivalent to a v2 write's: `db`, `rp`, `precision` from `bucket` and
/// `precision`; `u`/`p` and anything else kept as they are.
pub fn translate(v2: &Params) -> Result<Params, V2Error> {
    let precision = match v2.get("precision").unwrap_or("") {
        "" => None,
        "ns" => Some("ns"),
        "us" => Some("u"),
        "ms" => Some("ms"),
        "s" => Some("s"),
        other => return Err(V2Error::Precision(other.to_string())),
    };
    let bucket = v2.get("bucket").unwrap_or("");
    let (db, rp) = match bucket.split_once('/') {
        None if bucket.is_empty() => return Err(V2Error::NoDatabase(bucket.to_string())),
        None => (bucket, ""),
        Some(("", _)) => return Err(V2Error::EmptyDatabase(bucket.to_string())),
        Some((db, rp)) => (db, rp),
    };
    let mut v1 = Params::default();
    v1.0.push(("db".into(), db.into()));
    if !rp.is_empty() {
        v1.0.push(("rp".into(), rp.into()));
    }
    if let Some(p) = precision {
        v1.0.push(("precision".into(), p.into()));
    }
    let known = ["bucket", "org", "orgID", "precision", "db", "rp"];
    v1.0.extend(v2.0.iter().filter(|(k, _)| !known.contains(&k.as_str())).cloned());
    Ok(v1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(query: &str) -> Result<Vec<(String, String)>, (u16, String)> {
        translate(&Params::parse(query)).map(|p| p.0).map_err(|e| (e.status(), e.to_string()))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn bucket_forms() {
        assert_eq!(v1("bucket=telegraf&org=x"), Ok(pairs(&[("db", "telegraf")])));
        assert_eq!(v1("bucket=telegraf/"), Ok(pairs(&[("db", "telegraf")])));
        assert_eq!(v1("bucket=telegraf/autogen"), Ok(pairs(&[("db", "telegraf"), ("rp", "autogen")])));
        assert_eq!(v1("bucket=a/b/c"), Ok(pairs(&[("db", "a"), ("rp", "b/c")])));
        assert_eq!(v1("org=x&bucket=my%20db&u=admin&p=pw"), Ok(pairs(&[("db", "my db"), ("u", "admin"), ("p", "pw")])));
    }

    #[test]
    fn bucket_errors_are_influxdb_18s() {
        assert_eq!(
            v1("org=x"),
            Err((404, "bucket name \"\" is missing a slash; not in \"database/retention-policy\" format".into()))
        );
        assert_eq!(v1("bucket=").unwrap_err().0, 404);
        assert_eq!(
            v1("bucket=/autogen"),
            Err((404, "bucket name \"/autogen\" is in db/rp form but has an empty database".into()))
        );
    }

    #[test]
    fn precisions() {
        for (v2, v1p) in [("ns", "ns"), ("us", "u"), ("ms", "ms"), ("s", "s")] {
            let p = translate(&Params::parse(&format!("bucket=d&precision={v2}"))).unwrap();
            assert_eq!(p.get("precision"), Some(v1p));
        }
        assert_eq!(v1("bucket=d&precision=h"), Err((400, "invalid precision \"h\" (use ns, us, ms or s)".into())));
        assert_eq!(v1("bucket=d&precision=n").unwrap_err().0, 400);
    }
}
