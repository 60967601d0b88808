//! Which parts to merge. Pure policy; the store does the merging.
//!
//! Flushes write small level-0 parts, one per hour their rows fall in. The
//! policy keeps the part count per partition low without rewriting the same
//! rows over and over:
//! - while an hour is still receiving rows, parts of one level merge once
//!   there are `FANOUT` of them (tiered: each row is rewritten about
//!   log_FANOUT(parts) times, not once per flush);
//! - once an hour is sealed (ended `SEAL_AFTER` ago), all its parts merge
//!   into as few parts as `MAX_MERGE_ROWS` allows.

use std::collections::BTreeMap;

use crate::manifest::{HOUR_NANOS, PartMeta};

pub const FANOUT: usize = 4;
/// How long after an hour ends late rows are still expected.
pub const SEAL_AFTER: i64 = 10 * 60 * 1_000_000_000;
/// A merge never produces a part of more rows than this.
pub const MAX_MERGE_ROWS: u64 = 20_000_000;

/// The ids of parts (all one table) to merge next, or none. Oldest
/// partition first.
pub fn pick(parts: &[&PartMeta], now: i64) -> Option<Vec<u64>> {
    let mut by_partition: BTreeMap<i64, Vec<&PartMeta>> = BTreeMap::new();
    for p in parts {
        by_partition.entry(p.partition).or_default().push(p);
    }
    for (partition, mut parts) in by_partition {
        if parts.len() < 2 {
            continue;
        }
        parts.sort_by_key(|p| (p.rows, p.id));
        let sealed = partition + HOUR_NANOS + SEAL_AFTER <= now;
        if sealed {
            // Smallest first, as many as fit.
            let take = fitting(&parts);
            if take.len() >= 2 {
                return Some(take);
            }
            continue;
        }
        let mut by_level: BTreeMap<u32, Vec<&PartMeta>> = BTreeMap::new();
        for p in parts {
            by_level.entry(p.level).or_default().push(p);
        }
        for (_, level) in by_level {
            if level.len() >= FANOUT {
                let take = fitting(&level[..level.len().min(2 * FANOUT)]);
                if take.len() >= 2 {
                    return Some(take);
                }
            }
        }
    }
    None
}

/// The ids of the leading parts whose rows add up to at most MAX_MERGE_ROWS.
fn fitting(parts: &[&PartMeta]) -> Vec<u64> {
    let mut rows = 0;
    parts
        .iter()
        .take_while(|p| {
            rows += p.rows;
            rows <= MAX_MERGE_ROWS
        })
        .map(|p| p.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(id: u64, partition: i64, level: u32, rows: u64) -> PartMeta {
        PartMeta {
            id,
            table: "otel_logs".into(),
            partition,
            level,
            rows,
            bytes: rows,
            raw_bytes: rows,
            min_time: partition,
            max_time: partition + 1,
        }
    }

    #[test]
    fn an_open_hour_merges_a_level_once_it_has_fanout_parts() {
        let now = 10 * HOUR_NANOS + 60_000_000_000;
        let open = 10 * HOUR_NANOS;
        let mut parts: Vec<PartMeta> = (1..FANOUT as u64).map(|i| part(i, open, 0, 100)).collect();
        parts.push(part(50, open, 1, 400));
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(
            pick(&refs, now),
            None,
            "three level-0 parts and one level-1 part wait"
        );
        parts.push(part(9, open, 0, 100));
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(pick(&refs, now), Some(vec![1, 2, 3, 9]));
    }

    #[test]
    fn a_sealed_hour_merges_everything_that_fits() {
        let hour = 5 * HOUR_NANOS;
        let now = hour + HOUR_NANOS + SEAL_AFTER;
        let parts = [
            part(1, hour, 2, MAX_MERGE_ROWS - 5),
            part(2, hour, 0, 4),
            part(3, hour, 1, 5),
            part(4, hour + HOUR_NANOS, 0, 5),
        ];
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(
            pick(&refs, now),
            Some(vec![2, 3]),
            "the big part would pass the cap"
        );
        assert_eq!(
            pick(&refs, now - 1),
            None,
            "not yet sealed, not FANOUT of a level"
        );
    }

    #[test]
    fn one_part_per_partition_needs_nothing() {
        let parts = [part(1, 0, 0, 10), part(2, HOUR_NANOS, 0, 10)];
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(pick(&refs, i64::MAX / 2), None);
    }
}
