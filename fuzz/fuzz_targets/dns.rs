//! Fuzz the dns dissector: arbitrary bytes must never panic (errors are fine).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::dns;

fuzz_target!(|data: &[u8]| {
    let _ = dns::parse(data);
    let _ = dns::parse_tcp(data);
    let _ = dns::salvage_questions(data);
    if let Ok(rec) = dns::parse(data) {
        let mut out = Vec::new();
        dns::findings(&rec, wardline_common::Proto::Mdns, &mut out);
    }
});
