//! Ships spooled batches to the aggregator over QUIC with mutual TLS.
//!
//! Batches come from `Spool::next_batches_after`, read on a blocking thread one window ahead
//! of the sending (decision 0046); the spool hands them out in seq order and assigns
//! seqs in priority order (inventory, then flow summaries, then flow detail; decision 0022).
//! Strictly in seq order, one bidirectional stream per frame (write the
//! frame, finish, read one reply frame), with up to `max_in_flight` frames outstanding on
//! separate streams of one connection. When the node speaks uplink version 2 (ALPN,
//! decision 0034) a frame carries up to `max_frame_batches` consecutive spooled batches
//! (at most `FRAME_TARGET_BYTES`), answered with one reply per batch; with an older node
//! each frame is one batch. When the node speaks version 3 (decision 0041) each such frame
//! is compressed with zstd at `compression_level` before it is sent. A backlog thus drains
//! in a few large frames, live traffic
//! still goes out as soon as a batch is spooled. Streams are opened in seq order and the aggregator
//! hands a connection's batches on in stream order (decision 0016). A batch leaves the
//! spool only on an Ack (`Spool::remove_acked`, without a flush of its own: a removal a crash
//! undoes re-sends a duplicate; decision 0046) or a Rejected reply (`Spool::dead_letter`,
//! kept for the operator); after RetryLater or a transport failure no new batch is sent,
//! the replies of those in flight are collected,
//! and sending restarts from the oldest spooled batch after a capped exponential backoff.
//! A crash anywhere in between re-sends the batch, which the aggregator recognises by
//! (sensor, seq, ULID) and acks as a duplicate.
//!
//! Several aggregator addresses may be configured: on a connection failure or a
//! "not the Raft leader" reply the sensor moves on to the next one, and backs off only after
//! trying them all.

use crate::config::TlsPaths;
use crate::spool::Spool;
use anyhow::{Context, Result};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};
use wardline_common::wire::{
    assemble_batches_frame, compress_frame, decode_frame, encode_batch_body, encode_frame, Batch, BatchReply,
    ALPN_UPLINK, ALPN_UPLINK_V2, ALPN_UPLINK_V3, DEFAULT_COMPRESSION_LEVEL, FRAME_LENGTH_PREFIX, MAX_FRAME_BATCHES,
    RETRY_NOT_LEADER,
};

/// Largest reply frame accepted from the aggregator (one reply per batch of a frame).
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// A multi-batch frame takes no further batch once it holds this many bytes (a single
/// larger batch still goes alone), so one frame stays quick to send and cheap to reserve.
pub const FRAME_TARGET_BYTES: usize = 1024 * 1024;
/// Default most batches per frame (uplink version 2).
pub const DEFAULT_FRAME_BATCHES: usize = 64;

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
    /// Further aggregator nodes, tried in order after `server_addr` (same server name).
    pub fallback_addrs: Vec<SocketAddr>,
    /// Frames outstanding at once, each on its own stream.
    pub max_in_flight: usize,
    /// Most batches per frame when the node speaks uplink version 2 (1 to
    /// `wire::MAX_FRAME_BATCHES`); 1 offers only version 1 (one batch per stream).
    pub max_frame_batches: usize,
    /// zstd level of multi-batch frames when the node speaks uplink version 3 (decision
    /// 0041); 0 offers only versions 2 and 1 (frames sent uncompressed).
    pub compression_level: i32,
}

/// Default number of batches outstanding at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// Concurrent streams an aggregator grants one sensor connection (its
/// `tls::MAX_STREAMS_PER_CONNECTION`); the window is capped at it.
pub const MAX_PEER_STREAMS: usize = 16;

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
            fallback_addrs: Vec::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_frame_batches: DEFAULT_FRAME_BATCHES,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
        }
    }

    /// Every configured aggregator address, in the order they are tried.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        std::iter::once(self.server_addr).chain(self.fallback_addrs.iter().copied()).collect()
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
    /// Moves to the next configured aggregator address (connection failed, not the leader).
    pub failovers: u64,
    /// Encoded frames handed to QUIC streams, before compression (decision 0041).
    #[serde(default)]
    pub frame_bytes: u64,
    /// The same frames as written to the streams: compressed where the node speaks uplink
    /// version 3, with their length prefixes or headers.
    #[serde(default)]
    pub stream_bytes: u64,
    /// UDP payload bytes of the uplink's QUIC connections, sent and received (handshakes,
    /// packet headers, acks, retransmissions and replies included), from quinn's
    /// connection statistics when each connection ends.
    #[serde(default)]
    pub quic_tx_bytes: u64,
    #[serde(default)]
    pub quic_rx_bytes: u64,
}

/// Ship batches until `shutdown` resolves; waits for new batches when the spool is empty.
pub async fn run_uplink(
    spool: Arc<Spool>,
    cfg: UplinkConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<UplinkStats> {
    run(spool, cfg, false, shutdown, &UplinkHealth::default()).await
}

/// What the uplink is doing now, for logs and status reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UplinkState {
    Starting,
    /// A reply arrived from this aggregator address.
    Connected(String),
    /// The last attempt failed (why); the next is after a backoff.
    Retrying(String),
    /// The uplink task failed (why) and is restarted after a backoff.
    Restarting(String),
    Stopped,
}

