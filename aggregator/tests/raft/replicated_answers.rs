//! Two nodes of one Raft cluster that applied the same log give the same API answers, byte
//! for byte, whatever each was asked before (decision 0011): inventory, devices, device
//! flows in clinical context, flows, sensors and totals.
//!
//! Evidence arrives in an order that per-node hysteresis would have turned into two
//! answers: a Windows box ("MSFT" DHCP vendor class: workstation) later shows it listens on
//! HL7's tcp/2575 (an interface engine). Only node 1 is read in between.
//!
//! Then a core sensor reports hosts of a remote subnet seen only through the router, and
//! the access sensor's DHCP bindings for them arrive afterwards: the evidence moves to the
//! MAC devices on both nodes alike, a lease handed to another MAC splits it, and the
//! address no binding names stays an IP-keyed device.

use crate::raft_support::{config, ServedNode, WAIT};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use ulid::Ulid;
use wardline_aggregator::query::classify::facts_of;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::sink::FlowSink;
use wardline_aggregator::state::{BatchSummary, Command};
use wardline_common::wire::{AddressBinding, BindingSource, HostObservation};
use wardline_common::{Batch, DeviceObservation, Event, Evidence, Field, FlowRecord, MacAddr, Proto};
use wardline_intel::{classify_stable, Classification, KnowledgeBase};

const ENGINE: MacAddr = MacAddr([0x00, 0x15, 0x5d, 0x40, 0x00, 0x10]);
const PUMP_SERVER: MacAddr = MacAddr([0x00, 0x15, 0x5d, 0x40, 0x00, 0x20]);
const PUMP: MacAddr = MacAddr([0x00, 0x0c, 0xc7, 0x50, 0x00, 0x30]);
const ROUTER: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x01]);
const CT: MacAddr = MacAddr([0x00, 0x1b, 0x63, 0x60, 0x00, 0x07]);
/// Gets the CT's address after the CT's lease ran out.
const LAPTOP: MacAddr = MacAddr([0x02, 0x5a, 0x11, 0x60, 0x00, 0x08]);
const HOUR_US: u64 = 3_600_000_000;
const T0_US: u64 = 1_767_225_600_000_000;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn device(mac: MacAddr, addr: &str, evidence: &[(Field, &str)], ts: u64) -> Event {
    Event::Device(DeviceObservation {
        mac,
        ips: if addr.is_empty() { vec![] } else { vec![ip(addr)] },
        vlans: vec![40],
        first_seen_us: ts,
        last_seen_us: ts + 1_000,
        packets: 10,
        bytes: 1_500,
        evidence: evidence.iter().map(|(f, v)| Evidence::new(*f, *v, Proto::Dhcp, ts)).collect(),
    })
}

fn flow(a: (MacAddr, &str, u16), b: (MacAddr, &str, u16), app: &'static str, ts: u64) -> Event {
    Event::Flow(FlowRecord {
        ip_proto: 6,
        vlan: Some(40),
        a_mac: a.0,
        b_mac: b.0,
        a_ip: ip(a.1),
        b_ip: ip(b.1),
        a_port: a.2,
        b_port: b.2,
        first_seen_us: ts,
        last_seen_us: ts + 2_000_000,
        packets_ab: 6,
        packets_ba: 5,
        bytes_ab: 900,
        bytes_ba: 700,
        tcp_flags_ab: 0x1b,
        tcp_flags_ba: 0x1b,
        app: app.into(),
        end_reason: "fin".into(),
    })
}

fn batch(seq: u64, events: Vec<Event>) -> Batch {
    batch_from("ward-b-1", seq, events)
}

fn batch_from(sensor: &str, seq: u64, events: Vec<Event>) -> Batch {
    Batch {
        id: Ulid::from_parts(1_767_225_600_000 + seq, u128::from(seq) | (sensor.len() as u128) << 64),
        sensor_id: sensor.into(),
        site: "north".into(),
        seq,
        events,
    }
}

