//! Kill -9 of the sensor and of the aggregator at the worst moments, then restart over the
//! same spool / data folder: the inventory and the ClickHouse totals must equal a run with
//! no fault (no loss, no double count).

use serde_json::Value;
use std::time::Duration;
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_chaos_tests::expect::*;
use wardline_chaos_tests::procs::*;

struct Setup {
    ch: ClickHouseServer,
    fleet: Fleet,
    agg: Aggregator,
    truth: Value,
    config: std::path::PathBuf,
}

fn setup(seed: u64) -> Setup {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let fleet = Fleet::new().unwrap();
    let (pcap, truth) = fleet.generate("ward", seed, "ward.pcap").unwrap();
    let agg = Aggregator::start(&fleet, 1, Some(ch.http_url.clone())).unwrap();
    // Small batches so the capture makes many of them.
    let config = Sensor::ward_config(&fleet, &agg, pcap, 5).unwrap();
    Setup { ch, fleet, agg, truth, config }
}

fn assert_exact(s: &Setup) {
    s.agg.wait_outbox_drained(Duration::from_secs(60)).unwrap();
    let inv = s.agg.get("/api/v1/inventory").unwrap();
    let diffs = inventory_differences(&s.truth, &inv);
    assert!(diffs.is_empty(), "inventory differs:\n{}", diffs.join("\n"));
    let expected = truth_flows(&s.truth);
    let stored = tsv_flows(&s.ch.query(CLICKHOUSE_FLOWS_SQL).unwrap()).unwrap();
    let diffs = flow_differences(&expected, &stored);
    assert!(diffs.is_empty(), "ClickHouse differs after the fault:\n{}", diffs.join("\n"));
    let totals = s.agg.get("/api/v1/flows/totals").unwrap();
    let packets: u64 = expected.values().map(|v| v.0).sum();
    assert_eq!(totals["replicated"]["packets"].as_u64(), Some(packets), "replicated counters double counted: {totals}");
    assert_eq!(totals["store"]["packets"].as_u64(), Some(packets), "{totals}");
}

fn run_sensor_to_end(s: &Setup, log: &str, env: &[(&str, &str)]) -> std::process::ExitStatus {
    let mut sensor = Sensor::start(&s.config, &s.fleet.path().join(log), env).unwrap();
    let st = sensor.wait(Duration::from_secs(240)).unwrap();
    if env.is_empty() {
        assert!(st.success(), "sensor failed:\n{}", sensor.log_text());
    }
    st
}

#[test]
fn sensor_killed_after_ack_before_spool_delete_resends_without_double_count() {
    let s = setup(11);
    let st = run_sensor_to_end(&s, "sensor1.log", &[("WARDLINE_FAULT", "sensor-after-ack:3")]);
    assert!(!st.success(), "the crash point must have fired");
    let seq = s.agg.get("/api/v1/sensors").unwrap()["sensors"]["ward-a-1"]["last_seq"].as_u64().unwrap();
    // Several batches are in flight, so later ones may have been committed too.
    assert!(seq >= 3, "batch 3 was committed by the cluster before the sensor died (watermark {seq})");
    run_sensor_to_end(&s, "sensor2.log", &[]);
    assert_exact(&s);
}

#[test]
fn sensor_killed_at_random_moments_loses_and_duplicates_nothing() {
    let s = setup(12);
    // Kill -9 the sensor three times while it streams, restarting over the same spool.
    for round in 0..3 {
        let mut sensor = Sensor::start(&s.config, &s.fleet.path().join(format!("kill{round}.log")), &[]).unwrap();
        std::thread::sleep(Duration::from_millis(700 + 400 * round));
        sensor.kill9();
    }
    run_sensor_to_end(&s, "final.log", &[]);
    assert_exact(&s);
}

/// Restart the node with a crash point armed, stream until it fires, restart it clean, and
/// let the sensor finish: the result must equal a run without the crash.
fn aggregator_crash_at(seed: u64, crash_point: &str) {
    let mut s = setup(seed);
    s.agg.restart_with_fault(Some(crash_point)).unwrap();
    let mut sensor = Sensor::start(&s.config, &s.fleet.path().join("sensor.log"), &[]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !s.agg.log_text().contains("WARDLINE_FAULT: aborting") {
        assert!(std::time::Instant::now() < deadline, "crash point never reached:\n{}", s.agg.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    s.agg.restart_with_fault(None).unwrap();
    let st = sensor.wait(Duration::from_secs(240)).unwrap();
    assert!(st.success(), "sensor failed:\n{}", sensor.log_text());
    assert_exact(&s);
}

#[test]
fn aggregator_killed_after_sink_write_before_commit_does_not_double_count() {
    // The outbox drainer dies after writing the flows of batch 4 (or the first later batch
    // with flows) to ClickHouse, before the drain is committed to Raft: the next leader
    // writes them again and ClickHouse collapses the repeat.
    aggregator_crash_at(13, "aggregator-after-sink:4");
}

#[test]
fn aggregator_killed_after_commit_before_ack_does_not_double_count() {
    // Dies after batch 4 is committed and applied, before the ack reaches the sensor.
    aggregator_crash_at(14, "aggregator-after-commit:4");
}

#[test]
fn aggregator_killed_at_random_moments_loses_and_duplicates_nothing() {
    let mut s = setup(15);
    let mut sensor = Sensor::start(&s.config, &s.fleet.path().join("sensor.log"), &[]).unwrap();
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(900 + 300 * round));
        s.agg.restart().unwrap();
    }
    let st = sensor.wait(Duration::from_secs(240)).unwrap();
    assert!(st.success(), "sensor failed:\n{}", sensor.log_text());
    assert_exact(&s);
}
