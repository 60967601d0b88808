use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::{Wal, WalError};

/// Receives each durable entry, in sequence order, before its request is
/// answered. Runs on the WAL writer thread: keep it cheap.
pub trait Apply<T>: Send + 'static {
    fn apply(&mut self, seq: u64, item: T);
}

#[derive(Debug, Clone)]
pub struct CommitterOptions {
    /// Entries waiting for the writer, in bytes, before submit answers Busy.
    pub max_queue_bytes: usize,
    /// WAL size on disk at which submit answers DiskFull.
    pub max_wal_bytes: u64,
    /// Most bytes written by one group commit.
    pub max_group_bytes: usize,
}

impl Default for CommitterOptions {
    fn default() -> Self {
        CommitterOptions {
            max_queue_bytes: 64 << 20,
            max_wal_bytes: 4 << 30,
            max_group_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the write-ahead log is behind ({0} bytes queued); retry later")]
    Busy(usize),
    #[error("the write-ahead log reached its disk budget of {0} bytes; retry later")]
    DiskFull(u64),
    #[error("the write-ahead log failed: {0}")]
    Failed(String),
}

/// Counters for /metrics, updated by the writer thread.
#[derive(Debug, Default)]
pub struct WalStats {
    pub queued_entries: AtomicUsize,
    pub queued_bytes: AtomicUsize,
    pub disk_bytes: AtomicU64,
    pub bytes_written: AtomicU64,
    pub fsyncs: AtomicU64,
    /// fsync latency histogram: counts per bucket of [`FSYNC_BUCKETS`] (+Inf last).
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    pub fsync_nanos_total: AtomicU64,
}

/// Upper bounds (seconds) of the fsync latency histogram buckets.
pub const FSYNC_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

impl WalStats {
    fn observe_fsync(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = FSYNC_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(FSYNC_BUCKETS.len());
        self.fsync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos_total
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

struct Job<T> {
    kind: u8,
    payload: Vec<u8>,
    item: T,
    done: oneshot::Sender<Result<u64, WalError>>,
}

/// Group commit: requests submit entries; one writer thread makes them
/// durable in groups and applies them in sequence order.
pub struct Committer<T> {
    tx: Mutex<Option<mpsc::Sender<Job<T>>>>,
    wal: Arc<Mutex<Wal>>,
    opts: CommitterOptions,
    stats: Arc<WalStats>,
    failed: Arc<AtomicBool>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl<T: Send + 'static> Committer<T> {
    pub fn start(wal: Wal, apply: impl Apply<T>, opts: CommitterOptions) -> Self {
        let stats = Arc::new(WalStats::default());
        stats.disk_bytes.store(wal.disk_bytes(), Ordering::Relaxed);
        let wal = Arc::new(Mutex::new(wal));
        let failed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            rx,
            wal: wal.clone(),
            stats: stats.clone(),
            failed: failed.clone(),
            max_group_bytes: opts.max_group_bytes,
        };
        let thread = thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(apply))
            .expect("spawn WAL writer thread");
        Committer {
            tx: Mutex::new(Some(tx)),
            wal,
            opts,
            stats,
            failed,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues an entry. The returned receiver resolves once the entry is
    /// fsync'd and applied, with its seq.
    pub fn submit(
        &self,
        kind: u8,
        payload: Vec<u8>,
        item: T,
    ) -> Result<oneshot::Receiver<Result<u64, WalError>>, SubmitError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(SubmitError::Failed("see the server log".into()));
        }
        let disk = self.stats.disk_bytes.load(Ordering::Relaxed);
        if disk >= self.opts.max_wal_bytes {
            return Err(SubmitError::DiskFull(self.opts.max_wal_bytes));
        }
        let len = payload.len();
        let queued = self.stats.queued_bytes.fetch_add(len, Ordering::AcqRel);
        // An empty queue always admits one entry, however large.
        if queued > 0 && queued + len > self.opts.max_queue_bytes {
            self.stats.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(SubmitError::Busy(queued));
        }
        self.stats.queued_entries.fetch_add(1, Ordering::Relaxed);
        let (done, rx) = oneshot::channel();
        let sent = self.tx.lock().as_ref().map(|tx| {
            tx.send(Job {
                kind,
                payload,
                item,
                done,
            })
            .is_ok()
        });
        if sent != Some(true) {
            return Err(SubmitError::Failed("shutting down".into()));
        }
        Ok(rx)
    }

    pub fn stats(&self) -> &Arc<WalStats> {
        &self.stats
    }

    /// Access to the WAL for truncation; the writer holds this lock only
    /// while writing and syncing.
    pub fn wal(&self) -> &Arc<Mutex<Wal>> {
        &self.wal
    }

    /// Seals the active segment and deletes every segment whose entries
    /// are all `<= seq`.
    pub fn remove_through(&self, seq: u64) -> Result<(), WalError> {
        let mut wal = self.wal.lock();
        if wal.next_seq() - 1 <= seq {
            wal.seal()?;
        }
        wal.remove_through(seq)?;
        self.stats
            .disk_bytes
            .store(wal.disk_bytes(), Ordering::Relaxed);
        Ok(())
    }

    /// Stops accepting, lets the writer finish what is queued, joins it.
    pub fn shutdown(&self) {
        self.tx.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl<T> Drop for Committer<T> {
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

struct Writer<T> {
    rx: mpsc::Receiver<Job<T>>,
    wal: Arc<Mutex<Wal>>,
    stats: Arc<WalStats>,
    failed: Arc<AtomicBool>,
    max_group_bytes: usize,
}

impl<T> Writer<T> {
    fn run(self, mut apply: impl Apply<T>) {
        let mut group: Vec<Job<T>> = Vec::new();
        while let Ok(first) = self.rx.recv() {
            let mut bytes = first.payload.len();
            group.push(first);
            while bytes < self.max_group_bytes {
                match self.rx.try_recv() {
                    Ok(job) => {
                        bytes += job.payload.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            let result = self.commit(&group);
            self.stats.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.stats
                .queued_entries
                .fetch_sub(group.len(), Ordering::Relaxed);
            match result {
                Ok(first_seq) => {
                    for (i, job) in group.drain(..).enumerate() {
                        let seq = first_seq + i as u64;
                        apply.apply(seq, job.item);
                        let _ = job.done.send(Ok(seq));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "WAL write failed; refusing further writes");
                    self.failed.store(true, Ordering::Relaxed);
                    for job in group.drain(..) {
                        let _ = job.done.send(Err(WalError::Failed(e.to_string())));
                    }
                }
            }
        }
    }

    fn commit(&self, group: &[Job<T>]) -> Result<u64, WalError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(WalError::Failed("an earlier write failed".into()));
        }
        let mut wal = self.wal.lock();
        let first = wal.append(group.iter().map(|j| (j.kind, &j.payload[..])))?;
        let started = Instant::now();
        wal.sync()?;
        self.stats.observe_fsync(started.elapsed());
        let written: usize = group.iter().map(|j| j.payload.len() + crate::HEADER).sum();
        self.stats
            .bytes_written
            .fetch_add(written as u64, Ordering::Relaxed);
        self.stats
            .disk_bytes
            .store(wal.disk_bytes(), Ordering::Relaxed);
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WalOptions;

    struct Collect(Arc<Mutex<Vec<(u64, u32)>>>);
    impl Apply<u32> for Collect {
        fn apply(&mut self, seq: u64, item: u32) {
            self.0.lock().push((seq, item));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_submits_are_applied_in_seq_order_and_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default(), 0, |_| {}).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let c = Arc::new(Committer::start(
            wal,
            Collect(seen.clone()),
            CommitterOptions::default(),
        ));
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50u32 {
                    let rx = c.submit(0, vec![0; 100], t * 1000 + i).unwrap();
                    rx.await.unwrap().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let seen = seen.lock().clone();
        assert_eq!(seen.len(), 400);
        assert!(
            seen.windows(2).all(|w| w[1].0 == w[0].0 + 1),
            "applied in seq order"
        );
        let fsyncs = c.stats().fsyncs.load(Ordering::Relaxed);
        assert!(fsyncs <= 400, "{fsyncs}");
        c.shutdown();
        let mut n = 0;
        Wal::open(dir.path(), WalOptions::default(), 0, |_| n += 1).unwrap();
        assert_eq!(n, 400);
    }

    #[test]
    fn full_queue_answers_busy() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default(), 0, |_| {}).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let c = Committer::start(
            wal,
            Collect(seen),
            CommitterOptions {
                max_queue_bytes: 10,
                ..Default::default()
            },
        );
        // Hold the WAL lock so the writer cannot drain the queue.
        let guard = c.wal().lock();
        let _a = c.submit(0, vec![0; 8], 1).unwrap();
        // The first one may already be taken by the writer (blocked on the lock).
        let mut busy = false;
        let mut held = Vec::new();
        for i in 0..3 {
            match c.submit(0, vec![0; 8], i) {
                Ok(rx) => held.push(rx),
                Err(SubmitError::Busy(_)) => busy = true,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(busy);
        drop(guard);
    }

    #[test]
    fn disk_budget_answers_disk_full() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default(), 0, |_| {}).unwrap();
        let c = Committer::start(
            wal,
            Collect(Arc::default()),
            CommitterOptions {
                max_wal_bytes: 100,
                ..Default::default()
            },
        );
        let rx = c.submit(0, vec![0; 200], 1).unwrap();
        rx.blocking_recv().unwrap().unwrap();
        assert_eq!(
            c.submit(0, vec![0; 1], 2).unwrap_err(),
            SubmitError::DiskFull(100)
        );
    }
}
