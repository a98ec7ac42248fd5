//! Prometheus metrics of the sensor: a small HTTP listener serving `GET /metrics`,
//! loopback by default, every request needing the bearer token read from
//! `metrics.token_file` (decision 0026; every metric is listed in docs/metrics.md).
//!
//! One sensor is one process, so the metrics are process-wide: the capture loop, the
//! pipeline and the uplink publish into them through the small `record_*`/`publish_*`
//! functions below without threading a handle through their signatures. The spool is read
//! at scrape time.

use crate::pipeline::{Pipeline, PipelineStats};
use crate::spool::Spool;
use anyhow::{bail, Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{header, Method, Request, Response, StatusCode};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tracing::{info, warn};
use wardline_common::wire::BatchReply;

/// `[metrics]` of the sensor's config. Absent: no listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Where `GET /metrics` is served (plain HTTP; keep it on loopback or a management
    /// network: the token crosses it in clear).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// File holding the bearer token Prometheus must send (`bearer_token_file` in its
    /// scrape config); at least 32 characters.
    pub token_file: PathBuf,
}

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9478))
}

/// Shortest token accepted: guessing must be hopeless.
pub const MIN_TOKEN_LEN: usize = 32;
/// `Content-Type` of the Prometheus text format (see [`prometheus_text`]).
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The pipeline's counters as of its last drain.
#[derive(Default)]
struct PipelineView {
    stats: PipelineStats,
    live_flows: u64,
    reassembly_bytes: u64,
}

/// libpcap's own counters (live capture only).
#[derive(Clone, Copy, Default)]
struct PcapView {
    received: u64,
    dropped: u64,
    if_dropped: u64,
    reopens: u64,
}

#[derive(Default)]
struct Uplink {
    sent: AtomicU64,
    acked: AtomicU64,
    duplicate: AtomicU64,
    rejected: AtomicU64,
    retry_later: AtomicU64,
    failed: AtomicU64,
    bytes_sent: AtomicU64,
    connections: AtomicU64,
    connect_failures: AtomicU64,
    /// Unix time (s) of the last reply of any kind from an aggregator.
    last_reply_unix: AtomicU64,
}

struct Metrics {
    registry: Registry,
    round_trip: Histogram,
    uplink: Uplink,
    pipeline: Mutex<Option<PipelineView>>,
    pcap: Mutex<Option<PcapView>>,
    spool: Mutex<Option<Arc<Spool>>>,
    /// Last heartbeat clock sample (offset µs, round trip µs).
    clock: Mutex<Option<(i64, u64)>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    // 1 ms … ~33 s: loopback to a WAN link with a slow Raft commit.
    let round_trip = Histogram::new(exponential_buckets(0.001, 2.0, 16));
    registry.register(
        "wardline_uplink_round_trip_seconds",
        "From sending a batch to reading the aggregator's reply (any reply)",
        round_trip.clone(),
    );
    registry.register_collector(Box::new(Collected));
    Metrics {
        registry,
        round_trip,
        uplink: Uplink::default(),
        pipeline: Mutex::new(None),
        pcap: Mutex::new(None),
        spool: Mutex::new(None),
        clock: Mutex::new(None),
    }
});

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pipeline's counters now (called at every drain and at the end of the capture).
pub fn publish_pipeline(pipeline: &Pipeline) {
    let view = PipelineView {
        stats: pipeline.stats(),
        live_flows: pipeline.active_flows() as u64,
        reassembly_bytes: pipeline.reassembly_usage().0 as u64,
    };
    *lock(&METRICS.pipeline) = Some(view);
}

/// The final counters of a finished pipeline.
pub fn publish_final_stats(stats: &PipelineStats) {
    *lock(&METRICS.pipeline) = Some(PipelineView { stats: stats.clone(), live_flows: 0, reassembly_bytes: 0 });
}

