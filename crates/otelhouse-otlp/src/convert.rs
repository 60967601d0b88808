//! OTLP requests → Arrow record batches with the signal tables' columns.
//!
//! The conversion is a pure function of the request: the WAL stores requests,
//! and replaying one after a crash must produce exactly the rows the first
//! conversion produced. (Anything time-dependent, like stamping a missing
//! timestamp, happens before the WAL, in [`crate::window`].)

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, ListBuilder, MapBuilder, StringBuilder,
    TimestampNanosecondBuilder, UInt8Builder, UInt32Builder, UInt64Builder,
};
use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, exemplar, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use otelhouse_schema::Table;

use crate::{ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest};

/// The rows of one request, per table (only tables that received rows).
pub type TableBatches = Vec<(Table, RecordBatch)>;

pub(crate) type MapB = MapBuilder<StringBuilder, StringBuilder>;

fn ts() -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::new().with_timezone("UTC")
}

pub(crate) fn map() -> MapB {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

/// Nanoseconds as stored in a `DateTime64(9)` column (i64 covers until 2262).
pub(crate) fn nanos(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Lowercase hex of an id; empty ids stay empty.
pub fn hex_id(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Shortest round-trip decimal form of a double, ClickHouse's spelling for
/// the non-finite values.
pub fn format_f64(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("nan");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "inf" } else { "-inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The string form of an attribute or body value (schema.md): strings as-is,
/// ints in decimal, doubles shortest round-trip, bools `true`/`false`,
/// bytes base64, arrays and kvlists as JSON.
pub fn any_value_string(v: Option<&AnyValue>, out: &mut String) {
    match v.and_then(|v| v.value.as_ref()) {
        // String-table references exist only in profiles; validation refuses them.
        None | Some(Value::StringValueStrindex(_)) => {}
        Some(Value::StringValue(s)) => out.push_str(s),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::DoubleValue(d)) => format_f64(*d, out),
        Some(Value::BytesValue(b)) => {
            base64::engine::general_purpose::STANDARD.encode_string(b, out)
        }
        Some(other @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => {
            out.push_str(&any_value_json(Some(other)).to_string());
        }
    }
}

fn any_value_json(v: Option<&Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        None | Some(Value::StringValueStrindex(_)) => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or_else(
            || {
                let mut s = String::new();
                format_f64(*d, &mut s);
                J::String(s)
            },
            J::Number,
        ),
        Some(Value::BytesValue(b)) => {
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Value::ArrayValue(a)) => J::Array(
            a.values
                .iter()
                .map(|v| any_value_json(v.value.as_ref()))
                .collect(),
        ),
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        any_value_json(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                    )
                })
                .collect(),
        ),
    }
}

/// Appends one attribute map; `scratch` is reused to avoid an allocation per value.
fn append_attrs(b: &mut MapB, attrs: &[KeyValue], scratch: &mut String) {
    for kv in attrs {
        b.keys().append_value(&kv.key);
        scratch.clear();
        any_value_string(kv.value.as_ref(), scratch);
        b.values().append_value(&*scratch);
    }
    b.append(true).expect("keys and values appended in pairs");
}

/// Appends an attribute map rendered earlier (see [`Context`]).
pub(crate) fn append_pairs(b: &mut MapB, pairs: &[(String, String)]) {
    for (k, v) in pairs {
        b.keys().append_value(k);
        b.values().append_value(v);
    }
    b.append(true).expect("keys and values appended in pairs");
}

fn render_attrs(attrs: &[KeyValue]) -> Vec<(String, String)> {
    attrs
        .iter()
        .map(|kv| {
            let mut v = String::new();
            any_value_string(kv.value.as_ref(), &mut v);
            (kv.key.clone(), v)
        })
        .collect()
}

/// Appends an id as lowercase hex without allocating.
pub(crate) fn append_hex(b: &mut StringBuilder, bytes: &[u8]) {
    let mut buf = [0u8; 64];
    match buf.get_mut(..bytes.len() * 2) {
        Some(out) => {
            hex::encode_to_slice(bytes, out).expect("output is twice the input");
            b.append_value(std::str::from_utf8(out).expect("hex is ASCII"));
        }
        None => b.append_value(hex_id(bytes)),
    }
}

