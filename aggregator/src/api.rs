//! HTTP API (axum): parses requests, asks the [`QueryService`] and renders its typed
//! answers as JSON. Every route and its answer is described in docs/api.md.
//!
//! Errors are [`QueryError`]s, rendered as `{"error": "..."}` with 400 (fix the request),
//! 404 (no such device or route) or 503 (the flow store is down; retry later).

use crate::query::views::{
    ClusterView, DeviceFlowsView, DeviceView, FlowsView, HealthView, HistoryView, InventoryView, SensorsView,
    TotalsView,
};
use crate::query::{QueryError, QueryService};
use crate::sink::FlowQuery;
use crate::state::DeviceId;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The API routes over `query`. Raft RPC is not part of it (the node merges its router).
pub fn router(query: Arc<QueryService>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/api/v1/inventory", get(inventory))
        .route("/api/v1/devices/{id}", get(device))
        .route("/api/v1/devices/{id}/flows", get(device_flows))
        .route("/api/v1/devices/{id}/history", get(device_history))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/flows/totals", get(flow_totals))
        .route("/api/v1/sensors", get(sensors))
        .route("/api/v1/cluster", get(cluster))
        .fallback(unknown_route)
        .with_state(query)
}

type Service = State<Arc<QueryService>>;
type ApiResult<T> = Result<Json<T>, QueryError>;

/// The body of every error answer.
#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = match &self {
            QueryError::Invalid(_) => StatusCode::BAD_REQUEST,
            QueryError::NotFound(_) => StatusCode::NOT_FOUND,
            QueryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(ErrorBody { error: self.to_string() })).into_response()
    }
}

async fn unknown_route() -> QueryError {
    QueryError::NotFound("no such endpoint; see docs/api.md for the list".into())
}

/// A device id from the path: a MAC, `site:ip` or `site:ip@vlan`.
fn parse_id(text: &str) -> Result<DeviceId, QueryError> {
    text.parse().map_err(QueryError::Invalid)
}

/// Query-string parameters, refusing unknown ones with the list of accepted names.
fn params<T>(parsed: Result<Query<T>, QueryRejection>, accepted: &str) -> Result<T, QueryError> {
    parsed.map(|Query(p)| p).map_err(|e| QueryError::Invalid(format!("{e}; accepted parameters: {accepted}")))
}

/// 200 while the node works; 503 once its Raft core has stopped, so load balancers and
/// supervisors see it.
async fn health(State(query): Service) -> (StatusCode, Json<HealthView>) {
    let h = query.health();
    let code = if h.error.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(h))
}

async fn inventory(State(query): Service) -> Json<InventoryView> {
    Json(query.inventory().await)
}

async fn device(State(query): Service, Path(id): Path<String>) -> ApiResult<DeviceView> {
    Ok(Json(query.device(&parse_id(&id)?).await?))
}

async fn device_history(State(query): Service, Path(id): Path<String>) -> ApiResult<HistoryView> {
    Ok(Json(query.history(&parse_id(&id)?).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFlowParams {
    limit: Option<u32>,
}

async fn device_flows(
    State(query): Service,
    Path(id): Path<String>,
    parsed: Result<Query<DeviceFlowParams>, QueryRejection>,
) -> ApiResult<DeviceFlowsView> {
    let p = params(parsed, "limit")?;
    Ok(Json(query.device_flows(&parse_id(&id)?, p.limit).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowParams {
    mac: Option<String>,
    ip: Option<String>,
    sensor: Option<String>,
    app: Option<String>,
    limit: Option<u32>,
}

async fn flows(State(query): Service, parsed: Result<Query<FlowParams>, QueryRejection>) -> ApiResult<FlowsView> {
    let p = params(parsed, "mac, ip, sensor, app, limit")?;
    let filters = FlowQuery { mac: p.mac, ip: p.ip, sensor_id: p.sensor, app: p.app, limit: p.limit };
    Ok(Json(query.flows(&filters).await?))
}

async fn flow_totals(State(query): Service) -> ApiResult<TotalsView> {
    Ok(Json(query.totals().await?))
}

async fn sensors(State(query): Service) -> Json<SensorsView> {
    Json(query.sensors().await)
}

async fn cluster(State(query): Service) -> Json<ClusterView> {
    Json(query.cluster())
}