/// libpcap's counters of the live capture (packets received, dropped by the kernel for
/// lack of buffer space, dropped by the interface).
pub fn publish_pcap(received: u64, dropped: u64, if_dropped: u64) {
    let mut pcap = lock(&METRICS.pcap);
    let reopens = pcap.map_or(0, |p| p.reopens);
    *pcap = Some(PcapView { received, dropped, if_dropped, reopens });
}

/// libpcap's counters as last published: (received, kernel dropped, interface dropped,
/// reopens); zeros before a live capture published any (heartbeats, decision 0038).
pub fn pcap_counters() -> (u64, u64, u64, u64) {
    lock(&METRICS.pcap).map_or((0, 0, 0, 0), |p| (p.received, p.dropped, p.if_dropped, p.reopens))
}

/// The clock offset the heartbeats measured last (aggregator minus sensor, µs) and its
/// round trip, exported as `wardline_clock_offset_seconds` / `_round_trip_seconds`.
pub fn record_clock(offset_us: i64, round_trip_us: u64) {
    *lock(&METRICS.clock) = Some((offset_us, round_trip_us));
}

/// The capture interface went down or away and capture is being reopened.
pub fn record_capture_reopen() {
    let mut pcap = lock(&METRICS.pcap);
    let view = pcap.get_or_insert_with(PcapView::default);
    view.reopens += 1;
}

/// The spool read at every scrape.
pub fn watch_spool(spool: Arc<Spool>) {
    *lock(&METRICS.spool) = Some(spool);
}

/// A batch went out on a stream.
pub fn record_batch_sent() {
    METRICS.uplink.sent.fetch_add(1, Ordering::Relaxed);
}

/// A connection to an aggregator was made (`true`) or failed (`false`).
pub fn record_connection(ok: bool) {
    let c = if ok { &METRICS.uplink.connections } else { &METRICS.uplink.connect_failures };
    c.fetch_add(1, Ordering::Relaxed);
}

/// A batch frame of `bytes` was written and its reply came back after `round_trip`.
pub fn record_exchange(bytes: usize, round_trip: Duration) {
    METRICS.uplink.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    METRICS.round_trip.observe(round_trip.as_secs_f64());
}

/// The outcome of one sent batch: the aggregator's reply, or `None` when the exchange
/// failed in transport (it will be re-sent).
pub fn record_reply(reply: Option<&BatchReply>) {
    let u = &METRICS.uplink;
    let c = match reply {
        Some(BatchReply::Ack { duplicate: true, .. }) => {
            u.acked.fetch_add(1, Ordering::Relaxed);
            &u.duplicate
        }
        Some(BatchReply::Ack { .. }) => &u.acked,
        Some(BatchReply::Rejected { .. }) => &u.rejected,
        Some(BatchReply::RetryLater { .. }) => &u.retry_later,
        None => &u.failed,
    };
    c.fetch_add(1, Ordering::Relaxed);
    if reply.is_some() {
        u.last_reply_unix.store(unix_now(), Ordering::Relaxed);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The exposition text (Prometheus text format).
pub fn render() -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &METRICS.registry);
    prometheus_text(&text)
}

pub use wardline_common::metrics_text::prometheus_text;

#[derive(Debug)]
struct Collected;

type Enc<'a> = DescriptorEncoder<'a>;

