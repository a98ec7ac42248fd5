//! Raft nodes in one process talking Raft RPC over loopback HTTPS with mutual TLS: the
//! cluster lifecycle through the API (init, join, leave, replace), replication, snapshot
//! transfer in chunks to nodes that join after the log was purged, leader redirection
//! and failover.

use crate::raft_support::{batch, config, mac, post_api, ServedNode, WAIT};
use wardline_aggregator::raft::ProposeError;

/// Ids of voters and learners as `node` sees them.
fn roles(n: &ServedNode) -> (Vec<u64>, Vec<u64>) {
    let m = n.node.metrics();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let learners: Vec<u64> = membership.learner_ids().collect();
    (voters, learners)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_init_join_snapshot_redirect_and_fail_over() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Snapshots every 3 entries with no log kept: nodes 2 and 3 join after the leader
    // purged its log, so they can only catch up through a snapshot transfer.
    let n1 = ServedNode::start(1, dirs[0].path(), config(3)).await;
    let n2 = ServedNode::start(2, dirs[1].path(), config(3)).await;
    let n3 = ServedNode::start(3, dirs[2].path(), config(3)).await;

    let (status, init) = post_api(&n1, "/api/v1/cluster/init", &serde_json::json!({})).await;
    assert_eq!(status, 200, "{init}");
    let cluster_id = init["cluster_id"].as_str().unwrap().to_string();
    assert_eq!(n1.node.cluster_id().as_deref(), Some(cluster_id.as_str()));
    // A node never bootstraps twice.
    let (status, again) = post_api(&n1, "/api/v1/cluster/init", &serde_json::json!({})).await;
    assert_eq!(status, 409, "{again}");
    assert!(again["error"].as_str().unwrap().contains(&cluster_id), "{again}");

    assert_eq!(n1.node.wait_for_leader(WAIT).await.unwrap(), 1);
    for seq in 1..=7 {
        assert!(n1.node.propose(batch("bldg-c", seq, (seq % 4) as u8)).await.unwrap().applied);
    }
    n1.node
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some(), "leader purged its log")
        .await
        .expect("leader purges after snapshotting");

    for n in [&n2, &n3] {
        let (status, body) = post_api(&n1, "/api/v1/cluster/join", &n.join_request()).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(roles(&n1), (vec![1, 2, 3], vec![]));
    for n in [&n2, &n3] {
        n.node
            .raft()
            .wait(Some(WAIT))
            .metrics(|m| m.snapshot.is_some(), "an installed snapshot")
            .await
            .unwrap_or_else(|e| panic!("node {} caught up without a snapshot: {e}", n.node.node_id()));
        assert!(n.node.snapshot_chunks_received() >= 1);
        // The joined node took the cluster's id, and its replicated state carries it.
        assert_eq!(n.node.cluster_id().as_deref(), Some(cluster_id.as_str()));
        assert_eq!(n.node.replicated_cluster_id().await.as_deref(), Some(cluster_id.as_str()));
    }

    // A new proposal is replicated to, and applied by, every member.
    assert!(n1.node.propose(batch("bldg-c", 8, 9)).await.unwrap().applied);
    let index = n1.node.applied_index().await.unwrap();
    let leader_state = n1.node.read_state(|s| s.clone()).await;
    assert_eq!(leader_state.sensors()["bldg-c"].last_seq, 8);
    assert!(leader_state.devices().contains_key(&mac(9)));
    for n in [&n2, &n3] {
        n.node.wait_for_applied(index, WAIT).await.unwrap();
        assert_eq!(n.node.read_state(|s| s.clone()).await, leader_state, "node {}", n.node.node_id());
        assert_eq!(roles(n).0, vec![1, 2, 3]);
    }

    // A follower refuses writes and names the leader's API address; so do its cluster routes.
    match n2.node.propose(batch("bldg-c", 9, 1)).await {
        Err(ProposeError::NotLeader { leader_id, leader_addr, .. }) => {
            assert_eq!(leader_id, Some(1));
            assert_eq!(leader_addr.as_deref(), Some(n1.addr.as_str()));
        }
        other => panic!("a follower must answer NotLeader, got {other:?}"),
    }
    let (status, body) = post_api(&n2, "/api/v1/cluster/leave", &serde_json::json!({"node_id": 3})).await;
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["leader_api_addr"], serde_json::json!(n1.addr));

    // Every member's status names the same cluster, members and leader.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for n in [&n1, &n2, &n3] {
        let s: serde_json::Value =
            client.get(format!("http://{}/api/v1/cluster/status", n.addr)).send().await.unwrap().json().await.unwrap();
        assert_eq!(s["cluster_id"], serde_json::json!(cluster_id));
        assert_eq!(s["leader_id"], 1);
        assert_eq!(s["members"].as_array().unwrap().len(), 3);
        assert_eq!(s["refused_rpcs"]["not_member"], 0, "{s}");
    }

    // The leader dies; the other two elect a new one that keeps the watermark.
    n1.stop().await;
    let new_leader = n2
        .node
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| matches!(m.current_leader, Some(l) if l != 1), "a new leader")
        .await
        .expect("the survivors elect a leader")
        .current_leader
        .unwrap();
    let (leader, follower) = if new_leader == 2 { (&n2, &n3) } else { (&n3, &n2) };
    assert!(!leader.node.propose(batch("bldg-c", 8, 9)).await.unwrap().applied, "still a duplicate");
    assert!(leader.node.propose(batch("bldg-c", 9, 1)).await.unwrap().applied);
    let index = leader.node.applied_index().await.unwrap();
    follower.node.wait_for_applied(index, WAIT).await.unwrap();
    assert_eq!(follower.node.read_state(|s| s.watermark("bldg-c")).await, 9);
    assert_eq!(follower.node.read_state(|s| s.clone()).await, leader.node.read_state(|s| s.clone()).await);

    n2.stop().await;
    n3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_and_replace_keep_the_cluster_and_the_new_node_catches_up_from_a_snapshot() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let n1 = ServedNode::start(1, dirs[0].path(), config(3)).await;
    let n2 = ServedNode::start(2, dirs[1].path(), config(3)).await;
    let n3 = ServedNode::start(3, dirs[2].path(), config(3)).await;
    let n4 = ServedNode::start(4, dirs[3].path(), config(3)).await;
    assert!(n1.node.initialize_single_if_new().await.unwrap());
    n1.node.wait_for_leader(WAIT).await.unwrap();
    for n in [&n2, &n3] {
        let (status, body) = post_api(&n1, "/api/v1/cluster/join", &n.join_request()).await;
        assert_eq!(status, 200, "{body}");
    }

    // Node 3 leaves: the others keep committing without it, and refuse its RPCs.
    let (status, body) = post_api(&n1, "/api/v1/cluster/leave", &serde_json::json!({"node_id": 3})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(roles(&n1), (vec![1, 2], vec![]));
    let (status, body) = post_api(&n1, "/api/v1/cluster/leave", &serde_json::json!({"node_id": 3})).await;
    assert_eq!(status, 400, "a non-member cannot leave: {body}");
    for seq in 1..=8 {
        assert!(n1.node.propose(batch("bldg-e", seq, seq as u8)).await.unwrap().applied);
    }
    n1.node.raft().wait(Some(WAIT)).metrics(|m| m.purged.is_some(), "leader purged its log").await.unwrap();

    // Node 2 is replaced by node 4, which can only catch up from a snapshot.
    let req = serde_json::json!({"old": 2, "new": n4.join_request()});
    let (status, body) = post_api(&n1, "/api/v1/cluster/replace", &req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(roles(&n1), (vec![1, 4], vec![]));
    n4.node.raft().wait(Some(WAIT)).metrics(|m| m.snapshot.is_some(), "an installed snapshot").await.unwrap();
    assert!(n1.node.propose(batch("bldg-e", 9, 1)).await.unwrap().applied);
    let index = n1.node.applied_index().await.unwrap();
    n4.node.wait_for_applied(index, WAIT).await.unwrap();
    assert_eq!(n4.node.read_state(|s| s.clone()).await, n1.node.read_state(|s| s.clone()).await);
    n4.node.raft().wait(Some(WAIT)).metrics(|m| m.current_leader == Some(1), "leader known").await.unwrap();

    assert_eq!(roles(&n4), (vec![1, 4], vec![]));
    for n in [n1, n2, n3, n4] {
        n.stop().await;
    }
}
