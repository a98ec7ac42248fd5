//! The flow outbox (decision 0016) through a whole node: group commit, backpressure when
//! the outbox is full, inventory that keeps moving while ClickHouse is down, and rows that
//! land exactly once after a ClickHouse outage and a node restart.

use crate::sink_support::{flows, sums};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ulid::Ulid;
use wardline_aggregator::config::{NodeConfig, TlsPaths};
use wardline_aggregator::node::Node;
use wardline_aggregator::sink::{FlowRow, FlowTotals};
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_common::net::MacAddr;
use wardline_common::wire::{Batch, BatchReply, DeviceObservation, Event};

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub(crate) fn config(dir: &Path, clickhouse_url: Option<String>, outbox_max_bytes: u64) -> NodeConfig {
    // Raft's client side loads the node certificate at open, so the node gets a real one.
    let pki = dir.join("pki");
    if !pki.join("node.pem").exists() {
        wardline_aggregator::pki::init_ca(&pki.join("ca"), "outbox test CA").unwrap();
        wardline_aggregator::pki::issue_node(&pki.join("ca"), 1, &[], &pki).unwrap();
    }
    NodeConfig {
        node_id: 1,
        data_dir: dir.to_path_buf(),
        listen_quic: "127.0.0.1:0".parse().unwrap(),
        listen_api: "127.0.0.1:0".parse().unwrap(),
        advertise_api: Some("127.0.0.1:1".into()),
        listen_raft: "127.0.0.1:0".parse().unwrap(),
        advertise_raft: Some("127.0.0.1:1".into()),
        advertise_quic: None,
        cluster_id: None,
        tls: TlsPaths::in_dir(&pki, "node"),
        certificates: Default::default(),
        clickhouse_url,
        clickhouse_database: "wardline".into(),
        clickhouse_retention_days: None,
        bootstrap: true,
        kb_dirs: Vec::new(),
        outbox_max_bytes,
        max_seq_jump: wardline_aggregator::state::epochs::DEFAULT_MAX_SEQ_JUMP,
        restore: None,
        siem: None,
        reports: None,
        clickhouse_cluster: None,
        ingest: Default::default(),
    }
}

pub(crate) async fn open(cfg: NodeConfig) -> Arc<Node> {
    let node = Node::open(cfg).await.expect("open node");
    node.raft.wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    node
}

/// Batch `seq` of `sensor`: one device (MAC ..:seq) and `n` flows.
pub(crate) fn batch(sensor: &str, seq: u64, n: usize) -> Batch {
    let tag = sensor.bytes().last().unwrap_or(0);
    let device = DeviceObservation {
        mac: MacAddr([0x02, 0, 0, 0, tag, seq as u8]),
        ips: vec![format!("10.9.{tag}.{seq}").parse().unwrap()],
        vlans: vec![],
        first_seen_us: 1_700_000_000_000_000 + seq,
        last_seen_us: 1_700_000_000_000_000 + seq,
        packets: 1,
        bytes: 60,
        evidence: vec![],
    };
    let mut events = vec![Event::Device(device)];
    events.extend(flows(n, seq as u8).into_iter().map(Event::Flow));
    Batch {
        id: Ulid::from_parts(1_700_000_000_000 + seq, u128::from(seq) + 1000 * u128::from(tag)),
        sensor_id: sensor.into(),
        site: "north".into(),
        seq,
        events,
    }
}

pub(crate) fn expected_totals(batches: &[Batch]) -> FlowTotals {
    let all: Vec<_> = batches.iter().flat_map(|b| b.flows().cloned()).collect();
    let (packets, bytes) = sums(&all);
    FlowTotals { rows: all.len() as u64, packets, bytes }
}

pub(crate) fn is_ack(r: &BatchReply, duplicate: bool) -> bool {
    matches!(r, BatchReply::Ack { duplicate: d, .. } if *d == duplicate)
}

