//! Cluster lifecycle: create a cluster (`init`), add a node (`join`), remove one
//! (`leave`), swap one for another (`replace`) and describe it (`status`).
//!
//! Every membership change runs on the leader (others answer `NotLeader` with the leader's
//! API address) and goes through openraft's joint consensus, so the cluster keeps a
//! quorum throughout. A new node is first added as a learner and waits until it has
//! caught up (from the log, or from a snapshot if the leader purged it) before it gets a
//! vote: a node that cannot keep up never weakens the quorum. The HTTP routes are in
//! `api`, the operator's commands in `crate::cli::cluster`.

pub mod api;
pub mod backup;

use crate::raft::peer_auth::RefusalCounts;
use crate::raft::{ClusterNode, ProposeError, RaftNode};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// How long a joining node may take to catch up before `join`/`replace` give up waiting
/// (the node stays a learner; `leave` removes it).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a lifecycle operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Membership changes run on the leader; send the request there.
    #[error("node {node} is not the leader; send this to the leader ({})", describe_leader(*.leader_id, .leader_api.as_deref()))]
    NotLeader { node: u64, leader_id: Option<u64>, leader_api: Option<String> },
    /// The request itself is wrong (fix it).
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the cluster as it is (e.g. init of a node that has state).
    #[error("{0}")]
    Conflict(String),
    /// The cluster could not carry it out now (retry, or check the named node).
    #[error("{0}")]
    Unavailable(String),
}

impl From<ProposeError> for ClusterError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { leader_id, leader_addr, .. } => {
                ClusterError::NotLeader { node: 0, leader_id, leader_api: leader_addr }
            }
            ProposeError::Rejected(m) => ClusterError::Conflict(format!("the cluster refused the change: {m}")),
            ProposeError::Fatal(m) => ClusterError::Unavailable(format!("the Raft node has stopped: {m}")),
        }
    }
}

fn describe_leader(id: Option<u64>, api: Option<&str>) -> String {
    match (id, api) {
        (Some(id), Some(api)) => format!("node {id}, API at {api}"),
        (Some(id), None) => format!("node {id}"),
        _ => "unknown: an election may be in progress, retry shortly".into(),
    }
}

/// One member as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    /// `voter` or `learner`.
    pub role: String,
    pub raft_addr: String,
    pub api_addr: String,
    pub ingest_addr: String,
}

/// `GET /api/v1/cluster/status` and `wardline-aggregator cluster status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// None on a fresh node that no cluster has contacted yet.
    pub cluster_id: Option<String>,
    pub node_id: u64,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    pub leader_id: Option<u64>,
    pub leader: Option<MemberStatus>,
    pub current_term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// Raft RPCs this node refused since it started, by reason.
    pub refused_rpcs: RefusalCounts,
    /// This node's certificate in use (decision 0040); absent from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<crate::tls::CertificateSummary>,
}

/// What `join` and `replace` are told about the new node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub node_id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub ingest_addr: String,
}

impl JoinRequest {
    fn node(&self) -> Result<ClusterNode, ClusterError> {
        if self.node_id == 0 {
            return Err(ClusterError::BadRequest("node_id must be greater than 0".into()));
        }
        for (what, v) in
            [("raft_addr", &self.raft_addr), ("api_addr", &self.api_addr), ("ingest_addr", &self.ingest_addr)]
        {
            if v.trim().is_empty() || !v.contains(':') {
                return Err(ClusterError::BadRequest(format!(
                    "{what} {v:?} must be host:port (the address peers reach node {} by)",
                    self.node_id
                )));
            }
        }
        Ok(ClusterNode {
            raft_addr: self.raft_addr.clone(),
            api_addr: self.api_addr.clone(),
            ingest_addr: self.ingest_addr.clone(),
        })
    }
}

