//! The embedded store: per table, an in-memory tail of Arrow batches (rows
//! applied from the WAL, in WAL order) and immutable Parquet parts.
//!
//! Invariants:
//! - A part holds exactly the rows of WAL entries `min_seq..=max_seq` for its
//!   table; its file name says so (`<min_seq>-<max_seq>.parquet`), and it
//!   becomes visible by an atomic rename after an fsync. So after a crash,
//!   replaying WAL entries with `seq > max(max_seq)` per table restores the
//!   tail exactly: nothing lost, nothing twice.
//! - The tail is appended in seq order (by the WAL writer thread), so the
//!   first batch of a tail carries the smallest seq not yet in a part; the WAL
//!   may drop everything before the smallest such seq across tables.
//! - Queries snapshot parts + flushing batches + tail under one lock, so a
//!   row is seen exactly once while it moves from tail to part.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::datasource::MemTable;
use datafusion::functions::string::expr_fn::{contains, lower};
use datafusion::prelude::{DataFrame, Expr, ParquetReadOptions, SessionContext, ident, lit};
use datafusion::scalar::ScalarValue;
use otelhouse_otlp::convert::TableBatches;
use otelhouse_otlp::{Encoding, OtlpRequest};
use otelhouse_schema::{Signal, Table};
use otelhouse_wal::{Apply, Entry};
use parking_lot::Mutex;

use crate::query::{MetricQuery, QueryError, SearchQuery, TimeRange};
use crate::rows::{Row, to_rows};
use crate::{Storage, part};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Flush a table's tail once it holds this many rows...
    pub flush_rows: usize,
    /// ...or this many bytes...
    pub flush_bytes: usize,
    /// ...or its oldest row has waited this long.
    pub flush_interval: Duration,
    /// Above this much tail memory (all tables) ingestion is refused with
    /// "retry later" until flushes catch up.
    pub max_tail_bytes: usize,
    pub query_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            flush_rows: 500_000,
            flush_bytes: 128 << 20,
            flush_interval: Duration::from_secs(30),
            max_tail_bytes: 512 << 20,
            query_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
struct Part {
    path: PathBuf,
    max_seq: u64,
    rows: u64,
    bytes: u64,
}

#[derive(Default)]
struct TableState {
    parts: Vec<Part>,
    /// Batches being written to a part: still visible to queries.
    flushing: Vec<(u64, RecordBatch)>,
    tail: Vec<(u64, RecordBatch)>,
    tail_rows: usize,
    tail_bytes: usize,
    tail_since: Option<Instant>,
    /// Highest seq whose rows are in a part.
    flushed_seq: u64,
}

#[derive(Default)]
struct State {
    tables: [TableState; 7],
    /// Highest seq applied (or known durable elsewhere).
    last_applied: u64,
    tail_bytes: usize,
}

struct Inner {
    dir: PathBuf,
    opts: StoreOptions,
    state: Mutex<State>,
    /// One flush at a time (the background loop and shutdown may race).
    flush_lock: Mutex<()>,
}

/// Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Rows, parts and bytes of one table, for /metrics and stats.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TableStats {
    pub table: &'static str,
    pub part_rows: u64,
    pub parts: usize,
    pub part_bytes: u64,
    pub tail_rows: usize,
    pub tail_bytes: usize,
}

fn part_dir(dir: &Path, table: Table) -> PathBuf {
    dir.join("parts").join(table.name())
}

