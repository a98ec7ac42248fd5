//! cargo fuzz run backup_file — a backup file given to `run --restore` (may be truncated,
//! corrupt or from another version).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_aggregator::cluster::backup;

fuzz_target!(|data: &[u8]| {
    let _ = backup::decode_header(data);
    let _ = backup::decode(data);
});
