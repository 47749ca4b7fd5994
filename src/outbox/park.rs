//! Parking: the records of a target (db, rp) whose database or retention policy the backend does not
//! have yet wait in a parked log of their own, so other targets keep flowing.
//!
//! A parked log lives in `parked-<hash of target>/` inside the worker's log directory and is retried
//! every `rewriteinterval`; once the backend accepts its records and it is empty, it is removed
//! ("unparked"). A record is copied into its parked log before it is acknowledged in the log it came
//! from, so a crash between the two can duplicate a batch but never lose one; later records of a
//! parked target join the same parked log, so the target's order is kept.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::log::{AppendError, Front, Log, Whole};
use super::{LogOptions, Outbox, Source, fnv1a};
use crate::upstream::BackendState;

/// A target whose records wait for the backend to create its database or retention policy.
pub(super) struct Parked {
    pub(super) target: Vec<u8>,
    pub(super) log: Log,
    pub(super) retry_at: Instant,
}

impl Outbox {
    /// Moves the record at the front of `source` into the parked log of its target.
    /// On error the record stays where it is and is retried.
    pub(super) fn park(&mut self, source: Source, front: Front) -> Result<(), AppendError> {
        let target = match self.log_of(source) {
            Some(l) => l.record(&front).0.to_vec(),
            None => return Ok(()),
        };
        let i = match self.parked.iter().position(|p| p.target == target) {
            Some(i) => i,
            None => {
                let sub = self.dir.join(format!("parked-{:016x}", fnv1a(&target)));
                let opened = Log::open(
                    &sub,
                    true,
                    parked_segment_bytes(&self.opts),
                    self.backend.max_disk,
                    self.opts.sync,
                    self.backend.state.clone(),
                );
                match opened {
                    Ok((log, _)) => {
                        let retry_at = Instant::now() + self.backend.rewrite_interval;
                        self.parked.push(Parked { target, log, retry_at });
                        self.publish_parked();
                        self.parked.len() - 1
                    }
                    Err(e) => {
                        ::log::error!("backend {}: cannot create parked log {}: {e}", self.backend.name, sub.display());
                        return Err(AppendError::Io(e));
                    }
                }
            }
        };
        self.move_to_parked(source, front, i)
    }

    /// Copies the front record of `source` into parked log `parked`, then acknowledges it. On error
    /// nothing is acknowledged: the record stays and is tried again.
    pub(super) fn move_to_parked(&mut self, source: Source, front: Front, parked: usize) -> Result<(), AppendError> {
        let Outbox { logs, parked: all, backend, lag, .. } = self;
        let Source::Main(li) = source else { return Ok(()) };
        let (Some(from), Some(p)) = (logs.get_mut(li), all.get_mut(parked)) else {
            return Ok(());
        };
        let (target, payload) = from.record(&front);
        let lines = from.record_lines(&front);
        p.log.copy_record(target, Whole::new(payload, lines, front.is_gzip()))?;
        BackendState::add(&backend.state.counters.parked, lines);
        lag.done(&backend.state.lag, target, from.is_recovered(&front));
        from.ack(&front);
        Ok(())
    }

    /// Tells the lag board which targets of this outbox are parked (after the set changed).
    pub(super) fn publish_parked(&self) {
        self.lag.parked(&self.backend.state.lag, self.parked.iter().map(|p| &p.target[..]));
    }

    pub(super) fn unpark(&mut self, p: Parked) {
        ::log::info!(
            "backend {}: parked writes to {} delivered; target unparked",
            self.backend.name,
            String::from_utf8_lossy(&p.target)
        );
        let dir = p.log.dir().to_path_buf();
        drop(p);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The parked-log directories inside the log directory `dir`, in name order.
pub(super) fn parked_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("parked-")))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Parked logs are usually small; their segments are too.
pub(super) fn parked_segment_bytes(opts: &LogOptions) -> usize {
    (opts.segment_bytes / 8).max(64 << 10)
}