/// What the first batch tells: the engine is a Windows box; the pump server; a pump on
/// another subnet whose flow to the server is seen behind the router's MAC; the server's
/// HL7 feed to the engine.
fn first_batch() -> Batch {
    batch(
        1,
        vec![
            device(ENGINE, "10.40.0.10", &[(Field::DhcpVendorClass, "MSFT 5.0")], T0_US),
            device(
                PUMP_SERVER,
                "10.40.0.20",
                &[(Field::ListeningPort, "tcp/3613"), (Field::Hostname, "ALARIS-SM-01")],
                T0_US,
            ),
            device(PUMP, "10.50.0.30", &[(Field::DhcpVendorClass, "CareFusion Alaris PCU 8015")], T0_US),
            device(ROUTER, "", &[], T0_US),
            flow((PUMP_SERVER, "10.40.0.20", 40_001), (ENGINE, "10.40.0.10", 2575), "hl7", T0_US + 1_000_000),
            flow((ROUTER, "10.50.0.30", 40_002), (PUMP_SERVER, "10.40.0.20", 3613), "alaris", T0_US + 2_000_000),
        ],
    )
}

/// Later the engine is seen accepting HL7 connections.
fn second_batch() -> Batch {
    batch(
        2,
        vec![
            device(ENGINE, "10.40.0.10", &[(Field::ListeningPort, "tcp/2575")], T0_US + 60_000_000),
            flow((PUMP_SERVER, "10.40.0.20", 40_003), (ENGINE, "10.40.0.10", 2575), "hl7", T0_US + 61_000_000),
        ],
    )
}

fn routed_host(addr: &str, evidence: &[(Field, &str)], ts: u64) -> Event {
    Event::Host(HostObservation {
        site: None,
        ip: ip(addr),
        vlan: Some(40),
        via_mac: Some(ROUTER),
        first_seen_us: ts,
        last_seen_us: ts + 1_000,
        packets: 8,
        bytes: 2_000,
        evidence: evidence.iter().map(|(f, v)| Evidence::new(*f, *v, Proto::Dicom, ts)).collect(),
    })
}

fn lease(mac: MacAddr, addr: &str, ts: u64) -> Event {
    Event::Binding(AddressBinding {
        mac,
        ip: ip(addr),
        vlan: Some(60),
        source: BindingSource::DhcpAck,
        seen_us: ts,
        valid_until_us: Some(ts + HOUR_US),
    })
}

/// The core sensor sees the remote CT (and an unbound host) only behind the router, first.
fn core_batches() -> [Batch; 2] {
    let ct_ev = [(Field::DicomCallingAe, "CT_REMOTE"), (Field::DicomImplClassUid, "1.2.840.113619.6.336")];
    [
        batch_from(
            "core-1",
            1,
            vec![
                routed_host("10.60.0.7", &ct_ev, T0_US + 60_000_000),
                routed_host("10.60.0.9", &[(Field::Hostname, "UNBOUND")], T0_US),
            ],
        ),
        // Later, after the CT's lease ran out and the laptop got the address.
        batch_from(
            "core-1",
            2,
            vec![routed_host("10.60.0.7", &[(Field::TlsSni, "update.example")], T0_US + 5 * HOUR_US / 2)],
        ),
    ]
}

/// The access sensor at the remote subnet: the CT on its segment and both leases.
fn access_batch() -> Batch {
    let mut ct = device(CT, "", &[], T0_US);
    if let Event::Device(d) = &mut ct {
        d.vlans = vec![60];
    }
    batch_from("access-1", 1, vec![ct, lease(CT, "10.60.0.7", T0_US), lease(LAPTOP, "10.60.0.7", T0_US + 2 * HOUR_US)])
}

fn evidence_values(device: &serde_json::Value) -> Vec<String> {
    device["evidence"].as_array().unwrap().iter().map(|e| e["value"].as_str().unwrap().to_string()).collect()
}

/// The steps `Node::accept_batch` takes: flows into the (shared) store, summary through Raft.
async fn ingest(leader: &ServedNode, sink: &dyn FlowSink, b: &Batch) -> u64 {
    let flows: Vec<FlowRecord> = b.flows().cloned().collect();
    sink.write_batch(b.id, &b.sensor_id, &b.site, &flows).await.unwrap();
    assert!(leader.node.propose(Command::ApplyBatch(BatchSummary::from_batch(b))).await.unwrap().applied);
    leader.node.applied_index().await.unwrap()
}

