//! The replicated state of an aggregator cluster: the merged device inventory and each
//! sensor's applied-batch watermark.
//!
//! Every node applies the same Raft log to a `ClusterState`, so `apply` must be
//! deterministic: no wall clock, randomness or I/O, and only ordered collections
//! (`BTreeMap`/`BTreeSet`) so iteration and serialization are identical on every node.
//!
//! Exactly-once effect: a sensor ships each batch with a ULID and a per-sensor sequence
//! number and resends until acknowledged. `apply` refuses a batch whose `seq` is at or
//! below the sensor's watermark, or whose id is among that sensor's recent ids, so a
//! re-sent batch changes nothing.
//!
//! Devices are keyed by MAC (seen on a sensor's own segment) or by (site, IP, VLAN) (seen
//! only through a router or on a link without MACs, `hosts`). Per (site, IP) a timeline of
//! owners built from ARP, DHCP and NDP bindings (`bindings`) attributes each piece of an
//! IP-keyed device to the MAC that owned the address at that piece's time; see
//! `hosts` and `bindings` and decision 0013.

mod addresses;
pub mod alerts;
pub mod anomaly;
pub mod audit;
mod bindings;
pub mod epochs;
pub mod home;
mod hosts;
pub mod identity;
mod ips;
pub mod policy;
pub mod revocations;
pub mod risk_history;
pub mod sensor_health;
pub mod spool_losses;
pub mod tags;
pub mod tokens;
mod vecmap;
pub mod vulnfeeds;

pub use bindings::{AddressTimeline, BindingSpan, MAX_SPANS_PER_ADDRESS};
pub use hosts::{
    HostKey, HostRecord, RoutedKey, RoutedSeen, MAX_ROUTED_SIGHTINGS, ROUTED_RUN_GAP_US, ROUTED_STRETCH_GAP_US,
};
pub use ips::IpTable;
pub use vecmap::{VecMap, VecSet};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use ulid::Ulid;
use wardline_common::wire::{AddressBinding, HostObservation};
use wardline_common::{Batch, DeviceObservation, Event, Field, FlowRecord, MacAddr, Proto, SensorStats};

/// Version of the serialized state (snapshots). A snapshot of an older format this build
/// still reads ([`OLDEST_STATE_FORMAT`]..) is migrated as it loads (the parts it lacks start
/// empty), so a node of a newer version can join a cluster of an older one and install its
/// snapshots; any other format is refused with a message naming both, instead of being
/// mis-decoded. The value is far above any device count, which is what the first number of
/// a pre-versioned state was.
pub const STATE_FORMAT: u32 = 0x574c_000b;
/// The oldest state format this build migrates: 3, before alerts and anomaly baselines.
pub const OLDEST_STATE_FORMAT: u32 = 0x574c_0003;
/// (sensor, segment) sightings kept per MAC device; beyond this they are counted in
/// `segments_dropped`.
pub const MAX_SEGMENTS_PER_DEVICE: usize = 32;

/// Distinct `(field, value)` evidence entries kept per device; beyond this new facts are
/// counted in `evidence_dropped` so one chatty or hostile device cannot grow the
/// replicated state without bound.
pub const MAX_EVIDENCE_PER_DEVICE: usize = 512;
/// Distinct IP addresses kept per device (a router's MAC can front thousands of
/// addresses); beyond this they are counted in `ips_dropped`.
pub const MAX_IPS_PER_DEVICE: usize = 256;
/// How many recent batch ids per sensor are remembered for duplicate detection in
/// addition to the sequence watermark.
pub const RECENT_BATCH_IDS: usize = 32;

/// A command replicated through the Raft log.
///
/// Append-only: bincode encodes a variant by its position, so a new command goes at the end
/// and an existing one never changes its fields; a newer node then reads every entry an
/// older one wrote (the upgrade rule in docs/operations.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    ApplyBatch(BatchSummary),
    /// Store an API token (hash only); refused if its name or id is taken (decision 0015).
    CreateToken(tokens::TokenRecord),
    /// Revoke an API token by id or name.
    RevokeToken(String),
    /// Append to the audit log.
    Audit(audit::AuditEntry),
    /// The first entry of a cluster: its id (a ULID), recorded by the Raft state machine
    /// (`raft::state_machine`); the inventory itself ignores it.
    InitCluster {
        cluster_id: String,
    },
    /// Several batches committed as one entry (group commit, decision 0016), applied in
    /// order with the same duplicate rule as `ApplyBatch`; each applied batch's flows join
    /// the replicated flow outbox.
    ApplyBatches(Vec<IngestBatch>),
    /// The leader wrote every outbox entry up to and including `through` to the flow sink;
    /// they leave the outbox on every node, so a new leader resumes after them.
    FlowsDrained {
        through: u64,
    },
    /// An operator's triage of one alert (acknowledge, resolve, suppress; decision 0024).
    AlertTriage(alerts::Triage),
    /// Add a suppression rule (its id is assigned on apply).
    AddSuppressionRule(alerts::SuppressionRule),
    /// Delete a suppression rule by id.
    RemoveSuppressionRule {
        id: u64,
    },
    /// The leader's SIEM forwarder sent every alert event through `through`.
    AlertsForwarded {
        through: u64,
    },
    /// Replace the anomaly detectors' settings (learning period, clinical VLANs).
    SetAnomalyConfig(anomaly::AnomalyConfig),
    /// A change and its audit entry in one log entry, so no leader change can separate them:
    /// the entry is appended with outcome `ok` when the command applied, else `not applied`
    /// (status 409).
    Audited {
        entry: audit::AuditEntry,
        command: Box<Command>,
    },
    /// A new segmentation policy version becomes active (apply or rollback; decision 0025).
    PolicyVersion(policy::PolicyProposal),
    /// Fresh group membership for the active policy version.
    PolicyMembership(policy::MembershipUpdate),
    /// Add a rule to the policy draft area.
    PolicyAddDraft(policy::DraftRule),
    /// Delete a draft rule by id.
    PolicyRemoveDraft {
        id: u64,
    },
    /// Triage "add to policy": resolve a policy-violation alert and add its draft rule, both
    /// or neither.
    PolicyViolationToDraft {
        triage: alerts::Triage,
        draft: policy::DraftRule,
    },
    /// One part of a vulnerability feed import (decision 0027): advisories replace older
    /// revisions, a KEV catalog replaces the held one.
    ImportVulnFeed(vulnfeeds::FeedImport),
    /// Revoke a sensor (every certificate) or one of its certificates (issue 13).
    RevokeSensor(revocations::Revocation),
    /// Lift a revocation.
    LiftRevocation {
        sensor_id: String,
        serial: Option<String>,
    },
    /// Replace the second detectors' settings (traffic spikes, segment expectations, PHI
    /// receivers, sensor silence; decision 0033).
    SetDetectorConfig(anomaly::detectors::DetectorConfig),
    /// The leader's periodic tick (its clock, ms): sensors whose watermark has not moved for
    /// the configured time raise `sensor_silent`, ones that delivered again resolve it.
    SensorTick {
        now_ms: u64,
    },
    /// Replace a device's operator tags (an empty list removes them; issue 12).
    SetDeviceTags {
        mac: MacAddr,
        tags: Vec<String>,
    },
    /// A sensor's heartbeat as the leader received it (decision 0038): its latest health,
    /// and `sensor_unhealthy` alerts opened or resolved. Proposed only once every member
    /// runs a version that knows it (`RaftNode::cluster_supports`).
    SensorHeartbeat(sensor_health::HeartbeatRecord),
    /// `ApplyBatches` for a group in which some batches carry their sensor's spool report
    /// (what the spool gave up; decision 0045): each report is kept when its batch is
    /// applied. Proposed only for such groups, and only once every member supports
    /// `spool_losses` (`RaftNode::cluster_supports`).
    ApplyReportedBatches {
        batches: Vec<IngestBatch>,
        reports: Vec<BatchSpoolReport>,
    },
    /// Batches that name their sensor's spool epoch (decision 0036), applied in order like
    /// `ApplyBatches`, each judged against its sensor's epochs first: a new epoch restarts the
    /// watermark, a retired epoch's batch is a duplicate or refused. A batch jumping more than
    /// `max_seq_jump` (the proposing node's configuration) past its watermark is
    /// refused. Proposed only for sensors whose epoch the cluster records (first seen with
    /// one, or changed), so a cluster of older nodes never receives it from an unchanged
    /// fleet (the upgrade rule in docs/operations.md).
    ApplyEpochBatches {
        max_seq_jump: u64,
        batches: Vec<EpochBatch>,
    },
    /// Device scores that moved and site roll-ups that changed, from the leader's risk
    /// recorder (decision 0043).
    RecordRiskHistory(risk_history::RiskRecord),
}

/// The spool report batch `index` of an `ApplyReportedBatches` group carried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchSpoolReport {
    pub index: u32,
    pub report: wardline_common::wire::SpoolReport,
}

/// One batch of `Command::ApplyEpochBatches`: the batch and the spool epoch it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochBatch {
    pub epoch: Ulid,
    pub batch: IngestBatch,
    /// The spool report the batch carried when it reports a loss or roll-up (decision 0045),
    /// kept in the state when the batch is applied.
    pub report: Option<wardline_common::wire::SpoolReport>,
}

/// One batch as group commit proposes it: the summary plus its flow records, which wait in
/// the replicated outbox until the leader has written them to the flow sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestBatch {
    pub summary: BatchSummary,
    pub flows: Vec<FlowRecord>,
}

/// The flows of one applied batch, waiting in the outbox (decision 0016).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub batch_id: Ulid,
    /// The batch's sequence number (for logs and fault tests).
    pub seq: u64,
    pub sensor_id: String,
    pub site: String,
    pub flows: Vec<FlowRecord>,
}

/// Estimated bytes one flow occupies in the outbox (in memory and in snapshots); the
/// estimate, not an allocator measurement, so every node computes the same size.
pub const OUTBOX_BYTES_PER_FLOW: u64 = 160;

impl OutboxEntry {
    /// Estimated size, deterministic so every node agrees.
    pub fn estimated_bytes(&self) -> u64 {
        outbox_bytes_of(&self.flows)
    }
}

/// Estimated outbox bytes of `flows` (see [`OUTBOX_BYTES_PER_FLOW`]).
pub fn outbox_bytes_of(flows: &[FlowRecord]) -> u64 {
    flows.iter().map(|f| OUTBOX_BYTES_PER_FLOW + f.app.len() as u64 + f.end_reason.len() as u64).sum::<u64>() + 64
}

/// The replicated outbox of flow rows not yet written to the flow sink. Entries are
/// numbered in apply order; `FlowsDrained` removes a prefix.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowOutbox {
    /// Number the next entry gets (starts at 1, so `through: 0` drains nothing).
    pub next: u64,
    pub entries: BTreeMap<u64, Arc<OutboxEntry>>,
    /// Sum of `estimated_bytes` of `entries`.
    pub bytes: u64,
    /// Rows in `entries`.
    pub rows: u64,
}

impl FlowOutbox {
    fn push(&mut self, entry: OutboxEntry) {
        self.next = self.next.max(1);
        self.bytes = self.bytes.saturating_add(entry.estimated_bytes());
        self.rows = self.rows.saturating_add(entry.flows.len() as u64);
        self.entries.insert(self.next, Arc::new(entry));
        self.next += 1;
    }

    fn drain_through(&mut self, through: u64) {
        while let Some(first) = self.entries.first_key_value().map(|(k, _)| *k) {
            if first > through {
                break;
            }
            if let Some(e) = self.entries.remove(&first) {
                self.bytes = self.bytes.saturating_sub(e.estimated_bytes());
                self.rows = self.rows.saturating_sub(e.flows.len() as u64);
            }
        }
    }
}

/// What the state machine needs from one sensor batch: the device observations in full,
/// the flows only as totals (flow detail goes to the flow sink, not through Raft).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    pub batch_id: Ulid,
    pub sensor_id: String,
    pub site: String,
    pub seq: u64,
    pub devices: Vec<DeviceObservation>,
    /// Hosts the sensor knows only by address at its site.
    pub hosts: Vec<HostObservation>,
    /// MAC–IP bindings the sensor saw announced.
    pub bindings: Vec<AddressBinding>,
    pub flow_count: u64,
    pub flow_packets: u64,
    pub flow_bytes: u64,
    /// The last stats event of the batch, if it carried one.
    pub stats: Option<SensorStats>,
}

impl BatchSummary {
    /// Summarize a wire batch: keep device observations, total the flows, keep the latest
    /// stats event.
    /// A summary of a batch with no events yet.
    pub fn empty(batch_id: Ulid, sensor_id: String, site: String, seq: u64) -> Self {
        BatchSummary {
            batch_id,
            sensor_id,
            site,
            seq,
            devices: Vec::new(),
            hosts: Vec::new(),
            bindings: Vec::new(),
            flow_count: 0,
            flow_packets: 0,
            flow_bytes: 0,
            stats: None,
        }
    }

    pub fn from_batch(batch: &Batch) -> Self {
        let mut summary = BatchSummary::empty(batch.id, batch.sensor_id.clone(), batch.site.clone(), batch.seq);
        for event in &batch.events {
            match event {
                Event::Device(d) => summary.devices.push(d.clone()),
                Event::Flow(f) => {
                    summary.flow_count += 1;
                    summary.flow_packets =
                        summary.flow_packets.saturating_add(f.packets_ab.saturating_add(f.packets_ba));
                    summary.flow_bytes = summary.flow_bytes.saturating_add(f.bytes_ab.saturating_add(f.bytes_ba));
                }
                Event::Stats(s) => summary.stats = Some(s.clone()),
                Event::Host(h) => summary.hosts.push(h.clone()),
                Event::Binding(b) => summary.bindings.push(b.clone()),
                // Not replicated state (yet): ingest logs it; the sensor's Stats event carries
                // the evicted-batch total in `batches_dropped` (decision 0022).
                Event::SpoolReport(_) => {}
            }
        }
        summary
    }
}

/// The state machine's answer to one command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// False when the batch was a duplicate (already applied) and changed nothing.
    pub applied: bool,
    /// For `ApplyBatches`: whether each batch was applied (false: a duplicate), in order.
    #[serde(default)]
    pub batches: Vec<bool>,
    /// The batches of a group that were refused rather than found applied, with the reason.
    #[serde(default)]
    pub refused: Vec<BatchRefusal>,
}

/// A batch of a group the state refused (not applied, not a duplicate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRefusal {
    /// Its position in the group.
    pub index: u32,
    /// True when a re-send may be taken (the batch's epoch was not known to the proposing
    /// node); false when it is refused for good.
    pub retry: bool,
    pub reason: String,
}

