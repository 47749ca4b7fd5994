//! The promise of the outbox: nothing the proxy answered 204 is ever lost — not by a backend outage,
//! not by `kill -9` of the proxy, not by a restart with another thread count, not by a damaged log.
//!
//! Every test writes lines with unique ids (field `v`, and the timestamp `base + id`) through a real
//! proxy (configured through a real Redis) and checks the backends directly: every acknowledged id is
//! stored, and nothing that was never written is. Lines of requests that did not get a 204 (in flight
//! at a kill) may or may not arrive.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use util::inspect::{self, RecordInfo};
use util::load::{self, Load, LoadSpec};
use util::site::{DB, FAST, Site, WAIT, fast_with, influxd_with_db};
use util::{Behavior, FakeBackend, Influxd, Proxy, ProxyConfig, wait_until};

/// Waits until `influxd` holds exactly `ids` in `measurement`.
fn wait_exact(influxd: &Influxd, measurement: &str, ids: &BTreeSet<u64>) {
    let stored = load::wait_for_ids(influxd, DB, measurement, ids, ids, WAIT);
    assert_eq!(stored.len(), ids.len(), "{measurement} on {}", influxd.addr());
}

// ------------------------------------------------------------------------------------------------ 1

#[test]
fn replica_outage_under_continuous_load_loses_nothing() {
    let a = influxd_with_db();
    let mut b = influxd_with_db();
    let config =
        ProxyConfig::new().backend("a", &a.url(), FAST).backend("b", &b.url(), FAST).keymap("load", &["a", "b"]);
    let site = Site::new(config, "durability-data");
    let proxy = site.proxy(2, &[]);

    let spec =
        LoadSpec { writers: 2, lines_per_request: 100, pause: Duration::from_millis(10), ..site.spec(DB, "load") };
    let started = Instant::now();
    let running = Load::start(&spec);
    running.wait_acked_requests(20, WAIT);
    b.stop();
    let outage_from = running.acked_requests();
    // Kept sleeps: the length of the outage under load is the thing tested, then the load runs on
    // until about 3 s after it started.
    std::thread::sleep(Duration::from_millis(1200));
    let during_outage = running.acked_requests() - outage_from;
    b.start_again();
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()).max(Duration::from_millis(300)));
    let result = running.stop();

    assert_eq!(result.requests_failed, 0, "writes failed while one replica was down: {:?}", result.errors);
    assert!(during_outage > 10, "only {during_outage} requests acknowledged while b was down");
    assert_eq!(result.acked, result.attempted);
    wait_exact(&a, "load", &result.acked);
    wait_exact(&b, "load", &result.acked);
    let health = inspect::backend_health(&proxy.addr(), "b");
    assert_eq!(health["up"], true, "{health}");
}

/// Per series, in the order a backend received them, ids (and so timestamps) only increase: the
/// data held back during an outage is not overtaken by newer data when the backend returns.
#[test]
fn replica_outage_keeps_order_per_series() {
    let a = influxd_with_db();
    let fake = FakeBackend::start();
    let config =
        ProxyConfig::new().backend("a", &a.url(), FAST).backend("f", &fake.url(), FAST).keymap("ord", &["a", "f"]);
    let site = Site::new(config, "durability-data");
    let _proxy = site.proxy(2, &[]);

    let spec = LoadSpec { writers: 3, lines_per_request: 50, pause: Duration::from_millis(10), ..site.spec(DB, "ord") };
    let running = Load::start(&spec);
    running.wait_acked_requests(15, WAIT);
    // Kept sleeps: a second of failing sends (several retries) under load, then a second of load
    // after the recovery; the timing is the scenario.
    fake.set_write(Behavior::Reset);
    std::thread::sleep(Duration::from_millis(1000));
    fake.set_write(Behavior::Ok);
    std::thread::sleep(Duration::from_millis(1000));
    let result = running.stop();
    assert_eq!(result.requests_failed, 0, "{:?}", result.errors);
    wait_exact(&a, "ord", &result.acked);

    // Every acknowledged line reaches the fake.
    let expected: BTreeMap<String, u64> =
        result.acked.iter().map(|&id| (spec.line(result.writer_of[&id], id), id)).collect();
    wait_until(WAIT, "every acknowledged line on the fake", || {
        let got: BTreeSet<String> = fake.write_lines().into_iter().collect();
        expected.keys().all(|l| got.contains(l))
    });
    let lines = fake.write_lines();
    let unknown: Vec<&String> = lines.iter().filter(|l| !expected.contains_key(*l)).collect();
    assert!(unknown.is_empty(), "lines never written reached the fake: {:?}", &unknown[..unknown.len().min(5)]);

    // Requests the fake reset were recorded too: the outage really hit sends.
    assert!(lines.len() > expected.len(), "no batch was refused during the outage; the test proves nothing");
    let series = assert_order_per_series(&lines);
    assert_eq!(series, spec.writers, "not every series reached the fake");
}

