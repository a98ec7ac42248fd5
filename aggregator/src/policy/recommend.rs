//! `POST /api/v1/policy/recommend` (analyst, decision 0030): a least-privilege proposal from
//! the flows this cluster stored. The flow store reduces the history to conversations
//! (`crate::sink::aggregates`, a `GROUP BY` on ClickHouse); each conversation's ends are
//! resolved against the inventory (a device holding the address, else the address
//! itself: a router's MAC fronts every remote address), labelled by the knowledge base
//! (`wardline_intel::flow_context`, from the client's side), and handed to
//! `wardline_intel::policy::recommend` with the classified devices. The answer carries the
//! proposed text, every rule's justification, the risky and unknown flows left out, coverage
//! and the validation of the text; it can be stored as a draft.

use super::api::{check, err, json_body, propose_audited, who, PolicyApiError, ValidationView};
use super::resolve;
use crate::auth::layer::{AuditDetail, PendingAudit};
use crate::auth::{now_ms, Principal};
use crate::query::classify::classify_record;
use crate::query::QueryService;
use crate::sink::aggregates::{self, Conversation, Conversations, FlowStore, MAX_CONVERSATIONS};
use crate::state::policy::{DraftRule, MAX_POLICY_BYTES};
use crate::state::{Command, DeviceRecord};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use wardline_common::MacAddr;
use wardline_intel::flow_context::is_external;
use wardline_intel::policy::{self as engine, Coverage, LeftOut, ObservedEnd, ObservedFlow, PolicyDevice};
use wardline_intel::{flow_context, Classification, Direction, FlowSpec, FlowTag, KnowledgeBase, Transport};

/// The request; every field optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RecommendBody {
    /// `[policy] name` of the proposal (default `recommended`).
    pub name: Option<String>,
    /// Flows first seen in `[from_us, to_us)`, capture time in µs (default: all).
    pub from_us: Option<u64>,
    pub to_us: Option<u64>,
    /// Store the proposal in the draft area.
    #[serde(default)]
    pub save_draft: bool,
    /// Note kept with the draft.
    #[serde(default)]
    pub note: String,
}

#[derive(Serialize)]
pub struct CoverageView {
    pub aggregates: u64,
    pub aggregates_allowed: u64,
    pub count: u64,
    pub count_allowed: u64,
    /// Allowed share of the flow count (1.0 when nothing was observed).
    pub share: f64,
}

impl From<Coverage> for CoverageView {
    fn from(c: Coverage) -> Self {
        CoverageView {
            aggregates: c.aggregates,
            aggregates_allowed: c.aggregates_allowed,
            count: c.count,
            count_allowed: c.count_allowed,
            share: c.share(),
        }
    }
}

#[derive(Serialize)]
pub struct RuleView {
    pub name: String,
    pub action: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub protocol: Transport,
    pub ports: Vec<String>,
    pub app: Option<String>,
    pub justification: engine::Justification,
}

#[derive(Serialize)]
pub struct ObservedView {
    /// Conversations (client, server, protocol, port, app) read from the store.
    pub conversations: usize,
    /// Flows behind them.
    pub flows: u64,
    /// The store held more conversations than one answer reads; the smallest were left out.
    pub truncated: bool,
    pub from_us: u64,
    pub to_us: u64,
    pub store: String,
}

#[derive(Serialize)]
pub struct RecommendView {
    pub name: String,
    /// The proposal's canonical text.
    pub text: String,
    /// In the policy's rule order.
    pub rules: Vec<RuleView>,
    /// Risky and unknown flows deliberately not allowed, largest first.
    pub left_out: Vec<LeftOut>,
    pub coverage: CoverageMap,
    /// Observed conversations naming neither TCP nor UDP, a device not in the list, or an
    /// address that does not parse: counted, not used.
    pub skipped: u64,
    pub observed: ObservedView,
    /// The text checked like `POST /api/v1/policy/validate`.
    pub validation: ValidationView,
    /// The draft id when stored.
    pub draft: Option<u64>,
}

#[derive(Serialize)]
pub struct CoverageMap {
    pub required: CoverageView,
    pub acceptable: CoverageView,
}

/// What a conversation end is: a device of the inventory, or an address.
struct Ends {
    by_ip: HashMap<IpAddr, MacAddr>,
    records: HashMap<MacAddr, Arc<DeviceRecord>>,
}

