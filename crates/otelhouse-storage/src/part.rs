//! The on-disk format of a part: one Parquet file per table and WAL range.
//! Kept apart from the store so the benchmark writes parts exactly as the
//! server does.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take, take_record_batch};
use arrow::datatypes::{Int64Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use otelhouse_schema::Table;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::manifest::partition_of;

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

const ROW_GROUP_ROWS: usize = 128 * 1024;

pub fn writer_properties() -> WriterProperties {
    let mut props = WriterProperties::builder()
        // zstd(1), as ClickStack's tables. LZ4 was measured too: no CPU
        // gain visible on the ingest benchmark, 1.65x the bytes.
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("1 is a valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
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
    // A bloom filter per row group on TraceId: a trace lookup reads the
    // filters and skips almost every row group. Sized for a full row group
    // of distinct ids at 1% false positives (~150 KB per row group).
    props = props
        .set_column_bloom_filter_enabled(ColumnPath::from("TraceId"), true)
        .set_column_bloom_filter_fpp(ColumnPath::from("TraceId"), 0.01)
        .set_column_bloom_filter_max_ndv(ColumnPath::from("TraceId"), ROW_GROUP_ROWS as u64);
    props.build()
}

/// What writing a part produced.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub rows: u64,
    /// Uncompressed bytes of the rows (Parquet's accounting).
    pub raw_bytes: u64,
}

/// Writes one part, batch by batch (already in part order).
pub struct Writer<W: Write + Send> {
    inner: ArrowWriter<W>,
}

impl<W: Write + Send> Writer<W> {
    pub fn new(out: W, table: Table) -> anyhow::Result<Self> {
        Ok(Writer {
            inner: ArrowWriter::try_new(out, table.schema(), Some(writer_properties()))?,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        Ok(self.inner.write(batch)?)
    }

    /// Ends the file; the caller syncs it and commits it to the manifest
    /// (pass `&mut File` to keep the file).
    pub fn finish(self) -> anyhow::Result<Written> {
        let meta = self.inner.close()?;
        let written = Written {
            rows: meta.file_metadata().num_rows() as u64,
            raw_bytes: meta
                .row_groups()
                .iter()
                .map(|rg| rg.total_byte_size() as u64)
                .sum(),
        };
        Ok(written)
    }
}

/// Writes `batches` as one part to `out`.
pub fn write<'a, W: Write + Send>(
    out: W,
    table: Table,
    batches: impl IntoIterator<Item = &'a RecordBatch>,
) -> anyhow::Result<Written> {
    let mut writer = Writer::new(out, table)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()
}

/// The rows of one partition, sorted in part order, with their time span.
pub struct PartitionRows {
    pub partition: i64,
    pub batch: RecordBatch,
    pub min_time: i64,
    pub max_time: i64,
}

/// Splits rows into hour partitions, each sorted by the table's sort key.
/// One sort does both: the hour is the leading sort column.
pub fn partition_and_sort(
    table: Table,
    batches: &[RecordBatch],
) -> anyhow::Result<Vec<PartitionRows>> {
    let schema = table.schema();
    let batch = concat_batches(&schema, batches)?;
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let times = batch
        .column_by_name(table.time_column())
        .ok_or_else(|| anyhow::anyhow!("{} has no time column", table.name()))?
        .as_primitive::<TimestampNanosecondType>()
        .clone();
    let hours: Int64Array = times
        .values()
        .iter()
        .map(|t| Some(partition_of(*t)))
        .collect();
    let mut keys = vec![SortColumn {
        values: Arc::new(hours.clone()),
        options: None,
    }];
    for column in table.sort_key() {
        keys.push(SortColumn {
            values: batch
                .column_by_name(column)
                .ok_or_else(|| anyhow::anyhow!("{} has no column {column}", table.name()))?
                .clone(),
            options: None,
        });
    }
    let order = lexsort_to_indices(&keys, None)?;
    let sorted = take_record_batch(&batch, &order)?;
    let hours = take(&hours, &order, None)?;
    let hours = hours.as_primitive::<Int64Type>().values();
    let times = take(&times, &order, None)?;
    let times = times.as_primitive::<TimestampNanosecondType>().values();
    let mut out = Vec::new();
    let mut start = 0;
    while start < hours.len() {
        let hour = hours[start];
        let end = start + hours[start..].partition_point(|h| *h == hour);
        let span = &times[start..end];
        out.push(PartitionRows {
            partition: hour,
            batch: sorted.slice(start, end - start),
            min_time: *span.iter().min().expect("non-empty"),
            max_time: *span.iter().max().expect("non-empty"),
        });
        start = end;
    }
    Ok(out)
}