fn counter(enc: &mut Enc<'_>, name: &str, help: &str, value: u64) -> std::fmt::Result {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(enc: &mut Enc<'_>, name: &str, help: &str, value: f64) -> std::fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counters<'v>(
    enc: &mut Enc<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'v str, u64)>,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value_label, value) in values {
        ConstCounter::new(value).encode(family.encode_family(&[(label, value_label)])?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Collected {
    fn encode(&self, mut enc: Enc<'_>) -> std::fmt::Result {
        let enc = &mut enc;
        let m = &*METRICS;
        if let Some(p) = lock(&m.pipeline).as_ref() {
            let s = &p.stats;
            counter(enc, "wardline_capture_packets", "Frames processed by the pipeline", s.packets)?;
            counter(enc, "wardline_capture_bytes", "Wire bytes of the frames processed", s.bytes)?;
            counters(
                enc,
                "wardline_decode_errors",
                "Frames that failed to decode, by error kind",
                "kind",
                s.decode_errors.iter().map(|(k, v)| (*k, *v)),
            )?;
            counters(
                enc,
                "wardline_dissected_payloads",
                "Payloads parsed by a dissector, by protocol",
                "protocol",
                s.dissected.iter().map(|(k, v)| (*k, *v)),
            )?;
            counters(
                enc,
                "wardline_dissect_errors",
                "Payloads a dissector claimed but could not parse, by protocol",
                "protocol",
                s.dissect_errors.iter().map(|(k, v)| (*k, *v)),
            )?;
            gauge(enc, "wardline_flows_live", "Flows in the flow table", p.live_flows as f64)?;
            counter(enc, "wardline_flows_emitted", "Flows handed to the batcher", s.flows_emitted)?;
            counter(enc, "wardline_flows_evicted", "Flows evicted from a full flow table", s.flows_evicted)?;
            gauge(enc, "wardline_reassembly_bytes", "Bytes buffered by TCP reassembly", p.reassembly_bytes as f64)?;
            counter(
                enc,
                "wardline_reassembly_evictions",
                "TCP streams dropped to keep reassembly in its memory budget",
                s.reassembly_evictions,
            )?;
            counters(
                enc,
                "wardline_table_overflows",
                "Devices, hosts or bindings counted but not tracked because their table was full",
                "table",
                [("devices", s.devices_over_limit), ("hosts", s.hosts_over_limit), ("bindings", s.bindings_over_limit)],
            )?;
        }
        if let Some(p) = *lock(&m.pcap) {
            counter(enc, "wardline_capture_kernel_received_packets", "Packets libpcap received", p.received)?;
            counters(
                enc,
                "wardline_capture_dropped_packets",
                "Packets lost before the sensor saw them: kernel (buffer full) or interface",
                "where",
                [("kernel", p.dropped), ("interface", p.if_dropped)],
            )?;
            counter(
                enc,
                "wardline_capture_reopens",
                "Times the capture interface went down or away and was reopened",
                p.reopens,
            )?;
        }
        if let Some((offset_us, round_trip_us)) = *lock(&m.clock) {
            gauge(
                enc,
                "wardline_clock_offset_seconds",
                "Aggregator clock minus this sensor's clock, measured by the last heartbeat (NTP-style)",
                offset_us as f64 / 1e6,
            )?;
            gauge(
                enc,
                "wardline_clock_round_trip_seconds",
                "Round trip of the heartbeat that measured the clock offset",
                round_trip_us as f64 / 1e6,
            )?;
        }
        let spool = lock(&m.spool).clone();
        if let Some(spool) = spool {
            match spool.stats() {
                Ok(s) => {
                    gauge(
                        enc,
                        "wardline_spool_batches",
                        "Batches in the spool not yet acked",
                        s.pending_batches as f64,
                    )?;
                    gauge(enc, "wardline_spool_bytes", "Bytes of the batches in the spool", s.pending_bytes as f64)?;
                    gauge(enc, "wardline_spool_max_bytes", "The spool's disk bound", s.max_bytes as f64)?;
                    counter(
                        enc,
                        "wardline_spool_dropped_batches",
                        "Flow-only batches dropped to keep the spool within its bound",
                        s.dropped_batches,
                    )?;
                    counter(enc, "wardline_spool_dropped_events", "Events in the dropped batches", s.dropped_events)?;
                    gauge(
                        enc,
                        "wardline_spool_dead_letters",
                        "Batches the aggregator rejected for good, kept in the dead-letter tree",
                        s.dead_letters as f64,
                    )?;
                }
                Err(e) => warn!("metrics: cannot read the spool's counters: {e:#}"),
            }
        }
        let u = &m.uplink;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counters(
            enc,
            "wardline_uplink_batches",
            "Batches by what became of them: sent, acked (duplicates included), duplicate, rejected, retry_later, \
             failed (transport; re-sent)",
            "outcome",
            [
                ("sent", g(&u.sent)),
                ("acked", g(&u.acked)),
                ("duplicate", g(&u.duplicate)),
                ("rejected", g(&u.rejected)),
                ("retry_later", g(&u.retry_later)),
                ("failed", g(&u.failed)),
            ],
        )?;
        counter(
            enc,
            "wardline_uplink_sent_bytes",
            "Bytes of batch frames written to the aggregator",
            g(&u.bytes_sent),
        )?;
        counters(
            enc,
            "wardline_uplink_connections",
            "Connection attempts to an aggregator by result",
            "result",
            [("ok", g(&u.connections)), ("failed", g(&u.connect_failures))],
        )?;
        gauge(
            enc,
            "wardline_uplink_last_reply_timestamp_seconds",
            "When an aggregator last replied to a batch (Unix time; 0 never)",
            g(&u.last_reply_unix) as f64,
        )?;
        for store in wardline_common::tls_reload::stores() {
            wardline_common::tls_reload::encode_certificate_metrics(enc, &store.status(), true)?;
        }
        Ok(())
    }
}

/// Read and check the token file.
pub fn load_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("metrics.token_file {}: cannot read the metrics token", path.display()))?;
    let token = text.trim().to_string();
    if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "metrics.token_file {}: the token must be one line of at least {MIN_TOKEN_LEN} non-blank characters \
             (e.g. `openssl rand -hex 32 > {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(token)
}

