//! Part-writing benchmark: what a flush costs for generated log and span
//! rows — splitting by hour and sorting, then writing the part — against
//! writing the same rows unsorted (the baseline, same run); then the time and
//! bytes of each column of the sorted part (each written alone with the same
//! writer properties).
//!
//! cargo bench -p otelhouse-storage --bench part_write [-- ROWS]

use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use otelhouse_schema::Table;
use otelhouse_storage::part;
use parquet::arrow::ArrowWriter;

// The server's allocator, so the figures match what a flush costs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rows(table: Table, n: usize) -> Vec<RecordBatch> {
    otelhouse_loadgen::r#gen::table_rows(table, n)
}

/// Best of three: the machine is shared, the minimum is the least disturbed.
fn best_of_3(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut bytes = 0;
    for _ in 0..3 {
        let t = Instant::now();
        bytes = f();
        best = best.min(t.elapsed());
    }
    (best, bytes)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    for table in [Table::Logs, Table::Traces] {
        let batches = rows(table, n);
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        // Baseline in the same run: the rows as they arrive, unsorted.
        let (unsorted, unsorted_bytes) = best_of_3(|| {
            let mut out = Vec::new();
            part::write(&mut out, table, &batches).unwrap();
            out.len()
        });
        // What a flush does: split by hour and sort, then write.
        let (sort, _) = best_of_3(|| part::partition_and_sort(table, &batches).unwrap().len());
        let sorted: Vec<RecordBatch> = part::partition_and_sort(table, &batches)
            .unwrap()
            .into_iter()
            .map(|p| p.batch)
            .collect();
        let (write, bytes) = best_of_3(|| {
            let mut out = Vec::new();
            part::write(&mut out, table, &sorted).unwrap();
            out.len()
        });
        let per_row = |d: Duration| d.as_secs_f64() * 1e6 / rows as f64;
        println!(
            "{{\"table\":\"{}\",\"rows\":{rows},\"unsorted_write_us_per_row\":{:.3},\"unsorted_bytes_per_row\":{:.1},\"sort_us_per_row\":{:.3},\"sorted_write_us_per_row\":{:.3},\"sorted_bytes_per_row\":{:.1}}}",
            table.name(),
            per_row(unsorted),
            unsorted_bytes as f64 / rows as f64,
            per_row(sort),
            per_row(write),
            bytes as f64 / rows as f64
        );
        let schema = table.schema();
        let mut columns = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let projected: Vec<RecordBatch> =
                batches.iter().map(|b| b.project(&[i]).unwrap()).collect();
            let (t, bytes) = best_of_3(|| {
                let mut w = ArrowWriter::try_new(
                    Vec::new(),
                    projected[0].schema(),
                    Some(part::writer_properties()),
                )
                .unwrap();
                for b in &projected {
                    w.write(b).unwrap();
                }
                w.into_inner().unwrap().len()
            });
            columns.push((field.name().clone(), t, bytes));
        }
        columns.sort_by_key(|c| std::cmp::Reverse(c.1));
        let sum: Duration = columns.iter().map(|c| c.1).sum();
        for (name, t, bytes) in columns.iter().take(12) {
            println!(
                "  {name:<22} {:>5.1}% of column time  {:>7.3} us/row  {:>7.1} B/row",
                100.0 * t.as_secs_f64() / sum.as_secs_f64(),
                t.as_secs_f64() * 1e6 / rows as f64,
                *bytes as f64 / rows as f64
            );
        }
    }
}
