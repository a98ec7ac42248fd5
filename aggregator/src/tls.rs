//! rustls / quinn configuration of the ingest endpoint: the node certificate for the
//! server side, and a client verifier that admits only certificates chained to the fleet
//! CA. The ring provider is named explicitly so no process-wide default is needed.

use crate::config::TlsPaths;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use wardline_common::tls_reload::{self, CredentialStore};
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

/// The process's credential store of the node certificate in `tls`, shared by ingest, the
/// API and Raft (both ways): replacing the files on disk reaches every new handshake of all
/// of them (decision 0040).
pub fn credentials(tls: &TlsPaths) -> Result<Arc<CredentialStore>> {
    CredentialStore::shared("node", tls).map_err(|e| anyhow::anyhow!("cannot load the node certificate: {e}"))
}

/// The node certificate in use, as `cluster status` shows it (decision 0040).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertificateSummary {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Expiry, Unix seconds, and as YYYY-MM-DD (UTC).
    pub not_after: i64,
    pub expires: String,
    /// New files swapped in, and refused, since the node started.
    pub reloads: u64,
    pub reload_failures: u64,
    /// Why the files on disk are not in use, while they are not.
    pub refused_files: Option<String>,
}

/// The certificate a listener of this process loaded from `tls`, if any has.
pub fn certificate_summary(tls: &TlsPaths) -> Option<CertificateSummary> {
    let store = tls_reload::stores().into_iter().find(|s| s.paths() == tls)?;
    let s = store.status();
    Some(CertificateSummary {
        expires: tls_reload::date_of(s.not_after),
        serial: s.serial,
        not_after: s.not_after,
        reloads: s.reloads,
        reload_failures: s.reload_failures,
        refused_files: s.last_error,
    })
}

/// The one rustls server config of a node's listeners: the node certificate, client
/// certificates verified against the fleet CA only, the given TLS versions and ALPN id.
/// Certificate and CA are those of the credential store at each handshake.
pub fn node_server_config(
    tls: &TlsPaths,
    clients: ClientCerts,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[u8],
) -> Result<rustls::ServerConfig> {
    let store = credentials(tls)?;
    let mut cfg = tls_reload::server_config(&store, clients == ClientCerts::Required, versions)
        .context("the ring provider lacks the requested TLS versions")?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}

/// The uplink versions a node speaks, preferred first: 3 (compressed multi-batch frames,
/// decision 0041), 2 (multi-batch frames, 0034), 1 for the oldest sensors.
pub const UPLINK_VERSIONS: &[&[u8]] = &[ALPN_UPLINK_V3, ALPN_UPLINK_V2, ALPN_UPLINK];

/// TLS 1.3 server config of QUIC ingest: a sensor certificate from the fleet CA required.
/// The highest uplink version the sensor offers is chosen (`UPLINK_VERSIONS`).
pub fn rustls_server_config(tls: &TlsPaths) -> Result<rustls::ServerConfig> {
    let mut cfg = rustls_server_config_speaking(tls, UPLINK_VERSIONS)?;
    // Sensor health connections (decision 0038).
    cfg.alpn_protocols.push(wardline_common::wire::ALPN_HEALTH.to_vec());
    Ok(cfg)
}

/// [`rustls_server_config`] speaking only the uplink versions `alpn` (preferred first), without
/// health connections: tests use it to act as an older node.
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
    quic_config_of(rustls_server_config(tls)?)
}

/// [`quic_server_config`] speaking only the uplink versions `alpn` (preferred first) and no
/// health connections: tests use it to act as an older node.
pub fn quic_server_config_speaking(tls: &TlsPaths, alpn: &[&[u8]]) -> Result<quinn::ServerConfig> {
    quic_config_of(rustls_server_config_speaking(tls, alpn)?)
}

fn quic_config_of(rustls: rustls::ServerConfig) -> Result<quinn::ServerConfig> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls)
        .context("TLS config has no QUIC-capable cipher suite")?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}
