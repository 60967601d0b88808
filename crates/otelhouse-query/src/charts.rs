//! Chart-shaped answers built on `Storage::aggregate`: histograms,
//! aggregates per bucket and group, facets, and per-service RED figures.

use std::collections::BTreeMap;
use std::time::Duration;

use otelhouse_schema::Signal;
use otelhouse_storage::rows::format_timestamp;
use otelhouse_storage::{AggFunc, AggregateQuery, AggregateRow, Measure, TimeRange};
use serde::Serialize;

use crate::{Error, QueryService, bad, interval, measures, now_nanos, search_signal};

/// A chart request as a user states it.
#[derive(Debug, Clone)]
pub struct ChartRequest {
    pub signal: Option<Signal>,
    pub q: String,
    pub range: TimeRange,
    /// `count`, `p95(Duration)` …; empty means `count`.
    pub measures: Vec<String>,
    /// `None`: chosen from the range.
    pub interval: Option<Duration>,
    /// One value per series over the whole range, no buckets.
    pub whole_range: bool,
    /// About how many buckets when the interval is chosen.
    pub buckets: usize,
    pub group_by: Vec<String>,
    pub series_limit: usize,
}

impl Default for ChartRequest {
    fn default() -> Self {
        ChartRequest {
            signal: None,
            q: String::new(),
            range: TimeRange::default(),
            measures: Vec::new(),
            interval: None,
            whole_range: false,
            buckets: 60,
            group_by: Vec::new(),
            series_limit: 10,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Chart {
    pub from: String,
    pub to: String,
    /// Bucket width; `null` when the chart has one value per series.
    pub interval_seconds: Option<f64>,
    pub measures: Vec<String>,
    pub group_by: Vec<String>,
    /// Busiest first. Every series has a point per bucket: counts are 0
    /// where nothing matched, other measures `null`.
    pub series: Vec<Series>,
}

#[derive(Debug, Serialize)]
pub struct Series {
    /// Group-by field → value (`null`: the field is absent).
    pub group: BTreeMap<String, Option<String>>,
    pub points: Vec<Point>,
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub time: String,
    /// One per measure.
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Serialize)]
pub struct Facet {
    pub field: String,
    /// Most common first.
    pub values: Vec<FacetValue>,
    /// Rows matching the query (so `total - sum(values)` are the rest).
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct FacetValue {
    pub value: Option<String>,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct ServiceStats {
    pub service: String,
    /// Entry spans (server or consumer kind, or without a parent).
    pub requests: u64,
    pub requests_per_second: f64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The end of a range for bucketing: `to`, or now when open.
fn end_of(range: TimeRange) -> i64 {
    range.to.unwrap_or_else(now_nanos)
}

fn count() -> Measure {
    Measure {
        func: AggFunc::Count,
        field: None,
    }
}

impl QueryService {
    pub async fn chart(&self, r: &ChartRequest) -> Result<Chart, Error> {
        let signal = search_signal(r.signal)?;
        if r.group_by.len() > 3 {
            return Err(bad("`by`: at most 3 fields"));
        }
        if r.series_limit == 0 || r.series_limit > self.limits.max_series {
            return Err(bad(format!(
                "`series_limit` must be from 1 to {}",
                self.limits.max_series
            )));
        }
        let filter = self.parse(signal, &r.q, r.range).await?;
        let names = if r.measures.is_empty() {
            vec!["count".to_string()]
        } else {
            r.measures.clone()
        };
        if names.len() > 10 {
            return Err(bad("at most 10 measures"));
        }
        let mut ms = Vec::new();
        for m in &names {
            let (func, field) = measures::parse(m)?;
            let field = match field {
                Some(f) => Some(self.field(signal, &f, r.range).await?),
                None => None,
            };
            ms.push(Measure { func, field });
        }
        let mut group_by = Vec::new();
        for g in &r.group_by {
            group_by.push(self.field(signal, g, r.range).await?);
        }
        let from = r.range.from.expect("ranges are bounded below");
        let to = end_of(r.range);
        let bucket = if r.whole_range {
            None
        } else {
            Some(interval::choose(
                to - from,
                r.interval,
                r.buckets,
                self.limits.max_buckets,
            )?)
        };
        let q = AggregateQuery {
            signal,
            filter,
            range: r.range,
            measures: ms.clone(),
            bucket,
            group_by,
            series_limit: r.series_limit,
        };
        let rows = self.storage.aggregate(&q).await?;
        Ok(chart(&rows, &ms, &names, &r.group_by, from, to, bucket))
    }

    pub async fn facets(
        &self,
        signal: Option<Signal>,
        q: &str,
        range: TimeRange,
        fields: &[String],
        limit: usize,
    ) -> Result<Vec<Facet>, Error> {
        let signal = search_signal(signal)?;
        if fields.is_empty() || fields.len() > 10 {
            return Err(bad("`fields`: name 1 to 10 fields"));
        }
        if limit == 0 || limit > self.limits.max_series {
            return Err(bad(format!(
                "`limit` must be from 1 to {}",
                self.limits.max_series
            )));
        }
        let filter = self.parse(signal, q, range).await?;
        let total_q = AggregateQuery {
            signal,
            filter: filter.clone(),
            range,
            measures: vec![count()],
            bucket: None,
            group_by: Vec::new(),
            series_limit: 1,
        };
        let total = self.storage.aggregate(&total_q).await?;
        let total = total.first().and_then(|r| r.values[0]).unwrap_or(0.0) as u64;
        let mut out = Vec::new();
        for name in fields {
            let field = self.field(signal, name, range).await?;
            let q = AggregateQuery {
                group_by: vec![field],
                series_limit: limit,
                ..total_q.clone()
            };
            let mut values: Vec<FacetValue> = self
                .storage
                .aggregate(&q)
                .await?
                .into_iter()
                .map(|r| FacetValue {
                    value: r.group[0].clone(),
                    count: r.values[0].unwrap_or(0.0) as u64,
                })
                .collect();
            values.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
            out.push(Facet {
                field: name.clone(),
                values,
                total,
            });
        }
        Ok(out)
    }

    /// Request rate, error rate and latency per service, from entry spans.
    pub async fn services(
        &self,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<ServiceStats>, Error> {
        if limit == 0 || limit > self.limits.max_series * 10 {
            return Err(bad(format!(
                "`limit` must be from 1 to {}",
                self.limits.max_series * 10
            )));
        }
        let entry = "(kind:server OR kind:consumer OR NOT parent_span_id:*)";
        let parse = |text: &str| {
            otelhouse_search::parse(text, &otelhouse_search::Catalog::new(Signal::Traces, []))
                .expect("a fixed query")
        };
        let catalog = otelhouse_search::Catalog::new(Signal::Traces, []);
        let service = catalog
            .column("ServiceName")
            .expect("spans have ServiceName");
        let duration = catalog.column("Duration").expect("spans have Duration");
        let quantile = |p| Measure {
            func: AggFunc::Quantile(p),
            field: Some(duration.clone()),
        };
        let all = AggregateQuery {
            signal: Signal::Traces,
            filter: parse(entry),
            range,
            measures: vec![count(), quantile(0.5), quantile(0.95), quantile(0.99)],
            bucket: None,
            group_by: vec![service],
            series_limit: limit,
        };
        // Every service with errors: the busiest by requests need not be
        // the busiest by errors.
        let errors = AggregateQuery {
            filter: parse(&format!("{entry} AND status:error")),
            measures: vec![count()],
            series_limit: 100_000,
            ..all.clone()
        };
        let seconds = ((end_of(range) - range.from.unwrap_or(0)) as f64 / 1e9).max(1e-9);
        let error_counts: BTreeMap<Option<String>, f64> = self
            .storage
            .aggregate(&errors)
            .await?
            .into_iter()
            .map(|r| (r.group[0].clone(), r.values[0].unwrap_or(0.0)))
            .collect();
        let ms = |v: Option<f64>| v.map(|ns| ns / 1e6);
        let mut out: Vec<ServiceStats> = self
            .storage
            .aggregate(&all)
            .await?
            .into_iter()
            .map(|r| {
                let requests = r.values[0].unwrap_or(0.0);
                let errors = error_counts.get(&r.group[0]).copied().unwrap_or(0.0);
                ServiceStats {
                    service: r.group[0].clone().unwrap_or_default(),
                    requests: requests as u64,
                    requests_per_second: requests / seconds,
                    errors: errors as u64,
                    error_rate: if requests > 0.0 {
                        errors / requests
                    } else {
                        0.0
                    },
                    p50_ms: ms(r.values[1]),
                    p95_ms: ms(r.values[2]),
                    p99_ms: ms(r.values[3]),
                }
            })
            .collect();
        out.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.service.cmp(&b.service)));
        Ok(out)
    }
}

/// Aggregate rows as series with a point per bucket.
pub fn chart(
    rows: &[AggregateRow],
    measures: &[Measure],
    names: &[String],
    group_names: &[String],
    from: i64,
    to: i64,
    bucket: Option<i64>,
) -> Chart {
    let empty = |m: &Measure| match m.func {
        AggFunc::Count | AggFunc::CountDistinct => Some(0.0),
        _ => None,
    };
    // Ranges are within 1970..2200 (QueryService::range) and the bucket
    // count was checked (interval::choose), so this cannot overflow.
    let buckets: Vec<i64> = match bucket {
        Some(w) => {
            let first = from.div_euclid(w) * w;
            let n = (to.max(first) - first) / w + 1;
            (0..n).map(|i| first + i * w).collect()
        }
        None => vec![from],
    };
    type Values = Vec<Option<f64>>;
    let mut by_group: BTreeMap<Vec<Option<String>>, BTreeMap<i64, Values>> = BTreeMap::new();
    for r in rows {
        by_group
            .entry(r.group.clone())
            .or_default()
            .insert(r.bucket.unwrap_or(from), r.values.clone());
    }
    let mut series: Vec<(f64, Series)> = by_group
        .into_iter()
        .map(|(group, points)| {
            let total: f64 = points.values().filter_map(|v| v[0]).sum();
            let points = buckets
                .iter()
                .map(|b| Point {
                    time: format_timestamp(*b),
                    values: points
                        .get(b)
                        .cloned()
                        .unwrap_or_else(|| measures.iter().map(empty).collect()),
                })
                .collect();
            let group = group_names.iter().cloned().zip(group).collect();
            (total, Series { group, points })
        })
        .collect();
    series.sort_by(|a, b| b.0.total_cmp(&a.0));
    Chart {
        from: format_timestamp(from),
        to: format_timestamp(to),
        interval_seconds: bucket.map(|w| w as f64 / 1e9),
        measures: names.to_vec(),
        group_by: group_names.to_vec(),
        series: series.into_iter().map(|(_, s)| s).collect(),
    }
}
