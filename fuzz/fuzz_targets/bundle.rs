//! cargo fuzz run bundle — a sneakernet bundle given to `admin import-bundle` (may be
//! truncated, tampered with, or not a bundle at all), fed in arbitrary chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_common::bundle::{decode_record, BundleParser, Item};

fuzz_target!(|data: &[u8]| {
    let chunk = 1 + data.first().copied().unwrap_or(0) as usize;
    let mut parser = BundleParser::default();
    for piece in data.chunks(chunk) {
        parser.push(piece);
        loop {
            match parser.next_item() {
                Ok(Some(Item::Record { index, frame, .. })) => {
                    let _ = decode_record(index, &frame);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    let _ = parser.finish();
});
