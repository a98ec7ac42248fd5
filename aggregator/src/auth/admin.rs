//! Admin routes for credentials and the audit log (all need role admin, see
//! [`super::DECLARED_ROUTES`]):
//! - `POST /api/v1/tokens` `{"name","role"}` → 201 with the token text, shown only here;
//! - `GET /api/v1/tokens` → the live tokens (never their secrets or hashes);
//! - `DELETE /api/v1/tokens/{id-or-name}` → revoke;
//! - `GET /api/v1/audit?limit=N` → newest entries first, with kept/dropped counts;
//! - `GET /api/v1/revocations` (viewer) → revoked sensors and sensor certificates;
//! - `POST /api/v1/revocations` `{"sensor_id","serial"?,"reason"}` → 201, the sensor (or that
//!   one certificate) is refused at the handshake and cut off within seconds on every node;
//! - `DELETE /api/v1/revocations/{sensor_id}?serial=HEX` → lift it.

use super::layer::{AuditDetail, AuditedInProposal, PendingAudit};
use super::{token, Principal, Role};
use crate::raft::{ProposeError, RaftNode};
use crate::state::audit::AuditEntry;
use crate::state::revocations::Revocation;
use crate::state::tokens::{TokenRecord, TokenRefusal};
use crate::state::Command;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Audit entries answered by default and at most.
pub const AUDIT_DEFAULT_LIMIT: usize = 100;
pub const AUDIT_MAX_LIMIT: usize = 1000;

pub fn router(raft: Arc<RaftNode>) -> Router {
    Router::new()
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/revocations", get(list_revocations).post(revoke_sensor))
        .route("/api/v1/revocations/{sensor_id}", delete(lift_revocation))
        .with_state(raft)
}

type Raft = State<Arc<RaftNode>>;

struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn propose_error(e: ProposeError) -> AdminError {
    match e {
        ProposeError::NotLeader { .. } => {
            AdminError(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; send admin changes to the leader"))
        }
        other => {
            AdminError(StatusCode::SERVICE_UNAVAILABLE, format!("the cluster could not commit the change: {other}"))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTokenBody {
    name: String,
    role: Role,
}

#[derive(Serialize)]
struct CreatedToken {
    id: String,
    name: String,
    role: Role,
    /// The bearer token. Shown once: only its hash is stored.
    token: String,
}

#[derive(Serialize)]
struct TokenView {
    id: String,
    name: String,
    role: Role,
    created_at_ms: u64,
    created_by: String,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> Self {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role,
            created_at_ms: t.created_at_ms,
            created_by: t.created_by.clone(),
        }
    }
}

async fn create_token(
    State(raft): Raft,
    principal: Option<Extension<Principal>>,
    pending: Option<Extension<PendingAudit>>,
    body: Result<Json<CreateTokenBody>, JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(body) = body.map_err(|e| {
        AdminError(
            StatusCode::BAD_REQUEST,
            format!("{e}; expected {{\"name\": \"...\", \"role\": \"viewer|analyst|admin\"}}"),
        )
    })?;
    token::validate_name(&body.name).map_err(|e| AdminError(StatusCode::BAD_REQUEST, e))?;
    let new = token::generate().map_err(|e| AdminError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let created_by = principal.map_or_else(|| "unknown".to_string(), |Extension(p)| p.name);
    let record = TokenRecord {
        id: new.id.clone(),
        name: body.name.clone(),
        role: body.role,
        secret_sha256: new.secret_sha256,
        created_at_ms: super::now_ms(),
        created_by,
    };
    // A clear answer for the usual refusal; the state machine decides for real.
    let precheck = raft.read_state(|s| s.tokens().check_create(&record)).await;
    let refused = |r: TokenRefusal| match r {
        TokenRefusal::NameTaken => AdminError(
            StatusCode::CONFLICT,
            format!("a token named {:?} exists; revoke it first or choose another name", record.name),
        ),
        TokenRefusal::Full => AdminError(
            StatusCode::CONFLICT,
            format!("{} tokens exist, the most kept; revoke unused ones first", crate::state::tokens::MAX_TOKENS),
        ),
        TokenRefusal::IdTaken | TokenRefusal::Unknown => {
            AdminError(StatusCode::CONFLICT, "token id collision; try again".to_string())
        }
    };
    precheck.map_err(refused)?;
    let detail = format!("created token {} ({}, role {})", new.id, record.name, record.role);
    let command = Command::CreateToken(record.clone());
    let (applied, audited) = propose_audited(&raft, pending, command, StatusCode::CREATED, &detail).await?;
    let resp = if applied {
        (
            StatusCode::CREATED,
            Json(CreatedToken { id: new.id.clone(), name: record.name.clone(), role: record.role, token: new.text }),
        )
            .into_response()
    } else {
        AdminError(
            StatusCode::CONFLICT,
            format!("token {:?} was not created (a concurrent change took its name); try again", record.name),
        )
        .into_response()
    };
    Ok(audit_marks(resp, detail, audited))
}

/// Propose `command` together with the request's audit entry when there is one (every
/// changing request through the API has one). Returns (applied, audited in the proposal).
async fn propose_audited(
    raft: &RaftNode,
    pending: Option<Extension<PendingAudit>>,
    command: Command,
    status: StatusCode,
    detail: &str,
) -> Result<(bool, bool), AdminError> {
    let (command, audited) = match pending {
        Some(Extension(p)) => (p.wrap(command, status, detail.to_string()), true),
        None => (command, false),
    };
    let applied = raft.propose(command).await.map_err(propose_error)?.applied;
    Ok((applied, audited))
}

/// Tell the audit layer what the request did and whether its entry is already committed.
fn audit_marks(mut resp: Response, detail: String, audited: bool) -> Response {
    resp.extensions_mut().insert(AuditDetail(detail));
    if audited {
        resp.extensions_mut().insert(AuditedInProposal);
    }
    resp
}

async fn list_tokens(State(raft): Raft) -> Json<serde_json::Value> {
    let tokens: Vec<TokenView> = raft.read_state(|s| s.tokens().iter().map(TokenView::from).collect()).await;
    Json(serde_json::json!({ "count": tokens.len(), "tokens": tokens }))
}

async fn revoke_token(
    State(raft): Raft,
    pending: Option<Extension<PendingAudit>>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let known = raft
        .read_state(|s| s.tokens().iter().find(|t| t.id == id || t.name == id).map(|t| (t.id.clone(), t.name.clone())))
        .await;
    let Some((tid, name)) = known else {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no token with id or name {id:?}; list them with GET /api/v1/tokens"),
        ));
    };
    let detail = format!("revoked token {tid} ({name})");
    let command = Command::RevokeToken(tid.clone());
    let (applied, audited) = propose_audited(&raft, pending, command, StatusCode::OK, &detail).await?;
    let resp = if applied {
        Json(serde_json::json!({ "revoked": tid, "name": name })).into_response()
    } else {
        AdminError(StatusCode::NOT_FOUND, format!("token {tid} was already revoked")).into_response()
    };
    Ok(audit_marks(resp, detail, audited))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    limit: Option<usize>,
}

#[derive(Serialize)]
struct AuditView {
    /// Entries ever recorded in this cluster.
    recorded: u64,
    /// Entries still kept (the newest `crate::state::audit::MAX_AUDIT_ENTRIES`).
    kept: usize,
    /// Oldest entries pushed out by the bound.
    dropped: u64,
    entries: Vec<AuditEntry>,
}

async fn audit(
    State(raft): Raft,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditView>, AdminError> {
    let Query(p) =
        params.map_err(|e| AdminError(StatusCode::BAD_REQUEST, format!("{e}; accepted parameters: limit")))?;
    let limit = p.limit.unwrap_or(AUDIT_DEFAULT_LIMIT);
    if limit == 0 || limit > AUDIT_MAX_LIMIT {
        return Err(AdminError(StatusCode::BAD_REQUEST, format!("limit must be 1 to {AUDIT_MAX_LIMIT}")));
    }
    let view = raft
        .read_state(|s| {
            let log = s.audit();
            AuditView {
                recorded: log.recorded(),
                kept: log.kept(),
                dropped: log.dropped(),
                entries: log.newest(limit).cloned().collect(),
            }
        })
        .await;
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    sensor_id: String,
    /// One certificate's serial (hex); absent revokes every certificate of the sensor.
    serial: Option<String>,
    reason: String,
}

/// Longest reason kept with a revocation.
const MAX_REASON_CHARS: usize = 500;

fn check_serial(serial: &str) -> Result<String, AdminError> {
    let s = serial.trim().replace(':', "").to_ascii_lowercase();
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AdminError(
            StatusCode::BAD_REQUEST,
            format!("serial {serial:?} is not a certificate serial number (hex, as `admin issue-sensor` prints it)"),
        ));
    }
    Ok(s)
}

async fn list_revocations(State(raft): Raft) -> Json<serde_json::Value> {
    let list: Vec<Revocation> = raft.read_state(|s| s.revocations().iter().cloned().collect()).await;
    Json(serde_json::json!({ "count": list.len(), "revocations": list }))
}

async fn revoke_sensor(
    State(raft): Raft,
    principal: Option<Extension<Principal>>,
    pending: Option<Extension<PendingAudit>>,
    body: Result<Json<RevokeBody>, JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(body) = body.map_err(|e| {
        AdminError(
            StatusCode::BAD_REQUEST,
            format!("{e}; expected {{\"sensor_id\": \"...\", \"serial\": \"hex (optional)\", \"reason\": \"...\"}}"),
        )
    })?;
    crate::pki::validate_id("sensor id", &body.sensor_id)
        .map_err(|e| AdminError(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(AdminError(
            StatusCode::BAD_REQUEST,
            format!("give a reason of 1 to {MAX_REASON_CHARS} characters (it is shown to whoever looks at the sensor later)"),
        ));
    }
    let serial = body.serial.as_deref().map(check_serial).transpose()?;
    let record = Revocation {
        sensor_id: body.sensor_id.clone(),
        serial: serial.clone(),
        reason: reason.to_string(),
        revoked_by: principal.map_or_else(|| "unknown".to_string(), |Extension(p)| p.name),
        revoked_at_ms: super::now_ms(),
    };
    let what = match &serial {
        Some(s) => format!("certificate {s} of sensor {}", record.sensor_id),
        None => format!("sensor {} (every certificate)", record.sensor_id),
    };
    let detail = format!("revoked {what}: {reason}");
    let command = Command::RevokeSensor(record.clone());
    let (applied, audited) = propose_audited(&raft, pending, command, StatusCode::CREATED, &detail).await?;
    let resp = if applied {
        (StatusCode::CREATED, Json(serde_json::json!({ "revoked": record }))).into_response()
    } else {
        AdminError(
            StatusCode::CONFLICT,
            format!(
                "{} revocations exist, the most kept; lift old ones first",
                crate::state::revocations::MAX_REVOCATIONS
            ),
        )
        .into_response()
    };
    Ok(audit_marks(resp, detail, audited))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiftParams {
    serial: Option<String>,
}

async fn lift_revocation(
    State(raft): Raft,
    pending: Option<Extension<PendingAudit>>,
    Path(sensor_id): Path<String>,
    params: Result<Query<LiftParams>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(p) =
        params.map_err(|e| AdminError(StatusCode::BAD_REQUEST, format!("{e}; accepted parameters: serial")))?;
    let serial = p.serial.as_deref().map(check_serial).transpose()?;
    let what = match &serial {
        Some(s) => format!("certificate {s} of sensor {sensor_id}"),
        None => format!("sensor {sensor_id}"),
    };
    let known = {
        let (id, serial) = (sensor_id.clone(), serial.clone());
        raft.read_state(move |s| s.revocations().iter().any(|r| r.sensor_id == id && r.serial == serial)).await
    };
    if !known {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("{what} is not revoked; list revocations with GET /api/v1/revocations"),
        ));
    }
    let detail = format!("lifted the revocation of {what}");
    let command = Command::LiftRevocation { sensor_id: sensor_id.clone(), serial: serial.clone() };
    let (applied, audited) = propose_audited(&raft, pending, command, StatusCode::OK, &detail).await?;
    let resp = if applied {
        Json(serde_json::json!({ "lifted": sensor_id, "serial": serial })).into_response()
    } else {
        AdminError(StatusCode::NOT_FOUND, format!("{what} was no longer revoked")).into_response()
    };
    Ok(audit_marks(resp, detail, audited))
}
