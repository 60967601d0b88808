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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{
    DataFrame, Expr, ParquetReadOptions, SessionConfig, SessionContext, ident, lit,
};
use datafusion::scalar::ScalarValue;
use otelhouse_otlp::convert::TableBatches;
use otelhouse_otlp::{Encoding, OtlpRequest};
use otelhouse_schema::{Signal, Table};
use otelhouse_wal::{Apply, Entry};
use parking_lot::Mutex;

use crate::attribute_columns;
use crate::manifest::{self, Manifest, PartMeta};
use crate::parts_table::{PartFile, PartsTable};
use crate::query::{QueryError, TimeRange};
use crate::retention::{self, RetentionPolicy};
use crate::{compaction, part};
use crate::{count_runs, has_token, text_index};

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
    /// Memory all running queries share; a query needing more fails with
    /// [`QueryError::TooBig`].
    pub max_query_memory_bytes: usize,
    pub query_timeout: Duration,
    /// When parts merge.
    pub merge: compaction::Policy,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            flush_rows: 500_000,
            flush_bytes: 128 << 20,
            flush_interval: Duration::from_secs(30),
            max_tail_bytes: 512 << 20,
            max_query_memory_bytes: 512 << 20,
            query_timeout: Duration::from_secs(30),
            merge: compaction::Policy::default(),
        }
    }
}

/// A live part, shared by the part list and every query reading it. A part
/// that compaction or retention replaced is marked obsolete and its file is
/// deleted when the last reader lets go, so no query finds its file gone.
#[derive(Debug)]
pub(crate) struct LivePart {
    meta: PartMeta,
    /// Its files, as queries read them.
    file: PartFile,
    obsolete: AtomicBool,
}

impl LivePart {
    fn new(meta: PartMeta, path: PathBuf) -> LivePart {
        LivePart {
            file: PartFile::new(&meta, path),
            meta,
            obsolete: AtomicBool::new(false),
        }
    }
}

impl Drop for LivePart {
    fn drop(&mut self) {
        if !self.obsolete.load(Ordering::Acquire) {
            return;
        }
        let files = std::iter::once(self.file.path.as_path()).chain(self.file.index.path());
        for path in files {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(part = %path.display(), error = %e, "could not delete a replaced part");
            }
        }
    }
}

#[derive(Default)]
struct TableState {
    parts: Vec<Arc<LivePart>>,
    /// Batches being written to a part: still visible to queries.
    flushing: Vec<(u64, RecordBatch)>,
    tail: Vec<(u64, RecordBatch)>,
    tail_rows: usize,
    tail_bytes: usize,
    tail_since: Option<Instant>,
    /// Highest seq whose rows are in parts.
    flushed_seq: u64,
}

#[derive(Default)]
struct State {
    tables: [TableState; 7],
    /// Highest seq applied (or known durable elsewhere).
    last_applied: u64,
    tail_bytes: usize,
    /// The hour with the most parts waiting to merge: (table, partition,
    /// parts). Kept when the part set changes, read by every request.
    merge_backlog: Option<(Table, i64, usize)>,
}

impl State {
    /// Call after every change to a table's parts, with the store's merge
    /// policy (`StoreOptions::merge`).
    fn parts_changed(&mut self, policy: &compaction::Policy) {
        self.merge_backlog = Table::ALL
            .into_iter()
            .filter_map(|table| {
                let metas: Vec<&PartMeta> = self.tables[table as usize]
                    .parts
                    .iter()
                    .map(|p| &p.meta)
                    .collect();
                policy
                    .most_waiting(&metas)
                    .map(|(partition, n)| (table, partition, n))
            })
            .max_by_key(|&(_, _, n)| n);
    }
}

/// Why the store takes no more rows for now; ingestion answers "retry
/// later" with this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoom {
    /// The in-memory tail is at its budget until a flush is done.
    WriteBuffer,
    /// An hour holds more parts waiting to merge than `limit`
    /// ([`compaction::Policy::max_waiting_parts`]).
    MergesBehind {
        table: &'static str,
        partition: i64,
        parts: usize,
        limit: usize,
    },
}

impl NoRoom {
    /// The label of the `reason` in the rejected-records metric.
    pub fn reason(&self) -> &'static str {
        match self {
            NoRoom::WriteBuffer => "overloaded",
            NoRoom::MergesBehind { .. } => "merges_behind",
        }
    }
}

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoRoom::WriteBuffer => write!(
                f,
                "the write buffer is full while parts are being written; retry later"
            ),
            NoRoom::MergesBehind {
                table,
                partition,
                parts,
                limit,
            } => write!(
                f,
                "merges are behind ingestion: {table} holds {parts} parts of the hour {} waiting to merge (at most {limit}); retry later",
                chrono::DateTime::from_timestamp_nanos(*partition).format("%Y-%m-%d %H:00 UTC"),
            ),
        }
    }
}

struct Inner {
    /// `<data dir>/parts`: the manifest and one directory per table.
    dir: PathBuf,
    opts: StoreOptions,
    state: Mutex<State>,
    /// The committed manifest. Held while a change to the part set is
    /// written, so changes are serialised; `state` is updated after commit.
    manifest: Mutex<Manifest>,
    /// One flush at a time (the background loop and shutdown may race).
    flush_lock: Mutex<()>,
    counters: StoreCounters,
    /// Shared by every query: its memory pool is the query budget.
    runtime: Arc<RuntimeEnv>,
}

