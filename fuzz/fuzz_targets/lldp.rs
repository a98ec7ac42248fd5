//! Fuzz the lldp dissector: arbitrary bytes must never panic (errors are fine).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::lldp;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = lldp::parse(data) {
        let mut out = Vec::new();
        lldp::findings(&rec, &mut out);
    }
});