fn parse_part_name(name: &str) -> Option<(u64, u64)> {
    let (min, max) = name.strip_suffix(".parquet")?.split_once('-')?;
    Some((min.parse().ok()?, max.parse().ok()?))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn part_rows(path: &Path) -> anyhow::Result<u64> {
    use parquet::file::reader::FileReader;
    let reader = parquet::file::reader::SerializedFileReader::new(fs::File::open(path)?)?;
    Ok(reader.metadata().file_metadata().num_rows() as u64)
}

impl EmbeddedStore {
    /// Opens the store in `dir`, loading the part list. Half-written parts
    /// (`*.tmp`) from a crash are deleted: their rows are still in the WAL.
    pub fn open(dir: &Path, opts: StoreOptions) -> anyhow::Result<Self> {
        let mut state = State::default();
        for table in Table::ALL {
            let pdir = part_dir(dir, table);
            fs::create_dir_all(&pdir)?;
            let ts = &mut state.tables[table as usize];
            for entry in fs::read_dir(&pdir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    fs::remove_file(entry.path())?;
                    continue;
                }
                let Some((_, max_seq)) = parse_part_name(&name) else {
                    continue;
                };
                let path = entry.path();
                let rows = part_rows(&path)
                    .map_err(|e| anyhow::anyhow!("reading part {}: {e}", path.display()))?;
                ts.parts.push(Part {
                    bytes: entry.metadata()?.len(),
                    path,
                    max_seq,
                    rows,
                });
                ts.flushed_seq = ts.flushed_seq.max(max_seq);
            }
            ts.parts.sort_by_key(|p| p.max_seq);
        }
        state.last_applied = state
            .tables
            .iter()
            .map(|t| t.flushed_seq)
            .max()
            .unwrap_or(0);
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                opts,
                state: Mutex::new(state),
                flush_lock: Mutex::new(()),
            }),
        })
    }

    /// The WAL must number new entries from here on: every seq below is
    /// already reflected in a part.
    pub fn min_next_seq(&self) -> u64 {
        self.inner.state.lock().last_applied + 1
    }

    /// Re-applies one WAL entry found at start-up; tables whose parts
    /// already hold it are skipped. `kind` is the signal id.
    pub fn replay(&self, entry: Entry) -> anyhow::Result<()> {
        let signal = signal_from_kind(entry.kind).ok_or_else(|| {
            anyhow::anyhow!("WAL entry {} has unknown kind {}", entry.seq, entry.kind)
        })?;
        let request = OtlpRequest::decode(signal, Encoding::Protobuf, &entry.payload)
            .map_err(|e| anyhow::anyhow!("WAL entry {} does not decode: {e}", entry.seq))?;
        self.apply_batches(entry.seq, request.to_batches());
        Ok(())
    }

    fn apply_batches(&self, seq: u64, batches: TableBatches) {
        let mut state = self.inner.state.lock();
        for (table, batch) in batches {
            let ts = &mut state.tables[table as usize];
            if seq <= ts.flushed_seq {
                continue;
            }
            let bytes = batch.get_array_memory_size();
            ts.tail_rows += batch.num_rows();
            ts.tail_bytes += bytes;
            ts.tail_since.get_or_insert_with(Instant::now);
            ts.tail.push((seq, batch));
            state.tail_bytes += bytes;
        }
        state.last_applied = state.last_applied.max(seq);
    }

    /// The sink the WAL writer applies durable entries to.
    pub fn applier(&self) -> StoreApplier {
        StoreApplier(self.clone())
    }

    /// Whether the tail has room for more rows; ingestion answers "retry
    /// later" while it does not.
    pub fn has_room(&self) -> bool {
        self.inner.state.lock().tail_bytes < self.inner.opts.max_tail_bytes
    }

    pub fn tail_bytes(&self) -> usize {
        self.inner.state.lock().tail_bytes
    }

    /// Writes every tail that is due (or all of them with `force`) to a
    /// part. Returns the seq through which the WAL may be truncated.
    /// Blocking: call from a blocking thread.
    pub fn flush(&self, force: bool) -> anyhow::Result<u64> {
        let _one_at_a_time = self.inner.flush_lock.lock();
        for table in Table::ALL {
            let batches = {
                let mut state = self.inner.state.lock();
                let ts = &mut state.tables[table as usize];
                let due = ts.tail_rows >= self.inner.opts.flush_rows
                    || ts.tail_bytes >= self.inner.opts.flush_bytes
                    || ts
                        .tail_since
                        .is_some_and(|t| t.elapsed() >= self.inner.opts.flush_interval);
                if ts.tail.is_empty() || !(force || due) {
                    continue;
                }
                ts.flushing = std::mem::take(&mut ts.tail);
                let bytes = std::mem::take(&mut ts.tail_bytes);
                ts.tail_rows = 0;
                ts.tail_since = None;
                state.tail_bytes -= bytes;
                state.tables[table as usize].flushing.clone()
            };
            let part = self.write_part(table, &batches);
            let mut state = self.inner.state.lock();
            let ts = &mut state.tables[table as usize];
            match part {
                Ok(part) => {
                    ts.flushed_seq = part.max_seq;
                    ts.parts.push(part);
                    ts.flushing.clear();
                }
                Err(e) => {
                    // Put the rows back in front of the tail; the WAL still has them.
                    let bytes: usize = batches.iter().map(|(_, b)| b.get_array_memory_size()).sum();
                    let mut tail = std::mem::take(&mut ts.flushing);
                    ts.tail_rows += tail.iter().map(|(_, b)| b.num_rows()).sum::<usize>();
                    tail.append(&mut ts.tail);
                    ts.tail = tail;
                    ts.tail_bytes += bytes;
                    ts.tail_since.get_or_insert_with(Instant::now);
                    state.tail_bytes += bytes;
                    return Err(e.context(format!("flushing {}", table.name())));
                }
            }
        }
        Ok(self.truncatable_seq())
    }

    /// Highest seq such that every entry up to it is in a part.
    fn truncatable_seq(&self) -> u64 {
        let state = self.inner.state.lock();
        state
            .tables
            .iter()
            .filter_map(|t| {
                t.flushing
                    .first()
                    .or(t.tail.first())
                    .map(|(seq, _)| seq - 1)
            })
            .min()
            .unwrap_or(state.last_applied)
    }

    fn write_part(&self, table: Table, batches: &[(u64, RecordBatch)]) -> anyhow::Result<Part> {
        let min_seq = batches.first().map(|(s, _)| *s).unwrap_or(0);
        let max_seq = batches.last().map(|(s, _)| *s).unwrap_or(0);
        let dir = part_dir(&self.inner.dir, table);
        let path = dir.join(format!("{min_seq:020}-{max_seq:020}.parquet"));
        let tmp = path.with_extension("parquet.tmp");
        let (file, rows) = part::write(
            fs::File::create(&tmp)?,
            table,
            batches.iter().map(|(_, b)| b),
        )?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        fs::rename(&tmp, &path)?;
        sync_dir(&dir)?;
        Ok(Part {
            path,
            max_seq,
            rows,
            bytes,
        })
    }

    pub fn stats(&self) -> Vec<TableStats> {
        let state = self.inner.state.lock();
        Table::ALL
            .into_iter()
            .map(|t| {
                let ts = &state.tables[t as usize];
                TableStats {
                    table: t.name(),
                    part_rows: ts.parts.iter().map(|p| p.rows).sum(),
                    parts: ts.parts.len(),
                    part_bytes: ts.parts.iter().map(|p| p.bytes).sum(),
                    tail_rows: ts.tail_rows
                        + ts.flushing.iter().map(|(_, b)| b.num_rows()).sum::<usize>(),
                    tail_bytes: ts.tail_bytes,
                }
            })
            .collect()
    }

    /// Parts and in-memory batches of a table, taken together.
    fn snapshot(&self, table: Table) -> (Vec<String>, Vec<RecordBatch>) {
        let state = self.inner.state.lock();
        let ts = &state.tables[table as usize];
        let paths = ts
            .parts
            .iter()
            .map(|p| p.path.to_string_lossy().into_owned())
            .collect();
        let batches = ts
            .flushing
            .iter()
            .chain(&ts.tail)
            .map(|(_, b)| b.clone())
            .collect();
        (paths, batches)
    }

    /// A DataFrame over every row of a table (parts ∪ memory).
    async fn frame(&self, ctx: &SessionContext, table: Table) -> Result<DataFrame, QueryError> {
        let (paths, batches) = self.snapshot(table);
        let schema = table.schema();
        let memory = ctx.read_table(Arc::new(MemTable::try_new(schema.clone(), vec![batches])?))?;
        if paths.is_empty() {
            return Ok(memory);
        }
        let parts = ctx
            .read_parquet(paths, ParquetReadOptions::default().schema(&schema))
            .await?;
        Ok(parts.union(memory)?)
    }

    async fn run(
        &self,
        f: impl Future<Output = Result<Vec<RecordBatch>, QueryError>>,
    ) -> Result<Vec<Row>, QueryError> {
        let timeout = self.inner.opts.query_timeout;
        let batches = tokio::time::timeout(timeout, f)
            .await
            .map_err(|_| QueryError::Timeout(timeout))??;
        Ok(to_rows(&batches))
    }
}

