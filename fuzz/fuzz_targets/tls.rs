//! Fuzz the tls dissector: arbitrary bytes must never panic (errors are fine).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::tls;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = tls::parse(data) {
        for ch in &rec.client_hellos {
            let _ = (ch.ja3_hash(), ch.ja4());
        }
        let mut out = Vec::new();
        tls::findings(&rec, &mut out);
    }
});
