//! Groups of the active policy (issue 12 item 1, decision 0031):
//! - `GET /api/v1/groups` — each group with its rule, static members, exclusions and member count;
//! - `GET /api/v1/groups/{name}` — its members (the replicated membership) and why each is one;
//! - `GET /api/v1/groups/{name}/history?limit=N` — joins and leaves, newest first.
//!
//! Members and history come from the replicated state, so every node answers the same.
//! The device details next to a member (class, criticality, addresses) and the devices an
//! exclusion keeps out are computed at read time, like classification (decision 0011).

use super::resolve;
use crate::auth::now_ms;
use crate::query::QueryService;
use crate::state::policy::{self as stored, HistoryEntry};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use wardline_common::MacAddr;
use wardline_intel::policy::{Group, PolicyDevice};

/// History entries one answer lists at most (`limit` defaults to this).
pub const HISTORY_LIMIT: usize = 1_000;

pub fn routes() -> Router<Arc<QueryService>> {
    Router::new()
        .route("/api/v1/groups", get(list))
        .route("/api/v1/groups/{name}", get(show))
        .route("/api/v1/groups/{name}/history", get(history))
}

/// The policy attributes of every device in `records` with risk and vulnerability matches
/// from the replicated feeds (the input of membership, for apply, refresh and reads).
pub async fn inventory_devices(q: &QueryService, records: resolve::Records) -> Vec<PolicyDevice> {
    let feeds = q.compiled_feeds().await;
    let kb = q.kb().clone();
    let today = resolve::date_of(now_ms());
    tokio::task::spawn_blocking(move || resolve::policy_devices_with_risk(&records, &kb, &feeds, &today))
        .await
        .unwrap_or_default()
}

pub struct GroupsApiError(StatusCode, String);