/// Counts for /metrics.
#[derive(Debug, Default)]
pub struct StoreCounters {
    pub merges: AtomicU64,
    pub merged_parts: AtomicU64,
    /// Rows the merges rewrote: over rows ingested, how many times a row
    /// is written again after its flush.
    pub merged_rows: AtomicU64,
    pub expired_partitions: AtomicU64,
    pub disk_budget_partitions: AtomicU64,
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
    /// The same rows uncompressed; `part_raw_bytes / part_bytes` is the
    /// compression ratio.
    pub part_raw_bytes: u64,
    pub tail_rows: usize,
    pub tail_bytes: usize,
    pub partitions: Vec<PartitionStats>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PartitionStats {
    /// `YYYYMMDDHH`, UTC.
    pub partition: String,
    pub rows: u64,
    pub parts: usize,
    pub bytes: u64,
    pub raw_bytes: u64,
}

/// Statistics of the parts a data directory's manifest lists; safe while a
/// server runs (it only reads the manifest).
pub fn stats_on_disk(data_dir: &Path) -> anyhow::Result<Vec<TableStats>> {
    let manifest = Manifest::load(&data_dir.join("parts"))?;
    Ok(stats_of(&manifest.parts.iter().collect::<Vec<_>>()))
}

fn stats_of(parts: &[&PartMeta]) -> Vec<TableStats> {
    Table::ALL
        .into_iter()
        .map(|t| {
            let mut s = TableStats {
                table: t.name(),
                ..Default::default()
            };
            let mut partitions: BTreeMap<i64, PartitionStats> = BTreeMap::new();
            for p in parts.iter().filter(|p| p.table == t.name()) {
                s.part_rows += p.rows;
                s.parts += 1;
                s.part_bytes += p.bytes;
                s.part_raw_bytes += p.raw_bytes;
                let ps = partitions
                    .entry(p.partition)
                    .or_insert_with(|| PartitionStats {
                        partition: manifest::partition_name(p.partition),
                        ..Default::default()
                    });
                ps.rows += p.rows;
                ps.parts += 1;
                ps.bytes += p.bytes;
                ps.raw_bytes += p.raw_bytes;
            }
            s.partitions = partitions.into_values().collect();
            s
        })
        .collect()
}

impl EmbeddedStore {
    /// Opens the store under `data_dir/parts`: reads the manifest, deletes
    /// part files it does not list (an unfinished flush or merge), and
    /// checks that every listed part is there.
    pub fn open(data_dir: &Path, opts: StoreOptions) -> anyhow::Result<Self> {
        let dir = data_dir.join("parts");
        fs::create_dir_all(&dir)?;
        let manifest = Manifest::load(&dir)?;
        let removed = manifest::remove_unlisted(&dir, &manifest)?;
        if removed > 0 {
            tracing::info!(files = removed, "removed part files of unfinished changes");
        }
        let mut state = State::default();
        for meta in &manifest.parts {
            let table = meta.table().ok_or_else(|| {
                anyhow::anyhow!("the manifest lists a part of unknown table {}", meta.table)
            })?;
            let path = dir.join(meta.relative_path());
            if !path.is_file() {
                anyhow::bail!(
                    "part {} is listed in {} but missing: restore it from a backup or remove it from the manifest",
                    path.display(),
                    dir.join("MANIFEST.json").display()
                );
            }
            state.tables[table as usize]
                .parts
                .push(Arc::new(LivePart::new(meta.clone(), path)));
        }
        for table in Table::ALL {
            state.tables[table as usize].flushed_seq = manifest.flushed_seq(table);
        }
        state.parts_changed(&opts.merge);
        state.last_applied = state
            .tables
            .iter()
            .map(|t| t.flushed_seq)
            .max()
            .unwrap_or(0);
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                dir,
                state: Mutex::new(state),
                manifest: Mutex::new(manifest),
                flush_lock: Mutex::new(()),
                counters: StoreCounters::default(),
                runtime: RuntimeEnvBuilder::new()
                    .with_memory_pool(Arc::new(GreedyMemoryPool::new(opts.max_query_memory_bytes)))
                    .build_arc()?,
                opts,
            }),
        })
    }

    pub fn counters(&self) -> &StoreCounters {
        &self.inner.counters
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

    /// Whether the store takes more rows now: the tail has room, and no
    /// hour has more parts waiting to merge than merges can keep up with.
    /// Ingestion answers "retry later" while it does not.
    pub fn room(&self) -> Result<(), NoRoom> {
        let state = self.inner.state.lock();
        if state.tail_bytes >= self.inner.opts.max_tail_bytes {
            return Err(NoRoom::WriteBuffer);
        }
        let limit = self.inner.opts.merge.max_waiting_parts();
        match state.merge_backlog {
            Some((table, partition, parts)) if parts > limit => Err(NoRoom::MergesBehind {
                table: table.name(),
                partition,
                parts,
                limit,
            }),
            _ => Ok(()),
        }
    }

    pub fn tail_bytes(&self) -> usize {
        self.inner.state.lock().tail_bytes
    }

    /// Writes every tail that is due (or all of them with `force`) to parts,
    /// one per hour its rows fall in. Returns the seq through which the WAL
    /// may be truncated. Blocking: call from a blocking thread.
    pub fn flush(&self, force: bool) -> anyhow::Result<u64> {
        let _one_at_a_time = self.inner.flush_lock.lock();
        for table in Table::ALL {
            let (batches, bytes) = {
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
                // The rows stay in memory, and count against the write
                // buffer, until their part is committed; the sorted copy
                // the part is written from is made a chunk at a time
                // (`part::SORTED_BATCH_ROWS`), outside the budget.
                (state.tables[table as usize].flushing.clone(), bytes)
            };
            let max_seq = batches.last().map(|(s, _)| *s).unwrap_or(0);
            let written = self.write_parts(table, &batches).and_then(|parts| {
                self.commit(|m| {
                    m.parts.extend(parts.iter().map(|p| p.meta.clone()));
                    m.flushed_seq.insert(table.name().into(), max_seq);
                })
                .inspect_err(|_| {
                    for p in &parts {
                        p.obsolete.store(true, Ordering::Release);
                    }
                })?;
                Ok(parts)
            });
            let mut state = self.inner.state.lock();
            let ts = &mut state.tables[table as usize];
            match written {
                Ok(parts) => {
                    ts.flushed_seq = max_seq;
                    ts.parts.extend(parts);
                    ts.flushing.clear();
                    state.tail_bytes -= bytes;
                    state.parts_changed(&self.inner.opts.merge);
                }
                Err(e) => {
                    // Put the rows back in front of the tail; the WAL still has them.
                    let mut tail = std::mem::take(&mut ts.flushing);
                    ts.tail_rows += tail.iter().map(|(_, b)| b.num_rows()).sum::<usize>();
                    tail.append(&mut ts.tail);
                    ts.tail = tail;
                    ts.tail_bytes += bytes;
                    ts.tail_since.get_or_insert_with(Instant::now);
                    return Err(e.context(format!("flushing {}", table.name())));
                }
            }
        }
        Ok(self.truncatable_seq())
    }

    /// Applies `change` to a copy of the manifest and commits it; the
    /// in-memory manifest changes only if the commit succeeded.
    fn commit(&self, change: impl FnOnce(&mut Manifest)) -> anyhow::Result<()> {
        let mut manifest = self.inner.manifest.lock();
        let mut next = manifest.clone();
        change(&mut next);
        next.commit(&self.inner.dir)?;
        *manifest = next;
        Ok(())
    }

    fn next_part_ids(&self, n: usize) -> u64 {
        let mut manifest = self.inner.manifest.lock();
        let first = manifest.next_part_id;
        manifest.next_part_id += n as u64;
        first
    }

    /// Sorts the rows into hour partitions and writes one durable (fsync'd)
    /// part file per partition. Not yet live: the caller commits them.
    fn write_parts(
        &self,
        table: Table,
        batches: &[(u64, RecordBatch)],
    ) -> anyhow::Result<Vec<Arc<LivePart>>> {
        let batches: Vec<RecordBatch> = batches.iter().map(|(_, b)| b.clone()).collect();
        let partitions = part::partition_and_sort(table, &batches)?;
        // One choice of attribute keys for the whole flush (so "complete"
        // holds for each part), recorded but not written: key columns cost
        // the writer about as much again as the maps (part_write bench),
        // and every row is written again when its hour is merged, with
        // the columns of the keys its flushes chose.
        let attribute_columns: Vec<_> = attribute_columns::choose(table, &batches)?
            .into_iter()
            .map(|c| c.unwritten())
            .collect();
        let first_id = self.next_part_ids(partitions.len());
        let mut parts = Vec::with_capacity(partitions.len());
        for (i, rows) in partitions.into_iter().enumerate() {
            let meta = PartMeta {
                id: first_id + i as u64,
                table: table.name().into(),
                partition: rows.partition,
                level: 0,
                rows: 0,
                bytes: 0,
                raw_bytes: 0,
                index_bytes: 0,
                min_time: rows.min_time,
                max_time: rows.max_time,
                attribute_columns: attribute_columns.clone(),
            };
            let part = self
                .write_part(meta, rows.batches(&batches, part::SORTED_BATCH_ROWS))
                .inspect_err(|_| {
                    for p in &parts {
                        let p: &Arc<LivePart> = p;
                        p.obsolete.store(true, Ordering::Release);
                    }
                })?;
            parts.push(part);
        }
        Ok(parts)
    }

    /// Writes one part file durably: the file and its directory are fsync'd.
    fn write_part(
        &self,
        mut meta: PartMeta,
        batches: impl Iterator<Item = anyhow::Result<RecordBatch>>,
    ) -> anyhow::Result<Arc<LivePart>> {
        let path = self.inner.dir.join(meta.relative_path());
        let pdir = path.parent().expect("parts live in a partition directory");
        if !pdir.exists() {
            fs::create_dir_all(pdir)?;
            manifest::sync_dir(
                pdir.parent()
                    .expect("partition directories live in a table directory"),
            )?;
        }
        let table = meta.table().expect("our own table name");
        let mut file = fs::File::create(&path)?;
        let mut writer = part::Writer::new(&mut file, table, meta.attribute_columns.clone())?;
        let mut index = text_index::text_column(table)
            .map(|column| {
                let path = self.inner.dir.join(meta.relative_index_path());
                anyhow::Ok((column, text_index::Builder::create(&path)?))
            })
            .transpose()?;
        for batch in batches {
            let batch = batch?;
            writer.write(&batch)?;
            if let Some((column, index)) = &mut index {
                let (texts, trace_ids) = text_index::indexed_columns(&batch, column)?;
                index.add(texts, Some(trace_ids))?;
            }
        }
        let written = writer.finish()?;
        file.sync_all()?;
        meta.bytes = file.metadata()?.len();
        if let Some((_, index)) = index {
            let (index_file, size) = index.finish(&written.row_groups)?;
            index_file.sync_all()?;
            meta.index_bytes = size;
            meta.bytes += size;
        }
        meta.rows = written.rows;
        meta.raw_bytes = written.raw_bytes;
        manifest::sync_dir(pdir)?;
        Ok(Arc::new(LivePart::new(meta, path)))
    }

    /// Drops partitions past their retention, then the oldest ones while
    /// the parts exceed `max_disk` bytes. Returns how many parts went.
    pub fn enforce_retention(
        &self,
        now: i64,
        policy: &RetentionPolicy,
        max_disk: Option<u64>,
    ) -> anyhow::Result<usize> {
        // Which parts go, and which (table, hour) partitions that makes.
        let (ids, partitions) = {
            let manifest = self.inner.manifest.lock();
            let parts: Vec<&PartMeta> = manifest.parts.iter().collect();
            let drops: HashMap<u64, retention::Drop> =
                retention::to_drop(&parts, now, policy, max_disk)
                    .into_iter()
                    .collect();
            let partitions: BTreeMap<(String, i64), retention::Drop> = parts
                .iter()
                .filter_map(|p| Some(((p.table.clone(), p.partition), *drops.get(&p.id)?)))
                .collect();
            (drops.into_keys().collect::<HashSet<u64>>(), partitions)
        };
        if ids.is_empty() {
            return Ok(0);
        }
        self.commit(|m| m.parts.retain(|p| !ids.contains(&p.id)))?;
        self.remove_parts(&ids);
        for ((table, partition), why) in partitions {
            let partition = manifest::partition_name(partition);
            match why {
                retention::Drop::Expired => {
                    self.inner
                        .counters
                        .expired_partitions
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%table, %partition, "dropped a partition past its retention");
                }
                retention::Drop::DiskBudget => {
                    self.inner
                        .counters
                        .disk_budget_partitions
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        %table,
                        %partition,
                        max_disk = max_disk.unwrap_or(0),
                        "dropped a partition before its retention: the parts exceed --max-disk"
                    );
                }
            }
        }
        Ok(ids.len())
    }

    /// Takes parts out of the part list; their files go when the last query
    /// reading them is done.
    fn remove_parts(&self, ids: &HashSet<u64>) {
        let mut state = self.inner.state.lock();
        for ts in &mut state.tables {
            ts.parts.retain(|p| {
                let gone = ids.contains(&p.meta.id);
                if gone {
                    p.obsolete.store(true, Ordering::Release);
                }
                !gone
            });
        }
        state.parts_changed(&self.inner.opts.merge);
    }

    /// Merges one set of parts the compaction policy picks, if any; returns
    /// whether it merged. Rows stream through DataFusion's sort-preserving
    /// merge of the (sorted) inputs, so memory stays bounded whatever the
    /// part sizes. Queries and flushes go on meanwhile; the swap is one
    /// manifest commit. Blocking: call from a blocking thread.
    pub fn compact_once(&self, now: i64) -> anyhow::Result<bool> {
        for table in Table::ALL {
            let inputs: Vec<Arc<LivePart>> = {
                let state = self.inner.state.lock();
                let parts = &state.tables[table as usize].parts;
                let metas: Vec<&PartMeta> = parts.iter().map(|p| &p.meta).collect();
                let Some(ids) = self.inner.opts.merge.pick(&metas, now) else {
                    continue;
                };
                parts
                    .iter()
                    .filter(|p| ids.contains(&p.meta.id))
                    .cloned()
                    .collect()
            };
            let meta = PartMeta {
                id: self.next_part_ids(1),
                table: table.name().into(),
                partition: inputs[0].meta.partition,
                level: inputs.iter().map(|p| p.meta.level).max().unwrap_or(0) + 1,
                rows: 0,
                bytes: 0,
                raw_bytes: 0,
                index_bytes: 0,
                min_time: inputs.iter().map(|p| p.meta.min_time).min().unwrap_or(0),
                max_time: inputs.iter().map(|p| p.meta.max_time).max().unwrap_or(0),
                attribute_columns: attribute_columns::union(
                    table,
                    &inputs
                        .iter()
                        .map(|p| (p.meta.attribute_columns.as_slice(), p.meta.rows))
                        .collect::<Vec<_>>(),
                ),
            };
            let merged = self.merge(table, &inputs, meta)?;
            let ids: HashSet<u64> = inputs.iter().map(|p| p.meta.id).collect();
            let expected: u64 = inputs.iter().map(|p| p.meta.rows).sum();
            if merged.meta.rows != expected {
                merged.obsolete.store(true, Ordering::Release);
                anyhow::bail!(
                    "merging {} parts of {} gave {} rows, not {expected}",
                    ids.len(),
                    table.name(),
                    merged.meta.rows
                );
            }
            let mut swapped = false;
            let committed = self.commit(|m| {
                // Retention may have dropped an input meanwhile: then do nothing.
                if ids.iter().all(|id| m.parts.iter().any(|p| p.id == *id)) {
                    m.parts.retain(|p| !ids.contains(&p.id));
                    m.parts.push(merged.meta.clone());
                    swapped = true;
                }
            });
            if committed.is_err() || !swapped {
                merged.obsolete.store(true, Ordering::Release);
                committed?;
                return Ok(true);
            }
            {
                let mut state = self.inner.state.lock();
                state.tables[table as usize].parts.push(merged);
            }
            self.remove_parts(&ids);
            tracing::info!(
                table = table.name(),
                parts = ids.len(),
                rows = expected,
                "merged parts"
            );
            self.inner.counters.merges.fetch_add(1, Ordering::Relaxed);
            self.inner
                .counters
                .merged_parts
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            self.inner
                .counters
                .merged_rows
                .fetch_add(expected, Ordering::Relaxed);
            return Ok(true);
        }
        Ok(false)
    }

    fn merge(
        &self,
        table: Table,
        inputs: &[Arc<LivePart>],
        meta: PartMeta,
    ) -> anyhow::Result<Arc<LivePart>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let paths: Vec<String> = inputs
            .iter()
            .map(|p| p.file.path.to_string_lossy().into_owned())
            .collect();
        let batches = runtime.block_on(async {
            let frame = merge_frame(&merge_context(), table, &paths).await?;
            anyhow::Ok(frame.execute_stream().await?)
        })?;
        let stream = SyncStream {
            runtime,
            stream: batches,
        };
        self.write_part(meta, stream)
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

    /// Rows, parts and bytes per table and partition, including rows not
    /// yet in parts.
    pub fn stats(&self) -> Vec<TableStats> {
        let state = self.inner.state.lock();
        let metas: Vec<&PartMeta> = state
            .tables
            .iter()
            .flat_map(|t| t.parts.iter().map(|p| &p.meta))
            .collect();
        let mut stats = stats_of(&metas);
        for s in &mut stats {
            let ts = &state.tables[Table::from_name(s.table).expect("our table") as usize];
            s.tail_rows =
                ts.tail_rows + ts.flushing.iter().map(|(_, b)| b.num_rows()).sum::<usize>();
            s.tail_bytes = ts.tail_bytes;
        }
        stats
    }

    /// The parts that may hold rows in `range`, and the in-memory batches of
    /// a table, taken together under one lock.
    fn snapshot(&self, table: Table, range: TimeRange) -> (Vec<Arc<LivePart>>, Vec<RecordBatch>) {
        let state = self.inner.state.lock();
        let ts = &state.tables[table as usize];
        let parts = ts
            .parts
            .iter()
            .filter(|p| {
                range.from.is_none_or(|from| p.meta.max_time >= from)
                    && range.to.is_none_or(|to| p.meta.min_time <= to)
            })
            .cloned()
            .collect();
        let batches = ts
            .flushing
            .iter()
            .chain(&ts.tail)
            .map(|(_, b)| b.clone())
            .collect();
        (parts, batches)
    }

    /// A DataFrame over every row of a table that may fall in `range`
    /// (parts ∪ memory), and the parts it reads, which the caller keeps
    /// until the query is done.
    pub(crate) async fn frame(
        &self,
        ctx: &SessionContext,
        table: Table,
        range: TimeRange,
    ) -> Result<(DataFrame, Vec<Arc<LivePart>>), QueryError> {
        let (parts, batches) = self.snapshot(table, range);
        let schema = table.schema();
        let memory = ctx.read_table(Arc::new(MemTable::try_new(schema.clone(), vec![batches])?))?;
        if parts.is_empty() {
            return Ok((memory, parts));
        }
        let files = parts.iter().map(|p| p.file.clone()).collect();
        let on_disk = ctx.read_table(Arc::new(PartsTable::new(table, files)))?;
        Ok((on_disk.union(memory)?, parts))
    }

    /// Runs a query under the store's timeout, turning "out of query
    /// memory" into an error that says what to do.
    pub(crate) async fn run<T>(
        &self,
        f: impl Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        let timeout = self.inner.opts.query_timeout;
        tokio::time::timeout(timeout, f)
            .await
            .map_err(|_| QueryError::Timeout(timeout))?
            .map_err(|e| match e {
                QueryError::TooBig(why) => QueryError::TooBig(format!(
                    "the query needs more than the {} MiB queries may use (--max-query-memory); narrow its time range or filters ({why})",
                    self.inner.opts.max_query_memory_bytes >> 20
                )),
                e => e,
            })
    }

    /// A session for one query, drawing on the shared query memory pool.
    pub(crate) fn query_context(&self) -> SessionContext {
        query_session(self.inner.runtime.clone())
    }
}

