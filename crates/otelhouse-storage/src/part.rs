//! The on-disk format of a part: one Parquet file per table and WAL range.
//! Kept apart from the store so the benchmark writes parts exactly as the
//! server does.

use std::io::Write;

use std::collections::HashMap;

use arrow::array::{Array, ArrayData, ArrayRef, AsArray};
use arrow::array::{MutableArrayData, make_array};
use arrow::datatypes::SchemaRef;
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use otelhouse_schema::Table;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use crate::attribute_columns::{self, AttributeColumns};
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

/// Rows per data page, at most: one token index block
/// (`text_index::BLOCK_ROWS`). A logs part holds a
/// service's rows of one 5-minute bucket in a run of ~1,700 rows (20
/// services); pages of that size let the page index on ServiceName skip the
/// other services' pages, and a filter on it skip those pages of every
/// other column (the attribute maps above all). With the writer's default
/// (pages cut at 1 MiB, 20,000 rows for the small columns) a service filter
/// decoded the maps of nearly every row. A block that the token index
/// names (a rare token, a trace id) then costs one page per column:
/// a trace lookup decodes a few pages of spans, not a row group
/// (BENCHMARKS.md, "Smaller logs pages" and "Trace ids in the token index").
const PAGE_ROWS: usize = crate::text_index::BLOCK_ROWS as usize;

/// Encoded as deltas, without a dictionary: timestamps are near-unique
/// (a dictionary overflows and falls back to plain) and, within a
/// service's run, ascending (small deltas, cheap to decode). Not
/// compressed: zstd gains little on bit-packed deltas (7.1 instead of
/// 5.0 bytes per row) and every time filter and histogram decodes this
/// column whole; without zstd a count per minute over 10 M logs takes
/// ~20 % less CPU (BENCHMARKS.md, "Timestamp without zstd").
const DELTA_ENCODED: &[&str] = &["Timestamp"];

pub fn writer_properties() -> WriterProperties {
    writer_properties_builder().build()
}

/// The settings of `writer_properties`, open to changes (benchmarks try
/// other settings on the same rows).
pub fn writer_properties_builder() -> WriterPropertiesBuilder {
    let mut props = WriterProperties::builder()
        // zstd(1), as ClickStack's tables. LZ4 was measured too: no CPU
        // gain visible on the ingest benchmark, 1.65x the bytes.
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("1 is a valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    props = props.set_data_page_row_count_limit(PAGE_ROWS);
    for column in NO_DICTIONARY {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*column), false);
    }
    for column in DELTA_ENCODED {
        props = props
            .set_column_dictionary_enabled(ColumnPath::from(*column), false)
            .set_column_encoding(ColumnPath::from(*column), Encoding::DELTA_BINARY_PACKED)
            .set_column_compression(ColumnPath::from(*column), Compression::UNCOMPRESSED);
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
    props
}

/// The rows `(batch, start, len)` of the sources (per column, per batch),
/// in that order, as one batch. One `MutableArrayData` per column over all
/// batches, extended once per run: `concat` of slices would set up every
/// slice as a source, for every column.
fn gather_runs(
    schema: &SchemaRef,
    sources: &[Vec<ArrayData>],
    runs: &[(usize, usize, usize)],
    rows: usize,
) -> anyhow::Result<RecordBatch> {
    let mut columns = Vec::with_capacity(sources.len());
    for data in sources {
        let mut out = MutableArrayData::new(data.iter().collect(), false, rows);
        for (b, start, len) in runs {
            out.try_extend(*b, *start, start + len)?;
        }
        columns.push(make_array(out.freeze()));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// What writing a part produced.
#[derive(Debug, Clone)]
pub struct Written {
    pub rows: u64,
    /// Uncompressed bytes of the rows (Parquet's accounting).
    pub raw_bytes: u64,
    /// Rows in each row group, in order.
    pub row_groups: Vec<u64>,
}

/// Writes one part, batch by batch (already in part order), with the
/// attribute key columns it was created with (`attribute_columns`).
pub struct Writer<W: Write + Send> {
    inner: ArrowWriter<W>,
    columns: Vec<AttributeColumns>,
    schema: SchemaRef,
}

impl<W: Write + Send> Writer<W> {
    pub fn new(out: W, table: Table, columns: Vec<AttributeColumns>) -> anyhow::Result<Self> {
        let schema = attribute_columns::file_schema(table, &columns);
        Ok(Writer {
            inner: ArrowWriter::try_new(out, schema.clone(), Some(writer_properties()))?,
            columns,
            schema,
        })
    }

    /// `batch` has the table's schema; the key columns are added here.
    pub fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let batch = attribute_columns::extend(batch, &self.columns, &self.schema)?;
        Ok(self.inner.write(&batch)?)
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
            row_groups: meta
                .row_groups()
                .iter()
                .map(|rg| rg.num_rows() as u64)
                .collect(),
        };
        Ok(written)
    }
}

