//! The flow sink on a ClickHouse cluster (decision 0028): ZooKeeper and two ClickHouse 18.16
//! servers on loopback, one shard with two replicas, replicated tables behind `Distributed`
//! tables of the usual names. A replica is killed with SIGKILL while flows are written; every
//! flow must then be stored exactly once on the survivor, and on both once it is back.

use crate::outbox::{batch, config, expected_totals, is_ack, open, runtime, wait_outbox_empty};
use std::time::{Duration, Instant};
use wardline_aggregator::sink::clickhouse_cluster::{run_maintenance, ClickHouseClusterSink, ClusterConfig};
use wardline_aggregator::sink::clickhouse_retention::{drop_partitions_before, MaintenanceConfig};
use wardline_aggregator::sink::{FlowRow, FlowSink};
use wardline_chaos_tests::clickhouse::{ClickHouseCluster, ClickHouseServer};
use wardline_chaos_tests::zookeeper::ZooKeeperServer;
use wardline_common::wire::Batch;

const CLUSTER: &str = "wardline_test";

fn start() -> (ZooKeeperServer, ClickHouseCluster, ClusterConfig) {
    let zk = ZooKeeperServer::start().expect("start ZooKeeper");
    let cluster = ClickHouseCluster::start(&zk, CLUSTER, 2).expect("start two ClickHouse replicas");
    let config = ClusterConfig { name: CLUSTER.into(), replicas: cluster.urls(), replicated_database: None };
    (zk, cluster, config)
}

fn rows_of(batches: &[Batch]) -> Vec<FlowRow> {
    batches
        .iter()
        .flat_map(|b| (0u32..).zip(b.flows()).map(|(i, f)| FlowRow::from_record(b.id, i, &b.sensor_id, &b.site, f)))
        .collect()
}

/// Every row's identity and counters as one line, sorted, as the replica's own replicated
/// table holds them (FINAL: re-written rows collapse there).
fn stored_flows(server: &ClickHouseServer) -> Vec<String> {
    let tsv = server
        .query(
            "SELECT sensor_id, batch_id, idx, packets_ab, bytes_ab FROM wardline_local.flows FINAL \
             ORDER BY sensor_id, batch_id, idx",
        )
        .expect("read the replica's flows");
    let mut rows: Vec<String> = tsv.lines().map(str::to_string).collect();
    rows.sort();
    rows
}

/// Equal row lists, or a failure naming what is missing and what is extra (not 3000 lines).
fn assert_same_flows(stored: &[String], expected: &[String], replica: &str) {
    if stored == expected {
        return;
    }
    let missing: Vec<&String> = expected.iter().filter(|r| stored.binary_search(r).is_err()).collect();
    let extra: Vec<&String> = stored.iter().filter(|r| expected.binary_search(r).is_err()).collect();
    let repeated = stored.windows(2).filter(|w| w[0] == w[1]).count();
    panic!(
        "replica {replica}: {} rows stored, {} expected; {} missing (e.g. {:?}), {} unexpected (e.g. {:?}), {repeated} repeated",
        stored.len(),
        expected.len(),
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(3).collect::<Vec<_>>()
    );
}

fn expected_flows(batches: &[Batch]) -> Vec<String> {
    let mut rows: Vec<String> = rows_of(batches)
        .iter()
        .map(|r| format!("{}\t{}\t{}\t{}\t{}", r.sensor_id, r.batch_id, r.idx, r.packets_ab, r.bytes_ab))
        .collect();
    rows.sort();
    rows
}

/// Wait until `server` holds exactly `expected` (replication catching up after a restart).
fn wait_for_flows(server: &ClickHouseServer, expected: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let stored = server
            .query("SELECT count() FROM wardline_local.flows FINAL")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok());
        if stored == Some(expected.len()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica {} holds {stored:?} flows after {within:?}, expected {}; log:\n{}",
            server.http_url,
            expected.len(),
            server.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_same_flows(&stored_flows(server), expected, &server.http_url);
}

fn scalar(server: &ClickHouseServer, sql: &str) -> String {
    server.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).trim().to_string()
}

