//! Ships spooled batches to the aggregator over QUIC with mutual TLS.
//!
//! One batch at a time, oldest first, strictly in seq order, one bidirectional stream per
//! batch (write the frame, finish, read one reply frame). A batch leaves the spool only
//! on an Ack (`Spool::remove`) or a Rejected reply (`Spool::dead_letter`, kept for the
//! operator); RetryLater and any transport failure keep it and retry after a capped
//! exponential backoff. A crash anywhere in between re-sends the batch, which the
//! aggregator recognises by (sensor, seq, ULID) and acks as a duplicate.

use crate::config::TlsPaths;
use crate::spool::Spool;
use anyhow::{Context, Result};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};
use wardline_common::wire::{decode_frame, encode_frame, Batch, BatchReply};

/// Largest reply frame accepted from the aggregator.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct UplinkConfig {
    pub server_addr: SocketAddr,
    /// Name the aggregator's node certificate must carry ("localhost" for loopback).
    pub server_name: String,
    pub tls: TlsPaths,
    /// First wait after a failure; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Longest wait for a QUIC + TLS handshake.
    pub connect_timeout: Duration,
    /// Longest wait for the reply to one batch (the cluster commits before it acks).
    pub reply_timeout: Duration,
}

impl UplinkConfig {
    pub fn new(server_addr: SocketAddr, server_name: String, cert: PathBuf, key: PathBuf, ca: PathBuf) -> Self {
        UplinkConfig {
            server_addr,
            server_name,
            tls: TlsPaths { cert, key, ca },
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(60),
        }
    }
}

/// What one uplink run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkStats {
    pub connections: u64,
    pub connect_failures: u64,
    pub batches_sent: u64,
    pub acked: u64,
    /// Acks for batches the cluster already had (a re-send after a lost ack).
    pub duplicates: u64,
    pub rejected: u64,
    pub retry_later: u64,
    /// Sends that failed in transport (connection lost, timeout) and will be retried.
    pub send_failures: u64,
}

/// Ship batches until `shutdown` resolves; waits for new batches when the spool is empty.
pub async fn run_uplink(
    spool: Arc<Spool>,
    cfg: UplinkConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<UplinkStats> {
    run(spool, cfg, false, shutdown).await
}

/// Ship batches until the spool is empty (or `shutdown` resolves), then return.
pub async fn drain_once(
    spool: Arc<Spool>,
    cfg: UplinkConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<UplinkStats> {
    run(spool, cfg, true, shutdown).await
}

struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, current: initial }
    }
    fn reset(&mut self) {
        self.current = self.initial;
    }
    /// The next wait, with ±20 % jitter so a fleet does not reconnect in lockstep.
    fn next(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        base.mul_f64(jitter_factor()).min(self.max)
    }
}

/// A factor in [0.8, 1.2). ring's system RNG (already linked for TLS) keeps a general-purpose
/// RNG crate out of the sensor; if the OS RNG fails, no jitter is better than no reconnect.
fn jitter_factor() -> f64 {
    let mut b = [0u8; 2];
    match ring::rand::SystemRandom::new().fill(&mut b) {
        Ok(()) => 0.8 + 0.4 * f64::from(u16::from_le_bytes(b)) / 65536.0,
        Err(_) => 1.0,
    }
}

enum SendError {
    /// The connection failed; reconnect.
    Connection(quinn::ConnectionError),
    /// Anything else about this exchange (timeout, garbled reply); reconnect too.
    Other(String),
}