async fn get(client: &reqwest::Client, node: &ServedNode, path: &str) -> (u16, Vec<u8>) {
    let resp = client.get(format!("http://{}{path}", node.addr)).send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

/// Two voting nodes serving the API, node 1 leading, over one flow store (as nodes sharing
/// a ClickHouse server have). Keep the folders alive as long as the nodes.
async fn two_node_cluster() -> (Vec<tempfile::TempDir>, Arc<dyn FlowSink>, ServedNode, ServedNode) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let sink: Arc<dyn FlowSink> = Arc::new(EmbeddedSink::open(dirs[2].path()).unwrap());
    let n1 = ServedNode::start_with_api(1, dirs[0].path(), config(100), sink.clone()).await;
    let n2 = ServedNode::start_with_api(2, dirs[1].path(), config(100), sink.clone()).await;
    assert!(n1.node.initialize_single_if_new().await.unwrap());
    n1.node.wait_for_leader(WAIT).await.unwrap();
    n1.node.add_learner(2, n2.member(), true).await.unwrap();
    n1.node.change_membership(BTreeSet::from([1, 2]), false).await.unwrap();
    (dirs, sink, n1, n2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_answer_the_same_bytes_whatever_they_were_asked_before() {
    let (_dirs, sink, n1, n2) = two_node_cluster().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let engine = format!("/api/v1/devices/{ENGINE}");

    let index = ingest(&n1, sink.as_ref(), &first_batch()).await;
    n2.node.wait_for_applied(index, WAIT).await.unwrap();
    // Only node 1 is asked now; a per-node hysteresis cache would remember "workstation".
    let (status, before) = get(&client, &n1, &engine).await;
    assert_eq!(status, 200);
    let before: Classification = serde_json::from_value(json(&before)["classification"].clone()).unwrap();
    assert_eq!(before.class.value, "workstation");
    assert_eq!(get(&client, &n1, &format!("{engine}/flows")).await.0, 200);

    ingest(&n1, sink.as_ref(), &second_batch()).await;
    // Routed hosts first, their bindings afterwards (another sensor, a later batch).
    for b in core_batches() {
        ingest(&n1, sink.as_ref(), &b).await;
    }
    let ip_keyed = "/api/v1/devices/north:10.60.0.9@40";
    assert_eq!(get(&client, &n1, ip_keyed).await.0, 200, "unbound host is an IP-keyed device");
    let index = ingest(&n1, sink.as_ref(), &access_batch()).await;
    n2.node.wait_for_applied(index, WAIT).await.unwrap();

    let mut paths = vec![
        "/api/v1/inventory".to_string(),
        "/api/v1/sensors".to_string(),
        "/api/v1/flows/totals".to_string(),
        "/api/v1/flows?limit=50".to_string(),
    ];
    for mac in [ENGINE, PUMP_SERVER, PUMP, ROUTER, CT, LAPTOP] {
        paths.push(format!("/api/v1/devices/{mac}"));
        paths.push(format!("/api/v1/devices/{mac}/flows"));
        paths.push(format!("/api/v1/devices/{mac}/history"));
    }
    for id in [ip_keyed, "/api/v1/devices/north:10.60.0.9"] {
        paths.push(id.to_string());
        paths.push(format!("{id}/history"));
        paths.push(format!("{id}/flows"));
    }
    for path in &paths {
        let (s1, b1) = get(&client, &n1, path).await;
        let (s2, b2) = get(&client, &n2, path).await;
        let expected = if path.ends_with("north:10.60.0.9") || path.contains("north:10.60.0.9/") { 404 } else { 200 };
        assert_eq!((s1, s2), (expected, expected), "{path}");
        assert!(
            b1 == b2,
            "{path} differs:\nnode 1: {}\nnode 2: {}",
            String::from_utf8_lossy(&b1),
            String::from_utf8_lossy(&b2)
        );
    }

    // Both answer the class the merged evidence gives; the hysteresis node 1 used to keep
    // would have stayed with "workstation".
    let now = json(&get(&client, &n2, &engine).await.1);
    assert_eq!(now["classification"]["class"]["value"], "hl7_interface_engine");
    let kb = KnowledgeBase::builtin().unwrap();
    let record = n1.node.read_state(|s| s.device(&ENGINE).cloned()).await.unwrap();
    assert_eq!(classify_stable(&kb, Some(&before), &facts_of(&record)).class.value, "workstation");

    // The HL7 feed is judged against the engine's new class, and the routed pump flow names
    // the pump (found by address), not the router whose MAC the frames carried.
    let engine_flows = json(&get(&client, &n1, &format!("{engine}/flows")).await.1);
    assert_eq!(engine_flows["count"], 2);
    for f in engine_flows["flows"].as_array().unwrap() {
        assert_eq!(f["peer_mac"], PUMP_SERVER.to_string());
        assert_eq!(f["peer_class"], "pump_server");
        assert_eq!(f["context"]["tag"], "required", "{f}");
    }
    let server_flows = json(&get(&client, &n1, &format!("/api/v1/devices/{PUMP_SERVER}/flows")).await.1);
    let pump_flow = server_flows["flows"].as_array().unwrap().iter().find(|f| f["flow"]["app"] == "alaris").unwrap();
    assert_eq!(pump_flow["peer_mac"], PUMP.to_string());
    assert_eq!(pump_flow["peer_class"], "infusion_pump");
    let totals = json(&get(&client, &n2, "/api/v1/flows/totals").await.1);
    assert_eq!(totals["store"]["rows"], 3);
    assert_eq!(totals["replicated"]["flows"], 3);

    // The CT's routed DICOM identity moved to its MAC record when the binding arrived; the
    // evidence after the lease was handed on went to the laptop; the two stay apart.
    let ct = json(&get(&client, &n2, &format!("/api/v1/devices/{CT}")).await.1);
    assert_eq!(evidence_values(&ct), ["CT_REMOTE", "1.2.840.113619.6.336"]);
    let routed: Vec<_> = ct["seen_by"].as_array().unwrap().iter().filter(|s| s["how"] == "routed").collect();
    assert_eq!(routed.len(), 1, "{ct}");
    assert_eq!(
        (routed[0]["sensor"].as_str(), routed[0]["via_mac"].as_str()),
        (Some("core-1"), Some(&*ROUTER.to_string()))
    );
    assert!(ct["seen_by"].as_array().unwrap().iter().any(|s| s["how"] == "segment" && s["vlan"] == 60));
    let laptop = json(&get(&client, &n2, &format!("/api/v1/devices/{LAPTOP}")).await.1);
    assert_eq!(evidence_values(&laptop), ["update.example"]);
    assert_eq!(laptop["locally_administered"], true);
    let history = json(&get(&client, &n1, &format!("/api/v1/devices/{CT}/history")).await.1);
    let kinds: Vec<_> = history["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"ip_bound") && kinds.contains(&"ip_moved"), "{history}");
    let moved = history["events"].as_array().unwrap().iter().find(|e| e["kind"] == "ip_moved").unwrap();
    assert_eq!(moved["mac"], LAPTOP.to_string());
    // The inventory lists the unbound host with its key, and the bound one not at all.
    let inventory = json(&get(&client, &n2, "/api/v1/inventory").await.1);
    let ids: Vec<_> =
        inventory["devices"].as_array().unwrap().iter().filter(|d| d["key"] == "ip").map(|d| d["id"].clone()).collect();
    assert_eq!(ids, ["north:10.60.0.9@40"]);

    n1.stop().await;
    n2.stop().await;
}

/// `x-wardline-consistency: linearizable` (read-index): the leader answers after a quorum
/// confirmed it, with every acknowledged write visible; a follower names the leader (421)
/// instead of answering from state that may lag; a bad value is a 400; a local read on
/// the follower still answers from its own state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_go_through_the_leader_and_see_every_acked_write() {
    let (_dirs, sink, n1, n2) = two_node_cluster().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let read = |node: &ServedNode, consistency: &'static str| {
        client
            .get(format!("http://{}/api/v1/sensors", node.addr))
            .header(wardline_aggregator::api::CONSISTENCY_HEADER, consistency)
            .send()
    };

    ingest(&n1, sink.as_ref(), &first_batch()).await;
    let resp = read(&n1, "linearizable").await.unwrap();
    assert_eq!(resp.status(), 200);
    let sensors: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(sensors["sensors"]["ward-b-1"]["last_seq"], 1, "{sensors}");

    let resp = read(&n2, "linearizable").await.unwrap();
    assert_eq!(resp.status(), 421);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["leader_id"], 1, "{body}");
    assert_eq!(body["leader_api_addr"], n1.addr.as_str(), "{body}");

    assert_eq!(read(&n2, "local").await.unwrap().status(), 200);
    let resp = read(&n1, "eventually").await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("linearizable"), "{body}");

    // Without its peer the leader cannot confirm it still leads: 503, never a stale answer.
    n2.stop().await;
    assert_eq!(read(&n1, "linearizable").await.unwrap().status(), 503);
    n1.stop().await;
}