impl Ends {
    fn new(records: &[Arc<DeviceRecord>]) -> Self {
        let mut by_ip = HashMap::new();
        // Records are in MAC order: an address two records claim goes to the first.
        for r in records {
            for ip in r.ips.keys() {
                by_ip.entry(ip).or_insert(r.mac);
            }
        }
        Ends { by_ip, records: records.iter().map(|r| (r.mac, r.clone())).collect() }
    }

    /// The device holding `ip`; else the device with MAC `mac` if it has no address at all
    /// (a MAC with addresses that are not `ip` is a router fronting a remote address).
    fn resolve(&self, mac: &str, ip: &str) -> Option<ObservedEnd> {
        let ip: IpAddr = ip.parse().ok()?;
        if let Some(m) = self.by_ip.get(&ip) {
            return Some(ObservedEnd::Device(*m));
        }
        let device = mac.parse::<MacAddr>().ok().and_then(|m| self.records.get(&m));
        Some(match device {
            Some(r) if r.ips.is_empty() => ObservedEnd::Device(r.mac),
            _ => ObservedEnd::Address { ip, domain: None },
        })
    }
}

/// Label and convert the conversations into the recommender's input. Conversations whose
/// addresses do not parse are counted in the second value.
pub fn observed_flows(
    kb: &KnowledgeBase,
    records: &[Arc<DeviceRecord>],
    conversations: &[Conversation],
) -> (Vec<ObservedFlow>, u64) {
    let ends = Ends::new(records);
    let mut classes: HashMap<MacAddr, Classification> = HashMap::new();
    let mut class_of = |end: &ObservedEnd| -> Option<Classification> {
        let ObservedEnd::Device(mac) = end else { return None };
        let record = ends.records.get(mac)?;
        Some(classes.entry(*mac).or_insert_with(|| classify_record(kb, record)).clone())
    };
    let mut out = Vec::with_capacity(conversations.len());
    let mut unreadable = 0;
    for c in conversations {
        let (Some(src), Some(dst)) =
            (ends.resolve(&c.client_mac, &c.client_ip), ends.resolve(&c.server_mac, &c.server_ip))
        else {
            unreadable += 1;
            continue;
        };
        let transport = Transport::from_ip_proto(c.ip_proto).unwrap_or(Transport::Any);
        let external = |end: &ObservedEnd| matches!(end, ObservedEnd::Address { ip, .. } if is_external(ip));
        let (src_class, dst_class) = (class_of(&src), class_of(&dst));
        let context = match (&src_class, &dst_class) {
            _ if transport == Transport::Any => None,
            (Some(s), peer) => {
                let spec =
                    FlowSpec { transport, port: c.port, direction: Direction::Outbound, peer_external: external(&dst) };
                Some(flow_context(kb, s, peer.as_ref(), &spec))
            }
            // Opened from outside the inventory: judged from the server's side.
            (None, Some(d)) => {
                let spec =
                    FlowSpec { transport, port: c.port, direction: Direction::Inbound, peer_external: external(&src) };
                Some(flow_context(kb, d, None, &spec))
            }
            (None, None) => None,
        };
        let (tag, comm, reason) = match context {
            Some(x) => (x.tag, x.comm, x.reason),
            None => (FlowTag::Unknown, None, "unknown: neither end is a device of the inventory".to_string()),
        };
        out.push(ObservedFlow {
            src,
            dst,
            transport,
            port: c.port,
            app: Some(c.app.to_ascii_lowercase()).filter(|a| !a.is_empty() && a != "unknown"),
            count: c.flows,
            first_seen: c.first_seen_us / 1_000_000,
            last_seen: c.last_seen_us / 1_000_000,
            context: tag,
            comm,
            reason,
        });
    }
    (out, unreadable)
}

/// The proposal for the flows of `[from_us, to_us)` and the conversations it came from.
pub async fn recommend(
    q: &QueryService,
    store: &FlowStore,
    name: &str,
    from_us: u64,
    to_us: u64,
) -> Result<(engine::Recommendation, Conversations, Vec<PolicyDevice>), PolicyApiError> {
    let conversations = aggregates::conversations(store, from_us, to_us, MAX_CONVERSATIONS).await.map_err(|e| {
        err(StatusCode::SERVICE_UNAVAILABLE, format!("the flow store cannot answer: {e}. Retry once it is back"))
    })?;
    let records = q.raft().read_state(resolve::records).await;
    let kb = q.kb().clone();
    let devices = resolve::policy_devices(&records, &kb, &resolve::date_of(now_ms()));
    let (observed, unreadable) = observed_flows(&kb, &records, &conversations.rows);
    let mut rec = engine::recommend(&kb, &devices, &observed, name);
    rec.skipped += unreadable;
    Ok((rec, conversations, devices))
}

