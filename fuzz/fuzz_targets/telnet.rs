//! cargo fuzz run telnet — Telnet negotiation stripping, banner and prompt detection (both directions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::Transport;

mod common;
use common::ctx;

fuzz_target!(|data: &[u8]| {
    for from_server in [true, false] {
        if let Ok(rec) = wardline_sensor::dissect::telnet::parse(data, from_server) {
            let mut out = Vec::new();
            wardline_sensor::dissect::telnet::findings(&rec, &ctx(Transport::Tcp, 23, 40000), &mut out);
        }
    }
});