/// Series `w` and id of a line written by `LoadSpec::line`.
fn parse_line(line: &str) -> (usize, u64) {
    let w = line.split(",w=").nth(1).and_then(|r| r.split(' ').next()).and_then(|w| w.parse().ok());
    let id = line.split(" v=").nth(1).and_then(|r| r.split('i').next()).and_then(|v| v.parse().ok());
    match (w, id) {
        (Some(w), Some(id)) => (w, id),
        _ => panic!("unexpected line {line:?}"),
    }
}

/// Checks that, per series, ids only increase in the order lines were received. A line received
/// several times (a batch refused, then resent) counts at its last reception, the accepted one.
/// Returns the number of series.
fn assert_order_per_series(lines: &[String]) -> usize {
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        last.insert(l, i);
    }
    let mut delivered: Vec<(usize, &str)> = last.iter().map(|(l, &i)| (i, *l)).collect();
    delivered.sort();
    let mut previous: BTreeMap<usize, u64> = BTreeMap::new();
    for (pos, line) in delivered {
        let (w, id) = parse_line(line);
        if let Some(&p) = previous.get(&w) {
            assert!(id > p, "series w={w}: id {id} delivered after id {p} (reception {pos} of {})", lines.len());
        }
        previous.insert(w, id);
    }
    previous.len()
}

/// Each line of `expected` was received exactly once, and nothing else.
fn assert_received_once(lines: &[String], expected: &BTreeSet<String>) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in lines {
        *counts.entry(l).or_default() += 1;
    }
    let unknown: Vec<&&str> = counts.keys().filter(|l| !expected.contains(**l)).collect();
    assert!(unknown.is_empty(), "lines never written were received: {:?}", &unknown[..unknown.len().min(5)]);
    let missing = expected.iter().filter(|l| !counts.contains_key(l.as_str())).count();
    assert_eq!(missing, 0, "{missing} of {} acknowledged lines missing", expected.len());
    let twice: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{} lines received more than once, e.g. {:?}", twice.len(), &twice[..twice.len().min(3)]);
}

/// Waits until the fake received every line of `expected`, then a little longer for strays.
fn wait_fake_lines(fake: &FakeBackend, expected: &BTreeSet<String>) -> Vec<String> {
    wait_until(WAIT, "every acknowledged line on the fake", || {
        let got: BTreeSet<String> = fake.write_lines().into_iter().collect();
        expected.iter().all(|l| got.contains(l))
    });
    // Kept sleep: strays (duplicates) can only be watched for a while.
    std::thread::sleep(Duration::from_millis(500));
    fake.write_lines()
}

// ------------------------------------------------------------------------------------------------ 2, 8

/// How the test's requests come.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bodies {
    /// 100 lines, plain: appended line by line to open batches.
    Small,
    /// 2000 lines (> 64 KiB), each a batch of its own, stored gzip: compressed by the proxy when the
    /// client sent them plain, as the client compressed them when it sent gzip.
    Large { gzip: bool },
}

