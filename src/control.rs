//! Messages between threads: what the config thread (and SIGHUP) tells workers, and what workers ask
//! of the config thread. A leaf module: it names the config snapshot and nothing above it, so every
//! thread can import it without importing the others.

use std::sync::Arc;

use crossbeam_channel::Sender;
use mio::Waker;

use crate::config::Config;

/// Names one client connection of one worker, so an answer produced on another thread finds its way
/// back. `conn` is the connection's slot; `generation` tells a reused slot from the one that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRef {
    pub worker: usize,
    pub conn: usize,
    pub generation: u64,
}

/// A `/reload` a worker forwards to the config thread; the answer goes back to `client`.
#[derive(Debug, Clone, Copy)]
pub struct ReloadRequest {
    /// `None`: nobody waits for the answer (SIGHUP).
    pub client: Option<ClientRef>,
}

impl ReloadRequest {
    pub fn without_answer() -> ReloadRequest {
        ReloadRequest { client: None }
    }
}

/// What a worker is told from outside.
#[derive(Debug)]
pub enum Message {
    /// A new config snapshot to route with.
    Config(Arc<Config>),
    /// The answer to a `/reload` this worker forwarded.
    Reloaded { client: ClientRef, status: u16, error: Option<String> },
    /// Lines a repair/rebalance job copies, to commit to one backend's outbox.
    Job(JobBatch),
}

/// A batch of copied lines for one backend, handed by the jobs thread to a worker, which commits it to
/// that backend's outbox and answers on `done`.
#[derive(Debug)]
pub struct JobBatch {
    pub backend: String,
    pub url: String,
    /// `db=..&rp=..&precision=ns`
    pub target: String,
    /// Line protocol, every line ending in `\n`.
    pub lines: String,
    pub count: u64,
    /// The worker's answer: committed to the outbox log, or why not.
    pub done: Sender<Result<(), String>>,
}

/// A worker as the other threads see it: its mailbox and the waker that makes it read the mailbox.
#[derive(Clone)]
pub struct WorkerHandle {
    pub tx: Sender<Message>,
    pub waker: Arc<Waker>,
}

impl WorkerHandle {
    pub fn send(&self, msg: Message) {
        if self.tx.send(msg).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Wakes the worker without a message (shutdown: it checks the shared flag).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}
