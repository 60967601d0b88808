//! The on-disk format of a part: one Parquet file per table and WAL range.
//! Kept apart from the store so the benchmark writes parts exactly as the
//! server does.

use std::io::Write;

use arrow::record_batch::RecordBatch;
use otelhouse_schema::Table;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Columns queries filter on, whose statistics let DataFusion skip data.
pub const PRUNING_COLUMNS: &[&str] = &[
    "Timestamp",
    "TimeUnix",
    "ServiceName",
    "SeverityText",
    "SeverityNumber",
    "SpanName",
    "SpanKind",
    "StatusCode",
    "Duration",
    "MetricName",
    "TraceId",
];

/// Near-unique columns: a dictionary gains nothing and costs the writer a
/// hash lookup per value; zstd does their compression.
const NO_DICTIONARY: &[&str] = &["Body", "TraceId", "SpanId", "ParentSpanId"];

pub fn writer_properties() -> WriterProperties {
    let mut props = WriterProperties::builder()
        // zstd(1), as ClickStack's tables. LZ4 was measured too: no CPU
        // gain visible on the ingest benchmark, 1.65x the bytes.
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("1 is a valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(128 * 1024));
    for column in NO_DICTIONARY {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*column), false);
    }
    // Min/max statistics cost a comparison per value; keep them only where a
    // filter can use them to skip row groups and pages (not on map keys and
    // values, bodies or nested arrays).
    props = props.set_statistics_enabled(EnabledStatistics::None);
    for column in PRUNING_COLUMNS {
        props =
            props.set_column_statistics_enabled(ColumnPath::from(*column), EnabledStatistics::Page);
    }
    props.build()
}

/// Writes `batches` (all of `table`'s schema) as one part to `out`; returns
/// the writer's output and the number of rows. The caller syncs and renames.
pub fn write<'a, W: Write + Send>(
    out: W,
    table: Table,
    batches: impl IntoIterator<Item = &'a RecordBatch>,
) -> anyhow::Result<(W, u64)> {
    let mut writer = ArrowWriter::try_new(out, table.schema(), Some(writer_properties()))?;
    let mut rows = 0u64;
    for batch in batches {
        rows += batch.num_rows() as u64;
        writer.write(batch)?;
    }
    Ok((writer.into_inner()?, rows))
}
