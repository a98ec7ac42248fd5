//! cargo fuzz run dicom — DICOM upper-layer PDUs, the reassembly length helper and findings.
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
    let _ = wardline_sensor::dissect::dicom::pdu_len(data);
    if let Ok(rec) = wardline_sensor::dissect::dicom::parse(data) {
        let mut out = Vec::new();
        wardline_sensor::dissect::dicom::findings(&rec, &ctx(Transport::Tcp, 40000, 104), &mut out);
    }
});
