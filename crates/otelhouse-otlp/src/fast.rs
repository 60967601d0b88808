//! Direct OTLP/protobuf → Arrow decoding of logs and spans, without
//! building prost structs first.
//!
//! Why hand-written: decoding with prost allocates a `String` per attribute
//! key and value, which [`crate::convert`] then copies into Arrow builders
//! and drops; on the ingest benchmark that was about half the server's CPU.
//! No crate decodes protobuf straight into Arrow columns. This decoder reads
//! the wire format and appends to the same [`LogColumns`] the general path
//! uses, so both produce identical rows (a test compares them).
//!
//! It handles the common case only and says `None` for anything else —
//! malformed input, a limit passed, an array or kvlist value, a record that
//! the time window would stamp or drop, a field repeated that should not
//! be — and the caller then takes the general path (prost decode, validate,
//! window, convert), which gives the precise error or result. So this module
//! never decides what is valid; it only recognises what surely is.

use std::fmt::Write as _;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::Limits;
use crate::convert::{
    Context, LogColumns, MapB, SpanColumns, TableBatches, append_hex, format_f64, log_time, nanos,
    span_kind_name, status_code_name,
};

/// One protobuf field value.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterates the fields of one message; `None` items end it early on
/// malformed input.
struct Fields<'a> {
    buf: &'a [u8],
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(u64, Wire<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        Some(self.field())
    }
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf }
    }

    fn field(&mut self) -> Option<(u64, Wire<'a>)> {
        let key = varint(&mut self.buf)?;
        let (number, wire_type) = (key >> 3, key & 7);
        if number == 0 {
            return None;
        }
        let value = match wire_type {
            0 => Wire::Varint(varint(&mut self.buf)?),
            1 => {
                let (b, rest) = self.buf.split_first_chunk::<8>()?;
                self.buf = rest;
                Wire::Fixed64(u64::from_le_bytes(*b))
            }
            2 => {
                let len = usize::try_from(varint(&mut self.buf)?).ok()?;
                if len > self.buf.len() {
                    return None;
                }
                let (b, rest) = self.buf.split_at(len);
                self.buf = rest;
                Wire::Bytes(b)
            }
            5 => {
                let (b, rest) = self.buf.split_first_chunk::<4>()?;
                self.buf = rest;
                Wire::Fixed32(u32::from_le_bytes(*b))
            }
            _ => return None, // groups (deprecated) and invalid types
        };
        Some((number, value))
    }
}

/// UTF-8 checked with SIMD (simdutf8): every key, value and body passes
/// through here, and std's check was 17 % of this decoder's time.
fn text(b: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(b).ok()
}

/// Sets a singular field once; a second occurrence means "take the general
/// path" (protobuf would merge or let the last win).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// The parts of a message to visit after a first pass, so that fields may
/// come in any order (the resource may follow its records).
#[derive(Default)]
struct Outer<'a> {
    head: Option<&'a [u8]>,
    schema_url: Option<&'a str>,
    children: Vec<&'a [u8]>,
}

/// ResourceLogs/ResourceSpans and ScopeLogs/ScopeSpans share one shape:
/// 1 = resource or scope, 2 = repeated children, 3 = schema URL.
fn outer(msg: &[u8]) -> Option<Outer<'_>> {
    let mut o = Outer::default();
    for field in Fields::new(msg) {
        match field? {
            (1, Wire::Bytes(b)) => once(&mut o.head, b)?,
            (2, Wire::Bytes(b)) => o.children.push(b),
            (3, Wire::Bytes(b)) => once(&mut o.schema_url, text(b)?)?,
            (1..=3, _) => return None,
            _ => {}
        }
    }
    Some(o)
}

