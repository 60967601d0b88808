//! Shipping: durable WAL entries → batched inserts into ClickHouse, each
//! entry stored exactly once.
//!
//! The WAL writer hands every durable entry to [`ShipApplier`]. While the
//! in-memory backlog is under `max_memory_bytes`, the entry's Arrow batches
//! wait in memory; beyond it only the WAL holds the entry and the shipper
//! reads it back (and decodes it again) when its turn comes. So an outage
//! costs disk, bounded by the WAL's budget — past which ingestion answers
//! 503 / `UNAVAILABLE` — never unbounded memory.
//!
//! Exactly once. A batch is the entries `a..=b`. Before its first insert
//! the shipper records `pending: [a, b]` in its state file (fsync'd); each
//! table's insert carries the deduplication token
//! `<instance>:<table>:<a>-<b>`; once every table's insert is confirmed,
//! `shipped: b` is recorded and the WAL may drop entries `<= b`. A retry —
//! after an error, a timeout whose insert did land, or a crash — resends
//! the same entries under the same token, which ClickHouse stores once
//! (the tables' deduplication window, see `ddl`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use otelhouse_otlp::convert::TableBatches;
use otelhouse_otlp::{Encoding, OtlpRequest};
use otelhouse_schema::Table;
use otelhouse_storage::embedded::signal_from_kind;
use otelhouse_storage::retention::RetentionPolicy;
use otelhouse_wal::Apply;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::client::{ClickHouseError, Client};
use crate::ddl::Layout;
use crate::{insert, setup};

#[derive(Debug, Clone)]
pub struct ShipOptions {
    /// A batch closes at this many rows...
    pub max_batch_rows: usize,
    /// ...or this many bytes of Arrow memory...
    pub max_batch_bytes: usize,
    /// ...or when its first entry has waited this long (ClickHouse wants
    /// few, large inserts).
    pub max_delay: Duration,
    /// Backlog kept in memory; beyond it entries are read back from the WAL.
    pub max_memory_bytes: usize,
    /// Wait after the first failed attempt; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// `ON CLUSTER` tables (see `ddl`).
    pub cluster: Option<String>,
}

impl Default for ShipOptions {
    fn default() -> Self {
        ShipOptions {
            max_batch_rows: 200_000,
            max_batch_bytes: 64 << 20,
            max_delay: Duration::from_secs(1),
            max_memory_bytes: 256 << 20,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            cluster: None,
        }
    }
}

/// What `/metrics` shows about shipping.
#[derive(Debug, Default)]
pub struct ShipStats {
    pub shipped_rows: AtomicU64,
    pub shipped_batches: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// Entries read back from the WAL because memory was over budget.
    pub entries_read_back: AtomicU64,
    pub memory_bytes: AtomicU64,
    /// The tables exist and match the retention: shipping can run.
    pub ready: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

/// The state file: what ClickHouse has confirmed, and the batch in flight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ShipState {
    /// Distinguishes this instance's deduplication tokens from another's
    /// writing to the same tables.
    instance: String,
    shipped: u64,
    pending: Option<(u64, u64)>,
}

struct Queued {
    seq: u64,
    batches: TableBatches,
    bytes: usize,
}

struct Inner {
    client: Client,
    wal_dir: PathBuf,
    state_path: PathBuf,
    opts: ShipOptions,
    state: Mutex<ShipState>,
    queue: Mutex<VecDeque<Queued>>,
    durable: AtomicU64,
    shipped: AtomicU64,
    wake: Notify,
    stats: ShipStats,
}

/// Ships the WAL to ClickHouse; cheap to clone.
#[derive(Clone)]
pub struct Shipper {
    inner: Arc<Inner>,
}

/// A batch being shipped: entries `first..=last`, rows per table.
struct Batch {
    first: u64,
    last: u64,
    tables: Vec<(Table, Vec<RecordBatch>)>,
    rows: usize,
}

