//! The signal tables: names, columns and Arrow types, shared by every stage.
//!
//! Column names and logical types are ClickStack's (see
//! `shared/design/schema.md`), so one query layer serves the embedded store
//! and ClickHouse. Arrow mapping: `DateTime64(9)` → `Timestamp(ns, "UTC")`,
//! `LowCardinality(String)`/`String` → `Utf8`, `Map(String, String)` →
//! `Map<Utf8, Utf8>`, ClickHouse Nested columns (`Events.Name`, …) → one
//! `List` column per field under the same dotted name. Metric times
//! (`TimeUnix`, `StartTimeUnix`) are nanosecond timestamps like the upstream
//! OTel ClickHouse exporter's `DateTime64(9)`, not ClickStack's `DateTime`.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, MapBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// One of the three OTLP signals, as the OTLP endpoints name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Logs,
    Traces,
    Metrics,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Logs, Signal::Traces, Signal::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|sig| sig.as_str() == s)
    }

    /// The tables a record of this signal may land in.
    pub fn tables(self) -> &'static [Table] {
        match self {
            Signal::Logs => &[Table::Logs],
            Signal::Traces => &[Table::Traces],
            Signal::Metrics => &Table::METRICS,
        }
    }
}

/// One signal table (ClickStack's table names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Logs,
    Traces,
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::Logs,
        Table::Traces,
        Table::Gauge,
        Table::Sum,
        Table::Histogram,
        Table::ExponentialHistogram,
        Table::Summary,
    ];
    pub const METRICS: [Table; 5] = [
        Table::Gauge,
        Table::Sum,
        Table::Histogram,
        Table::ExponentialHistogram,
        Table::Summary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Logs => "otel_logs",
            Table::Traces => "otel_traces",
            Table::Gauge => "otel_metrics_gauge",
            Table::Sum => "otel_metrics_sum",
            Table::Histogram => "otel_metrics_histogram",
            Table::ExponentialHistogram => "otel_metrics_exponential_histogram",
            Table::Summary => "otel_metrics_summary",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The metric kind as users say it (`gauge`, `exponential_histogram`, …);
    /// `None` for logs and traces.
    pub fn metric_type(self) -> Option<&'static str> {
        self.name().strip_prefix("otel_metrics_")
    }

    pub fn signal(self) -> Signal {
        match self {
            Table::Logs => Signal::Logs,
            Table::Traces => Signal::Traces,
            _ => Signal::Metrics,
        }
    }

    /// The column that holds the record's time, used for time-range filters.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Logs | Table::Traces => "Timestamp",
            _ => "TimeUnix",
        }
    }

    /// The columns rows are clustered by within a part, after the time
    /// partition: ClickStack's `ORDER BY` without its time columns. Within a
    /// cluster rows keep their arrival order, which is close to time order;
    /// sorting them by exact time costs about as much as writing the part
    /// (BENCHMARKS.md, part layout) and hour partitions plus page
    /// statistics already prune by time.
    pub fn sort_key(self) -> &'static [&'static str] {
        match self {
            // Not SpanName for spans: spans of one service arrive with
            // names interleaved, and copying short runs costs 6.6 us/row.
            Table::Logs | Table::Traces => &["ServiceName"],
            _ => &["ServiceName", "MetricName"],
        }
    }

    /// The time bucket (nanoseconds) that leads the clustering key, as
    /// `toStartOfFiveMinutes(Timestamp)` leads ClickStack's logs ORDER BY:
    /// rows of a bucket lie together, so Timestamp pages cover a few
    /// minutes each and a short time range skips most of an hour's part.
    pub fn time_bucket(self) -> Option<i64> {
        match self {
            Table::Logs => Some(5 * 60 * 1_000_000_000),
            _ => None,
        }
    }

    /// Stable small id used in on-disk formats (WAL, part names).
    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<Table> {
        Table::ALL.get(id as usize).copied()
    }

    pub fn schema(self) -> SchemaRef {
        SCHEMAS[self as usize].clone()
    }
}

/// Arrow type of a timestamp column (`DateTime64(9)`).
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Arrow type of an attribute map. Taken from the builder so the schema can
/// never disagree with the arrays the converters build.
pub fn map_type() -> DataType {
    static MAP: LazyLock<DataType> = LazyLock::new(|| {
        MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
            .finish()
            .data_type()
            .clone()
    });
    MAP.clone()
}

fn list_of(inner: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", inner, true)))
}

#[derive(Clone, Copy)]
enum Col {
    Ts,
    Str,
    U8,
    U32,
    U64,
    I32,
    F64,
    Bool,
    Map,
    ListTs,
    ListStr,
    ListMap,
    ListU64,
    ListF64,
}

fn col(name: &str, kind: Col) -> Field {
    let dt = match kind {
        Col::Ts => timestamp_type(),
        Col::Str => DataType::Utf8,
        Col::U8 => DataType::UInt8,
        Col::U32 => DataType::UInt32,
        Col::U64 => DataType::UInt64,
        Col::I32 => DataType::Int32,
        Col::F64 => DataType::Float64,
        Col::Bool => DataType::Boolean,
        Col::Map => map_type(),
        Col::ListTs => list_of(timestamp_type()),
        Col::ListStr => list_of(DataType::Utf8),
        Col::ListMap => list_of(map_type()),
        Col::ListU64 => list_of(DataType::UInt64),
        Col::ListF64 => list_of(DataType::Float64),
    };
    Field::new(name, dt, false)
}