/// Writes while `b` is down, kill -9, then brings the proxy and the backend back in both orders.
fn kill9_while_backend_down(args: &[&str], both_orders: bool, bodies: Bodies) {
    let a = influxd_with_db();
    let mut b = influxd_with_db();
    // b seals a batch only once it is a second old: at the kill its last batch is still open
    // (committed for each request answered, not sealed).
    let slow: Vec<(&str, &str)> = fast_with(&[("interval", "1000")]);
    let config =
        ProxyConfig::new().backend("a", &a.url(), FAST).backend("b", &b.url(), &slow).keymap("k9", &["a", "b"]);
    let site = Site::new(config, "durability-data");
    // Small segments: the log of each worker spans several files, recovered and rotated.
    let mut all_args = vec!["--segment-bytes", "65536"];
    all_args.extend_from_slice(args);
    let mut proxy = site.proxy(2, &all_args);
    let spec = match bodies {
        Bodies::Small => LoadSpec { lines_per_request: 100, ..site.spec(DB, "k9") },
        Bodies::Large { gzip } => LoadSpec { lines_per_request: 2000, gzip, ..site.spec(DB, "k9") },
    };

    b.stop();
    wait_until(WAIT, "b reported down", || inspect::backend_health(&site.addr(), "b")["up"] == false);
    let mut acked = load::write_acked(&spec, 0, 0, 20, Duration::from_millis(10));
    acked.extend(load::write_acked(&spec, 1, 100_000, 20, Duration::from_millis(10)));
    // Right after the last 204.
    proxy.kill9();
    let files = inspect::segment_files(site.data_dir(), "b");
    assert!(files.len() >= 3, "b's data should span several segment files, found {}", files.len());
    if bodies != Bodies::Small {
        let records: Vec<RecordInfo> =
            files.iter().flat_map(|f| inspect::parse_records(&std::fs::read(f).expect("segment"))).collect();
        assert!(records.iter().all(|r| r.gzip), "every body was stored as a gzip record");
        assert_eq!(ids_of(&records), acked, "the gzip records hold every acknowledged line");
    }
    // Backend first, then the proxy.
    b.start_again();
    proxy.restart();
    wait_exact(&b, "k9", &acked);
    wait_exact(&a, "k9", &acked);

    if both_orders {
        b.stop();
        wait_until(WAIT, "b reported down", || inspect::backend_health(&site.addr(), "b")["up"] == false);
        let mut more = load::write_acked(&spec, 0, 200_000, 20, Duration::from_millis(10));
        more.extend(load::write_acked(&spec, 1, 300_000, 20, Duration::from_millis(10)));
        acked.extend(more);
        proxy.kill9();
        // The proxy first, while the backend is still down, then the backend: once the restarted
        // proxy has seen b down (backends start out up).
        proxy.restart();
        wait_until(WAIT, "the restarted proxy reporting b down", || site.health("b")["up"] == false);
        b.start_again();
        wait_exact(&b, "k9", &acked);
        wait_exact(&a, "k9", &acked);
    }
}

#[test]
fn kill9_while_backend_down_then_restart_in_either_order() {
    kill9_while_backend_down(&[], true, Bodies::Small);
}

#[test]
fn kill9_while_backend_down_with_large_bodies_stored_gzipped() {
    kill9_while_backend_down(&[], false, Bodies::Large { gzip: false });
    kill9_while_backend_down(&[], false, Bodies::Large { gzip: true });
}

#[test]
fn sync_always_survives_kill9() {
    kill9_while_backend_down(&["--sync", "always"], false, Bodies::Small);
}

#[test]
fn sync_batch_survives_kill9() {
    kill9_while_backend_down(&["--sync", "batch"], false, Bodies::Small);
}

// ------------------------------------------------------------------------------------------------ 3

/// Three kill -9 / restart cycles while writers keep going (reconnecting after each kill).
#[test]
fn kill9_under_load_with_backends_up() {
    let a = influxd_with_db();
    let b = influxd_with_db();
    let config =
        ProxyConfig::new().backend("a", &a.url(), FAST).backend("b", &b.url(), FAST).keymap("crash", &["a", "b"]);
    let site = Site::new(config, "durability-data");
    let mut proxy = site.proxy(2, &["--segment-bytes", "262144"]);

    let spec =
        LoadSpec { writers: 3, lines_per_request: 100, pause: Duration::from_millis(2), ..site.spec(DB, "crash") };
    let running = Load::start(&spec);
    for cycle in 0..3u64 {
        let before = running.acked_requests();
        running.wait_acked_requests(before + 40, WAIT);
        // A kill at a moment that differs from cycle to cycle.
        std::thread::sleep(Duration::from_millis(50 + 70 * cycle));
        proxy.kill9();
        // Kept sleep: the proxy stays down a moment, so that requests of the load fail (asserted below).
        std::thread::sleep(Duration::from_millis(100));
        proxy.restart();
    }
    running.wait_acked_requests(running.acked_requests() + 20, WAIT);
    let result = running.stop();
    assert!(result.acked.len() > 10_000, "only {} lines acknowledged", result.acked.len());
    assert!(result.requests_failed > 0, "no request failed: the kills did not hit the load");
    for influxd in [&a, &b] {
        let stored = load::wait_for_ids(influxd, DB, "crash", &result.acked, &result.attempted, WAIT);
        // Stable: nothing more arrives afterwards (no replay beyond what was written). Kept sleep: an
        // absence is watched for a while.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(influxd.count(DB, "crash"), stored.len() as u64, "on {}", influxd.addr());
    }
}

