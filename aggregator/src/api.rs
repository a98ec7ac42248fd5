//! HTTP API (axum on tower): inventory, flows, sensors and cluster status as JSON.
//! Raft RPC between nodes is merged into the same listener under /raft.

use crate::node::Node;
use crate::sink::{FlowQuery, FlowRow, SinkError};
use crate::state::DeviceRecord;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use wardline_intel::{flow_context, Classification, FlowContext, FlowSpec};
use wardline_common::FlowRecord;
use wardline_common::{Field, MacAddr};

pub fn router(node: Arc<Node>) -> Router {
    let api = Router::new()
        .route("/healthz", get(health))
        .route("/api/v1/inventory", get(inventory))
        .route("/api/v1/devices/{mac}", get(device))
        .route("/api/v1/devices/{mac}/flows", get(device_flows))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/flows/totals", get(flow_totals))
        .route("/api/v1/sensors", get(sensors))
        .route("/api/v1/cluster", get(cluster))
        .fallback(not_found)
        .with_state(node.clone());
    api.merge(crate::raft::network::router(node.raft.clone()))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// An API error: a status and a message that tells the caller what to change.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint; see docs/api.md for the list".into())
}

async fn health(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let m = node.raft.metrics();
    Json(json!({ "status": "ok", "node_id": node.config.node_id, "leader": m.current_leader }))
}

/// One device as the API shows it: the merged record plus what is derived from it.
#[derive(Serialize)]
pub struct DeviceView {
    pub mac: String,
    pub vendor: Option<String>,
    pub hostname: Option<String>,
    pub ips: Vec<IpAddr>,
    pub vlans: Vec<u16>,
    pub sites: Vec<String>,
    pub sensors: Vec<String>,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub packets: u64,
    pub bytes: u64,
    pub dhcp_vendor_class: Option<String>,
    /// What the knowledge base makes of the evidence, every attribute explained.
    pub classification: Classification,
    pub evidence: Vec<EvidenceView>,
}

#[derive(Serialize)]
pub struct EvidenceView {
    pub field: Field,
    pub value: String,
    pub proto: String,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub count: u64,
}

impl DeviceView {
    pub fn from_record(node: &Node, r: &DeviceRecord) -> Self {
        DeviceView {
            classification: node.classify(r),
            mac: r.mac.to_string(),
            vendor: wardline_intel::oui::lookup(&r.mac).map(str::to_string),
            hostname: r.hostname().map(str::to_string),
            ips: r.ips.keys().copied().collect(),
            vlans: r.vlans.iter().copied().collect(),
            sites: r.sites.iter().cloned().collect(),
            sensors: r.sensors.iter().cloned().collect(),
            first_seen_us: r.first_seen_us,
            last_seen_us: r.last_seen_us,
            packets: r.packets,
            bytes: r.bytes,
            dhcp_vendor_class: r.values(Field::DhcpVendorClass).last().map(|s| s.to_string()),
            evidence: r
                .evidence
                .iter()
                .map(|((field, value), seen)| EvidenceView {
                    field: *field,
                    value: value.clone(),
                    proto: seen.proto.to_string(),
                    first_seen_us: seen.first_ts_us,
                    last_seen_us: seen.last_ts_us,
                    count: seen.count,
                })
                .collect(),
        }
    }
}

async fn inventory(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let devices: Vec<DeviceView> = node
        .raft
        .read_state(|s| s.devices.values().map(|r| DeviceView::from_record(&node, r)).collect())
        .await;
    Json(json!({ "count": devices.len(), "devices": devices }))
}

async fn device(State(node): State<Arc<Node>>, Path(mac): Path<String>) -> ApiResult<DeviceView> {
    let mac: MacAddr = mac.parse().map_err(|e: wardline_common::net::MacParseError| {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    })?;
    node.raft
        .read_state(|s| s.devices.get(&mac).map(|r| DeviceView::from_record(&node, r)))
        .await
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no device with MAC {mac} in the inventory")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFlowParams {
    limit: Option<u32>,
}

/// One flow of a device with its clinical context: required / acceptable / risky / unknown
/// for the device's class, and why.
#[derive(Serialize)]
struct FlowInContext {
    flow: FlowRow,
    peer_mac: Option<String>,
    peer_class: Option<String>,
    context: Option<FlowContext>,
}

fn row_to_record(r: &FlowRow, device: &DeviceRecord) -> Option<FlowRecord> {
    let a_ip: IpAddr = r.a_ip.parse().ok()?;
    let b_ip: IpAddr = r.b_ip.parse().ok()?;
    let mut a_mac: MacAddr = r.a_mac.parse().ok()?;
    let mut b_mac: MacAddr = r.b_mac.parse().ok()?;
    // A routed flow carries the router's MAC: put the device on its side by address.
    if device.ips.contains_key(&a_ip) {
        a_mac = device.mac;
    } else if device.ips.contains_key(&b_ip) {
        b_mac = device.mac;
    }
    Some(FlowRecord {
        ip_proto: r.ip_proto,
        vlan: r.vlan,
        a_mac,
        b_mac,
        a_ip,
        b_ip,
        a_port: r.a_port,
        b_port: r.b_port,
        first_seen_us: r.first_seen_us,
        last_seen_us: r.last_seen_us,
        packets_ab: r.packets_ab,
        packets_ba: r.packets_ba,
        bytes_ab: r.bytes_ab,
        bytes_ba: r.bytes_ba,
        tcp_flags_ab: r.tcp_flags_ab,
        tcp_flags_ba: r.tcp_flags_ba,
        app: r.app.clone().into(),
        end_reason: r.end_reason.clone().into(),
    })
}

