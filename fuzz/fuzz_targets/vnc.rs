//! cargo fuzz run vnc — RFB ProtocolVersion message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wardline_sensor::dissect::vnc::parse(data);
});