fn service_name(resource: Option<&Resource>) -> String {
    let mut s = String::new();
    if let Some(kv) = resource.and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
    {
        any_value_string(kv.value.as_ref(), &mut s);
    }
    s
}

fn finish(table: Table, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(table.schema(), columns).unwrap_or_else(|e| {
        panic!(
            "converter for {} out of step with its schema: {e}",
            table.name()
        )
    })
}

/// Per-resource and per-scope columns shared by every row under them,
/// rendered once per resource/scope rather than per row.
pub(crate) struct Context {
    service: String,
    resource: Vec<(String, String)>,
    scope_attrs: Vec<(String, String)>,
    resource_schema_url: String,
    scope_name: String,
    scope_version: String,
    scope_schema_url: String,
    scope_dropped: u32,
}

impl Context {
    pub(crate) fn new(resource: Option<&Resource>, resource_schema_url: &str) -> Self {
        Context {
            service: service_name(resource),
            resource: render_attrs(resource.map_or(&[][..], |r| &r.attributes[..])),
            scope_attrs: Vec::new(),
            resource_schema_url: resource_schema_url.to_owned(),
            scope_name: String::new(),
            scope_version: String::new(),
            scope_schema_url: String::new(),
            scope_dropped: 0,
        }
    }
    pub(crate) fn scope(&mut self, scope: Option<&InstrumentationScope>, schema_url: &str) {
        self.scope_name = scope.map(|s| s.name.clone()).unwrap_or_default();
        self.scope_version = scope.map(|s| s.version.clone()).unwrap_or_default();
        self.scope_dropped = scope.map_or(0, |s| s.dropped_attributes_count);
        self.scope_schema_url = schema_url.to_owned();
        self.scope_attrs = render_attrs(scope.map_or(&[][..], |s| &s.attributes[..]));
    }
}

/// The columns of `otel_logs` being built. Shared by [`logs`] and the
/// direct protobuf decoder ([`crate::fast`]), so both produce identical rows.
pub(crate) struct LogColumns {
    pub rows: usize,
    pub timestamp: TimestampNanosecondBuilder,
    pub trace_id: StringBuilder,
    pub span_id: StringBuilder,
    pub trace_flags: UInt8Builder,
    pub severity_text: StringBuilder,
    pub severity_number: UInt8Builder,
    pub service: StringBuilder,
    pub body: StringBuilder,
    pub res_url: StringBuilder,
    pub res_attrs: MapB,
    pub scope_url: StringBuilder,
    pub scope_name: StringBuilder,
    pub scope_version: StringBuilder,
    pub scope_attrs: MapB,
    pub log_attrs: MapB,
    pub event_name: StringBuilder,
}

impl LogColumns {
    pub fn new() -> Self {
        LogColumns {
            rows: 0,
            timestamp: ts(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            trace_flags: UInt8Builder::new(),
            severity_text: StringBuilder::new(),
            severity_number: UInt8Builder::new(),
            service: StringBuilder::new(),
            body: StringBuilder::new(),
            res_url: StringBuilder::new(),
            res_attrs: map(),
            scope_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attrs: map(),
            log_attrs: map(),
            event_name: StringBuilder::new(),
        }
    }

    /// Appends the resource and scope columns of one row.
    pub fn append_context(&mut self, ctx: &Context) {
        self.rows += 1;
        self.service.append_value(&ctx.service);
        self.res_url.append_value(&ctx.resource_schema_url);
        append_pairs(&mut self.res_attrs, &ctx.resource);
        self.scope_url.append_value(&ctx.scope_schema_url);
        self.scope_name.append_value(&ctx.scope_name);
        self.scope_version.append_value(&ctx.scope_version);
        append_pairs(&mut self.scope_attrs, &ctx.scope_attrs);
    }

    pub fn finish(mut self) -> TableBatches {
        if self.rows == 0 {
            return Vec::new();
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_flags.finish()),
            Arc::new(self.severity_text.finish()),
            Arc::new(self.severity_number.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.res_url.finish()),
            Arc::new(self.res_attrs.finish()),
            Arc::new(self.scope_url.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.scope_attrs.finish()),
            Arc::new(self.log_attrs.finish()),
            Arc::new(self.event_name.finish()),
        ];
        vec![(Table::Logs, finish(Table::Logs, columns))]
    }
}

