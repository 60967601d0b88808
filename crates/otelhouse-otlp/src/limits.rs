use serde::{Deserialize, Serialize};

/// Bounds on one OTLP request. Every field is configurable (`[limits]` in the
/// config file); defaults follow the OpenTelemetry collector's where it has one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body as received (possibly gzip-compressed).
    pub max_request_bytes: usize,
    /// Largest body after decompression: a gzip bomb stops here.
    pub max_decompressed_bytes: usize,
    /// Deepest AnyValue nesting (arrays / kvlists inside each other).
    pub max_value_depth: usize,
    /// Most attributes on one resource, scope, record, event, link or point.
    pub max_attributes: usize,
    /// Longest attribute key, in bytes.
    pub max_key_bytes: usize,
    /// Longest string or bytes value (attributes and bodies), in bytes.
    pub max_value_bytes: usize,
    /// Most records (log records + spans + data points) in one request.
    pub max_records: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 8 << 20,
            max_decompressed_bytes: 32 << 20,
            max_value_depth: 16,
            max_attributes: 256,
            max_key_bytes: 256,
            max_value_bytes: 64 << 10,
            max_records: 100_000,
        }
    }
}
