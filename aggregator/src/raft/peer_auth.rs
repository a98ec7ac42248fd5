//! Who may talk Raft to this node, and the TLS listener that proves it.
//!
//! A connection is accepted only after a TLS 1.3 handshake with a client certificate
//! chained to the fleet CA (`tls::server_config`). Every request is then checked:
//! - the certificate must be a node certificate (`pki::node_identity`; a sensor
//!   certificate is refused);
//! - the request must name this node's cluster id (header `x-wardline-cluster`);
//! - the node must be a current member (voter or learner) of this node's membership, or
//!   this node has no membership yet (a fresh node waiting to be added), in which case it
//!   takes the caller's cluster id as its own.
//!
//! Refusals are counted by reason and logged once per (peer, reason); a refused request
//! never reaches openraft.

use super::RaftNode;
use serde::Serialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Header carrying the sender's cluster id on every Raft RPC.
pub const CLUSTER_HEADER: &str = "x-wardline-cluster";

/// Time allowed for a peer to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct (peer, reason) pairs remembered for log-once; beyond it, refusals are only counted.
const MAX_LOGGED_PEERS: usize = 4096;

/// Why a Raft RPC was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// TLS handshake failed: no client certificate, or one not from the fleet CA.
    Handshake,
    /// A fleet certificate that is not a node certificate (e.g. a sensor's).
    NotNodeCertificate,
    /// A node certificate of a node that is not a member of this cluster.
    NotMember,
    /// The request named another cluster id, or none.
    WrongCluster,
    /// Undecodable body, or a snapshot chunk out of order or malformed.
    Malformed,
    /// A body above the route's size limit.
    TooLarge,
}

impl RefusalReason {
    fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Handshake => "tls handshake",
            RefusalReason::NotNodeCertificate => "not a node certificate",
            RefusalReason::NotMember => "not a cluster member",
            RefusalReason::WrongCluster => "another cluster id",
            RefusalReason::Malformed => "malformed request",
            RefusalReason::TooLarge => "body too large",
        }
    }
}

/// Refused Raft RPCs by reason (this node only, since start).
#[derive(Default)]
pub struct Refusals {
    handshake: AtomicU64,
    not_node_certificate: AtomicU64,
    not_member: AtomicU64,
    wrong_cluster: AtomicU64,
    malformed: AtomicU64,
    too_large: AtomicU64,
    logged: Mutex<HashSet<(String, RefusalReason)>>,
}

/// A copy of the refusal counters, as served by `GET /api/v1/cluster/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RefusalCounts {
    pub tls_handshake: u64,
    pub not_node_certificate: u64,
    pub not_member: u64,
    pub wrong_cluster: u64,
    pub malformed: u64,
    pub too_large: u64,
}

impl Refusals {
    /// Count one refusal of `peer` and log it the first time this peer is refused for
    /// this reason.
    pub fn refuse(&self, peer: &str, reason: RefusalReason, detail: &str) {
        let counter = match reason {
            RefusalReason::Handshake => &self.handshake,
            RefusalReason::NotNodeCertificate => &self.not_node_certificate,
            RefusalReason::NotMember => &self.not_member,
            RefusalReason::WrongCluster => &self.wrong_cluster,
            RefusalReason::Malformed => &self.malformed,
            RefusalReason::TooLarge => &self.too_large,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            logged.len() < MAX_LOGGED_PEERS && logged.insert((peer.to_string(), reason))
        };
        if first {
            tracing::warn!(
                peer,
                reason = reason.as_str(),
                "refused Raft RPC (logged once per peer and reason; counted in /api/v1/cluster/status): {detail}"
            );
        }
    }

    pub fn counts(&self) -> RefusalCounts {
        RefusalCounts {
            tls_handshake: self.handshake.load(Ordering::Relaxed),
            not_node_certificate: self.not_node_certificate.load(Ordering::Relaxed),
            not_member: self.not_member.load(Ordering::Relaxed),
            wrong_cluster: self.wrong_cluster.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            too_large: self.too_large.load(Ordering::Relaxed),
        }
    }
}