fn signal_from_kind(kind: u8) -> Option<Signal> {
    Signal::ALL.get(kind as usize).copied()
}

/// The WAL entry kind for a signal (its position in `Signal::ALL`).
pub fn kind_of(signal: Signal) -> u8 {
    Signal::ALL
        .iter()
        .position(|s| *s == signal)
        .expect("every signal is listed") as u8
}

fn ts_lit(nanos: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(nanos),
        Some("UTC".into()),
    ))
}

fn time_filter(df: DataFrame, column: &str, range: TimeRange) -> Result<DataFrame, QueryError> {
    let mut df = df;
    if let Some(from) = range.from {
        df = df.filter(ident(column).gt_eq(ts_lit(from)))?;
    }
    if let Some(to) = range.to {
        df = df.filter(ident(column).lt_eq(ts_lit(to)))?;
    }
    Ok(df)
}

/// Applies from the WAL writer thread (see [`otelhouse_wal::Committer`]).
pub struct StoreApplier(EmbeddedStore);

impl Apply<TableBatches> for StoreApplier {
    fn apply(&mut self, seq: u64, item: TableBatches) {
        self.0.apply_batches(seq, item);
    }
}

#[async_trait]
impl Storage for EmbeddedStore {
    async fn search(&self, q: &SearchQuery) -> Result<Vec<Row>, QueryError> {
        let (table, text_column) = match q.signal {
            Signal::Logs => (Table::Logs, "Body"),
            Signal::Traces => (Table::Traces, "SpanName"),
            Signal::Metrics => {
                return Err(QueryError::BadRequest(
                    "search covers logs and traces; use /api/v1/metrics for metrics".into(),
                ));
            }
        };
        self.run(async {
            let ctx = SessionContext::new();
            let mut df = time_filter(self.frame(&ctx, table).await?, "Timestamp", q.range)?;
            if let Some(text) = q.text.as_deref().filter(|t| !t.is_empty()) {
                df = df.filter(contains(
                    lower(ident(text_column)),
                    lit(text.to_lowercase()),
                ))?;
            }
            let df = df
                .sort(vec![ident("Timestamp").sort(false, true)])?
                .limit(0, Some(q.limit))?;
            Ok(df.collect().await?)
        })
        .await
    }

