//! The ClickHouse backend: ClickStack's tables (`ddl`), ClickHouse's HTTP
//! interface with bound parameters (`client`), searches compiled to
//! ClickHouse SQL (`compile`), the read side of `otelhouse_storage::Storage`
//! (`reads`) and Arrow batches shipped as ArrowStream inserts (`insert`).

pub mod client;
pub mod compile;
pub mod ddl;
pub mod insert;
pub mod reads;
#[cfg(feature = "test-support")]
pub mod testing;

pub use client::{ClickHouseError, Client, Connection, Statement};
pub use reads::{ClickHouseReader, ReadLimits};
