//! ClickStack's tables (shared/design/schema.md) as DDL for a given
//! ClickHouse version: text indexes from 26.2, tokenbf/bloom filters
//! before; one server or a cluster (replicated local tables plus
//! Distributed tables under ClickStack's names).
//!
//! Column names and types follow `otelhouse_schema` (the embedded store's
//! schema) so both stores hold the same rows; metric TimeUnix and
//! StartTimeUnix are DateTime64(9), as the upstream OpenTelemetry exporter
//! writes them (ClickStack's DateTime loses sub-second precision).

use std::time::Duration;

use arrow::datatypes::DataType;
use otelhouse_schema::Table;

use crate::compile::ident;

/// The server version, from `SELECT version()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let mut it = text.trim().split('.');
        Some(Version(it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    /// `text` skip indexes (full-text and array) are GA from 26.2.
    pub fn has_text_index(self) -> bool {
        self >= Version(26, 2)
    }
}

/// Where the tables go.
#[derive(Debug, Clone)]
pub struct Layout {
    pub database: String,
    pub version: Version,
    /// `Some(name)`: ON CLUSTER, ReplicatedMergeTree `<table>_local` tables
    /// and Distributed tables under ClickStack's names.
    pub cluster: Option<String>,
}

/// Columns stored as LowCardinality(String), per ClickStack's DDL.
fn low_cardinality(table: Table, column: &str) -> bool {
    match table {
        Table::Logs => matches!(
            column,
            "SeverityText"
                | "ServiceName"
                | "ResourceSchemaUrl"
                | "ScopeSchemaUrl"
                | "ScopeVersion"
        ),
        Table::Traces => matches!(
            column,
            "SpanName" | "SpanKind" | "ServiceName" | "StatusCode" | "Events.Name"
        ),
        _ => matches!(column, "ServiceName" | "MetricName"),
    }
}

fn ch_type(table: Table, column: &str, dt: &DataType) -> String {
    let scalar = |dt: &DataType| match dt {
        DataType::Timestamp(..) => "DateTime64(9)".to_string(),
        DataType::Utf8 if low_cardinality(table, column) => "LowCardinality(String)".into(),
        DataType::Utf8 => "String".into(),
        DataType::UInt8 => "UInt8".into(),
        DataType::UInt32 => "UInt32".into(),
        DataType::UInt64 => "UInt64".into(),
        DataType::Int32 => "Int32".into(),
        DataType::Float64 => "Float64".into(),
        DataType::Boolean => "Bool".into(),
        DataType::Map(..) => "Map(LowCardinality(String), String)".into(),
        other => unreachable!("no ClickHouse type for {other}"),
    };
    match dt {
        DataType::List(item) => format!("Array({})", scalar(item.data_type())),
        dt => scalar(dt),
    }
}

fn codec(dt: &DataType) -> &'static str {
    match dt {
        DataType::Timestamp(..) => "CODEC(Delta(8), ZSTD(1))",
        _ => "CODEC(ZSTD(1))",
    }
}

/// The attribute maps of a table and their `*Items` ALIAS column names.
fn maps(table: Table) -> Vec<(&'static str, String)> {
    table
        .schema()
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Map(..)))
        .map(|f| {
            let name: &'static str = match f.name().as_str() {
                "ResourceAttributes" => "ResourceAttributes",
                "ScopeAttributes" => "ScopeAttributes",
                "LogAttributes" => "LogAttributes",
                "SpanAttributes" => "SpanAttributes",
                _ => "Attributes",
            };
            let items = format!("{}Items", name.trim_end_matches('s'));
            (name, items)
        })
        .collect()
}

/// The TTL in seconds a retention becomes (at least an hour: partitions
/// are days, and a shorter TTL would only churn).
pub fn ttl_seconds_for(retention: Duration) -> u64 {
    retention.as_secs().max(3600)
}

fn retention_ttl(table: Table, retention: Duration) -> String {
    let column = ident(table.time_column());
    format!(
        "TTL toDateTime({column}) + toIntervalSecond({})",
        ttl_seconds_for(retention)
    )
}

