//! Every default the proxy uses, in one place. The README's tables are written from this file: change a
//! value here and there together.

use std::time::Duration;

// ---- command line ----
pub const DEFAULT_REDIS: &str = "127.0.0.1:6379";
pub const DEFAULT_NODE: &str = "l1";
pub const DEFAULT_DATA_DIR: &str = "data";
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// InfluxDB's own `max-body-size`; applies to the decompressed body too.
pub const DEFAULT_MAX_BODY_BYTES: usize = 25_000_000;
/// Request body bytes all workers together buffer at once; a request that would go past it gets 503
/// instead of growing memory. (Heads are bounded per connection; each worker decompresses one body at a
/// time, bounded by the body limit.)
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 256 << 20;
/// Client connections per worker; further accepts are closed at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Growth of what waits in one worker's outbox (payload bytes of sealed batches not yet acknowledged)
/// past which the worker pauses its writers while the backend is up and taking batches
/// (`--pause-backlog-bytes`).
pub const DEFAULT_PAUSE_BACKLOG_BYTES: u64 = 64 << 20;
/// Size of one outbox log segment file. A record larger than this gets a segment of its own size.
pub const DEFAULT_SEGMENT_BYTES: usize = 8 << 20;
/// Fully acknowledged segments each log keeps for reuse. A sender is often a segment or two behind the
/// writer under load (a batch is acknowledged milliseconds after its seal, and segments fill in about as
/// long). With one spare, the load bench's logs created a new file (written full of zeros, 8 MiB) at 28%
/// of their rotations while deleting about as many emptied ones; with four, 12%, and few deletions.
pub const SPARE_SEGMENTS: usize = 4;
/// How long SIGTERM waits for in-flight requests and outbox flushing before exiting.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Config polling period of the config thread.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 5000;

// ---- HTTP limits ----
/// Largest request head (request line + headers).
pub const MAX_HEAD_BYTES: usize = 64 << 10;
pub const MAX_HEADERS: usize = 64;
/// Largest upstream response head.
pub const MAX_UPSTREAM_HEAD_BYTES: usize = 64 << 10;
/// Largest error body read from a backend's answer to a write.
pub const MAX_UPSTREAM_ERROR_BODY: usize = 64 << 10;
/// Bytes read from a socket per read call.
pub const READ_CHUNK: usize = 64 << 10;
/// A client whose unread responses exceed this stops being read from until it catches up.
pub const MAX_CLIENT_OUTPUT_BYTES: usize = 4 << 20;

// ---- node fields (Redis `default_node` / `n:<node>`) ----
pub const DEFAULT_LISTEN_ADDR: &str = ":6666";
pub const DEFAULT_NODE_INTERVAL_S: u64 = 10;
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 10;

// ---- backend fields (Redis `b:<backend>`) ----
pub const DEFAULT_BATCH_INTERVAL_MS: u64 = 1000;
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_QUERY_TIMEOUT_MS: u64 = 600_000;
pub const DEFAULT_MAX_ROW_LIMIT: u64 = 10_000;
pub const DEFAULT_CHECK_INTERVAL_MS: u64 = 1000;
pub const DEFAULT_REWRITE_INTERVAL_MS: u64 = 10_000;
/// libdeflate level for batches sent to a backend; 0 sends them uncompressed.
pub const DEFAULT_GZIP_LEVEL: u32 = 1;
/// Disk the outbox logs of one backend may use, all workers together.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 4 << 30;
/// A batch is sealed and sent once its payload reaches this many bytes, whatever `maxrowlimit` says.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 4 << 20;
/// A write body at least this large (decompressed) that is a batch as it stands (see `write::store`)
/// is stored as a batch of its own, gzip as the client sent it or compressed once by the proxy.
/// Smaller ones join the open batch, so backends are not sent many small batches.
pub const WHOLE_BATCH_MIN_BYTES: usize = 64 << 10;

// ---- sending ----
/// First pause after a failed send; doubles up to the backend's `rewriteinterval`.
pub const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(100);

// ---- the worker loop ----
/// Idle and lingering client connections are looked for this often (while there are connections).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often a worker with paused writers looks again whether its backlogs have shrunk (besides
/// looking after every outbox event).
pub const PAUSE_RECHECK: Duration = Duration::from_millis(10);
/// While data waits for a backend the health checker says is down (or a deadline nothing can act on
/// yet), its outbox looks again this often.
pub const HEALTH_RECHECK: Duration = Duration::from_millis(100);
/// While stopping, a worker checks for idle connections and settled outboxes this often.
pub const STOP_STEP: Duration = Duration::from_millis(10);
/// After `accept` failed for a reason other than running out of descriptors, try again this soon.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// A client with more to read than this many rounds in one turn waits for the next turn.
pub const MAX_READ_ROUNDS: usize = 8;
/// How long a closing connection keeps draining what the client still sends, so a reset does not
/// destroy the answer (as Go's server does).
pub const LINGER: Duration = Duration::from_secs(1);
/// Output and read buffers of a connection keep up to this much capacity between requests; a
/// lingering connection reads (and drops) at most this much per turn.
pub const OUTPUT_KEEP_BYTES: usize = 1 << 20;
/// A read buffer grown past this by one big body shrinks back to `RBUF_KEEP_BYTES` once idle.
pub const RBUF_SHRINK_ABOVE: usize = 4 << 20;
pub const RBUF_KEEP_BYTES: usize = 64 << 10;

/// What `X-Influxdb-Version` says. Clients only look at the leading `1.`.
pub const INFLUXDB_VERSION: &str = concat!("1.6.7-influx-proxy-", env!("CARGO_PKG_VERSION"));
