//! cargo fuzz run capture_file — pcap/pcapng reader on arbitrary bytes, then the whole
//! pipeline on whatever packets it yields. Seed the corpus with ../shared/pcaps files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = FileReader::from_reader("fuzz-input", std::io::Cursor::new(data.to_vec())) else { return };
    let mut pl = Pipeline::new(PipelineConfig::default());
    while let Ok(Some(p)) = r.next_packet() {
        pl.process(&p);
    }
    let _ = pl.finish();
});
