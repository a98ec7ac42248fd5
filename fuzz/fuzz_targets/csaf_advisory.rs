//! cargo fuzz run csaf_advisory — a CSAF advisory or KEV catalog file a hospital copies in
//! (may be truncated, corrupt, or a newer layout); what parses is indexed and matched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_intel::vuln::{parse_advisory, DeviceQuery, KevCatalog, VersionSpec, VulnIndex};

fuzz_target!(|data: &[u8]| {
    let _ = KevCatalog::parse(data, "kev.json");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = VersionSpec::parse(text);
    }
    if let Ok(a) = parse_advisory(data, "fuzz.json") {
        let devices: Vec<(String, String)> =
            a.products.iter().map(|p| (p.vendor.clone(), p.product_name.clone())).collect();
        let idx = VulnIndex::build(vec![a], KevCatalog::default());
        for (vendor, model) in &devices {
            for fw in [None, Some("1.0"), Some("9.33.1")] {
                let _ =
                    idx.match_device(&DeviceQuery { vendor: Some(vendor), model: Some(model), firmware: fw, os: None });
            }
        }
    }
});
