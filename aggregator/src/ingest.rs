//! QUIC ingest: sensors connect with mutual TLS and send batches on bidirectional streams;
//! the server answers on the same stream. Uplink version 1 (`wire::ALPN_UPLINK`) carries one
//! batch per stream and one `BatchReply`; version 2 (`wire::ALPN_UPLINK_V2`, decision 0034)
//! carries a length-prefixed frame of up to `wire::MAX_FRAME_BATCHES` batches and answers
//! with one reply per batch; version 3 (`wire::ALPN_UPLINK_V3`, decision 0041) is version 2
//! with the frame compressed behind a `wire::CompressedHeader`. ALPN picks the version per
//! connection.
//!
//! Who sent a batch is taken from the client certificate (`pki::sensor_identity`), never
//! from the batch: a batch whose `sensor_id`/`site` differ from the certificate's is
//! Rejected. Untrusted input is bounded everywhere: the number of connections, streams per
//! connection (QUIC stream credit), the frame bytes being read or handled at once (a
//! version-2 stream reserves the length it declares, a version-1 stream the whole frame
//! limit), the frame size (read with a hard limit, so an oversized frame costs at most the
//! limit in memory) and the time a peer may take to send one frame.
//!
//! Per-sensor limits (decision 0039, [`limits`]): a sensor's connections, frames in flight
//! and bytes per second are bounded on their own, so one misbehaving sensor cannot take the
//! node's capacity from the others. A connection slot is taken only once the handshake has
//! authenticated the sensor; handshakes are bounded in number and time, and QUIC address
//! validation (a Retry) comes before any handshake state.

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

mod limits;
use limits::{LogGate, ReadFrameError, SensorConnection, SensorLimiter};

/// Decides what happens to one authenticated, identity-checked batch.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle(&self, identity: SensorIdentity, batch: Batch) -> impl Future<Output = BatchReply> + Send;

    /// Why this sensor certificate (identity and serial, lowercase hex) is refused, if it is
    /// revoked. Asked at the handshake and every [`REVOCATION_CHECK_INTERVAL`] on a live
    /// connection.
    fn revoked(&self, _identity: &SensorIdentity, _serial: &str) -> impl Future<Output = Option<String>> + Send {
        async { None }
    }

    /// What becomes of one heartbeat on a health connection (decision 0038), whose sender
    /// was checked against its certificate; `received_us` is this node's clock when it
    /// arrived, `cert_not_after_s` the end of the connection's certificate.
    fn heartbeat(
        &self,
        _identity: &SensorIdentity,
        _heartbeat: wire::SensorHeartbeat,
        _cert_not_after_s: Option<i64>,
        _received_us: u64,
    ) -> impl Future<Output = crate::heartbeat::Outcome> + Send {
        async {
            crate::heartbeat::Outcome {
                outcome: "not-recorded: this node does not record heartbeats".into(),
                leader_ingest: None,
            }
        }
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
    /// The sensor already has `ingest.max_connections_per_sensor` connections to this node.
    pub const SENSOR_CONNECTION_LIMIT: u32 = 0x16;
}

/// Bounds applied to untrusted peers.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    /// Largest batch frame accepted; larger ones are Rejected unread past the limit.
    pub max_frame_bytes: usize,
    /// Concurrent authenticated sensor connections; more are refused (the sensor backs off
    /// and retries). A slot is taken only after the handshake.
    pub max_connections: usize,
    /// Frame bytes being read or handled at once across all connections; further streams
    /// wait (their bytes stay in QUIC flow-control windows). A version-2 stream reserves the
    /// length it declares, a version-1 stream `max_frame_bytes`. This bounds ingest memory
    /// whatever the number of streams or batches per frame.
    pub max_inflight_bytes: usize,
    /// Time a sensor may take to deliver one whole frame (the per-stream read deadline that
    /// ends a trickling stream; waits imposed by the rate limit do not count).
    pub frame_read_timeout: Duration,
    /// Open connections of one sensor; a further one is closed right after its handshake.
    pub max_connections_per_sensor: usize,
    /// Concurrent bidirectional streams one connection may open (QUIC stream credit).
    pub max_streams_per_connection: u32,
    /// Frames of one sensor (over all its connections) being read or handled at once;
    /// further streams wait (backpressure), so one sensor holds at most this many shares of
    /// `max_inflight_bytes`.
    pub max_frames_in_flight_per_sensor: usize,
    /// Frame bytes one sensor may send per second (token bucket); above it its streams are
    /// read more slowly (backpressure: the sensor keeps its batches).
    pub bytes_per_second_per_sensor: u64,
    /// Bytes a sensor may send at once above the rate (the bucket's size).
    pub burst_bytes_per_sensor: u64,
    /// TLS handshakes in progress at once; further new connections are refused until one
    /// ends. Established connections are not affected.
    pub max_handshakes: usize,
    /// Time a peer may take to complete the handshake; then it is dropped.
    pub handshake_timeout: Duration,
    /// Ask every new peer to prove its address with a QUIC Retry before any handshake.
    pub address_validation: bool,
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
            max_connections_per_sensor: 8,
            max_streams_per_connection: crate::tls::MAX_STREAMS_PER_CONNECTION,
            // One connection's full window: an honest sensor is never held back by it.
            max_frames_in_flight_per_sensor: 16,
            bytes_per_second_per_sensor: 32 * 1024 * 1024,
            burst_bytes_per_sensor: 64 * 1024 * 1024,
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(10),
            address_validation: true,
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
    compressed_frames: AtomicU64,
    frames_bad_compression: AtomicU64,
    compressed_frame_bytes: AtomicU64,
    decompressed_frame_bytes: AtomicU64,
    /// The flow outbox as this node sees it (decision 0016).
    pub outbox: Arc<crate::outbox::OutboxStatus>,
    /// Raft proposals of ingest groups made by this node (as leader).
    pub group_commit: Arc<crate::outbox::group_commit::GroupCommitStats>,
    refused: RefusalCounters,
    address_validation_retries: AtomicU64,
    heartbeats_unrecorded_sensor_limit: AtomicU64,
    /// Per-sensor limit hits, at most [`MAX_LIMITED_SENSORS`] sensors by name.
    sensors_limited: std::sync::Mutex<std::collections::BTreeMap<String, SensorLimitHits>>,
}