/// The time a log record is filed under: its own, else when it was observed.
pub fn log_time(time_unix_nano: u64, observed_time_unix_nano: u64) -> u64 {
    if time_unix_nano != 0 {
        time_unix_nano
    } else {
        observed_time_unix_nano
    }
}

pub fn logs(req: &ExportLogsServiceRequest) -> TableBatches {
    let mut c = LogColumns::new();
    let mut scratch = String::new();
    for rl in &req.resource_logs {
        let mut ctx = Context::new(rl.resource.as_ref(), &rl.schema_url);
        for sl in &rl.scope_logs {
            ctx.scope(sl.scope.as_ref(), &sl.schema_url);
            for lr in &sl.log_records {
                c.append_context(&ctx);
                c.timestamp.append_value(nanos(log_time(
                    lr.time_unix_nano,
                    lr.observed_time_unix_nano,
                )));
                append_hex(&mut c.trace_id, &lr.trace_id);
                append_hex(&mut c.span_id, &lr.span_id);
                c.trace_flags.append_value((lr.flags & 0xff) as u8);
                c.severity_text.append_value(&lr.severity_text);
                c.severity_number
                    .append_value(lr.severity_number.clamp(0, 255) as u8);
                scratch.clear();
                any_value_string(lr.body.as_ref(), &mut scratch);
                c.body.append_value(&scratch);
                append_attrs(&mut c.log_attrs, &lr.attributes, &mut scratch);
                c.event_name.append_value(&lr.event_name);
            }
        }
    }
    c.finish()
}

pub fn span_kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "Unspecified",
    }
}

pub fn status_code_name(code: i32) -> &'static str {
    match code {
        1 => "Ok",
        2 => "Error",
        _ => "Unset",
    }
}

/// The columns of `otel_traces` being built; shared with [`crate::fast`].
pub(crate) struct SpanColumns {
    pub rows: usize,
    pub timestamp: TimestampNanosecondBuilder,
    pub trace_id: StringBuilder,
    pub span_id: StringBuilder,
    pub parent: StringBuilder,
    pub trace_state: StringBuilder,
    pub name: StringBuilder,
    pub kind: StringBuilder,
    pub service: StringBuilder,
    pub res_attrs: MapB,
    pub scope_name: StringBuilder,
    pub scope_version: StringBuilder,
    pub span_attrs: MapB,
    pub duration: UInt64Builder,
    pub status_code: StringBuilder,
    pub status_message: StringBuilder,
    pub ev_ts: ListBuilder<TimestampNanosecondBuilder>,
    pub ev_name: ListBuilder<StringBuilder>,
    pub ev_attrs: ListBuilder<MapB>,
    pub link_trace: ListBuilder<StringBuilder>,
    pub link_span: ListBuilder<StringBuilder>,
    pub link_state: ListBuilder<StringBuilder>,
    pub link_attrs: ListBuilder<MapB>,
}

