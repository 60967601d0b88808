//! OTLP/JSON decoding into the prost request types.
//!
//! Hand-written rather than relying on `opentelemetry-proto`'s serde support,
//! which silently drops malformed values (a bad `asInt`, a metric without
//! data, an id of the wrong length, an unknown enum name) and reports no field
//! paths. The body is parsed into a [`serde_json::Value`] and walked field by
//! field following the OTLP/JSON rules: lowerCamelCase or original snake_case
//! names, unknown fields ignored, `null` meaning absent, 64-bit integers as
//! numbers or decimal strings, hex trace/span ids, base64 `bytesValue`. Every
//! refusal names the offending field, e.g.
//! `resourceLogs[0].scopeLogs[1].logRecords[7].traceId`.
//!
//! Nesting depth is bounded by serde_json's recursion limit (128); all other
//! limits are checked afterwards by [`crate::validate`].

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, DataPointFlags, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use serde_json::{Map, Value};

use crate::error::PayloadError;

type Result<T> = std::result::Result<T, PayloadError>;

/// Decodes an OTLP/JSON logs export request.
pub fn decode_logs(body: &[u8]) -> std::result::Result<ExportLogsServiceRequest, PayloadError> {
    decode(body, |o| {
        Ok(ExportLogsServiceRequest {
            resource_logs: o.list("resourceLogs", resource_logs)?,
        })
    })
}

/// Decodes an OTLP/JSON trace export request.
pub fn decode_traces(body: &[u8]) -> std::result::Result<ExportTraceServiceRequest, PayloadError> {
    decode(body, |o| {
        Ok(ExportTraceServiceRequest {
            resource_spans: o.list("resourceSpans", resource_spans)?,
        })
    })
}

/// Decodes an OTLP/JSON metrics export request.
pub fn decode_metrics(
    body: &[u8],
) -> std::result::Result<ExportMetricsServiceRequest, PayloadError> {
    decode(body, |o| {
        Ok(ExportMetricsServiceRequest {
            resource_metrics: o.list("resourceMetrics", resource_metrics)?,
        })
    })
}

fn decode<T>(body: &[u8], build: impl FnOnce(&Obj) -> Result<T>) -> Result<T> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| PayloadError::malformed(format!("invalid JSON: {e}")))?;
    build(&Obj::new(&value, &Path::Root)?)
}

// ---------------------------------------------------------------------------
// Walking machinery

/// Where a value sits in the request; rendered only when an error is reported.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'static str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> PayloadError {
    PayloadError::invalid(path.to_string(), message)
}

fn expected(path: &Path, what: &str, found_value: &Value) -> PayloadError {
    invalid(
        path,
        format!("expected {what}, found {}", found(found_value)),
    )
}

/// A short rendering of an offending value for error messages.
fn found(value: &Value) -> String {
    const MAX_CHARS: usize = 40;
    match value {
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        _ => {
            let text = value.to_string();
            match text.char_indices().nth(MAX_CHARS) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            }
        }
    }
}

/// One member of a protobuf `oneof`: its JSON name and how to parse it.
type Variant<T> = (&'static str, fn(&Value, &Path) -> Result<T>);

/// A JSON object standing for a protobuf message, with its path.
struct Obj<'v, 'p> {
    map: &'v Map<String, Value>,
    path: &'p Path<'p>,
}

impl<'v, 'p> Obj<'v, 'p> {
    fn new(value: &'v Value, path: &'p Path<'p>) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Obj { map, path }),
            _ => Err(expected(path, "an object", value)),
        }
    }

    fn invalid(&self, message: impl Into<String>) -> PayloadError {
        invalid(self.path, message)
    }

    /// The non-null value of field `name` (lowerCamelCase), also looked up
    /// under its snake_case proto name, with the field's path.
    fn get(&self, name: &'static str) -> Option<(&'v Value, Path<'p>)> {
        let value = match self.map.get(name) {
            Some(value) if !value.is_null() => value,
            _ if name.contains(|c: char| c.is_ascii_uppercase()) => {
                self.map
                    .iter()
                    .find(|(key, _)| is_snake_case_of(key, name))?
                    .1
            }
            _ => return None,
        };
        (!value.is_null()).then_some((value, Path::Field(self.path, name)))
    }

    fn opt<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&Value, &Path) -> Result<T>,
    ) -> Result<Option<T>> {
        self.get(name)
            .map(|(value, path)| parse(value, &path))
            .transpose()
    }

    /// Field `name`, or the protobuf default when absent.
    fn with<T: Default>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&Value, &Path) -> Result<T>,
    ) -> Result<T> {
        self.opt(name, parse).map(Option::unwrap_or_default)
    }

    /// Repeated field `name`; absent means empty.
    fn list<T>(
        &self,
        name: &'static str,
        parse: impl FnMut(&Value, &Path) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.with(name, |value, path| list(value, path, parse))
    }

    /// Repeated field `name` that must be present (it may be empty).
    fn required_list<T>(
        &self,
        name: &'static str,
        parse: impl FnMut(&Value, &Path) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self.get(name) {
            Some((value, path)) => list(value, &path, parse),
            None => Err(invalid(&Path::Field(self.path, name), "missing")),
        }
    }

    /// The one present member of a `oneof`, if any; several is an error.
    fn one_of<T>(&self, variants: &[Variant<T>]) -> Result<Option<T>> {
        let mut present = variants.iter().filter_map(|&(name, parse)| {
            self.get(name)
                .map(|(value, path)| (name, parse, value, path))
        });
        let Some((name, parse, value, path)) = present.next() else {
            return Ok(None);
        };
        if let Some((other, ..)) = present.next() {
            return Err(self.invalid(format!(
                "conflicting fields {name} and {other}: expected only one of {}",
                names(variants)
            )));
        }
        parse(value, &path).map(Some)
    }
}

fn names<T>(variants: &[Variant<T>]) -> String {
    variants
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `key` is the snake_case spelling of lowerCamelCase `camel`.
fn is_snake_case_of(key: &str, camel: &str) -> bool {
    let mut key = key.bytes();
    camel.bytes().all(|c| {
        if c.is_ascii_uppercase() {
            key.next() == Some(b'_') && key.next() == Some(c.to_ascii_lowercase())
        } else {
            key.next() == Some(c)
        }
    }) && key.next().is_none()
}

fn list<T>(
    value: &Value,
    path: &Path,
    mut parse: impl FnMut(&Value, &Path) -> Result<T>,
) -> Result<Vec<T>> {
    let items = value
        .as_array()
        .ok_or_else(|| expected(path, "an array", value))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse(item, &Path::Index(path, i)))
        .collect()
}

// ---------------------------------------------------------------------------
// Scalars

fn string(value: &Value, path: &Path) -> Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| expected(path, "a string", value))
}

fn boolean(value: &Value, path: &Path) -> Result<bool> {
    value
        .as_bool()
        .ok_or_else(|| expected(path, "true or false", value))
}

/// An integral JSON number (`12`, `1.2e3`) or decimal string (`"12"`).
fn as_integer(value: &Value) -> Option<i128> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e36)
                    .map(|f| f as i128)
            }),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn integer<T: TryFrom<i128>>(value: &Value, path: &Path, what: &str) -> Result<T> {
    as_integer(value)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| expected(path, what, value))
}

fn uint64(value: &Value, path: &Path) -> Result<u64> {
    integer(
        value,
        path,
        "an unsigned 64-bit integer (JSON number or decimal string)",
    )
}

fn int64(value: &Value, path: &Path) -> Result<i64> {
    integer(
        value,
        path,
        "a 64-bit integer (JSON number or decimal string)",
    )
}

fn uint32(value: &Value, path: &Path) -> Result<u32> {
    integer(value, path, "an unsigned 32-bit integer")
}

fn int32(value: &Value, path: &Path) -> Result<i32> {
    integer(value, path, "a 32-bit integer")
}

fn double(value: &Value, path: &Path) -> Result<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            s => s.parse::<f64>().ok().filter(|f| f.is_finite()),
        },
        _ => None,
    }
    .ok_or_else(|| {
        expected(
            path,
            r#"a double (JSON number, "NaN", "Infinity" or "-Infinity")"#,
            value,
        )
    })
}

