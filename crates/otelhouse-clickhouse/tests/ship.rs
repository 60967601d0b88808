//! Shipping from the WAL to the real ClickHouse engine (chdb behind its
//! HTTP interface): every acknowledged entry arrives once, across an
//! outage, a backlog read back from disk, and a retried batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use otelhouse_clickhouse::testing::ChdbFront;
use otelhouse_clickhouse::{Client, ShipOptions, Shipper, Statement};
use otelhouse_otlp::{Encoding, OtlpRequest};
use otelhouse_schema::Signal;
use otelhouse_storage::embedded::kind_of;
use otelhouse_storage::retention::RetentionPolicy;
use otelhouse_wal::{Committer, Wal, WalOptions};
use tokio::sync::watch;

const DAY: Duration = Duration::from_secs(86_400);

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A logs request of `n` records with bodies `rec-<i>-<j>`.
fn logs(i: usize, n: usize) -> OtlpRequest {
    let t = now_nanos();
    let records: Vec<String> = (0..n)
        .map(|j| {
            format!(
                r#"{{"timeUnixNano":"{}","severityText":"INFO","body":{{"stringValue":"rec-{i}-{j}"}}}}"#,
                t + j as u64
            )
        })
        .collect();
    let body = format!(
        r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"ship-test"}}}}]}},"scopeLogs":[{{"logRecords":[{}]}}]}}]}}"#,
        records.join(",")
    );
    OtlpRequest::decode(Signal::Logs, Encoding::Json, body.as_bytes()).unwrap()
}

fn retention() -> Arc<RetentionPolicy> {
    Arc::new(RetentionPolicy::new(3 * DAY, 3 * DAY, 3 * DAY))
}

async fn count(client: &Client, sql: &str) -> Option<u64> {
    let st = Statement {
        sql: sql.into(),
        params: Vec::new(),
    };
    let body = client.query(&st, &[]).await.ok()?;
    String::from_utf8_lossy(&body).trim().parse().ok()
}

async fn wait_for_rows(client: &Client, shipper: &Shipper, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = count(client, "SELECT count() FROM otel.otel_logs").await;
        if have == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ClickHouse has {have:?} rows, want {want}; shipper: {:?}",
            shipper.stats().last_error.lock()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A shipper's `run` in a task, until `stop`.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(shipper: &Shipper) -> Running {
        let (stop, stop_rx) = watch::channel(false);
        let shipper = shipper.clone();
        let task = tokio::spawn(async move { shipper.run(retention(), stop_rx).await });
        Running { stop, task }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

fn opts() -> ShipOptions {
    ShipOptions {
        max_delay: Duration::from_millis(100),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        // Small: most of an outage's backlog is read back from the WAL.
        max_memory_bytes: 64 << 10,
        ..Default::default()
    }
}

async fn submit(committer: &Committer<otelhouse_otlp::convert::TableBatches>, i: usize, n: usize) {
    let request = logs(i, n);
    let done = committer
        .submit(
            kind_of(Signal::Logs),
            request.encode(),
            request.to_batches(),
        )
        .unwrap();
    done.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_entry_arrives_once_across_an_outage() {
    let ch_dir = tempfile::tempdir().unwrap();
    let mut front = ChdbFront::start_on(ch_dir.path());
    let data = tempfile::tempdir().unwrap();
    let wal_dir = data.path().join("wal");
    let state = data.path().join("shipped.json");
    let shipper = Shipper::open(front.client("otel"), &wal_dir, &state, opts()).unwrap();
    let (wal, _) = Wal::open(
        &wal_dir,
        WalOptions::default(),
        shipper.shipped_seq() + 1,
        |_| {},
    )
    .unwrap();
    let committer = Committer::start(wal, shipper.applier(), Default::default());
    let run = Running::start(&shipper);

    for i in 0..20 {
        submit(&committer, i, 50).await;
    }
    let client = front.client("otel");
    wait_for_rows(&client, &shipper, 1000).await;

    // ClickHouse goes away; ingestion goes on into the WAL.
    front.stop();
    for i in 20..60 {
        submit(&committer, i, 50).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        shipper.backlog_entries() >= 40,
        "{}",
        shipper.backlog_entries()
    );
    assert!(
        shipper
            .stats()
            .failed_attempts
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(
        shipper
            .stats()
            .last_error
            .lock()
            .as_deref()
            .unwrap_or("")
            .contains("cannot reach"),
        "{:?}",
        shipper.stats().last_error.lock()
    );

    // It comes back (on a new port: the shipper's client still points at
    // the old one, so a new shipper takes over from the state file, as a
    // restarted server would).
    run.stop().await;
    let front = ChdbFront::start_on(ch_dir.path());
    let shipper = Shipper::open(front.client("otel"), &wal_dir, &state, opts()).unwrap();
    shipper.set_durable(60);
    let run = Running::start(&shipper);
    let client = front.client("otel");
    wait_for_rows(&client, &shipper, 3000).await;
    assert_eq!(
        count(&client, "SELECT uniqExact(Body) FROM otel.otel_logs").await,
        Some(3000),
        "every record exactly once"
    );
    assert_eq!(shipper.backlog_entries(), 0);
    assert!(
        shipper
            .stats()
            .entries_read_back
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 40,
        "the backlog came back from the WAL"
    );
    run.stop().await;
    drop(committer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resent_after_a_crash_is_stored_once() {
    let front = ChdbFront::start();
    let data = tempfile::tempdir().unwrap();
    let wal_dir = data.path().join("wal");
    let state = data.path().join("shipped.json");
    let shipper = Shipper::open(front.client("otel"), &wal_dir, &state, opts()).unwrap();
    let (wal, _) = Wal::open(&wal_dir, WalOptions::default(), 1, |_| {}).unwrap();
    let committer = Committer::start(wal, shipper.applier(), Default::default());
    // Five entries durable before shipping starts: one batch, 1..=5.
    for i in 0..5 {
        submit(&committer, i, 100).await;
    }
    let run = Running::start(&shipper);
    let client = front.client("otel");
    wait_for_rows(&client, &shipper, 500).await;
    run.stop().await;
    assert_eq!(shipper.shipped_seq(), 5);

    // A crash after ClickHouse stored the batch but before the state file
    // said so: the state still names the batch as pending.
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    s["shipped"] = 0.into();
    s["pending"] = serde_json::json!([1, 5]);
    std::fs::write(&state, s.to_string()).unwrap();

    let shipper = Shipper::open(front.client("otel"), &wal_dir, &state, opts()).unwrap();
    assert_eq!(shipper.shipped_seq(), 0);
    shipper.set_durable(5);
    let run = Running::start(&shipper);
    let deadline = Instant::now() + Duration::from_secs(30);
    while shipper.shipped_seq() < 5 {
        assert!(
            Instant::now() < deadline,
            "the pending batch was not resent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        shipper
            .stats()
            .shipped_rows
            .load(std::sync::atomic::Ordering::Relaxed),
        500,
        "the batch was sent again"
    );
    assert_eq!(
        count(&client, "SELECT count() FROM otel.otel_logs").await,
        Some(500),
        "ClickHouse stored the resent batch once (same deduplication token)"
    );
    run.stop().await;
}
