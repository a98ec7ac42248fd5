//! Raft RPC between aggregator nodes over HTTPS with mutual TLS (decision 0014).
//!
//! Each RPC is one POST to `https://{raft_addr}/raft/{append,vote,snapshot}` on the
//! target's own Raft listener (`ClusterNode::raft_addr`, config `listen_raft`), carrying
//! the sender's cluster id in the `x-wardline-cluster` header. Bodies are bincode 2 with
//! content type `application/octet-stream`. The response body is the bincode of
//! openraft's `Result<Response, Error>`, so a remote Raft error travels back as a value;
//! HTTP error statuses mean the request itself was refused (see `peer_auth`) or bad
//! (undecodable body) and carry a text reason.
//!
//! Snapshots travel in chunks of at most `RaftConfig::snapshot_chunk_bytes`, each one
//! POST of a `SnapshotChunk`; the receiver appends them in order, checks the assembled
//! snapshot decodes, and only then hands it to openraft, so no size limit applies to a
//! whole snapshot and a malformed one is refused without touching storage.

use super::peer_auth::{self, PeerInfo, RefusalReason, CLUSTER_HEADER};
use super::{codec, TypeConfig};
use super::{ClusterNode, RaftNode, SharedClusterId};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{Snapshot, SnapshotMeta};
use openraft::Vote;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

type NodeId = u64;

/// Largest append-entries body accepted (openraft sends at most `max_payload_entries`
/// entries per request; batch summaries are small).
pub const MAX_APPEND_BYTES: usize = 64 * 1024 * 1024;
/// Largest vote body accepted (a vote is a few dozen bytes).
pub const MAX_VOTE_BYTES: usize = 64 * 1024;
/// Largest snapshot chunk payload a sender may use.
pub const MAX_SNAPSHOT_CHUNK: usize = 16 * 1024 * 1024;
/// Room for a chunk's envelope (vote, snapshot meta with the membership).
const CHUNK_ENVELOPE_BYTES: usize = 1024 * 1024;

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";
/// A follower's audit entry for the leader to append (the entry must name the sender as its
/// node; nothing but audit entries is forwarded).
pub const PATH_FORWARD_AUDIT: &str = "/raft/forward/audit";
/// What this build supports (`super::FEATURES`), asked by a leader before it proposes a
/// command an older member could not decode (decision 0038). An older node answers 404.
pub const PATH_FEATURES: &str = "/raft/features";
/// Largest forwarded audit entry (its text fields are cut at 512 characters).
const MAX_FORWARD_AUDIT_BYTES: usize = 64 * 1024;
/// How long a follower waits for the leader to commit a forwarded entry.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

const OCTET_STREAM: &str = "application/octet-stream";

/// Body of `/raft/snapshot`: one chunk of a snapshot. Chunks of a snapshot go in order;
/// `offset` is where `data` starts in the whole snapshot, `done` marks the last chunk.
#[derive(Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote<NodeId>,
    pub meta: SnapshotMeta<NodeId, ClusterNode>,
    pub offset: u64,
    pub data: Vec<u8>,
    pub done: bool,
}

/// Reply to a snapshot chunk: `None` until the last chunk, then openraft's answer.
pub type SnapshotChunkReply = Result<Option<SnapshotResponse<NodeId>>, Fatal<NodeId>>;

/// Why one RPC attempt failed on the client side.
#[derive(Debug, thiserror::Error)]
pub enum RpcFailure {
    #[error("cannot reach Raft peer {node} at {url}: {source}")]
    Connect { node: NodeId, url: String, source: reqwest::Error },
    #[error("Raft RPC to peer {node} at {url} failed: {source}")]
    Transport { node: NodeId, url: String, source: reqwest::Error },
    #[error("Raft peer {node} at {url} answered HTTP {status}: {body}")]
    Status { node: NodeId, url: String, status: u16, body: String },
    #[error("Raft peer {node} at {url} sent an undecodable reply: {reason}")]
    Decode { node: NodeId, url: String, reason: String },
    #[error("cannot encode the Raft request for peer {node}: {reason}")]
    Encode { node: NodeId, reason: String },
}

impl RpcFailure {
    /// Failures worth backing off for (peer down or too slow) rather than retrying at once.
    fn is_unreachable(&self) -> bool {
        match self {
            RpcFailure::Connect { .. } => true,
            RpcFailure::Transport { source, .. } => source.is_timeout() || source.is_connect(),
            _ => false,
        }
    }
}

/// Makes one `HttpsNetwork` per replication target; all share one connection pool.
#[derive(Clone)]
pub struct HttpsNetworkFactory {
    client: reqwest::Client,
    chunk_bytes: usize,
    cluster_id: SharedClusterId,
}

