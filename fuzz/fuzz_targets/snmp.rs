//! Fuzz the snmp dissector: arbitrary bytes must never panic (errors are fine).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::snmp;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = snmp::parse(data) {
        let mut out = Vec::new();
        snmp::findings(&rec, &mut out);
    }
});
