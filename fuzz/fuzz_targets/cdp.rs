//! Fuzz the cdp dissector: arbitrary bytes must never panic (errors are fine).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::cdp;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = cdp::parse(data) {
        let mut out = Vec::new();
        cdp::findings(&rec, &mut out);
    }
});