impl HttpsNetworkFactory {
    pub fn new(tls: &crate::config::TlsPaths, chunk_bytes: usize, cluster_id: SharedClusterId) -> anyhow::Result<Self> {
        Ok(HttpsNetworkFactory { client: super::tls::https_client(tls)?, chunk_bytes, cluster_id })
    }
}

impl HttpsNetworkFactory {
    /// Send an audit entry to the leader `leader` (`node`) to append; see `PATH_FORWARD_AUDIT`.
    pub async fn forward_audit(
        &self,
        leader: NodeId,
        node: ClusterNode,
        entry: &crate::state::audit::AuditEntry,
    ) -> Result<(), String> {
        let net = HttpsNetwork {
            client: self.client.clone(),
            target: leader,
            node,
            chunk_bytes: self.chunk_bytes,
            cluster_id: self.cluster_id.clone(),
        };
        let res: Result<(), String> =
            net.post(PATH_FORWARD_AUDIT, entry, FORWARD_TIMEOUT).await.map_err(|f| f.to_string())?;
        res.map_err(|e| format!("the leader, node {leader}, could not append it: {e}"))
    }
}

impl HttpsNetworkFactory {
    /// The features node `target` (`node`) supports; an error when it cannot tell (down, or
    /// a version without `PATH_FEATURES`: the error then names HTTP 404).
    pub async fn features(&self, target: NodeId, node: ClusterNode) -> Result<Vec<String>, String> {
        let net = HttpsNetwork {
            client: self.client.clone(),
            target,
            node,
            chunk_bytes: self.chunk_bytes,
            cluster_id: self.cluster_id.clone(),
        };
        net.post(PATH_FEATURES, &(), FORWARD_TIMEOUT).await.map_err(|f| f.to_string())
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpsNetworkFactory {
    type Network = HttpsNetwork;

    async fn new_client(&mut self, target: NodeId, node: &ClusterNode) -> Self::Network {
        HttpsNetwork {
            client: self.client.clone(),
            target,
            node: node.clone(),
            chunk_bytes: self.chunk_bytes,
            cluster_id: self.cluster_id.clone(),
        }
    }
}

/// The client side of Raft RPC to one peer.
pub struct HttpsNetwork {
    client: reqwest::Client,
    target: NodeId,
    node: ClusterNode,
    chunk_bytes: usize,
    cluster_id: SharedClusterId,
}

impl HttpsNetwork {
    async fn post<Req, Resp>(&self, path: &str, req: &Req, timeout: Duration) -> Result<Resp, RpcFailure>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let node = self.target;
        let url = format!("https://{}{}", self.node.raft_addr, path);
        let body = codec::encode(req).map_err(|e| RpcFailure::Encode { node, reason: e.to_string() })?;
        let cluster = self.cluster_id.read().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default();
        let resp = self
            .client
            .post(&url)
            .header(header::CONTENT_TYPE, OCTET_STREAM)
            .header(CLUSTER_HEADER, cluster)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|source| {
                if source.is_connect() {
                    RpcFailure::Connect { node, url: url.clone(), source }
                } else {
                    RpcFailure::Transport { node, url: url.clone(), source }
                }
            })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|source| RpcFailure::Transport { node, url: url.clone(), source })?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(RpcFailure::Status { node, url, status: status.as_u16(), body });
        }
        codec::decode(&bytes).map_err(|e| RpcFailure::Decode { node, url, reason: e.to_string() })
    }

    fn rpc_error<E: std::error::Error>(&self, f: RpcFailure) -> RPCError<NodeId, ClusterNode, E> {
        if f.is_unreachable() {
            RPCError::Unreachable(Unreachable::new(&f))
        } else {
            RPCError::Network(NetworkError::new(&f))
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RemoteError<NodeId, ClusterNode, E> {
        RemoteError::new_with_node(self.target, self.node.clone(), e)
    }
}

impl RaftNetwork<TypeConfig> for HttpsNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ClusterNode, RaftError<NodeId>>> {
        let res: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            self.post(PATH_APPEND, &rpc, option.hard_ttl()).await.map_err(|f| self.rpc_error(f))?;
        res.map_err(|e| RPCError::RemoteError(self.remote(e)))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, ClusterNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        // Openraft calls this only from the default `full_snapshot`, which we replace with
        // our own chunked transfer (`SnapshotChunk`).
        let f = RpcFailure::Status {
            node: self.target,
            url: format!("https://{}", self.node.raft_addr),
            status: 501,
            body: "openraft's chunked transport is not used; snapshots go to /raft/snapshot as SnapshotChunks".into(),
        };
        Err(RPCError::Network(NetworkError::new(&f)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ClusterNode, RaftError<NodeId>>> {
        let res: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            self.post(PATH_VOTE, &rpc, option.hard_ttl()).await.map_err(|f| self.rpc_error(f))?;
        res.map_err(|e| RPCError::RemoteError(self.remote(e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let data = snapshot.snapshot.into_inner();
        let meta = snapshot.meta;
        let mut offset = 0usize;
        tokio::pin!(cancel);
        loop {
            let end = (offset + self.chunk_bytes).min(data.len());
            let done = end == data.len();
            let chunk = SnapshotChunk {
                vote,
                meta: meta.clone(),
                offset: offset as u64,
                data: data[offset..end].to_vec(),
                done,
            };
            let send = self.post::<_, SnapshotChunkReply>(PATH_SNAPSHOT, &chunk, option.hard_ttl());
            let res = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                res = send => res,
            };
            match res {
                Ok(Ok(Some(resp))) => return Ok(resp),
                Ok(Ok(None)) if !done => offset = end,
                Ok(Ok(None)) => {
                    let f = RpcFailure::Decode {
                        node: self.target,
                        url: format!("https://{}{PATH_SNAPSHOT}", self.node.raft_addr),
                        reason: "no snapshot response after the last chunk".into(),
                    };
                    return Err(StreamingError::Network(NetworkError::new(&f)));
                }
                Ok(Err(fatal)) => return Err(StreamingError::RemoteError(self.remote(fatal))),
                Err(f) if f.is_unreachable() => return Err(StreamingError::Unreachable(Unreachable::new(&f))),
                // The peer refused the snapshot (e.g. a node of an older version that does not
                // know its state format): it refuses the same snapshot again, so back off
                // instead of resending at once (the upgrade test saw ~700 attempts a second,
                // each logged on both nodes).
                Err(f @ RpcFailure::Status { .. }) => return Err(StreamingError::Unreachable(Unreachable::new(&f))),
                Err(f) => return Err(StreamingError::Network(NetworkError::new(&f))),
            }
        }
    }
}

/// A snapshot being received chunk by chunk.
struct Receiving {
    snapshot_id: String,
    from: NodeId,
    buf: Vec<u8>,
}

/// What the Raft RPC handlers share.
#[derive(Clone)]
struct RpcState {
    node: Arc<RaftNode>,
    receiving: Arc<Mutex<Option<Receiving>>>,
    /// The last snapshot refused for not decoding, so its reason is logged once.
    refused_snapshot: Arc<std::sync::Mutex<Option<String>>>,
}

/// The verified sender of a request, put in its extensions by `authenticate`.
#[derive(Clone, Copy)]
struct Sender(NodeId);

/// The server side: the Raft RPC routes, served by `serve` on the node's Raft listener.
/// Every request passes `peer_auth::check` first.
pub fn router(node: Arc<RaftNode>) -> Router {
    let state =
        RpcState { node: node.clone(), receiving: Arc::new(Mutex::new(None)), refused_snapshot: Arc::default() };
    Router::new()
        .route(PATH_APPEND, post(append).layer(DefaultBodyLimit::max(MAX_APPEND_BYTES)))
        .route(PATH_VOTE, post(vote).layer(DefaultBodyLimit::max(MAX_VOTE_BYTES)))
        .route(PATH_SNAPSHOT, post(snapshot).layer(DefaultBodyLimit::max(MAX_SNAPSHOT_CHUNK + CHUNK_ENVELOPE_BYTES)))
        .route(PATH_FORWARD_AUDIT, post(forward_audit).layer(DefaultBodyLimit::max(MAX_FORWARD_AUDIT_BYTES)))
        .route(PATH_FEATURES, post(features).layer(DefaultBodyLimit::max(64)))
        .layer(middleware::from_fn_with_state(node, authenticate))
        .with_state(state)
}

/// Serve Raft RPC over HTTPS with mutual TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<RaftNode>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = super::tls::server_config(&node.tls)?;
    let listener = peer_auth::TlsListener::new(listener, tls, node.refusals.clone())?;
    let app = router(node).into_make_service_with_connect_info::<PeerInfo>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

async fn authenticate(
    State(node): State<Arc<RaftNode>>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    mut req: Request,
    next: Next,
) -> Response {
    let cluster = req.headers().get(CLUSTER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    match peer_auth::check(&node, &peer, cluster.as_deref()) {
        Ok(id) => {
            req.extensions_mut().insert(Sender(id));
            req.extensions_mut().insert(peer.clone());
            let resp = next.run(req).await;
            match resp.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    node.refusals.refuse(&peer.label(), RefusalReason::TooLarge, "request body above the route limit")
                }
                StatusCode::BAD_REQUEST => {
                    node.refusals.refuse(&peer.label(), RefusalReason::Malformed, "undecodable or out-of-order body")
                }
                _ => {}
            }
            resp
        }
        Err(refused) => {
            node.refusals.refuse(&peer.label(), refused.reason, &refused.message);
            let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::FORBIDDEN);
            (status, refused.message).into_response()
        }
    }
}

fn bad_request(what: &str, e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("undecodable {what} request body (expected bincode from a Wardline node): {e}"))
        .into_response()
}

fn reply<T: Serialize>(value: &T) -> Response {
    match codec::encode(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, OCTET_STREAM)], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the Raft reply: {e}")).into_response(),
    }
}

