//! Insert formats: the cost of encoding generated log and span rows as
//! Native and as ArrowStream (LZ4 included, as sent), and — through the real
//! engine (chdb behind tests/support/chdb_front.py, ClickStack's tables) — the
//! time ClickHouse takes to insert each. Medians of 5 runs, same process;
//! ratios against ArrowStream.
//!
//! cargo bench -p otelhouse-clickhouse --bench insert_format [-- ROWS]

use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use otelhouse_clickhouse::insert::{InsertFormat, insert_as};
use otelhouse_clickhouse::testing::ChdbFront;
use otelhouse_clickhouse::{Statement, setup};
use otelhouse_schema::Table;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rows(table: Table, n: usize) -> Vec<RecordBatch> {
    otelhouse_loadgen::r#gen::table_rows(table, n)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn lz4(data: &[u8]) -> usize {
    use std::io::Write as _;
    let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
    e.write_all(data).unwrap();
    e.finish().unwrap().len()
}

const FORMATS: [InsertFormat; 2] = [InsertFormat::Native, InsertFormat::ArrowStream];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let have_front = otelhouse_clickhouse::testing::repo_root()
        .join(".venv/bin/python")
        .exists();
    let front = have_front.then(ChdbFront::start);
    let client = front.as_ref().map(|f| f.client("otel"));
    if let Some(c) = &client {
        setup::ensure_tables(c, None, |_| Duration::from_secs(3 * 86_400))
            .await
            .unwrap();
    }
    println!(
        "{:<7} {:<12} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "table", "format", "B/row", "lz4 B/row", "encode ns/r", "insert ns/r", "rows/s in"
    );
    for table in [Table::Logs, Table::Traces] {
        let batches = rows(table, n);
        let count: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut base = None;
        for format in FORMATS {
            let mut encode = Vec::new();
            let mut bytes = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                bytes = format.encode(&batches).unwrap();
                let _ = lz4(&bytes);
                encode.push(t.elapsed());
            }
            let encode = median(encode);
            let mut insert = Vec::new();
            if let Some(c) = &client {
                for _ in 0..5 {
                    let truncate = Statement {
                        sql: format!("TRUNCATE TABLE otel.{}", table.name()),
                        params: Vec::new(),
                    };
                    c.query(&truncate, &[]).await.unwrap();
                    let t = Instant::now();
                    insert_as(c, table, &batches, format, None, &[])
                        .await
                        .unwrap();
                    insert.push(t.elapsed());
                }
                let counted = Statement {
                    sql: format!("SELECT count() FROM otel.{}", table.name()),
                    params: Vec::new(),
                };
                let got = c.query(&counted, &[]).await.unwrap();
                assert_eq!(String::from_utf8_lossy(&got).trim(), count.to_string());
            }
            let insert = (!insert.is_empty()).then(|| median(insert));
            let per_row = |d: Duration| d.as_nanos() as f64 / count as f64;
            println!(
                "{:<7} {:<12} {:>10.1} {:>10.1} {:>12.0} {:>12} {:>10}",
                table.name().trim_start_matches("otel_"),
                format.name(),
                bytes.len() as f64 / count as f64,
                lz4(&bytes) as f64 / count as f64,
                per_row(encode),
                insert.map_or("-".into(), |d| format!("{:.0}", per_row(d))),
                insert.map_or("-".into(), |d| format!(
                    "{:.0}",
                    count as f64 / (d + encode).as_secs_f64()
                )),
            );
            if let Some(i) = insert {
                match base {
                    None => base = Some((format, encode, i)),
                    Some((b, be, bi)) => println!(
                        "        {} / {}: encode {:.2}x, insert {:.2}x",
                        format.name(),
                        b.name(),
                        encode.as_secs_f64() / be.as_secs_f64(),
                        i.as_secs_f64() / bi.as_secs_f64()
                    ),
                }
            }
        }
    }
}
