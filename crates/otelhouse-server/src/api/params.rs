//! Query-string parameters of the read API, each checked with an error
//! that names it.

use std::collections::HashMap;

use otelhouse_schema::Signal;
use otelhouse_storage::TimeRange;

use super::{ApiError, bad};

/// Longest value of any one parameter (search text has its own, smaller
/// bound in the parser).
const MAX_PARAM_BYTES: usize = 16 * 1024;

pub struct Params(pub HashMap<String, String>);

/// A time bound: RFC 3339 or unix nanoseconds.
pub fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(n) = value.parse::<i64>() {
        return Ok(n);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| bad(format!("`{name}`: expected RFC 3339 (2026-01-02T03:04:05Z) or unix nanoseconds, got {value:?}")))
}

impl Params {
    /// A non-empty value.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(name).map(String::as_str) {
            Some(v) if v.len() > MAX_PARAM_BYTES => Err(bad(format!(
                "`{name}` is longer than {MAX_PARAM_BYTES} bytes"
            ))),
            Some("") | None => Ok(None),
            Some(v) => Ok(Some(v)),
        }
    }

    pub fn text(&self, name: &str) -> Result<String, ApiError> {
        Ok(self.get(name)?.unwrap_or_default().to_string())
    }

    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)?.map(|v| parse_time(name, v)).transpose()
    }

    pub fn number(&self, name: &str, default: usize) -> Result<usize, ApiError> {
        match self.get(name)? {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(format!("`{name}` must be a whole number, got {v:?}"))),
        }
    }

    /// A comma-separated list.
    pub fn list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        Ok(self
            .get(name)?
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn signal(&self, default: Option<Signal>) -> Result<Option<Signal>, ApiError> {
        match self.get("signal")? {
            None => Ok(default),
            Some(s) => Signal::parse(s).map(Some).ok_or_else(|| {
                bad(format!(
                    "`signal` must be logs, traces or metrics, got {s:?}"
                ))
            }),
        }
    }

    /// `from`/`to`, defaulted and bounded by the query service.
    pub fn range(&self, query: &otelhouse_query::QueryService) -> Result<TimeRange, ApiError> {
        Ok(query.range(self.time("from")?, self.time("to")?)?)
    }
}
