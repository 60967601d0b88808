//! Which parts to merge. Pure policy; the store does the merging.
//!
//! Flushes write small parts, one per hour their rows fall in. A merge
//! decodes and re-encodes every row it touches, which costs about as much
//! as the flush that wrote it (part_write bench), so the policy rewrites
//! each row as few times as it can while keeping the part count bounded:
//! - while an hour still receives rows, nothing merges until it holds
//!   `open_max_parts` small parts (under `small_part_rows`: what flushes
//!   write); then its `fanout` smallest merge into a middling part. Once
//!   it holds `fanout` middling parts (up to half `max_merge_rows`), as
//!   many as fit merge into a big one. An hour of fewer than
//!   `open_max_parts` flushes merges only at its seal; at full load
//!   (1,440 flushes, one per 2.5 s) a row is rewritten twice in all;
//! - once an hour is sealed (ended `SEAL_AFTER` ago), all its parts merge
//!   into as few parts as `max_merge_rows` allows: sorted, densely
//!   encoded parts (the ingest bench measured 152 → 65 bytes per record
//!   from this).
//!
//! Each size waits for its own kind. Merging the smallest of all parts
//! once an hour held `open_max_parts` of any size, as this did before,
//! rewrote the middling parts again with every batch of small ones once
//! they alone passed the limit: an hour at full load rewrote each row
//! 3.1 times, against 2.0 now (BENCHMARKS.md, "Merge policy").

use std::collections::BTreeMap;

use crate::manifest::{HOUR_NANOS, PartMeta};

/// How long after an hour ends late rows are still expected.
pub const SEAL_AFTER: i64 = 10 * 60 * 1_000_000_000;

/// When parts merge. [`Policy::default`] is the store's; tests and the
/// merge_policy bench scale it down. Merges always make progress, and so
/// "merges behind" always clears, while `fanout >= 2`, `open_max_parts >=
/// fanout` and any `fanout` small parts fit one merge (`fanout *
/// small_part_rows <= max_merge_rows`), as [`Policy::new`] makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Small parts of an open hour merged at once, and middling parts an
    /// open hour holds before they merge.
    pub fanout: usize,
    /// Small parts an open hour may hold before its smallest ones merge.
    pub open_max_parts: usize,
    /// A merge never produces a part of more rows than this.
    pub max_merge_rows: u64,
    /// Parts under this many rows are small: any `fanout` of them fit one
    /// merge, and they are what waits to merge.
    pub small_part_rows: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(20_000_000)
    }
}

impl Policy {
    /// Merges of 16, an open hour holding up to 32 small parts.
    pub const fn new(max_merge_rows: u64) -> Self {
        let fanout = 16;
        Policy {
            fanout,
            open_max_parts: 2 * fanout,
            max_merge_rows,
            small_part_rows: max_merge_rows / fanout as u64,
        }
    }

    /// Small parts of one hour that may wait at once. Past it, ingestion
    /// answers "retry later" until merges catch up: merges run one at a
    /// time and re-encode every row, and under sustained full load they
    /// fall behind (BENCHMARKS.md, "Sustained load, merges behind": 78
    /// parts after 5 minutes and growing), while every query of the hour
    /// opens every part. Bigger parts never count, so a partition of parts
    /// too big to merge never stops ingestion.
    pub fn max_waiting_parts(&self) -> usize {
        2 * self.open_max_parts
    }

    /// The partition (all one table) with the most small parts, and how
    /// many.
    pub fn most_waiting(&self, parts: &[&PartMeta]) -> Option<(i64, usize)> {
        let mut waiting: BTreeMap<i64, usize> = BTreeMap::new();
        for p in parts {
            if p.rows < self.small_part_rows {
                *waiting.entry(p.partition).or_default() += 1;
            }
        }
        waiting
            .into_iter()
            .max_by_key(|&(partition, n)| (n, partition))
    }