/// A protobuf enum given by value name or by number; unknown values refused.
fn enumeration<E>(
    value: &Value,
    path: &Path,
    type_name: &str,
    from_name: fn(&str) -> Option<E>,
) -> Result<i32>
where
    E: Into<i32> + TryFrom<i32>,
{
    if let Some(known) = value.as_str().and_then(from_name) {
        return Ok(known.into());
    }
    if !(value.is_string() || value.is_number()) {
        return Err(expected(
            path,
            &format!("a {type_name} (integer or name)"),
            value,
        ));
    }
    as_integer(value)
        .and_then(|n| i32::try_from(n).ok())
        .filter(|&n| E::try_from(n).is_ok())
        .ok_or_else(|| invalid(path, format!("unknown {type_name} {}", found(value))))
}

fn severity_number(value: &Value, path: &Path) -> Result<i32> {
    enumeration(value, path, "SeverityNumber", SeverityNumber::from_str_name)
}

fn span_kind(value: &Value, path: &Path) -> Result<i32> {
    enumeration(value, path, "SpanKind", span::SpanKind::from_str_name)
}

fn status_code(value: &Value, path: &Path) -> Result<i32> {
    enumeration(value, path, "StatusCode", status::StatusCode::from_str_name)
}

fn temporality(value: &Value, path: &Path) -> Result<i32> {
    enumeration(
        value,
        path,
        "AggregationTemporality",
        AggregationTemporality::from_str_name,
    )
}

/// A hex-encoded id of `bytes` bytes, or `""` for none.
fn hex_id(value: &Value, path: &Path, bytes: usize, what: &str) -> Result<Vec<u8>> {
    let bad = || expected(path, &format!("a hex-encoded {what}"), value);
    let text = value.as_str().ok_or_else(bad)?;
    if !text.is_empty() && text.len() != 2 * bytes {
        return Err(invalid(
            path,
            format!(
                "expected a {what} of {} hex characters (or \"\" for none), found {} characters: {}",
                2 * bytes,
                text.chars().count(),
                found(value)
            ),
        ));
    }
    hex::decode(text).map_err(|_| bad())
}

fn trace_id(value: &Value, path: &Path) -> Result<Vec<u8>> {
    hex_id(value, path, 16, "trace id")
}

fn span_id(value: &Value, path: &Path) -> Result<Vec<u8>> {
    hex_id(value, path, 8, "span id")
}

const LENIENT_PADDING: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT_PADDING);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT_PADDING);

/// Base64, standard or URL-safe alphabet, padded or not.
fn base64_bytes(value: &Value, path: &Path) -> Result<Vec<u8>> {
    value
        .as_str()
        .and_then(|s| {
            BASE64_STANDARD
                .decode(s)
                .or_else(|_| BASE64_URL_SAFE.decode(s))
                .ok()
        })
        .ok_or_else(|| expected(path, "a base64 string", value))
}

// ---------------------------------------------------------------------------
// common.v1 and resource.v1

const ANY_VALUE: &[Variant<any_value::Value>] = &[
    ("stringValue", |v, p| {
        string(v, p).map(any_value::Value::StringValue)
    }),
    ("boolValue", |v, p| {
        boolean(v, p).map(any_value::Value::BoolValue)
    }),
    ("intValue", |v, p| {
        int64(v, p).map(any_value::Value::IntValue)
    }),
    ("doubleValue", |v, p| {
        double(v, p).map(any_value::Value::DoubleValue)
    }),
    ("arrayValue", |v, p| {
        let values = Obj::new(v, p)?.list("values", any_value)?;
        Ok(any_value::Value::ArrayValue(ArrayValue { values }))
    }),
    ("kvlistValue", |v, p| {
        let values = Obj::new(v, p)?.list("values", key_value)?;
        Ok(any_value::Value::KvlistValue(KeyValueList { values }))
    }),
    ("bytesValue", |v, p| {
        base64_bytes(v, p).map(any_value::Value::BytesValue)
    }),
];

fn any_value(value: &Value, path: &Path) -> Result<AnyValue> {
    Ok(AnyValue {
        value: Obj::new(value, path)?.one_of(ANY_VALUE)?,
    })
}

fn key_value(value: &Value, path: &Path) -> Result<KeyValue> {
    let o = Obj::new(value, path)?;
    Ok(KeyValue {
        key: o.with("key", string)?,
        value: o.opt("value", any_value)?,
        key_strindex: 0,
    })
}

fn resource(value: &Value, path: &Path) -> Result<Resource> {
    let o = Obj::new(value, path)?;
    Ok(Resource {
        attributes: o.list("attributes", key_value)?,
        dropped_attributes_count: o.with("droppedAttributesCount", uint32)?,
        entity_refs: o.list("entityRefs", entity_ref)?,
    })
}

fn entity_ref(value: &Value, path: &Path) -> Result<EntityRef> {
    let o = Obj::new(value, path)?;
    Ok(EntityRef {
        schema_url: o.with("schemaUrl", string)?,
        r#type: o.with("type", string)?,
        id_keys: o.list("idKeys", string)?,
        description_keys: o.list("descriptionKeys", string)?,
    })
}

fn scope(value: &Value, path: &Path) -> Result<InstrumentationScope> {
    let o = Obj::new(value, path)?;
    Ok(InstrumentationScope {
        name: o.with("name", string)?,
        version: o.with("version", string)?,
        attributes: o.list("attributes", key_value)?,
        dropped_attributes_count: o.with("droppedAttributesCount", uint32)?,
    })
}

// ---------------------------------------------------------------------------
// logs.v1

fn resource_logs(value: &Value, path: &Path) -> Result<ResourceLogs> {
    let o = Obj::new(value, path)?;
    Ok(ResourceLogs {
        resource: o.opt("resource", resource)?,
        scope_logs: o.list("scopeLogs", scope_logs)?,
        schema_url: o.with("schemaUrl", string)?,
    })
}

fn scope_logs(value: &Value, path: &Path) -> Result<ScopeLogs> {
    let o = Obj::new(value, path)?;
    Ok(ScopeLogs {
        scope: o.opt("scope", scope)?,
        log_records: o.list("logRecords", log_record)?,
        schema_url: o.with("schemaUrl", string)?,
    })
}

fn log_record(value: &Value, path: &Path) -> Result<LogRecord> {
    let o = Obj::new(value, path)?;
    Ok(LogRecord {
        time_unix_nano: o.with("timeUnixNano", uint64)?,
        observed_time_unix_nano: o.with("observedTimeUnixNano", uint64)?,
        severity_number: o.with("severityNumber", severity_number)?,
        severity_text: o.with("severityText", string)?,
        body: o.opt("body", any_value)?,
        attributes: o.list("attributes", key_value)?,
        dropped_attributes_count: o.with("droppedAttributesCount", uint32)?,
        flags: o.with("flags", uint32)?,
        trace_id: o.with("traceId", trace_id)?,
        span_id: o.with("spanId", span_id)?,
        event_name: o.with("eventName", string)?,
    })
}

// ---------------------------------------------------------------------------
// trace.v1

fn resource_spans(value: &Value, path: &Path) -> Result<ResourceSpans> {
    let o = Obj::new(value, path)?;
    Ok(ResourceSpans {
        resource: o.opt("resource", resource)?,
        scope_spans: o.list("scopeSpans", scope_spans)?,
        schema_url: o.with("schemaUrl", string)?,
    })
}

fn scope_spans(value: &Value, path: &Path) -> Result<ScopeSpans> {
    let o = Obj::new(value, path)?;
    Ok(ScopeSpans {
        scope: o.opt("scope", scope)?,
        spans: o.list("spans", span)?,
        schema_url: o.with("schemaUrl", string)?,
    })
}

