//! Sensor heartbeats on a node (decision 0038): what a node does with a heartbeat that
//! ingest received on a sensor's health connection (`wire::ALPN_HEALTH`).
//!
//! Every node answers with its clock (ingest does, so the sensor measures the offset to
//! whichever node it reached). Only the leader records: when the heartbeat is worth a Raft
//! entry (`SensorHealth::worth_recording`: a new sensor, a condition raised or gone, a new
//! version, certificate or connectivity, or the last record a minute old) it proposes
//! `Command::SensorHeartbeat`, at most one at a time per sensor. A follower names the leader
//! instead, as it does for batches, and the sensor sends its next heartbeat there.
//!
//! Upgrade safety: a node of an older version cannot decode that command, and a Raft entry
//! it cannot decode would stop it. So the leader proposes it only once every member of the
//! cluster said it supports `sensor_health` (`RaftNode::cluster_supports`, asked over the Raft listener:
//! `raft::network::PATH_FEATURES`; an older node answers 404). Until then heartbeats are
//! answered (clock) but not recorded, and the leader says why once in its log.

use crate::pki::SensorIdentity;
use crate::raft::RaftNode;
use crate::state::sensor_health::HeartbeatRecord;
use crate::state::sensor_health::MAX_SENSORS;
use crate::state::Command;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{debug, info, warn};
use wardline_common::wire::SensorHeartbeat;

/// The feature a member must support before `Command::SensorHeartbeat` is proposed.
pub const FEATURE: &str = crate::raft::FEATURE_SENSOR_HEALTH;
/// What a node did with one heartbeat, for the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// "recording", "unchanged", "not-leader", "not-recorded: <why>".
    pub outcome: String,
    /// On a follower: the leader's QUIC ingest address, if known.
    pub leader_ingest: Option<String>,
}

impl Outcome {
    fn said(outcome: impl Into<String>) -> Self {
        Outcome { outcome: outcome.into(), leader_ingest: None }
    }
}

/// A node's heartbeat desk.
pub struct Heartbeats {
    raft: Arc<RaftNode>,
    /// Where heartbeats left unrecorded by the sensor bound are counted.
    stats: Arc<crate::ingest::IngestStats>,
    /// Sensors with a proposal in flight (at most one each).
    pending: Mutex<HashSet<String>>,
    /// The gate's last refusal was logged (logged again when it opens and closes again).
    gate_logged: AtomicBool,
    pub received: AtomicU64,
    pub proposed: AtomicU64,
}

impl Heartbeats {
    pub fn new(raft: Arc<RaftNode>, stats: Arc<crate::ingest::IngestStats>) -> Arc<Self> {
        Arc::new(Heartbeats {
            raft,
            stats,
            pending: Mutex::new(HashSet::new()),
            gate_logged: AtomicBool::new(false),
            received: AtomicU64::new(0),
            proposed: AtomicU64::new(0),
        })
    }

    /// Handle one heartbeat `identity` sent (already checked against its certificate);
    /// `received_us` is this node's clock when it arrived, `cert_not_after_s` the end of the
    /// connection's certificate.
    pub async fn receive(
        self: &Arc<Self>,
        identity: &SensorIdentity,
        heartbeat: SensorHeartbeat,
        cert_not_after_s: Option<i64>,
        received_us: u64,
    ) -> Outcome {
        self.received.fetch_add(1, Ordering::Relaxed);
        let m = self.raft.metrics();
        if m.current_leader != Some(self.raft.node_id()) {
            let leader_ingest = m
                .current_leader
                .and_then(|id| m.membership_config.membership().get_node(&id).map(|n| n.ingest_addr.clone()));
            return Outcome { outcome: "not-leader".into(), leader_ingest };
        }
        let record = record_of(identity, heartbeat, cert_not_after_s, received_us);
        let (worth, full) = {
            let r = record.clone();
            self.raft
                .read_state(move |s| {
                    let h = s.sensor_health();
                    (h.worth_recording(&r), h.is_full_for(&r.sensor_id))
                })
                .await
        };
        if full {
            // Counted, and logged at the first and every 1,000th so the log is not flooded.
            let n = self.stats.heartbeat_unrecorded_sensor_limit();
            if n == 1 || n.is_multiple_of(1000) {
                warn!(
                    sensor = %identity.sensor_id,
                    unrecorded = n,
                    "a heartbeat was not recorded: the cluster keeps the health of at most {MAX_SENSORS} sensors \
                     and knows that many; the sensor's batches are still accepted (see \
                     wardline_sensor_heartbeats_unrecorded_sensor_limit)"
                );
            }
            return Outcome::said(format!(
                "not-recorded: the cluster keeps the health of at most {MAX_SENSORS} sensors"
            ));
        }
        if !worth {
            return Outcome::said("unchanged");
        }
        if let Err(why) = self.raft.cluster_supports(FEATURE).await {
            if !self.gate_logged.swap(true, Ordering::Relaxed) {
                warn!("sensor heartbeats are answered but not recorded: {why}");
            }
            return Outcome::said(format!("not-recorded: {why}"));
        }
        if self.gate_logged.swap(false, Ordering::Relaxed) {
            info!("every node supports sensor heartbeats now; recording them");
        }
        let sensor = identity.sensor_id.clone();
        if !self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(sensor.clone()) {
            return Outcome::said("unchanged");
        }
        // Proposed in the background: the reply carries the clock and must not wait for a commit.
        let me = self.clone();
        tokio::spawn(async move {
            match me.raft.propose(Command::SensorHeartbeat(record)).await {
                Ok(_) => {
                    me.proposed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => debug!(sensor = %sensor, "a heartbeat was not recorded: {e}"),
            }
            me.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&sensor);
        });
        Outcome::said("recording")
    }
}

