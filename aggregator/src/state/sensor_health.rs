//! The latest health of every sensor (decision 0038), replicated so every node shows the same
//! thing, and the `sensor_unhealthy` alerts derived from it.
//!
//! A node that receives a sensor's heartbeat proposes `Command::SensorHeartbeat` with a
//! [`HeartbeatRecord`]: the heartbeat's content, the sensor's identity from its certificate
//! and the receiving leader's clock (`received_ms`). Everything here is computed from those
//! records alone, so `apply` stays deterministic: "now" for the certificate check is the
//! record's `received_ms`, "rising" capture drops and uplink restarts compare a record with
//! the one recorded before it.
//!
//! Conditions (each opens one alert, device = the sensor id, target = the condition's name,
//! and resolves it when a later record no longer shows it):
//!
//! | target | raised when |
//! |---|---|
//! | `certificate_expiring` | the sensor's certificate ends within [`CERT_EXPIRY_WARN_MS`] of `received_ms` (or has ended) |
//! | `capture_drops` | the kernel or interface dropped frames since the previous record |
//! | `spool_full` | the spool holds more than [`SPOOL_FULL_PERCENT`] % of its byte bound |
//! | `clock_offset` | the measured clock offset is beyond ±[`CLOCK_OFFSET_BOUND_MS`] |
//! | `uplink_restarting` | the uplink task was restarted since the previous record |

use super::alerts::{AlertKind, AlertStore, Occurrence, Severity};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A certificate ending within this time of a heartbeat raises `certificate_expiring`.
pub const CERT_EXPIRY_WARN_MS: u64 = 30 * 24 * 3600 * 1000;
/// A spool above this share of its byte bound raises `spool_full`.
pub const SPOOL_FULL_PERCENT: u64 = 80;
/// A clock offset beyond this (either way) raises `clock_offset`: flow and device times
/// from that sensor are then misplaced by more than the batch interval's precision.
pub const CLOCK_OFFSET_BOUND_MS: i64 = 2_000;
/// A node proposes a heartbeat whose conditions or identity did not change at most this
/// often per sensor, so "last seen" stays fresh without one Raft entry per heartbeat.
pub const RECORD_INTERVAL_MS: u64 = 60_000;
/// Sensors whose health is kept; heartbeats of further sensors are not recorded (counted).
pub const MAX_SENSORS: usize = 10_000;

/// What is wrong with a sensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    CertificateExpiring,
    CaptureDrops,
    SpoolFull,
    ClockOffset,
    UplinkRestarting,
}

impl Condition {
    /// The alert target and API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Condition::CertificateExpiring => "certificate_expiring",
            Condition::CaptureDrops => "capture_drops",
            Condition::SpoolFull => "spool_full",
            Condition::ClockOffset => "clock_offset",
            Condition::UplinkRestarting => "uplink_restarting",
        }
    }

    fn severity(&self) -> Severity {
        match self {
            // Losing traffic or about to be locked out.
            Condition::CaptureDrops | Condition::SpoolFull | Condition::CertificateExpiring => Severity::High,
            Condition::ClockOffset | Condition::UplinkRestarting => Severity::Medium,
        }
    }
}

/// One heartbeat as the cluster records it: the `Command::SensorHeartbeat` payload. Fields
/// are never changed (it is in the Raft log); a later release adds another command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRecord {
    /// From the connection's certificate.
    pub sensor_id: String,
    pub site: String,
    /// The receiving leader's clock, ms since the Unix epoch: "last seen", and "now" for the
    /// certificate check.
    pub received_ms: u64,
    pub version: String,
    /// The sensor's clock when it sent the heartbeat (µs).
    pub sensor_sent_us: u64,
    /// Aggregator clock minus sensor clock (µs) as the sensor measured it, and the round trip.
    pub clock_offset_us: Option<i64>,
    pub round_trip_us: Option<u64>,
    pub spool_batches: u64,
    pub spool_bytes: u64,
    pub spool_max_bytes: u64,
    pub spool_batches_evicted: u64,
    pub spool_flows_rolled_up: u64,
    pub spool_records_quarantined: u64,
    pub capture_received: u64,
    pub capture_kernel_dropped: u64,
    pub capture_interface_dropped: u64,
    pub capture_reopens: u64,
    pub uplink_connected: bool,
    pub uplink_state: String,
    pub uplink_restarts: u64,
    /// The sensor's certificate's end (s since the epoch): what the sensor said, else what
    /// the connection's certificate says.
    pub cert_not_after_s: Option<i64>,
}