fn span(value: &Value, path: &Path) -> Result<Span> {
    let o = Obj::new(value, path)?;
    Ok(Span {
        trace_id: o.with("traceId", trace_id)?,
        span_id: o.with("spanId", span_id)?,
        trace_state: o.with("traceState", string)?,
        parent_span_id: o.with("parentSpanId", span_id)?,
        flags: o.with("flags", uint32)?,
        name: o.with("name", string)?,
        kind: o.with("kind", span_kind)?,
        start_time_unix_nano: o.with("startTimeUnixNano", uint64)?,
        end_time_unix_nano: o.with("endTimeUnixNano", uint64)?,
        attributes: o.list("attributes", key_value)?,
        dropped_attributes_count: o.with("droppedAttributesCount", uint32)?,
        events: o.list("events", event)?,
        dropped_events_count: o.with("droppedEventsCount", uint32)?,
        links: o.list("links", link)?,
        dropped_links_count: o.with("droppedLinksCount", uint32)?,
        status: o.opt("status", span_status)?,
    })
}

fn event(value: &Value, path: &Path) -> Result<span::Event> {
    let o = Obj::new(value, path)?;
    Ok(span::Event {
        time_unix_nano: o.with("timeUnixNano", uint64)?,
        name: o.with("name", string)?,
        attributes: o.list("attributes", key_value)?,
        dropped_attributes_count: o.with("droppedAttributesCount", uint32)?,
    })
}

fn link(value: &Value, path: &Path) -> Result<span::Link> {
    let o = Obj::new(value, path)?;
    Ok(span::Link {
        trace_id: o.with("traceId", trace_id)?,
        span_id: o.with("spanId", span_id)?,
        trace_state: o.with("traceState", string)?,
        attributes: o.list("attributes", key_value)?,
        dropped_attributes_count: o.with("droppedAttributesCount", uint32)?,
        flags: o.with("flags", uint32)?,
    })
}

fn span_status(value: &Value, path: &Path) -> Result<Status> {
    let o = Obj::new(value, path)?;
    Ok(Status {
        message: o.with("message", string)?,
        code: o.with("code", status_code)?,
    })
}

// ---------------------------------------------------------------------------
// metrics.v1

fn resource_metrics(value: &Value, path: &Path) -> Result<ResourceMetrics> {
    let o = Obj::new(value, path)?;
    Ok(ResourceMetrics {
        resource: o.opt("resource", resource)?,
        scope_metrics: o.list("scopeMetrics", scope_metrics)?,
        schema_url: o.with("schemaUrl", string)?,
    })
}

fn scope_metrics(value: &Value, path: &Path) -> Result<ScopeMetrics> {
    let o = Obj::new(value, path)?;
    Ok(ScopeMetrics {
        scope: o.opt("scope", scope)?,
        metrics: o.list("metrics", metric)?,
        schema_url: o.with("schemaUrl", string)?,
    })
}

const METRIC_DATA: &[Variant<metric::Data>] = &[
    ("gauge", |v, p| gauge(v, p).map(metric::Data::Gauge)),
    ("sum", |v, p| sum(v, p).map(metric::Data::Sum)),
    ("histogram", |v, p| {
        histogram(v, p).map(metric::Data::Histogram)
    }),
    ("exponentialHistogram", |v, p| {
        exponential_histogram(v, p).map(metric::Data::ExponentialHistogram)
    }),
    ("summary", |v, p| summary(v, p).map(metric::Data::Summary)),
];

fn metric(value: &Value, path: &Path) -> Result<Metric> {
    let o = Obj::new(value, path)?;
    let data = o.one_of(METRIC_DATA)?.ok_or_else(|| {
        o.invalid(format!(
            "metric has no data: expected one of {}",
            names(METRIC_DATA)
        ))
    })?;
    Ok(Metric {
        name: o.with("name", string)?,
        description: o.with("description", string)?,
        unit: o.with("unit", string)?,
        metadata: o.list("metadata", key_value)?,
        data: Some(data),
    })
}

fn gauge(value: &Value, path: &Path) -> Result<Gauge> {
    let o = Obj::new(value, path)?;
    Ok(Gauge {
        data_points: o.required_list("dataPoints", number_point)?,
    })
}

fn sum(value: &Value, path: &Path) -> Result<Sum> {
    let o = Obj::new(value, path)?;
    Ok(Sum {
        data_points: o.required_list("dataPoints", number_point)?,
        aggregation_temporality: o.with("aggregationTemporality", temporality)?,
        is_monotonic: o.with("isMonotonic", boolean)?,
    })
}

fn histogram(value: &Value, path: &Path) -> Result<Histogram> {
    let o = Obj::new(value, path)?;
    Ok(Histogram {
        data_points: o.required_list("dataPoints", histogram_point)?,
        aggregation_temporality: o.with("aggregationTemporality", temporality)?,
    })
}

fn exponential_histogram(value: &Value, path: &Path) -> Result<ExponentialHistogram> {
    let o = Obj::new(value, path)?;
    Ok(ExponentialHistogram {
        data_points: o.required_list("dataPoints", exponential_histogram_point)?,
        aggregation_temporality: o.with("aggregationTemporality", temporality)?,
    })
}

fn summary(value: &Value, path: &Path) -> Result<Summary> {
    let o = Obj::new(value, path)?;
    Ok(Summary {
        data_points: o.required_list("dataPoints", summary_point)?,
    })
}

const NO_VALUE: &str = "no value: expected asDouble or asInt";

const NUMBER_VALUE: &[Variant<number_data_point::Value>] = &[
    ("asDouble", |v, p| {
        double(v, p).map(number_data_point::Value::AsDouble)
    }),
    ("asInt", |v, p| {
        int64(v, p).map(number_data_point::Value::AsInt)
    }),
];

fn number_point(value: &Value, path: &Path) -> Result<NumberDataPoint> {
    let o = Obj::new(value, path)?;
    let flags = o.with("flags", uint32)?;
    let value = o.one_of(NUMBER_VALUE)?;
    // A point flagged "no recorded value" (e.g. a Prometheus staleness
    // marker) legitimately carries no value.
    if value.is_none() && flags & DataPointFlags::NoRecordedValueMask as u32 == 0 {
        return Err(o.invalid(NO_VALUE));
    }
    Ok(NumberDataPoint {
        attributes: o.list("attributes", key_value)?,
        start_time_unix_nano: o.with("startTimeUnixNano", uint64)?,
        time_unix_nano: o.with("timeUnixNano", uint64)?,
        exemplars: o.list("exemplars", exemplar)?,
        flags,
        value,
    })
}

const EXEMPLAR_VALUE: &[Variant<exemplar::Value>] = &[
    ("asDouble", |v, p| {
        double(v, p).map(exemplar::Value::AsDouble)
    }),
    ("asInt", |v, p| int64(v, p).map(exemplar::Value::AsInt)),
];

fn exemplar(value: &Value, path: &Path) -> Result<Exemplar> {
    let o = Obj::new(value, path)?;
    let value = o
        .one_of(EXEMPLAR_VALUE)?
        .ok_or_else(|| o.invalid(NO_VALUE))?;
    Ok(Exemplar {
        filtered_attributes: o.list("filteredAttributes", key_value)?,
        time_unix_nano: o.with("timeUnixNano", uint64)?,
        span_id: o.with("spanId", span_id)?,
        trace_id: o.with("traceId", trace_id)?,
        value: Some(value),
    })
}

fn histogram_point(value: &Value, path: &Path) -> Result<HistogramDataPoint> {
    let o = Obj::new(value, path)?;
    Ok(HistogramDataPoint {
        attributes: o.list("attributes", key_value)?,
        start_time_unix_nano: o.with("startTimeUnixNano", uint64)?,
        time_unix_nano: o.with("timeUnixNano", uint64)?,
        count: o.with("count", uint64)?,
        sum: o.opt("sum", double)?,
        bucket_counts: o.list("bucketCounts", uint64)?,
        explicit_bounds: o.list("explicitBounds", double)?,
        exemplars: o.list("exemplars", exemplar)?,
        flags: o.with("flags", uint32)?,
        min: o.opt("min", double)?,
        max: o.opt("max", double)?,
    })
}

