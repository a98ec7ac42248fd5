//! Vulnerability feed and risk routes (docs/api.md, "Vulnerabilities and risk"):
//! - `POST /api/v1/vuln/import` (admin): CSAF advisories and the KEV catalog as file texts;
//!   parsed here, refused files reported by file and field, the rest proposed through Raft
//!   with the request's audit entry in each part's log entry;
//! - `GET /api/v1/vuln/feeds`: what is imported;
//! - `GET /api/v1/devices/{id}/risk`: one device's score, factors, evidence, matches;
//! - `GET /api/v1/risk?by=site|class|category|group&top=N`: roll-ups and the riskiest devices;
//! - `GET /api/v1/devices/{id}/risk/history`, `GET /api/v1/risk/history?site=S`: scores
//!   and site roll-ups over time (decision 0043);
//! - `GET /api/v1/reports/{inventory|risk|vulnerable|alerts}.{csv|html}`.

use super::import::{prepare, ImportRequest, MAX_REQUEST_BYTES};
use super::reports::{render, Format, ReportInput, ReportName};
use crate::auth::layer::{AuditDetail, AuditedInProposal, PendingAudit};
use crate::auth::{now_ms, Principal};
use crate::query::risk::{DeviceRiskRow, DeviceRiskView};
use crate::query::QueryService;
use crate::raft::ProposeError;
use crate::state::alerts::AlertState;
use crate::state::vulnfeeds::{FeedFileError, FeedRefusal, ImportRecord};
use crate::state::{Command, DeviceId};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Devices listed by `GET /api/v1/risk` by default and at most.
pub const DEFAULT_TOP: usize = 10;
pub const MAX_TOP: usize = 1000;
/// Devices in the risk report.
pub const REPORT_TOP: usize = 50;

/// The routes, merged into `crate::api::router` (which supplies the state).
pub fn routes() -> Router<Arc<QueryService>> {
    Router::new()
        .route("/api/v1/vuln/import", post(import).layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES)))
        .route("/api/v1/vuln/feeds", get(feeds))
        .route("/api/v1/devices/{id}/risk", get(device_risk))
        .route("/api/v1/devices/{id}/risk/history", get(device_history))
        .route("/api/v1/risk", get(rollup))
        .route("/api/v1/risk/history", get(site_history))
        .route("/api/v1/reports/{file}", get(report))
}

type Service = State<Arc<QueryService>>;

pub struct RiskApiError(StatusCode, String);

impl IntoResponse for RiskApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: String) -> RiskApiError {
    RiskApiError(StatusCode::BAD_REQUEST, msg)
}

impl From<crate::query::QueryError> for RiskApiError {
    fn from(e: crate::query::QueryError) -> Self {
        use crate::query::QueryError as Q;
        let status = match &e {
            Q::Invalid(_) => StatusCode::BAD_REQUEST,
            Q::NotFound(_) => StatusCode::NOT_FOUND,
            Q::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        RiskApiError(status, e.to_string())
    }
}

fn propose_error(e: ProposeError, done: usize, parts: usize) -> RiskApiError {
    let progress = if done > 0 {
        format!(" ({done} of {parts} parts were committed; importing the same files again is safe)")
    } else {
        String::new()
    };
    match e {
        ProposeError::NotLeader { .. } => {
            RiskApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; send the import to the leader{progress}"))
        }
        other => RiskApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the cluster could not commit the import: {other}{progress}"),
        ),
    }
}

#[derive(Serialize)]
struct ImportView {
    import_id: String,
    /// Files offered (advisories, the KEV catalog, files the client could not read).
    files: u64,
    /// Files parsed and proposed.
    imported: usize,
    /// Files refused, each with file, JSON pointer and message.
    errors: Vec<FeedFileError>,
    /// Raft log entries the import took.
    parts: usize,
    /// What the import did (added, replaced, unchanged), as replicated.
    record: Option<ImportRecord>,
    feeds_version: u64,
    /// The risk history pass the import started (decision 0043): devices whose score
    /// moved; None when the recorder is off or the pass failed (logged).
    risk_history: Option<super::history::PassSummary>,
}

