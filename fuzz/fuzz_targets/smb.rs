//! cargo fuzz run smb — NetBIOS-framed SMB1/SMB2 negotiate and session setup.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::Transport;

mod common;
use common::ctx;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = wardline_sensor::dissect::smb::parse(data) {
        let mut out = Vec::new();
        wardline_sensor::dissect::smb::findings(&rec, &ctx(Transport::Tcp, 40000, 445), &mut out);
    }
});