async fn run(
    spool: Arc<Spool>,
    cfg: UplinkConfig,
    until_empty: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<UplinkStats> {
    let client_config = crate::tls::quic_client_config(&cfg.tls).context("cannot set up uplink TLS")?;
    let bind: SocketAddr =
        if cfg.server_addr.is_ipv4() { SocketAddr::from(([0, 0, 0, 0], 0)) } else { SocketAddr::from(([0u16; 8], 0)) };
    let mut endpoint = quinn::Endpoint::client(bind).context("cannot open a UDP socket for the uplink")?;
    endpoint.set_default_client_config(client_config);

    let mut stats = UplinkStats::default();
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    let mut connection: Option<quinn::Connection> = None;
    let mut announced = false;
    tokio::pin!(shutdown);

    'outer: loop {
        let batch = match spool.oldest(1)?.into_iter().next() {
            Some(b) => b,
            None if until_empty => break,
            None => {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = spool.wait_for_push() => {}
                    // Safety net: never rely on the notification alone.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };

        let conn = match connection.as_ref().filter(|c| c.close_reason().is_none()) {
            Some(c) => c.clone(),
            None => {
                let attempt = tokio::select! {
                    _ = &mut shutdown => break 'outer,
                    r = connect(&endpoint, &cfg) => r,
                };
                match attempt {
                    Ok(c) => {
                        stats.connections += 1;
                        // With TLS 1.3 the server may still refuse our certificate after
                        // this point, so "connected" is announced on the first reply.
                        debug!(server = %cfg.server_addr, "QUIC handshake done");
                        announced = false;
                        connection = Some(c.clone());
                        c
                    }
                    Err(msg) => {
                        stats.connect_failures += 1;
                        let wait = backoff.next();
                        warn!("cannot connect to the aggregator at {}: {msg}; retrying in {wait:.1?}", cfg.server_addr);
                        tokio::select! {
                            _ = &mut shutdown => break 'outer,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        continue;
                    }
                }
            }
        };

        stats.batches_sent += 1;
        let result = tokio::select! {
            // Interrupting here is safe: the batch is still spooled and will be re-sent.
            _ = &mut shutdown => break 'outer,
            r = send_batch(&conn, &batch, cfg.reply_timeout) => r,
        };
        if result.is_ok() && !announced {
            announced = true;
            info!(server = %cfg.server_addr, "connected to the aggregator");
        }
        match result {
            Ok(BatchReply::Ack { batch_id, seq, duplicate }) if batch_id == batch.id && seq == batch.seq => {
                wardline_common::fault::crash_point(wardline_common::fault::CrashPoint::SensorAfterAck, seq);
                spool.remove(seq).with_context(|| format!("cannot remove acknowledged batch {seq} from the spool"))?;
                stats.acked += 1;
                if duplicate {
                    stats.duplicates += 1;
                    debug!(seq, "aggregator already had this batch (acked as duplicate)");
                }
                backoff.reset();
            }
            Ok(BatchReply::Rejected { batch_id, seq: _, reason }) if batch_id == batch.id || batch_id.is_nil() => {
                stats.rejected += 1;
                error!(
                    seq = batch.seq,
                    batch = %batch.id,
                    "the aggregator refused this batch for good: {reason} — moved to the spool's dead-letter tree in {} \
                     (kept for inspection, not re-sent)",
                    spool.dir().display()
                );
                spool
                    .dead_letter(batch.seq, &reason)
                    .with_context(|| format!("cannot dead-letter batch {}", batch.seq))?;
                backoff.reset();
            }
            Ok(BatchReply::RetryLater { reason, .. }) => {
                stats.retry_later += 1;
                let wait = backoff.next();
                info!(seq = batch.seq, "aggregator asked to retry later ({reason}); retrying in {wait:.1?}");
                tokio::select! {
                    _ = &mut shutdown => break 'outer,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Ok(other) => {
                // A reply for another batch means the peer is confused; do not act on it.
                stats.send_failures += 1;
                warn!(
                    seq = batch.seq,
                    "aggregator replied about a different batch ({other:?}); reconnecting and re-sending"
                );
                if let Some(c) = connection.take() {
                    c.close(0u32.into(), b"reply for a different batch");
                }
                let wait = backoff.next();
                tokio::select! {
                    _ = &mut shutdown => break 'outer,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                stats.send_failures += 1;
                let msg = match e {
                    SendError::Connection(e) => explain_connection_error(&e, &cfg),
                    SendError::Other(m) => m,
                };
                let wait = backoff.next();
                warn!(
                    seq = batch.seq,
                    "sending a batch failed: {msg}; the batch stays spooled, retrying in {wait:.1?}"
                );
                if let Some(c) = connection.take() {
                    c.close(0u32.into(), b"sensor reconnecting");
                }
                tokio::select! {
                    _ = &mut shutdown => break 'outer,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    if let Some(c) = connection.take() {
        c.close(0u32.into(), b"sensor stopping");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(stats)
}

async fn connect(endpoint: &quinn::Endpoint, cfg: &UplinkConfig) -> std::result::Result<quinn::Connection, String> {
    let connecting = endpoint
        .connect(cfg.server_addr, &cfg.server_name)
        .map_err(|e| format!("cannot start a connection ({e}); check uplink.server and uplink.server_name"))?;
    match tokio::time::timeout(cfg.connect_timeout, connecting).await {
        Err(_) => Err(format!(
            "no answer within {:?} (aggregator down, unreachable, or UDP blocked by a firewall)",
            cfg.connect_timeout
        )),
        Ok(Err(e)) => Err(explain_connection_error(&e, cfg)),
        Ok(Ok(c)) => Ok(c),
    }
}

async fn send_batch(
    conn: &quinn::Connection,
    batch: &Batch,
    reply_timeout: Duration,
) -> std::result::Result<BatchReply, SendError> {
    let frame = encode_frame(batch).map_err(|e| SendError::Other(format!("cannot encode batch {}: {e}", batch.seq)))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(SendError::Connection)?;
    match send.write_all(&frame).await {
        Ok(()) => {
            let _ = send.finish();
        }
        // The aggregator stopped reading (e.g. the frame is too large); its reply says why.
        Err(quinn::WriteError::Stopped(code)) => debug!(seq = batch.seq, %code, "aggregator stopped reading the batch"),
        Err(quinn::WriteError::ConnectionLost(e)) => return Err(SendError::Connection(e)),
        Err(e) => return Err(SendError::Other(format!("cannot send batch {}: {e}", batch.seq))),
    }
    let bytes = match tokio::time::timeout(reply_timeout, recv.read_to_end(MAX_REPLY_BYTES)).await {
        Err(_) => return Err(SendError::Other(format!("no reply to batch {} within {reply_timeout:?}", batch.seq))),
        Ok(Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e)))) => {
            return Err(SendError::Connection(e))
        }
        Ok(Err(e)) => return Err(SendError::Other(format!("cannot read the reply to batch {}: {e}", batch.seq))),
        Ok(Ok(b)) => b,
    };
    decode_frame::<BatchReply>(&bytes)
        .map_err(|e| SendError::Other(format!("unreadable reply to batch {} ({} bytes): {e}", batch.seq, bytes.len())))
}

/// Turn a QUIC/TLS failure into what went wrong and what to do.
fn explain_connection_error(e: &quinn::ConnectionError, cfg: &UplinkConfig) -> String {
    let raw = e.to_string();
    match e {
        quinn::ConnectionError::TimedOut => {
            format!("connection timed out (aggregator down, unreachable, or UDP blocked): {raw}")
        }
        // Our own TLS stack refused the aggregator.
        quinn::ConnectionError::TransportError(_) if raw.contains("UnknownIssuer") => format!(
            "the aggregator's certificate is not signed by the fleet CA in {} (UnknownIssuer) — use the ca.pem of \
             the cluster's fleet CA",
            cfg.tls.ca.display()
        ),
        quinn::ConnectionError::TransportError(_) if raw.contains("not valid for name") || raw.contains("NotValidForName") => format!(
            "the aggregator's certificate does not name {:?} ({raw}) — set uplink.server_name to a host in its \
             node certificate, or re-issue it with `wardline-aggregator admin issue-node --hosts`",
            cfg.server_name
        ),
        // The aggregator's TLS stack refused us.
        quinn::ConnectionError::ConnectionClosed(close) => format!(
            "the aggregator refused this sensor's TLS handshake ({close}) — the sensor certificate {} must be issued by \
             the cluster's fleet CA with `wardline-aggregator admin issue-sensor`",
            cfg.tls.cert.display()
        ),
        quinn::ConnectionError::ApplicationClosed(close) => format!("the aggregator closed the connection ({close})"),
        _ => format!("connection failed: {raw}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_never_exceeds_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut expected = Duration::from_millis(100);
        for _ in 0..12 {
            let wait = b.next();
            assert!(
                wait >= expected.mul_f64(0.8) && wait <= expected.mul_f64(1.2).min(b.max),
                "{wait:?} for {expected:?}"
            );
            expected = (expected * 2).min(b.max);
        }
        b.reset();
        assert!(b.next() <= Duration::from_millis(120));
        let factors: Vec<f64> = (0..64).map(|_| jitter_factor()).collect();
        assert!(factors.iter().all(|f| (0.8..1.2).contains(f)));
        assert!(factors.iter().any(|f| (f - factors[0]).abs() > 1e-9), "jitter must vary");
    }
}
