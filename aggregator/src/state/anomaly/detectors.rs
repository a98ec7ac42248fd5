//! The second set of detectors (issue 11, decision 0033): traffic spikes against a device's
//! learned volume, devices in a segment their group does not belong in, PHI in cleartext to
//! an unexpected peer, and silent sensors. Like the first set (`super`), everything is a
//! function of the applied log: batch detectors judge evidence at its capture time and the
//! silence detector runs on a time the leader proposes (`Command::SensorTick`), so every
//! node opens the same alerts.
//!
//! | kind | input | target |
//! |---|---|---|
//! | `traffic_spike` | flows per device and time bucket | `traffic` |
//! | `wrong_segment` | device observations' VLANs vs `segment_expectations` | `vlan 60` |
//! | `phi_cleartext_unexpected_peer` | HL7 flows of a device that reported PHI segments, DICOM stores | the receiver's IP |
//! | `sensor_silent` | sensors' applied-batch watermarks at each tick | `silent` (device: the sensor id) |

use super::super::alerts::{AlertKind, AlertStore, Occurrence, Severity};
use super::super::policy::GroupMembers;
use super::super::{BatchSummary, DeviceRecord, SensorRecord, VecMap};
use super::{is_global, Baselines, FlowSides};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use wardline_common::{Field, FlowRecord, MacAddr};

/// Default spike bucket: one hour of capture time.
pub const DEFAULT_SPIKE_BUCKET_US: u64 = 3_600_000_000;
/// Default spike factor: five times the largest bucket learned.
pub const DEFAULT_SPIKE_FACTOR_PERCENT: u64 = 500;
/// Default floors a bucket must also reach to be a spike (a device that learned a few
/// kilobytes an hour should not alert at fifty).
pub const DEFAULT_SPIKE_MIN_BYTES: u64 = 50_000_000;
pub const DEFAULT_SPIKE_MIN_PACKETS: u64 = 50_000;
pub const DEFAULT_SPIKE_MIN_FLOWS: u64 = 500;
/// Default time without a new batch after which a sensor that delivered before is silent.
pub const DEFAULT_SENSOR_SILENT_AFTER_MS: u64 = 15 * 60 * 1000;
/// Buckets kept per device after learning; a flow older than all of them is counted late.
pub const MAX_RECENT_BUCKETS: usize = 4;
/// DICOM bytes an initiator must send in one flow to count as carrying a dataset (a
/// C-STORE of an object with its patient module), not just an association or a C-ECHO.
pub const DICOM_DATASET_MIN_BYTES: u64 = 16 * 1024;
/// Entries kept in the configured lists (expected PHI receivers, segment expectations).
pub const MAX_CONFIG_ENTRIES: usize = 1_000;

/// Where the members of a policy group belong: at `site` (or every site), only on `vlans`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentExpectation {
    pub group: String,
    #[serde(default)]
    pub site: Option<String>,
    pub vlans: Vec<u16>,
}

/// Settings of these detectors, replicated (`Command::SetDetectorConfig`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorConfig {
    /// Width of a traffic bucket, µs of capture time.
    pub spike_bucket_us: u64,
    /// A bucket is a spike when a volume exceeds the learned maximum × this / 100 ...
    pub spike_factor_percent: u64,
    /// ... and reaches the floor of that volume.
    pub spike_min_bytes: u64,
    pub spike_min_packets: u64,
    pub spike_min_flows: u64,
    /// Receivers PHI may go to besides a sender's learned peers (interface engines, PACS).
    pub phi_expected_receivers: Vec<IpAddr>,
    /// A sensor silent this long (by the leader's clock) alerts; 0 turns the detector off.
    pub sensor_silent_after_ms: u64,
    pub segment_expectations: Vec<SegmentExpectation>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            spike_bucket_us: DEFAULT_SPIKE_BUCKET_US,
            spike_factor_percent: DEFAULT_SPIKE_FACTOR_PERCENT,
            spike_min_bytes: DEFAULT_SPIKE_MIN_BYTES,
            spike_min_packets: DEFAULT_SPIKE_MIN_PACKETS,
            spike_min_flows: DEFAULT_SPIKE_MIN_FLOWS,
            phi_expected_receivers: Vec::new(),
            sensor_silent_after_ms: DEFAULT_SENSOR_SILENT_AFTER_MS,
            segment_expectations: Vec::new(),
        }
    }
}

