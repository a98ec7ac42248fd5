//! Alert routes (docs/api.md, "Alerts"):
//! - `GET /api/v1/alerts` — filters `state`, `severity`, `kind` (each a comma-separated
//!   list), `device`, `site`; paging `offset`, `limit`; newest first;
//! - `GET /api/v1/alerts/{id}`;
//! - `POST /api/v1/alerts/{id}/ack|resolve|suppress` `{"note": "..."}` (analyst);
//! - `GET|POST /api/v1/alerts/rules`, `DELETE /api/v1/alerts/rules/{id}` (analyst to change);
//! - `GET|PUT /api/v1/alerts/settings` (admin to change): learning period, clinical VLANs.
//! - `GET|PUT /api/v1/alerts/detectors` (admin to change): traffic-spike thresholds, expected
//!   PHI receivers, segment expectations, sensor silence (decision 0033).
//!
//! Changes go through Raft; the authorization layer audits each with the detail set here.

use crate::auth::layer::AuditDetail;
use crate::auth::{now_ms, Principal};
use crate::query::QueryService;
use crate::raft::ProposeError;
use crate::state::alerts::{
    Alert, AlertAction, AlertCounters, AlertKind, AlertRefusal, AlertState, Severity, SuppressionRule, Triage,
};
use crate::state::anomaly::detectors::{DetectorConfig, DetectorCounters, SegmentExpectation};
use crate::state::anomaly::{AnomalyConfig, AnomalyCounters, ClinicalVlan};
use crate::state::Command;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::Arc;

/// Alerts answered by default and at most per page.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// The alert routes, merged into `crate::api::router` (which supplies the state).
pub fn routes() -> Router<Arc<QueryService>> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/rules", get(list_rules).post(add_rule))
        .route("/api/v1/alerts/rules/{id}", delete(remove_rule))
        .route("/api/v1/alerts/settings", get(settings).put(set_settings))
        .route("/api/v1/alerts/detectors", get(detector_settings).put(set_detector_settings))
        .route("/api/v1/alerts/{id}", get(show))
        .route("/api/v1/alerts/{id}/{action}", post(triage))
}

type Service = State<Arc<QueryService>>;

pub struct AlertApiError(StatusCode, String);

impl IntoResponse for AlertApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: String) -> AlertApiError {
    AlertApiError(StatusCode::BAD_REQUEST, msg)
}

fn propose_error(e: ProposeError) -> AlertApiError {
    match e {
        ProposeError::NotLeader { .. } => {
            AlertApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; send alert changes to the leader"))
        }
        other => {
            AlertApiError(StatusCode::SERVICE_UNAVAILABLE, format!("the cluster could not commit the change: {other}"))
        }
    }
}

fn with_detail(resp: impl IntoResponse, detail: String) -> Response {
    let mut resp = resp.into_response();
    resp.extensions_mut().insert(AuditDetail(detail));
    resp
}

fn parse_id(text: &str, what: &str) -> Result<u64, AlertApiError> {
    text.parse().map_err(|_| bad(format!("{text:?} is not {what} id (a number)")))
}

/// A comma-separated list of names, each parsed.
fn list_of<T: FromStr<Err = String>>(text: Option<&str>, all: &str) -> Result<Option<Vec<T>>, AlertApiError> {
    let Some(text) = text else { return Ok(None) };
    text.split(',')
        .map(|t| t.trim().parse::<T>().map_err(|e| bad(format!("{e}; use one of {all}"))))
        .collect::<Result<Vec<T>, _>>()
        .map(Some)
}

const STATES: &str = "open, acknowledged, resolved, suppressed";
const SEVERITIES: &str = "info, low, medium, high, critical";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    state: Option<String>,
    severity: Option<String>,
    kind: Option<String>,
    device: Option<String>,
    site: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct AlertsView {
    /// Alerts kept in the cluster.
    pub total: usize,
    /// Alerts matching the filters (this page is `offset..offset+limit` of them).
    pub matched: usize,
    pub offset: usize,
    pub limit: usize,
    pub counters: AlertCounters,
    pub alerts: Vec<Alert>,
}