fn exponential_histogram_point(
    value: &Value,
    path: &Path,
) -> Result<ExponentialHistogramDataPoint> {
    let o = Obj::new(value, path)?;
    Ok(ExponentialHistogramDataPoint {
        attributes: o.list("attributes", key_value)?,
        start_time_unix_nano: o.with("startTimeUnixNano", uint64)?,
        time_unix_nano: o.with("timeUnixNano", uint64)?,
        count: o.with("count", uint64)?,
        sum: o.opt("sum", double)?,
        scale: o.with("scale", int32)?,
        zero_count: o.with("zeroCount", uint64)?,
        positive: o.opt("positive", buckets)?,
        negative: o.opt("negative", buckets)?,
        flags: o.with("flags", uint32)?,
        exemplars: o.list("exemplars", exemplar)?,
        min: o.opt("min", double)?,
        max: o.opt("max", double)?,
        zero_threshold: o.with("zeroThreshold", double)?,
    })
}

fn buckets(value: &Value, path: &Path) -> Result<Buckets> {
    let o = Obj::new(value, path)?;
    Ok(Buckets {
        offset: o.with("offset", int32)?,
        bucket_counts: o.list("bucketCounts", uint64)?,
    })
}

fn summary_point(value: &Value, path: &Path) -> Result<SummaryDataPoint> {
    let o = Obj::new(value, path)?;
    Ok(SummaryDataPoint {
        attributes: o.list("attributes", key_value)?,
        start_time_unix_nano: o.with("startTimeUnixNano", uint64)?,
        time_unix_nano: o.with("timeUnixNano", uint64)?,
        count: o.with("count", uint64)?,
        sum: o.with("sum", double)?,
        quantile_values: o.list("quantileValues", quantile)?,
        flags: o.with("flags", uint32)?,
    })
}