/// What ingest should do with one arriving batch ([`ClusterState::ingest_verdict`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestVerdict {
    /// Already applied (or of a retired epoch at or below where it ended): acknowledge.
    Duplicate,
    /// Propose it; `with_epoch`: in `Command::ApplyEpochBatches` (its sensor's epoch is or
    /// becomes recorded), else in `Command::ApplyBatches`.
    Propose { with_epoch: bool, begins_epoch: bool },
    /// Refuse it for good, with the reason.
    Refuse(String),
}

/// The spool epoch a wire batch names: that of its (last) `SpoolReport`, which every batch of
/// a sensor since decision 0036 carries.
pub fn batch_epoch(batch: &Batch) -> Option<Ulid> {
    batch.events.iter().rev().find_map(|e| match e {
        Event::SpoolReport(r) => Some(r.spool_epoch),
        _ => None,
    })
}

impl ApplyResponse {
    /// The answer of a command that is not a batch group.
    pub fn done(applied: bool) -> Self {
        ApplyResponse { applied, batches: Vec::new(), refused: Vec::new() }
    }
}

/// When an IP address was seen in use by a device (packet time, µs since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpSeen {
    pub first_seen_us: u64,
    pub last_seen_us: u64,
}

/// One distinct `(field, value)` fact about a device, merged over all its sightings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    /// Protocol of the most recent sighting.
    pub proto: Proto,
    pub first_ts_us: u64,
    pub last_ts_us: u64,
    /// How many observations reported it (each sensor report counts once).
    pub count: u64,
}

impl EvidenceRecord {
    /// Fold another record of the same fact into this one.
    pub fn absorb(&mut self, other: &EvidenceRecord) {
        self.count = self.count.saturating_add(other.count);
        self.first_ts_us = self.first_ts_us.min(other.first_ts_us);
        if other.last_ts_us >= self.last_ts_us {
            self.last_ts_us = other.last_ts_us;
            self.proto = other.proto;
        }
    }
}

/// A sensor and the segment (VLAN, `None` untagged) it saw a device on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SegmentKey {
    pub sensor: String,
    pub vlan: Option<u16>,
}

/// First and last packet time of a device on one sensor's segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSeen {
    pub site_index: u32,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
}

/// Everything the cluster knows about one MAC address, merged from every sensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub mac: MacAddr,
    pub ips: IpTable,
    pub ips_dropped: u64,
    pub vlans: VecSet<u16>,
    pub sites: VecSet<String>,
    pub sensors: VecSet<String>,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Serialized as a list because JSON map keys must be strings.
    #[serde(with = "evidence_as_list")]
    pub evidence: VecMap<(Field, String), EvidenceRecord>,
    pub evidence_dropped: u64,
    /// Where the device was seen on a sensor's own segment (Device events), per sensor
    /// and VLAN. `SegmentSeen::site_index` indexes `ClusterState::site_names`.
    pub segments: VecMap<SegmentKey, SegmentSeen>,
    pub segments_dropped: u64,
}

impl DeviceRecord {
    pub fn new(mac: MacAddr) -> Self {
        DeviceRecord {
            mac,
            ips: IpTable::new(),
            ips_dropped: 0,
            vlans: VecSet::new(),
            sites: VecSet::new(),
            sensors: VecSet::new(),
            first_seen_us: 0,
            last_seen_us: 0,
            packets: 0,
            bytes: 0,
            evidence: VecMap::new(),
            evidence_dropped: 0,
            segments: VecMap::new(),
            segments_dropped: 0,
        }
    }

    /// The most recently seen hostname (ties go to the greatest value, deterministically).
    pub fn hostname(&self) -> Option<&str> {
        self.latest(Field::Hostname)
    }

    /// The most recently seen value of `field`.
    pub fn latest(&self, field: Field) -> Option<&str> {
        self.entries(field).max_by_key(|(_, rec)| rec.last_ts_us).map(|(value, _)| value)
    }

    /// Every distinct value seen for `field`, in sorted order.
    pub fn values(&self, field: Field) -> Vec<&str> {
        self.entries(field).map(|(value, _)| value).collect()
    }

    /// Every `(value, record)` for `field`, in sorted value order.
    pub fn entries(&self, field: Field) -> impl Iterator<Item = (&str, &EvidenceRecord)> {
        self.evidence
            .iter_from(&(field, String::new()))
            .take_while(move |((f, _), _)| *f == field)
            .map(|((_, value), rec)| (value.as_str(), rec))
    }

    /// Note a report from `sensor_id` at `site` covering `first..=last`.
    fn seen(&mut self, sensor_id: &str, site: &str, first_seen_us: u64, last_seen_us: u64) {
        let first_sighting = self.sensors.is_empty();
        if !self.sensors.contains(sensor_id) {
            self.sensors.insert(sensor_id.to_string());
        }
        if !self.sites.contains(site) {
            self.sites.insert(site.to_string());
        }
        if first_sighting || first_seen_us < self.first_seen_us {
            self.first_seen_us = first_seen_us;
        }
        self.last_seen_us = self.last_seen_us.max(last_seen_us);
    }

    /// Record `ip` in use over `first..=last`; returns whether it is new to the device.
    fn use_ip(&mut self, ip: IpAddr, first_seen_us: u64, last_seen_us: u64) -> bool {
        self.ips.see(ip, first_seen_us, last_seen_us, MAX_IPS_PER_DEVICE).unwrap_or_else(|| {
            self.ips_dropped = self.ips_dropped.saturating_add(1);
            false
        })
    }

    fn seen_on_segment(&mut self, key: SegmentKey, site_index: u32, first_seen_us: u64, last_seen_us: u64) {
        let full = self.segments.len() >= MAX_SEGMENTS_PER_DEVICE;
        match self.segments.get_mut(&key) {
            Some(seg) => {
                seg.first_seen_us = seg.first_seen_us.min(first_seen_us);
                seg.last_seen_us = seg.last_seen_us.max(last_seen_us);
                seg.site_index = site_index;
            }
            None if full => self.segments_dropped = self.segments_dropped.saturating_add(1),
            None => {
                self.segments.insert(key, SegmentSeen { site_index, first_seen_us, last_seen_us });
            }
        }
    }

    /// The VLAN of the segment `sensor_id` reported this device on most recently (the
    /// latest last packet; the higher VLAN on a tie), if any.
    fn latest_segment_of(&self, sensor_id: &str) -> Option<Option<u16>> {
        self.segments
            .iter()
            .filter(|(k, _)| k.sensor == sensor_id)
            .max_by_key(|(k, seen)| (seen.last_seen_us, k.vlan))
            .map(|(k, _)| k.vlan)
    }

    /// Merge one observation; returns the addresses recorded for the first time. Evidence
    /// entry `i` is left out where `withheld[i]` (another site's sensor contradicting the
    /// device's home site, decision 0037).
    fn merge(
        &mut self,
        obs: &DeviceObservation,
        sensor_id: &str,
        site: &str,
        site_index: u32,
        withheld: &[bool],
    ) -> Vec<IpAddr> {
        let mut new_ips = Vec::new();
        self.seen(sensor_id, site, obs.first_seen_us, obs.last_seen_us);
        self.vlans.extend(obs.vlans.iter().copied());
        // An observation lists only the VLANs new since the sensor's previous report: no
        // VLAN means the packets were on a segment already reported (the one reported
        // last), and untagged only if the sensor never reported one.
        let vlans: Vec<Option<u16>> = if obs.vlans.is_empty() {
            vec![self.latest_segment_of(sensor_id).unwrap_or(None)]
        } else {
            obs.vlans.iter().copied().map(Some).collect()
        };
        for vlan in vlans {
            let key = SegmentKey { sensor: sensor_id.to_string(), vlan };
            self.seen_on_segment(key, site_index, obs.first_seen_us, obs.last_seen_us);
        }
        // Observations carry the counts since the sensor's previous report.
        self.packets = self.packets.saturating_add(obs.packets);
        self.bytes = self.bytes.saturating_add(obs.bytes);

        for ip in &obs.ips {
            // 0.0.0.0 / :: are "no address yet" (DHCP discover), not an address in use.
            if ip.is_unspecified() {
                continue;
            }
            if self.use_ip(*ip, obs.first_seen_us, obs.last_seen_us) {
                new_ips.push(*ip);
            }
        }

        for (i, ev) in obs.evidence.iter().enumerate() {
            if withheld.get(i).copied().unwrap_or(false) {
                continue;
            }
            let key = (ev.field, ev.value.clone());
            let full = self.evidence.len() >= MAX_EVIDENCE_PER_DEVICE;
            match self.evidence.get_mut(&key) {
                Some(rec) => {
                    rec.count = rec.count.saturating_add(1);
                    rec.first_ts_us = rec.first_ts_us.min(ev.ts_us);
                    if ev.ts_us >= rec.last_ts_us {
                        rec.last_ts_us = ev.ts_us;
                        rec.proto = ev.proto;
                    }
                }
                None if full => {
                    self.evidence_dropped = self.evidence_dropped.saturating_add(1);
                }
                None => {
                    self.evidence.insert(
                        key,
                        EvidenceRecord { proto: ev.proto, first_ts_us: ev.ts_us, last_ts_us: ev.ts_us, count: 1 },
                    );
                }
            }
        }
        new_ips
    }
}

/// What the cluster knows about one sensor, including its dedup watermark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensorRecord {
    /// Site named by the sensor's latest applied batch.
    pub site: String,
    /// Watermark: the highest sequence number applied. A batch at or below it is a duplicate.
    pub last_seq: u64,
    pub last_batch_id: Ulid,
    /// Ids of the last `RECENT_BATCH_IDS` applied batches, oldest first.
    pub recent_batch_ids: VecDeque<Ulid>,
    pub batches_applied: u64,
    /// How many times the sequence jumped forward by more than one (the sensor dropped
    /// batches, e.g. low-priority flow detail when its spool was full).
    pub seq_gaps: u64,
    /// How many sequence numbers those jumps skipped in total.
    pub seqs_skipped: u64,
    pub flows: u64,
    pub flow_packets: u64,
    pub flow_bytes: u64,
    /// The sensor's latest self-reported counters.
    pub stats: SensorStats,
    /// Latest packet time in any device, host or binding the sensor reported: the read
    /// side's "now" for this sensor when it decides whether a device has disconnected.
    pub last_packet_us: u64,
    /// Host observations refused (unspecified, multicast or broadcast address).
    pub hosts_refused: u64,
    /// Bindings refused (a MAC that cannot name a device, or an address that cannot be one).
    pub bindings_refused: u64,
}

/// A device as the API names it: by MAC, or by (site, IP, VLAN).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceId {
    Mac(MacAddr),
    Host(HostKey),
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceId::Mac(mac) => mac.fmt(f),
            DeviceId::Host(key) => key.fmt(f),
        }
    }
}

impl std::str::FromStr for DeviceId {
    type Err = String;

    /// `aa:bb:cc:dd:ee:ff`, `site:ip` or `site:ip@vlan` (the site is everything before the
    /// first `:`, so a site name must not contain one).
    fn from_str(text: &str) -> Result<Self, String> {
        let mac_error = match text.parse::<MacAddr>() {
            Ok(mac) => return Ok(DeviceId::Mac(mac)),
            Err(e) => e,
        };
        let usage = format!(
            "a device id is a MAC (00:1a:2b:3c:4d:5e; as a MAC: {mac_error}), site:ip (north:10.9.0.5) or \
             site:ip@vlan (north:10.9.0.5@40)"
        );
        let (site, rest) = text.split_once(':').ok_or_else(|| format!("{text:?} is not a device id; {usage}"))?;
        let (ip_text, vlan) = match rest.rsplit_once('@') {
            Some((ip, vlan)) => {
                let vlan = vlan
                    .parse::<u16>()
                    .ok()
                    .filter(|v| *v < 4096)
                    .ok_or_else(|| format!("{vlan:?} in {text:?} is not a VLAN id (0..=4095); {usage}"))?;
                (ip, Some(vlan))
            }
            None => (rest, None),
        };
        let ip =
            ip_text.parse::<IpAddr>().map_err(|_| format!("{ip_text:?} in {text:?} is not an IP address; {usage}"))?;
        if site.is_empty() {
            return Err(format!("{text:?} names no site; {usage}"));
        }
        Ok(DeviceId::Host(HostKey { site: site.to_string(), ip, vlan }))
    }
}

/// The whole replicated state. Cloned and serialized for Raft snapshots.
///
/// Device and host records sit behind `Arc`s and `apply` changes them copy-on-write
/// (`Arc::make_mut`): a reader copies the `Arc`s it needs under the state lock and does its
/// work after releasing it, and a record a reader still holds is copied, not mutated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    devices: BTreeMap<MacAddr, Arc<DeviceRecord>>,
    sensors: BTreeMap<String, SensorRecord>,
    /// IP-keyed devices (hosts seen without their own MAC).
    hosts: BTreeMap<HostKey, Arc<HostRecord>>,
    /// Every site named by a batch, in first-seen order; indexes are stable.
    site_names: Vec<String>,
    /// Derived (rebuilt on load), not serialized:
    /// site name → index in `site_names`.
    site_index: BTreeMap<String, u32>,
    /// Per address: every MAC of `devices[MAC].ips` using it (derived, so a device is found
    /// by address without scanning every record) and per site index who owned it when
    /// (replicated, serialized as `bindings`).
    addresses: addresses::Addresses,
    /// (owner MAC, host) for every host record with a piece attributed to that MAC.
    attributed: BTreeSet<(MacAddr, HostKey)>,
    /// Strong identifiers (decision 0013) → the MAC devices holding them.
    identifiers: BTreeMap<(Field, String), BTreeSet<MacAddr>>,
    tokens: tokens::TokenStore,
    audit: audit::AuditLog,
    /// Flow rows of applied batches not yet in the flow sink (decision 0016).
    outbox: FlowOutbox,
    /// Alerts, suppression rules and the SIEM event queue (decision 0024).
    alerts: alerts::AlertStore,
    /// The anomaly detectors' settings and per-device baselines.
    baselines: anomaly::Baselines,
    /// Segmentation policy versions, drafts and monitor-mode counters (decision 0025).
    policy: policy::PolicyStore,
    /// Imported vulnerability feeds (decision 0027).
    vulnfeeds: vulnfeeds::VulnFeeds,
    /// Revoked sensors and sensor certificates.
    revocations: revocations::Revocations,
    /// Who joined and left the active policy's groups, when and why (decision 0031).
    group_history: policy::GroupHistory,
    /// Traffic, segment, PHI and sensor-silence detectors (decision 0033).
    detectors: anomaly::detectors::Detectors,
    /// Operators' tags on devices, for group conditions.
    device_tags: tags::DeviceTags,
    /// Every sensor's latest heartbeat and raised health conditions (decision 0038).
    sensor_health: sensor_health::SensorHealth,
    /// What each sensor's spool gave up (decision 0045).
    spool_losses: spool_losses::SpoolLosses,
    /// Sensors' spool epochs (decision 0036).
    epochs: epochs::SensorEpochs,
    /// MAC devices' home sites and foreign sightings (decision 0037).
    homes: home::DeviceHomes,
    /// Device and site risk over time (decision 0043).
    risk_history: risk_history::RiskHistoryStore,
}