impl DetectorConfig {
    /// Why the settings cannot be used, for the operator.
    pub fn check(&self) -> Result<(), String> {
        if self.spike_bucket_us < 1_000_000 {
            return Err("spike_bucket_secs must be at least 1".into());
        }
        if self.spike_factor_percent < 100 {
            return Err("spike_factor_percent must be at least 100 (a spike is more than the learned maximum)".into());
        }
        if self.phi_expected_receivers.len() > MAX_CONFIG_ENTRIES
            || self.segment_expectations.len() > MAX_CONFIG_ENTRIES
        {
            return Err(format!("at most {MAX_CONFIG_ENTRIES} expected PHI receivers and segment expectations"));
        }
        if let Some(v) = self.segment_expectations.iter().flat_map(|e| &e.vlans).find(|v| **v > 4095) {
            return Err(format!("{v} is not a VLAN id (0 to 4095)"));
        }
        Ok(())
    }
}

/// Bytes, packets and flows (both directions) in one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

impl Volume {
    fn add(&mut self, other: &Volume) {
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.packets = self.packets.saturating_add(other.packets);
        self.flows = self.flows.saturating_add(other.flows);
    }

    fn max(&mut self, other: &Volume) {
        self.bytes = self.bytes.max(other.bytes);
        self.packets = self.packets.max(other.packets);
        self.flows = self.flows.max(other.flows);
    }
}

/// One device's traffic: the largest bucket it had while learning, and its latest buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficBaseline {
    /// Per volume, the largest of any bucket that started while the device learned.
    pub learned_max: Volume,
    /// Buckets with traffic while learning.
    pub learned_buckets: u32,
    /// Bucket index (start / width) → its volume and whether it alerted.
    pub recent: VecMap<u64, (Volume, bool)>,
}

/// A sensor as the silence detector last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorWatch {
    /// Its watermark at the last tick that saw it move.
    pub last_seq: u64,
    /// That tick's time (leader's clock, ms).
    pub since_ms: u64,
    pub silent: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorCounters {
    /// Flows older than every bucket a device keeps (not counted toward a spike).
    pub late_flows: u64,
    /// PHI flows to a new receiver of a sender whose peer baseline is saturated (not judged).
    pub phi_unjudged: u64,
    /// Ticks applied.
    pub ticks: u64,
}

/// The detectors' replicated part (state format 7).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Detectors {
    config: DetectorConfig,
    traffic: BTreeMap<MacAddr, TrafficBaseline>,
    sensors: BTreeMap<String, SensorWatch>,
    /// Latest tick time applied: a tick from a leader whose clock is behind never moves
    /// time back.
    last_tick_ms: u64,
    counters: DetectorCounters,
}

/// When `mac` finished learning (`None`: no baseline yet).
fn learned_at(baselines: &Baselines, mac: &MacAddr) -> Option<u64> {
    baselines.device(mac).map(|b| b.first_us.saturating_add(baselines.config().learning_us))
}

