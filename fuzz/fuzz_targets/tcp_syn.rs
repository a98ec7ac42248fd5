//! cargo fuzz run tcp_syn — p0f-style SYN signature from a TCP header; byte 0 is the TTL, byte 1 picks IPv4/IPv6.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_common::MacAddr;
use wardline_sensor::dissect::{PacketCtx, Transport};

#[allow(dead_code)]
fn ctx(transport: Transport, src_port: u16, dst_port: u16) -> PacketCtx {
    PacketCtx {
        ts_us: 0,
        src_mac: MacAddr([0; 6]),
        dst_mac: MacAddr([0; 6]),
        vlan: None,
        src_ip: None,
        dst_ip: None,
        src_port,
        dst_port,
        transport,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let _ = wardline_sensor::dissect::tcp_syn::syn_signature(data[0], if data[1] & 1 == 0 { 4 } else { 6 }, &data[2..]);
});