impl SpanColumns {
    pub fn new() -> Self {
        SpanColumns {
            rows: 0,
            timestamp: ts(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            service: StringBuilder::new(),
            res_attrs: map(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            span_attrs: map(),
            duration: UInt64Builder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            ev_ts: ListBuilder::new(ts()),
            ev_name: ListBuilder::new(StringBuilder::new()),
            ev_attrs: ListBuilder::new(map()),
            link_trace: ListBuilder::new(StringBuilder::new()),
            link_span: ListBuilder::new(StringBuilder::new()),
            link_state: ListBuilder::new(StringBuilder::new()),
            link_attrs: ListBuilder::new(map()),
        }
    }

    /// Appends the resource and scope columns of one row.
    pub fn append_context(&mut self, ctx: &Context) {
        self.rows += 1;
        self.service.append_value(&ctx.service);
        append_pairs(&mut self.res_attrs, &ctx.resource);
        self.scope_name.append_value(&ctx.scope_name);
        self.scope_version.append_value(&ctx.scope_version);
    }

    /// Closes the event and link lists of the current row.
    pub fn end_row(&mut self) {
        self.ev_ts.append(true);
        self.ev_name.append(true);
        self.ev_attrs.append(true);
        self.link_trace.append(true);
        self.link_span.append(true);
        self.link_state.append(true);
        self.link_attrs.append(true);
    }

    pub fn finish(mut self) -> TableBatches {
        if self.rows == 0 {
            return Vec::new();
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.res_attrs.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.span_attrs.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.ev_ts.finish()),
            Arc::new(self.ev_name.finish()),
            Arc::new(self.ev_attrs.finish()),
            Arc::new(self.link_trace.finish()),
            Arc::new(self.link_span.finish()),
            Arc::new(self.link_state.finish()),
            Arc::new(self.link_attrs.finish()),
        ];
        vec![(Table::Traces, finish(Table::Traces, columns))]
    }
}

pub fn traces(req: &ExportTraceServiceRequest) -> TableBatches {
    let mut c = SpanColumns::new();
    let mut scratch = String::new();
    for rs in &req.resource_spans {
        let mut ctx = Context::new(rs.resource.as_ref(), &rs.schema_url);
        for ss in &rs.scope_spans {
            ctx.scope(ss.scope.as_ref(), &ss.schema_url);
            for s in &ss.spans {
                c.append_context(&ctx);
                c.timestamp.append_value(nanos(s.start_time_unix_nano));
                append_hex(&mut c.trace_id, &s.trace_id);
                append_hex(&mut c.span_id, &s.span_id);
                append_hex(&mut c.parent, &s.parent_span_id);
                c.trace_state.append_value(&s.trace_state);
                c.name.append_value(&s.name);
                c.kind.append_value(span_kind_name(s.kind));
                append_attrs(&mut c.span_attrs, &s.attributes, &mut scratch);
                c.duration
                    .append_value(s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano));
                let status = s.status.as_ref();
                c.status_code
                    .append_value(status_code_name(status.map_or(0, |st| st.code)));
                c.status_message
                    .append_value(status.map_or("", |st| &st.message));
                for e in &s.events {
                    c.ev_ts.values().append_value(nanos(e.time_unix_nano));
                    c.ev_name.values().append_value(&e.name);
                    append_attrs(c.ev_attrs.values(), &e.attributes, &mut scratch);
                }
                for l in &s.links {
                    append_hex(c.link_trace.values(), &l.trace_id);
                    append_hex(c.link_span.values(), &l.span_id);
                    c.link_state.values().append_value(&l.trace_state);
                    append_attrs(c.link_attrs.values(), &l.attributes, &mut scratch);
                }
                c.end_row();
            }
        }
    }
    c.finish()
}

/// The columns every metric table starts with (schema's `METRIC_COMMON_COLUMNS`).
struct MetricCommon {
    rows: usize,
    res_attrs: MapB,
    res_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attrs: MapB,
    scope_dropped: UInt32Builder,
    scope_url: StringBuilder,
    service: StringBuilder,
    name: StringBuilder,
    description: StringBuilder,
    unit: StringBuilder,
    attrs: MapB,
    start: TimestampNanosecondBuilder,
    time: TimestampNanosecondBuilder,
    flags: UInt32Builder,
    ex_attrs: ListBuilder<MapB>,
    ex_time: ListBuilder<TimestampNanosecondBuilder>,
    ex_value: ListBuilder<Float64Builder>,
    ex_span: ListBuilder<StringBuilder>,
    ex_trace: ListBuilder<StringBuilder>,
}

/// What a data point contributes to the common columns.
struct Point<'a> {
    attrs: &'a [KeyValue],
    start: u64,
    time: u64,
    flags: u32,
    exemplars: &'a [Exemplar],
}