/// Writes `batches` as one part to `out`, with the key columns
/// `attribute_columns::choose` picks for them.
pub fn write<W: Write + Send>(
    out: W,
    table: Table,
    batches: &[RecordBatch],
) -> anyhow::Result<Written> {
    let columns = attribute_columns::choose(table, batches)?;
    let mut writer = Writer::new(out, table, columns)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()
}

/// The rows of one partition, in part order, with their time span: runs
/// of consecutive rows of the source batches, copied only chunk by chunk
/// ([`PartitionRows::batches`]) so that a flush holds one chunk of sorted
/// rows at a time, not a second copy of the whole tail.
pub struct PartitionRows {
    table: Table,
    pub partition: i64,
    pub rows: usize,
    pub min_time: i64,
    pub max_time: i64,
    /// `(source batch, first row, rows)`, in part order.
    runs: Vec<(usize, usize, usize)>,
}

/// Rows per batch [`PartitionRows::batches`] copies: a quarter of a row
/// group, so the Parquet writer's row groups stay whole while the sorted
/// copy stays small.
pub const SORTED_BATCH_ROWS: usize = ROW_GROUP_ROWS / 4;

impl PartitionRows {
    /// The partition's rows in part order, copied from `batches` (the
    /// batches given to [`partition_and_sort`]) at most `max_rows` at a
    /// time, each copy made when the iterator reaches it.
    pub fn batches<'a>(
        &'a self,
        batches: &'a [RecordBatch],
        max_rows: usize,
    ) -> impl Iterator<Item = anyhow::Result<RecordBatch>> + 'a {
        let schema = self.table.schema();
        let sources: Vec<Vec<ArrayData>> = (0..schema.fields().len())
            .map(|c| batches.iter().map(|b| b.column(c).to_data()).collect())
            .collect();
        let max_rows = max_rows.max(1);
        let mut next = 0; // index into runs
        let mut offset = 0; // rows of runs[next] already copied
        std::iter::from_fn(move || {
            let mut chunk = Vec::new();
            let mut rows = 0;
            while rows < max_rows && next < self.runs.len() {
                let (b, first, len) = self.runs[next];
                let take = (len - offset).min(max_rows - rows);
                chunk.push((b, first + offset, take));
                rows += take;
                offset += take;
                if offset == len {
                    next += 1;
                    offset = 0;
                }
            }
            (rows > 0).then(|| gather_runs(&schema, &sources, &chunk, rows))
        })
    }
}