/// A serialized `ClusterState`; the derived indexes are rebuilt from it. Parts are only ever
/// added at the end, each with the format that introduced it. The derived decoding reads
/// parts by name (JSON), where a part a format lacks defaults; bincode reads them in order
/// through [`VersionedParts`].
#[derive(Deserialize)]
struct ReplicatedParts {
    format: u32,
    #[serde(with = "arc_values_as_list")]
    devices: BTreeMap<MacAddr, Arc<DeviceRecord>>,
    sensors: BTreeMap<String, SensorRecord>,
    #[serde(with = "arc_values_as_list")]
    hosts: BTreeMap<HostKey, Arc<HostRecord>>,
    #[serde(with = "map_as_list")]
    bindings: BTreeMap<(u32, IpAddr), AddressTimeline>,
    site_names: Vec<String>,
    tokens: tokens::TokenStore,
    audit: audit::AuditLog,
    outbox: FlowOutbox,
    #[serde(default)]
    alerts: alerts::AlertStore,
    #[serde(default)]
    baselines: anomaly::Baselines,
    #[serde(default)]
    policy: policy::PolicyStore,
    #[serde(default)]
    vulnfeeds: vulnfeeds::VulnFeeds,
    #[serde(default)]
    revocations: revocations::Revocations,
    #[serde(default)]
    group_history: policy::GroupHistory,
    #[serde(default)]
    detectors: anomaly::detectors::Detectors,
    #[serde(default)]
    device_tags: tags::DeviceTags,
    #[serde(default)]
    sensor_health: sensor_health::SensorHealth,
    #[serde(default)]
    spool_losses: spool_losses::SpoolLosses,
    #[serde(default)]
    epochs: epochs::SensorEpochs,
    #[serde(default)]
    homes: home::DeviceHomes,
    #[serde(default)]
    risk_history: risk_history::RiskHistoryStore,
}

/// The format number at the head of a serialized state; decoding stops at once (with a
/// message for the operator) when it is not this build's.
#[derive(Clone, Copy)]
struct StateFormat;

impl Serialize for StateFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(STATE_FORMAT)
    }
}

/// Refuse a state format this build does not read, naming both.
fn check_format<E: serde::de::Error>(format: u32) -> Result<(), E> {
    if (OLDEST_STATE_FORMAT..=STATE_FORMAT).contains(&format) {
        return Ok(());
    }
    Err(E::custom(format!(
        "the replicated state is in format {format:#x}; this build reads formats \
         {OLDEST_STATE_FORMAT:#x} to {STATE_FORMAT:#x}: a snapshot from a newer Wardline \
         version (upgrade this node) or from one older than the upgrade rules allow \
         (upgrade every node, then empty this node's data directory and rejoin)"
    )))
}

/// The next part of a serialized state if `format` has it (it was added in `since`), else an
/// empty one: how a newer build reads an older snapshot.
fn part_since<'de, A, T>(seq: &mut A, format: u32, since: u32, what: &str) -> Result<T, A::Error>
where
    A: serde::de::SeqAccess<'de>,
    T: Deserialize<'de> + Default,
{
    if format < since {
        return Ok(T::default());
    }
    seq.next_element()?.ok_or_else(|| serde::de::Error::custom(format!("truncated cluster state: no {what}")))
}

/// [`ReplicatedParts`] of any format this build reads, checked before anything else.
struct VersionedParts(ReplicatedParts);

impl<'de> Deserialize<'de> for VersionedParts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const FIELDS: &[&str] = &[
            "format",
            "devices",
            "sensors",
            "hosts",
            "bindings",
            "site_names",
            "tokens",
            "audit",
            "outbox",
            "alerts",
            "baselines",
            "policy",
            "vulnfeeds",
            "revocations",
            "group_history",
            "detectors",
            "device_tags",
            "sensor_health",
            "spool_losses",
            "epochs",
            "homes",
            "risk_history",
        ];
        struct PartsVisitor;
        impl<'de> serde::de::Visitor<'de> for PartsVisitor {
            type Value = ReplicatedParts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a serialized Wardline cluster state")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ReplicatedParts, A::Error> {
                use serde::de::Error;
                let missing = |what: &str| A::Error::custom(format!("truncated cluster state: no {what}"));
                let format: u32 = seq.next_element()?.ok_or_else(|| missing("format"))?;
                check_format::<A::Error>(format)?;
                #[derive(Deserialize)]
                struct Devices(#[serde(with = "arc_values_as_list")] BTreeMap<MacAddr, Arc<DeviceRecord>>);
                #[derive(Deserialize)]
                struct Hosts(#[serde(with = "arc_values_as_list")] BTreeMap<HostKey, Arc<HostRecord>>);
                let devices: Devices = seq.next_element()?.ok_or_else(|| missing("devices"))?;
                let sensors = seq.next_element()?.ok_or_else(|| missing("sensors"))?;
                let hosts: Hosts = seq.next_element()?.ok_or_else(|| missing("hosts"))?;
                #[derive(Deserialize)]
                struct Bindings(#[serde(with = "map_as_list")] BTreeMap<(u32, IpAddr), AddressTimeline>);
                let bindings: Bindings = seq.next_element()?.ok_or_else(|| missing("bindings"))?;
                let site_names = seq.next_element()?.ok_or_else(|| missing("site names"))?;
                let tokens = seq.next_element()?.ok_or_else(|| missing("tokens"))?;
                let audit = seq.next_element()?.ok_or_else(|| missing("audit log"))?;
                let outbox = seq.next_element()?.ok_or_else(|| missing("outbox"))?;
                let alerts = part_since(&mut seq, format, 0x574c_0004, "alerts")?;
                let baselines = part_since(&mut seq, format, 0x574c_0004, "baselines")?;
                // Parts added later, each with the format that introduced it; an older state
                // lacks them and they start empty.
                let policy = part_since(&mut seq, format, 0x574c_0005, "policy")?;
                let vulnfeeds = part_since(&mut seq, format, 0x574c_0006, "vulnerability feeds")?;
                let revocations = part_since(&mut seq, format, 0x574c_0007, "revocations")?;
                let group_history = part_since(&mut seq, format, 0x574c_0008, "group membership history")?;
                // The second detectors (decision 0033) start with default settings.
                let detectors = part_since(&mut seq, format, 0x574c_0009, "detectors")?;
                let device_tags = part_since(&mut seq, format, 0x574c_000a, "device tags")?;
                let sensor_health = part_since(&mut seq, format, 0x574c_000b, "sensor health")?;
                let spool_losses = part_since(&mut seq, format, 0x574c_000b, "spool losses")?;
                let epochs = part_since(&mut seq, format, 0x574c_000b, "sensor epochs")?;
                let homes = part_since(&mut seq, format, 0x574c_000b, "device home sites")?;
                let risk_history = part_since(&mut seq, format, 0x574c_000b, "risk history")?;
                Ok(ReplicatedParts {
                    format,
                    devices: devices.0,
                    sensors,
                    hosts: hosts.0,
                    bindings: bindings.0,
                    site_names,
                    tokens,
                    audit,
                    outbox,
                    alerts,
                    baselines,
                    policy,
                    vulnfeeds,
                    revocations,
                    group_history,
                    detectors,
                    device_tags,
                    sensor_health,
                    spool_losses,
                    epochs,
                    homes,
                    risk_history,
                })
            }
            /// Self-describing formats (JSON): parts by name; the ones a format lacks default.
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ReplicatedParts, A::Error> {
                let parts = ReplicatedParts::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                check_format::<A::Error>(parts.format)?;
                Ok(parts)
            }
        }
        d.deserialize_struct("ReplicatedParts", FIELDS, PartsVisitor).map(VersionedParts)
    }
}

