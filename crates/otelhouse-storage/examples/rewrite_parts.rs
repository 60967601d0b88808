//! Rewrites every Parquet part of a data directory in place with the
//! store's writer settings, optionally changed, keeping the rows and their
//! order (so the token index sidecars stay valid). For A/B runs of the
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

use arrow::record_batch::RecordBatchReader;
use otelhouse_schema::Table;
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
        for batch in reader {
            writer.write(&batch?)?;
        }
        writer.close()?;
        std::fs::rename(&tmp, path)?;
        let new = std::fs::metadata(path)?.len();
        after += new;
        let id: u64 = path.file_stem().unwrap().to_string_lossy().parse()?;
        sizes.insert(id, (old, new));
    }
    // The manifest's `bytes` is the part's Parquet file plus its index.
    let manifest = data.join("parts/MANIFEST.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest)?)?;
    for part in m["parts"].as_array_mut().unwrap() {
        let id = part["id"].as_u64().unwrap();
        let &(old, new) = sizes
            .get(&id)
            .ok_or_else(|| anyhow::anyhow!("part {id} not found"))?;
        let bytes = part["bytes"].as_u64().unwrap();
        part["bytes"] = (bytes + new - old).into();
    }
    std::fs::write(&manifest, serde_json::to_vec(&m)?)?;
    println!(
        "{{\"parts\": {}, \"bytes_before\": {before}, \"bytes_after\": {after}}}",
        files.len()
    );
    Ok(())
}