/// The resource, scope and metric a point belongs to.
struct MetricRef<'a> {
    ctx: &'a Context,
    name: &'a str,
    description: &'a str,
    unit: &'a str,
}

impl MetricCommon {
    fn new() -> Self {
        MetricCommon {
            rows: 0,
            res_attrs: map(),
            res_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attrs: map(),
            scope_dropped: UInt32Builder::new(),
            scope_url: StringBuilder::new(),
            service: StringBuilder::new(),
            name: StringBuilder::new(),
            description: StringBuilder::new(),
            unit: StringBuilder::new(),
            attrs: map(),
            start: ts(),
            time: ts(),
            flags: UInt32Builder::new(),
            ex_attrs: ListBuilder::new(map()),
            ex_time: ListBuilder::new(ts()),
            ex_value: ListBuilder::new(Float64Builder::new()),
            ex_span: ListBuilder::new(StringBuilder::new()),
            ex_trace: ListBuilder::new(StringBuilder::new()),
        }
    }

    fn append(&mut self, m: &MetricRef, p: Point, scratch: &mut String) {
        self.rows += 1;
        append_pairs(&mut self.res_attrs, &m.ctx.resource);
        self.res_url.append_value(&m.ctx.resource_schema_url);
        self.scope_name.append_value(&m.ctx.scope_name);
        self.scope_version.append_value(&m.ctx.scope_version);
        append_pairs(&mut self.scope_attrs, &m.ctx.scope_attrs);
        self.scope_dropped.append_value(m.ctx.scope_dropped);
        self.scope_url.append_value(&m.ctx.scope_schema_url);
        self.service.append_value(&m.ctx.service);
        self.name.append_value(m.name);
        self.description.append_value(m.description);
        self.unit.append_value(m.unit);
        append_attrs(&mut self.attrs, p.attrs, scratch);
        self.start.append_value(nanos(p.start));
        self.time.append_value(nanos(p.time));
        self.flags.append_value(p.flags);
        for e in p.exemplars {
            append_attrs(self.ex_attrs.values(), &e.filtered_attributes, scratch);
            self.ex_time.values().append_value(nanos(e.time_unix_nano));
            self.ex_value.values().append_value(match e.value {
                Some(exemplar::Value::AsDouble(d)) => d,
                Some(exemplar::Value::AsInt(i)) => i as f64,
                None => 0.0,
            });
            append_hex(self.ex_span.values(), &e.span_id);
            append_hex(self.ex_trace.values(), &e.trace_id);
        }
        self.ex_attrs.append(true);
        self.ex_time.append(true);
        self.ex_value.append(true);
        self.ex_span.append(true);
        self.ex_trace.append(true);
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.res_attrs.finish()),
            Arc::new(self.res_url.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.scope_attrs.finish()),
            Arc::new(self.scope_dropped.finish()),
            Arc::new(self.scope_url.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.attrs.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.ex_attrs.finish()),
            Arc::new(self.ex_time.finish()),
            Arc::new(self.ex_value.finish()),
            Arc::new(self.ex_span.finish()),
            Arc::new(self.ex_trace.finish()),
        ]
    }
}

fn u64_list() -> ListBuilder<UInt64Builder> {
    ListBuilder::new(UInt64Builder::new())
}
fn f64_list() -> ListBuilder<Float64Builder> {
    ListBuilder::new(Float64Builder::new())
}

