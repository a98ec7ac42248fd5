//! One aggregator Raft node: proposals apply, duplicates do not, and a restart over the
//! same data directory keeps the inventory and watermarks without re-initializing.

use crate::raft_support::{batch, config, mac, open_unserved, WAIT};
use wardline_aggregator::raft::RaftConfig;
use wardline_aggregator::state::ClusterState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_dedup_and_restart_keeps_state() {
    let dir = tempfile::tempdir().unwrap();

    let node = open_unserved(1, dir.path(), RaftConfig::default()).await.unwrap();
    assert!(node.initialize_single_if_new().await.unwrap(), "a fresh node initializes");
    assert_eq!(node.wait_for_leader(WAIT).await.unwrap(), 1);

    for seq in 1..=3 {
        let resp = node.propose(batch("bldg-a", seq, 1)).await.unwrap();
        assert!(resp.applied, "seq {seq} is new");
    }
    // A re-sent batch and an older one are acknowledged but not applied.
    assert!(!node.propose(batch("bldg-a", 3, 1)).await.unwrap().applied);
    assert!(!node.propose(batch("bldg-a", 2, 1)).await.unwrap().applied);
    // A forward gap is allowed.
    assert!(node.propose(batch("bldg-a", 7, 2)).await.unwrap().applied);

    let before: ClusterState = node.read_state(|s| s.clone()).await;
    let dev = &before.devices()[&mac(1)];
    assert_eq!(dev.packets, 30, "three applied batches of 10 packets, duplicates not counted");
    assert_eq!(dev.hostname(), Some("PUMP-01"));
    let sensor = &before.sensors()["bldg-a"];
    assert_eq!((sensor.last_seq, sensor.batches_applied, sensor.seq_gaps), (7, 4, 1));
    assert_eq!(sensor.flows, 8);

    node.shutdown().await;
    drop(node);

    let node = open_unserved(1, dir.path(), RaftConfig::default()).await.unwrap();
    assert!(!node.initialize_single_if_new().await.unwrap(), "a restarted node must not re-initialize");
    assert_eq!(node.wait_for_leader(WAIT).await.unwrap(), 1);
    // Everything committed before the restart is applied again by the time a new
    // proposal applies (the log is replayed in order).
    let after_dup = node.propose(batch("bldg-a", 7, 2)).await.unwrap();
    assert!(!after_dup.applied, "the watermark survived the restart");
    assert_eq!(node.read_state(|s| s.clone()).await, before);
    assert!(node.propose(batch("bldg-a", 8, 1)).await.unwrap().applied);
    assert_eq!(node.read_state(|s| s.watermark("bldg-a")).await, 8);
    let m = node.metrics();
    assert_eq!(m.membership_config.membership().voter_ids().collect::<Vec<_>>(), vec![1]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_snapshot_and_purged_log_rebuilds_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshot every 4 entries and keep no log behind it: after a restart the state must
    // come from the stored snapshot plus the replayed tail.
    let node = open_unserved(1, dir.path(), config(4)).await.unwrap();
    node.initialize_single_if_new().await.unwrap();
    node.wait_for_leader(WAIT).await.unwrap();
    for seq in 1..=13 {
        assert!(node.propose(batch("bldg-b", seq, (seq % 3) as u8)).await.unwrap().applied);
    }
    node.raft()
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some() && m.snapshot.is_some(), "a snapshot and a purged log")
        .await
        .expect("snapshot and purge happen");
    let before = node.read_state(|s| s.clone()).await;
    let last_index = node.metrics().last_log_index.unwrap();
    node.shutdown().await;
    drop(node);

    let node = open_unserved(1, dir.path(), config(4)).await.unwrap();
    assert!(!node.initialize_single_if_new().await.unwrap());
    node.wait_for_leader(WAIT).await.unwrap();
    node.wait_for_applied(last_index, WAIT).await.unwrap();
    assert_eq!(node.read_state(|s| s.clone()).await, before);
    assert_eq!(before.sensors()["bldg-b"].batches_applied, 13);
    assert!(!node.propose(batch("bldg-b", 13, 0)).await.unwrap().applied);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_belongs_to_one_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_unserved(1, dir.path(), RaftConfig::default()).await.unwrap();
    node.shutdown().await;
    drop(node);
    let err = match open_unserved(2, dir.path(), RaftConfig::default()).await {
        Ok(_) => panic!("reusing node 1's directory as node 2 must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("belongs to Raft node 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_timing_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RaftConfig { heartbeat_interval_ms: 900, election_timeout_min_ms: 500, ..RaftConfig::default() };
    let err = match open_unserved(1, dir.path(), cfg).await {
        Ok(_) => panic!("heartbeat above the election timeout must be refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("heartbeat_interval_ms"), "{err}");
}
