//! Operators' tags on devices, the `tag` attribute of group conditions (issue 12 item 1):
//! - `GET /api/v1/devices/{mac}/tags` → `{"mac","tags":[…]}`;
//! - `PUT /api/v1/devices/{mac}/tags` `{"tags":["icu","ward-3a"]}` (analyst) replaces them; an
//!   empty list removes them. Replicated and audited; groups follow on the leader's next
//!   membership refresh (or `policy refresh` at once).

use super::api::{err, json_body, marked, propose_audited, PolicyApiError};
use crate::auth::layer::PendingAudit;
use crate::query::QueryService;
use crate::state::tags::check_tags;
use crate::state::Command;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use wardline_common::MacAddr;

pub fn routes() -> Router<Arc<QueryService>> {
    Router::new().route("/api/v1/devices/{id}/tags", get(show).put(set))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsBody {
    tags: Vec<String>,
}

/// The MAC of a device the inventory knows, or 400/404 saying why not.
async fn known_device(q: &QueryService, id: &str) -> Result<MacAddr, PolicyApiError> {
    let mac: MacAddr = id.parse().map_err(|_| {
        err(StatusCode::BAD_REQUEST, format!("{id:?} is not a MAC address; tags are kept on devices known by MAC"))
    })?;
    if !q.raft().read_state(move |s| s.devices().contains_key(&mac)).await {
        return Err(err(StatusCode::NOT_FOUND, format!("no device {mac} in the inventory")));
    }
    Ok(mac)
}

fn view(mac: MacAddr, tags: Vec<String>) -> serde_json::Value {
    serde_json::json!({ "mac": mac.to_string(), "tags": tags })
}

async fn show(
    State(q): State<Arc<QueryService>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, PolicyApiError> {
    let mac = known_device(&q, &id).await?;
    let tags = q
        .raft()
        .read_state(move |s| s.device_tags().of(&mac).map(|t| t.iter().cloned().collect()).unwrap_or_default())
        .await;
    Ok(Json(view(mac, tags)))
}

async fn set(
    State(q): State<Arc<QueryService>>,
    pending: Option<Extension<PendingAudit>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, PolicyApiError> {
    let mac = known_device(&q, &id).await?;
    let body: TagsBody = json_body(body, r#"{"tags": ["icu", "ward-3a"]}"#)?;
    check_tags(&body.tags).map_err(|e| err(StatusCode::BAD_REQUEST, e))?;
    let mut tags: Vec<String> = body.tags.iter().map(|t| t.to_ascii_lowercase()).collect();
    tags.sort();
    tags.dedup();
    let detail = if tags.is_empty() {
        format!("removed the tags of device {mac}")
    } else {
        format!("tagged device {mac}: {}", tags.join(", "))
    };
    let command = Command::SetDeviceTags { mac, tags: tags.clone() };
    let (applied, audited) = propose_audited(&q, pending, command, StatusCode::OK, &detail).await?;
    if !applied {
        return Err(err(StatusCode::CONFLICT, format!("the tags of {mac} were not changed (the tag table is full)")));
    }
    Ok(marked(Json(view(mac, tags)), detail, audited))
}