fn quantile(value: &Value, path: &Path) -> Result<ValueAtQuantile> {
    let o = Obj::new(value, path)?;
    Ok(ValueAtQuantile {
        quantile: o.with("quantile", double)?,
        value: o.with("value", double)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::PayloadErrorKind;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
    use serde_json::json;

    fn logs(doc: Value) -> Result<ExportLogsServiceRequest> {
        decode_logs(&serde_json::to_vec(&doc).unwrap())
    }
    fn traces(doc: Value) -> Result<ExportTraceServiceRequest> {
        decode_traces(&serde_json::to_vec(&doc).unwrap())
    }
    fn metrics(doc: Value) -> Result<ExportMetricsServiceRequest> {
        decode_metrics(&serde_json::to_vec(&doc).unwrap())
    }

    fn one_log(record: Value) -> Result<LogRecord> {
        let doc = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]});
        logs(doc).map(|mut r| {
            r.resource_logs
                .remove(0)
                .scope_logs
                .remove(0)
                .log_records
                .remove(0)
        })
    }
    fn one_span(span: Value) -> Result<Span> {
        let doc = json!({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]});
        traces(doc).map(|mut r| {
            r.resource_spans
                .remove(0)
                .scope_spans
                .remove(0)
                .spans
                .remove(0)
        })
    }
    fn one_metric(metric: Value) -> Result<Metric> {
        let doc = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]});
        metrics(doc).map(|mut r| {
            r.resource_metrics
                .remove(0)
                .scope_metrics
                .remove(0)
                .metrics
                .remove(0)
        })
    }
    /// Decodes `value` as the AnyValue of a log attribute.
    fn attr(value: Value) -> Result<Option<Av>> {
        one_log(json!({"attributes": [{"key": "k", "value": value}]}))
            .map(|mut r| r.attributes.remove(0).value.unwrap().value)
    }
    fn gauge_value(point: Value) -> Result<Option<number_data_point::Value>> {
        let mut m = one_metric(json!({"name": "g", "gauge": {"dataPoints": [point]}}))?;
        match m.data.take() {
            Some(metric::Data::Gauge(mut g)) => Ok(g.data_points.remove(0).value),
            other => panic!("not a gauge: {other:?}"),
        }
    }

    const LOG_PREFIX: &str = "resourceLogs[0].scopeLogs[0].logRecords[0]";
    const SPAN_PREFIX: &str = "resourceSpans[0].scopeSpans[0].spans[0]";
    const METRIC_PREFIX: &str = "resourceMetrics[0].scopeMetrics[0].metrics[0]";

    #[track_caller]
    fn assert_invalid<T: fmt::Debug>(result: Result<T>, field: &str, message: &str) {
        let err = result.expect_err("expected an error");
        assert_eq!(err.kind, PayloadErrorKind::Invalid, "{err}");
        assert_eq!(err.field, field, "{err}");
        assert!(
            err.message.contains(message),
            "message {:?} lacks {message:?}",
            err.message
        );
    }

    fn kv(key: &str, value: Av) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        }
    }
    fn s(text: &str) -> Av {
        Av::StringValue(text.into())
    }
    fn resource_with(attributes: Vec<KeyValue>, dropped: u32) -> Option<Resource> {
        Some(Resource {
            attributes,
            dropped_attributes_count: dropped,
            entity_refs: vec![],
        })
    }
    fn scope_named(name: &str, version: &str) -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: name.into(),
            version: version.into(),
            attributes: vec![kv("scope.attr", Av::BoolValue(true))],
            dropped_attributes_count: 1,
        })
    }

    const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
    const SPAN_ID: &str = "eee19b7ec3c1b174";
    fn trace_bytes() -> Vec<u8> {
        hex::decode(TRACE_ID).unwrap()
    }
    fn span_bytes() -> Vec<u8> {
        hex::decode(SPAN_ID).unwrap()
    }

    #[test]
    fn full_logs_document() {
        let doc = json!({
            "resourceLogs": [{
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}],
                    "droppedAttributesCount": 2,
                    "entityRefs": [{"type": "service", "idKeys": ["service.name"], "schemaUrl": "s"}]
                },
                "schemaUrl": "https://opentelemetry.io/schemas/1.24.0",
                "scopeLogs": [{
                    "scope": {
                        "name": "lib", "version": "1.0",
                        "attributes": [{"key": "scope.attr", "value": {"boolValue": true}}],
                        "droppedAttributesCount": "1"
                    },
                    "schemaUrl": "scope-schema",
                    "logRecords": [{
                        "timeUnixNano": "1544712660300000000",
                        "observedTimeUnixNano": 1544712660300000001u64,
                        "severityNumber": "SEVERITY_NUMBER_INFO",
                        "severityText": "Information",
                        "traceId": TRACE_ID,
                        "spanId": SPAN_ID,
                        "flags": 1,
                        "droppedAttributesCount": 3,
                        "eventName": "device.app.lifecycle",
                        "body": {"kvlistValue": {"values": [
                            {"key": "a", "value": {"intValue": "-42"}},
                            {"key": "b", "value": {"arrayValue": {"values": [
                                {"doubleValue": 1.5}, {"bytesValue": "aGVsbG8="}, {}
                            ]}}}
                        ]}},
                        "attributes": [
                            {"key": "string", "value": {"stringValue": "x"}},
                            {"key": "bool", "value": {"boolValue": false}},
                            {"key": "int", "value": {"intValue": 10}},
                            {"key": "double", "value": {"doubleValue": 637.704}},
                            {"key": "empty"},
                            {"value": {"stringValue": "no key"}},
                            {"key": "unknown-field", "value": {"stringValue": "y"}, "extra": [1, 2]}
                        ],
                        "someFutureField": {"ignored": true}
                    }, {}]
                }]
            }]
        });
        let expected = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    entity_refs: vec![EntityRef {
                        schema_url: "s".into(),
                        r#type: "service".into(),
                        id_keys: vec!["service.name".into()],
                        description_keys: vec![],
                    }],
                    ..resource_with(vec![kv("service.name", s("svc"))], 2).unwrap()
                }),
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
                scope_logs: vec![ScopeLogs {
                    scope: scope_named("lib", "1.0"),
                    schema_url: "scope-schema".into(),
                    log_records: vec![
                        LogRecord {
                            time_unix_nano: 1544712660300000000,
                            observed_time_unix_nano: 1544712660300000001,
                            severity_number: SeverityNumber::Info as i32,
                            severity_text: "Information".into(),
                            body: Some(AnyValue {
                                value: Some(Av::KvlistValue(KeyValueList {
                                    values: vec![
                                        kv("a", Av::IntValue(-42)),
                                        kv(
                                            "b",
                                            Av::ArrayValue(ArrayValue {
                                                values: vec![
                                                    AnyValue {
                                                        value: Some(Av::DoubleValue(1.5)),
                                                    },
                                                    AnyValue {
                                                        value: Some(Av::BytesValue(
                                                            b"hello".to_vec(),
                                                        )),
                                                    },
                                                    AnyValue { value: None },
                                                ],
                                            }),
                                        ),
                                    ],
                                })),
                            }),
                            attributes: vec![
                                kv("string", s("x")),
                                kv("bool", Av::BoolValue(false)),
                                kv("int", Av::IntValue(10)),
                                kv("double", Av::DoubleValue(637.704)),
                                KeyValue {
                                    key: "empty".into(),
                                    value: None,
                                    key_strindex: 0,
                                },
                                KeyValue {
                                    key: String::new(),
                                    ..kv("", s("no key"))
                                },
                                kv("unknown-field", s("y")),
                            ],
                            dropped_attributes_count: 3,
                            flags: 1,
                            trace_id: trace_bytes(),
                            span_id: span_bytes(),
                            event_name: "device.app.lifecycle".into(),
                        },
                        LogRecord::default(),
                    ],
                }],
            }],
        };
        assert_eq!(logs(doc).unwrap(), expected);
    }

    #[test]
    fn full_traces_document() {
        let doc = json!({
            "resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scopeSpans": [{
                    "scope": {"name": "tracer", "version": "2", "droppedAttributesCount": 1,
                              "attributes": [{"key": "scope.attr", "value": {"boolValue": true}}]},
                    "schemaUrl": "u",
                    "spans": [{
                        "traceId": TRACE_ID,
                        "spanId": SPAN_ID,
                        "parentSpanId": "0102030405060708",
                        "traceState": "vendor=1",
                        "flags": 257,
                        "name": "GET /",
                        "kind": "SPAN_KIND_SERVER",
                        "startTimeUnixNano": "1000",
                        "endTimeUnixNano": 2000,
                        "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}}],
                        "droppedAttributesCount": 4,
                        "events": [{
                            "timeUnixNano": "1500", "name": "exception",
                            "attributes": [{"key": "e", "value": {"stringValue": "boom"}}],
                            "droppedAttributesCount": 5
                        }],
                        "droppedEventsCount": 6,
                        "links": [{
                            "traceId": TRACE_ID.to_uppercase(), "spanId": "", "traceState": "t",
                            "attributes": [], "droppedAttributesCount": 7, "flags": 1
                        }],
                        "droppedLinksCount": 8,
                        "status": {"code": "STATUS_CODE_ERROR", "message": "failed"}
                    }, {
                        "kind": 3,
                        "status": {"code": 1}
                    }]
                }]
            }]
        });
        let expected = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource_with(vec![kv("service.name", s("svc"))], 0),
                schema_url: String::new(),
                scope_spans: vec![ScopeSpans {
                    scope: scope_named("tracer", "2"),
                    schema_url: "u".into(),
                    spans: vec![
                        Span {
                            trace_id: trace_bytes(),
                            span_id: span_bytes(),
                            trace_state: "vendor=1".into(),
                            parent_span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
                            flags: 257,
                            name: "GET /".into(),
                            kind: span::SpanKind::Server as i32,
                            start_time_unix_nano: 1000,
                            end_time_unix_nano: 2000,
                            attributes: vec![kv("http.status_code", Av::IntValue(200))],
                            dropped_attributes_count: 4,
                            events: vec![span::Event {
                                time_unix_nano: 1500,
                                name: "exception".into(),
                                attributes: vec![kv("e", s("boom"))],
                                dropped_attributes_count: 5,
                            }],
                            dropped_events_count: 6,
                            links: vec![span::Link {
                                trace_id: trace_bytes(),
                                span_id: vec![],
                                trace_state: "t".into(),
                                attributes: vec![],
                                dropped_attributes_count: 7,
                                flags: 1,
                            }],
                            dropped_links_count: 8,
                            status: Some(Status {
                                message: "failed".into(),
                                code: status::StatusCode::Error as i32,
                            }),
                        },
                        Span {
                            kind: span::SpanKind::Client as i32,
                            status: Some(Status {
                                message: String::new(),
                                code: 1,
                            }),
                            ..Span::default()
                        },
                    ],
                }],
            }],
        };
        assert_eq!(traces(doc).unwrap(), expected);
    }

    #[test]
    fn full_metrics_document() {
        let exemplar_json = json!({
            "filteredAttributes": [{"key": "f", "value": {"stringValue": "v"}}],
            "timeUnixNano": "5", "asInt": "7", "traceId": TRACE_ID, "spanId": SPAN_ID
        });
        let doc = json!({
            "resourceMetrics": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "schemaUrl": "r",
                "scopeMetrics": [{
                    "scope": {"name": "meter", "version": "3", "droppedAttributesCount": 1,
                              "attributes": [{"key": "scope.attr", "value": {"boolValue": true}}]},
                    "metrics": [
                        {
                            "name": "g", "description": "a gauge", "unit": "1",
                            "metadata": [{"key": "m", "value": {"stringValue": "meta"}}],
                            "gauge": {"dataPoints": [{
                                "attributes": [{"key": "a", "value": {"stringValue": "b"}}],
                                "startTimeUnixNano": "1", "timeUnixNano": "2",
                                "asInt": "-3", "flags": 0, "exemplars": [exemplar_json]
                            }]}
                        },
                        {
                            "name": "s",
                            "sum": {
                                "aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                                "isMonotonic": true,
                                "dataPoints": [{"timeUnixNano": 2, "asDouble": 5}, {"asDouble": "NaN"}]
                            }
                        },
                        {
                            "name": "h",
                            "histogram": {
                                "aggregationTemporality": 1,
                                "dataPoints": [{
                                    "startTimeUnixNano": "1", "timeUnixNano": "2", "count": "3",
                                    "sum": 3.5, "bucketCounts": ["1", 1, 1], "explicitBounds": [1, 2.5],
                                    "min": 0.5, "max": "Infinity", "flags": 1,
                                    "exemplars": [{"asDouble": 2.5}]
                                }, {"count": 0}]
                            }
                        },
                        {
                            "name": "e",
                            "exponentialHistogram": {
                                "aggregationTemporality": "AGGREGATION_TEMPORALITY_DELTA",
                                "dataPoints": [{
                                    "timeUnixNano": "2", "count": "10", "sum": 12, "scale": -2,
                                    "zeroCount": "1", "zeroThreshold": 1e-9,
                                    "positive": {"offset": "-3", "bucketCounts": ["4", 5]},
                                    "negative": {"bucketCounts": []},
                                    "min": "-Infinity", "max": 9
                                }]
                            }
                        },
                        {
                            "name": "q",
                            "summary": {"dataPoints": [{
                                "timeUnixNano": "2", "count": 4, "sum": 10,
                                "quantileValues": [{"quantile": 0.5, "value": 2}, {"quantile": 1, "value": 4}]
                            }]}
                        },
                        {"name": "empty", "gauge": {"dataPoints": []}}
                    ]
                }]
            }]
        });

        let got = metrics(doc).unwrap();
        let rm = &got.resource_metrics[0];
        assert_eq!(
            rm.resource,
            resource_with(vec![kv("service.name", s("svc"))], 0)
        );
        assert_eq!(rm.schema_url, "r");
        let sm = &rm.scope_metrics[0];
        assert_eq!(sm.scope, scope_named("meter", "3"));
        let data: Vec<_> = sm.metrics.iter().map(|m| m.data.clone().unwrap()).collect();

        assert_eq!(
            sm.metrics[0],
            Metric {
                name: "g".into(),
                description: "a gauge".into(),
                unit: "1".into(),
                metadata: vec![kv("m", s("meta"))],
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        attributes: vec![kv("a", s("b"))],
                        start_time_unix_nano: 1,
                        time_unix_nano: 2,
                        exemplars: vec![Exemplar {
                            filtered_attributes: vec![kv("f", s("v"))],
                            time_unix_nano: 5,
                            span_id: span_bytes(),
                            trace_id: trace_bytes(),
                            value: Some(exemplar::Value::AsInt(7)),
                        }],
                        flags: 0,
                        value: Some(number_data_point::Value::AsInt(-3)),
                    }],
                })),
            }
        );

        let metric::Data::Sum(sum) = &data[1] else {
            panic!("{:?}", data[1])
        };
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points[0].time_unix_nano, 2);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(5.0))
        );
        assert!(
            matches!(sum.data_points[1].value, Some(number_data_point::Value::AsDouble(f)) if f.is_nan())
        );

        let metric::Data::Histogram(histogram) = &data[2] else {
            panic!("{:?}", data[2])
        };
        assert_eq!(
            *histogram,
            Histogram {
                aggregation_temporality: 1,
                data_points: vec![
                    HistogramDataPoint {
                        attributes: vec![],
                        start_time_unix_nano: 1,
                        time_unix_nano: 2,
                        count: 3,
                        sum: Some(3.5),
                        bucket_counts: vec![1, 1, 1],
                        explicit_bounds: vec![1.0, 2.5],
                        exemplars: vec![Exemplar {
                            value: Some(exemplar::Value::AsDouble(2.5)),
                            ..Exemplar::default()
                        }],
                        flags: 1,
                        min: Some(0.5),
                        max: Some(f64::INFINITY),
                    },
                    HistogramDataPoint::default(),
                ],
            }
        );

        let metric::Data::ExponentialHistogram(exp) = &data[3] else {
            panic!("{:?}", data[3])
        };
        assert_eq!(
            *exp,
            ExponentialHistogram {
                aggregation_temporality: AggregationTemporality::Delta as i32,
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: vec![],
                    start_time_unix_nano: 0,
                    time_unix_nano: 2,
                    count: 10,
                    sum: Some(12.0),
                    scale: -2,
                    zero_count: 1,
                    positive: Some(Buckets {
                        offset: -3,
                        bucket_counts: vec![4, 5]
                    }),
                    negative: Some(Buckets {
                        offset: 0,
                        bucket_counts: vec![]
                    }),
                    flags: 0,
                    exemplars: vec![],
                    min: Some(f64::NEG_INFINITY),
                    max: Some(9.0),
                    zero_threshold: 1e-9,
                }],
            }
        );

        assert_eq!(
            data[4],
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: vec![],
                    start_time_unix_nano: 0,
                    time_unix_nano: 2,
                    count: 4,
                    sum: 10.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 2.0
                        },
                        ValueAtQuantile {
                            quantile: 1.0,
                            value: 4.0
                        },
                    ],
                    flags: 0,
                }],
            })
        );
        assert_eq!(
            data[5],
            metric::Data::Gauge(Gauge {
                data_points: vec![]
            })
        );
    }

    #[test]
    fn snake_case_names_and_nulls() {
        let record = one_log(json!({
            "time_unix_nano": "7",
            "observed_time_unix_nano": null,
            "observedTimeUnixNano": "8",
            "severity_number": 9,
            "severity_text": null,
            "trace_id": TRACE_ID,
            "span_id": null,
            "event_name": "e",
            "body": null,
            "attributes": null
        }))
        .unwrap();
        assert_eq!(record.time_unix_nano, 7);
        assert_eq!(record.observed_time_unix_nano, 8);
        assert_eq!(record.severity_number, 9);
        assert_eq!(record.severity_text, "");
        assert_eq!(record.trace_id, trace_bytes());
        assert!(record.span_id.is_empty() && record.body.is_none() && record.attributes.is_empty());
        assert_eq!(record.event_name, "e");

        let m = one_metric(json!({"exponential_histogram": {"data_points": [{"zero_count": 3}]}}))
            .unwrap();
        let Some(metric::Data::ExponentialHistogram(e)) = m.data else {
            panic!("{m:?}")
        };
        assert_eq!(e.data_points[0].zero_count, 3);
        assert_eq!(attr(json!({"string_value": "x"})).unwrap(), Some(s("x")));
        assert_eq!(
            attr(json!({"stringValue": null, "intValue": 1})).unwrap(),
            Some(Av::IntValue(1))
        );
        assert!(
            logs(json!({"resource_logs": null}))
                .unwrap()
                .resource_logs
                .is_empty()
        );
        assert!(logs(json!({})).unwrap().resource_logs.is_empty());
    }

    #[test]
    fn hex_ids_accept_either_case() {
        let upper = one_span(json!({
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "parentSpanId": "EeE19b7eC3c1B174"
        }))
        .unwrap();
        assert_eq!(upper.trace_id, trace_bytes());
        assert_eq!(upper.span_id, span_bytes());
        assert_eq!(upper.parent_span_id, span_bytes());
        let empty = one_span(json!({"traceId": "", "spanId": ""})).unwrap();
        assert!(empty.trace_id.is_empty() && empty.span_id.is_empty());
    }

    #[test]
    fn bad_ids() {
        let short = &TRACE_ID[..30];
        assert_invalid(
            one_log(json!({"traceId": short})),
            &format!("{LOG_PREFIX}.traceId"),
            "expected a trace id of 32 hex characters (or \"\" for none), found 30 characters",
        );
        assert_invalid(
            one_span(json!({"spanId": "zzzzzzzzzzzzzzzz"})),
            &format!("{SPAN_PREFIX}.spanId"),
            r#"expected a hex-encoded span id, found "zzzzzzzzzzzzzzzz""#,
        );
        assert_invalid(
            one_span(json!({"links": [{}, {"traceId": 5}]})),
            &format!("{SPAN_PREFIX}.links[1].traceId"),
            "expected a hex-encoded trace id, found 5",
        );
        // base64 of 16 bytes is 24 characters: refused, ids are hex in OTLP/JSON.
        assert_invalid(
            one_span(json!({"traceId": "W47/95gDgQPSabYzgT/GDA=="})),
            &format!("{SPAN_PREFIX}.traceId"),
            "found 24 characters",
        );
        assert_invalid(
            one_metric(
                json!({"gauge": {"dataPoints": [{"asInt": 1, "exemplars": [{"asInt": 1, "spanId": "abc"}]}]}}),
            ),
            &format!("{METRIC_PREFIX}.gauge.dataPoints[0].exemplars[0].spanId"),
            "expected a span id of 16 hex characters",
        );
    }

    #[test]
    fn bad_integers() {
        assert_invalid(
            gauge_value(json!({"asInt": "12a"})),
            &format!("{METRIC_PREFIX}.gauge.dataPoints[0].asInt"),
            r#"expected a 64-bit integer (JSON number or decimal string), found "12a""#,
        );
        for bad in [
            json!(1.5),
            json!("1.5"),
            json!(""),
            json!(" 1"),
            json!("1e3"),
            json!(true),
            json!([1]),
        ] {
            assert_invalid(
                one_log(json!({"timeUnixNano": bad})),
                &format!("{LOG_PREFIX}.timeUnixNano"),
                "expected an unsigned 64-bit integer",
            );
        }
        assert_invalid(
            one_log(json!({"timeUnixNano": -1})),
            &format!("{LOG_PREFIX}.timeUnixNano"),
            "found -1",
        );
        assert_invalid(
            one_log(json!({"timeUnixNano": "18446744073709551616"})),
            &format!("{LOG_PREFIX}.timeUnixNano"),
            "unsigned 64-bit",
        );
        let too_big = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":18446744073709551616}]}]}]}"#;
        assert_invalid(
            decode_logs(too_big),
            &format!("{LOG_PREFIX}.timeUnixNano"),
            "found 1.8446744073709552e+19",
        );
        assert_invalid(
            gauge_value(json!({"asInt": "9223372036854775808"})),
            &format!("{METRIC_PREFIX}.gauge.dataPoints[0].asInt"),
            "64-bit",
        );
        assert_invalid(
            one_log(json!({"flags": 4294967296u64})),
            &format!("{LOG_PREFIX}.flags"),
            "expected an unsigned 32-bit integer, found 4294967296",
        );
        assert_invalid(
            one_log(json!({"droppedAttributesCount": -1})),
            &format!("{LOG_PREFIX}.droppedAttributesCount"),
            "unsigned 32-bit",
        );
        assert_invalid(
            one_metric(
                json!({"exponentialHistogram": {"dataPoints": [{"positive": {"offset": 2147483648u64}}]}}),
            ),
            &format!("{METRIC_PREFIX}.exponentialHistogram.dataPoints[0].positive.offset"),
            "expected a 32-bit integer",
        );
        assert_invalid(
            one_metric(json!({"histogram": {"dataPoints": [{"bucketCounts": [1, "x", 2]}]}})),
            &format!("{METRIC_PREFIX}.histogram.dataPoints[0].bucketCounts[1]"),
            "unsigned 64-bit",
        );
        assert_invalid(
            attr(json!({"arrayValue": {"values": [{"intValue": 1}, {"intValue": 0.5}]}})),
            &format!("{LOG_PREFIX}.attributes[0].value.arrayValue.values[1].intValue"),
            "found 0.5",
        );
    }

    #[test]
    fn numbers_as_strings_and_special_doubles() {
        let time = |v: Value| one_log(json!({"timeUnixNano": v})).unwrap().time_unix_nano;
        assert_eq!(time(json!("1544712660300000000")), 1544712660300000000);
        assert_eq!(time(json!(u64::MAX)), u64::MAX);
        assert_eq!(time(json!(u64::MAX.to_string())), u64::MAX);
        assert_eq!(time(json!(1e3)), 1000);
        assert_eq!(time(json!(2.0)), 2);
        assert_eq!(
            gauge_value(json!({"asInt": i64::MIN.to_string()})).unwrap(),
            Some(number_data_point::Value::AsInt(i64::MIN))
        );
        assert_eq!(
            gauge_value(json!({"asInt": -5})).unwrap(),
            Some(number_data_point::Value::AsInt(-5))
        );
        assert_eq!(one_log(json!({"flags": "255"})).unwrap().flags, 255);
        let scale = one_metric(json!({"exponentialHistogram": {"dataPoints": [{"scale": "-10"}]}}))
            .unwrap();
        let Some(metric::Data::ExponentialHistogram(e)) = scale.data else {
            panic!()
        };
        assert_eq!(e.data_points[0].scale, -10);

        let double = |v: Value| match gauge_value(json!({"asDouble": v})).unwrap() {
            Some(number_data_point::Value::AsDouble(f)) => f,
            other => panic!("{other:?}"),
        };
        assert!(double(json!("NaN")).is_nan());
        assert_eq!(double(json!("Infinity")), f64::INFINITY);
        assert_eq!(double(json!("-Infinity")), f64::NEG_INFINITY);
        assert_eq!(double(json!("2.5")), 2.5);
        assert_eq!(double(json!(-1e-3)), -1e-3);
        assert_eq!(double(json!(3)), 3.0);
        for bad in [
            json!("nan"),
            json!("inf"),
            json!("1e999"),
            json!("x"),
            json!(true),
        ] {
            assert_invalid(
                gauge_value(json!({"asDouble": bad})),
                &format!("{METRIC_PREFIX}.gauge.dataPoints[0].asDouble"),
                "expected a double",
            );
        }
        assert_eq!(
            attr(json!({"doubleValue": "-Infinity"})).unwrap(),
            Some(Av::DoubleValue(f64::NEG_INFINITY))
        );
        assert_eq!(
            attr(json!({"intValue": "123"})).unwrap(),
            Some(Av::IntValue(123))
        );
    }

    #[test]
    fn enums() {
        assert_eq!(
            one_log(json!({"severityNumber": "SEVERITY_NUMBER_FATAL4"}))
                .unwrap()
                .severity_number,
            24
        );
        assert_eq!(
            one_log(json!({"severityNumber": "17"}))
                .unwrap()
                .severity_number,
            17
        );
        assert_eq!(
            one_span(json!({"kind": "SPAN_KIND_CONSUMER"}))
                .unwrap()
                .kind,
            5
        );
        assert_eq!(one_span(json!({"kind": 0})).unwrap().kind, 0);
        assert_invalid(
            one_span(json!({"kind": "SPAN_KIND_X"})),
            &format!("{SPAN_PREFIX}.kind"),
            r#"unknown SpanKind "SPAN_KIND_X""#,
        );
        assert_invalid(
            one_span(json!({"kind": 6})),
            &format!("{SPAN_PREFIX}.kind"),
            "unknown SpanKind 6",
        );
        assert_invalid(
            one_span(json!({"kind": true})),
            &format!("{SPAN_PREFIX}.kind"),
            "expected a SpanKind (integer or name), found true",
        );
        assert_invalid(
            one_log(json!({"severityNumber": 25})),
            &format!("{LOG_PREFIX}.severityNumber"),
            "unknown SeverityNumber 25",
        );
        assert_invalid(
            one_log(json!({"severityNumber": "INFO"})),
            &format!("{LOG_PREFIX}.severityNumber"),
            r#"unknown SeverityNumber "INFO""#,
        );
        assert_invalid(
            one_span(json!({"status": {"code": 3}})),
            &format!("{SPAN_PREFIX}.status.code"),
            "unknown StatusCode 3",
        );
        assert_invalid(
            one_metric(json!({"sum": {"dataPoints": [], "aggregationTemporality": "CUMULATIVE"}})),
            &format!("{METRIC_PREFIX}.sum.aggregationTemporality"),
            r#"unknown AggregationTemporality "CUMULATIVE""#,
        );
    }

    #[test]
    fn metric_shape_errors() {
        assert_invalid(
            one_metric(json!({"name": "x", "unit": "1"})),
            METRIC_PREFIX,
            "metric has no data: expected one of gauge, sum, histogram, exponentialHistogram, summary",
        );
        assert_invalid(
            one_metric(json!({"name": "x", "gauge": null})),
            METRIC_PREFIX,
            "metric has no data",
        );
        assert_invalid(
            one_metric(json!({"gauge": {"dataPoints": []}, "sum": {"dataPoints": []}})),
            METRIC_PREFIX,
            "conflicting fields gauge and sum",
        );
        assert_invalid(
            one_metric(json!({"gauge": {}})),
            &format!("{METRIC_PREFIX}.gauge.dataPoints"),
            "missing",
        );
        assert_invalid(
            one_metric(json!({"exponentialHistogram": {"aggregationTemporality": 1}})),
            &format!("{METRIC_PREFIX}.exponentialHistogram.dataPoints"),
            "missing",
        );
        assert_invalid(
            one_metric(json!({"summary": {"dataPoints": {}}})),
            &format!("{METRIC_PREFIX}.summary.dataPoints"),
            "expected an array, found an object",
        );
        assert_invalid(
            one_metric(json!({"gauge": []})),
            &format!("{METRIC_PREFIX}.gauge"),
            "expected an object, found an array",
        );
        assert_invalid(
            gauge_value(json!({"timeUnixNano": "1"})),
            &format!("{METRIC_PREFIX}.gauge.dataPoints[0]"),
            "no value: expected asDouble or asInt",
        );
        assert_invalid(
            gauge_value(json!({"asInt": 1, "asDouble": 1.0})),
            &format!("{METRIC_PREFIX}.gauge.dataPoints[0]"),
            "conflicting fields asDouble and asInt",
        );
        assert_invalid(
            one_metric(
                json!({"histogram": {"dataPoints": [{"exemplars": [{"timeUnixNano": 1}]}]}}),
            ),
            &format!("{METRIC_PREFIX}.histogram.dataPoints[0].exemplars[0]"),
            "no value: expected asDouble or asInt",
        );
        // A point flagged "no recorded value" needs no value.
        assert_eq!(gauge_value(json!({"flags": 1})).unwrap(), None);
    }

    #[test]
    fn any_value_errors() {
        let prefix = format!("{LOG_PREFIX}.attributes[0].value");
        assert_eq!(attr(json!({})).unwrap(), None);
        assert_invalid(
            attr(json!({"boolValue": "yes"})),
            &format!("{prefix}.boolValue"),
            r#"expected true or false, found "yes""#,
        );
        assert_invalid(
            attr(json!({"stringValue": "a", "intValue": 1})),
            &prefix,
            "conflicting fields stringValue and intValue",
        );
        assert_invalid(
            attr(json!({"stringValue": 5})),
            &format!("{prefix}.stringValue"),
            "expected a string, found 5",
        );
        assert_invalid(
            attr(json!({"bytesValue": "not base64!"})),
            &format!("{prefix}.bytesValue"),
            "expected a base64 string",
        );
        assert_invalid(
            attr(json!("plain")),
            &prefix,
            r#"expected an object, found "plain""#,
        );
        assert_invalid(
            attr(json!({"arrayValue": {"values": [1]}})),
            &format!("{prefix}.arrayValue.values[0]"),
            "expected an object, found 1",
        );
        assert_invalid(
            attr(json!({"arrayValue": []})),
            &format!("{prefix}.arrayValue"),
            "expected an object",
        );
        assert_invalid(
            attr(
                json!({"kvlistValue": {"values": [{"key": "k", "value": {"kvlistValue": {"values": [{"key": 1}]}}}]}}),
            ),
            &format!("{prefix}.kvlistValue.values[0].value.kvlistValue.values[0].key"),
            "expected a string, found 1",
        );
        assert_invalid(
            one_log(json!({"attributes": [{"key": "k", "value": {"intValue": 1}}, null]})),
            &format!("{LOG_PREFIX}.attributes[1]"),
            "expected an object, found null",
        );
        assert_invalid(
            one_log(json!({"body": {"bytes_value": "*"}})),
            &format!("{LOG_PREFIX}.body.bytesValue"),
            "base64",
        );
    }

    #[test]
    fn base64_variants() {
        for text in ["aGk=", "aGk", "-_8=", "+/8", "+/8="] {
            assert!(attr(json!({"bytesValue": text})).is_ok(), "{text}");
        }
        assert_eq!(
            attr(json!({"bytesValue": "aGk"})).unwrap(),
            Some(Av::BytesValue(b"hi".to_vec()))
        );
        assert_eq!(
            attr(json!({"bytesValue": "-_8"})).unwrap(),
            Some(Av::BytesValue(vec![0xfb, 0xff]))
        );
        assert_eq!(
            attr(json!({"bytesValue": ""})).unwrap(),
            Some(Av::BytesValue(vec![]))
        );
    }

    #[test]
    fn request_level_errors() {
        let err = decode_logs(b"{\"resourceLogs\": [").unwrap_err();
        assert_eq!(err.kind, PayloadErrorKind::Malformed);
        assert_eq!(err.field, "");
        assert!(err.message.starts_with("invalid JSON: "), "{err}");
        assert_eq!(
            decode_traces(b"").unwrap_err().kind,
            PayloadErrorKind::Malformed
        );
        assert_invalid(
            decode_metrics(b"[]"),
            "",
            "expected an object, found an array",
        );
        assert_invalid(decode_logs(b"null"), "", "expected an object, found null");
        assert_invalid(
            logs(json!({"resourceLogs": {}})),
            "resourceLogs",
            "expected an array, found an object",
        );
        assert_invalid(
            traces(json!({"resourceSpans": [{"scopeSpans": "x"}]})),
            "resourceSpans[0].scopeSpans",
            "expected an array",
        );
        assert_invalid(
            metrics(
                json!({"resourceMetrics": [{"resource": {"attributes": [{"key": "a", "value": {"boolValue": 1}}]}}]}),
            ),
            "resourceMetrics[0].resource.attributes[0].value.boolValue",
            "expected true or false, found 1",
        );
        assert_invalid(
            traces(json!({"resourceSpans": [{"scopeSpans": [{"scope": {"name": ["x"]}}]}]})),
            "resourceSpans[0].scopeSpans[0].scope.name",
            "expected a string, found an array",
        );
    }

    #[test]
    fn long_values_are_truncated_in_messages() {
        let long = "x".repeat(100);
        let err = one_log(json!({"traceId": long})).unwrap_err();
        assert!(
            err.message.ends_with(&format!("\"{}…", "x".repeat(39))),
            "{}",
            err.message
        );
        assert!(err.message.len() < 150);
    }

    #[test]
    fn nesting_is_bounded_by_the_json_parser() {
        let nested = |levels: usize| {
            let mut value = r#"{"intValue":1}"#.to_owned();
            for _ in 0..levels {
                value = format!(r#"{{"arrayValue":{{"values":[{value}]}}}}"#);
            }
            format!(
                r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{value}}}]}}]}}]}}"#
            )
        };
        assert!(decode_logs(nested(38).as_bytes()).is_ok());
        let err = decode_logs(nested(1000).as_bytes()).unwrap_err();
        assert_eq!(err.kind, PayloadErrorKind::Malformed, "{err}");
    }

    macro_rules! fixture {
        ($path:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/fixtures/",
                $path
            ))
        };
    }

    /// The opentelemetry-proto repository's example payloads.
    #[test]
    fn upstream_examples_decode() {
        let request = decode_logs(fixture!("otlp-examples/logs.json")).unwrap();
        let record = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.trace_id, trace_bytes());
        assert_eq!(record.span_id, span_bytes());
        assert_eq!(record.attributes.len(), 6);

        let request = decode_traces(fixture!("otlp-examples/trace.json")).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!((span.kind, span.trace_id.clone()), (2, trace_bytes()));
        assert_eq!(span.end_time_unix_nano, 1544712661000000000);

        let request = decode_metrics(fixture!("otlp-examples/metrics.json")).unwrap();
        assert_eq!(
            request.resource_metrics[0].scope_metrics[0].metrics.len(),
            3
        );
    }

    /// This revision of upstream `events.json` writes `"kvlistValue": [...]`
    /// instead of `{"values": [...]}`; it is refused, the fixed form decodes.
    #[test]
    fn upstream_events_example() {
        let body = fixture!("otlp-examples/events.json");
        assert_invalid(
            decode_logs(body),
            &format!("{LOG_PREFIX}.body.kvlistValue"),
            "expected an object, found an array",
        );
        let mut doc: Value = serde_json::from_slice(body).unwrap();
        let kvlist = doc
            .pointer_mut("/resourceLogs/0/scopeLogs/0/logRecords/0/body/kvlistValue")
            .unwrap();
        *kvlist = json!({ "values": kvlist.take() });
        let record =
            one_log(doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0].take()).unwrap();
        let Some(Av::KvlistValue(body)) = record.body.and_then(|b| b.value) else {
            panic!("body is not a kvlist")
        };
        assert_eq!(body.values[0], kv("type", Av::IntValue(0)));
        assert_eq!(body.values.len(), 4);
    }

    #[test]
    fn project_metrics_fixture_decodes() {
        let request = decode_metrics(fixture!("otlp-extra/metrics-all-kinds.json")).unwrap();
        let kinds: Vec<_> = request.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| match m.data.as_ref().unwrap() {
                metric::Data::Gauge(_) => "gauge",
                metric::Data::Sum(_) => "sum",
                metric::Data::Histogram(_) => "histogram",
                metric::Data::ExponentialHistogram(e) => {
                    assert_eq!(
                        e.data_points[0].negative.as_ref().unwrap().bucket_counts,
                        [2, 1]
                    );
                    "exponentialHistogram"
                }
                metric::Data::Summary(s) => {
                    assert_eq!(s.data_points[0].quantile_values.len(), 4);
                    "summary"
                }
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "gauge",
                "sum",
                "histogram",
                "exponentialHistogram",
                "summary"
            ]
        );
    }
}