impl Serialize for ClusterState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Parts<'a> {
            format: StateFormat,
            #[serde(serialize_with = "arc_values_as_list::serialize")]
            devices: &'a BTreeMap<MacAddr, Arc<DeviceRecord>>,
            sensors: &'a BTreeMap<String, SensorRecord>,
            #[serde(serialize_with = "arc_values_as_list::serialize")]
            hosts: &'a BTreeMap<HostKey, Arc<HostRecord>>,
            bindings: BindingsList<'a>,
            site_names: &'a Vec<String>,
            tokens: &'a tokens::TokenStore,
            audit: &'a audit::AuditLog,
            outbox: &'a FlowOutbox,
            alerts: &'a alerts::AlertStore,
            baselines: &'a anomaly::Baselines,
            policy: &'a policy::PolicyStore,
            vulnfeeds: &'a vulnfeeds::VulnFeeds,
            revocations: &'a revocations::Revocations,
            group_history: &'a policy::GroupHistory,
            detectors: &'a anomaly::detectors::Detectors,
            device_tags: &'a tags::DeviceTags,
            sensor_health: &'a sensor_health::SensorHealth,
            spool_losses: &'a spool_losses::SpoolLosses,
            epochs: &'a epochs::SensorEpochs,
            homes: &'a home::DeviceHomes,
            risk_history: &'a risk_history::RiskHistoryStore,
        }
        Parts {
            format: StateFormat,
            devices: &self.devices,
            sensors: &self.sensors,
            hosts: &self.hosts,
            bindings: BindingsList(&self.addresses),
            site_names: &self.site_names,
            tokens: &self.tokens,
            audit: &self.audit,
            outbox: &self.outbox,
            alerts: &self.alerts,
            baselines: &self.baselines,
            policy: &self.policy,
            vulnfeeds: &self.vulnfeeds,
            revocations: &self.revocations,
            group_history: &self.group_history,
            detectors: &self.detectors,
            device_tags: &self.device_tags,
            sensor_health: &self.sensor_health,
            spool_losses: &self.spool_losses,
            epochs: &self.epochs,
            homes: &self.homes,
            risk_history: &self.risk_history,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClusterState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let VersionedParts(parts) = VersionedParts::deserialize(d)?;
        let mut state = ClusterState {
            devices: parts.devices,
            sensors: parts.sensors,
            hosts: parts.hosts,
            site_names: parts.site_names,
            tokens: parts.tokens,
            audit: parts.audit,
            outbox: parts.outbox,
            alerts: parts.alerts,
            baselines: parts.baselines,
            policy: parts.policy,
            vulnfeeds: parts.vulnfeeds,
            revocations: parts.revocations,
            group_history: parts.group_history,
            detectors: parts.detectors,
            device_tags: parts.device_tags,
            sensor_health: parts.sensor_health,
            spool_losses: parts.spool_losses,
            epochs: parts.epochs,
            homes: parts.homes,
            risk_history: parts.risk_history,
            ..Default::default()
        };
        for ((site, ip), timeline) in parts.bindings {
            state.addresses.set_timeline(site, ip, timeline);
        }
        state.rebuild_indexes();
        Ok(state)
    }
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    fn rebuild_indexes(&mut self) {
        self.site_index = self.site_names.iter().enumerate().map(|(i, name)| (name.clone(), i as u32)).collect();
        self.addresses.extend(self.devices.values().flat_map(|d| d.ips.keys().map(|ip| (ip, d.mac))));
        self.attributed =
            self.hosts.values().flat_map(|h| h.owners().into_iter().map(|mac| (mac, h.key.clone()))).collect();
        self.identifiers = BTreeMap::new();
        for record in self.devices.values() {
            for id in identity::strong_identifiers(record) {
                self.identifiers.entry(id).or_default().insert(record.mac);
            }
        }
    }

    /// Every device, by MAC.
    pub fn devices(&self) -> &BTreeMap<MacAddr, Arc<DeviceRecord>> {
        &self.devices
    }

    pub fn device(&self, mac: &MacAddr) -> Option<&Arc<DeviceRecord>> {
        self.devices.get(mac)
    }

    /// Every IP-keyed host record, by key (including ones wholly attributed to MACs).
    pub fn hosts(&self) -> &BTreeMap<HostKey, Arc<HostRecord>> {
        &self.hosts
    }

    pub fn host(&self, key: &HostKey) -> Option<&Arc<HostRecord>> {
        self.hosts.get(key)
    }

    /// The host records with pieces attributed to `mac`.
    pub fn hosts_attributed_to<'a>(&'a self, mac: &MacAddr) -> impl Iterator<Item = &'a Arc<HostRecord>> + 'a {
        let mac = *mac;
        let start = (mac, HostKey { site: String::new(), ip: IpAddr::from([0u8; 4]), vlan: None });
        self.attributed
            .range(start..)
            .take_while(move |(owner, _)| *owner == mac)
            .filter_map(|(_, key)| self.hosts.get(key))
    }

    /// The ownership timeline of `ip` at `site`, if any binding was seen.
    pub fn timeline(&self, site: &str, ip: &IpAddr) -> Option<AddressTimeline> {
        let index = *self.site_index.get(site)?;
        self.addresses.timeline(index, ip)
    }

    /// How many (site, address) timelines and spans the state holds.
    pub fn binding_counts(&self) -> (usize, usize) {
        let mut counts = (0, 0);
        for (_, timeline) in self.addresses.bindings() {
            counts = (counts.0 + 1, counts.1 + timeline.span_count());
        }
        counts
    }

    /// The name of site number `index` (as in `SegmentSeen::site_index`).
    pub fn site_name(&self, index: u32) -> &str {
        self.site_names.get(index as usize).map_or("", String::as_str)
    }

    /// The MAC devices holding the strong identifier `id` (decision 0013).
    pub fn holders_of(&self, id: &(Field, String)) -> Option<&BTreeSet<MacAddr>> {
        self.identifiers.get(id)
    }

    /// The device seen using `ip`. When several were (a router's MAC fronting the address,
    /// a lease handed on), the lowest MAC, so every node picks the same one.
    pub fn device_with_ip(&self, ip: &IpAddr) -> Option<&Arc<DeviceRecord>> {
        let mac = self.addresses.lowest(ip)?;
        self.devices.get(&mac)
    }

    /// Every sensor's latest recorded heartbeat (decision 0038).
    pub fn sensor_health(&self) -> &sensor_health::SensorHealth {
        &self.sensor_health
    }

    /// Every sensor that had a batch applied, by sensor id.
    pub fn sensors(&self) -> &BTreeMap<String, SensorRecord> {
        &self.sensors
    }

    /// Whether `batch` was already applied: at or below its sensor's watermark, or one of
    /// its sensor's recent batch ids.
    pub fn is_duplicate(&self, batch: &BatchSummary) -> bool {
        // Sequences start at 1, so seq 0 counts as at-or-below an unknown sensor's
        // watermark of 0 and is never applied.
        self.is_applied(&batch.sensor_id, batch.seq, &batch.batch_id)
    }

    /// Whether a batch with this identity would be refused as already applied; lets
    /// ingest acknowledge a re-sent batch without a Raft round trip.
    pub fn is_applied(&self, sensor_id: &str, seq: u64, batch_id: &Ulid) -> bool {
        match self.sensors.get(sensor_id) {
            None => seq == 0,
            Some(s) => seq <= s.last_seq || s.recent_batch_ids.contains(batch_id),
        }
    }

    /// The applied-batch watermark of a sensor (0 if none applied yet).
    pub fn watermark(&self, sensor_id: &str) -> u64 {
        self.sensors.get(sensor_id).map_or(0, |s| s.last_seq)
    }

    /// Every sensor's spool epochs (decision 0036).
    pub fn epochs(&self) -> &epochs::SensorEpochs {
        &self.epochs
    }

    /// MAC devices' home sites and what other sites reported of them (decision 0037).
    pub fn homes(&self) -> &home::DeviceHomes {
        &self.homes
    }

    /// What to do with a batch of `sensor_id` from spool `epoch` (None: it names none, an
    /// older sensor) with sequence `seq`: acknowledge it as a duplicate, propose it (and in
    /// which command), or refuse it. Ingest asks before proposing; `ApplyEpochBatches` asks
    /// again when it applies, so the state alone decides.
    pub fn ingest_verdict(
        &self,
        sensor_id: &str,
        epoch: Option<Ulid>,
        seq: u64,
        batch_id: &Ulid,
        max_seq_jump: u64,
    ) -> IngestVerdict {
        use epochs::EpochVerdict;
        let sensor = self.sensors.get(sensor_id);
        let (with_epoch, begins_epoch) = match (epoch, self.epochs.get(sensor_id)) {
            (None, Some(record)) => {
                return IngestVerdict::Refuse(format!(
                    "batch {seq} names no spool epoch, but sensor {sensor_id} is recorded in spool epoch {}: a \
                     sensor of a version before decision 0036 cannot send for it any more; upgrade the sensor",
                    record.epoch
                ))
            }
            (None, None) => (false, false),
            (Some(epoch), _) => match self.epochs.verdict(sensor_id, sensor, epoch, seq) {
                EpochVerdict::Current => (true, false),
                EpochVerdict::Unrecorded => (false, false),
                EpochVerdict::Begins { .. } => (true, true),
                EpochVerdict::RetiredDuplicate => return IngestVerdict::Duplicate,
                EpochVerdict::Stale(reason) => return IngestVerdict::Refuse(reason),
            },
        };
        // Sequences start at 1: seq 0 is never applied (as before epochs).
        if seq == 0 || (!begins_epoch && self.is_applied(sensor_id, seq, batch_id)) {
            return IngestVerdict::Duplicate;
        }
        let watermark = if begins_epoch { 0 } else { self.watermark(sensor_id) };
        if seq > watermark.saturating_add(max_seq_jump) {
            return IngestVerdict::Refuse(epochs::jump_reason(sensor_id, watermark, seq, max_seq_jump));
        }
        IngestVerdict::Propose { with_epoch, begins_epoch }
    }

    /// Apply one batch of `ApplyEpochBatches`: Ok(applied) — false for a duplicate — or the
    /// reason it was refused.
    fn apply_epoch_batch(&mut self, b: &EpochBatch, max_seq_jump: u64) -> Result<bool, String> {
        let s = &b.batch.summary;
        let sensor_id = s.sensor_id.as_str();
        let verdict = self.ingest_verdict(sensor_id, Some(b.epoch), s.seq, &s.batch_id, max_seq_jump);
        let epoch_verdict = self.epochs.verdict(sensor_id, self.sensors.get(sensor_id), b.epoch, s.seq);
        match verdict {
            IngestVerdict::Duplicate => {
                if epoch_verdict == epochs::EpochVerdict::RetiredDuplicate {
                    self.epochs.count_stale_duplicate(sensor_id);
                }
                Ok(false)
            }
            IngestVerdict::Refuse(reason) => {
                if matches!(epoch_verdict, epochs::EpochVerdict::Stale(_)) {
                    self.epochs.count_stale_refused(sensor_id);
                } else {
                    self.epochs.count_jump_refused(sensor_id);
                }
                Err(reason)
            }
            IngestVerdict::Propose { begins_epoch, .. } => {
                if begins_epoch {
                    self.begin_epoch(b);
                } else {
                    self.epochs.adopt(sensor_id, b.epoch, s.seq, s.batch_id);
                }
                let applied = self.apply_ingest_batch(&b.batch);
                if applied {
                    self.epochs.applied(sensor_id);
                }
                Ok(applied)
            }
        }
    }

    /// The batch `b` begins its sensor's new spool epoch: retire the old one with its
    /// watermark, restart the watermark, and raise `sensor_epoch_changed` when the sensor
    /// had batches before.
    fn begin_epoch(&mut self, b: &EpochBatch) {
        let s = &b.batch.summary;
        let before = self.sensors.get(&s.sensor_id);
        let had_batches = before.is_some();
        self.epochs.begin(&s.sensor_id, before, b.epoch, s.seq, s.batch_id);
        let Some(sensor) = self.sensors.get_mut(&s.sensor_id) else { return };
        let old_last_seq = sensor.last_seq;
        sensor.last_seq = 0;
        if !had_batches {
            return;
        }
        let record = self.epochs.get(&s.sensor_id);
        let previous = record.and_then(|r| r.retired.last()).and_then(|r| r.epoch);
        let changes = record.map_or(0, |r| r.changes);
        self.alerts.occur(&alerts::Occurrence {
            kind: alerts::AlertKind::SensorEpochChanged,
            severity: alerts::Severity::Medium,
            device: s.sensor_id.clone(),
            site: s.site.clone(),
            target: b.epoch.to_string(),
            ts_us: epochs::ulid_ms(&s.batch_id).saturating_mul(1000),
            evidence: format!(
                "sensor {} (site {}) began spool epoch {} at batch {}: its spool was wiped or it was reinstalled; \
                 the previous epoch {} ended at batch {old_last_seq} (epoch change {changes} of this sensor). \
                 Its sequence numbers start again; confirm the reinstall was intended",
                s.sensor_id,
                s.site,
                b.epoch,
                s.seq,
                previous.map_or_else(|| "(not recorded)".to_string(), |e| e.to_string()),
            ),
        });
    }

    /// Apply one command. Deterministic: same state + same command = same result.
    pub fn apply(&mut self, cmd: &Command) -> ApplyResponse {
        match cmd {
            Command::ApplyBatch(batch) => self.apply_batch_with_alerts(batch, &[]),
            Command::ApplyBatches(batches) => self.apply_batches(batches),
            Command::ApplyEpochBatches { max_seq_jump, batches } => {
                let mut refused = Vec::new();
                let batches: Vec<bool> = batches
                    .iter()
                    .enumerate()
                    .map(|(index, b)| {
                        let applied = self.apply_epoch_batch(b, *max_seq_jump).unwrap_or_else(|reason| {
                            refused.push(BatchRefusal { index: index as u32, retry: false, reason });
                            false
                        });
                        if let (true, Some(report)) = (applied, &b.report) {
                            self.spool_losses.note(&b.batch.summary.sensor_id, b.batch.summary.seq, report);
                        }
                        applied
                    })
                    .collect();
                ApplyResponse { applied: batches.iter().any(|a| *a), batches, refused }
            }
            Command::FlowsDrained { through } => {
                self.outbox.drain_through(*through);
                ApplyResponse::done(true)
            }
            Command::CreateToken(t) => ApplyResponse::done(self.tokens.create(t).is_ok()),
            Command::RevokeToken(id) => ApplyResponse::done(self.tokens.revoke(id).is_ok()),
            Command::Audit(entry) => {
                self.audit.append(entry);
                ApplyResponse::done(true)
            }
            Command::InitCluster { .. } => ApplyResponse::done(true),
            Command::Audited { entry, command } => {
                let resp = self.apply(command);
                let mut entry = entry.clone();
                if resp.applied {
                    entry.outcome = "ok".into();
                } else {
                    entry.status = 409;
                    entry.outcome = "not applied".into();
                }
                self.audit.append(&entry);
                resp
            }
            Command::AlertTriage(t) => ApplyResponse::done(self.alerts.triage(t).is_ok()),
            Command::AddSuppressionRule(r) => ApplyResponse::done(self.alerts.add_rule(r).is_ok()),
            Command::RemoveSuppressionRule { id } => ApplyResponse::done(self.alerts.remove_rule(*id).is_ok()),
            Command::AlertsForwarded { through } => {
                self.alerts.forwarded(*through);
                ApplyResponse::done(true)
            }
            Command::SetAnomalyConfig(config) => {
                self.baselines.set_config(config);
                ApplyResponse::done(true)
            }
            Command::PolicyVersion(p) => {
                let before = self.policy.membership().to_vec();
                let applied = self.policy.apply_version(p).is_ok();
                if applied {
                    self.group_history.record(&before, &self.policy);
                }
                ApplyResponse::done(applied)
            }
            Command::PolicyMembership(u) => {
                let before = self.policy.membership().to_vec();
                let applied = self.policy.update_membership(u).unwrap_or(false);
                if applied {
                    self.group_history.record(&before, &self.policy);
                }
                ApplyResponse::done(applied)
            }
            Command::PolicyAddDraft(d) => ApplyResponse::done(self.policy.add_draft(d).is_ok()),
            Command::PolicyRemoveDraft { id } => ApplyResponse::done(self.policy.remove_draft(*id).is_ok()),
            Command::PolicyViolationToDraft { triage, draft } => {
                // Check both before changing either, so nothing is half-applied.
                let ok = self.alerts.check_triage(triage).is_ok() && self.policy.check_draft().is_ok();
                ApplyResponse::done(ok && self.alerts.triage(triage).is_ok() && self.policy.add_draft(draft).is_ok())
            }
            Command::ImportVulnFeed(part) => ApplyResponse::done(self.vulnfeeds.apply(part)),
            Command::RevokeSensor(r) => ApplyResponse::done(self.revocations.revoke(r)),
            Command::LiftRevocation { sensor_id, serial } => {
                ApplyResponse::done(self.revocations.lift(sensor_id, serial.as_deref()))
            }
            Command::SetDetectorConfig(config) => {
                self.detectors.set_config(config);
                ApplyResponse::done(true)
            }
            Command::SensorTick { now_ms } => {
                self.detectors.tick(*now_ms, &self.sensors, &mut self.alerts);
                ApplyResponse::done(true)
            }
            Command::SetDeviceTags { mac, tags } => ApplyResponse::done(self.device_tags.set(*mac, tags)),
            Command::SensorHeartbeat(record) => {
                ApplyResponse::done(self.sensor_health.record(record, &mut self.alerts))
            }
            Command::ApplyReportedBatches { batches, reports } => {
                let response = self.apply_batches(batches);
                self.note_spool_reports(batches, &response.batches, reports);
                response
            }
            Command::RecordRiskHistory(record) => {
                let applied = self.risk_history.apply(record);
                if applied {
                    for occurrence in &record.occurrences {
                        self.alerts.occur(occurrence);
                    }
                }
                ApplyResponse::done(applied)
            }
        }
    }

    /// Device and site risk over time (decision 0043).
    pub fn risk_history(&self) -> &risk_history::RiskHistoryStore {
        &self.risk_history
    }

    /// Segmentation policy versions, drafts and monitor-mode counters.
    pub fn policy(&self) -> &policy::PolicyStore {
        &self.policy
    }

    /// Joins and leaves of the active policy's groups (decision 0031).
    pub fn group_history(&self) -> &policy::GroupHistory {
        &self.group_history
    }

    /// Imported vulnerability feeds.
    pub fn device_tags(&self) -> &tags::DeviceTags {
        &self.device_tags
    }

    /// What each sensor's spool gave up (decision 0045).
    pub fn spool_losses(&self) -> &spool_losses::SpoolLosses {
        &self.spool_losses
    }

    /// `ApplyBatches` (and `ApplyReportedBatches`): each batch in order, deduplicated; a
    /// batch of a sensor whose epoch is recorded must come with its epoch (decision 0036).
    fn apply_batches(&mut self, batches: &[IngestBatch]) -> ApplyResponse {
        self.apply_batches_with(batches, |s, b| s.apply_ingest_batch(b))
    }

    /// [`ClusterState::apply_batches`] with `apply_one` applying each batch that is not
    /// refused for its epoch (by reference, or by value on the Raft hot path).
    fn apply_batches_with<B: std::borrow::Borrow<IngestBatch>>(
        &mut self,
        batches: impl IntoIterator<Item = B>,
        mut apply_one: impl FnMut(&mut Self, B) -> bool,
    ) -> ApplyResponse {
        let mut refused = Vec::new();
        let mut applied = Vec::new();
        for (index, b) in batches.into_iter().enumerate() {
            match self.epoch_refusal(&b.borrow().summary) {
                Some(reason) => {
                    refused.push(BatchRefusal { index: index as u32, retry: true, reason });
                    applied.push(false);
                }
                None => applied.push(apply_one(self, b)),
            }
        }
        ApplyResponse { applied: applied.iter().any(|a| *a), batches: applied, refused }
    }

    /// Why a batch proposed without its epoch cannot be applied: its sensor's epoch is
    /// recorded, so the batch must be judged against it (the proposing node had not applied
    /// the record yet). The re-send will be.
    fn epoch_refusal(&self, b: &BatchSummary) -> Option<String> {
        let record = self.epochs.get(&b.sensor_id)?;
        Some(format!(
            "sensor {} is in spool epoch {} now; the batch was proposed without its epoch (by a node that had not \
             caught up): send it again",
            b.sensor_id, record.epoch
        ))
    }

    fn note_spool_reports(&mut self, batches: &[IngestBatch], applied: &[bool], reports: &[BatchSpoolReport]) {
        for r in reports {
            let i = r.index as usize;
            if let (Some(true), Some(b)) = (applied.get(i), batches.get(i)) {
                self.spool_losses.note(&b.summary.sensor_id, b.summary.seq, &r.report);
            }
        }
    }

    pub fn revocations(&self) -> &revocations::Revocations {
        &self.revocations
    }

    pub fn vulnfeeds(&self) -> &vulnfeeds::VulnFeeds {
        &self.vulnfeeds
    }

    /// The second detectors' settings and state (decision 0033).
    pub fn detectors(&self) -> &anomaly::detectors::Detectors {
        &self.detectors
    }

    /// Alerts, suppression rules and the SIEM event queue.
    pub fn alerts(&self) -> &alerts::AlertStore {
        &self.alerts
    }

    /// The anomaly detectors' settings and baselines.
    pub fn baselines(&self) -> &anomaly::Baselines {
        &self.baselines
    }

    /// Apply a batch, then run the anomaly detectors over it (only when it was applied, so
    /// a duplicate raises nothing twice).
    fn apply_batch_with_alerts(&mut self, batch: &BatchSummary, flows: &[FlowRecord]) -> ApplyResponse {
        let response = self.apply_batch(batch);
        if response.applied {
            let sides = anomaly::FlowSides::of(flows, &self.devices);
            for occurrence in self.baselines.detect(batch, flows, &sides) {
                self.alerts.occur(&occurrence);
            }
            for occurrence in self.policy.evaluate_batch(&batch.site, flows, &sides) {
                self.alerts.occur(&occurrence);
            }
            let membership = self.policy.membership();
            for occurrence in self.detectors.detect(batch, flows, &sides, &self.devices, &self.baselines, membership) {
                self.alerts.occur(&occurrence);
            }
        }
        response
    }

    /// API tokens (hashes only).
    pub fn tokens(&self) -> &tokens::TokenStore {
        &self.tokens
    }

    /// The audit log.
    pub fn audit(&self) -> &audit::AuditLog {
        &self.audit
    }

    /// Apply one batch of a group; its flows join the outbox only when it was applied, so a
    /// duplicate never adds rows twice.
    fn apply_ingest_batch(&mut self, batch: &IngestBatch) -> bool {
        let applied = self.apply_batch_with_alerts(&batch.summary, &batch.flows).applied;
        if applied && !batch.flows.is_empty() {
            self.outbox.push(OutboxEntry {
                batch_id: batch.summary.batch_id,
                seq: batch.summary.seq,
                sensor_id: batch.summary.sensor_id.clone(),
                site: batch.summary.site.clone(),
                flows: batch.flows.clone(),
            });
        }
        applied
    }

    /// [`ClusterState::apply`] taking the command by value, so an ingest group's flows move
    /// into the outbox instead of being copied (the Raft state machine's hot path). Same
    /// result as `apply` for every command.
    pub fn apply_owned(&mut self, cmd: Command) -> ApplyResponse {
        match cmd {
            Command::ApplyBatches(batches) => self.apply_batches_with(batches, Self::apply_ingest_batch_owned),
            cmd => self.apply(&cmd),
        }
    }

    /// [`ClusterState::apply_ingest_batch`] by value: the flows move into the outbox.
    fn apply_ingest_batch_owned(&mut self, batch: IngestBatch) -> bool {
        let applied = self.apply_batch_with_alerts(&batch.summary, &batch.flows).applied;
        if applied && !batch.flows.is_empty() {
            let IngestBatch { summary, flows } = batch;
            self.outbox.push(OutboxEntry {
                batch_id: summary.batch_id,
                seq: summary.seq,
                sensor_id: summary.sensor_id,
                site: summary.site,
                flows,
            });
        }
        applied
    }

    /// The flow outbox (entries not yet written to the flow sink).
    pub fn outbox(&self) -> &FlowOutbox {
        &self.outbox
    }

    fn apply_batch(&mut self, batch: &BatchSummary) -> ApplyResponse {
        if self.is_duplicate(batch) {
            return ApplyResponse::done(false);
        }
        self.note_sensor(batch);
        let site_index = self.intern_site(&batch.site);
        // Bindings first, so the batch's own hosts are attributed with them; then the
        // hosts the new bindings re-attribute; then devices and hosts.
        let mut changed = BTreeSet::new();
        let mut refused = 0u64;
        for binding in &batch.bindings {
            match self.apply_binding(binding, batch, site_index) {
                Some(true) => {
                    changed.insert(binding.ip);
                }
                Some(false) => {}
                None => refused += 1,
            }
        }
        for ip in changed {
            self.reattribute(&batch.site, site_index, ip);
        }
        for obs in &batch.devices {
            self.apply_device(obs, batch, site_index);
        }
        let mut hosts_refused = 0u64;
        for obs in &batch.hosts {
            // A host in a remote site's network (the sensor sees it through a router) belongs
            // to that site, where the site's own sensors report its bindings.
            let applied = match obs.site.as_deref() {
                None => self.apply_host(obs, batch, &batch.site, site_index),
                // Only a name a certificate could carry, so a sensor cannot grow the site
                // table with arbitrary strings.
                Some(site) if wardline_common::wire::is_valid_id(site) => {
                    let index = self.intern_site(site);
                    self.apply_host(obs, batch, site, index)
                }
                Some(_) => false,
            };
            if !applied {
                hosts_refused += 1;
            }
        }
        if let Some(sensor) = self.sensors.get_mut(&batch.sensor_id) {
            sensor.bindings_refused = sensor.bindings_refused.saturating_add(refused);
            sensor.hosts_refused = sensor.hosts_refused.saturating_add(hosts_refused);
        }
        ApplyResponse::done(true)
    }

    /// Update the sensor's watermark, recent ids and counters for an applied batch.
    fn note_sensor(&mut self, batch: &BatchSummary) {
        let sensor = self.sensors.entry(batch.sensor_id.clone()).or_insert_with(|| SensorRecord {
            site: batch.site.clone(),
            last_seq: 0,
            last_batch_id: batch.batch_id,
            recent_batch_ids: VecDeque::new(),
            batches_applied: 0,
            seq_gaps: 0,
            seqs_skipped: 0,
            flows: 0,
            flow_packets: 0,
            flow_bytes: 0,
            stats: SensorStats::default(),
            last_packet_us: 0,
            hosts_refused: 0,
            bindings_refused: 0,
        });
        // Not a duplicate, so seq > last_seq here.
        let skipped = batch.seq.saturating_sub(sensor.last_seq).saturating_sub(1);
        if skipped > 0 {
            sensor.seq_gaps = sensor.seq_gaps.saturating_add(1);
            sensor.seqs_skipped = sensor.seqs_skipped.saturating_add(skipped);
        }
        sensor.site = batch.site.clone();
        sensor.last_seq = batch.seq;
        sensor.last_batch_id = batch.batch_id;
        sensor.recent_batch_ids.push_back(batch.batch_id);
        while sensor.recent_batch_ids.len() > RECENT_BATCH_IDS {
            sensor.recent_batch_ids.pop_front();
        }
        sensor.batches_applied = sensor.batches_applied.saturating_add(1);
        sensor.flows = sensor.flows.saturating_add(batch.flow_count);
        sensor.flow_packets = sensor.flow_packets.saturating_add(batch.flow_packets);
        sensor.flow_bytes = sensor.flow_bytes.saturating_add(batch.flow_bytes);
        if let Some(stats) = &batch.stats {
            sensor.stats = stats.clone();
        }
        let latest = batch
            .devices
            .iter()
            .map(|d| d.last_seen_us)
            .chain(batch.hosts.iter().map(|h| h.last_seen_us))
            .chain(batch.bindings.iter().map(|b| b.seen_us))
            .max()
            .unwrap_or(0);
        sensor.last_packet_us = sensor.last_packet_us.max(latest);
    }

    fn intern_site(&mut self, site: &str) -> u32 {
        if let Some(index) = self.site_index.get(site) {
            return *index;
        }
        let index = self.site_names.len() as u32;
        self.site_names.push(site.to_string());
        self.site_index.insert(site.to_string(), index);
        index
    }

    /// Record a binding on its address's timeline and on the MAC's device. `None` when the
    /// binding is refused; otherwise whether the timeline's owners changed.
    fn apply_binding(&mut self, b: &AddressBinding, batch: &BatchSummary, site_index: u32) -> Option<bool> {
        if !b.mac.is_device() || !is_host_address(&b.ip) {
            return None;
        }
        let changed = self.addresses.record(site_index, b);
        let record = self.devices.entry(b.mac).or_insert_with(|| Arc::new(DeviceRecord::new(b.mac)));
        let record = Arc::make_mut(record);
        record.seen(&batch.sensor_id, &batch.site, b.seen_us, b.seen_us);
        if record.use_ip(b.ip, b.seen_us, b.seen_us) {
            self.addresses.insert(b.ip, b.mac);
        }
        Some(changed)
    }

    /// Re-attribute every host record of `ip` at the site after its timeline changed.
    fn reattribute(&mut self, site: &str, site_index: u32, ip: IpAddr) {
        let Some(timeline) = self.addresses.timeline(site_index, &ip) else {
            return;
        };
        let start = HostKey { site: site.to_string(), ip, vlan: None };
        let keys: Vec<HostKey> =
            self.hosts.range(start..).map(|(k, _)| k).take_while(|k| k.site == site && k.ip == ip).cloned().collect();
        for key in keys {
            let Some(host) = self.hosts.get_mut(&key) else { continue };
            let before = host.owners();
            if Arc::make_mut(host).reattribute(&timeline) {
                let after = host.owners();
                update_attribution(&mut self.attributed, &key, &before, &after);
            }
        }
    }

    /// The home site of a device merged before decision 0037 (no home recorded): the site
    /// of its earliest segment sighting, else of the lowest name it was seen at, else
    /// `site`; and its latest packet time.
    fn derived_home(&self, mac: &MacAddr, site: &str) -> (String, u64) {
        let Some(record) = self.devices.get(mac) else { return (site.to_string(), 0) };
        let earliest = record.segments.iter().min_by_key(|(_, seen)| (seen.first_seen_us, seen.site_index));
        let home = match earliest {
            Some((_, seen)) => self.site_name(seen.site_index).to_string(),
            None => record.sites.iter().next().cloned().unwrap_or_else(|| site.to_string()),
        };
        (if home.is_empty() { site.to_string() } else { home }, record.last_seen_us)
    }

    fn apply_device(&mut self, obs: &DeviceObservation, batch: &BatchSummary, site_index: u32) {
        // Only the device's home site changes what it is (decision 0037): from another site,
        // a name, vendor, model, firmware or identifier that differs from every value the
        // device already has for that field is withheld.
        let derived = match self.homes.get(&obs.mac) {
            None => self.derived_home(&obs.mac, &batch.site),
            Some(_) => (String::new(), 0),
        };
        let sensors = &self.sensors;
        let home_sensors_latest =
            |home: &str| sensors.values().filter(|s| s.site == home).map(|s| s.last_packet_us).max().unwrap_or(0);
        let at_home = self.homes.is_home(obs.mac, &batch.site, obs.last_seen_us, || derived, home_sensors_latest);
        let withheld: Vec<bool> = match (at_home, self.devices.get(&obs.mac)) {
            (false, Some(record)) => obs
                .evidence
                .iter()
                .map(|e| {
                    home::is_protected(e.field)
                        && record.entries(e.field).next().is_some()
                        && record.evidence.get(&(e.field, e.value.clone())).is_none()
                })
                .collect(),
            _ => Vec::new(),
        };
        if withheld.iter().any(|w| *w) {
            let facts =
                obs.evidence.iter().zip(&withheld).filter(|(_, w)| **w).map(|(e, _)| (e.field, e.value.as_str()));
            self.homes.withhold(obs.mac, &batch.sensor_id, &batch.site, obs.first_seen_us, obs.last_seen_us, facts);
        }
        let record = self.devices.entry(obs.mac).or_insert_with(|| Arc::new(DeviceRecord::new(obs.mac)));
        let strong = obs.evidence.iter().any(|e| identity::is_strong_field(e.field));
        let before = if strong { identity::strong_identifiers(record) } else { BTreeSet::new() };
        let record = Arc::make_mut(record);
        let new_ips = record.merge(obs, &batch.sensor_id, &batch.site, site_index, &withheld);
        self.addresses.extend(new_ips.into_iter().map(|ip| (ip, obs.mac)));
        if strong {
            let after = identity::strong_identifiers(record);
            for gone in before.difference(&after) {
                if let Some(holders) = self.identifiers.get_mut(gone) {
                    holders.remove(&obs.mac);
                    if holders.is_empty() {
                        self.identifiers.remove(gone);
                    }
                }
            }
            for new in after.difference(&before) {
                self.identifiers.entry(new.clone()).or_default().insert(obs.mac);
            }
        }
    }

    /// Merge a host observation into its IP-keyed record; false when refused.
    fn apply_host(&mut self, obs: &HostObservation, batch: &BatchSummary, site: &str, site_index: u32) -> bool {
        if !is_host_address(&obs.ip) {
            return false;
        }
        let key = HostKey { site: site.to_string(), ip: obs.ip, vlan: obs.vlan };
        let timeline = self.addresses.timeline(site_index, &obs.ip);
        let host = self.hosts.entry(key.clone()).or_insert_with(|| Arc::new(HostRecord::new(key.clone())));
        let before = host.owners();
        let host = Arc::make_mut(host);
        host.merge(obs, &batch.sensor_id, timeline.as_ref());
        let after = host.owners();
        update_attribution(&mut self.attributed, &key, &before, &after);
        true
    }
}

