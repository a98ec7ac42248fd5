//! Cluster scale: snapshot build, install on a new node over the real chunked mTLS
//! transport, reload after a restart, and the Raft apply rate through one node and a
//! 3-node cluster (in-process nodes serving Raft RPC over loopback HTTPS with mutual TLS,
//! sled storage in temporary folders).
//!
//!     cargo bench -p wardline-aggregator --bench cluster_scale
//!
//! `WARDLINE_CLUSTER_DEVICES` (default 100,000; 2,000 without `--bench`) sets the state
//! size; `WARDLINE_CLUSTER_APPLY_SECS` (default 10; 1 without `--bench`) how long each
//! apply-rate run lasts and `WARDLINE_CLUSTER_PROPOSERS` (default 16) how many proposals
//! are in flight. `WARDLINE_CLUSTER_SKIP_APPLY=1` / `..._SKIP_SNAPSHOT=1` run one part only.
//!
//! Snapshot part: a one-node cluster (snapshots only when asked, no log kept behind them)
//! takes N devices in Raft entries of 1,000 (each device with an address, a VLAN, three
//! evidence values and a DHCP binding), builds a snapshot (trigger → durable in sled), a
//! fresh node joins as a learner and can only catch up by installing it (the leader's log
//! is purged), and that node is stopped and opened again from its data directory.
//! Apply part: `ApplyBatches` entries of 8 sensor batches (5 devices, 26 flows each, the
//! size real sensors cut), from many concurrent proposers, with the outbox drained every
//! 100 entries as the leader's drainer would.

#[path = "bench_support/mod.rs"]
mod bench_support;
#[path = "../tests/raft_support/mod.rs"]
mod raft_support;

use bench_support::{env_or, vm_rss_kib, HOUR_US, T0_US};
use raft_support::ServedNode;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ulid::Ulid;
use wardline_aggregator::cluster::{self, JoinRequest};
use wardline_aggregator::config::TlsPaths;
use wardline_aggregator::raft::{ClusterNode, RaftConfig, RaftNode};
use wardline_aggregator::state::{BatchSummary, Command, IngestBatch};
use wardline_common::wire::{AddressBinding, BindingSource, FlowRecord};
use wardline_common::{DeviceObservation, Evidence, Field, MacAddr, Proto};

const DEVICES_PER_ENTRY: u64 = 1_000;
const WAIT: Duration = Duration::from_secs(600);

fn vm_rss_mib() -> u64 {
    vm_rss_kib() / 1024
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mac(i: u64) -> MacAddr {
    MacAddr([0x00, 0x1b, 0x63, (i >> 16) as u8, (i >> 8) as u8, i as u8])
}

fn device_ip(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32))
}

fn device(i: u64, ts: u64) -> DeviceObservation {
    DeviceObservation {
        mac: mac(i),
        ips: vec![device_ip(i)],
        vlans: vec![(i % 200) as u16 + 1],
        first_seen_us: ts,
        last_seen_us: ts + 1_000,
        packets: 10,
        bytes: 1_500,
        evidence: vec![
            Evidence::new(Field::Hostname, format!("DEV-{i:07}"), Proto::Dhcp, ts),
            Evidence::new(Field::DhcpVendorClass, "MSFT 5.0", Proto::Dhcp, ts),
            Evidence::new(Field::ListeningPort, "tcp/443", Proto::Ip, ts),
        ],
    }
}

fn binding(i: u64, ts: u64) -> AddressBinding {
    AddressBinding {
        mac: mac(i),
        ip: device_ip(i),
        vlan: Some((i % 200) as u16 + 1),
        source: BindingSource::DhcpAck,
        seen_us: ts,
        valid_until_us: Some(ts + HOUR_US),
    }
}

fn summary(sensor: u64, seq: u64) -> BatchSummary {
    let id = Ulid::from_parts(T0_US / 1000 + seq, u128::from(seq) | (u128::from(sensor) << 64));
    BatchSummary::empty(id, format!("access-{sensor}"), format!("site-{}", sensor % 10), seq)
}

fn flow(i: u64, ts: u64) -> FlowRecord {
    FlowRecord {
        ip_proto: 6,
        vlan: Some(10),
        a_mac: mac(i),
        b_mac: mac(i + 1),
        a_ip: device_ip(i),
        b_ip: device_ip(i + 1),
        a_port: 40_000 + (i % 20_000) as u16,
        b_port: 443,
        first_seen_us: ts,
        last_seen_us: ts + 2_000_000,
        packets_ab: 12,
        packets_ba: 10,
        bytes_ab: 1_800,
        bytes_ba: 9_000,
        tcp_flags_ab: 0x1b,
        tcp_flags_ba: 0x1b,
        app: Cow::Borrowed("tls"),
        end_reason: Cow::Borrowed("fin"),
    }
}

