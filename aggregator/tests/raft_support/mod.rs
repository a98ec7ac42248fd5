//! Helpers shared by the Raft integration tests: batch builders, node configs, a fleet
//! CA with node certificates, and nodes serving Raft RPC over loopback HTTPS with mutual
//! TLS (and the HTTP API, with the cluster routes, over loopback HTTP).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use ulid::Ulid;
use wardline_aggregator::api;
use wardline_aggregator::config::TlsPaths;
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::raft::{network, ClusterNode, RaftConfig, RaftNode};
use wardline_aggregator::sink::FlowSink;
use wardline_aggregator::state::{BatchSummary, Command};
use wardline_common::{DeviceObservation, Evidence, Field, FlowRecord, MacAddr, Proto, SensorStats};
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

/// A fleet CA shared by the tests of this binary (`which` names it: "fleet", "other").
pub fn ca_dir(which: &'static str) -> &'static Path {
    static FLEET: OnceLock<tempfile::TempDir> = OnceLock::new();
    static OTHER: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cell = if which == "fleet" { &FLEET } else { &OTHER };
    let dir = cell.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        wardline_aggregator::pki::init_ca(&d.path().join("ca"), &format!("test {which} CA")).expect("CA");
        d
    });
    Box::leak(dir.path().join("ca").into_boxed_path())
}

/// Issue a node certificate for `id` from the fleet CA into `dir/tls`.
pub fn node_tls(id: u64, dir: &Path) -> TlsPaths {
    node_tls_from("fleet", id, &dir.join("tls"))
}

/// Issue a node certificate for `id` from CA `which` into `out`.
pub fn node_tls_from(which: &'static str, id: u64, out: &Path) -> TlsPaths {
    wardline_aggregator::pki::issue_node(ca_dir(which), id, &[], out).expect("issue node certificate");
    TlsPaths::in_dir(out, "node")
}

/// Addresses of a node that never serves (one-member clusters never dial themselves).
pub fn unserved() -> ClusterNode {
    ClusterNode { raft_addr: "127.0.0.1:1".into(), api_addr: "127.0.0.1:1".into(), ingest_addr: "127.0.0.1:1".into() }
}

/// Open a Raft node with a fresh node certificate and addresses that are never served.
pub async fn open_unserved(id: u64, dir: &Path, cfg: RaftConfig) -> anyhow::Result<Arc<RaftNode>> {
    RaftNode::open(id, dir, unserved(), cfg, &node_tls(id, dir)).await
}

