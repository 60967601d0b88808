//! Checks a decoded request against the configured [`Limits`] and the OTLP
//! rules that protobuf decoding cannot enforce (id lengths, enum ranges, a
//! metric's data being set). Runs on both protobuf and JSON input, so both
//! encodings refuse the same things with the same field paths.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{Exemplar, metric::Data};

use crate::{
    ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest, Limits,
    PayloadError,
};

/// A field path built on the stack and rendered only when there is an error,
/// so validating a valid request allocates nothing.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'static str),
    Index(&'a Path<'a>, &'static str, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut s = String::new();
        self.render_into(&mut s);
        s
    }
    fn render_into(&self, out: &mut String) {
        let (parent, name, index) = match *self {
            Path::Root => return,
            Path::Field(p, n) => (p, n, None),
            Path::Index(p, n, i) => (p, n, Some(i)),
        };
        parent.render_into(out);
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(name);
        if let Some(i) = index {
            let _ = write!(out, "[{i}]");
        }
    }
    fn field<'b>(&'b self, name: &'static str) -> Path<'b> {
        Path::Field(self, name)
    }
    fn index<'b>(&'b self, name: &'static str, i: usize) -> Path<'b> {
        Path::Index(self, name, i)
    }
}

struct Checker<'l> {
    limits: &'l Limits,
    records: usize,
}