/// Sensors whose limit hits are kept by name; later ones are summed under
/// [`crate::telemetry::OTHER_SENSORS`]. Sensor ids come from certificates the fleet CA issued.
pub const MAX_LIMITED_SENSORS: usize = 2048;

/// Why a connection was refused (each also counts in `connections_refused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_handshakes` handshakes were already in progress.
    HandshakeCapacity,
    /// The peer did not complete the handshake within `handshake_timeout`.
    HandshakeTimeout,
    /// The TLS handshake failed (unknown CA, no certificate, expired, wrong ALPN, ...).
    HandshakeFailed,
    /// The certificate chained to the fleet CA but names no sensor.
    NotASensor,
    /// The sensor or its certificate is revoked.
    Revoked,
    /// The node was at `max_connections`.
    NodeConnections,
    /// The sensor was at `max_connections_per_sensor`.
    SensorConnections,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Refusal::HandshakeCapacity,
        Refusal::HandshakeTimeout,
        Refusal::HandshakeFailed,
        Refusal::NotASensor,
        Refusal::Revoked,
        Refusal::NodeConnections,
        Refusal::SensorConnections,
    ];

    /// The `reason` label of `wardline_ingest_connections_refused_by_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HandshakeCapacity => "handshake_capacity",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::NotASensor => "not_a_sensor",
            Refusal::Revoked => "revoked",
            Refusal::NodeConnections => "node_connections",
            Refusal::SensorConnections => "sensor_connections",
        }
    }
}

#[derive(Debug, Default)]
struct RefusalCounters([AtomicU64; Refusal::ALL.len()]);

/// Connections refused, by reason (see [`Refusal`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefusalsSnapshot {
    pub handshake_capacity: u64,
    pub handshake_timeout: u64,
    pub handshake_failed: u64,
    pub not_a_sensor: u64,
    pub revoked: u64,
    pub node_connections: u64,
    pub sensor_connections: u64,
}

impl RefusalsSnapshot {
    /// The count of one reason.
    pub fn get(&self, reason: Refusal) -> u64 {
        match reason {
            Refusal::HandshakeCapacity => self.handshake_capacity,
            Refusal::HandshakeTimeout => self.handshake_timeout,
            Refusal::HandshakeFailed => self.handshake_failed,
            Refusal::NotASensor => self.not_a_sensor,
            Refusal::Revoked => self.revoked,
            Refusal::NodeConnections => self.node_connections,
            Refusal::SensorConnections => self.sensor_connections,
        }
    }
}

/// How often one sensor ran into its own limits on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SensorLimitHits {
    /// Connections closed because it had `max_connections_per_sensor` open.
    pub connections_refused: u64,
    /// Streams that waited because it had `max_frames_in_flight_per_sensor` frames in flight.
    pub frames_waited: u64,
    /// Frames read more slowly because it was over `bytes_per_second_per_sensor`.
    pub frames_throttled: u64,
    /// Total time its reads were held back by the rate limit, in milliseconds.
    pub throttled_ms: u64,
    /// Streams dropped because a frame was not complete within the read deadline.
    pub streams_timed_out: u64,
}

/// Which per-sensor limit a sensor ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SensorLimit {
    Connections,
    FramesInFlight,
    /// Throttled for this long.
    BytesPerSecond(Duration),
    StreamReadTimeout,
}

