//! QUIC ingest: sensors connect with mutual TLS and send batches on bidirectional streams;
//! the server answers on the same stream. Uplink version 1 (`wire::ALPN_UPLINK`) carries one
//! batch per stream and one `BatchReply`; version 2 (`wire::ALPN_UPLINK_V2`, decision 0034)
//! carries a length-prefixed frame of up to `wire::MAX_FRAME_BATCHES` batches and answers
//! with one reply per batch. ALPN picks the version per connection.
//!
//! Who sent a batch is taken from the client certificate (`pki::sensor_identity`), never
//! from the batch: a batch whose `sensor_id`/`site` differ from the certificate's is
//! Rejected. Untrusted input is bounded everywhere: the number of connections, streams per
//! connection (QUIC stream credit), the frame bytes being read or handled at once (a
//! version-2 stream reserves the length it declares, a version-1 stream the whole frame
//! limit), the frame size (read with a hard limit, so an oversized frame costs at most the
//! limit in memory) and the time a peer may take to send one frame.

use crate::config::TlsPaths;
use crate::pki::{self, SensorIdentity};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};
use ulid::Ulid;
use wardline_common::wire::{self, Batch, BatchReply, FrameError};

/// Decides what happens to one authenticated, identity-checked batch.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle(&self, identity: SensorIdentity, batch: Batch) -> impl Future<Output = BatchReply> + Send;

    /// Why this sensor certificate (identity and serial, lowercase hex) is refused, if it is
    /// revoked. Asked at the handshake and every [`REVOCATION_CHECK_INTERVAL`] on a live
    /// connection.
    fn revoked(&self, _identity: &SensorIdentity, _serial: &str) -> impl Future<Output = Option<String>> + Send {
        async { None }
    }
}

/// How often a live connection's certificate is checked against the revocation list: a
/// revoked sensor is cut off within this time.
pub const REVOCATION_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// QUIC application error codes used when closing connections and stopping streams.
pub mod codes {
    /// Certificate chained to the fleet CA but names no sensor.
    pub const NOT_A_SENSOR: u32 = 0x10;
    /// Server at its connection limit.
    pub const BUSY: u32 = 0x11;
    /// Frame larger than the limit; the reply explains.
    pub const FRAME_TOO_LARGE: u32 = 0x12;
    /// Frame not completed in time.
    pub const READ_TIMEOUT: u32 = 0x13;
    /// Server shutting down.
    pub const SHUTDOWN: u32 = 0x14;
    /// The sensor or its certificate is revoked (`admin revoke-sensor`).
    pub const REVOKED: u32 = 0x15;
}

/// Bounds applied to untrusted peers.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    /// Largest batch frame accepted; larger ones are Rejected unread past the limit.
    pub max_frame_bytes: usize,
    /// Concurrent sensor connections; more are refused (the sensor backs off and retries).
    pub max_connections: usize,
    /// Frame bytes being read or handled at once across all connections; further streams
    /// wait (their bytes stay in QUIC flow-control windows). A version-2 stream reserves the
    /// length it declares, a version-1 stream `max_frame_bytes`. This bounds ingest memory
    /// whatever the number of streams or batches per frame.
    pub max_inflight_bytes: usize,
    /// Time a sensor may take to deliver one whole frame.
    pub frame_read_timeout: Duration,
    /// How long shutdown waits for in-flight batches before closing connections.
    pub shutdown_grace: Duration,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_frame_bytes: wire::MAX_FRAME_BYTES,
            max_connections: 1024,
            // As much as the earlier bound of 32 version-1 frames of 16 MiB.
            max_inflight_bytes: 512 * 1024 * 1024,
            frame_read_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Live counters, shared with the API.