pub(crate) async fn wait_outbox_empty(node: &Node, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let rows = node.raft.read_state(|s| s.outbox().rows).await;
        if rows == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "outbox still holds {rows} rows: {:?}", node.ingest_stats.outbox.view());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn full_outbox_refuses_flow_batches_in_order_while_inventory_keeps_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let b1 = batch("s1", 1, 10);
        // Room for one batch of 10 flows, not two.
        let one = wardline_aggregator::state::outbox_bytes_of(&b1.flows().cloned().collect::<Vec<_>>());
        let node = open(config(dir.path(), None, one + one / 2)).await;
        assert!(is_ack(&node.accept_batch(b1.clone()).await, false));
        let r2 = node.accept_batch(batch("s1", 2, 10)).await;
        assert!(matches!(&r2, BatchReply::RetryLater { reason, .. } if reason.contains("outbox full")), "{r2:?}");
        // A later batch of the same sensor must wait for 2, or the watermark would skip it.
        let r3 = node.accept_batch(batch("s1", 3, 0)).await;
        assert!(matches!(&r3, BatchReply::RetryLater { reason, .. } if reason.contains("batch 2")), "{r3:?}");
        assert_eq!(node.raft.read_state(|s| s.watermark("s1")).await, 1);
        // Inventory from another sensor (no flows) is applied although the outbox is full.
        assert!(is_ack(&node.accept_batch(batch("s2", 1, 0)).await, false));
        assert_eq!(node.raft.read_state(|s| s.devices().len()).await, 2);

        // Draining makes room; the refused batch and its successor go through, in order.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let drain = node.spawn_outbox_drainer(stop_rx);
        wait_outbox_empty(&node, Duration::from_secs(20)).await;
        assert!(is_ack(&node.accept_batch(batch("s1", 2, 10)).await, false));
        assert!(is_ack(&node.accept_batch(batch("s1", 3, 0)).await, false));
        assert!(is_ack(&node.accept_batch(b1.clone()).await, true));
        wait_outbox_empty(&node, Duration::from_secs(20)).await;
        let totals = node.sink.totals().await.unwrap();
        assert_eq!(totals, expected_totals(&[b1, batch("s1", 2, 10)]));
        let view = node.ingest_stats.outbox.view();
        assert!(view.rows_drained >= 20 && view.inserts >= 2 && view.last_error.is_none(), "{view:?}");
        let _ = stop_tx.send(true);
        let _ = drain.await;
        node.raft.shutdown().await;
    });
}

#[test]
fn concurrent_batches_are_grouped_and_applied_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let node = open(config(dir.path(), None, 1 << 30)).await;
        let before = node.raft.applied_index().await.unwrap_or(0);
        // Queued in seq order without waiting: one proposal carries several of them.
        let pending: Vec<_> = (1..=64).map(|seq| node.accept_batch(batch("s1", seq, 3))).collect();
        let mut replies = Vec::new();
        for p in pending {
            replies.push(p.await);
        }
        assert!(replies.iter().all(|r| is_ack(r, false)), "{replies:?}");
        let after = node.raft.applied_index().await.unwrap_or(0);
        assert!(after - before < 64, "64 batches took {} Raft entries: not grouped", after - before);
        let sensor = node.raft.read_state(|s| s.sensors()["s1"].clone()).await;
        assert_eq!((sensor.last_seq, sensor.batches_applied, sensor.seq_gaps), (64, 64, 0));
        // The committer's own account: every batch and flow in some group, fewer groups
        // than batches, each group a Raft entry, and time spent waiting on Raft.
        let g = node.ingest_stats.snapshot().group_commit;
        assert_eq!((g.batches, g.flows, g.failed), (64, 64 * 3, 0), "{g:?}");
        assert!(g.groups >= 1 && g.groups < 64 && g.groups <= after - before, "{g:?}");
        assert!(g.commit_micros > 0, "{g:?}");
        node.raft.shutdown().await;
    });
}

