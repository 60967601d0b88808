//! The API/UI listener: health, readiness, Prometheus metrics, and the
//! `/api/v1` read API (bearer API token).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use otelhouse_auth::{KeyCache, SecretKind};
use otelhouse_schema::Signal;
use otelhouse_storage::{MetricQuery, QueryError, SearchQuery, Storage, TimeRange};
use serde_json::json;

use crate::security::GateReport;
use crate::telemetry::Telemetry;

/// Largest `limit` a caller may ask for.
pub const MAX_LIMIT: usize = 10_000;
const DEFAULT_LIMIT: usize = 100;
/// Longest accepted search text.
pub const MAX_QUERY_BYTES: usize = 4096;

#[derive(Clone)]
pub struct ApiState {
    pub storage: Arc<dyn Storage>,
    pub keys: KeyCache,
    pub telemetry: Arc<Telemetry>,
    pub security: Arc<GateReport>,
    /// The API listener is on a non-loopback address: /metrics then needs
    /// an API token too (OPS-3). /healthz and /readyz stay open for load
    /// balancers; they reveal nothing.
    pub metrics_need_token: bool,
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/search", get(search))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/metrics", get(metric_points))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/security", get(security))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let metrics = Router::new().route("/metrics", get(prometheus));
    let metrics = if state.metrics_need_token {
        metrics.route_layer(middleware::from_fn_with_state(state.clone(), require_token))
    } else {
        metrics
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .merge(metrics)
        .merge(api)
        .with_state(state)
}

/// The startup gate's checks and any overrides in effect.
async fn security(State(state): State<ApiState>) -> Json<GateReport> {
    Json((*state.security).clone())
}

async fn prometheus(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.telemetry.render(),
    )
        .into_response()
}

/// An API error: JSON `{"error": ...}` with a status.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match e {
            QueryError::BadRequest(_) => StatusCode::BAD_REQUEST,
            QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            QueryError::TooBig(_) => StatusCode::UNPROCESSABLE_ENTITY,
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "query failed");
        }
        ApiError(status, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    if token
        .and_then(|t| state.keys.check(SecretKind::ApiToken, t))
        .is_none()
    {
        let mut resp = ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API token (Authorization: Bearer <token>)".into(),
        )
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return resp;
    }
    next.run(request).await
}

/// `GET /api/v1/stats`: per table and hour partition, rows, parts, bytes
/// on disk and the compression ratio.
async fn stats(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let tables = state.storage.stats().await?;
    Ok(Json(
        json!({ "tables": tables.iter().map(stats_json).collect::<Vec<_>>() }),
    ))
}

pub fn stats_json(t: &otelhouse_storage::TableStats) -> serde_json::Value {
    let ratio = |raw: u64, bytes: u64| {
        if bytes == 0 {
            serde_json::Value::Null
        } else {
            json!(((raw as f64 / bytes as f64) * 100.0).round() / 100.0)
        }
    };
    json!({
        "table": t.table,
        "rows": t.part_rows as usize + t.tail_rows,
        "part_rows": t.part_rows,
        "memory_rows": t.tail_rows,
        "parts": t.parts,
        "bytes": t.part_bytes,
        "uncompressed_bytes": t.part_raw_bytes,
        "compression_ratio": ratio(t.part_raw_bytes, t.part_bytes),
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "rows": p.rows,
            "parts": p.parts,
            "bytes": p.bytes,
            "uncompressed_bytes": p.raw_bytes,
            "compression_ratio": ratio(p.raw_bytes, p.bytes),
        })).collect::<Vec<_>>(),
    })
}

/// A time bound: RFC 3339 or unix nanoseconds.
pub fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(n) = value.parse::<i64>() {
        return Ok(n);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| bad(format!("`{name}`: expected RFC 3339 (2026-01-02T03:04:05Z) or unix nanoseconds, got {value:?}")))
}