#[derive(Debug, Default)]
pub struct IngestStats {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_active: AtomicU64,
    batches_received: AtomicU64,
    batches_acked: AtomicU64,
    batches_duplicate: AtomicU64,
    batches_rejected: AtomicU64,
    batches_retry_later: AtomicU64,
    identity_mismatches: AtomicU64,
    frames_rejected: AtomicU64,
    frames_oversized: AtomicU64,
    frames_timed_out: AtomicU64,
    multi_batch_frames: AtomicU64,
    /// The flow outbox as this node sees it (decision 0016).
    pub outbox: Arc<crate::outbox::OutboxStatus>,
}

/// A point-in-time copy of [`IngestStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestStatsSnapshot {
    /// Handshakes completed by a sensor with a valid certificate.
    pub connections_accepted: u64,
    /// Connections refused: failed handshake (unknown CA, no certificate, expired, ...),
    /// a certificate naming no sensor, or the connection limit.
    pub connections_refused: u64,
    pub connections_active: u64,
    /// Frames decoded into a batch.
    pub batches_received: u64,
    pub batches_acked: u64,
    /// Acks of batches the cluster had already applied (re-sends).
    pub batches_duplicate: u64,
    /// Rejected replies of any cause (identity mismatch, bad frame, handler refusal).
    pub batches_rejected: u64,
    pub batches_retry_later: u64,
    /// Batches claiming another sensor or site than their certificate.
    pub identity_mismatches: u64,
    /// Frames that could not become a batch (oversized, undecodable, wrong version).
    pub frames_rejected: u64,
    pub frames_oversized: u64,
    pub frames_timed_out: u64,
    /// Multi-batch frames (uplink version 2) decoded; `batches_received` counts their batches.
    #[serde(default)]
    pub multi_batch_frames: u64,
}

impl IngestStats {
    pub fn snapshot(&self) -> IngestStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IngestStatsSnapshot {
            connections_accepted: g(&self.connections_accepted),
            connections_refused: g(&self.connections_refused),
            connections_active: g(&self.connections_active),
            batches_received: g(&self.batches_received),
            batches_acked: g(&self.batches_acked),
            batches_duplicate: g(&self.batches_duplicate),
            batches_rejected: g(&self.batches_rejected),
            batches_retry_later: g(&self.batches_retry_later),
            identity_mismatches: g(&self.identity_mismatches),
            frames_rejected: g(&self.frames_rejected),
            frames_oversized: g(&self.frames_oversized),
            frames_timed_out: g(&self.frames_timed_out),
            multi_batch_frames: g(&self.multi_batch_frames),
        }
    }

    fn count_reply(&self, reply: &BatchReply) {
        match reply {
            BatchReply::Ack { duplicate, .. } => {
                inc(&self.batches_acked);
                if *duplicate {
                    inc(&self.batches_duplicate);
                }
            }
            BatchReply::Rejected { .. } => inc(&self.batches_rejected),
            BatchReply::RetryLater { .. } => inc(&self.batches_retry_later),
        }
    }
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Ingest memory is counted in permits of this many bytes (a semaphore takes u32 counts).
const PERMIT_BYTES: usize = 1024;

fn permits_for(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(PERMIT_BYTES)).unwrap_or(u32::MAX).max(1)
}

/// A bound ingest endpoint; `local_addr` tells the port when bound to port 0.
pub struct IngestServer<H: BatchHandler> {
    endpoint: quinn::Endpoint,
    handler: Arc<H>,
    stats: Arc<IngestStats>,
    limits: IngestLimits,
}

