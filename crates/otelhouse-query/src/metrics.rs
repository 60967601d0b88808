//! Metric series from raw points, the same for every backend: a gauge's
//! average/min/max per bucket; a sum's rate (monotonic cumulative sums are
//! differenced per stream, resets detected); histogram quantiles from
//! merged bucket counts (explicit and exponential); summary quantiles.
//!
//! Computed here rather than in SQL because cumulative temporality needs
//! per-stream differencing in time order, which both stores would have to
//! express differently; the points a query may read are bounded instead.

use std::collections::BTreeMap;
use std::time::Duration;

use otelhouse_schema::Signal;
use otelhouse_search::{Catalog, Field};
use otelhouse_storage::{AggFunc, Measure, MetricQuery, Row, TimeRange};
use serde::Serialize;
use serde_json::Value;

use crate::charts::{Chart, chart};
use crate::{Error, QueryService, bad, interval, now_nanos};

#[derive(Debug, Clone)]
pub struct MetricRequest {
    pub name: String,
    /// Search text over the points' attributes and columns.
    pub q: String,
    pub range: TimeRange,
    pub interval: Option<Duration>,
    pub buckets: usize,
    /// Split into one series per value of these fields.
    pub group_by: Vec<String>,
    /// Histogram and summary quantiles, in (0, 1).
    pub quantiles: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct MetricChart {
    pub name: String,
    /// gauge, sum, histogram, exponential_histogram or summary.
    pub metric_type: String,
    pub unit: String,
    /// Points read to draw the chart.
    pub points_read: usize,
    #[serde(flatten)]
    pub chart: Chart,
}

const DELTA: i64 = 1;
const CUMULATIVE: i64 = 2;

fn nanos(row: &Row, column: &str) -> Option<i64> {
    row.get(column)?
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| t.timestamp_nanos_opt())
}

fn num(row: &Row, column: &str) -> Option<f64> {
    row.get(column)?.as_f64()
}

