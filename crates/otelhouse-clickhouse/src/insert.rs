//! Arrow batches (as the OTLP conversion makes them) into ClickStack's
//! tables as Native (or ArrowStream) inserts: the embedded store's column names and
//! Arrow types map one to one onto the DDL's (see `ddl`).

use arrow::record_batch::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use otelhouse_schema::Table;

use crate::client::{ClickHouseError, Client, Statement};
use crate::compile::ident;

/// The batches as one Arrow IPC stream.
pub fn arrow_stream(batches: &[RecordBatch]) -> Result<Vec<u8>, ClickHouseError> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| ClickHouseError::Config("nothing to insert".into()))?;
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, &schema)
        .map_err(|e| ClickHouseError::Config(e.to_string()))?;
    for b in batches {
        w.write(b)
            .map_err(|e| ClickHouseError::Config(e.to_string()))?;
    }
    w.finish()
        .map_err(|e| ClickHouseError::Config(e.to_string()))?;
    drop(w);
    Ok(out)
}

/// Inserts `batches` into `table`. With a `dedup_token`, ClickHouse stores
/// a retried insert of the same batches once.
pub async fn insert(
    client: &Client,
    table: Table,
    batches: &[RecordBatch],
    dedup_token: Option<&str>,
) -> Result<(), ClickHouseError> {
    insert_as(
        client,
        table,
        batches,
        InsertFormat::Native,
        dedup_token,
        &[],
    )
    .await
}

/// The wire format of inserts. Native is what otelhouse sends: ClickHouse
/// parses it fastest (BENCHMARKS.md); ArrowStream stays for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertFormat {
    Native,
    ArrowStream,
}

impl InsertFormat {
    pub fn name(self) -> &'static str {
        match self {
            InsertFormat::Native => "Native",
            InsertFormat::ArrowStream => "ArrowStream",
        }
    }

    pub fn encode(self, batches: &[RecordBatch]) -> Result<Vec<u8>, ClickHouseError> {
        match self {
            InsertFormat::Native => crate::native::native(batches),
            InsertFormat::ArrowStream => arrow_stream(batches),
        }
    }
}

/// [`insert`] in a chosen format, with further settings for this insert.
pub async fn insert_as(
    client: &Client,
    table: Table,
    batches: &[RecordBatch],
    format: InsertFormat,
    dedup_token: Option<&str>,
    extra: &[(&str, String)],
) -> Result<(), ClickHouseError> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(());
    }
    let columns: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .map(|f| ident(f.name()))
        .collect();
    let st = Statement {
        sql: format!(
            "INSERT INTO {}.{} ({}) FORMAT {}",
            ident(client.database()),
            ident(table.name()),
            columns.join(", "),
            format.name()
        ),
        params: Vec::new(),
    };
    let mut settings = vec![("date_time_input_format", "best_effort".to_string())];
    settings.extend(extra.iter().cloned());
    if let Some(token) = dedup_token {
        settings.push(("insert_deduplication_token", token.to_string()));
    }
    client.insert(&st, &settings, format.encode(batches)?).await
}