fn range(params: &HashMap<String, String>) -> Result<TimeRange, ApiError> {
    let get = |k: &str| {
        params
            .get(k)
            .filter(|v| !v.is_empty())
            .map(|v| parse_time(k, v))
            .transpose()
    };
    let range = TimeRange {
        from: get("from")?,
        to: get("to")?,
    };
    if let (Some(from), Some(to)) = (range.from, range.to)
        && from > to
    {
        return Err(bad("`from` is after `to`"));
    }
    Ok(range)
}

fn limit(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    let Some(v) = params.get("limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(bad(format!(
            "`limit` must be a whole number from 1 to {MAX_LIMIT}, got {v:?}"
        ))),
    }
}

async fn search(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let signal = match params.get("signal").map(String::as_str) {
        Some(s @ ("logs" | "traces")) => Signal::parse(s).expect("listed signal"),
        other => {
            return Err(bad(format!(
                "`signal` must be logs or traces, got {other:?}"
            )));
        }
    };
    let text = params.get("q").cloned();
    if text.as_ref().is_some_and(|t| t.len() > MAX_QUERY_BYTES) {
        return Err(bad(format!("`q` is longer than {MAX_QUERY_BYTES} bytes")));
    }
    let q = SearchQuery {
        signal,
        text,
        range: range(&params)?,
        limit: limit(&params)?,
    };
    let rows = state.storage.search(&q).await?;
    Ok(Json(json!({ "rows": rows })))
}

async fn trace(
    State(state): State<ApiState>,
    Path(trace_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "trace id must be 32 hex characters, got {trace_id:?}"
        )));
    }
    let limit = params
        .get("limit")
        .map_or(Ok(MAX_LIMIT), |_| limit(&params))?;
    let rows = state.storage.trace(&trace_id, limit).await?;
    Ok(Json(json!({ "rows": rows })))
}

async fn metric_points(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = params
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("`name` (the metric name) is required"))?;
    if name.len() > MAX_QUERY_BYTES {
        return Err(bad(format!(
            "`name` is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    let limit = params
        .get("limit")
        .map_or(Ok(MAX_LIMIT), |_| limit(&params))?;
    let q = MetricQuery {
        name: name.clone(),
        range: range(&params)?,
        limit,
    };
    let rows = state.storage.metric_points(&q).await?;
    Ok(Json(json!({ "rows": rows })))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    async fn status(router: &Router, path: &str, token: Option<&str>) -> StatusCode {
        let mut req = axum::http::Request::get(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    /// OPS-3: on a public API listener, /metrics needs a token; health and
    /// readiness stay open for load balancers.
    #[tokio::test]
    async fn metrics_need_a_token_on_a_public_listener() {
        let dir = tempfile::tempdir().unwrap();
        let creds = otelhouse_auth::Credentials::open(dir.path()).await.unwrap();
        let init = creds.initialise().await.unwrap();
        let keys = KeyCache::load(creds.clone()).await.unwrap();
        let store = otelhouse_storage::EmbeddedStore::open(dir.path(), Default::default()).unwrap();
        let telemetry = Arc::new(Telemetry::new(
            Default::default(),
            store.clone(),
            &GateReport::default(),
        ));
        let state = |public| ApiState {
            storage: Arc::new(store.clone()),
            keys: keys.clone(),
            telemetry: telemetry.clone(),
            security: Arc::new(GateReport::default()),
            metrics_need_token: public,
        };
        let public = router(state(true));
        assert_eq!(
            status(&public, "/metrics", None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&public, "/metrics", Some(&init.api_token)).await,
            StatusCode::OK
        );
        assert_eq!(status(&public, "/healthz", None).await, StatusCode::OK);
        assert_eq!(status(&public, "/readyz", None).await, StatusCode::OK);
        assert_eq!(
            status(&public, "/api/v1/security", None).await,
            StatusCode::UNAUTHORIZED
        );
        let local = router(state(false));
        assert_eq!(status(&local, "/metrics", None).await, StatusCode::OK);
    }
}