/// A session for queries over parts (the store's, and `otelhouse sql`'s).
pub(crate) fn query_session(runtime: Arc<RuntimeEnv>) -> SessionContext {
    let mut config = SessionConfig::new();
    // Evaluate filters while decoding Parquet, so rows that fail them
    // are never materialised (late materialisation).
    config.options_mut().execution.parquet.pushdown_filters = true;
    config.options_mut().execution.parquet.reorder_filters = true;
    // No cache of the filter columns' decoded values for the output: on
    // the 10 M-log store it made a token search 1.6x and a service +
    // severity search 1.8x slower, and no query faster (BENCHMARKS.md,
    // "The predicate cache").
    config
        .options_mut()
        .execution
        .parquet
        .max_predicate_cache_size = Some(0);
    // SQL mode: column names are ClickStack's CamelCase, matched as
    // written (as ClickHouse does).
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        // Counts per time bucket add up runs of rows instead of hashing
        // each row.
        .with_physical_optimizer_rule(Arc::new(count_runs::CountRuns))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(has_token::udf());
    // Maps read only by constant keys are read from their key columns.
    ctx.add_optimizer_rule(Arc::new(attribute_columns::KeysOnly));
    ctx
}

/// A session for merges: one partition per input file so each stays
/// sorted, and no repartitioning that would lose the order.
fn merge_context() -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_repartition_file_scans(false)
        .with_batch_size(8192);
    config.options_mut().execution.parquet.pushdown_filters = false;
    SessionContext::new_with_config(config)
}