impl<H: BatchHandler> IngestServer<H> {
    /// Bind the UDP socket and load the TLS material. Must run inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        tls: &TlsPaths,
        handler: Arc<H>,
        stats: Arc<IngestStats>,
        limits: IngestLimits,
    ) -> Result<Self> {
        let server_config = crate::tls::quic_server_config(tls).context("cannot configure ingest TLS")?;
        let endpoint = quinn::Endpoint::server(server_config, addr)
            .with_context(|| format!("cannot listen for sensors on UDP {addr} — is another node using the port?"))?;
        Ok(IngestServer { endpoint, handler, stats, limits })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint.local_addr().context("cannot read the ingest socket address")
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// Accept sensors until `shutdown` resolves, then let in-flight batches finish (up to
    /// `shutdown_grace`) and close every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let IngestServer { endpoint, handler, stats, limits } = self;
        let local = endpoint.local_addr().ok();
        info!(addr = ?local, "ingest listening for sensors (QUIC, mutual TLS)");
        let limits = Arc::new(limits);
        let conn_slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        // Never smaller than one whole frame, or a frame at the limit could never be read.
        let budget = permits_for(limits.max_inflight_bytes.max(limits.max_frame_bytes));
        let batch_slots = Arc::new(Semaphore::new(budget as usize));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let Ok(slot) = conn_slots.clone().try_acquire_owned() else {
                        warn!(
                            "refused sensor connection from {}: this node is at its limit of {} connections; \
                             the sensor will retry — raise the limit or add nodes",
                            incoming.remote_address(), limits.max_connections
                        );
                        inc(&stats.connections_refused);
                        incoming.refuse();
                        continue;
                    };
                    let (handler, stats, limits, batch_slots) =
                        (handler.clone(), stats.clone(), limits.clone(), batch_slots.clone());
                    tasks.spawn(async move {
                        handle_connection(incoming, handler, stats, limits, batch_slots).await;
                        drop(slot);
                    });
                }
                // Reap finished connection tasks so the set does not grow without bound.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        info!("ingest stopping: no new sensor connections; finishing in-flight batches");
        endpoint.set_server_config(None);
        let grace = limits.shutdown_grace;
        // In-flight frames hold permits; all permits back means nothing is being handled.
        let _ = tokio::time::timeout(grace, batch_slots.acquire_many(budget)).await;
        endpoint.close(codes::SHUTDOWN.into(), b"aggregator node shutting down");
        let _ =
            tokio::time::timeout(Duration::from_secs(2), async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        Ok(())
    }
}

/// Bind and run with default limits until `shutdown` resolves.
pub async fn serve<H: BatchHandler>(
    addr: SocketAddr,
    tls: &TlsPaths,
    handler: Arc<H>,
    stats: Arc<IngestStats>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    IngestServer::bind(addr, tls, handler, stats, IngestLimits::default())?.run(shutdown).await
}

