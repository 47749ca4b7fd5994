//! Criterion benches of the per-line write path, each step alone and all together:
//! * `split`: finding line ends, measurements and timestamps, and checking each line as influxd 1.6
//!   would (`write::lineproto`);
//! * `split_route`: plus the keymap lookup (`write::route`);
//! * `split/varied_interleaved`, `split/varied_runs`: the same check on the load bench's data (five
//!   measurements of different shapes), interleaved line by line as that bench sends them, and the same
//!   lines with each measurement's lines together: what the line shapes changing from line to line
//!   cost the checker's branches;
//! * `store`: the whole `/write` body path into two replicated outboxes (split, route, copy into the
//!   mmap logs, commit), as a 5000-line request costs a worker, network excluded; the outboxes are new
//!   for every iteration, so this includes the first touch of fresh segment pages; and the same with
//!   the measurements sharded over the two, in runs of 500 lines (the body is not one batch);
//! * `log`: one outbox log in steady state: append 5000 lines, commit, seal, acknowledge (segments are
//!   recycled as they would be with a healthy backend);
//! * `gzip1`: compressing a sealed batch at level 1 as the proxy does (ISA-L), what sending costs per line;
//!   and libdeflate's level 1, for comparison.
//!
//! Throughput is reported per byte and per line (`cargo bench --bench write_path`).

mod common;

use std::sync::Arc;

use common::util::rng::Rng;
use common::varied;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use influx_proxy::cli::SyncPolicy;
use influx_proxy::config::{Config, RawConfig};
use influx_proxy::outbox::LogOptions;
use influx_proxy::outbox::deflate::Deflate;
use influx_proxy::outbox::log::Log;
use influx_proxy::outbox::set::Outboxes;
use influx_proxy::stats::ProxyStats;
use influx_proxy::upstream::BackendState;
use influx_proxy::upstream::Registry;
use influx_proxy::write::lineproto::Lines;
use influx_proxy::write::{self, Scratch, WriteParams};

const LINES: usize = 5000;
const MEASUREMENTS: [&str; 10] =
    ["cpu", "mem", "disk", "diskio", "net", "netstat", "processes", "swap", "system", "kernel"];

/// A Telegraf-like batch: runs of 500 lines per measurement, ~110 bytes a line.
fn telegraf_body() -> Vec<u8> {
    let mut body = String::new();
    for i in 0..LINES {
        let m = MEASUREMENTS[i / 500 % MEASUREMENTS.len()];
        body.push_str(&format!(
            "{m},host=server-{:02},region=eu-west,cpu=cpu{} usage_user={}.5,usage_system=3.25,usage_idle=84.25 {}\n",
            i % 16,
            i % 8,
            i % 100,
            1_700_000_000_000_000_000u64 + i as u64
        ));
    }
    body.into_bytes()
}

/// Short lines (~60 bytes), the size the issue's per-line figures assume.
fn short_body() -> Vec<u8> {
    (0..LINES)
        .map(|i| format!("{},host=h{} value={}i {}\n", MEASUREMENTS[i % 10], i % 7, i, 1_700_000_000_000 + i))
        .collect::<String>()
        .into_bytes()
}

/// Every measurement to both backends (and a second keymap each, to `a`).
fn config() -> Config {
    let mut keymaps = String::new();
    for (i, m) in MEASUREMENTS.iter().enumerate() {
        keymaps.push_str(&format!("\"{m}\": [\"a\", \"b\"], \"{m}_extra{i}\": [\"a\"], "));
    }
    config_with(&keymaps)
}

/// Measurements sharded: each to one of the two backends, in turn.
fn sharded_config() -> Config {
    let keymaps: String =
        MEASUREMENTS.iter().enumerate().map(|(i, m)| format!("\"{m}\": [\"{}\"], ", ["a", "b"][i % 2])).collect();
    config_with(&keymaps)
}

/// Two backends `a` and `b`, `keymaps` (JSON members, each followed by `, `) and `_default_` to `a`.
fn config_with(keymaps: &str) -> Config {
    let json = format!(
        r#"{{"NODES": {{"l1": {{"interval": "0"}}}},
            "BACKENDS": {{"a": {{"url": "http://127.0.0.1:9"}}, "b": {{"url": "http://127.0.0.1:10"}}}},
            "KEYMAPS": {{ {keymaps} "_default_": ["a"] }}}}"#
    );
    let raw = RawConfig::from_json(&json).expect("bench config");
    Config::build(raw, "l1", &Registry::default()).expect("valid bench config")
}

