//! Raft RPC between aggregator nodes over HTTP.
//!
//! Each RPC is one POST to `http://{addr}/raft/{append,vote,snapshot}` where `addr` is
//! the target's `BasicNode::addr` (its HTTP API address). Bodies are bincode 2 (the
//! project's wire encoding; compact for log entries and whole snapshots) with content
//! type `application/octet-stream`. The response body is the bincode of openraft's
//! `Result<Response, Error>`, so a remote Raft error travels back as a value; HTTP error
//! statuses mean the request itself was bad (undecodable body) and carry a text reason.
//!
//! Snapshots go in one request (`full_snapshot`), not openraft's chunked transport.

use super::{codec, RaftHandle, TypeConfig};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
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
use openraft::{BasicNode, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::Cursor;
use std::time::Duration;

type NodeId = u64;

/// Largest Raft RPC body accepted (a whole snapshot travels in one request).
pub const MAX_RPC_BYTES: usize = codec::MAX_BYTES;

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";

const OCTET_STREAM: &str = "application/octet-stream";

/// Body of `/raft/snapshot`: the leader's vote and one complete snapshot.
#[derive(Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub vote: Vote<NodeId>,
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    pub data: Vec<u8>,
}

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

/// Makes one `HttpNetwork` per replication target; all share one connection pool.
#[derive(Clone)]
pub struct HttpNetworkFactory {
    client: reqwest::Client,
}

impl HttpNetworkFactory {
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            // Cluster traffic goes straight to peers, never through a configured proxy.
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(HttpNetworkFactory { client })
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetworkFactory {
    type Network = HttpNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        HttpNetwork { client: self.client.clone(), target, node: node.clone() }
    }
}

/// The client side of Raft RPC to one peer.
pub struct HttpNetwork {
    client: reqwest::Client,
    target: NodeId,
    node: BasicNode,
}

impl HttpNetwork {
    async fn post<Req, Resp>(&self, path: &str, req: &Req, timeout: Duration) -> Result<Resp, RpcFailure>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let node = self.target;
        let url = format!("http://{}{}", self.node.addr, path);
        let body = codec::encode(req).map_err(|e| RpcFailure::Encode { node, reason: e.to_string() })?;
        let resp = self
            .client
            .post(&url)
            .header(header::CONTENT_TYPE, OCTET_STREAM)
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

    fn rpc_error<E: std::error::Error>(&self, f: RpcFailure) -> RPCError<NodeId, BasicNode, E> {
        if f.is_unreachable() {
            RPCError::Unreachable(Unreachable::new(&f))
        } else {
            RPCError::Network(NetworkError::new(&f))
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RemoteError<NodeId, BasicNode, E> {
        RemoteError::new_with_node(self.target, self.node.clone(), e)
    }
}

impl RaftNetwork<TypeConfig> for HttpNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let res: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            self.post(PATH_APPEND, &rpc, option.hard_ttl()).await.map_err(|f| self.rpc_error(f))?;
        res.map_err(|e| RPCError::RemoteError(self.remote(e)))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        // Openraft calls this only from the default `full_snapshot`, which we replace with
        // a single-request transfer; there is no chunked endpoint to call.
        let f = RpcFailure::Status {
            node: self.target,
            url: format!("http://{}", self.node.addr),
            status: 501,
            body: "chunked snapshot transfer is not supported; snapshots go whole to /raft/snapshot".into(),
        };
        Err(RPCError::Network(NetworkError::new(&f)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
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
        let req = SnapshotRequest { vote, meta: snapshot.meta, data: snapshot.snapshot.into_inner() };
        let send =
            self.post::<_, Result<SnapshotResponse<NodeId>, Fatal<NodeId>>>(PATH_SNAPSHOT, &req, option.hard_ttl());
        let res = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            res = send => res,
        };
        match res {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(fatal)) => Err(StreamingError::RemoteError(self.remote(fatal))),
            Err(f) if f.is_unreachable() => Err(StreamingError::Unreachable(Unreachable::new(&f))),
            Err(f) => Err(StreamingError::Network(NetworkError::new(&f))),
        }
    }
}

/// The server side: the Raft RPC routes, to be merged into the node's HTTP API router.
pub fn router(node: RaftHandle) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .layer(DefaultBodyLimit::max(MAX_RPC_BYTES))
        .with_state(node)
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

async fn append(State(node): State<RaftHandle>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match codec::decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_request("append-entries", e),
    };
    reply(&node.raft().append_entries(req).await)
}

async fn vote(State(node): State<RaftHandle>, body: Bytes) -> Response {
    let req: VoteRequest<NodeId> = match codec::decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_request("vote", e),
    };
    reply(&node.raft().vote(req).await)
}

async fn snapshot(State(node): State<RaftHandle>, body: Bytes) -> Response {
    let req: SnapshotRequest = match codec::decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_request("snapshot", e),
    };
    let snapshot = Snapshot { meta: req.meta, snapshot: Box::new(Cursor::new(req.data)) };
    reply(&node.raft().install_full_snapshot(req.vote, snapshot).await)
}
