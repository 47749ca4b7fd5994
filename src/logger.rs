//! A small `log` backend: one line per event on stderr, `2026-01-02T03:04:05.678Z LEVEL module: message`.
//! The filter is `--log-level LEVEL`, or when that flag is absent `RUST_LOG` in its common form:
//! `info` or `warn,influx_proxy::outbox=debug` (the most specific module prefix wins).

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct Logger {
    default: LevelFilter,
    /// (module prefix, level), longest prefix first
    modules: Vec<(String, LevelFilter)>,
}

impl Logger {
    fn level_for(&self, target: &str) -> LevelFilter {
        self.modules
            .iter()
            .find(|(prefix, _)| target.starts_with(prefix.as_str()))
            .map_or(self.default, |(_, level)| *level)
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level_for(metadata.target())
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:5} {}: {}\n",
            utc_timestamp(SystemTime::now()),
            record.level(),
            record.target(),
            record.args()
        );
        // One write call per line keeps lines from different threads whole.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Parses a filter spec; `Err` names the part it could not read.
fn parse_spec(spec: &str) -> Result<Logger, String> {
    let mut logger = Logger { default: LevelFilter::Info, modules: Vec::new() };
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            None => logger.default = parse_level(part)?,
            Some((module, level)) => logger.modules.push((module.trim().to_string(), parse_level(level)?)),
        }
    }
    logger.modules.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    Ok(logger)
}

fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.trim().parse().map_err(|_| format!("unknown log level {s:?} (use error, warn, info, debug, trace or off)"))
}

/// Installs the logger. `flag` wins over the `RUST_LOG` environment variable. `Err` is one line naming
/// the flag or variable and the part it could not read.
pub fn init(flag: Option<&str>) -> Result<(), String> {
    let env = std::env::var("RUST_LOG").ok();
    let logger = match (flag, env.as_deref()) {
        (Some(spec), _) => parse_spec(spec).map_err(|e| format!("--log-level: {e}"))?,
        (None, Some(spec)) => parse_spec(spec).map_err(|e| format!("RUST_LOG: {e}"))?,
        (None, None) => parse_spec(crate::defaults::DEFAULT_LOG_LEVEL)?,
    };
    let max = logger.modules.iter().map(|(_, l)| *l).fold(logger.default, |a, b| a.max(b));
    log::set_boxed_logger(Box::new(logger)).map_err(|e| e.to_string())?;
    log::set_max_level(max);
    Ok(())
}

/// RFC 3339 UTC time with milliseconds, without a date library.
pub fn utc_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(utc_timestamp(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn spec_picks_most_specific_module() {
        let l = parse_spec("warn,influx_proxy=info,influx_proxy::outbox=trace").unwrap();
        assert_eq!(l.level_for("other"), LevelFilter::Warn);
        assert_eq!(l.level_for("influx_proxy::worker"), LevelFilter::Info);
        assert_eq!(l.level_for("influx_proxy::outbox::log"), LevelFilter::Trace);
        assert!(parse_spec("loud").is_err());
    }
}
