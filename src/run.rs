//! Process life cycle: load the config, lock the data dir, bind one listener per worker, start workers,
//! the health checker and the config poller, then wait for SIGTERM/SIGINT and stop gracefully.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::Args;
use crate::config::poller::Poller;
use crate::config::source::{self, Source};
use crate::config::{Config, RawConfig};
use crate::control::{ReloadRequest, WorkerHandle};
use crate::shared::{Settings, Shared};
use crate::upstream::Registry;
use crate::worker::{Worker, WorkerSetup};

pub fn run(args: Args) -> Result<(), String> {
    let signals = block_signals()?;
    let mut settings = Settings::from_args(&args);
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", settings.data_dir.display()))?;
    let _lock = lock_data_dir(&settings.data_dir)?;

    let registry = Arc::new(Registry::default());
    let source = Source::from_args(&args)?;
    let (config, origin) = initial_config(&source, &args.node, &settings.data_dir, &registry)?;
    for w in &config.warnings {
        log::warn!("config: {w}");
    }
    let listen = config.node.listen_addr;
    // Held until we exit: no second proxy may join our SO_REUSEPORT group and take half the clients.
    let _claim = crate::net::claim_address(listen).map_err(|e| e.to_string())?;
    // Only now, so that a start that fails above prints its one error line and nothing else.
    settings.max_connections = size_connection_limit(settings.max_connections, settings.threads);
    let (reload_tx, reload_rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared::new(settings.clone(), registry, config.clone(), origin.clone(), reload_tx));

    let mut handles = Vec::new();
    let mut threads = Vec::new();
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded::<Result<(), String>>();
    let (go_tx, go_rx) = crossbeam_channel::unbounded::<()>();
    for id in 0..settings.threads {
        let listener = crate::net::reuseport_listener(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let setup = WorkerSetup::new(id, listener).map_err(|e| format!("cannot create worker poll: {e}"))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        handles.push(WorkerHandle { tx, waker: setup.waker.clone() });
        let (shared, config, ready) = (shared.clone(), config.clone(), ready_tx.clone());
        let go = go_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || match Worker::new(setup, shared, rx, config) {
                Ok(w) => {
                    let _ = ready.send(Ok(()));
                    // Serve only once every worker has recovered its logs, so an answered /ping means
                    // the whole proxy is ready (connections meanwhile wait in the listen backlog).
                    if go.recv().is_ok() {
                        w.run();
                    }
                }
                Err(e) => {
                    let _ = ready.send(Err(format!("worker {id}: {e}")));
                }
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        threads.push(thread);
    }
    for _ in 0..settings.threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.request_shutdown();
                handles.iter().for_each(WorkerHandle::wake);
                return Err(e);
            }
            Err(_) => return Err("a worker thread died while starting".into()),
        }
    }
    // Job checkpoints are loaded before any worker serves, so a new job never takes a stored id.
    let first = handles[0].clone();
    let deliver: crate::jobs::Deliver = Box::new(move |batch| {
        let ok = first.tx.send(crate::control::Message::Job(batch)).is_ok();
        ok && first.waker.wake().is_ok()
    });
    crate::jobs::spawn(shared.clone(), deliver).map_err(|e| format!("cannot start jobs thread: {e}"))?;
    for _ in 0..settings.threads {
        let _ = go_tx.send(());
    }
    log::info!(
        "influx-proxy {} node {} listening on {listen} with {} workers; config from {origin}; data in {}",
        env!("CARGO_PKG_VERSION"),
        config.node.name,
        settings.threads,
        settings.data_dir.display()
    );

    let health = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("health".into())
            .spawn(move || crate::upstream::health::run(shared))
            .map_err(|e| format!("cannot start health thread: {e}"))?
    };
    let poller = {
        let poller = Poller::new(
            shared.clone(),
            source,
            args.node.clone(),
            handles.clone(),
            Duration::from_millis(args.poll_interval),
        );
        std::thread::Builder::new()
            .name("config".into())
            .spawn(move || poller.run(reload_rx))
            .map_err(|e| format!("cannot start config thread: {e}"))?
    };

    let sig = wait_for_signal(&signals, &shared);
    log::info!("received {sig}: no new connections; finishing requests and flushing outboxes");
    shared.request_shutdown();
    handles.iter().for_each(WorkerHandle::wake);
    for t in threads {
        let _ = t.join();
    }
    let _ = health.join();
    let _ = poller.join();
    log::info!("stopped");
    Ok(())
}

