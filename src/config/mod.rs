//! The validated configuration snapshot every worker routes with, and the rules that turn the stored
//! string maps (`RawConfig`) into it.
//!
//! A snapshot is immutable and shared as `Arc<Config>`; a change builds a whole new one. Building never
//! half-succeeds: any bad value is an error naming the key and field, and the caller keeps the previous
//! snapshot. Unknown fields are tolerated (listed in `warnings`) so configs written for the original
//! proxy, or for a newer version of this one, keep working.
//!
//! TLS settings (`net::tls`) are part of the snapshot: certificate files are read while building it, so
//! a broken certificate fails the build like any bad value, and a snapshot remembers the files it read
//! (`tls_files_changed`) so that a new certificate on disk is a reason to rebuild.

pub mod poller;
pub mod raw;
pub mod source;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::defaults::*;
use crate::net::tls::{ClientTls, ServerTls};
use crate::query::filter::Policy;
use crate::upstream::{BackendState, Registry};
use crate::write::route::Routes;
pub use raw::{Fields, RawConfig};

pub const NODE_FIELDS: &[&str] = &[
    "listenaddr",
    "db",
    "zone",
    "nexts",
    "interval",
    "idletimeout",
    "writetracing",
    "querytracing",
    "username",
    "password",
    "querydeny",
    "queryallow",
    "tlscert",
    "tlskey",
    "tlsclientca",
];

pub const BACKEND_FIELDS: &[&str] = &[
    "url",
    "db",
    "zone",
    "interval",
    "timeout",
    "timeoutquery",
    "maxrowlimit",
    "checkinterval",
    "rewriteinterval",
    "writeonly",
    "gzip",
    "maxdisk",
    "username",
    "password",
    "tlsca",
    "tlsinsecure",
];

/// The catch-all keymap.
pub const DEFAULT_KEY: &str = "_default_";

#[derive(Debug)]
pub struct Config {
    pub raw: RawConfig,
    pub node: Node,
    /// Sorted by name; routes refer to backends by index in this list.
    pub backends: Vec<Arc<Backend>>,
    pub routes: Routes,
    pub warnings: Vec<String>,
    pub loaded_at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub listen_addr: SocketAddr,
    /// As configured, to tell a change that needs a restart.
    pub listen_raw: String,
    /// Clients must use this database when set.
    pub db: Option<String>,
    pub zone: String,
    /// Backends (indices) that get every line.
    pub nexts: Vec<usize>,
    /// Self-statistics period; `None` = off.
    pub stats_interval: Option<Duration>,
    pub idle_timeout: Duration,
    pub write_tracing: bool,
    pub query_tracing: bool,
    pub policy: Policy,
    /// Credentials clients must present, when set.
    pub auth: Option<Credentials>,
    /// `tlscert` + `tlskey` (+ `tlsclientca`): the listener serves https to connections accepted
    /// under this snapshot.
    pub tls: Option<Arc<ServerTls>>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Passwords never reach logs, not even debug ones.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ****)", self.username)
    }
}

#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub url: String,
    pub addr: SocketAddr,
    /// An https url: how to talk TLS to it (trust, server name, session cache).
    pub tls: Option<Arc<ClientTls>>,
    /// `Host` header value for requests to it.
    pub host: String,
    /// Database written to whatever the client said, when set.
    pub db: Option<String>,
    pub zone: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub timeout_query: Duration,
    pub max_row_limit: usize,
    pub check_interval: Duration,
    pub rewrite_interval: Duration,
    pub write_only: bool,
    /// libdeflate level for batches, 0 = off.
    pub gzip: u32,
    pub max_disk: u64,
    pub auth: Option<Credentials>,
    /// Health, counters and disk use, shared by every snapshot that has this backend.
    pub state: Arc<BackendState>,
    /// The fields as configured, kept next to the backend's logs so that data left for it can still be
    /// delivered (with its credentials) after it leaves the config.
    pub fields: StoredFields,
}

/// Raw backend fields; `Debug` does not print them (they may hold a password).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredFields(pub Fields);

impl std::fmt::Debug for StoredFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredFields(..)")
    }
}

