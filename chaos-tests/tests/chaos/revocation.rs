//! Revocation and rotation with real processes: an admin revokes a sensor certificate with
//! the CLI, every batch the sensor sends with it is refused (kept in its spool, not lost);
//! the sensor's re-issued certificate delivers everything, exactly once.

use std::time::{Duration, Instant};
use wardline_chaos_tests::expect::*;
use wardline_chaos_tests::procs::*;

/// `wardline-aggregator ARGS --api API` as the admin operator; its stdout.
fn admin_cli(agg: &Aggregator, args: &[&str]) -> String {
    agg.admin_cli(args).unwrap()
}

/// Issue a certificate for `ward-a-1` into `dir` with the CLI; its serial, as printed.
fn issue(fleet: &Fleet, dir: &std::path::Path) -> String {
    fleet.issue_sensor_cli("ward-a-1", "north", dir).unwrap()
}

#[test]
fn a_revoked_certificate_is_refused_and_the_rotated_one_delivers_everything_once() {
    let fleet = Fleet::new().unwrap();
    let (pcap, truth) = fleet.generate("ward", 5, "ward.pcap").unwrap();
    let mut agg = Aggregator::start(&fleet, 1, None).unwrap();
    let (old_dir, new_dir) = (fleet.path().join("cert-old"), fleet.path().join("cert-new"));
    let old_serial = issue(&fleet, &old_dir);

    let said = admin_cli(
        &agg,
        &["admin", "revoke-sensor", "--sensor-id", "ward-a-1", "--serial", &old_serial, "--reason", "laptop stolen"],
    );
    assert!(said.contains(&old_serial), "{said}");
    let spec = |tls_dir| SensorSpec {
        sensor_id: "ward-a-1",
        site: "north",
        tls_dir,
        server: agg.quic_addr(),
        pcaps: vec![pcap.clone()],
        max_events: 50,
    };
    let cfg = Sensor::write_config(&fleet, &spec(old_dir)).unwrap();
    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor-old.log"), &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agg.log_text().contains("refused a revoked sensor") {
        assert!(Instant::now() < deadline, "the revoked certificate was not refused:\n{}", agg.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    sensor.kill9();
    let line = agg.log_text().lines().find(|l| l.contains("refused a revoked sensor")).unwrap().to_string();
    assert!(line.contains("laptop stolen") && line.contains(&old_serial), "the refusal names why: {line}");
    assert_eq!(agg.get("/api/v1/inventory").unwrap()["count"], 0, "a revoked certificate's batches were applied");

    // The sensor gets a new certificate; its spool (filled under the old one) drains through it.
    let new_serial = issue(&fleet, &new_dir);
    assert_ne!(new_serial, old_serial);
    let cfg = Sensor::write_config(&fleet, &spec(new_dir)).unwrap();
    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor-new.log"), &[]).unwrap();
    let status = sensor.wait(Duration::from_secs(180)).unwrap();
    assert!(status.success(), "the rotated certificate could not deliver:\n{}", sensor.log_text());
    let inv = agg.get("/api/v1/inventory").unwrap();
    let diffs = inventory_differences(&truth, &inv);
    assert!(diffs.is_empty(), "inventory after rotation differs from the truth:\n{}", diffs.join("\n"));

    // The list and the audit log say who revoked what; lifting empties the list.
    let list: serde_json::Value = serde_json::from_str(&admin_cli(&agg, &["admin", "revocations", "--json"])).unwrap();
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["revocations"][0]["serial"], old_serial.as_str(), "{list}");
    assert_eq!(list["revocations"][0]["revoked_by"], "chaos-admin", "{list}");
    let audit = agg.get("/api/v1/audit").unwrap().to_string();
    assert!(audit.contains(&format!("revoked certificate {old_serial} of sensor ward-a-1")), "{audit}");
    admin_cli(&agg, &["admin", "lift-revocation", "--sensor-id", "ward-a-1", "--serial", &old_serial]);
    let list: serde_json::Value = serde_json::from_str(&admin_cli(&agg, &["admin", "revocations", "--json"])).unwrap();
    assert_eq!(list["count"], 0, "{list}");
    agg.kill9();
}