fn logs_columns() -> Vec<Field> {
    use Col::*;
    vec![
        col("Timestamp", Ts),
        col("TraceId", Str),
        col("SpanId", Str),
        col("TraceFlags", U8),
        col("SeverityText", Str),
        col("SeverityNumber", U8),
        col("ServiceName", Str),
        col("Body", Str),
        col("ResourceSchemaUrl", Str),
        col("ResourceAttributes", Map),
        col("ScopeSchemaUrl", Str),
        col("ScopeName", Str),
        col("ScopeVersion", Str),
        col("ScopeAttributes", Map),
        col("LogAttributes", Map),
        col("EventName", Str),
    ]
}

fn traces_columns() -> Vec<Field> {
    use Col::*;
    vec![
        col("Timestamp", Ts),
        col("TraceId", Str),
        col("SpanId", Str),
        col("ParentSpanId", Str),
        col("TraceState", Str),
        col("SpanName", Str),
        col("SpanKind", Str),
        col("ServiceName", Str),
        col("ResourceAttributes", Map),
        col("ScopeName", Str),
        col("ScopeVersion", Str),
        col("SpanAttributes", Map),
        col("Duration", U64),
        col("StatusCode", Str),
        col("StatusMessage", Str),
        col("Events.Timestamp", ListTs),
        col("Events.Name", ListStr),
        col("Events.Attributes", ListMap),
        col("Links.TraceId", ListStr),
        col("Links.SpanId", ListStr),
        col("Links.TraceState", ListStr),
        col("Links.Attributes", ListMap),
    ]
}

/// Columns every metric table starts with, in this order.
pub const METRIC_COMMON_COLUMNS: usize = 20;

fn metric_columns(table: Table) -> Vec<Field> {
    use Col::*;
    let mut cols = vec![
        col("ResourceAttributes", Map),
        col("ResourceSchemaUrl", Str),
        col("ScopeName", Str),
        col("ScopeVersion", Str),
        col("ScopeAttributes", Map),
        col("ScopeDroppedAttrCount", U32),
        col("ScopeSchemaUrl", Str),
        col("ServiceName", Str),
        col("MetricName", Str),
        col("MetricDescription", Str),
        col("MetricUnit", Str),
        col("Attributes", Map),
        col("StartTimeUnix", Ts),
        col("TimeUnix", Ts),
        col("Flags", U32),
        col("Exemplars.FilteredAttributes", ListMap),
        col("Exemplars.TimeUnix", ListTs),
        col("Exemplars.Value", ListF64),
        col("Exemplars.SpanId", ListStr),
        col("Exemplars.TraceId", ListStr),
    ];
    debug_assert_eq!(cols.len(), METRIC_COMMON_COLUMNS);
    let specific: Vec<Field> = match table {
        Table::Gauge => vec![col("Value", F64)],
        Table::Sum => vec![
            col("Value", F64),
            col("AggregationTemporality", I32),
            col("IsMonotonic", Bool),
        ],
        Table::Histogram => vec![
            col("Count", U64),
            col("Sum", F64),
            col("BucketCounts", ListU64),
            col("ExplicitBounds", ListF64),
            col("Min", F64),
            col("Max", F64),
            col("AggregationTemporality", I32),
        ],
        Table::ExponentialHistogram => vec![
            col("Count", U64),
            col("Sum", F64),
            col("Scale", I32),
            col("ZeroCount", U64),
            col("PositiveOffset", I32),
            col("PositiveBucketCounts", ListU64),
            col("NegativeOffset", I32),
            col("NegativeBucketCounts", ListU64),
            col("Min", F64),
            col("Max", F64),
            col("AggregationTemporality", I32),
        ],
        Table::Summary => vec![
            col("Count", U64),
            col("Sum", F64),
            col("ValueAtQuantiles.Quantile", ListF64),
            col("ValueAtQuantiles.Value", ListF64),
        ],
        Table::Logs | Table::Traces => unreachable!("not a metric table"),
    };
    cols.extend(specific);
    cols
}

static SCHEMAS: LazyLock<Vec<SchemaRef>> = LazyLock::new(|| {
    Table::ALL
        .into_iter()
        .map(|t| {
            let cols = match t {
                Table::Logs => logs_columns(),
                Table::Traces => traces_columns(),
                _ => metric_columns(t),
            };
            Arc::new(Schema::new(cols))
        })
        .collect()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_round_trip() {
        for t in Table::ALL {
            assert_eq!(Table::from_id(t.id()), Some(t));
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
        assert_eq!(
            Table::ExponentialHistogram.metric_type(),
            Some("exponential_histogram")
        );
        assert_eq!(Table::Logs.metric_type(), None);
    }

    #[test]
    fn schemas_have_time_columns() {
        for t in Table::ALL {
            let schema = t.schema();
            let f = schema.field_with_name(t.time_column()).unwrap();
            assert_eq!(f.data_type(), &timestamp_type());
        }
    }
}
