//! The aggregator's Raft node (openraft 0.9, storage v2): a sled-backed log
//! (`log_store`), a state machine over `ClusterState` (`state_machine`), and Raft RPC
//! over HTTPS with mutual TLS on its own listener (`network`, `peer_auth`, `tls`),
//! wrapped in `RaftNode` for the rest of the aggregator.
//!
//! Cluster lifecycle (init, join, leave, replace) lives in `crate::cluster`; this module
//! offers the primitives: a cluster id kept in `raft_meta` and in the replicated state,
//! `add_learner` and `change_membership`. A follower answers proposals with
//! `ProposeError::NotLeader` naming the leader's API address.
//!
//! On disk, one sled database per node at `<data_dir>/raft.sled` holds the trees
//! `raft_log`, `raft_meta` (vote, committed, last purged, owner node id, cluster id) and
//! `raft_sm` (latest snapshot).

pub mod features;
pub mod log_store;
pub mod network;
pub mod peer_auth;
pub mod state_machine;
pub mod tls;

use crate::config::TlsPaths;
use crate::state::{ApplyResponse, ClusterState, Command};
use anyhow::Context;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, RaftMetrics, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use state_machine::{StateMachineData, StateMachineStore};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Where a cluster member is reached: Raft RPC (HTTPS, mutual TLS), the HTTP API, and
/// QUIC ingest for sensors. Replicated in the membership, so every node (and later
/// sensors and forwarding) can find every other.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub raft_addr: String,
    pub api_addr: String,
    pub ingest_addr: String,
}

impl std::fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft {} api {} ingest {}", self.raft_addr, self.api_addr, self.ingest_addr)
    }
}

openraft::declare_raft_types!(
    /// Openraft type configuration of the aggregator cluster.
    pub TypeConfig:
        D = Command,
        R = ApplyResponse,
        NodeId = u64,
        Node = ClusterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// `Command::SensorHeartbeat` (decision 0038).
pub const FEATURE_SENSOR_HEALTH: &str = "sensor_health";
/// `Command::ApplyReportedBatches` (decision 0045).
pub const FEATURE_SPOOL_LOSSES: &str = "spool_losses";
/// `Command::ApplyEpochBatches` (decision 0036).
pub const FEATURE_SENSOR_EPOCHS: &str = "sensor_epochs";
/// `Command::RecordRiskHistory` (decision 0043).
pub const FEATURE_RISK_HISTORY: &str = "risk_history";
/// Features of this build a leader asks its members about (`network::PATH_FEATURES`) before
/// proposing commands an older node could not decode (`features::FeatureGate`).
pub const FEATURES: &[&str] =
    &[FEATURE_SENSOR_HEALTH, FEATURE_SPOOL_LOSSES, FEATURE_SENSOR_EPOCHS, FEATURE_RISK_HISTORY];

/// What the Raft RPC router is given: the node whose `Raft` serves the requests.
pub type RaftHandle = Arc<RaftNode>;

/// Encoding of everything the Raft layer stores or sends: bincode 2 (serde, standard
/// config) with a size limit so a corrupt length prefix cannot trigger a huge allocation.
/// Run `work` every `every` on this node while it leads, until `stop` turns true; a failure
/// is logged as "cannot {what} (retrying in …)". The periodic duties a leader proposes through
/// Raft (membership refresh, sensor-silence tick) share this loop, so a new leader carries on.
pub async fn every_while_leader<F, Fut>(
    raft: &RaftNode,
    every: std::time::Duration,
    what: &str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        if raft.metrics().current_leader != Some(raft.node_id()) {
            continue;
        }
        if let Err(e) = work().await {
            tracing::warn!("cannot {what} (retrying in {every:?}): {e}");
        }
    }
}

pub mod codec {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    /// Largest encoded value (log entry, snapshot, RPC body).
    pub const MAX_BYTES: usize = 256 * 1024 * 1024;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct CodecError(String);

    impl From<String> for CodecError {
        fn from(s: String) -> Self {
            CodecError(s)
        }
    }

    fn config() -> impl bincode::config::Config {
        bincode::config::standard().with_limit::<MAX_BYTES>()
    }

    pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError(format!("bincode encode: {e}")))
    }

    /// Encode without a size limit (snapshots: any state that exists must be savable).
    pub fn encode_large<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map_err(|e| CodecError(format!("bincode encode: {e}")))
    }

    /// Decode a snapshot, whatever its size. Its bytes are already in memory (this node's
    /// store, or a transfer assembled chunk by chunk from an authenticated member); the
    /// decoder's allocation limit grows with them (32 × the input, at least `MAX_BYTES`),
    /// so a legitimate state of any size loads while a corrupt length prefix still cannot
    /// make the decoder allocate far more than the input could describe.
    pub fn decode_large<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        const GIB: usize = 1024 * 1024 * 1024;
        let needed = bytes.len().saturating_mul(32);
        if needed <= MAX_BYTES {
            return decode_with(bytes, config());
        }
        if needed <= 4 * GIB {
            return decode_with(bytes, bincode::config::standard().with_limit::<{ 4 * GIB }>());
        }
        if needed <= 64 * GIB {
            return decode_with(bytes, bincode::config::standard().with_limit::<{ 64 * GIB }>());
        }
        decode_with(bytes, bincode::config::standard())
    }

    fn decode_with<T: DeserializeOwned>(bytes: &[u8], config: impl bincode::config::Config) -> Result<T, CodecError> {
        let (value, used) = bincode::serde::decode_from_slice(bytes, config)
            .map_err(|e| CodecError(format!("bincode decode of {} bytes: {e}", bytes.len())))?;
        if used != bytes.len() {
            return Err(CodecError(format!("{} trailing bytes after a {used}-byte value", bytes.len() - used)));
        }
        Ok(value)
    }

    /// Decode a whole buffer; trailing bytes are an error (they mean a format mismatch).
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let (value, used) = bincode::serde::decode_from_slice(bytes, config())
            .map_err(|e| CodecError(format!("bincode decode of {} bytes: {e}", bytes.len())))?;
        if used != bytes.len() {
            return Err(CodecError(format!("{} trailing bytes after a {used}-byte value", bytes.len() - used)));
        }
        Ok(value)
    }
}

/// Raft timing and log-compaction settings of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Name openraft uses in its logs. Peers check the cluster id (`crate::cluster`), not this.
    pub cluster_name: String,
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries; bounds the replay on restart.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so slightly lagging followers catch up from
    /// the log instead of receiving a whole snapshot.
    pub logs_kept_after_snapshot: u64,
    /// Time allowed for sending one snapshot chunk.
    pub snapshot_timeout_ms: u64,
    /// Snapshots travel in chunks of at most this many bytes (≤ `network::MAX_SNAPSHOT_CHUNK`).
    pub snapshot_chunk_bytes: usize,
    /// Log entries one AppendEntries request carries at most. openraft gives each request
    /// only `heartbeat_interval_ms` to complete, and a group-commit entry can hold megabytes
    /// of flows, so a follower catching up receives a few entries per request rather than
    /// openraft's default 300 (which timed out again and again and never caught up).
    pub max_payload_entries: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            cluster_name: "wardline".into(),
            heartbeat_interval_ms: 100,
            // Generous against a busy machine: a needless election stalls ingest briefly.
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every: 2000,
            logs_kept_after_snapshot: 500,
            snapshot_timeout_ms: 30_000,
            snapshot_chunk_bytes: 4 * 1024 * 1024,
            max_payload_entries: 4,
        }
    }
}

impl RaftConfig {
    fn to_openraft(&self) -> anyhow::Result<openraft::Config> {
        let cfg = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            max_payload_entries: self.max_payload_entries,
            ..Default::default()
        };
        anyhow::ensure!(
            self.snapshot_chunk_bytes > 0 && self.snapshot_chunk_bytes <= network::MAX_SNAPSHOT_CHUNK,
            "snapshot_chunk_bytes must be between 1 and {} (peers refuse larger chunks)",
            network::MAX_SNAPSHOT_CHUNK
        );
        cfg.validate().context(
            "invalid Raft settings: need heartbeat_interval_ms < election_timeout_min_ms < election_timeout_max_ms",
        )
    }
}

/// Why a proposal (or membership change) did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts writes; retry there (or later, while an election runs).
    #[error("this node is not the Raft leader (leader: {})", describe_leader(*.leader_id, .leader_addr.as_deref()))]
    NotLeader {
        leader_id: Option<u64>,
        /// The leader's API address.
        leader_addr: Option<String>,
        /// The leader's QUIC ingest address, for sensors (`wire::not_leader_reason`).
        leader_ingest: Option<String>,
    },
    /// The Raft node stopped (shut down, or a storage failure); it accepts nothing more.
    #[error("the Raft node has stopped: {0}")]
    Fatal(String),
    /// The cluster refused the request itself (e.g. an invalid membership change).
    #[error("the cluster refused the request: {0}")]
    Rejected(String),
}

