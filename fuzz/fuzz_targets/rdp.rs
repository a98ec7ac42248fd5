//! cargo fuzz run rdp — TPKT/X.224 connection request and confirm.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wardline_sensor::dissect::rdp::looks_like_x224_connect(data);
    let _ = wardline_sensor::dissect::rdp::parse(data);
});
