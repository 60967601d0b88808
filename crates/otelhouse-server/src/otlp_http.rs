//! OTLP/HTTP receiver: `POST /v1/logs|traces|metrics`, protobuf or JSON,
//! optionally gzip. Errors are `google.rpc.Status` in the request's encoding,
//! as the OTLP spec asks, with our `field` path added in JSON.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use otelhouse_auth::{KeyCache, SecretKind, secret_from_header};
use otelhouse_otlp::error::PayloadErrorKind;
use otelhouse_otlp::gzip::gunzip_limited;
use otelhouse_otlp::{Encoding, OtlpRequest, PayloadError};
use otelhouse_schema::Signal;
use prost::Message;
use serde_json::json;

use crate::ingest::{Accepted, Ingest, IngestError, RETRY_AFTER};

#[derive(Clone)]
pub struct OtlpHttpState {
    pub ingest: Arc<Ingest>,
    pub keys: KeyCache,
}

pub fn router(state: OtlpHttpState) -> Router {
    Router::new()
        .route("/v1/logs", post(|s, r| export(s, r, Signal::Logs)))
        .route("/v1/traces", post(|s, r| export(s, r, Signal::Traces)))
        .route("/v1/metrics", post(|s, r| export(s, r, Signal::Metrics)))
        .with_state(state)
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses. Declared
/// here because opentelemetry-proto does not ship the googleapis types.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

fn encoding_of(headers: &HeaderMap) -> Option<Encoding> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = ct.split(';').next()?.trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
        "application/json" => Some(Encoding::Json),
        _ => None,
    }
}

/// An error response in the request's encoding. `grpc_code` follows the
/// gRPC code the same failure gets on the gRPC receiver.
fn error(
    status: StatusCode,
    grpc_code: i32,
    encoding: Encoding,
    message: String,
    field: &str,
) -> Response {
    let mut resp = match encoding {
        Encoding::Json => {
            let mut body = json!({"code": grpc_code, "message": message, "error": message});
            if !field.is_empty() {
                body["field"] = field.into();
            }
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Encoding::Protobuf => {
            let body = RpcStatus {
                code: grpc_code,
                message,
            }
            .encode_to_vec();
            (
                status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                body,
            )
                .into_response()
        }
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER.as_secs()),
        );
    }
    resp
}

fn payload_error(e: &PayloadError, encoding: Encoding) -> Response {
    let status = match e.kind {
        PayloadErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    // gRPC INVALID_ARGUMENT (3) / RESOURCE_EXHAUSTED (8).
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        8
    } else {
        3
    };
    error(status, code, encoding, e.to_string(), &e.field)
}

fn success(signal: Signal, encoding: Encoding, accepted: &Accepted) -> Response {
    let rejected = accepted.rejected as i64;
    let message = accepted.message.clone();
    match encoding {
        Encoding::Json => {
            let body = if rejected > 0 || !message.is_empty() {
                let field = match signal {
                    Signal::Logs => "rejectedLogRecords",
                    Signal::Traces => "rejectedSpans",
                    Signal::Metrics => "rejectedDataPoints",
                };
                // int64 fields are strings in OTLP/JSON.
                json!({"partialSuccess": {field: rejected.to_string(), "errorMessage": message}})
            } else {
                json!({})
            };
            (
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            accepted.to_protobuf(signal),
        )
            .into_response(),
    }
}

async fn export(State(state): State<OtlpHttpState>, request: Request, signal: Signal) -> Response {
    let (parts, body) = request.into_parts();
    let telemetry = &state.ingest.telemetry;
    let Some(encoding) = encoding_of(&parts.headers) else {
        telemetry.rejected(signal, "unsupported_media_type", 0);
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            Encoding::Json,
            "content-type must be application/x-protobuf or application/json".into(),
            "",
        );
    };
    let authorised = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            state
                .keys
                .check(SecretKind::IngestionKey, secret_from_header(v))
        });
    if authorised.is_none() {
        telemetry.rejected(signal, "unauthenticated", 0);
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            16,
            encoding,
            "missing or invalid ingestion key in the authorization header".into(),
            "",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    let gzip = match parts
        .headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e == "identity" || e.is_empty() => false,
        Some(e) if e == "gzip" => true,
        Some(e) => {
            telemetry.rejected(signal, "unsupported_encoding", 0);
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                3,
                encoding,
                format!("content-encoding {e:?} is not supported (use gzip or none)"),
                "",
            );
        }
    };
    let _slot = match state.ingest.admit(signal) {
        Ok(slot) => slot,
        Err(e) => return ingest_error(&e, encoding),
    };
    let limits = &state.ingest.limits;
    let body = match read_body(body, limits.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => {
            telemetry.rejected(signal, e.kind.as_str(), 0);
            return payload_error(&e, encoding);
        }
    };
    let decoded = if gzip {
        gunzip_limited(&body, limits.max_decompressed_bytes).map(Into::into)
    } else {
        check_plain_size(body, limits.max_decompressed_bytes)
    };
    let bytes = match decoded {
        Ok(b) => b,
        Err(e) => {
            telemetry.rejected(signal, e.kind.as_str(), 0);
            return payload_error(&e, encoding);
        }
    };
    let result = match encoding {
        Encoding::Protobuf => state.ingest.accept_protobuf(signal, bytes).await,
        Encoding::Json => match OtlpRequest::decode(signal, encoding, &bytes) {
            Ok(request) => state.ingest.accept(request, None).await,
            Err(e) => {
                telemetry.rejected(signal, e.kind.as_str(), 0);
                return payload_error(&e, encoding);
            }
        },
    };
    match result {
        Ok(accepted) => success(signal, encoding, &accepted),
        Err(e) => ingest_error(&e, encoding),
    }
}

fn check_plain_size(body: bytes::Bytes, max: usize) -> Result<bytes::Bytes, PayloadError> {
    if body.len() > max {
        return Err(PayloadError::too_large(format!(
            "body of {} bytes exceeds the limit of {max} bytes (max_decompressed_bytes)",
            body.len()
        )));
    }
    Ok(body)
}

async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, PayloadError> {
    to_bytes(body, max).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            PayloadError::too_large(format!(
                "request body exceeds the limit of {max} bytes (max_request_bytes)"
            ))
        } else {
            PayloadError::malformed(format!("could not read the request body: {e}"))
        }
    })
}

fn ingest_error(e: &IngestError, encoding: Encoding) -> Response {
    match e {
        IngestError::Payload(p) => payload_error(p, encoding),
        IngestError::Unavailable(m) => {
            error(StatusCode::SERVICE_UNAVAILABLE, 14, encoding, m.clone(), "")
        }
        IngestError::Internal(m) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            13,
            encoding,
            m.clone(),
            "",
        ),
    }
}