impl Backend {
    /// Two backends are the same (keep outbox, logs and connections across a reload) when name and url
    /// are the same.
    pub fn same_identity(&self, other: &Backend) -> bool {
        self.name == other.name && self.url == other.url
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl Config {
    /// Validates `raw` for node `node_name`. Backend states come from `registry`, so a backend that
    /// survives a reload keeps its counters and health.
    pub fn build(raw: RawConfig, node_name: &str, registry: &Registry) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();

        let mut backends = Vec::with_capacity(raw.backends.len());
        for (name, fields) in &raw.backends {
            warn_unknown(&mut warnings, &format!("b:{name}"), fields, BACKEND_FIELDS);
            let backend = build_backend(name, fields, registry)?;
            tls_warnings(&mut warnings, &backend);
            backends.push(Arc::new(backend));
        }
        if backends.is_empty() {
            // An empty Redis (restarted without persistence, flushed) must not wipe a working config.
            return err("the config has no backends (no b:<name> keys: is Redis empty?)");
        }
        if backends.len() > usize::from(u16::MAX) {
            return err("too many backends");
        }
        let index_of = |what: &str, name: &str| -> Result<usize, ConfigError> {
            let name = name.trim();
            backends
                .iter()
                .position(|b| b.name == name)
                .ok_or_else(|| ConfigError(format!("{what} names backend {name:?}, which has no b:{name} hash")))
        };

        let mut fields = raw.default_node.clone();
        match raw.nodes.get(node_name) {
            Some(own) => fields.extend(own.clone()),
            None => warnings.push(format!("no n:{node_name} hash: node {node_name:?} uses default_node only")),
        }
        warn_unknown(&mut warnings, &format!("n:{node_name}"), &fields, NODE_FIELDS);
        let what = format!("n:{node_name}");
        let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());

        let listen_raw = get("listenaddr").unwrap_or(DEFAULT_LISTEN_ADDR).to_string();
        let listen_addr = resolve_listen(&listen_raw).map_err(|e| ConfigError(format!("{what}: listenaddr: {e}")))?;
        let mut nexts = Vec::new();
        for name in get("nexts").unwrap_or("").split(',').filter(|n| !n.trim().is_empty()) {
            let i = index_of(&format!("{what} field nexts"), name)?;
            if !nexts.contains(&i) {
                nexts.push(i);
            }
        }
        let stats = seconds(&what, "interval", get("interval"), DEFAULT_NODE_INTERVAL_S)?;
        let policy =
            Policy::from_lists(get("querydeny"), get("queryallow")).map_err(|e| ConfigError(format!("{what}: {e}")))?;
        let node = Node {
            name: node_name.to_string(),
            listen_addr,
            listen_raw,
            db: get("db").map(str::to_string),
            zone: get("zone").unwrap_or("").to_string(),
            nexts,
            stats_interval: (!stats.is_zero()).then_some(stats),
            idle_timeout: seconds(&what, "idletimeout", get("idletimeout"), DEFAULT_IDLE_TIMEOUT_S)?,
            write_tracing: flag(&what, "writetracing", get("writetracing"))?,
            query_tracing: flag(&what, "querytracing", get("querytracing"))?,
            policy,
            auth: credentials(&what, get("username"), get("password"))?,
            tls: server_tls(&what, &fields)?,
        };

        let mut keymaps = Vec::with_capacity(raw.keymaps.len());
        for (measurement, names) in &raw.keymaps {
            let what = format!("m:{measurement}");
            if names.is_empty() {
                return err(format!("{what} lists no backends"));
            }
            let mut set = Vec::with_capacity(names.len());
            for name in names {
                let i = index_of(&what, name)?;
                if !set.contains(&i) {
                    set.push(i);
                }
            }
            keymaps.push((measurement.as_bytes(), set));
        }
        let routes = Routes::build(&keymaps, DEFAULT_KEY.as_bytes(), &node.nexts);

        Ok(Config { raw, node, backends, routes, warnings, loaded_at: SystemTime::now() })
    }

    /// A backend that left the config but still has data on disk, with the fields it had.
    pub fn retired_backend(name: &str, fields: &Fields, registry: &Registry) -> Result<Backend, ConfigError> {
        build_backend(name, fields, registry)
    }

    /// A certificate, key or CA file this snapshot was built from holds other bytes now.
    pub fn tls_files_changed(&self) -> bool {
        self.node.tls.as_ref().is_some_and(|t| t.files_changed())
            || self.backends.iter().any(|b| b.tls.as_ref().is_some_and(|t| t.files_changed()))
    }
}

fn server_tls(what: &str, fields: &Fields) -> Result<Option<Arc<ServerTls>>, ConfigError> {
    let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()).map(Path::new);
    match (get("tlscert"), get("tlskey")) {
        (Some(cert), Some(key)) => ServerTls::load(cert, key, get("tlsclientca"))
            .map(|t| Some(Arc::new(t)))
            .map_err(|e| ConfigError(format!("{what}: {e}"))),
        (None, None) if get("tlsclientca").is_some() => err(format!("{what}: tlsclientca needs tlscert and tlskey")),
        (None, None) => Ok(None),
        _ => err(format!("{what}: tlscert and tlskey must be set together")),
    }
}