fn nums(row: &Row, column: &str) -> Vec<f64> {
    row.get(column)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A field's value in a point row, as text.
fn field_value(row: &Row, field: &Field) -> Option<String> {
    match field {
        Field::Column { name, .. } => row.get(*name).map(text),
        Field::Attribute { key, maps } => maps
            .iter()
            .find_map(|m| row.get(*m).and_then(|a| a.get(key)))
            .map(text),
    }
}

/// What identifies one time series of points (one stream of a cumulative
/// counter, whose values are differenced in time order).
fn stream_key(row: &Row) -> String {
    [
        "ServiceName",
        "ResourceAttributes",
        "ScopeName",
        "Attributes",
    ]
    .iter()
    .map(|c| row.get(*c).map(Value::to_string).unwrap_or_default())
    .collect::<Vec<_>>()
    .join("\u{1f}")
}

/// Histogram buckets keyed by (lower, upper) bound, as f64 bits in order.
type Buckets = BTreeMap<(OrdF64, OrdF64), f64>;

/// An f64 with a total order (bucket bounds include infinities).
#[derive(Debug, Clone, Copy)]
struct OrdF64(f64);
impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A histogram point's buckets with their bounds.
fn buckets_of(row: &Row, metric_type: &str) -> Buckets {
    let mut out = Buckets::new();
    if metric_type == "histogram" {
        let counts = nums(row, "BucketCounts");
        let bounds = nums(row, "ExplicitBounds");
        for (i, c) in counts.iter().enumerate() {
            let lower = if i == 0 {
                f64::NEG_INFINITY
            } else {
                bounds.get(i - 1).copied().unwrap_or(f64::INFINITY)
            };
            let upper = bounds.get(i).copied().unwrap_or(f64::INFINITY);
            *out.entry((OrdF64(lower), OrdF64(upper))).or_default() += c;
        }
    } else {
        // Exponential: bucket i of offset o covers (base^(o+i), base^(o+i+1)],
        // base = 2^(2^-scale); negative buckets mirror positive ones.
        let scale = num(row, "Scale").unwrap_or(0.0);
        let base = 2f64.powf(2f64.powf(-scale));
        let zero = num(row, "ZeroCount").unwrap_or(0.0);
        if zero > 0.0 {
            out.insert((OrdF64(0.0), OrdF64(0.0)), zero);
        }
        for (sign, offset_col, counts_col) in [
            (1.0, "PositiveOffset", "PositiveBucketCounts"),
            (-1.0, "NegativeOffset", "NegativeBucketCounts"),
        ] {
            let offset = num(row, offset_col).unwrap_or(0.0);
            for (i, c) in nums(row, counts_col).iter().enumerate() {
                if *c == 0.0 {
                    continue;
                }
                let a = sign * base.powf(offset + i as f64);
                let b = sign * base.powf(offset + i as f64 + 1.0);
                let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                *out.entry((OrdF64(lo), OrdF64(hi))).or_default() += c;
            }
        }
    }
    out
}

/// The value below which a fraction `q` of the observations fall,
/// interpolating linearly inside the bucket (as Prometheus'
/// `histogram_quantile`); open-ended buckets return their finite bound.
fn histogram_quantile(buckets: &Buckets, q: f64) -> Option<f64> {
    let total: f64 = buckets.values().sum();
    if total <= 0.0 {
        return None;
    }
    let mut sorted: Vec<_> = buckets.iter().collect();
    sorted.sort_by_key(|((lo, hi), _)| (*hi, *lo));
    let rank = q * total;
    let mut seen = 0.0;
    for ((lo, hi), c) in sorted {
        if *c <= 0.0 {
            continue;
        }
        if seen + c >= rank {
            let (lo, hi) = (lo.0, hi.0);
            if hi.is_infinite() {
                return Some(lo);
            }
            // The first bucket starts at 0 when its bound is positive.
            let lo = match lo.is_infinite() {
                true if hi > 0.0 => 0.0,
                true => hi,
                false => lo,
            };
            return Some(lo + (hi - lo) * ((rank - seen) / c));
        }
        seen += c;
    }
    None
}

/// The per-bucket accumulation of one series.
#[derive(Default)]
struct Acc {
    n: f64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    buckets: Buckets,
    /// Summary: quantile → (sum of values, count).
    quantiles: BTreeMap<OrdF64, (f64, f64)>,
}

impl Acc {
    fn value(&mut self, v: f64) {
        self.n += 1.0;
        self.sum += v;
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
    }
}

impl QueryService {
    pub async fn metric_chart(&self, r: &MetricRequest) -> Result<MetricChart, Error> {
        if r.name.is_empty() || r.name.len() > otelhouse_search::MAX_QUERY_BYTES {
            return Err(bad("`name` (the metric name) is required"));
        }
        if r.group_by.len() > 3 {
            return Err(bad("`by`: at most 3 fields"));
        }
        if r.quantiles.len() > 10 {
            return Err(bad("`quantiles`: at most 10"));
        }
        if let Some(q) = r.quantiles.iter().find(|q| !(**q > 0.0 && **q < 1.0)) {
            return Err(bad(format!("quantiles are between 0 and 1, got {q}")));
        }
        let filter = self.parse(Signal::Metrics, &r.q, r.range).await?;
        let catalog = Catalog::new(Signal::Metrics, []);
        let group_fields: Vec<Field> = r
            .group_by
            .iter()
            .map(|g| {
                catalog.resolve(g).unwrap_or_else(|_| Field::Attribute {
                    key: g.clone(),
                    maps: catalog.attribute_maps(),
                })
            })
            .collect();
        let from = r.range.from.expect("ranges are bounded below");
        let to = r.range.to.unwrap_or_else(now_nanos);
        let width = interval::choose(to - from, r.interval, r.buckets, self.limits.max_buckets)?;
        let points = self
            .storage
            .metric_points(&MetricQuery {
                name: r.name.clone(),
                filter,
                range: r.range,
                limit: self.limits.max_points + 1,
            })
            .await?;
        if points.len() > self.limits.max_points {
            return Err(bad(format!(
                "metric `{}` has more than {} points in this range; narrow the range or filter by attributes",
                r.name, self.limits.max_points
            )));
        }
        // The newest point's kind decides (a renamed instrument may leave
        // old points of another kind).
        let metric_type = points
            .last()
            .and_then(|p| p.get("MetricType"))
            .map(text)
            .unwrap_or_else(|| "gauge".into());
        let unit = points
            .last()
            .and_then(|p| p.get("MetricUnit"))
            .map(text)
            .unwrap_or_default();
        let points: Vec<&Row> = points
            .iter()
            .filter(|p| p.get("MetricType").map(text).as_deref() == Some(metric_type.as_str()))
            .collect();

        let temporality = points
            .first()
            .and_then(|p| num(p, "AggregationTemporality"))
            .unwrap_or(0.0) as i64;
        let monotonic = points
            .first()
            .and_then(|p| p.get("IsMonotonic"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let counter = metric_type == "sum" && (monotonic || temporality == DELTA);
        let histogram = metric_type == "histogram" || metric_type == "exponential_histogram";

        // Per (group, bucket) accumulation; cumulative inputs differenced
        // per stream first.
        let mut accs: BTreeMap<(Vec<Option<String>>, i64), Acc> = BTreeMap::new();
        let mut last_value: BTreeMap<String, (i64, f64)> = BTreeMap::new();
        let mut last_buckets: BTreeMap<String, (i64, Buckets)> = BTreeMap::new();
        /// What one point adds to its bucket.
        enum Add {
            Value(f64),
            Buckets(Buckets),
            Quantiles(Vec<(f64, f64)>),
        }
        for p in &points {
            let Some(t) = nanos(p, "TimeUnix") else {
                continue;
            };
            let start = nanos(p, "StartTimeUnix").unwrap_or(0);
            let add = if counter {
                let v = num(p, "Value").unwrap_or(0.0);
                if temporality == CUMULATIVE {
                    match last_value.insert(stream_key(p), (start, v)) {
                        // A restart (new start time or a smaller value) begins anew.
                        Some((s, pv)) if s == start && v >= pv => Add::Value(v - pv),
                        Some(_) => Add::Value(v),
                        // The first point of a stream only sets its base.
                        None => continue,
                    }
                } else {
                    Add::Value(v)
                }
            } else if histogram {
                let b = buckets_of(p, &metric_type);
                if temporality == CUMULATIVE {
                    match last_buckets.insert(stream_key(p), (start, b.clone())) {
                        // Same start and the same buckets: the difference.
                        Some((s, pb))
                            if s == start
                                && pb.keys().eq(b.keys())
                                && b.iter().all(|(k, c)| *c >= pb[k]) =>
                        {
                            Add::Buckets(b.iter().map(|(k, c)| (*k, c - pb[k])).collect())
                        }
                        // A restart or new bounds: the point counts afresh.
                        Some(_) => Add::Buckets(b),
                        None => continue,
                    }
                } else {
                    Add::Buckets(b)
                }
            } else if metric_type == "summary" {
                let qs = nums(p, "ValueAtQuantiles.Quantile");
                let vs = nums(p, "ValueAtQuantiles.Value");
                Add::Quantiles(qs.into_iter().zip(vs).collect())
            } else {
                Add::Value(num(p, "Value").unwrap_or(0.0))
            };
            let group: Vec<Option<String>> =
                group_fields.iter().map(|f| field_value(p, f)).collect();
            let acc = accs
                .entry((group, t.div_euclid(width) * width))
                .or_default();
            match add {
                Add::Value(v) => acc.value(v),
                Add::Buckets(b) => {
                    for (k, c) in b {
                        *acc.buckets.entry(k).or_default() += c;
                    }
                    acc.n += 1.0;
                }
                Add::Quantiles(qv) => {
                    for (q, v) in qv {
                        let e = acc.quantiles.entry(OrdF64(q)).or_default();
                        e.0 += v;
                        e.1 += 1.0;
                    }
                    acc.n += 1.0;
                }
            }
        }
        // The busiest series (most points), at most max_series.
        let mut weight: BTreeMap<&Vec<Option<String>>, f64> = BTreeMap::new();
        for ((g, _), acc) in &accs {
            *weight.entry(g).or_default() += acc.n.max(1.0);
        }
        let mut ranked: Vec<_> = weight.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let keep: std::collections::BTreeSet<Vec<Option<String>>> = ranked
            .into_iter()
            .take(self.limits.max_series)
            .map(|(g, _)| g.clone())
            .collect();
        accs.retain(|(g, _), _| keep.contains(g));

        let seconds = width as f64 / 1e9;
        let quantiles = if r.quantiles.is_empty() {
            vec![0.5, 0.95, 0.99]
        } else {
            r.quantiles.clone()
        };
        let names: Vec<String> = if counter {
            vec!["rate".into(), "increase".into()]
        } else if histogram || metric_type == "summary" {
            quantiles
                .iter()
                .map(|q| format!("p{}", q * 100.0))
                .collect()
        } else {
            vec!["avg".into(), "min".into(), "max".into()]
        };
        let rows: Vec<otelhouse_storage::AggregateRow> = accs
            .into_iter()
            .map(|((group, bucket), acc)| {
                let values = if counter {
                    vec![Some(acc.sum / seconds), Some(acc.sum)]
                } else if histogram {
                    quantiles
                        .iter()
                        .map(|q| histogram_quantile(&acc.buckets, *q))
                        .collect()
                } else if metric_type == "summary" {
                    quantiles
                        .iter()
                        .map(|q| {
                            acc.quantiles
                                .get(&OrdF64(*q))
                                .filter(|(_, n)| *n > 0.0)
                                .map(|(s, n)| s / n)
                        })
                        .collect()
                } else {
                    vec![(acc.n > 0.0).then(|| acc.sum / acc.n), acc.min, acc.max]
                };
                otelhouse_storage::AggregateRow {
                    bucket: Some(bucket),
                    group,
                    values,
                }
            })
            .collect();
        // Empty buckets stay null (no data is not zero for a gauge).
        let measures: Vec<Measure> = names
            .iter()
            .map(|_| Measure {
                func: AggFunc::Avg,
                field: None,
            })
            .collect();
        Ok(MetricChart {
            name: r.name.clone(),
            metric_type,
            unit,
            points_read: points.len(),
            chart: chart(&rows, &measures, &names, &r.group_by, from, to, Some(width)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let mut b = Buckets::new();
        // 10 in (-inf, 10], 10 in (10, 20], 0 in (20, +inf).
        b.insert((OrdF64(f64::NEG_INFINITY), OrdF64(10.0)), 10.0);
        b.insert((OrdF64(10.0), OrdF64(20.0)), 10.0);
        b.insert((OrdF64(20.0), OrdF64(f64::INFINITY)), 0.0);
        assert_eq!(histogram_quantile(&b, 0.5), Some(10.0));
        assert_eq!(histogram_quantile(&b, 0.75), Some(15.0));
        assert_eq!(histogram_quantile(&b, 0.25), Some(5.0));
        b.insert((OrdF64(20.0), OrdF64(f64::INFINITY)), 20.0);
        assert_eq!(
            histogram_quantile(&b, 0.99),
            Some(20.0),
            "open bucket → its bound"
        );
        assert_eq!(histogram_quantile(&Buckets::new(), 0.5), None);
    }

    #[test]
    fn exponential_buckets_have_the_right_bounds() {
        let row: Row = serde_json::from_value(serde_json::json!({
            "Scale": 0, "ZeroCount": 1,
            "PositiveOffset": 1, "PositiveBucketCounts": [2, 3],
            "NegativeOffset": 0, "NegativeBucketCounts": [4],
        }))
        .unwrap();
        let b = buckets_of(&row, "exponential_histogram");
        let got: Vec<_> = b.iter().map(|((l, h), c)| (l.0, h.0, *c)).collect();
        assert_eq!(
            got,
            vec![
                (-2.0, -1.0, 4.0),
                (0.0, 0.0, 1.0),
                (2.0, 4.0, 2.0),
                (4.0, 8.0, 3.0)
            ]
        );
    }
}
