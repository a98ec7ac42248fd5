//! cargo fuzz run vendor — Vendor protocol recognition; the first 5 bytes pick transport and ports.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::Transport;

mod common;
use common::ctx;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let transport = if data[0] & 1 == 0 { Transport::Tcp } else { Transport::Udp };
    let ports = [3613u16, 24105, 6464, 2000, 7000, 104, 2762];
    let c = ctx(transport, u16::from_be_bytes([data[1], data[2]]), ports[data[3] as usize % ports.len()]);
    if let Some(rec) = wardline_sensor::dissect::vendor::parse(&c, &data[5..]) {
        let mut out = Vec::new();
        wardline_sensor::dissect::vendor::findings(&rec, &c, &mut out);
    }
    // The whole registry on the same context: dispatch must never panic either.
    let reg = wardline_sensor::dissect::registry();
    let _ = wardline_sensor::dissect::dissect(&reg, &c, &data[5..]);
});
