//! Rewrites every Parquet part of a data directory, and its token index, in
//! place with this build's settings (the writer's optionally changed),
//! keeping the rows and their order. For A/B runs of the
//! query suite on the very same rows:
//!
//! ```sh
//! cargo run --release --example rewrite_parts -- DATA_DIR [--page-rows N] [--no-dictionary COLUMN]... [--encoding COLUMN=ENCODING]...
//! ```
//!
//! Run it only on a copy of a data directory with no server on it (the
//! manifest is rewritten with the parts' new sizes, which reads use).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::record_batch::RecordBatchReader;
use otelhouse_schema::Table;
use otelhouse_storage::text_index;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

fn parts(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            parts(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

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
    // The store's settings for the table, with the changes asked for.
    let props_for = |table: Table| -> anyhow::Result<WriterProperties> {
        let mut props = otelhouse_storage::part::writer_properties_builder(table);
        for (flag, value) in &changes {
            props = match flag.as_str() {
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
                _ => anyhow::bail!("unknown flag {flag}"),
            };
        }
        Ok(props.build())
    };
    let mut files = Vec::new();
    parts(&data.join("parts"), &mut files)?;
    files.sort();
    let (mut before, mut after) = (0u64, 0u64);
    let mut sizes = std::collections::HashMap::new();
    for path in &files {
        let old = std::fs::metadata(path)?.len();
        before += old;
        // parts/<table>/<partition>/<id>.parquet
        let table = path
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name);
        let table = table
            .and_then(|t| Table::from_name(&t.to_string_lossy()))
            .ok_or_else(|| anyhow::anyhow!("{} is not in a table's folder", path.display()))?;
        let props = props_for(table)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.build()?;
        let tmp = path.with_extension("rewrite");
        let mut writer = ArrowWriter::try_new(File::create(&tmp)?, reader.schema(), Some(props))?;
        // The token index too, as this build writes it.
        let tokens_tmp = path.with_extension("tokens-rewrite");
        let text = text_index::text_column(table);
        let mut index = text
            .map(|_| text_index::Builder::create(&tokens_tmp))
            .transpose()?;
        for batch in reader {
            let batch = batch?;
            if let (Some(index), Some(column)) = (&mut index, text) {
                index.add(batch.column_by_name(column).unwrap().as_string::<i32>())?;
            }
            writer.write(&batch)?;
        }
        let meta = writer.close()?;
        std::fs::rename(&tmp, path)?;
        let new = std::fs::metadata(path)?.len();
        after += new;
        let mut index_bytes = None;
        if let Some(index) = index {
            let groups: Vec<u64> = meta
                .row_groups()
                .iter()
                .map(|g| g.num_rows() as u64)
                .collect();
            let (_, size) = index.finish(&groups)?;
            std::fs::rename(&tokens_tmp, path.with_extension("tokens"))?;
            index_bytes = Some(size);
        }
        let id: u64 = path.file_stem().unwrap().to_string_lossy().parse()?;
        sizes.insert(id, (old, new, index_bytes));
    }
    // The manifest's `bytes` is the part's Parquet file plus its index.
    let manifest = data.join("parts/MANIFEST.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest)?)?;
    for part in m["parts"].as_array_mut().unwrap() {
        let id = part["id"].as_u64().unwrap();
        let &(old, new, index_bytes) = sizes
            .get(&id)
            .ok_or_else(|| anyhow::anyhow!("part {id} not found"))?;
        let mut bytes = part["bytes"].as_u64().unwrap() + new - old;
        if let Some(index_bytes) = index_bytes {
            bytes = bytes - part["index_bytes"].as_u64().unwrap() + index_bytes;
            part["index_bytes"] = index_bytes.into();
        }
        part["bytes"] = bytes.into();
    }
    std::fs::write(&manifest, serde_json::to_vec(&m)?)?;
    println!(
        "{{\"parts\": {}, \"bytes_before\": {before}, \"bytes_after\": {after}}}",
        files.len()
    );
    Ok(())
}
