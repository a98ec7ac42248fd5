//! cargo fuzz run wire_multi_frame — the length-prefixed multi-batch frames of uplink
//! version 2 a node receives, and the reply vectors a sensor receives (decision 0034).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_common::wire::{decode_batches_frame, decode_frame, BatchReply, FRAME_LENGTH_PREFIX, MAX_FRAME_BATCHES};

fuzz_target!(|data: &[u8]| {
    // As the node reads a stream: a declared length, then that many bytes of frame.
    if let Some((prefix, rest)) = data.split_first_chunk::<FRAME_LENGTH_PREFIX>() {
        let declared = u32::from_be_bytes(*prefix) as usize;
        if let Ok(batches) = decode_batches_frame(&rest[..declared.min(rest.len())]) {
            assert!(!batches.is_empty() && batches.len() <= MAX_FRAME_BATCHES);
            assert!(batches.windows(2).all(|w| w[0].seq <= w[1].seq));
        }
    }
    let _ = decode_batches_frame(data);
    let _ = decode_frame::<Vec<BatchReply>>(data);
});