/// After a kill -9 with the backend down, the recovered records go out before the ones written
/// after the restart, and each line once (one worker, so one log holds each series).
#[test]
fn kill9_recovered_data_is_sent_before_newer_data() {
    let fake = FakeBackend::start();
    let config = ProxyConfig::new().backend("f", &fake.url(), FAST).keymap("seq", &["f"]);
    let site = Site::new(config, "durability-data");
    let mut proxy = site.proxy(1, &["--segment-bytes", "65536"]);
    fake.stop();
    wait_until(WAIT, "f reported down", || inspect::backend_health(&site.addr(), "f")["up"] == false);
    let spec = LoadSpec { lines_per_request: 100, ..site.spec(DB, "seq") };
    let mut acked = load::write_acked(&spec, 0, 0, 20, Duration::from_millis(5));
    acked.extend(load::write_acked(&spec, 1, 100_000, 20, Duration::from_millis(5)));
    proxy.kill9();
    proxy.restart();
    wait_until(WAIT, "f reported down", || inspect::backend_health(&site.addr(), "f")["up"] == false);
    acked.extend(load::write_acked(&spec, 0, 10_000, 20, Duration::from_millis(5)));
    acked.extend(load::write_acked(&spec, 1, 110_000, 20, Duration::from_millis(5)));
    fake.start_again();
    let expected: BTreeSet<String> = acked.iter().map(|&id| spec.line(if id >= 100_000 { 1 } else { 0 }, id)).collect();
    let lines = wait_fake_lines(&fake, &expected);
    assert_received_once(&lines, &expected);
    assert_eq!(assert_order_per_series(&lines), 2);
}

// ------------------------------------------------------------------------------------------------ 4, 5

/// Lines written while backend `name` was down, then SIGTERM: the proxy's single segment file of
/// that backend and its records.
struct StoppedLog {
    file: PathBuf,
    records: Vec<RecordInfo>,
}

/// With backend `name` down: `requests` requests of 20 lines each, far enough apart that each
/// becomes its own record; then SIGTERM (exit 0) and the segment file is parsed.
fn write_then_stop(site: &Site, proxy: &mut Proxy, name: &str, measurement: &str, requests: u64) -> StoppedLog {
    wait_until(WAIT, "backend reported down", || inspect::backend_health(&site.addr(), name)["up"] == false);
    let spec = LoadSpec { lines_per_request: 20, ..site.spec(DB, measurement) };
    load::write_acked(&spec, 0, 0, requests, Duration::from_millis(90));
    let status = proxy.terminate();
    assert!(status.success(), "SIGTERM exit status {status}");
    let files = inspect::segment_files(site.data_dir(), name);
    assert_eq!(files.len(), 1, "expected one segment file: {files:?}");
    let bytes = std::fs::read(&files[0]).expect("read segment");
    let records = inspect::parse_records(&bytes);
    let lines: usize = records.iter().map(|r| r.lines().len()).sum();
    assert_eq!(lines as u64, requests * 20, "the segment does not hold every acknowledged line");
    assert!(records.len() >= 5, "only {} records", records.len());
    StoppedLog { file: files[0].clone(), records }
}

/// Ids of the lines of `records`.
fn ids_of(records: &[RecordInfo]) -> BTreeSet<u64> {
    records
        .iter()
        .flat_map(|r| r.lines())
        .map(|l| {
            let v = l.split(" v=").nth(1).and_then(|r| r.split('i').next());
            v.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("unexpected line {l:?}"))
        })
        .collect()
}

