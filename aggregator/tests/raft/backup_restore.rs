//! Backup and restore over real Raft nodes (mutual TLS on loopback): an online backup
//! restored as a new cluster, the offline backup of a stopped node, recovery after losing
//! a majority (nodes that join the restored cluster install its state from a snapshot),
//! and corrupt backups refused. Certificate rotation and the commands are tested with
//! real processes in `backup_processes`.

use crate::raft_support::{batch, config, mac, post_api, ServedNode, WAIT};
use std::path::Path;
use wardline_aggregator::cluster::{self, backup};
use wardline_aggregator::state::ClusterState;

async fn get_backup(n: &ServedNode) -> Vec<u8> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(format!("http://{}/api/v1/cluster/backup", n.addr)).send().await.expect("API reachable");
    assert_eq!(resp.status().as_u16(), 200);
    resp.bytes().await.unwrap().to_vec()
}

async fn state(n: &ServedNode) -> ClusterState {
    n.node.read_state(|s| s.clone()).await
}

/// Found a new cluster from `file` on node `id` in the empty `dir`, as `run --init
/// --restore` does; returns the node and the new cluster id.
async fn restore(id: u64, dir: &Path, file: &Path, snapshot_every: u64) -> (ServedNode, String) {
    let r = backup::prepare_restore(dir, file, None).expect("restore accepted");
    assert!(!r.resumed);
    let n = ServedNode::start(id, dir, config(snapshot_every)).await;
    let cluster_id = cluster::init(&n.node).await.expect("new cluster");
    backup::finish_restore(&n.node).await.expect("restored snapshot built and log purged");
    (n, cluster_id)
}

/// Join `new` to the cluster led by `leader` and check it installed a snapshot and holds
/// exactly the leader's state.
async fn join_from_snapshot(leader: &ServedNode, new: &ServedNode) {
    let (status, body) = post_api(leader, "/api/v1/cluster/join", &new.join_request()).await;
    assert_eq!(status, 200, "{body}");
    new.node
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "an installed snapshot")
        .await
        .expect("the joined node installs the restored state from a snapshot");
    assert!(new.node.snapshot_chunks_received() >= 1);
}

