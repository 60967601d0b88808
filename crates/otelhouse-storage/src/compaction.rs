//! Which parts to merge. Pure policy; the store does the merging.
//!
//! Flushes write small parts, one per hour their rows fall in. A merge
//! decodes and re-encodes every row it touches, which costs about as much
//! as the flush that wrote it (part_write bench), so the policy rewrites
//! each row as few times as it can while keeping the part count bounded:
//! - while an hour still receives rows, nothing merges until it holds
//!   `OPEN_MAX_PARTS` parts; then its `FANOUT` smallest merge (at high
//!   ingest rates a row is rewritten about once before the hour ends; at
//!   modest rates, never);
//! - once an hour is sealed (ended `SEAL_AFTER` ago), all its parts merge
//!   once into as few parts as `MAX_MERGE_ROWS` allows: one sorted,
//!   densely encoded part per hour (the ingest bench measured 152 → 65
//!   bytes per record from this).

use std::collections::BTreeMap;

use crate::manifest::{HOUR_NANOS, PartMeta};

pub const FANOUT: usize = 16;
/// Parts an open hour may hold before its smallest ones merge.
pub const OPEN_MAX_PARTS: usize = 32;
/// How long after an hour ends late rows are still expected.
pub const SEAL_AFTER: i64 = 10 * 60 * 1_000_000_000;
/// A merge never produces a part of more rows than this.
pub const MAX_MERGE_ROWS: u64 = 20_000_000;

/// Parts of one hour that merges can always combine (each under
/// `MAX_MERGE_ROWS / FANOUT` rows, so any `FANOUT` of them fit one merge)
/// that may wait at once. Past it, ingestion answers "retry later" until
/// merges catch up: merges run one at a time and re-encode every row, and
/// under sustained full load they fall behind (BENCHMARKS.md, "Sustained
/// load, merges behind": 78 parts after 5 minutes and growing), while every
/// query of the hour opens every part. Big parts never count, so a
/// partition of parts too big to merge never stops ingestion.
pub const MAX_WAITING_PARTS: usize = 2 * OPEN_MAX_PARTS;

/// The partition (all one table) with the most parts waiting to merge, and
/// how many.
pub fn most_waiting(parts: &[&PartMeta]) -> Option<(i64, usize)> {
    let mut waiting: BTreeMap<i64, usize> = BTreeMap::new();
    for p in parts {
        if p.rows < MAX_MERGE_ROWS / FANOUT as u64 {
            *waiting.entry(p.partition).or_default() += 1;
        }
    }
    waiting
        .into_iter()
        .max_by_key(|&(partition, n)| (n, partition))
}

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
        if parts.len() >= OPEN_MAX_PARTS {
            let take = fitting(&parts[..FANOUT]);
            if take.len() >= 2 {
                return Some(take);
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
            index_bytes: 0,
            min_time: partition,
            max_time: partition + 1,
            attribute_columns: Vec::new(),
        }
    }

    #[test]
    fn an_open_hour_merges_its_smallest_parts_only_past_the_part_limit() {
        let now = 10 * HOUR_NANOS + 60_000_000_000;
        let open = 10 * HOUR_NANOS;
        let mut parts: Vec<PartMeta> = (1..OPEN_MAX_PARTS as u64)
            .map(|i| part(i, open, 0, 1000 - i))
            .collect();
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(
            pick(&refs, now),
            None,
            "below the limit nothing is rewritten"
        );
        parts.push(part(99, open, 1, 5000));
        let refs: Vec<&PartMeta> = parts.iter().collect();
        let picked = pick(&refs, now).unwrap();
        assert_eq!(picked.len(), FANOUT);
        let want: Vec<u64> = (OPEN_MAX_PARTS as u64 - FANOUT as u64..OPEN_MAX_PARTS as u64)
            .rev()
            .collect();
        assert_eq!(picked, want, "the smallest, smallest first");
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
    fn parts_waiting_are_counted_per_hour_and_big_ones_never() {
        let big = MAX_MERGE_ROWS / FANOUT as u64;
        let parts = [
            part(1, 0, 0, 10),
            part(2, HOUR_NANOS, 0, 10),
            part(3, HOUR_NANOS, 0, big - 1),
            part(4, HOUR_NANOS, 1, big),
            part(5, HOUR_NANOS, 1, MAX_MERGE_ROWS),
            part(6, 0, 0, 10),
            part(7, 0, 0, big),
        ];
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(
            most_waiting(&refs),
            Some((HOUR_NANOS, 2)),
            "ties: the later hour"
        );
        assert_eq!(
            most_waiting(&refs[3..5]),
            None,
            "only parts too big to wait"
        );
        assert_eq!(most_waiting(&[]), None);
    }

    #[test]
    fn one_part_per_partition_needs_nothing() {
        let parts = [part(1, 0, 0, 10), part(2, HOUR_NANOS, 0, 10)];
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(pick(&refs, i64::MAX / 2), None);
    }
}
