//! The ClickHouse backend: ClickStack's tables (`ddl`), ClickHouse's HTTP
//! interface with bound parameters (`client`), searches compiled to
//! ClickHouse SQL (`compile`), the read side of `otelhouse_storage::Storage`
//! (`reads`), Arrow batches as ArrowStream inserts (`insert`), the tables
//! and their retention at start (`setup`), and the WAL shipped to
//! ClickHouse exactly once (`ship`).

pub mod client;
pub mod compile;
pub mod ddl;
pub mod insert;
pub mod native;
pub mod provision;
pub mod reads;
pub mod setup;
pub mod ship;
pub mod testing;

pub use client::{ClickHouseError, Client, Connection, Statement};
pub use reads::{ClickHouseReader, ReadLimits};
pub use ship::{ShipOptions, Shipper};