impl ProposeError {
    fn not_leader(leader_id: Option<u64>, leader: Option<ClusterNode>) -> ProposeError {
        let (leader_addr, leader_ingest) = leader.map(|n| (n.api_addr, n.ingest_addr)).unzip();
        ProposeError::NotLeader { leader_id, leader_addr, leader_ingest }
    }
}

fn describe_leader(id: Option<u64>, addr: Option<&str>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!("node {id} at {addr}"),
        (Some(id), None) => format!("node {id}"),
        _ => "unknown, an election may be in progress".into(),
    }
}

impl From<RaftError<u64, ClientWriteError<u64, ClusterNode>>> for ProposeError {
    fn from(e: RaftError<u64, ClientWriteError<u64, ClusterNode>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ProposeError::not_leader(f.leader_id, f.leader_node)
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ProposeError::Rejected(e.to_string()),
            RaftError::Fatal(f) => ProposeError::Fatal(f.to_string()),
        }
    }
}

/// One aggregator's Raft node: consensus, durable log and the replicated `ClusterState`.
pub struct RaftNode {
    id: u64,
    me: ClusterNode,
    raft: openraft::Raft<TypeConfig>,
    sm: Arc<RwLock<StateMachineData>>,
    db: sled::Db,
    log: log_store::LogStore,
    /// The cluster this node belongs to (raft_meta `cluster_id`); None on a fresh node.
    cluster_id: SharedClusterId,
    /// Raft RPCs this node refused, by reason.
    pub refusals: Arc<peer_auth::Refusals>,
    /// Snapshot chunks this node received and accepted (since start).
    pub(crate) snapshot_chunks_received: std::sync::atomic::AtomicU64,
    /// Client TLS settings for Raft RPC (also used by tests and tools that dial peers).
    pub(crate) tls: TlsPaths,
    /// The Raft RPC client, for what a follower forwards to the leader (audit entries).
    forward: network::HttpsNetworkFactory,
    /// Which features the other members support (asked before proposing newer commands).
    features: features::FeatureGate,
}

/// The cluster id, shared with the RPC client (which sends it with every request).
pub type SharedClusterId = Arc<std::sync::RwLock<Option<String>>>;

const KEY_NODE_ID: &[u8] = b"node_id";
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";

/// Why a node was asked to take on a cluster id it cannot take.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterIdMismatch(pub String);

impl RaftNode {
    /// Open (or create) the node's storage under `data_dir` and start Raft. `me` is how
    /// peers reach this node; `tls` holds its node certificate, key and the fleet CA, used
    /// for Raft RPC in both directions. A node that has state resumes it: same log, same
    /// vote, same cluster id, and the inventory rebuilt from the last snapshot plus the
    /// committed log. Call `shutdown` before dropping the last handle.
    pub async fn open(
        node_id: u64,
        data_dir: &Path,
        me: ClusterNode,
        config: RaftConfig,
        tls: &TlsPaths,
    ) -> anyhow::Result<Arc<RaftNode>> {
        let raft_config = Arc::new(config.to_openraft()?);
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the Raft data directory {}", data_dir.display()))?;
        let db = open_sled(&data_dir.join("raft.sled")).await?;
        claim_node_id(&db, node_id, data_dir)?;
        let cluster_id = read_cluster_id(&db, data_dir)?;

        let log = log_store::LogStore::open(&db).context("cannot open the Raft log trees")?;
        let sm = StateMachineStore::open(&db)?;
        let sm_data = sm.data();
        if let (Some(stored), Some(replicated)) = (&cluster_id, &sm_data.read().await.cluster_id) {
            anyhow::ensure!(
                stored == replicated,
                "data directory {} is inconsistent: raft_meta names cluster {stored} but its replicated state \
                 belongs to cluster {replicated}; restore the node from a fresh data directory",
                data_dir.display()
            );
        }
        let refusals = Arc::new(peer_auth::Refusals::default());
        let cluster_id: SharedClusterId = Arc::new(std::sync::RwLock::new(cluster_id));
        let network = network::HttpsNetworkFactory::new(tls, config.snapshot_chunk_bytes, cluster_id.clone())
            .context("cannot build the Raft HTTPS client")?;
        let forward = network.clone();
        let raft = openraft::Raft::new(node_id, raft_config, network, log.clone(), sm)
            .await
            .with_context(|| format!("cannot start Raft node {node_id} from {}", data_dir.display()))?;
        Ok(Arc::new(RaftNode {
            id: node_id,
            me,
            raft,
            sm: sm_data,
            db,
            log,
            cluster_id,
            refusals,
            snapshot_chunks_received: Default::default(),
            tls: tls.clone(),
            forward,
            features: features::FeatureGate::default(),
        }))
    }

