//! cargo fuzz run wire_compressed_frame — what a node reads from an uplink-version-3 stream
//! (decision 0041): a compressed header, then stored bytes that decompress to a
//! multi-batch frame. Decompression must stay within the limit the header is checked
//! against, whatever the header claims and whatever the bytes expand to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_common::wire::{
    decode_compressed_batches_frame, decompress_frame, CompressedHeader, Codec, COMPRESSED_HEADER_BYTES,
    MAX_FRAME_BATCHES,
};

fuzz_target!(|data: &[u8]| {
    // First byte picks a frame limit, so small limits are exercised too.
    let Some((&pick, rest)) = data.split_first() else { return };
    let limit = 1usize << (8 + (pick % 17));
    if let Ok(batches) = decode_compressed_batches_frame(rest, limit) {
        assert!(!batches.is_empty() && batches.len() <= MAX_FRAME_BATCHES);
        assert!(batches.windows(2).all(|w| w[0].seq <= w[1].seq));
    }
    // The bytes as a zstd payload behind a header that claims `limit`: whatever they
    // expand to, the output is at most what was claimed.
    if let Some((header, stored)) = rest.split_first_chunk::<COMPRESSED_HEADER_BYTES>() {
        if let Ok(h) = CompressedHeader::parse(header, limit) {
            if let Ok(out) = decompress_frame(&h, stored) {
                assert!(out.len() == h.decoded && out.len() <= limit);
            }
        }
        let h = CompressedHeader { stored: stored.len(), codec: Codec::Zstd, decoded: limit };
        if let Ok(out) = decompress_frame(&h, stored) {
            assert_eq!(out.len(), limit);
        }
    }
});
