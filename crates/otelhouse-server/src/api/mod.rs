//! The API/UI listener: health, readiness, Prometheus metrics, and the
//! `/api/v1` read API (bearer API token). The query endpoints live in
//! [`query`]; what they mean is `otelhouse_query`'s business.

mod params;
mod query;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use otelhouse_auth::{KeyCache, SecretKind};
use otelhouse_query::QueryService;
use otelhouse_storage::{QueryError, Storage};
use serde_json::json;

use crate::security::GateReport;
use crate::telemetry::Telemetry;

#[derive(Clone)]
pub struct ApiState {
    pub storage: Arc<dyn Storage>,
    pub query: Arc<QueryService>,
    pub keys: KeyCache,
    pub telemetry: Arc<Telemetry>,
    pub security: Arc<GateReport>,
    /// The API listener is on a non-loopback address: /metrics then needs
    /// an API token too (OPS-3). /healthz and /readyz stay open for load
    /// balancers; they reveal nothing.
    pub metrics_need_token: bool,
    /// Whether the store can answer: always for the embedded store; in
    /// ClickHouse mode once its tables are there (`/readyz` says 503 before).
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

pub fn router(state: ApiState) -> Router {
    let api = query::routes()
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
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(metrics)
        .merge(api)
        .with_state(state)
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if (state.ready)() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the ClickHouse tables are not set up yet (see the log)\n",
        )
            .into_response()
    }
}

/// The API's description (OpenAPI 3.1); public, like any API reference.
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
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

/// An API error: JSON `{"error": ...}` with a status; parse errors also
/// carry the 1-based `position` in the query text.
pub struct ApiError(StatusCode, String, Option<usize>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.2 {
            Some(position) => json!({"error": self.1, "position": position}),
            None => json!({"error": self.1}),
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<otelhouse_query::Error> for ApiError {
    fn from(e: otelhouse_query::Error) -> Self {
        match e {
            otelhouse_query::Error::Parse(p) => {
                ApiError(StatusCode::BAD_REQUEST, p.to_string(), Some(p.position))
            }
            otelhouse_query::Error::Query(q) => q.into(),
        }
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
        ApiError(status, e.to_string(), None)
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into(), None)
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
            None,
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
            crate::telemetry::Sink::Embedded(store.clone()),
            &GateReport::default(),
            None,
        ));
        let state = |public| ApiState {
            storage: Arc::new(store.clone()),
            query: Arc::new(QueryService::new(
                Arc::new(store.clone()),
                Default::default(),
            )),
            keys: keys.clone(),
            telemetry: telemetry.clone(),
            security: Arc::new(GateReport::default()),
            metrics_need_token: public,
            ready: Arc::new(|| true),
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
