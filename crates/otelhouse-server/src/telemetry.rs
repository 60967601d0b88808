//! The server's own Prometheus metrics (`GET /metrics`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use otelhouse_schema::Signal;
use otelhouse_storage::EmbeddedStore;
use otelhouse_tls::listener::FailureHook;
use otelhouse_wal::FSYNC_BUCKETS;
use otelhouse_wal::WalStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};

use crate::memory::MemoryGuard;
use crate::security::GateReport;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabel {
    signal: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabel {
    signal: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabel {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: &'static str,
}

pub struct Telemetry {
    registry: Registry,
    accepted: Family<SignalLabel, Counter>,
    rejected: Family<RejectLabel, Counter>,
    handshake_failures: Family<HandshakeLabel, Counter>,
}

impl Telemetry {
    pub fn new(
        wal: Arc<WalStats>,
        sink: Sink,
        security: &GateReport,
        memory: Option<Arc<MemoryGuard>>,
    ) -> Self {
        let mut registry = Registry::with_prefix("otelhouse");
        let accepted = Family::<SignalLabel, Counter>::default();
        let rejected = Family::<RejectLabel, Counter>::default();
        registry.register(
            "records_accepted",
            "Records (log records, spans, data points) acknowledged durably",
            accepted.clone(),
        );
        registry.register(
            "records_rejected",
            "Records refused, by reason",
            rejected.clone(),
        );
        let handshake_failures = Family::<HandshakeLabel, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by listener and reason (no_client_certificate, bad_client_certificate, rejected_by_client, not_tls, timeout, ...)",
            handshake_failures.clone(),
        );
        let passed = Family::<CheckLabel, Gauge>::default();
        let overridden = Family::<CheckLabel, Gauge>::default();
        for c in &security.checks {
            let label = CheckLabel { check: c.check };
            passed.get_or_create(&label).set(c.passed as i64);
            overridden.get_or_create(&label).set(c.overridden as i64);
        }
        registry.register(
            "security_check_passed",
            "Startup gate checks: 1 passed, 0 failed (see GET /api/v1/security)",
            passed,
        );
        registry.register(
            "security_override",
            "1 when a failed startup gate check was explicitly overridden",
            overridden,
        );
        registry.register_collector(Box::new(StateCollector { wal, sink, memory }));
        Telemetry {
            registry,
            accepted,
            rejected,
            handshake_failures,
        }
    }

    /// Counts a listener's failed TLS handshakes by reason.
    pub fn handshake_failure_hook(&self, listener: &'static str) -> FailureHook {
        let family = self.handshake_failures.clone();
        Arc::new(move |reason| {
            family
                .get_or_create(&HandshakeLabel { listener, reason })
                .inc();
        })
    }

    pub fn accepted(&self, signal: Signal, n: u64) {
        self.accepted
            .get_or_create(&SignalLabel {
                signal: signal.as_str(),
            })
            .inc_by(n);
    }

    /// Counts refused records. A request refused before it was decoded
    /// counts as one (we do not know how many records it held).
    pub fn rejected(&self, signal: Signal, reason: &'static str, n: u64) {
        self.rejected
            .get_or_create(&RejectLabel {
                signal: signal.as_str(),
                reason,
            })
            .inc_by(n.max(1));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// Where rows go after the WAL, for the metrics that describe it.
#[derive(Clone)]
pub enum Sink {
    Embedded(EmbeddedStore),
    ClickHouse(otelhouse_clickhouse::Shipper),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Embedded(_) => "Sink::Embedded",
            Sink::ClickHouse(_) => "Sink::ClickHouse",
        })
    }
}

