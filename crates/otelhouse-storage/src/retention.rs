//! How long records are kept, and which partitions go when.
//!
//! Retention is per signal. Its value comes from `otelhouse retention set`
//! (kept in `<data dir>/retention.json`, read again by a running server) or
//! else from the server's configuration, or else the default of 3 days. The
//! same policy refuses records that arrive already older than it (ingest)
//! and drops whole hour partitions once they lie entirely before it (here).
//! A disk budget, when set, drops the oldest partitions beyond it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use otelhouse_schema::Signal;

use crate::manifest::{self, HOUR_NANOS, PartMeta};

pub const DEFAULT: Duration = Duration::from_secs(3 * 24 * 3600);
/// Shortest retention accepted: partitions are hours.
pub const MIN: Duration = Duration::from_secs(3600);
const FILE: &str = "retention.json";

/// The live retention of each signal, shared by ingest and the store.
#[derive(Debug)]
pub struct RetentionPolicy {
    secs: [AtomicU64; 3],
}

impl RetentionPolicy {
    pub fn new(logs: Duration, traces: Duration, metrics: Duration) -> Self {
        RetentionPolicy {
            secs: [logs, traces, metrics].map(|d| AtomicU64::new(d.as_secs())),
        }
    }

    pub fn get(&self, signal: Signal) -> Duration {
        Duration::from_secs(self.secs[signal as usize].load(Ordering::Relaxed))
    }

    pub fn set(&self, signal: Signal, d: Duration) {
        self.secs[signal as usize].store(d.as_secs(), Ordering::Relaxed);
    }
}

/// Retention set with `otelhouse retention set`, by signal name.
pub fn load_overrides(data_dir: &Path) -> anyhow::Result<BTreeMap<Signal, Duration>> {
    let path = data_dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let raw: BTreeMap<String, String> = serde_json::from_slice(&text)
        .map_err(|e| anyhow::anyhow!("{} is damaged: {e}", path.display()))?;
    raw.into_iter()
        .map(|(k, v)| {
            let signal = Signal::parse(&k)
                .ok_or_else(|| anyhow::anyhow!("{}: unknown signal `{k}`", path.display()))?;
            Ok((signal, parse(&v)?))
        })
        .collect()
}

/// Records `signal`'s retention in the data directory (atomically); a
/// running server applies it within seconds.
pub fn save_override(data_dir: &Path, signal: Signal, d: Duration) -> anyhow::Result<()> {
    let mut all = load_overrides(data_dir)?;
    all.insert(signal, d);
    let raw: BTreeMap<&str, String> = all
        .into_iter()
        .map(|(s, d)| (s.as_str(), humantime::format_duration(d).to_string()))
        .collect();
    manifest::replace_file(data_dir, FILE, &serde_json::to_vec_pretty(&raw)?)
}

/// Parses a retention such as `7d`, `36h`, `2w`; at least an hour.
pub fn parse(s: &str) -> anyhow::Result<Duration> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| anyhow::anyhow!("`{s}` is not a duration such as 7d or 36h: {e}"))?;
    if d < MIN {
        anyhow::bail!(
            "retention `{s}` is shorter than the 1h minimum (data is kept in hour partitions)"
        );
    }
    Ok(d)
}

/// Why a partition was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Expired,
    DiskBudget,
}

/// The parts to drop at `now`: every partition that ended before its
/// signal's retention, then, while the rest exceeds `max_disk` bytes, the
/// oldest remaining partitions (of any table).
pub fn to_drop(
    parts: &[&PartMeta],
    now: i64,
    policy: &RetentionPolicy,
    max_disk: Option<u64>,
) -> Vec<(u64, Drop)> {
    let mut out = Vec::new();
    let mut kept: BTreeMap<(i64, &str), Vec<&PartMeta>> = BTreeMap::new();
    for p in parts {
        let signal = p.table().map_or(Signal::Logs, |t| t.signal());
        let cutoff = now.saturating_sub(policy.get(signal).as_nanos() as i64);
        if p.partition + HOUR_NANOS <= cutoff {
            out.push((p.id, Drop::Expired));
        } else {
            kept.entry((p.partition, p.table.as_str()))
                .or_default()
                .push(p);
        }
    }
    if let Some(budget) = max_disk {
        let mut total: u64 = kept.values().flatten().map(|p| p.bytes).sum();
        for parts in kept.values() {
            if total <= budget {
                break;
            }
            for p in parts {
                total -= p.bytes;
                out.push((p.id, Drop::DiskBudget));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(id: u64, table: &str, partition: i64, bytes: u64) -> PartMeta {
        PartMeta {
            id,
            table: table.into(),
            partition,
            level: 0,
            rows: 1,
            bytes,
            raw_bytes: bytes,
            index_bytes: 0,
            min_time: partition,
            max_time: partition + HOUR_NANOS - 1,
            attribute_columns: Vec::new(),
        }
    }

    #[test]
    fn a_partition_goes_once_all_of_it_is_older_than_the_retention() {
        let policy = RetentionPolicy::new(
            Duration::from_secs(2 * 3600),
            Duration::from_secs(24 * 3600),
            DEFAULT,
        );
        let h = HOUR_NANOS;
        let parts = [
            part(1, "otel_logs", 10 * h, 1),
            part(2, "otel_logs", 11 * h, 1),
            part(3, "otel_traces", 10 * h, 1),
        ];
        let refs: Vec<&PartMeta> = parts.iter().collect();
        // now = 13h: logs keep [11h, 13h]; hour 10 ends at 11h = cutoff.
        assert_eq!(
            to_drop(&refs, 13 * h, &policy, None),
            vec![(1, Drop::Expired)]
        );
        assert_eq!(
            to_drop(&refs, 13 * h - 1, &policy, None),
            vec![],
            "one ns before the boundary"
        );
    }

    #[test]
    fn over_the_disk_budget_the_oldest_partitions_go_first_whatever_the_table() {
        let policy = RetentionPolicy::new(DEFAULT, DEFAULT, DEFAULT);
        let h = HOUR_NANOS;
        let parts = [
            part(1, "otel_logs", 12 * h, 100),
            part(2, "otel_traces", 10 * h, 100),
            part(3, "otel_logs", 11 * h, 60),
            part(4, "otel_logs", 11 * h, 40),
        ];
        let refs: Vec<&PartMeta> = parts.iter().collect();
        let dropped = to_drop(&refs, 13 * h, &policy, Some(150));
        assert_eq!(
            dropped,
            vec![
                (2, Drop::DiskBudget),
                (3, Drop::DiskBudget),
                (4, Drop::DiskBudget)
            ]
        );
        assert_eq!(to_drop(&refs, 13 * h, &policy, Some(300)), vec![]);
    }

    #[test]
    fn overrides_round_trip_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_overrides(dir.path()).unwrap().is_empty());
        save_override(dir.path(), Signal::Logs, parse("7d").unwrap()).unwrap();
        save_override(dir.path(), Signal::Traces, parse("36h").unwrap()).unwrap();
        let o = load_overrides(dir.path()).unwrap();
        assert_eq!(o[&Signal::Logs], Duration::from_secs(7 * 86400));
        assert_eq!(o[&Signal::Traces], Duration::from_secs(36 * 3600));
        assert!(parse("10m").unwrap_err().to_string().contains("1h minimum"));
        assert!(
            parse("soon")
                .unwrap_err()
                .to_string()
                .contains("not a duration")
        );
    }
}