/// The Raft command payload for a heartbeat.
pub fn record_of(
    identity: &SensorIdentity,
    h: SensorHeartbeat,
    cert_not_after_s: Option<i64>,
    received_us: u64,
) -> HeartbeatRecord {
    HeartbeatRecord {
        sensor_id: identity.sensor_id.clone(),
        site: identity.site.clone(),
        received_ms: received_us / 1000,
        version: h.version,
        sensor_sent_us: h.sent_us,
        clock_offset_us: h.clock_offset_us,
        round_trip_us: h.round_trip_us,
        spool_batches: h.spool_batches,
        spool_bytes: h.spool_bytes,
        spool_max_bytes: h.spool_max_bytes,
        spool_batches_evicted: h.spool_batches_evicted,
        spool_flows_rolled_up: h.spool_flows_rolled_up,
        spool_records_quarantined: h.spool_records_quarantined,
        capture_received: h.capture_received,
        capture_kernel_dropped: h.capture_kernel_dropped,
        capture_interface_dropped: h.capture_interface_dropped,
        capture_reopens: h.capture_reopens,
        uplink_connected: h.uplink_connected,
        uplink_state: h.uplink_state,
        uplink_restarts: h.uplink_restarts,
        // The certificate the connection presented is what the cluster trusts; the sensor's
        // word only when it could not be read.
        cert_not_after_s: cert_not_after_s.or(h.cert_not_after_s),
    }
}

/// When a DER certificate stops being valid, seconds since the Unix epoch.
pub fn certificate_not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// This node's clock, µs since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct SensorLabel {
    sensor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ConditionLabels {
    sensor: String,
    condition: String,
}

type FloatGauge = prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>;
type Family<L> = prometheus_client::metrics::family::Family<L, FloatGauge>;

/// Per-sensor health gauges (docs/metrics.md), refreshed from the replicated state at every
/// scrape, so every node exports the same values.
pub struct HealthGauges {
    last_seen: Family<SensorLabel>,
    clock_offset: Family<SensorLabel>,
    spool_fill: Family<SensorLabel>,
    capture_dropped: Family<SensorLabel>,
    uplink_restarts: Family<SensorLabel>,
    cert_not_after: Family<SensorLabel>,
    unhealthy: Family<ConditionLabels>,
}

impl HealthGauges {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let g = HealthGauges {
            last_seen: Family::default(),
            clock_offset: Family::default(),
            spool_fill: Family::default(),
            capture_dropped: Family::default(),
            uplink_restarts: Family::default(),
            cert_not_after: Family::default(),
            unhealthy: Family::default(),
        };
        let mut reg = |name: &str, help: &str, metric: Family<SensorLabel>| registry.register(name, help, metric);
        reg(
            "wardline_sensor_last_heartbeat_timestamp_seconds",
            "When the leader received the sensor's latest recorded heartbeat (Unix time)",
            g.last_seen.clone(),
        );
        reg(
            "wardline_sensor_clock_offset_seconds",
            "Aggregator clock minus sensor clock, as the sensor's latest recorded heartbeat measured it",
            g.clock_offset.clone(),
        );
        reg("wardline_sensor_spool_fill_ratio", "Sensor spool bytes over its byte bound", g.spool_fill.clone());
        reg(
            "wardline_sensor_capture_dropped_packets",
            "Frames the sensor's kernel or interface dropped since the sensor started (libpcap ps_drop + ps_ifdrop)",
            g.capture_dropped.clone(),
        );
        reg(
            "wardline_sensor_uplink_restarts",
            "Times the sensor's uplink task failed and was restarted since the sensor started",
            g.uplink_restarts.clone(),
        );
        reg(
            "wardline_sensor_certificate_not_after_timestamp_seconds",
            "When the sensor's certificate stops being valid (Unix time)",
            g.cert_not_after.clone(),
        );
        registry.register(
            "wardline_sensor_unhealthy",
            "1 for each health condition a sensor's latest recorded heartbeat raises (alert sensor_unhealthy)",
            g.unhealthy.clone(),
        );
        g
    }

    /// Set every gauge from `health` (sensors that left it are dropped).
    pub fn refresh(&self, health: &crate::state::sensor_health::SensorHealth) {
        for f in [
            &self.last_seen,
            &self.clock_offset,
            &self.spool_fill,
            &self.capture_dropped,
            &self.uplink_restarts,
            &self.cert_not_after,
        ] {
            f.clear();
        }
        self.unhealthy.clear();
        for (id, r) in health.sensors() {
            let l = SensorLabel { sensor: id.clone() };
            let h = &r.latest;
            self.last_seen.get_or_create(&l).set(h.received_ms as f64 / 1e3);
            if let Some(o) = h.clock_offset_us {
                self.clock_offset.get_or_create(&l).set(o as f64 / 1e6);
            }
            if h.spool_max_bytes > 0 {
                self.spool_fill.get_or_create(&l).set(h.spool_bytes as f64 / h.spool_max_bytes as f64);
            }
            self.capture_dropped.get_or_create(&l).set(h.capture_dropped() as f64);
            self.uplink_restarts.get_or_create(&l).set(h.uplink_restarts as f64);
            if let Some(end) = h.cert_not_after_s {
                self.cert_not_after.get_or_create(&l).set(end as f64);
            }
            for c in &r.conditions {
                let labels = ConditionLabels { sensor: id.clone(), condition: c.as_str().into() };
                self.unhealthy.get_or_create(&labels).set(1.0);
            }
        }
    }
}