/// The verified peer of one TLS connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The node id its certificate names, or why it names none.
    pub node: Result<u64, String>,
}

impl PeerInfo {
    /// How logs and counters name this peer.
    pub fn label(&self) -> String {
        match &self.node {
            Ok(id) => format!("node {id} at {}", self.addr),
            Err(_) => format!("{} (no node certificate)", self.addr),
        }
    }
}

/// A refused request: HTTP status and the reason told to the peer.
pub struct Refused {
    pub status: u16,
    pub reason: RefusalReason,
    pub message: String,
}

/// Decide whether `peer`, claiming cluster `cluster`, may send Raft RPC to `node`.
/// A fresh node (no membership) adopts the caller's cluster id.
pub fn check(node: &RaftNode, peer: &PeerInfo, cluster: Option<&str>) -> Result<u64, Refused> {
    let id = match &peer.node {
        Ok(id) => *id,
        Err(why) => {
            return Err(Refused {
                status: 403,
                reason: RefusalReason::NotNodeCertificate,
                message: format!(
                    "Raft RPC needs an aggregator node certificate (admin issue-node); this one is refused: {why}"
                ),
            })
        }
    };
    let Some(cluster) = cluster.filter(|c| !c.is_empty()) else {
        return Err(Refused {
            status: 403,
            reason: RefusalReason::WrongCluster,
            message: format!("Raft RPC must name its cluster id in the {CLUSTER_HEADER} header"),
        });
    };
    match node.cluster_id() {
        Some(own) if own != cluster => {
            return Err(Refused {
                status: 403,
                reason: RefusalReason::WrongCluster,
                message: format!("node {} belongs to cluster {own}, not {cluster}", node.node_id()),
            })
        }
        _ => {}
    }
    // A fresh node (no membership) takes the caller's cluster id. So does a member that
    // lacks one (a data directory from before cluster ids), so it is never left without.
    if node.is_member(id) || node.has_no_membership() {
        if node.cluster_id().is_none() {
            node.adopt_cluster_id(cluster).map_err(|e| wrong_cluster(e.0))?;
        }
        return Ok(id);
    }
    Err(Refused {
        status: 403,
        reason: RefusalReason::NotMember,
        message: format!(
            "node {id} is not a member of cluster {} as known by node {}; add it with `cluster join` first",
            node.cluster_id().unwrap_or_default(),
            node.node_id()
        ),
    })
}

fn wrong_cluster(message: String) -> Refused {
    Refused { status: 403, reason: RefusalReason::WrongCluster, message }
}

/// A TLS listener for `axum::serve`: handshakes run in their own tasks (a slow peer does
/// not hold up others), and only completed handshakes are handed to axum.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, PeerInfo)>,
    local: SocketAddr,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(
        listener: tokio::net::TcpListener,
        config: rustls::ServerConfig,
        refusals: std::sync::Arc<Refusals>,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("Raft listener accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx, refusals) = (acceptor.clone(), tx.clone(), refusals.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            refusals.refuse(&addr.ip().to_string(), RefusalReason::Handshake, &e.to_string());
                            return;
                        }
                        Err(_) => {
                            refusals.refuse(&addr.ip().to_string(), RefusalReason::Handshake, "handshake timed out");
                            return;
                        }
                    };
                    let node = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                        Some(cert) => crate::pki::node_identity(cert).map_err(|e| format!("{e:#}")),
                        None => Err("no client certificate".to_string()),
                    };
                    let _ = tx.send((tls, PeerInfo { addr, node })).await;
                });
            }
        });
        Ok(TlsListener { rx, local, acceptor_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Releases the port as soon as the server stops.
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The acceptor task only ends when aborted; then nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(PeerInfo { addr: self.local, node: Err("local".into()) })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for PeerInfo {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
