//! `GET /api/v1/blast?device=ID|group=NAME[&candidate=N|&draft=ID]` (issue 12 item 6,
//! decision 0031): what a compromised device, or any member of a group, reaches now and
//! under a candidate policy, weighted by clinical criticality.
//!
//! The inputs are replicated — devices (classified at read time), their segments, the
//! anomaly baselines' learned peers and listening services, the active version and its
//! membership — and the computation is `wardline_intel::policy::blast`, so every node at the
//! same applied index answers the same. "Now" is the active version's verdicts, or no policy
//! at all when none is active; the model is in docs/segmentation.md ("Blast radius").

use super::groups::inventory_devices;
use super::resolve;
use crate::query::QueryService;
use crate::state::policy as stored;
use crate::state::{ClusterState, DeviceId};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use wardline_common::MacAddr;
use wardline_intel::policy::blast::{self, BlastDevice, BlastDiff, BlastInput, Reach, Regime, Service};
use wardline_intel::policy::{CompiledPolicy, Policy};

pub fn routes() -> Router<Arc<QueryService>> {
    Router::new().route("/api/v1/blast", get(blast_radius))
}

pub struct BlastApiError(StatusCode, String);

impl IntoResponse for BlastApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> BlastApiError {
    BlastApiError(StatusCode::BAD_REQUEST, msg.into())
}
fn not_found(msg: impl Into<String>) -> BlastApiError {
    BlastApiError(StatusCode::NOT_FOUND, msg.into())
}

#[derive(Deserialize)]
pub struct BlastParams {
    pub device: Option<String>,
    pub group: Option<String>,
    pub candidate: Option<u64>,
    pub draft: Option<u64>,
}

#[derive(Serialize)]
pub struct RegimeView {
    /// "policy version 3", "no policy", "version 3 plus draft 2".
    pub name: String,
    pub reach: Reach,
}

#[derive(Serialize)]
pub struct BlastView {
    /// "device" or "group".
    pub kind: String,
    pub name: String,
    pub sources: Vec<MacAddr>,
    pub headline: String,
    pub now: RegimeView,
    pub candidate: Option<RegimeView>,
    pub diff: Option<BlastDiff>,
}

/// The replicated inputs, copied out under the state lock.
struct Inputs {
    records: resolve::Records,
    segments: BTreeMap<MacAddr, Vec<String>>,
    services: BTreeMap<MacAddr, Vec<Service>>,
    observed: Vec<(MacAddr, MacAddr)>,
    active: Option<stored::PolicyVersion>,
    membership: Vec<stored::GroupMembers>,
}

fn inputs(s: &ClusterState) -> Inputs {
    let records = resolve::records(s);
    let mut segments = BTreeMap::new();
    let mut services = BTreeMap::new();
    // An address names a device only when exactly one MAC holds it (a router's MAC holds many).
    let mut holders: BTreeMap<IpAddr, Vec<MacAddr>> = BTreeMap::new();
    for r in &records {
        let segs: BTreeSet<String> = r
            .segments
            .iter()
            .map(|(k, seen)| {
                let site = s.site_name(seen.site_index);
                match k.vlan {
                    Some(v) => format!("{site}/vlan {v}"),
                    None => format!("{site}/sensor {} untagged", k.sensor),
                }
            })
            .collect();
        segments.insert(r.mac, segs.into_iter().collect());
        for ip in r.ips.keys() {
            holders.entry(ip).or_default().push(r.mac);
        }
    }
    let mut observed = Vec::new();
    for r in &records {
        let Some(b) = s.baselines().device(&r.mac) else { continue };
        services.insert(r.mac, b.services.iter().filter_map(|x| Service::parse(x)).collect());
        for peer in b.peers.iter() {
            if let Some([mac]) = holders.get(peer).map(Vec::as_slice) {
                observed.push((r.mac, *mac));
            }
        }
    }
    Inputs {
        records,
        segments,
        services,
        observed,
        active: s.policy().active().cloned(),
        membership: s.policy().membership().to_vec(),
    }
}

async fn blast_radius(
    State(q): State<Arc<QueryService>>,
    params: Result<Query<BlastParams>, QueryRejection>,
) -> Result<Json<BlastView>, BlastApiError> {
    let Query(p) = params.map_err(|e| {
        bad(format!(
            "bad query: {}; use ?device=ID or ?group=NAME, optionally &candidate=N or &draft=ID",
            e.body_text()
        ))
    })?;
    Ok(Json(compute(&q, &p).await?))
}