/// `CREATE TABLE IF NOT EXISTS` for one signal table.
pub fn create_table(layout: &Layout, table: Table, retention: Duration) -> Vec<String> {
    let schema = table.schema();
    let mut cols: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "    {} {} {}",
                ident(f.name()),
                ch_type(table, f.name(), f.data_type()),
                codec(f.data_type())
            )
        })
        .collect();
    for (map, items) in maps(table) {
        cols.push(format!(
            "    {} Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), {}::Array(Tuple(String, String)))",
            ident(&items),
            ident(map)
        ));
    }
    let text = layout.version.has_text_index();
    let mut indexes = Vec::new();
    let index =
        |name: &str, expr: String, kind: &str| format!("    INDEX {name} {expr} TYPE {kind}");
    let array = if text {
        "text(tokenizer = 'array')"
    } else {
        "bloom_filter(0.01) GRANULARITY 1"
    };
    match table {
        Table::Logs => {
            for k in [
                "cluster",
                "container",
                "deployment",
                "namespace",
                "node",
                "pod",
            ] {
                cols.push(format!(
                    "    `__hdx_materialized_k8s.{k}.name` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.{k}.name'] CODEC(ZSTD(1))"
                ));
            }
            cols.push("    `__hdx_materialized_k8s.pod.uid` LowCardinality(String) MATERIALIZED ResourceAttributes['k8s.pod.uid'] CODEC(ZSTD(1))".into());
            cols.push("    `__hdx_materialized_deployment.environment.name` LowCardinality(String) MATERIALIZED ResourceAttributes['deployment.environment.name'] CODEC(ZSTD(1))".into());
            indexes.push(index(
                "idx_body",
                "lower(`Body`)".into(),
                if text {
                    "text(tokenizer = 'splitByNonAlpha')"
                } else {
                    "tokenbf_v1(32768, 3, 0) GRANULARITY 8"
                },
            ));
            indexes.push(index(
                "idx_trace_id",
                "`TraceId`".into(),
                if text {
                    "text(tokenizer = 'array')"
                } else {
                    "bloom_filter(0.001) GRANULARITY 1"
                },
            ));
        }
        Table::Traces => {
            cols.push("    `SampleRate` UInt64 MATERIALIZED greatest(toUInt64OrZero(SpanAttributes['SampleRate']), 1) CODEC(ZSTD(1))".into());
            cols.push("    `__hdx_materialized_rum.sessionId` String MATERIALIZED ResourceAttributes['rum.sessionId'] CODEC(ZSTD(1))".into());
            indexes.push(index(
                "idx_trace_id",
                "`TraceId`".into(),
                "bloom_filter(0.001) GRANULARITY 1",
            ));
            indexes.push(index(
                "idx_duration",
                "`Duration`".into(),
                "minmax GRANULARITY 1",
            ));
            indexes.push(index(
                "idx_lower_span_name",
                "lower(`SpanName`)".into(),
                "tokenbf_v1(32768, 3, 0) GRANULARITY 8",
            ));
        }
        _ => {
            indexes.push(index(
                "idx_time",
                "`TimeUnix`".into(),
                "minmax GRANULARITY 1",
            ));
        }
    }
    for (map, items) in maps(table) {
        let short = map.trim_end_matches("Attributes").to_lowercase();
        let short = if short.is_empty() {
            "attr".into()
        } else {
            short
        };
        indexes.push(index(
            &format!("idx_{short}_attr_key"),
            format!("mapKeys({})", ident(map)),
            array,
        ));
        if text {
            indexes.push(index(
                &format!("idx_{short}_attr_items"),
                ident(&items),
                array,
            ));
        } else {
            indexes.push(index(
                &format!("idx_{short}_attr_value"),
                format!("mapValues({})", ident(map)),
                array,
            ));
        }
    }
    let (partition, order) = match table {
        Table::Logs => (
            "toDate(`Timestamp`)",
            "(toStartOfFiveMinutes(`Timestamp`), `ServiceName`, `Timestamp`)",
        ),
        Table::Traces => (
            "toDate(`Timestamp`)",
            "(`ServiceName`, `SpanName`, toDateTime(`Timestamp`))",
        ),
        _ => (
            "toDate(`TimeUnix`)",
            "(`ServiceName`, `MetricName`, toStartOfHour(`TimeUnix`), cityHash64(`Attributes`), `TimeUnix`)",
        ),
    };
    let db = ident(&layout.database);
    let name = table.name();
    let on_cluster = on_cluster(layout.cluster.as_deref());
    let local = storage_table(layout, table);
    let engine = match &layout.cluster {
        None => "MergeTree".to_string(),
        Some(_) => format!(
            "ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{}/{local}', '{{replica}}')",
            layout.database
        ),
    };
    // A retried insert carries the same insert_deduplication_token; plain
    // MergeTree honours it only with a deduplication window (replicated
    // tables always do).
    let dedup = if layout.cluster.is_none() {
        ", non_replicated_deduplication_window = 1000"
    } else {
        ""
    };
    let body = cols
        .into_iter()
        .chain(indexes)
        .collect::<Vec<_>>()
        .join(",\n");
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.{}{on_cluster}\n(\n{body}\n)\nENGINE = {engine}\nPARTITION BY {partition}\nORDER BY {order}\n{}\nSETTINGS index_granularity = 8192, ttl_only_drop_parts = 1{dedup}",
        ident(&local),
        retention_ttl(table, retention),
    )];
    if let Some(cluster) = &layout.cluster {
        // Inserts go to the Distributed table, which routes each row to a
        // shard by `sharding_key`; reads fan out to every shard.
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{}{on_cluster} AS {db}.{}\nENGINE = Distributed({}, {}, {}, {})",
            ident(name),
            ident(&local),
            ident(cluster),
            ident(&layout.database),
            ident(&local),
            sharding_key(table),
        ));
    }
    out
}

