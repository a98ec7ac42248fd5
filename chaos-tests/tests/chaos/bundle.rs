//! Sneakernet with real processes: a sensor with no link spools a capture, `spool export`
//! writes a signed bundle, `admin import-bundle` applies it exactly once. Importing twice, a
//! tampered, truncated, foreign or revoked bundle, and the link coming back afterwards:
//! clear errors or duplicates, nothing counted twice.

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use wardline_chaos_tests::expect::*;
use wardline_chaos_tests::procs::*;

/// Run a sensor with no reachable aggregator until its capture is spooled, then stop it.
fn spool_offline(fleet: &Fleet, spec: &SensorSpec<'_>, log: &str) -> std::path::PathBuf {
    let cfg = Sensor::write_config(fleet, spec).unwrap();
    let mut sensor = Sensor::start(&cfg, &fleet.path().join(log), &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !sensor.log_text().contains("capture finished") {
        assert!(Instant::now() < deadline, "the sensor did not finish its capture:\n{}", sensor.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = sensor.pid().expect("sensor running");
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = sensor.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "the sensor did not stop cleanly:\n{}", sensor.log_text());
    cfg
}

fn export(cfg: &std::path::Path, out: &std::path::Path) -> String {
    run_ok(Command::new(bin("wardline-sensor")).args(["spool", "export", "--config"]).arg(cfg).arg("--out").arg(out))
        .unwrap()
}

/// `admin import-bundle` as the admin operator: (exit success, JSON report or error text).
fn import(agg: &Aggregator, file: &std::path::Path) -> (bool, Value, String) {
    let out = Command::new(bin("wardline-aggregator"))
        .args(["admin", "import-bundle", "--json", "--api", &agg.api(), "--file"])
        .arg(file)
        .env("WARDLINE_CERT_DIR", &agg.operator_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.success(), serde_json::from_str(&stdout).unwrap_or(Value::Null), stderr)
}

fn packets(agg: &Aggregator) -> u64 {
    agg.get("/api/v1/flows/totals").unwrap()["replicated"]["packets"].as_u64().unwrap_or(0)
}

#[test]
fn a_bundle_is_applied_once_and_hostile_or_repeated_imports_change_nothing() {
    let fleet = Fleet::new().unwrap();
    let (pcap, truth) = fleet.generate("ward", 9, "ward.pcap").unwrap();
    let agg = Aggregator::start(&fleet, 1, None).unwrap();
    let nowhere = format!("127.0.0.1:{}", free_udp_port());
    let tls_dir = fleet.issue_sensor("ward-a-1", "north").unwrap();
    let spec = |server: &str, tls_dir: std::path::PathBuf, id: &'static str| SensorSpec {
        sensor_id: id,
        site: "north",
        tls_dir,
        server: server.to_string(),
        pcaps: vec![pcap.clone()],
        max_events: 40,
    };
    let cfg = spool_offline(&fleet, &spec(&nowhere, tls_dir.clone(), "ward-a-1"), "sensor-offline.log");
    let file = fleet.path().join("ward-a-1.bundle");
    let said = export(&cfg, &file);
    assert!(said.contains("signed by sensor ward-a-1"), "{said}");

    let (ok, report, err) = import(&agg, &file);
    assert!(ok, "import failed: {err}");
    let batches = report["batches_in_bundle"].as_u64().unwrap();
    assert!(batches > 5, "{report}");
    assert_eq!(report["applied"].as_u64(), Some(batches), "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["complete"], true, "{report}");
    let inv = agg.get("/api/v1/inventory").unwrap();
    let diffs = inventory_differences(&truth, &inv);
    assert!(diffs.is_empty(), "inventory from the bundle differs from the truth:\n{}", diffs.join("\n"));
    let expected: u64 = truth_flows(&truth).values().map(|v| v.0).sum();
    assert_eq!(packets(&agg), expected, "flow packets after the import");

    // Twice: every batch is recognised.
    let (ok, report, err) = import(&agg, &file);
    assert!(ok, "{err}");
    assert_eq!((report["applied"].as_u64(), report["duplicates"].as_u64()), (Some(0), Some(batches)), "{report}");

    // Tampered (a byte inside the last record) and truncated copies: clear errors.
    let bytes = std::fs::read(&file).unwrap();
    let mut tampered = bytes.clone();
    let at = tampered.len() - 120;
    tampered[at] ^= 0x55;
    let bad = fleet.path().join("tampered.bundle");
    std::fs::write(&bad, &tampered).unwrap();
    let (ok, report, err) = import(&agg, &bad);
    assert!(!ok, "a tampered bundle was accepted: {report}");
    assert!(err.contains("does not verify") || err.contains("does not decode"), "{err}");
    let cut = fleet.path().join("cut.bundle");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let (ok, _, err) = import(&agg, &cut);
    assert!(!ok && err.contains("truncated"), "{err}");
    let junk = fleet.path().join("junk.bundle");
    std::fs::write(&junk, b"this is not a bundle at all").unwrap();
    let (ok, _, err) = import(&agg, &junk);
    assert!(!ok && err.contains("not a Wardline bundle"), "{err}");
    assert_eq!(packets(&agg), expected, "a bad bundle changed the flow totals");

    // A bundle signed by another fleet's sensor is refused before anything is applied.
    let rogue = Fleet::new().unwrap();
    let rogue_tls = rogue.issue_sensor("rogue-1", "north").unwrap();
    let rogue_cfg = spool_offline(&rogue, &spec(&nowhere, rogue_tls, "rogue-1"), "rogue.log");
    let foreign = fleet.path().join("foreign.bundle");
    export(&rogue_cfg, &foreign);
    let (ok, _, err) = import(&agg, &foreign);
    assert!(!ok && err.contains("not a valid certificate of this fleet"), "{err}");

    // A revoked sensor's bundle is refused.
    agg.admin_cli(&["admin", "revoke-sensor", "--sensor-id", "ward-a-1", "--reason", "test"]).unwrap();
    let (ok, _, err) = import(&agg, &file);
    assert!(!ok && err.contains("is revoked"), "{err}");
    agg.admin_cli(&["admin", "lift-revocation", "--sensor-id", "ward-a-1"]).unwrap();

    // The link comes back: the sensor's spool (it kept its batches) drains as duplicates.
    let cfg = Sensor::write_config(&fleet, &spec(&agg.quic_addr(), tls_dir, "ward-a-1")).unwrap();
    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor-online.log"), &[]).unwrap();
    let status = sensor.wait(Duration::from_secs(120)).unwrap();
    assert!(status.success(), "{}", sensor.log_text());
    assert_eq!(packets(&agg), expected, "the link coming back after the import counted flows twice");
    let inv = agg.get("/api/v1/inventory").unwrap();
    assert!(inventory_differences(&truth, &inv).is_empty());
    let audit = agg.get("/api/v1/audit").unwrap().to_string();
    assert!(audit.contains("imported a bundle of sensor ward-a-1@north"), "{audit}");
}
