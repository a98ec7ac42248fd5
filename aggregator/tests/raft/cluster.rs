//! Three Raft nodes in one process, talking Raft RPC over loopback HTTP: membership
//! changes, replication of proposals to every state machine, snapshot transfer to nodes
//! that join after the log was purged, leader redirection and failover.

use crate::raft_support::{batch, config, mac, ServedNode, WAIT};
use std::collections::BTreeSet;
use wardline_aggregator::raft::ProposeError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_snapshot_redirect_and_fail_over() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Snapshots every 3 entries with no log kept: nodes 2 and 3 join after the leader
    // purged its log, so they can only catch up through /raft/snapshot.
    let n1 = ServedNode::start(1, dirs[0].path(), config(3)).await;
    let n2 = ServedNode::start(2, dirs[1].path(), config(3)).await;
    let n3 = ServedNode::start(3, dirs[2].path(), config(3)).await;

    assert!(n1.node.initialize_single_if_new().await.unwrap());
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

    n1.node.add_learner(2, n2.addr.clone(), true).await.unwrap();
    n1.node.add_learner(3, n3.addr.clone(), true).await.unwrap();
    n1.node.change_membership(BTreeSet::from([1, 2, 3]), false).await.unwrap();
    for n in [&n2, &n3] {
        // Metrics are published asynchronously, so wait rather than sample.
        n.node
            .raft()
            .wait(Some(WAIT))
            .metrics(|m| m.snapshot.is_some(), "an installed snapshot")
            .await
            .unwrap_or_else(|e| panic!("node {} caught up without a snapshot: {e}", n.node.node_id()));
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
        let voters: Vec<u64> = n.node.metrics().membership_config.membership().voter_ids().collect();
        assert_eq!(voters, vec![1, 2, 3]);
    }

    // A follower refuses writes and names the leader's API address.
    match n2.node.propose(batch("bldg-c", 9, 1)).await {
        Err(ProposeError::NotLeader { leader_id, leader_addr }) => {
            assert_eq!(leader_id, Some(1));
            assert_eq!(leader_addr.as_deref(), Some(n1.addr.as_str()));
        }
        other => panic!("a follower must answer NotLeader, got {other:?}"),
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
async fn garbage_rpc_bodies_get_a_clear_400_and_the_node_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let n = ServedNode::start(1, dir.path(), config(100)).await;
    n.node.initialize_single_if_new().await.unwrap();
    n.node.wait_for_leader(WAIT).await.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for path in ["/raft/append", "/raft/vote", "/raft/snapshot"] {
        for body in [vec![], vec![0xff; 64], b"{\"json\": true}".to_vec()] {
            let resp = client.post(format!("http://{}{path}", n.addr)).body(body).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{path}");
            let text = resp.text().await.unwrap();
            assert!(text.contains("undecodable"), "{path}: {text}");
        }
    }
    assert!(n.node.propose(batch("bldg-d", 1, 1)).await.unwrap().applied);
    n.stop().await;
}
