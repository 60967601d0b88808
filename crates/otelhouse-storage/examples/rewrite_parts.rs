//! Rewrites every Parquet part of a data directory, and its token index, in
//! place with this build's settings (the writer's optionally changed),
//! keeping the rows and their order. For A/B runs of the
//! query suite on the very same rows:
//!
//! ```sh
//! cargo run --release --example rewrite_parts -- DATA_DIR [--page-rows N] [--no-dictionary COLUMN]... [--encoding COLUMN=ENCODING]... [--compression COLUMN=CODEC]... [--attribute-columns none]
//! ```
//!
//! Run it only on a copy of a data directory with no server on it (the
//! manifest is rewritten with the parts' new sizes, which reads use).

use std::fs::File;
use std::path::PathBuf;

use arrow::record_batch::RecordBatchReader;
use otelhouse_storage::manifest::Manifest;
use otelhouse_storage::text_index;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::schema::types::ColumnPath;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let data = PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: DATA_DIR"))?,
    );
    let mut changes: Vec<(String, String)> = Vec::new();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        changes.push((flag, value));
    }
    // The store's settings (the same for every table), with the changes asked for.
    let mut drop_key_columns = false;
    let props = {
        let mut props = otelhouse_storage::part::writer_properties_builder();
        for (flag, value) in &changes {
            props = match flag.as_str() {
                // Parts without attribute key columns (`attribute_columns`),
                // for A/B runs of what they cost the queries that do not
                // use them.
                "--attribute-columns" if value == "none" => {
                    drop_key_columns = true;
                    props
                }
                "--page-rows" => props.set_data_page_row_count_limit(value.parse()?),
                "--no-dictionary" => {
                    props.set_column_dictionary_enabled(ColumnPath::from(value.as_str()), false)
                }
                // COLUMN=ENCODING, e.g. Timestamp=DELTA_BINARY_PACKED (with --no-dictionary COLUMN)
                "--encoding" => {
                    let (column, encoding) = value
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("--encoding COLUMN=ENCODING"))?;
                    props.set_column_encoding(ColumnPath::from(column), encoding.parse()?)
                }
                // COLUMN=CODEC, e.g. Timestamp=UNCOMPRESSED or Body=ZSTD(3)
                "--compression" => {
                    let (column, codec) = value
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("--compression COLUMN=CODEC"))?;
                    props.set_column_compression(ColumnPath::from(column), codec.parse()?)
                }
                _ => anyhow::bail!("unknown flag {flag}"),
            };
        }
        props.build()
    };
    let parts_dir = data.join("parts");
    let mut manifest = Manifest::load(&parts_dir)?;
    let (mut before, mut after) = (0u64, 0u64);
    for part in &mut manifest.parts {
        let table = part
            .table()
            .ok_or_else(|| anyhow::anyhow!("part {} of unknown table {}", part.id, part.table))?;
        let path = parts_dir.join(part.relative_path());
        before += std::fs::metadata(&path)?.len();
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path)?)?;
        if drop_key_columns {
            let file_schema = builder.schema().clone();
            let roots = table
                .schema()
                .fields()
                .iter()
                .map(|f| file_schema.index_of(f.name()))
                .collect::<Result<Vec<_>, _>>()?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            builder = builder.with_projection(mask);
            part.attribute_columns.clear();
        }
        let reader = builder.build()?;
        let tmp = path.with_extension("rewrite");
        let mut writer =
            ArrowWriter::try_new(File::create(&tmp)?, reader.schema(), Some(props.clone()))?;
        // The token index too, as this build writes it.
        let tokens_tmp = path.with_extension("tokens-rewrite");
        let text = text_index::text_column(table);
        let mut index = text
            .map(|_| text_index::Builder::create(&tokens_tmp))
            .transpose()?;
        for batch in reader {
            let batch = batch?;
            if let (Some(index), Some(column)) = (&mut index, text) {
                let (texts, trace_ids) = text_index::indexed_columns(&batch, column)?;
                index.add(texts, Some(trace_ids))?;
            }
            writer.write(&batch)?;
        }
        let meta = writer.close()?;
        std::fs::rename(&tmp, &path)?;
        let written = std::fs::metadata(&path)?.len();
        after += written;
        if let Some(index) = index {
            let groups: Vec<u64> = meta
                .row_groups()
                .iter()
                .map(|g| g.num_rows() as u64)
                .collect();
            let (_, size) = index.finish(&groups)?;
            std::fs::rename(&tokens_tmp, parts_dir.join(part.relative_index_path()))?;
            part.index_bytes = size;
        }
        // A part's `bytes` is its Parquet file plus its index.
        part.bytes = written + part.index_bytes;
    }
    manifest.commit(&parts_dir)?;
    println!(
        "{{\"parts\": {}, \"bytes_before\": {before}, \"bytes_after\": {after}}}",
        manifest.parts.len()
    );
    Ok(())
}