/// The status of the cluster as this node sees it.
pub async fn status(node: &RaftNode) -> ClusterStatus {
    let m = node.metrics();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members: Vec<MemberStatus> =
        membership.nodes().map(|(id, n)| member_status(*id, n, voters.contains(id))).collect();
    let leader = m.current_leader.and_then(|l| members.iter().find(|s| s.id == l).cloned());
    ClusterStatus {
        cluster_id: node.cluster_id(),
        node_id: node.node_id(),
        state: format!("{:?}", m.state),
        leader_id: m.current_leader,
        leader,
        current_term: m.current_term,
        last_log_index: m.last_log_index,
        committed_index: node.committed_index(),
        applied_index: node.applied_index().await,
        members,
        refused_rpcs: node.refusals.counts(),
        certificate: crate::tls::certificate_summary(&node.tls),
    }
}

fn member_status(id: u64, n: &ClusterNode, voter: bool) -> MemberStatus {
    MemberStatus {
        id,
        role: if voter { "voter" } else { "learner" }.into(),
        raft_addr: n.raft_addr.clone(),
        api_addr: n.api_addr.clone(),
        ingest_addr: n.ingest_addr.clone(),
    }
}

/// Create a new one-node cluster on this node, with a new cluster id; returns the id.
/// Refused if the node has ever been part of a cluster (a node never bootstraps twice).
pub async fn init(node: &RaftNode) -> Result<String, ClusterError> {
    if node.is_initialized().await.map_err(|e| ClusterError::Unavailable(format!("{e:#}")))? {
        return Err(ClusterError::Conflict(format!(
            "node {} already belongs to cluster {}; a node is initialised once (use `cluster status`)",
            node.node_id(),
            node.cluster_id().unwrap_or_else(|| "(id not recorded)".into())
        )));
    }
    if let Some(id) = node.cluster_id() {
        return Err(ClusterError::Conflict(format!(
            "node {} was contacted by cluster {id} and waits to join it; start a fresh data_dir to found a new cluster",
            node.node_id()
        )));
    }
    let id = ulid::Ulid::new().to_string();
    match node.initialize_cluster(&id).await {
        Ok(true) => {
            tracing::info!(node = node.node_id(), cluster = %id, "initialised a new one-node cluster");
            Ok(id)
        }
        Ok(false) => Err(ClusterError::Conflict(format!("node {} already belongs to a cluster", node.node_id()))),
        Err(e) => Err(ClusterError::Unavailable(format!("{e:#}"))),
    }
}

/// At start-up with `--init`: initialise a new cluster if this node has no state, and
/// otherwise resume (never initialise twice). Returns the new cluster id if it made one.
pub async fn init_if_new(node: &RaftNode) -> anyhow::Result<Option<String>> {
    if node.is_initialized().await? {
        // A crash right after `initialize` may have left the id unreplicated.
        node.record_cluster_id().await?;
        return Ok(None);
    }
    match init(node).await {
        Ok(id) => Ok(Some(id)),
        Err(e) => Err(anyhow::anyhow!("cannot initialise a new cluster: {e}")),
    }
}

/// Refuse to start a node whose data belongs to another cluster than `expected`.
pub fn check_expected_cluster(node: &RaftNode, expected: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    match node.cluster_id() {
        Some(own) if own != expected => anyhow::bail!(
            "data directory {} belongs to cluster {own}, but this node is configured for cluster {expected}: \
             point data_dir at this cluster's data, or use a fresh directory and `cluster join`",
            data_dir.display()
        ),
        Some(_) => Ok(()),
        None => node.adopt_cluster_id(expected).map_err(|e| anyhow::anyhow!("{e}")),
    }
}

fn require_leader(node: &RaftNode) -> Result<(), ClusterError> {
    let m = node.metrics();
    if m.current_leader == Some(node.node_id()) {
        return Ok(());
    }
    let leader_api =
        m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.api_addr.clone()));
    Err(ClusterError::NotLeader { node: node.node_id(), leader_id: m.current_leader, leader_api })
}

