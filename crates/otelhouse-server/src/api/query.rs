//! The query endpoints: HTTP parameters in, `otelhouse_query` answers out
//! as JSON. Documented in `openapi.json` beside this file.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use otelhouse_query::charts::ChartRequest;
use otelhouse_query::metrics::MetricRequest;
use otelhouse_query::{SearchRequest, interval};
use otelhouse_schema::Signal;
use otelhouse_storage::MetricQuery;
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{Params, parse_time};
use super::{ApiError, ApiState, bad};

type Answer = Result<Json<Value>, ApiError>;
type Q = Query<HashMap<String, String>>;

const DEFAULT_ROWS: usize = 100;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/search", get(search))
        .route("/api/v1/explain", get(explain))
        .route("/api/v1/fields", get(fields))
        .route("/api/v1/histogram", get(histogram))
        .route("/api/v1/facets", get(facets))
        .route("/api/v1/aggregate", get(aggregate))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/services", get(services))
        .route("/api/v1/metrics", get(metric_points))
        .route("/api/v1/metrics/series", get(metric_series))
        .route("/api/v1/sql", post(sql))
}

fn json(v: impl serde::Serialize) -> Answer {
    Ok(Json(serde_json::to_value(v).map_err(|e| {
        ApiError(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
            None,
        )
    })?))
}

async fn search(State(s): State<ApiState>, Query(p): Q) -> Answer {
    let p = Params(p);
    let ascending = match p.get("order")? {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => return Err(bad(format!("`order` must be asc or desc, got {o:?}"))),
    };
    let r = SearchRequest {
        signal: p.signal(None)?,
        q: p.text("q")?,
        range: p.range(&s.query)?,
        columns: p.get("columns")?.map(|_| p.list("columns")).transpose()?,
        sort: p.get("sort")?.map(String::from),
        ascending,
        cursor: p.get("cursor")?.map(String::from),
        limit: p.number("limit", DEFAULT_ROWS)?,
    };
    json(s.query.search(&r).await?)
}

async fn explain(State(s): State<ApiState>, Query(p): Q) -> Answer {
    let p = Params(p);
    let signal = p.signal(Some(Signal::Logs))?.expect("defaulted");
    json(s.query.explain(signal, &p.text("q")?).await?)
}

async fn fields(State(s): State<ApiState>, Query(p): Q) -> Answer {
    let p = Params(p);
    let signal = p.signal(Some(Signal::Logs))?.expect("defaulted");
    json(s.query.fields(signal, p.range(&s.query)?).await?)
}

/// The chart parameters shared by histogram and aggregate.
fn chart_request(s: &ApiState, p: &Params) -> Result<ChartRequest, ApiError> {
    let interval_text = p.text("interval")?;
    Ok(ChartRequest {
        signal: p.signal(None)?,
        q: p.text("q")?,
        range: p.range(&s.query)?,
        measures: Vec::new(),
        whole_range: interval_text == "none",
        interval: if interval_text == "none" {
            None
        } else {
            interval::parse(&interval_text)?
        },
        buckets: p.number("buckets", 60)?,
        group_by: p.list("by")?,
        series_limit: p.number("series_limit", 10)?,
    })
}

async fn histogram(State(s): State<ApiState>, Query(p): Q) -> Answer {
    let p = Params(p);
    let r = chart_request(&s, &p)?;
    if r.group_by.len() > 1 {
        return Err(bad("`by`: a histogram splits by at most one field"));
    }
    json(s.query.chart(&r).await?)
}

async fn aggregate(State(s): State<ApiState>, Query(p): Q) -> Answer {
    let p = Params(p);
    let r = ChartRequest {
        measures: p.list("measures")?,
        ..chart_request(&s, &p)?
    };
    json(s.query.chart(&r).await?)
}

async fn facets(State(s): State<ApiState>, Query(p): Q) -> Answer {
    let p = Params(p);
    let facets = s
        .query
        .facets(
            p.signal(None)?,
            &p.text("q")?,
            p.range(&s.query)?,
            &p.list("fields")?,
            p.number("limit", 10)?,
        )
        .await?;
    json(json!({ "facets": facets }))
}

async fn trace(State(s): State<ApiState>, Path(trace_id): Path<String>) -> Answer {
    let t = s.query.trace(&trace_id).await?;
    // `rows` (the spans) stays for clients of the first API version.
    json(json!({ "rows": t.spans, "spans": t.spans, "logs": t.logs }))
}

async fn services(State(s): State<ApiState>, Query(p): Q) -> Answer {
    let p = Params(p);
    let range = p.range(&s.query)?;
    let services = s.query.services(range, p.number("limit", 100)?).await?;
    json(json!({ "services": services }))
}

async fn metric_points(State(s): State<ApiState>, Query(p): Q) -> Answer {
    let p = Params(p);
    let name = p
        .get("name")?
        .ok_or_else(|| bad("`name` (the metric name) is required"))?
        .to_string();
    let range = p.range(&s.query)?;
    let limit = s.query.rows(p.number("limit", s.query.limits.max_rows)?)?;
    let filter = s.query.parse(Signal::Metrics, &p.text("q")?, range).await?;
    let rows = s
        .storage
        .metric_points(&MetricQuery {
            name,
            filter,
            range,
            limit,
        })
        .await?;
    json(json!({ "rows": rows }))
}

async fn metric_series(State(s): State<ApiState>, Query(p): Q) -> Answer {
    let p = Params(p);
    let quantiles = p
        .list("quantiles")?
        .iter()
        .map(|q| {
            q.parse::<f64>()
                .map_err(|_| bad(format!("`quantiles`: {q:?} is not a number")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let r = MetricRequest {
        name: p.text("name")?,
        q: p.text("q")?,
        range: p.range(&s.query)?,
        interval: interval::parse(&p.text("interval")?)?,
        buckets: p.number("buckets", 60)?,
        group_by: p.list("by")?,
        quantiles,
    };
    json(s.query.metric_chart(&r).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
    /// RFC 3339 or unix nanoseconds, as in query strings.
    from: Option<Value>,
    to: Option<Value>,
    limit: Option<usize>,
}

fn body_time(name: &str, v: Option<&Value>) -> Result<Option<i64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(format!("`{name}` must be unix nanoseconds or RFC 3339"))),
        Some(Value::String(t)) => parse_time(name, t).map(Some),
        Some(_) => Err(bad(format!(
            "`{name}` must be unix nanoseconds or RFC 3339"
        ))),
    }
}

/// `POST /api/v1/sql {"sql": "SELECT …", "from": …, "to": …, "limit": N}`.
async fn sql(
    State(s): State<ApiState>,
    body: Result<Json<SqlBody>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    let Json(b) = body.map_err(|e| bad(format!("expected JSON {{\"sql\": \"SELECT …\"}}: {e}")))?;
    let range = s.query.range(
        body_time("from", b.from.as_ref())?,
        body_time("to", b.to.as_ref())?,
    )?;
    let result = s.query.sql(&b.sql, range, b.limit.unwrap_or(1_000)).await?;
    json(result)
}
