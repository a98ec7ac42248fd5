//! Two voting nodes apply the same log: their alerts (and the API's answers about them) are
//! identical at the same applied index, triage included.

use crate::raft_support::{config, ServedNode, WAIT};
use crate::scenario;
use std::collections::BTreeSet;
use std::sync::Arc;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::sink::FlowSink;
use wardline_aggregator::state::alerts::{AlertAction, AlertKind, AlertState, Triage};
use wardline_aggregator::state::Command;

async fn get(node: &ServedNode, path: &str) -> (u16, Vec<u8>) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(format!("http://{}{path}", node.addr)).send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_holds_the_same_alerts_at_the_same_applied_index() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let sink: Arc<dyn FlowSink> = Arc::new(EmbeddedSink::open(dirs[2].path()).unwrap());
    let n1 = ServedNode::start_with_api(1, dirs[0].path(), config(100), sink.clone()).await;
    let n2 = ServedNode::start_with_api(2, dirs[1].path(), config(100), sink.clone()).await;
    assert!(n1.node.initialize_single_if_new().await.unwrap());
    n1.node.wait_for_leader(WAIT).await.unwrap();
    n1.node.add_learner(2, n2.member(), true).await.unwrap();
    n1.node.change_membership(BTreeSet::from([1, 2]), false).await.unwrap();

    for cmd in scenario() {
        n1.node.propose(cmd).await.unwrap();
    }
    let first = n1.node.read_state(|s| s.alerts().alerts().values().next().map(|a| a.id)).await.unwrap();
    let t = Triage { id: first, action: AlertAction::Acknowledged, by: "ana".into(), at_ms: 1, note: "on it".into() };
    assert!(n1.node.propose(Command::AlertTriage(t)).await.unwrap().applied);

    let index = n1.node.applied_index().await.unwrap();
    n2.node.wait_for_applied(index, WAIT).await.unwrap();
    let (s1, s2) = (n1.node.applied_state_copy().await, n2.node.applied_state_copy().await);
    assert_eq!(s1.0, s2.0, "both at the same applied log id");
    assert_eq!(s1.2.alerts(), s2.2.alerts(), "alerts, rules, SIEM queue and watermark alike");
    assert_eq!(s1.2.baselines(), s2.2.baselines());

    let kinds: BTreeSet<AlertKind> = s1.2.alerts().alerts().values().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            AlertKind::NewProtocol,
            AlertKind::NewExternalDestination,
            AlertKind::CleartextCredentials,
            AlertKind::NewDeviceOnClinicalVlan,
            AlertKind::DeviceMoved,
        ])
    );
    assert_eq!(s1.2.alerts().get(first).unwrap().state, AlertState::Acknowledged);

    for path in ["/api/v1/alerts", &format!("/api/v1/alerts/{first}"), "/api/v1/alerts?state=open&severity=high,medium"]
    {
        let (a, b) = (get(&n1, path).await, get(&n2, path).await);
        assert_eq!(a.0, 200, "{path}: {}", String::from_utf8_lossy(&a.1));
        assert_eq!(a, b, "{path} answers the same bytes on both nodes");
    }
    let open: serde_json::Value = serde_json::from_slice(&get(&n2, "/api/v1/alerts?state=open").await.1).unwrap();
    assert_eq!(open["matched"], 5, "six alerts, one acknowledged: {open}");
    assert!(open["alerts"].as_array().unwrap().iter().all(|a| a["state"] == "open"));
    // Paging: newest first, `matched` counts the whole result.
    let page: serde_json::Value = serde_json::from_slice(&get(&n2, "/api/v1/alerts?offset=1&limit=2").await.1).unwrap();
    let ids: Vec<u64> = page["alerts"].as_array().unwrap().iter().map(|a| a["id"].as_u64().unwrap()).collect();
    assert_eq!((page["matched"].as_u64(), ids), (Some(6), vec![5, 4]), "{page}");
    for bad in
        ["/api/v1/alerts?state=closed", "/api/v1/alerts?limit=0", "/api/v1/alerts?colour=red", "/api/v1/alerts/x"]
    {
        let (status, body) = get(&n2, bad).await;
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(get(&n2, "/api/v1/alerts/99").await.0, 404);
    n2.stop().await;
    n1.stop().await;
}
