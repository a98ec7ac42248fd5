//! One device as the API shows it: a MAC device with the routed pieces attributed to it,
//! or an IP-keyed device with the pieces no MAC owns; where each sensor saw it; the records
//! linked to it by strong identifiers; and its history.
//!
//! Everything is copied out of the state under one short hold of the lock
//! (`DeviceSnapshot`), then combined after it is released. Answers are functions of the
//! applied state, so two nodes at the same index answer the same.

use super::views::{HistoryEvent, HistoryKind, HistoryView, HostKeyView, IdentityLinkView, SightingView};
use crate::state::{
    identity, AddressTimeline, ClusterState, DeviceId, DeviceRecord, EvidenceRecord, HostRecord, RoutedKey, RoutedSeen,
    ROUTED_RUN_GAP_US,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use wardline_common::{Field, MacAddr};

/// A sighting whose last packet is this long before its sensor's latest reported packet
/// counts as a disconnection (the sensor is still reporting, the device went quiet). The
/// same gap that starts a new run of routed sightings.
pub const DISCONNECTED_AFTER_US: u64 = ROUTED_RUN_GAP_US;
/// Events returned by one history answer (newest kept); older ones are counted in `dropped`.
pub const MAX_HISTORY_EVENTS: usize = 256;
/// The MAC an IP-keyed device is classified under: a group address, so no vendor, OUI
/// rule or operator override can match it.
pub const NO_MAC: MacAddr = MacAddr::BROADCAST;

/// What a device answer needs, copied out of the state.
pub struct DeviceSnapshot {
    pub id: DeviceId,
    /// The MAC record (absent for an IP-keyed device).
    pub own: Option<Arc<DeviceRecord>>,
    /// Host records with pieces for this device: attributed to the MAC, or the IP-keyed
    /// device's own record.
    pub hosts: Vec<Arc<HostRecord>>,
    /// Site name of each segment sighting, in `own.segments` order.
    pub segment_sites: Vec<String>,
    pub links: Vec<identity::IdentityLink>,
    pub ambiguous: Vec<(Field, String)>,
    /// Latest reported packet time per sensor that saw the device.
    pub sensor_latest_us: BTreeMap<String, u64>,
    /// (site, ip, timeline) of every address of the device that has bindings.
    pub timelines: Vec<(String, IpAddr, AddressTimeline)>,
    /// The MAC device's home site and other sites' withheld sightings (decision 0037).
    pub home: Option<crate::state::home::DeviceHome>,
}

impl DeviceSnapshot {
    /// Copy what an answer about `id` needs; `None` if the state has no such device.
    /// `with_timelines` also copies the binding timelines (history only).
    pub fn take(state: &ClusterState, id: &DeviceId, with_timelines: bool) -> Option<DeviceSnapshot> {
        let (own, hosts) = match id {
            DeviceId::Mac(mac) => {
                let own = state.device(mac)?.clone();
                (Some(own), state.hosts_attributed_to(mac).cloned().collect::<Vec<_>>())
            }
            DeviceId::Host(key) => {
                let host = state.host(key).filter(|h| h.has_unowned())?;
                (None, vec![host.clone()])
            }
        };
        let segment_sites =
            own.iter().flat_map(|r| r.segments.values().map(|s| state.site_name(s.site_index).to_string())).collect();
        let (links, ambiguous) = own.as_ref().map(|r| identity::links_of(state, r)).unwrap_or_default();
        let sensors: BTreeSet<&String> = own
            .iter()
            .flat_map(|r| r.segments.keys().map(|k| &k.sensor))
            .chain(hosts.iter().flat_map(|h| h.sightings.keys().map(|k| &k.sensor)))
            .collect();
        let sensor_latest_us =
            sensors.into_iter().filter_map(|s| state.sensors().get(s).map(|r| (s.clone(), r.last_packet_us))).collect();
        let mut timelines = Vec::new();
        if with_timelines {
            let addresses: BTreeSet<(String, IpAddr)> = match (&own, id) {
                (Some(r), _) => r.sites.iter().flat_map(|site| r.ips.keys().map(|ip| (site.clone(), ip))).collect(),
                (None, DeviceId::Host(key)) => BTreeSet::from([(key.site.clone(), key.ip)]),
                (None, DeviceId::Mac(_)) => BTreeSet::new(),
            };
            for (site, ip) in addresses {
                if let Some(t) = state.timeline(&site, &ip) {
                    timelines.push((site, ip, t.clone()));
                }
            }
        }
        Some(DeviceSnapshot {
            id: id.clone(),
            own,
            hosts,
            segment_sites,
            links,
            ambiguous,
            sensor_latest_us,
            timelines,
            home: match id {
                DeviceId::Mac(mac) => state.homes().get(mac).cloned(),
                DeviceId::Host(_) => None,
            },
        })
    }

    /// The MAC this answer is about (`None` for an IP-keyed device).
    pub fn mac(&self) -> Option<MacAddr> {
        match &self.id {
            DeviceId::Mac(mac) => Some(*mac),
            DeviceId::Host(_) => None,
        }
    }

    /// The owner value this device's pieces carry in host records.
    fn owner(&self) -> Option<MacAddr> {
        self.mac()
    }

    /// One record with everything about the device: the MAC record plus its routed pieces,
    /// or the IP-keyed device's unowned pieces. Classification and the view read it.
    pub fn merged(&self) -> DeviceRecord {
        let owner = self.owner();
        let mut record = match &self.own {
            Some(own) => (**own).clone(),
            None => DeviceRecord::new(NO_MAC),
        };
        for host in &self.hosts {
            let mut used = false;
            for ((field, value, piece_owner), rec) in &host.evidence {
                if *piece_owner == owner {
                    merge_evidence(&mut record, (*field, value.clone()), rec);
                    used = true;
                }
            }
            for (key, seen) in host.sightings.iter().filter(|(k, _)| k.owner == owner) {
                used = true;
                let first_sighting = record.sensors.is_empty();
                record.sensors.insert(key.sensor.clone());
                if first_sighting || seen.first_seen_us < record.first_seen_us {
                    record.first_seen_us = seen.first_seen_us;
                }
                record.last_seen_us = record.last_seen_us.max(seen.last_seen_us);
                record.packets = record.packets.saturating_add(seen.packets);
                record.bytes = record.bytes.saturating_add(seen.bytes);
                record.ips.see(host.key.ip, seen.first_seen_us, seen.last_seen_us, usize::MAX);
            }
            if used {
                record.sites.insert(host.key.site.clone());
                record.vlans.extend(host.key.vlan);
                record.evidence_dropped = record.evidence_dropped.saturating_add(host.evidence_dropped);
            }
        }
        record
    }

    /// Where each sensor saw the device: on its own segment, or routed (through which
    /// router MAC), with first and last packet times, sorted by sensor.
    pub fn sightings(&self) -> Vec<SightingView> {
        let owner = self.owner();
        let mut out: Vec<SightingView> = Vec::new();
        if let Some(own) = &self.own {
            for ((key, seen), site) in own.segments.iter().zip(&self.segment_sites) {
                out.push(SightingView {
                    sensor: key.sensor.clone(),
                    site: site.clone(),
                    vlan: key.vlan,
                    how: "segment",
                    via_mac: None,
                    ip: None,
                    first_seen_us: seen.first_seen_us,
                    last_seen_us: seen.last_seen_us,
                });
            }
        }
        for host in &self.hosts {
            for (key, seen) in routed_runs(host, owner) {
                out.push(SightingView {
                    sensor: key.sensor.clone(),
                    site: host.key.site.clone(),
                    vlan: host.key.vlan,
                    how: "routed",
                    via_mac: key.via_mac.map(|m| m.to_string()),
                    ip: Some(host.key.ip),
                    first_seen_us: seen.first_seen_us,
                    last_seen_us: seen.last_seen_us,
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.sensor, a.vlan, a.how, &a.via_mac, a.ip, a.first_seen_us).cmp(&(
                &b.sensor,
                b.vlan,
                b.how,
                &b.via_mac,
                b.ip,
                b.first_seen_us,
            ))
        });
        out
    }

    pub fn links(&self) -> Vec<IdentityLinkView> {
        self.links
            .iter()
            .map(|l| IdentityLinkView { mac: l.mac.to_string(), field: l.field, value: l.value.clone() })
            .collect()
    }

    pub fn host_key(&self) -> Option<HostKeyView> {
        match &self.id {
            DeviceId::Host(key) => Some(HostKeyView { site: key.site.clone(), ip: key.ip, vlan: key.vlan }),
            DeviceId::Mac(_) => None,
        }
    }

    /// The device's history, derived from what the state keeps (decision 0013):
    /// connection at each sighting's first packet; disconnection when its last packet is
    /// more than `DISCONNECTED_AFTER_US` before the sensor's latest reported packet; VLAN
    /// changes and site moves where the sightings, in first-seen order, change VLAN or
    /// site; address bound, and moved to another MAC, from the binding timelines.
    pub fn history(&self) -> HistoryView {
        let sightings = self.sightings();
        let mut events = Vec::new();
        for s in &sightings {
            let base = HistoryEvent {
                at_us: s.first_seen_us,
                kind: HistoryKind::Connected,
                sensor: Some(s.sensor.clone()),
                site: Some(s.site.clone()),
                vlan: s.vlan,
                how: Some(s.how),
                via_mac: s.via_mac.clone(),
                ..HistoryEvent::default()
            };
            let latest = self.sensor_latest_us.get(&s.sensor).copied().unwrap_or(0);
            if latest.saturating_sub(s.last_seen_us) > DISCONNECTED_AFTER_US {
                events.push(HistoryEvent { at_us: s.last_seen_us, kind: HistoryKind::Disconnected, ..base.clone() });
            }
            events.push(base);
        }
        events.extend(changes(&sightings));
        events.extend(self.address_events());
        // Time order; the kind and the rest of the event break ties, so nodes agree.
        events.sort();
        let (sources_dropped, source_names) = self.dropped_at_source();
        let excess = events.len().saturating_sub(MAX_HISTORY_EVENTS);
        events.drain(..excess);
        HistoryView {
            id: self.id.to_string(),
            count: events.len(),
            events,
            dropped: excess as u64 + sources_dropped,
            dropped_from: source_names,
            disconnected_after_us: DISCONNECTED_AFTER_US,
        }
    }

    fn address_events(&self) -> Vec<HistoryEvent> {
        let mut events = Vec::new();
        let with_timeline: BTreeSet<IpAddr> = self.timelines.iter().map(|(_, ip, _)| *ip).collect();
        for (site, ip, timeline) in &self.timelines {
            let spans = timeline.spans();
            for (i, span) in spans.iter().enumerate() {
                let event = HistoryEvent {
                    at_us: span.from_us,
                    site: Some(site.clone()),
                    ip: Some(*ip),
                    source: Some(format!("{:?}", span.source).to_lowercase()),
                    ..HistoryEvent::default()
                };
                match self.mac() {
                    Some(mac) if span.mac == mac => {
                        events.push(HistoryEvent { kind: HistoryKind::IpBound, ..event });
                        if let Some(next) = spans.get(i + 1) {
                            events.push(HistoryEvent {
                                at_us: next.from_us,
                                kind: HistoryKind::IpMoved,
                                site: Some(site.clone()),
                                ip: Some(*ip),
                                mac: Some(next.mac.to_string()),
                                source: Some(format!("{:?}", next.source).to_lowercase()),
                                ..HistoryEvent::default()
                            });
                        }
                    }
                    Some(_) => {}
                    None => events.push(HistoryEvent {
                        kind: HistoryKind::BoundToMac,
                        mac: Some(span.mac.to_string()),
                        ..event
                    }),
                }
            }
        }
        // Addresses seen in use without any binding (a static address on the segment).
        if let Some(own) = &self.own {
            for (ip, seen) in own.ips.iter().filter(|(ip, _)| !with_timeline.contains(ip)) {
                events.push(HistoryEvent {
                    at_us: seen.first_seen_us,
                    kind: HistoryKind::IpSeen,
                    ip: Some(ip),
                    ..HistoryEvent::default()
                });
            }
        }
        events
    }

    /// What the bounds on the history's sources dropped, and which bounds dropped it.
    fn dropped_at_source(&self) -> (u64, Vec<&'static str>) {
        let mut total = 0u64;
        let mut names = Vec::new();
        let mut add = |n: u64, name: &'static str| {
            if n > 0 {
                total = total.saturating_add(n);
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        };
        if let Some(own) = &self.own {
            add(own.segments_dropped, "segments");
            add(own.ips_dropped, "ips");
        }
        for h in &self.hosts {
            add(h.sightings_dropped, "routed_sightings");
        }
        for (_, _, t) in &self.timelines {
            add(t.spans_dropped(), "binding_spans");
        }
        (total, names)
    }
}

/// A host record's routed stretches attributed to `owner`, joined into runs per sensor and
/// router MAC: a stretch starting within `ROUTED_RUN_GAP_US` of the previous one's last
/// packet continues its run. (The state keeps stretches apart so a late binding can give
/// each to its own owner; decision 0013.)
fn routed_runs(host: &HostRecord, owner: Option<MacAddr>) -> Vec<(&RoutedKey, RoutedSeen)> {
    let mut runs: Vec<(&RoutedKey, RoutedSeen)> = Vec::new();
    // Keys sort by sensor, router MAC, owner, then start: one owner's stretches of one
    // sensor and router come in start order.
    for (key, seen) in host.sightings.iter().filter(|(k, _)| k.owner == owner) {
        match runs.last_mut() {
            Some((run, acc))
                if run.sensor == key.sensor
                    && run.via_mac == key.via_mac
                    && acc.last_seen_us.saturating_add(ROUTED_RUN_GAP_US) >= seen.first_seen_us =>
            {
                acc.first_seen_us = acc.first_seen_us.min(seen.first_seen_us);
                acc.last_seen_us = acc.last_seen_us.max(seen.last_seen_us);
                acc.packets = acc.packets.saturating_add(seen.packets);
                acc.bytes = acc.bytes.saturating_add(seen.bytes);
            }
            _ => runs.push((key, *seen)),
        }
    }
    runs
}

/// VLAN changes and site moves: walking the sightings in first-seen order, each one on a
/// VLAN (or at a site) other than the previous sighting's.
fn changes(sightings: &[SightingView]) -> Vec<HistoryEvent> {
    let mut ordered: Vec<&SightingView> = sightings.iter().collect();
    ordered.sort_by(|a, b| (a.first_seen_us, &a.sensor, a.vlan).cmp(&(b.first_seen_us, &b.sensor, b.vlan)));
    let mut events = Vec::new();
    // A routed sighting's VLAN is the segment where the router was seen, not the device's:
    // only sightings on the device's own segment show a VLAN change.
    let on_segment: Vec<&&SightingView> = ordered.iter().filter(|s| s.how == "segment").collect();
    for pair in on_segment.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        if after.vlan != before.vlan && after.site == before.site {
            events.push(HistoryEvent {
                at_us: after.first_seen_us,
                kind: HistoryKind::VlanChanged,
                sensor: Some(after.sensor.clone()),
                site: Some(after.site.clone()),
                vlan: after.vlan,
                from_vlan: before.vlan,
                ..HistoryEvent::default()
            });
        }
    }
    for pair in ordered.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        if after.site != before.site {
            events.push(HistoryEvent {
                at_us: after.first_seen_us,
                kind: HistoryKind::SiteMoved,
                sensor: Some(after.sensor.clone()),
                site: Some(after.site.clone()),
                from_site: Some(before.site.clone()),
                vlan: after.vlan,
                ..HistoryEvent::default()
            });
        }
    }
    events
}

