//! Fuzz the http dissector: arbitrary bytes must never panic (errors are fine).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::http;

fuzz_target!(|data: &[u8]| {
    let _ = http::parse_stream(data);
    if let Ok(rec) = http::parse(data) {
        let mut out = Vec::new();
        http::findings(&rec, &mut out);
    }
});
