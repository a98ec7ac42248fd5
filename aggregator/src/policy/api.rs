//! Policy routes (docs/api.md, "Segmentation policy"):
//! - `GET /api/v1/policy` — the active version with its membership and monitor-mode hits;
//! - `GET /api/v1/policy/versions`, `GET /api/v1/policy/versions/{n}`;
//! - `GET /api/v1/policy/diff?from=&to=` (defaults: `to` the active version, `from` its
//!   predecessor);
//! - `POST /api/v1/policy/validate` `{"text": "..."}` (analyst): errors with lines, canonical
//!   text, diff against the active version, safety findings, knowledge-base warnings;
//! - `POST /api/v1/policy/apply` `{"text": "...", "message": "..."}` and
//!   `POST /api/v1/policy/rollback` `{"to": N, "message": "..."}` (admin);
//! - `POST /api/v1/policy/refresh` (admin): recompute the active version's membership;
//! - `GET /api/v1/policy/drafts`, `DELETE /api/v1/policy/drafts/{id}` (analyst);
//! - `POST /api/v1/policy/violations/{alert}/add-to-policy|investigate|ignore` (analyst);
//! - `GET /api/v1/policy/export/{target}?version=&file=` — the policy rendered by the export
//!   crate; `GET /api/v1/policy/edl/{group}.txt` — the Palo Alto external dynamic list of a
//!   group of the active version (a stable URL for the firewall to poll);
//! - `GET /api/v1/policy/drafts/{id}` — one draft;
//! - `POST /api/v1/policy/recommend` (analyst, `super::recommend`) and
//!   `POST /api/v1/policy/replay` (analyst, `super::replay`), decision 0030.
//!
//! Every change is proposed wrapped with the request's audit entry (one Raft entry).

use super::resolve;
use crate::auth::layer::{AuditDetail, AuditedInProposal, PendingAudit};
use crate::auth::{now_ms, Principal};
use crate::query::QueryService;
use crate::raft::ProposeError;
use crate::state::alerts::{AlertAction, AlertKind, Triage};
use crate::state::policy::{
    self as stored, DraftRule, GroupMembers, MembershipUpdate, PolicyHits, PolicyProposal, PolicyVersion,
};
use crate::state::Command;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use wardline_export::Exporter;
use wardline_intel::policy::{self as engine, CompiledPolicy, Policy};

/// The policy routes, merged into `crate::api::router`.
pub fn routes() -> Router<Arc<QueryService>> {
    Router::new()
        .route("/api/v1/policy", get(active))
        .route("/api/v1/policy/versions", get(versions))
        .route("/api/v1/policy/versions/{n}", get(version))
        .route("/api/v1/policy/diff", get(diff))
        .route("/api/v1/policy/validate", post(validate))
        .route("/api/v1/policy/apply", post(apply))
        .route("/api/v1/policy/rollback", post(rollback))
        .route("/api/v1/policy/refresh", post(refresh))
        .route("/api/v1/policy/drafts", get(drafts))
        .route("/api/v1/policy/drafts/{id}", delete(remove_draft).get(draft))
        .route("/api/v1/policy/violations/{id}/{action}", post(triage))
        .route("/api/v1/policy/export/{target}", get(export))
        .route("/api/v1/policy/edl/{file}", get(edl))
        .route("/api/v1/policy/recommend", post(super::recommend::handler).layer(DefaultBodyLimit::max(READ_BODY)))
        .route("/api/v1/policy/replay", post(super::replay::handler).layer(DefaultBodyLimit::max(READ_BODY)))
}

/// Largest request body of recommend and replay: a policy text of the largest size kept,
/// JSON-escaped, and the other fields. Beyond it: 413 with a message.
pub const MAX_BODY: usize = 2 * stored::MAX_POLICY_BYTES + 4096;
/// Bodies up to this size are read before [`MAX_BODY`] is checked, so the client gets the
/// 413 answer rather than a connection closed while it was still sending.
const READ_BODY: usize = 8 * MAX_BODY;

