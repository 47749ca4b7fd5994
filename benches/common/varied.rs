//! The load bench's data, also checked alone in `write_path`: lines of Telegraf-like series (five
//! measurements of different shapes, thousands of hosts), random values, unique timestamps, ~80–120 B.

use super::util::rng::Rng;

/// A float with 3 decimals below `max`, as a string.
fn float(rng: &mut Rng, max: usize) -> String {
    format!("{}.{:0>3}", rng.below(max), rng.below(1000))
}

/// Batch `b` of the pool, `lines` long: lines of `series` series in random order (as a Telegraf
/// fleet's flushes interleave), random values, timestamp `base + b * lines + i` ns (unique in the pool).
/// `runs`: the lines of each measurement together instead, as one Telegraf agent lists each input's
/// metrics (same lines, same timestamps).
pub fn batch(b: usize, lines: usize, series: usize, runs: bool, rng: &mut Rng) -> Vec<u8> {
    const BASE: u64 = 1_700_000_000_000_000_000;
    let mut body: Vec<(usize, String)> = Vec::with_capacity(lines);
    for i in 0..lines {
        let s = rng.below(series);
        let host = s / 5;
        let ts = BASE + (b * lines + i) as u64;
        let line = match s % 5 {
            0 => format!(
                "cpu,host=web-{host:05},region=eu-west-{},cpu=cpu{} usage_user={},usage_system={},usage_idle={} {ts}",
                host % 3,
                host % 8,
                float(rng, 100),
                float(rng, 30),
                float(rng, 100)
            ),
            1 => format!(
                "mem,host=web-{host:05},region=eu-west-{} used={}i,free={}i,used_percent={} {ts}",
                host % 3,
                rng.below(1 << 34),
                rng.below(1 << 33),
                float(rng, 100)
            ),
            2 => format!(
                "disk,host=web-{host:05},path=/var/lib/d{},fstype=ext4 used={}i,inodes_free={}i {ts}",
                host % 4,
                rng.below(1 << 40),
                rng.below(1 << 24)
            ),
            3 => format!(
                "net,host=web-{host:05},interface=eth{} bytes_recv={}i,bytes_sent={}i,drop_in={}i {ts}",
                host % 2,
                rng.below(1 << 42),
                rng.below(1 << 42),
                rng.below(100)
            ),
            _ => format!(
                "system,host=web-{host:05},region=eu-west-{} load1={},load5={},n_users={}i,uptime={}i {ts}",
                host % 3,
                float(rng, 8),
                float(rng, 8),
                rng.below(20),
                rng.below(1 << 26)
            ),
        };
        body.push((if runs { s % 5 } else { 0 }, line + "\n"));
    }
    body.sort_by_key(|&(measurement, _)| measurement);
    body.into_iter().flat_map(|(_, line)| line.into_bytes()).collect()
}