async fn import(
    State(q): Service,
    principal: Option<Extension<Principal>>,
    pending: Option<Extension<PendingAudit>>,
    body: Result<Json<ImportRequest>, JsonRejection>,
) -> Result<Response, RiskApiError> {
    let Json(req) = body.map_err(|e| {
        bad(format!(
            "{e}; expected {{\"advisories\": [{{\"file\": \"name.json\", \"content\": \"...\"}}], \"kev\": \
             {{\"file\", \"content\"}}}} (`wardline-aggregator vuln import --dir DIR` builds it)"
        ))
    })?;
    if req.advisories.is_empty() && req.kev.is_none() && req.errors.is_empty() {
        return Err(bad("nothing to import: give advisories and/or a KEV catalog".into()));
    }
    let by = principal.map_or_else(|| "unknown".to_string(), |Extension(p)| p.name);
    let import_id = ulid::Ulid::new().to_string();
    let at_ms = now_ms();
    let id = import_id.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare(req, &id, at_ms, &by))
        .await
        .map_err(|e| RiskApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("parsing the feeds failed: {e}")))?;
    for part in &prepared.parts {
        let refusal = q.raft().read_state(|s| s.vulnfeeds().check(part)).await;
        match refusal {
            Ok(()) => {}
            Err(FeedRefusal::TooLarge(m)) => return Err(RiskApiError(StatusCode::PAYLOAD_TOO_LARGE, m)),
            Err(FeedRefusal::Full) => {
                return Err(RiskApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "the cluster holds the most advisories it keeps ({})",
                        crate::state::vulnfeeds::MAX_ADVISORIES
                    ),
                ))
            }
            Err(FeedRefusal::BadPart) => {
                return Err(RiskApiError(StatusCode::INTERNAL_SERVER_ERROR, "malformed import part".into()))
            }
        }
    }
    let parts = prepared.parts.len();
    let mut detail = String::new();
    for (i, part) in prepared.parts.into_iter().enumerate() {
        detail = format!(
            "vulnerability feed import {import_id} part {}/{parts}: {} advisories{}, {} files refused",
            part.part,
            part.advisories.len(),
            if part.kev.is_some() { " and the KEV catalog" } else { "" },
            part.errors.len()
        );
        let command = Command::ImportVulnFeed(part);
        let command = match &pending {
            Some(Extension(p)) => p.wrap(command, StatusCode::OK, detail.clone()),
            None => command,
        };
        let applied = q.raft().propose(command).await.map_err(|e| propose_error(e, i, parts))?.applied;
        if !applied {
            return Err(RiskApiError(
                StatusCode::CONFLICT,
                format!("part {} of import {import_id} was refused by the cluster (size or advisory limit)", i + 1),
            ));
        }
    }
    let (record, feeds_version) = q
        .raft()
        .read_state(|s| {
            let f = s.vulnfeeds();
            (f.imports().find(|r| r.import_id == import_id).cloned(), f.version())
        })
        .await;
    // Scores move with the feeds: record them now rather than at the next periodic pass.
    let risk_history = match super::history::interval() {
        Some(_) => {
            let trigger = format!("vulnerability feed import {import_id} (feeds version {feeds_version})");
            match super::history::record_once(&q, &trigger, now_ms()).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("risk history after feed import {import_id} not recorded (the next pass will): {e}");
                    None
                }
            }
        }
        None => None,
    };
    let view = ImportView {
        import_id,
        files: prepared.files,
        imported: prepared.parsed,
        errors: prepared.errors,
        parts,
        record,
        feeds_version,
        risk_history,
    };
    let mut resp = Json(view).into_response();
    resp.extensions_mut().insert(AuditDetail(detail));
    if pending.is_some() {
        resp.extensions_mut().insert(AuditedInProposal);
    }
    Ok(resp)
}

