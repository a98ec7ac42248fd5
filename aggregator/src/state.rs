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

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use ulid::Ulid;
use wardline_common::{Batch, DeviceObservation, Event, Field, MacAddr, Proto, SensorStats};

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    ApplyBatch(BatchSummary),
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
    pub flow_count: u64,
    pub flow_packets: u64,
    pub flow_bytes: u64,
    /// The last stats event of the batch, if it carried one.
    pub stats: Option<SensorStats>,
}

impl BatchSummary {
    /// Summarize a wire batch: keep device observations, total the flows, keep the latest
    /// stats event.
    pub fn from_batch(batch: &Batch) -> Self {
        let mut summary = BatchSummary {
            batch_id: batch.id,
            sensor_id: batch.sensor_id.clone(),
            site: batch.site.clone(),
            seq: batch.seq,
            devices: Vec::new(),
            flow_count: 0,
            flow_packets: 0,
            flow_bytes: 0,
            stats: None,
        };
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
                // TODO(i9-agg): hosts and bindings into the replicated state.
                Event::Host(_) | Event::Binding(_) => {}
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

/// Everything the cluster knows about one MAC address, merged from every sensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub mac: MacAddr,
    pub ips: BTreeMap<IpAddr, IpSeen>,
    pub ips_dropped: u64,
    pub vlans: BTreeSet<u16>,
    pub sites: BTreeSet<String>,
    pub sensors: BTreeSet<String>,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Serialized as a list because JSON map keys must be strings.
    #[serde(with = "evidence_as_list")]
    pub evidence: BTreeMap<(Field, String), EvidenceRecord>,
    pub evidence_dropped: u64,
}

impl DeviceRecord {
    pub fn new(mac: MacAddr) -> Self {
        DeviceRecord {
            mac,
            ips: BTreeMap::new(),
            ips_dropped: 0,
            vlans: BTreeSet::new(),
            sites: BTreeSet::new(),
            sensors: BTreeSet::new(),
            first_seen_us: 0,
            last_seen_us: 0,
            packets: 0,
            bytes: 0,
            evidence: BTreeMap::new(),
            evidence_dropped: 0,
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
            .range((field, String::new())..)
            .take_while(move |((f, _), _)| *f == field)
            .map(|((_, value), rec)| (value.as_str(), rec))
    }

    /// Merge one observation; returns the addresses recorded for the first time.
    fn merge(&mut self, obs: &DeviceObservation, sensor_id: &str, site: &str) -> Vec<IpAddr> {
        let mut new_ips = Vec::new();
        let first_sighting = self.sensors.is_empty();
        self.sensors.insert(sensor_id.to_string());
        self.sites.insert(site.to_string());
        self.vlans.extend(obs.vlans.iter().copied());
        if first_sighting || obs.first_seen_us < self.first_seen_us {
            self.first_seen_us = obs.first_seen_us;
        }
        self.last_seen_us = self.last_seen_us.max(obs.last_seen_us);
        // Observations carry the counts since the sensor's previous report.
        self.packets = self.packets.saturating_add(obs.packets);
        self.bytes = self.bytes.saturating_add(obs.bytes);

        for ip in &obs.ips {
            // 0.0.0.0 / :: are "no address yet" (DHCP discover), not an address in use.
            if ip.is_unspecified() {
                continue;
            }
            let full = self.ips.len() >= MAX_IPS_PER_DEVICE;
            match self.ips.get_mut(ip) {
                Some(seen) => {
                    seen.first_seen_us = seen.first_seen_us.min(obs.first_seen_us);
                    seen.last_seen_us = seen.last_seen_us.max(obs.last_seen_us);
                }
                None if full => {
                    self.ips_dropped = self.ips_dropped.saturating_add(1);
                }
                None => {
                    self.ips.insert(*ip, IpSeen { first_seen_us: obs.first_seen_us, last_seen_us: obs.last_seen_us });
                    new_ips.push(*ip);
                }
            }
        }

        for ev in &obs.evidence {
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
}

/// The whole replicated state. Cloned and serialized for Raft snapshots.
///
/// Device records sit behind `Arc`s and `apply` changes them copy-on-write
/// (`Arc::make_mut`): a reader copies the `Arc`s it needs under the state lock and does its
/// work after releasing it, and a record a reader still holds is copied, not mutated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "ReplicatedParts")]
pub struct ClusterState {
    /// Serialized as a list of records (each names its MAC) because JSON map keys must be
    /// strings.
    #[serde(serialize_with = "devices_as_list::serialize")]
    devices: BTreeMap<MacAddr, Arc<DeviceRecord>>,
    sensors: BTreeMap<String, SensorRecord>,
    /// Every (address, MAC) of `devices[MAC].ips`, so a device is found by address without
    /// scanning every record. Derived from `devices`: not serialized, rebuilt on load.
    #[serde(skip)]
    addresses: BTreeSet<(IpAddr, MacAddr)>,
}

/// What a serialized `ClusterState` holds; the address index is rebuilt from it.
#[derive(Deserialize)]
struct ReplicatedParts {
    #[serde(deserialize_with = "devices_as_list::deserialize")]
    devices: BTreeMap<MacAddr, Arc<DeviceRecord>>,
    sensors: BTreeMap<String, SensorRecord>,
}

impl From<ReplicatedParts> for ClusterState {
    fn from(parts: ReplicatedParts) -> Self {
        let addresses = parts.devices.values().flat_map(|d| d.ips.keys().map(|ip| (*ip, d.mac))).collect();
        ClusterState { devices: parts.devices, sensors: parts.sensors, addresses }
    }
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every device, by MAC.
    pub fn devices(&self) -> &BTreeMap<MacAddr, Arc<DeviceRecord>> {
        &self.devices
    }

    pub fn device(&self, mac: &MacAddr) -> Option<&Arc<DeviceRecord>> {
        self.devices.get(mac)
    }

    /// The device seen using `ip`. When several were (a router's MAC fronting the address,
    /// a lease handed on), the lowest MAC, so every node picks the same one.
    pub fn device_with_ip(&self, ip: &IpAddr) -> Option<&Arc<DeviceRecord>> {
        let (_, mac) =
            self.addresses.range((*ip, MacAddr::default())..).next().filter(|(owner_ip, _)| owner_ip == ip)?;
        self.devices.get(mac)
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

    /// Apply one command. Deterministic: same state + same command = same result.
    pub fn apply(&mut self, cmd: &Command) -> ApplyResponse {
        match cmd {
            Command::ApplyBatch(batch) => self.apply_batch(batch),
        }
    }

    fn apply_batch(&mut self, batch: &BatchSummary) -> ApplyResponse {
        if self.is_duplicate(batch) {
            return ApplyResponse { applied: false };
        }
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

        for obs in &batch.devices {
            let record = self.devices.entry(obs.mac).or_insert_with(|| Arc::new(DeviceRecord::new(obs.mac)));
            let new_ips = Arc::make_mut(record).merge(obs, &batch.sensor_id, &batch.site);
            self.addresses.extend(new_ips.into_iter().map(|ip| (ip, obs.mac)));
        }
        ApplyResponse { applied: true }
    }
}

mod devices_as_list {
    use super::DeviceRecord;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use wardline_common::MacAddr;

    pub fn serialize<S: Serializer>(map: &BTreeMap<MacAddr, Arc<DeviceRecord>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values().map(|rec| &**rec))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<MacAddr, Arc<DeviceRecord>>, D::Error> {
        let list = Vec::<DeviceRecord>::deserialize(d)?;
        Ok(list.into_iter().map(|rec| (rec.mac, Arc::new(rec))).collect())
    }
}

mod evidence_as_list {
    use super::EvidenceRecord;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;
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

    pub fn serialize<S: Serializer>(map: &BTreeMap<(Field, String), EvidenceRecord>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter().map(|((field, value), rec)| Entry {
            field: *field,
            value,
            proto: rec.proto,
            first_ts_us: rec.first_ts_us,
            last_ts_us: rec.last_ts_us,
            count: rec.count,
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<(Field, String), EvidenceRecord>, D::Error> {
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
        assert_eq!(dev.hostname(), Some("PUMP-01B"));
        assert_eq!(dev.values(Field::Hostname), ["PUMP-01", "PUMP-01B"]);
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
        let rec = &dev.evidence[&(Field::DhcpVendorClass, "MSFT 5.0".to_string())];
        assert_eq!((rec.count, rec.first_ts_us, rec.last_ts_us), (2, 100, 250));
        assert_eq!(dev.ips.len(), 1);
        let seen = dev.ips[&"10.0.0.5".parse::<IpAddr>().unwrap()];
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
        let step = (0usize..3, 1u64..4, proptest::collection::vec(device, 0..3), 0u64..5);
        proptest::collection::vec(step, 1..40).prop_map(|steps| {
            let sensors = ["s1", "s2", "s3"];
            let mut next_seq = [0u64; 3];
            steps
                .into_iter()
                .map(|(s, gap, devices, flows)| {
                    next_seq[s] += gap;
                    let seq = next_seq[s];
                    Command::ApplyBatch(BatchSummary {
                        batch_id: Ulid::from_parts(seq, (s as u128) << 64 | u128::from(seq)),
                        sensor_id: sensors[s].into(),
                        site: format!("site{}", s % 2),
                        seq,
                        devices,
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
            for ip in (0..5).map(|i| IpAddr::from([10, 0, 0, i])) {
                let scanned = st.devices().values().find(|d| d.ips.contains_key(&ip)).map(|d| d.mac);
                prop_assert_eq!(st.device_with_ip(&ip).map(|d| d.mac), scanned);
                prop_assert_eq!(decoded.device_with_ip(&ip).map(|d| d.mac), scanned);
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