/// A node serving Raft RPC over loopback HTTPS (mutual TLS) and its API, with the
/// cluster routes (and, if started with a sink, the query routes), over loopback HTTP.
pub struct ServedNode {
    pub node: Arc<RaftNode>,
    /// The API address (host:port).
    pub addr: String,
    pub raft_addr: String,
    pub dir: PathBuf,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl ServedNode {
    pub async fn start(id: u64, dir: &Path, cfg: RaftConfig) -> ServedNode {
        Self::serve(id, dir, cfg, None, None).await
    }

    /// A node that also serves the query API, reading flows from `sink` and classifying
    /// with the built-in knowledge base, as `wardline-aggregator run` does.
    pub async fn start_with_api(id: u64, dir: &Path, cfg: RaftConfig, sink: Arc<dyn FlowSink>) -> ServedNode {
        Self::serve(id, dir, cfg, Some(sink), None).await
    }

    /// Start again over the same data directory and Raft address (after `stop`).
    pub async fn restart(id: u64, dir: &Path, cfg: RaftConfig, raft_addr: &str) -> ServedNode {
        Self::serve(id, dir, cfg, None, Some(raft_addr)).await
    }

    async fn serve(
        id: u64,
        dir: &Path,
        cfg: RaftConfig,
        sink: Option<Arc<dyn FlowSink>>,
        raft_addr: Option<&str>,
    ) -> ServedNode {
        let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = api_listener.local_addr().expect("local addr").to_string();
        let raft_listener = bind_retrying(raft_addr.unwrap_or("127.0.0.1:0")).await;
        let raft_addr = raft_listener.local_addr().expect("local addr").to_string();
        let me =
            ClusterNode { raft_addr: raft_addr.clone(), api_addr: addr.clone(), ingest_addr: "127.0.0.1:1".into() };
        let node = RaftNode::open(id, dir, me, cfg, &node_tls(id, dir)).await.expect("open raft node");
        let mut app = wardline_aggregator::cluster::api::router(node.clone());
        if let Some(sink) = sink {
            let kb = Arc::new(KnowledgeBase::builtin().expect("the built-in knowledge base loads"));
            let query = QueryService::new(node.clone(), sink, kb, Arc::new(IngestStats::default()));
            app = app.merge(api::router(Arc::new(query)));
        }
        let api_server = tokio::spawn(async move {
            let _ = axum::serve(api_listener, app).await;
        });
        let raft_node = node.clone();
        let raft_server = tokio::spawn(async move {
            network::serve(raft_listener, raft_node, std::future::pending()).await.expect("serve Raft RPC");
        });
        ServedNode { node, addr, raft_addr, dir: dir.to_path_buf(), servers: vec![api_server, raft_server] }
    }

    /// How peers reach this node.
    pub fn member(&self) -> ClusterNode {
        self.node.me().clone()
    }

    /// The JSON body of `cluster join` for this node.
    pub fn join_request(&self) -> serde_json::Value {
        let m = self.member();
        serde_json::json!({"node_id": self.node.node_id(), "raft_addr": m.raft_addr, "api_addr": m.api_addr,
                           "ingest_addr": m.ingest_addr})
    }

    /// Stop Raft and both servers (the node then looks dead to its peers).
    pub async fn stop(self) {
        self.node.shutdown().await;
        for s in self.servers {
            s.abort();
            let _ = s.await;
        }
    }
}

async fn bind_retrying(addr: &str) -> tokio::net::TcpListener {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}

/// POST JSON to a node's API; returns (status, body).
pub async fn post_api(node: &ServedNode, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.post(format!("http://{}{path}", node.addr)).json(body).send().await.expect("API reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// A device on VLAN 40 at `ip`, seen for a millisecond from `ts`, with `evidence` learned
/// over `proto` (the alert, policy and risk tests' device).
pub fn device_on_vlan_40(
    mac: MacAddr,
    ip: &str,
    ts: u64,
    proto: Proto,
    evidence: &[(Field, &str)],
) -> DeviceObservation {
    DeviceObservation {
        mac,
        ips: vec![ip.parse().unwrap()],
        vlans: vec![40],
        first_seen_us: ts,
        last_seen_us: ts + 1_000,
        packets: 4,
        bytes: 400,
        evidence: evidence.iter().map(|(f, v)| Evidence::new(*f, *v, proto, ts)).collect(),
    }
}

/// A finished TCP flow on VLAN 40 from `a` to `b`'s `port`, starting at `ts`.
pub fn tcp_flow_on_vlan_40(a: (MacAddr, &str), b: (MacAddr, &str), port: u16, ts: u64) -> FlowRecord {
    FlowRecord {
        ip_proto: 6,
        vlan: Some(40),
        a_mac: a.0,
        b_mac: b.0,
        a_ip: a.1.parse().unwrap(),
        b_ip: b.1.parse().unwrap(),
        a_port: 49_152,
        b_port: port,
        first_seen_us: ts,
        last_seen_us: ts + 5_000,
        packets_ab: 5,
        packets_ba: 4,
        bytes_ab: 700,
        bytes_ba: 500,
        tcp_flags_ab: 0x1b,
        tcp_flags_ba: 0x1b,
        app: std::borrow::Cow::Borrowed("unknown"),
        end_reason: std::borrow::Cow::Borrowed("fin"),
    }
}

/// A one-node cluster behind the production HTTPS API server: a fleet CA, the node's
/// certificate, an operator certificate for every role (`op-<role>` folders), the embedded
/// flow store. The alert, policy and risk route tests drive it as operators.
pub struct SecureApiNode {
    pub raft: Arc<RaftNode>,
    /// `https://127.0.0.1:<port>`.
    pub base: String,
    /// Node data and scratch files of the test.
    pub data: tempfile::TempDir,
    fleet: tempfile::TempDir,
    served: ServedNode,
    server: tokio::task::JoinHandle<()>,
}

impl SecureApiNode {
    pub async fn start(fleet_name: &str) -> SecureApiNode {
        use wardline_aggregator::auth::Role;
        use wardline_aggregator::pki;
        let fleet = tempfile::tempdir().unwrap();
        let p = fleet.path();
        pki::init_ca(&p.join("ca"), fleet_name).unwrap();
        pki::issue_node(&p.join("ca"), 1, &[], &p.join("node1")).unwrap();
        for role in Role::ALL {
            pki::issue_operator(&p.join("ca"), &format!("op-{role}"), role, &p.join(format!("op-{role}"))).unwrap();
        }
        let data = tempfile::tempdir().unwrap();
        let served = ServedNode::start(1, &data.path().join("raft"), config(1000)).await;
        let raft = served.node.clone();
        raft.initialize_single_if_new().await.unwrap();
        raft.wait_for_leader(WAIT).await.unwrap();
        let sink =
            Arc::new(wardline_aggregator::sink::embedded::EmbeddedSink::open(&data.path().join("flows")).unwrap());
        let kb = Arc::new(KnowledgeBase::builtin().unwrap());
        let query = QueryService::new(raft.clone(), sink, kb, Arc::new(IngestStats::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let tls = TlsPaths::in_dir(&p.join("node1"), "node");
        let router = api::router(Arc::new(query));
        let server_raft = raft.clone();
        let server = tokio::spawn(async move {
            wardline_aggregator::auth::server::serve(listener, router, &tls, server_raft, std::future::pending())
                .await
                .unwrap()
        });
        SecureApiNode { raft, base, data, fleet, served, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The folder of `role`'s operator certificate (for `--cert-dir` / `WARDLINE_CERT_DIR`).
    pub fn operator_dir(&self, role: wardline_aggregator::auth::Role) -> PathBuf {
        self.fleet.path().join(format!("op-{role}"))
    }

    /// An HTTPS client presenting `role`'s operator certificate.
    pub fn operator(&self, role: wardline_aggregator::auth::Role) -> reqwest::Client {
        use wardline_aggregator::auth::client::{api_client, ApiAuth};
        api_client(&ApiAuth { token: None, cert_dir: Some(self.operator_dir(role)), ca: None }).unwrap()
    }

    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        self.served.stop().await;
    }
}

/// Send a request; its status and JSON body (null when it has none).
pub async fn answer(req: reqwest::RequestBuilder) -> (reqwest::StatusCode, serde_json::Value) {
    let resp = req.send().await.expect("the request reaches the node");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// The sensor behind `capture` of a generated hospital, configured from the truth: its native
/// sites' networks are local, every other site's networks are that remote site's (shared by
/// the ground-truth and recommendation tests).
pub fn truth_sensor_config(
    dir: &std::path::Path,
    truth: &wardline_sim::GroundTruth,
    capture: &wardline_sim::TruthCapture,
) -> wardline_sensor::config::SensorConfig {
    let nets_of = |site: &str| -> Vec<String> {
        truth.networks.iter().filter(|n| n.site == site).map(|n| n.cidr.clone()).collect()
    };
    let spool_dir = dir.join(format!("spool-{}", capture.sensor));
    let local: Vec<String> = capture.native_sites.iter().flat_map(|s| nets_of(s)).collect();
    let mut text = format!(
        "sensor_id = {:?}\nsite = {:?}\nspool_dir = {:?}\nlocal_networks = {:?}\n",
        capture.sensor,
        capture.site,
        spool_dir.display().to_string(),
        local
    );
    // Every other site of the hospital is remote: the routed sites the capture entry names
    // (their traffic crosses the capture's transit link), and the sites its own routed
    // site's devices talk to through their router (the clinic's access sensor sees the
    // campus servers that way).
    let remote: std::collections::BTreeSet<&str> = truth
        .networks
        .iter()
        .map(|n| n.site.as_str())
        .filter(|s| !capture.native_sites.iter().any(|n| n == s))
        .collect();
    assert!(
        capture.routed_sites.iter().all(|r| remote.contains(r.site.as_str())),
        "{}: a routed site is also native",
        capture.sensor
    );
    for site in remote {
        text.push_str(&format!("[[remote_sites]]\nsite = {site:?}\nnetworks = {:?}\n", nets_of(site)));
    }
    text.push_str(
        "[uplink]\nserver = \"127.0.0.1:4433\"\n[tls]\ncert = \"unused.pem\"\nkey = \"unused.key\"\nca = \"unused-ca.pem\"\n",
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("sensor config for {}: {e}\n{text}", capture.sensor))
}

/// Everything the real sensor path spools for one capture, oldest first.
pub fn truth_sensor_batches(
    dir: &std::path::Path,
    truth: &wardline_sim::GroundTruth,
    capture: &wardline_sim::TruthCapture,
) -> Vec<wardline_common::Batch> {
    let cfg = truth_sensor_config(dir, truth, capture);
    let spool = std::sync::Arc::new(
        wardline_sensor::spool::Spool::open(&cfg.spool_dir, cfg.spool_max_bytes).expect("open spool"),
    );
    let mut batcher = wardline_sensor::run::Batcher::new(spool.clone(), &cfg, None).expect("batcher");
    let source = wardline_sensor::capture::Source::File(dir.join(&capture.file));
    wardline_sensor::run::capture_all(&cfg, &[source], &std::sync::atomic::AtomicBool::new(false), &mut batcher)
        .expect("sensor reads its capture");
    let batches = spool.oldest(usize::MAX).expect("read spool");
    assert_eq!(batches.len() as u64, batcher.spooled, "{}: every spooled batch is read back", capture.sensor);
    assert!(!batches.is_empty(), "{}: the sensor spooled nothing", capture.sensor);
    batches
}
