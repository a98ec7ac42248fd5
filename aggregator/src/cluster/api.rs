//! HTTP API of the cluster lifecycle, on the API listener under `/api/v1/cluster/`:
//!
//! - `GET  /api/v1/cluster/status`
//! - `POST /api/v1/cluster/init`     (no body)
//! - `POST /api/v1/cluster/join`     `{"node_id", "raft_addr", "api_addr", "ingest_addr"}`
//! - `POST /api/v1/cluster/leave`    `{"node_id"}`
//! - `POST /api/v1/cluster/replace`  `{"old", "new": {"node_id", "raft_addr", "api_addr", "ingest_addr"}}`
//! - `GET  /api/v1/cluster/backup`   (admin) this node's applied state as a backup file
//!
//! Errors are `{"error": "..."}`; a follower answers 421 with `leader_id` and
//! `leader_api_addr` so the caller can retry at the leader.

use super::{ClusterError, ClusterStatus, JoinRequest};
use crate::raft::RaftNode;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveRequest {
    pub node_id: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRequest {
    pub old: u64,
    pub new: JoinRequest,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InitResponse {
    pub cluster_id: String,
    pub node_id: u64,
}

pub fn router(node: Arc<RaftNode>) -> Router {
    Router::new()
        .route("/api/v1/cluster/status", get(status))
        .route("/api/v1/cluster/init", post(init))
        .route("/api/v1/cluster/join", post(join))
        .route("/api/v1/cluster/leave", post(leave))
        .route("/api/v1/cluster/replace", post(replace))
        .route("/api/v1/cluster/backup", get(backup))
        .with_state(node)
}

impl IntoResponse for ClusterError {
    fn into_response(self) -> Response {
        let msg = self.to_string();
        match self {
            ClusterError::NotLeader { leader_id, leader_api, .. } => (
                StatusCode::MISDIRECTED_REQUEST,
                Json(serde_json::json!({ "error": msg, "leader_id": leader_id, "leader_api_addr": leader_api })),
            )
                .into_response(),
            ClusterError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": msg }))).into_response()
            }
            ClusterError::Conflict(_) => {
                (StatusCode::CONFLICT, Json(serde_json::json!({ "error": msg }))).into_response()
            }
            ClusterError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": msg }))).into_response()
            }
        }
    }
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ClusterError> {
    b.map(|Json(v)| v).map_err(|e| ClusterError::BadRequest(format!("invalid request body: {}", e.body_text())))
}

async fn status(State(node): State<Arc<RaftNode>>) -> Json<ClusterStatus> {
    Json(super::status(&node).await)
}

async fn init(State(node): State<Arc<RaftNode>>) -> Result<Json<InitResponse>, ClusterError> {
    let cluster_id = super::init(&node).await?;
    Ok(Json(InitResponse { cluster_id, node_id: node.node_id() }))
}

async fn join(
    State(node): State<Arc<RaftNode>>,
    req: Result<Json<JoinRequest>, JsonRejection>,
) -> Result<Json<ClusterStatus>, ClusterError> {
    Ok(Json(super::join(&node, &body(req)?).await?))
}

async fn leave(
    State(node): State<Arc<RaftNode>>,
    req: Result<Json<LeaveRequest>, JsonRejection>,
) -> Result<Json<ClusterStatus>, ClusterError> {
    Ok(Json(super::leave(&node, body(req)?.node_id).await?))
}

async fn replace(
    State(node): State<Arc<RaftNode>>,
    req: Result<Json<ReplaceRequest>, JsonRejection>,
) -> Result<Json<ClusterStatus>, ClusterError> {
    let req = body(req)?;
    Ok(Json(super::replace(&node, req.old, &req.new).await?))
}

/// The applied state of this node as a backup file (`super::backup`). The download is
/// audited first (it carries token hashes and the audit log), so the backup records it.
async fn backup(
    State(node): State<Arc<RaftNode>>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    conn: Option<axum::Extension<crate::auth::layer::ConnInfo>>,
) -> Result<Response, ClusterError> {
    if let Some(axum::Extension(p)) = principal {
        let entry = crate::state::audit::AuditEntry {
            seq: 0,
            at_ms: crate::auth::now_ms(),
            node_id: node.node_id(),
            who: p.name.clone(),
            role: Some(p.role),
            credential: p.credential.clone(),
            method: "GET".into(),
            path: "/api/v1/cluster/backup".into(),
            status: 200,
            outcome: "ok".into(),
            detail: format!("online backup of node {}", node.node_id()),
            peer: conn.map_or_else(|| "unknown".into(), |axum::Extension(c)| c.peer.to_string()),
        };
        // Best effort, like the auth layer's audit: a follower cannot commit it, and a
        // leader that lost its quorum (when a backup matters most) must not block it.
        let audit = node.propose(crate::state::Command::Audit(entry));
        match tokio::time::timeout(std::time::Duration::from_secs(3), audit).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(who = %p.name, "cannot commit the audit entry of a backup download: {e}"),
            Err(_) => tracing::warn!(who = %p.name, "the audit entry of a backup download was not committed in 3 s"),
        }
    }
    let bytes = super::backup::capture(&node)
        .await
        .map_err(|e| ClusterError::Unavailable(format!("cannot build the backup: {e:#}")))?;
    let name = format!("wardline-node{}-{}.wlbackup", node.node_id(), crate::auth::now_ms());
    tracing::info!(node = node.node_id(), bytes = bytes.len(), "serving an online backup");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        bytes,
    )
        .into_response())
}
