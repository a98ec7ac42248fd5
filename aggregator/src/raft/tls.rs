//! rustls settings of Raft RPC: TLS 1.3 both ways with the node certificate, and only
//! the fleet CA trusted. The server requires a client certificate; which certificates
//! may actually talk Raft (a node of this cluster, not a sensor) is `peer_auth`'s job,
//! after the handshake.

use crate::config::TlsPaths;
use crate::tls::{credentials, node_server_config, ClientCerts};
use anyhow::{Context, Result};

const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Server side: node certificate, client certificate required and chained to the fleet CA.
pub fn server_config(tls: &TlsPaths) -> Result<rustls::ServerConfig> {
    node_server_config(tls, ClientCerts::Required, &[&rustls::version::TLS13], ALPN_HTTP1)
}

/// Client side: trusts only the fleet CA and presents the node certificate, both as of each
/// new connection (the credential store; decision 0040).
pub fn client_config(tls: &TlsPaths) -> Result<rustls::ClientConfig> {
    let store = credentials(tls)?;
    let mut cfg = wardline_common::tls_reload::client_config(&store, &[&rustls::version::TLS13])
        .context("ring provider lacks TLS 1.3")?;
    cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(cfg)
}

/// An HTTPS client for Raft RPC presenting the certificate in `tls`.
pub fn https_client(tls: &TlsPaths) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(tls)?)
        // Cluster traffic goes straight to peers, never through a configured proxy.
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(2))
        .build()
        .context("cannot build the Raft HTTPS client")
}
