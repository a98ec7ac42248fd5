//! Fuzz the ssdp dissector: arbitrary bytes must never panic (errors are fine).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::ssdp;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = ssdp::parse(data) {
        let mut out = Vec::new();
        ssdp::findings(&rec, &mut out);
    }
});