async fn handle_connection<H: BatchHandler>(
    incoming: quinn::Incoming,
    handler: Arc<H>,
    stats: Arc<IngestStats>,
    limits: Arc<IngestLimits>,
    batch_slots: Arc<Semaphore>,
) {
    let remote = incoming.remote_address();
    let connection = match incoming.accept() {
        Ok(connecting) => connecting.await,
        Err(e) => Err(e),
    };
    let connection = match connection {
        Ok(c) => c,
        Err(e) => {
            inc(&stats.connections_refused);
            warn!("refused sensor connection from {remote}: {}", explain_handshake_error(&e));
            return;
        }
    };
    let (identity, serial) = match peer_sensor_identity(&connection) {
        Ok(id) => id,
        Err(e) => {
            inc(&stats.connections_refused);
            warn!(
                "refused sensor connection from {remote}: {e:#} — sensors need a certificate from \
                 `wardline-aggregator admin issue-sensor`"
            );
            connection.close(codes::NOT_A_SENSOR.into(), b"certificate names no sensor");
            return;
        }
    };
    if let Some(reason) = handler.revoked(&identity, &serial).await {
        inc(&stats.connections_refused);
        warn!(sensor = %identity.sensor_id, site = %identity.site, %serial, %remote, "refused a revoked sensor: {reason}");
        connection.close(codes::REVOKED.into(), format!("sensor certificate revoked: {reason}").as_bytes());
        return;
    }
    inc(&stats.connections_accepted);
    stats.connections_active.fetch_add(1, Ordering::Relaxed);
    let multi = negotiated_alpn(&connection).as_deref() == Some(wire::ALPN_UPLINK_V2);
    info!(
        sensor = %identity.sensor_id, site = %identity.site, %remote,
        uplink = if multi { 2 } else { 1 }, "sensor connected"
    );
    let mut streams = JoinSet::new();
    // Streams are accepted in the order the sensor opened them (its seq order); each is
    // handed to the handler only after the one before it, so a sensor's batches in flight
    // on several streams are proposed in seq order however their bytes arrive.
    let (first_tx, mut previous) = oneshot::channel();
    let _ = first_tx.send(true);
    let mut revocation_check = tokio::time::interval(REVOCATION_CHECK_INTERVAL);
    let end = loop {
        tokio::select! {
            _ = revocation_check.tick() => {
                if let Some(reason) = handler.revoked(&identity, &serial).await {
                    warn!(sensor = %identity.sensor_id, site = %identity.site, %serial, %remote, "closing a revoked sensor's connection: {reason}");
                    connection.close(codes::REVOKED.into(), format!("sensor certificate revoked: {reason}").as_bytes());
                }
            }
            accepted = connection.accept_bi() => match accepted {
                Ok((mut send, mut recv)) => {
                    let (handler, stats, limits, batch_slots, identity) =
                        (handler.clone(), stats.clone(), limits.clone(), batch_slots.clone(), identity.clone());
                    let (turn_tx, turn_rx) = oneshot::channel();
                    let order = StreamOrder { previous: std::mem::replace(&mut previous, turn_rx), next: Some(turn_tx) };
                    // A version-2 stream says how long its frame is; a version-1 stream may
                    // be as long as the limit. (A stalled prefix holds up only this sensor's
                    // later streams, which wait for this one anyway.)
                    let declared = if multi {
                        match read_length_prefix(&mut recv, &identity, &stats, &limits).await {
                            Some(len) => Some(len),
                            // Dropping `order` unsent makes the later streams answer RetryLater.
                            None => {
                                let _ = send.reset(codes::READ_TIMEOUT.into());
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    let reserve = declared.map_or(limits.max_frame_bytes, |len| len.min(limits.max_frame_bytes));
                    // Waiting here is the backpressure: the stream's bytes stay in QUIC
                    // flow-control windows, not in our memory. Taken in stream order, so a
                    // stream holding permits never waits for an earlier one that has none.
                    let Ok(permit) = batch_slots.acquire_many_owned(permits_for(reserve)).await else { continue };
                    streams.spawn(async move {
                        match declared {
                            Some(len) => {
                                let stream = FrameStream { send, recv, declared: len, order, _permit: permit };
                                handle_multi_stream(stream, &identity, handler.as_ref(), &stats, &limits).await
                            }
                            None => {
                                handle_stream(send, recv, &identity, handler.as_ref(), &stats, &limits, order).await;
                                drop(permit);
                            }
                        }
                    });
                }
                Err(e) => break e,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    };
    // Let replies already being computed reach the sensor before the handle goes away.
    while streams.join_next().await.is_some() {}
    stats.connections_active.fetch_sub(1, Ordering::Relaxed);
    match end {
        quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::LocallyClosed => {
            info!(sensor = %identity.sensor_id, %remote, "sensor disconnected")
        }
        e => info!(sensor = %identity.sensor_id, %remote, "sensor connection ended: {e}"),
    }
}

/// The ALPN id the handshake settled on.
fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

/// The length a version-2 stream declares for its frame; None (counted, logged) when the
/// stream ended or stalled before the 4 bytes arrived.
async fn read_length_prefix(
    recv: &mut quinn::RecvStream,
    identity: &SensorIdentity,
    stats: &IngestStats,
    limits: &IngestLimits,
) -> Option<usize> {
    let mut prefix = [0u8; wire::FRAME_LENGTH_PREFIX];
    match tokio::time::timeout(limits.frame_read_timeout, recv.read_exact(&mut prefix)).await {
        Ok(Ok(())) => Some(u32::from_be_bytes(prefix) as usize),
        Ok(Err(e)) => {
            debug!(sensor = %identity.sensor_id, stream = ?recv.id(), "stream ended before its frame length: {e}");
            None
        }
        Err(_) => {
            inc(&stats.frames_timed_out);
            warn!(sensor = %identity.sensor_id, stream = ?recv.id(), "sensor did not send a frame length within {:?}; dropping the stream (it will retry)", limits.frame_read_timeout);
            let _ = recv.stop(codes::READ_TIMEOUT.into());
            None
        }
    }
}

/// The sensor a connection's client certificate names, and the certificate's serial.
fn peer_sensor_identity(connection: &quinn::Connection) -> Result<(SensorIdentity, String)> {
    let certs = connection
        .peer_identity()
        .context("the TLS session holds no peer certificate")?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| anyhow::anyhow!("unexpected peer identity type"))?;
    let leaf = certs.first().context("the peer presented an empty certificate chain")?;
    Ok((pki::sensor_identity(leaf.as_ref())?, pki::certificate_serial(leaf.as_ref())?))
}

/// Turn a failed handshake into what an operator should know and do.
pub fn explain_handshake_error(e: &quinn::ConnectionError) -> String {
    let raw = e.to_string();
    let fix_issue = "issue it with `wardline-aggregator admin issue-sensor`";
    if raw.contains("UnknownIssuer") {
        format!("client certificate is not signed by the fleet CA (UnknownIssuer) — {fix_issue}")
    } else if raw.contains("peer sent no certificates") {
        format!("the sensor presented no client certificate — configure its tls.cert/tls.key; {fix_issue}")
    } else if raw.contains("certificate expired") || raw.contains("Expired") {
        format!("client certificate has expired ({raw}) — re-issue it with `wardline-aggregator admin issue-sensor`")
    } else if raw.contains("not valid yet") || raw.contains("NotValidYet") {
        format!("client certificate is not valid yet ({raw}) — check the clocks of the sensor and this node")
    } else if raw.contains("extended key usage") || raw.contains("InvalidPurpose") {
        format!("client certificate is not allowed for client authentication ({raw}) — {fix_issue}")
    } else if raw.contains("BadSignature") || raw.contains("BadEncoding") {
        format!("client certificate is damaged or forged ({raw}) — {fix_issue}")
    } else if raw.contains("doesn't support any known protocol") || raw.contains("NoApplicationProtocol") {
        format!(
            "the peer does not speak {} (ALPN mismatch: not a Wardline sensor, or an incompatible version)",
            String::from_utf8_lossy(wire::ALPN_UPLINK)
        )
    } else if matches!(e, quinn::ConnectionError::TimedOut) {
        "the handshake timed out (peer went away or packets are being dropped)".to_string()
    } else {
        format!("TLS handshake failed: {raw}")
    }
}

/// A stream's place in its connection's order: `previous` resolves once the stream before
/// it was handed on (true) or failed in a way that must stop later batches (false, or
/// dropped); `next` tells the stream after this one the same. Dropping it unsent says false.
struct StreamOrder {
    previous: oneshot::Receiver<bool>,
    next: Option<oneshot::Sender<bool>>,
}

impl StreamOrder {
    fn pass(&mut self, ok: bool) {
        if let Some(tx) = self.next.take() {
            let _ = tx.send(ok);
        }
    }
}

async fn handle_stream<H: BatchHandler>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    identity: &SensorIdentity,
    handler: &H,
    stats: &IngestStats,
    limits: &IngestLimits,
    mut order: StreamOrder,
) {
    let stream = recv.id();
    let frame = match tokio::time::timeout(limits.frame_read_timeout, recv.read_to_end(limits.max_frame_bytes)).await {
        Err(_) => {
            inc(&stats.frames_timed_out);
            warn!(sensor = %identity.sensor_id, ?stream, "sensor did not finish sending a batch within {:?}; dropping the stream (it will retry)", limits.frame_read_timeout);
            let _ = recv.stop(codes::READ_TIMEOUT.into());
            let _ = send.reset(codes::READ_TIMEOUT.into());
            return;
        }
        Ok(Err(quinn::ReadToEndError::TooLong)) => {
            inc(&stats.frames_oversized);
            inc(&stats.frames_rejected);
            let reason = format!(
                "batch frame exceeds the {}-byte limit of this node; split it into smaller batches",
                limits.max_frame_bytes
            );
            warn!(sensor = %identity.sensor_id, site = %identity.site, "rejected a batch: {reason}");
            // Tell the sender to stop transmitting the rest; the reply explains why.
            let _ = recv.stop(codes::FRAME_TOO_LARGE.into());
            let reply = BatchReply::Rejected { batch_id: Ulid::nil(), seq: 0, reason };
            // Rejected for good: the sensor dead-letters it, so later batches may proceed.
            let _ = (&mut order.previous).await;
            order.pass(true);
            stats.count_reply(&reply);
            write_reply(&mut send, &reply, identity).await;
            return;
        }
        Ok(Err(quinn::ReadToEndError::Read(e))) => {
            debug!(sensor = %identity.sensor_id, ?stream, "stream ended before a whole batch arrived: {e}");
            return;
        }
        Ok(Ok(bytes)) => bytes,
    };
    let reply = match wire::decode_frame::<Batch>(&frame) {
        Ok(batch) => {
            inc(&stats.batches_received);
            if batch.sensor_id != identity.sensor_id || batch.site != identity.site {
                inc(&stats.identity_mismatches);
                let reason = format!(
                    "batch claims sensor {:?} at site {:?} but the connection's certificate names sensor {:?} at site {:?}; \
                     a sensor may only send its own batches — fix sensor_id/site in its config or issue a matching certificate",
                    batch.sensor_id, batch.site, identity.sensor_id, identity.site
                );
                warn!(sensor = %identity.sensor_id, seq = batch.seq, "rejected a batch: {reason}");
                let _ = (&mut order.previous).await;
                order.pass(true);
                BatchReply::Rejected { batch_id: batch.id, seq: batch.seq, reason }
            } else {
                let (id, seq) = (batch.id, batch.seq);
                if !(&mut order.previous).await.unwrap_or(false) {
                    // Applying this one would move the watermark past the missing batch.
                    order.pass(false);
                    let reply = BatchReply::RetryLater {
                        batch_id: id,
                        seq,
                        reason: "an earlier batch on this connection did not arrive; re-send from it".into(),
                    };
                    stats.count_reply(&reply);
                    write_reply(&mut send, &reply, identity).await;
                    return;
                }
                log_spool_report(identity, &batch);
                let pending = handler.handle(identity.clone(), batch);
                order.pass(true);
                let reply = pending.await;
                debug!(sensor = %identity.sensor_id, seq, %id, ?reply, "batch handled");
                reply
            }
        }
        // A newer sensor: its batches become acceptable once this node is upgraded, so
        // they stay in its spool rather than being dead-lettered.
        Err(e @ FrameError::Version(_)) => {
            inc(&stats.frames_rejected);
            warn!(sensor = %identity.sensor_id, "cannot read a batch: {e}");
            BatchReply::RetryLater { batch_id: Ulid::nil(), seq: 0, reason: e.to_string() }
        }
        Err(e) => {
            inc(&stats.frames_rejected);
            // Rejected for good below: the sensor dead-letters it.
            let _ = (&mut order.previous).await;
            order.pass(true);
            let reason = format!("undecodable batch frame of {} bytes: {e}", frame.len());
            error!(sensor = %identity.sensor_id, site = %identity.site, "rejected a batch: {reason}");
            BatchReply::Rejected { batch_id: Ulid::nil(), seq: 0, reason }
        }
    };
    stats.count_reply(&reply);
    write_reply(&mut send, &reply, identity).await;
}

/// A sensor's account of what its spool gave up or condensed (decision 0022), for operators.
fn log_spool_report(identity: &SensorIdentity, batch: &Batch) {
    for e in &batch.events {
        if let wire::Event::SpoolReport(r) = e {
            // Every batch carries a report to name its spool epoch (decision 0036); only one
            // with loss entries says something new.
            if r.losses.is_empty() {
                continue;
            }
            warn!(
                sensor = %identity.sensor_id,
                seq = batch.seq,
                spool_epoch = %r.spool_epoch,
                batches_evicted = r.batches_evicted,
                flows_evicted = r.flows_evicted,
                flow_bytes_evicted = r.flow_bytes_evicted,
                flows_rolled_up = r.flows_rolled_up,
                records_quarantined = r.records_quarantined,
                new_losses = r.losses.len(),
                "the sensor's spool gave up or rolled up data while it could not deliver (totals since its spool \
                 was created); the cluster's flows for that time are incomplete"
            );
        }
    }
}

/// A version-2 stream whose frame length is known and whose bytes are reserved (`_permit`).
struct FrameStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    declared: usize,
    order: StreamOrder,
    _permit: OwnedSemaphorePermit,
}

/// After a frame refused as a whole, the later streams of the connection answer RetryLater:
/// unlike a refused single batch, which the sensor dead-letters and moves past, a refused
/// frame's batches are sent again (one per frame), so nothing after them may be applied
/// first — that would move the watermark past them and their re-send would be acked as a
/// duplicate and lost. (Waits for its turn so the earlier streams are handed on first.)
async fn refuse_later_streams(order: &mut StreamOrder) {
    let _ = (&mut order.previous).await;
    order.pass(false);
}

/// The reply to a multi-batch frame refused as a whole: one reply with a nil batch id.
fn whole_frame(reply: BatchReply) -> Vec<BatchReply> {
    vec![reply]
}

async fn handle_multi_stream<H: BatchHandler>(
    mut s: FrameStream,
    identity: &SensorIdentity,
    handler: &H,
    stats: &IngestStats,
    limits: &IngestLimits,
) {
    let stream = s.recv.id();
    let rejected = |reason: String| whole_frame(BatchReply::Rejected { batch_id: Ulid::nil(), seq: 0, reason });
    let replies = 'replies: {
        if s.declared == 0 || s.declared > limits.max_frame_bytes {
            inc(&stats.frames_rejected);
            let reason = if s.declared == 0 {
                "multi-batch frame declares a length of 0 bytes; a frame holds at least one batch".to_string()
            } else {
                inc(&stats.frames_oversized);
                format!(
                    "multi-batch frame of {} bytes exceeds the {}-byte limit of this node; send fewer batches per frame",
                    s.declared, limits.max_frame_bytes
                )
            };
            warn!(sensor = %identity.sensor_id, site = %identity.site, ?stream, "rejected a frame: {reason}");
            let _ = s.recv.stop(codes::FRAME_TOO_LARGE.into());
            refuse_later_streams(&mut s.order).await;
            break 'replies rejected(reason);
        }
        let frame = match tokio::time::timeout(limits.frame_read_timeout, s.recv.read_to_end(s.declared)).await {
            Err(_) => {
                inc(&stats.frames_timed_out);
                warn!(sensor = %identity.sensor_id, ?stream, "sensor did not finish sending a frame of {} bytes within {:?}; dropping the stream (it will retry)", s.declared, limits.frame_read_timeout);
                let _ = s.recv.stop(codes::READ_TIMEOUT.into());
                let _ = s.send.reset(codes::READ_TIMEOUT.into());
                return;
            }
            Ok(Err(quinn::ReadToEndError::TooLong)) => {
                inc(&stats.frames_rejected);
                let reason =
                    format!("the stream carried more than the {} bytes its length prefix declared", s.declared);
                warn!(sensor = %identity.sensor_id, site = %identity.site, ?stream, "rejected a frame: {reason}");
                let _ = s.recv.stop(codes::FRAME_TOO_LARGE.into());
                refuse_later_streams(&mut s.order).await;
                break 'replies rejected(reason);
            }
            Ok(Err(quinn::ReadToEndError::Read(e))) => {
                debug!(sensor = %identity.sensor_id, ?stream, "stream ended before a whole frame arrived: {e}");
                return;
            }
            Ok(Ok(bytes)) => bytes,
        };
        let batches = match wire::decode_batches_frame(&frame) {
            _ if frame.len() != s.declared => Err(format!(
                "the stream ended after {} of the {} bytes its length prefix declared",
                frame.len(),
                s.declared
            )),
            Ok(batches) => Ok(batches),
            // A newer sensor: its batches stay spooled until this node is upgraded. Later
            // streams of the connection must not pass them (`order` is dropped unsent).
            Err(e @ FrameError::Version(_)) => {
                inc(&stats.frames_rejected);
                warn!(sensor = %identity.sensor_id, "cannot read a frame: {e}");
                break 'replies whole_frame(BatchReply::RetryLater {
                    batch_id: Ulid::nil(),
                    seq: 0,
                    reason: e.to_string(),
                });
            }
            Err(e) => Err(format!("undecodable multi-batch frame of {} bytes: {e}", frame.len())),
        };
        let batches = match batches {
            Ok(b) => b,
            Err(reason) => {
                inc(&stats.frames_rejected);
                error!(sensor = %identity.sensor_id, site = %identity.site, "rejected a frame: {reason}");
                refuse_later_streams(&mut s.order).await;
                break 'replies rejected(reason);
            }
        };
        inc(&stats.multi_batch_frames);
        stats.batches_received.fetch_add(batches.len() as u64, Ordering::Relaxed);
        let foreign: Vec<&Batch> =
            batches.iter().filter(|b| b.sensor_id != identity.sensor_id || b.site != identity.site).collect();
        if let Some(first) = foreign.first() {
            stats.identity_mismatches.fetch_add(foreign.len() as u64, Ordering::Relaxed);
            // Refused as a whole: the sensor then sends these batches one per frame, so each
            // is judged (and dead-lettered) on its own and the honest ones get through.
            let reason = format!(
                "{} of the {} batches in this frame claim another sensor or site (batch seq {} claims sensor {:?} at \
                 site {:?}) but the connection's certificate names sensor {:?} at site {:?}; a sensor may only send its \
                 own batches — fix sensor_id/site in its config or issue a matching certificate",
                foreign.len(),
                batches.len(),
                first.seq,
                first.sensor_id,
                first.site,
                identity.sensor_id,
                identity.site
            );
            warn!(sensor = %identity.sensor_id, "rejected a frame: {reason}");
            refuse_later_streams(&mut s.order).await;
            break 'replies rejected(reason);
        }
        if !(&mut s.order.previous).await.unwrap_or(false) {
            // Applying these would move the watermark past the missing batch.
            s.order.pass(false);
            break 'replies batches
                .iter()
                .map(|b| BatchReply::RetryLater {
                    batch_id: b.id,
                    seq: b.seq,
                    reason: "an earlier batch on this connection did not arrive; re-send from it".into(),
                })
                .collect();
        }
        // Queued in frame order before the next stream may queue its own; each batch is
        // deduplicated by its own (sensor, seq) in group commit.
        let pending: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                log_spool_report(identity, &batch);
                handler.handle(identity.clone(), batch)
            })
            .collect();
        s.order.pass(true);
        let mut replies = Vec::with_capacity(pending.len());
        for p in pending {
            replies.push(p.await);
        }
        debug!(sensor = %identity.sensor_id, batches = replies.len(), "frame handled");
        replies
    };
    for reply in &replies {
        stats.count_reply(reply);
    }
    write_reply(&mut s.send, &replies, identity).await;
}

async fn write_reply<T: Serialize>(send: &mut quinn::SendStream, reply: &T, identity: &SensorIdentity) {
    let bytes = match wire::encode_frame(reply) {
        Ok(b) => b,
        Err(e) => {
            error!(sensor = %identity.sensor_id, "cannot encode a reply: {e}");
            return;
        }
    };
    if let Err(e) = send.write_all(&bytes).await {
        // The sensor gave up on this stream; it re-sends the batch, which dedup absorbs.
        debug!(sensor = %identity.sensor_id, "cannot deliver a reply: {e}");
        return;
    }
    let _ = send.finish();
}
