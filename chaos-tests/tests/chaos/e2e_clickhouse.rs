//! The whole path with real processes: generated ward capture → wardline-sensor → QUIC →
//! wardline-aggregator (Raft, one node) → inventory and a real ClickHouse server.

use std::time::Duration;
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_chaos_tests::expect::*;
use wardline_chaos_tests::procs::*;

#[test]
fn ward_capture_reaches_inventory_and_clickhouse_exactly() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let fleet = Fleet::new().unwrap();
    let (pcap, truth) = fleet.generate("ward", 7, "ward.pcap").unwrap();
    let agg = Aggregator::start(&fleet, 1, Some(ch.http_url.clone())).unwrap();
    let cfg = Sensor::ward_config(&fleet, &agg, pcap, 25).unwrap();
    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor.log"), &[]).unwrap();
    let status = sensor.wait(Duration::from_secs(180)).unwrap();
    assert!(status.success(), "sensor failed:\n{}", sensor.log_text());

    let inv = agg.get("/api/v1/inventory").unwrap();
    let diffs = inventory_differences(&truth, &inv);
    assert!(diffs.is_empty(), "inventory differs from ground truth:\n{}", diffs.join("\n"));

    // Acked flows sit in the replicated outbox until the leader's next insert (decision 0016).
    agg.wait_outbox_drained(Duration::from_secs(60)).unwrap();
    let expected = truth_flows(&truth);
    assert!(!expected.is_empty(), "ground truth has no flows");
    let stored = tsv_flows(&ch.query(CLICKHOUSE_FLOWS_SQL).unwrap()).unwrap();
    let diffs = flow_differences(&expected, &stored);
    assert!(diffs.is_empty(), "ClickHouse flows differ from the capture:\n{}", diffs.join("\n"));

    // Every device is classified as the ground truth says, with evidence behind it.
    for t in truth["devices"].as_array().unwrap() {
        let d = inv["devices"].as_array().unwrap().iter().find(|d| d["mac"] == t["mac"]).unwrap();
        let c = &d["classification"];
        assert_eq!(c["class"]["value"], t["class"], "class of {} ({})", t["mac"], t["name"]);
        assert_eq!(c["category"]["value"], t["category"], "category of {}", t["mac"]);
        assert!(!c["class"]["evidence"].as_array().unwrap().is_empty(), "no evidence for {}", t["mac"]);
    }

    // The pump's traffic to its server is labelled required for its clinical function.
    let pump = truth["devices"].as_array().unwrap().iter().find(|d| d["class"] == "infusion_pump").unwrap();
    let flows = agg.get(&format!("/api/v1/devices/{}/flows", pump["mac"].as_str().unwrap())).unwrap();
    let tags: Vec<&str> = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["flow"]["b_port"] == 3613 || f["flow"]["a_port"] == 3613)
        .map(|f| f["context"]["tag"].as_str().unwrap_or("none"))
        .collect();
    assert!(
        !tags.is_empty() && tags.iter().all(|t| *t == "required"),
        "pump flow context: {tags:?}
{flows}"
    );

    // The API's totals agree with ClickHouse and with the replicated counters.
    let totals = agg.get("/api/v1/flows/totals").unwrap();
    let packets: u64 = expected.values().map(|v| v.0).sum();
    assert_eq!(totals["store"]["packets"].as_u64(), Some(packets), "{totals}");
    assert_eq!(totals["replicated"]["packets"].as_u64(), Some(packets), "{totals}");
    let sensors = agg.get("/api/v1/sensors").unwrap();
    assert!(sensors["sensors"]["ward-a-1"]["last_seq"].as_u64().unwrap_or(0) > 1, "{sensors}");
}

/// Wait until the node's flow outbox is empty (every acked flow is in the flow store).
#[test]
fn clickhouse_killed_mid_run_keeps_inventory_moving_and_flows_land_exactly_once() {
    let mut ch = ClickHouseServer::start().expect("start ClickHouse");
    let fleet = Fleet::new().unwrap();
    let (pcap, truth) = fleet.generate("ward", 11, "ward.pcap").unwrap();
    let mut agg = Aggregator::start(&fleet, 1, Some(ch.http_url.clone())).unwrap();
    let cfg = Sensor::ward_config(&fleet, &agg, pcap, 25).unwrap();
    ch.stop_kill9();
    // With ClickHouse down the whole capture is still acked and the inventory complete.
    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor.log"), &[]).unwrap();
    let status = sensor.wait(Duration::from_secs(180)).unwrap();
    assert!(status.success(), "sensor failed:\n{}", sensor.log_text());
    let inv = agg.get("/api/v1/inventory").unwrap();
    let diffs = inventory_differences(&truth, &inv);
    assert!(diffs.is_empty(), "inventory differs while ClickHouse is down:\n{}", diffs.join("\n"));
    // The node is killed with the flows still in its outbox, then ClickHouse comes back.
    agg.kill9();
    ch.restart().unwrap();
    agg.restart().unwrap();
    agg.wait_outbox_drained(Duration::from_secs(60)).unwrap();
    let expected = truth_flows(&truth);
    let stored = tsv_flows(&ch.query(CLICKHOUSE_FLOWS_SQL).unwrap()).unwrap();
    let diffs = flow_differences(&expected, &stored);
    assert!(diffs.is_empty(), "ClickHouse flows differ after the outage:\n{}", diffs.join("\n"));
    let totals = agg.get("/api/v1/flows/totals").unwrap();
    let packets: u64 = expected.values().map(|v| v.0).sum();
    assert_eq!(totals["store"]["packets"].as_u64(), Some(packets), "{totals}");
    assert_eq!(totals["replicated"]["packets"].as_u64(), Some(packets), "{totals}");
}

#[test]
fn sensor_from_another_ca_is_refused_with_a_clear_log_line() {
    let fleet = Fleet::new().unwrap();
    let rogue = Fleet::new().unwrap();
    let (pcap, _) = fleet.generate("ward", 3, "ward.pcap").unwrap();
    let mut agg = Aggregator::start(&fleet, 1, None).unwrap();
    let tls_dir = rogue.issue_sensor("ward-a-1", "north").unwrap();
    let cfg = Sensor::write_config(
        &rogue,
        &SensorSpec {
            sensor_id: "ward-a-1",
            site: "north",
            tls_dir,
            server: agg.quic_addr(),
            pcaps: vec![pcap],
            max_events: 100,
        },
    )
    .unwrap();
    let mut sensor = Sensor::start(&cfg, &rogue.path().join("sensor.log"), &[]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !agg.log_text().contains("refused sensor connection") {
        assert!(std::time::Instant::now() < deadline, "no refusal logged:\n{}", agg.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    sensor.kill9();
    let log = agg.log_text();
    let line = log.lines().find(|l| l.contains("refused sensor connection")).unwrap();
    assert!(line.contains("127.0.0.1"), "refusal should name the remote address: {line}");
    assert!(line.to_lowercase().contains("ca") || line.contains("issuer"), "refusal should say why: {line}");
    let inv = agg.get("/api/v1/inventory").unwrap();
    assert_eq!(inv["count"], 0, "a refused sensor must not reach the inventory: {inv}");
    // The sensor kept its batches: nothing is lost when it is refused.
    let spool_log = sensor.log_text();
    assert!(!spool_log.contains("panicked"), "{spool_log}");
    agg.kill9();
}
