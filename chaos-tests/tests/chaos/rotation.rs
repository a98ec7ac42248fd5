//! Certificate rotation of a running sensor process without a restart (decision 0040): its
//! certificate is revoked, so every connection it makes is refused and its capture waits in
//! its spool; a new certificate is put in place of the old files and the sensor gets SIGHUP.
//! It reloads at once, its next connection presents the new serial, and everything it
//! captured arrives, exactly once.

use std::process::Command;
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

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool, logs: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "never {what}:\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_sensor_reloads_its_certificate_on_sighup_and_its_next_connection_presents_the_new_serial() {
    let fleet = Fleet::new().unwrap();
    let (pcap, truth) = fleet.generate("ward", 5, "ward.pcap").unwrap();
    let mut agg = Aggregator::start(&fleet, 1, None).unwrap();
    let tls_dir = fleet.path().join("sensor-tls");
    let old_serial = issue(&fleet, &tls_dir);
    admin_cli(
        &agg,
        &["admin", "revoke-sensor", "--sensor-id", "ward-a-1", "--serial", &old_serial, "--reason", "rotated"],
    );

    let spec = SensorSpec {
        sensor_id: "ward-a-1",
        site: "north",
        tls_dir: tls_dir.clone(),
        server: agg.quic_addr(),
        pcaps: vec![pcap],
        max_events: 50,
    };
    let cfg = Sensor::write_config(&fleet, &spec).unwrap();
    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor.log"), &[]).unwrap();
    wait_for(
        "the old certificate refused",
        Duration::from_secs(60),
        || agg.log_text().contains("refused a revoked sensor"),
        || agg.log_text(),
    );
    assert_eq!(agg.get("/api/v1/inventory").unwrap()["count"], 0);

    // New files in place (each moved in by rename, as operations.md says), then SIGHUP.
    let staging = fleet.path().join("sensor-tls-new");
    let new_serial = issue(&fleet, &staging);
    assert_ne!(new_serial, old_serial);
    for f in ["sensor.key", "sensor.pem"] {
        std::fs::rename(staging.join(f), tls_dir.join(f)).unwrap();
    }
    let pid = sensor.pid().expect("the sensor still runs: it cannot deliver with a revoked certificate");
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());

    let status = sensor.wait(Duration::from_secs(180)).unwrap();
    let log = sensor.log_text();
    assert!(status.success(), "the sensor did not deliver with its reloaded certificate:\n{log}");
    assert!(log.contains("SIGHUP: reloading certificates"), "{log}");
    assert!(log.contains(&format!("new_serial={new_serial}")), "the reload names the new serial:\n{log}");
    let agg_log = agg.log_text();
    assert!(
        agg_log.lines().any(|l| l.contains("sensor connected") && l.contains(&new_serial)),
        "the next connection presents the new serial:\n{agg_log}"
    );
    assert!(
        !agg_log.lines().any(|l| l.contains("sensor connected") && l.contains(&old_serial)),
        "the revoked serial never got in:\n{agg_log}"
    );
    let inv = agg.get("/api/v1/inventory").unwrap();
    let diffs = inventory_differences(&truth, &inv);
    assert!(diffs.is_empty(), "inventory after the reload differs from the truth:\n{}", diffs.join("\n"));
    agg.kill9();
}
