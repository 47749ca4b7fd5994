//! Where the raw configuration comes from: Redis in the original proxy's key layout, or a JSON file
//! (`--config`), plus the on-disk cache of the last good config that lets the proxy start while Redis
//! is down (Redis only: see `Source::uses_cache`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::{Commands, ConnectionAddr, IntoConnectionInfo};

use super::raw::{Fields, RawConfig};
use crate::cli::Args;

const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
pub const CACHE_FILE: &str = "config-cache.json";

pub enum Source {
    Redis { client: redis::Client, addr: String },
    File(PathBuf),
}

impl Source {
    pub fn from_args(args: &Args) -> Result<Source, String> {
        if let Some(path) = &args.config {
            return Ok(Source::File(path.clone()));
        }
        let (host, port) = args
            .redis
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_start_matches('[').trim_end_matches(']'), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("--redis must be HOST:PORT, not {:?}", args.redis))?;
        let info = ConnectionAddr::Tcp(host.to_string(), port)
            .into_connection_info()
            .map_err(|e| format!("--redis {}: {e}", args.redis))?;
        let mut settings = info.redis_settings().clone().set_db(args.redis_db).set_skip_set_lib_name();
        if !args.redis_pwd.is_empty() {
            settings = settings.set_password(&args.redis_pwd);
        }
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(|e| format!("redis: {e}"))?;
        Ok(Source::Redis { client, addr: args.redis.clone() })
    }

    /// Whether the last good config is cached for starts while the source is unreachable: for Redis,
    /// which lives on another machine and can be down; not for a file the operator names, which is
    /// either there or the operator's mistake to hear about.
    pub fn uses_cache(&self) -> bool {
        matches!(self, Source::Redis { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Redis { addr, .. } => format!("redis {addr}"),
            Source::File(p) => format!("file {}", p.display()),
        }
    }

    /// Reads the whole configuration.
    pub fn load(&self) -> Result<RawConfig, String> {
        match self {
            Source::Redis { client, addr } => load_redis_consistent(client).map_err(|e| format!("redis {addr}: {e}")),
            Source::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
                RawConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }
}

/// Keys are read one by one, so a read that overlaps a `config.py` run could mix old and new keys:
/// read until two reads in a row agree.
fn load_redis_consistent(client: &redis::Client) -> Result<RawConfig, String> {
    let mut last = load_redis(client).map_err(|e| e.to_string())?;
    for _ in 0..5 {
        let again = load_redis(client).map_err(|e| e.to_string())?;
        if again == last {
            return Ok(again);
        }
        last = again;
    }
    Err("the config keys keep changing while being read".into())
}

fn load_redis(client: &redis::Client) -> redis::RedisResult<RawConfig> {
    let mut conn = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
    conn.set_read_timeout(Some(REDIS_TIMEOUT))?;
    conn.set_write_timeout(Some(REDIS_TIMEOUT))?;
    let mut raw = RawConfig { default_node: conn.hgetall::<_, Fields>("default_node")?, ..RawConfig::default() };
    // SCAN, not KEYS: a shared Redis may hold many other keys.
    let keys: Vec<String> = {
        let mut keys = Vec::new();
        for pattern in ["n:*", "b:*", "m:*"] {
            let iter: redis::Iter<String> = conn.scan_match(pattern)?;
            keys.extend(iter.filter_map(Result::ok));
        }
        keys.sort();
        keys.dedup();
        keys
    };
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn)?;
        if let Some(name) = key.strip_prefix("n:") {
            if kind == "hash" {
                raw.nodes.insert(name.to_string(), conn.hgetall(&key)?);
            }
        } else if let Some(name) = key.strip_prefix("b:") {
            if kind == "hash" {
                raw.backends.insert(name.to_string(), conn.hgetall(&key)?);
            }
        } else if let Some(name) = key.strip_prefix("m:")
            && kind == "list"
        {
            raw.keymaps.insert(name.to_string(), conn.lrange(&key, 0, -1)?);
        }
    }
    Ok(raw)
}

pub fn cache_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CACHE_FILE)
}

/// Saves the last good config.
pub fn save_cache(data_dir: &Path, raw: &RawConfig) -> std::io::Result<()> {
    write_private(&cache_path(data_dir), raw.to_json().as_bytes())
}

/// Replaces `path` atomically (write a temp file, rename) with a file only its owner can read: configs
/// may hold passwords.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Several threads may replace the same file at once (each worker writes its backends' metadata):
    // every write gets its own temp file, and the last rename wins with a whole file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

pub fn load_cache(data_dir: &Path) -> Result<RawConfig, String> {
    let path = cache_path(data_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    RawConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}
