//! What the API returns, one type per answer. Field names and nesting are the API's
//! contract (docs/api.md); the chaos tests read them.

use crate::ingest::IngestStatsSnapshot;
use crate::sink::{FlowRow, FlowTotals};
use crate::state::{DeviceRecord, SensorRecord};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use wardline_common::Field;
use wardline_intel::{Classification, FlowContext};

/// `GET /healthz`.
#[derive(Clone, Debug, Serialize)]
pub struct HealthView {
    pub leader: Option<u64>,
    pub node_id: u64,
    pub status: &'static str,
}

/// `GET /api/v1/inventory`.
#[derive(Clone, Debug, Serialize)]
pub struct InventoryView {
    pub count: usize,
    pub devices: Vec<DeviceView>,
}

/// One device (`GET /api/v1/devices/{mac}`): the merged record plus what is derived from it.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceView {
    pub mac: String,
    /// IEEE registry organisation of the MAC's OUI.
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

#[derive(Clone, Debug, Serialize)]
pub struct EvidenceView {
    pub field: Field,
    pub value: String,
    pub proto: String,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub count: u64,
}

impl DeviceView {
    pub fn new(record: &DeviceRecord, classification: Classification) -> Self {
        DeviceView {
            classification,
            mac: record.mac.to_string(),
            vendor: wardline_intel::oui::lookup(&record.mac).map(str::to_string),
            hostname: record.hostname().map(str::to_string),
            ips: record.ips.keys().copied().collect(),
            vlans: record.vlans.iter().copied().collect(),
            sites: record.sites.iter().cloned().collect(),
            sensors: record.sensors.iter().cloned().collect(),
            first_seen_us: record.first_seen_us,
            last_seen_us: record.last_seen_us,
            packets: record.packets,
            bytes: record.bytes,
            dhcp_vendor_class: record.values(Field::DhcpVendorClass).last().map(|s| s.to_string()),
            evidence: record
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

/// `GET /api/v1/devices/{mac}/flows`: the device's class and its newest flows in context.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceFlowsView {
    pub class: String,
    pub count: usize,
    pub flows: Vec<FlowInContext>,
    pub mac: String,
}

/// One flow of a device with its clinical context: required / acceptable / risky / unknown
/// for the device's class, and why.
#[derive(Clone, Debug, Serialize)]
pub struct FlowInContext {
    pub flow: FlowRow,
    /// The device at the other end, found by address first, then by MAC.
    pub peer_mac: Option<String>,
    pub peer_class: Option<String>,
    /// `None` when the flow is neither TCP nor UDP, or its addresses do not parse.
    pub context: Option<FlowContext>,
}

/// `GET /api/v1/flows`.
#[derive(Clone, Debug, Serialize)]
pub struct FlowsView {
    pub count: usize,
    pub flows: Vec<FlowRow>,
}

/// `GET /api/v1/flows/totals`.
#[derive(Clone, Debug, Serialize)]
pub struct TotalsView {
    /// Counters carried through Raft (every node has the same once it applied the same index).
    pub replicated: ReplicatedFlowTotals,
    /// The flow store's deduplicated totals.
    pub store: FlowTotals,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplicatedFlowTotals {
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// `GET /api/v1/sensors`.
#[derive(Clone, Debug, Serialize)]
pub struct SensorsView {
    /// This node's own QUIC ingest counters (not replicated).
    pub ingest: IngestStatsSnapshot,
    /// Replicated per-sensor records, by sensor id.
    pub sensors: BTreeMap<String, SensorRecord>,
}

/// `GET /api/v1/cluster`: this node's view of Raft.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterView {
    pub current_leader: Option<u64>,
    pub current_term: u64,
    pub last_applied: Option<u64>,
    pub membership: Vec<MemberView>,
    pub node_id: u64,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    pub addr: String,
    pub id: u64,
    /// False for a learner (receives the log, does not vote).
    pub voter: bool,
}