async fn list(
    State(q): Service,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<AlertsView>, AlertApiError> {
    let Query(p) = params
        .map_err(|e| bad(format!("{e}; accepted parameters: state, severity, kind, device, site, offset, limit")))?;
    let states = list_of::<AlertState>(p.state.as_deref(), STATES)?;
    let severities = list_of::<Severity>(p.severity.as_deref(), SEVERITIES)?;
    let kinds = list_of::<AlertKind>(p.kind.as_deref(), "the kinds in docs/alerts.md")?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let offset = p.offset.unwrap_or(0);
    let device = p.device.map(|d| d.to_ascii_lowercase());
    let view = q
        .raft()
        .read_state(move |s| {
            let store = s.alerts();
            let matching = store.alerts().values().rev().filter(|a| {
                states.as_ref().is_none_or(|v| v.contains(&a.state))
                    && severities.as_ref().is_none_or(|v| v.contains(&a.severity))
                    && kinds.as_ref().is_none_or(|v| v.contains(&a.kind))
                    && device.as_deref().is_none_or(|d| a.device.eq_ignore_ascii_case(d))
                    && p.site.as_deref().is_none_or(|site| a.site == site)
            });
            let mut matched = 0;
            let mut page = Vec::new();
            for a in matching {
                if matched >= offset && page.len() < limit {
                    page.push(a.clone());
                }
                matched += 1;
            }
            AlertsView {
                total: store.alerts().len(),
                matched,
                offset,
                limit,
                counters: store.counters().clone(),
                alerts: page,
            }
        })
        .await;
    Ok(Json(view))
}

async fn show(State(q): Service, Path(id): Path<String>) -> Result<Json<Alert>, AlertApiError> {
    let id = parse_id(&id, "an alert")?;
    q.raft().read_state(move |s| s.alerts().get(id).cloned()).await.map(Json).ok_or_else(|| {
        AlertApiError(StatusCode::NOT_FOUND, format!("no alert {id}; list them with GET /api/v1/alerts"))
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriageBody {
    #[serde(default)]
    note: String,
}

fn refusal(r: AlertRefusal) -> AlertApiError {
    let status = match r {
        AlertRefusal::UnknownAlert | AlertRefusal::UnknownRule => StatusCode::NOT_FOUND,
        AlertRefusal::RuleMatchesEverything => StatusCode::BAD_REQUEST,
        AlertRefusal::NotAllowed { .. } | AlertRefusal::RulesFull => StatusCode::CONFLICT,
    };
    AlertApiError(status, r.to_string())
}

fn who(principal: Option<Extension<Principal>>) -> String {
    principal.map_or_else(|| "unknown".to_string(), |Extension(p)| p.name)
}

async fn triage(
    State(q): Service,
    principal: Option<Extension<Principal>>,
    Path((id, action)): Path<(String, String)>,
    body: Option<Json<TriageBody>>,
) -> Result<Response, AlertApiError> {
    let id = parse_id(&id, "an alert")?;
    let action = match action.as_str() {
        "ack" => AlertAction::Acknowledged,
        "resolve" => AlertAction::Resolved,
        "suppress" => AlertAction::Suppressed,
        other => {
            return Err(AlertApiError(
                StatusCode::NOT_FOUND,
                format!("{other:?} is not an alert action; use ack, resolve or suppress"),
            ))
        }
    };
    let note = body.map(|Json(b)| b.note).unwrap_or_default();
    let t = Triage { id, action, by: who(principal), at_ms: now_ms(), note };
    let check = t.clone();
    q.raft().read_state(move |s| s.alerts().check_triage(&check)).await.map_err(refusal)?;
    let applied = q.raft().propose(Command::AlertTriage(t.clone())).await.map_err(propose_error)?.applied;
    if !applied {
        return Err(AlertApiError(
            StatusCode::CONFLICT,
            format!("alert {id} changed meanwhile and cannot be {action} now; look at it again"),
        ));
    }
    let alert = q.raft().read_state(move |s| s.alerts().get(id).cloned()).await;
    let detail = format!(
        "alert {id} {action} by {}{}",
        t.by,
        if t.note.is_empty() { String::new() } else { format!(": {}", t.note) }
    );
    Ok(with_detail(Json(alert), detail))
}

#[derive(Serialize)]
struct RulesView {
    count: usize,
    rules: Vec<SuppressionRule>,
}

async fn list_rules(State(q): Service) -> Json<RulesView> {
    let rules: Vec<SuppressionRule> = q.raft().read_state(|s| s.alerts().rules().values().cloned().collect()).await;
    Json(RulesView { count: rules.len(), rules })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    kind: Option<AlertKind>,
    device: Option<String>,
    target: Option<String>,
    site: Option<String>,
    reason: String,
    /// Capture time (µs since the epoch) from which the rule stops matching.
    expires_us: Option<u64>,
}

async fn add_rule(
    State(q): Service,
    principal: Option<Extension<Principal>>,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> Result<Response, AlertApiError> {
    let Json(b) = body.map_err(|e| {
        bad(format!(
            "{e}; expected {{\"reason\": \"...\", and at least one of \"kind\", \"device\", \"target\", \"site\"; \
             optional \"expires_us\"}}"
        ))
    })?;
    if b.reason.trim().is_empty() {
        return Err(bad("a suppression rule needs a reason".into()));
    }
    let rule = SuppressionRule {
        id: 0,
        kind: b.kind,
        device: b.device.map(|d| d.to_ascii_lowercase()),
        target: b.target,
        site: b.site,
        reason: b.reason,
        author: who(principal),
        created_at_ms: now_ms(),
        expires_us: b.expires_us,
        matched: 0,
    };
    let check = rule.clone();
    q.raft().read_state(move |s| s.alerts().check_rule(&check)).await.map_err(refusal)?;
    let before = q.raft().read_state(|s| s.alerts().rules().keys().last().copied()).await;
    let applied = q.raft().propose(Command::AddSuppressionRule(rule.clone())).await.map_err(propose_error)?.applied;
    if !applied {
        return Err(AlertApiError(
            StatusCode::CONFLICT,
            "the rule was not added (the rule table filled up meanwhile)".into(),
        ));
    }
    // The newest rule by this author with these fields is the one just added.
    let added = q
        .raft()
        .read_state(move |s| {
            s.alerts()
                .rules()
                .values()
                .rev()
                .find(|r| Some(r.id) > before && r.author == rule.author && r.created_at_ms == rule.created_at_ms)
                .cloned()
        })
        .await;
    let detail = match &added {
        Some(r) => format!("added suppression rule {} ({})", r.id, r.reason),
        None => "added a suppression rule".into(),
    };
    Ok(with_detail((StatusCode::CREATED, Json(added)), detail))
}

async fn remove_rule(State(q): Service, Path(id): Path<String>) -> Result<Response, AlertApiError> {
    let id = parse_id(&id, "a rule")?;
    let known = q.raft().read_state(move |s| s.alerts().rules().get(&id).cloned()).await;
    let Some(rule) = known else {
        return Err(refusal(AlertRefusal::UnknownRule));
    };
    let applied = q.raft().propose(Command::RemoveSuppressionRule { id }).await.map_err(propose_error)?.applied;
    if !applied {
        return Err(AlertApiError(StatusCode::NOT_FOUND, format!("rule {id} was already deleted")));
    }
    Ok(with_detail(
        Json(serde_json::json!({ "deleted": id })),
        format!("deleted suppression rule {id} ({})", rule.reason),
    ))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    /// Learning period in seconds of capture time.
    learning_secs: u64,
    #[serde(default)]
    clinical_vlans: Vec<ClinicalVlan>,
}

#[derive(Serialize)]
struct SettingsView {
    learning_secs: u64,
    clinical_vlans: Vec<ClinicalVlan>,
    /// Devices with a baseline.
    baselines: usize,
    counters: AnomalyCounters,
    /// Events waiting for the SIEM forwarder, and the replicated watermark.
    siem_pending: usize,
    siem_forwarded_through: u64,
}

async fn settings(State(q): Service) -> Json<SettingsView> {
    Json(
        q.raft()
            .read_state(|s| {
                let b = s.baselines();
                SettingsView {
                    learning_secs: b.config().learning_us / 1_000_000,
                    clinical_vlans: b.config().clinical_vlans.clone(),
                    baselines: b.device_count(),
                    counters: b.counters().clone(),
                    siem_pending: s.alerts().pending_events().len(),
                    siem_forwarded_through: s.alerts().forwarded_through(),
                }
            })
            .await,
    )
}

async fn set_settings(
    State(q): Service,
    body: Result<Json<SettingsBody>, JsonRejection>,
) -> Result<Response, AlertApiError> {
    let Json(b) = body.map_err(|e| {
        bad(format!(
            "{e}; expected {{\"learning_secs\": N, \"clinical_vlans\": [{{\"site\": \"...\"?, \"vlan\": N}}]}}"
        ))
    })?;
    if let Some(v) = b.clinical_vlans.iter().find(|c| c.vlan > 4095) {
        return Err(bad(format!("{} is not a VLAN id (0 to 4095)", v.vlan)));
    }
    let config =
        AnomalyConfig { learning_us: b.learning_secs.saturating_mul(1_000_000), clinical_vlans: b.clinical_vlans };
    q.raft().propose(Command::SetAnomalyConfig(config.clone())).await.map_err(propose_error)?;
    let detail = format!(
        "anomaly settings: learning {} s, {} clinical VLANs",
        config.learning_us / 1_000_000,
        config.clinical_vlans.len()
    );
    Ok(with_detail(
        Json(serde_json::json!({ "learning_secs": b.learning_secs, "clinical_vlans": config.clinical_vlans })),
        detail,
    ))
}

/// The second detectors' settings in operator units (seconds; absent fields take defaults).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectorSettings {
    #[serde(default = "defaults::spike_bucket_secs")]
    spike_bucket_secs: u64,
    #[serde(default = "defaults::spike_factor_percent")]
    spike_factor_percent: u64,
    #[serde(default = "defaults::spike_min_bytes")]
    spike_min_bytes: u64,
    #[serde(default = "defaults::spike_min_packets")]
    spike_min_packets: u64,
    #[serde(default = "defaults::spike_min_flows")]
    spike_min_flows: u64,
    #[serde(default)]
    phi_expected_receivers: Vec<std::net::IpAddr>,
    #[serde(default = "defaults::sensor_silent_after_secs")]
    sensor_silent_after_secs: u64,
    #[serde(default)]
    segment_expectations: Vec<SegmentExpectation>,
}

mod defaults {
    use crate::state::anomaly::detectors::*;
    pub fn spike_bucket_secs() -> u64 {
        DEFAULT_SPIKE_BUCKET_US / 1_000_000
    }
    pub fn spike_factor_percent() -> u64 {
        DEFAULT_SPIKE_FACTOR_PERCENT
    }
    pub fn spike_min_bytes() -> u64 {
        DEFAULT_SPIKE_MIN_BYTES
    }
    pub fn spike_min_packets() -> u64 {
        DEFAULT_SPIKE_MIN_PACKETS
    }
    pub fn spike_min_flows() -> u64 {
        DEFAULT_SPIKE_MIN_FLOWS
    }
    pub fn sensor_silent_after_secs() -> u64 {
        DEFAULT_SENSOR_SILENT_AFTER_MS / 1000
    }
}

impl From<&DetectorConfig> for DetectorSettings {
    fn from(c: &DetectorConfig) -> Self {
        DetectorSettings {
            spike_bucket_secs: c.spike_bucket_us / 1_000_000,
            spike_factor_percent: c.spike_factor_percent,
            spike_min_bytes: c.spike_min_bytes,
            spike_min_packets: c.spike_min_packets,
            spike_min_flows: c.spike_min_flows,
            phi_expected_receivers: c.phi_expected_receivers.clone(),
            sensor_silent_after_secs: c.sensor_silent_after_ms / 1000,
            segment_expectations: c.segment_expectations.clone(),
        }
    }
}

impl From<DetectorSettings> for DetectorConfig {
    fn from(s: DetectorSettings) -> Self {
        DetectorConfig {
            spike_bucket_us: s.spike_bucket_secs.saturating_mul(1_000_000),
            spike_factor_percent: s.spike_factor_percent,
            spike_min_bytes: s.spike_min_bytes,
            spike_min_packets: s.spike_min_packets,
            spike_min_flows: s.spike_min_flows,
            phi_expected_receivers: s.phi_expected_receivers,
            sensor_silent_after_ms: s.sensor_silent_after_secs.saturating_mul(1000),
            segment_expectations: s.segment_expectations,
        }
    }
}

#[derive(Serialize)]
struct DetectorView {
    #[serde(flatten)]
    settings: DetectorSettings,
    counters: DetectorCounters,
}

async fn detector_settings(State(q): Service) -> Json<DetectorView> {
    Json(
        q.raft()
            .read_state(|s| {
                let d = s.detectors();
                DetectorView { settings: d.config().into(), counters: d.counters().clone() }
            })
            .await,
    )
}

async fn set_detector_settings(
    State(q): Service,
    body: Result<Json<DetectorSettings>, JsonRejection>,
) -> Result<Response, AlertApiError> {
    let Json(b) = body.map_err(|e| {
        bad(format!(
            "{e}; expected {{\"spike_bucket_secs\": N, \"spike_factor_percent\": N, \"spike_min_bytes\": N, \
             \"spike_min_packets\": N, \"spike_min_flows\": N, \"phi_expected_receivers\": [\"10.1.2.3\"], \
             \"sensor_silent_after_secs\": N, \"segment_expectations\": [{{\"group\": \"pumps\", \"site\": \"...\"?, \
             \"vlans\": [40]}}]}} (each optional)"
        ))
    })?;
    let config = DetectorConfig::from(b);
    config.check().map_err(bad)?;
    q.raft().propose(Command::SetDetectorConfig(config.clone())).await.map_err(propose_error)?;
    let detail = format!(
        "detector settings: spike {} s buckets over {}%, {} expected PHI receivers, {} segment expectations, \
         sensor silent after {} s",
        config.spike_bucket_us / 1_000_000,
        config.spike_factor_percent,
        config.phi_expected_receivers.len(),
        config.segment_expectations.len(),
        config.sensor_silent_after_ms / 1000
    );
    Ok(with_detail(Json(DetectorSettings::from(&config)), detail))
}
