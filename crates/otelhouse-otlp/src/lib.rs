//! OTLP source decoding: bytes off the wire → validated OTLP requests → Arrow rows.
//!
//! Every payload passes three gates before anything is written: size limits
//! (compressed and decompressed), decoding (protobuf or OTLP/JSON), and
//! validation (ids, nesting depth, attribute counts and lengths, record
//! counts). Only then is it converted to the schema's columns.

pub mod convert;
pub mod error;
pub mod fast;
pub mod gzip;
pub mod json;
pub mod limits;
mod request;
pub mod validate;
pub mod window;
pub use request::{Encoding, OtlpRequest};

pub use error::PayloadError;
pub use limits::Limits;
pub use otelhouse_schema::Signal;

pub use opentelemetry_proto::tonic as proto;
pub use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
pub use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