/// Walks an export request — resource, scope, records, each level's fields
/// in any order — and hands every record message to `record` with its
/// resource/scope context. Answers `None` where the general path must decide.
fn walk(
    body: &[u8],
    limits: &Limits,
    mut record: impl FnMut(&Context, &[u8]) -> Option<()>,
) -> Option<usize> {
    if limits.max_value_depth == 0 {
        return None;
    }
    let mut records = 0usize;
    for field in Fields::new(body) {
        let resource_msg = match field? {
            (1, Wire::Bytes(b)) => b,
            (1, _) => return None,
            _ => continue,
        };
        let o = outer(resource_msg)?;
        let resource = o.head.map(Resource::decode).transpose().ok()?;
        if let Some(r) = &resource {
            crate::validate::check_attributes(&r.attributes, limits).ok()?;
        }
        let mut ctx = Context::new(resource.as_ref(), o.schema_url.unwrap_or(""));
        for scope_msg in o.children {
            let s = outer(scope_msg)?;
            let scope = s.head.map(InstrumentationScope::decode).transpose().ok()?;
            if let Some(sc) = &scope {
                crate::validate::check_attributes(&sc.attributes, limits).ok()?;
            }
            ctx.scope(scope.as_ref(), s.schema_url.unwrap_or(""));
            records += s.children.len();
            if records > limits.max_records {
                return None;
            }
            for msg in s.children {
                record(&ctx, msg)?;
            }
        }
    }
    Some(records)
}

/// Appends one attribute map from KeyValue messages, checking the limits.
fn append_attrs(
    map: &mut MapB,
    attrs: &[&[u8]],
    limits: &Limits,
    scratch: &mut String,
) -> Option<()> {
    if attrs.len() > limits.max_attributes {
        return None;
    }
    for kv in attrs {
        let (mut key, mut value) = (None, None);
        for field in Fields::new(kv) {
            match field? {
                (1, Wire::Bytes(b)) => once(&mut key, text(b)?)?,
                (2, Wire::Bytes(b)) => once(&mut value, b)?,
                (1 | 2, _) => return None,
                _ => {}
            }
        }
        let key = key.unwrap_or("");
        if key.len() > limits.max_key_bytes {
            return None;
        }
        let value = match value {
            Some(v) => simple_value(v, limits, scratch)?,
            None => "",
        };
        map.keys().append_value(key);
        map.values().append_value(value);
    }
    map.append(true).ok()
}

/// Decodes a logs export request straight into `otel_logs` rows; see the
/// module docs for when it answers `None`. `oldest` is the retention cutoff
/// (unix nanos). Returns the rows and the number of records.
pub fn logs(body: &[u8], limits: &Limits, oldest: u64) -> Option<(TableBatches, usize)> {
    let mut cols = LogColumns::new();
    let mut scratch = String::new();
    let rows = walk(body, limits, |ctx, msg| {
        log_record(&mut cols, ctx, msg, limits, oldest, &mut scratch)
    })?;
    Some((cols.finish(), rows))
}

fn log_record(
    c: &mut LogColumns,
    ctx: &Context,
    msg: &[u8],
    limits: &Limits,
    oldest: u64,
    scratch: &mut String,
) -> Option<()> {
    let (mut time, mut observed, mut severity, mut flags) = (None, None, None, None);
    let (mut severity_text, mut body, mut trace_id, mut span_id, mut event_name) =
        (None, None, None, None, None);
    let mut attrs: Vec<&[u8]> = Vec::with_capacity(32);
    for field in Fields::new(msg) {
        match field? {
            (1, Wire::Fixed64(v)) => once(&mut time, v)?,
            (11, Wire::Fixed64(v)) => once(&mut observed, v)?,
            (2, Wire::Varint(v)) => once(&mut severity, v as i32)?,
            (3, Wire::Bytes(b)) => once(&mut severity_text, text(b)?)?,
            (5, Wire::Bytes(b)) => once(&mut body, b)?,
            (6, Wire::Bytes(b)) => attrs.push(b),
            (7, Wire::Varint(_)) => {}
            (8, Wire::Fixed32(v)) => once(&mut flags, v)?,
            (9, Wire::Bytes(b)) => once(&mut trace_id, b)?,
            (10, Wire::Bytes(b)) => once(&mut span_id, b)?,
            (12, Wire::Bytes(b)) => once(&mut event_name, text(b)?)?,
            (1..=3 | 5..=12, _) => return None,
            _ => {}
        }
    }
    let t = log_time(time.unwrap_or(0), observed.unwrap_or(0));
    let (trace_id, span_id) = (trace_id.unwrap_or(&[]), span_id.unwrap_or(&[]));
    let severity = severity.unwrap_or(0);
    // What the window would stamp or drop, and what validation refuses.
    if t == 0
        || t < oldest
        || !matches!(trace_id.len(), 0 | 16)
        || !matches!(span_id.len(), 0 | 8)
        || !(0..=24).contains(&severity)
    {
        return None;
    }
    c.append_context(ctx);
    c.timestamp.append_value(nanos(t));
    append_hex(&mut c.trace_id, trace_id);
    append_hex(&mut c.span_id, span_id);
    c.trace_flags
        .append_value((flags.unwrap_or(0) & 0xff) as u8);
    c.severity_text.append_value(severity_text.unwrap_or(""));
    c.severity_number.append_value(severity as u8);
    let body = match body {
        Some(b) => simple_value(b, limits, scratch)?,
        None => "",
    };
    c.body.append_value(body);
    append_attrs(&mut c.log_attrs, &attrs, limits, scratch)?;
    c.event_name.append_value(event_name.unwrap_or(""));
    Some(())
}