    pub fn node_id(&self) -> u64 {
        self.id
    }

    /// The addresses this node advertises to its peers.
    pub fn me(&self) -> &ClusterNode {
        &self.me
    }

    /// The HTTP API address this node advertises to its peers.
    pub fn api_addr(&self) -> &str {
        &self.me.api_addr
    }

    /// The underlying openraft handle (for the RPC server and admin tooling).
    pub fn raft(&self) -> &openraft::Raft<TypeConfig> {
        &self.raft
    }

    /// The id of the cluster this node belongs to (None: a fresh node, not yet joined).
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cluster id carried by the replicated state (set by the cluster's first entry).
    pub async fn replicated_cluster_id(&self) -> Option<String> {
        self.sm.read().await.cluster_id.clone()
    }

    /// Take `id` as this node's cluster id, durably, if it has none; a node that already
    /// has another id refuses. Used at `init` and when a fresh node is first contacted
    /// by the cluster that adds it.
    pub fn adopt_cluster_id(&self, id: &str) -> Result<(), ClusterIdMismatch> {
        let mut current = self.cluster_id.write().unwrap_or_else(|e| e.into_inner());
        match current.as_deref() {
            Some(c) if c == id => Ok(()),
            Some(c) => Err(ClusterIdMismatch(format!("node {} belongs to cluster {c}, not {id}", self.id))),
            None => {
                let persist = || -> anyhow::Result<()> {
                    let meta = self.db.open_tree("raft_meta")?;
                    meta.insert(KEY_CLUSTER_ID, id.as_bytes())?;
                    meta.flush()?;
                    Ok(())
                };
                persist().map_err(|e| ClusterIdMismatch(format!("cannot store the cluster id {id}: {e}")))?;
                *current = Some(id.to_string());
                Ok(())
            }
        }
    }

    /// Snapshot chunks received and accepted since start (a transfer of N bytes in chunks
    /// of C bytes counts ceil(N / C)).
    pub fn snapshot_chunks_received(&self) -> u64 {
        self.snapshot_chunks_received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this node has ever been part of a cluster (a log, a vote or a membership).
    pub async fn is_initialized(&self) -> anyhow::Result<bool> {
        self.raft.is_initialized().await.context("the Raft node stopped")
    }

    /// Start a new one-member cluster with id `cluster_id` on this node. Refused (`Ok(false)`)
    /// if the node has ever been part of a cluster: a node never bootstraps twice.
    pub async fn initialize_cluster(&self, cluster_id: &str) -> anyhow::Result<bool> {
        if self.is_initialized().await? {
            return Ok(false);
        }
        self.adopt_cluster_id(cluster_id)?;
        let members = BTreeMap::from([(self.id, self.me.clone())]);
        match self.raft.initialize(members).await {
            Ok(()) => {}
            // Lost a race with a vote or log from a peer: already part of a cluster.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => return Ok(false),
            Err(e) => anyhow::bail!("cannot initialize a one-member cluster on node {}: {e}", self.id),
        }
        self.record_cluster_id().await?;
        Ok(true)
    }

    /// Make sure the cluster's first entry (its id) is in the replicated state: proposes
    /// it if this node leads a cluster whose state lacks it (e.g. after a crash right
    /// after `initialize`).
    pub async fn record_cluster_id(&self) -> anyhow::Result<()> {
        let Some(id) = self.cluster_id() else { return Ok(()) };
        if self.replicated_cluster_id().await.is_some() {
            return Ok(());
        }
        self.wait_for_leader(Duration::from_secs(10)).await?;
        if self.metrics().current_leader != Some(self.id) {
            return Ok(());
        }
        self.propose(Command::InitCluster { cluster_id: id })
            .await
            .context("cannot record the cluster id in the replicated state")?;
        Ok(())
    }

    /// Make this node a one-member cluster with a new id if it has never been part of
    /// one. Returns whether it initialized now; a restarted node returns `false`.
    pub async fn initialize_single_if_new(&self) -> anyhow::Result<bool> {
        self.initialize_cluster(&ulid::Ulid::new().to_string()).await
    }

    /// Read barrier for linearizable reads (read-index): a quorum confirms this node is
    /// still the leader, then this waits until everything committed before the call is
    /// applied here. A read of the state after it sees every write acknowledged before it.
    /// Only the leader can do this; a follower gets `NotLeader` naming the leader.
    pub async fn ensure_linearizable(&self, timeout: Duration) -> Result<(), ProposeError> {
        use openraft::error::CheckIsLeaderError;
        match tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await {
            Err(_) => Err(ProposeError::Rejected(format!(
                "no quorum confirmed this node's leadership within {timeout:?} (a partition or an election?)"
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ProposeError::not_leader(f.leader_id, f.leader_node))
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                Err(ProposeError::Rejected(format!("leadership not confirmed by a quorum: {q}")))
            }
            Ok(Err(RaftError::Fatal(f))) => Err(ProposeError::Fatal(f.to_string())),
        }
    }

    /// Replicate `cmd` through the cluster and apply it; returns the state machine's answer
    /// once the entry is committed (durable on a quorum) and applied here.
    pub async fn propose(&self, cmd: Command) -> Result<ApplyResponse, ProposeError> {
        let resp = self.raft.client_write(cmd).await?;
        Ok(resp.data)
    }

    /// Append an audit entry, on a follower by forwarding it to the leader over the Raft
    /// listener (`network::PATH_FORWARD_AUDIT`), so what an operator did (or was refused)
    /// through any node is in the replicated log.
    pub async fn record_audit(&self, entry: crate::state::audit::AuditEntry) -> Result<(), String> {
        match self.propose(Command::Audit(entry.clone())).await {
            Ok(_) => Ok(()),
            Err(ProposeError::NotLeader { leader_id: Some(leader), .. }) => {
                let node = self
                    .metrics()
                    .membership_config
                    .membership()
                    .get_node(&leader)
                    .cloned()
                    .ok_or_else(|| format!("the leader, node {leader}, is not in this node's membership"))?;
                self.forward.forward_audit(leader, node, &entry).await
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The features member `id` (`node`) says it supports (`FEATURES` of its build); an
    /// error when it cannot tell (unreachable, or an older version without the route).
    pub async fn peer_features(&self, id: u64, node: ClusterNode) -> Result<Vec<String>, String> {
        self.forward.features(id, node).await
    }

    /// Ok when every other member supports `feature` (one of [`FEATURES`]), else why not.
    pub async fn cluster_supports(&self, feature: &str) -> Result<(), String> {
        self.features.check(self, feature).await
    }

    /// Read the state as applied on this node. On a follower it may lag the leader.
    ///
    /// `f` runs under the state machine's lock, which `apply` needs for writing: copy out
    /// what is needed (device records are `Arc`s) and do the work after, as `query` does.
    pub async fn read_state<F, R>(&self, f: F) -> R
    where
        F: FnOnce(&ClusterState) -> R,
    {
        let sm = self.sm.read().await;
        f(&sm.state)
    }

    /// A consistent copy of the applied state with its last log id and replicated cluster
    /// id (taken under one lock; for backups).
    pub async fn applied_state_copy(&self) -> (Option<openraft::LogId<u64>>, Option<String>, ClusterState) {
        let sm = self.sm.read().await;
        (sm.last_applied, sm.cluster_id.clone(), sm.state.clone())
    }

    /// Index of the last log entry applied to this node's state.
    pub async fn applied_index(&self) -> Option<u64> {
        self.sm.read().await.last_applied.map(|id| id.index)
    }

    /// Index of the last entry this node knows committed.
    pub fn committed_index(&self) -> Option<u64> {
        self.log.committed_index()
    }

    /// A copy of the current Raft metrics (role, term, leader, membership, log indexes).
    pub fn metrics(&self) -> RaftMetrics<u64, ClusterNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Whether `id` is a voter or learner of this node's current membership (any
    /// configuration of a joint one).
    pub fn is_member(&self, id: u64) -> bool {
        self.raft.metrics().borrow().membership_config.membership().get_node(&id).is_some()
    }

    /// Whether this node knows no membership at all (fresh, waiting to be added).
    pub fn has_no_membership(&self) -> bool {
        self.raft.metrics().borrow().membership_config.membership().nodes().next().is_none()
    }

    /// Wait until some node is known as leader; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a known leader")
            .await
            .with_context(|| format!("node {} saw no leader within {timeout:?}", self.id))?;
        m.current_leader.context("metrics lost the leader")
    }

    /// Wait until this node has applied the log up to `index`.
    pub async fn wait_for_applied(&self, index: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.applied_index().await >= Some(index) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "node {} applied up to {:?}, not {index}, within {timeout:?}",
                    self.id,
                    self.applied_index().await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Add a non-voting member that receives the log. With `blocking`, returns once it
    /// has caught up. Must be called on the leader.
    pub async fn add_learner(&self, id: u64, node: ClusterNode, blocking: bool) -> Result<(), ProposeError> {
        self.raft.add_learner(id, node, blocking).await?;
        Ok(())
    }

    /// Make `voters` the voting members (they must already be learners or voters), through
    /// joint consensus. With `retain`, removed voters stay as learners. Must be called on
    /// the leader.
    pub async fn change_membership(&self, voters: BTreeSet<u64>, retain: bool) -> Result<(), ProposeError> {
        self.raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), retain).await?;
        Ok(())
    }

    /// Apply any membership change (e.g. remove a learner). Must be called on the leader.
    pub async fn change_members(&self, change: ChangeMembers<u64, ClusterNode>) -> Result<(), ProposeError> {
        self.raft.change_membership(change, false).await?;
        Ok(())
    }

    /// Stop Raft and flush storage. The node accepts nothing afterwards.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.id, "Raft core did not stop cleanly: {e}");
        }
        if let Err(e) = log_store::flush(&self.db).await {
            tracing::warn!(node = self.id, "final flush of the Raft store failed: {e}");
        }
    }
}

fn read_cluster_id(db: &sled::Db, data_dir: &Path) -> anyhow::Result<Option<String>> {
    let meta = db.open_tree("raft_meta")?;
    match meta.get(KEY_CLUSTER_ID)? {
        None => Ok(None),
        Some(v) => String::from_utf8(v.to_vec())
            .map(Some)
            .map_err(|_| anyhow::anyhow!("corrupt cluster id record in {}", data_dir.display())),
    }
}

/// Open sled, waiting briefly if the previous holder of the same directory (a node being
/// restarted within this process) has not released its lock yet.
async fn open_sled(path: &Path) -> anyhow::Result<sled::Db> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an `Other` I/O error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot open the Raft store {}: {e} (is another aggregator using this data_dir?)",
                    path.display()
                ))
            }
        }
    }
}