/// Shared view of the uplink's state and how often it had to be restarted.
#[derive(Debug)]
pub struct UplinkHealth {
    state: std::sync::Mutex<UplinkState>,
    restarts: std::sync::atomic::AtomicU64,
}

impl Default for UplinkHealth {
    fn default() -> Self {
        UplinkHealth { state: std::sync::Mutex::new(UplinkState::Starting), restarts: Default::default() }
    }
}

impl UplinkHealth {
    pub fn state(&self) -> UplinkState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set(&self, state: UplinkState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
    /// Times the uplink ended with an error and was started again.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Run the uplink until `stop` turns true, restarting it after any error (backoff with
/// jitter), so a failure is logged and retried and never ends shipping silently.
pub async fn supervise(
    spool: Arc<Spool>,
    cfg: UplinkConfig,
    health: Arc<UplinkHealth>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> UplinkStats {
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    let mut total = UplinkStats::default();
    loop {
        if *stop.borrow() {
            break;
        }
        let mut rx = stop.clone();
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // A panic inside is an error too: run it as its own task.
        let task = tokio::spawn({
            let (spool, cfg, health) = (spool.clone(), cfg.clone(), health.clone());
            async move { run(spool, cfg, false, shutdown, &health).await }
        });
        let outcome = match task.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the uplink task panicked: {e}")),
        };
        match outcome {
            Ok(stats) => {
                total.add(&stats);
                if *stop.borrow() {
                    break;
                }
            }
            Err(e) => {
                health.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let wait = backoff.next();
                error!(
                    "the uplink failed: {e:#}; batches stay spooled, restarting it in {wait:.1?}                      (restart {} — if this repeats, check the spool disk and the TLS files)",
                    health.restarts()
                );
                health.set(UplinkState::Restarting(format!("{e:#}")));
                let mut rx = stop.clone();
                tokio::select! {
                    _ = rx.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    health.set(UplinkState::Stopped);
    total
}

impl UplinkStats {
    fn add(&mut self, o: &UplinkStats) {
        self.connections += o.connections;
        self.connect_failures += o.connect_failures;
        self.batches_sent += o.batches_sent;
        self.acked += o.acked;
        self.duplicates += o.duplicates;
        self.rejected += o.rejected;
        self.retry_later += o.retry_later;
        self.send_failures += o.send_failures;
        self.failovers += o.failovers;
        self.frame_bytes += o.frame_bytes;
        self.stream_bytes += o.stream_bytes;
        self.quic_tx_bytes += o.quic_tx_bytes;
        self.quic_rx_bytes += o.quic_rx_bytes;
    }

    /// Add what a connection that ended put on the wire.
    fn add_connection(&mut self, conn: &quinn::Connection) {
        let s = conn.stats();
        self.quic_tx_bytes += s.udp_tx.bytes;
        self.quic_rx_bytes += s.udp_rx.bytes;
    }
}

/// Ship batches until the spool is empty (or `shutdown` resolves), then return.
pub async fn drain_once(
    spool: Arc<Spool>,
    cfg: UplinkConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<UplinkStats> {
    run(spool, cfg, true, shutdown, &UplinkHealth::default()).await
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

/// A frame on its way: the replies to its batches arrive through `reply`.
struct InFlight {
    batches: Vec<Batch>,
    reply: tokio::task::JoinHandle<std::result::Result<Vec<BatchReply>, SendError>>,
}

/// A frame's batches and its encoding (or why it could not be encoded).
type Frame = (Vec<Batch>, std::result::Result<Vec<u8>, String>);

/// The next frame's batches, taken from the front of `queued`, and its encoding (or why it
/// could not be encoded). `multi`: the connection speaks uplink version 2; batches up to
/// `single_through` go one per frame (a frame holding them was refused as a whole).
fn cut_frame(queued: &mut VecDeque<Batch>, multi: bool, max_batches: usize, single_through: u64) -> Option<Frame> {
    let first = queued.pop_front()?;
    if !multi {
        let frame = encode_frame(&first).map_err(|e| format!("cannot encode batch {}: {e}", first.seq));
        return Some((vec![first], frame));
    }
    let body = match encode_batch_body(&first) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("cannot encode batch {}: {e}", first.seq);
            return Some((vec![first], Err(msg)));
        }
    };
    let alone = first.seq <= single_through;
    let mut size = body.len();
    let (mut batches, mut bodies) = (vec![first], vec![body]);
    while !alone && batches.len() < max_batches {
        let Some(next) = queued.front() else { break };
        let Ok(body) = encode_batch_body(next) else { break };
        if size + body.len() > FRAME_TARGET_BYTES {
            break;
        }
        size += body.len();
        bodies.push(body);
        batches.extend(queued.pop_front());
    }
    let frame = assemble_batches_frame(&bodies).map_err(|e| {
        format!("cannot encode a frame of batches {}..={}: {e}", batches[0].seq, batches[batches.len() - 1].seq)
    });
    Some((batches, frame))
}

/// How a connection's streams carry frames: the uplink version its handshake settled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Version 1: one batch per stream, no length prefix.
    Single,
    /// Version 2: a length prefix, then a multi-batch frame.
    Multi,
    /// Version 3: a `wire::CompressedHeader`, then the compressed multi-batch frame.
    Compressed,
}

fn negotiated_framing(conn: &quinn::Connection) -> Framing {
    let protocol = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol);
    match protocol.as_deref() {
        Some(p) if p == ALPN_UPLINK_V3 => Framing::Compressed,
        Some(p) if p == ALPN_UPLINK_V2 => Framing::Multi,
        _ => Framing::Single,
    }
}

async fn run(
    spool: Arc<Spool>,
    cfg: UplinkConfig,
    until_empty: bool,
    shutdown: impl Future<Output = ()>,
    health: &UplinkHealth,
) -> Result<UplinkStats> {
    let frame_batches = cfg.max_frame_batches.clamp(1, MAX_FRAME_BATCHES);
    let offer: &[&[u8]] = match (frame_batches > 1, cfg.compression_level != 0) {
        (true, true) => &[ALPN_UPLINK_V3, ALPN_UPLINK_V2, ALPN_UPLINK],
        (true, false) => &[ALPN_UPLINK_V2, ALPN_UPLINK],
        (false, _) => &[ALPN_UPLINK],
    };
    let client_config = crate::tls::quic_client_config_offering(&cfg.tls, offer).context("cannot set up uplink TLS")?;
    let addrs = cfg.addresses();
    let bind: SocketAddr =
        if cfg.server_addr.is_ipv4() { SocketAddr::from(([0, 0, 0, 0], 0)) } else { SocketAddr::from(([0u16; 8], 0)) };
    let mut endpoint = quinn::Endpoint::client(bind).context("cannot open a UDP socket for the uplink")?;
    endpoint.set_default_client_config(client_config);

    let mut stats = UplinkStats::default();
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    let mut connection: Option<quinn::Connection> = None;
    // The newest connection made, kept until the next one so its bytes are counted once it ended.
    let mut counted: Option<quinn::Connection> = None;
    let mut announced = false;
    // Index into `addrs` of the node in use, and how many were tried since one answered.
    let mut current = 0usize;
    let mut tried = 0usize;
    // The aggregator grants each connection `MAX_PEER_STREAMS` open streams; a wider window
    // only parks the sender in `open_bi` waiting for stream credit while replies queue up
    // (measured: 32 in flight drained a backlog 6× slower than 16, docs/benchmarks.md).
    let window = cfg.max_in_flight.clamp(1, MAX_PEER_STREAMS);
    if cfg.max_in_flight > MAX_PEER_STREAMS {
        warn!(
            max_in_flight = cfg.max_in_flight,
            "uplink.max_in_flight is above the {MAX_PEER_STREAMS} streams an aggregator grants one connection; \
             using {MAX_PEER_STREAMS}"
        );
    }
    // Acked batches not yet removed from the spool: removed together once
    // no further reply is ready (a crash before that re-sends them as duplicates).
    let mut acked: Vec<u64> = Vec::new();
    // Batches up to this seq go one per frame: a frame holding them was refused as a whole
    // (e.g. larger than the node's limit), and alone each is judged on its own.
    let mut single_through = 0u64;
    tokio::pin!(shutdown);

    'outer: loop {
        if spool.is_empty() {
            if until_empty {
                break;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = spool.wait_for_push() => {}
                // Safety net: never rely on the notification alone.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let server = addrs[current % addrs.len()];

        let conn = match connection.as_ref().filter(|c| c.close_reason().is_none()) {
            Some(c) => c.clone(),
            None => {
                let attempt = tokio::select! {
                    _ = &mut shutdown => break 'outer,
                    r = connect(&endpoint, &cfg, server) => r,
                };
                match attempt {
                    Ok(c) => {
                        stats.connections += 1;
                        crate::telemetry::record_connection(true);
                        // With TLS 1.3 the server may still refuse our certificate after
                        // this point, so "connected" is announced on the first reply.
                        debug!(%server, "QUIC handshake done");
                        announced = false;
                        connection = Some(c.clone());
                        if let Some(old) = counted.replace(c.clone()) {
                            stats.add_connection(&old);
                        }
                        c
                    }
                    Err(msg) => {
                        stats.connect_failures += 1;
                        health.set(UplinkState::Retrying(format!("cannot connect to {server}: {msg}")));
                        crate::telemetry::record_connection(false);
                        let wait = next_address(&addrs, &mut current, &mut tried, &mut backoff, &mut stats);
                        warn!(
                            "cannot connect to the aggregator at {server}: {msg}; trying {} in {wait:.1?}",
                            addrs[current]
                        );
                        tokio::select! {
                            _ = &mut shutdown => break 'outer,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        continue;
                    }
                }
            }
        };

        let framing = negotiated_framing(&conn);
        let multi = framing != Framing::Single;
        // One round: fill the window from the oldest spooled batch on, collect replies in
        // order, refill while all goes well; stop sending at the first failure.
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut queued: VecDeque<Batch> = VecDeque::new();
        let mut last_sent = 0u64;
        let mut failure: Option<Failure> = None;
        // Set when the spool had nothing beyond what is in flight; the next round looks again.
        let mut exhausted = false;
        // A version-2 node answers every later stream of a connection RetryLater once it
        // refused a frame as a whole (its batches come again): the next round needs a new
        // connection.
        let mut reconnect = false;
        // The next window's batches, read and sealed on a blocking thread while this one is
        // sent (sealing writes each batch again; done inline it stalled the sending).
        let mut refill: Option<Refill> = None;
        let per_frame = if multi { frame_batches } else { 1 };
        loop {
            while failure.is_none() && in_flight.len() < window && !exhausted {
                if queued.is_empty() {
                    let pending = refill.take().unwrap_or_else(|| Refill::start(&spool, last_sent, window * per_frame));
                    let read = tokio::select! {
                        _ = &mut shutdown => break 'outer,
                        r = pending.wait() => r?,
                    };
                    queued = read.into_iter().filter(|b| b.seq > last_sent).collect();
                    exhausted = queued.is_empty();
                }
                let Some((batches, frame)) = cut_frame(&mut queued, multi, frame_batches, single_through) else {
                    break;
                };
                // Less than a window left: read the next one (after the last batch this round
                // holds) meanwhile.
                if refill.is_none() && queued.len() < window * per_frame {
                    let after = queued.back().map_or(batches[batches.len() - 1].seq, |b| b.seq);
                    refill = Some(Refill::start(&spool, after, window * per_frame));
                }
                let first_seq = batches[0].seq;
                let frame = frame.and_then(|f| {
                    stats.frame_bytes += f.len() as u64;
                    let f = match framing {
                        Framing::Compressed => compress_frame(&f, cfg.compression_level).map_err(|e| {
                            format!("cannot compress a frame of batches {first_seq}.. ({} bytes): {e}", f.len())
                        })?,
                        _ => f,
                    };
                    stats.stream_bytes +=
                        (f.len() + if framing == Framing::Multi { FRAME_LENGTH_PREFIX } else { 0 }) as u64;
                    Ok(f)
                });
                // Opening in seq order gives the streams ascending ids: the aggregator's order.
                let opened = tokio::select! {
                    _ = &mut shutdown => break 'outer,
                    r = conn.open_bi() => r,
                };
                match opened {
                    Ok((send, recv)) => {
                        stats.batches_sent += batches.len() as u64;
                        for _ in &batches {
                            crate::telemetry::record_batch_sent();
                        }
                        last_sent = batches[batches.len() - 1].seq;
                        let timeout = cfg.reply_timeout;
                        let reply =
                            tokio::spawn(async move { exchange(send, recv, frame, framing, first_seq, timeout).await });
                        in_flight.push_back(InFlight { batches, reply });
                    }
                    Err(e) => {
                        // The connection ended before a stream could open (e.g. the node
                        // refused our certificate after the handshake): a failed send too.
                        stats.send_failures += 1;
                        failure = Some(Failure::Transport(explain_connection_error(&e, &cfg), first_seq))
                    }
                }
            }
            let Some(InFlight { batches, reply }) = in_flight.pop_front() else {
                // A refill of this round is not used by the next, which starts from the
                // spool's oldest batch again; it is waited for so it ends before the removal.
                if let Some(r) = refill.take() {
                    r.wait().await?;
                }
                remove_acked(&spool, &mut acked)?;
                break;
            };
            let result = tokio::select! {
                // Interrupting here is safe: the batches are still spooled and will be re-sent.
                _ = &mut shutdown => break 'outer,
                r = reply => r.unwrap_or_else(|e| Err(SendError::Other(format!("send task failed: {e}")))),
            };
            if result.is_ok() && !announced {
                announced = true;
                tried = 0;
                info!(%server, "connected to the aggregator");
                health.set(UplinkState::Connected(server.to_string()));
            }
            let replies = match result {
                Err(e) => {
                    crate::telemetry::record_reply(None);
                    stats.send_failures += 1;
                    let msg = match e {
                        SendError::Connection(e) => explain_connection_error(&e, &cfg),
                        SendError::Other(m) => m,
                    };
                    failure.get_or_insert(Failure::Transport(msg, batches[0].seq));
                    Vec::new()
                }
                // The frame was refused as a whole (too large for this node, malformed, a
                // batch of another sensor): its batches are re-sent one per frame so that
                // each is judged on its own, and at most that one is dead-lettered.
                Ok(replies)
                    if batches.len() > 1
                        && matches!(replies.as_slice(), [BatchReply::Rejected { batch_id, .. }] if batch_id.is_nil()) =>
                {
                    let Some(BatchReply::Rejected { reason, .. }) = replies.into_iter().next() else { unreachable!() };
                    let (first, last) = (batches[0].seq, batches[batches.len() - 1].seq);
                    warn!(
                        "the aggregator refused a frame of batches {first}..={last} as a whole: {reason}; \
                         re-sending them one batch per frame"
                    );
                    single_through = single_through.max(last);
                    reconnect = true;
                    failure.get_or_insert(Failure::Split(reason, first));
                    Vec::new()
                }
                // A refusal of the whole frame to retry later (e.g. a newer wire version).
                Ok(replies)
                    if batches.len() > 1
                        && matches!(replies.as_slice(), [BatchReply::RetryLater { batch_id, .. }] if batch_id.is_nil()) =>
                {
                    batches.iter().map(|_| Ok(replies[0].clone())).collect()
                }
                Ok(replies) if replies.len() != batches.len() => {
                    stats.send_failures += 1;
                    let msg = format!(
                        "aggregator sent {} replies to a frame of {} batches; re-sending",
                        replies.len(),
                        batches.len()
                    );
                    failure.get_or_insert(Failure::Transport(msg, batches[0].seq));
                    Vec::new()
                }
                Ok(replies) => replies.into_iter().map(Ok).collect(),
            };
            for (batch, result) in batches.into_iter().zip(replies) {
                let result: std::result::Result<BatchReply, SendError> = result;
                crate::telemetry::record_reply(result.as_ref().ok());
                match result {
                    Ok(BatchReply::Ack { batch_id, seq, duplicate }) if batch_id == batch.id && seq == batch.seq => {
                        wardline_common::fault::crash_point(wardline_common::fault::CrashPoint::SensorAfterAck, seq);
                        acked.push(seq);
                        stats.acked += 1;
                        if duplicate {
                            stats.duplicates += 1;
                            debug!(seq, "aggregator already had this batch (acked as duplicate)");
                        }
                        if failure.is_none() {
                            backoff.reset();
                        }
                    }
                    Ok(BatchReply::Rejected { batch_id, seq: _, reason })
                        if batch_id == batch.id || batch_id.is_nil() =>
                    {
                        reconnect |= multi && batch_id.is_nil();
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
                    }
                    Ok(BatchReply::RetryLater { reason, .. }) => {
                        stats.retry_later += 1;
                        if failure.is_none() {
                            failure = Some(if reason.starts_with(RETRY_NOT_LEADER) {
                                Failure::NotLeader(reason, batch.seq)
                            } else {
                                Failure::RetryLater(reason, batch.seq)
                            });
                        }
                    }
                    Ok(other) => {
                        // A reply for another batch means the peer is confused; do not act on it.
                        stats.send_failures += 1;
                        let msg = format!("aggregator replied about a different batch ({other:?})");
                        failure.get_or_insert(Failure::Transport(msg, batch.seq));
                    }
                    Err(e) => {
                        stats.send_failures += 1;
                        let msg = match e {
                            SendError::Connection(e) => explain_connection_error(&e, &cfg),
                            SendError::Other(m) => m,
                        };
                        failure.get_or_insert(Failure::Transport(msg, batch.seq));
                    }
                }
            }
            if in_flight.front().is_none_or(|next| !next.reply.is_finished()) {
                try_remove_acked(&spool, &mut acked)?;
            }
        }

        if reconnect {
            if let Some(c) = connection.take() {
                c.close(0u32.into(), b"frame refused, reconnecting");
            }
        }
        let Some(failure) = failure else { continue };
        health.set(UplinkState::Retrying(match &failure {
            Failure::RetryLater(r, _) | Failure::NotLeader(r, _) | Failure::Transport(r, _) | Failure::Split(r, _) => {
                format!("{server}: {r}")
            }
        }));
        let wait = match &failure {
            // Not the node's trouble: send again at once, smaller.
            Failure::Split(_, seq) => {
                debug!(seq, "re-sending from batch {seq}, one batch per frame");
                Duration::ZERO
            }
            Failure::RetryLater(reason, seq) => {
                let wait = backoff.next();
                info!(seq, "aggregator asked to retry later ({reason}); retrying in {wait:.1?}");
                wait
            }
            Failure::NotLeader(reason, seq) => {
                if let Some(c) = connection.take() {
                    c.close(0u32.into(), b"moving to the leader");
                }
                let wait = match leader_index(&addrs, current, reason) {
                    Some(leader) => {
                        // Straight to the leader the follower named; `tried` still counts the hop
                        // so two nodes naming each other during an election end in a backoff.
                        current = leader;
                        stats.failovers += 1;
                        tried += 1;
                        if tried < addrs.len() {
                            Duration::from_millis(50)
                        } else {
                            tried = 0;
                            backoff.next()
                        }
                    }
                    None => next_address(&addrs, &mut current, &mut tried, &mut backoff, &mut stats),
                };
                info!(seq, "{server} is not the leader ({reason}); trying {} in {wait:.1?}", addrs[current]);
                wait
            }
            Failure::Transport(msg, seq) => {
                if let Some(c) = connection.take() {
                    c.close(0u32.into(), b"sensor reconnecting");
                }
                let wait = next_address(&addrs, &mut current, &mut tried, &mut backoff, &mut stats);
                warn!(
                    seq,
                    "sending to the aggregator at {server} failed: {msg}; the batch stays spooled, trying {} in {wait:.1?}",
                    addrs[current]
                );
                wait
            }
        };
        tokio::select! {
            _ = &mut shutdown => break 'outer,
            _ = tokio::time::sleep(wait) => {}
        }
    }

    // Interrupted by shutdown: what was acked leaves the spool (else it is re-sent as a duplicate).
    remove_acked(&spool, &mut acked)?;
    if let Some(c) = connection.take() {
        c.close(0u32.into(), b"sensor stopping");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    if let Some(last) = counted.take() {
        stats.add_connection(&last);
    }
    Ok(stats)
}

/// Default time between heartbeats (`uplink.heartbeat_interval_secs`).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// How long the heartbeat task leaves a node alone that refused the health protocol (an
/// older version): its batches still flow on the uplink's own connection.
const HEARTBEAT_UNSUPPORTED_PAUSE: Duration = Duration::from_secs(300);
/// Longest wait for the answer to one heartbeat.
const HEARTBEAT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a heartbeat holds right now; called for every heartbeat (the clock fields are the
/// heartbeat task's).
pub type HeartbeatSource = Arc<dyn Fn() -> wardline_common::wire::SensorHeartbeat + Send + Sync>;

/// The clock offset the heartbeat task measured last (aggregator minus sensor, µs) and the
/// round trip it was measured over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    pub offset_us: i64,
    pub round_trip_us: u64,
}

/// NTP's offset and delay from one exchange: sent `t0`, received by the node `t1`, answered
/// `t2`, answer read `t3` (µs; t0 and t3 on the sensor's clock, t1 and t2 on the node's).
pub fn clock_sample(t0: u64, t1: u64, t2: u64, t3: u64) -> ClockSample {
    let (t0, t1, t2, t3) = (t0 as i128, t1 as i128, t2 as i128, t3 as i128);
    let offset = ((t1 - t0) + (t2 - t3)) / 2;
    let round_trip = ((t3 - t0) - (t2 - t1)).max(0);
    ClockSample {
        offset_us: offset.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
        round_trip_us: round_trip.min(u64::MAX as i128) as u64,
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Send a heartbeat every `every` (and right after connecting) on a health connection of
/// its own (`wire::ALPN_HEALTH`, decision 0038) until `stop` turns true. Separate from the
/// uplink's connection and task, so nothing here can hold up or fail batch delivery: a node
/// of an older version refuses the protocol at the handshake, and the task then leaves it
/// alone for a while. Goes to the node the uplink last reached, else the configured ones in
/// order, and follows a follower's pointer to the leader (which records heartbeats).
pub async fn run_heartbeats(
    cfg: UplinkConfig,
    every: Duration,
    source: HeartbeatSource,
    health: Arc<UplinkHealth>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client_config = match crate::tls::quic_client_config_offering(&cfg.tls, &[wardline_common::wire::ALPN_HEALTH]) {
        Ok(c) => c,
        Err(e) => {
            warn!("heartbeats are off: cannot set up their TLS: {e:#}");
            return;
        }
    };
    let bind: SocketAddr =
        if cfg.server_addr.is_ipv4() { SocketAddr::from(([0, 0, 0, 0], 0)) } else { SocketAddr::from(([0u16; 8], 0)) };
    let mut endpoint = match quinn::Endpoint::client(bind) {
        Ok(e) => e,
        Err(e) => {
            warn!("heartbeats are off: cannot open a UDP socket: {e}");
            return;
        }
    };
    endpoint.set_default_client_config(client_config);
    let addrs = cfg.addresses();
    let mut current = 0usize;
    let mut connection: Option<quinn::Connection> = None;
    let mut sample: Option<ClockSample> = None;
    let mut unsupported_logged = false;
    loop {
        if *stop.borrow() {
            break;
        }
        let wait = heartbeat_round(
            &endpoint,
            &cfg,
            &addrs,
            &mut current,
            &mut connection,
            &mut sample,
            &source,
            &health,
            &mut unsupported_logged,
            every,
        )
        .await
        .unwrap_or(every);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Some(c) = connection.take() {
        c.close(0u32.into(), b"sensor stopping");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// One heartbeat (two right after connecting: the first measures the clock, the second
/// carries it). Returns the wait before the next when it is not the usual interval.
#[allow(clippy::too_many_arguments)]
async fn heartbeat_round(
    endpoint: &quinn::Endpoint,
    cfg: &UplinkConfig,
    addrs: &[SocketAddr],
    current: &mut usize,
    connection: &mut Option<quinn::Connection>,
    sample: &mut Option<ClockSample>,
    source: &HeartbeatSource,
    health: &UplinkHealth,
    unsupported_logged: &mut bool,
    every: Duration,
) -> Option<Duration> {
    if connection.as_ref().is_none_or(|c| c.close_reason().is_some()) {
        // Where the uplink delivers is the leader as far as it knows.
        if let UplinkState::Connected(at) = health.state() {
            if let Some(i) = addrs.iter().position(|a| a.to_string() == at) {
                *current = i;
            }
        }
        let server = addrs[*current % addrs.len()];
        match connect(endpoint, cfg, server).await {
            Ok(c) => {
                debug!(%server, "heartbeat connection up");
                *connection = Some(c);
                *sample = None;
            }
            Err(msg) => {
                *current = (*current + 1) % addrs.len();
                // rustls' words for the TLS alert no_application_protocol (120).
                if msg.contains("support any known protocol") || msg.contains("NoApplicationProtocol") {
                    let pause = (every * 10).min(HEARTBEAT_UNSUPPORTED_PAUSE);
                    if !*unsupported_logged {
                        info!(
                            "the aggregator at {server} does not take heartbeats (a version before them); batches \
                             are unaffected, heartbeats are tried again in {pause:?}"
                        );
                        *unsupported_logged = true;
                    }
                    return Some(pause);
                }
                debug!("cannot open a heartbeat connection to {server}: {msg}");
                return None;
            }
        }
    }
    let conn = connection.clone()?;
    for _ in 0..2 {
        let first = sample.is_none();
        match send_heartbeat(&conn, source, *sample).await {
            Ok((reply, measured)) => {
                *sample = Some(measured);
                crate::telemetry::record_clock(measured.offset_us, measured.round_trip_us);
                debug!(
                    offset_us = measured.offset_us,
                    round_trip_us = measured.round_trip_us,
                    outcome = %reply.outcome,
                    "heartbeat answered"
                );
                if reply.outcome == "not-leader" {
                    // Record where the leader is, if it is one of ours, and go there next.
                    let leader = reply.leader_ingest.as_deref().and_then(|a| a.parse::<SocketAddr>().ok());
                    if let Some(i) = leader.and_then(|l| addrs.iter().position(|a| *a == l)) {
                        *current = i;
                        conn.close(0u32.into(), b"moving to the leader");
                        *connection = None;
                        return Some(Duration::from_millis(50));
                    }
                }
                if !first {
                    break;
                }
            }
            Err(msg) => {
                debug!("a heartbeat failed: {msg}; reconnecting for the next");
                conn.close(0u32.into(), b"heartbeat failed");
                *connection = None;
                *current = (*current + 1) % addrs.len();
                break;
            }
        }
    }
    None
}

/// Send one heartbeat on its own stream and read the node's answer.
async fn send_heartbeat(
    conn: &quinn::Connection,
    source: &HeartbeatSource,
    sample: Option<ClockSample>,
) -> std::result::Result<(wardline_common::wire::HeartbeatReply, ClockSample), String> {
    let mut heartbeat = source();
    heartbeat.clock_offset_us = sample.map(|s| s.offset_us);
    heartbeat.round_trip_us = sample.map(|s| s.round_trip_us);
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let t0 = now_us();
        heartbeat.sent_us = t0;
        let frame = encode_frame(&heartbeat).map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        let bytes = recv.read_to_end(wardline_common::wire::MAX_HEARTBEAT_BYTES).await.map_err(|e| e.to_string())?;
        let t3 = now_us();
        let reply: wardline_common::wire::HeartbeatReply =
            decode_frame(&bytes).map_err(|e| format!("unreadable heartbeat reply: {e}"))?;
        let measured = clock_sample(t0, reply.received_us, reply.replied_us, t3);
        Ok((reply, measured))
    };
    match tokio::time::timeout(HEARTBEAT_REPLY_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {HEARTBEAT_REPLY_TIMEOUT:?}")),
    }
}

/// Spooled batches being read (and sealed) on a blocking thread.
struct Refill(tokio::task::JoinHandle<Result<Vec<Batch>>>);

impl Refill {
    /// Start reading the next `n` batches after seq `after` (sealing queued ones as needed).
    fn start(spool: &Arc<Spool>, after: u64, n: usize) -> Refill {
        let spool = spool.clone();
        Refill(tokio::task::spawn_blocking(move || spool.next_batches_after(after, n)))
    }

    async fn wait(self) -> Result<Vec<Batch>> {
        self.0.await.context("the spool reading task failed")?
    }
}

/// Remove the acked batches from the spool unless it is busy (a refill is sealing): then
/// they wait for the next removal, and a crash meanwhile re-sends them as duplicates.
fn try_remove_acked(spool: &Spool, acked: &mut Vec<u64>) -> Result<()> {
    match spool.try_remove_acked(acked) {
        None => Ok(()),
        Some(removed) => removal_done(removed, acked),
    }
}

/// Remove the acked batches from the spool.
fn remove_acked(spool: &Spool, acked: &mut Vec<u64>) -> Result<()> {
    if acked.is_empty() {
        return Ok(());
    }
    removal_done(spool.remove_acked(acked), acked)
}

/// Forget `acked` once their removal succeeded; else say which batches it was about.
fn removal_done(removed: Result<usize>, acked: &mut Vec<u64>) -> Result<()> {
    removed.with_context(|| {
        format!("cannot remove acknowledged batches {}..={} from the spool", acked[0], acked[acked.len() - 1])
    })?;
    acked.clear();
    Ok(())
}

/// Why a round stopped sending (reason, seq of the batch it concerned).
enum Failure {
    /// A multi-batch frame was refused as a whole; its batches go again one per frame.
    Split(String, u64),
    RetryLater(String, u64),
    NotLeader(String, u64),
    Transport(String, u64),
}

/// The configured address a follower named as the leader, if it is another one of ours. A
/// leader outside `uplink.server` + `uplink.fallback_servers` is not dialled: the sensor only
/// talks to the nodes its operator listed.
fn leader_index(addrs: &[SocketAddr], current: usize, reason: &str) -> Option<usize> {
    let leader = wardline_common::wire::leader_ingest_hint(reason)?;
    match addrs.iter().position(|a| *a == leader) {
        Some(i) if i != current => Some(i),
        Some(_) => None,
        None => {
            warn!(
                "the cluster's leader takes batches at {leader}, which is not in uplink.server or \
                 uplink.fallback_servers; add it there so this sensor can reach the leader directly"
            );
            None
        }
    }
}

/// Move to the next address; wait briefly while untried addresses remain, and back off
/// once every one was tried since the last that answered.
fn next_address(
    addrs: &[SocketAddr],
    current: &mut usize,
    tried: &mut usize,
    backoff: &mut Backoff,
    stats: &mut UplinkStats,
) -> Duration {
    *tried += 1;
    if addrs.len() > 1 {
        *current = (*current + 1) % addrs.len();
        stats.failovers += 1;
    }
    if *tried < addrs.len() {
        Duration::from_millis(50)
    } else {
        *tried = 0;
        backoff.next()
    }
}

async fn connect(
    endpoint: &quinn::Endpoint,
    cfg: &UplinkConfig,
    server: SocketAddr,
) -> std::result::Result<quinn::Connection, String> {
    let connecting = endpoint
        .connect(server, &cfg.server_name)
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

/// Send one frame (after its length on a version-2 stream; a version-3 frame starts with its
/// header) and read the replies: one per batch, or one for the whole frame; a version-1
/// reply is the one batch's.
async fn exchange(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    frame: std::result::Result<Vec<u8>, String>,
    framing: Framing,
    seq: u64,
    reply_timeout: Duration,
) -> std::result::Result<Vec<BatchReply>, SendError> {
    let frame = frame.map_err(SendError::Other)?;
    let started = std::time::Instant::now();
    let written = async {
        if framing == Framing::Multi {
            // The frame is at most wire::MAX_FRAME_BYTES (16 MiB), so its length fits.
            send.write_all(&(frame.len() as u32).to_be_bytes()).await?;
        }
        send.write_all(&frame).await
    };
    match written.await {
        Ok(()) => {
            let _ = send.finish();
        }
        // The aggregator stopped reading (e.g. the frame is too large); its reply says why.
        Err(quinn::WriteError::Stopped(code)) => debug!(seq, %code, "aggregator stopped reading the frame"),
        Err(quinn::WriteError::ConnectionLost(e)) => return Err(SendError::Connection(e)),
        Err(e) => return Err(SendError::Other(format!("cannot send batch {seq}: {e}"))),
    }
    let bytes = match tokio::time::timeout(reply_timeout, recv.read_to_end(MAX_REPLY_BYTES)).await {
        Err(_) => return Err(SendError::Other(format!("no reply to batch {seq} within {reply_timeout:?}"))),
        Ok(Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e)))) => {
            return Err(SendError::Connection(e))
        }
        Ok(Err(e)) => return Err(SendError::Other(format!("cannot read the reply to batch {seq}: {e}"))),
        Ok(Ok(b)) => b,
    };
    crate::telemetry::record_exchange(frame.len(), started.elapsed());
    let unreadable = |e| SendError::Other(format!("unreadable reply to batch {seq} ({} bytes): {e}", bytes.len()));
    if framing != Framing::Single {
        decode_frame::<Vec<BatchReply>>(&bytes).map_err(unreadable)
    } else {
        decode_frame::<BatchReply>(&bytes).map(|r| vec![r]).map_err(unreadable)
    }
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
    fn clock_sample_is_ntps_offset_and_delay() {
        // The node's clock is 10 s ahead; 2 ms each way; the node took 1 ms to answer.
        let s = clock_sample(1_000_000, 11_002_000, 11_003_000, 1_005_000);
        assert_eq!(s, ClockSample { offset_us: 10_000_000, round_trip_us: 4_000 });
        // 5 s behind, 1 ms out and 3 ms back: the error is half the asymmetry (1 ms).
        let s = clock_sample(50_000_000, 45_001_000, 45_001_000, 50_004_000);
        assert_eq!(s.offset_us, -5_001_000);
        assert_eq!(s.round_trip_us, 4_000);
        // Garbage from the peer never panics.
        let _ = clock_sample(0, u64::MAX, 0, u64::MAX);
        assert_eq!(clock_sample(10, 0, 0, 5).round_trip_us, 0);
    }

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
