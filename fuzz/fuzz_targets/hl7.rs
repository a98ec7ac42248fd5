//! cargo fuzz run hl7 — HL7 v2 (MLLP and unframed) parsing and findings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::Transport;

mod common;
use common::ctx;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = wardline_sensor::dissect::hl7::parse(data) {
        let mut out = Vec::new();
        wardline_sensor::dissect::hl7::findings(&rec, &ctx(Transport::Tcp, 40000, 2575), &mut out);
        for m in &rec.messages {
            for id in &m.device_ids {
                let _ = wardline_sensor::dissect::hl7::eui64_oui(id);
            }
        }
    }
});
