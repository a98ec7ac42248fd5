//! cargo fuzz run wire_frame — the QUIC batch and reply frames a node or sensor receives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_common::wire::{decode_frame, Batch, BatchReply};

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame::<Batch>(data);
    let _ = decode_frame::<BatchReply>(data);
});
