//! Who may talk Raft to a node, over real mutual TLS on loopback: another CA, a sensor
//! certificate, a node that is not a member, another cluster id, oversized and malformed
//! bodies are all refused, counted, and never reach Raft. Snapshots travel in several
//! chunks and reload after a restart; a node's data is bound to its cluster id.

use crate::raft_support::{batch, ca_dir, config, node_tls_from, open_unserved, post_api, ServedNode, WAIT};
use openraft::raft::VoteRequest;
use openraft::storage::SnapshotMeta;
use openraft::Vote;
use std::time::{Duration, Instant};
use wardline_aggregator::auth::Credential;
use wardline_aggregator::config::TlsPaths;
use wardline_aggregator::raft::network::SnapshotChunk;
use wardline_aggregator::raft::peer_auth::{RefusalCounts, CLUSTER_HEADER};
use wardline_aggregator::raft::{codec, tls, RaftConfig, RaftNode};
use wardline_aggregator::state::audit::AuditEntry;
use wardline_aggregator::state::Command;
use wardline_common::MacAddr;

/// Wait until `node`'s refusal counters satisfy `f` (refusals are counted as they happen,
/// a failed handshake in a task of its own).
async fn wait_counts(node: &RaftNode, f: impl Fn(&RefusalCounts) -> bool) -> RefusalCounts {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = node.refusals.counts();
        if f(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "refusal counters never matched: {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POST `body` to `path` on `n`'s Raft listener as the holder of `tls`.
async fn post_raft(
    n: &ServedNode,
    tls: &TlsPaths,
    path: &str,
    cluster: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Result<(u16, String)> {
    let client = tls::https_client(tls).unwrap();
    let mut req = client.post(format!("https://{}{path}", n.raft_addr)).body(body);
    if let Some(c) = cluster {
        req = req.header(CLUSTER_HEADER, c);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

fn vote_body(candidate: u64) -> Vec<u8> {
    codec::encode(&VoteRequest::<u64>::new(Vote::new(99, candidate), None)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_peers_are_counted_and_never_reach_raft() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let n = ServedNode::start(1, dir.path(), config(100)).await;
    assert!(n.node.initialize_single_if_new().await.unwrap());
    n.node.wait_for_leader(WAIT).await.unwrap();
    let cluster = n.node.cluster_id().unwrap();
    let term = n.node.metrics().current_term;
    let member = TlsPaths::in_dir(&dir.path().join("tls"), "node");

    // A node certificate from another CA: the handshake fails.
    let other = node_tls_from("other", 1, &certs.path().join("other"));
    let foreign = TlsPaths { ca: member.ca.clone(), ..other };
    assert!(post_raft(&n, &foreign, "/raft/vote", Some(&cluster), vote_body(1)).await.is_err());
    wait_counts(&n.node, |c| c.tls_handshake >= 1).await;

    // A sensor certificate from the fleet CA: TLS passes, Raft does not.
    wardline_aggregator::pki::issue_sensor(ca_dir("fleet"), "bldg-a-1", "north", &certs.path().join("sensor")).unwrap();
    let sensor = TlsPaths::in_dir(&certs.path().join("sensor"), "sensor");
    let (status, text) = post_raft(&n, &sensor, "/raft/vote", Some(&cluster), vote_body(1)).await.unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("node certificate"), "{text}");

    // A node of the fleet that is not a member of this cluster.
    let stranger = node_tls_from("fleet", 9, &certs.path().join("node9"));
    let (status, text) = post_raft(&n, &stranger, "/raft/vote", Some(&cluster), vote_body(9)).await.unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("not a member"), "{text}");

    // A member certificate naming another cluster, or none.
    let (status, text) =
        post_raft(&n, &member, "/raft/vote", Some("01HOTHERCLUSTER0000000000"), vote_body(1)).await.unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains(&cluster) && text.contains("01HOTHERCLUSTER"), "{text}");
    let (status, _) = post_raft(&n, &member, "/raft/vote", None, vote_body(1)).await.unwrap();
    assert_eq!(status, 403);

    // Bodies over a route's limit, and bodies that are not what the route takes.
    let (status, _) = post_raft(&n, &member, "/raft/vote", Some(&cluster), vec![0; 128 * 1024]).await.unwrap();
    assert_eq!(status, 413);
    for path in ["/raft/append", "/raft/vote", "/raft/snapshot", "/raft/forward/audit"] {
        for body in [vec![], vec![0xff; 64], b"{\"json\": true}".to_vec()] {
            let (status, text) = post_raft(&n, &member, path, Some(&cluster), body).await.unwrap();
            assert_eq!(status, 400, "{path}: {text}");
            assert!(text.contains("undecodable"), "{path}: {text}");
        }
    }

    // Snapshot chunks: one that does not follow a transfer, and a last chunk that does not
    // decode as a snapshot.
    let meta = SnapshotMeta { last_log_id: None, last_membership: Default::default(), snapshot_id: "forged".into() };
    let chunk = |offset: u64, data: Vec<u8>, done: bool| {
        codec::encode(&SnapshotChunk { vote: Vote::new(99, 1), meta: meta.clone(), offset, data, done }).unwrap()
    };
    let (status, text) =
        post_raft(&n, &member, "/raft/snapshot", Some(&cluster), chunk(5, vec![1; 10], false)).await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("out-of-order"), "{text}");
    let (status, text) =
        post_raft(&n, &member, "/raft/snapshot", Some(&cluster), chunk(0, vec![0xff; 100], true)).await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("malformed snapshot"), "{text}");

    // Forwarded audit entries: only a node's own are appended.
    let audit = |node_id: u64| {
        codec::encode(&AuditEntry {
            seq: 0,
            at_ms: 1,
            node_id,
            who: "op-viewer".into(),
            role: None,
            credential: Credential::token("0123456789abcdef"),
            method: "GET".into(),
            path: "/api/v1/audit".into(),
            status: 403,
            outcome: "refused".into(),
            detail: String::new(),
            peer: "127.0.0.1:1".into(),
        })
        .unwrap()
    };
    let (status, text) = post_raft(&n, &member, "/raft/forward/audit", Some(&cluster), audit(7)).await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("only its own"), "{text}");
    let (status, text) = post_raft(&n, &member, "/raft/forward/audit", Some(&cluster), audit(1)).await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(n.node.read_state(|s| s.audit().recorded()).await, 1, "the node's own entry only");

    let counts = wait_counts(&n.node, |c| c.not_member >= 1).await;
    assert_eq!(
        counts,
        RefusalCounts {
            tls_handshake: 1,
            not_node_certificate: 1,
            not_member: 1,
            wrong_cluster: 2,
            malformed: 15,
            too_large: 1,
        }
    );
    // None of it reached Raft: same term, still the leader, still committing.
    assert_eq!(n.node.metrics().current_term, term);
    assert_eq!(n.node.metrics().current_leader, Some(1));
    assert!(n.node.propose(batch("bldg-d", 1, 1)).await.unwrap().applied);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let status: serde_json::Value =
        client.get(format!("http://{}/api/v1/cluster/status", n.addr)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["refused_rpcs"]["too_large"], 1, "{status}");
    n.stop().await;
}