/// All rows of `paths` (parts of `table`, each sorted) in part order.
/// Declaring each file's order lets DataFusion merge the files as streams
/// instead of sorting everything in memory.
async fn merge_frame(
    ctx: &SessionContext,
    table: Table,
    paths: &[String],
) -> datafusion::error::Result<DataFrame> {
    let schema = table.schema();
    let order = part_order(table);
    let mut frame: Option<DataFrame> = None;
    for path in paths {
        let options = ParquetReadOptions::default()
            .schema(&schema)
            .file_sort_order(vec![order.clone()]);
        let df = ctx.read_parquet(path.as_str(), options).await?;
        frame = Some(match frame {
            Some(f) => f.union(df)?,
            None => df,
        });
    }
    frame.expect("a merge has inputs").sort(order)
}

/// The order of a part's rows (`part::partition_and_sort`) as sort
/// expressions: the time bucket, then the sort key.
fn part_order(table: Table) -> Vec<datafusion::logical_expr::SortExpr> {
    let bucket = table.time_bucket().map(|width| {
        let width = ScalarValue::new_interval_mdn(0, 0, width);
        datafusion::functions::datetime::expr_fn::date_bin(
            lit(width),
            ident(table.time_column()),
            ts_lit(0),
        )
    });
    bucket
        .into_iter()
        .chain(table.sort_key().iter().map(|c| ident(*c)))
        .map(|e| e.sort(true, false))
        .collect()
}