type Service = State<Arc<QueryService>>;

/// An error answer `{"error": "...", ...extra}`.
pub struct PolicyApiError(StatusCode, serde_json::Value);

impl PolicyApiError {
    /// An answer with `status` and the JSON `body` (which holds `"error"`).
    pub fn new(status: StatusCode, body: serde_json::Value) -> Self {
        PolicyApiError(status, body)
    }
}

impl IntoResponse for PolicyApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

pub(super) fn err(status: StatusCode, msg: impl Into<String>) -> PolicyApiError {
    PolicyApiError(status, serde_json::json!({ "error": msg.into() }))
}

fn bad(msg: impl Into<String>) -> PolicyApiError {
    err(StatusCode::BAD_REQUEST, msg)
}

/// A request body of JSON (empty: all defaults); a too-large body keeps its 413.
pub(super) fn json_body<T: Default + serde::de::DeserializeOwned>(
    bytes: Result<Bytes, BytesRejection>,
    expected: &str,
) -> Result<T, PolicyApiError> {
    let bytes = bytes.map_err(|e| err(e.status(), format!("{e}; expected {expected}")))?;
    if bytes.len() > MAX_BODY {
        return Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is {} bytes, more than the {MAX_BODY} accepted", bytes.len()),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("the request body is not valid: {e}; expected {expected}")))
}

fn propose_error(e: ProposeError) -> PolicyApiError {
    match e {
        ProposeError::NotLeader { .. } => {
            err(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; send policy changes to the leader"))
        }
        other => err(StatusCode::SERVICE_UNAVAILABLE, format!("the cluster could not commit the change: {other}")),
    }
}

pub(super) fn who(principal: &Option<Extension<Principal>>) -> String {
    principal.as_ref().map_or_else(|| "unknown".to_string(), |Extension(p)| p.name.clone())
}

/// Propose `command` with the request's audit entry; returns whether it applied, and the
/// response marked for the audit layer.
pub(super) async fn propose_audited(
    q: &QueryService,
    pending: Option<Extension<PendingAudit>>,
    command: Command,
    status: StatusCode,
    detail: &str,
) -> Result<(bool, bool), PolicyApiError> {
    let (command, audited) = match pending {
        Some(Extension(p)) => (p.wrap(command, status, detail.to_string()), true),
        None => (command, false),
    };
    let applied = q.raft().propose(command).await.map_err(propose_error)?.applied;
    Ok((applied, audited))
}

pub(super) fn marked(resp: impl IntoResponse, detail: String, audited: bool) -> Response {
    let mut resp = resp.into_response();
    resp.extensions_mut().insert(AuditDetail(detail));
    if audited {
        resp.extensions_mut().insert(AuditedInProposal);
    }
    resp
}

/// Hits of one rule or scope.
#[derive(Serialize)]
pub struct NamedHits {
    pub name: String,
    pub hits: u64,
}

#[derive(Serialize)]
pub struct GroupView {
    pub group: String,
    pub members: Vec<String>,
    /// Flows from / to a member under this version.
    pub flows_from: u64,
    pub flows_to: u64,
}

#[derive(Serialize)]
pub struct HitsView {
    pub flows: u64,
    pub allowed: u64,
    pub denied: u64,
    pub monitored: u64,
    pub violations: u64,
    pub rules: Vec<NamedHits>,
    pub scopes: Vec<NamedHits>,
    pub default: u64,
}

#[derive(Serialize)]
pub struct ActiveView {
    #[serde(flatten)]
    pub version: PolicyVersion,
    pub membership_at_ms: u64,
    pub groups: Vec<GroupView>,
    pub hits: HitsView,
    pub drafts: usize,
}

fn active_view(
    v: PolicyVersion,
    membership: &[GroupMembers],
    at_ms: u64,
    hits: &PolicyHits,
    drafts: usize,
) -> ActiveView {
    let policy = stored::parse(&v.text).ok();
    let at = |xs: &[u64], i: usize| xs.get(i).copied().unwrap_or(0);
    let groups = membership
        .iter()
        .enumerate()
        .map(|(i, m)| GroupView {
            group: m.group.clone(),
            members: m.members.iter().map(|m| m.to_string()).collect(),
            flows_from: at(&hits.group_src, i),
            flows_to: at(&hits.group_dst, i),
        })
        .collect();
    let (rules, scopes) = match &policy {
        Some(p) => (
            p.rules
                .iter()
                .enumerate()
                .map(|(i, r)| NamedHits { name: r.name.clone(), hits: at(&hits.rules, i) })
                .collect(),
            p.scopes
                .iter()
                .enumerate()
                .map(|(i, s)| NamedHits { name: s.group.clone(), hits: at(&hits.scopes, i) })
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    ActiveView {
        version: v,
        membership_at_ms: at_ms,
        groups,
        hits: HitsView {
            flows: hits.flows,
            allowed: hits.actions[0],
            denied: hits.actions[1],
            monitored: hits.actions[2],
            violations: hits.violations,
            rules,
            scopes,
            default: hits.default,
        },
        drafts,
    }
}

pub(super) const NO_POLICY: &str = "no policy is active yet; apply one with POST /api/v1/policy/apply";

async fn active(State(q): Service) -> Result<Json<ActiveView>, PolicyApiError> {
    q.raft()
        .read_state(|s| {
            let p = s.policy();
            p.active()
                .cloned()
                .map(|v| active_view(v, p.membership(), p.membership_at_ms(), p.hits(), p.drafts().len()))
        })
        .await
        .map(Json)
        .ok_or_else(|| err(StatusCode::NOT_FOUND, NO_POLICY))
}

#[derive(Serialize)]
struct VersionSummary {
    version: u64,
    author: String,
    message: String,
    at_ms: u64,
    previous: Option<u64>,
    rollback_of: Option<u64>,
    diff: String,
}

#[derive(Serialize)]
struct VersionsView {
    active: Option<u64>,
    kept: usize,
    dropped: u64,
    /// Newest first.
    versions: Vec<VersionSummary>,
}

async fn versions(State(q): Service) -> Json<VersionsView> {
    Json(
        q.raft()
            .read_state(|s| {
                let p = s.policy();
                VersionsView {
                    active: p.active_version(),
                    kept: p.versions().len(),
                    dropped: p.versions_dropped(),
                    versions: p
                        .versions()
                        .iter()
                        .rev()
                        .map(|v| VersionSummary {
                            version: v.version,
                            author: v.author.clone(),
                            message: v.message.clone(),
                            at_ms: v.at_ms,
                            previous: v.previous,
                            rollback_of: v.rollback_of,
                            diff: v.diff.clone(),
                        })
                        .collect(),
                }
            })
            .await,
    )
}

fn parse_version(text: &str) -> Result<u64, PolicyApiError> {
    text.parse().map_err(|_| bad(format!("{text:?} is not a version number")))
}

pub(super) async fn stored_version(q: &QueryService, n: u64) -> Result<PolicyVersion, PolicyApiError> {
    q.raft().read_state(move |s| s.policy().version(n).cloned()).await.ok_or_else(|| {
        err(StatusCode::NOT_FOUND, format!("no policy version {n} is kept; list them with GET /api/v1/policy/versions"))
    })
}

async fn version(State(q): Service, Path(n): Path<String>) -> Result<Json<PolicyVersion>, PolicyApiError> {
    Ok(Json(stored_version(&q, parse_version(&n)?).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffParams {
    from: Option<u64>,
    to: Option<u64>,
}

#[derive(Serialize)]
struct DiffView {
    from: Option<u64>,
    to: u64,
    changes: Vec<String>,
}

async fn diff(
    State(q): Service,
    params: Result<Query<DiffParams>, QueryRejection>,
) -> Result<Json<DiffView>, PolicyApiError> {
    let Query(p) = params.map_err(|e| bad(format!("{e}; accepted parameters: from, to")))?;
    let to_n = match p.to {
        Some(n) => n,
        None => q
            .raft()
            .read_state(|s| s.policy().active_version())
            .await
            .ok_or_else(|| err(StatusCode::NOT_FOUND, NO_POLICY))?,
    };
    let to = stored_version(&q, to_n).await?;
    let from_n = p.from.or(to.previous);
    let before = match from_n {
        Some(n) => Some(stored_version(&q, n).await?),
        None => None,
    };
    let after = stored::parse(&to.text).map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let changes = match before {
        Some(b) => {
            let before = stored::parse(&b.text).map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
            engine::diff(&before, &after).changes.iter().map(|c| c.to_string()).collect()
        }
        None => vec!["first version".to_string()],
    };
    Ok(Json(DiffView { from: from_n, to: to_n, changes }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateBody {
    text: String,
}

/// One problem, with its line (0: the file as a whole).
#[derive(Serialize)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

#[derive(Serialize, Default)]
pub struct SafetyView {
    /// The policy must not be applied as it stands.
    pub blocks: bool,
    pub overridden: bool,
    pub findings: Vec<String>,
    pub unchecked: Vec<String>,
}

#[derive(Serialize)]
pub struct GroupCount {
    pub group: String,
    pub members: usize,
}

#[derive(Serialize, Default)]
pub struct ValidationView {
    pub valid: bool,
    pub errors: Vec<LineError>,
    /// Knowledge-base warnings (not errors).
    pub warnings: Vec<LineError>,
    pub canonical: Option<String>,
    /// Against the active version.
    pub changes: Vec<String>,
    pub safety: SafetyView,
    pub groups: Vec<GroupCount>,
    /// The version this was checked against.
    pub base: Option<u64>,
}

/// Everything the proposer knows about a candidate text; `proposal` when it may be applied.
pub(super) struct Checked {
    pub(super) view: ValidationView,
    policy: Option<Policy>,
    membership: Vec<GroupMembers>,
}

/// Validate `text` against the active version and the current inventory.
pub(super) async fn check(q: &QueryService, text: &str) -> Checked {
    let (base, active_text, records) = q
        .raft()
        .read_state(|s| (s.policy().active_version(), s.policy().active().map(|v| v.text.clone()), resolve::records(s)))
        .await;
    let mut view = ValidationView { base, ..Default::default() };
    let policy = match engine::parse_policy("policy", text) {
        Ok(p) => p,
        Err(e) => {
            view.errors = e.errors.into_iter().map(|e| LineError { line: e.line, message: e.message }).collect();
            return Checked { view, policy: None, membership: Vec::new() };
        }
    };
    let canonical = policy.to_canonical();
    if canonical.len() > stored::MAX_POLICY_BYTES {
        view.errors.push(LineError {
            line: 0,
            message: format!(
                "the policy is {} bytes in canonical form, more than the {} accepted",
                canonical.len(),
                stored::MAX_POLICY_BYTES
            ),
        });
    }
    let kb = q.kb();
    view.warnings =
        engine::kb_warnings(&policy, kb).into_iter().map(|e| LineError { line: e.line, message: e.message }).collect();
    let devices = super::groups::inventory_devices(q, records).await;
    let membership = resolve::membership(&policy, &devices);
    let compiled = CompiledPolicy::compile(&policy, &devices);
    let report = engine::safety_check(kb, &policy, &devices, &compiled);
    view.safety = SafetyView {
        blocks: report.blocks(),
        overridden: report.overridden,
        findings: report.findings.iter().map(|f| f.to_string()).collect(),
        unchecked: report.unchecked.clone(),
    };
    view.groups = membership.iter().map(|m| GroupCount { group: m.group.clone(), members: m.members.len() }).collect();
    view.changes = match active_text.as_deref().map(stored::parse) {
        Some(Ok(before)) => engine::diff(&before, &policy).changes.iter().map(|c| c.to_string()).collect(),
        _ => vec!["first version".to_string()],
    };
    if let Some(g) = membership.iter().find(|m| m.members.len() > stored::MAX_MEMBERS) {
        view.errors.push(LineError {
            line: 0,
            message: format!("group {:?} has more than {} members", g.group, stored::MAX_MEMBERS),
        });
    }
    view.valid = view.errors.is_empty() && !view.safety.blocks;
    view.canonical = Some(canonical);
    Checked { view, policy: Some(policy), membership }
}

async fn validate(
    State(q): Service,
    body: Result<Json<ValidateBody>, JsonRejection>,
) -> Result<Response, PolicyApiError> {
    let Json(b) = body.map_err(|e| bad(format!("{e}; expected {{\"text\": \"<policy TOML>\"}}")))?;
    let checked = check(&q, &b.text).await;
    let detail = format!("validated a policy: {}", if checked.view.valid { "valid" } else { "refused" });
    let mut resp = Json(checked.view).into_response();
    resp.extensions_mut().insert(AuditDetail(detail));
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    text: String,
    message: String,
}

/// Refuse a checked text that must not be applied: 400 with the line errors, or 409 with
/// the safety findings.
fn refuse(view: ValidationView) -> PolicyApiError {
    if !view.errors.is_empty() {
        let lines: Vec<String> = view.errors.iter().map(|e| format!("line {}: {}", e.line, e.message)).collect();
        return PolicyApiError(
            StatusCode::BAD_REQUEST,
            serde_json::json!({
                "error": format!("the policy has {} problem(s); nothing was applied:\n  {}", lines.len(), lines.join("\n  ")),
                "validation": view,
            }),
        );
    }
    PolicyApiError(
        StatusCode::CONFLICT,
        serde_json::json!({
            "error": format!(
                "the policy would cut life-sustaining devices off peers they require; nothing was applied. Fix the rules, \
                 or set life_sustaining_override = true with an override_reason in [policy] to accept it:\n  {}",
                view.safety.findings.join("\n  ")
            ),
            "validation": view,
        }),
    )
}

async fn propose_version(
    q: &QueryService,
    principal: &Option<Extension<Principal>>,
    pending: Option<Extension<PendingAudit>>,
    text: &str,
    message: String,
    rollback_of: Option<u64>,
) -> Result<Response, PolicyApiError> {
    if message.trim().is_empty() {
        return Err(bad("a policy change needs a message saying why (\"message\")"));
    }
    let checked = check(q, text).await;
    let Some(policy) = checked.policy.filter(|_| checked.view.valid) else {
        return Err(refuse(checked.view));
    };
    let proposal = PolicyProposal {
        base: checked.view.base,
        text: policy.to_canonical(),
        author: who(principal),
        message: message.clone(),
        at_ms: now_ms(),
        membership: checked.membership,
        rollback_of,
    };
    let what = match rollback_of {
        Some(n) => format!("rolled the policy back to version {n}"),
        None => "applied a policy version".to_string(),
    };
    let next = q.raft().read_state(|s| s.policy().versions().last().map_or(0, |v| v.version)).await + 1;
    let detail = format!("{what} (v{next}, {} change(s)): {message}", checked.view.changes.len());
    let (applied, audited) =
        propose_audited(q, pending, Command::PolicyVersion(proposal), StatusCode::CREATED, &detail).await?;
    if !applied {
        return Ok(marked(
            err(
                StatusCode::CONFLICT,
                "another policy version became active meanwhile; nothing was applied, validate again",
            ),
            detail,
            audited,
        ));
    }
    let view = q
        .raft()
        .read_state(|s| {
            let p = s.policy();
            p.active()
                .cloned()
                .map(|v| active_view(v, p.membership(), p.membership_at_ms(), p.hits(), p.drafts().len()))
        })
        .await;
    Ok(marked((StatusCode::CREATED, Json(view)), detail, audited))
}

async fn apply(
    State(q): Service,
    principal: Option<Extension<Principal>>,
    pending: Option<Extension<PendingAudit>>,
    body: Result<Json<ApplyBody>, JsonRejection>,
) -> Result<Response, PolicyApiError> {
    let Json(b) =
        body.map_err(|e| bad(format!("{e}; expected {{\"text\": \"<policy TOML>\", \"message\": \"why\"}}")))?;
    propose_version(&q, &principal, pending, &b.text, b.message, None).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to: u64,
    message: Option<String>,
}

async fn rollback(
    State(q): Service,
    principal: Option<Extension<Principal>>,
    pending: Option<Extension<PendingAudit>>,
    body: Result<Json<RollbackBody>, JsonRejection>,
) -> Result<Response, PolicyApiError> {
    let Json(b) = body.map_err(|e| bad(format!("{e}; expected {{\"to\": N, \"message\": \"why\"}}")))?;
    let old = stored_version(&q, b.to).await?;
    let message = b.message.unwrap_or_else(|| format!("rollback to version {}", b.to));
    propose_version(&q, &principal, pending, &old.text, message, Some(b.to)).await
}

async fn refresh(State(q): Service, pending: Option<Extension<PendingAudit>>) -> Result<Response, PolicyApiError> {
    let (active, records) = q.raft().read_state(|s| (s.policy().active().cloned(), resolve::records(s))).await;
    let active = active.ok_or_else(|| err(StatusCode::NOT_FOUND, NO_POLICY))?;
    let policy = stored::parse(&active.text).map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let devices = super::groups::inventory_devices(&q, records).await;
    let membership = resolve::membership(&policy, &devices);
    let update = MembershipUpdate { version: active.version, membership, at_ms: now_ms() };
    let detail = format!("refreshed the membership of policy version {}", active.version);
    let (changed, audited) =
        propose_audited(&q, pending, Command::PolicyMembership(update), StatusCode::OK, &detail).await?;
    Ok(marked(Json(serde_json::json!({ "version": active.version, "changed": changed })), detail, audited))
}

async fn drafts(State(q): Service) -> Json<serde_json::Value> {
    let drafts: Vec<DraftRule> = q.raft().read_state(|s| s.policy().drafts().values().cloned().collect()).await;
    Json(serde_json::json!({ "count": drafts.len(), "drafts": drafts }))
}

async fn draft(State(q): Service, Path(id): Path<String>) -> Result<Json<DraftRule>, PolicyApiError> {
    let id: u64 = id.parse().map_err(|_| bad(format!("{id:?} is not a draft id (a number)")))?;
    q.raft()
        .read_state(move |s| s.policy().drafts().get(&id).cloned())
        .await
        .map(Json)
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no draft {id}; list them with GET /api/v1/policy/drafts")))
}

async fn remove_draft(
    State(q): Service,
    pending: Option<Extension<PendingAudit>>,
    Path(id): Path<String>,
) -> Result<Response, PolicyApiError> {
    let id: u64 = id.parse().map_err(|_| bad(format!("{id:?} is not a draft id (a number)")))?;
    let detail = format!("deleted policy draft {id}");
    let (applied, audited) =
        propose_audited(&q, pending, Command::PolicyRemoveDraft { id }, StatusCode::OK, &detail).await?;
    if !applied {
        return Ok(marked(err(StatusCode::NOT_FOUND, format!("no draft {id}")), detail, audited));
    }
    Ok(marked(Json(serde_json::json!({ "deleted": id })), detail, audited))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriageBody {
    #[serde(default)]
    note: String,
}

/// The draft rule allowing what a violation showed: the device as a one-member group, the
/// peer as an address, the protocol and port of the target ("10.0.40.9 tcp/23").
pub fn draft_for(alert_id: u64, device: &str, target: &str) -> Option<String> {
    let (peer, service) = target.split_once(' ')?;
    let peer: std::net::IpAddr = peer.parse().ok()?;
    let (proto, port) = match service.split_once('/') {
        Some((p, port)) => (p, Some(port.parse::<u16>().ok()?)),
        None => ("any", None),
    };
    let proto = if matches!(proto, "tcp" | "udp") { proto } else { "any" };
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let group = format!("draft-{alert_id}-source");
    let source = match device.parse::<wardline_common::MacAddr>() {
        Ok(mac) => format!("[[group]]\nname = {}\nmembers = [{}]\n\n", q(&group), q(&mac.to_string())),
        Err(_) => String::new(),
    };
    let from = if source.is_empty() {
        // A device known only by address (`site:ip`): the address itself.
        device.rsplit_once(':').map(|(_, ip)| ip.split('@').next().unwrap_or(ip).to_string())?
    } else {
        group
    };
    let ports = port.map(|p| format!("ports = [{p}]\n")).unwrap_or_default();
    Some(format!(
        "{source}[[rule]]\nname = {}\nfrom = [{}]\nto = [{}]\nprotocol = {}\n{ports}action = \"allow\"\n",
        q(&format!("allow violation {alert_id}")),
        q(&from),
        q(&peer.to_string()),
        q(proto)
    ))
}

async fn triage(
    State(q): Service,
    principal: Option<Extension<Principal>>,
    pending: Option<Extension<PendingAudit>>,
    Path((id, action)): Path<(String, String)>,
    body: Option<Json<TriageBody>>,
) -> Result<Response, PolicyApiError> {
    let id: u64 = id.parse().map_err(|_| bad(format!("{id:?} is not an alert id (a number)")))?;
    let note = body.map(|Json(b)| b.note).unwrap_or_default();
    let alert = q.raft().read_state(move |s| s.alerts().get(id).cloned()).await;
    let alert = alert.filter(|a| a.kind == AlertKind::PolicyViolation).ok_or_else(|| {
        err(
            StatusCode::NOT_FOUND,
            format!("no policy-violation alert {id}; list them with GET /api/v1/alerts?kind=policy_violation"),
        )
    })?;
    let by = who(&principal);
    let triage = |action, note: String| Triage { id, action, by: by.clone(), at_ms: now_ms(), note };
    let (command, detail) = match action.as_str() {
        "add-to-policy" => {
            let toml = draft_for(id, &alert.device, &alert.target).ok_or_else(|| {
                bad(format!("alert {id} has no peer and service a rule could allow ({:?})", alert.target))
            })?;
            let draft =
                DraftRule { id: 0, alert: Some(id), author: by.clone(), at_ms: now_ms(), toml, note: note.clone() };
            let t = triage(AlertAction::Resolved, format!("added to the policy drafts{}", suffix(&note)));
            (Command::PolicyViolationToDraft { triage: t, draft }, format!("policy violation {id}: added a draft rule"))
        }
        "investigate" => (
            Command::AlertTriage(triage(AlertAction::Acknowledged, format!("investigating{}", suffix(&note)))),
            format!("policy violation {id}: investigating"),
        ),
        "ignore" => {
            if note.trim().is_empty() {
                return Err(bad("ignoring a policy violation needs a reason: {\"note\": \"why\"}"));
            }
            (
                Command::AlertTriage(triage(AlertAction::Suppressed, format!("ignored: {note}"))),
                format!("policy violation {id}: ignored: {note}"),
            )
        }
        other => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!("{other:?} is not a violation action; use add-to-policy, investigate or ignore"),
            ))
        }
    };
    let (applied, audited) = propose_audited(&q, pending, command, StatusCode::OK, &detail).await?;
    if !applied {
        return Ok(marked(
            err(
                StatusCode::CONFLICT,
                format!("alert {id} is {} and cannot take this action now (or the draft area is full)", alert.state),
            ),
            detail,
            audited,
        ));
    }
    let (alert, draft) = q
        .raft()
        .read_state(move |s| {
            (s.alerts().get(id).cloned(), s.policy().drafts().values().rev().find(|d| d.alert == Some(id)).cloned())
        })
        .await;
    Ok(marked(Json(serde_json::json!({ "alert": alert, "draft": draft })), detail, audited))
}

fn suffix(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!(": {note}")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    version: Option<u64>,
    /// A companion file of the export (`edl/wl-pumps.txt`); default the main output.
    file: Option<String>,
}

/// The export input of the active version (its replicated membership) or of version `n`
/// (membership resolved from the current inventory).
async fn export_input(q: &QueryService, n: Option<u64>) -> Result<wardline_export::ResolvedPolicy, PolicyApiError> {
    let (active, membership, records) = q
        .raft()
        .read_state(|s| (s.policy().active_version(), s.policy().membership().to_vec(), resolve::records(s)))
        .await;
    let n = n.or(active).ok_or_else(|| err(StatusCode::NOT_FOUND, NO_POLICY))?;
    let v = stored_version(q, n).await?;
    let policy = stored::parse(&v.text).map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let membership = if Some(n) == active {
        membership
    } else {
        resolve::membership(&policy, &super::groups::inventory_devices(q, records.clone()).await)
    };
    resolve::to_export(&policy, n, &membership, &records)
        .map_err(|e| err(StatusCode::CONFLICT, format!("policy version {n} cannot be exported: {e}")))
}

fn text_file(bytes: Vec<u8>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response()
}

async fn export(
    State(q): Service,
    Path(target): Path<String>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, PolicyApiError> {
    let Query(p) = params.map_err(|e| bad(format!("{e}; accepted parameters: version, file")))?;
    // Exporters are not Send: read the state first, then pick and render.
    let input = export_input(&q, p.version).await?;
    let exporters = wardline_export::all_exporters();
    let names: Vec<&str> = exporters.iter().map(|e| e.name()).collect();
    let exporter = exporters.iter().find(|e| e.name() == target).ok_or_else(|| {
        err(StatusCode::NOT_FOUND, format!("no export target {target:?}; targets: {}", names.join(", ")))
    })?;
    let failed = |e: wardline_export::ExportError| err(StatusCode::CONFLICT, format!("{target} export failed: {e}"));
    let files = exporter.render_all(&input).map_err(failed)?;
    let wanted = p.file.unwrap_or_else(|| exporter.file_name().to_string());
    let listed: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    files.into_iter().find(|f| f.path == wanted).map(|f| text_file(f.bytes)).ok_or_else(|| {
        err(StatusCode::NOT_FOUND, format!("the {target} export has no file {wanted:?}; files: {}", listed.join(", ")))
    })
}

async fn edl(State(q): Service, Path(file): Path<String>) -> Result<Response, PolicyApiError> {
    let group = file.strip_suffix(".txt").ok_or_else(|| {
        err(StatusCode::NOT_FOUND, format!("{file:?}: EDL URLs end in .txt (/api/v1/policy/edl/<group>.txt)"))
    })?;
    let input = export_input(&q, None).await?.canonical().map_err(|e| err(StatusCode::CONFLICT, e.to_string()))?;
    let Some(index) = input.groups.iter().position(|g| g.name == group) else {
        let names: Vec<&str> = input.groups.iter().map(|g| g.name.as_str()).collect();
        return Err(err(
            StatusCode::NOT_FOUND,
            format!("no group {group:?} in the active policy; groups: {}", names.join(", ")),
        ));
    };
    let files = wardline_export::targets::paloalto::PaloAlto
        .render_all(&input)
        .map_err(|e| err(StatusCode::CONFLICT, format!("paloalto export failed: {e}")))?;
    // The main file first, then one EDL per group in canonical (name) order.
    let file = files.into_iter().nth(index + 1).ok_or_else(|| err(StatusCode::INTERNAL_SERVER_ERROR, "EDL missing"))?;
    Ok(text_file(file.bytes))
}