impl HeartbeatRecord {
    /// Frames the capture lost before the sensor read them (kernel and interface).
    pub fn capture_dropped(&self) -> u64 {
        self.capture_kernel_dropped.saturating_add(self.capture_interface_dropped)
    }

    /// How full the spool is, in percent of its bound (0 when it has none).
    pub fn spool_percent(&self) -> u64 {
        if self.spool_max_bytes == 0 {
            return 0;
        }
        (u128::from(self.spool_bytes) * 100 / u128::from(self.spool_max_bytes)) as u64
    }

    /// The fields whose change is worth a record at once (besides the conditions).
    fn identity(&self) -> (&str, &str, Option<i64>, bool) {
        (&self.site, &self.version, self.cert_not_after_s, self.uplink_connected)
    }
}

/// The latest health of one sensor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorHealthRecord {
    pub latest: HeartbeatRecord,
    /// The leader's clock at the sensor's first recorded heartbeat.
    pub first_ms: u64,
    /// Heartbeats recorded (the cluster records at most one per [`RECORD_INTERVAL_MS`] unless
    /// something changed, so this is not the number the sensor sent).
    pub recorded: u64,
    /// Conditions raised now (each with an open alert unless triaged).
    pub conditions: BTreeSet<Condition>,
}

/// One sensor's health as `GET /api/v1/sensors` shows it (under `health`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SensorHealthView {
    /// "healthy", or "unhealthy" while any condition is raised.
    pub status: &'static str,
    /// The raised conditions (alert targets), in order.
    pub conditions: Vec<&'static str>,
    /// The leader's clock when the latest recorded heartbeat arrived (ms since the epoch).
    pub last_seen_ms: u64,
    pub first_seen_ms: u64,
    /// Aggregator clock minus sensor clock, ms (as the sensor measured it).
    pub clock_offset_ms: Option<f64>,
    pub round_trip_ms: Option<f64>,
    /// Spool fill, percent of its byte bound.
    pub spool_percent: u64,
    pub heartbeats_recorded: u64,
    /// The latest recorded heartbeat, every field.
    pub heartbeat: HeartbeatRecord,
}

impl SensorHealthRecord {
    pub fn view(&self) -> SensorHealthView {
        let r = &self.latest;
        SensorHealthView {
            status: if self.conditions.is_empty() { "healthy" } else { "unhealthy" },
            conditions: self.conditions.iter().map(Condition::as_str).collect(),
            last_seen_ms: r.received_ms,
            first_seen_ms: self.first_ms,
            clock_offset_ms: r.clock_offset_us.map(|o| o as f64 / 1000.0),
            round_trip_ms: r.round_trip_us.map(|o| o as f64 / 1000.0),
            spool_percent: r.spool_percent(),
            heartbeats_recorded: self.recorded,
            heartbeat: r.clone(),
        }
    }
}

/// Every sensor's latest health (a part of the replicated state since format 11).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorHealth {
    sensors: BTreeMap<String, SensorHealthRecord>,
    /// Heartbeats not recorded because [`MAX_SENSORS`] sensors are known already.
    pub refused: u64,
}

/// The conditions `next` shows, given the record before it (None for a sensor's first).
pub fn conditions(previous: Option<&HeartbeatRecord>, next: &HeartbeatRecord) -> BTreeSet<Condition> {
    let mut raised = BTreeSet::new();
    if let Some(end_s) = next.cert_not_after_s {
        let end_ms = end_s.max(0) as u64 * 1000;
        if end_ms <= next.received_ms.saturating_add(CERT_EXPIRY_WARN_MS) {
            raised.insert(Condition::CertificateExpiring);
        }
    }
    // Counters restart with the sensor: a smaller value is a restart, not a loss.
    if let Some(prev) = previous {
        if next.capture_dropped() > prev.capture_dropped() {
            raised.insert(Condition::CaptureDrops);
        }
        if next.uplink_restarts > prev.uplink_restarts {
            raised.insert(Condition::UplinkRestarting);
        }
    } else if next.uplink_restarts > 0 {
        raised.insert(Condition::UplinkRestarting);
    }
    if next.spool_max_bytes > 0
        && u128::from(next.spool_bytes) * 100 > u128::from(next.spool_max_bytes) * u128::from(SPOOL_FULL_PERCENT)
    {
        raised.insert(Condition::SpoolFull);
    }
    if next.clock_offset_us.is_some_and(|o| o.unsigned_abs() > CLOCK_OFFSET_BOUND_MS.unsigned_abs() * 1000) {
        raised.insert(Condition::ClockOffset);
    }
    raised
}