#[test]
fn a_block_rewritten_after_a_replica_died_lands_on_the_replica_that_acknowledges_it() {
    let (_zk, mut cluster, config) = start();
    let rt = runtime();
    let sink = ClickHouseClusterSink::new(&config, "wardline").unwrap();
    let report = rt.block_on(sink.create_schema()).expect("create the schema");
    assert!(report.failed.is_empty() && report.ready.len() == 2, "{report:?}");
    for r in &cluster.replicas {
        let engine = |db: &str, table: &str| {
            scalar(r, &format!("SELECT engine FROM system.tables WHERE database = '{db}' AND name = '{table}'"))
        };
        assert_eq!(engine("wardline_local", "flows"), "ReplicatedReplacingMergeTree");
        assert_eq!(engine("wardline", "flows"), "Distributed");
        assert_eq!(engine("wardline", "device_hourly"), "Distributed");
    }
    let (a, b) = (&cluster.replicas[0], &cluster.replicas[1]);

    // The premise, on ClickHouse 18.16 itself: with insert deduplication, a replica answers OK
    // to a block whose hash another replica recorded, without holding its rows.
    b.query("SYSTEM STOP FETCHES wardline_local.flows_hours_touched").unwrap();
    let insert = "INSERT INTO wardline_local.flows_hours_touched VALUES ('2026-12-01', '2026-12-01 10:00:00', '2026-12-01 10:00:00')";
    a.query(insert).unwrap();
    b.query(insert).unwrap();
    assert_eq!(scalar(b, "SELECT count() FROM wardline_local.flows_hours_touched"), "0");
    b.query("SYSTEM START FETCHES wardline_local.flows_hours_touched").unwrap();

    // The sink writes to replica a; b does not fetch it (as if a died right after the commit).
    b.query("SYSTEM STOP FETCHES wardline_local.flows").unwrap();
    let batches: Vec<Batch> = (1..=3).map(|seq| batch("s1", seq, 10)).collect();
    let rows = rows_of(&batches);
    rt.block_on(sink.write_rows(&rows)).expect("write to replica a");
    assert_same_flows(&stored_flows(a), &expected_flows(&batches), &a.http_url);
    assert!(stored_flows(b).is_empty());

    // a dies before the writer saw its answer; the outbox re-sends the same rows.
    cluster.replicas[0].stop_kill9();
    let (a, b) = (&cluster.replicas[0], &cluster.replicas[1]);
    rt.block_on(sink.write_rows(&rows)).expect("the re-send fails over to replica b");
    // Would fail with ClickHouse's block deduplication: b would answer OK and hold nothing.
    assert_same_flows(&stored_flows(b), &expected_flows(&batches), &b.http_url);
    // Reads go through the Distributed table and skip the dead replica.
    assert_eq!(rt.block_on(sink.totals()).unwrap(), expected_totals(&batches));
    assert!(a.query("SELECT 1").is_err());

    // a comes back; each replica fetches the other's copy, and FINAL shows every flow once.
    b.query("SYSTEM START FETCHES wardline_local.flows").unwrap();
    cluster.replicas[0].restart().expect("restart replica a");
    for r in &cluster.replicas {
        wait_for_flows(r, &expected_flows(&batches), Duration::from_secs(60));
        assert_eq!(scalar(r, "SELECT count() FROM wardline.flows FINAL"), rows.len().to_string());
    }
}

