//! OTLP/gRPC receiver (tonic). Decompression (gzip) and the decoded-size
//! limit are tonic's (`max_decoding_message_size` caps the message both as
//! received and after decompression); validation and everything after it is
//! the shared [`Ingest`] pipeline.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use otelhouse_auth::{KeyCache, SecretKind, secret_from_header};
use otelhouse_otlp::OtlpRequest;
use otelhouse_otlp::error::PayloadErrorKind;
use otelhouse_schema::Signal;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::ingest::{Accepted, Ingest, IngestError, RETRY_AFTER};

#[derive(Clone)]
pub struct OtlpGrpc {
    pub ingest: Arc<Ingest>,
    pub keys: KeyCache,
}

impl OtlpGrpc {
    async fn handle<T>(
        &self,
        signal: Signal,
        request: Request<T>,
        wrap: impl FnOnce(T) -> OtlpRequest,
    ) -> Result<Accepted, Status> {
        let key = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if key
            .and_then(|k| {
                self.keys
                    .check(SecretKind::IngestionKey, secret_from_header(k))
            })
            .is_none()
        {
            self.ingest.telemetry.rejected(signal, "unauthenticated", 0);
            return Err(Status::unauthenticated(
                "missing or invalid ingestion key in the authorization metadata",
            ));
        }
        let _slot = self.ingest.admit(signal).map_err(to_status)?;
        self.ingest
            .accept(wrap(request.into_inner()), None)
            .await
            .map_err(to_status)
    }
}

fn to_status(e: IngestError) -> Status {
    match e {
        IngestError::Payload(p) if p.kind == PayloadErrorKind::TooLarge => {
            Status::resource_exhausted(p.to_string())
        }
        IngestError::Payload(p) => Status::invalid_argument(p.to_string()),
        IngestError::Unavailable(m) => {
            // Retry hint for clients that read it (the OTLP spec's RetryInfo
            // needs googleapis types; the header form is widely understood).
            let mut status = Status::unavailable(m);
            status
                .metadata_mut()
                .insert("retry-after", MetadataValue::from(RETRY_AFTER.as_secs()));
            status
        }
        IngestError::Internal(m) => Status::internal(m),
    }
}

fn partial(a: &Accepted) -> Option<(i64, String)> {
    (a.rejected > 0 || !a.message.is_empty()).then(|| (a.rejected as i64, a.message.clone()))
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let a = self
            .handle(Signal::Logs, request, OtlpRequest::Logs)
            .await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: partial(&a).map(|(rejected_log_records, error_message)| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let a = self
            .handle(Signal::Traces, request, OtlpRequest::Traces)
            .await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial(&a).map(|(rejected_spans, error_message)| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let a = self
            .handle(Signal::Metrics, request, OtlpRequest::Metrics)
            .await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: partial(&a).map(|(rejected_data_points, error_message)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }))
    }
}

/// The three OTLP services on one tonic router, gzip accepted and answered.
pub fn routes(svc: OtlpGrpc, max_message_bytes: usize) -> tonic::service::Routes {
    let gz = CompressionEncoding::Gzip;
    tonic::service::Routes::new(
        LogsServiceServer::new(svc.clone())
            .accept_compressed(gz)
            .send_compressed(gz)
            .max_decoding_message_size(max_message_bytes),
    )
    .add_service(
        TraceServiceServer::new(svc.clone())
            .accept_compressed(gz)
            .send_compressed(gz)
            .max_decoding_message_size(max_message_bytes),
    )
    .add_service(
        MetricsServiceServer::new(svc)
            .accept_compressed(gz)
            .send_compressed(gz)
            .max_decoding_message_size(max_message_bytes),
    )
}

/// Caps the bytes of a gRPC request body as received (compressed frames and
/// their headers): `max_request_bytes`. tonic's own limit applies to each
/// message's length and to its decompressed size; this one stops a client
/// from streaming past the request budget. The error is a `Status`, which
/// tonic passes through to the client unchanged.
pub struct CappedBody {
    inner: tonic::body::Body,
    seen: usize,
    max: usize,
}

impl http_body::Body for CappedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.seen += data.len();
            if self.seen > self.max {
                let max = self.max;
                return std::task::Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "request body exceeds the limit of {max} bytes (max_request_bytes)"
                )))));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// The request-body cap as a tower layer for the tonic server.
pub fn cap_request_bytes(
    max: usize,
) -> tower::util::MapRequestLayer<
    impl Fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> + Clone,
> {
    tower::util::MapRequestLayer::new(move |req: http::Request<tonic::body::Body>| {
        // gRPC frames carry a 5-byte header each; allow one.
        req.map(|inner| {
            tonic::body::Body::new(CappedBody {
                inner,
                seen: 0,
                max: max + 5,
            })
        })
    })
}
