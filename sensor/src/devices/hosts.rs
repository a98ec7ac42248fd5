//! Hosts the sensor knows only by address: seen behind a gateway's MAC (another VLAN or
//! site, routed to this segment) or on a link without MACs (raw IP, loopback, Linux
//! cooked). Keyed by (IP, VLAN); evidence about them lands here instead of on the router.
//! An address in a remote site's network is a host of that site (the site is a function of
//! the address, so the key needs no site of its own).
//!
//! Drain semantics match the device table's: evidence is what is NEW since the previous
//! drain, packets and bytes are deltas, times are absolute.

use super::evidence_set::EvidenceSet;
use super::sites::{RemoteSiteMap, SiteIndex};
use std::collections::HashMap;
use std::net::IpAddr;
use wardline_common::wire::HostObservation;
use wardline_common::{Evidence, Field, MacAddr, Proto};

/// A host's identity in the table: its address and the VLAN it was seen on.
pub type HostKey = (IpAddr, Option<u16>);

#[derive(Debug)]
struct HostState {
    key: HostKey,
    /// The remote site the address belongs to; None for the sensor's own site.
    site: Option<SiteIndex>,
    /// The router MAC its frames carried (first one seen), None on a MAC-less link.
    via_mac: Option<MacAddr>,
    /// First packet since the last report (`u64::MAX` right after one).
    first_us: u64,
    /// Latest packet ever.
    last_us: u64,
    packets: u64,
    bytes: u64,
    reported_packets: u64,
    reported_bytes: u64,
    evidence_seen: EvidenceSet,
    new_evidence: Vec<Evidence>,
    dirty: bool,
    /// Learned something since the last drain that a report must carry even without
    /// packets (a finding about a host that only receives).
    touched: bool,
}

/// What the host table had to drop to stay bounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostDrops {
    pub hosts_over_limit: u64,
    pub evidence_over_limit: u64,
}

pub struct HostTable {
    max_hosts: usize,
    max_evidence: usize,
    index: HashMap<HostKey, u32, foldhash::fast::RandomState>,
    hosts: Vec<HostState>,
    dirty: Vec<u32>,
    drops: HostDrops,
    remote: RemoteSiteMap,
}

impl HostTable {
    pub fn new(max_hosts: usize, max_evidence: usize, remote: RemoteSiteMap) -> HostTable {
        HostTable {
            remote,
            max_hosts,
            max_evidence,
            index: HashMap::with_hasher(Default::default()),
            hosts: Vec::new(),
            dirty: Vec::new(),
            drops: HostDrops::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn drops(&self) -> HostDrops {
        self.drops
    }

    /// The host's slot (created on first sight and marked changed); None past the bound.
    fn slot(&mut self, key: HostKey, via_mac: Option<MacAddr>, ts_us: u64) -> Option<u32> {
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                if self.hosts.len() >= self.max_hosts {
                    self.drops.hosts_over_limit += 1;
                    return None;
                }
                let i = self.hosts.len() as u32;
                self.hosts.push(HostState {
                    key,
                    site: self.remote.site_of(&key.0),
                    via_mac,
                    first_us: ts_us,
                    last_us: ts_us,
                    packets: 0,
                    bytes: 0,
                    reported_packets: 0,
                    reported_bytes: 0,
                    evidence_seen: EvidenceSet::default(),
                    new_evidence: Vec::new(),
                    dirty: false,
                    touched: false,
                });
                self.index.insert(key, i);
                i
            }
        };
        let h = &mut self.hosts[i as usize];
        if h.via_mac.is_none() {
            h.via_mac = via_mac;
        }
        if !h.dirty {
            h.dirty = true;
            self.dirty.push(i);
        }
        Some(i)
    }

    /// Account one frame the host sent.
    pub fn packet(&mut self, key: HostKey, via_mac: Option<MacAddr>, ts_us: u64, wire_len: u64) {
        if let Some(i) = self.slot(key, via_mac, ts_us) {
            let h = &mut self.hosts[i as usize];
            h.packets += 1;
            h.bytes += wire_len;
            h.first_us = h.first_us.min(ts_us);
            h.last_us = h.last_us.max(ts_us);
        }
    }

