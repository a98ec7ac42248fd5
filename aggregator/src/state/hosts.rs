//! Devices known by address: what sensors saw of a host without its own MAC (through a
//! router, or on a link without MACs), keyed by (site, IP, VLAN).
//!
//! Every piece of a host record carries its owner: the MAC that owned the address (at the
//! site's binding timeline) at the piece's time, or `None`. Owned pieces belong to that
//! MAC's device (the read side joins them in); unowned pieces form the IP-keyed device.
//! When the timeline changes, `reattribute` recomputes every owner, so evidence that came
//! before its binding moves to the MAC, and evidence after a lease was handed on moves to
//! the new owner. Pieces are kept per owner, so two owners' evidence is never mixed.

use super::bindings::AddressTimeline;
use super::vecmap::VecMap;
use super::{EvidenceRecord, MAX_EVIDENCE_PER_DEVICE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use wardline_common::wire::HostObservation;
use wardline_common::{Field, MacAddr};

/// Routed sightings kept per host record (sensor × router × owner × stretch); beyond this
/// a report extends the latest stretch within `ROUTED_RUN_GAP_US`, else it is counted in
/// `sightings_dropped`.
pub const MAX_ROUTED_SIGHTINGS: usize = 32;
/// A report more than this after a stretch's last packet starts a new stretch. Stretches
/// are what lets a late binding give each part of the sightings to the owner of its own
/// time: an address handed to another device goes quiet between the release (or lease
/// end) and the new owner's first packet, so one stretch holds one owner's packets, in
/// whatever order sightings and bindings arrive.
pub const ROUTED_STRETCH_GAP_US: u64 = 60 * 1_000_000;
/// Stretches of one owner, sensor and router less than this apart form one run: what the
/// history shows as a connection (the read side joins them).
pub const ROUTED_RUN_GAP_US: u64 = 15 * 60 * 1_000_000;

/// The key of an IP-keyed device. Displayed (and parsed by the API) as `site:ip` or
/// `site:ip@vlan`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostKey {
    /// The site of the reporting sensor (from its certificate).
    pub site: String,
    pub ip: IpAddr,
    pub vlan: Option<u16>,
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.site, self.ip)?;
        match self.vlan {
            Some(vlan) => write!(f, "@{vlan}"),
            None => Ok(()),
        }
    }
}

/// One sensor's view of a routed host, for the part owned by `owner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedSeen {
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// Which sensor saw the host, through which router MAC, attributed to which owner, in the
/// stretch of sightings that started at `run_start_us`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoutedKey {
    pub sensor: String,
    pub via_mac: Option<MacAddr>,
    pub owner: Option<MacAddr>,
    pub run_start_us: u64,
}

/// Everything sensors reported about one (site, IP, VLAN) without its MAC.
///
/// The maps are sorted vectors (serialized as lists of pairs, as before): most host records
/// hold a few pieces, and a `BTreeMap` allocates room for eleven.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub key: HostKey,
    pub evidence: VecMap<(Field, String, Option<MacAddr>), EvidenceRecord>,
    pub evidence_dropped: u64,
    pub sightings: VecMap<RoutedKey, RoutedSeen>,
    pub sightings_dropped: u64,
}

impl HostRecord {
    pub fn new(key: HostKey) -> Self {
        HostRecord { key, evidence: VecMap::new(), evidence_dropped: 0, sightings: VecMap::new(), sightings_dropped: 0 }
    }

    /// Every MAC some piece of this record is attributed to.
    pub fn owners(&self) -> BTreeSet<MacAddr> {
        let from_evidence = self.evidence.keys().filter_map(|(_, _, owner)| *owner);
        let from_sightings = self.sightings.keys().filter_map(|k| k.owner);
        from_evidence.chain(from_sightings).collect()
    }

    /// Whether some piece belongs to no MAC, so the IP-keyed device is listed.
    pub fn has_unowned(&self) -> bool {
        self.evidence.keys().any(|(_, _, owner)| owner.is_none()) || self.sightings.keys().any(|k| k.owner.is_none())
    }

