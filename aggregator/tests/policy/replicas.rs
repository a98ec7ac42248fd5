//! Every node of a real three-node cluster answers the same groups, members, membership
//! history and blast radius (decision 0031): policy applied through the API of one node, a
//! feed imported, the leader's refresh moving pumps into "vulnerable infusion pumps".

use crate::blast::{alaris_advisory_import, enc, policy, ward_batch, VULNERABLE, WS};
use crate::raft_support::{config, post_api, ServedNode, WAIT};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::policy::refresh::refresh_once;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_intel::KnowledgeBase;

async fn get(node: &ServedNode, path: &str) -> (u16, Vec<u8>) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(format!("http://{}{path}", node.addr)).send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_answer_the_same_groups_history_and_blast_radius() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let sink = Arc::new(EmbeddedSink::open(dirs[3].path()).unwrap());
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        nodes.push(ServedNode::start_with_api(id, dirs[id as usize - 1].path(), config(100), sink.clone()).await);
    }
    let leader = nodes[0].node.clone();
    assert!(leader.initialize_single_if_new().await.unwrap());
    leader.wait_for_leader(WAIT).await.unwrap();
    for n in &nodes[1..] {
        leader.add_learner(n.node.node_id(), n.member(), true).await.unwrap();
    }
    leader.change_membership(BTreeSet::from([1, 2, 3]), false).await.unwrap();

    assert!(leader.propose(ward_batch()).await.unwrap().applied);
    for (deny, message) in [(true, "closed"), (false, "open")] {
        let (status, v) =
            post_api(&nodes[0], "/api/v1/policy/apply", &json!({"text": policy(deny), "message": message})).await;
        assert_eq!(status, 201, "{v}");
    }
    let (status, v) =
        post_api(&nodes[0], "/api/v1/vuln/import", &serde_json::to_value(alaris_advisory_import()).unwrap()).await;
    assert_eq!(status, 200, "{v}");
    let kb = Arc::new(KnowledgeBase::builtin().unwrap());
    let query = QueryService::new(leader.clone(), sink.clone(), kb, Arc::new(IngestStats::default()));
    assert!(refresh_once(&query).await.unwrap());

    let index = leader.applied_index().await.unwrap();
    for n in &nodes[1..] {
        n.node.wait_for_applied(index, WAIT).await.unwrap();
    }
    let paths = [
        "/api/v1/groups".to_string(),
        format!("/api/v1/groups/{}", enc(VULNERABLE)),
        format!("/api/v1/groups/{}/history", enc(VULNERABLE)),
        "/api/v1/groups/pumps/history".to_string(),
        format!("/api/v1/blast?device={WS}&candidate=1"),
        format!("/api/v1/blast?group={}", enc(VULNERABLE)),
    ];
    for path in &paths {
        let first = get(&nodes[0], path).await;
        assert_eq!(first.0, 200, "{path}: {}", String::from_utf8_lossy(&first.1));
        for n in &nodes[1..] {
            assert_eq!(get(n, path).await, first, "{path} answers the same bytes on every node");
        }
    }
    let history: serde_json::Value = serde_json::from_slice(&get(&nodes[2], &paths[2]).await.1).unwrap();
    assert_eq!(history["kept"], 2, "both pumps joined on the refresh: {history}");
    for n in nodes {
        n.stop().await;
    }
}
