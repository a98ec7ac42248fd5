//! What the API returns, one type per answer. Field names and nesting are the API's
//! contract (docs/api.md); the chaos tests read them.

use super::devices::DeviceSnapshot;
use crate::ingest::IngestStatsSnapshot;
use crate::sink::{FlowRow, FlowTotals};
use crate::state::spool_losses::{EpochTotals, SensorLosses};
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
    /// Why the Raft core stopped (only with status "raft-stopped").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/v1/inventory`.
#[derive(Clone, Debug, Serialize)]
pub struct InventoryView {
    pub count: usize,
    pub devices: Vec<DeviceView>,
}

/// One device (`GET /api/v1/devices/{id}`): the merged record plus what is derived from it.
/// A MAC device includes the routed pieces attributed to it by address bindings; an
/// IP-keyed device holds what no binding attributes to a MAC.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceView {
    /// The device id the API accepts: the MAC, or `site:ip` / `site:ip@vlan`.
    pub id: String,
    /// `mac` or `ip`: what the device is keyed by.
    pub key: &'static str,
    /// The MAC (`null` for an IP-keyed device).
    pub mac: Option<String>,
    /// Site, address and VLAN of an IP-keyed device.
    pub host: Option<HostKeyView>,
    /// The MAC is locally administered (randomized or virtual): it may change, and it
    /// names no vendor.
    pub locally_administered: bool,
    /// IEEE registry organisation of the MAC's OUI.
    pub vendor: Option<String>,
    pub hostname: Option<String>,
    pub ips: Vec<IpAddr>,
    pub vlans: Vec<u16>,
    pub sites: Vec<String>,
    pub sensors: Vec<String>,
    /// Per sensor and segment: how it saw the device and when.
    pub seen_by: Vec<SightingView>,
    /// Other MAC records of the same physical device, by an unambiguous strong identifier
    /// (decision 0013). Linked, never merged.
    pub same_device_as: Vec<IdentityLinkView>,
    /// Strong identifiers this device holds that are shared too widely to link anything.
    pub ambiguous_identifiers: Vec<IdentifierView>,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub packets: u64,
    pub bytes: u64,
    pub dhcp_vendor_class: Option<String>,
    /// What the knowledge base makes of the evidence, every attribute explained.
    pub classification: Classification,
    pub evidence: Vec<EvidenceView>,
    /// Distinct evidence entries not kept because a record was full.
    pub evidence_dropped: u64,
    /// Home site of a MAC device — the only site whose sensors change its attributes — and
    /// what other sites' sensors reported against it and was withheld (decision 0037);
    /// present only when something was withheld or the device moved home, so other views
    /// read the same as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home: Option<crate::state::home::DeviceHome>,
}

/// The key of an IP-keyed device.
#[derive(Clone, Debug, Serialize)]
pub struct HostKeyView {
    pub site: String,
    pub ip: IpAddr,
    pub vlan: Option<u16>,
}

/// One sensor's sighting of a device on one segment.
#[derive(Clone, Debug, Serialize)]
pub struct SightingView {
    pub sensor: String,
    pub site: String,
    /// The sensor's segment (VLAN, `null` untagged) where it saw the device's packets.
    pub vlan: Option<u16>,
    /// `segment`: on the sensor's own segment, by its MAC. `routed`: only by address,
    /// behind a router (`via_mac`) or on a link without MACs.
    pub how: &'static str,
    pub via_mac: Option<String>,
    /// The address a routed sighting was keyed by.
    pub ip: Option<IpAddr>,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
}

/// A link to another record of the same physical device.
#[derive(Clone, Debug, Serialize)]
pub struct IdentityLinkView {
    pub mac: String,
    /// The strong identifier both hold.
    pub field: Field,
    pub value: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdentifierView {
    pub field: Field,
    pub value: String,
}

/// `GET /api/v1/devices/{id}/history`.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryView {
    pub id: String,
    pub count: usize,
    /// Oldest first.
    pub events: Vec<HistoryEvent>,
    /// Events not shown: beyond the answer's bound, or never kept because a bound on the
    /// device's records (segments, addresses, routed sightings, binding spans) was full.
    pub dropped: u64,
    /// Which of those bounds dropped something.
    pub dropped_from: Vec<&'static str>,
    /// The quiet time after which a sighting counts as a disconnection.
    pub disconnected_after_us: u64,
}

/// What happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    /// First packet of a sighting (sensor, segment).
    #[default]
    Connected,
    /// Last packet of a sighting that went quiet while its sensor kept reporting.
    Disconnected,
    /// The device was bound to an address (ARP, DHCP ACK, NDP).
    IpBound,
    /// An address the device held was bound to another MAC (`mac`).
    IpMoved,
    /// An address seen in use with no binding.
    IpSeen,
    /// An IP-keyed device's address was bound to a MAC.
    BoundToMac,
    /// Seen on another VLAN of the same site (`from_vlan` → `vlan`).
    VlanChanged,
    /// Seen at another site (`from_site` → `site`).
    SiteMoved,
}