#[derive(Serialize)]
struct AdvisoryView {
    id: String,
    revision: String,
    release_date: String,
    title: String,
    source: String,
}

#[derive(Serialize)]
struct KevView {
    catalog_version: String,
    date_released: String,
    entries: u64,
    source: String,
}

#[derive(Serialize)]
struct FeedsView {
    /// Replicated feed version (grows with every import that changed something).
    version: u64,
    advisory_count: usize,
    advisories: Vec<AdvisoryView>,
    kev: Option<KevView>,
    /// Recent imports, newest first, with their refused files.
    imports: Vec<ImportRecord>,
    imports_dropped: u64,
    /// Older revisions the index replaced and products it cannot match (names nothing
    /// distinctive), from this node's compiled index.
    superseded: usize,
    unmatchable_products: usize,
    /// Stored texts this build's parser refuses (after an upgrade); not matched.
    stale: Vec<FeedFileError>,
}

async fn feeds(State(q): Service) -> Json<FeedsView> {
    let compiled = q.compiled_feeds().await;
    let mut view = q
        .raft()
        .read_state(|s| {
            let f = s.vulnfeeds();
            FeedsView {
                version: f.version(),
                advisory_count: f.advisories().len(),
                advisories: f
                    .advisories()
                    .values()
                    .map(|a| AdvisoryView {
                        id: a.id.clone(),
                        revision: a.revision.clone(),
                        release_date: a.release_date.clone(),
                        title: a.title.clone(),
                        source: a.source.clone(),
                    })
                    .collect(),
                kev: f.kev().map(|k| KevView {
                    catalog_version: k.catalog_version.clone(),
                    date_released: k.date_released.clone(),
                    entries: k.entries,
                    source: k.source.clone(),
                }),
                imports: f.imports().cloned().collect(),
                imports_dropped: f.imports_dropped(),
                superseded: 0,
                unmatchable_products: 0,
                stale: Vec::new(),
            }
        })
        .await;
    if compiled.version == view.version {
        view.superseded = compiled.index.superseded;
        view.unmatchable_products = compiled.index.unmatchable_products;
        view.stale = compiled.stale.clone();
    }
    Json(view)
}

async fn device_risk(State(q): Service, Path(id): Path<String>) -> Result<Json<DeviceRiskView>, RiskApiError> {
    let id: DeviceId = id.parse().map_err(bad)?;
    Ok(Json(q.device_risk(&id).await?))
}

#[derive(Serialize)]
struct DeviceHistoryView {
    id: String,
    /// Oldest first: time recorded (leader's clock, ms), score, data day, reason.
    points: Vec<crate::state::risk_history::RiskPoint>,
    /// The factors of the latest point.
    factors: Vec<crate::state::risk_history::FactorPoints>,
    /// Time of the last recorder pass applied (every device's history is current to it).
    recorded_through_ms: u64,
    counters: crate::state::risk_history::HistoryCounters,
}

