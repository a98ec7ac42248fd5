//! cargo fuzz run spool_record — a record read back from the sensor's spool on disk
//! (damaged disks, foreign writes): must be an error or a record, never a panic; a record
//! that decodes re-encodes to bytes that decode to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_sensor::spool::record::{decode, encode, RECORD_FORMAT};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode(data) {
        let again = encode(&r).expect("a decoded record re-encodes");
        assert_eq!(decode(&again).expect("a re-encoded record decodes"), r);
    }
    // Also reach the checksum and body paths with the current format byte in front.
    let mut tagged = Vec::with_capacity(data.len() + 1);
    tagged.push(RECORD_FORMAT);
    tagged.extend_from_slice(data);
    let _ = decode(&tagged);
});