    /// Merge one observation; each piece goes to the owner at its own time.
    pub fn merge(&mut self, obs: &HostObservation, sensor_id: &str, timeline: Option<&AddressTimeline>) {
        let owner_at = |ts: u64| timeline.and_then(|t| t.owner_at(ts));
        let mut key = RoutedKey {
            sensor: sensor_id.to_string(),
            via_mac: obs.via_mac,
            owner: owner_at(obs.last_seen_us),
            run_start_us: obs.first_seen_us,
        };
        // Continue the stretch this report falls in (or right after), if any; in a full
        // record, the latest stretch of the same run rather than dropping the report.
        let gap = if self.sightings.len() >= MAX_ROUTED_SIGHTINGS { ROUTED_RUN_GAP_US } else { ROUTED_STRETCH_GAP_US };
        let run_of = RoutedKey { run_start_us: obs.first_seen_us, ..key.clone() };
        let first_of = RoutedKey { run_start_us: 0, ..key.clone() };
        if let Some((run, _)) = self
            .sightings
            .range_inclusive(&first_of, &run_of)
            .next_back()
            .filter(|(_, s)| s.last_seen_us.saturating_add(gap) >= obs.first_seen_us)
        {
            key = run.clone();
        }
        let seen = RoutedSeen {
            first_seen_us: obs.first_seen_us,
            last_seen_us: obs.last_seen_us,
            packets: obs.packets,
            bytes: obs.bytes,
        };
        self.add_sighting(key, seen);
        for ev in &obs.evidence {
            let rec = EvidenceRecord { proto: ev.proto, first_ts_us: ev.ts_us, last_ts_us: ev.ts_us, count: 1 };
            self.add_evidence((ev.field, ev.value.clone(), owner_at(ev.ts_us)), rec);
        }
    }

    /// Recompute every piece's owner against `timeline` (each piece at its latest time).
    /// Returns whether anything moved.
    pub fn reattribute(&mut self, timeline: &AddressTimeline) -> bool {
        let moved_evidence =
            self.evidence.iter().any(|((_, _, owner), rec)| *owner != timeline.owner_at(rec.last_ts_us));
        let moved_sightings = self.sightings.iter().any(|(k, seen)| k.owner != timeline.owner_at(seen.last_seen_us));
        if moved_evidence {
            for ((field, value, _), rec) in std::mem::take(&mut self.evidence) {
                let owner = timeline.owner_at(rec.last_ts_us);
                self.add_evidence((field, value, owner), rec);
            }
        }
        if moved_sightings {
            for (k, seen) in std::mem::take(&mut self.sightings) {
                let owner = timeline.owner_at(seen.last_seen_us);
                self.add_sighting(RoutedKey { owner, ..k }, seen);
            }
        }
        moved_evidence || moved_sightings
    }

    fn add_sighting(&mut self, key: RoutedKey, seen: RoutedSeen) {
        let full = self.sightings.len() >= MAX_ROUTED_SIGHTINGS;
        match self.sightings.get_mut(&key) {
            Some(s) => {
                s.first_seen_us = s.first_seen_us.min(seen.first_seen_us);
                s.last_seen_us = s.last_seen_us.max(seen.last_seen_us);
                s.packets = s.packets.saturating_add(seen.packets);
                s.bytes = s.bytes.saturating_add(seen.bytes);
            }
            None if full => self.sightings_dropped = self.sightings_dropped.saturating_add(1),
            None => {
                self.sightings.insert(key, seen);
            }
        }
    }

    fn add_evidence(&mut self, key: (Field, String, Option<MacAddr>), rec: EvidenceRecord) {
        let full = self.evidence.len() >= MAX_EVIDENCE_PER_DEVICE;
        match self.evidence.get_mut(&key) {
            Some(existing) => existing.absorb(&rec),
            None if full => self.evidence_dropped = self.evidence_dropped.saturating_add(1),
            None => {
                self.evidence.insert(key, rec);
            }
        }
    }
}