/// Drives an async record batch stream from blocking code.
struct SyncStream {
    runtime: tokio::runtime::Runtime,
    stream: datafusion::physical_plan::SendableRecordBatchStream,
}

impl Iterator for SyncStream {
    type Item = anyhow::Result<RecordBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        use futures::StreamExt;
        self.runtime
            .block_on(self.stream.next())
            .map(|r| r.map_err(anyhow::Error::from))
    }
}

/// The signal of a WAL entry kind (see [`kind_of`]).
pub fn signal_from_kind(kind: u8) -> Option<Signal> {
    Signal::ALL.get(kind as usize).copied()
}

/// The WAL entry kind for a signal (its position in `Signal::ALL`).
pub fn kind_of(signal: Signal) -> u8 {
    Signal::ALL
        .iter()
        .position(|s| *s == signal)
        .expect("every signal is listed") as u8
}

pub(crate) fn ts_lit(nanos: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(nanos),
        Some("UTC".into()),
    ))
}

pub(crate) fn time_filter(
    df: DataFrame,
    column: &str,
    range: TimeRange,
) -> Result<DataFrame, QueryError> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Storage;
    use crate::query::SearchQuery;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use otelhouse_search::Query;
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
        let q = SearchQuery::newest(Signal::Logs, Query::All, TimeRange::default(), 10_000);
        store.search(&q).await.unwrap().rows.len()
    }

    #[tokio::test]
    async fn parts_and_tail_are_read_together_and_replay_skips_flushed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut applier = store.applier();
        applier.apply(1, request(&["a", "b"]).to_batches());
        applier.apply(2, request(&["c"]).to_batches());
        assert_eq!(store.flush(true).unwrap(), 2, "everything is in parts");
        assert_eq!(
            store.tail_bytes(),
            0,
            "flushed rows no longer count against the buffer"
        );
        applier.apply(3, request(&["d"]).to_batches());
        assert_eq!(store.flush(false).unwrap(), 2, "seq 3 is only in memory");
        assert_eq!(count(&store).await, 4, "part rows and tail rows, once each");
        let text = SearchQuery::newest(
            Signal::Logs,
            otelhouse_search::parse("C", &otelhouse_search::Catalog::new(Signal::Logs, []))
                .unwrap(),
            TimeRange::default(),
            10,
        );
        assert_eq!(store.search(&text).await.unwrap().rows.len(), 1);

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
        // Merges run all along too: the rows' hour (2023) is long sealed.
        let merger = {
            let store = store.clone();
            let writer_done = applied.clone();
            std::thread::spawn(move || {
                let mut merges = 0;
                while writer_done.load(std::sync::atomic::Ordering::SeqCst) < 600 {
                    if store.compact_once(unix_now()).unwrap() {
                        merges += 1;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                merges
            })
        };
        let q = SearchQuery::newest(Signal::Logs, Query::All, TimeRange::default(), 10_000);
        let mut checks = 0;
        while !writer.is_finished() || checks == 0 {
            let before = applied.load(std::sync::atomic::Ordering::SeqCst);
            let rows = store.search(&q).await.unwrap().rows;
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
        let merges = merger.join().unwrap();
        assert_eq!(count(&store).await, 600);
        assert!(merges >= 3, "merges happened during the queries ({merges})");
        assert!(checks >= 5, "queries ran while rows moved ({checks})");
    }

    /// A store in `dir` with one flushed logs part per `(service, times)`.
    pub(crate) fn logs_parts(dir: &Path, parts: &[(&str, &[i64])]) {
        let store = EmbeddedStore::open(dir, StoreOptions::default()).unwrap();
        let mut applier = store.applier();
        for (seq, (service, times)) in parts.iter().enumerate() {
            applier.apply(seq as u64 + 1, timed(service, times));
            store.flush(true).unwrap();
        }
    }

    /// A logs request of one service whose records have the given times.
    pub(crate) fn timed(service: &str, times: &[i64]) -> TableBatches {
        use opentelemetry_proto::tonic::common::v1::KeyValue;
        use opentelemetry_proto::tonic::resource::v1::Resource;
        OtlpRequest::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(service.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: times
                        .iter()
                        .map(|t| LogRecord {
                            time_unix_nano: *t as u64,
                            body: Some(AnyValue {
                                value: Some(Value::StringValue(format!("{service} at {t}"))),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .to_batches()
    }

    fn unix_now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
    }

    /// Merges from a blocking thread, as the server does.
    async fn compact(store: &EmbeddedStore, now: i64) -> bool {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.compact_once(now))
            .await
            .unwrap()
            .unwrap()
    }

    const HOUR: i64 = manifest::HOUR_NANOS;
    const MINUTE: i64 = 60_000_000_000;
    const T0: i64 = 1_700_000_000_000_000_000 / HOUR * HOUR;

    /// Every row of the logs table as a sorted list of JSON texts.
    async fn all_rows(store: &EmbeddedStore) -> Vec<String> {
        let q = SearchQuery::newest(Signal::Logs, Query::All, TimeRange::default(), 100_000);
        let mut rows: Vec<String> = store
            .search(&q)
            .await
            .unwrap()
            .rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        rows.sort();
        rows
    }

    /// The logs table's part files; each has its token index beside it,
    /// and no index outlives its part.
    fn part_files(dir: &Path) -> Vec<PathBuf> {
        let (mut parts, mut indexes) = (Vec::new(), Vec::new());
        let tdir = dir.join("parts").join(Table::Logs.name());
        for p in fs::read_dir(tdir).into_iter().flatten() {
            for f in fs::read_dir(p.unwrap().path()).unwrap() {
                let f = f.unwrap().path();
                match f.extension().and_then(|e| e.to_str()) {
                    Some("tokens") => indexes.push(f),
                    _ => parts.push(f),
                }
            }
        }
        parts.sort();
        indexes.sort();
        let expected: Vec<PathBuf> = parts.iter().map(|p| p.with_extension("tokens")).collect();
        assert_eq!(indexes, expected, "one token index per part");
        parts
    }

    /// (5-minute bucket, ServiceName) of each row of a logs part, in order.
    fn clusters_in_file(path: &Path) -> Vec<(i64, String)> {
        use arrow::array::AsArray;
        let file = fs::File::open(path).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
        let width = Table::Logs.time_bucket().unwrap();
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let services = batch
                .column_by_name("ServiceName")
                .unwrap()
                .as_string::<i32>();
            let times = batch.column_by_name("Timestamp").unwrap();
            let times = times.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            out.extend(
                times
                    .values()
                    .iter()
                    .zip(services.iter())
                    .map(|(t, s)| (t.div_euclid(width), s.unwrap().to_owned())),
            );
        }
        out
    }

    #[tokio::test]
    async fn a_flush_writes_one_sorted_part_per_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut applier = store.applier();
        applier.apply(1, timed("zeta", &[T0 + 5, T0 + HOUR + 1]));
        let later = T0 + 6 * MINUTE;
        applier.apply(2, timed("alpha", &[T0 + 9, later, T0 + 1]));
        store.flush(true).unwrap();
        let files = part_files(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        let bucket = |t: i64| t.div_euclid(5 * MINUTE);
        let cluster = |t: i64, s: &str| (bucket(t), s.to_string());
        assert_eq!(
            clusters_in_file(&files[0]),
            [
                cluster(T0, "alpha"),
                cluster(T0, "alpha"),
                cluster(T0, "zeta"),
                cluster(later, "alpha")
            ],
            "clustered by 5-minute bucket, then service"
        );
        assert_eq!(clusters_in_file(&files[1]), [cluster(T0 + HOUR, "zeta")]);
        let stats = &store.stats()[0];
        assert_eq!(stats.partitions.len(), 2);
        assert_eq!(stats.partitions[0].partition, manifest::partition_name(T0));
        assert_eq!((stats.part_rows, stats.parts), (5, 2));
        assert!(stats.part_raw_bytes > 0);

        // A time range that misses an hour does not read its part.
        let q = SearchQuery::newest(
            Signal::Logs,
            Query::All,
            TimeRange {
                from: Some(T0 + HOUR),
                to: None,
            },
            10,
        );
        assert_eq!(store.search(&q).await.unwrap().rows.len(), 1);
        assert_eq!(store.snapshot(Table::Logs, q.range).0.len(), 1);
    }

    #[tokio::test]
    async fn ingestion_waits_while_an_hour_has_more_parts_than_merges_keep_up_with() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut applier = store.applier();
        let policy = compaction::Policy::default();
        let waiting = policy.max_waiting_parts() as u64 + 1;
        for i in 1..=waiting {
            assert_eq!(store.room(), Ok(()), "{i} parts");
            applier.apply(i, timed("api", &[T0 + i as i64]));
            store.flush(true).unwrap();
        }
        let full = store.room().unwrap_err();
        assert_eq!(
            full,
            NoRoom::MergesBehind {
                table: "otel_logs",
                partition: T0,
                parts: waiting as usize,
                limit: policy.max_waiting_parts(),
            }
        );
        assert_eq!(full.reason(), "merges_behind");
        assert!(
            full.to_string().contains(&format!(
                "otel_logs holds {waiting} parts of the hour {} waiting to merge (at most {})",
                chrono::DateTime::from_timestamp_nanos(T0).format("%Y-%m-%d %H:00 UTC"),
                policy.max_waiting_parts()
            )),
            "{full}"
        );

        // The state holds across a restart, and one merge makes room.
        drop(applier);
        drop(store);
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert!(store.room().is_err());
        assert!(compact(&store, T0 + HOUR / 2).await);
        assert_eq!(store.stats()[0].parts, waiting as usize - policy.fanout + 1);
        assert_eq!(store.room(), Ok(()));
        assert_eq!(all_rows(&store).await.len(), waiting as usize);
    }

    #[tokio::test]
    async fn compaction_keeps_every_row_and_deletes_the_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut applier = store.applier();
        let services = ["b", "a", "c", "a", "d", "b", "e", "c", "a"];
        for (i, service) in services.iter().enumerate() {
            let i = i as i64;
            applier.apply(
                i as u64 + 1,
                // Three 5-minute buckets, rows of each arriving out of order.
                timed(
                    service,
                    &[
                        T0 + 100 - i,
                        T0 + (i % 3) * 5 * MINUTE + 50,
                        T0 + 20 * MINUTE + i,
                    ],
                ),
            );
            store.flush(true).unwrap();
        }
        let before = all_rows(&store).await;
        assert_eq!(before.len(), 27);
        assert_eq!(part_files(dir.path()).len(), services.len());

        // The hour is open and holds fewer than `open_max_parts` parts: no merge.
        let open = T0 + HOUR / 2;
        assert!(!compact(&store, open).await);
        assert_eq!(store.stats()[0].parts, services.len());

        // Sealed: everything merges into one part, sorted.
        let sealed = T0 + HOUR + compaction::SEAL_AFTER;
        while compact(&store, sealed).await {}
        assert_eq!(store.stats()[0].parts, 1);
        assert_eq!(all_rows(&store).await, before);
        let files = part_files(dir.path());
        assert_eq!(files.len(), 1, "replaced parts are deleted");
        let clusters = clusters_in_file(&files[0]);
        assert!(clusters.is_sorted(), "{clusters:?}");
        assert_eq!(store.counters().merges.load(Ordering::Relaxed), 1);
        assert_eq!(store.counters().merged_rows.load(Ordering::Relaxed), 27);

        // And a restart sees the same.
        drop(store);
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(all_rows(&store).await, before);
    }

    #[tokio::test]
    async fn a_merge_streams_its_sorted_inputs_without_sorting_them_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        for seq in 1..=3 {
            store.applier().apply(seq, timed("s", &[T0 + seq as i64]));
            store.flush(true).unwrap();
        }
        let paths: Vec<String> = part_files(dir.path())
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let ctx = merge_context();
        let plan = merge_frame(&ctx, Table::Logs, &paths)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let plan = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        assert!(plan.contains("SortPreservingMergeExec"), "{plan}");
        assert!(!plan.contains("SortExec"), "{plan}");
    }

    #[tokio::test]
    async fn a_query_over_its_memory_budget_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            max_query_memory_bytes: 16 << 10,
            ..StoreOptions::default()
        };
        let store = EmbeddedStore::open(dir.path(), opts).unwrap();
        let times: Vec<i64> = (0..5000).map(|i| T0 + i).collect();
        store.applier().apply(1, timed("s", &times));
        store.flush(true).unwrap();
        let q = SearchQuery::newest(Signal::Logs, Query::All, TimeRange::default(), 10_000);
        match store.search(&q).await {
            Err(QueryError::TooBig(why)) => assert!(why.contains("--max-query-memory"), "{why}"),
            other => panic!("expected TooBig, got {:?}", other.map(|r| r.rows.len())),
        }
    }

    #[tokio::test]
    async fn a_part_being_read_outlives_its_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut applier = store.applier();
        for seq in 1..=2 {
            applier.apply(seq, timed("s", &[T0 + seq as i64]));
            store.flush(true).unwrap();
        }
        let (reading, _) = store.snapshot(Table::Logs, TimeRange::default());
        assert!(compact(&store, T0 + 2 * HOUR).await);
        assert!(
            reading.iter().all(|p| p.file.path.exists()),
            "still open by a query"
        );
        drop(reading);
        assert_eq!(part_files(dir.path()).len(), 1);
    }

    #[tokio::test]
    async fn unlisted_part_files_from_a_crash_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.applier().apply(1, timed("s", &[T0]));
        store.flush(true).unwrap();
        let listed = part_files(dir.path());
        // What a flush or merge killed before its manifest commit leaves.
        let stray = listed[0].with_file_name("000000000099.parquet");
        fs::copy(&listed[0], &stray).unwrap();
        let other_hour = dir.path().join("parts/otel_logs/2001010100");
        fs::create_dir_all(&other_hour).unwrap();
        fs::write(other_hour.join("000000000100.parquet"), b"half").unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(part_files(dir.path()), listed);
        assert!(!other_hour.exists());
        assert_eq!(
            all_rows(&store).await.len(),
            1,
            "the stray copy is not read"
        );
    }

    #[tokio::test]
    async fn a_missing_listed_part_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.applier().apply(1, timed("s", &[T0]));
        store.flush(true).unwrap();
        drop(store);
        let part = part_files(dir.path()).remove(0);
        fs::remove_file(&part).unwrap();
        let err = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[tokio::test]
    async fn expired_partitions_go_and_replay_does_not_bring_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.applier().apply(1, timed("old", &[T0 + 1]));
        store.applier().apply(2, timed("new", &[T0 + 2 * HOUR]));
        store.flush(true).unwrap();
        let policy = RetentionPolicy::new(
            Duration::from_secs(3600),
            retention::DEFAULT,
            retention::DEFAULT,
        );
        // At T0 + 2h the first hour has just expired (it ended at T0 + 1h).
        assert_eq!(
            store
                .enforce_retention(T0 + 2 * HOUR, &policy, None)
                .unwrap(),
            1
        );
        assert_eq!(all_rows(&store).await.len(), 1);
        assert_eq!(
            store.counters().expired_partitions.load(Ordering::Relaxed),
            1
        );
        assert_eq!(part_files(dir.path()).len(), 1);

        drop(store);
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        let OtlpRequest::Logs(old) = timed_request("old", T0 + 1) else {
            unreachable!()
        };
        store
            .replay(Entry {
                seq: 1,
                kind: kind_of(Signal::Logs),
                payload: old.encode_to_vec(),
            })
            .unwrap();
        assert_eq!(
            all_rows(&store).await.len(),
            1,
            "seq 1 is below flushed_seq"
        );
    }

    fn timed_request(service: &str, t: i64) -> OtlpRequest {
        let mut r = request(&[service]);
        if let OtlpRequest::Logs(req) = &mut r {
            req.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano = t as u64;
        }
        r
    }

    #[tokio::test]
    async fn over_the_disk_budget_the_oldest_hours_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        for h in 0..4 {
            store
                .applier()
                .apply(h as u64 + 1, timed("s", &[T0 + h * HOUR]));
        }
        store.flush(true).unwrap();
        let one = store.stats()[0].part_bytes / 4;
        let policy =
            RetentionPolicy::new(retention::DEFAULT, retention::DEFAULT, retention::DEFAULT);
        let dropped = store
            .enforce_retention(T0 + 4 * HOUR, &policy, Some(2 * one + one / 2))
            .unwrap();
        assert_eq!(dropped, 2);
        let stats = &store.stats()[0];
        assert_eq!(
            stats.partitions[0].partition,
            manifest::partition_name(T0 + 2 * HOUR)
        );
        assert_eq!(
            store
                .counters()
                .disk_budget_partitions
                .load(Ordering::Relaxed),
            2
        );
    }
}