async fn append(State(s): State<RpcState>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match codec::decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_request("append-entries", e),
    };
    reply(&s.node.raft().append_entries(req).await)
}

async fn vote(State(s): State<RpcState>, body: Bytes) -> Response {
    let req: VoteRequest<NodeId> = match codec::decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_request("vote", e),
    };
    reply(&s.node.raft().vote(req).await)
}

async fn snapshot(
    State(s): State<RpcState>,
    axum::Extension(Sender(from)): axum::Extension<Sender>,
    body: Bytes,
) -> Response {
    let chunk: SnapshotChunk = match codec::decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_request("snapshot chunk", e),
    };
    let mut receiving = s.receiving.lock().await;
    if chunk.offset == 0 {
        // A new transfer (or a retry from the start) replaces any unfinished one.
        *receiving = Some(Receiving { snapshot_id: chunk.meta.snapshot_id.clone(), from, buf: Vec::new() });
    }
    let Some(r) = receiving.as_mut() else {
        return out_of_order(&chunk, None);
    };
    if r.snapshot_id != chunk.meta.snapshot_id || r.from != from || r.buf.len() as u64 != chunk.offset {
        let expected = (r.snapshot_id.clone(), r.buf.len());
        *receiving = None;
        return out_of_order(&chunk, Some(expected));
    }
    r.buf.extend_from_slice(&chunk.data);
    s.node.snapshot_chunks_received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !chunk.done {
        return reply(&(Ok(None) as SnapshotChunkReply));
    }
    let Some(Receiving { buf, .. }) = receiving.take() else {
        return out_of_order(&chunk, None);
    };
    drop(receiving);
    // Check the whole snapshot decodes before openraft sees it: a snapshot that fails in
    // the state machine would stop this node's Raft with a storage error.
    let (checked, buf) = tokio::task::spawn_blocking(move || {
        let checked = super::state_machine::SnapshotPayload::decode(&buf).map(|_| ());
        (checked, buf)
    })
    .await
    .unwrap_or_else(|e| (Err(codec::CodecError::from(format!("decode task failed: {e}"))), Vec::new()));
    if let Err(e) = checked {
        let message = format!("malformed snapshot {} from node {from}: {e}", chunk.meta.snapshot_id);
        // The refusal counter logs only "malformed request"; the reason (e.g. a state format
        // from a newer version) is what the operator of this node needs, once per snapshot.
        let mut last = s.refused_snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() != Some(chunk.meta.snapshot_id.as_str()) {
            tracing::warn!("refused a snapshot: {message}");
            *last = Some(chunk.meta.snapshot_id.clone());
        }
        return (StatusCode::BAD_REQUEST, message).into_response();
    }
    let snapshot = Snapshot { meta: chunk.meta, snapshot: Box::new(Cursor::new(buf)) };
    let res: SnapshotChunkReply = s.node.raft().install_full_snapshot(chunk.vote, snapshot).await.map(Some);
    reply(&res)
}