/// Decodes a traces export request straight into `otel_traces` rows, like
/// [`logs`]. Spans that start before `oldest` go to the general path.
pub fn traces(body: &[u8], limits: &Limits, oldest: u64) -> Option<(TableBatches, usize)> {
    let mut cols = SpanColumns::new();
    let mut scratch = String::new();
    let rows = walk(body, limits, |ctx, msg| {
        span(&mut cols, ctx, msg, limits, oldest, &mut scratch)
    })?;
    Some((cols.finish(), rows))
}

fn span(
    c: &mut SpanColumns,
    ctx: &Context,
    msg: &[u8],
    limits: &Limits,
    oldest: u64,
    scratch: &mut String,
) -> Option<()> {
    let (mut trace_id, mut span_id, mut parent, mut trace_state, mut name) =
        (None, None, None, None, None);
    let (mut kind, mut start, mut end, mut status) = (None, None, None, None);
    let mut attrs: Vec<&[u8]> = Vec::with_capacity(32);
    let mut events: Vec<&[u8]> = Vec::new();
    let mut links: Vec<&[u8]> = Vec::new();
    for field in Fields::new(msg) {
        match field? {
            (1, Wire::Bytes(b)) => once(&mut trace_id, b)?,
            (2, Wire::Bytes(b)) => once(&mut span_id, b)?,
            (3, Wire::Bytes(b)) => once(&mut trace_state, text(b)?)?,
            (4, Wire::Bytes(b)) => once(&mut parent, b)?,
            (5, Wire::Bytes(b)) => once(&mut name, text(b)?)?,
            (6, Wire::Varint(v)) => once(&mut kind, v as i32)?,
            (7, Wire::Fixed64(v)) => once(&mut start, v)?,
            (8, Wire::Fixed64(v)) => once(&mut end, v)?,
            (9, Wire::Bytes(b)) => attrs.push(b),
            (11, Wire::Bytes(b)) => events.push(b),
            (13, Wire::Bytes(b)) => links.push(b),
            (15, Wire::Bytes(b)) => once(&mut status, b)?,
            (10 | 12 | 14, Wire::Varint(_)) | (16, Wire::Fixed32(_)) => {}
            (1..=16, _) => return None,
            _ => {}
        }
    }
    let (trace_id, span_id, parent) = (
        trace_id.unwrap_or(&[]),
        span_id.unwrap_or(&[]),
        parent.unwrap_or(&[]),
    );
    let (start, kind) = (start.unwrap_or(0), kind.unwrap_or(0));
    let (mut code, mut message) = (None, None);
    for field in Fields::new(status.unwrap_or(&[])) {
        match field? {
            (2, Wire::Bytes(b)) => once(&mut message, text(b)?)?,
            (3, Wire::Varint(v)) => once(&mut code, v as i32)?,
            (2 | 3, _) => return None,
            _ => {}
        }
    }
    let code = code.unwrap_or(0);
    if start < oldest
        || !matches!(trace_id.len(), 0 | 16)
        || !matches!(span_id.len(), 0 | 8)
        || !matches!(parent.len(), 0 | 8)
        || !(0..=5).contains(&kind)
        || !(0..=2).contains(&code)
    {
        return None;
    }
    c.append_context(ctx);
    c.timestamp.append_value(nanos(start));
    append_hex(&mut c.trace_id, trace_id);
    append_hex(&mut c.span_id, span_id);
    append_hex(&mut c.parent, parent);
    c.trace_state.append_value(trace_state.unwrap_or(""));
    c.name.append_value(name.unwrap_or(""));
    c.kind.append_value(span_kind_name(kind));
    append_attrs(&mut c.span_attrs, &attrs, limits, scratch)?;
    c.duration
        .append_value(end.unwrap_or(0).saturating_sub(start));
    c.status_code.append_value(status_code_name(code));
    c.status_message.append_value(message.unwrap_or(""));
    for event in events {
        let (mut time, mut ev_name, mut ev_attrs) = (None, None, Vec::new());
        for field in Fields::new(event) {
            match field? {
                (1, Wire::Fixed64(v)) => once(&mut time, v)?,
                (2, Wire::Bytes(b)) => once(&mut ev_name, text(b)?)?,
                (3, Wire::Bytes(b)) => ev_attrs.push(b),
                (4, Wire::Varint(_)) => {}
                (1..=4, _) => return None,
                _ => {}
            }
        }
        c.ev_ts.values().append_value(nanos(time.unwrap_or(0)));
        c.ev_name.values().append_value(ev_name.unwrap_or(""));
        append_attrs(c.ev_attrs.values(), &ev_attrs, limits, scratch)?;
    }
    for link in links {
        let (mut l_trace, mut l_span, mut l_state, mut l_attrs) = (None, None, None, Vec::new());
        for field in Fields::new(link) {
            match field? {
                (1, Wire::Bytes(b)) => once(&mut l_trace, b)?,
                (2, Wire::Bytes(b)) => once(&mut l_span, b)?,
                (3, Wire::Bytes(b)) => once(&mut l_state, text(b)?)?,
                (4, Wire::Bytes(b)) => l_attrs.push(b),
                (5, Wire::Varint(_)) | (6, Wire::Fixed32(_)) => {}
                (1..=6, _) => return None,
                _ => {}
            }
        }
        let (l_trace, l_span) = (l_trace.unwrap_or(&[]), l_span.unwrap_or(&[]));
        if !matches!(l_trace.len(), 0 | 16) || !matches!(l_span.len(), 0 | 8) {
            return None;
        }
        append_hex(c.link_trace.values(), l_trace);
        append_hex(c.link_span.values(), l_span);
        c.link_state.values().append_value(l_state.unwrap_or(""));
        append_attrs(c.link_attrs.values(), &l_attrs, limits, scratch)?;
    }
    c.end_row();
    Some(())
}

