use otelhouse_schema::Signal;

/// A time range in unix nanoseconds; open ends are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// Logs or traces.
    pub signal: Signal,
    /// Case-insensitive substring of Body (logs) or SpanName (spans).
    pub text: Option<String>,
    pub range: TimeRange,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricQuery {
    pub name: String,
    pub range: TimeRange,
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request itself is wrong (the user can fix it).
    #[error("{0}")]
    BadRequest(String),
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The query needs more memory than the query budget allows.
    #[error("{0}")]
    TooBig(String),
    #[error("query failed: {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        if matches!(
            e.find_root(),
            datafusion::error::DataFusionError::ResourcesExhausted(_)
        ) {
            return QueryError::TooBig(e.find_root().to_string());
        }
        QueryError::Internal(e.to_string())
    }
}
