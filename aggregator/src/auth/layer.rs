//! The authorization layer in front of every API route: find the credential, check the
//! role the route needs ([`super::required_access`]), answer 401/403 with JSON naming what
//! is needed, and audit every refusal and every non-read request through Raft: a change
//! commits with its audit entry in one log entry (`PendingAudit`), anything else (refusals,
//! failures, membership changes) gets an entry of its own after the answer.

use super::{required_access, token, Access, Credential, CredentialKind, Principal, Role};
use crate::raft::RaftNode;
use crate::state::audit::AuditEntry;
use crate::state::Command;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::warn;

/// What the TLS listener knows about a connection; put on every request it serves.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client certificate, already verified against the fleet CA by rustls.
    pub client_cert: Option<CertificateDer<'static>>,
}

/// A handler's note for the audit entry of its request (what it changed), set as a
/// response extension.
#[derive(Clone, Debug)]
pub struct AuditDetail(pub String);

/// The audit entry of a changing request, drafted before its handler runs (request
/// extension). A handler that changes state proposes its command wrapped by
/// [`PendingAudit::wrap`], so change and entry commit together.
#[derive(Clone, Debug)]
pub struct PendingAudit(pub AuditEntry);

/// Response extension: the request's audit entry was committed with its change.
#[derive(Clone, Copy, Debug)]
pub struct AuditedInProposal;

impl PendingAudit {
    /// `command` with this request's audit entry (status `status` if it applies, `detail`
    /// saying what it changes). The handler then marks its response [`AuditedInProposal`].
    pub fn wrap(&self, command: Command, status: StatusCode, detail: String) -> Command {
        let mut entry = self.0.clone();
        entry.status = status.as_u16();
        entry.detail = detail;
        Command::Audited { entry, command: Box::new(command) }
    }
}

/// Shared by every request: the Raft node (tokens, audit) and counters.
pub struct AuthState {
    pub raft: Arc<RaftNode>,
    /// Requests refused for lack of a valid credential (not audited through Raft: an
    /// anonymous flood must not be able to write into the replicated log).
    pub unauthenticated: AtomicU64,
    /// Audit entries that could not be committed (e.g. this node lost leadership).
    pub audit_failures: AtomicU64,
}

impl AuthState {
    pub fn new(raft: Arc<RaftNode>) -> Arc<Self> {
        Arc::new(AuthState { raft, unauthenticated: AtomicU64::new(0), audit_failures: AtomicU64::new(0) })
    }
}

#[derive(Serialize)]
struct RefusalBody {
    error: String,
    /// The role the route needs.
    required_role: Role,
}

/// Why a request was not let through.
enum Refusal {
    /// 401: no credential, or one that proves nothing.
    Unauthenticated(String),
    /// 403: a valid certificate that is not an operator's (sensor, node).
    NotOperator { who: String, serial: String, message: String },
}

fn refuse(status: StatusCode, error: String, needed: Role) -> Response {
    let mut resp = (status, Json(RefusalBody { error, required_role: needed })).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"wardline\""));
    }
    resp
}

async fn authenticate(raft: &RaftNode, headers: &HeaderMap, conn: Option<&ConnInfo>) -> Result<Principal, Refusal> {
    // A token, when given, is what the operator meant to use (a sensor's or node's TLS
    // certificate may well be on the same connection).
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let presented = token::parse_authorization(value.as_bytes()).map_err(Refusal::Unauthenticated)?;
        let record = raft.read_state(|s| s.tokens().get(&presented.id).cloned()).await;
        let Some(record) = record else {
            return Err(Refusal::Unauthenticated(format!(
                "token {} is unknown or revoked; ask an admin for a new one (`wardline-aggregator admin token create`)",
                presented.id
            )));
        };
        if !token::digests_equal(&presented.secret_sha256(), &record.secret_sha256) {
            return Err(Refusal::Unauthenticated(format!("token {} does not match its stored hash", presented.id)));
        }
        return Ok(Principal { name: record.name, role: record.role, credential: Credential::token(record.id) });
    }
    if let Some(cert) = conn.and_then(|c| c.client_cert.as_ref()) {
        return match crate::pki::operator_identity(cert) {
            Ok(op) => Ok(Principal { name: op.name, role: op.role, credential: Credential::certificate(op.serial) }),
            Err(e) => {
                let who = crate::pki::sensor_identity(cert)
                    .map(|s| format!("sensor {s}"))
                    .or_else(|_| crate::pki::node_identity(cert).map(|n| format!("node {n}")))
                    .unwrap_or_else(|_| "unknown certificate".into());
                let serial = x509_parser::parse_x509_certificate(cert)
                    .map(|(_, c)| hex::encode(c.raw_serial()))
                    .unwrap_or_default();
                Err(Refusal::NotOperator {
                    who,
                    serial,
                    message: format!(
                        "{e:#}; present an operator certificate (`wardline-aggregator admin issue-operator`) or a \
                         bearer token"
                    ),
                })
            }
        };
    }
    Err(Refusal::Unauthenticated(
        "no credential: send `Authorization: Bearer <token>` or connect with an operator client certificate".into(),
    ))
}

