//! Where records rest and how they are read back: the [`Storage`] interface
//! the API is written against, and the embedded store that implements it
//! (in-memory Arrow tail + Parquet parts, queried with DataFusion).
//!
//! A ClickHouse backend implements the same trait; the WAL in front of both
//! (see `otelhouse-wal`) is what makes an acknowledged record durable.

pub mod attribute_columns;
pub mod compaction;
pub mod count_runs;
pub mod embedded;
pub mod has_token;
pub mod manifest;
pub mod page_index_cache;
pub mod part;
pub mod parts_table;
pub mod query;
pub mod reads;
pub mod retention;
pub mod rows;
pub mod search;
pub mod sql;
pub mod text_index;

pub use embedded::{EmbeddedStore, NoRoom, StoreOptions, TableStats, stats_on_disk};
pub use query::{
    AggFunc, AggregateQuery, AggregateRow, AttributeKey, Cursor, KeyCounts, Measure, MetricQuery,
    QueryError, SearchQuery, Selected, Sort, SortValue, SqlQuery, SqlResult, TimeRange,
    merge_metric_points,
};
pub use rows::Row;

use async_trait::async_trait;

/// One page of a search, and where the next one starts (`None`: the last).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub rows: Vec<Row>,
    pub next: Option<Cursor>,
}

/// Read side of a store. Rows are keyed by the schema's column names (see
/// `otelhouse_schema`); both backends return the same rows in the same
/// order for the same request.
#[async_trait]
pub trait Storage: Send + Sync {
    /// Logs or spans matching the query, in the query's order, one page.
    async fn search(&self, q: &SearchQuery) -> Result<SearchPage, QueryError>;
    /// Measures per time bucket and group (charts, histograms, facets).
    async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<AggregateRow>, QueryError>;
    /// Attribute keys of a signal with how many of up to `sample_rows`
    /// rows in the range carry them, most common first.
    async fn attribute_keys(
        &self,
        signal: otelhouse_schema::Signal,
        range: TimeRange,
        sample_rows: usize,
    ) -> Result<Vec<AttributeKey>, QueryError>;
    /// Every span of one trace, oldest first.
    async fn trace(&self, trace_id: &str, limit: usize) -> Result<Vec<Row>, QueryError>;
    /// The points of one metric, oldest first, across every metric kind;
    /// each row carries a `MetricType` field.
    async fn metric_points(&self, q: &MetricQuery) -> Result<Vec<Row>, QueryError>;
    /// A user's SELECT over the signal tables.
    async fn sql(&self, q: &SqlQuery) -> Result<SqlResult, QueryError>;
    /// Rows, parts and bytes per table and partition.
    async fn stats(&self) -> Result<Vec<TableStats>, QueryError>;
}