/// Node settings: snapshots only when asked (or at `snapshot_every`), no log kept behind.
fn cfg(snapshot_every: u64) -> RaftConfig {
    RaftConfig { snapshot_every, logs_kept_after_snapshot: 0, snapshot_timeout_ms: 120_000, ..RaftConfig::default() }
}

fn join_request(n: &ServedNode) -> JoinRequest {
    let m = n.member();
    JoinRequest { node_id: n.node.node_id(), raft_addr: m.raft_addr, api_addr: m.api_addr, ingest_addr: m.ingest_addr }
}

async fn snapshot_part(devices: u64) {
    println!("== snapshot: {devices} devices ==");
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let rss0 = vm_rss_mib();
    let n1 = ServedNode::start(1, dirs[0].path(), cfg(u64::MAX / 4)).await;
    cluster::init(&n1.node).await.expect("init");
    n1.node.wait_for_leader(WAIT).await.expect("leader");

    // Load the state through Raft: entries of 1,000 devices with their bindings.
    let start = Instant::now();
    let entries = devices.div_ceil(DEVICES_PER_ENTRY);
    for e in 0..entries {
        let mut batch = summary(e % 100, e / 100 + 1);
        let range = e * DEVICES_PER_ENTRY..((e + 1) * DEVICES_PER_ENTRY).min(devices);
        batch.devices = range.clone().map(|i| device(i, T0_US)).collect();
        batch.bindings = range.map(|i| binding(i, T0_US)).collect();
        assert!(n1.node.propose(Command::ApplyBatch(batch)).await.expect("propose").applied);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "load:     {devices} devices in {entries} entries through one node in {secs:.2} s = {:.0} devices/s \
         ({:.1} entries/s); VmRSS +{} MiB",
        devices as f64 / secs,
        entries as f64 / secs,
        vm_rss_mib() - rss0
    );
    let applied = n1.node.applied_index().await.expect("applied");

    // Build: trigger, then wait until the snapshot covering everything is durable and the
    // log behind it purged.
    let start = Instant::now();
    n1.node.raft().trigger().snapshot().await.expect("trigger snapshot");
    n1.node
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.map(|s| s.index) >= Some(applied), "snapshot built")
        .await
        .expect("snapshot built");
    let build = start.elapsed().as_secs_f64();
    n1.node
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.purged.map(|p| p.index) >= Some(applied), "log purged")
        .await
        .expect("log purged");
    let (_, cluster_id, state) = n1.node.applied_state_copy().await;
    let payload = wardline_aggregator::raft::state_machine::SnapshotPayload { cluster_id, state };
    let size = wardline_aggregator::raft::codec::encode_large(&payload).expect("encode").len();
    drop(payload);
    println!(
        "build:    {build:.2} s (clone, encode, durable in sled); snapshot {:.1} MiB = {:.0} B/device; \
         leader data dir {:.1} MiB",
        size as f64 / 1048576.0,
        size as f64 / devices as f64,
        dir_bytes(dirs[0].path()) as f64 / 1048576.0
    );

    // Install: a fresh node added as a learner; the log is purged, so only the snapshot
    // (in 4 MiB chunks over mutual TLS) can bring it up to date.
    let n2 = ServedNode::start(2, dirs[1].path(), cfg(u64::MAX / 4)).await;
    let start = Instant::now();
    n1.node.add_learner(2, n2.member(), true).await.expect("learner catches up");
    n2.node.wait_for_applied(applied, WAIT).await.expect("learner applied");
    let install = start.elapsed().as_secs_f64();
    let chunks = n2.node.snapshot_chunks_received();
    let count = n2.node.read_state(|s| s.devices().len()).await as u64;
    assert_eq!(count, devices, "the learner holds every device");
    assert!(chunks >= 1, "the learner caught up by a snapshot transfer");
    println!(
        "install:  {install:.2} s on a new learner ({chunks} chunks over mTLS, decode, durable in sled) = \
         {:.1} MiB/s",
        size as f64 / 1048576.0 / install
    );

    // Reload: stop both (the leader first: its pooled connections keep the learner's
    // RPC tasks, and so its store, alive) and open the learner's data directory again.
    let dir2 = n2.dir.clone();
    n1.stop().await;
    n2.stop().await;
    // Let the connection tasks end and release the sled lock, outside the timed part.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tls: TlsPaths = TlsPaths::in_dir(&dir2.join("tls"), "node");
    let me = ClusterNode {
        raft_addr: "127.0.0.1:1".into(),
        api_addr: "127.0.0.1:1".into(),
        ingest_addr: "127.0.0.1:1".into(),
    };
    let start = Instant::now();
    let reopened = RaftNode::open(2, &dir2, me, cfg(u64::MAX / 4), &tls).await.expect("reopen");
    let reload = start.elapsed().as_secs_f64();
    let count = reopened.read_state(|s| s.devices().len()).await as u64;
    assert_eq!(count, devices, "the reloaded node holds every device");
    assert!(reopened.applied_index().await >= Some(applied));
    println!(
        "reload:   {reload:.2} s (open sled, read and decode the snapshot); VmRSS now +{} MiB",
        vm_rss_mib() - rss0
    );
    reopened.shutdown().await;
}