    /// Record one piece of evidence about the host; a known (field, value) is not re-sent.
    pub fn evidence(
        &mut self,
        key: HostKey,
        via_mac: Option<MacAddr>,
        field: Field,
        value: &str,
        proto: Proto,
        ts_us: u64,
    ) {
        let Some(i) = self.slot(key, via_mac, ts_us) else { return };
        let max = self.max_evidence;
        let h = &mut self.hosts[i as usize];
        h.first_us = h.first_us.min(ts_us);
        h.last_us = h.last_us.max(ts_us);
        if h.evidence_seen.contains(field, value) {
            return;
        }
        if h.evidence_seen.len() >= max {
            self.drops.evidence_over_limit += 1;
            return;
        }
        h.evidence_seen.insert_new(field, value);
        h.new_evidence.push(Evidence::new(field, value, proto, ts_us));
        h.touched = true;
    }

    /// Hosts with new traffic or evidence since the last drain, sorted by (IP, VLAN).
    pub fn drain_changed(&mut self) -> Vec<HostObservation> {
        let mut changed = std::mem::take(&mut self.dirty);
        changed.sort_unstable_by_key(|&i| self.hosts[i as usize].key);
        let mut out = Vec::with_capacity(changed.len());
        for i in changed {
            let h = &mut self.hosts[i as usize];
            h.dirty = false;
            let packets = h.packets - h.reported_packets;
            if packets == 0 && !std::mem::take(&mut h.touched) {
                continue;
            }
            h.touched = false;
            let bytes = h.bytes - h.reported_bytes;
            h.reported_packets = h.packets;
            h.reported_bytes = h.bytes;
            // A report covers its own packets: the next one starts at its first packet, so
            // the cluster can tell when the address went quiet (and changed hands).
            let first_seen_us = std::mem::replace(&mut h.first_us, u64::MAX).min(h.last_us);
            out.push(HostObservation {
                ip: h.key.0,
                vlan: h.key.1,
                via_mac: h.via_mac,
                first_seen_us,
                last_seen_us: h.last_us,
                packets,
                bytes,
                evidence: std::mem::take(&mut h.new_evidence),
                site: h.site.map(|i| self.remote.name(i).to_owned()),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Clone, Debug)]
    enum Op {
        Packet { host: u8, vlan: Option<u16>, len: u16 },
        Evidence { host: u8, vlan: Option<u16>, value: u8 },
        Drain,
    }

    fn op() -> impl Strategy<Value = Op> {
        let vlan = prop_oneof![Just(None), Just(Some(10u16)), Just(Some(20u16))];
        prop_oneof![
            4 => (0u8..12, vlan.clone(), 40u16..1500).prop_map(|(host, vlan, len)| Op::Packet { host, vlan, len }),
            4 => (0u8..12, vlan, 0u8..6).prop_map(|(host, vlan, value)| Op::Evidence { host, vlan, value }),
            1 => Just(Op::Drain),
        ]
    }

    fn ip(host: u8) -> IpAddr {
        IpAddr::from([10, 9, 0, host])
    }

    fn apply(t: &mut HostTable, o: &Op) -> Option<Vec<HostObservation>> {
        match *o {
            Op::Packet { host, vlan, len } => t.packet((ip(host), vlan), None, host as u64, len as u64),
            Op::Evidence { host, vlan, value } => {
                t.evidence((ip(host), vlan), None, Field::Hostname, &value.to_string(), Proto::Dhcp, value as u64)
            }
            Op::Drain => return Some(t.drain_changed()),
        }
        None
    }

    #[test]
    fn a_report_covers_its_own_packets() {
        let mut t = HostTable::new(8, 8, RemoteSiteMap::default());
        let key = (ip(5), None);
        t.packet(key, None, 1_000, 60);
        t.packet(key, None, 2_000, 60);
        let first = t.drain_changed();
        assert_eq!((first[0].first_seen_us, first[0].last_seen_us), (1_000, 2_000));
        // The address went quiet, then was used again (perhaps by another device): the next
        // report starts at its own first packet, so the cluster sees the silence.
        t.packet(key, None, 90_000, 60);
        let second = t.drain_changed();
        assert_eq!((second[0].first_seen_us, second[0].last_seen_us, second[0].packets), (90_000, 90_000, 1));
        // Evidence without packets about a host that only receives carries its own time.
        t.evidence(key, None, Field::Hostname, "h", Proto::Dhcp, 95_000);
        let third = t.drain_changed();
        assert_eq!((third[0].first_seen_us, third[0].last_seen_us), (95_000, 95_000));
    }

    proptest! {
        /// Two tables (each with its own hash seed) fed the same traffic drain the same
        /// observations in the same order.
        #[test]
        fn drains_are_deterministic(ops in proptest::collection::vec(op(), 1..300), max_hosts in 1usize..10) {
            // Hosts .0-.7 are a remote site's: every report of them names it, no other does.
            let far = crate::devices::RemoteSite { site: "far".into(), networks: vec!["10.9.0.0/29".parse().unwrap()] };
            let remote = RemoteSiteMap::new(&[far]);
            let (mut a, mut b) = (HostTable::new(max_hosts, 3, remote.clone()), HostTable::new(max_hosts, 3, remote));
            for o in ops.iter().chain([&Op::Drain]) {
                let (x, y) = (apply(&mut a, o), apply(&mut b, o));
                for h in x.iter().flatten() {
                    let expected = (h.ip < IpAddr::from([10, 9, 0, 8])).then_some("far");
                    prop_assert_eq!(h.site.as_deref(), expected);
                }
                prop_assert_eq!(x, y);
            }
        }

        /// Against a model that keeps everything: the table never holds more hosts or
        /// evidence than its bounds, each drain is sorted with one report per host, every
        /// packet is reported once, and every evidence pair of an admitted host is reported
        /// exactly once (unless past the per-host bound, which is counted).
        #[test]
        fn bounded_deterministic_and_lossless(ops in proptest::collection::vec(op(), 1..300), max_hosts in 1usize..10, max_ev in 1usize..5) {
            let mut t = HostTable::new(max_hosts, max_ev, RemoteSiteMap::default());
            let mut admitted: BTreeSet<HostKey> = BTreeSet::new();
            let mut packets: BTreeMap<HostKey, u64> = BTreeMap::new();
            let mut evidence: BTreeMap<HostKey, BTreeSet<String>> = BTreeMap::new();
            let mut reported_packets: BTreeMap<HostKey, u64> = BTreeMap::new();
            let mut reported_ev: BTreeMap<HostKey, Vec<String>> = BTreeMap::new();
            let (mut refused, mut ev_over) = (0u64, 0u64);
            let drain = |t: &mut HostTable, rp: &mut BTreeMap<HostKey, u64>, re: &mut BTreeMap<HostKey, Vec<String>>| {
                let obs = t.drain_changed();
                prop_assert!(obs.windows(2).all(|w| (w[0].ip, w[0].vlan) < (w[1].ip, w[1].vlan)));
                for o in obs {
                    *rp.entry((o.ip, o.vlan)).or_default() += o.packets;
                    re.entry((o.ip, o.vlan)).or_default().extend(o.evidence.into_iter().map(|e| e.value));
                }
                Ok(())
            };
            for o in ops {
                let (key, is_new) = match &o {
                    Op::Packet { host, vlan, .. } | Op::Evidence { host, vlan, .. } => {
                        let k = (ip(*host), *vlan);
                        (Some(k), !admitted.contains(&k))
                    }
                    Op::Drain => (None, false),
                };
                if let Some(k) = key {
                    if is_new && admitted.len() >= max_hosts {
                        refused += 1;
                        match o { Op::Packet { len, .. } => t.packet(k, None, 1, len as u64),
                                  Op::Evidence { value, .. } => t.evidence(k, None, Field::Hostname, &value.to_string(), Proto::Dhcp, 1),
                                  Op::Drain => {} }
                        continue;
                    }
                    admitted.insert(k);
                }
                match o {
                    Op::Packet { len, .. } => {
                        let k = key.unwrap();
                        t.packet(k, None, 1, len as u64);
                        *packets.entry(k).or_default() += 1;
                    }
                    Op::Evidence { value, .. } => {
                        let k = key.unwrap();
                        let set = evidence.entry(k).or_default();
                        let v = value.to_string();
                        if !set.contains(&v) {
                            if set.len() >= max_ev { ev_over += 1; } else { set.insert(v.clone()); }
                        }
                        t.evidence(k, None, Field::Hostname, &v, Proto::Dhcp, 1);
                    }
                    Op::Drain => drain(&mut t, &mut reported_packets, &mut reported_ev)?,
                }
                prop_assert!(t.len() <= max_hosts);
            }
            drain(&mut t, &mut reported_packets, &mut reported_ev)?;
            prop_assert!(t.drain_changed().is_empty());
            prop_assert_eq!(t.drops(), HostDrops { hosts_over_limit: refused, evidence_over_limit: ev_over });
            packets.retain(|_, n| *n > 0);
            reported_packets.retain(|_, n| *n > 0);
            prop_assert_eq!(packets, reported_packets);
            for (k, vals) in &reported_ev {
                let unique: BTreeSet<&String> = vals.iter().collect();
                prop_assert_eq!(unique.len(), vals.len(), "evidence of {:?} reported twice", k);
            }
            let reported: BTreeMap<HostKey, BTreeSet<String>> = reported_ev
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect();
            evidence.retain(|_, v| !v.is_empty());
            prop_assert_eq!(evidence, reported);
        }
    }
}