/// The config to start with: the source's, or (Redis only) the cache of the last good one if the source
/// is unreachable or invalid.
fn initial_config(
    source: &Source,
    node: &str,
    data_dir: &Path,
    registry: &Registry,
) -> Result<(Arc<Config>, String), String> {
    let from_source =
        source.load().and_then(|raw| Config::build(raw, node, registry).map_err(|e| format!("invalid config: {e}")));
    let source_error = match from_source {
        Ok(config) => {
            if source.uses_cache()
                && let Err(e) = source::save_cache(data_dir, &config.raw)
            {
                log::warn!("cannot cache the config in {}: {e}", data_dir.display());
            }
            return Ok((Arc::new(config), source.describe()));
        }
        Err(e) if !source.uses_cache() => return Err(e),
        Err(e) => e,
    };
    let path = source::cache_path(data_dir);
    if !path.exists() {
        return Err(format!("{source_error} (and there is no cached config in {} to start from)", path.display()));
    }
    let cached: Result<RawConfig, String> = source::load_cache(data_dir);
    match cached.and_then(|raw| Config::build(raw, node, registry).map_err(|e| e.to_string())) {
        Ok(config) => {
            log::warn!("{source_error}; starting from the cached config (will keep trying the source)");
            Ok((Arc::new(config), format!("cache {}", path.display())))
        }
        Err(cache_error) => Err(format!("{source_error} (and the cached config is unusable: {cache_error})")),
    }
}

/// Raises the open-file limit as far as allowed and returns the client connections per worker that fit
/// in it (`--max-connections` or fewer), logging both.
fn size_connection_limit(wanted: usize, threads: usize) -> usize {
    let nofile = match crate::net::fds::raise_nofile_limit() {
        Ok(l) if l.now > l.was => {
            log::info!("open-file limit raised from {} to {} (the hard limit)", l.was, l.now);
            l.now
        }
        Ok(l) => {
            log::info!("open-file limit: {}", l.now);
            l.now
        }
        Err(e) => {
            log::warn!("cannot read or raise the open-file limit ({e}); assuming 1024");
            1024
        }
    };
    let per_worker = crate::net::fds::connections_per_worker(wanted, nofile, threads);
    if per_worker < wanted {
        log::warn!(
            "client connections per worker: {per_worker}, not --max-connections {}: {threads} workers at that \
             many would not fit in {nofile} open files (raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn)",
            wanted
        );
    } else {
        log::info!("client connections per worker: {per_worker}");
    }
    per_worker
}

/// One proxy per data dir: a second one would interleave the same logs.
fn lock_data_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join("LOCK");
    let file = File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // SAFETY: plain syscall on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!("data dir {} is in use by another influx-proxy", dir.display()));
    }
    Ok(file)
}

/// Blocks SIGINT/SIGTERM/SIGHUP in this thread (and so in every thread started after), so they are
/// only ever taken by `wait_for_signal`. SIGHUP reloads the config, as daemons do.
fn block_signals() -> Result<libc::sigset_t, String> {
    // SAFETY: sigset manipulation on a local, then pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err("cannot block signals".into());
        }
        Ok(set)
    }
}

/// Waits for SIGINT or SIGTERM; a SIGHUP meanwhile asks the config thread for a reload.
fn wait_for_signal(set: &libc::sigset_t, shared: &Shared) -> &'static str {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is a valid, initialised signal set.
        if unsafe { libc::sigwait(set, &mut sig) } == 0 {
            match sig {
                libc::SIGINT => return "SIGINT",
                libc::SIGHUP => {
                    log::info!("received SIGHUP: reloading the config");
                    let _ = shared.reloads.send(ReloadRequest::without_answer());
                }
                _ => return "SIGTERM",
            }
        }
    }
}