/// Equal without an early exit on the first differing byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"wardline\""));
    }
    resp
}

fn answer(req: &Request<hyper::body::Incoming>, token: &str) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match presented {
        Some(t) if same_secret(t.as_bytes(), token.as_bytes()) => {}
        Some(_) => {
            return respond(StatusCode::UNAUTHORIZED, text, "wrong bearer token for /metrics\n".into());
        }
        None => {
            return respond(
                StatusCode::UNAUTHORIZED,
                text,
                "send `Authorization: Bearer <token>` with the token of metrics.token_file\n".into(),
            )
        }
    }
    if req.uri().path() != "/metrics" {
        return respond(StatusCode::NOT_FOUND, text, "only /metrics is served here\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, text, "use GET /metrics\n".into());
    }
    respond(StatusCode::OK, TEXT_FORMAT, render())
}

/// Bind `[metrics]` and serve it on `rt` until the runtime shuts down; returns the bound
/// address (the port when `listen` asks for port 0).
pub fn start(section: &MetricsSection, spool: Arc<Spool>, rt: &tokio::runtime::Runtime) -> Result<SocketAddr> {
    let token: Arc<str> = load_token(&section.token_file)?.into();
    watch_spool(spool);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(section.listen))
        .with_context(|| format!("metrics.listen {}: cannot listen for /metrics", section.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        warn!(%addr, "/metrics listens beyond loopback over plain HTTP: its bearer token crosses that network in clear");
    }
    info!(%addr, "serving Prometheus metrics at /metrics (bearer token required)");
    rt.spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let token = token.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let resp = answer(&req, &token);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "metrics connection ended: {e}");
                }
            });
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_must_hold_a_long_single_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "short\n").unwrap();
        assert!(load_token(&f).is_err());
        std::fs::write(&f, format!("{}\n", "a".repeat(40))).unwrap();
        assert_eq!(load_token(&f).unwrap(), "a".repeat(40));
        std::fs::write(&f, format!("{} {}", "a".repeat(20), "b".repeat(20))).unwrap();
        assert!(load_token(&f).is_err());
        assert!(load_token(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
