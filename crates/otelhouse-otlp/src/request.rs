use otelhouse_schema::Signal;
use prost::Message;

use crate::convert::{self, TableBatches};
use crate::{
    ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest, Limits,
    PayloadError, json, validate, window,
};

/// How a request body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// A decoded OTLP export request of any signal.
#[derive(Debug, Clone, PartialEq)]
pub enum OtlpRequest {
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

fn protobuf<M: Message + Default>(body: &[u8]) -> Result<M, PayloadError> {
    M::decode(body).map_err(|e| PayloadError::malformed(format!("invalid protobuf: {e}")))
}

impl OtlpRequest {
    /// Decodes a (decompressed) body. Validation is a separate step.
    pub fn decode(signal: Signal, encoding: Encoding, body: &[u8]) -> Result<Self, PayloadError> {
        Ok(match (signal, encoding) {
            (Signal::Logs, Encoding::Protobuf) => OtlpRequest::Logs(protobuf(body)?),
            (Signal::Traces, Encoding::Protobuf) => OtlpRequest::Traces(protobuf(body)?),
            (Signal::Metrics, Encoding::Protobuf) => OtlpRequest::Metrics(protobuf(body)?),
            (Signal::Logs, Encoding::Json) => OtlpRequest::Logs(json::decode_logs(body)?),
            (Signal::Traces, Encoding::Json) => OtlpRequest::Traces(json::decode_traces(body)?),
            (Signal::Metrics, Encoding::Json) => OtlpRequest::Metrics(json::decode_metrics(body)?),
        })
    }

    pub fn signal(&self) -> Signal {
        match self {
            OtlpRequest::Logs(_) => Signal::Logs,
            OtlpRequest::Traces(_) => Signal::Traces,
            OtlpRequest::Metrics(_) => Signal::Metrics,
        }
    }

    pub fn validate(&self, limits: &Limits) -> Result<(), PayloadError> {
        match self {
            OtlpRequest::Logs(r) => validate::logs(r, limits),
            OtlpRequest::Traces(r) => validate::traces(r, limits),
            OtlpRequest::Metrics(r) => validate::metrics(r, limits),
        }
    }

    /// Stamps missing timestamps with `now` and drops records older than
    /// `oldest` (unix nanos).
    pub fn apply_window(&mut self, now: u64, oldest: u64) -> window::Windowed {
        match self {
            OtlpRequest::Logs(r) => window::logs(r, now, oldest),
            OtlpRequest::Traces(r) => window::traces(r, oldest),
            OtlpRequest::Metrics(r) => window::metrics(r, now, oldest),
        }
    }

    /// Log records, spans or data points in the request.
    pub fn record_count(&self) -> usize {
        match self {
            OtlpRequest::Logs(r) => window::count_logs(r),
            OtlpRequest::Traces(r) => window::count_spans(r),
            OtlpRequest::Metrics(r) => window::count_points(r),
        }
    }

    pub fn to_batches(&self) -> TableBatches {
        match self {
            OtlpRequest::Logs(r) => convert::logs(r),
            OtlpRequest::Traces(r) => convert::traces(r),
            OtlpRequest::Metrics(r) => convert::metrics(r),
        }
    }

    /// Protobuf encoding, the form the WAL keeps.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            OtlpRequest::Logs(r) => r.encode_to_vec(),
            OtlpRequest::Traces(r) => r.encode_to_vec(),
            OtlpRequest::Metrics(r) => r.encode_to_vec(),
        }
    }
}
