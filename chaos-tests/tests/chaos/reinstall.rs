//! A reinstalled sensor (decision 0036) with real processes: the sensor delivers a capture,
//! its spool folder is wiped (as a reinstall or a disk replacement does) and it runs again,
//! numbering its batches from 1 under a new spool epoch. The aggregator takes the new epoch:
//! everything the sensor sends after the wipe is applied exactly once (inventory equal to the
//! second capture's ground truth, replicated flow packets equal to both captures' together),
//! and the change is visible in the sensors view, the CLI, an alert, a metric and the log.

use std::time::Duration;
use wardline_chaos_tests::expect::*;
use wardline_chaos_tests::procs::*;

fn spec<'a>(agg: &Aggregator, tls_dir: &std::path::Path, pcap: &std::path::Path) -> SensorSpec<'a> {
    SensorSpec {
        sensor_id: "ward-a-1",
        site: "north",
        tls_dir: tls_dir.to_path_buf(),
        server: agg.quic_addr(),
        pcaps: vec![pcap.to_path_buf()],
        max_events: 50,
    }
}

fn packets_of(truth: &serde_json::Value) -> u64 {
    truth_flows(truth).values().map(|v| v.0).sum()
}

#[test]
fn a_wiped_sensor_starts_a_new_epoch_and_everything_after_arrives_exactly_once() {
    let fleet = Fleet::new().unwrap();
    let (first_pcap, first_truth) = fleet.generate("ward", 5, "first.pcap").unwrap();
    let (second_pcap, second_truth) = fleet.generate("ward", 6, "second.pcap").unwrap();
    let mut agg = Aggregator::start(&fleet, 1, None).unwrap();
    let tls_dir = fleet.issue_sensor("ward-a-1", "north").unwrap();

    let cfg = Sensor::write_config(&fleet, &spec(&agg, &tls_dir, &first_pcap)).unwrap();
    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor-1.log"), &[]).unwrap();
    let status = sensor.wait(Duration::from_secs(180)).unwrap();
    assert!(status.success(), "first run failed:\n{}", sensor.log_text());
    let before = agg.get("/api/v1/sensors").unwrap()["sensors"]["ward-a-1"].clone();
    let first_last_seq = before["last_seq"].as_u64().unwrap();
    let first_batches = before["batches_applied"].as_u64().unwrap();
    assert!(first_last_seq > 2, "the first capture should take several batches: {before}");
    let recorded = agg.get("/api/v1/sensors").unwrap()["sensor_epochs"]["ward-a-1"].clone();
    let first_epoch = recorded["epoch"].as_str().expect("a new sensor's epoch is recorded").to_string();
    assert_eq!(recorded["changes"], 0, "{recorded}");

    // Reinstalled: the spool folder is gone; the same identity sends a new capture from seq 1.
    std::fs::remove_dir_all(fleet.path().join("spool-ward-a-1")).unwrap();
    let cfg = Sensor::write_config(&fleet, &spec(&agg, &tls_dir, &second_pcap)).unwrap();
    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor-2.log"), &[]).unwrap();
    let status = sensor.wait(Duration::from_secs(180)).unwrap();
    assert!(status.success(), "second run failed:\n{}", sensor.log_text());
    assert!(sensor.log_text().contains("spool opened with a new epoch"), "{}", sensor.log_text());

    // Everything after the wipe arrived, once.
    let inv = agg.get("/api/v1/inventory").unwrap();
    let diffs = inventory_differences(&second_truth, &inv);
    assert!(diffs.is_empty(), "the reinstalled sensor's devices are missing:\n{}", diffs.join("\n"));
    let totals = agg.get("/api/v1/flows/totals").unwrap();
    assert_eq!(
        totals["replicated"]["packets"].as_u64(),
        Some(packets_of(&first_truth) + packets_of(&second_truth)),
        "flow packets lost or double counted across the reinstall: {totals}"
    );

    // Visible: the sensors view names both epochs and where the first one ended.
    let view = agg.get("/api/v1/sensors").unwrap();
    let s = &view["sensors"]["ward-a-1"];
    let epoch = &view["sensor_epochs"]["ward-a-1"];
    assert_eq!(epoch["changes"], 1, "{s}");
    assert_ne!(epoch["epoch"].as_str(), Some(first_epoch.as_str()), "{s}");
    assert_eq!(epoch["started_seq"], 1, "{s}");
    assert_eq!(epoch["retired"][0]["epoch"].as_str(), Some(first_epoch.as_str()), "{s}");
    assert_eq!(epoch["retired"][0]["last_seq"].as_u64(), Some(first_last_seq), "{s}");
    assert_eq!(epoch["retired"][0]["batches"].as_u64(), Some(first_batches), "{s}");
    let second_batches = s["batches_applied"].as_u64().unwrap() - first_batches;
    assert_eq!(epoch["batches"].as_u64(), Some(second_batches), "{s}");
    assert_eq!(s["last_seq"].as_u64(), Some(second_batches), "the new epoch numbers from 1 without gaps: {s}");
    assert_eq!(view["epochs"]["changes"], 1, "{view}");
    assert_eq!(view["ingest"]["batches_rejected"], 0, "{view}");

    // The CLI, the alert, the metric and the log line say so too.
    let cli = agg.admin_cli(&["sensors"]).unwrap();
    assert!(cli.contains(&format!("left spool epoch {first_epoch} at batch {first_last_seq}")), "{cli}");
    let alerts = agg.get("/api/v1/alerts").unwrap().to_string();
    assert!(alerts.contains("sensor_epoch_changed"), "{alerts}");
    let metrics = agg.api_client().unwrap().get(format!("{}/metrics", agg.api())).send().unwrap().text().unwrap();
    assert!(metrics.contains("wardline_sensor_epoch_events{event=\"changed\"} 1"), "{metrics}");
    assert!(agg.log_text().contains("sensor began a new spool epoch"), "{}", agg.log_text());
    agg.kill9();
}