impl Shipper {
    /// Opens (or starts) the state file `state_path`; `wal_dir` is the WAL
    /// the entries are read back from.
    pub fn open(
        client: Client,
        wal_dir: &Path,
        state_path: &Path,
        opts: ShipOptions,
    ) -> std::io::Result<Shipper> {
        let state = match std::fs::read(state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", state_path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = ShipState {
                    instance: crate::provision::random_hex(8)?,
                    shipped: 0,
                    pending: None,
                };
                write_state(state_path, &state)?;
                state
            }
            Err(e) => return Err(e),
        };
        Ok(Shipper {
            inner: Arc::new(Inner {
                client,
                wal_dir: wal_dir.to_path_buf(),
                state_path: state_path.to_path_buf(),
                opts,
                durable: AtomicU64::new(state.shipped),
                shipped: AtomicU64::new(state.shipped),
                state: Mutex::new(state),
                queue: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                stats: ShipStats::default(),
            }),
        })
    }

    /// Every entry up to this one is in ClickHouse: the WAL may drop them,
    /// and must number new entries above it.
    pub fn shipped_seq(&self) -> u64 {
        self.inner.shipped.load(Ordering::Acquire)
    }

    /// The last durable entry found in the WAL at start: the backlog.
    pub fn set_durable(&self, seq: u64) {
        self.inner.durable.fetch_max(seq, Ordering::AcqRel);
        self.inner.wake.notify_one();
    }

    /// Entries durable but not yet confirmed by ClickHouse.
    pub fn backlog_entries(&self) -> u64 {
        self.inner
            .durable
            .load(Ordering::Acquire)
            .saturating_sub(self.shipped_seq())
    }

    /// The tables exist and match the retention.
    pub fn is_ready(&self) -> bool {
        self.inner.stats.ready.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> &ShipStats {
        &self.inner.stats
    }

    /// The sink the WAL writer hands durable entries to.
    pub fn applier(&self) -> ShipApplier {
        ShipApplier(self.inner.clone())
    }

    /// Creates the tables (retrying while ClickHouse is unreachable), then
    /// ships batches until `stop` turns true; then drains what it can
    /// without retrying and returns. Retention changes are applied to the
    /// tables as they happen.
    pub async fn run(&self, retention: Arc<RetentionPolicy>, mut stop: watch::Receiver<bool>) {
        let Some(layout) = self.setup(&retention, &mut stop).await else {
            return;
        };
        let mut applied = retention_values(&retention);
        loop {
            // A dropped sender means the server is gone: stop too.
            let stopping = *stop.borrow() || stop.has_changed().is_err();
            let now = retention_values(&retention);
            if now != applied && !stopping {
                match setup::sync_retention(&self.inner.client, &layout, |t| {
                    retention.get(t.signal())
                })
                .await
                {
                    Ok(_) => applied = now,
                    Err(e) => self.failed(&e, "changing the tables' TTL"),
                }
            }
            let Some(batch) = self.next_batch(&mut stop, stopping).await else {
                if stopping {
                    return;
                }
                continue;
            };
            if !self.ship(&layout, batch, &mut stop).await && stopping {
                return;
            }
        }
    }

    async fn setup(
        &self,
        retention: &RetentionPolicy,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Layout> {
        let mut wait = self.inner.opts.retry_min;
        loop {
            match setup::ensure_tables(
                &self.inner.client,
                self.inner.opts.cluster.as_deref(),
                |t| retention.get(t.signal()),
            )
            .await
            {
                Ok(layout) => {
                    self.inner.stats.ready.store(true, Ordering::Release);
                    tracing::info!(
                        database = %layout.database,
                        version = %format!("{}.{}", layout.version.0, layout.version.1),
                        cluster = layout.cluster.as_deref().unwrap_or("-"),
                        "ClickHouse tables ready; shipping from the WAL"
                    );
                    return Some(layout);
                }
                Err(e) => self.failed(&e, "preparing the ClickHouse tables"),
            }
            if !sleep_or_stop(wait, stop).await {
                return None;
            }
            wait = (wait * 2).min(self.inner.opts.retry_max);
        }
    }

    fn failed(&self, e: &ClickHouseError, doing: &str) {
        self.inner
            .stats
            .failed_attempts
            .fetch_add(1, Ordering::Relaxed);
        *self.inner.stats.last_error.lock() = Some(format!("{doing}: {e}"));
        tracing::error!(error = %e, backlog_entries = self.backlog_entries(), "{doing} failed; will retry (the WAL keeps the data)");
    }

    /// Waits for entries (and, unless `draining`, for a batch to fill or
    /// its delay to pass), then collects the next batch. None: nothing to
    /// ship (stopping, or still waiting).
    async fn next_batch(&self, stop: &mut watch::Receiver<bool>, draining: bool) -> Option<Batch> {
        let inner = &self.inner;
        let pending = inner.state.lock().pending;
        if pending.is_none() {
            let next = self.shipped_seq() + 1;
            if inner.durable.load(Ordering::Acquire) < next {
                if draining {
                    return None;
                }
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                return None;
            }
            let deadline = Instant::now() + inner.opts.max_delay;
            while !draining && !self.batch_is_full(next) && Instant::now() < deadline {
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
        }
        let this = self.clone();
        let collected = tokio::task::spawn_blocking(move || this.collect(pending)).await;
        match collected {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                self.failed(&e, "reading the WAL back");
                let _ = sleep_or_stop(self.inner.opts.retry_max, stop).await;
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "collecting a batch panicked");
                None
            }
        }
    }

    /// Whether the entries waiting in memory from `next` on fill a batch (a
    /// backlog that spilled to the WAL always does: it is behind).
    fn batch_is_full(&self, next: u64) -> bool {
        let durable = self.inner.durable.load(Ordering::Acquire);
        let queue = self.inner.queue.lock();
        let (mut rows, mut bytes, mut expect) = (0, 0, next);
        for q in queue.iter().filter(|q| q.seq >= next) {
            if q.seq != expect {
                return true;
            }
            expect += 1;
            rows += q.batches.iter().map(|(_, b)| b.num_rows()).sum::<usize>();
            bytes += q.bytes;
        }
        expect <= durable
            || rows >= self.inner.opts.max_batch_rows
            || bytes >= self.inner.opts.max_batch_bytes
    }

    /// The next batch: the pending one exactly, else entries from
    /// `shipped + 1` up to the size limits. Entries come from memory when
    /// queued there, else from the WAL. Blocking.
    fn collect(&self, pending: Option<(u64, u64)>) -> Result<Option<Batch>, ClickHouseError> {
        let inner = &self.inner;
        let opts = &inner.opts;
        let (first, last_allowed, limited) = match pending {
            Some((a, b)) => (a, b, false),
            None => (
                self.shipped_seq() + 1,
                inner.durable.load(Ordering::Acquire),
                true,
            ),
        };
        if first > last_allowed {
            return Ok(None);
        }
        let mut per_table: Vec<Vec<RecordBatch>> = vec![Vec::new(); Table::ALL.len()];
        let (mut rows, mut bytes, mut seq) = (0usize, 0usize, first);
        let full = |rows: usize, bytes: usize| {
            limited && (rows >= opts.max_batch_rows || bytes >= opts.max_batch_bytes)
        };
        while seq <= last_allowed && !full(rows, bytes) {
            // From memory, while the queue holds the next entry...
            let gap_end = {
                let queue = inner.queue.lock();
                let at = queue.partition_point(|q| q.seq < seq);
                let mut i = at;
                while let Some(q) = queue.get(i).filter(|q| q.seq == seq) {
                    if seq > last_allowed || full(rows, bytes) {
                        break;
                    }
                    add(&mut per_table, &q.batches, &mut rows);
                    bytes += q.bytes;
                    seq += 1;
                    i += 1;
                }
                queue
                    .get(i)
                    .map_or(last_allowed, |q| (q.seq - 1).min(last_allowed))
            };
            if seq > last_allowed || full(rows, bytes) || seq > gap_end {
                continue;
            }
            // ...else from the WAL, up to the next entry memory holds.
            let budget = if limited {
                opts.max_batch_bytes.saturating_sub(bytes).max(1)
            } else {
                usize::MAX
            };
            let entries = otelhouse_wal::read_entries(&inner.wal_dir, seq, gap_end, budget)
                .map_err(|e| ClickHouseError::Config(e.to_string()))?;
            if entries.first().map(|e| e.seq) != Some(seq) {
                return Err(ClickHouseError::Config(format!(
                    "WAL entry {seq} is missing from {} (entries through {} were shipped)",
                    inner.wal_dir.display(),
                    self.shipped_seq()
                )));
            }
            inner
                .stats
                .entries_read_back
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            for e in entries {
                if e.seq != seq {
                    break;
                }
                let batches = signal_from_kind(e.kind)
                    .ok_or_else(|| format!("unknown kind {}", e.kind))
                    .and_then(|signal| {
                        OtlpRequest::decode(signal, Encoding::Protobuf, &e.payload)
                            .map_err(|err| err.to_string())
                    })
                    .map(|r| r.to_batches());
                match batches {
                    Ok(batches) => {
                        bytes += batches
                            .iter()
                            .map(|(_, b)| b.get_array_memory_size())
                            .sum::<usize>();
                        add(&mut per_table, &batches, &mut rows);
                    }
                    // It passed its CRC, so this is a bug, not damage: say
                    // so loudly, but do not let one entry stop the rest.
                    Err(why) => tracing::error!(
                        seq = e.seq,
                        error = %why,
                        "a WAL entry does not decode; it is not shipped"
                    ),
                }
                seq += 1;
            }
        }
        let last = seq - 1;
        let tables = Table::ALL
            .iter()
            .zip(per_table)
            .filter(|(_, b)| !b.is_empty())
            .map(|(t, b)| (*t, b))
            .collect();
        Ok(Some(Batch {
            first,
            last,
            tables,
            rows,
        }))
    }

    /// Inserts a batch, retrying until ClickHouse confirms every table's
    /// insert (or, once stopping, until the first failure: the WAL keeps
    /// it for the next start). Returns whether it was shipped.
    async fn ship(&self, layout: &Layout, batch: Batch, stop: &mut watch::Receiver<bool>) -> bool {
        let inner = &self.inner;
        let instance = {
            let mut state = inner.state.lock();
            if state.pending != Some((batch.first, batch.last)) {
                state.pending = Some((batch.first, batch.last));
                if let Err(e) = write_state(&inner.state_path, &state) {
                    tracing::error!(error = %e, "cannot record the batch being shipped");
                    return false;
                }
            }
            state.instance.clone()
        };
        let mut settings = vec![("async_insert", "0".to_string())];
        if layout.cluster.is_some() {
            // Confirmed only once the shards have it, so the WAL never drops
            // rows that sit in a Distributed table's local queue.
            settings.push(("distributed_foreground_insert", "1".to_string()));
        }
        let mut wait = inner.opts.retry_min;
        for (table, batches) in &batch.tables {
            let token = format!("{instance}:{}:{}-{}", table.name(), batch.first, batch.last);
            loop {
                match insert::insert_as(
                    &inner.client,
                    *table,
                    batches,
                    insert::InsertFormat::Native,
                    Some(&token),
                    &settings,
                )
                .await
                {
                    Ok(()) => break,
                    Err(e) => {
                        self.failed(&e, &format!("inserting into {}", table.name()));
                        if *stop.borrow() || !sleep_or_stop(wait, stop).await {
                            return false;
                        }
                        wait = (wait * 2).min(inner.opts.retry_max);
                    }
                }
            }
        }
        {
            let mut state = inner.state.lock();
            state.shipped = batch.last;
            state.pending = None;
            if let Err(e) = write_state(&inner.state_path, &state) {
                // Shipped, but not recorded: a restart resends it under the
                // same token, which ClickHouse ignores.
                tracing::error!(error = %e, "cannot record the shipped batch");
            }
        }
        inner.shipped.store(batch.last, Ordering::Release);
        let mut queue = inner.queue.lock();
        while queue.front().is_some_and(|q| q.seq <= batch.last) {
            let q = queue.pop_front().expect("front");
            inner
                .stats
                .memory_bytes
                .fetch_sub(q.bytes as u64, Ordering::Relaxed);
        }
        drop(queue);
        inner
            .stats
            .shipped_rows
            .fetch_add(batch.rows as u64, Ordering::Relaxed);
        inner.stats.shipped_batches.fetch_add(1, Ordering::Relaxed);
        *inner.stats.last_error.lock() = None;
        true
    }
}

