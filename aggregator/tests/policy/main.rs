//! Segmentation policy in the aggregator (issue 12, decision 0025): versions in the
//! replicated state with refusals that leave nothing half-applied, monitor-mode evaluation
//! of every applied flow into deduplicated policy-violation alerts, the same on every
//! replica and after a snapshot, and the API / CLI with roles and audit.

#[path = "../raft_support/mod.rs"]
mod raft_support;

mod api;
mod blast;
mod cli;
mod export;
mod history;
mod kernel;
mod monitor;
mod recommend;
mod refresh;
mod replay;
mod replay_bench;
mod replicas;
mod tags;
mod versions;

use ulid::Ulid;
use wardline_aggregator::state::policy::{GroupMembers, PolicyProposal};
use wardline_aggregator::state::{BatchSummary, ClusterState, Command, IngestBatch};
use wardline_common::{DeviceObservation, FlowRecord, MacAddr};

pub const T0_US: u64 = 1_767_225_600_000_000;
pub const PUMP: MacAddr = MacAddr([0x00, 0x09, 0xfb, 0x10, 0x00, 0x01]);
pub const SERVER: MacAddr = MacAddr([0x00, 0x15, 0x5d, 0x10, 0x00, 0x02]);
pub const ROUTER: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x01]);
pub const PUMP_IP: &str = "10.0.40.5";
pub const SERVER_IP: &str = "10.0.40.9";

/// Pumps may reach the servers on 2575, nobody may use telnet, everything else is allowed.
pub const POLICY_V1: &str = r#"
[policy]
name = "ward"
default = "allow"

[[group]]
name = "pumps"
members = ["00:09:fb:10:00:01"]

[[group]]
name = "servers"
members = ["00:15:5d:10:00:02"]

[[rule]]
name = "pumps to servers"
from = ["pumps"]
to = ["servers"]
protocol = "tcp"
ports = [2575]
action = "allow"

[[rule]]
name = "no telnet"
from = ["any"]
to = ["any"]
protocol = "tcp"
ports = [23]
action = "deny"
"#;

/// v1 plus: pumps must not reach the Internet.
pub fn policy_v2() -> String {
    format!(
        "{POLICY_V1}\n[[rule]]\nname = \"pumps stay inside\"\nfrom = [\"pumps\"]\nto = [\"external\"]\nprotocol = \"any\"\naction = \"deny\"\n"
    )
}

pub fn canonical(text: &str) -> String {
    wardline_aggregator::state::policy::parse(text).unwrap().to_canonical()
}

/// The membership of the test policies (static members).
pub fn members() -> Vec<GroupMembers> {
    vec![
        GroupMembers { group: "pumps".into(), members: vec![PUMP] },
        GroupMembers { group: "servers".into(), members: vec![SERVER] },
    ]
}

pub fn proposal(base: Option<u64>, text: &str, message: &str) -> PolicyProposal {
    PolicyProposal {
        base,
        text: canonical(text),
        author: "op-admin".into(),
        message: message.into(),
        at_ms: 1_767_225_600_000,
        membership: members(),
        rollback_of: None,
    }
}

pub fn device(mac: MacAddr, ip: &str, ts: u64) -> DeviceObservation {
    raft_support::device_on_vlan_40(mac, ip, ts, wardline_common::Proto::Dhcp, &[])
}

pub fn flow(a: (MacAddr, &str), b: (MacAddr, &str), port: u16, ts: u64) -> FlowRecord {
    raft_support::tcp_flow_on_vlan_40(a, b, port, ts)
}

/// One batch from sensor `ward-1` at site `ward` as group commit proposes it.
pub fn batch(seq: u64, devices: Vec<DeviceObservation>, flows: Vec<FlowRecord>) -> Command {
    let mut summary = BatchSummary::empty(Ulid::from_parts(seq, 42), "ward-1".into(), "ward".into(), seq);
    summary.devices = devices;
    summary.flow_count = flows.len() as u64;
    Command::ApplyBatches(vec![IngestBatch { summary, flows }])
}

/// The pump and server, with: an allowed HL7 flow, two telnet sessions (one violation,
/// counted twice) and a flow to the Internet through the router (allowed by v1).
pub fn traffic(seq: u64, ts: u64) -> Command {
    let pump = (PUMP, PUMP_IP);
    let server = (SERVER, SERVER_IP);
    batch(
        seq,
        vec![device(PUMP, PUMP_IP, ts), device(SERVER, SERVER_IP, ts)],
        vec![
            flow(pump, server, 2575, ts),
            flow(pump, server, 23, ts + 10),
            flow(pump, server, 23, ts + 20),
            flow(pump, (ROUTER, "93.184.216.34"), 443, ts + 30),
        ],
    )
}

pub fn apply_all(state: &mut ClusterState, cmds: &[Command]) -> Vec<bool> {
    cmds.iter().map(|c| state.apply(c).applied).collect()
}