    /// The ids of parts (all one table) to merge next, or none. Oldest
    /// partition first.
    pub fn pick(&self, parts: &[&PartMeta], now: i64) -> Option<Vec<u64>> {
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
            let take = if sealed {
                // Smallest first, as many as fit.
                self.fitting(&parts)
            } else {
                self.open_hour(&parts)
            };
            if take.len() >= 2 {
                return Some(take);
            }
        }
        None
    }

    /// What an open hour's parts (sorted by rows) merge, if anything.
    fn open_hour(&self, parts: &[&PartMeta]) -> Vec<u64> {
        let small = parts.partition_point(|p| p.rows < self.small_part_rows);
        if small >= self.open_max_parts {
            return self.fitting(&parts[..self.fanout.min(small)]);
        }
        let middling = parts[small..].partition_point(|p| p.rows <= self.max_merge_rows / 2);
        if middling >= self.fanout {
            return self.fitting(&parts[small..small + middling]);
        }
        Vec::new()
    }

    /// The ids of the leading parts whose rows add up to at most
    /// `max_merge_rows`.
    fn fitting(&self, parts: &[&PartMeta]) -> Vec<u64> {
        let mut rows = 0;
        parts
            .iter()
            .take_while(|p| {
                rows += p.rows;
                rows <= self.max_merge_rows
            })
            .map(|p| p.id)
            .collect()
    }
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

    const P: Policy = Policy::new(20_000_000);

    #[test]
    fn an_open_hour_merges_its_smallest_parts_only_past_the_part_limit() {
        let now = 10 * HOUR_NANOS + 60_000_000_000;
        let open = 10 * HOUR_NANOS;
        let mut parts: Vec<PartMeta> = (1..P.open_max_parts as u64)
            .map(|i| part(i, open, 0, 1000 - i))
            .collect();
        // Middling and big parts do not count towards the limit.
        parts.push(part(90, open, 1, P.small_part_rows));
        parts.push(part(91, open, 2, P.max_merge_rows));
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(
            P.pick(&refs, now),
            None,
            "below the limit nothing is rewritten"
        );
        parts.push(part(99, open, 0, 5000));
        let refs: Vec<&PartMeta> = parts.iter().collect();
        let picked = P.pick(&refs, now).unwrap();
        assert_eq!(picked.len(), P.fanout);
        let want: Vec<u64> = (P.open_max_parts as u64 - P.fanout as u64..P.open_max_parts as u64)
            .rev()
            .collect();
        assert_eq!(picked, want, "the smallest, smallest first");
    }

    #[test]
    fn an_open_hour_merges_middling_parts_among_themselves() {
        let now = 10 * HOUR_NANOS + 60_000_000_000;
        let open = 10 * HOUR_NANOS;
        let middling = P.max_merge_rows / 5;
        let mut parts: Vec<PartMeta> = (1..P.fanout as u64)
            .map(|i| part(i, open, 1, middling + i))
            .collect();
        // Small parts under the limit and parts over half the cap: neither
        // joins the middling ones.
        parts.extend((100..100 + P.open_max_parts as u64 - 1).map(|i| part(i, open, 0, 10)));
        parts.push(part(200, open, 2, P.max_merge_rows / 2 + 1));
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(P.pick(&refs, now), None);
        parts.push(part(300, open, 1, P.max_merge_rows / 2));
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(
            P.pick(&refs, now),
            Some(vec![1, 2, 3, 4]),
            "the smallest middling ones, as many as fit the cap"
        );
    }

    /// An hour at full load: 1,440 flushes of 230 k rows (92 k/s), every
    /// merge done as soon as picked, then the seal. Rows rewritten per row
    /// ingested, and parts left.
    fn replay(policy: Policy, flush_rows: u64, flushes: u64) -> (f64, usize) {
        let open = 10 * HOUR_NANOS;
        let mut parts: Vec<PartMeta> = Vec::new();
        let (mut next_id, mut rewritten) = (0, 0);
        let mut merge_all = |parts: &mut Vec<PartMeta>, now: i64| loop {
            let refs: Vec<&PartMeta> = parts.iter().collect();
            let Some(ids) = policy.pick(&refs, now) else {
                break;
            };
            let rows: u64 = parts
                .iter()
                .filter(|p| ids.contains(&p.id))
                .map(|p| p.rows)
                .sum();
            parts.retain(|p| !ids.contains(&p.id));
            next_id += 1;
            parts.push(part(1_000_000 + next_id, open, 1, rows));
            rewritten += rows;
        };
        for i in 0..flushes {
            parts.push(part(i, open, 0, flush_rows));
            merge_all(&mut parts, open + HOUR_NANOS / 2);
        }
        merge_all(&mut parts, open + HOUR_NANOS + SEAL_AFTER);
        (
            rewritten as f64 / (flush_rows * flushes) as f64,
            parts.len(),
        )
    }

    #[test]
    fn an_hour_at_full_load_rewrites_each_row_about_twice() {
        let (rewrites, parts) = replay(P, 230_000, 1440);
        assert!((1.9..=2.1).contains(&rewrites), "{rewrites}");
        assert!(parts <= 18, "{parts}");
        // What merging the smallest of all parts did (every part small).
        let before = Policy {
            small_part_rows: u64::MAX,
            ..P
        };
        let (rewrites_before, parts_before) = replay(before, 230_000, 1440);
        assert!(rewrites_before > 3.0, "{rewrites_before}");
        assert!(parts_before >= parts);
        // At a quarter of the rate (a flush every 10 s) the open hour
        // rewrites a little more (its middling parts merge early), the seal
        // much less: fewer rewrites in all.
        let (rewrites, _) = replay(P, 230_000, 360);
        let (rewrites_before, _) = replay(before, 230_000, 360);
        assert!(
            rewrites < rewrites_before - 0.2,
            "{rewrites} {rewrites_before}"
        );
        // An hour of fewer flushes than the limit merges only at its seal:
        // each row once.
        let (rewrites, _) = replay(P, 230_000, P.open_max_parts as u64 - 1);
        assert_eq!(rewrites, 1.0);
    }

    #[test]
    fn a_sealed_hour_merges_everything_that_fits() {
        let hour = 5 * HOUR_NANOS;
        let now = hour + HOUR_NANOS + SEAL_AFTER;
        let parts = [
            part(1, hour, 2, P.max_merge_rows - 5),
            part(2, hour, 0, 4),
            part(3, hour, 1, 5),
            part(4, hour + HOUR_NANOS, 0, 5),
        ];
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(
            P.pick(&refs, now),
            Some(vec![2, 3]),
            "the big part would pass the cap"
        );
        assert_eq!(
            P.pick(&refs, now - 1),
            None,
            "not yet sealed, not enough parts of any size"
        );
    }

    #[test]
    fn parts_waiting_are_counted_per_hour_and_big_ones_never() {
        let big = P.small_part_rows;
        let parts = [
            part(1, 0, 0, 10),
            part(2, HOUR_NANOS, 0, 10),
            part(3, HOUR_NANOS, 0, big - 1),
            part(4, HOUR_NANOS, 1, big),
            part(5, HOUR_NANOS, 1, P.max_merge_rows),
            part(6, 0, 0, 10),
            part(7, 0, 0, big),
        ];
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(
            P.most_waiting(&refs),
            Some((HOUR_NANOS, 2)),
            "ties: the later hour"
        );
        assert_eq!(
            P.most_waiting(&refs[3..5]),
            None,
            "only parts too big to wait"
        );
        assert_eq!(P.most_waiting(&[]), None);
    }

    #[test]
    fn one_part_per_partition_needs_nothing() {
        let parts = [part(1, 0, 0, 10), part(2, HOUR_NANOS, 0, 10)];
        let refs: Vec<&PartMeta> = parts.iter().collect();
        assert_eq!(P.pick(&refs, i64::MAX / 2), None);
    }
}
