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
use crate::raft::ProposeError;
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
        .route("/api/v1/sensors/{id}/losses", get(sensor_losses))
        .route("/api/v1/cluster", get(cluster))
        .merge(crate::alerts::api::routes())
        .merge(crate::policy::api::routes())
        .merge(
            crate::policy::groups::routes().merge(crate::policy::blast::routes()).merge(crate::policy::tags::routes()),
        )
        .merge(crate::risk::api::routes())
        .fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(query.clone(), read_consistency))
        .with_state(query)
}

/// Header asking for a linearizable read; without it a read answers from this node's
/// applied state (identical on every node at the same applied index, possibly behind the
/// leader on a follower).
pub const CONSISTENCY_HEADER: &str = "x-wardline-consistency";

/// How long a linearizable read waits for a quorum to confirm the leader.
const LINEARIZABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// With `x-wardline-consistency: linearizable`, pass the Raft read barrier before the
/// handler reads the state; a follower answers 421 naming the leader, no quorum 503.
async fn read_consistency(
    State(query): Service,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let wanted = req.headers().get(CONSISTENCY_HEADER).map(|v| v.to_str().unwrap_or("").to_ascii_lowercase());
    match wanted.as_deref() {
        None | Some("local") => {}
        Some("linearizable") => {
            if let Err(e) = query.raft().ensure_linearizable(LINEARIZABLE_WAIT).await {
                let msg = e.to_string();
                return match e {
                    ProposeError::NotLeader { leader_id, leader_addr, .. } => (
                        StatusCode::MISDIRECTED_REQUEST,
                        Json(serde_json::json!({
                            "error": format!("linearizable reads are served by the leader; {msg}"),
                            "leader_id": leader_id,
                            "leader_api_addr": leader_addr,
                        })),
                    )
                        .into_response(),
                    other => {
                        QueryError::Unavailable(format!("linearizable read not possible now: {other}")).into_response()
                    }
                };
            }
        }
        Some(other) => {
            return QueryError::Invalid(format!(
                "{CONSISTENCY_HEADER}: {other:?} is not a read consistency; use \"linearizable\" or \"local\""
            ))
            .into_response()
        }
    }
    next.run(req).await
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

async fn sensor_losses(
    State(query): Service,
    Path(id): Path<String>,
) -> ApiResult<crate::query::views::SensorLossesView> {
    Ok(Json(query.sensor_losses(&id).await?))
}

async fn cluster(State(query): Service) -> Json<ClusterView> {
    Json(query.cluster())
}
