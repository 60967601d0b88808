//! Read-only SQL over the parts a data directory's manifest lists, with the
//! same Parquet reading settings as the store's queries. Used by
//! `otelhouse sql` and the storage benchmark against ClickHouse; it reads
//! only committed parts (not rows still in a running server's memory).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use otelhouse_schema::Table;

use crate::manifest::Manifest;

/// A session with every table registered under its ClickStack name.
pub fn session(data_dir: &Path) -> anyhow::Result<SessionContext> {
    let parts_dir = data_dir.join("parts");
    let manifest = Manifest::load(&parts_dir)?;
    let mut config = SessionConfig::new();
    config.options_mut().execution.parquet.pushdown_filters = true;
    config.options_mut().execution.parquet.reorder_filters = true;
    // Column names are ClickStack's CamelCase: match them as written, as
    // ClickHouse does, instead of lower-casing unquoted identifiers.
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let ctx = SessionContext::new_with_config(config);
    for table in Table::ALL {
        let urls = manifest
            .parts
            .iter()
            .filter(|p| p.table == table.name())
            .map(|p| ListingTableUrl::parse(parts_dir.join(p.relative_path()).to_string_lossy()))
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            // No parts yet: an empty table of the right shape.
            let empty = MemTable::try_new(table.schema(), vec![vec![]])?;
            ctx.register_table(table.name(), Arc::new(empty))?;
            continue;
        }
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(table.schema());
        ctx.register_table(table.name(), Arc::new(ListingTable::try_new(config)?))?;
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
