//! cargo fuzz run dicom — DICOM upper-layer PDUs, the reassembly length helper and findings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_sensor::dissect::Transport;

mod common;
use common::ctx;

fuzz_target!(|data: &[u8]| {
    let _ = wardline_sensor::dissect::dicom::pdu_len(data);
    if let Ok(rec) = wardline_sensor::dissect::dicom::parse(data) {
        let mut out = Vec::new();
        wardline_sensor::dissect::dicom::findings(&rec, &ctx(Transport::Tcp, 40000, 104), &mut out);
    }
});