impl SensorHealth {
    /// Every sensor's latest health, by sensor id.
    pub fn sensors(&self) -> &BTreeMap<String, SensorHealthRecord> {
        &self.sensors
    }

    pub fn get(&self, sensor_id: &str) -> Option<&SensorHealthRecord> {
        self.sensors.get(sensor_id)
    }

    /// True when `sensor_id` is not kept and [`MAX_SENSORS`] others are: its heartbeats
    /// cannot be recorded (the leader counts them instead of proposing them).
    pub fn is_full_for(&self, sensor_id: &str) -> bool {
        !self.sensors.contains_key(sensor_id) && self.sensors.len() >= MAX_SENSORS
    }

    /// Whether recording `next` would change anything worth a Raft entry: a new sensor, other
    /// conditions, a new version, certificate or uplink connectivity, or the last record
    /// being [`RECORD_INTERVAL_MS`] old (by `next.received_ms`).
    pub fn worth_recording(&self, next: &HeartbeatRecord) -> bool {
        match self.sensors.get(&next.sensor_id) {
            None => !self.is_full_for(&next.sensor_id),
            Some(r) => {
                r.latest.identity() != next.identity()
                    || conditions(Some(&r.latest), next) != r.conditions
                    || next.received_ms.saturating_sub(r.latest.received_ms) >= RECORD_INTERVAL_MS
            }
        }
    }

    /// Record a heartbeat and open or resolve the sensor's `sensor_unhealthy` alerts.
    /// Returns false (and changes nothing but the refusal count) when it cannot be kept.
    pub fn record(&mut self, next: &HeartbeatRecord, alerts: &mut AlertStore) -> bool {
        if self.is_full_for(&next.sensor_id) {
            self.refused = self.refused.saturating_add(1);
            return false;
        }
        let entry = self
            .sensors
            .entry(next.sensor_id.clone())
            .or_insert_with(|| SensorHealthRecord { first_ms: next.received_ms, ..Default::default() });
        let previous = (entry.recorded > 0).then_some(&entry.latest);
        let now = conditions(previous, next);
        let id = &next.sensor_id;
        for gone in entry.conditions.difference(&now) {
            let note = format!("sensor {id}: {} no longer ({})", gone.as_str(), describe(*gone, next));
            alerts.resolve_data(id, AlertKind::SensorUnhealthy, gone.as_str(), next.received_ms, &note);
        }
        for raised in now.difference(&entry.conditions) {
            alerts.occur(&Occurrence {
                kind: AlertKind::SensorUnhealthy,
                severity: raised.severity(),
                device: id.clone(),
                site: next.site.clone(),
                target: raised.as_str().into(),
                ts_us: next.received_ms.saturating_mul(1000),
                evidence: format!("sensor {id} (site {}): {}", next.site, describe(*raised, next)),
            });
        }
        entry.conditions = now;
        entry.latest = next.clone();
        entry.recorded = entry.recorded.saturating_add(1);
        true
    }
}