fn with_node(node: &RaftNode, e: ClusterError) -> ClusterError {
    match e {
        ClusterError::NotLeader { leader_id, leader_api, .. } => {
            ClusterError::NotLeader { node: node.node_id(), leader_id, leader_api }
        }
        other => other,
    }
}

/// Add a learner and wait (bounded) until it has caught up.
async fn add_caught_up_learner(node: &RaftNode, id: u64, n: ClusterNode) -> Result<(), ClusterError> {
    match tokio::time::timeout(CATCH_UP_TIMEOUT, node.add_learner(id, n.clone(), true)).await {
        Ok(r) => r.map_err(|e| with_node(node, e.into())),
        Err(_) => Err(ClusterError::Unavailable(format!(
            "node {id} was added as a learner but did not catch up within {CATCH_UP_TIMEOUT:?}: check that it runs \
             and that its Raft address {} is reachable with its node certificate, then retry (or remove it with \
             `cluster leave --node-id {id}`)",
            n.raft_addr
        ))),
    }
}

/// Add node `req.node_id` as a learner, wait until it has caught up, then make it a voter
/// (joint consensus). Idempotent for a node that is already a voter with the same addresses.
pub async fn join(node: &RaftNode, req: &JoinRequest) -> Result<ClusterStatus, ClusterError> {
    let n = req.node()?;
    require_leader(node)?;
    let m = node.metrics();
    let membership = m.membership_config.membership();
    if let Some(existing) = membership.get_node(&req.node_id) {
        if *existing != n {
            return Err(ClusterError::Conflict(format!(
                "node {} is already a member with other addresses ({existing}); remove it with `cluster leave` \
                 first, or use `cluster replace`",
                req.node_id
            )));
        }
    }
    let is_voter = membership.voter_ids().any(|v| v == req.node_id);
    if !is_voter {
        add_caught_up_learner(node, req.node_id, n).await?;
        node.change_members(ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id])))
            .await
            .map_err(|e| with_node(node, e.into()))?;
        tracing::info!(node = req.node_id, "node joined the cluster as a voter");
    }
    Ok(status(node).await)
}

/// Remove node `id` (voter or learner) from the cluster.
pub async fn leave(node: &RaftNode, id: u64) -> Result<ClusterStatus, ClusterError> {
    require_leader(node)?;
    let m = node.metrics();
    let membership = m.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Err(ClusterError::BadRequest(format!(
            "node {id} is not a member of this cluster (see `cluster status`)"
        )));
    }
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let change = if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(ClusterError::Conflict(format!(
                "node {id} is the only voter; a cluster cannot remove its last voter"
            )));
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    node.change_members(change).await.map_err(|e| with_node(node, e.into()))?;
    tracing::info!(node = id, "node removed from the cluster");
    Ok(status(node).await)
}

/// Replace voter `old` by the new node `new`: the new node catches up as a learner (from
/// a snapshot if the log was purged), then one membership change (joint consensus)
/// makes it a voter and removes `old`.
pub async fn replace(node: &RaftNode, old: u64, new: &JoinRequest) -> Result<ClusterStatus, ClusterError> {
    let n = new.node()?;
    if old == new.node_id {
        return Err(ClusterError::BadRequest("--old and --new name the same node".into()));
    }
    require_leader(node)?;
    let m = node.metrics();
    let membership = m.membership_config.membership();
    let mut voters: BTreeSet<u64> = membership.voter_ids().collect();
    if !voters.contains(&old) {
        return Err(ClusterError::BadRequest(format!(
            "node {old} is not a voter of this cluster (see `cluster status`)"
        )));
    }
    if voters.contains(&new.node_id) {
        return Err(ClusterError::Conflict(format!("node {} is already a voter", new.node_id)));
    }
    add_caught_up_learner(node, new.node_id, n).await?;
    voters.remove(&old);
    voters.insert(new.node_id);
    node.change_membership(voters, false).await.map_err(|e| with_node(node, e.into()))?;
    tracing::info!(old, new = new.node_id, "node replaced");
    Ok(status(node).await)
}