/// How the Distributed table picks a row's shard. Deterministic (not
/// ClickHouse's usual `rand()`): a retried batch must reach the same shards
/// in the same blocks, or its deduplication token would not match there.
/// Spans by trace id, so a whole trace lives on one shard; the others by
/// time and service, which spreads them evenly.
pub fn sharding_key(table: Table) -> String {
    match table {
        Table::Traces => "cityHash64(TraceId)".into(),
        t => format!("cityHash64({}, ServiceName)", ident(t.time_column())),
    }
}

/// ` ON CLUSTER `name`` on a cluster, nothing otherwise.
pub fn on_cluster(cluster: Option<&str>) -> String {
    cluster
        .map(|c| format!(" ON CLUSTER {}", ident(c)))
        .unwrap_or_default()
}

/// The table a signal's rows and TTL live in: `<name>_local` on a cluster
/// (under the Distributed table of the signal's name), else the table itself.
pub fn storage_table(layout: &Layout, table: Table) -> String {
    match layout.cluster {
        None => table.name().to_string(),
        Some(_) => format!("{}_local", table.name()),
    }
}

/// `ALTER TABLE … MODIFY TTL` for a changed retention.
pub fn modify_ttl(layout: &Layout, table: Table, retention: Duration) -> String {
    let local = storage_table(layout, table);
    let on_cluster = on_cluster(layout.cluster.as_deref());
    format!(
        "ALTER TABLE {}.{}{on_cluster} MODIFY {}",
        ident(&layout.database),
        ident(&local),
        retention_ttl(table, retention)
    )
}

/// Every statement to create the database and all tables.
pub fn create_all(layout: &Layout, retention: impl Fn(Table) -> Duration) -> Vec<String> {
    let on_cluster = on_cluster(layout.cluster.as_deref());
    let mut out = vec![format!(
        "CREATE DATABASE IF NOT EXISTS {}{on_cluster}",
        ident(&layout.database)
    )];
    for t in Table::ALL {
        out.extend(create_table(layout, t, retention(t)));
    }
    out
}

/// A database name a user configured: plain identifier characters only
/// (it is quoted too, but a strict name keeps grants readable).
pub fn check_database_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(format!(
            "ClickHouse database name {name:?}: use letters, digits and `_` (not first), at most 64"
        ))
    }
}