/// What a backend's TLS fields deserve a warning for; repeated at every load, as an insecure
/// backend must not be forgotten.
fn tls_warnings(warnings: &mut Vec<String>, b: &Backend) {
    let set = |k: &str| b.fields.0.get(k).is_some_and(|v| !v.trim().is_empty() && v.trim() != "0");
    match &b.tls {
        Some(t) if t.trust == crate::net::tls::Trust::Insecure => warnings.push(format!(
            "b:{}: tlsinsecure = 1: the certificate of {} is NOT verified; anyone on the path can read and change its traffic",
            b.name, b.url
        )),
        None if set("tlsca") || set("tlsinsecure") => {
            warnings.push(format!("b:{}: tlsca/tlsinsecure ignored: url {} is not https", b.name, b.url))
        }
        _ => {}
    }
}

fn warn_unknown(warnings: &mut Vec<String>, what: &str, fields: &Fields, known: &[&str]) {
    for k in fields.keys() {
        if !known.contains(&k.as_str()) {
            warnings.push(format!("{what}: unknown field {k:?} ignored"));
        }
    }
}

/// Longest duration a field may hold: durations are added to clock readings, which must not overflow.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

fn duration(what: &str, field: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d > MAX_DURATION {
        return err(format!("{what}: field {field} is longer than 30 days"));
    }
    Ok(d)
}

fn seconds(what: &str, field: &str, v: Option<&str>, default: u64) -> Result<Duration, ConfigError> {
    let n = number(what, field, v, default)?;
    duration(what, field, Duration::from_secs(n.min(u64::MAX / 1000)))
}

fn millis(what: &str, field: &str, v: Option<&str>, default: u64) -> Result<Duration, ConfigError> {
    duration(what, field, Duration::from_millis(number(what, field, v, default)?))
}

fn number(what: &str, field: &str, v: Option<&str>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| ConfigError(format!("{what}: field {field} must be a whole number, not {s:?}"))),
    }
}

fn flag(what: &str, field: &str, v: Option<&str>) -> Result<bool, ConfigError> {
    match v {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(s) => err(format!("{what}: field {field} must be 0 or 1, not {s:?}")),
    }
}

fn credentials(what: &str, user: Option<&str>, password: Option<&str>) -> Result<Option<Credentials>, ConfigError> {
    match (user, password) {
        (None, None) => Ok(None),
        (Some(u), p) => Ok(Some(Credentials { username: u.to_string(), password: p.unwrap_or("").to_string() })),
        (None, Some(_)) => err(format!("{what}: password is set but username is not")),
    }
}

fn build_backend(name: &str, fields: &Fields, registry: &Registry) -> Result<Backend, ConfigError> {
    let what = format!("b:{name}");
    let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let url = get("url").ok_or_else(|| ConfigError(format!("{what}: field url is required")))?;
    let parsed = parse_url(url).map_err(|e| ConfigError(format!("{what}: url {url:?}: {e}")))?;
    let insecure = flag(&what, "tlsinsecure", get("tlsinsecure"))?;
    let tls = match parsed.https {
        true => Some(Arc::new(
            ClientTls::new(&parsed.name, get("tlsca").map(Path::new), insecure)
                .map_err(|e| ConfigError(format!("{what}: {e}")))?,
        )),
        false => None,
    };
    let ms = |field: &str, default: u64| millis(&what, field, get(field), default);
    let gzip = number(&what, "gzip", get("gzip"), u64::from(DEFAULT_GZIP_LEVEL))?;
    if gzip > 12 {
        return err(format!("{what}: field gzip must be 0 (off) to 12, not {gzip}"));
    }
    let max_row_limit = number(&what, "maxrowlimit", get("maxrowlimit"), DEFAULT_MAX_ROW_LIMIT)?;
    if max_row_limit == 0 {
        return err(format!("{what}: field maxrowlimit must be at least 1"));
    }
    let check_interval = ms("checkinterval", DEFAULT_CHECK_INTERVAL_MS)?.max(Duration::from_millis(10));
    Ok(Backend {
        name: name.to_string(),
        url: url.to_string(),
        addr: parsed.addr,
        tls,
        host: parsed.authority,
        db: get("db").map(str::to_string),
        zone: get("zone").unwrap_or("").to_string(),
        interval: ms("interval", DEFAULT_BATCH_INTERVAL_MS)?,
        timeout: ms("timeout", DEFAULT_WRITE_TIMEOUT_MS)?.max(Duration::from_millis(1)),
        timeout_query: ms("timeoutquery", DEFAULT_QUERY_TIMEOUT_MS)?.max(Duration::from_millis(1)),
        max_row_limit: usize::try_from(max_row_limit).unwrap_or(usize::MAX),
        check_interval,
        rewrite_interval: ms("rewriteinterval", DEFAULT_REWRITE_INTERVAL_MS)?.max(FIRST_RETRY_BACKOFF),
        write_only: flag(&what, "writeonly", get("writeonly"))?,
        gzip: gzip as u32,
        max_disk: number(&what, "maxdisk", get("maxdisk"), DEFAULT_MAX_DISK_BYTES)?,
        auth: credentials(&what, get("username"), get("password"))?,
        state: registry.state(name, url),
        fields: StoredFields(fields.clone()),
    })
}