/// The blast radius for `p` (the API's answer; public for the CLI-less callers and tests).
pub async fn compute(q: &QueryService, p: &BlastParams) -> Result<BlastView, BlastApiError> {
    if p.device.is_some() == p.group.is_some() {
        return Err(bad("give exactly one of device=ID (a MAC) or group=NAME"));
    }
    if p.candidate.is_some() && p.draft.is_some() {
        return Err(bad("give at most one of candidate=VERSION or draft=ID"));
    }
    let (inputs, candidate_text) = q
        .raft()
        .read_state(|s| {
            let i = inputs(s);
            let cand = match (p.candidate, p.draft) {
                (Some(n), _) => {
                    Some(s.policy().version(n).map(|v| (v.text.clone(), format!("version {n}"))).ok_or_else(|| {
                        not_found(format!("policy version {n} is not kept; GET /api/v1/policy/versions lists them"))
                    }))
                }
                (_, Some(id)) => Some(
                    s.policy()
                        .drafts()
                        .get(&id)
                        .map(|d| {
                            let base = i.active.as_ref().map(|v| v.text.clone()).unwrap_or_default();
                            let name = match &i.active {
                                Some(v) => format!("version {} plus draft {id}", v.version),
                                None => format!("draft {id}"),
                            };
                            (format!("{base}\n{}\n", d.toml), name)
                        })
                        .ok_or_else(|| not_found(format!("no draft {id}; GET /api/v1/policy/drafts lists them"))),
                ),
                _ => None,
            };
            (i, cand)
        })
        .await;
    let (inputs, candidate_text, candidate_name) = match candidate_text {
        Some(Ok((t, n))) => (inputs, Some(t), Some(n)),
        Some(Err(e)) => return Err(e),
        None => (inputs, None, None),
    };

    // Sources.
    let (kind, name, sources): (&str, String, BTreeSet<MacAddr>) = if let Some(d) = &p.device {
        let id: DeviceId = d.parse().map_err(bad)?;
        let DeviceId::Mac(mac) = id else {
            return Err(bad(format!(
                "{d:?} is an IP-keyed device; the blast radius is computed for devices known by MAC (their \
                 baselines and segments are per MAC)"
            )));
        };
        if !inputs.records.iter().any(|r| r.mac == mac) {
            return Err(not_found(format!("no device {mac} in the inventory; GET /api/v1/inventory lists them")));
        }
        ("device", mac.to_string(), BTreeSet::from([mac]))
    } else {
        let g = p.group.clone().unwrap_or_default();
        let Some(active) = &inputs.active else {
            return Err(not_found(format!("no policy is active, so there is no group {g:?}")));
        };
        let members = inputs.membership.iter().find(|m| m.group == g).ok_or_else(|| {
            not_found(format!("policy version {} has no group {g:?}; GET /api/v1/groups lists them", active.version))
        })?;
        ("group", g, members.members.iter().copied().collect())
    };

    let devices = inventory_devices(q, inputs.records.clone()).await;
    let candidate_policy: Option<Policy> = match &candidate_text {
        Some(t) => Some(stored::parse(t).map_err(|e| {
            BlastApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the candidate ({}) does not parse: {e}", candidate_name.clone().unwrap_or_default()),
            )
        })?),
        None => None,
    };
    let active_policy = match &inputs.active {
        Some(v) => Some(stored::parse(&v.text).map_err(|e| BlastApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?),
        None => None,
    };
    let blast_devices: Vec<BlastDevice> = devices
        .iter()
        .map(|d| BlastDevice {
            mac: d.mac,
            ip: d.ips.first().copied(),
            class: d.class.clone(),
            criticality: d.criticality,
            segments: inputs.segments.get(&d.mac).cloned().unwrap_or_default(),
            services: inputs.services.get(&d.mac).cloned().unwrap_or_default(),
        })
        .collect();
    let who = match kind {
        "device" => {
            let class = devices.iter().find(|d| d.mac.to_string() == name).map(|d| d.class.as_str()).unwrap_or("?");
            format!("a compromised {class} ({name})")
        }
        _ => format!("a compromised member of {name:?} ({} devices)", sources.len()),
    };
    let membership = inputs.membership;
    let observed = inputs.observed;
    let now_name = match &inputs.active {
        Some(v) => format!("policy version {}", v.version),
        None => "no policy".to_string(),
    };
    let view = tokio::task::spawn_blocking(move || {
        let input = BlastInput { devices: &blast_devices, observed: &observed, sources: &sources };
        let now_compiled: Option<CompiledPolicy> = active_policy.as_ref().map(|p| stored::compile(p, &membership));
        let now = match &now_compiled {
            Some(c) => blast::reach(&input, Regime::Policy(c)),
            None => blast::reach(&input, Regime::Open),
        };
        let candidate: Option<Reach> = candidate_policy.map(|cp| {
            let m = resolve::membership(&cp, &devices);
            let c = stored::compile(&cp, &m);
            blast::reach(&input, Regime::Policy(&c))
        });
        let cname = candidate_name.unwrap_or_default();
        let headline = blast::headline(&who, &now, candidate.as_ref().map(|c| (cname.as_str(), c)));
        let diff = candidate.as_ref().map(|c| blast::diff(&now, c));
        BlastView {
            kind: kind.to_string(),
            name,
            sources: sources.into_iter().collect(),
            headline,
            now: RegimeView { name: now_name, reach: now },
            candidate: candidate.map(|reach| RegimeView { name: cname, reach }),
            diff,
        }
    })
    .await
    .map_err(|e| BlastApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("blast radius computation failed: {e}")))?;
    Ok(view)
}
