//! `POST /api/v1/policy/replay` (analyst, decision 0030): what a candidate policy would have
//! blocked over the stored flow history, grouped by clinical workflow, and, given a second
//! version, what each of the two blocks that the other does not. The work is
//! `crate::sink::replay`: the candidate becomes one SQL expression pushed down to ClickHouse.
//!
//! The candidate is policy text, a stored version, or a draft: a draft that is a whole
//! policy (a stored recommendation) is replayed as it is; a draft fragment (`[[group]]` +
//! `[[rule]]` from triage) is replayed placed *before* the active version's rules, i.e.
//! as it would take effect. Groups are resolved against today's inventory for every version.
//!
//! A node storing flows in the embedded store answers 501: replay is a ClickHouse query.

use super::api::{err, json_body, stored_version, PolicyApiError};
use super::resolve;
use crate::auth::layer::AuditDetail;
use crate::auth::now_ms;
use crate::query::QueryService;
use crate::sink::clickhouse::ClickHouseSink;
use crate::sink::replay::{self as sql, ReplayContext, ReplayError, WorkflowBlocked, WorkflowChange};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use wardline_intel::policy::{self as engine, Policy};

/// Workflows one answer lists when the request names no `limit`.
pub const DEFAULT_WORKFLOWS: u32 = 100;
/// Largest `limit`.
pub const MAX_WORKFLOWS: u32 = 1000;

/// The request: exactly one of `text`, `version`, `draft`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    pub text: Option<String>,
    pub version: Option<u64>,
    pub draft: Option<u64>,
    /// A stored version to compare the candidate with.
    pub against: Option<u64>,
    /// Flows first seen in `[from_us, to_us)`, capture time in µs (default: all).
    pub from_us: Option<u64>,
    pub to_us: Option<u64>,
    /// Workflows listed at most (1 to 1000, default 100).
    pub limit: Option<u32>,
}

/// Blocked flows of one clinical workflow.
#[derive(Serialize)]
pub struct WorkflowView {
    /// "infusion pump → pump server, alaris".
    pub workflow: String,
    pub src_class: String,
    pub dst_class: String,
    pub app: String,
    pub flows: u64,
    /// Up to three, `a_ip -> b_ip proto/port`.
    pub examples: Vec<String>,
}

#[derive(Serialize)]
pub struct BlockedView {
    /// Flows blocked in the listed workflows.
    pub flows: u64,
    pub workflows: Vec<WorkflowView>,
    /// More workflows than `limit` have blocked flows.
    pub truncated: bool,
}

#[derive(Serialize)]
pub struct ChangeView {
    pub workflow: String,
    pub src_class: String,
    pub dst_class: String,
    pub app: String,
    /// Blocked by the candidate, not by the version compared against.
    pub only_candidate: u64,
    /// Blocked by the version compared against, not by the candidate.
    pub only_against: u64,
}

#[derive(Serialize)]
pub struct ComparisonView {
    pub against: u64,
    pub only_candidate: u64,
    pub only_against: u64,
    pub workflows: Vec<ChangeView>,
}

#[derive(Serialize)]
pub struct ReplayView {
    /// `text`, `version N` or `draft N`.
    pub candidate: String,
    pub from_us: u64,
    pub to_us: u64,
    pub store: String,
    pub blocked: BlockedView,
    pub comparison: Option<ComparisonView>,
}

pub fn workflow_name(src_class: &str, dst_class: &str, app: &str) -> String {
    let words = |s: &str| s.replace('_', " ");
    let app = if app.is_empty() { "unknown" } else { app };
    format!("{} → {}, {app}", words(src_class), words(dst_class))
}

fn parse_candidate(source: &str, text: &str) -> Result<Policy, PolicyApiError> {
    engine::parse_policy(source, text).map_err(|e| {
        let lines: Vec<String> = e.errors.iter().map(|e| format!("line {}: {}", e.line, e.message)).collect();
        PolicyApiError::new(
            StatusCode::BAD_REQUEST,
            serde_json::json!({
                "error": format!("the candidate ({source}) has {} problem(s):\n  {}", lines.len(), lines.join("\n  ")),
                "errors": e.errors.iter().map(|e| serde_json::json!({"line": e.line, "message": e.message})).collect::<Vec<_>>(),
            }),
        )
    })
}

/// The candidate policy and its name in the answer.
async fn candidate(q: &QueryService, b: &ReplayBody) -> Result<(Policy, String), PolicyApiError> {
    match (&b.text, b.version, b.draft) {
        (Some(text), None, None) => Ok((parse_candidate("text", text)?, "text".to_string())),
        (None, Some(n), None) => {
            let v = stored_version(q, n).await?;
            Ok((parse_candidate(&format!("version {n}"), &v.text)?, format!("version {n}")))
        }
        (None, None, Some(id)) => {
            let (draft, active) = q
                .raft()
                .read_state(move |s| {
                    (s.policy().drafts().get(&id).cloned(), s.policy().active().map(|v| v.text.clone()))
                })
                .await;
            let draft = draft.ok_or_else(|| {
                err(StatusCode::NOT_FOUND, format!("no draft {id}; list them with GET /api/v1/policy/drafts"))
            })?;
            let source = format!("draft {id}");
            // A whole policy (a stored recommendation) stands alone; a fragment goes first in
            // the active version, where its rules take effect.
            if draft.toml.lines().any(|l| l.trim() == "[policy]") {
                return Ok((parse_candidate(&source, &draft.toml)?, source));
            }
            let active = active.ok_or_else(|| {
                err(StatusCode::NOT_FOUND, format!("draft {id} is a fragment and no policy is active to place it in"))
            })?;
            Ok((parse_candidate(&source, &format!("{}\n{active}", draft.toml))?, source))
        }
        _ => Err(err(
            StatusCode::BAD_REQUEST,
            "give exactly one candidate: {\"text\": \"<policy TOML>\"}, {\"version\": N} or {\"draft\": ID}",
        )),
    }
}