/// A follower's audit entry: appended by the leader when it names the sending node.
async fn forward_audit(
    State(s): State<RpcState>,
    axum::Extension(Sender(from)): axum::Extension<Sender>,
    body: Bytes,
) -> Response {
    let entry: crate::state::audit::AuditEntry = match codec::decode(&body) {
        Ok(e) => e,
        Err(e) => return bad_request("forwarded audit entry", e),
    };
    if entry.node_id != from {
        return (
            StatusCode::BAD_REQUEST,
            format!("node {from} forwarded an audit entry of node {}; a node forwards only its own", entry.node_id),
        )
            .into_response();
    }
    let res: Result<(), String> =
        s.node.propose(crate::state::Command::Audit(entry)).await.map(|_| ()).map_err(|e| e.to_string());
    reply(&res)
}

/// This build's features (`super::FEATURES`).
async fn features() -> Response {
    reply(&super::FEATURES.iter().map(|f| f.to_string()).collect::<Vec<String>>())
}

fn out_of_order(chunk: &SnapshotChunk, expected: Option<(String, usize)>) -> Response {
    let expected = match expected {
        Some((id, len)) => format!("the next chunk of snapshot {id} at offset {len}"),
        None => "a first chunk (offset 0)".into(),
    };
    (
        StatusCode::BAD_REQUEST,
        format!(
            "out-of-order snapshot chunk: got snapshot {} at offset {}, expected {expected}; the sender restarts from offset 0",
            chunk.meta.snapshot_id, chunk.offset
        ),
    )
        .into_response()
}