/// Renders a scalar AnyValue like [`crate::convert::any_value_string`]: a
/// string as it is in the request (not copied), anything else formatted
/// into `out`. `None` for arrays, kvlists, string-table references, or
/// anything odd.
fn simple_value<'a>(msg: &'a [u8], limits: &Limits, out: &'a mut String) -> Option<&'a str> {
    let mut fields = Fields::new(msg);
    let Some(field) = fields.next() else {
        return Some("");
    };
    if fields.next().is_some() {
        return None; // a second field: protobuf would let the last win
    }
    out.clear();
    match field? {
        (1, Wire::Bytes(b)) if b.len() <= limits.max_value_bytes => return text(b),
        (2, Wire::Varint(v)) => out.push_str(if v != 0 { "true" } else { "false" }),
        (3, Wire::Varint(v)) => write!(out, "{}", v as i64).ok()?,
        (4, Wire::Fixed64(v)) => format_f64(f64::from_bits(v), out),
        (7, Wire::Bytes(b)) if b.len() <= limits.max_value_bytes => {
            base64::engine::general_purpose::STANDARD.encode_string(b, out)
        }
        _ => return None,
    }
    Some(out.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Encoding, ExportLogsServiceRequest, OtlpRequest, Signal};
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, KeyValue, any_value::Value,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    const NOW: u64 = 1_800_000_000_000_000_000;

    type Mutation = Box<dyn Fn(&mut ExportLogsServiceRequest)>;
    type TraceMutation = fn(&mut crate::ExportTraceServiceRequest);

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn record(i: u64, attrs: Vec<KeyValue>, body: Option<Value>) -> LogRecord {
        LogRecord {
            time_unix_nano: if i.is_multiple_of(3) { 0 } else { NOW + i },
            observed_time_unix_nano: NOW + 1000 + i,
            severity_number: (i % 25) as i32,
            severity_text: format!("SEV{i}"),
            body: body.map(|v| AnyValue { value: Some(v) }),
            attributes: attrs,
            flags: 0x101,
            trace_id: if i.is_multiple_of(2) {
                vec![0xab; 16]
            } else {
                vec![]
            },
            span_id: if i.is_multiple_of(2) {
                vec![0x0c; 8]
            } else {
                vec![]
            },
            event_name: if i.is_multiple_of(4) {
                "evt".into()
            } else {
                String::new()
            },
            ..Default::default()
        }
    }

    fn request() -> ExportLogsServiceRequest {
        let scalars = |i: u64| {
            vec![
                kv("s", Value::StringValue(format!("v{i}"))),
                kv("i", Value::IntValue(-(i as i64) * 1_000_000_007)),
                kv("d", Value::DoubleValue(i as f64 / 3.0)),
                kv("b", Value::BoolValue(i.is_multiple_of(2))),
                kv("bytes", Value::BytesValue(vec![0, 1, 2, i as u8])),
                KeyValue {
                    key: "empty".into(),
                    value: None,
                    ..Default::default()
                },
                kv("ünïcode", Value::StringValue("✓".into())),
            ]
        };
        let bodies = [
            Some(Value::StringValue("hello".into())),
            Some(Value::IntValue(42)),
            Some(Value::DoubleValue(f64::NAN)),
            Some(Value::BoolValue(true)),
            Some(Value::BytesValue(b"\xff".to_vec())),
            None,
        ];
        let resource = |svc: &str| opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: vec![
                kv("service.name", Value::StringValue(svc.into())),
                kv("host", Value::IntValue(7)),
            ],
            ..Default::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs {
                    resource: Some(resource("a")),
                    schema_url: "https://schema/1".into(),
                    scope_logs: vec![
                        ScopeLogs {
                            scope: Some(InstrumentationScope {
                                name: "lib".into(),
                                version: "1.2".into(),
                                attributes: vec![kv("x", Value::BoolValue(false))],
                                ..Default::default()
                            }),
                            schema_url: "https://scope/1".into(),
                            log_records: (0..12)
                                .map(|i| record(i, scalars(i), bodies[i as usize % 6].clone()))
                                .collect(),
                        },
                        ScopeLogs {
                            log_records: vec![record(1, vec![], None)],
                            ..Default::default()
                        },
                    ],
                },
                ResourceLogs {
                    resource: None,
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![record(2, scalars(9), None)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        }
    }

    /// What the general path produces (window applied with nothing to do).
    fn general(body: &[u8]) -> TableBatches {
        let mut r = OtlpRequest::decode(Signal::Logs, Encoding::Protobuf, body).unwrap();
        r.validate(&Limits::default()).unwrap();
        assert!(!r.apply_window(NOW, 0).changed());
        r.to_batches()
    }

    #[test]
    fn same_rows_as_the_general_path() {
        let body = request().encode_to_vec();
        let (fast, rows) = logs(&body, &Limits::default(), 0).expect("recognised");
        assert_eq!(rows, 14);
        assert_eq!(fast, general(&body));
    }

    #[test]
    fn fields_in_any_order_give_the_same_rows() {
        // The resource after its scope logs, and a record's fields reversed.
        let req = request();
        let rl = &req.resource_logs[0];
        let mut rl_bytes = Vec::new();
        for sl in &rl.scope_logs {
            let mut sl_bytes = Vec::new();
            for lr in &sl.log_records {
                let mut fields: Vec<Vec<u8>> = Vec::new();
                let one = LogRecord {
                    severity_text: lr.severity_text.clone(),
                    ..Default::default()
                };
                fields.push(one.encode_to_vec());
                let mut rest = lr.clone();
                rest.severity_text.clear();
                fields.push(rest.encode_to_vec());
                fields.reverse();
                let rec: Vec<u8> = fields.concat();
                prost::encoding::encode_key(
                    2,
                    prost::encoding::WireType::LengthDelimited,
                    &mut sl_bytes,
                );
                prost::encoding::encode_varint(rec.len() as u64, &mut sl_bytes);
                sl_bytes.extend(rec);
            }
            if let Some(scope) = &sl.scope {
                prost::encoding::message::encode(1, scope, &mut sl_bytes);
            }
            prost::encoding::string::encode(3, &sl.schema_url, &mut sl_bytes);
            prost::encoding::encode_key(
                2,
                prost::encoding::WireType::LengthDelimited,
                &mut rl_bytes,
            );
            prost::encoding::encode_varint(sl_bytes.len() as u64, &mut rl_bytes);
            rl_bytes.extend(sl_bytes);
        }
        prost::encoding::string::encode(3, &rl.schema_url, &mut rl_bytes);
        prost::encoding::message::encode(1, rl.resource.as_ref().unwrap(), &mut rl_bytes);
        let mut body = Vec::new();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut body);
        prost::encoding::encode_varint(rl_bytes.len() as u64, &mut body);
        body.extend(rl_bytes);
        let (fast, _) = logs(&body, &Limits::default(), 0).expect("recognised");
        assert_eq!(fast, general(&body));
    }

    #[test]
    fn everything_else_goes_to_the_general_path() {
        let base = request();
        let mutations: Vec<(&str, Mutation)> = vec![
            (
                "array attribute",
                Box::new(|r| {
                    r.resource_logs[0].scope_logs[0].log_records[0]
                        .attributes
                        .push(kv("a", Value::ArrayValue(ArrayValue::default())))
                }),
            ),
            (
                "no timestamp at all",
                Box::new(|r| {
                    let lr = &mut r.resource_logs[0].scope_logs[0].log_records[1];
                    lr.time_unix_nano = 0;
                    lr.observed_time_unix_nano = 0;
                }),
            ),
            (
                "bad trace id",
                Box::new(|r| {
                    r.resource_logs[0].scope_logs[0].log_records[1].trace_id = vec![1; 15]
                }),
            ),
            (
                "severity out of range",
                Box::new(|r| r.resource_logs[0].scope_logs[0].log_records[1].severity_number = 99),
            ),
            (
                "too many attributes",
                Box::new(|r| {
                    r.resource_logs[0].scope_logs[0].log_records[1].attributes =
                        vec![kv("k", Value::IntValue(1)); 300]
                }),
            ),
            (
                "key too long",
                Box::new(|r| {
                    r.resource_logs[0].scope_logs[0].log_records[1]
                        .attributes
                        .push(kv(&"k".repeat(300), Value::IntValue(1)))
                }),
            ),
            (
                "value too long",
                Box::new(|r| {
                    r.resource_logs[0].scope_logs[0].log_records[1].body = Some(AnyValue {
                        value: Some(Value::StringValue("x".repeat(70_000))),
                    })
                }),
            ),
            (
                "resource attributes over the limit",
                Box::new(|r| {
                    r.resource_logs[0].resource.as_mut().unwrap().attributes =
                        vec![kv("k", Value::IntValue(1)); 300]
                }),
            ),
            (
                "too many records",
                Box::new(|r| {
                    r.resource_logs[0].scope_logs[0].log_records =
                        vec![record(1, vec![], None); 100_001]
                }),
            ),
        ];
        for (what, mutate) in mutations {
            let mut r = base.clone();
            mutate(&mut r);
            assert!(
                logs(&r.encode_to_vec(), &Limits::default(), 0).is_none(),
                "{what}"
            );
        }
        // Older than the window.
        assert!(logs(&base.encode_to_vec(), &Limits::default(), NOW + 5).is_none());
        // Malformed bytes, invalid UTF-8, a singular field twice.
        let body = base.encode_to_vec();
        assert!(logs(&body[..body.len() - 3], &Limits::default(), 0).is_none());
        let bad_utf8 = LogRecord {
            time_unix_nano: NOW,
            severity_text: "ok".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let pos = bad_utf8.windows(2).position(|w| w == b"ok").unwrap();
        let mut bad = bad_utf8.clone();
        bad[pos] = 0xff;
        let wrap = |rec: Vec<u8>| {
            let sl = [vec![0x12, rec.len() as u8], rec].concat();
            let rl = [vec![0x12, sl.len() as u8], sl].concat();
            [vec![0x0a, rl.len() as u8], rl].concat()
        };
        assert!(logs(&wrap(bad_utf8.clone()), &Limits::default(), 0).is_some());
        assert!(logs(&wrap(bad), &Limits::default(), 0).is_none());
        let twice = [bad_utf8.clone(), bad_utf8].concat();
        assert!(logs(&wrap(twice), &Limits::default(), 0).is_none());
    }

    fn trace_request() -> crate::ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::trace::v1::{
            ResourceSpans, ScopeSpans, Span, Status, span,
        };
        let spans = (0..9u64)
            .map(|i| Span {
                trace_id: vec![i as u8 + 1; 16],
                span_id: vec![i as u8 + 2; 8],
                parent_span_id: if i % 2 == 0 { vec![] } else { vec![9; 8] },
                trace_state: format!("st={i}"),
                name: format!("GET /{i}"),
                kind: (i % 6) as i32,
                start_time_unix_nano: NOW + i,
                end_time_unix_nano: NOW + i * 1000,
                attributes: vec![
                    kv("http.status_code", Value::IntValue(200 + i as i64)),
                    kv("ok", Value::BoolValue(i % 3 == 0)),
                ],
                events: (0..i % 3)
                    .map(|e| span::Event {
                        time_unix_nano: NOW + e,
                        name: format!("ev{e}"),
                        attributes: vec![kv("e", Value::DoubleValue(e as f64))],
                        ..Default::default()
                    })
                    .collect(),
                links: (0..i % 2)
                    .map(|_| span::Link {
                        trace_id: vec![7; 16],
                        span_id: vec![8; 8],
                        trace_state: "l".into(),
                        attributes: vec![kv("l", Value::StringValue("x".into()))],
                        ..Default::default()
                    })
                    .collect(),
                status: (i % 4 != 0).then(|| Status {
                    code: (i % 3) as i32,
                    message: format!("m{i}"),
                }),
                flags: 0x100,
                ..Default::default()
            })
            .collect();
        crate::ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![kv("service.name", Value::StringValue("api".into()))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "s".into(),
                        version: "2".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn spans_give_the_same_rows_as_the_general_path() {
        let body = trace_request().encode_to_vec();
        let (fast, rows) = traces(&body, &Limits::default(), 0).expect("recognised");
        assert_eq!(rows, 9);
        let mut r = OtlpRequest::decode(Signal::Traces, Encoding::Protobuf, &body).unwrap();
        r.validate(&Limits::default()).unwrap();
        assert!(!r.apply_window(NOW, 0).changed());
        assert_eq!(fast, r.to_batches());
    }

    #[test]
    fn unusual_spans_go_to_the_general_path() {
        let cases: Vec<(&str, TraceMutation)> = vec![
            ("bad parent id", |r| {
                r.resource_spans[0].scope_spans[0].spans[1].parent_span_id = vec![1; 3]
            }),
            ("bad link id", |r| {
                r.resource_spans[0].scope_spans[0].spans[1].links[0].span_id = vec![1; 3]
            }),
            ("kind out of range", |r| {
                r.resource_spans[0].scope_spans[0].spans[1].kind = 9
            }),
            ("status out of range", |r| {
                r.resource_spans[0].scope_spans[0].spans[1]
                    .status
                    .as_mut()
                    .unwrap()
                    .code = 7
            }),
            ("array in an event", |r| {
                r.resource_spans[0].scope_spans[0].spans[2].events[0]
                    .attributes
                    .push(kv("a", Value::ArrayValue(ArrayValue::default())))
            }),
            ("too old", |r| {
                r.resource_spans[0].scope_spans[0].spans[1].start_time_unix_nano = 5
            }),
        ];
        for (what, mutate) in cases {
            let mut r = trace_request();
            mutate(&mut r);
            assert!(
                traces(&r.encode_to_vec(), &Limits::default(), 10).is_none(),
                "{what}"
            );
        }
    }
}