#[test]
fn a_replica_killed_while_an_insert_streams_into_it_loses_no_row() {
    let (_zk, mut cluster, config) = start();
    let rt = runtime();
    let sink = ClickHouseClusterSink::new(&config, "wardline").unwrap();
    let report = rt.block_on(sink.create_schema()).expect("create the schema");
    assert!(report.failed.is_empty(), "{report:?}");
    // Large enough that the insert is still streaming when it is seen in system.processes.
    let batches: Vec<Batch> = (1..=40).map(|seq| batch("s2", seq, 2500)).collect();
    let expected = expected_flows(&batches);
    let rows = rows_of(&batches);
    let writer = {
        let sink = sink.clone();
        rt.spawn(async move { sink.write_rows(&rows).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = cluster.replicas[0]
            .query("SELECT count() FROM system.processes WHERE query LIKE 'INSERT INTO `flows`%'")
            .unwrap_or_default();
        if running.trim() != "0" && !running.trim().is_empty() {
            break;
        }
        assert!(!writer.is_finished(), "the insert finished before it was seen running; make it larger");
        assert!(Instant::now() < deadline, "the insert never showed up on replica r1");
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.replicas[0].stop_kill9();
    rt.block_on(writer).unwrap().expect("the insert fails over to replica r2");
    assert_same_flows(&stored_flows(&cluster.replicas[1]), &expected, "r2 (survivor)");
    cluster.replicas[0].restart().expect("restart replica r1");
    for r in &cluster.replicas {
        wait_for_flows(r, &expected, Duration::from_secs(60));
    }
}

#[test]
fn replica_killed_mid_write_loses_and_duplicates_no_flow() {
    let (_zk, mut cluster, cluster_config) = start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None, 1 << 30);
    cfg.clickhouse_cluster = Some(cluster_config.clone());
    // Spread over several seconds so the outbox drains (about once a second) before and
    // after the kill.
    let batches: Vec<Batch> = (1..=60).map(|seq| batch("s1", seq, 50)).collect();
    let expected = expected_flows(&batches);

    let rt = runtime();
    rt.block_on(async {
        let node = open(cfg).await;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let drain = node.spawn_outbox_drainer(stop_rx);
        for (i, b) in batches.iter().enumerate() {
            if i == 25 {
                // Replica r1 has taken inserts (the writer starts there); kill it mid-stream.
                let deadline = Instant::now() + Duration::from_secs(20);
                while node.ingest_stats.outbox.view().rows_drained == 0 {
                    assert!(Instant::now() < deadline, "nothing drained: {:?}", node.ingest_stats.outbox.view());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // The harness's HTTP client is blocking: keep it off the async workers' path.
                tokio::task::block_in_place(|| {
                    assert_ne!(scalar(&cluster.replicas[0], "SELECT count() FROM wardline_local.flows"), "0");
                    cluster.replicas[0].stop_kill9();
                });
            }
            let r = node.accept_batch(b.clone()).await;
            assert!(is_ack(&r, false), "batch {}: {r:?}", b.seq);
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
        wait_outbox_empty(&node, Duration::from_secs(60)).await;
        assert_eq!(node.ingest_stats.outbox.view().last_error, None);
        // The node's reads (API, totals) go through the Distributed table on the survivor.
        assert_eq!(node.sink.totals().await.unwrap(), expected_totals(&batches));
        let _ = stop_tx.send(true);
        let _ = drain.await;
        node.raft.shutdown().await;
    });

    // The survivor holds every flow exactly once.
    assert_same_flows(&stored_flows(&cluster.replicas[1]), &expected, "r2 (survivor)");

    // The killed replica comes back and catches up from the survivor.
    cluster.replicas[0].restart().expect("restart replica r1");
    for r in &cluster.replicas {
        wait_for_flows(r, &expected, Duration::from_secs(60));
    }

    // Rollups and retention run on one live replica's replicated tables (the node's
    // maintenance task); replication carries their results to the other, and the Distributed
    // tables read them under the usual names.
    let sink = ClickHouseClusterSink::new(&cluster_config, "wardline").unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config = MaintenanceConfig { retention_days: None, interval: Duration::from_millis(200) };
    let task = rt.spawn(run_maintenance(sink.clone(), config, stop_rx));
    for r in &cluster.replicas {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rolled = scalar(r, "SELECT sum(flows) FROM wardline.segment_pair_hourly FINAL");
            if rolled == expected.len().to_string() {
                break;
            }
            assert!(Instant::now() < deadline, "rollup on {} shows {rolled} flows", r.http_url);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    stop_tx.send(true).unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), task).await })
        .expect("maintenance stops")
        .unwrap();
    rt.block_on(async {
        let live = sink.live_replica().await.unwrap();
        let dropped = drop_partitions_before(&live, u16::MAX).await.unwrap();
        assert!(dropped.iter().any(|d| d.table == "flows"), "{dropped:?}");
    });
    for r in &cluster.replicas {
        wait_for_flows(r, &[], Duration::from_secs(30));
    }
}
