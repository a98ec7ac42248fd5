//! The HTTPS listener of the API: TLS with the node certificate, an optional client
//! certificate verified against the fleet CA (operators may use one, or a bearer token),
//! and every route behind [`super::layer::authorize`].
//!
//! A client certificate from another CA fails the TLS handshake; a valid certificate that
//! is not an operator's is refused per request with 403 by the layer.

use super::layer::{authorize, AuthState, ConnInfo};
use crate::config::TlsPaths;
use crate::raft::RaftNode;
use crate::tls::{node_server_config, ClientCerts};
use anyhow::{Context, Result};
use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// A client that does not finish the TLS handshake in this time is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// rustls config of the API: node certificate; client certificates optional but, when
/// presented, chained to the fleet CA.
pub fn api_tls_config(tls: &TlsPaths) -> Result<rustls::ServerConfig> {
    // TLS 1.2 too: browsers, Grafana and curl on older systems call the API.
    node_server_config(tls, ClientCerts::Optional, rustls::DEFAULT_VERSIONS, b"http/1.1")
}

/// `app` plus the token and audit routes, every route behind the authorization layer.
pub fn secured(app: Router, raft: Arc<RaftNode>) -> Router {
    let auth = AuthState::new(raft.clone());
    app.merge(super::admin::router(raft)).layer(axum::middleware::from_fn_with_state(auth, authorize))
}

/// Serve `app` (secured) over HTTPS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: &TlsPaths,
    raft: Arc<RaftNode>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(api_tls_config(tls)?));
    let app = secured(app, raft);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => p.context("connection limit closed")?,
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("API listener cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    warn!(%peer, "API TLS handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "API TLS handshake timed out");
                    return;
                }
            };
            let client_cert =
                stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
            let info = ConnInfo { peer, client_cert };
            let svc = tower::ServiceExt::map_request(app, move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                req
            });
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(svc))
                .await;
            if let Err(e) = result {
                debug!(%peer, "API connection ended with an error: {e}");
            }
        });
    }
    Ok(())
}