/// Values read at scrape time from the WAL and the sink.
#[derive(Debug)]
struct StateCollector {
    wal: Arc<WalStats>,
    sink: Sink,
    memory: Option<Arc<MemoryGuard>>,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = prometheus_client::metrics::counter::ConstCounter::new(v);
    c.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn encode_store(
    encoder: &mut DescriptorEncoder,
    store: &EmbeddedStore,
) -> Result<(), std::fmt::Error> {
    gauge(
        encoder,
        "memory_tail_bytes",
        "Bytes of rows held in memory before they are written to parts",
        store.tail_bytes() as i64,
    )?;
    let stats = store.stats();
    let c = store.counters();
    gauge(
        encoder,
        "part_bytes",
        "Bytes of Parquet parts on disk (all tables)",
        stats.iter().map(|t| t.part_bytes as i64).sum(),
    )?;
    gauge(
        encoder,
        "parts",
        "Parquet parts (all tables)",
        stats.iter().map(|t| t.parts as i64).sum(),
    )?;
    counter(
        encoder,
        "merges",
        "Merges of parts done by compaction",
        c.merges.load(Ordering::Relaxed),
    )?;
    counter(
        encoder,
        "merged_rows",
        "Rows rewritten by merges (over records accepted: how often a row is written again)",
        c.merged_rows.load(Ordering::Relaxed),
    )?;
    counter(
        encoder,
        "expired_partitions",
        "Hour partitions dropped because they passed their retention",
        c.expired_partitions.load(Ordering::Relaxed),
    )?;
    counter(
        encoder,
        "disk_budget_dropped_partitions",
        "Hour partitions dropped before their retention because parts exceeded --max-disk",
        c.disk_budget_partitions.load(Ordering::Relaxed),
    )
}

fn encode_shipper(
    encoder: &mut DescriptorEncoder,
    shipper: &otelhouse_clickhouse::Shipper,
) -> Result<(), std::fmt::Error> {
    let s = shipper.stats();
    counter(
        encoder,
        "clickhouse_shipped_rows",
        "Rows ClickHouse confirmed",
        s.shipped_rows.load(Ordering::Relaxed),
    )?;
    counter(
        encoder,
        "clickhouse_inserts",
        "Batches ClickHouse confirmed (one insert per table)",
        s.shipped_batches.load(Ordering::Relaxed),
    )?;
    counter(
        encoder,
        "clickhouse_failed_attempts",
        "Failed inserts or table set-ups (each is retried with backoff)",
        s.failed_attempts.load(Ordering::Relaxed),
    )?;
    counter(
        encoder,
        "clickhouse_entries_read_back",
        "WAL entries read back from disk because the in-memory backlog was full",
        s.entries_read_back.load(Ordering::Relaxed),
    )?;
    gauge(
        encoder,
        "clickhouse_backlog_entries",
        "WAL entries acknowledged but not yet confirmed by ClickHouse",
        shipper.backlog_entries() as i64,
    )?;
    gauge(
        encoder,
        "clickhouse_backlog_memory_bytes",
        "Bytes of the backlog held in memory (the rest is read back from the WAL)",
        s.memory_bytes.load(Ordering::Relaxed) as i64,
    )?;
    gauge(
        encoder,
        "clickhouse_ready",
        "1 once the ClickHouse tables exist and match the retention",
        s.ready.load(Ordering::Relaxed) as i64,
    )
}

fn encode_memory(
    encoder: &mut DescriptorEncoder,
    memory: &MemoryGuard,
) -> Result<(), std::fmt::Error> {
    gauge(
        encoder,
        "process_resident_memory_bytes",
        "Resident memory (RSS) of the server, as of the memory guard's last look",
        memory.resident() as i64,
    )?;
    gauge(
        encoder,
        "memory_budget_bytes",
        "Resident memory budget (--max-resident-memory; default: write buffer + query memory)",
        memory.budget() as i64,
    )?;
    counter(
        encoder,
        "memory_releases",
        "Times the allocator was asked to return freed memory because RSS neared the budget",
        memory.releases(),
    )?;
    counter(
        encoder,
        "memory_refusals",
        "Requests answered retry-later because RSS was over 90 % of the budget",
        memory.refusals(),
    )?;
    counter(
        encoder,
        "memory_merges_postponed",
        "Maintenance rounds that skipped merging because RSS was over 90 % of the budget",
        memory.merges_postponed(),
    )
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let w = &self.wal;
        gauge(
            &mut encoder,
            "wal_bytes",
            "Bytes of WAL segments on disk",
            w.disk_bytes.load(Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut encoder,
            "wal_queue_depth",
            "Entries waiting for the WAL writer",
            w.queued_entries.load(Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut encoder,
            "wal_queue_bytes",
            "Bytes waiting for the WAL writer",
            w.queued_bytes.load(Ordering::Relaxed) as i64,
        )?;
        if let Some(memory) = &self.memory {
            encode_memory(&mut encoder, memory)?;
        }
        match &self.sink {
            Sink::Embedded(store) => encode_store(&mut encoder, store)?,
            Sink::ClickHouse(shipper) => encode_shipper(&mut encoder, shipper)?,
        }
        let written = prometheus_client::metrics::counter::ConstCounter::new(
            w.bytes_written.load(Ordering::Relaxed),
        );
        written.encode(encoder.encode_descriptor(
            "wal_written_bytes",
            "Bytes written to the WAL",
            None,
            MetricType::Counter,
        )?)?;
        let buckets: Vec<(f64, u64)> = FSYNC_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(w.fsync_buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let mut h = encoder.encode_descriptor(
            "wal_fsync_seconds",
            "Latency of WAL fsyncs (one per group commit)",
            None,
            MetricType::Histogram,
        )?;
        h.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            w.fsync_nanos_total.load(Ordering::Relaxed) as f64 / 1e9,
            w.fsyncs.load(Ordering::Relaxed),
            &buckets,
            None,
        )?;
        Ok(())
    }
}