fn number_value(v: Option<&number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

#[derive(Default)]
struct GaugeCols {
    value: Float64Builder,
}
#[derive(Default)]
struct SumCols {
    value: Float64Builder,
    temporality: Int32Builder,
    monotonic: BooleanBuilder,
}
struct HistogramCols {
    count: UInt64Builder,
    sum: Float64Builder,
    buckets: ListBuilder<UInt64Builder>,
    bounds: ListBuilder<Float64Builder>,
    min: Float64Builder,
    max: Float64Builder,
    temporality: Int32Builder,
}
struct ExpHistogramCols {
    count: UInt64Builder,
    sum: Float64Builder,
    scale: Int32Builder,
    zero_count: UInt64Builder,
    pos_offset: Int32Builder,
    pos_buckets: ListBuilder<UInt64Builder>,
    neg_offset: Int32Builder,
    neg_buckets: ListBuilder<UInt64Builder>,
    min: Float64Builder,
    max: Float64Builder,
    temporality: Int32Builder,
}
struct SummaryCols {
    count: UInt64Builder,
    sum: Float64Builder,
    quantile: ListBuilder<Float64Builder>,
    value: ListBuilder<Float64Builder>,
}

pub fn metrics(req: &ExportMetricsServiceRequest) -> TableBatches {
    let mut common: [MetricCommon; 5] = std::array::from_fn(|_| MetricCommon::new());
    let mut gauge = GaugeCols::default();
    let mut sum = SumCols::default();
    let mut hist = HistogramCols {
        count: UInt64Builder::new(),
        sum: Float64Builder::new(),
        buckets: u64_list(),
        bounds: f64_list(),
        min: Float64Builder::new(),
        max: Float64Builder::new(),
        temporality: Int32Builder::new(),
    };
    let mut exp = ExpHistogramCols {
        count: UInt64Builder::new(),
        sum: Float64Builder::new(),
        scale: Int32Builder::new(),
        zero_count: UInt64Builder::new(),
        pos_offset: Int32Builder::new(),
        pos_buckets: u64_list(),
        neg_offset: Int32Builder::new(),
        neg_buckets: u64_list(),
        min: Float64Builder::new(),
        max: Float64Builder::new(),
        temporality: Int32Builder::new(),
    };
    let mut summary = SummaryCols {
        count: UInt64Builder::new(),
        sum: Float64Builder::new(),
        quantile: f64_list(),
        value: f64_list(),
    };
    let [c_gauge, c_sum, c_hist, c_exp, c_summary] = &mut common;
    let mut scratch = String::new();
    for rm in &req.resource_metrics {
        let mut ctx = Context::new(rm.resource.as_ref(), &rm.schema_url);
        for sm in &rm.scope_metrics {
            ctx.scope(sm.scope.as_ref(), &sm.schema_url);
            for m in &sm.metrics {
                let mref = MetricRef {
                    ctx: &ctx,
                    name: &m.name,
                    description: &m.description,
                    unit: &m.unit,
                };
                match &m.data {
                    None => {}
                    Some(Data::Gauge(g)) => {
                        for p in &g.data_points {
                            c_gauge.append(
                                &mref,
                                Point {
                                    attrs: &p.attributes,
                                    start: p.start_time_unix_nano,
                                    time: p.time_unix_nano,
                                    flags: p.flags,
                                    exemplars: &p.exemplars,
                                },
                                &mut scratch,
                            );
                            gauge.value.append_value(number_value(p.value.as_ref()));
                        }
                    }
                    Some(Data::Sum(s)) => {
                        for p in &s.data_points {
                            c_sum.append(
                                &mref,
                                Point {
                                    attrs: &p.attributes,
                                    start: p.start_time_unix_nano,
                                    time: p.time_unix_nano,
                                    flags: p.flags,
                                    exemplars: &p.exemplars,
                                },
                                &mut scratch,
                            );
                            sum.value.append_value(number_value(p.value.as_ref()));
                            sum.temporality.append_value(s.aggregation_temporality);
                            sum.monotonic.append_value(s.is_monotonic);
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        for p in &h.data_points {
                            c_hist.append(
                                &mref,
                                Point {
                                    attrs: &p.attributes,
                                    start: p.start_time_unix_nano,
                                    time: p.time_unix_nano,
                                    flags: p.flags,
                                    exemplars: &p.exemplars,
                                },
                                &mut scratch,
                            );
                            hist.count.append_value(p.count);
                            hist.sum.append_value(p.sum.unwrap_or(0.0));
                            hist.buckets
                                .append_value(p.bucket_counts.iter().map(|c| Some(*c)));
                            hist.bounds
                                .append_value(p.explicit_bounds.iter().map(|c| Some(*c)));
                            hist.min.append_value(p.min.unwrap_or(0.0));
                            hist.max.append_value(p.max.unwrap_or(0.0));
                            hist.temporality.append_value(h.aggregation_temporality);
                        }
                    }
                    Some(Data::ExponentialHistogram(h)) => {
                        for p in &h.data_points {
                            c_exp.append(
                                &mref,
                                Point {
                                    attrs: &p.attributes,
                                    start: p.start_time_unix_nano,
                                    time: p.time_unix_nano,
                                    flags: p.flags,
                                    exemplars: &p.exemplars,
                                },
                                &mut scratch,
                            );
                            exp.count.append_value(p.count);
                            exp.sum.append_value(p.sum.unwrap_or(0.0));
                            exp.scale.append_value(p.scale);
                            exp.zero_count.append_value(p.zero_count);
                            let pos = p.positive.as_ref();
                            exp.pos_offset.append_value(pos.map_or(0, |b| b.offset));
                            exp.pos_buckets.append_value(
                                pos.into_iter()
                                    .flat_map(|b| b.bucket_counts.iter().map(|c| Some(*c))),
                            );
                            let neg = p.negative.as_ref();
                            exp.neg_offset.append_value(neg.map_or(0, |b| b.offset));
                            exp.neg_buckets.append_value(
                                neg.into_iter()
                                    .flat_map(|b| b.bucket_counts.iter().map(|c| Some(*c))),
                            );
                            exp.min.append_value(p.min.unwrap_or(0.0));
                            exp.max.append_value(p.max.unwrap_or(0.0));
                            exp.temporality.append_value(h.aggregation_temporality);
                        }
                    }
                    Some(Data::Summary(s)) => {
                        for p in &s.data_points {
                            c_summary.append(
                                &mref,
                                Point {
                                    attrs: &p.attributes,
                                    start: p.start_time_unix_nano,
                                    time: p.time_unix_nano,
                                    flags: p.flags,
                                    exemplars: &[],
                                },
                                &mut scratch,
                            );
                            summary.count.append_value(p.count);
                            summary.sum.append_value(p.sum);
                            summary
                                .quantile
                                .append_value(p.quantile_values.iter().map(|q| Some(q.quantile)));
                            summary
                                .value
                                .append_value(p.quantile_values.iter().map(|q| Some(q.value)));
                        }
                    }
                }
            }
        }
    }
    let specific: [Vec<ArrayRef>; 5] = [
        vec![Arc::new(gauge.value.finish())],
        vec![
            Arc::new(sum.value.finish()),
            Arc::new(sum.temporality.finish()),
            Arc::new(sum.monotonic.finish()),
        ],
        vec![
            Arc::new(hist.count.finish()),
            Arc::new(hist.sum.finish()),
            Arc::new(hist.buckets.finish()),
            Arc::new(hist.bounds.finish()),
            Arc::new(hist.min.finish()),
            Arc::new(hist.max.finish()),
            Arc::new(hist.temporality.finish()),
        ],
        vec![
            Arc::new(exp.count.finish()),
            Arc::new(exp.sum.finish()),
            Arc::new(exp.scale.finish()),
            Arc::new(exp.zero_count.finish()),
            Arc::new(exp.pos_offset.finish()),
            Arc::new(exp.pos_buckets.finish()),
            Arc::new(exp.neg_offset.finish()),
            Arc::new(exp.neg_buckets.finish()),
            Arc::new(exp.min.finish()),
            Arc::new(exp.max.finish()),
            Arc::new(exp.temporality.finish()),
        ],
        vec![
            Arc::new(summary.count.finish()),
            Arc::new(summary.sum.finish()),
            Arc::new(summary.quantile.finish()),
            Arc::new(summary.value.finish()),
        ],
    ];
    common
        .into_iter()
        .zip(specific)
        .zip(Table::METRICS)
        .filter(|((c, _), _)| c.rows > 0)
        .map(|((c, specific), table)| {
            let mut cols = c.finish();
            cols.extend(specific);
            (table, finish(table, cols))
        })
        .collect()
}
