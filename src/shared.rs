//! What the threads share: backend states, proxy-wide counters, the in-flight request budget, the
//! current config (for /health), and the shutdown flag. Workers touch these once per request or batch,
//! never per line.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::cli::{Args, SyncPolicy};
use crate::config::Config;
use crate::control::ReloadRequest;
use crate::stats::ProxyStats;
use crate::upstream::Registry;

/// Limits and paths from the command line that workers need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub threads: usize,
    pub max_body_bytes: usize,
    pub max_inflight_bytes: usize,
    pub max_connections: usize,
    pub segment_bytes: usize,
    /// Growth of a worker's backlog for a backend that takes batches past which its writers are paused
    /// (0: never).
    pub pause_backlog_bytes: u64,
    pub sync: SyncPolicy,
    pub shutdown_timeout: std::time::Duration,
}

impl Settings {
    pub fn from_args(args: &Args) -> Settings {
        Settings {
            data_dir: args.data_dir.clone(),
            threads: args.threads(),
            max_body_bytes: args.max_body_bytes.max(1),
            max_inflight_bytes: args.max_inflight_bytes.max(args.max_body_bytes),
            max_connections: args.max_connections.max(1),
            segment_bytes: args.segment_bytes,
            pause_backlog_bytes: args.pause_backlog_bytes,
            sync: args.sync,
            shutdown_timeout: std::time::Duration::from_secs(args.shutdown_timeout),
        }
    }
}

/// The config in force and how loading went, for /health.
#[derive(Debug)]
pub struct ConfigStatus {
    pub current: Arc<Config>,
    /// Incremented on every applied change.
    pub version: u64,
    /// Why the last attempt to load a new config failed, if it did (cleared by a good one).
    pub last_error: Option<String>,
    pub source: String,
}

pub struct Shared {
    pub settings: Settings,
    /// Where workers forward `/reload` requests (the config thread).
    pub reloads: crossbeam_channel::Sender<ReloadRequest>,
    pub registry: Arc<Registry>,
    pub stats: ProxyStats,
    pub config: Mutex<ConfigStatus>,
    /// Repair and rebalance jobs (`/repair`, `/rebalance`, `/jobs`).
    pub jobs: crate::jobs::Jobs,
    inflight_bytes: AtomicUsize,
    shutdown: AtomicBool,
}

impl Shared {
    pub fn new(
        settings: Settings,
        registry: Arc<Registry>,
        config: Arc<Config>,
        source: String,
        reloads: crossbeam_channel::Sender<ReloadRequest>,
    ) -> Shared {
        Shared {
            settings,
            reloads,
            registry,
            stats: ProxyStats::default(),
            config: Mutex::new(ConfigStatus { current: config, version: 1, last_error: None, source }),
            jobs: crate::jobs::Jobs::default(),
            inflight_bytes: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
        }
    }

    /// Takes `n` bytes of the in-flight request budget; false (and nothing taken) if it would pass the
    /// limit.
    pub fn reserve(&self, n: usize) -> bool {
        let limit = self.settings.max_inflight_bytes;
        self.inflight_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| cur.checked_add(n).filter(|&t| t <= limit))
            .is_ok()
    }

    pub fn release(&self, n: usize) {
        let _ =
            self.inflight_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| Some(cur.saturating_sub(n)));
    }

    pub fn inflight_bytes(&self) -> usize {
        self.inflight_bytes.load(Ordering::Relaxed)
    }

    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    pub fn config_status<R>(&self, f: impl FnOnce(&ConfigStatus) -> R) -> R {
        match self.config.lock() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }
}
