//! Read-only SQL over the parts a data directory's manifest lists, with the
//! same Parquet reading settings as the store's queries. Used by
//! `otelhouse sql` and the storage benchmark against ClickHouse; it reads
//! only committed parts (not rows still in a running server's memory).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionContext;
use otelhouse_schema::Table;

use crate::manifest::Manifest;
use crate::parts_table::{PartFile, PartsTable};

/// A session with every table registered under its ClickStack name.
pub fn session(data_dir: &Path) -> anyhow::Result<SessionContext> {
    let parts_dir = data_dir.join("parts");
    let manifest = Manifest::load(&parts_dir)?;
    let ctx = crate::embedded::query_session(Arc::new(RuntimeEnv::default()));
    for table in Table::ALL {
        let files: Vec<PartFile> = manifest
            .parts
            .iter()
            .filter(|p| p.table == table.name())
            .map(|p| PartFile::new(p, parts_dir.join(p.relative_path())))
            .collect();
        if files.is_empty() {
            // No parts yet: an empty table of the right shape.
            let empty = MemTable::try_new(table.schema(), vec![vec![]])?;
            ctx.register_table(table.name(), Arc::new(empty))?;
            continue;
        }
        ctx.register_table(table.name(), Arc::new(PartsTable::new(table, files)))?;
    }
    Ok(ctx)
}

