//! Flow records for the sink tests: deterministic, with distinct MACs, IPs, apps and times
//! so filters and ordering can be checked.

#![allow(dead_code)]

use wardline_common::net::MacAddr;
use wardline_common::FlowRecord;

pub const T0_US: u64 = 1_700_000_000_000_000;

/// `n` flows; flow `i` starts at `T0_US + i` seconds, so higher `i` is newer.
/// Every third flow is DICOM from the CT (MAC ..:01, 10.0.0.1) to the PACS; the rest are
/// HL7 from distinct hosts. IPv6 on every fifth flow.
pub fn flows(n: usize, salt: u8) -> Vec<FlowRecord> {
    (0..n)
        .map(|i| {
            let dicom = i % 3 == 0;
            let a_mac = if dicom {
                MacAddr([0, 0x1a, 0x2b, 0, 0, 1])
            } else {
                MacAddr([0, 0x1a, 0x2b, salt, (i >> 8) as u8, i as u8])
            };
            let a_ip: std::net::IpAddr = if dicom {
                "10.0.0.1".parse().unwrap()
            } else if i % 5 == 0 {
                format!("fd00::{salt:x}:{i:x}").parse().unwrap()
            } else {
                format!("10.{salt}.{}.{}", (i >> 8) as u8, i as u8).parse().unwrap()
            };
            let b_ip = if a_ip.is_ipv4() { "10.0.9.9".parse().unwrap() } else { "fd00::9:9".parse().unwrap() };
            FlowRecord {
                ip_proto: 6,
                vlan: if i % 2 == 0 { Some(20) } else { None },
                a_mac,
                b_mac: MacAddr([0, 0x50, 0x56, 0, 9, 9]),
                a_ip,
                b_ip,
                a_port: 40_000 + i as u16,
                b_port: if dicom { 104 } else { 2575 },
                first_seen_us: T0_US + (i as u64) * 1_000_000,
                last_seen_us: T0_US + (i as u64) * 1_000_000 + 500,
                packets_ab: 10 + i as u64,
                packets_ba: 8,
                bytes_ab: 1000 + i as u64,
                bytes_ba: 600,
                tcp_flags_ab: 0x1b,
                tcp_flags_ba: 0x1a,
                app: if dicom { "dicom".into() } else { "hl7".into() },
                end_reason: "fin".into(),
            }
        })
        .collect()
}

/// (packets, bytes) over `flows`, both directions.
pub fn sums(flows: &[FlowRecord]) -> (u64, u64) {
    flows.iter().fold((0, 0), |(p, b), f| (p + f.packets_ab + f.packets_ba, b + f.bytes_ab + f.bytes_ba))
}
