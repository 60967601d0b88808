//! Where records rest and how they are read back: the [`Storage`] interface
//! the API is written against, and the embedded store that implements it
//! (in-memory Arrow tail + Parquet parts, queried with DataFusion).
//!
//! A ClickHouse backend implements the same trait; the WAL in front of both
//! (see `otelhouse-wal`) is what makes an acknowledged record durable.

pub mod compaction;
pub mod embedded;
pub mod manifest;
pub mod part;
pub mod query;
pub mod retention;
pub mod rows;
pub mod search;
pub mod sql;

pub use embedded::{EmbeddedStore, StoreOptions, TableStats, stats_on_disk};
pub use query::{MetricQuery, QueryError, SearchQuery, TimeRange};
pub use rows::Row;

use async_trait::async_trait;

/// Read side of a store. Every method returns rows keyed by the schema's
/// column names (see `otelhouse_schema`).
#[async_trait]
pub trait Storage: Send + Sync {
    /// Logs or spans matching the query, newest first.
    async fn search(&self, q: &SearchQuery) -> Result<Vec<Row>, QueryError>;
    /// Every span of one trace, oldest first.
    async fn trace(&self, trace_id: &str, limit: usize) -> Result<Vec<Row>, QueryError>;
    /// The points of one metric, oldest first, across every metric kind;
    /// each row carries a `MetricType` field.
    async fn metric_points(&self, q: &MetricQuery) -> Result<Vec<Row>, QueryError>;
    /// Rows, parts and bytes per table and partition.
    async fn stats(&self) -> Result<Vec<TableStats>, QueryError>;
}