    async fn trace(&self, trace_id: &str, limit: usize) -> Result<Vec<Row>, QueryError> {
        self.run(async {
            let ctx = SessionContext::new();
            let df = self
                .frame(&ctx, Table::Traces)
                .await?
                .filter(ident("TraceId").eq(lit(trace_id.to_lowercase())))?;
            let df = df
                .sort(vec![ident("Timestamp").sort(true, true)])?
                .limit(0, Some(limit))?;
            Ok(df.collect().await?)
        })
        .await
    }

    async fn metric_points(&self, q: &MetricQuery) -> Result<Vec<Row>, QueryError> {
        let mut rows = Vec::new();
        for table in Table::METRICS {
            let mut part = self
                .run(async {
                    let ctx = SessionContext::new();
                    let df = self
                        .frame(&ctx, table)
                        .await?
                        .filter(ident("MetricName").eq(lit(q.name.as_str())))?;
                    let df = time_filter(df, "TimeUnix", q.range)?;
                    let df = df
                        .sort(vec![ident("TimeUnix").sort(true, true)])?
                        .limit(0, Some(q.limit))?;
                    Ok(df.collect().await?)
                })
                .await?;
            let kind = table.metric_type().expect("metric table");
            for row in &mut part {
                row.insert("MetricType".into(), kind.into());
            }
            rows.append(&mut part);
        }
        rows.sort_by(|a, b| a["TimeUnix"].as_str().cmp(&b["TimeUnix"].as_str()));
        rows.truncate(q.limit);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;

    fn request(bodies: &[&str]) -> OtlpRequest {
        OtlpRequest::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: bodies
                        .iter()
                        .map(|b| LogRecord {
                            time_unix_nano: 1_700_000_000_000_000_000,
                            body: Some(AnyValue {
                                value: Some(Value::StringValue(b.to_string())),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn entry(seq: u64, bodies: &[&str]) -> Entry {
        let OtlpRequest::Logs(r) = request(bodies) else {
            unreachable!()
        };
        Entry {
            seq,
            kind: kind_of(Signal::Logs),
            payload: r.encode_to_vec(),
        }
    }

    async fn count(store: &EmbeddedStore) -> usize {
        let q = SearchQuery {
            signal: Signal::Logs,
            text: None,
            range: TimeRange::default(),
            limit: 10_000,
        };
        store.search(&q).await.unwrap().len()
    }

    #[tokio::test]
    async fn parts_and_tail_are_read_together_and_replay_skips_flushed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut applier = store.applier();
        applier.apply(1, request(&["a", "b"]).to_batches());
        applier.apply(2, request(&["c"]).to_batches());
        assert_eq!(store.flush(true).unwrap(), 2, "everything is in parts");
        applier.apply(3, request(&["d"]).to_batches());
        assert_eq!(store.flush(false).unwrap(), 2, "seq 3 is only in memory");
        assert_eq!(count(&store).await, 4, "part rows and tail rows, once each");
        let text = SearchQuery {
            signal: Signal::Logs,
            text: Some("C".into()),
            range: TimeRange::default(),
            limit: 10,
        };
        assert_eq!(store.search(&text).await.unwrap().len(), 1);

        // A restart: the part survives, the WAL replays 1..=3; only 3 is new.
        drop(store);
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.min_next_seq(), 3);
        for (seq, bodies) in [(1, &["a", "b"][..]), (2, &["c"][..]), (3, &["d"][..])] {
            store.replay(entry(seq, bodies)).unwrap();
        }
        assert_eq!(count(&store).await, 4);
        assert_eq!(store.min_next_seq(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_are_seen_exactly_once_while_tails_become_parts() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            flush_rows: 1,
            ..StoreOptions::default()
        };
        let store = EmbeddedStore::open(dir.path(), opts).unwrap();
        let applied = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = {
            let (store, applied) = (store.clone(), applied.clone());
            std::thread::spawn(move || {
                let mut applier = store.applier();
                for seq in 1..=300u64 {
                    let a = format!("r{seq}a");
                    let b = format!("r{seq}b");
                    applier.apply(seq, request(&[a.as_str(), b.as_str()]).to_batches());
                    applied.fetch_add(2, std::sync::atomic::Ordering::SeqCst);
                    if seq % 10 == 0 {
                        store.flush(false).unwrap();
                    }
                    std::thread::sleep(std::time::Duration::from_micros(500));
                }
            })
        };
        let q = SearchQuery {
            signal: Signal::Logs,
            text: None,
            range: TimeRange::default(),
            limit: 10_000,
        };
        let mut checks = 0;
        while !writer.is_finished() || checks == 0 {
            let before = applied.load(std::sync::atomic::Ordering::SeqCst);
            let rows = store.search(&q).await.unwrap();
            let after = applied.load(std::sync::atomic::Ordering::SeqCst);
            let bodies: std::collections::HashSet<_> = rows
                .iter()
                .map(|r| r["Body"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(bodies.len(), rows.len(), "a row was seen twice");
            assert!(
                before <= rows.len() && rows.len() <= after,
                "{before} <= {} <= {after}",
                rows.len()
            );
            checks += 1;
        }
        writer.join().unwrap();
        assert_eq!(count(&store).await, 600);
        assert!(
            store.stats()[0].parts >= 10,
            "flushes happened during the queries"
        );
        assert!(checks >= 5, "queries ran while rows moved ({checks})");
    }

    #[test]
    fn leftover_temporary_parts_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = part_dir(dir.path(), Table::Logs);
        fs::create_dir_all(&pdir).unwrap();
        fs::write(
            pdir.join("00000000000000000001-00000000000000000009.parquet.tmp"),
            b"half",
        )
        .unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.min_next_seq(), 1);
        assert_eq!(fs::read_dir(&pdir).unwrap().count(), 0);
    }
}
