//! A proxy site for tests that restart or kill the proxy: Redis holding the config (node `l1` on a
//! fixed port, self-statistics off so counts are exact) and a data dir that outlives proxy processes.

use std::path::Path;

use super::load::LoadSpec;
use super::{Influxd, Proxy, ProxyConfig, Redis, TempDir, free_port, inspect};

/// The database durability and fault tests write to.
pub const DB: &str = "db";
/// Every bounded wait for data to show up on a backend.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(15);
/// Backend fields that make batches, health checks and retries fast.
pub const FAST: &[(&str, &str)] =
    &[("interval", "50"), ("checkinterval", "100"), ("rewriteinterval", "300"), ("timeout", "2000")];

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
