//! OTLP/gRPC receiver (tonic). The three `Export` methods are served with a
//! pass-through codec: the request message arrives as protobuf bytes, so the
//! shared [`Ingest`] pipeline can take its direct decoder for logs and keep
//! the received bytes for the WAL (no prost round trip). Decompression
//! (gzip) and the per-message size limit are tonic's: its
//! `max_decoding_message_size` caps a message both as received and after
//! decompression; [`CappedBody`] caps the whole request body.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use otelhouse_auth::{KeyCache, SecretKind, secret_from_header};
use otelhouse_otlp::error::PayloadErrorKind;
use otelhouse_schema::Signal;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::metadata::MetadataValue;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::ingest::{Ingest, IngestError, RETRY_AFTER};

#[derive(Clone)]
pub struct OtlpGrpc {
    pub ingest: Arc<Ingest>,
    pub keys: KeyCache,
    pub max_message_bytes: usize,
}

impl OtlpGrpc {
    async fn export(
        &self,
        signal: Signal,
        request: Request<Bytes>,
    ) -> Result<Response<Vec<u8>>, Status> {
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
        let accepted = self
            .ingest
            .accept_protobuf(signal, request.into_inner())
            .await
            .map_err(to_status)?;
        Ok(Response::new(accepted.to_protobuf(signal)))
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

/// Passes message bytes through: requests are decoded by the ingest
/// pipeline, responses are encoded by [`Accepted::to_protobuf`](crate::ingest::Accepted::to_protobuf).
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Which OTLP service a [`SignalService`] is.
pub trait OtlpService: Send + Sync + 'static {
    const NAME: &'static str;
    const SIGNAL: Signal;
}

pub struct LogsService;
pub struct TraceService;
pub struct MetricsService;

impl OtlpService for LogsService {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: Signal = Signal::Logs;
}
impl OtlpService for TraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;
}
impl OtlpService for MetricsService {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;
}

/// One OTLP gRPC service (its `Export` method) on the raw codec.
pub struct SignalService<S> {
    inner: OtlpGrpc,
    _service: PhantomData<S>,
}

impl<S> Clone for SignalService<S> {
    fn clone(&self) -> Self {
        SignalService {
            inner: self.inner.clone(),
            _service: PhantomData,
        }
    }
}

impl<S: OtlpService> NamedService for SignalService<S> {
    const NAME: &'static str = S::NAME;
}

struct Export<S>(OtlpGrpc, PhantomData<S>);

impl<S: OtlpService> UnaryService<Bytes> for Export<S> {
    type Response = Vec<u8>;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Vec<u8>>, Status>> + Send>>;
    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.export(S::SIGNAL, request).await })
    }
}

impl<S: OtlpService> tower::Service<http::Request<tonic::body::Body>> for SignalService<S> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let svc = self.inner.clone();
        Box::pin(async move {
            let method = req
                .uri()
                .path()
                .strip_prefix('/')
                .and_then(|p| p.strip_prefix(S::NAME));
            if method != Some("/Export") {
                return Ok(
                    Status::unimplemented("OTLP services have one method, Export").into_http(),
                );
            }
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let max = svc.max_message_bytes;
            let mut grpc = Grpc::new(RawCodec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(Export::<S>(svc, PhantomData), req).await)
        })
    }
}

/// The three OTLP services on one tonic router.
pub fn routes(svc: OtlpGrpc) -> tonic::service::Routes {
    fn one<S: OtlpService>(inner: &OtlpGrpc) -> SignalService<S> {
        SignalService {
            inner: inner.clone(),
            _service: PhantomData,
        }
    }
    tonic::service::Routes::new(one::<LogsService>(&svc))
        .add_service(one::<TraceService>(&svc))
        .add_service(one::<MetricsService>(&svc))
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