/// Splits rows into hour partitions, each clustered by the table's time
/// bucket and sort key (a stable sort: within a cluster rows keep arrival
/// order).
///
/// Rows are ordered by a compact key — (hour, bucket, rank of each sort
/// column, arrival) — and then copied as runs: rows of one resource arrive
/// together, so runs are long and the copy is a few bulk moves per batch.
/// A row-by-row gather (take / interleave) costs as much as writing the
/// part, because of the attribute maps (part_write bench).
pub fn partition_and_sort(
    table: Table,
    batches: &[RecordBatch],
) -> anyhow::Result<Vec<PartitionRows>> {
    let strings = table.sort_key();
    assert!(strings.len() <= 2, "keys hold at most two columns");
    let column = |b: &RecordBatch, name: &str| {
        b.column_by_name(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{} has no column {name}", table.name()))
    };
    // Rank the distinct values of each key column (few: services, span
    // names, metric names), so rows compare as integers.
    let mut key_columns: Vec<Vec<ArrayRef>> = Vec::new();
    let mut ranks: Vec<HashMap<String, u32>> = Vec::new();
    for name in strings {
        let arrays = batches
            .iter()
            .map(|b| column(b, name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut seen: HashMap<String, u32> = HashMap::new();
        for a in &arrays {
            for v in a.as_string::<i32>().iter() {
                let v = v.unwrap_or("");
                if !seen.contains_key(v) {
                    seen.insert(v.to_owned(), 0);
                }
            }
        }
        let mut distinct: Vec<String> = seen.keys().cloned().collect();
        distinct.sort();
        for (rank, v) in distinct.into_iter().enumerate() {
            seen.insert(v, rank as u32);
        }
        key_columns.push(arrays);
        ranks.push(seen);
    }
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    // (hour, bucket, rank, rank, batch, row): unique, so an unstable sort
    // is stable.
    let bucket = table.time_bucket();
    let mut keys: Vec<(i64, i64, u32, u32, u32, u32)> = Vec::with_capacity(total);
    let mut times: Vec<&[i64]> = Vec::with_capacity(batches.len());
    let time_arrays = batches
        .iter()
        .map(|b| column(b, table.time_column()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (bi, t) in time_arrays.iter().enumerate() {
        let t = t.as_primitive::<TimestampNanosecondType>().values();
        times.push(t);
        let rank_of = |k: usize, row: usize| -> u32 {
            key_columns.get(k).map_or(0, |arrays| {
                let a = arrays[bi].as_string::<i32>();
                ranks[k][if a.is_null(row) { "" } else { a.value(row) }]
            })
        };
        for (row, t) in t.iter().enumerate() {
            keys.push((
                partition_of(*t),
                bucket.map_or(0, |w| t.div_euclid(w)),
                rank_of(0, row),
                rank_of(1, row),
                bi as u32,
                row as u32,
            ));
        }
    }
    keys.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    while start < keys.len() {
        let hour = keys[start].0;
        let end = start + keys[start..].partition_point(|k| k.0 == hour);
        // Runs of consecutive rows of one batch are copied in one go each.
        let mut runs = Vec::new();
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        let mut i = start;
        while i < end {
            let (b, first) = (keys[i].4, keys[i].5);
            let mut j = i + 1;
            while j < end && keys[j].4 == b && keys[j].5 == keys[j - 1].5 + 1 {
                j += 1;
            }
            let len = j - i;
            for t in &times[b as usize][first as usize..first as usize + len] {
                min_time = min_time.min(*t);
                max_time = max_time.max(*t);
            }
            runs.push((b as usize, first as usize, len));
            i = j;
        }
        out.push(PartitionRows {
            table,
            partition: hour,
            rows: end - start,
            min_time,
            max_time,
            runs,
        });
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use otelhouse_loadgen::r#gen::{Generator, recent_range};
    use otelhouse_otlp::convert;

    /// The batches of `requests` generated requests of `rows` each.
    fn generated(
        g: &mut Generator,
        table: Table,
        requests: usize,
        rows: usize,
        range: (u64, u64),
    ) -> Vec<RecordBatch> {
        (0..requests)
            .flat_map(|_| match table {
                Table::Logs => convert::logs(&g.logs_request(rows, range)),
                _ => convert::traces(&g.spans_request(rows, range)),
            })
            .map(|(_, b)| b)
            .collect()
    }

    fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
        let a = batch.column_by_name(name).unwrap();
        let a = a.as_any().downcast_ref::<StringArray>().unwrap();
        a.iter().map(|v| v.unwrap_or("").to_owned()).collect()
    }

    #[test]
    fn rows_are_split_by_hour_and_clustered_without_loss() {
        let mut g = Generator::new(3);
        // Two hours and a half: every batch spans an hour boundary.
        let (_, now) = recent_range(0);
        let range = (now - 9_000_000_000_000, now);
        for table in [Table::Logs, Table::Traces] {
            let batches = generated(&mut g, table, 4, 300, range);
            let parts = partition_and_sort(table, &batches).unwrap();
            assert!(parts.len() >= 3, "{} hours", parts.len());
            assert!(
                parts.iter().any(|p| p.rows > 2 * 97),
                "a partition of several chunks"
            );
            let mut before: Vec<String> =
                batches.iter().flat_map(|b| strings(b, "SpanId")).collect();
            let mut after = Vec::new();
            for p in &parts {
                // Copied in chunks of 97 rows: runs are cut across chunks.
                let chunks: Vec<RecordBatch> = p
                    .batches(&batches, 97)
                    .collect::<anyhow::Result<_>>()
                    .unwrap();
                assert!(chunks.iter().all(|c| c.num_rows() <= 97));
                assert_eq!(chunks.len(), p.rows.div_ceil(97));
                let batch = arrow::compute::concat_batches(&table.schema(), &chunks).unwrap();
                assert_eq!(batch.num_rows(), p.rows);
                let services = strings(&batch, "ServiceName");
                let times = batch.column_by_name(table.time_column()).unwrap();
                let times = times.as_primitive::<TimestampNanosecondType>().values();
                let width = table.time_bucket().unwrap_or(i64::MAX);
                let clusters: Vec<(i64, &String)> = times
                    .iter()
                    .map(|t| t.div_euclid(width))
                    .zip(&services)
                    .collect();
                assert!(
                    clusters.is_sorted(),
                    "clustered by time bucket, then service"
                );
                assert!(times.iter().all(|t| partition_of(*t) == p.partition));
                assert_eq!(p.min_time, *times.iter().min().unwrap());
                assert_eq!(p.max_time, *times.iter().max().unwrap());
                after.extend(strings(&batch, "SpanId"));
            }
            before.sort();
            after.sort();
            assert_eq!(before, after, "{}: same rows", table.name());
        }
    }

    #[test]
    fn pages_are_one_index_block_and_timestamps_delta_coded() {
        use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
        use parquet::file::metadata::PageIndexPolicy;
        let mut g = Generator::new(5);
        let range = recent_range(0);
        for table in [Table::Logs, Table::Traces] {
            let batches = generated(&mut g, table, 10, 1000, range);
            // One batch, as a flush or a merge writes (the writer cuts pages
            // between its mini-batches of 1,024 values).
            let batch = arrow::compute::concat_batches(&table.schema(), &batches).unwrap();
            let mut out = Vec::new();
            write(&mut out, table, &[batch]).unwrap();
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
            let meta = ArrowReaderMetadata::load(&bytes::Bytes::from(out), options).unwrap();
            let meta = meta.metadata();
            let rg = meta.row_group(0);
            assert_eq!(rg.num_rows(), 10_000);
            // A column by its path, or the first leaf under it (a map's keys).
            let column = |name: &str| {
                (0..rg.num_columns())
                    .find(|&i| {
                        let path = rg.column(i).column_path().string();
                        path == name || path.starts_with(&format!("{name}."))
                    })
                    .unwrap()
            };
            let ts = rg.column(column("Timestamp"));
            assert!(ts.dictionary_page_offset().is_none(), "{}", table.name());
            let encodings: Vec<Encoding> = ts.encodings().collect();
            assert!(
                encodings.contains(&Encoding::DELTA_BINARY_PACKED),
                "{encodings:?}"
            );
            assert_eq!(ts.compression(), Compression::UNCOMPRESSED);
            // Rows per page of the service and the attribute map's keys.
            let offsets = &meta.offset_index().unwrap()[0];
            let attributes = match table {
                Table::Logs => "LogAttributes",
                _ => "SpanAttributes",
            };
            for name in ["ServiceName", attributes] {
                let pages = &offsets[column(name)].page_locations;
                let mut firsts: Vec<i64> = pages.iter().map(|p| p.first_row_index).collect();
                firsts.push(10_000);
                let largest = firsts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
                // The limit is checked between mini-batches of 1,024 values.
                assert!(largest <= PAGE_ROWS as i64 + 1024, "{name}: {largest} rows");
                assert!(pages.len() >= 10_000 / PAGE_ROWS, "{name}");
            }
        }
    }
}
