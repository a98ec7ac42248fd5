//! Alerts end to end (decision 0024): every node of a Raft cluster holds the same alerts at
//! the same applied index; triage needs the analyst role and is audited; alert events reach
//! a real rsyslog as RFC 5424 messages with CEF or JSON bodies, once each, across a change
//! of forwarder.

#[path = "../raft_support/mod.rs"]
mod raft_support;

mod api_auth;
mod detector_settings;
mod replicated;
mod rsyslog;
mod sensor_silence;

use ulid::Ulid;
use wardline_aggregator::state::anomaly::{AnomalyConfig, ClinicalVlan};
use wardline_aggregator::state::{BatchSummary, Command, IngestBatch};
use wardline_common::{DeviceObservation, Field, FlowRecord, MacAddr, Proto};

pub const HOUR_US: u64 = 3_600_000_000;
pub const T0_US: u64 = 1_767_225_600_000_000;
pub const PUMP: MacAddr = MacAddr([0x00, 0x09, 0xfb, 0x10, 0x00, 0x01]);
pub const SERVER: MacAddr = MacAddr([0x00, 0x15, 0x5d, 0x10, 0x00, 0x02]);
pub const ROUTER: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x01]);

/// Detector settings: learning for `learning_us`, VLAN 40 clinical at site "ward".
pub fn settings(learning_us: u64) -> Command {
    Command::SetAnomalyConfig(AnomalyConfig {
        learning_us,
        clinical_vlans: vec![ClinicalVlan { site: Some("ward".into()), vlan: 40 }],
    })
}

pub fn device(mac: MacAddr, ip: &str, ts: u64, evidence: &[(Field, &str)]) -> DeviceObservation {
    raft_support::device_on_vlan_40(mac, ip, ts, Proto::Telnet, evidence)
}

pub fn flow(a: (MacAddr, &str), b: (MacAddr, &str), port: u16, ts: u64) -> FlowRecord {
    raft_support::tcp_flow_on_vlan_40(a, b, port, ts)
}

/// One batch from sensor `ward-1` at `site` as group commit proposes it.
pub fn batch(site: &str, seq: u64, devices: Vec<DeviceObservation>, flows: Vec<FlowRecord>) -> Command {
    let mut summary = BatchSummary::empty(Ulid::from_parts(seq, 42), "ward-1".into(), site.into(), seq);
    summary.devices = devices;
    summary.flow_count = flows.len() as u64;
    Command::ApplyBatches(vec![IngestBatch { summary, flows }])
}

/// A day of learning, then a pump that opens telnet, talks to a new peer and the Internet,
/// and shows up at another site: five alerts (and the newcomer on VLAN 40: six).
pub fn scenario() -> Vec<Command> {
    let pump = |ts, ev: &[(Field, &str)]| device(PUMP, "10.0.40.5", ts, ev);
    let server = |ts| device(SERVER, "10.0.40.9", ts, &[]);
    let usual = |ts| flow((PUMP, "10.0.40.5"), (SERVER, "10.0.40.9"), 2575, ts);
    let later = T0_US + 25 * HOUR_US;
    vec![
        settings(24 * HOUR_US),
        batch("ward", 1, vec![pump(T0_US, &[(Field::ListeningPort, "tcp/3613")]), server(T0_US)], vec![usual(T0_US)]),
        batch(
            "ward",
            2,
            vec![pump(later, &[(Field::CleartextLogin, "telnet")]), server(later)],
            vec![
                usual(later),
                flow((PUMP, "10.0.40.5"), (SERVER, "10.0.40.9"), 23, later),
                flow((PUMP, "10.0.40.5"), (ROUTER, "93.184.216.34"), 443, later),
            ],
        ),
        batch(
            "ward",
            3,
            vec![device(MacAddr([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01]), "10.0.40.99", later + 10, &[])],
            vec![],
        ),
        batch("clinic", 4, vec![pump(later + 20, &[])], vec![]),
    ]
}