/// A batch that reports `n` devices (distinct MACs), so the state grows quickly.
fn wide_batch(seq: u64, n: u16) -> Command {
    let Command::ApplyBatch(mut b) = batch("bldg-w", seq, 1) else { unreachable!() };
    let template = b.devices[0].clone();
    b.devices = (0..n)
        .map(|i| {
            let mut d = template.clone();
            let [hi, lo] = i.to_be_bytes();
            d.mac = MacAddr([0x00, 0x09, 0xfb, seq as u8, hi, lo]);
            d
        })
        .collect();
    Command::ApplyBatch(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_several_chunks_installs_and_reloads_after_restart() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let cfg = RaftConfig { snapshot_chunk_bytes: 16 * 1024, ..config(3) };
    let n1 = ServedNode::start(1, dirs[0].path(), cfg.clone()).await;
    let n2 = ServedNode::start(2, dirs[1].path(), cfg.clone()).await;
    assert!(n1.node.initialize_single_if_new().await.unwrap());
    n1.node.wait_for_leader(WAIT).await.unwrap();
    for seq in 1..=5 {
        assert!(n1.node.propose(wide_batch(seq, 200)).await.unwrap().applied);
    }
    n1.node.raft().wait(Some(WAIT)).metrics(|m| m.purged.is_some(), "leader purged its log").await.unwrap();

    let (status, body) = post_api(&n1, "/api/v1/cluster/join", &n2.join_request()).await;
    assert_eq!(status, 200, "{body}");
    n2.node.raft().wait(Some(WAIT)).metrics(|m| m.snapshot.is_some(), "an installed snapshot").await.unwrap();
    let chunks = n2.node.snapshot_chunks_received();
    assert!(chunks >= 4, "a state of 1000 devices in 16 KiB chunks takes several chunks, took {chunks}");
    let index = n1.node.applied_index().await.unwrap();
    n2.node.wait_for_applied(index, WAIT).await.unwrap();
    let state = n1.node.read_state(|s| s.clone()).await;
    assert_eq!(state.devices().len(), 1000);
    assert_eq!(n2.node.read_state(|s| s.clone()).await, state);

    // Node 2 restarts alone: the installed snapshot reloads from its own store.
    n1.stop().await;
    n2.stop().await;
    let reopened = open_unserved(2, dirs[1].path(), cfg).await.unwrap();
    reopened.wait_for_applied(index, WAIT).await.unwrap();
    assert_eq!(reopened.read_state(|s| s.clone()).await, state);
    assert!(reopened.cluster_id().is_some());
    reopened.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_clusters_data_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_unserved(1, dir.path(), RaftConfig::default()).await.unwrap();
    assert!(node.initialize_single_if_new().await.unwrap());
    let own = node.cluster_id().unwrap();
    node.wait_for_leader(WAIT).await.unwrap();
    node.shutdown().await;
    drop(node);

    let node = open_unserved(1, dir.path(), RaftConfig::default()).await.unwrap();
    assert_eq!(node.cluster_id().as_deref(), Some(own.as_str()), "the cluster id is durable");
    let err = wardline_aggregator::cluster::check_expected_cluster(&node, "01HOTHERCLUSTER0000000000", dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&own) && err.contains("01HOTHERCLUSTER0000000000"), "{err}");
    wardline_aggregator::cluster::check_expected_cluster(&node, &own, dir.path()).unwrap();
    // Restarted with --init, it resumes instead of founding a second cluster.
    assert_eq!(wardline_aggregator::cluster::init_if_new(&node).await.unwrap(), None);
    assert_eq!(node.cluster_id().as_deref(), Some(own.as_str()));
    node.shutdown().await;
}