fn bench_split(c: &mut Criterion) {
    let config = config();
    for (name, body) in [("telegraf", telegraf_body()), ("short", short_body())] {
        let mut g = c.benchmark_group(format!("split/{name}"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("bytes", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for line in Lines::new(&body).flatten() {
                    n += line.measurement_len;
                }
                n
            })
        });
        g.throughput(Throughput::Elements(LINES as u64));
        g.bench_function("split_route_lines", |b| {
            let mut scratch = Vec::new();
            b.iter(|| {
                let mut routed = 0usize;
                for line in Lines::new(&body).flatten() {
                    let m = line.measurement(&mut scratch);
                    if let Some(r) = config.routes.lookup(m) {
                        routed += config.routes.backends(r).len();
                    }
                }
                routed
            })
        });
        g.finish();
    }
    for (name, runs) in [("varied_interleaved", false), ("varied_runs", true)] {
        let body = varied::batch(0, LINES, 5000, runs, &mut Rng(0x9e37_79b9_7f4a_7c15));
        let mut g = c.benchmark_group(format!("split/{name}"));
        g.throughput(Throughput::Elements(LINES as u64));
        g.bench_function("lines", |b| {
            b.iter(|| Lines::new(&body).flatten().map(|line| line.measurement_len).sum::<usize>())
        });
        g.finish();
    }
}

fn bench_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(LINES as u64));
    for (name, config) in [("5000_lines_to_2_replicas", config()), ("5000_lines_in_runs_to_2_shards", sharded_config())]
    {
        bench_store_with(&mut g, name, Arc::new(config));
    }
    g.finish();
}

fn bench_store_with(
    g: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    name: &str,
    config: Arc<Config>,
) {
    let body = telegraf_body();
    let stats = ProxyStats::default();
    g.bench_function(name, |b| {
        let mut scratch = Scratch::default();
        let mut request = 0;
        b.iter_batched(
            || {
                let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir = std::env::temp_dir().join(format!("ifxp-bench-{}-{n}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let opts = LogOptions {
                    data_dir: dir.clone(),
                    worker: 0,
                    threads: 1,
                    segment_bytes: 8 << 20,
                    sync: SyncPolicy::Never,
                };
                let outboxes = Outboxes::open(&config, opts, &Registry::default());
                (DirGuard(dir), outboxes)
            },
            |(guard, mut outboxes)| {
                request += 1;
                let wp = WriteParams { request, db: "telegraf", rp: None, precision: None, gzip: None };
                let r = write::store(&config, &wp, &body, &mut outboxes, &mut scratch, &stats);
                assert_eq!(r.status, 204);
                (guard, outboxes)
            },
            BatchSize::PerIteration,
        )
    });
}

fn bench_log(c: &mut Criterion) {
    let body = telegraf_body();
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let dir = DirGuard(std::env::temp_dir().join(format!("ifxp-bench-log-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let state = Arc::new(BackendState::new("bench", "http://127.0.0.1:9"));
    let (mut log, _) = Log::open(&dir.0, true, 8 << 20, u64::MAX, SyncPolicy::Never, state).expect("log");
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(LINES as u64));
    g.bench_function("append_commit_seal_ack_5000", |b| {
        b.iter(|| {
            log.begin(b"db=telegraf").expect("begin");
            for line in &lines {
                log.append(&[line, b"\n"]).expect("append");
            }
            log.commit();
            log.seal();
            while let Some(f) = log.front() {
                log.ack(&f);
            }
        })
    });
    g.finish();
}

fn bench_gzip(c: &mut Criterion) {
    let body = telegraf_body();
    let mut g = c.benchmark_group("gzip1");
    g.throughput(Throughput::Elements(LINES as u64));
    g.bench_function("batch_of_5000", |b| {
        let (mut deflate, mut out) = (Deflate::default(), Vec::new());
        b.iter(|| deflate.gzip_into(1, &body, &mut out).expect("gzip"))
    });
    g.bench_function("batch_of_5000_libdeflate", |b| {
        let mut comp = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).expect("level"));
        let mut out = vec![0; comp.gzip_compress_bound(body.len())];
        b.iter(|| comp.gzip_compress(&body, &mut out).expect("gzip"))
    });
    g.finish();
}

static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct DirGuard(std::path::PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

criterion_group!(benches, bench_split, bench_store, bench_log, bench_gzip);
criterion_main!(benches);