/// One history event; fields that do not apply to its kind are omitted.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct HistoryEvent {
    /// Packet time, µs since the epoch.
    pub at_us: u64,
    pub kind: HistoryKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_vlan: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The other MAC (`ip_moved`: the new owner; `bound_to_mac`: the owner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Binding source: `arp`, `dhcpack` or `ndp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
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
    /// The view of `snapshot`, whose merged record is `record`.
    pub fn new(snapshot: &DeviceSnapshot, record: &DeviceRecord, classification: Classification) -> Self {
        let mac = snapshot.mac();
        DeviceView {
            classification,
            id: snapshot.id.to_string(),
            key: if mac.is_some() { "mac" } else { "ip" },
            mac: mac.map(|m| m.to_string()),
            host: snapshot.host_key(),
            locally_administered: mac.is_some_and(|m| m.is_local()),
            vendor: mac.and_then(|m| wardline_intel::oui::lookup(&m)).map(str::to_string),
            hostname: record.hostname().map(str::to_string),
            ips: record.ips.keys().collect(),
            vlans: record.vlans.iter().copied().collect(),
            sites: record.sites.iter().cloned().collect(),
            sensors: record.sensors.iter().cloned().collect(),
            seen_by: snapshot.sightings(),
            same_device_as: snapshot.links(),
            ambiguous_identifiers: snapshot
                .ambiguous
                .iter()
                .map(|(field, value)| IdentifierView { field: *field, value: value.clone() })
                .collect(),
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
            evidence_dropped: record.evidence_dropped,
            home: snapshot
                .home
                .as_ref()
                .filter(|h| !h.foreign.is_empty() || h.rehomed > 0 || h.foreign_dropped > 0)
                .cloned(),
        }
    }
}

/// `GET /api/v1/devices/{id}/flows`: the device's class and its newest flows in context.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceFlowsView {
    pub class: String,
    pub count: usize,
    pub flows: Vec<FlowInContext>,
    /// The device id (MAC, or `site:ip[@vlan]`).
    pub id: String,
    /// `null` for an IP-keyed device.
    pub mac: Option<String>,
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
    /// Flow rows committed but not yet in the flow store (decision 0016).
    pub outbox: crate::outbox::OutboxView,
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
    /// Each sensor's latest recorded heartbeat (replicated; decision 0038), by sensor id.
    /// Sensors that never sent one (older versions) are absent.
    pub health: BTreeMap<String, crate::state::sensor_health::SensorHealthView>,
    /// What each sensor's spool gave up while it could not deliver, summed over its spool
    /// epochs (decision 0045); only sensors that reported a loss or roll-up. The detail is
    /// at `GET /api/v1/sensors/{id}/losses`.
    pub spool_losses: BTreeMap<String, EpochTotals>,
    /// Spool epochs of the sensors whose epoch the cluster recorded (a sensor first seen with
    /// one, or one that changed epoch), by sensor id (decision 0036). Apart from `sensors` so a
    /// sensor's record reads the same on nodes of the previous version during an upgrade.
    pub sensor_epochs: BTreeMap<String, crate::state::epochs::EpochRecord>,
    /// Epoch changes and refusals of all sensors (decision 0036).
    pub epochs: SensorEpochTotals,
    /// Per sensor: sightings it reported of devices homed at another site that contradicted
    /// their identity and were withheld (decision 0037); sensors with none are left out.
    pub foreign_observations: BTreeMap<String, u64>,
}

/// `GET /api/v1/sensors/{id}/losses`: what the sensor's spool gave up (decision 0045).
#[derive(Clone, Debug, Serialize)]
pub struct SensorLossesView {
    pub sensor_id: String,
    /// Summed over the epochs kept (`epoch` is the latest one's).
    pub total: EpochTotals,
    /// Per spool epoch and the individual losses (oldest first, bounded; drops counted).
    #[serde(flatten)]
    pub account: SensorLosses,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SensorEpochTotals {
    pub changes: u64,
    pub stale_refused: u64,
    pub jumps_refused: u64,
    /// Retired epochs beyond the 16 kept per sensor, no longer listed.
    pub retired_forgotten: u64,
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
    /// The flow outbox as this node last saw it (decision 0016); here too because
    /// `/api/v1/flows/totals` answers 503 while the flow store is down.
    pub outbox: crate::outbox::OutboxView,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    pub addr: String,
    pub id: u64,
    /// False for a learner (receives the log, does not vote).
    pub voter: bool,
}
