//! cargo fuzz run ndp — IPv6 neighbour solicitation/advertisement options and bindings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::ndp;

fuzz_target!(|data: &[u8]| {
    let _ = ndp::parse(data);
    let _ = ndp::binding(data, "fe80::1".parse().unwrap());
});
