use std::fmt;

/// Why a payload was refused. `field` is a path into the request in OTLP/JSON
/// naming (`resourceLogs[0].scopeLogs[1].logRecords[7].traceId`), so a client
/// author can find the offending value; it is empty for request-level errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError {
    pub kind: PayloadErrorKind,
    pub field: String,
    pub message: String,
}

/// Broad class of the refusal, used for the `reason` label in /metrics and to
/// pick the HTTP status (413 for sizes, 400 for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadErrorKind {
    /// Body larger than the limit (compressed or decompressed).
    TooLarge,
    /// Not valid protobuf / JSON / gzip.
    Malformed,
    /// Decoded fine but a value is wrong (bad id length, unknown enum, ...).
    Invalid,
    /// A configured limit other than size was passed (depth, attributes, ...).
    LimitExceeded,
}

impl PayloadErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadErrorKind::TooLarge => "too_large",
            PayloadErrorKind::Malformed => "malformed",
            PayloadErrorKind::Invalid => "invalid",
            PayloadErrorKind::LimitExceeded => "limit_exceeded",
        }
    }
}

impl PayloadError {
    pub fn new(
        kind: PayloadErrorKind,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        PayloadError {
            kind,
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(PayloadErrorKind::Malformed, "", message)
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(PayloadErrorKind::Invalid, field, message)
    }
    pub fn limit(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(PayloadErrorKind::LimitExceeded, field, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(PayloadErrorKind::TooLarge, "", message)
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for PayloadError {}