impl SensorLimit {
    /// The `limit` label of `wardline_ingest_sensor_limited`.
    pub fn as_str(self) -> &'static str {
        match self {
            SensorLimit::Connections => "connections",
            SensorLimit::FramesInFlight => "frames_in_flight",
            SensorLimit::BytesPerSecond(_) => "bytes_per_second",
            SensorLimit::StreamReadTimeout => "stream_read_timeout",
        }
    }
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
    /// `connections_refused` by reason (decision 0039).
    #[serde(default)]
    pub refused: RefusalsSnapshot,
    /// QUIC Retry packets sent to make a new peer prove its address.
    #[serde(default)]
    pub address_validation_retries: u64,
    /// Per-sensor limit hits by sensor id (sensors that never hit a limit are absent).
    #[serde(default)]
    pub sensors_limited: std::collections::BTreeMap<String, SensorLimitHits>,
    /// Compressed frames (uplink version 3) decompressed; `multi_batch_frames` counts them too.
    #[serde(default)]
    pub compressed_frames: u64,
    /// Compressed frames refused for their header or compression: an unknown codec, a
    /// length of 0, a stored or decoded size beyond the frame limit (also in
    /// `frames_oversized`), content that does not decode to its declared size, or corrupt
    /// data (all also in `frames_rejected`).
    #[serde(default)]
    pub frames_bad_compression: u64,
    /// Bytes of compressed frames as received, and the same frames decompressed.
    #[serde(default)]
    pub compressed_frame_bytes: u64,
    #[serde(default)]
    pub decompressed_frame_bytes: u64,
    /// Heartbeats this node (as leader) did not record because the cluster already keeps
    /// the health of `sensor_health::MAX_SENSORS` other sensors.
    #[serde(default)]
    pub heartbeats_unrecorded_sensor_limit: u64,
    /// Ingest groups this node proposed to Raft (as leader): how many, the batches and flows
    /// they held, and the time from proposal to applied answer summed over them.
    #[serde(default)]
    pub group_commit: crate::outbox::group_commit::GroupCommitSnapshot,
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
            refused: {
                let r = |reason: Refusal| g(&self.refused.0[reason as usize]);
                RefusalsSnapshot {
                    handshake_capacity: r(Refusal::HandshakeCapacity),
                    handshake_timeout: r(Refusal::HandshakeTimeout),
                    handshake_failed: r(Refusal::HandshakeFailed),
                    not_a_sensor: r(Refusal::NotASensor),
                    revoked: r(Refusal::Revoked),
                    node_connections: r(Refusal::NodeConnections),
                    sensor_connections: r(Refusal::SensorConnections),
                }
            },
            address_validation_retries: g(&self.address_validation_retries),
            sensors_limited: self.sensors_limited.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            compressed_frames: g(&self.compressed_frames),
            frames_bad_compression: g(&self.frames_bad_compression),
            compressed_frame_bytes: g(&self.compressed_frame_bytes),
            decompressed_frame_bytes: g(&self.decompressed_frame_bytes),
            heartbeats_unrecorded_sensor_limit: g(&self.heartbeats_unrecorded_sensor_limit),
            group_commit: self.group_commit.snapshot(),
        }
    }

    /// Count a heartbeat left unrecorded because the sensor-health bound is reached.
    pub fn heartbeat_unrecorded_sensor_limit(&self) -> u64 {
        self.heartbeats_unrecorded_sensor_limit.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Count a refused connection under its reason and in `connections_refused`.
    pub fn refuse(&self, reason: Refusal) {
        inc(&self.connections_refused);
        inc(&self.refused.0[reason as usize]);
    }

    /// Count a sensor running into one of its own limits.
    pub fn sensor_limited(&self, sensor_id: &str, limit: SensorLimit) {
        let mut all = self.sensors_limited.lock().unwrap_or_else(|e| e.into_inner());
        let key = if all.contains_key(sensor_id) || all.len() < MAX_LIMITED_SENSORS {
            sensor_id
        } else {
            crate::telemetry::OTHER_SENSORS
        };
        let hits = all.entry(key.to_string()).or_default();
        match limit {
            SensorLimit::Connections => hits.connections_refused += 1,
            SensorLimit::FramesInFlight => hits.frames_waited += 1,
            SensorLimit::BytesPerSecond(waited) => {
                hits.frames_throttled += 1;
                hits.throttled_ms += waited.as_millis() as u64;
            }
            SensorLimit::StreamReadTimeout => hits.streams_timed_out += 1,
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
        Self::bind_with(addr, server_config, handler, stats, limits)
    }

    /// [`IngestServer::bind`] offering only the uplink versions `alpn` (ALPN ids, preferred
    /// first) and no health connections, e.g. to behave as an older node in tests.
    pub fn bind_speaking(
        addr: SocketAddr,
        tls: &TlsPaths,
        handler: Arc<H>,
        stats: Arc<IngestStats>,
        limits: IngestLimits,
        alpn: &[&[u8]],
    ) -> Result<Self> {
        let server_config =
            crate::tls::quic_server_config_speaking(tls, alpn).context("cannot configure ingest TLS")?;
        Self::bind_with(addr, server_config, handler, stats, limits)
    }

    fn bind_with(
        addr: SocketAddr,
        mut server_config: quinn::ServerConfig,
        handler: Arc<H>,
        stats: Arc<IngestStats>,
        limits: IngestLimits,
    ) -> Result<Self> {
        let mut transport = crate::tls::transport_config();
        transport.max_concurrent_bidi_streams(limits.max_streams_per_connection.max(1).into());
        server_config.transport_config(Arc::new(transport));
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
        // Unauthenticated peers hold only these, and each for at most `handshake_timeout`.
        let handshake_slots = Arc::new(Semaphore::new(limits.max_handshakes.max(1)));
        let sensors = SensorLimiter::new(limits::PerSensor {
            connections: limits.max_connections_per_sensor.max(1),
            frames_in_flight: limits.max_frames_in_flight_per_sensor.max(1),
            bytes_per_second: limits.bytes_per_second_per_sensor,
            burst_bytes: limits.burst_bytes_per_sensor,
        });
        let handshake_busy_log = LogGate::default();
        let handshake_failed_log = Arc::new(LogGate::default());
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
                    // A Retry costs no state here; only a peer that can receive at its
                    // address comes back with the token (then the address counts as validated).
                    if limits.address_validation && !incoming.remote_address_validated() && incoming.may_retry() {
                        match incoming.retry() {
                            Ok(()) => inc(&stats.address_validation_retries),
                            Err(e) => e.into_incoming().refuse(),
                        }
                        continue;
                    }
                    let Ok(handshake) = handshake_slots.clone().try_acquire_owned() else {
                        stats.refuse(Refusal::HandshakeCapacity);
                        if let Some(held) = handshake_busy_log.due() {
                            warn!(
                                "refused a new connection from {}: {} handshakes are already in progress \
                                 (ingest.max_handshakes; {held} more refused since the last line) — established \
                                 sensors are not affected; a flood of new connections is under way, or raise the limit",
                                incoming.remote_address(), limits.max_handshakes
                            );
                        }
                        incoming.refuse();
                        continue;
                    };
                    let ctx = ConnectionContext {
                        handler: handler.clone(),
                        stats: stats.clone(),
                        limits: limits.clone(),
                        batch_slots: batch_slots.clone(),
                        conn_slots: conn_slots.clone(),
                        sensors: sensors.clone(),
                        handshake_failed_log: handshake_failed_log.clone(),
                    };
                    tasks.spawn(handle_connection(incoming, handshake, ctx));
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

/// What a connection's task shares with the node's ingest.
struct ConnectionContext<H> {
    handler: Arc<H>,
    stats: Arc<IngestStats>,
    limits: Arc<IngestLimits>,
    batch_slots: Arc<Semaphore>,
    conn_slots: Arc<Semaphore>,
    sensors: Arc<SensorLimiter>,
    /// Failed handshakes are logged at most every few seconds: a flood would repeat them.
    handshake_failed_log: Arc<LogGate>,
}

async fn handle_connection<H: BatchHandler>(
    incoming: quinn::Incoming,
    handshake: OwnedSemaphorePermit,
    ctx: ConnectionContext<H>,
) {
    let ConnectionContext { handler, stats, limits, batch_slots, conn_slots, sensors, handshake_failed_log } = ctx;
    let remote = incoming.remote_address();
    let connection = match incoming.accept() {
        // Dropping an unfinished handshake closes it: the peer holds nothing afterwards.
        Ok(connecting) => match tokio::time::timeout(limits.handshake_timeout, connecting).await {
            Ok(c) => c,
            Err(_) => {
                stats.refuse(Refusal::HandshakeTimeout);
                if let Some(held) = handshake_failed_log.due() {
                    warn!(
                        "dropped a connection from {remote} whose handshake did not complete within {:?} \
                         (ingest.handshake_timeout_secs; {held} more failed handshakes since the last line) — a peer \
                         that stalls on purpose, or a link so lossy that the timeout needs raising",
                        limits.handshake_timeout
                    );
                }
                return;
            }
        },
        Err(e) => Err(e),
    };
    drop(handshake);
    let connection = match connection {
        Ok(c) => c,
        Err(e) => {
            stats.refuse(Refusal::HandshakeFailed);
            match handshake_failed_log.due() {
                Some(0) => warn!("refused sensor connection from {remote}: {}", explain_handshake_error(&e)),
                Some(held) => warn!(
                    "refused sensor connection from {remote}: {} ({held} more failed handshakes since the last line)",
                    explain_handshake_error(&e)
                ),
                None => debug!("refused sensor connection from {remote}: {}", explain_handshake_error(&e)),
            }
            return;
        }
    };
    let (identity, serial) = match peer_sensor_identity(&connection) {
        Ok(id) => id,
        Err(e) => {
            stats.refuse(Refusal::NotASensor);
            warn!(
                "refused sensor connection from {remote}: {e:#} — sensors need a certificate from \
                 `wardline-aggregator admin issue-sensor`"
            );
            connection.close(codes::NOT_A_SENSOR.into(), b"certificate names no sensor");
            return;
        }
    };
    if let Some(reason) = handler.revoked(&identity, &serial).await {
        stats.refuse(Refusal::Revoked);
        warn!(sensor = %identity.sensor_id, site = %identity.site, %serial, %remote, "refused a revoked sensor: {reason}");
        connection.close(codes::REVOKED.into(), format!("sensor certificate revoked: {reason}").as_bytes());
        return;
    }
    // Its own limit first, so a sensor over it never takes one of the node's slots.
    let sensor = match sensors.connect(&identity.sensor_id) {
        Ok(s) => s,
        Err(limits::OverConnectionLimit(open)) => {
            stats.refuse(Refusal::SensorConnections);
            stats.sensor_limited(&identity.sensor_id, SensorLimit::Connections);
            warn!(
                sensor = %identity.sensor_id, site = %identity.site, %remote,
                "refused a connection of sensor {}: it already has {open} connections to this node \
                 (ingest.max_connections_per_sensor = {}); other sensors are not affected — a sensor behind a \
                 flapping link may hold stale connections until they time out, otherwise it is misbehaving",
                identity.sensor_id, limits.max_connections_per_sensor
            );
            connection.close(
                codes::SENSOR_CONNECTION_LIMIT.into(),
                b"this sensor is at its connection limit on this node; retry later",
            );
            return;
        }
    };
    let Ok(_slot) = conn_slots.try_acquire_owned() else {
        stats.refuse(Refusal::NodeConnections);
        warn!(
            sensor = %identity.sensor_id, %remote,
            "refused sensor connection: this node is at its limit of {} connections (ingest.max_connections); \
             the sensor will retry — raise the limit or add nodes",
            limits.max_connections
        );
        connection.close(codes::BUSY.into(), b"aggregator node at its connection limit; retry later");
        return;
    };
    let sensor = Arc::new(sensor);
    if negotiated_alpn(&connection).as_deref() == Some(wire::ALPN_HEALTH) {
        serve_health_connection(connection, identity, serial, handler, limits).await;
        return;
    }
    inc(&stats.connections_accepted);
    stats.connections_active.fetch_add(1, Ordering::Relaxed);
    let alpn = negotiated_alpn(&connection);
    let version = match alpn.as_deref() {
        Some(p) if p == wire::ALPN_UPLINK_V3 => 3,
        Some(p) if p == wire::ALPN_UPLINK_V2 => 2,
        _ => 1,
    };
    let (multi, compressed) = (version >= 2, version == 3);
    info!(sensor = %identity.sensor_id, site = %identity.site, %remote, %serial, uplink = version, "sensor connected");
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
                    let (handler, stats, limits, batch_slots, identity, sensor) = (
                        handler.clone(),
                        stats.clone(),
                        limits.clone(),
                        batch_slots.clone(),
                        identity.clone(),
                        sensor.clone(),
                    );
                    let (turn_tx, turn_rx) = oneshot::channel();
                    let order = StreamOrder { previous: std::mem::replace(&mut previous, turn_rx), next: Some(turn_tx) };
                    // A version-2 stream says how long its frame is; a version-1 stream may
                    // be as long as the limit. (A stalled prefix holds up only this sensor's
                    // later streams, which wait for this one anyway.)
                    // A version-3 stream also says how large its frame is once decompressed.
                    let (declared, header) = if compressed {
                        match read_stream_header::<{ wire::COMPRESSED_HEADER_BYTES }>(&mut recv, &identity, &stats, &limits).await {
                            Some(h) => (Some(word(&h, 0)), Some(h)),
                            None => {
                                let _ = send.reset(codes::READ_TIMEOUT.into());
                                continue;
                            }
                        }
                    } else if multi {
                        match read_stream_header::<{ wire::FRAME_LENGTH_PREFIX }>(&mut recv, &identity, &stats, &limits).await {
                            Some(prefix) => (Some(word(&prefix, 0)), None),
                            // Dropping `order` unsent makes the later streams answer RetryLater.
                            None => {
                                let _ = send.reset(codes::READ_TIMEOUT.into());
                                continue;
                            }
                        }
                    } else {
                        (None, None)
                    };
                    let mut reserve = declared.map_or(limits.max_frame_bytes, |len| len.min(limits.max_frame_bytes));
                    if let Some(h) = &header {
                        // The stored and the decompressed frame are both in memory at once.
                        // (Capped at the whole budget, or a stream could wait for ever.)
                        reserve += word(h, 5).min(limits.max_frame_bytes);
                        reserve = reserve.min(limits.max_inflight_bytes.max(limits.max_frame_bytes));
                    }
                    // Waiting here is the backpressure: the stream's bytes stay in QUIC
                    // flow-control windows, not in our memory. Taken in stream order, so a
                    // stream holding permits never waits for an earlier one that has none.
                    // The sensor's own frame slot first: a sensor at its limit waits without
                    // holding any of the node's byte budget.
                    let frame_slot = async {
                        if let Some(slot) = sensor.try_frame_slot() {
                            return Some(slot);
                        }
                            stats.sensor_limited(&identity.sensor_id, SensorLimit::FramesInFlight);
                            if let Some(held) = sensor.frames_log().due() {
                                info!(
                                    sensor = %identity.sensor_id, site = %identity.site,
                                    "sensor {} has {} frames in flight on this node \
                                     (ingest.max_frames_in_flight_per_sensor); its further streams wait \
                                     ({held} more waits since the last line) — raise the limit if its uplink \
                                     window is wider",
                                    identity.sensor_id, limits.max_frames_in_flight_per_sensor
                                );
                            }
                        sensor.frame_slot().await
                    };
                    let reserved = async {
                        let slot = frame_slot.await?;
                        Some((slot, batch_slots.acquire_many_owned(permits_for(reserve)).await.ok()?))
                    };
                    // The loop's revocation check is not polled while this stream waits, so
                    // a sensor held back by its limits stays revocable here.
                    let reserved = tokio::select! {
                        r = reserved => r,
                        reason = revoked_while_waiting(handler.as_ref(), &identity, &serial) => {
                            warn!(sensor = %identity.sensor_id, site = %identity.site, %serial, %remote, "closing a revoked sensor's connection: {reason}");
                            connection.close(codes::REVOKED.into(), format!("sensor certificate revoked: {reason}").as_bytes());
                            None
                        }
                    };
                    let Some((frame_slot, permit)) = reserved else { continue };
                    streams.spawn(async move {
                        let ctx = StreamContext { identity: &identity, sensor: &sensor, stats: &stats, limits: &limits };
                        match declared {
                            Some(len) => {
                                let stream = FrameStream { send, recv, declared: len, header, order, _permit: permit };
                                handle_multi_stream(stream, handler.as_ref(), ctx).await
                            }
                            None => {
                                handle_stream(send, recv, handler.as_ref(), ctx, order).await;
                                drop(permit);
                            }
                        }
                        drop(frame_slot);
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

/// Resolves with the reason once the sensor or its certificate is revoked, checking every
/// [`REVOCATION_CHECK_INTERVAL`].
async fn revoked_while_waiting<H: BatchHandler>(handler: &H, identity: &SensorIdentity, serial: &str) -> String {
    loop {
        tokio::time::sleep(REVOCATION_CHECK_INTERVAL).await;
        if let Some(reason) = handler.revoked(identity, serial).await {
            return reason;
        }
    }
}

/// Heartbeats a health connection may have in flight at once; more streams are reset.
const MAX_HEARTBEAT_STREAMS: usize = 4;

/// A sensor's health connection (`wire::ALPN_HEALTH`, decision 0038): each stream carries
/// one heartbeat and gets one reply with this node's clock. Checked for revocation like a
/// batch connection; it holds a connection slot while open.
async fn serve_health_connection<H: BatchHandler>(
    connection: quinn::Connection,
    identity: SensorIdentity,
    serial: String,
    handler: Arc<H>,
    limits: Arc<IngestLimits>,
) {
    let cert_not_after_s =
        peer_certificate_der(&connection).and_then(|der| crate::heartbeat::certificate_not_after(&der));
    debug!(sensor = %identity.sensor_id, remote = %connection.remote_address(), "sensor health connection");
    let mut streams = JoinSet::new();
    let mut revocation_check = tokio::time::interval(REVOCATION_CHECK_INTERVAL);
    let end = loop {
        tokio::select! {
            _ = revocation_check.tick() => {
                if let Some(reason) = handler.revoked(&identity, &serial).await {
                    connection.close(codes::REVOKED.into(), format!("sensor certificate revoked: {reason}").as_bytes());
                }
            }
            accepted = connection.accept_bi() => match accepted {
                Ok((mut send, recv)) => {
                    if streams.len() >= MAX_HEARTBEAT_STREAMS {
                        let _ = send.reset(codes::BUSY.into());
                        continue;
                    }
                    let (handler, limits, identity) = (handler.clone(), limits.clone(), identity.clone());
                    streams.spawn(async move {
                        answer_heartbeat(send, recv, &identity, handler.as_ref(), &limits, cert_not_after_s).await
                    });
                }
                Err(e) => break e,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    };
    while streams.join_next().await.is_some() {}
    debug!(sensor = %identity.sensor_id, "sensor health connection ended: {end}");
}

/// Read one heartbeat and answer it with this node's clock (also when it is refused, so a
/// sensor can still measure its clock offset and read why).
async fn answer_heartbeat<H: BatchHandler>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    identity: &SensorIdentity,
    handler: &H,
    limits: &IngestLimits,
    cert_not_after_s: Option<i64>,
) {
    let read = tokio::time::timeout(limits.frame_read_timeout, recv.read_to_end(wire::MAX_HEARTBEAT_BYTES)).await;
    let received_us = crate::heartbeat::now_us();
    let outcome = match read {
        Err(_) | Ok(Err(quinn::ReadToEndError::Read(_))) => {
            let _ = send.reset(codes::READ_TIMEOUT.into());
            return;
        }
        Ok(Err(quinn::ReadToEndError::TooLong)) => {
            let _ = recv.stop(codes::FRAME_TOO_LARGE.into());
            crate::heartbeat::Outcome {
                outcome: format!("not-recorded: a heartbeat is at most {} bytes", wire::MAX_HEARTBEAT_BYTES),
                leader_ingest: None,
            }
        }
        Ok(Ok(bytes)) => match wire::decode_frame::<wire::SensorHeartbeat>(&bytes) {
            Err(e) => {
                warn!(sensor = %identity.sensor_id, "cannot read a heartbeat of {} bytes: {e}", bytes.len());
                crate::heartbeat::Outcome {
                    outcome: format!("not-recorded: undecodable heartbeat: {e}"),
                    leader_ingest: None,
                }
            }
            Ok(hb) if hb.sensor_id != identity.sensor_id || hb.site != identity.site => {
                let why = format!(
                    "the heartbeat claims sensor {:?} at site {:?} but the certificate names sensor {:?} at site {:?}",
                    hb.sensor_id, hb.site, identity.sensor_id, identity.site
                );
                warn!(sensor = %identity.sensor_id, "refused a heartbeat: {why}");
                crate::heartbeat::Outcome { outcome: format!("not-recorded: {why}"), leader_ingest: None }
            }
            Ok(hb) => handler.heartbeat(identity, hb, cert_not_after_s, received_us).await,
        },
    };
    let reply = wire::HeartbeatReply {
        received_us,
        replied_us: crate::heartbeat::now_us(),
        outcome: outcome.outcome,
        leader_ingest: outcome.leader_ingest,
    };
    write_reply(&mut send, &reply, identity).await;
}

/// The DER of the certificate the peer presented.
fn peer_certificate_der(connection: &quinn::Connection) -> Option<Vec<u8>> {
    let certs = connection.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| c.as_ref().to_vec())
}

/// The ALPN id the handshake settled on.
fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

/// The big-endian u32 at `at` of a stream header, as a length.
fn word(header: &[u8], at: usize) -> usize {
    u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]) as usize
}

/// What precedes a frame on a version-2 stream (its length) or a version-3 stream (a
/// `wire::CompressedHeader`); None (counted, logged) when the stream ended or stalled
/// before the N bytes arrived.
async fn read_stream_header<const N: usize>(
    recv: &mut quinn::RecvStream,
    identity: &SensorIdentity,
    stats: &IngestStats,
    limits: &IngestLimits,
) -> Option<[u8; N]> {
    let mut prefix = [0u8; N];
    match tokio::time::timeout(limits.frame_read_timeout, recv.read_exact(&mut prefix)).await {
        Ok(Ok(())) => Some(prefix),
        Ok(Err(e)) => {
            debug!(sensor = %identity.sensor_id, stream = ?recv.id(), "stream ended before its frame length: {e}");
            None
        }
        Err(_) => {
            inc(&stats.frames_timed_out);
            stats.sensor_limited(&identity.sensor_id, SensorLimit::StreamReadTimeout);
            warn!(sensor = %identity.sensor_id, stream = ?recv.id(), "sensor did not send a frame length within {:?} (ingest.stream_read_timeout_secs); dropping the stream (it will retry)", limits.frame_read_timeout);
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

/// What a stream's task needs of its connection.
#[derive(Clone, Copy)]
struct StreamContext<'a> {
    identity: &'a SensorIdentity,
    sensor: &'a SensorConnection,
    stats: &'a IngestStats,
    limits: &'a IngestLimits,
}

/// Read a stream's frame (at most `limit` bytes) paced to the sensor's rate, within the
/// read deadline; a throttled read is counted and, now and then, logged.
async fn read_paced(
    recv: &mut quinn::RecvStream,
    limit: usize,
    ctx: StreamContext<'_>,
) -> Result<Vec<u8>, ReadFrameError> {
    let deadline = ctx.limits.frame_read_timeout;
    let (bytes, throttled) = limits::read_frame(recv, limit, deadline, ctx.sensor).await?;
    if !throttled.is_zero() {
        ctx.stats.sensor_limited(&ctx.identity.sensor_id, SensorLimit::BytesPerSecond(throttled));
        if let Some(held) = ctx.sensor.throttle_log().due() {
            warn!(
                sensor = %ctx.identity.sensor_id, site = %ctx.identity.site,
                "sensor {} sends more than its ingest.bytes_per_second_per_sensor of {} bytes/s (burst {}); \
                 its frames are read more slowly (this one held back {:?}, {held} more since the last line) — \
                 it keeps its batches and delivers them later; raise the limit if this sensor's traffic is legitimate",
                ctx.identity.sensor_id,
                ctx.limits.bytes_per_second_per_sensor,
                ctx.limits.burst_bytes_per_sensor,
                throttled
            );
        }
    }
    Ok(bytes)
}

/// Count and log a stream that did not deliver its frame within the read deadline.
fn stream_timed_out(ctx: StreamContext<'_>, stream: quinn::StreamId, what: &str) {
    inc(&ctx.stats.frames_timed_out);
    ctx.stats.sensor_limited(&ctx.identity.sensor_id, SensorLimit::StreamReadTimeout);
    warn!(
        sensor = %ctx.identity.sensor_id, site = %ctx.identity.site, ?stream,
        "sensor {} did not finish sending {what} within {:?} (ingest.stream_read_timeout_secs); dropping the stream \
         (the sensor keeps the batch and retries) — raise the timeout for a very slow link, otherwise the sensor \
         is trickling bytes",
        ctx.identity.sensor_id, ctx.limits.frame_read_timeout
    );
}

async fn handle_stream<H: BatchHandler>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    handler: &H,
    ctx: StreamContext<'_>,
    mut order: StreamOrder,
) {
    let StreamContext { identity, stats, limits, .. } = ctx;
    let stream = recv.id();
    let frame = match read_paced(&mut recv, limits.max_frame_bytes, ctx).await {
        Err(ReadFrameError::TimedOut) => {
            stream_timed_out(ctx, stream, "a batch");
            let _ = recv.stop(codes::READ_TIMEOUT.into());
            let _ = send.reset(codes::READ_TIMEOUT.into());
            return;
        }
        Err(ReadFrameError::TooLong) => {
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
        Err(ReadFrameError::Read(e)) => {
            debug!(sensor = %identity.sensor_id, ?stream, "stream ended before a whole batch arrived: {e}");
            return;
        }
        Ok(bytes) => bytes,
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

/// A version-2 or 3 stream whose frame length is known and whose bytes are reserved (`_permit`).
struct FrameStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    declared: usize,
    /// The `wire::CompressedHeader` of a version-3 stream (`declared` is its stored length).
    header: Option<[u8; wire::COMPRESSED_HEADER_BYTES]>,
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

async fn handle_multi_stream<H: BatchHandler>(mut s: FrameStream, handler: &H, ctx: StreamContext<'_>) {
    let StreamContext { identity, stats, limits, .. } = ctx;
    let stream = s.recv.id();
    let rejected = |reason: String| whole_frame(BatchReply::Rejected { batch_id: Ulid::nil(), seq: 0, reason });
    let replies = 'replies: {
        let header = match s.header.map(|h| wire::CompressedHeader::parse(&h, limits.max_frame_bytes)).transpose() {
            Ok(h) => h,
            Err(e) => {
                inc(&stats.frames_rejected);
                inc(&stats.frames_bad_compression);
                if matches!(e, FrameError::TooLarge(..) | FrameError::ExpandsTooFar(..)) {
                    inc(&stats.frames_oversized);
                }
                let reason = format!("compressed frame refused before reading it: {e}");
                warn!(sensor = %identity.sensor_id, site = %identity.site, ?stream, "rejected a frame: {reason}");
                let _ = s.recv.stop(codes::FRAME_TOO_LARGE.into());
                refuse_later_streams(&mut s.order).await;
                break 'replies rejected(reason);
            }
        };
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
        let frame = match read_paced(&mut s.recv, s.declared, ctx).await {
            Err(ReadFrameError::TimedOut) => {
                stream_timed_out(ctx, stream, &format!("a frame of {} bytes", s.declared));
                let _ = s.recv.stop(codes::READ_TIMEOUT.into());
                let _ = s.send.reset(codes::READ_TIMEOUT.into());
                return;
            }
            Err(ReadFrameError::TooLong) => {
                inc(&stats.frames_rejected);
                let reason =
                    format!("the stream carried more than the {} bytes its length prefix declared", s.declared);
                warn!(sensor = %identity.sensor_id, site = %identity.site, ?stream, "rejected a frame: {reason}");
                let _ = s.recv.stop(codes::FRAME_TOO_LARGE.into());
                refuse_later_streams(&mut s.order).await;
                break 'replies rejected(reason);
            }
            Err(ReadFrameError::Read(e)) => {
                debug!(sensor = %identity.sensor_id, ?stream, "stream ended before a whole frame arrived: {e}");
                return;
            }
            Ok(bytes) => bytes,
        };
        let frame = match &header {
            Some(h) if frame.len() == s.declared => match wire::decompress_frame(h, &frame) {
                Ok(decoded) => {
                    inc(&stats.compressed_frames);
                    stats.compressed_frame_bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
                    stats.decompressed_frame_bytes.fetch_add(decoded.len() as u64, Ordering::Relaxed);
                    s.declared = decoded.len();
                    decoded
                }
                Err(e) => {
                    inc(&stats.frames_rejected);
                    inc(&stats.frames_bad_compression);
                    let reason = format!("undecodable compressed frame of {} bytes: {e}", frame.len());
                    error!(sensor = %identity.sensor_id, site = %identity.site, "rejected a frame: {reason}");
                    refuse_later_streams(&mut s.order).await;
                    break 'replies rejected(reason);
                }
            },
            _ => frame,
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