/// What an operator reads about one condition, from the record that shows it (or not).
fn describe(condition: Condition, r: &HeartbeatRecord) -> String {
    match condition {
        Condition::CertificateExpiring => match r.cert_not_after_s {
            Some(end) => {
                let days = end.saturating_mul(1000).saturating_sub(r.received_ms as i64).div_euclid(24 * 3600 * 1000);
                format!(
                    "its certificate ends at {end} s since the epoch ({days} days from this heartbeat); re-issue it \
                     with `wardline-aggregator admin issue-sensor`"
                )
            }
            None => "its certificate's end is unknown".into(),
        },
        Condition::CaptureDrops => format!(
            "the capture lost frames before the sensor read them: {} by the kernel, {} by the interface since the \
             sensor started (received {}); raise the capture buffer or CPU, or narrow the BPF filter",
            r.capture_kernel_dropped, r.capture_interface_dropped, r.capture_received
        ),
        Condition::SpoolFull => format!(
            "its spool holds {} of {} bytes ({} %, {} batches): it cannot deliver fast enough and will evict flow \
             detail at its bound",
            r.spool_bytes,
            r.spool_max_bytes,
            r.spool_percent(),
            r.spool_batches
        ),
        Condition::ClockOffset => format!(
            "its clock is {} ms off the aggregator's (round trip {} ms); bound ±{CLOCK_OFFSET_BOUND_MS} ms — check \
             NTP on the sensor",
            r.clock_offset_us.unwrap_or(0) / 1000,
            r.round_trip_us.unwrap_or(0) / 1000
        ),
        Condition::UplinkRestarting => format!(
            "its uplink task failed and was restarted ({} times since the sensor started; now: {})",
            r.uplink_restarts, r.uplink_state
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::alerts::AlertState;

    const DAY_MS: u64 = 24 * 3600 * 1000;
    const T0: u64 = 1_800_000_000_000;

    fn healthy(at_ms: u64) -> HeartbeatRecord {
        HeartbeatRecord {
            sensor_id: "s1".into(),
            site: "north".into(),
            received_ms: at_ms,
            version: "0.1.0".into(),
            sensor_sent_us: at_ms * 1000,
            clock_offset_us: Some(1_000),
            round_trip_us: Some(500),
            spool_batches: 1,
            spool_bytes: 1000,
            spool_max_bytes: 1_000_000,
            uplink_connected: true,
            uplink_state: "connected".into(),
            cert_not_after_s: Some(((T0 + 365 * DAY_MS) / 1000) as i64),
            ..Default::default()
        }
    }

    /// (target, state) of every sensor_unhealthy alert.
    fn unhealthy(alerts: &AlertStore) -> Vec<(String, AlertState)> {
        alerts
            .alerts()
            .values()
            .filter(|a| a.kind == AlertKind::SensorUnhealthy)
            .map(|a| (a.target.clone(), a.state))
            .collect()
    }

    #[test]
    fn a_healthy_sensor_raises_nothing_and_is_recorded() {
        let (mut h, mut alerts) = (SensorHealth::default(), AlertStore::default());
        assert!(h.worth_recording(&healthy(T0)));
        assert!(h.record(&healthy(T0), &mut alerts));
        assert!(unhealthy(&alerts).is_empty());
        let r = h.get("s1").unwrap();
        assert_eq!((r.first_ms, r.recorded, r.latest.received_ms), (T0, 1, T0));
        assert!(r.conditions.is_empty());
    }

    #[test]
    fn each_condition_opens_an_alert_and_resolves_when_it_goes() {
        let (mut h, mut alerts) = (SensorHealth::default(), AlertStore::default());
        h.record(&healthy(T0), &mut alerts);
        let mut bad = healthy(T0 + 30_000);
        bad.cert_not_after_s = Some(((T0 + 10 * DAY_MS) / 1000) as i64);
        bad.capture_kernel_dropped = 5;
        bad.spool_bytes = 810_000;
        bad.clock_offset_us = Some(-3_000_000);
        bad.uplink_restarts = 1;
        assert!(h.worth_recording(&bad));
        h.record(&bad, &mut alerts);
        let mut open = unhealthy(&alerts);
        open.sort();
        let names = |v: &[(String, AlertState)]| v.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&open),
            ["capture_drops", "certificate_expiring", "clock_offset", "spool_full", "uplink_restarting"]
        );
        assert!(open.iter().all(|(_, s)| *s == AlertState::Open));
        let a = alerts.alerts().values().find(|a| a.target == "clock_offset").unwrap();
        assert_eq!(a.device, "s1");
        assert!(a.evidence.contains("-3000 ms"), "{}", a.evidence);

        // The same counters again: drops and restarts no longer rising; the rest still bad.
        let mut steady = bad.clone();
        steady.received_ms += 30_000;
        assert!(h.worth_recording(&steady), "two conditions go away");
        h.record(&steady, &mut alerts);
        let state = |alerts: &AlertStore, t: &str| unhealthy(alerts).into_iter().find(|(x, _)| x == t).unwrap().1;
        assert_eq!(state(&alerts, "capture_drops"), AlertState::Resolved);
        assert_eq!(state(&alerts, "uplink_restarting"), AlertState::Resolved);
        assert_eq!(state(&alerts, "spool_full"), AlertState::Open);

        // Healthy again: every alert resolved, none left open.
        let mut well = healthy(T0 + 90_000);
        well.capture_kernel_dropped = 5;
        well.uplink_restarts = 1;
        h.record(&well, &mut alerts);
        assert!(unhealthy(&alerts).iter().all(|(_, s)| *s == AlertState::Resolved), "{:?}", unhealthy(&alerts));
        assert!(h.get("s1").unwrap().conditions.is_empty());

        // Drops rising again reopens the alert.
        let mut again = well.clone();
        again.received_ms += 30_000;
        again.capture_interface_dropped = 1;
        h.record(&again, &mut alerts);
        assert_eq!(state(&alerts, "capture_drops"), AlertState::Open);
    }

    #[test]
    fn a_sensor_restart_resets_counters_without_an_alert() {
        let (mut h, mut alerts) = (SensorHealth::default(), AlertStore::default());
        let mut before = healthy(T0);
        before.capture_kernel_dropped = 100;
        before.uplink_restarts = 0;
        h.record(&before, &mut alerts);
        let restarted = healthy(T0 + 30_000);
        h.record(&restarted, &mut alerts);
        assert!(unhealthy(&alerts).iter().all(|(t, _)| t != "capture_drops"));
    }

    #[test]
    fn unchanged_heartbeats_are_recorded_only_every_interval() {
        let (mut h, mut alerts) = (SensorHealth::default(), AlertStore::default());
        h.record(&healthy(T0), &mut alerts);
        assert!(!h.worth_recording(&healthy(T0 + 30_000)));
        assert!(h.worth_recording(&healthy(T0 + RECORD_INTERVAL_MS)));
        let mut other_version = healthy(T0 + 30_000);
        other_version.version = "0.2.0".into();
        assert!(h.worth_recording(&other_version));
        let mut cut_off = healthy(T0 + 30_000);
        cut_off.uplink_connected = false;
        assert!(h.worth_recording(&cut_off));
        let mut offset = healthy(T0 + 30_000);
        offset.clock_offset_us = Some(CLOCK_OFFSET_BOUND_MS * 1000 + 1);
        assert!(h.worth_recording(&offset), "a condition appears");
        offset.clock_offset_us = Some(CLOCK_OFFSET_BOUND_MS * 1000);
        assert!(!h.worth_recording(&offset), "at the bound is within it");
    }

    #[test]
    fn the_certificate_check_uses_the_records_clock_and_an_expired_one_counts() {
        let mut r = healthy(T0);
        r.cert_not_after_s = Some(((T0 + 30 * DAY_MS) / 1000) as i64);
        assert!(conditions(None, &r).contains(&Condition::CertificateExpiring), "30 days is within");
        r.cert_not_after_s = Some(((T0 + 31 * DAY_MS) / 1000) as i64);
        assert!(conditions(None, &r).is_empty());
        r.cert_not_after_s = Some(((T0 - DAY_MS) / 1000) as i64);
        assert!(conditions(None, &r).contains(&Condition::CertificateExpiring));
        r.cert_not_after_s = None;
        assert!(conditions(None, &r).is_empty());
        // A spool with no bound is never full; 80 % exactly is not above.
        r.spool_max_bytes = 0;
        r.spool_bytes = u64::MAX;
        assert!(conditions(None, &r).is_empty());
        r.spool_max_bytes = 1000;
        r.spool_bytes = 800;
        assert!(conditions(None, &r).is_empty());
        r.spool_bytes = 801;
        assert_eq!(conditions(None, &r), BTreeSet::from([Condition::SpoolFull]));
    }

    #[test]
    fn recording_is_deterministic_and_bounded() {
        let run = || {
            let (mut h, mut alerts) = (SensorHealth::default(), AlertStore::default());
            for i in 0..20u64 {
                let mut r = healthy(T0 + i * 30_000);
                r.capture_kernel_dropped = i / 3;
                r.spool_bytes = (i % 7) * 150_000;
                h.record(&r, &mut alerts);
            }
            (h, alerts)
        };
        assert_eq!(run(), run());
        let mut h = SensorHealth::default();
        let mut alerts = AlertStore::default();
        for i in 0..MAX_SENSORS {
            h.sensors.insert(format!("x{i}"), SensorHealthRecord::default());
        }
        let newcomer = healthy(T0);
        assert!(!h.worth_recording(&newcomer));
        assert!(h.is_full_for(&newcomer.sensor_id));
        assert!(!h.is_full_for("x7"), "a kept sensor is still recorded");
        assert!(!h.record(&newcomer, &mut alerts));
        assert_eq!(h.refused, 1);
    }
}
