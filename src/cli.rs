//! Command-line flags. Names follow the original Go influx-proxy where it had the flag (`--redis`,
//! `--redis-pwd`, `--redis-db`, `--node`); every default comes from `defaults.rs`.

use argh::FromArgs;
use std::path::PathBuf;
use std::str::FromStr;

use crate::defaults::*;

/// High-availability proxy for InfluxDB 1.x: routes every measurement to its backends, buffers writes on
/// local disk while a backend is down, filters dangerous InfluxQL. Configuration lives in Redis.
#[derive(FromArgs, Debug, Clone)]
pub struct Args {
    /// redis server, HOST:PORT (default 127.0.0.1:6379)
    #[argh(option, default = "DEFAULT_REDIS.to_string()")]
    pub redis: String,

    /// redis password (default: none)
    #[argh(option, default = "String::new()")]
    pub redis_pwd: String,

    /// redis database number (default 0)
    #[argh(option, default = "0")]
    pub redis_db: i64,

    /// name of this proxy node: its fields are read from the `n:NAME` hash (default l1)
    #[argh(option, default = "DEFAULT_NODE.to_string()")]
    pub node: String,

    /// read the configuration from this JSON file instead of Redis (the structure `config.py --json` prints)
    #[argh(option)]
    pub config: Option<PathBuf>,

    /// directory for the outbox logs and the config cache (default ./data)
    #[argh(option, default = "PathBuf::from(DEFAULT_DATA_DIR)")]
    pub data_dir: PathBuf,

    /// worker threads (default: one per core)
    #[argh(option)]
    pub threads: Option<usize>,

    /// log level: error, warn, info, debug, trace (default info; RUST_LOG is used when this flag is absent)
    #[argh(option)]
    pub log_level: Option<String>,

    /// when outbox data is forced to disk: never (default; survives a process crash), batch (each sealed
    /// batch; power loss can cost the open batch), always (before every 204; survives power loss)
    #[argh(option, default = "SyncPolicy::Never")]
    pub sync: SyncPolicy,

    /// largest accepted request body in bytes, also after gzip decompression (default 25000000)
    #[argh(option, default = "DEFAULT_MAX_BODY_BYTES")]
    pub max_body_bytes: usize,

    /// request bytes all workers together may buffer; past it requests get 503 (default 268435456)
    #[argh(option, default = "DEFAULT_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: usize,

    /// client connections per worker (default 4096)
    #[argh(option, default = "DEFAULT_MAX_CONNECTIONS")]
    pub max_connections: usize,

    /// size of one outbox log segment file in bytes (default 8388608)
    #[argh(option, default = "DEFAULT_SEGMENT_BYTES")]
    pub segment_bytes: usize,

    /// milliseconds between two reads of the configuration (default 5000)
    #[argh(option, default = "DEFAULT_POLL_INTERVAL_MS")]
    pub poll_interval: u64,

    /// seconds SIGTERM waits for in-flight requests and outbox flushing (default 10)
    #[argh(option, default = "DEFAULT_SHUTDOWN_TIMEOUT.as_secs()")]
    pub shutdown_timeout: u64,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

impl Args {
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).clamp(1, 1024)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    Never,
    Batch,
    Always,
}

impl FromStr for SyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never" => Ok(SyncPolicy::Never),
            "batch" => Ok(SyncPolicy::Batch),
            "always" => Ok(SyncPolicy::Always),
            _ => Err(format!("--sync must be never, batch or always, not {s:?}")),
        }
    }
}