#[test]
fn clickhouse_outage_and_node_restart_lose_and_duplicate_no_flow() {
    let mut ch = ClickHouseServer::start().expect("start ClickHouse");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Some(ch.http_url.clone()), 1 << 30);
    let first: Vec<Batch> = (1..=5).map(|seq| batch("s1", seq, 40)).collect();
    let second: Vec<Batch> = (6..=8).map(|seq| batch("s1", seq, 40)).collect();

    // Phase 1: ClickHouse dies; batches are still acked and their devices applied.
    let rt = runtime();
    let node = rt.block_on(open(cfg.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let drain = {
        let _guard = rt.enter();
        node.spawn_outbox_drainer(stop_rx)
    };
    ch.stop_kill9();
    rt.block_on(async {
        for b in &first {
            let r = node.accept_batch(b.clone()).await;
            assert!(is_ack(&r, false), "{r:?}");
        }
        assert_eq!(node.raft.read_state(|s| s.devices().len()).await, 5);
        assert_eq!(node.raft.read_state(|s| s.outbox().rows).await, 200);
        // The drain is failing and says why.
        let deadline = Instant::now() + Duration::from_secs(20);
        while node.ingest_stats.outbox.view().last_error.is_none() {
            assert!(Instant::now() < deadline, "no drain error reported");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    ch.restart().unwrap();
    rt.block_on(async {
        wait_outbox_empty(&node, Duration::from_secs(60)).await;
        let _ = stop_tx.send(true);
        let _ = drain.await;
        // Phase 2: more batches, acked but not drained when the node stops.
        for b in &second {
            assert!(is_ack(&node.accept_batch(b.clone()).await, false));
        }
        // A former leader wrote part of the outbox but died before recording the drain.
        let b = &second[0];
        let rows: Vec<FlowRow> =
            (0u32..).zip(b.flows()).map(|(i, f)| FlowRow::from_record(b.id, i, &b.sensor_id, &b.site, f)).collect();
        node.sink.write_rows(&rows).await.unwrap();
        node.raft.shutdown().await;
    });
    drop(node);
    drop(rt);

    // Phase 3: the restarted node still has the acked rows and writes each once.
    let rt = runtime();
    rt.block_on(async {
        let node = open(cfg.clone()).await;
        assert_eq!(node.raft.read_state(|s| s.outbox().rows).await, 120);
        assert!(is_ack(&node.accept_batch(second[1].clone()).await, true));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let drain = node.spawn_outbox_drainer(stop_rx);
        wait_outbox_empty(&node, Duration::from_secs(30)).await;
        let all: Vec<Batch> = first.iter().chain(&second).cloned().collect();
        assert_eq!(node.sink.totals().await.unwrap(), expected_totals(&all));
        let _ = stop_tx.send(true);
        let _ = drain.await;
        node.raft.shutdown().await;
    });
    // Every read uses FINAL; the table itself may hold the re-written rows until a merge.
    let distinct = ch.query("SELECT count() FROM wardline.flows FINAL").unwrap();
    assert_eq!(distinct.trim(), "320");
}

#[test]
fn a_huge_sequence_jump_is_refused_and_cannot_blackhole_the_sensor() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let node = open(config(dir.path(), None, 1 << 30)).await;
        assert!(is_ack(&node.accept_batch(batch("s1", 1, 0)).await, false));
        let mut forged = batch("s1", 2, 0);
        forged.seq = u64::MAX;
        let r = node.accept_batch(forged).await;
        assert!(
            matches!(&r, BatchReply::Rejected { reason, .. } if reason.contains("sequence numbers past its watermark")),
            "{r:?}"
        );
        assert_eq!(node.raft.read_state(|s| s.watermark("s1")).await, 1, "the watermark did not move");
        // The sensor's next batch is applied, not acked as a duplicate and discarded.
        assert!(is_ack(&node.accept_batch(batch("s1", 2, 0)).await, false));
        assert_eq!(node.raft.read_state(|s| s.watermark("s1")).await, 2);
        // A jump within the bound (batches the sensor's spool evicted) is still accepted.
        assert!(is_ack(&node.accept_batch(batch("s1", 200, 0)).await, false));
    });
}

/// The Raft state machine applies commands by value (`ClusterState::apply_owned`, so a
/// group's flows move into the outbox without a copy): it must give the same answers and
/// the same state as `apply`, duplicates and drains included.
#[test]
fn applying_by_value_matches_applying_by_reference() {
    use wardline_aggregator::state::{BatchSummary, ClusterState, Command, IngestBatch};
    let ingest = |sensor: &str, seq: u64, n: usize| IngestBatch {
        summary: BatchSummary {
            flow_count: n as u64,
            ..BatchSummary::empty(Ulid::from_parts(seq, 7), sensor.into(), "north".into(), seq)
        },
        flows: flows(n, seq as u8),
    };
    let commands = [
        // 2 twice in one group; s2's batch carries no flows.
        Command::ApplyBatches(vec![ingest("s1", 1, 2), ingest("s1", 2, 3), ingest("s1", 2, 3), ingest("s2", 1, 0)]),
        // 1 again, below the watermark, then new batches of both sensors.
        Command::ApplyBatches(vec![ingest("s1", 1, 2), ingest("s1", 3, 1), ingest("s2", 2, 4)]),
        Command::FlowsDrained { through: 1 },
    ];
    let (mut by_ref, mut by_value) = (ClusterState::new(), ClusterState::new());
    for cmd in commands {
        assert_eq!(by_ref.apply(&cmd), by_value.apply_owned(cmd));
    }
    assert_eq!(by_value.outbox().rows, 8, "entries 2..=4 hold 3 + 1 + 4 rows");
    assert!(by_ref == by_value, "the same commands by value and by reference gave different states");
}
