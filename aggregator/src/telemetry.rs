//! Prometheus metrics of one aggregator node: `GET /metrics` on the API listener, so it is
//! HTTPS and needs a viewer credential like every read (decision 0026; every metric is
//! listed in docs/metrics.md).
//!
//! Counters that already exist (ingest, outbox, Raft refusals) are read at scrape time by a
//! collector, not duplicated; only what had no counter yet is recorded here: API request
//! latency (a tower layer), flow sink write latency (a [`FlowSink`] wrapper) and batches
//! per sensor.

use crate::ingest::IngestStats;
use crate::raft::RaftNode;
use crate::sink::{FlowQuery, FlowRow, FlowSink, FlowTotals, SinkFuture};
use crate::state::alerts::{AlertState, Severity};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wardline_common::wire::BatchReply;
use wardline_common::FlowRecord;

/// Sensors given a label of their own; later ones share `sensor_id="_other"`. Sensor ids
/// come from certificates the fleet CA issued, so this only guards against a runaway.
pub const MAX_SENSOR_LABELS: usize = 2048;
/// The label value of sensors past [`MAX_SENSOR_LABELS`].
pub const OTHER_SENSORS: &str = "_other";

/// `Content-Type` of the Prometheus text format (see [`prometheus_text`]).
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    /// The route template (`/api/v1/devices/{id}`), never the raw path: bounded.
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SensorBatchLabels {
    sensor_id: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabels {
    severity: String,
}

/// The metrics of one node.
pub struct Telemetry {
    registry: Registry,
    raft: Arc<RaftNode>,
    api_requests: Family<ApiLabels, Histogram>,
    sink_writes: Family<SinkLabels, Histogram>,
    sink_write_errors: Family<SinkLabels, Counter>,
    sensor_batches: Family<SensorBatchLabels, Counter>,
    labelled_sensors: Mutex<HashSet<String>>,
    alerts_open: Family<SeverityLabels, Gauge>,
    /// Per-sensor health from heartbeats (decision 0038).
    sensor_health: crate::heartbeat::HealthGauges,
    spool_lost: Family<SpoolLostLabels, Gauge>,
    /// Sensor epoch changes and batches refused by the epoch and jump rules (decision 0036).
    sensor_epochs: Family<EpochLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpoolLostLabels {
    sensor_id: String,
    what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EpochLabels {
    event: &'static str,
}

fn latency_buckets() -> Histogram {
    // 1 ms … ~16 s: API reads, ClickHouse inserts of a few thousand rows.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15))
}

impl Telemetry {
    /// `tls_cert`: this node's certificate, whose expiry is exported.
    pub fn new(raft: Arc<RaftNode>, ingest: Arc<IngestStats>, tls_cert: PathBuf) -> Arc<Telemetry> {
        let mut registry = Registry::default();
        let api_requests = Family::<ApiLabels, Histogram>::new_with_constructor(latency_buckets as fn() -> Histogram);
        let sink_writes = Family::<SinkLabels, Histogram>::new_with_constructor(latency_buckets as fn() -> Histogram);
        let sink_write_errors = Family::<SinkLabels, Counter>::default();
        let sensor_batches = Family::<SensorBatchLabels, Counter>::default();
        let alerts_open = Family::<SeverityLabels, Gauge>::default();
        let sensor_epochs = Family::<EpochLabels, Gauge>::default();
        registry.register(
            "wardline_api_request_duration_seconds",
            "HTTPS API requests that passed authentication, by route template, method and status",
            api_requests.clone(),
        );
        registry.register(
            "wardline_flow_sink_write_duration_seconds",
            "Writes of flow rows to the flow sink (ClickHouse INSERT or embedded store), successful or not",
            sink_writes.clone(),
        );
        registry.register(
            "wardline_flow_sink_write_errors",
            "Failed writes of flow rows to the flow sink (the outbox keeps the rows and retries)",
            sink_write_errors.clone(),
        );
        registry.register(
            "wardline_ingest_sensor_batches",
            "Batches handled by this node per sensor: received, acked, duplicate (acked re-send), rejected, \
             retry_later",
            sensor_batches.clone(),
        );
        registry.register(
            "wardline_alerts_open",
            "Alerts in state open, by severity (replicated state as applied on this node)",
            alerts_open.clone(),
        );
        let sensor_health = crate::heartbeat::HealthGauges::register(&mut registry);
        let spool_lost = Family::<SpoolLostLabels, Gauge>::default();
        registry.register(
            "wardline_sensor_spool_lost",
            "What a sensor's spool gave up while it could not deliver, cumulative over its spool epochs \
             (decision 0045): batches, flows (flow records evicted), flow_bytes (their traffic), flows_rolled_up, \
             records_quarantined",
            spool_lost.clone(),
        );
        registry.register(
            "wardline_sensor_epoch_events",
            "Replicated totals of all sensors (only grow): epoch changes (a wiped or reinstalled sensor began a new \
             spool epoch), batches refused as of an older epoch, batches refused for a sequence jump, retired epochs \
             forgotten beyond the 16 kept per sensor",
            sensor_epochs.clone(),
        );
        registry.register_collector(Box::new(Collected { raft: raft.clone(), ingest, tls_cert }));
        Arc::new(Telemetry {
            registry,
            raft,
            api_requests,
            sink_writes,
            sink_write_errors,
            sensor_batches,
            labelled_sensors: Mutex::new(HashSet::new()),
            alerts_open,
            sensor_health,
            spool_lost,
            sensor_epochs,
        })
    }

    /// `sink` with its writes timed and failures counted.
    pub fn wrap_sink(self: &Arc<Self>, sink: Arc<dyn FlowSink>) -> Arc<dyn FlowSink> {
        let kind = if sink.describe().to_ascii_lowercase().contains("clickhouse") { "clickhouse" } else { "embedded" };
        Arc::new(TimedSink { inner: sink, telemetry: self.clone(), kind })
    }

    fn sensor_label(&self, sensor_id: &str) -> String {
        let mut seen = self.labelled_sensors.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(sensor_id) {
            return sensor_id.to_string();
        }
        if seen.len() < MAX_SENSOR_LABELS {
            seen.insert(sensor_id.to_string());
            return sensor_id.to_string();
        }
        OTHER_SENSORS.to_string()
    }

    fn count_sensor(&self, sensor_id: &str, outcome: &'static str) {
        self.sensor_batches
            .get_or_create(&SensorBatchLabels { sensor_id: self.sensor_label(sensor_id), outcome })
            .inc();
    }

    /// A batch of `sensor_id` reached the handler.
    pub fn batch_received(&self, sensor_id: &str) {
        self.count_sensor(sensor_id, "received");
    }

    /// The handler answered a batch of `sensor_id` with `reply`.
    pub fn batch_answered(&self, sensor_id: &str, reply: &BatchReply) {
        let outcome = match reply {
            BatchReply::Ack { duplicate: true, .. } => "duplicate",
            BatchReply::Ack { .. } => "acked",
            BatchReply::Rejected { .. } => "rejected",
            BatchReply::RetryLater { .. } => "retry_later",
        };
        self.count_sensor(sensor_id, outcome);
    }

    /// The exposition text (Prometheus text format), after refreshing what needs the state lock.
    pub async fn render(&self) -> String {
        let (open, epochs) = self
            .raft
            .read_state(|s| {
                let mut open = [0i64; 5];
                for alert in s.alerts().alerts().values().filter(|a| a.state == AlertState::Open) {
                    open[alert.severity as usize] += 1;
                }
                let e = s.epochs();
                (
                    open,
                    [
                        ("changed", e.changes),
                        ("refused_older_epoch", e.stale_refused),
                        ("refused_seq_jump", e.jumps_refused),
                        ("retired_forgotten", e.retired_forgotten()),
                    ],
                )
            })
            .await;
        for (event, n) in epochs {
            self.sensor_epochs.get_or_create(&EpochLabels { event }).set(n as i64);
        }
        for (severity, n) in
            [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical].into_iter().zip(open)
        {
            self.alerts_open.get_or_create(&SeverityLabels { severity: severity.as_str() }).set(n);
        }
        self.raft.read_state(|s| self.sensor_health.refresh(s.sensor_health())).await;
        let lost: Vec<(String, [(&'static str, u64); 5])> = self
            .raft
            .read_state(|s| {
                s.spool_losses()
                    .sensors()
                    .iter()
                    .map(|(id, a)| {
                        let t = a.total();
                        (
                            id.clone(),
                            [
                                ("batches", t.batches_evicted),
                                ("flows", t.flows_evicted),
                                ("flow_bytes", t.flow_bytes_evicted),
                                ("flows_rolled_up", t.flows_rolled_up),
                                ("records_quarantined", t.records_quarantined),
                            ],
                        )
                    })
                    .collect()
            })
            .await;
        // Sensors past the label limit share one label: their values are summed.
        let mut by_label: std::collections::BTreeMap<(String, &'static str), u64> = Default::default();
        for (sensor, values) in lost {
            let sensor_id = self.sensor_label(&sensor);
            for (what, n) in values {
                *by_label.entry((sensor_id.clone(), what)).or_default() += n;
            }
        }
        for ((sensor_id, what), n) in by_label {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.spool_lost.get_or_create(&SpoolLostLabels { sensor_id, what }).set(n);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        prometheus_text(&text)
    }
}

pub use wardline_common::metrics_text::prometheus_text;

/// `GET /metrics` (viewer role by the default rule of [`crate::auth::required_access`]).
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(telemetry)
}

async fn scrape(State(telemetry): State<Arc<Telemetry>>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, TEXT_FORMAT)], telemetry.render().await).into_response()
}

/// axum middleware (`from_fn_with_state`) timing every request by route template.
pub async fn track_api(State(telemetry): State<Arc<Telemetry>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let labels = ApiLabels { route, method, status: resp.status().as_u16().to_string() };
    telemetry.api_requests.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    resp
}

struct TimedSink {
    inner: Arc<dyn FlowSink>,
    telemetry: Arc<Telemetry>,
    kind: &'static str,
}

impl TimedSink {
    fn timed<'a>(&'a self, write: SinkFuture<'a, ()>) -> SinkFuture<'a, ()> {
        Box::pin(async move {
            let started = Instant::now();
            let result = write.await;
            let labels = SinkLabels { sink: self.kind };
            self.telemetry.sink_writes.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
            if result.is_err() {
                self.telemetry.sink_write_errors.get_or_create(&labels).inc();
            }
            result
        })
    }
}

impl FlowSink for TimedSink {
    fn write_batch<'a>(
        &'a self,
        batch_id: ulid::Ulid,
        sensor_id: &'a str,
        site: &'a str,
        flows: &'a [FlowRecord],
    ) -> SinkFuture<'a, ()> {
        self.timed(self.inner.write_batch(batch_id, sensor_id, site, flows))
    }

    fn write_rows<'a>(&'a self, rows: &'a [FlowRow]) -> SinkFuture<'a, ()> {
        self.timed(self.inner.write_rows(rows))
    }

    fn query_flows<'a>(&'a self, q: &'a FlowQuery) -> SinkFuture<'a, Vec<FlowRow>> {
        self.inner.query_flows(q)
    }

    fn totals(&self) -> SinkFuture<'_, FlowTotals> {
        self.inner.totals()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Values read at scrape time from the counters the node keeps anyway.
struct Collected {
    raft: Arc<RaftNode>,
    ingest: Arc<IngestStats>,
    tls_cert: PathBuf,
}

impl std::fmt::Debug for Collected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collected").field("node_id", &self.raft.node_id()).finish()
    }
}

type Enc<'a> = DescriptorEncoder<'a>;

fn counter(enc: &mut Enc<'_>, name: &str, help: &str, value: u64) -> std::fmt::Result {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(enc: &mut Enc<'_>, name: &str, help: &str, value: f64) -> std::fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// One counter family with a single label.
fn counters(enc: &mut Enc<'_>, name: &str, help: &str, label: &str, values: &[(&str, u64)]) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value_label, value) in values {
        ConstCounter::new(*value).encode(family.encode_family(&[(label, *value_label)])?)?;
    }
    Ok(())
}