/// An address that can belong to one host: not unspecified, multicast or broadcast.
fn is_host_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_multicast() && !v4.is_broadcast(),
        IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_multicast(),
    }
}

fn update_attribution(
    index: &mut BTreeSet<(MacAddr, HostKey)>,
    key: &HostKey,
    before: &BTreeSet<MacAddr>,
    after: &BTreeSet<MacAddr>,
) {
    for gone in before.difference(after) {
        index.remove(&(*gone, key.clone()));
    }
    for new in after.difference(before) {
        index.insert((*new, key.clone()));
    }
}

/// A map of `Arc`ed records serialized as the list of records (each names its own key).
mod arc_values_as_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A record that names its own key.
    pub trait Keyed {
        type Key: Ord;
        fn key(&self) -> Self::Key;
    }

    impl Keyed for super::DeviceRecord {
        type Key = wardline_common::MacAddr;
        fn key(&self) -> Self::Key {
            self.mac
        }
    }

    impl Keyed for super::HostRecord {
        type Key = super::HostKey;
        fn key(&self) -> Self::Key {
            self.key.clone()
        }
    }

    pub fn serialize<S: Serializer, K, V: Serialize>(map: &BTreeMap<K, Arc<V>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values().map(|rec| &**rec))
    }

    pub fn deserialize<'de, D, V>(d: D) -> Result<BTreeMap<V::Key, Arc<V>>, D::Error>
    where
        D: Deserializer<'de>,
        V: Deserialize<'de> + Keyed,
    {
        let list = Vec::<V>::deserialize(d)?;
        Ok(list.into_iter().map(|rec| (rec.key(), Arc::new(rec))).collect())
    }
}

/// Any ordered map read from a list of (key, value) pairs: JSON map keys must be strings,
/// and these keys are tuples or structs (written by [`BindingsList`]).
mod map_as_list {
    use serde::{Deserialize, Deserializer};
    use std::collections::BTreeMap;