fn torn_tail_test(damage: impl FnOnce(&StoppedLog)) {
    let mut a = influxd_with_db();
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("torn", &["a"]);
    let site = Site::new(config, "durability-data");
    let mut proxy = site.proxy(1, &[]);
    a.stop();
    let log = write_then_stop(&site, &mut proxy, "a", "torn", 12);
    let all = ids_of(&log.records);
    let intact_before_damage = ids_of(&log.records[..log.records.len() - 1]);
    damage(&log);
    let cut_whole_last = std::fs::metadata(&log.file).map(|m| m.len() as usize).unwrap_or(0)
        < log.records.last().map_or(0, RecordInfo::end);

    a.start_again();
    proxy.restart();
    let expected = if cut_whole_last { intact_before_damage } else { all };
    wait_exact(&a, "torn", &expected);
    // Kept sleep: an absence (points arriving later) is watched for a while.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(a.count(DB, "torn"), expected.len() as u64, "more points arrived later");
    let text = proxy.log();
    assert!(text.contains("torn tail"), "the proxy log does not mention the cut torn tail");
    let cut = inspect::metric(&proxy.addr(), "influx_proxy_backend_recovery_cut_bytes_total", &[("backend", "a")]);
    assert!(cut.is_some_and(|c| c > 0.0), "influx_proxy_backend_recovery_cut_bytes_total for a: {cut:?}");
}

#[test]
fn torn_tail_garbage_after_last_record_is_cut() {
    torn_tail_test(|log| {
        let end = log.records.last().map_or(0, RecordInfo::end);
        let mut bytes = std::fs::read(&log.file).expect("read segment");
        // A write under way at the crash: a record header and part of a payload, never committed.
        let garbage = b"RECD\x04\x00\x00\x00\x17\x00\x00\x00\xde\xad\xbe\xefdb=dbtorn,w=0 v=999i 12";
        bytes[end..end + garbage.len()].copy_from_slice(garbage);
        // And junk appended after the end of the preallocated file.
        bytes.extend_from_slice(b"\xff\xfe junk appended after the end of the file");
        std::fs::write(&log.file, bytes).expect("write segment");
    });
}

#[test]
fn torn_tail_truncated_inside_last_record_is_cut() {
    torn_tail_test(|log| {
        let last = log.records.last().expect("records");
        let cut_at = last.payload_offset + last.payload_len / 2;
        let file = std::fs::OpenOptions::new().write(true).open(&log.file).expect("open segment");
        file.set_len(cut_at as u64).expect("truncate segment");
    });
}

#[test]
fn flipped_byte_mid_segment_costs_one_record_only() {
    let fake = FakeBackend::start();
    let config = ProxyConfig::new().backend("f", &fake.url(), FAST).keymap("flip", &["f"]);
    let site = Site::new(config, "durability-data");
    let mut proxy = site.proxy(1, &[]);
    fake.stop();
    let log = write_then_stop(&site, &mut proxy, "f", "flip", 12);
    let k = log.records.len() / 2;
    let victim = &log.records[k];
    let mut bytes = std::fs::read(&log.file).expect("read segment");
    // A digit in the middle of the payload: flipped, the line would still parse, just wrong.
    let at = (victim.payload_offset + victim.payload_len / 2..victim.payload_offset + victim.payload_len)
        .find(|&i| bytes[i].is_ascii_digit())
        .expect("a digit in the payload");
    bytes[at] ^= 0x01;
    std::fs::write(&log.file, &bytes).expect("write segment");

    let written: BTreeSet<String> = log.records.iter().flat_map(RecordInfo::lines).collect();
    let expected: BTreeSet<String> =
        log.records.iter().enumerate().filter(|(i, _)| *i != k).flat_map(|(_, r)| r.lines()).collect();
    fake.start_again();
    proxy.restart();
    wait_until(WAIT, "the intact records on the fake", || {
        let got: BTreeSet<String> = fake.write_lines().into_iter().collect();
        expected.iter().all(|l| got.contains(l))
    });
    // Kept sleep: garbled or duplicate lines arriving later can only be watched for a while.
    std::thread::sleep(Duration::from_millis(500));
    let got = fake.write_lines();
    let garbled: Vec<&String> = got.iter().filter(|l| !written.contains(*l)).collect();
    assert!(garbled.is_empty(), "lines that were never written reached the backend: {garbled:?}");
    let mut seen = BTreeSet::new();
    let dups: Vec<&String> = got.iter().filter(|l| !seen.insert(*l)).collect();
    assert!(dups.is_empty(), "lines delivered twice: {:?}", &dups[..dups.len().min(5)]);
    let from_victim: Vec<&String> = got.iter().filter(|l| !expected.contains(*l)).collect();
    assert!(from_victim.is_empty(), "lines of the damaged record were delivered: {from_victim:?}");
    assert_eq!(got.len(), expected.len());

    let damaged =
        inspect::backend_dirs(site.data_dir(), "f").iter().flat_map(|d| inspect::files_ending(d, ".damaged")).count();
    assert!(damaged > 0, "no .damaged copy of the segment was kept");
    assert!(proxy.log().contains("checksum mismatch"), "the proxy log does not name the damage");
    let cut = inspect::metric(&proxy.addr(), "influx_proxy_backend_recovery_cut_bytes_total", &[("backend", "f")]);
    assert!(cut.is_some_and(|c| c > 0.0), "recovery_cut_bytes_total for f: {cut:?}");
}

