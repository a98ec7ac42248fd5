//! cargo fuzz run decode — every link type's frame decoder (first byte picks the link type).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_sensor::capture::LinkType;
use wardline_sensor::decode::decode;

const LINKTYPES: [LinkType; 9] = [
    LinkType::Ethernet,
    LinkType::RawIp,
    LinkType::Null,
    LinkType::Loop,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Radiotap,
    LinkType::Ipv4,
    LinkType::Ipv6,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let lt = LINKTYPES[sel as usize % LINKTYPES.len()];
    if let Ok(d) = decode(lt, frame) {
        let _ = d.ports();
    }
});
