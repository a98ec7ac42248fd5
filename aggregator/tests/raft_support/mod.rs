//! Helpers shared by the Raft integration tests: batch builders, node configs and
//! loopback HTTP serving of the Raft RPC router.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;
use ulid::Ulid;
use wardline_aggregator::api;
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::raft::{network, RaftConfig, RaftNode};
use wardline_aggregator::sink::FlowSink;
use wardline_aggregator::state::{BatchSummary, Command};
use wardline_common::{DeviceObservation, Evidence, Field, MacAddr, Proto, SensorStats};
use wardline_intel::KnowledgeBase;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn mac(last: u8) -> MacAddr {
    MacAddr([0x00, 0x09, 0xfb, 0x10, 0x20, last])
}

/// A batch from `sensor` with sequence `seq` that reports device `mac(device)` with a
/// hostname and one packet count.
pub fn batch(sensor: &str, seq: u64, device: u8) -> Command {
    Command::ApplyBatch(BatchSummary {
        batch_id: Ulid::from_parts(1_700_000_000_000 + seq, u128::from(seq) | (u128::from(sensor.len() as u64) << 64)),
        sensor_id: sensor.to_string(),
        site: "ward-3".into(),
        seq,
        devices: vec![DeviceObservation {
            mac: mac(device),
            ips: vec![std::net::IpAddr::from([10, 3, 0, device])],
            vlans: vec![30],
            first_seen_us: seq * 1_000,
            last_seen_us: seq * 1_000 + 500,
            packets: 10,
            bytes: 1_000,
            evidence: vec![Evidence::new(Field::Hostname, format!("PUMP-{device:02}"), Proto::Dhcp, seq * 1_000)],
        }],
        hosts: vec![],
        bindings: vec![],
        flow_count: 2,
        flow_packets: 20,
        flow_bytes: 2_000,
        stats: Some(SensorStats { packets: seq * 100, ..Default::default() }),
    })
}

/// Test timing: the defaults, except snapshots every `snapshot_every` entries with no
/// log kept behind them, so snapshot building, purging and installing all happen.
pub fn config(snapshot_every: u64) -> RaftConfig {
    RaftConfig { snapshot_every, logs_kept_after_snapshot: 0, ..RaftConfig::default() }
}

/// A node serving its Raft RPC router (and, if started with one, the HTTP API) over
/// loopback HTTP.
pub struct ServedNode {
    pub node: Arc<RaftNode>,
    pub addr: String,
    server: tokio::task::JoinHandle<()>,
}

impl ServedNode {
    pub async fn start(id: u64, dir: &std::path::Path, cfg: RaftConfig) -> ServedNode {
        Self::serve(id, dir, cfg, network::router).await
    }

    /// A node that also serves the HTTP API, reading flows from `sink` and classifying with
    /// the built-in knowledge base, on the same listener as `wardline-aggregator run` does.
    pub async fn start_with_api(
        id: u64,
        dir: &std::path::Path,
        cfg: RaftConfig,
        sink: Arc<dyn FlowSink>,
    ) -> ServedNode {
        let kb = Arc::new(KnowledgeBase::builtin().expect("the built-in knowledge base loads"));
        Self::serve(id, dir, cfg, move |node: Arc<RaftNode>| {
            let query = QueryService::new(node.clone(), sink, kb, Arc::new(IngestStats::default()));
            api::router(Arc::new(query)).merge(network::router(node))
        })
        .await
    }

    async fn serve(
        id: u64,
        dir: &std::path::Path,
        cfg: RaftConfig,
        app: impl FnOnce(Arc<RaftNode>) -> axum::Router,
    ) -> ServedNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr").to_string();
        let node = RaftNode::open(id, dir, addr.clone(), cfg).await.expect("open raft node");
        let app = app(node.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ServedNode { node, addr, server }
    }

    /// Stop Raft and the HTTP server (the node then looks dead to its peers).
    pub async fn stop(self) {
        self.node.shutdown().await;
        self.server.abort();
        let _ = self.server.await;
    }
}
