//! Fuzz the ssh dissector: arbitrary bytes must never panic (errors are fine).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::ssh;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = ssh::parse(data) {
        let mut out = Vec::new();
        ssh::findings(&rec, &mut out);
    }
});