/// A backend url taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    pub https: bool,
    /// `host[:port]` as written: the `Host` header.
    pub authority: String,
    /// The host alone (no port, no IPv6 brackets): the TLS server name.
    pub name: String,
    pub addr: SocketAddr,
}

/// `http[s]://host[:port][/]`. Resolution happens here, on the config thread, so workers never wait
/// for DNS.
pub fn parse_url(url: &str) -> Result<BackendUrl, String> {
    let (https, rest) = match url.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        Some((scheme, _)) => return Err(format!("unsupported scheme {scheme:?}")),
        None => return Err("must start with http:// or https://".into()),
    };
    let authority = rest.split('/').next().unwrap_or("");
    if rest.len() > authority.len() + 1 {
        return Err("a path after host:port is not supported".into());
    }
    if authority.is_empty() || authority.contains('@') {
        return Err("missing host (credentials go in the username/password fields)".into());
    }
    let (name, with_port) = match has_port(authority) {
        true => (authority[..authority.rfind(':').unwrap_or(0)].to_string(), authority.to_string()),
        false => (authority.to_string(), format!("{authority}:{}", if https { 443 } else { 80 })),
    };
    let name = name.trim_start_matches('[').trim_end_matches(']').to_string();
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {with_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{with_port} resolves to no address"))?;
    Ok(BackendUrl { https, authority: authority.to_string(), name, addr })
}

fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    }
}