impl IntoResponse for GroupsApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn not_found(msg: String) -> GroupsApiError {
    GroupsApiError(StatusCode::NOT_FOUND, msg)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    pub description: Option<String>,
    /// The `match` expression, canonical.
    pub rule: Option<String>,
    pub exclude_rule: Option<String>,
    /// MACs listed in `members`.
    pub static_members: Vec<String>,
    /// MACs listed in `exclude`.
    pub excluded: Vec<String>,
    /// Members in the replicated membership.
    pub members: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupsView {
    /// The active version (none: no policy yet, and no groups).
    pub version: Option<u64>,
    pub membership_at_ms: u64,
    pub history_kept: usize,
    pub history_dropped: u64,
    pub groups: Vec<GroupSummary>,
}

fn summary(g: &Group, members: usize) -> GroupSummary {
    GroupSummary {
        name: g.name.clone(),
        description: g.description.clone(),
        rule: g.matches.as_ref().map(|e| e.to_string()),
        exclude_rule: g.exclude_match.as_ref().map(|e| e.to_string()),
        static_members: g.members.iter().map(|m| m.to_string()).collect(),
        excluded: g.exclude.iter().map(|m| m.to_string()).collect(),
        members,
    }
}

async fn list(State(q): State<Arc<QueryService>>) -> Result<Json<GroupsView>, GroupsApiError> {
    let (active, membership, at_ms, kept, dropped) = q
        .raft()
        .read_state(|s| {
            let p = s.policy();
            let h = s.group_history();
            (p.active().cloned(), p.membership().to_vec(), p.membership_at_ms(), h.len(), h.dropped())
        })
        .await;
    let mut view = GroupsView {
        version: active.as_ref().map(|v| v.version),
        membership_at_ms: at_ms,
        history_kept: kept,
        history_dropped: dropped,
        groups: Vec::new(),
    };
    if let Some(active) = active {
        let policy = stored::parse(&active.text).map_err(|e| GroupsApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let counts: BTreeMap<&str, usize> = membership.iter().map(|m| (m.group.as_str(), m.members.len())).collect();
        view.groups =
            policy.groups.iter().map(|g| summary(g, counts.get(g.name.as_str()).copied().unwrap_or(0))).collect();
    }
    Ok(Json(view))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberView {
    pub mac: String,
    /// `static` (listed in `members`) or `matched` (the rule matches its attributes).
    pub why: String,
    /// Read-time details; `None` for a static member the inventory has not seen yet.
    pub class: Option<String>,
    pub criticality: Option<String>,
    pub ips: Vec<String>,
    pub risk: Option<f64>,
    pub vulns: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExcludedView {
    pub mac: String,
    /// `excluded` (listed in `exclude`) or `exclude_rule` (matches `exclude_match`).
    pub why: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupView {
    pub version: u64,
    pub group: GroupSummary,
    pub membership_at_ms: u64,
    pub members: Vec<MemberView>,
    /// Devices of the inventory the rule (or the static list) would take in but an
    /// exclusion keeps out, computed now.
    pub kept_out: Vec<ExcludedView>,
}

async fn active_group(q: &QueryService, name: &str) -> Result<(u64, Group, Vec<MacAddr>, u64), GroupsApiError> {
    let (active, membership, at_ms) = q
        .raft()
        .read_state(|s| (s.policy().active().cloned(), s.policy().membership().to_vec(), s.policy().membership_at_ms()))
        .await;
    let active = active.ok_or_else(|| {
        not_found(format!(
            "no policy is active, so there is no group {name:?}; apply one with POST /api/v1/policy/apply"
        ))
    })?;
    let policy = stored::parse(&active.text).map_err(|e| GroupsApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let group = policy.group(name).cloned().ok_or_else(|| {
        let names: Vec<&str> = policy.groups.iter().map(|g| g.name.as_str()).collect();
        not_found(format!(
            "policy version {} has no group {name:?}; its groups: {}",
            active.version,
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ))
    })?;
    let members = membership.into_iter().find(|m| m.group == name).map(|m| m.members).unwrap_or_default();
    Ok((active.version, group, members, at_ms))
}

async fn show(State(q): State<Arc<QueryService>>, Path(name): Path<String>) -> Result<Json<GroupView>, GroupsApiError> {
    let (version, group, members, at_ms) = active_group(&q, &name).await?;
    let records = q.raft().read_state(resolve::records).await;
    let devices = inventory_devices(&q, records).await;
    let by_mac: BTreeMap<MacAddr, &PolicyDevice> = devices.iter().map(|d| (d.mac, d)).collect();
    let members_view = members
        .iter()
        .map(|mac| {
            let d = by_mac.get(mac);
            MemberView {
                mac: mac.to_string(),
                why: if group.members.contains(mac) { "static" } else { "matched" }.to_string(),
                class: d.map(|d| d.class.clone()),
                criticality: d.map(|d| d.criticality.as_str().to_string()),
                ips: d.map(|d| d.ips.iter().map(|i| i.to_string()).collect()).unwrap_or_default(),
                risk: d.map(|d| d.risk),
                vulns: d.map(|d| d.vulns),
            }
        })
        .collect();
    let mut kept_out = Vec::new();
    for d in &devices {
        let wanted = group.members.contains(&d.mac) || group.matches.as_ref().is_some_and(|e| e.matches(d));
        if !wanted {
            continue;
        }
        if group.exclude.contains(&d.mac) {
            kept_out.push(ExcludedView { mac: d.mac.to_string(), why: "excluded".into() });
        } else if group.exclude_match.as_ref().is_some_and(|e| e.matches(d)) {
            kept_out.push(ExcludedView { mac: d.mac.to_string(), why: "exclude_rule".into() });
        }
    }
    let count = members.len();
    Ok(Json(GroupView {
        version,
        group: summary(&group, count),
        membership_at_ms: at_ms,
        members: members_view,
        kept_out,
    }))
}

#[derive(Deserialize)]
struct HistoryParams {
    limit: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryView {
    pub group: String,
    /// Entries of this group kept (all of them, not only the ones listed).
    pub kept: usize,
    /// Entries of every group dropped to stay within the bound.
    pub dropped: u64,
    /// Newest first, at most `limit`.
    pub entries: Vec<HistoryEntry>,
}

async fn history(
    State(q): State<Arc<QueryService>>,
    Path(name): Path<String>,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryView>, GroupsApiError> {
    let Query(params) = params
        .map_err(|e| GroupsApiError(StatusCode::BAD_REQUEST, format!("bad query: {}; use ?limit=N", e.body_text())))?;
    let limit = params.limit.unwrap_or(HISTORY_LIMIT).min(HISTORY_LIMIT);
    // Copy out under the state lock; parse after releasing it.
    let (active_text, kept, dropped, entries) = q
        .raft()
        .read_state(|s| {
            let h = s.group_history();
            let kept = h.of_group(&name).count();
            let entries: Vec<HistoryEntry> =
                h.entries().rev().filter(|e| e.group == name).take(limit).cloned().collect();
            (s.policy().active().map(|v| v.text.clone()), kept, h.dropped(), entries)
        })
        .await;
    let in_policy = active_text.and_then(|t| stored::parse(&t).ok()).is_some_and(|p| p.group(&name).is_some());
    let known = in_policy || kept > 0;
    if !known {
        return Err(not_found(format!(
            "no group {name:?} in the active policy and no history of one; GET /api/v1/groups lists the groups"
        )));
    }
    Ok(Json(HistoryView { group: name, kept, dropped, entries }))
}
