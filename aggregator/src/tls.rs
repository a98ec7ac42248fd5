//! rustls / quinn configuration of the ingest endpoint: the node certificate for the
//! server side, and a client verifier that admits only certificates chained to the fleet
//! CA. The ring provider is named explicitly so no process-wide default is needed.

use crate::config::TlsPaths;
use anyhow::{Context, Result};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use std::time::Duration;
use wardline_common::wire::{ALPN_UPLINK, ALPN_UPLINK_V2, ALPN_UPLINK_V3};

/// Without traffic for this long a connection is considered dead (sensor gone, link cut).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Keep-alives keep NAT/firewall state and the idle timer alive during quiet periods.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Concurrent batch streams one sensor may have open. Memory is bounded by the ingest's
/// byte budget (`IngestLimits::max_inflight_bytes`), not by this count, so a wider window
/// does not raise the worst case (decision 0034); the sensor's `uplink::MAX_PEER_STREAMS`
/// must match.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;

pub use wardline_common::tls_files::{load_certs, load_key, load_roots};

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a listener requires client certificates or only verifies those presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCerts {
    /// Sensors (QUIC ingest) and nodes (Raft RPC) must present one.
    Required,
    /// The API also takes bearer tokens; a certificate, when presented, must still chain
    /// to the fleet CA.
    Optional,
}

/// The one rustls server config of a node's listeners: the node certificate, client
/// certificates verified against the fleet CA only, the given TLS versions and ALPN id.
pub fn node_server_config(
    tls: &TlsPaths,
    clients: ClientCerts,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[u8],
) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let roots = Arc::new(load_roots(&tls.ca)?);
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if clients == ClientCerts::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier
        .build()
        .with_context(|| format!("cannot build a client verifier from the fleet CA {}", tls.ca.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .context("the ring provider lacks the requested TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&tls.cert)?, load_key(&tls.key)?)
        .with_context(|| {
            format!("node certificate {} and key {} do not form a usable pair", tls.cert.display(), tls.key.display())
        })?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}

/// The uplink versions a node speaks, preferred first: 3 (compressed multi-batch frames,
/// decision 0041), 2 (multi-batch frames, 0034), 1 for the oldest sensors.
pub const UPLINK_VERSIONS: &[&[u8]] = &[ALPN_UPLINK_V3, ALPN_UPLINK_V2, ALPN_UPLINK];

/// TLS 1.3 server config of QUIC ingest: a sensor certificate from the fleet CA required.
/// The highest uplink version the sensor offers is chosen (`UPLINK_VERSIONS`).
pub fn rustls_server_config(tls: &TlsPaths) -> Result<rustls::ServerConfig> {
    rustls_server_config_speaking(tls, UPLINK_VERSIONS)
}

/// [`rustls_server_config`] speaking only the uplink versions `alpn` (preferred first).
pub fn rustls_server_config_speaking(tls: &TlsPaths, alpn: &[&[u8]]) -> Result<rustls::ServerConfig> {
    let first = alpn.first().copied().unwrap_or(ALPN_UPLINK);
    let mut cfg = node_server_config(tls, ClientCerts::Required, &[&rustls::version::TLS13], first)?;
    cfg.alpn_protocols.extend(alpn.iter().skip(1).map(|p| p.to_vec()));
    Ok(cfg)
}

pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("30 s fits a QUIC idle timeout")));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into());
    // Sensors only use bidirectional streams (batch → reply).
    t.max_concurrent_uni_streams(0u32.into());
    t
}

/// quinn server config of the ingest endpoint.
pub fn quic_server_config(tls: &TlsPaths) -> Result<quinn::ServerConfig> {
    quic_server_config_speaking(tls, UPLINK_VERSIONS)
}

/// [`quic_server_config`] speaking only the uplink versions `alpn` (preferred first).
pub fn quic_server_config_speaking(tls: &TlsPaths, alpn: &[&[u8]]) -> Result<quinn::ServerConfig> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_server_config_speaking(tls, alpn)?)
        .context("TLS config has no QUIC-capable cipher suite")?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}