fn rule_view(p: &engine::ProposedRule) -> RuleView {
    let r = &p.rule;
    RuleView {
        name: r.name.clone(),
        action: r.action.to_string(),
        from: r.from.iter().map(|e| e.to_string()).collect(),
        to: r.to.iter().map(|e| e.to_string()).collect(),
        protocol: r.protocol,
        ports: r.ports.iter().map(|p| p.to_string()).collect(),
        app: r.app.clone(),
        justification: p.justification.clone(),
    }
}

pub(super) async fn handler(
    State(q): State<Arc<QueryService>>,
    principal: Option<Extension<Principal>>,
    pending: Option<Extension<PendingAudit>>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, PolicyApiError> {
    let b: RecommendBody = json_body(
        bytes,
        "{\"name\"?: \"...\", \"from_us\"?: N, \"to_us\"?: N, \"save_draft\"?: true, \"note\"?: \"...\"}",
    )?;
    let name = b.name.unwrap_or_else(|| "recommended".to_string());
    if name.trim().is_empty() || name.len() > 200 {
        return Err(err(StatusCode::BAD_REQUEST, "\"name\" must be 1 to 200 characters"));
    }
    let (from_us, to_us) = (b.from_us.unwrap_or(0), b.to_us.unwrap_or(u64::MAX));
    if from_us >= to_us {
        return Err(err(StatusCode::BAD_REQUEST, format!("from_us {from_us} is not before to_us {to_us}")));
    }
    let store = q.flow_store().cloned().ok_or_else(|| {
        err(StatusCode::SERVICE_UNAVAILABLE, "this node has no flow store to read observed flows from")
    })?;
    let (rec, conversations, _) = recommend(&q, &store, &name, from_us, to_us).await?;
    let text = rec.policy.to_canonical();
    let validation = check(&q, &text).await.view;
    let detail = format!(
        "recommended a policy: {} rule(s), {} left out, from {} conversation(s)",
        rec.rules.len(),
        rec.left_out.len(),
        conversations.rows.len()
    );
    let mut view = RecommendView {
        name,
        rules: rec.rules.iter().map(rule_view).collect(),
        left_out: rec.left_out,
        coverage: CoverageMap { required: rec.required.into(), acceptable: rec.acceptable.into() },
        skipped: rec.skipped,
        observed: ObservedView {
            conversations: conversations.rows.len(),
            flows: conversations.rows.iter().map(|c| c.flows).sum(),
            truncated: conversations.truncated,
            from_us,
            to_us,
            store: store.describe(),
        },
        validation,
        draft: None,
        text,
    };
    if !b.save_draft {
        let mut resp = Json(view).into_response();
        resp.extensions_mut().insert(AuditDetail(detail));
        return Ok(resp);
    }
    if view.text.len() > MAX_POLICY_BYTES {
        return Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the proposal is {} bytes, more than a draft holds ({MAX_POLICY_BYTES})", view.text.len()),
        ));
    }
    let by = who(&principal);
    let draft =
        DraftRule { id: 0, alert: None, author: by.clone(), at_ms: now_ms(), toml: view.text.clone(), note: b.note };
    let detail = format!("{detail}; stored as a draft");
    let (applied, audited) =
        propose_audited(&q, pending, Command::PolicyAddDraft(draft), StatusCode::OK, &detail).await?;
    if !applied {
        return Ok(super::api::marked(
            err(StatusCode::CONFLICT, "the draft area is full; delete drafts with DELETE /api/v1/policy/drafts/{id}"),
            detail,
            audited,
        ));
    }
    let text = view.text.clone();
    view.draft = q
        .raft()
        .read_state(move |s| {
            s.policy()
                .drafts()
                .values()
                .rev()
                .find(|d| d.author == by && d.alert.is_none() && d.toml == text)
                .map(|d| d.id)
        })
        .await;
    Ok(super::api::marked(Json(view), detail, audited))
}
