//! Fuzz the netbios dissector: arbitrary bytes must never panic (errors are fine).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::netbios;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = netbios::parse(data) {
        let mut out = Vec::new();
        netbios::findings(&rec, &mut out);
    }
});
