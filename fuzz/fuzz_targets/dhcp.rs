//! cargo fuzz run dhcp — DHCPv4 parsing (options, overload, relay info) and findings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_common::MacAddr;
use wardline_sensor::dissect::{dhcp, PacketCtx, Transport};

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = dhcp::parse(data) {
        let ctx = PacketCtx {
            ts_us: 0,
            src_mac: MacAddr([0, 1, 2, 3, 4, 5]),
            dst_mac: MacAddr::BROADCAST,
            vlan: None,
            src_ip: None,
            dst_ip: None,
            src_port: 68,
            dst_port: 67,
            transport: Transport::Udp,
        };
        let mut out = Vec::new();
        dhcp::findings(&rec, &ctx, &mut out);
    }
    let _ = dhcp::ack_binding(data);
});
