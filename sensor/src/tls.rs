//! rustls / quinn client configuration of the uplink: the sensor's own certificate for
//! mutual TLS and the fleet CA as the only trusted root (no system roots: an aggregator
//! is trusted because the fleet CA signed it, nothing else). Ring provider, named
//! explicitly.

use crate::config::TlsPaths;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use wardline_common::tls_reload::{self, CredentialStore};
use wardline_common::wire::ALPN_UPLINK;

/// A connection silent this long is dead. A killed node sends no close, so this is how
/// long the sensor keeps waiting on it before it fails over to the next node: short, with
/// keep-alives four times as often so a live but idle link never reaches it. QUIC uses
/// the smaller of the two peers' timeouts, so the aggregator's 30 s does not matter here.
/// (Replies that take long, e.g. a commit under load, are bounded by `reply_timeout`.)
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Keep-alives keep the idle timer and NAT/firewall state alive while the spool is empty.
pub const KEEP_ALIVE: Duration = Duration::from_millis(500);

pub use wardline_common::tls_files::{load_certs, load_key, load_roots};

/// The process's credential store of the sensor certificate in `tls`: files replaced on
/// disk reach every new connection without a restart (decision 0040).
pub fn credentials(tls: &TlsPaths) -> Result<Arc<CredentialStore>> {
    CredentialStore::shared("sensor", tls).map_err(|e| anyhow::anyhow!("cannot load the sensor certificate: {e}"))
}

/// TLS 1.3 client config presenting the sensor certificate, trusting the fleet CA only; both
/// as of each handshake (the credential store).
pub fn rustls_client_config(tls: &TlsPaths) -> Result<rustls::ClientConfig> {
    let store = credentials(tls)?;
    let mut cfg =
        tls_reload::client_config(&store, &[&rustls::version::TLS13]).context("ring provider lacks TLS 1.3")?;
    cfg.alpn_protocols = vec![ALPN_UPLINK.to_vec()];
    Ok(cfg)
}

/// quinn client config of the uplink, offering uplink version 1 only.
pub fn quic_client_config(tls: &TlsPaths) -> Result<quinn::ClientConfig> {
    quic_client_config_offering(tls, &[ALPN_UPLINK])
}

/// quinn client config of the uplink offering these ALPN ids, most preferred first (the
/// node picks; decision 0034).
pub fn quic_client_config_offering(tls: &TlsPaths, alpn: &[&[u8]]) -> Result<quinn::ClientConfig> {
    let mut rustls = rustls_client_config(tls)?;
    rustls.alpn_protocols = alpn.iter().map(|id| id.to_vec()).collect();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls)
        .context("TLS config has no QUIC-capable cipher suite")?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("2 s fits a QUIC idle timeout")));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // The aggregator never opens streams towards a sensor.
    t.max_concurrent_bidi_streams(0u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    cfg.transport_config(Arc::new(t));
    Ok(cfg)
}
