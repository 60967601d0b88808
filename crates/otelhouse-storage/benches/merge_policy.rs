//! Merge-policy benchmark: an hour of flushes at full load through the real
//! store (flush, merges as soon as the policy picks them, then the seal),
//! at 1/100 of the server's scale — flushes of 2,300 rows against the
//! server's ~230,000 (92 k records/s, a flush every 2.5 s), and a merge
//! cap of 200,000 rows against 20M — so each policy runs in a minute or
//! two. Prints, per policy, the rows merges rewrote per row ingested and
//! the process CPU of flushes and merges; the baseline in the same run is
//! the policy before it waited by size (the smallest of all parts merged
//! once an hour held 32 of any size).
//!
//! cargo bench -p otelhouse-storage --bench merge_policy [-- FLUSHES]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{ArrayRef, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use otelhouse_schema::Table;
use otelhouse_storage::compaction::{self, Policy};
use otelhouse_storage::manifest::HOUR_NANOS;
use otelhouse_storage::{EmbeddedStore, StoreOptions};
use otelhouse_wal::Apply;

// The server's allocator, so the figures match what merges cost there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FLUSH_ROWS: usize = 2_300;
/// 2026-01-01 10:00 UTC; "now" is kept inside it until the seal.
const HOUR: i64 = 1_767_261_600_000_000_000;

/// This process's CPU seconds (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Flush `i`'s rows: the pool's rows from `i * FLUSH_ROWS` on (the pool
/// wraps), stamped inside the hour in arrival order.
fn flush_rows(pool: &[RecordBatch], i: usize, flushes: usize) -> Vec<RecordBatch> {
    let per_batch = pool[0].num_rows();
    let ts_col = pool[0].schema().index_of("Timestamp").unwrap();
    let mut out = Vec::new();
    let mut row = i * FLUSH_ROWS;
    let end = row + FLUSH_ROWS;
    while row < end {
        let batch = &pool[(row / per_batch) % pool.len()];
        let start = row % per_batch;
        let len = (batch.num_rows() - start).min(end - row);
        let slice = batch.slice(start, len);
        let t0 = HOUR + (i as i64 * HOUR_NANOS / flushes as i64);
        let times: ArrayRef = Arc::new(
            TimestampNanosecondArray::from_iter_values(
                (0..len as i64).map(|j| t0 + (row as i64 - (i * FLUSH_ROWS) as i64) + j),
            )
            .with_timezone("UTC"),
        );
        let mut columns = slice.columns().to_vec();
        columns[ts_col] = times;
        out.push(RecordBatch::try_new(slice.schema(), columns).unwrap());
        row += len;
    }
    out
}

fn run(name: &str, policy: Policy, pool: &[RecordBatch], flushes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        StoreOptions {
            merge: policy,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut applier = store.applier();
    let (mut flush_cpu, mut open_cpu, mut max_parts) = (0.0, 0.0, 0);
    let open = HOUR + HOUR_NANOS / 2;
    let mut seq = 0;
    for i in 0..flushes {
        for batch in flush_rows(pool, i, flushes) {
            seq += 1;
            applier.apply(seq, vec![(Table::Logs, batch)]);
        }
        let t = cpu_seconds();
        store.flush(true).unwrap();
        flush_cpu += cpu_seconds() - t;
        let t = cpu_seconds();
        while store.compact_once(open).unwrap() {}
        open_cpu += cpu_seconds() - t;
        max_parts = max_parts.max(store.stats()[0].parts);
    }
    let open_rows = store.counters().merged_rows.load(Ordering::Relaxed);
    let t = cpu_seconds();
    while store
        .compact_once(HOUR + HOUR_NANOS + compaction::SEAL_AFTER)
        .unwrap()
    {}
    let seal_cpu = cpu_seconds() - t;
    let all_rows = store.counters().merged_rows.load(Ordering::Relaxed);
    let stats = &store.stats()[0];
    let ingested = (flushes * FLUSH_ROWS) as u64;
    assert_eq!(stats.part_rows, ingested, "every row is still there");
    println!(
        "{{\"policy\":\"{name}\",\"rows\":{ingested},\"rewrites_per_row_open\":{:.2},\"rewrites_per_row_all\":{:.2},\"flush_cpu_s\":{flush_cpu:.1},\"open_merge_cpu_s\":{open_cpu:.1},\"seal_merge_cpu_s\":{seal_cpu:.1},\"merge_cpu_us_per_row\":{:.2},\"max_parts_open\":{max_parts},\"parts_sealed\":{},\"bytes_per_row_sealed\":{:.1}}}",
        open_rows as f64 / ingested as f64,
        all_rows as f64 / ingested as f64,
        (open_cpu + seal_cpu) * 1e6 / ingested as f64,
        stats.parts,
        stats.part_bytes as f64 / ingested as f64,
    );
}

fn main() {
    let flushes: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_440);
    let pool = otelhouse_loadgen::r#gen::table_rows(Table::Logs, 200_000);
    let scaled = Policy::new(200_000);
    let before = Policy {
        small_part_rows: u64::MAX,
        ..scaled
    };
    run("before: smallest of all parts", before, &pool, flushes);
    run("by size", scaled, &pool, flushes);
}