/// Queries only: no DDL (CREATE, DROP), no DML (INSERT, COPY TO), no
/// statements (SET).
pub(crate) fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Runs `sql` `repeat` times (at least once); returns the last result and
/// the time of each run.
pub async fn run(
    ctx: &SessionContext,
    sql: &str,
    repeat: usize,
) -> anyhow::Result<(Vec<RecordBatch>, Vec<Duration>)> {
    let mut times = Vec::new();
    let mut last = Vec::new();
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        last = ctx
            .sql_with_options(sql, read_only())
            .await?
            .collect()
            .await?;
        times.push(t.elapsed());
    }
    Ok((last, times))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::tests::{logs_parts, timed};
    use crate::manifest::{HOUR_NANOS, partition_name};
    use crate::{EmbeddedStore, StoreOptions};
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use otelhouse_wal::Apply;

    async fn count(ctx: &SessionContext, sql: &str) -> anyhow::Result<i64> {
        let (batches, _) = run(ctx, sql, 1).await?;
        Ok(batches[0].column(0).as_primitive::<Int64Type>().value(0))
    }

    /// A part outside the time range asked for, or whose token index rules
    /// the token out, is never opened: here it is unreadable, and only a
    /// query that must read it fails.
    #[tokio::test]
    async fn parts_the_filters_rule_out_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000_000_000_000 / HOUR_NANOS * HOUR_NANOS;
        logs_parts(
            dir.path(),
            &[
                ("old", &[t0 + 1, t0 + 2]),
                ("new", &[t0 + HOUR_NANOS + 1, t0 + HOUR_NANOS + 2]),
            ],
        );
        let old = dir
            .path()
            .join("parts/otel_logs")
            .join(partition_name(t0))
            .join("000000000001.parquet");
        std::fs::write(&old, b"not parquet").unwrap();
        let ctx = session(dir.path()).unwrap();
        let secs = (t0 + HOUR_NANOS) / 1_000_000_000;
        let recent =
            format!("SELECT count(*) FROM otel_logs WHERE Timestamp >= to_timestamp({secs})");
        assert_eq!(count(&ctx, &recent).await.unwrap(), 2);
        let token = "SELECT count(*) FROM otel_logs WHERE has_token(Body, 'NEW')";
        assert_eq!(count(&ctx, token).await.unwrap(), 2);
        assert!(count(&ctx, "SELECT count(*) FROM otel_logs").await.is_err());
    }

    /// Time bounds are applied by the parts' scan itself: parts wholly
    /// inside are read without a test per row, parts at an edge are
    /// filtered. Every form of bound gives the rows a full test would.
    #[tokio::test]
    async fn time_bounds_hold_at_the_edges_and_inside() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000_000_000_000 / HOUR_NANOS * HOUR_NANOS;
        const MIN: i64 = 60_000_000_000;
        {
            let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
            let mut applier = store.applier();
            // Ten rows a minute apart in each of two hours.
            let minutes = |start: i64| (0..10).map(|k| start + k * MIN).collect::<Vec<_>>();
            applier.apply(1, timed("a", &minutes(t0)));
            store.flush(true).unwrap();
            applier.apply(2, timed("b", &minutes(t0 + HOUR_NANOS)));
            store.flush(true).unwrap();
        }
        let ctx = session(dir.path()).unwrap();
        let at = |nanos: i64| format!("to_timestamp({})", nanos / 1_000_000_000);
        let (five, next_three) = (at(t0 + 5 * MIN), at(t0 + HOUR_NANOS + 3 * MIN));
        for (filter, expected) in [
            (format!("Timestamp >= {five}"), 15),
            (format!("Timestamp > {five}"), 14),
            (format!("{five} <= Timestamp"), 15),
            (format!("{five} > Timestamp"), 5),
            (
                format!("Timestamp >= {} AND Timestamp < {next_three}", at(t0)),
                13,
            ),
            (format!("Timestamp <= {next_three}"), 14),
            (
                format!("Timestamp < {} OR Timestamp > {five}", at(t0 + MIN)),
                15,
            ),
            (format!("Timestamp >= {five} AND Body <> 'x'"), 15),
            // With a token the index narrows (bodies are "<service> at <t>").
            (format!("Timestamp >= {five} AND has_token(Body, 'a')"), 5),
            (
                format!("has_token(Body, 'b') AND Timestamp <= {next_three}"),
                4,
            ),
            (format!("Timestamp > {}", at(t0 + 3 * HOUR_NANOS)), 0),
        ] {
            let sql = format!("SELECT count(*) FROM otel_logs WHERE {filter}");
            assert_eq!(count(&ctx, &sql).await.unwrap(), expected, "{filter}");
        }
        // Columns asked for without the time column; a limit.
        let rows = |sql: String| {
            let ctx = ctx.clone();
            async move { run(&ctx, &sql, 1).await.unwrap().0 }
        };
        let total = |batches: &[RecordBatch]| batches.iter().map(|b| b.num_rows()).sum::<usize>();
        let named = rows(format!(
            "SELECT ServiceName FROM otel_logs WHERE Timestamp >= {five}"
        ))
        .await;
        assert_eq!(total(&named), 15);
        assert!(named.iter().all(|b| b.num_columns() == 1));
        let limited = rows(format!(
            "SELECT * FROM otel_logs WHERE Timestamp >= {five} LIMIT 3"
        ))
        .await;
        assert_eq!(total(&limited), 3);
    }

    /// Queries that read attribute maps only by constant keys read merged
    /// parts' key columns; every such query gives the rows it gives
    /// reading the maps whole. The parts: generated logs merged (with key
    /// columns), then a flush of more (keys chosen, not written) and one
    /// of logs without attributes.
    #[tokio::test]
    async fn attribute_keys_from_their_columns_give_the_rows_of_the_maps() {
        use otelhouse_loadgen::r#gen::{Generator, recent_range};
        let dir = tempfile::tempdir().unwrap();
        let range = recent_range(600);
        {
            let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
            let mut applier = store.applier();
            let mut g = Generator::new(7);
            let mut logs = |seq| {
                applier.apply(
                    seq,
                    otelhouse_otlp::convert::logs(&g.logs_request(2000, range)),
                );
                store.flush(true).unwrap();
            };
            logs(1);
            logs(2);
            let sealed = range.1 as i64 + 2 * HOUR_NANOS;
            let merging = store.clone();
            let merged = tokio::task::spawn_blocking(move || {
                let mut merged = 0;
                while merging.compact_once(sealed).unwrap() {
                    merged += 1;
                }
                merged
            })
            .await
            .unwrap();
            assert!(merged >= 1);
            logs(3);
            applier.apply(4, timed("bare", &[range.0 as i64 + 1]));
            store.flush(true).unwrap();
        }
        let ctx = session(dir.path()).unwrap();
        let whole = session(dir.path()).unwrap();
        assert!(whole.remove_optimizer_rule("attribute_keys_only"));
        let text = |ctx: &SessionContext, sql: &str| {
            let (ctx, sql) = (ctx.clone(), sql.to_owned());
            async move {
                let (batches, _) = run(&ctx, &sql, 1).await.unwrap();
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            }
        };
        for (sql, by_keys) in [
            (
                "SELECT LogAttributes['http.route'] AS v, count(*) AS c FROM otel_logs \
                 WHERE ServiceName = 'shipping' GROUP BY v ORDER BY c DESC, v",
                true,
            ),
            (
                "SELECT count(*) FROM otel_logs WHERE LogAttributes['http.route'] = '/healthz'",
                true,
            ),
            (
                "SELECT ResourceAttributes['k8s.pod.name'] AS pod, LogAttributes['user.id'] AS u, \
                 LogAttributes['http.route'] AS r, Body FROM otel_logs \
                 WHERE LogAttributes['user.id'] IS NOT NULL ORDER BY Timestamp, Body, pod, u",
                true,
            ),
            (
                "SELECT count(*) FROM otel_logs \
                 WHERE array_element(map_extract(LogAttributes, 'http.route'), 1) = '/healthz'",
                true,
            ),
            (
                "SELECT count(LogAttributes['no.such.key']) AS n, count(*) AS c FROM otel_logs",
                true,
            ),
            (
                "SELECT LogAttributes['http.route'] AS r, cardinality(LogAttributes) AS n \
                 FROM otel_logs ORDER BY Timestamp, Body LIMIT 50",
                false,
            ),
            (
                "SELECT * FROM otel_logs WHERE LogAttributes['http.route'] = '/healthz' \
                 ORDER BY Timestamp, Body LIMIT 20",
                false,
            ),
        ] {
            let got = text(&ctx, sql).await;
            assert_eq!(got, text(&whole, sql).await, "{sql}");
            assert!(got.lines().count() > 4, "{sql} gives rows:\n{got}");
            let plan = text(&ctx, &format!("EXPLAIN {sql}")).await;
            assert_eq!(
                plan.contains(crate::attribute_columns::MAP_FUNCTION),
                by_keys,
                "{sql}:\n{plan}"
            );
        }
    }

    #[tokio::test]
    async fn only_queries_run() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = session(dir.path()).unwrap();
        let (rows, _) = run(&ctx, "SELECT count(*) AS n FROM otel_logs", 1)
            .await
            .unwrap();
        assert_eq!(rows[0].num_rows(), 1);
        for sql in [
            "CREATE TABLE t (a INT)",
            "INSERT INTO otel_logs SELECT * FROM otel_logs",
            "COPY (SELECT 1) TO '/tmp/otelhouse-sql-test.parquet'",
            "SET datafusion.execution.batch_size = 1",
        ] {
            assert!(run(&ctx, sql, 1).await.is_err(), "{sql} must be refused");
        }
    }
}