fn add(per_table: &mut [Vec<RecordBatch>], batches: &TableBatches, rows: &mut usize) {
    for (table, b) in batches {
        if b.num_rows() > 0 {
            *rows += b.num_rows();
            per_table[*table as usize].push(b.clone());
        }
    }
}

fn retention_values(r: &RetentionPolicy) -> Vec<Duration> {
    otelhouse_schema::Signal::ALL
        .iter()
        .map(|s| r.get(*s))
        .collect()
}

/// Sleeps `d` unless `stop` turns true first; false when stopping.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.wait_for(|s| *s) => return false,
    }
    !*stop.borrow()
}

/// The WAL writer's sink in ClickHouse mode.
pub struct ShipApplier(Arc<Inner>);

impl Apply<TableBatches> for ShipApplier {
    fn apply(&mut self, seq: u64, item: TableBatches) {
        let inner = &self.0;
        let bytes: usize = item.iter().map(|(_, b)| b.get_array_memory_size()).sum();
        let held = inner.stats.memory_bytes.load(Ordering::Relaxed) as usize;
        if held + bytes <= inner.opts.max_memory_bytes
            && seq > inner.shipped.load(Ordering::Acquire)
        {
            inner.queue.lock().push_back(Queued {
                seq,
                batches: item,
                bytes,
            });
            inner
                .stats
                .memory_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        inner.durable.fetch_max(seq, Ordering::AcqRel);
        inner.wake.notify_one();
    }
}

/// Atomically: temporary file, fsync, rename, fsync of the directory.
fn write_state(path: &Path, state: &ShipState) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(state).expect("serialisable"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