/// axum middleware (`from_fn_with_state`) enforcing [`required_access`] on every route.
pub async fn authorize(State(auth): State<Arc<AuthState>>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let needed = match required_access(&method, &path) {
        Access::Open => return next.run(req).await,
        Access::Needs(role) => role,
    };
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let peer = conn.as_ref().map_or_else(|| "unknown".to_string(), |c| c.peer.to_string());
    let principal = match authenticate(&auth.raft, req.headers(), conn.as_ref()).await {
        Ok(p) => p,
        Err(Refusal::Unauthenticated(why)) => {
            auth.unauthenticated.fetch_add(1, Ordering::Relaxed);
            warn!(%method, %path, %peer, "API request refused (401): {why}");
            return refuse(StatusCode::UNAUTHORIZED, format!("{why} ({method} {path} needs role {needed})"), needed);
        }
        Err(Refusal::NotOperator { who, serial, message }) => {
            let entry = entry(&auth, &who, None, Credential::certificate(serial), &method, &path, &peer);
            record(&auth, entry, StatusCode::FORBIDDEN, "refused", message.clone()).await;
            return refuse(StatusCode::FORBIDDEN, message, needed);
        }
    };
    if !principal.role.allows(needed) {
        let message = format!(
            "{method} {path} needs role {needed}; {} has role {}",
            describe_credential(&principal),
            principal.role
        );
        let entry =
            entry(&auth, &principal.name, Some(principal.role), principal.credential.clone(), &method, &path, &peer);
        record(&auth, entry, StatusCode::FORBIDDEN, "refused", message.clone()).await;
        return refuse(StatusCode::FORBIDDEN, message, needed);
    }
    let is_read = method == Method::GET || method == Method::HEAD;
    let entry = (!is_read).then(|| {
        entry(&auth, &principal.name, Some(principal.role), principal.credential.clone(), &method, &path, &peer)
    });
    req.extensions_mut().insert(principal);
    if let Some(entry) = &entry {
        req.extensions_mut().insert(PendingAudit(entry.clone()));
    }
    let resp = next.run(req).await;
    // Committed with the change itself; a failed proposal leaves no mark and is recorded below.
    let entry = entry.filter(|_| resp.extensions().get::<AuditedInProposal>().is_none());
    if let Some(entry) = entry {
        let status = resp.status();
        let outcome = if status.is_success() { "ok" } else { "failed" };
        let detail = resp.extensions().get::<AuditDetail>().map(|d| d.0.clone()).unwrap_or_default();
        record(&auth, entry, status, outcome, detail).await;
    }
    resp
}

fn describe_credential(p: &Principal) -> String {
    match p.credential.kind {
        CredentialKind::Token => format!("token {} ({})", p.credential.id, p.name),
        CredentialKind::Certificate => format!("the operator certificate of {}", p.name),
    }
}

fn entry(
    auth: &AuthState,
    who: &str,
    role: Option<Role>,
    credential: Credential,
    method: &Method,
    path: &str,
    peer: &str,
) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at_ms: super::now_ms(),
        node_id: auth.raft.node_id(),
        who: who.to_string(),
        role,
        credential,
        method: method.to_string(),
        path: path.to_string(),
        status: 0,
        outcome: String::new(),
        detail: String::new(),
        peer: peer.to_string(),
    }
}

/// Commit one audit entry. A failure is logged and counted: the request's own effect has
/// already happened (or been refused) and cannot be undone here.
async fn record(auth: &AuthState, mut entry: AuditEntry, status: StatusCode, outcome: &str, detail: String) {
    entry.status = status.as_u16();
    entry.outcome = outcome.to_string();
    entry.detail = detail;
    if let Err(e) = auth.raft.record_audit(entry.clone()).await {
        auth.audit_failures.fetch_add(1, Ordering::Relaxed);
        warn!(
            who = %entry.who, method = %entry.method, path = %entry.path, status = entry.status,
            "cannot commit the audit entry of this request: {e}"
        );
    }
}
