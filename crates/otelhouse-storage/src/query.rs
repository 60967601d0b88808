//! What a caller may ask a store, independent of the backend. Every request
//! carries an already-parsed search (`otelhouse_search::Query`) whose field
//! names come from the catalogue and whose values each backend binds as
//! parameters; nothing here is SQL text.

use otelhouse_schema::Signal;
use otelhouse_search::{Field, Query};
use serde::Serialize;

/// A time range in unix nanoseconds; open ends are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// A column or attribute to return, under the name the caller asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    pub name: String,
    pub field: Field,
}

/// Logs or spans, one page at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// Logs or traces.
    pub signal: Signal,
    pub filter: Query,
    pub range: TimeRange,
    /// `None`: every column.
    pub columns: Option<Vec<Selected>>,
    pub sort: Sort,
    /// Where the previous page ended.
    pub after: Option<Cursor>,
    pub limit: usize,
}

impl SearchQuery {
    /// The newest `limit` rows of `signal` matching `filter`.
    pub fn newest(signal: Signal, filter: Query, range: TimeRange, limit: usize) -> Self {
        SearchQuery {
            signal,
            filter,
            range,
            columns: None,
            sort: Sort::default(),
            after: None,
            limit,
        }
    }
}

/// The order of a search: one column, then a fixed tie-break (Timestamp
/// descending, ServiceName, the text column, TraceId, SpanId) so that
/// every backend returns rows in the same order and pages never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// A column of the table (not an attribute), by schema name.
    pub column: &'static str,
    pub descending: bool,
}

impl Default for Sort {
    fn default() -> Self {
        Sort {
            column: "Timestamp",
            descending: true,
        }
    }
}

/// A sort column's value as carried in a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum SortValue {
    Int(i64),
    Float(f64),
    Text(String),
}

/// Where a page ended: the last row's sort value, and how many rows with
/// exactly that value were already returned (ties on the sort column are
/// ordered by the tie-break, so skipping them is exact). New rows with
/// other values never shift a later page.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Cursor {
    pub value: SortValue,
    pub skip: usize,
}

/// What to compute per group and time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    /// Exact quantile with linear interpolation between the two nearest
    /// ranks (PostgreSQL's `percentile_cont`, ClickHouse's
    /// `quantileExactInclusive`), computed in the same floating-point
    /// steps by both stores.
    Quantile(f64),
    CountDistinct,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    pub func: AggFunc,
    /// `None` only for `Count` (rows).
    pub field: Option<Field>,
}

/// Counts, sums, quantiles … per time bucket and group.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateQuery {
    pub signal: Signal,
    pub filter: Query,
    pub range: TimeRange,
    pub measures: Vec<Measure>,
    /// Bucket width in nanoseconds, aligned to the unix epoch; `None`: one
    /// value over the whole range.
    pub bucket: Option<i64>,
    /// Group by these fields' values as text (at most 3).
    pub group_by: Vec<Field>,
    /// Only the groups with the most rows, at most this many.
    pub series_limit: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateRow {
    /// Start of the bucket, unix nanoseconds.
    pub bucket: Option<i64>,
    /// One value per `group_by` field (`None`: the field is absent).
    pub group: Vec<Option<String>>,
    /// One value per measure (`None`: no value, e.g. avg of nothing).
    pub values: Vec<Option<f64>>,
}

/// An attribute key seen in the data, with how many sampled rows carry it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributeKey {
    pub map: &'static str,
    pub key: String,
    pub count: u64,
}

/// Attribute keys counted per map, from any number of partial counts.
#[derive(Debug, Default)]
pub struct KeyCounts(std::collections::BTreeMap<(&'static str, String), u64>);

impl KeyCounts {
    pub fn add(&mut self, map: &'static str, key: String, n: u64) {
        *self.0.entry((map, key)).or_default() += n;
    }

    /// Most common first, then by key.
    pub fn into_sorted(self) -> Vec<AttributeKey> {
        let mut out: Vec<AttributeKey> = self
            .0
            .into_iter()
            .map(|((map, key), count)| AttributeKey { map, key, count })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        out
    }
}

/// Points of every metric table, tagged with their kind, as one list in
/// time order (ISO timestamps sort as text), at most `limit`.
pub fn merge_metric_points(
    per_table: Vec<(&'static str, Vec<crate::Row>)>,
    limit: usize,
) -> Vec<crate::Row> {
    let mut rows = Vec::new();
    for (kind, mut part) in per_table {
        for row in &mut part {
            row.insert("MetricType".into(), kind.into());
        }
        rows.append(&mut part);
    }
    // Time, then the whole point: an order both stores agree on.
    rows.sort_by_cached_key(|r| {
        (
            r["TimeUnix"].as_str().map(str::to_owned),
            serde_json::to_string(r).unwrap_or_default(),
        )
    });
    rows.truncate(limit);
    rows
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricQuery {
    pub name: String,
    /// Over the points' Attributes and ResourceAttributes.
    pub filter: Query,
    pub range: TimeRange,
    pub limit: usize,
}

/// A user's SQL statement (SELECT only) over the signal tables.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlQuery {
    pub sql: String,
    /// The signal tables show only rows in this range.
    pub range: TimeRange,
    /// At most this many rows come back; one more means "truncated".
    pub max_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SqlResult {
    pub columns: Vec<String>,
    pub rows: Vec<crate::Row>,
    /// More rows than `max_rows` matched.
    pub truncated: bool,
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
