//! Risk history on a two-node cluster (decision 0043): the leader's recorder scores the
//! inventory, a vulnerability feed import and a risky behaviour (a Telnet login accepted by
//! the pump) each move the pump's score, and both nodes answer the same history with the
//! time and reason of each move; a pass with nothing new records nothing; a device on a VLAN
//! its class was not learned on is alerted by the recorder's pass, alike on both nodes.

use crate::raft_support::{self, config, post_api, ServedNode, WAIT};
use crate::{feeds_dir, kev_file, pump_batch, PUMP, PUMP_IP, SERVER, T0_US};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use ulid::Ulid;
use wardline_aggregator::cli::risk::import_requests;
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::risk::history::record_once;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::state::{BatchSummary, Command, IngestBatch};
use wardline_common::{Field, Proto};
use wardline_intel::KnowledgeBase;

async fn get(node: &ServedNode, path: &str) -> (u16, Vec<u8>) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(format!("http://{}{path}", node.addr)).send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

async fn get_json(node: &ServedNode, path: &str) -> Value {
    let (status, body) = get(node, path).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn points(v: &Value) -> &Vec<Value> {
    v["points"].as_array().unwrap_or_else(|| panic!("no points: {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_imports_and_risky_behaviour_appear_in_the_replicated_history_with_time_and_reason() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let sink = Arc::new(EmbeddedSink::open(dirs[2].path()).unwrap());
    let n1 = ServedNode::start_with_api(1, dirs[0].path(), config(100), sink.clone()).await;
    let n2 = ServedNode::start_with_api(2, dirs[1].path(), config(100), sink.clone()).await;
    assert!(n1.node.initialize_single_if_new().await.unwrap());
    n1.node.wait_for_leader(WAIT).await.unwrap();
    n1.node.add_learner(2, n2.member(), true).await.unwrap();
    n1.node.change_membership(BTreeSet::from([1, 2]), false).await.unwrap();
    // The leader's recorder, as `node::serve` runs it (the test calls one pass at a time).
    let kb = Arc::new(KnowledgeBase::builtin().unwrap());
    let leader = QueryService::new(n1.node.clone(), sink.clone(), kb, Arc::new(IngestStats::default()));

    // First pass: the pump and the server get their first points; the site its roll-up.
    assert!(n1.node.propose(pump_batch()).await.unwrap().applied);
    let before_first = wardline_aggregator::auth::now_ms();
    let first = record_once(&leader, "re-score", before_first).await.unwrap();
    assert_eq!((first.changes, first.sites, first.entries), (2, 1, 1), "{first:?}");
    let pump_path = format!("/api/v1/devices/{PUMP}/risk/history");
    let h = get_json(&n1, &pump_path).await;
    assert_eq!(points(&h).len(), 1, "{h:#}");
    let p0 = &points(&h)[0];
    assert_eq!(p0["at_ms"], before_first);
    assert_eq!(p0["as_of"], "2026-01-01", "the data day of the last packet");
    assert!(p0["reason"].as_str().unwrap().starts_with("re-score: first score"), "{p0}");
    // Nothing moved: nothing recorded.
    let again = record_once(&leader, "re-score", before_first + 1).await.unwrap();
    assert_eq!(again.entries, 0, "{again:?}");

    // A feed import naming the pump's model: the import's own pass records the pump's new
    // score with the import as its reason; the server has no advisory and keeps one point.
    let requests = import_requests(&feeds_dir().join("icsma"), Some(&kev_file())).unwrap();
    let (status, answer) = post_api(&n1, "/api/v1/vuln/import", &serde_json::to_value(&requests[0]).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["risk_history"]["changes"], 1, "only the pump's score moved: {}", answer["risk_history"]);
    let import_id = answer["import_id"].as_str().unwrap().to_string();
    let h = get_json(&n1, &pump_path).await;
    assert_eq!(points(&h).len(), 2, "{h:#}");
    let (p0, p1) = (&points(&h)[0], &points(&h)[1]);
    assert!(p1["score"].as_f64() > p0["score"].as_f64(), "{h:#}");
    assert!(p1["at_ms"].as_u64() >= p0["at_ms"].as_u64());
    let reason = p1["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("vulnerability feed import {import_id}")), "{reason}");
    assert!(reason.contains("+vulnerability"), "{reason}");
    assert!(h["factors"].as_array().unwrap().iter().any(|f| f["factor"] == "vulnerability"), "{h:#}");
    let server = get_json(&n1, &format!("/api/v1/devices/{SERVER}/risk/history")).await;
    assert_eq!(points(&server).len(), 1, "{server:#}");

    // A risky behaviour: the pump accepts a Telnet login (evidence the sensor reports).
    let telnet = raft_support::device_on_vlan_40(
        PUMP,
        PUMP_IP,
        T0_US + 1,
        Proto::Telnet,
        &[(Field::ListeningPort, "tcp/23"), (Field::CleartextLogin, "telnet")],
    );
    let mut summary = BatchSummary::empty(Ulid::from_parts(2, 42), "ward-1".into(), "ward".into(), 2);
    summary.devices = vec![telnet];
    assert!(
        n1.node.propose(Command::ApplyBatches(vec![IngestBatch { summary, flows: vec![] }])).await.unwrap().applied
    );
    let later = wardline_aggregator::auth::now_ms();
    let pass = record_once(&leader, "re-score", later).await.unwrap();
    assert_eq!((pass.changes, pass.entries), (1, 1), "{pass:?}");
    let h = get_json(&n1, &pump_path).await;
    let p2 = points(&h).last().unwrap();
    assert_eq!(points(&h).len(), 3);
    assert!(p2["at_ms"].as_u64() >= Some(later), "{p2}");
    let reason = p2["reason"].as_str().unwrap();
    assert!(reason.starts_with("re-score: ") && reason.contains("+cleartext_credentials"), "{reason}");
    assert!(p2["score"].as_f64() > points(&h)[1]["score"].as_f64());

    // The site's roll-up over time: one point per pass that changed it, max rising.
    let sites = get_json(&n1, "/api/v1/risk/history?site=ward").await;
    let ward = &sites["sites"][0];
    assert_eq!(ward["site"], "ward");
    let maxima: Vec<f64> = points(ward).iter().map(|p| p["max"].as_f64().unwrap()).collect();
    assert_eq!(maxima.len(), 3, "{sites:#}");
    assert!(maxima.windows(2).all(|w| w[0] < w[1]), "{maxima:?}");
    assert_eq!(points(ward)[2]["max"], p2["score"], "the pump is the site's riskiest device");
    assert_eq!(get(&n1, "/api/v1/risk/history?site=nowhere").await.0, 404);
    assert_eq!(get(&n1, "/api/v1/devices/02:00:00:00:00:99/risk/history").await.0, 404);
    assert_eq!(get(&n1, "/api/v1/devices/not-a-device/risk/history").await.0, 400);

    // Eight days on (the sites learned for seven), the pump reports from VLAN 60, where no
    // infusion pump was learned at its site: the next pass opens a `wrong_segment` alert.
    let mut moved = raft_support::device_on_vlan_40(PUMP, PUMP_IP, T0_US + 8 * 86_400_000_000, Proto::Dhcp, &[]);
    moved.vlans = vec![60];
    let mut summary = BatchSummary::empty(Ulid::from_parts(3, 42), "ward-1".into(), "ward".into(), 3);
    summary.devices = vec![moved];
    assert!(
        n1.node.propose(Command::ApplyBatches(vec![IngestBatch { summary, flows: vec![] }])).await.unwrap().applied
    );
    let pass = record_once(&leader, "re-score", wardline_aggregator::auth::now_ms()).await.unwrap();
    assert_eq!(pass.alerts, 1, "{pass:?}");
    let again = record_once(&leader, "re-score", wardline_aggregator::auth::now_ms()).await.unwrap();
    assert_eq!(again.alerts, 0, "an alerted sighting is not proposed again: {again:?}");

    // Replicated: the follower answers the same bytes and holds the same alert.
    let index = n1.node.applied_index().await.unwrap();
    n2.node.wait_for_applied(index, WAIT).await.unwrap();
    for path in [pump_path.as_str(), "/api/v1/risk/history", "/api/v1/risk/history?site=ward"] {
        let (a, b) = (get(&n1, path).await, get(&n2, path).await);
        assert_eq!(a.0, 200, "{path}");
        assert_eq!(a, b, "{path} answers the same bytes on both nodes");
    }
    let wrong_segment = |s: &wardline_aggregator::state::ClusterState| -> Vec<(String, String, String)> {
        s.alerts()
            .alerts()
            .values()
            .filter(|a| a.kind == wardline_aggregator::state::alerts::AlertKind::WrongSegment)
            .map(|a| (a.device.clone(), a.target.clone(), a.evidence.clone()))
            .collect()
    };
    let (a1, a2) = (n1.node.read_state(wrong_segment).await, n2.node.read_state(wrong_segment).await);
    assert_eq!(a1, a2);
    assert_eq!(a1.len(), 1, "{a1:?}");
    assert_eq!((a1[0].0.as_str(), a1[0].1.as_str()), (&*PUMP.to_string(), "vlan 60"));
    assert!(a1[0].2.contains("learned on VLANs 40"), "{}", a1[0].2);
    n2.stop().await;
    n1.stop().await;
}