/// Propose `ApplyBatches` entries from `proposers` tasks for `secs` seconds on `leader`.
async fn apply_rate(label: &str, leader: Arc<RaftNode>, proposers: u64, secs: u64) {
    const BATCHES_PER_ENTRY: u64 = 8;
    const DEVICES_PER_BATCH: u64 = 5;
    const FLOWS_PER_BATCH: u64 = 26;
    let entries = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..proposers {
        let (leader, entries) = (leader.clone(), entries.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0;
            let mut mine = 0u64;
            while Instant::now() < deadline {
                let group: Vec<IngestBatch> = (0..BATCHES_PER_ENTRY)
                    .map(|_| {
                        seq += 1;
                        let ts = T0_US + seq * 1_000_000;
                        let base = (p * 10_000 + seq * DEVICES_PER_BATCH) % 1_000_000;
                        let mut s = summary(1000 + p, seq);
                        s.devices = (base..base + DEVICES_PER_BATCH).map(|i| device(i, ts)).collect();
                        s.flow_count = FLOWS_PER_BATCH;
                        let flows = (0..FLOWS_PER_BATCH).map(|k| flow(base + k, ts)).collect();
                        IngestBatch { summary: s, flows }
                    })
                    .collect();
                let r = leader.propose(Command::ApplyBatches(group)).await.expect("propose");
                assert!(r.batches.iter().all(|a| *a), "every batch is new");
                mine += 1;
                entries.fetch_add(1, Ordering::Relaxed);
                // The drainer's share: empty the outbox now and then (one entry per 100).
                if p == 0 && mine.is_multiple_of((100 / proposers).max(1)) {
                    leader.propose(Command::FlowsDrained { through: u64::MAX }).await.expect("drain");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("proposer");
    }
    let secs = start.elapsed().as_secs_f64();
    let n = entries.load(Ordering::Relaxed);
    println!(
        "apply {label}: {n} ApplyBatches entries in {secs:.1} s = {:.0} entries/s, {:.0} batches/s, {:.0} flows/s \
         ({proposers} in flight)",
        n as f64 / secs,
        (n * BATCHES_PER_ENTRY) as f64 / secs,
        (n * BATCHES_PER_ENTRY * FLOWS_PER_BATCH) as f64 / secs
    );
}

async fn apply_part(secs: u64, proposers: u64) {
    println!("== Raft apply rate ==");
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    // One node.
    let solo = ServedNode::start(1, dirs[0].path(), RaftConfig::default()).await;
    cluster::init(&solo.node).await.expect("init");
    solo.node.wait_for_leader(WAIT).await.expect("leader");
    apply_rate("1 node  ", solo.node.clone(), proposers, secs).await;
    solo.stop().await;

    // Three nodes: node 1 initialises, 2 and 3 join.
    let nodes = [
        ServedNode::start(1, dirs[1].path(), RaftConfig::default()).await,
        ServedNode::start(2, dirs[2].path(), RaftConfig::default()).await,
        ServedNode::start(3, dirs[3].path(), RaftConfig::default()).await,
    ];
    cluster::init(&nodes[0].node).await.expect("init");
    nodes[0].node.wait_for_leader(WAIT).await.expect("leader");
    for n in &nodes[1..] {
        cluster::join(&nodes[0].node, &join_request(n)).await.expect("join");
    }
    apply_rate("3 nodes ", nodes[0].node.clone(), proposers, secs).await;
    let index = nodes[0].node.applied_index().await.expect("applied");
    for n in &nodes[1..] {
        n.node.wait_for_applied(index, WAIT).await.expect("followers apply everything");
    }
    for n in nodes {
        n.stop().await;
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let devices = env_or("WARDLINE_CLUSTER_DEVICES", if full { 100_000 } else { 2_000 });
    let secs = env_or("WARDLINE_CLUSTER_APPLY_SECS", if full { 10 } else { 1 });
    let proposers = env_or("WARDLINE_CLUSTER_PROPOSERS", 16).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        if std::env::var_os("WARDLINE_CLUSTER_SKIP_SNAPSHOT").is_none() {
            snapshot_part(devices).await;
        }
        if std::env::var_os("WARDLINE_CLUSTER_SKIP_APPLY").is_none() {
            apply_part(secs, proposers).await;
        }
    });
}