fn merge_evidence(record: &mut DeviceRecord, key: (Field, String), rec: &EvidenceRecord) {
    match record.evidence.get_mut(&key) {
        Some(existing) => existing.absorb(rec),
        None => {
            record.evidence.insert(key, rec.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{BatchSummary, Command, HostKey};
    use ulid::Ulid;
    use wardline_common::wire::{AddressBinding, BindingSource, HostObservation};
    use wardline_common::{DeviceObservation, Evidence, Proto};

    const MIN_US: u64 = 60_000_000;
    const DEV: MacAddr = MacAddr([0x00, 0x1b, 0x63, 0, 0, 1]);

    fn summary(sensor: &str, site: &str, seq: u64) -> BatchSummary {
        BatchSummary::empty(
            Ulid::from_parts(seq, u128::from(seq) | (sensor.len() as u128) << 64),
            sensor.into(),
            site.into(),
            seq,
        )
    }

    fn seen(mac: MacAddr, vlan: u16, at_us: u64) -> DeviceObservation {
        DeviceObservation {
            mac,
            ips: vec![],
            vlans: vec![vlan],
            first_seen_us: at_us,
            last_seen_us: at_us + 1,
            packets: 1,
            bytes: 60,
            evidence: vec![],
        }
    }

    fn apply(state: &mut ClusterState, batch: BatchSummary) {
        assert!(state.apply(&Command::ApplyBatch(batch)).applied);
    }

    fn kinds(history: &HistoryView) -> Vec<(u64, HistoryKind)> {
        history.events.iter().map(|e| (e.at_us / MIN_US, e.kind)).collect()
    }

    #[test]
    fn history_shows_vlan_change_site_move_and_disconnection() {
        let mut st = ClusterState::new();
        let mut b = summary("ward-1", "north", 1);
        b.devices = vec![seen(DEV, 20, 0)];
        apply(&mut st, b);
        let mut b = summary("ward-1", "north", 2);
        b.devices = vec![seen(DEV, 21, 30 * MIN_US)];
        apply(&mut st, b);
        let mut b = summary("ward-9", "south", 1);
        b.devices = vec![seen(DEV, 5, 60 * MIN_US)];
        apply(&mut st, b);
        // ward-1 keeps reporting (another device) long after DEV went quiet there.
        let mut b = summary("ward-1", "north", 3);
        b.devices = vec![seen(MacAddr([0, 0x1b, 0x63, 0, 0, 2]), 20, 90 * MIN_US)];
        apply(&mut st, b);

        let history = DeviceSnapshot::take(&st, &DeviceId::Mac(DEV), true).unwrap().history();
        assert_eq!(
            kinds(&history),
            [
                (0, HistoryKind::Connected),
                (0, HistoryKind::Disconnected),
                (30, HistoryKind::Connected),
                (30, HistoryKind::VlanChanged),
                (30, HistoryKind::Disconnected),
                (60, HistoryKind::Connected),
                (60, HistoryKind::SiteMoved),
            ]
        );
        let moved = history.events.iter().find(|e| e.kind == HistoryKind::SiteMoved).unwrap();
        assert_eq!((moved.from_site.as_deref(), moved.site.as_deref()), (Some("north"), Some("south")));
        assert_eq!(history.dropped, 0);
    }

    #[test]
    fn an_ip_keyed_device_shows_its_unowned_pieces_and_who_the_address_went_to() {
        let mut st = ClusterState::new();
        let ip: IpAddr = "10.9.0.5".parse().unwrap();
        let mut b = summary("core-1", "north", 1);
        b.hosts = vec![HostObservation {
            site: None,
            ip,
            vlan: None,
            via_mac: None,
            first_seen_us: 0,
            last_seen_us: 10,
            packets: 3,
            bytes: 180,
            evidence: vec![Evidence::new(Field::DicomCallingAe, "LOOPBACK_SCU", Proto::Dicom, 5)],
        }];
        apply(&mut st, b);
        // An ARP binding seen two hours after the evidence: the earliest known owner also
        // owns the time before its first sighting, so the evidence moves to it.
        let mut b = summary("access-1", "north", 1);
        b.bindings = vec![AddressBinding {
            mac: DEV,
            ip,
            vlan: None,
            source: BindingSource::Arp,
            seen_us: 120 * MIN_US,
            valid_until_us: None,
        }];
        let id = DeviceId::Host(HostKey { site: "north".into(), ip, vlan: None });
        let before = DeviceSnapshot::take(&st, &id, true).expect("IP-keyed before the binding");
        assert_eq!(before.merged().values(Field::DicomCallingAe), ["LOOPBACK_SCU"]);
        assert_eq!(before.merged().mac, NO_MAC);
        apply(&mut st, b);
        assert!(DeviceSnapshot::take(&st, &id, true).is_none(), "nothing unowned is left");
        let dev = DeviceSnapshot::take(&st, &DeviceId::Mac(DEV), true).unwrap();
        assert_eq!(dev.merged().values(Field::DicomCallingAe), ["LOOPBACK_SCU"]);
        let routed = dev.sightings();
        assert_eq!(routed.iter().map(|s| (s.how, s.via_mac.clone())).collect::<Vec<_>>(), [("routed", None)]);
        let history = dev.history();
        assert!(history.events.iter().any(|e| e.kind == HistoryKind::IpBound && e.ip == Some(ip)));
    }

    /// Disconnection of a device known only by address: its routed run ends when the sensor
    /// that saw it keeps reporting (other hosts) long after, and a later run is a new
    /// connection. Constructed batches, so the times are exact.
    #[test]
    fn a_routed_host_disconnects_while_its_sensor_keeps_reporting() {
        let mut st = ClusterState::new();
        let ip: IpAddr = "10.9.0.7".parse().unwrap();
        let host = |ip: IpAddr, at_us: u64| HostObservation {
            site: None,
            ip,
            vlan: None,
            via_mac: Some(MacAddr([0, 0, 0x5e, 0, 1, 1])),
            first_seen_us: at_us,
            last_seen_us: at_us + 1,
            packets: 1,
            bytes: 60,
            evidence: vec![],
        };
        let id = DeviceId::Host(HostKey { site: "north".into(), ip, vlan: None });
        let mut b = summary("core-1", "north", 1);
        b.hosts = vec![host(ip, 0)];
        apply(&mut st, b);
        let history = DeviceSnapshot::take(&st, &id, true).unwrap().history();
        assert_eq!(kinds(&history), [(0, HistoryKind::Connected)], "the sensor saw nothing later yet");
        // The core sensor keeps reporting another host for 40 minutes; then the host is back.
        let mut b = summary("core-1", "north", 2);
        b.hosts = vec![host("10.9.0.8".parse().unwrap(), 40 * MIN_US)];
        apply(&mut st, b);
        let mut b = summary("core-1", "north", 3);
        b.hosts = vec![host(ip, 60 * MIN_US)];
        apply(&mut st, b);
        let history = DeviceSnapshot::take(&st, &id, true).unwrap().history();
        assert_eq!(
            kinds(&history),
            [(0, HistoryKind::Connected), (0, HistoryKind::Disconnected), (60, HistoryKind::Connected)]
        );
        let gone = history.events.iter().find(|e| e.kind == HistoryKind::Disconnected).unwrap();
        assert_eq!((gone.at_us, gone.sensor.as_deref()), (1, Some("core-1")));
    }
}