/// When `path`'s first certificate stops being valid, as seconds since the Unix epoch.
fn certificate_not_after(path: &std::path::Path) -> Option<i64> {
    let pem = std::fs::read(path).ok()?;
    let der = rustls_pemfile::certs(&mut pem.as_slice()).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

impl prometheus_client::collector::Collector for Collected {
    fn encode(&self, mut enc: Enc<'_>) -> std::fmt::Result {
        let enc = &mut enc;
        gauge(enc, "wardline_node_id", "This node's Raft id", self.raft.node_id() as f64)?;
        let m = self.raft.metrics();
        gauge(enc, "wardline_raft_term", "Current Raft term", m.current_term as f64)?;
        let leader = m.current_leader.unwrap_or(0);
        gauge(enc, "wardline_raft_leader_id", "Node id of the leader this node knows of; 0 when none", leader as f64)?;
        gauge(
            enc,
            "wardline_raft_has_leader",
            "1 when this node knows a leader",
            m.current_leader.is_some() as u8 as f64,
        )?;
        gauge(
            enc,
            "wardline_raft_is_leader",
            "1 when this node is the leader",
            (leader == self.raft.node_id()) as u8 as f64,
        )?;
        let last_log = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map_or(0, |l| l.index);
        let committed = self.raft.committed_index().unwrap_or(0);
        gauge(enc, "wardline_raft_last_log_index", "Index of the last entry in this node's log", last_log as f64)?;
        gauge(
            enc,
            "wardline_raft_committed_index",
            "Index of the last entry this node knows committed",
            committed as f64,
        )?;
        gauge(
            enc,
            "wardline_raft_applied_index",
            "Index of the last entry applied to this node's state",
            applied as f64,
        )?;
        gauge(
            enc,
            "wardline_raft_apply_lag_entries",
            "Committed entries not yet applied on this node",
            committed.saturating_sub(applied) as f64,
        )?;
        gauge(
            enc,
            "wardline_raft_running",
            "1 while the Raft core runs; 0 after a fatal storage error (the node then exits)",
            m.running_state.is_ok() as u8 as f64,
        )?;
        let r = self.raft.refusals.counts();
        counters(
            enc,
            "wardline_raft_rpc_refused",
            "Raft RPC connections or requests refused, by reason",
            "reason",
            &[
                ("tls_handshake", r.tls_handshake),
                ("not_node_certificate", r.not_node_certificate),
                ("not_member", r.not_member),
                ("wrong_cluster", r.wrong_cluster),
                ("malformed", r.malformed),
                ("too_large", r.too_large),
            ],
        )?;

        let s = self.ingest.snapshot();
        counter(
            enc,
            "wardline_ingest_connections_accepted",
            "QUIC connections of sensors accepted",
            s.connections_accepted,
        )?;
        counter(
            enc,
            "wardline_ingest_connections_refused",
            "QUIC connections refused (handshake, certificate naming no sensor, connection limit)",
            s.connections_refused,
        )?;
        gauge(enc, "wardline_ingest_connections_active", "Sensor connections open now", s.connections_active as f64)?;
        counters(
            enc,
            "wardline_ingest_batches",
            "Batches of all sensors by outcome (rejections before a batch reaches the handler included)",
            "outcome",
            &[
                ("received", s.batches_received),
                ("acked", s.batches_acked),
                ("duplicate", s.batches_duplicate),
                ("rejected", s.batches_rejected),
                ("retry_later", s.batches_retry_later),
            ],
        )?;
        counter(
            enc,
            "wardline_sensor_heartbeats_unrecorded_sensor_limit",
            "Heartbeats this node as leader did not record because the cluster keeps the health of at most \
             10,000 sensors (sensor_health::MAX_SENSORS)",
            s.heartbeats_unrecorded_sensor_limit,
        )?;
        let g = &s.group_commit;
        counters(
            enc,
            "wardline_ingest_group_commits",
            "Raft entries this node proposed for ingest groups (as leader): proposals, failed proposals, the \
             batches and flow records they held",
            "what",
            &[("groups", g.groups), ("failed", g.failed), ("batches", g.batches), ("flows", g.flows)],
        )?;
        ConstCounter::new(g.commit_micros as f64 / 1e6).encode(enc.encode_descriptor(
            "wardline_ingest_group_commit_seconds",
            "Time from proposing an ingest group to its applied answer, summed over the groups",
            None,
            MetricType::Counter,
        )?)?;
        counter(
            enc,
            "wardline_ingest_identity_mismatches",
            "Batches claiming another sensor or site than their certificate",
            s.identity_mismatches,
        )?;
        counters(
            enc,
            "wardline_ingest_frames_refused",
            "Frames that did not become a batch, by reason",
            "reason",
            &[("undecodable", s.frames_rejected), ("oversized", s.frames_oversized), ("timed_out", s.frames_timed_out)],
        )?;
        // Ingest limits (decision 0039).
        let refused: Vec<(&str, u64)> =
            crate::ingest::Refusal::ALL.iter().map(|r| (r.as_str(), s.refused.get(*r))).collect();
        counters(
            enc,
            "wardline_ingest_connections_refused_by_reason",
            "QUIC connections refused, by reason (handshake_capacity, handshake_timeout, handshake_failed, \
             not_a_sensor, revoked, node_connections, sensor_connections)",
            "reason",
            &refused,
        )?;
        counter(
            enc,
            "wardline_ingest_address_validation_retries",
            "QUIC Retry packets sent so a new peer proves its address before any handshake",
            s.address_validation_retries,
        )?;
        {
            let mut family = enc.encode_descriptor(
                "wardline_ingest_sensor_limited",
                "Times a sensor ran into one of its own ingest limits, by sensor and limit (connections: refused; \
                 frames_in_flight: a stream waited; bytes_per_second: a frame was read more slowly; \
                 stream_read_timeout: a trickling stream was dropped)",
                None,
                MetricType::Counter,
            )?;
            for (sensor, hits) in &s.sensors_limited {
                for (limit, value) in [
                    ("connections", hits.connections_refused),
                    ("frames_in_flight", hits.frames_waited),
                    ("bytes_per_second", hits.frames_throttled),
                    ("stream_read_timeout", hits.streams_timed_out),
                ] {
                    if value > 0 {
                        let labels = [("sensor_id", sensor.as_str()), ("limit", limit)];
                        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }

        let o = self.ingest.outbox.view();
        gauge(
            enc,
            "wardline_outbox_entries",
            "Batches whose flow rows wait in the replicated outbox",
            o.entries as f64,
        )?;
        gauge(enc, "wardline_outbox_rows", "Flow rows waiting in the outbox", o.rows as f64)?;
        gauge(enc, "wardline_outbox_bytes", "Estimated bytes held by the outbox", o.bytes as f64)?;
        gauge(
            enc,
            "wardline_outbox_max_bytes",
            "Outbox bound; above it sensors are told to retry later",
            o.max_bytes as f64,
        )?;
        gauge(
            enc,
            "wardline_outbox_oldest_age_seconds",
            "Age of the oldest waiting outbox entry as seen by this node",
            o.oldest_age_ms as f64 / 1000.0,
        )?;
        gauge(
            enc,
            "wardline_outbox_drain_failing",
            "1 while the last drain into the flow sink failed (leader only)",
            o.last_error.is_some() as u8 as f64,
        )?;
        counter(enc, "wardline_outbox_rows_drained", "Flow rows this node wrote to the sink", o.rows_drained)?;
        counter(enc, "wardline_outbox_inserts", "Inserts this node made into the flow sink", o.inserts)?;

        // The certificate in use (the credential store), which differs from the file on disk
        // while a replacement is refused; the file when no listener has loaded it yet.
        let store = wardline_common::tls_reload::stores().into_iter().find(|s| s.paths().cert == self.tls_cert);
        let not_after = store.as_ref().map(|s| s.current().not_after).or_else(|| certificate_not_after(&self.tls_cert));
        if let Some(not_after) = not_after {
            gauge(
                enc,
                "wardline_tls_certificate_expiry_timestamp_seconds",
                "When this node's TLS certificate (API, Raft, ingest) expires, Unix time",
                not_after as f64,
            )?;
        }
        if let Some(store) = store {
            wardline_common::tls_reload::encode_certificate_metrics(enc, &store.status(), false)?;
        }
        Ok(())
    }
}