async fn same_state_everywhere(nodes: &[&ServedNode]) -> ClusterState {
    let index = nodes[0].node.applied_index().await.unwrap();
    let expected = state(nodes[0]).await;
    for n in &nodes[1..] {
        n.node.wait_for_applied(index, WAIT).await.unwrap();
        assert_eq!(state(n).await, expected, "node {}", n.node.node_id());
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_backup_restores_as_a_new_cluster_and_equals_the_offline_backup() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // Snapshots only when asked: the offline backup below then starts from a snapshot and
    // applies log entries after it, both for sure.
    let n1 = ServedNode::start(1, dirs[0].path(), config(10_000)).await;
    let (status, init) = post_api(&n1, "/api/v1/cluster/init", &serde_json::json!({})).await;
    assert_eq!(status, 200, "{init}");
    let old_cluster = init["cluster_id"].as_str().unwrap().to_string();
    n1.node.wait_for_leader(WAIT).await.unwrap();
    for seq in 1..=9 {
        if seq == 5 {
            n1.node.raft().trigger().snapshot().await.unwrap();
            n1.node.raft().wait(Some(WAIT)).metrics(|m| m.snapshot.is_some(), "a snapshot").await.unwrap();
        }
        n1.node.propose(batch("bldg-a", seq, seq as u8)).await.unwrap();
        n1.node.propose(batch("bldg-b", seq, 100 + (seq % 3) as u8)).await.unwrap();
    }
    let source = state(&n1).await;
    let bytes = get_backup(&n1).await;
    let online = backup::decode(&bytes).unwrap();
    assert_eq!(online.header.cluster_id.as_deref(), Some(old_cluster.as_str()));
    assert_eq!(online.header.node_id, 1);
    assert_eq!(online.header.source, "online");
    assert_eq!(online.header.last_applied.map(|l| l.index), n1.node.applied_index().await);
    assert_eq!(online.state, source);

    // The same node stopped: its data dir (snapshot + committed log) gives the same backup.
    n1.stop().await;
    let (offline_bytes, report) = backup::offline(dirs[0].path(), false).await.unwrap();
    let offline = backup::decode(&offline_bytes).unwrap();
    assert!(report.snapshot.is_some() && report.committed_entries > 0, "{report:?}");
    assert_eq!(report.uncommitted_entries, 0, "{report:?}");
    assert_eq!(offline.header.last_applied, online.header.last_applied);
    assert_eq!(offline.header.cluster_id, online.header.cluster_id);
    assert_eq!(offline.state, online.state);

    // Restore on a fresh node: a new cluster whose state is the source's.
    let file = dirs[1].path().join("online.wlbackup");
    backup::write_file(&file, &bytes).unwrap();
    let (r, new_cluster) = restore(10, &dirs[2].path().join("data"), &file, 4).await;
    assert_ne!(new_cluster, old_cluster);
    assert_eq!(r.node.replicated_cluster_id().await.as_deref(), Some(new_cluster.as_str()));
    let restored = state(&r).await;
    assert_eq!(restored.devices(), source.devices());
    assert_eq!(restored.sensors(), source.sensors());
    assert_eq!(restored, source);
    // Watermarks came along: a re-sent batch is a duplicate, the next one applies.
    assert!(restored.is_applied("bldg-a", 9, &batch_id(batch("bldg-a", 9, 9))));
    assert!(!r.node.propose(batch("bldg-a", 9, 9)).await.unwrap().applied);
    assert!(r.node.propose(batch("bldg-a", 10, 77)).await.unwrap().applied);
    assert!(state(&r).await.devices().contains_key(&mac(77)));

    // A node that joins later gets the restored state from a snapshot.
    let n11 = ServedNode::start(11, dirs[3].path(), config(4)).await;
    join_from_snapshot(&r, &n11).await;
    same_state_everywhere(&[&r, &n11]).await;
    assert_eq!(n11.node.cluster_id().as_deref(), Some(new_cluster.as_str()));
    n11.stop().await;
    r.stop().await;
}

fn batch_id(cmd: wardline_aggregator::state::Command) -> ulid::Ulid {
    match cmd {
        wardline_aggregator::state::Command::ApplyBatch(b) => b.batch_id,
        _ => unreachable!("batch() builds ApplyBatch"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_lost_its_majority_is_recovered_from_the_survivor() {
    let dirs: Vec<_> = (0..7).map(|_| tempfile::tempdir().unwrap()).collect();
    let n1 = ServedNode::start(1, dirs[0].path(), config(5)).await;
    let n2 = ServedNode::start(2, dirs[1].path(), config(5)).await;
    let n3 = ServedNode::start(3, dirs[2].path(), config(5)).await;
    let (status, init) = post_api(&n1, "/api/v1/cluster/init", &serde_json::json!({})).await;
    assert_eq!(status, 200, "{init}");
    let old_cluster = init["cluster_id"].as_str().unwrap().to_string();
    n1.node.wait_for_leader(WAIT).await.unwrap();
    for n in [&n2, &n3] {
        let (status, body) = post_api(&n1, "/api/v1/cluster/join", &n.join_request()).await;
        assert_eq!(status, 200, "{body}");
    }
    for seq in 1..=8 {
        n1.node.propose(batch("icu-1", seq, seq as u8)).await.unwrap();
    }
    let committed_state = same_state_everywhere(&[&n1, &n2, &n3]).await;

    // Two of three nodes are lost. The survivor appends one more batch it can never commit.
    n2.stop().await;
    n3.stop().await;
    let last = n1.node.metrics().last_log_index.unwrap();
    let survivor = n1.node.clone();
    let stuck = tokio::spawn(async move { survivor.propose(batch("icu-1", 9, 99)).await });
    n1.node
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.last_log_index > Some(last), "the unreplicated entry appended")
        .await
        .unwrap();
    stuck.abort();
    let _ = stuck.await;
    n1.stop().await;

    // Offline backup of the survivor: committed entries only by default.
    let (bytes, report) = backup::offline(dirs[0].path(), false).await.unwrap();
    assert!(report.uncommitted_entries >= 1, "{report:?}");
    let committed_only = backup::decode(&bytes).unwrap();
    assert_eq!(committed_only.state, committed_state);
    assert_eq!(committed_only.header.cluster_id.as_deref(), Some(old_cluster.as_str()));
    assert_eq!(committed_only.state.sensors()["icu-1"].last_seq, 8);
    // Salvage mode includes the entry only the survivor had.
    let (salvage, report) = backup::offline(dirs[0].path(), true).await.unwrap();
    assert!(report.included_uncommitted);
    let salvage = backup::decode(&salvage).unwrap();
    assert_eq!(salvage.header.uncommitted_entries, report.uncommitted_entries);
    assert_eq!(salvage.state.sensors()["icu-1"].last_seq, 9);
    assert!(salvage.state.devices().contains_key(&mac(99)));

    // Restore as a new cluster; two fresh nodes join and install the state from a snapshot.
    let file = dirs[3].path().join("survivor.wlbackup");
    backup::write_file(&file, &bytes).unwrap();
    let (r, new_cluster) = restore(21, dirs[4].path(), &file, 5).await;
    assert_ne!(new_cluster, old_cluster);
    assert!(r.node.metrics().purged.is_some(), "the restored log is purged behind its snapshot");
    let n22 = ServedNode::start(22, dirs[5].path(), config(5)).await;
    let n23 = ServedNode::start(23, dirs[6].path(), config(5)).await;
    join_from_snapshot(&r, &n22).await;
    join_from_snapshot(&r, &n23).await;
    let restored = same_state_everywhere(&[&r, &n22, &n23]).await;
    assert_eq!(restored, committed_state);
    // The sensor resends what the backup lacks (batch 9), and it applies everywhere.
    assert!(r.node.propose(batch("icu-1", 9, 99)).await.unwrap().applied);
    let after = same_state_everywhere(&[&r, &n22, &n23]).await;
    assert_eq!(after.sensors()["icu-1"].last_seq, 9);
    for n in [n22, n23, r] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_misplaced_backups_are_refused() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let bytes = get_sample_bytes();
    let root = dirs[0].path();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("flipped.wlbackup", flip(&bytes, bytes.len() - 40), "checksum mismatch"),
        ("cut.wlbackup", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        ("v9.wlbackup", version(&bytes, 9), "format version 9 is not supported"),
    ];
    for (name, content, why) in cases {
        let file = root.join(name);
        std::fs::write(&file, content).unwrap();
        let data = root.join(format!("data-{name}"));
        let err = format!("{:#}", backup::prepare_restore(&data, &file, None).unwrap_err());
        assert!(err.contains(&file.display().to_string()) && err.contains(why), "{err}");
        assert!(!data.join("raft.sled").exists(), "nothing is seeded from a refused file");
    }
    // A data dir that already holds a node is refused too.
    let good = root.join("good.wlbackup");
    backup::write_file(&good, &bytes).unwrap();
    let n = ServedNode::start(5, dirs[1].path(), config(5)).await;
    n.stop().await;
    let err = format!("{:#}", backup::prepare_restore(dirs[1].path(), &good, None).unwrap_err());
    assert!(err.contains("needs an empty data directory"), "{err}");
    // A restore founds a new cluster: a configured (old) cluster id is refused.
    let data = root.join("restored");
    let err = format!("{:#}", backup::prepare_restore(&data, &good, Some("01HSOURCE")).unwrap_err());
    assert!(err.contains("NEW cluster") && err.contains("01HSOURCE"), "{err}");
    assert!(!data.join("raft.sled").exists());
    // A restore that was already seeded resumes instead.
    assert!(!backup::prepare_restore(&data, &good, None).unwrap().resumed);
    assert!(backup::prepare_restore(&data, &good, None).unwrap().resumed);
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0xff;
    b
}

fn version(bytes: &[u8], v: u32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[8..12].copy_from_slice(&v.to_be_bytes());
    b
}

/// A restore interrupted after the new cluster's first entries but before its snapshot
/// (a crash) resumes: the seeded state reloads, and the snapshot is built on restart, as
/// `Node::open` does for `run --init --restore` over an already seeded data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_interrupted_before_its_snapshot_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = ClusterState::default();
    for seq in 1..=3 {
        assert!(source.apply(&batch("lab-1", seq, seq as u8)).applied);
    }
    let file = dir.path().join("b.wlbackup");
    let mut h = backup::decode(&get_sample_bytes()).unwrap().header;
    h.cluster_id = Some("01HOLD".into());
    backup::write_file(&file, &backup::encode(&h, &source).unwrap()).unwrap();
    let data = dir.path().join("data");

    assert!(!backup::prepare_restore(&data, &file, None).unwrap().resumed);
    let n = crate::raft_support::open_unserved(7, &data, config(10_000)).await.unwrap();
    let id = cluster::init(&n).await.unwrap();
    n.shutdown().await;
    drop(n);

    assert!(backup::prepare_restore(&data, &file, None).unwrap().resumed);
    let n = crate::raft_support::open_unserved(7, &data, config(10_000)).await.unwrap();
    assert!(n.metrics().snapshot.is_none(), "no snapshot of the restored state was built before the crash");
    backup::finish_restore(&n).await.unwrap();
    assert!(n.metrics().purged.is_some());
    assert_eq!(n.read_state(|s| s.clone()).await, source);
    assert_eq!(n.cluster_id().as_deref(), Some(id.as_str()));
    n.shutdown().await;
}

fn get_sample_bytes() -> Vec<u8> {
    backup::encode(
        &backup::BackupHeader {
            format_version: backup::FORMAT_VERSION,
            cluster_id: None,
            node_id: 1,
            last_applied: None,
            created_ms: 1,
            source: "online".into(),
            uncommitted_entries: 0,
            state_bytes: 0,
            wardline_version: "test".into(),
        },
        &ClusterState::default(),
    )
    .unwrap()
}
