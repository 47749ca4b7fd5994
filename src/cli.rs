//! Command-line flags. Names follow the original Go influx-proxy where it had the flag (`--redis`,
//! `--redis-pwd`, `--redis-db`, `--node`); every default comes from `defaults.rs`.

use argh::FromArgs;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
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

    /// log level: error, warn, info, debug, trace or off (default info; RUST_LOG is used when this flag is
    /// absent)
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

    /// client connections per worker (default 4096; lowered if they would not fit in the open-file limit)
    #[argh(option, default = "DEFAULT_MAX_CONNECTIONS")]
    pub max_connections: usize,

    /// size of one outbox log segment file in bytes (default 8388608)
    #[argh(option, default = "DEFAULT_SEGMENT_BYTES")]
    pub segment_bytes: usize,

    /// while a backend takes batches but what waits for it in a worker's outbox has grown by more than
    /// this many bytes, that worker stops reading connections that sent writes; 0: never (default
    /// 67108864)
    #[argh(option, default = "DEFAULT_PAUSE_BACKLOG_BYTES")]
    pub pause_backlog_bytes: u64,

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

/// Why parsing the command line did not give `Args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `--help` was asked: print this on stdout, exit 0.
    Help(String),
    /// A bad flag or value, as one line (without the `influx-proxy: ` prefix).
    Error(String),
}

/// Parses the command line (`argv[0]` first). argh's own error text can span lines and ends with a
/// hint line; it is folded into one line here so that every error of the binary reads the same way.
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Args, Exit> {
    let mut strings = Vec::new();
    for arg in argv {
        match arg.into_string() {
            Ok(s) => strings.push(s),
            Err(bad) => return Err(Exit::Error(format!("argument {bad:?} is not valid UTF-8"))),
        }
    }
    let name = strings
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("influx-proxy")
        .to_string();
    let rest: Vec<&str> = strings.iter().skip(1).map(String::as_str).collect();
    Args::from_args(&[&name], &rest).map_err(|exit| match exit.status {
        Ok(()) => Exit::Help(exit.output),
        Err(()) => {
            let what: Vec<&str> = exit.output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            Exit::Error(format!("{} (see {name} --help)", what.join(" ")))
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Args, Exit> {
        parse(std::iter::once("/usr/bin/influx-proxy").chain(args.iter().copied()).map(OsString::from))
    }

    #[test]
    fn bad_flags_are_one_line() {
        for bad in [&["--bogus"][..], &["--sync", "sometimes"], &["--threads", "many"], &["--node"]] {
            match parse_strs(bad) {
                Err(Exit::Error(e)) => {
                    assert!(!e.contains('\n'), "{bad:?}: {e:?}");
                    assert!(e.ends_with("(see influx-proxy --help)"), "{bad:?}: {e:?}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let Err(Exit::Error(e)) = parse_strs(&["--sync", "sometimes"]) else { panic!() };
        assert!(e.contains("--sync must be never, batch or always"), "{e}");
    }

    #[test]
    fn help_lists_every_log_level() {
        let Err(Exit::Help(text)) = parse_strs(&["--help"]) else { panic!("--help did not ask for help") };
        assert!(text.starts_with("Usage: influx-proxy"), "{text}");
        let line = text.lines().skip_while(|l| !l.trim_start().starts_with("--log-level")).take(2).collect::<String>();
        for level in ["error", "warn", "info", "debug", "trace", "off"] {
            assert!(line.contains(level), "--help does not list {level}: {line}");
        }
        assert!(parse_strs(&["--threads", "3"]).is_ok_and(|a| a.threads() == 3));
    }
}
