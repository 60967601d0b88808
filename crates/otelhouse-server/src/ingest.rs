//! The ingest pipeline shared by both OTLP receivers: validate → time window
//! → convert → WAL (group commit, fsync) → store tail → acknowledge.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use otelhouse_otlp::convert::TableBatches;
use otelhouse_otlp::{Encoding, Limits, OtlpRequest, PayloadError, fast};
use otelhouse_schema::Signal;
use otelhouse_storage::NoRoom;
use otelhouse_storage::embedded::kind_of;
use otelhouse_wal::{Committer, SubmitError};
use prost::Message;

use crate::memory::MemoryGuard;
use crate::telemetry::Telemetry;
use otelhouse_storage::retention::RetentionPolicy;

/// Outcome of an accepted request: how many records were refused as too
/// old (OTLP partial success), and why.
#[derive(Debug, Default)]
pub struct Accepted {
    pub rejected: u64,
    pub message: String,
}

impl Accepted {
    /// The signal's Export*ServiceResponse, protobuf-encoded, with partial
    /// success set when anything was refused (OTLP spec).
    pub fn to_protobuf(&self, signal: Signal) -> Vec<u8> {
        let partial = self.rejected > 0 || !self.message.is_empty();
        let (rejected, message) = (self.rejected as i64, self.message.clone());
        match signal {
            Signal::Logs => ExportLogsServiceResponse {
                partial_success: partial.then_some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
            Signal::Traces => ExportTraceServiceResponse {
                partial_success: partial.then_some(ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
            Signal::Metrics => ExportMetricsServiceResponse {
                partial_success: partial.then_some(ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Payload(#[from] PayloadError),
    /// Retry later: the WAL or memory is full, or too many requests at once.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// How long clients should wait before retrying a refused request.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where acknowledged rows wait after the WAL: the embedded store's
/// in-memory tail, or the ClickHouse shipper's queue.
pub trait WriteBuffer: Send + Sync {
    /// Why not, while the buffer takes no more rows: ingestion answers
    /// retry-later.
    fn room(&self) -> Result<(), NoRoom>;
}

impl WriteBuffer for otelhouse_storage::EmbeddedStore {
    fn room(&self) -> Result<(), NoRoom> {
        otelhouse_storage::EmbeddedStore::room(self)
    }
}

/// The shipper spills past its memory budget to the WAL (read back later),
/// so only the WAL's disk budget refuses records.
impl WriteBuffer for otelhouse_clickhouse::Shipper {
    fn room(&self) -> Result<(), NoRoom> {
        Ok(())
    }
}

pub struct Ingest {
    pub committer: Committer<TableBatches>,
    pub buffer: Arc<dyn WriteBuffer>,
    pub memory: Arc<MemoryGuard>,
    pub limits: Limits,
    pub retention: Arc<RetentionPolicy>,
    pub telemetry: Arc<Telemetry>,
    inflight: tokio::sync::Semaphore,
}

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Ingest {
    pub fn new(
        committer: Committer<TableBatches>,
        buffer: Arc<dyn WriteBuffer>,
        memory: Arc<MemoryGuard>,
        limits: Limits,
        retention: Arc<RetentionPolicy>,
        telemetry: Arc<Telemetry>,
        max_inflight: usize,
    ) -> Self {
        Ingest {
            committer,
            buffer,
            memory,
            limits,
            retention,
            telemetry,
            inflight: tokio::sync::Semaphore::new(max_inflight),
        }
    }

    /// A slot for one request being decoded; `None` means "too many at
    /// once: answer retry-later" (bounds the memory held by bodies).
    pub fn admit(&self, signal: Signal) -> Result<tokio::sync::SemaphorePermit<'_>, IngestError> {
        self.inflight.try_acquire().map_err(|_| {
            self.telemetry.rejected(signal, "overloaded", 0);
            IngestError::Unavailable("too many requests in flight; retry later".into())
        })
    }

    fn retention_of(&self, signal: Signal) -> Duration {
        self.retention.get(signal)
    }

    fn oldest(&self, signal: Signal, now: u64) -> u64 {
        now.saturating_sub(self.retention_of(signal).as_nanos() as u64)
    }

    fn check_room(&self, signal: Signal, records: u64) -> Result<(), IngestError> {
        if let Err(why) = self.buffer.room() {
            self.telemetry.rejected(signal, why.reason(), records);
            return Err(IngestError::Unavailable(why.to_string()));
        }
        if self.memory.over_budget() {
            self.memory.refused();
            self.telemetry.rejected(signal, "memory", records);
            return Err(IngestError::Unavailable(format!(
                "the server's resident memory ({} MiB) is at its budget ({} MiB, refusing above 90 %); retry later",
                self.memory.resident() >> 20,
                self.memory.budget() >> 20
            )));
        }
        Ok(())
    }

    /// Makes a (decompressed) protobuf request durable. Logs and spans take
    /// the direct decoder ([`otelhouse_otlp::fast`]) when it recognises the
    /// request; metrics, and anything it does not recognise, the general path.
    pub async fn accept_protobuf(
        &self,
        signal: Signal,
        body: bytes::Bytes,
    ) -> Result<Accepted, IngestError> {
        self.check_room(signal, 0)?;
        let oldest = self.oldest(signal, now_nanos());
        let direct = match signal {
            Signal::Logs => fast::logs(&body, &self.limits, oldest),
            Signal::Traces => fast::traces(&body, &self.limits, oldest),
            Signal::Metrics => None,
        };
        if let Some((batches, records)) = direct {
            if records == 0 {
                return Ok(Accepted::default());
            }
            return self
                .commit(
                    signal,
                    records as u64,
                    batches,
                    Vec::from(body),
                    Accepted::default(),
                )
                .await;
        }
        let request = OtlpRequest::decode(signal, Encoding::Protobuf, &body).inspect_err(|e| {
            self.telemetry.rejected(signal, e.kind.as_str(), 0);
        })?;
        self.accept(request, Some(body)).await
    }

    /// Makes a decoded request durable. Returns only after its records are
    /// fsync'd in the WAL and visible to queries. `received_protobuf` is the
    /// (decompressed) protobuf body the request was decoded from, if any: the
    /// WAL stores it as is when the time window changed nothing, saving a
    /// re-encode.
    pub async fn accept(
        &self,
        mut request: OtlpRequest,
        received_protobuf: Option<bytes::Bytes>,
    ) -> Result<Accepted, IngestError> {
        let signal = request.signal();
        if let Err(e) = request.validate(&self.limits) {
            self.telemetry
                .rejected(signal, e.kind.as_str(), request.record_count() as u64);
            return Err(e.into());
        }
        let now = now_nanos();
        let windowed = request.apply_window(now, self.oldest(signal, now));
        let rejected = windowed.dropped;
        let accepted = Accepted {
            rejected,
            message: if rejected > 0 {
                format!(
                    "{rejected} {} older than the retention of {} were dropped",
                    record_noun(signal),
                    humantime::format_duration(self.retention_of(signal))
                )
            } else {
                String::new()
            },
        };
        if rejected > 0 {
            self.telemetry.rejected(signal, "too_old", rejected);
        }
        let records = request.record_count() as u64;
        if records == 0 {
            return Ok(accepted);
        }
        self.check_room(signal, records)?;
        let batches = request.to_batches();
        let payload = match received_protobuf {
            Some(body) if !windowed.changed() => Vec::from(body),
            _ => request.encode(),
        };
        self.commit(signal, records, batches, payload, accepted)
            .await
    }

    /// WAL (group commit, fsync) → store tail → the answer.
    async fn commit(
        &self,
        signal: Signal,
        records: u64,
        batches: TableBatches,
        payload: Vec<u8>,
        accepted: Accepted,
    ) -> Result<Accepted, IngestError> {
        let done = self
            .committer
            .submit(kind_of(signal), payload, batches)
            .map_err(|e| {
                let reason = match e {
                    SubmitError::Busy(_) => "wal_busy",
                    SubmitError::DiskFull(_) => "disk_full",
                    SubmitError::Failed(_) => "wal_failed",
                };
                self.telemetry.rejected(signal, reason, records);
                match e {
                    SubmitError::Failed(m) => {
                        IngestError::Internal(format!("write-ahead log failed: {m}"))
                    }
                    other => IngestError::Unavailable(other.to_string()),
                }
            })?;
        match done.await {
            Ok(Ok(_seq)) => {
                self.telemetry.accepted(signal, records);
                Ok(accepted)
            }
            Ok(Err(e)) => {
                self.telemetry.rejected(signal, "wal_failed", records);
                Err(IngestError::Internal(e.to_string()))
            }
            Err(_) => Err(IngestError::Internal("the WAL writer stopped".into())),
        }
    }
}

pub fn record_noun(signal: Signal) -> &'static str {
    match signal {
        Signal::Logs => "log records",
        Signal::Traces => "spans",
        Signal::Metrics => "data points",
    }
}
