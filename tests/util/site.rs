//! The shared test rigs and the constants every test binary agrees on.
//!
//! A [`Site`] is a proxy site for tests that restart or kill the proxy: Redis holding the config (node
//! `l1` on a fixed port, self-statistics off so counts are exact) and a data dir that outlives proxy
//! processes. A [`Rig`] is a site with its proxy started, for tests that keep one proxy throughout.
//! Tests that change the config live use [`with_node`] and [`polling_proxy`] on their own Redis.

use std::path::Path;
use std::time::Duration;

use super::http::{self, Response};
use super::load::LoadSpec;
use super::{Influxd, Proxy, ProxyConfig, Redis, TempDir, free_port, inspect};

/// The database tests write to and query, unless they test node `db` handling.
pub const DB: &str = "db";
/// Every bounded wait for something asynchronous (delivery, health checks, retries): generous, as
/// it only runs out when a test fails, and the machine may be loaded.
pub const WAIT: Duration = Duration::from_secs(20);
/// Backend fields that make batches, health checks and retries fast: batches flush after 50 ms,
/// health is checked every 100 ms, retries back off to at most 300 ms, a send times out after 2 s.
pub const FAST: &[(&str, &str)] =
    &[("interval", "50"), ("checkinterval", "100"), ("rewriteinterval", "300"), ("timeout", "2000")];
/// The retry period `FAST` sets (`rewriteinterval`), for tests that wait out a few retries.
pub const FAST_RETRY: Duration = Duration::from_millis(300);
/// [`FAST`] with `extra` fields added; a field in both takes its value from `extra`.
pub fn fast_with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = FAST.iter().filter(|(k, _)| !extra.iter().any(|(e, _)| e == k)).copied().collect();
    all.extend_from_slice(extra);
    all
}

/// `--poll-interval` (ms) of the proxies started by [`polling_proxy`].
pub const POLL_MS: &str = "200";
/// How long a config change may take to be applied: the poll interval plus slack for a loaded machine.
pub const APPLY: Duration = Duration::from_secs(3);

pub struct Site {
    pub redis: Redis,
    pub port: u16,
    pub data: TempDir,
}

impl Site {
    /// Writes `config` plus node `l1` into a fresh Redis.
    pub fn new(config: ProxyConfig, label: &str) -> Site {
        Site::with_node(config, &[], label)
    }

    /// Like `new`, with more fields for node `l1`.
    pub fn with_node(config: ProxyConfig, node_extra: &[(&str, &str)], label: &str) -> Site {
        let redis = Redis::start();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut node = vec![("listenaddr", listen.as_str()), ("interval", "0")];
        node.extend_from_slice(node_extra);
        config.node("l1", &node).write_to(&redis);
        Site { redis, port, data: TempDir::new(label) }
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// A proxy on the site's port and data dir, started and answering /ping.
    pub fn proxy(&self, threads: usize, args: &[&str]) -> Proxy {
        let mut builder = Proxy::builder(&self.redis, "l1", self.port).data_dir(self.data.path()).threads(threads);
        for a in args {
            builder = builder.arg(*a);
        }
        builder.start()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A load writing `measurement` of `db` through this site's proxy.
    pub fn spec(&self, db: &str, measurement: &str) -> LoadSpec {
        LoadSpec::new(&self.addr(), db, measurement)
    }

    /// The backend's entry in `/health`.
    pub fn health(&self, backend: &str) -> serde_json::Value {
        inspect::backend_health(&self.addr(), backend)
    }
}

/// A fresh influxd with database [`DB`] created.
pub fn influxd_with_db() -> Influxd {
    let influxd = Influxd::start();
    influxd.create_db(DB);
    influxd
}

/// `config` plus node `l1` listening on `port`, self-statistics off, with `extra` node fields.
pub fn with_node(config: ProxyConfig, port: u16, extra: &[(&str, &str)]) -> ProxyConfig {
    let listen = format!("127.0.0.1:{port}");
    let mut fields = vec![("listenaddr", listen.as_str()), ("interval", "0")];
    fields.extend_from_slice(extra);
    config.node("l1", &fields)
}

/// A proxy for node `l1` on `port` that polls `redis` for config changes every [`POLL_MS`].
pub fn polling_proxy(redis: &Redis, port: u16) -> Proxy {
    Proxy::builder(redis, "l1", port).arg("--poll-interval").arg(POLL_MS).start()
}

/// A proxy started on a [`Site`] of its own. The proxy goes first on drop.
pub struct Rig {
    pub proxy: Proxy,
    pub site: Site,
}

impl Rig {
    /// Writes `config` plus node `l1` (its `listenaddr`, self-statistics off, `node_extra`) into a
    /// fresh Redis and starts the proxy with 2 workers.
    pub fn start(config: ProxyConfig, node_extra: &[(&str, &str)]) -> Rig {
        Rig::start_with(config, node_extra, 2, &[])
    }

    /// Like [`Rig::start`], with `threads` workers.
    pub fn start_threads(config: ProxyConfig, node_extra: &[(&str, &str)], threads: usize) -> Rig {
        Rig::start_with(config, node_extra, threads, &[])
    }

    /// Like [`Rig::start`], with `threads` workers and more command-line `args`.
    pub fn start_with(config: ProxyConfig, node_extra: &[(&str, &str)], threads: usize, args: &[&str]) -> Rig {
        let site = Site::with_node(config, node_extra, "rig");
        Rig { proxy: site.proxy(threads, args), site }
    }

    pub fn addr(&self) -> String {
        self.proxy.addr()
    }

    pub fn port(&self) -> u16 {
        self.proxy.port()
    }

    /// POST /write?`query` with `body` and `headers` on a fresh connection.
    pub fn write_with(&self, query: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let path = format!("/write?{query}");
        http::request(&self.addr(), "POST", &path, headers, body)
    }

    pub fn write(&self, query: &str, body: &[u8]) -> Response {
        self.write_with(query, &[], body)
    }

    /// POST /write?db=db, asserting 204.
    pub fn write_ok(&self, body: &[u8]) {
        let r = self.write(&format!("db={DB}"), body);
        assert_eq!(r.status, 204, "write answered {}: {}", r.status, r.text());
    }
}
