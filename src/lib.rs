//! influx-proxy: a high-availability proxy for InfluxDB 1.x.
//!
//! How a write flows, module by module:
//! `worker` accepts a connection on its own `SO_REUSEPORT` listener (`net`) and reads requests with
//! `http::request`; `/write` goes to `write`, which gunzips the body with a bound (`write::gunzip`),
//! splits it into lines and finds each measurement without copying (`write::lineproto`), looks up the
//! measurement's backends (`write::route`) and appends each line to those backends' outboxes. An
//! `outbox` is an mmap-backed, append-only log on disk (`outbox::log`, `outbox::segment`); the client
//! gets its 204 once every line is committed there. The outbox's sender gzips sealed batches and POSTs
//! them over a non-blocking keep-alive connection (`upstream::conn`, answers parsed by `http::client`),
//! advancing the log only on 2xx, retrying or parking otherwise.
//!
//! A query flows through `query` (classify, filter, plan, relay or merge). Configuration comes from
//! Redis or a file (`config::source`), is validated into an immutable snapshot (`config`) and handed to
//! every worker; `upstream::health` pings backends; `ops` holds counters, `/health` and `/metrics`.
//! `jobs` repairs and rebalances replicas on its own thread, writing copies through the outboxes;
//! `upstream::lag` tells the planner which replicas are behind.

pub mod cli;
pub mod config;
pub mod defaults;
pub mod http;
pub mod jobs;
pub mod logger;
pub mod net;
pub mod ops;
pub mod outbox;
pub mod query;
pub mod run;
pub mod shared;
pub mod upstream;
pub mod worker;
pub mod write;