fn replay_error(e: ReplayError) -> PolicyApiError {
    match e {
        ReplayError::Unsupported(m) => err(StatusCode::BAD_REQUEST, format!("the policy cannot be replayed: {m}")),
        ReplayError::Sink(e) => {
            err(StatusCode::SERVICE_UNAVAILABLE, format!("the flow store cannot answer: {e}. Retry once it is back"))
        }
    }
}

/// The ClickHouse store (a server, or a live replica of a cluster), or 501 saying why there
/// is none.
pub async fn clickhouse(q: &QueryService) -> Result<ClickHouseSink, PolicyApiError> {
    let Some(store) = q.flow_store() else {
        return Err(err(StatusCode::NOT_IMPLEMENTED, "policy replay needs ClickHouse; this node has no flow store"));
    };
    match store.clickhouse_reader().await {
        Some(reader) => reader.map_err(|e| replay_error(ReplayError::Sink(e))),
        None => Err(err(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "policy replay runs as a query in ClickHouse; this node stores flows in the {} — configure \
                 clickhouse_url to replay (recommendation works on either store)",
                store.describe()
            ),
        )),
    }
}

fn workflows(rows: Vec<WorkflowBlocked>) -> Vec<WorkflowView> {
    rows.into_iter()
        .map(|w| WorkflowView {
            workflow: workflow_name(&w.src_class, &w.dst_class, &w.app),
            src_class: w.src_class,
            dst_class: w.dst_class,
            app: w.app,
            flows: w.flows,
            examples: w.examples,
        })
        .collect()
}

fn changes(against: u64, rows: Vec<WorkflowChange>) -> ComparisonView {
    ComparisonView {
        against,
        only_candidate: rows.iter().map(|c| c.newly_blocked).sum(),
        only_against: rows.iter().map(|c| c.no_longer_blocked).sum(),
        workflows: rows
            .into_iter()
            .map(|c| ChangeView {
                workflow: workflow_name(&c.src_class, &c.dst_class, &c.app),
                src_class: c.src_class,
                dst_class: c.dst_class,
                app: c.app,
                only_candidate: c.newly_blocked,
                only_against: c.no_longer_blocked,
            })
            .collect(),
    }
}

pub(super) async fn handler(
    State(q): State<Arc<QueryService>>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, PolicyApiError> {
    let b: ReplayBody = json_body(
        bytes,
        "{\"text\"|\"version\"|\"draft\": ..., \"against\"?: N, \"from_us\"?: N, \"to_us\"?: N, \"limit\"?: N}",
    )?;
    let limit = b.limit.unwrap_or(DEFAULT_WORKFLOWS);
    if !(1..=MAX_WORKFLOWS).contains(&limit) {
        return Err(err(StatusCode::BAD_REQUEST, format!("limit {limit} is outside 1..={MAX_WORKFLOWS}")));
    }
    let (from_us, to_us) = (b.from_us.unwrap_or(0), b.to_us.unwrap_or(u64::MAX));
    if from_us >= to_us {
        return Err(err(StatusCode::BAD_REQUEST, format!("from_us {from_us} is not before to_us {to_us}")));
    }
    let (policy, name) = candidate(&q, &b).await?;
    let against = match b.against {
        Some(n) => Some((n, parse_candidate(&format!("version {n}"), &stored_version(&q, n).await?.text)?)),
        None => None,
    };
    let sink = clickhouse(&q).await?;
    let records = q.raft().read_state(resolve::records).await;
    let devices = resolve::policy_devices(&records, q.kb(), &resolve::date_of(now_ms()));
    let ctx = ReplayContext::from_devices(&policy, &devices);
    let mut rows =
        sql::blocked_by_workflow(&sink, &policy, &ctx, from_us, to_us, limit + 1).await.map_err(replay_error)?;
    let truncated = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let comparison = match against {
        Some((n, other)) => {
            // Each policy's groups resolve by its own definitions (the same name may mean
            // different members in the two).
            let other_ctx = ReplayContext::from_devices(&other, &devices);
            let rows = sql::compare_contexts(&sink, (&other, &other_ctx), (&policy, &ctx), from_us, to_us)
                .await
                .map_err(replay_error)?;
            Some(changes(n, rows))
        }
        None => None,
    };
    let blocked = BlockedView { flows: rows.iter().map(|w| w.flows).sum(), workflows: workflows(rows), truncated };
    let detail = format!("replayed {name}: {} flow(s) blocked", blocked.flows);
    let view = ReplayView {
        candidate: name,
        from_us,
        to_us,
        store: crate::sink::FlowSink::describe(&sink),
        blocked,
        comparison,
    };
    let mut resp = Json(view).into_response();
    resp.extensions_mut().insert(AuditDetail(detail));
    Ok(resp)
}
