//! A site's knowledge-base folder changes a device's class without a rebuild, and the
//! change survives a restart of the node (it is a file).

use std::time::Duration;
use wardline_chaos_tests::procs::*;

#[test]
fn site_override_file_changes_class_and_survives_restart() {
    let fleet = Fleet::new().unwrap();
    let (pcap, truth) = fleet.generate("ward", 5, "ward.pcap").unwrap();
    let printer = truth["devices"].as_array().unwrap().iter().find(|d| d["class"] == "printer").unwrap();
    let mac = printer["mac"].as_str().unwrap().to_string();

    let kb_dir = fleet.path().join("site-kb");
    std::fs::create_dir_all(&kb_dir).unwrap();
    std::fs::write(
        kb_dir.join("overrides.toml"),
        format!("[[override]]\nmac = \"{mac}\"\nclass = \"lab_analyzer\"\nnote = \"biomed: label printer inside the lab analyzer\"\nby = \"test\"\n"),
    )
    .unwrap();

    let mut agg = Aggregator::start(&fleet, 1, None).unwrap();
    let cfg = Sensor::ward_config(&fleet, &agg, pcap, 200).unwrap();
    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor.log"), &[]).unwrap();
    assert!(sensor.wait(Duration::from_secs(120)).unwrap().success(), "{}", sensor.log_text());

    let class = |agg: &Aggregator| {
        let d = agg.get(&format!("/api/v1/devices/{mac}")).unwrap();
        (d["classification"]["class"]["value"].as_str().unwrap().to_string(), d["classification"]["overridden"].clone())
    };
    // Without the site folder the evidence says printer.
    assert_eq!(class(&agg).0, "printer");

    // With it (no rebuild: a flag pointing at a folder), the override wins and says where it came from.
    agg.extra_args = vec!["--kb-dir".into(), kb_dir.display().to_string()];
    agg.restart().unwrap();
    let (c, from) = class(&agg);
    assert_eq!(c, "lab_analyzer");
    assert!(from.as_str().unwrap_or("").contains("overrides.toml"), "override source: {from}");

    // And it holds across another restart.
    agg.restart().unwrap();
    assert_eq!(class(&agg).0, "lab_analyzer");

    // A broken site file is refused at start with the file named.
    std::fs::write(kb_dir.join("broken.toml"), "[[override]]\nmac = \"not-a-mac\"\nclass = \"printer\"\n").unwrap();
    let err = agg.restart().unwrap_err().to_string();
    assert!(err.contains("broken.toml"), "error should name the file: {err}");
}