// ------------------------------------------------------------------------------------------------ 6

#[test]
fn fewer_threads_after_restart_adopt_every_workers_log() {
    let mut a = influxd_with_db();
    let config = ProxyConfig::new().backend("a", &a.url(), FAST).keymap("thr", &["a"]);
    let site = Site::new(config, "durability-data");
    let mut proxy = site.proxy(4, &[]);
    a.stop();
    wait_until(WAIT, "a reported down", || inspect::backend_health(&site.addr(), "a")["up"] == false);

    // New connections until some worker other than 0 holds data (and at least two workers do).
    let spec = LoadSpec { lines_per_request: 20, ..site.spec(DB, "thr") };
    let mut acked = BTreeSet::new();
    let workers_with_data = || -> BTreeSet<String> {
        inspect::segment_files(site.data_dir(), "a")
            .iter()
            .filter_map(|f| f.parent()?.file_name()?.to_str().map(String::from))
            .collect()
    };
    for conn in 0..40u64 {
        acked.extend(load::write_acked(&spec, conn as usize, conn * 1000, 3, Duration::ZERO));
        let held = workers_with_data();
        if conn >= 5 && held.len() >= 2 && held.iter().any(|w| w != "w0") {
            break;
        }
    }
    let held = workers_with_data();
    assert!(held.len() >= 2 && held.iter().any(|w| w != "w0"), "data only in {held:?}");
    let status = proxy.terminate();
    assert!(status.success(), "SIGTERM exit status {status}");
    drop(proxy);

    let proxy = site.proxy(1, &[]);
    a.start_again();
    wait_exact(&a, "thr", &acked);
    wait_until(Duration::from_secs(5), "adopted logs deleted once drained", || {
        workers_with_data().iter().all(|w| w == "w0")
    });
    let health = inspect::backend_health(&proxy.addr(), "a");
    assert_eq!(health["backlog_records"], 0, "{health}");
}

// ------------------------------------------------------------------------------------------------ 7

#[test]
fn sigterm_under_load_exits_zero_in_time_and_loses_nothing() {
    let a = influxd_with_db();
    let mut b = influxd_with_db();
    let config =
        ProxyConfig::new().backend("a", &a.url(), FAST).backend("b", &b.url(), FAST).keymap("term", &["a", "b"]);
    let site = Site::new(config, "durability-data");
    let mut proxy = site.proxy(2, &["--shutdown-timeout", "3"]);
    b.stop();
    wait_until(WAIT, "b reported down", || inspect::backend_health(&site.addr(), "b")["up"] == false);

    let spec =
        LoadSpec { writers: 3, lines_per_request: 100, pause: Duration::from_millis(5), ..site.spec(DB, "term") };
    let running = Load::start(&spec);
    running.wait_acked_requests(40, WAIT);
    let sent = Instant::now();
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(6));
    let took = sent.elapsed();
    let result = running.stop();
    let status = status.unwrap_or_else(|| panic!("the proxy still runs {took:?} after SIGTERM (--shutdown-timeout 3)"));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took <= Duration::from_millis(4000), "SIGTERM took {took:?} with --shutdown-timeout 3");

    // a was up: the shutdown flushed everything to it.
    let stored = load::wait_for_ids(&a, DB, "term", &result.acked, &result.attempted, Duration::from_secs(2));
    // b was down: its lines wait in the log for the next start.
    proxy.restart();
    b.start_again();
    load::wait_for_ids(&b, DB, "term", &result.acked, &result.attempted, WAIT);
    // Lines of requests cut by the shutdown were stored for both replicas or for neither.
    wait_until(WAIT, "b holding as many points as a", || b.count(DB, "term") >= stored.len() as u64);
    let stored_b: BTreeSet<u64> = load::stored_ids(&b, DB, "term").into_iter().collect();
    assert_eq!(stored, stored_b, "replicas differ");
}

