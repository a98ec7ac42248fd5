//! Vulnerability feeds and device risk served by a cluster (decision 0027): the real CISA
//! feeds from `$WARDLINE_VULNFEEDS` (default `<workspace>/../shared/vulnfeeds`, read at run
//! time, never copied) are imported through the API into a real two-node Raft cluster;
//! both nodes then answer the same risk, roll-ups and reports for a device whose evidence
//! names a product of the advisories.

#[path = "../raft_support/mod.rs"]
mod raft_support;

mod api_auth;
mod history;
mod replicated;
mod schedule;

use std::borrow::Cow;
use std::path::PathBuf;
use ulid::Ulid;
use wardline_aggregator::state::{BatchSummary, Command, IngestBatch};
use wardline_common::{DeviceObservation, Field, FlowRecord, MacAddr, Proto};

/// 2026-01-01T00:00:00Z in µs.
pub const T0_US: u64 = 1_767_225_600_000_000;
/// A BD Alaris PC unit 8015 (named by ICSMA-17-017-02, ICSMA-20-170-06, ICSMA-20-317-01).
pub const PUMP: MacAddr = MacAddr([0x00, 0xd0, 0x75, 0x10, 0x00, 0x01]);
pub const PUMP_IP: &str = "10.0.40.5";
pub const SERVER: MacAddr = MacAddr([0x00, 0x15, 0x5d, 0x10, 0x00, 0x02]);
pub const SERVER_IP: &str = "10.0.40.9";

pub fn feeds_dir() -> PathBuf {
    std::env::var_os("WARDLINE_VULNFEEDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vulnfeeds"))
}

pub fn kev_file() -> PathBuf {
    feeds_dir().join("known_exploited_vulnerabilities.json")
}

fn device(mac: MacAddr, ip: &str, ts: u64, evidence: &[(Field, &str)]) -> DeviceObservation {
    raft_support::device_on_vlan_40(mac, ip, ts, Proto::Dhcp, evidence)
}

/// The pump's telnet session to the server (a risky, cleartext flow).
pub fn telnet_flow(ts: u64) -> FlowRecord {
    FlowRecord {
        ip_proto: 6,
        vlan: Some(40),
        a_mac: PUMP,
        b_mac: SERVER,
        a_ip: PUMP_IP.parse().unwrap(),
        b_ip: SERVER_IP.parse().unwrap(),
        a_port: 49_152,
        b_port: 23,
        first_seen_us: ts,
        last_seen_us: ts + 5_000,
        packets_ab: 5,
        packets_ba: 4,
        bytes_ab: 700,
        bytes_ba: 500,
        tcp_flags_ab: 0x1b,
        tcp_flags_ba: 0x1b,
        app: Cow::Borrowed("telnet"),
        end_reason: Cow::Borrowed("fin"),
    }
}

/// A batch from sensor `ward-1` at site "ward" with the Alaris pump (its DHCP vendor class
/// and host name, as the sensor reports them) and a server.
pub fn pump_batch() -> Command {
    let pump = device(
        PUMP,
        PUMP_IP,
        T0_US,
        &[
            (Field::DhcpVendorClass, "CareFusion Alaris PCU 8015"),
            (Field::Hostname, "ALARIS-8015-0042"),
            (Field::ConnectsTo, "tcp/3613"),
        ],
    );
    let server = device(SERVER, SERVER_IP, T0_US, &[(Field::ListeningPort, "tcp/23")]);
    let mut summary = BatchSummary::empty(Ulid::from_parts(1, 42), "ward-1".into(), "ward".into(), 1);
    summary.devices = vec![pump, server];
    summary.flow_count = 1;
    Command::ApplyBatches(vec![IngestBatch { summary, flows: vec![telnet_flow(T0_US)] }])
}