/// Go-style listen addresses: `:6666` means every interface.
fn resolve_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_string() };
    full.to_socket_addrs()
        .map_err(|e| format!("cannot use {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawConfig {
        RawConfig::from_json(
            r#"{"DEFAULT_NODE": {"listenaddr": "127.0.0.1:7076", "interval": "0"},
                "NODES": {"l1": {"db": "app", "nexts": "archive"}},
                "BACKENDS": {
                    "a": {"url": "http://127.0.0.1:8086", "zone": "z1"},
                    "b": {"url": "http://localhost:8087/", "gzip": "0", "maxrowlimit": "5"},
                    "archive": {"url": "http://127.0.0.1:9999", "writeonly": "1"}},
                "KEYMAPS": {"cpu": ["a", "b"], "mem": ["b"], "_default_": ["a"]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn builds_a_full_config() {
        let reg = Registry::default();
        let c = Config::build(raw(), "l1", &reg).unwrap();
        assert_eq!(c.node.listen_addr, "127.0.0.1:7076".parse().unwrap());
        assert_eq!(c.node.db.as_deref(), Some("app"));
        assert_eq!(c.node.stats_interval, None);
        let names: Vec<_> = c.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["a", "archive", "b"]);
        assert_eq!(c.node.nexts, vec![1]);
        let b = &c.backends[2];
        assert_eq!((b.gzip, b.max_row_limit, b.host.as_str()), (0, 5, "localhost:8087"));
        assert!(c.backends[1].write_only);
        assert_eq!(c.backends[0].timeout, Duration::from_millis(DEFAULT_WRITE_TIMEOUT_MS));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // The same backend in a second snapshot shares its state.
        let c2 = Config::build(raw(), "l1", &reg).unwrap();
        assert!(Arc::ptr_eq(&c.backends[0].state, &c2.backends[0].state));
    }

    #[test]
    fn bad_values_are_errors_naming_key_and_field() {
        let reg = Registry::default();
        let mut r = raw();
        r.backends.get_mut("a").unwrap().insert("timeout".into(), "soon".into());
        let e = Config::build(r, "l1", &reg).unwrap_err().0;
        assert!(e.contains("b:a") && e.contains("timeout") && e.contains("soon"), "{e}");

        let mut r = raw();
        r.keymaps.insert("disk".into(), vec!["nope".into()]);
        let e = Config::build(r, "l1", &reg).unwrap_err().0;
        assert!(e.contains("m:disk") && e.contains("nope"), "{e}");

        let mut r = raw();
        r.backends.get_mut("a").unwrap().insert("url".into(), "ftp://x".into());
        assert!(Config::build(r, "l1", &reg).unwrap_err().0.contains("scheme"));

        let mut r = raw();
        r.nodes.get_mut("l1").unwrap().insert("writetracing".into(), "yes".into());
        assert!(Config::build(r, "l1", &reg).unwrap_err().0.contains("writetracing"));
    }

    #[test]
    fn durations_that_would_overflow_the_clock_are_errors() {
        let reg = Registry::default();
        let mut r = raw();
        r.nodes.get_mut("l1").unwrap().insert("interval".into(), "10000000000000000000".into());
        assert!(Config::build(r, "l1", &reg).unwrap_err().0.contains("30 days"));
        let mut r = raw();
        r.backends.get_mut("a").unwrap().insert("timeout".into(), "18446744073709551615".into());
        assert!(Config::build(r, "l1", &reg).unwrap_err().0.contains("timeout"));
    }

    #[test]
    fn unknown_fields_and_missing_node_are_warnings() {
        let reg = Registry::default();
        let mut r = raw();
        r.backends.get_mut("a").unwrap().insert("colour".into(), "blue".into());
        let c = Config::build(r, "other", &reg).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("colour")));
        assert!(c.warnings.iter().any(|w| w.contains("n:other")));
        assert_eq!(c.node.db, None);
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("http://127.0.0.1:8086").unwrap().addr, "127.0.0.1:8086".parse().unwrap());
        let v6 = parse_url("https://[::1]:8086/").unwrap();
        assert_eq!((v6.addr, v6.name.as_str(), v6.https), ("[::1]:8086".parse().unwrap(), "::1", true));
        assert_eq!(parse_url("http://127.0.0.1").unwrap().addr.port(), 80);
        let https = parse_url("https://localhost").unwrap();
        assert_eq!((https.addr.port(), https.name.as_str(), https.authority.as_str()), (443, "localhost", "localhost"));
        assert!(parse_url("http://127.0.0.1:8086/influx").is_err());
        assert!(parse_url("127.0.0.1:8086").is_err());
        assert!(parse_url("http://u:p@127.0.0.1:1").is_err());
    }

    #[test]
    fn tls_fields_are_checked_and_warned_about() {
        let reg = Registry::default();
        let mut r = raw();
        r.nodes.get_mut("l1").unwrap().insert("tlscert".into(), "/nonexistent/cert.pem".into());
        let e = Config::build(r, "l1", &reg).unwrap_err().0;
        assert!(e.contains("n:l1") && e.contains("tlskey"), "{e}");
        let mut r = raw();
        r.nodes.get_mut("l1").unwrap().insert("tlsclientca".into(), "/x.pem".into());
        assert!(Config::build(r, "l1", &reg).unwrap_err().0.contains("tlsclientca needs"));
        let mut r = raw();
        let both = [("tlscert", "/nonexistent/cert.pem"), ("tlskey", "/nonexistent/key.pem")];
        r.nodes.get_mut("l1").unwrap().extend(both.map(|(k, v)| (k.to_string(), v.to_string())));
        assert!(Config::build(r, "l1", &reg).unwrap_err().0.contains("/nonexistent/cert.pem"));

        let mut r = raw();
        let a = r.backends.get_mut("a").unwrap();
        a.insert("url".into(), "https://127.0.0.1:8086".into());
        a.insert("tlsca".into(), "/nonexistent/ca.pem".into());
        let e = Config::build(r.clone(), "l1", &reg).unwrap_err().0;
        assert!(e.contains("b:a") && e.contains("/nonexistent/ca.pem"), "{e}");
        r.backends.get_mut("a").unwrap().insert("tlsinsecure".into(), "1".into());
        let c = Config::build(r, "l1", &reg).unwrap();
        assert!(c.backends[0].tls.is_some() && c.warnings.iter().any(|w| w.contains("NOT verified")));
        assert!(!c.tls_files_changed());

        let mut r = raw();
        r.backends.get_mut("b").unwrap().insert("tlsca".into(), "/x.pem".into());
        let c = Config::build(r, "l1", &reg).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("b:b") && w.contains("not https")), "{:?}", c.warnings);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(resolve_listen(":6666").unwrap(), "0.0.0.0:6666".parse().unwrap());
        assert_eq!(resolve_listen("127.0.0.1:1").unwrap(), "127.0.0.1:1".parse().unwrap());
        assert!(resolve_listen("nonsense").is_err());
    }
}