    pub fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// The replicated timelines, serialized as the `((site index, address), timeline)` list a
/// map of them gives (listed by address, then site; loading accepts any order).
struct BindingsList<'a>(&'a addresses::Addresses);

impl Serialize for BindingsList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // bincode needs the length up front.
        let mut seq = s.serialize_seq(Some(self.0.timeline_count()))?;
        for entry in self.0.bindings() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

mod evidence_as_list {
    use super::{EvidenceRecord, VecMap};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use wardline_common::{Field, Proto};

    #[derive(Serialize)]
    struct Entry<'a> {
        field: Field,
        value: &'a str,
        proto: Proto,
        first_ts_us: u64,
        last_ts_us: u64,
        count: u64,
    }

    #[derive(Deserialize)]
    struct OwnedEntry {
        field: Field,
        value: String,
        proto: Proto,
        first_ts_us: u64,
        last_ts_us: u64,
        count: u64,
    }

    pub fn serialize<S: Serializer>(map: &VecMap<(Field, String), EvidenceRecord>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter().map(|((field, value), rec)| Entry {
            field: *field,
            value,
            proto: rec.proto,
            first_ts_us: rec.first_ts_us,
            last_ts_us: rec.last_ts_us,
            count: rec.count,
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecMap<(Field, String), EvidenceRecord>, D::Error> {
        let list = Vec::<OwnedEntry>::deserialize(d)?;
        Ok(list
            .into_iter()
            .map(|e| {
                let rec = EvidenceRecord {
                    proto: e.proto,
                    first_ts_us: e.first_ts_us,
                    last_ts_us: e.last_ts_us,
                    count: e.count,
                };
                ((e.field, e.value), rec)
            })
            .collect())
    }
}

#[cfg(test)]
mod epoch_tests;

#[cfg(test)]
mod home_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wardline_common::{Evidence, FlowRecord};

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x00, 0x1a, 0x2b, 0x3c, 0x4d, last])
    }

    fn obs(m: MacAddr, ip: &str, ts: u64, evidence: Vec<Evidence>) -> DeviceObservation {
        DeviceObservation {
            mac: m,
            ips: vec![ip.parse().unwrap()],
            vlans: vec![20],
            first_seen_us: ts,
            last_seen_us: ts + 10,
            packets: 2,
            bytes: 300,
            evidence,
        }
    }

    fn batch(sensor: &str, seq: u64, devices: Vec<DeviceObservation>) -> BatchSummary {
        BatchSummary {
            batch_id: Ulid::from_parts(1_700_000_000_000 + seq, u128::from(seq) + sensor.len() as u128 * 1000),
            sensor_id: sensor.into(),
            site: "north".into(),
            seq,
            devices,
            hosts: vec![],
            bindings: vec![],
            flow_count: 3,
            flow_packets: 30,
            flow_bytes: 3000,
            stats: Some(SensorStats { packets: seq * 100, ..Default::default() }),
        }
    }

    fn apply(state: &mut ClusterState, b: &BatchSummary) -> bool {
        state.apply(&Command::ApplyBatch(b.clone())).applied
    }

    #[test]
    fn merges_observations_from_two_sensors() {
        let mut st = ClusterState::new();
        let hn = |v: &str, ts| Evidence::new(Field::Hostname, v, Proto::Dhcp, ts);
        assert!(apply(&mut st, &batch("s1", 1, vec![obs(mac(1), "10.0.0.5", 100, vec![hn("PUMP-01", 100)])])));
        let mut b2 = batch("s2", 1, vec![obs(mac(1), "10.0.0.6", 50, vec![hn("PUMP-01B", 500)])]);
        b2.site = "south".into();
        assert!(apply(&mut st, &b2));

        let dev = &st.devices[&mac(1)];
        assert_eq!(dev.ips.len(), 2);
        assert_eq!(dev.first_seen_us, 50);
        assert_eq!(dev.last_seen_us, 110);
        assert_eq!(dev.packets, 4);
        assert_eq!(dev.bytes, 600);
        assert_eq!(dev.sensors.iter().collect::<Vec<_>>(), ["s1", "s2"]);
        assert_eq!(dev.sites.iter().collect::<Vec<_>>(), ["north", "south"]);
        // The device's home is north: south's hostname is withheld, not merged (decision 0037).
        assert_eq!(dev.hostname(), Some("PUMP-01"));
        assert_eq!(dev.values(Field::Hostname), ["PUMP-01"]);
        let home = st.homes().get(&mac(1)).unwrap();
        assert_eq!(home.site, "north");
        assert_eq!(home.foreign["south"].withheld[0].value, "PUMP-01B");
        assert!(dev.values(Field::DhcpVendorClass).is_empty());
        assert_eq!(st.sensors["s1"].flows, 3);
        assert_eq!(st.sensors["s2"].site, "south");
    }

    #[test]
    fn repeated_evidence_is_counted_not_duplicated() {
        let mut st = ClusterState::new();
        let vc = |ts| Evidence::new(Field::DhcpVendorClass, "MSFT 5.0", Proto::Dhcp, ts);
        apply(&mut st, &batch("s1", 1, vec![obs(mac(1), "10.0.0.5", 100, vec![vc(100)])]));
        apply(&mut st, &batch("s1", 2, vec![obs(mac(1), "10.0.0.5", 200, vec![vc(250)])]));
        let dev = &st.devices[&mac(1)];
        assert_eq!(dev.evidence.len(), 1);
        let rec = dev.evidence.get(&(Field::DhcpVendorClass, "MSFT 5.0".to_string())).unwrap();
        assert_eq!((rec.count, rec.first_ts_us, rec.last_ts_us), (2, 100, 250));
        assert_eq!(dev.ips.len(), 1);
        let seen = dev.ips.get(&"10.0.0.5".parse::<IpAddr>().unwrap()).unwrap();
        assert_eq!((seen.first_seen_us, seen.last_seen_us), (100, 210));
    }

    #[test]
    fn duplicate_by_seq_and_by_id_is_not_applied() {
        let mut st = ClusterState::new();
        let b1 = batch("s1", 1, vec![obs(mac(1), "10.0.0.5", 100, vec![])]);
        let b2 = batch("s1", 2, vec![obs(mac(1), "10.0.0.5", 100, vec![])]);
        assert!(apply(&mut st, &b1));
        assert!(apply(&mut st, &b2));
        let before = st.clone();
        // Same batch again, an older one again, and the same id under a new seq.
        assert!(!apply(&mut st, &b2));
        assert!(!apply(&mut st, &b1));
        let mut same_id_new_seq = b2.clone();
        same_id_new_seq.seq = 3;
        assert!(!apply(&mut st, &same_id_new_seq));
        assert_eq!(st, before);
        assert_eq!(st.watermark("s1"), 2);
        assert_eq!(st.sensors["s1"].batches_applied, 2);
        assert_eq!(st.devices[&mac(1)].packets, 4);
    }

    #[test]
    fn seq_gaps_are_allowed_and_counted() {
        let mut st = ClusterState::new();
        assert!(apply(&mut st, &batch("s1", 1, vec![])));
        assert!(apply(&mut st, &batch("s1", 5, vec![])));
        assert!(apply(&mut st, &batch("s1", 6, vec![])));
        assert!(apply(&mut st, &batch("s1", 9, vec![])));
        let s = &st.sensors["s1"];
        assert_eq!((s.seq_gaps, s.seqs_skipped, s.last_seq, s.batches_applied), (2, 5, 9, 4));
        // A batch filling a gap arrives late: the watermark already passed it.
        assert!(!apply(&mut st, &batch("s1", 3, vec![])));
        assert_eq!(st.sensors["s1"].stats.packets, 900);
        // Sequences start at 1: seq 0 from an unknown sensor is refused, not an underflow.
        assert!(!apply(&mut st, &batch("s9", 0, vec![])));
        assert!(!st.sensors.contains_key("s9"));
    }

    #[test]
    fn evidence_and_ips_are_capped() {
        let mut st = ClusterState::new();
        let evidence: Vec<Evidence> = (0..MAX_EVIDENCE_PER_DEVICE + 10)
            .map(|i| Evidence::new(Field::DnsQuery, format!("host{i}.example"), Proto::Dns, 1))
            .collect();
        let mut o = obs(mac(1), "10.0.0.1", 1, evidence);
        o.ips = (0..MAX_IPS_PER_DEVICE as u32 + 3)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + i + 1)))
            .collect();
        apply(&mut st, &batch("s1", 1, vec![o]));
        let dev = &st.devices[&mac(1)];
        assert_eq!(dev.evidence.len(), MAX_EVIDENCE_PER_DEVICE);
        assert_eq!(dev.evidence_dropped, 10);
        assert_eq!(dev.ips.len(), MAX_IPS_PER_DEVICE);
        assert_eq!(dev.ips_dropped, 3);
    }

    #[test]
    fn devices_are_found_by_address_and_readers_keep_their_copy() {
        let mut st = ClusterState::new();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        apply(&mut st, &batch("s1", 1, vec![obs(mac(2), "10.0.0.7", 1, vec![]), obs(mac(1), "10.0.0.5", 1, vec![])]));
        assert_eq!(st.device_with_ip(&ip("10.0.0.7")).map(|d| d.mac), Some(mac(2)));
        let held = Arc::clone(st.device(&mac(1)).unwrap());
        // The lease of .7 is handed to mac(1): both used it, the lower MAC answers.
        apply(&mut st, &batch("s1", 2, vec![obs(mac(1), "10.0.0.7", 5, vec![])]));
        assert_eq!(st.device_with_ip(&ip("10.0.0.7")).map(|d| d.mac), Some(mac(1)));
        assert_eq!(st.device_with_ip(&ip("10.0.0.5")).map(|d| d.mac), Some(mac(1)));
        assert!(st.device_with_ip(&ip("10.0.0.6")).is_none());
        assert!(st.device_with_ip(&ip("0.0.0.0")).is_none());
        // A reader's copy is not changed under it; the state moved on.
        assert_eq!((held.packets, held.ips.len()), (2, 1));
        assert_eq!(st.device(&mac(1)).map(|d| (d.packets, d.ips.len())), Some((4, 2)));
    }

    #[test]
    fn recent_ids_are_bounded() {
        let mut st = ClusterState::new();
        for seq in 1..=(RECENT_BATCH_IDS as u64 + 5) {
            apply(&mut st, &batch("s1", seq, vec![]));
        }
        assert_eq!(st.sensors["s1"].recent_batch_ids.len(), RECENT_BATCH_IDS);
    }

    fn ingest(sensor: &str, seq: u64, flows: usize) -> IngestBatch {
        let flow = FlowRecord {
            ip_proto: 17,
            vlan: None,
            a_mac: mac(1),
            b_mac: mac(2),
            a_ip: "10.0.0.1".parse().unwrap(),
            b_ip: "10.0.0.2".parse().unwrap(),
            a_port: 5000,
            b_port: 53,
            first_seen_us: seq,
            last_seen_us: seq + 1,
            packets_ab: 1,
            packets_ba: 1,
            bytes_ab: 60,
            bytes_ba: 90,
            tcp_flags_ab: 0,
            tcp_flags_ba: 0,
            app: "dns".into(),
            end_reason: "idle".into(),
        };
        IngestBatch { summary: batch(sensor, seq, vec![]), flows: vec![flow; flows] }
    }

    #[test]
    fn grouped_batches_apply_in_order_with_per_batch_duplicate_answers() {
        let mut st = ClusterState::new();
        // 2 is re-sent inside the same group; 1 arrives again after 2 (below the watermark).
        let group = vec![ingest("s1", 1, 2), ingest("s1", 2, 3), ingest("s1", 2, 3), ingest("s2", 1, 0)];
        let r = st.apply(&Command::ApplyBatches(group));
        assert_eq!(r.batches, vec![true, true, false, true]);
        assert_eq!(st.watermark("s1"), 2);
        assert_eq!(st.watermark("s2"), 1);
        // Only applied batches with flows enter the outbox, once.
        assert_eq!(st.outbox().entries.len(), 2);
        assert_eq!(st.outbox().rows, 5);
        let r = st.apply(&Command::ApplyBatches(vec![ingest("s1", 1, 2), ingest("s1", 3, 1)]));
        assert_eq!(r.batches, vec![false, true]);
        assert_eq!(st.outbox().rows, 6);
        assert_eq!(st.sensors()["s1"].batches_applied, 3);
    }

    #[test]
    fn drained_entries_leave_the_outbox_and_survive_a_snapshot_round_trip() {
        let mut st = ClusterState::new();
        st.apply(&Command::ApplyBatches((1..=4).map(|seq| ingest("s1", seq, 2)).collect()));
        let keys: Vec<u64> = st.outbox().entries.keys().copied().collect();
        assert_eq!(keys, vec![1, 2, 3, 4]);
        let full = st.outbox().bytes;
        st.apply(&Command::FlowsDrained { through: 2 });
        assert_eq!(st.outbox().entries.keys().copied().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(st.outbox().rows, 4);
        assert!(st.outbox().bytes < full && st.outbox().bytes > 0);
        // A stale drain (a former leader's) changes nothing.
        st.apply(&Command::FlowsDrained { through: 1 });
        assert_eq!(st.outbox().rows, 4);
        let bytes = bincode::serde::encode_to_vec(&st, bincode::config::standard()).unwrap();
        let (back, _): (ClusterState, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, st);
        assert_eq!(back.outbox().entries[&3].seq, 3);
        // Numbering continues after a reload, so a drain never covers a new entry.
        let mut back = back;
        back.apply(&Command::ApplyBatches(vec![ingest("s1", 5, 1)]));
        assert_eq!(back.outbox().entries.keys().copied().collect::<Vec<_>>(), vec![3, 4, 5]);
        back.apply(&Command::FlowsDrained { through: 5 });
        assert_eq!((back.outbox().rows, back.outbox().bytes), (0, 0));
    }

    #[test]
    fn summary_from_wire_batch_totals_flows() {
        let flow = FlowRecord {
            ip_proto: 6,
            vlan: None,
            a_mac: mac(1),
            b_mac: mac(2),
            a_ip: "10.0.0.1".parse().unwrap(),
            b_ip: "10.0.0.2".parse().unwrap(),
            a_port: 40000,
            b_port: 3613,
            first_seen_us: 1,
            last_seen_us: 2,
            packets_ab: 3,
            packets_ba: 4,
            bytes_ab: 100,
            bytes_ba: 200,
            tcp_flags_ab: 0,
            tcp_flags_ba: 0,
            app: "alaris".into(),
            end_reason: "fin".into(),
        };
        let wire = Batch {
            id: Ulid::from_parts(1, 2),
            sensor_id: "s1".into(),
            site: "north".into(),
            seq: 4,
            events: vec![
                Event::Flow(flow.clone()),
                Event::Device(obs(mac(1), "10.0.0.1", 1, vec![])),
                Event::Flow(flow),
                Event::Stats(SensorStats { packets: 7, ..Default::default() }),
            ],
        };
        let s = BatchSummary::from_batch(&wire);
        assert_eq!((s.flow_count, s.flow_packets, s.flow_bytes), (2, 14, 600));
        assert_eq!(s.devices.len(), 1);
        assert_eq!(s.stats.map(|s| s.packets), Some(7));
        assert_eq!((s.seq, s.batch_id), (4, wire.id));
    }

    #[test]
    fn serializes_to_json_and_bincode() {
        let mut st = ClusterState::new();
        let ev = Evidence::new(Field::Hostname, "CT-1", Proto::Dhcp, 5);
        apply(&mut st, &batch("s1", 1, vec![obs(mac(1), "10.0.0.5", 1, vec![ev])]));
        let json = serde_json::to_string(&st).expect("JSON map keys are strings");
        let back: ClusterState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
        let bytes = bincode::serde::encode_to_vec(&st, bincode::config::standard()).unwrap();
        let (back, _): (ClusterState, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, st);
    }

    fn host(ip: &str, ts: u64, evidence: Vec<Evidence>) -> HostObservation {
        HostObservation {
            site: None,
            ip: ip.parse().unwrap(),
            vlan: Some(30),
            via_mac: Some(MacAddr([0, 0, 0x5e, 0, 1, 1])),
            first_seen_us: ts,
            last_seen_us: ts,
            packets: 4,
            bytes: 400,
            evidence,
        }
    }

    fn lease(m: MacAddr, ip: &str, ts: u64, lease_us: u64) -> AddressBinding {
        AddressBinding {
            mac: m,
            ip: ip.parse().unwrap(),
            vlan: Some(30),
            source: wardline_common::wire::BindingSource::DhcpAck,
            seen_us: ts,
            valid_until_us: Some(ts + lease_us),
        }
    }

    fn routed(sensor: &str, seq: u64, hosts: Vec<HostObservation>, bindings: Vec<AddressBinding>) -> BatchSummary {
        BatchSummary { hosts, bindings, ..batch(sensor, seq, vec![]) }
    }

    /// Evidence values attributed to `mac` through host records.
    fn routed_values(st: &ClusterState, m: MacAddr) -> Vec<String> {
        st.hosts_attributed_to(&m)
            .flat_map(|h| {
                h.evidence.keys().filter(|(_, _, o)| *o == Some(m)).map(|(_, v, _)| v.clone()).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn a_snapshot_lists_bindings_by_address_then_site_and_loads_any_order() {
        let mut st = ClusterState::new();
        let leases = vec![lease(mac(1), "10.9.0.6", 100, 1_000), lease(mac(2), "10.9.0.5", 100, 1_000)];
        assert!(apply(&mut st, &routed("access-n", 1, vec![], leases.clone())));
        assert!(apply(&mut st, &BatchSummary { site: "south".into(), ..routed("access-s", 1, vec![], leases) }));
        let mut json = serde_json::to_value(&st).unwrap();
        let listed: Vec<(u64, String)> = json["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b[0][0].as_u64().unwrap(), b[0][1].as_str().unwrap().to_string()))
            .collect();
        let expected = [(0, "10.9.0.5"), (1, "10.9.0.5"), (0, "10.9.0.6"), (1, "10.9.0.6")];
        assert_eq!(listed, expected.map(|(site, ip)| (site, ip.to_string())));
        // Older snapshots listed them by site, then address: the same state loads.
        json["bindings"].as_array_mut().unwrap().reverse();
        let back: ClusterState = serde_json::from_value(json).unwrap();
        assert_eq!(back, st);
        assert_eq!(back.timeline("south", &"10.9.0.6".parse().unwrap()).unwrap().owner_at(200), Some(mac(1)));
        assert_eq!(back.binding_counts(), (4, 4));
    }

    #[test]
    fn a_host_without_binding_is_keyed_by_site_ip_and_vlan() {
        let mut st = ClusterState::new();
        let ae = Evidence::new(Field::DicomCallingAe, "CT_SOUTH", Proto::Dicom, 100);
        assert!(apply(&mut st, &routed("core", 1, vec![host("10.9.0.5", 100, vec![ae])], vec![])));
        let key = HostKey { site: "north".into(), ip: "10.9.0.5".parse().unwrap(), vlan: Some(30) };
        let h = st.host(&key).expect("IP-keyed device");
        assert!(h.has_unowned());
        assert!(st.devices().is_empty(), "never attributed to the router's MAC");
        assert_eq!(key.to_string(), "north:10.9.0.5@30");
        assert_eq!("north:10.9.0.5@30".parse::<DeviceId>(), Ok(DeviceId::Host(key)));
        // Broadcast and unspecified addresses are refused and counted.
        assert!(apply(&mut st, &routed("core", 2, vec![host("255.255.255.255", 1, vec![])], vec![])));
        assert_eq!(st.sensors["core"].hosts_refused, 1);
    }

    #[test]
    fn a_remote_sites_host_is_keyed_at_that_site_and_merged_by_its_bindings() {
        let mut st = ClusterState::new();
        let ae = Evidence::new(Field::DicomCallingAe, "US_CLINIC", Proto::Dicom, 700);
        // The campus core sensor ("north") sees the clinic's ultrasound through the router.
        let remote = HostObservation { site: Some("clinic".into()), vlan: None, ..host("10.41.0.9", 700, vec![ae]) };
        apply(&mut st, &routed("core", 1, vec![remote.clone()], vec![]));
        let key = HostKey { site: "clinic".into(), ip: "10.41.0.9".parse().unwrap(), vlan: None };
        assert!(st.host(&key).expect("keyed at the clinic").has_unowned());
        // A lease seen by a sensor at the campus says nothing about the clinic's address...
        apply(&mut st, &routed("core", 2, vec![], vec![lease(mac(3), "10.41.0.9", 600, 3_600_000_000)]));
        assert!(routed_values(&st, mac(3)).is_empty());
        // ...the clinic's own access sensor's lease does.
        let clinic = BatchSummary {
            site: "clinic".into(),
            ..routed("access", 1, vec![], vec![lease(mac(4), "10.41.0.9", 600, 3_600_000_000)])
        };
        apply(&mut st, &clinic);
        assert_eq!(routed_values(&st, mac(4)), ["US_CLINIC"]);
        // A site name no certificate could carry is refused and counted.
        let bogus = HostObservation { site: Some("x y".into()), ..remote };
        apply(&mut st, &routed("core", 3, vec![bogus], vec![]));
        assert_eq!(st.sensors["core"].hosts_refused, 1);
    }

    #[test]
    fn a_late_binding_moves_the_host_evidence_to_the_mac() {
        let mut st = ClusterState::new();
        let hn = Evidence::new(Field::Hl7SendingApp, "PUMP-GW", Proto::Hl7, 500);
        apply(&mut st, &routed("core", 1, vec![host("10.9.0.5", 500, vec![hn])], vec![]));
        // The access sensor's DHCP ACK arrives afterwards, from another sensor at the site.
        apply(&mut st, &routed("access", 1, vec![], vec![lease(mac(7), "10.9.0.5", 400, 3_600_000_000)]));
        assert_eq!(routed_values(&st, mac(7)), ["PUMP-GW"]);
        let h = st.hosts().values().next().unwrap();
        assert!(!h.has_unowned(), "nothing left on the IP-keyed device");
        assert!(st.devices()[&mac(7)].ips.contains_key(&"10.9.0.5".parse().unwrap()));
    }

    #[test]
    fn a_lease_handed_on_splits_evidence_and_never_merges_the_owners() {
        let ev = |v: &str, ts| Evidence::new(Field::DnsQuery, v, Proto::Dns, ts);
        let hosts = vec![
            host("10.9.0.5", 1_000, vec![ev("a.example", 1_000)]),
            host("10.9.0.5", 9_000, vec![ev("b.example", 9_000)]),
        ];
        let leases = vec![lease(mac(1), "10.9.0.5", 500, 2_000), lease(mac(2), "10.9.0.5", 8_000, 2_000)];
        // Bindings before the hosts, after them, and interleaved: one answer.
        let orders: [Vec<BatchSummary>; 3] = [
            vec![routed("access", 1, vec![], leases.clone()), routed("core", 1, hosts.clone(), vec![])],
            vec![routed("core", 1, hosts.clone(), vec![]), routed("access", 1, vec![], leases.clone())],
            vec![
                routed("access", 1, vec![], vec![leases[1].clone()]),
                routed("core", 1, hosts.clone(), vec![]),
                routed("access", 2, vec![], vec![leases[0].clone()]),
            ],
        ];
        for batches in orders {
            let mut st = ClusterState::new();
            for b in &batches {
                assert!(apply(&mut st, b));
            }
            assert_eq!(routed_values(&st, mac(1)), ["a.example"]);
            assert_eq!(routed_values(&st, mac(2)), ["b.example"]);
            assert!(st.hosts().values().all(|h| !h.has_unowned()));
            assert_eq!(st.devices().len(), 2, "two devices, never merged");
        }
    }

    #[test]
    fn segments_record_each_sensor_and_vlan() {
        let mut st = ClusterState::new();
        apply(&mut st, &batch("s1", 1, vec![obs(mac(1), "10.0.0.5", 100, vec![])]));
        let mut moved = obs(mac(1), "10.0.0.5", 900, vec![]);
        moved.vlans = vec![21];
        apply(&mut st, &batch("s1", 2, vec![moved]));
        let segs: Vec<_> = st.devices()[&mac(1)].segments.iter().map(|(k, s)| (k.vlan, s.first_seen_us)).collect();
        assert_eq!(segs, [(Some(20), 100), (Some(21), 900)]);
    }

    #[test]
    fn a_report_without_new_vlans_stays_on_the_segment_reported_last() {
        let mut st = ClusterState::new();
        // Observations list only VLANs new since the sensor's previous report.
        apply(&mut st, &batch("s1", 1, vec![obs(mac(1), "10.0.0.5", 100, vec![])]));
        let quiet = DeviceObservation { vlans: vec![], ..obs(mac(1), "10.0.0.5", 500, vec![]) };
        apply(&mut st, &batch("s1", 2, vec![quiet.clone()]));
        let moved = DeviceObservation { vlans: vec![21], ..obs(mac(1), "10.0.0.5", 900, vec![]) };
        apply(&mut st, &batch("s1", 3, vec![moved]));
        apply(&mut st, &batch("s1", 4, vec![DeviceObservation { first_seen_us: 950, last_seen_us: 990, ..quiet }]));
        let segs: Vec<_> =
            st.devices()[&mac(1)].segments.iter().map(|(k, s)| (k.vlan, s.first_seen_us, s.last_seen_us)).collect();
        assert_eq!(segs, [(Some(20), 100, 510), (Some(21), 900, 990)], "no untagged segment appears");
    }

    proptest! {
        /// An address handed from one device to another after a silence: whatever order
        /// the core's routed reports and the access sensor's leases arrive in, each owner
        /// gets exactly the stretch of its own time.
        #[test]
        fn a_handed_on_address_splits_its_routed_sightings_in_any_arrival_order(
            first_gaps in proptest::collection::vec(1u64..ROUTED_STRETCH_GAP_US, 1..6),
            silence in ROUTED_STRETCH_GAP_US + 1..ROUTED_RUN_GAP_US,
            second_gaps in proptest::collection::vec(1u64..ROUTED_STRETCH_GAP_US, 1..6),
            lease_a_at in 0usize..12,
            lease_b_at in 0usize..12,
        ) {
            let times = |start: u64, gaps: &[u64]| -> Vec<u64> {
                gaps.iter().scan(start, |t, g| { *t += g; Some(*t) }).collect()
            };
            let a_times = times(1_000_000, &first_gaps);
            let handover = a_times.last().unwrap() + silence / 2;
            let b_times = times(a_times.last().unwrap() + silence, &second_gaps);
            let day = 86_400_000_000;
            let core: Vec<BatchSummary> = a_times
                .iter()
                .chain(&b_times)
                .enumerate()
                .map(|(i, t)| routed("core", i as u64 + 1, vec![host("10.9.0.5", *t, vec![])], vec![]))
                .collect();
            let leases = [
                routed("access", 1, vec![], vec![lease(mac(1), "10.9.0.5", 0, day)]),
                routed("access", 2, vec![], vec![lease(mac(2), "10.9.0.5", handover, day)]),
            ];
            let (first, second) = (lease_a_at.min(lease_b_at).min(core.len()), lease_a_at.max(lease_b_at).min(core.len()));
            let mut interleaved = core.clone();
            interleaved.insert(second, leases[1].clone());
            interleaved.insert(first, leases[0].clone());
            let answer = |batches: &[BatchSummary]| {
                let mut st = ClusterState::new();
                for b in batches {
                    assert!(apply(&mut st, b));
                }
                st.hosts().values().next().unwrap().sightings.clone()
            };
            let leases_first: Vec<BatchSummary> = leases.iter().chain(&core).cloned().collect();
            let expected = answer(&leases_first);
            prop_assert_eq!(&answer(&interleaved), &expected);
            let spans: Vec<_> = expected.iter().map(|(k, s)| (k.owner, s.first_seen_us, s.last_seen_us)).collect();
            prop_assert_eq!(
                spans,
                vec![
                    (Some(mac(1)), a_times[0], *a_times.last().unwrap()),
                    (Some(mac(2)), b_times[0], *b_times.last().unwrap()),
                ]
            );
        }
    }

    #[test]
    fn strong_identifiers_are_indexed_per_holder() {
        let mut st = ClusterState::new();
        let eui = |ts| Evidence::new(Field::Hl7SendingAppUniversalId, "0012345678ABCDEF", Proto::Hl7, ts);
        apply(
            &mut st,
            &batch("s1", 1, vec![obs(mac(1), "10.0.0.5", 1, vec![eui(1)]), obs(mac(2), "10.0.1.5", 1, vec![eui(2)])]),
        );
        let id = (Field::Hl7SendingAppUniversalId, "0012345678ABCDEF".to_string());
        assert_eq!(st.holders_of(&id).map(|h| h.len()), Some(2));
        let (links, ambiguous) = identity::links_of(&st, &st.devices()[&mac(1)]);
        assert_eq!(links.iter().map(|l| l.mac).collect::<Vec<_>>(), [mac(2)]);
        assert!(ambiguous.is_empty());
    }

    #[test]
    fn identifiers_held_too_widely_link_nothing_and_dicom_needs_ae_and_uid() {
        let mut st = ClusterState::new();
        let engine = |ts| Evidence::new(Field::SnmpV3EngineId, "80001f8880e9630000d61ff449", Proto::Snmp, ts);
        let devices =
            (1..=(identity::MAX_IDENTITY_GROUP as u8 + 1)).map(|m| obs(mac(m), "10.0.0.9", 1, vec![engine(1)]));
        apply(&mut st, &batch("s1", 1, devices.collect()));
        let (links, ambiguous) = identity::links_of(&st, &st.devices()[&mac(1)]);
        assert!(links.is_empty(), "a default engine id shared by five records links none");
        assert_eq!(ambiguous.len(), 1);

        let ae = |ts| Evidence::new(Field::DicomCallingAe, "CT_EAST", Proto::Dicom, ts);
        let uid = |ts| Evidence::new(Field::DicomImplClassUid, "1.2.840.113619.6.336", Proto::Dicom, ts);
        let hostname = |ts| Evidence::new(Field::Hostname, "CT-EAST", Proto::Dhcp, ts);
        apply(&mut st, &batch("s1", 2, vec![obs(mac(20), "10.0.2.1", 1, vec![ae(1), hostname(1)])]));
        apply(&mut st, &batch("s1", 3, vec![obs(mac(21), "10.0.2.2", 1, vec![ae(1), hostname(1)])]));
        let (links, _) = identity::links_of(&st, &st.devices()[&mac(20)]);
        assert!(links.is_empty(), "an AE title alone or a shared hostname is not an identity");
        apply(
            &mut st,
            &batch("s1", 4, vec![obs(mac(20), "10.0.2.1", 2, vec![uid(2)]), obs(mac(21), "10.0.2.2", 2, vec![uid(2)])]),
        );
        let (links, _) = identity::links_of(&st, &st.devices()[&mac(20)]);
        assert_eq!(
            links.iter().map(|l| (l.mac, l.value.as_str())).collect::<Vec<_>>(),
            [(mac(21), "CT_EAST|1.2.840.113619.6.336")]
        );
    }

    #[test]
    fn an_older_state_format_is_refused_with_a_message() {
        #[derive(Serialize)]
        struct OldState {
            devices: Vec<u8>,
            sensors: BTreeMap<String, u8>,
        }
        let old = bincode::serde::encode_to_vec(
            OldState { devices: vec![1, 2, 3], sensors: BTreeMap::new() },
            bincode::config::standard(),
        )
        .unwrap();
        let err = bincode::serde::decode_from_slice::<ClusterState, _>(&old, bincode::config::standard()).unwrap_err();
        assert!(err.to_string().contains("this build reads formats"), "{err}");
        // A newer format is refused too.
        let mut newer = bincode::serde::encode_to_vec(ClusterState::new(), bincode::config::standard()).unwrap();
        let next = bincode::serde::encode_to_vec(STATE_FORMAT + 1, bincode::config::standard()).unwrap();
        let current = bincode::serde::encode_to_vec(STATE_FORMAT, bincode::config::standard()).unwrap();
        assert_eq!(newer[..current.len()], current[..]);
        newer.splice(..current.len(), next);
        let err =
            bincode::serde::decode_from_slice::<ClusterState, _>(&newer, bincode::config::standard()).unwrap_err();
        assert!(err.to_string().contains("newer Wardline version"), "{err}");
    }

    /// A snapshot of format 3 (written before alerts and baselines existed) loads with both
    /// empty and everything else intact: a node of this version installs an older node's
    /// snapshot when it joins its cluster.
    #[test]
    fn older_snapshot_formats_migrate_with_the_parts_they_lack_empty() {
        let mut st = ClusterState::new();
        let ev = Evidence::new(Field::Hostname, "ct-1", Proto::Dhcp, 5);
        st.apply(&Command::ApplyBatch(batch("s1", 1, vec![obs(mac(1), "10.0.0.1", 5, vec![ev])])));
        st.apply(&Command::ApplyBatches((2..=4).map(|seq| ingest("s1", seq, 2)).collect()));
        assert!(!st.devices().is_empty() && !st.outbox().entries.is_empty());
        #[derive(Serialize)]
        struct PartsV3<'a> {
            format: u32,
            #[serde(serialize_with = "arc_values_as_list::serialize")]
            devices: &'a BTreeMap<MacAddr, Arc<DeviceRecord>>,
            sensors: &'a BTreeMap<String, SensorRecord>,
            #[serde(serialize_with = "arc_values_as_list::serialize")]
            hosts: &'a BTreeMap<HostKey, Arc<HostRecord>>,
            bindings: BindingsList<'a>,
            site_names: &'a Vec<String>,
            tokens: &'a tokens::TokenStore,
            audit: &'a audit::AuditLog,
            outbox: &'a FlowOutbox,
        }
        let v3 = PartsV3 {
            format: OLDEST_STATE_FORMAT,
            devices: &st.devices,
            sensors: &st.sensors,
            hosts: &st.hosts,
            bindings: BindingsList(&st.addresses),
            site_names: &st.site_names,
            tokens: &st.tokens,
            audit: &st.audit,
            outbox: &st.outbox,
        };
        let bytes = bincode::serde::encode_to_vec(&v3, bincode::config::standard()).unwrap();
        let (back, used): (ClusterState, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(used, bytes.len());
        let expected = ClusterState {
            alerts: Default::default(),
            baselines: Default::default(),
            detectors: Default::default(),
            homes: Default::default(),
            ..st.clone()
        };
        assert_eq!(back, expected);
        assert_eq!(back.devices(), st.devices());

        // Format 4 (alerts and baselines, no policy yet): its alerts and baselines load too.
        #[derive(Serialize)]
        struct PartsV4<'a> {
            v3: PartsV3<'a>,
            alerts: &'a alerts::AlertStore,
            baselines: &'a anomaly::Baselines,
        }
        let v4 = PartsV4 {
            v3: PartsV3 { format: 0x574c_0004, bindings: BindingsList(&st.addresses), ..v3 },
            alerts: &st.alerts,
            baselines: &st.baselines,
        };
        let bytes = bincode::serde::encode_to_vec(&v4, bincode::config::standard()).unwrap();
        let (back, used): (ClusterState, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(used, bytes.len());
        let lacking = ClusterState { homes: Default::default(), ..st.clone() };
        assert_eq!(back, ClusterState { policy: Default::default(), detectors: Default::default(), ..lacking.clone() });

        // Format 6 (policy and feeds, before the second detectors): all of it loads, and the
        // detectors start with default settings and nothing learned.
        #[derive(Serialize)]
        struct PartsV6<'a> {
            v4: PartsV4<'a>,
            policy: &'a policy::PolicyStore,
            vulnfeeds: &'a vulnfeeds::VulnFeeds,
        }
        let v6 = PartsV6 {
            v4: PartsV4 {
                v3: PartsV3 { format: 0x574c_0006, bindings: BindingsList(&st.addresses), ..v4.v3 },
                alerts: &st.alerts,
                baselines: &st.baselines,
            },
            policy: &st.policy,
            vulnfeeds: &st.vulnfeeds,
        };
        assert!(st.detectors().traffic(&mac(1)).is_some(), "the current state has learned traffic");
        let bytes = bincode::serde::encode_to_vec(&v6, bincode::config::standard()).unwrap();
        let (back, used): (ClusterState, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, ClusterState { detectors: Default::default(), ..lacking });
    }

    /// A sensor's stream of batches: increasing seq with random forward gaps, a small
    /// pool of MACs and evidence values so merges collide.
    fn arb_commands() -> impl Strategy<Value = Vec<Command>> {
        let ev = (0usize..4, 0u8..4, 0u64..1000).prop_map(|(f, v, ts)| {
            let field = [Field::Hostname, Field::DhcpVendorClass, Field::DnsQuery, Field::HttpUserAgent][f];
            Evidence::new(field, format!("v{v}"), Proto::Dhcp, ts)
        });
        let device = (0u8..5, 0u8..4, 0u64..1000, 0u64..50, proptest::collection::vec(ev, 0..4)).prop_map(
            |(m, ip, ts, pkts, evidence)| DeviceObservation {
                mac: mac(m),
                ips: vec![IpAddr::from([10, 0, 0, ip])],
                vlans: vec![u16::from(m % 2) + 10],
                first_seen_us: ts,
                last_seen_us: ts + pkts,
                packets: pkts,
                bytes: pkts * 60,
                evidence,
            },
        );
        let host_ev =
            (0u8..4, 0u64..1000).prop_map(|(v, ts)| Evidence::new(Field::DnsQuery, format!("h{v}"), Proto::Dns, ts));
        let host = (0u8..4, 0u64..1000, proptest::collection::vec(host_ev, 0..3)).prop_map(|(ip, ts, evidence)| {
            HostObservation {
                site: None,
                ip: IpAddr::from([10, 9, 0, ip]),
                vlan: Some(30),
                via_mac: Some(mac(200)),
                first_seen_us: ts,
                last_seen_us: ts + 5,
                packets: 1,
                bytes: 60,
                evidence,
            }
        });
        let binding = (0u8..5, 0u8..4, 0u64..1000, proptest::option::of(1u64..500)).prop_map(|(m, ip, ts, lease)| {
            AddressBinding {
                mac: mac(m),
                ip: IpAddr::from([10, 9, 0, ip]),
                vlan: Some(30),
                source: wardline_common::wire::BindingSource::Arp,
                seen_us: ts,
                valid_until_us: lease.map(|l| ts + l),
            }
        });
        let step = (
            0usize..3,
            1u64..4,
            proptest::collection::vec(device, 0..3),
            0u64..5,
            proptest::collection::vec(host, 0..3),
            proptest::collection::vec(binding, 0..3),
        );
        proptest::collection::vec(step, 1..40).prop_map(|steps| {
            let sensors = ["s1", "s2", "s3"];
            let mut next_seq = [0u64; 3];
            steps
                .into_iter()
                .map(|(s, gap, devices, flows, hosts, bindings)| {
                    next_seq[s] += gap;
                    let seq = next_seq[s];
                    Command::ApplyBatch(BatchSummary {
                        batch_id: Ulid::from_parts(seq, (s as u128) << 64 | u128::from(seq)),
                        sensor_id: sensors[s].into(),
                        site: format!("site{}", s % 2),
                        seq,
                        devices,
                        hosts,
                        bindings,
                        flow_count: flows,
                        flow_packets: flows * 10,
                        flow_bytes: flows * 1000,
                        stats: (flows % 2 == 0).then(|| SensorStats { packets: seq, ..Default::default() }),
                    })
                })
                .collect()
        })
    }

    fn apply_all(cmds: &[Command]) -> (ClusterState, usize) {
        let mut st = ClusterState::new();
        let applied = cmds.iter().filter(|c| st.apply(c).applied).count();
        (st, applied)
    }

    proptest! {
        /// A group (cut anywhere, with repeats) leaves the same inventory and watermarks as
        /// the batches one by one, and answers each batch as the single command would.
        #[test]
        fn grouped_apply_equals_one_by_one(cmds in arb_commands(), cut in 0usize..40, repeat in 0usize..40) {
            let mut with_repeat = cmds.clone();
            with_repeat.insert(repeat.min(cmds.len()), cmds[cut % cmds.len()].clone());
            let mut single = ClusterState::new();
            let answers: Vec<bool> = with_repeat.iter().map(|c| single.apply(c).applied).collect();
            let batches: Vec<IngestBatch> = with_repeat
                .iter()
                .map(|c| match c {
                    Command::ApplyBatch(b) => IngestBatch { summary: b.clone(), flows: Vec::new() },
                    other => unreachable!("{other:?}"),
                })
                .collect();
            let (head, tail) = batches.split_at(cut.min(batches.len()));
            let mut grouped = ClusterState::new();
            let mut grouped_answers = grouped.apply(&Command::ApplyBatches(head.to_vec())).batches;
            grouped_answers.extend(grouped.apply(&Command::ApplyBatches(tail.to_vec())).batches);
            prop_assert_eq!(grouped_answers, answers);
            prop_assert_eq!(grouped, single);
        }

        #[test]
        fn applying_twice_equals_applying_once(cmds in arb_commands()) {
            let (once, applied_once) = apply_all(&cmds);
            prop_assert_eq!(applied_once, cmds.len());
            let twice: Vec<Command> = cmds.iter().chain(cmds.iter()).cloned().collect();
            let (st, applied) = apply_all(&twice);
            prop_assert_eq!(applied, cmds.len());
            prop_assert_eq!(st, once);
        }

        #[test]
        fn address_index_agrees_with_a_scan_after_apply_and_decode(cmds in arb_commands()) {
            let (st, _) = apply_all(&cmds);
            let bytes = bincode::serde::encode_to_vec(&st, bincode::config::standard()).unwrap();
            let (decoded, _): (ClusterState, usize) =
                bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
            // Every derived index (addresses, attribution, identifiers, sites) is rebuilt
            // on load exactly as apply maintained it.
            prop_assert_eq!(&decoded, &st);
            for ip in (0..5).map(|i| IpAddr::from([10, 0, 0, i])) {
                let scanned = st.devices().values().find(|d| d.ips.contains_key(&ip)).map(|d| d.mac);
                prop_assert_eq!(st.device_with_ip(&ip).map(|d| d.mac), scanned);
                prop_assert_eq!(decoded.device_with_ip(&ip).map(|d| d.mac), scanned);
            }
        }

        /// Every piece of every host record belongs to the owner its address had at the
        /// piece's time, whatever order hosts and bindings arrived in.
        #[test]
        fn host_pieces_belong_to_the_owner_at_their_time(cmds in arb_commands()) {
            let (st, _) = apply_all(&cmds);
            for h in st.hosts().values() {
                let timeline = st.timeline(&h.key.site, &h.key.ip);
                let owner_at = |ts| timeline.as_ref().and_then(|t| t.owner_at(ts));
                for ((_, _, owner), rec) in &h.evidence {
                    prop_assert_eq!(*owner, owner_at(rec.last_ts_us));
                }
                for (k, seen) in &h.sightings {
                    prop_assert_eq!(k.owner, owner_at(seen.last_seen_us));
                }
                for owner in h.owners() {
                    prop_assert!(st.hosts_attributed_to(&owner).any(|o| o.key == h.key));
                }
            }
        }

        #[test]
        fn injected_duplicates_change_nothing(
            cmds in arb_commands(),
            dups in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..20),
        ) {
            let (once, _) = apply_all(&cmds);
            // Re-insert copies of earlier commands at random later positions, as a sensor
            // re-sending unacknowledged batches would.
            let mut with_dups = cmds.clone();
            for (which, offset) in &dups {
                let src = which.index(with_dups.len());
                let copy = with_dups[src].clone();
                let at = src + 1 + offset.index(with_dups.len() - src);
                with_dups.insert(at, copy);
            }
            let (st, applied) = apply_all(&with_dups);
            prop_assert_eq!(applied, cmds.len());
            prop_assert_eq!(st, once);
        }
    }
}