async fn device_history(State(q): Service, Path(id): Path<String>) -> Result<Json<DeviceHistoryView>, RiskApiError> {
    let id: DeviceId = id.parse().map_err(bad)?;
    let key = id.to_string();
    let view = q
        .raft()
        .read_state(|s| {
            let h = s.risk_history();
            let known = match &id {
                DeviceId::Mac(m) => s.devices().contains_key(m),
                DeviceId::Host(_) => h.device(&key).is_some(),
            };
            known.then(|| DeviceHistoryView {
                id: key.clone(),
                points: h.device(&key).map(|d| d.points.iter().cloned().collect()).unwrap_or_default(),
                factors: h.device(&key).map(|d| d.factors.clone()).unwrap_or_default(),
                recorded_through_ms: h.last_at_ms(),
                counters: h.counters().clone(),
            })
        })
        .await;
    view.map(Json).ok_or_else(|| RiskApiError(StatusCode::NOT_FOUND, format!("no device {key} in the inventory")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteHistoryParams {
    site: Option<String>,
}

#[derive(Serialize)]
struct SiteHistory {
    site: String,
    points: Vec<crate::state::risk_history::SitePoint>,
}

#[derive(Serialize)]
struct SiteHistoryView {
    thresholds: Vec<f64>,
    recorded_through_ms: u64,
    sites: Vec<SiteHistory>,
}

async fn site_history(
    State(q): Service,
    params: Result<Query<SiteHistoryParams>, QueryRejection>,
) -> Result<Json<SiteHistoryView>, RiskApiError> {
    let Query(p) = params.map_err(|e| bad(format!("{e}; accepted parameter: site")))?;
    let thresholds = q.kb().risk.settings.thresholds.clone();
    let view = q
        .raft()
        .read_state(|s| {
            let h = s.risk_history();
            SiteHistoryView {
                thresholds,
                recorded_through_ms: h.last_at_ms(),
                sites: h
                    .sites()
                    .iter()
                    .filter(|(site, _)| p.site.as_deref().is_none_or(|want| want == site.as_str()))
                    .map(|(site, points)| SiteHistory { site: site.clone(), points: points.iter().cloned().collect() })
                    .collect(),
            }
        })
        .await;
    if let (Some(want), true) = (&p.site, view.sites.is_empty()) {
        return Err(RiskApiError(StatusCode::NOT_FOUND, format!("no risk history for site {want:?}")));
    }
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollupParams {
    by: Option<String>,
    top: Option<usize>,
}

#[derive(Serialize)]
struct ThresholdCount {
    threshold: f64,
    devices: usize,
}

#[derive(Serialize)]
struct GroupView {
    key: String,
    devices: usize,
    max: f64,
    /// The highest-scoring device (ties: smallest id).
    max_device: String,
    mean: f64,
    above: Vec<ThresholdCount>,
}

#[derive(Serialize)]
struct VulnBrief {
    advisory_id: String,
    cve: Option<String>,
    cvss_score: Option<f64>,
    kev: bool,
    confidence: wardline_intel::Confidence,
}

#[derive(Serialize)]
struct TopDevice {
    id: String,
    mac: Option<String>,
    site: String,
    class: String,
    category: String,
    /// Policy groups the device is a member of.
    groups: Vec<String>,
    score: f64,
    reasons: Vec<String>,
    vulnerabilities: Vec<VulnBrief>,
    os_unsupported: bool,
}

#[derive(Serialize)]
struct RollupView {
    by: &'static str,
    /// What the scores include: evidence, OS and vulnerabilities; not flows (those are in
    /// each device's own risk answer).
    includes: &'static str,
    devices: usize,
    feeds_version: u64,
    thresholds: Vec<f64>,
    groups: Vec<GroupView>,
    top: Vec<TopDevice>,
}

/// Key of the devices that are in no policy group in `by=group` roll-ups.
pub const NO_GROUP: &str = "(no group)";

/// Roll rows up under the keys `keys` gives each (a device in two policy groups counts in
/// both).
fn group_by(
    rows: &[DeviceRiskRow],
    thresholds: &[f64],
    keys: impl Fn(&DeviceRiskRow) -> Vec<String>,
) -> Vec<GroupView> {
    let mut groups: BTreeMap<String, Vec<&DeviceRiskRow>> = BTreeMap::new();
    for r in rows {
        for key in keys(r) {
            groups.entry(key).or_default().push(r);
        }
    }
    groups
        .into_iter()
        .map(|(key, members)| {
            // Rows come highest score first, ties by id: the first is the group's top.
            let top = members[0];
            let sum: f64 = members.iter().map(|d| d.score).sum();
            GroupView {
                key,
                devices: members.len(),
                max: top.score,
                max_device: top.id.clone(),
                mean: (sum / members.len() as f64 * 10.0).round() / 10.0,
                above: thresholds
                    .iter()
                    .map(|&t| ThresholdCount { threshold: t, devices: members.iter().filter(|d| d.score >= t).count() })
                    .collect(),
            }
        })
        .collect()
}

async fn rollup(
    State(q): Service,
    params: Result<Query<RollupParams>, QueryRejection>,
) -> Result<Json<RollupView>, RiskApiError> {
    let Query(p) = params.map_err(|e| bad(format!("{e}; accepted parameters: by, top")))?;
    let by: &'static str = match p.by.as_deref().unwrap_or("site") {
        "site" => "site",
        "class" => "class",
        "category" => "category",
        "group" => "group",
        other => return Err(bad(format!("by={other:?}: group by site, class, category or group"))),
    };
    let top = p.top.unwrap_or(DEFAULT_TOP);
    if top > MAX_TOP {
        return Err(bad(format!("top must be 0 to {MAX_TOP}")));
    }
    let rows = q.risk_rows().await;
    let feeds_version = q.compiled_feeds().await.version;
    let thresholds = q.kb().risk.settings.thresholds.clone();
    let groups = group_by(&rows, &thresholds, |r| match by {
        "class" => vec![r.class.clone()],
        "category" => vec![r.category.clone()],
        "group" if r.groups.is_empty() => vec![NO_GROUP.to_string()],
        "group" => r.groups.clone(),
        _ => vec![r.site.clone()],
    });
    let top = rows
        .iter()
        .take(top)
        .map(|r| TopDevice {
            id: r.id.clone(),
            mac: r.mac.clone(),
            site: r.site.clone(),
            class: r.class.clone(),
            category: r.category.clone(),
            groups: r.groups.clone(),
            score: r.score,
            reasons: r.reasons.clone(),
            vulnerabilities: r
                .vulnerabilities
                .iter()
                .map(|v| VulnBrief {
                    advisory_id: v.advisory_id.to_string(),
                    cve: v.cve.as_deref().map(str::to_string),
                    cvss_score: v.cvss_score,
                    kev: v.kev,
                    confidence: v.confidence,
                })
                .collect(),
            os_unsupported: r.os_unsupported,
        })
        .collect();
    Ok(Json(RollupView {
        by,
        includes: "evidence, operating system and vulnerability factors; flows are not included \
                   (GET /api/v1/devices/{id}/risk scores a device with its flows)",
        devices: rows.len(),
        feeds_version,
        thresholds,
        groups,
        top,
    }))
}

async fn report(State(q): Service, Path(file): Path<String>) -> Result<Response, RiskApiError> {
    let (name, ext) = file
        .rsplit_once('.')
        .ok_or_else(|| bad(format!("{file:?}: ask for NAME.csv or NAME.html (inventory, risk, vulnerable, alerts)")))?;
    let name: ReportName = name.parse().map_err(bad)?;
    if ext == "pdf" {
        let html = report_text(&q, name, Format::Html).await;
        let pdf = super::pdf::html_to_pdf(&html).await.map_err(|e| match e {
            super::pdf::PdfError::NoChromium => RiskApiError(StatusCode::NOT_IMPLEMENTED, e.to_string()),
            super::pdf::PdfError::Failed(_) => RiskApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })?;
        return Ok(([(header::CONTENT_TYPE, "application/pdf")], pdf).into_response());
    }
    let format: Format = ext.parse().map_err(bad)?;
    let body = report_text(&q, name, format).await;
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Html => "text/html; charset=utf-8",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Report `name` rendered from this node's applied state (the API route and the scheduled
/// reports use it).
pub async fn report_text(q: &QueryService, name: ReportName, format: Format) -> String {
    let rows = q.risk_rows().await;
    let open_alerts: Vec<_> = q
        .raft()
        .read_state(|s| s.alerts().alerts().values().filter(|a| a.state == AlertState::Open).cloned().collect())
        .await;
    let source = match q.raft().applied_index().await {
        Some(i) => format!("Built from the cluster state at applied log index {i}."),
        None => "Built from an empty cluster state.".to_string(),
    };
    render(name, format, &ReportInput { devices: &rows, open_alerts: &open_alerts, top: REPORT_TOP, source })
}
