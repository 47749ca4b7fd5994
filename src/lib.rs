//! influx-proxy: a high-availability proxy for InfluxDB 1.x.
//!
//! A request flows down this list and never climbs back up:
//!
//! * `worker` — one per core: the poll loop. It accepts on its own `SO_REUSEPORT` listener (`net`),
//!   turns readiness into calls on the connection, and sleeps until the nearest deadline.
//! * `http::conn` — one client connection as a state machine (open, awaiting an answer, closing,
//!   lingering); requests are framed by `http::request` and answered in order.
//! * `http::router` — path + method → the endpoint, whose handler the worker calls with what it
//!   needs (the parsed request, the config snapshot, an output buffer):
//!   * `write` — `/write`: gunzip with a bound (`gunzip`), split lines and find each measurement
//!     without copying (`write::lineproto`), look up its backends (`write::route`), append each line to
//!     those backends' outboxes (a large body that is a batch as it stands is stored whole, see
//!     `write::store`); the client gets its 204 once every line is committed there.
//!   * `query` — `/query`: classify and filter InfluxQL (`query::influxql`, `query::filter`), plan
//!     onto backends (`query::plan`), relay one answer as a stream or merge several (`query::exec`,
//!     `query::merge`). A query task owns the config snapshot it was planned with.
//!   * `ops` — `/ping`, `/health`, `/metrics`, self-statistics.
//! * `outbox` — per (worker, backend) an mmap-backed, append-only log on disk (`outbox::log`,
//!   `outbox::segment`); its sender gzips sealed batches and POSTs them, advancing the log only on
//!   2xx, retrying or parking otherwise; `outbox::set` keeps a worker's outboxes in step with the config.
//! * `upstream` — connections to backends (`upstream::conn`, answers read by `http::client`), the
//!   health checker, and the per-backend state threads share (`upstream::lag`: which replicas are
//!   behind, read by the planner).
//! * `jobs` — `/repair`, `/rebalance`, `/jobs`: a thread that compares replicas window by window and
//!   writes the missing series-windows through the lacking backend's outbox.
//!
//! Beside the flow: `gunzip` (bounded decompression of gzip bodies and of stored gzip batches, used by
//! `write` and `outbox`), `config` (model and validation, Redis/file sources, the poller thread that hands
//! new snapshots to workers), `control` (the messages between threads), `shared` (what threads
//! share: settings, counters, the in-flight budget), `run` (process life cycle), `cli`, `defaults`,
//! `logger`, `slab`, `stats` (counters every step bumps, `ops` reads).

pub mod cli;
pub mod config;
pub mod control;
pub mod defaults;
pub mod gunzip;
pub mod http;
pub mod jobs;
pub mod logger;
pub mod net;
pub mod ops;
pub mod outbox;
pub mod prom;
pub mod query;
pub mod run;
pub mod shared;
pub mod slab;
pub mod stats;
pub mod upstream;
pub mod worker;
pub mod write;