/// Logs adopted from workers that no longer exist are sent before the adopting worker's own
/// newer data: per series, the order survives the change of thread count.
#[test]
fn fewer_threads_send_adopted_data_before_newer_data() {
    let fake = FakeBackend::start();
    let config = ProxyConfig::new().backend("f", &fake.url(), FAST).keymap("thro", &["f"]);
    let site = Site::new(config, "durability-data");
    let mut proxy = site.proxy(3, &["--segment-bytes", "65536"]);
    fake.stop();
    wait_until(WAIT, "f reported down", || inspect::backend_health(&site.addr(), "f")["up"] == false);

    // One series per connection; connections until a worker other than 0 holds data.
    let spec = LoadSpec { lines_per_request: 50, ..site.spec(DB, "thro") };
    let mut expected = BTreeSet::new();
    let mut series = 0;
    for conn in 0..40u64 {
        let ids = load::write_acked(&spec, conn as usize, conn * 10_000, 4, Duration::ZERO);
        expected.extend(ids.iter().map(|&id| spec.line(conn as usize, id)));
        series = conn as usize + 1;
        let held: BTreeSet<String> = inspect::segment_files(site.data_dir(), "f")
            .iter()
            .filter_map(|f| f.parent()?.file_name()?.to_str().map(String::from))
            .collect();
        if conn >= 3 && held.iter().any(|w| w != "w0") {
            break;
        }
    }
    let status = proxy.terminate();
    assert!(status.success(), "SIGTERM exit status {status}");
    drop(proxy);

    // One worker now; every series gets newer lines while f is still down.
    let _proxy = site.proxy(1, &["--segment-bytes", "65536"]);
    wait_until(WAIT, "f reported down", || inspect::backend_health(&site.addr(), "f")["up"] == false);
    for w in 0..series {
        let ids = load::write_acked(&spec, w, w as u64 * 10_000 + 5_000, 2, Duration::ZERO);
        expected.extend(ids.iter().map(|&id| spec.line(w, id)));
    }
    fake.start_again();
    let lines = wait_fake_lines(&fake, &expected);
    assert_received_once(&lines, &expected);
    assert_eq!(assert_order_per_series(&lines), series);
}

/// SIGTERM while a backend takes a batch and never answers: the proxy still exits 0 at
/// `--shutdown-timeout`, and the unanswered batch is delivered after the restart.
#[test]
fn sigterm_with_hung_backend_exits_at_shutdown_timeout() {
    let fake = FakeBackend::start();
    fake.set_write(Behavior::Hang);
    let fields: Vec<(&str, &str)> = fast_with(&[("timeout", "30000")]);
    let config = ProxyConfig::new().backend("f", &fake.url(), &fields).keymap("hung", &["f"]);
    let site = Site::new(config, "durability-data");
    let mut proxy = site.proxy(2, &["--shutdown-timeout", "2"]);
    let spec = LoadSpec { lines_per_request: 50, ..site.spec(DB, "hung") };
    let ids = load::write_acked(&spec, 0, 0, 10, Duration::from_millis(10));
    wait_until(WAIT, "a batch hanging on f", || !fake.requests_to("/write").is_empty());

    let sent = Instant::now();
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(8));
    let took = sent.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM (--shutdown-timeout 2)"));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took <= Duration::from_millis(3000), "SIGTERM took {took:?} with --shutdown-timeout 2");

    fake.stop();
    fake.clear();
    fake.set_write(Behavior::Ok);
    fake.start_again();
    proxy.restart();
    let expected: BTreeSet<String> = ids.iter().map(|&id| spec.line(0, id)).collect();
    let lines = wait_fake_lines(&fake, &expected);
    assert_received_once(&lines, &expected);
}