impl Checker<'_> {
    fn count(&mut self, n: usize, path: Path) -> Result<(), PayloadError> {
        self.records += n;
        if self.records > self.limits.max_records {
            return Err(PayloadError::limit(
                path.render(),
                format!(
                    "request holds more than {} records (max_records)",
                    self.limits.max_records
                ),
            ));
        }
        Ok(())
    }

    fn attributes(&self, attrs: &[KeyValue], path: Path) -> Result<(), PayloadError> {
        if attrs.len() > self.limits.max_attributes {
            return Err(PayloadError::limit(
                path.render(),
                format!(
                    "{} attributes, more than the limit of {} (max_attributes)",
                    attrs.len(),
                    self.limits.max_attributes
                ),
            ));
        }
        for (i, kv) in attrs.iter().enumerate() {
            let p = path.index("attributes", i);
            self.key(&kv.key, p)?;
            if let Some(v) = &kv.value {
                self.value(v, p.field("value"), 1)?;
            }
        }
        Ok(())
    }

    fn key(&self, key: &str, path: Path) -> Result<(), PayloadError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(PayloadError::limit(
                path.field("key").render(),
                format!(
                    "key of {} bytes, longer than the limit of {} (max_key_bytes)",
                    key.len(),
                    self.limits.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    fn value(&self, v: &AnyValue, path: Path, depth: usize) -> Result<(), PayloadError> {
        if depth > self.limits.max_value_depth {
            return Err(PayloadError::limit(
                path.render(),
                format!(
                    "value nested deeper than {} levels (max_value_depth)",
                    self.limits.max_value_depth
                ),
            ));
        }
        let len = match &v.value {
            Some(Value::StringValue(s)) => s.len(),
            Some(Value::BytesValue(b)) => b.len(),
            Some(Value::StringValueStrindex(_)) => {
                return Err(PayloadError::invalid(
                    path.render(),
                    "stringValueStrindex is only valid in profiles",
                ));
            }
            Some(Value::ArrayValue(a)) => {
                for (i, item) in a.values.iter().enumerate() {
                    self.value(item, path.field("arrayValue").index("values", i), depth + 1)?;
                }
                0
            }
            Some(Value::KvlistValue(kv)) => {
                let list = path.field("kvlistValue");
                for (i, item) in kv.values.iter().enumerate() {
                    let p = list.index("values", i);
                    self.key(&item.key, p)?;
                    if let Some(v) = &item.value {
                        self.value(v, p.field("value"), depth + 1)?;
                    }
                }
                0
            }
            _ => 0,
        };
        if len > self.limits.max_value_bytes {
            return Err(PayloadError::limit(
                path.render(),
                format!(
                    "value of {len} bytes, longer than the limit of {} (max_value_bytes)",
                    self.limits.max_value_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Checks one attribute list against the limits (for callers that decode
/// resources and scopes themselves).
pub(crate) fn check_attributes(attrs: &[KeyValue], limits: &Limits) -> Result<(), PayloadError> {
    Checker { limits, records: 0 }.attributes(attrs, Path::Root)
}

fn id(bytes: &[u8], want: usize, path: Path, name: &'static str) -> Result<(), PayloadError> {
    if bytes.is_empty() || bytes.len() == want {
        return Ok(());
    }
    Err(PayloadError::invalid(
        path.field(name).render(),
        format!("must be {want} bytes or empty, got {}", bytes.len()),
    ))
}

fn enum_range(v: i32, max: i32, path: Path, name: &'static str) -> Result<(), PayloadError> {
    if (0..=max).contains(&v) {
        return Ok(());
    }
    Err(PayloadError::invalid(
        path.field(name).render(),
        format!("unknown enum value {v} (expected 0..={max})"),
    ))
}

pub fn logs(req: &ExportLogsServiceRequest, limits: &Limits) -> Result<(), PayloadError> {
    let mut c = Checker { limits, records: 0 };
    let root = Path::Root;
    for (ri, rl) in req.resource_logs.iter().enumerate() {
        let rp = root.index("resourceLogs", ri);
        if let Some(r) = &rl.resource {
            c.attributes(&r.attributes, rp.field("resource"))?;
        }
        for (si, sl) in rl.scope_logs.iter().enumerate() {
            let sp = rp.index("scopeLogs", si);
            if let Some(s) = &sl.scope {
                c.attributes(&s.attributes, sp.field("scope"))?;
            }
            c.count(sl.log_records.len(), sp)?;
            for (li, lr) in sl.log_records.iter().enumerate() {
                let lp = sp.index("logRecords", li);
                id(&lr.trace_id, 16, lp, "traceId")?;
                id(&lr.span_id, 8, lp, "spanId")?;
                enum_range(lr.severity_number, 24, lp, "severityNumber")?;
                c.attributes(&lr.attributes, lp)?;
                if let Some(body) = &lr.body {
                    c.value(body, lp.field("body"), 1)?;
                }
            }
        }
    }
    Ok(())
}

pub fn traces(req: &ExportTraceServiceRequest, limits: &Limits) -> Result<(), PayloadError> {
    let mut c = Checker { limits, records: 0 };
    let root = Path::Root;
    for (ri, rs) in req.resource_spans.iter().enumerate() {
        let rp = root.index("resourceSpans", ri);
        if let Some(r) = &rs.resource {
            c.attributes(&r.attributes, rp.field("resource"))?;
        }
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            let sp = rp.index("scopeSpans", si);
            if let Some(s) = &ss.scope {
                c.attributes(&s.attributes, sp.field("scope"))?;
            }
            c.count(ss.spans.len(), sp)?;
            for (i, span) in ss.spans.iter().enumerate() {
                let p = sp.index("spans", i);
                id(&span.trace_id, 16, p, "traceId")?;
                id(&span.span_id, 8, p, "spanId")?;
                id(&span.parent_span_id, 8, p, "parentSpanId")?;
                enum_range(span.kind, 5, p, "kind")?;
                if let Some(st) = &span.status {
                    enum_range(st.code, 2, p.field("status"), "code")?;
                }
                c.attributes(&span.attributes, p)?;
                for (ei, ev) in span.events.iter().enumerate() {
                    c.attributes(&ev.attributes, p.index("events", ei))?;
                }
                for (li, link) in span.links.iter().enumerate() {
                    let lp = p.index("links", li);
                    id(&link.trace_id, 16, lp, "traceId")?;
                    id(&link.span_id, 8, lp, "spanId")?;
                    c.attributes(&link.attributes, lp)?;
                }
            }
        }
    }
    Ok(())
}

pub fn metrics(req: &ExportMetricsServiceRequest, limits: &Limits) -> Result<(), PayloadError> {
    let mut c = Checker { limits, records: 0 };
    let root = Path::Root;
    for (ri, rm) in req.resource_metrics.iter().enumerate() {
        let rp = root.index("resourceMetrics", ri);
        if let Some(r) = &rm.resource {
            c.attributes(&r.attributes, rp.field("resource"))?;
        }
        for (si, sm) in rm.scope_metrics.iter().enumerate() {
            let sp = rp.index("scopeMetrics", si);
            if let Some(s) = &sm.scope {
                c.attributes(&s.attributes, sp.field("scope"))?;
            }
            for (mi, m) in sm.metrics.iter().enumerate() {
                metric_data(&mut c, m.data.as_ref(), sp.index("metrics", mi))?;
            }
        }
    }
    Ok(())
}

/// A data point's attributes and exemplars, whatever its kind.
type PointRefs<'a> = (&'a [KeyValue], &'a [Exemplar]);

fn metric_data(c: &mut Checker, data: Option<&Data>, mp: Path) -> Result<(), PayloadError> {
    // Each kind: its field name, then (attributes, exemplars) of every point.
    let (field, points): (&'static str, Vec<PointRefs>) = match data {
        None => {
            return Err(PayloadError::invalid(
                mp.render(),
                "metric has no data: expected one of gauge, sum, histogram, exponentialHistogram, summary",
            ));
        }
        Some(Data::Gauge(g)) => (
            "gauge",
            g.data_points
                .iter()
                .map(|p| (&p.attributes[..], &p.exemplars[..]))
                .collect(),
        ),
        Some(Data::Sum(s)) => {
            enum_range(
                s.aggregation_temporality,
                2,
                mp.field("sum"),
                "aggregationTemporality",
            )?;
            (
                "sum",
                s.data_points
                    .iter()
                    .map(|p| (&p.attributes[..], &p.exemplars[..]))
                    .collect(),
            )
        }
        Some(Data::Histogram(h)) => {
            enum_range(
                h.aggregation_temporality,
                2,
                mp.field("histogram"),
                "aggregationTemporality",
            )?;
            (
                "histogram",
                h.data_points
                    .iter()
                    .map(|p| (&p.attributes[..], &p.exemplars[..]))
                    .collect(),
            )
        }
        Some(Data::ExponentialHistogram(h)) => {
            enum_range(
                h.aggregation_temporality,
                2,
                mp.field("exponentialHistogram"),
                "aggregationTemporality",
            )?;
            (
                "exponentialHistogram",
                h.data_points
                    .iter()
                    .map(|p| (&p.attributes[..], &p.exemplars[..]))
                    .collect(),
            )
        }
        Some(Data::Summary(s)) => (
            "summary",
            s.data_points
                .iter()
                .map(|p| (&p.attributes[..], &[][..]))
                .collect(),
        ),
    };
    let dp = mp.field(field);
    c.count(points.len(), dp)?;
    for (i, (attrs, exemplars)) in points.into_iter().enumerate() {
        let pp = dp.index("dataPoints", i);
        c.attributes(attrs, pp)?;
        for (ei, ex) in exemplars.iter().enumerate() {
            let ep = pp.index("exemplars", ei);
            id(&ex.trace_id, 16, ep, "traceId")?;
            id(&ex.span_id, 8, ep, "spanId")?;
            c.attributes(&ex.filtered_attributes, ep)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::PayloadErrorKind;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn logs_req(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn nested(depth: usize) -> AnyValue {
        let mut v = AnyValue {
            value: Some(Value::IntValue(1)),
        };
        for _ in 1..depth {
            v = AnyValue {
                value: Some(Value::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue { values: vec![v] },
                )),
            };
        }
        v
    }

    #[test]
    fn each_limit_is_enforced_with_a_path() {
        let limits = Limits {
            max_attributes: 2,
            max_key_bytes: 4,
            max_value_bytes: 8,
            max_value_depth: 3,
            max_records: 2,
            ..Limits::default()
        };
        let cases: Vec<(LogRecord, &str)> = vec![
            (
                LogRecord {
                    attributes: vec![kv("a", Value::IntValue(1)); 3],
                    ..Default::default()
                },
                "resourceLogs[0].scopeLogs[0].logRecords[0]",
            ),
            (
                LogRecord {
                    attributes: vec![kv("toolong", Value::IntValue(1))],
                    ..Default::default()
                },
                "resourceLogs[0].scopeLogs[0].logRecords[0].attributes[0].key",
            ),
            (
                LogRecord {
                    attributes: vec![kv("k", Value::StringValue("x".repeat(9)))],
                    ..Default::default()
                },
                "resourceLogs[0].scopeLogs[0].logRecords[0].attributes[0].value",
            ),
            (
                LogRecord {
                    body: Some(nested(4)),
                    ..Default::default()
                },
                "resourceLogs[0].scopeLogs[0].logRecords[0].body.arrayValue.values[0].arrayValue.values[0].arrayValue.values[0]",
            ),
            (
                LogRecord {
                    trace_id: vec![1; 15],
                    ..Default::default()
                },
                "resourceLogs[0].scopeLogs[0].logRecords[0].traceId",
            ),
            (
                LogRecord {
                    severity_number: 25,
                    ..Default::default()
                },
                "resourceLogs[0].scopeLogs[0].logRecords[0].severityNumber",
            ),
        ];
        for (record, path) in cases {
            let err = logs(&logs_req(vec![record]), &limits).unwrap_err();
            assert_eq!(err.field, path, "{err}");
        }
        assert!(
            logs(
                &logs_req(vec![LogRecord {
                    body: Some(nested(3)),
                    ..Default::default()
                }]),
                &limits
            )
            .is_ok()
        );
        let err = logs(&logs_req(vec![LogRecord::default(); 3]), &limits).unwrap_err();
        assert_eq!(err.kind, PayloadErrorKind::LimitExceeded);
    }

    #[test]
    fn metric_without_data_is_invalid() {
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "m".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let err = metrics(&req, &Limits::default()).unwrap_err();
        assert_eq!(err.field, "resourceMetrics[0].scopeMetrics[0].metrics[0]");
        assert_eq!(err.kind, PayloadErrorKind::Invalid);
    }
}
