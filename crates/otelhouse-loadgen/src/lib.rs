//! Load generator for otelhouse: deterministic generation of realistic OTLP log and
//! span batches ([`Generator`]), replay into a running server over OTLP/gRPC and
//! OTLP/HTTP ([`send`]), and a decode-only baseline ([`decode_baseline`]).

pub mod dataset;
pub mod r#gen;
pub mod procstat;
pub mod send;
pub mod signal;

pub use r#gen::Generator;
pub use signal::{Payload, Signal, Stage, build_payloads, decode_baseline};