impl Detectors {
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: &DetectorConfig) {
        self.config = config.clone();
    }

    pub fn counters(&self) -> &DetectorCounters {
        &self.counters
    }

    pub fn traffic(&self, mac: &MacAddr) -> Option<&TrafficBaseline> {
        self.traffic.get(mac)
    }

    pub fn sensor(&self, id: &str) -> Option<&SensorWatch> {
        self.sensors.get(id)
    }

    /// Run the batch detectors over one applied batch (after `Baselines::detect`, whose
    /// baselines they read); occurrences in a fixed order.
    /// `sides` tells which flow sides are devices (as for `Baselines::detect`).
    pub fn detect(
        &mut self,
        batch: &BatchSummary,
        flows: &[FlowRecord],
        sides: &FlowSides,
        devices: &BTreeMap<MacAddr, Arc<DeviceRecord>>,
        baselines: &Baselines,
        membership: &[GroupMembers],
    ) -> Vec<Occurrence> {
        let mut out = Vec::new();
        self.detect_wrong_segment(batch, membership, &mut out);
        for (i, f) in flows.iter().enumerate() {
            for a_side in [true, false] {
                if sides.is_device(i, a_side) {
                    self.count_traffic(batch, f, if a_side { f.a_mac } else { f.b_mac }, baselines, &mut out);
                }
            }
            if sides.is_device(i, true) {
                self.detect_phi(batch, f, devices, baselines, &mut out);
            }
        }
        out
    }

    /// `wrong_segment`: a member of a policy group reported on a VLAN its expectation does
    /// not list (at the batch's site).
    fn detect_wrong_segment(&self, batch: &BatchSummary, membership: &[GroupMembers], out: &mut Vec<Occurrence>) {
        let expectations: Vec<&SegmentExpectation> = self
            .config
            .segment_expectations
            .iter()
            .filter(|e| e.site.as_deref().is_none_or(|s| s == batch.site))
            .collect();
        if expectations.is_empty() {
            return;
        }
        for obs in &batch.devices {
            for e in &expectations {
                let member = membership.iter().any(|g| g.group == e.group && g.members.contains(&obs.mac));
                if !member {
                    continue;
                }
                for vlan in obs.vlans.iter().filter(|v| !e.vlans.contains(v)) {
                    let expected: Vec<String> = e.vlans.iter().map(u16::to_string).collect();
                    out.push(Occurrence {
                        kind: AlertKind::WrongSegment,
                        severity: Severity::High,
                        device: obs.mac.to_string(),
                        site: batch.site.clone(),
                        target: format!("vlan {vlan}"),
                        ts_us: obs.first_seen_us,
                        evidence: format!(
                            "member of group {} seen by sensor {} on VLAN {vlan}; expected VLANs {}",
                            e.group,
                            batch.sensor_id,
                            expected.join(", ")
                        ),
                    });
                }
            }
        }
    }

    /// Add one flow to `mac`'s bucket; `traffic_spike` when the bucket (after learning)
    /// first goes over the learned maximum × factor and the floors.
    fn count_traffic(
        &mut self,
        batch: &BatchSummary,
        f: &FlowRecord,
        mac: MacAddr,
        baselines: &Baselines,
        out: &mut Vec<Occurrence>,
    ) {
        let Some(learned_at) = learned_at(baselines, &mac) else { return };
        let width = self.config.spike_bucket_us.max(1);
        let bucket = f.first_seen_us / width;
        let learning = bucket.saturating_mul(width) < learned_at;
        let volume = Volume {
            bytes: f.bytes_ab.saturating_add(f.bytes_ba),
            packets: f.packets_ab.saturating_add(f.packets_ba),
            flows: 1,
        };
        let t = self.traffic.entry(mac).or_default();
        if !t.recent.contains_key(&bucket) {
            let oldest = t.recent.keys().next().copied();
            if t.recent.len() >= MAX_RECENT_BUCKETS && oldest.is_some_and(|o| bucket < o) {
                self.counters.late_flows = self.counters.late_flows.saturating_add(1);
                return;
            }
            if learning {
                t.learned_buckets = t.learned_buckets.saturating_add(1);
            }
            t.recent.insert(bucket, (Volume::default(), false));
            while t.recent.len() > MAX_RECENT_BUCKETS {
                let first = *t.recent.keys().next().expect("not empty");
                t.recent = t.recent.iter().filter(|(k, _)| **k != first).map(|(k, v)| (*k, *v)).collect();
            }
        }
        let (current, alerted) = t.recent.get_mut(&bucket).expect("inserted above");
        current.add(&volume);
        if learning {
            t.learned_max.max(current);
            return;
        }
        if *alerted || t.learned_buckets == 0 {
            return;
        }
        let c = &self.config;
        let over = |now: u64, learned: u64, floor: u64| {
            now >= floor && u128::from(now) * 100 > u128::from(learned) * u128::from(c.spike_factor_percent)
        };
        let mut over_what = Vec::new();
        let (m, n) = (t.learned_max, *current);
        if over(n.bytes, m.bytes, c.spike_min_bytes) {
            over_what.push(format!("{} bytes (learned max {})", n.bytes, m.bytes));
        }
        if over(n.packets, m.packets, c.spike_min_packets) {
            over_what.push(format!("{} packets (learned max {})", n.packets, m.packets));
        }
        if over(n.flows, m.flows, c.spike_min_flows) {
            over_what.push(format!("{} flows (learned max {})", n.flows, m.flows));
        }
        if over_what.is_empty() {
            return;
        }
        *alerted = true;
        out.push(Occurrence {
            kind: AlertKind::TrafficSpike,
            severity: Severity::Medium,
            device: mac.to_string(),
            site: batch.site.clone(),
            target: "traffic".into(),
            ts_us: f.first_seen_us,
            evidence: format!(
                "{} in the {} s bucket from {} µs (over {}% of the learned maximum); latest flow {} {}:{} app {}",
                over_what.join(", "),
                width / 1_000_000,
                bucket.saturating_mul(width),
                c.spike_factor_percent,
                if f.a_mac == mac { "to" } else { "from" },
                if f.a_mac == mac { f.b_ip } else { f.a_ip },
                f.b_port,
                f.app
            ),
        });
    }

    /// `phi_cleartext_unexpected_peer`: a flow that carries patient data in cleartext from
    /// a device that finished learning to a receiver outside its learned peers and the
    /// configured expected receivers. PHI-bearing: HL7 from a device that reported PHI
    /// segments (`hl7_phi_segments`, counted by the sensor, never stored) by the flow's
    /// end, or a DICOM flow whose initiator sent a dataset's worth of bytes.
    fn detect_phi(
        &mut self,
        batch: &BatchSummary,
        f: &FlowRecord,
        devices: &BTreeMap<MacAddr, Arc<DeviceRecord>>,
        baselines: &Baselines,
        out: &mut Vec<Occurrence>,
    ) {
        // The initiator sends: an HL7 sender opens the MLLP connection, a DICOM SCU the
        // association that stores. Called only when the sender (side a) is a device.
        let (sender, receiver) = (f.a_mac, f.b_ip);
        let phi = match f.app.as_ref() {
            "hl7" => devices
                .get(&sender)
                .is_some_and(|d| d.entries(Field::Hl7PhiSegments).any(|(_, e)| e.first_ts_us <= f.last_seen_us)),
            "dicom" => f.bytes_ab >= DICOM_DATASET_MIN_BYTES,
            _ => false,
        };
        if !phi || self.config.phi_expected_receivers.contains(&receiver) {
            return;
        }
        let Some(b) = baselines.device(&sender) else { return };
        if f.first_seen_us < b.first_us.saturating_add(baselines.config().learning_us) || b.peers.contains(&receiver) {
            return;
        }
        if b.saturated & super::saturated::PEERS != 0 {
            self.counters.phi_unjudged = self.counters.phi_unjudged.saturating_add(1);
            return;
        }
        let where_to = if is_global(&receiver) { "an Internet host" } else { "a peer" };
        out.push(Occurrence {
            kind: AlertKind::PhiCleartextUnexpectedPeer,
            severity: Severity::High,
            device: sender.to_string(),
            site: batch.site.clone(),
            target: receiver.to_string(),
            ts_us: f.first_seen_us,
            evidence: format!(
                "{} with patient data in cleartext to {where_to} outside its baseline: {receiver} tcp/{} ({} bytes sent)",
                f.app, f.b_port, f.bytes_ab
            ),
        });
    }

    /// Whether a tick at `now_ms` would change anything (the leader proposes only then).
    pub fn tick_would_change(&self, now_ms: u64, sensors: &BTreeMap<String, SensorRecord>) -> bool {
        let now_ms = now_ms.max(self.last_tick_ms);
        sensors.iter().any(|(id, s)| match self.sensors.get(id) {
            None => true,
            Some(w) => {
                w.last_seq != s.last_seq
                    || (!w.silent
                        && self.config.sensor_silent_after_ms > 0
                        && now_ms.saturating_sub(w.since_ms) >= self.config.sensor_silent_after_ms)
            }
        })
    }

    /// `sensor_silent`: at the leader's tick, a sensor whose watermark has not moved for
    /// `sensor_silent_after_ms` opens an alert (device: the sensor id); one that moved
    /// since resolves it.
    pub fn tick(&mut self, now_ms: u64, sensors: &BTreeMap<String, SensorRecord>, alerts: &mut AlertStore) {
        let now_ms = now_ms.max(self.last_tick_ms);
        self.last_tick_ms = now_ms;
        self.counters.ticks = self.counters.ticks.saturating_add(1);
        let after = self.config.sensor_silent_after_ms;
        for (id, s) in sensors {
            let w = self.sensors.entry(id.clone()).or_insert_with(|| SensorWatch {
                last_seq: s.last_seq,
                since_ms: now_ms,
                silent: false,
            });
            if w.last_seq != s.last_seq {
                w.last_seq = s.last_seq;
                w.since_ms = now_ms;
                if w.silent {
                    w.silent = false;
                    let note = format!("sensor {id} delivered again (batch {})", s.last_seq);
                    alerts.resolve_data(id, AlertKind::SensorSilent, "silent", now_ms, &note);
                }
                continue;
            }
            if w.silent || after == 0 || now_ms.saturating_sub(w.since_ms) < after {
                continue;
            }
            w.silent = true;
            alerts.occur(&Occurrence {
                kind: AlertKind::SensorSilent,
                severity: Severity::High,
                device: id.clone(),
                site: s.site.clone(),
                target: "silent".into(),
                ts_us: now_ms.saturating_mul(1000),
                evidence: format!(
                    "no batch from sensor {id} (site {}) for {} s; its last was batch {} (data time {} µs)",
                    s.site,
                    now_ms.saturating_sub(w.since_ms) / 1000,
                    s.last_seq,
                    s.last_packet_us
                ),
            });
        }
    }
}