async fn device_flows(
    State(node): State<Arc<Node>>,
    Path(mac): Path<String>,
    params: Result<Query<DeviceFlowParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<serde_json::Value> {
    let Query(p) = params.map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e}; accepted parameter: limit")))?;
    let mac: MacAddr = mac.parse().map_err(|e: wardline_common::net::MacParseError| {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    })?;
    let device = node
        .raft
        .read_state(|s| s.devices.get(&mac).cloned())
        .await
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no device with MAC {mac} in the inventory")))?;
    // Flows name the device by MAC on its own segment and by address when routed.
    let mut rows: Vec<FlowRow> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut queries = vec![FlowQuery { mac: Some(mac.to_string()), limit: p.limit, ..Default::default() }];
    queries.extend(device.ips.keys().map(|ip| FlowQuery { ip: Some(ip.to_string()), limit: p.limit, ..Default::default() }));
    for q in &queries {
        for r in node.sink.query_flows(q).await.map_err(sink_error)? {
            if seen.insert((r.batch_id.clone(), r.idx)) {
                rows.push(r);
            }
        }
    }
    rows.sort_by(|a, b| b.last_seen_us.cmp(&a.last_seen_us));
    rows.truncate(p.limit.unwrap_or(100) as usize);
    let class = node.classify(&device);
    let out: Vec<FlowInContext> = node
        .raft
        .read_state(|s| {
            rows.into_iter()
                .map(|row| {
                    let rec = row_to_record(&row, &device);
                    let peer = rec.as_ref().and_then(|rec| {
                        let (peer_mac, peer_ip) =
                            if rec.a_mac == device.mac { (rec.b_mac, rec.b_ip) } else { (rec.a_mac, rec.a_ip) };
                        s.devices
                            .values()
                            .find(|d| d.ips.contains_key(&peer_ip))
                            .or_else(|| s.devices.get(&peer_mac))
                    });
                    let peer_class = peer.map(|d| node.classify(d));
                    let context = rec.as_ref().and_then(|rec| {
                        FlowSpec::from_record(rec, &device.mac)
                            .map(|spec| flow_context(&node.kb, &class, peer_class.as_ref(), &spec))
                    });
                    FlowInContext {
                        peer_mac: peer.map(|d| d.mac.to_string()),
                        peer_class: peer_class.map(|c| c.class.value),
                        context,
                        flow: row,
                    }
                })
                .collect()
        })
        .await;
    Ok(Json(json!({ "mac": mac.to_string(), "class": class.class.value, "count": out.len(), "flows": out })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowParams {
    mac: Option<String>,
    ip: Option<String>,
    sensor: Option<String>,
    app: Option<String>,
    limit: Option<u32>,
}

fn sink_error(e: SinkError) -> ApiError {
    match e {
        SinkError::InvalidQuery(m) => ApiError(StatusCode::BAD_REQUEST, m),
        other => ApiError(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

async fn flows(
    State(node): State<Arc<Node>>,
    params: Result<Query<FlowParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<serde_json::Value> {
    let Query(p) = params.map_err(|e| {
        ApiError(StatusCode::BAD_REQUEST, format!("{e}; accepted parameters: mac, ip, sensor, app, limit"))
    })?;
    let q = FlowQuery { mac: p.mac, ip: p.ip, sensor_id: p.sensor, app: p.app, limit: p.limit };
    let rows = node.sink.query_flows(&q).await.map_err(sink_error)?;
    Ok(Json(json!({ "count": rows.len(), "flows": rows })))
}

async fn flow_totals(State(node): State<Arc<Node>>) -> ApiResult<serde_json::Value> {
    let t = node
        .sink
        .totals()
        .await
        .map_err(sink_error)?;
    let replicated = node
        .raft
        .read_state(|s| {
            s.sensors.values().fold((0u64, 0u64, 0u64), |acc, r| {
                (acc.0 + r.flows, acc.1 + r.flow_packets, acc.2 + r.flow_bytes)
            })
        })
        .await;
    Ok(Json(json!({
        "store": t,
        "replicated": { "flows": replicated.0, "packets": replicated.1, "bytes": replicated.2 },
    })))
}

async fn sensors(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let sensors = node
        .raft
        .read_state(|s| serde_json::to_value(&s.sensors).unwrap_or_default())
        .await;
    Json(json!({ "sensors": sensors, "ingest": node.ingest_stats.snapshot() }))
}

async fn cluster(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let m = node.raft.metrics();
    Json(json!({
        "node_id": node.config.node_id,
        "state": format!("{:?}", m.state),
        "current_term": m.current_term,
        "current_leader": m.current_leader,
        "last_applied": m.last_applied.map(|l| l.index),
        "membership": m.membership_config.membership().nodes().map(|(id, n)| json!({"id": id, "addr": n.addr})).collect::<Vec<_>>(),
    }))
}