/// Bind the store to one node id: reusing a data directory under another id would make
/// a node vote twice in one term.
fn claim_node_id(db: &sled::Db, node_id: u64, data_dir: &Path) -> anyhow::Result<()> {
    let meta = db.open_tree("raft_meta")?;
    match meta.get(KEY_NODE_ID)? {
        None => {
            meta.insert(KEY_NODE_ID, &node_id.to_be_bytes())?;
            Ok(())
        }
        Some(v) => {
            let stored = <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| anyhow::anyhow!("corrupt node id record in {}", data_dir.display()))?;
            anyhow::ensure!(
                stored == node_id,
                "data directory {} belongs to Raft node {stored}, not {node_id}: use that node id or a fresh directory",
                data_dir.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use proptest::prelude::*;

    proptest! {
        /// Raft RPC bodies come off the network: any bytes decode to a value or an error.
        #[test]
        fn arbitrary_rpc_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = codec::decode::<AppendEntriesRequest<TypeConfig>>(&bytes);
            let _ = codec::decode::<VoteRequest<u64>>(&bytes);
            let _ = codec::decode::<network::SnapshotChunk>(&bytes);
            let _ = state_machine::SnapshotPayload::decode(&bytes);
        }
    }

    #[test]
    fn codec_refuses_trailing_bytes() {
        let mut bytes = codec::encode(&42u64).unwrap();
        assert_eq!(codec::decode::<u64>(&bytes).unwrap(), 42);
        bytes.push(0);
        let err = codec::decode::<u64>(&bytes).unwrap_err().to_string();
        assert!(err.contains("trailing"), "{err}");
    }

    #[test]
    fn propose_error_names_the_leader() {
        let e = ProposeError::NotLeader {
            leader_id: Some(2),
            leader_addr: Some("10.0.0.2:8080".into()),
            leader_ingest: None,
        };
        assert_eq!(e.to_string(), "this node is not the Raft leader (leader: node 2 at 10.0.0.2:8080)");
        let e = ProposeError::NotLeader { leader_id: None, leader_addr: None, leader_ingest: None };
        assert!(e.to_string().contains("election"));
    }
}
