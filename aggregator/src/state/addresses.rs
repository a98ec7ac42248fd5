//! Everything the state keeps per IP address, in one map: the MACs seen using it (every
//! (address, MAC) of the devices' `ips`, so a device is found by address without scanning
//! every record) and, per site, the timeline of who owned it when (`bindings`).
//!
//! One entry per address holding both, not a tree entry per (site, address) for the
//! timeline plus one per address for its MACs: with DHCP hand-overs at 10M bindings the
//! second tree entry and the separate allocation for the MACs were a large part of the
//! state. An address with one MAC and no timeline (a device's own static address, the
//! usual case) is held inline without an allocation; otherwise the MACs and timelines are
//! encoded in one allocation. The MACs are derived (rebuilt on load from the devices); the
//! timelines are replicated and serialized as the `((site, address), timeline)` list they
//! always were (`Addresses::bindings`).

use super::bindings::{exact_box, get_varint, put_varint, AddressTimeline};
use std::collections::BTreeMap;
use std::net::IpAddr;
use wardline_common::wire::AddressBinding;
use wardline_common::MacAddr;

/// What is known about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// One MAC, no timeline.
    One(MacAddr),
    /// The encoded `Parts` of any other combination (canonical: equal parts, equal bytes).
    Packed(Box<[u8]>),
}

/// An entry decoded.
#[derive(Default)]
struct Parts {
    /// Sorted and distinct.
    holders: Vec<MacAddr>,
    /// Sorted by site index, distinct sites.
    timelines: Vec<(u32, AddressTimeline)>,
}

/// Reads the encoding: the holder count, each holder's 6 bytes, then per site its index,
/// the timeline's encoded length and the encoded timeline (all counts as LEB128 varints).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn holders(bytes: &'a [u8]) -> (Reader<'a>, usize) {
        let mut reader = Reader { bytes, at: 0 };
        let count = get_varint(bytes, &mut reader.at) as usize;
        (reader, count)
    }

    fn mac(&mut self) -> Option<MacAddr> {
        let mac: [u8; 6] = self.bytes.get(self.at..self.at + 6)?.try_into().ok()?;
        self.at += 6;
        Some(MacAddr(mac))
    }

    fn skip_holders(bytes: &'a [u8]) -> Reader<'a> {
        let (mut reader, count) = Reader::holders(bytes);
        reader.at = reader.at.saturating_add(count.saturating_mul(6)).min(bytes.len());
        reader
    }

    /// The next (site index, encoded timeline).
    fn timeline(&mut self) -> Option<(u32, &'a [u8])> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let site = get_varint(self.bytes, &mut self.at) as u32;
        let len = get_varint(self.bytes, &mut self.at) as usize;
        let end = self.at.saturating_add(len).min(self.bytes.len());
        let encoded = &self.bytes[self.at..end];
        self.at = end;
        Some((site, encoded))
    }
}

impl Entry {
    fn parts(&self) -> Parts {
        match self {
            Entry::One(mac) => Parts { holders: vec![*mac], timelines: Vec::new() },
            Entry::Packed(bytes) => {
                let (mut reader, count) = Reader::holders(bytes);
                let holders = (0..count).map_while(|_| reader.mac()).collect();
                let timelines = std::iter::from_fn(|| reader.timeline())
                    .map(|(site, encoded)| (site, AddressTimeline::from_encoded(encoded)))
                    .collect();
                Parts { holders, timelines }
            }
        }
    }

    fn from_parts(parts: &Parts) -> Entry {
        if let ([mac], []) = (parts.holders.as_slice(), parts.timelines.as_slice()) {
            return Entry::One(*mac);
        }
        let mut out = Vec::with_capacity(
            1 + parts.holders.len() * 6 + parts.timelines.iter().map(|(_, t)| 4 + t.encoded().len()).sum::<usize>(),
        );
        put_varint(&mut out, parts.holders.len() as u64);
        for mac in &parts.holders {
            out.extend_from_slice(&mac.0);
        }
        for (site, timeline) in &parts.timelines {
            put_varint(&mut out, u64::from(*site));
            put_varint(&mut out, timeline.encoded().len() as u64);
            out.extend_from_slice(timeline.encoded());
        }
        Entry::Packed(exact_box(&out))
    }

    fn lowest(&self) -> Option<MacAddr> {
        match self {
            Entry::One(mac) => Some(*mac),
            Entry::Packed(bytes) => match Reader::holders(bytes) {
                (mut reader, 1..) => reader.mac(),
                (_, 0) => None,
            },
        }
    }

    /// The encoded timelines, by site index.
    fn timelines(&self) -> impl Iterator<Item = (u32, &[u8])> {
        let mut reader = match self {
            Entry::One(_) => None,
            Entry::Packed(bytes) => Some(Reader::skip_holders(bytes)),
        };
        std::iter::from_fn(move || reader.as_mut()?.timeline())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses(BTreeMap<IpAddr, Entry>);

impl Addresses {
    /// Change the entry of `ip` (created empty when absent) through its decoded parts.
    fn update<R>(&mut self, ip: IpAddr, change: impl FnOnce(&mut Parts) -> R) -> R {
        let mut parts = self.0.get(&ip).map(Entry::parts).unwrap_or_default();
        let result = change(&mut parts);
        if parts.holders.is_empty() && parts.timelines.is_empty() {
            self.0.remove(&ip);
            return result;
        }
        let entry = Entry::from_parts(&parts);
        match self.0.get_mut(&ip) {
            Some(held) if *held == entry => {}
            Some(held) => *held = entry,
            None => {
                self.0.insert(ip, entry);
            }
        }
        result
    }

    /// Note that `mac` used `ip`; returns whether the pair was new.
    pub fn insert(&mut self, ip: IpAddr, mac: MacAddr) -> bool {
        if let Some(Entry::One(held)) = self.0.get(&ip) {
            if *held == mac {
                return false;
            }
        }
        self.update(ip, |parts| match parts.holders.binary_search(&mac) {
            Ok(_) => false,
            Err(at) => {
                parts.holders.insert(at, mac);
                true
            }
        })
    }

    /// The lowest MAC seen using `ip`, so every node picks the same one.
    pub fn lowest(&self, ip: &IpAddr) -> Option<MacAddr> {
        self.0.get(ip).and_then(Entry::lowest)
    }

    /// The ownership timeline of `ip` at site number `site`, if any binding was seen.
    pub fn timeline(&self, site: u32, ip: &IpAddr) -> Option<AddressTimeline> {
        let entry = self.0.get(ip)?;
        let (_, encoded) = entry.timelines().find(|(s, _)| *s == site)?;
        Some(AddressTimeline::from_encoded(encoded))
    }

    /// Record a binding sighting on the timeline of its address at site number `site`;
    /// returns whether who owned the address at some instant changed
    /// (`AddressTimeline::record`).
    pub fn record(&mut self, site: u32, b: &AddressBinding) -> bool {
        let held = self.0.get(&b.ip).and_then(|entry| entry.timelines().find(|(s, _)| *s == site));
        let mut timeline =
            held.map_or_else(AddressTimeline::default, |(_, encoded)| AddressTimeline::from_encoded(encoded));
        let changed = timeline.record(b);
        // A renewal that moves nothing leaves the encoding as it was: skip rebuilding the entry.
        if held.is_none_or(|(_, encoded)| encoded != timeline.encoded()) {
            self.set_timeline(site, b.ip, timeline);
        }
        changed
    }

    /// Set the timeline of `ip` at site number `site` (loading a snapshot).
    pub fn set_timeline(&mut self, site: u32, ip: IpAddr, timeline: AddressTimeline) {
        // Replacing a timeline the entry already holds (the usual sighting): splice its
        // bytes in place of the old ones, without decoding the entry.
        if let Some(Entry::Packed(bytes)) = self.0.get_mut(&ip) {
            let mut reader = Reader::skip_holders(bytes);
            let mut start = reader.at;
            while let Some((held_site, _)) = reader.timeline() {
                if held_site == site {
                    let mut out = Vec::with_capacity(bytes.len() + timeline.encoded().len());
                    out.extend_from_slice(&bytes[..start]);
                    put_varint(&mut out, u64::from(site));
                    put_varint(&mut out, timeline.encoded().len() as u64);
                    out.extend_from_slice(timeline.encoded());
                    out.extend_from_slice(&bytes[reader.at..]);
                    *bytes = exact_box(&out);
                    return;
                }
                start = reader.at;
            }
        }
        self.update(ip, |parts| match parts.timelines.binary_search_by_key(&site, |(s, _)| *s) {
            Ok(at) => parts.timelines[at].1 = timeline,
            Err(at) => parts.timelines.insert(at, (site, timeline)),
        });
    }

    /// Every ((site index, address), timeline), by address then site.
    pub fn bindings(&self) -> impl Iterator<Item = ((u32, IpAddr), AddressTimeline)> + '_ {
        self.0.iter().flat_map(|(ip, entry)| {
            entry.timelines().map(move |(site, encoded)| ((site, *ip), AddressTimeline::from_encoded(encoded)))
        })
    }

    /// How many (site, address) timelines there are.
    pub fn timeline_count(&self) -> usize {
        self.0.values().map(|entry| entry.timelines().count()).sum()
    }
}

impl Extend<(IpAddr, MacAddr)> for Addresses {
    fn extend<I: IntoIterator<Item = (IpAddr, MacAddr)>>(&mut self, iter: I) {
        for (ip, mac) in iter {
            self.insert(ip, mac);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use wardline_common::wire::BindingSource;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0, 0x1b, 0, 0, 0, n])
    }

    #[derive(Clone, Debug)]
    enum Op {
        Holder(u8, u8),
        Binding { site: u32, ip: u8, mac: u8, seen_us: u64, lease_us: Option<u64> },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 0u8..5).prop_map(|(ip, m)| Op::Holder(ip, m)),
            (prop_oneof![0u32..3, Just(u32::MAX)], 0u8..6, 0u8..5, 0u64..10_000, proptest::option::of(1u64..3_000))
                .prop_map(|(site, ip, mac, seen_us, lease_us)| Op::Binding { site, ip, mac, seen_us, lease_us }),
        ]
    }

    fn ip(n: u8) -> IpAddr {
        if n < 3 {
            IpAddr::from([10, 0, 0, n])
        } else {
            IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, u16::from(n)])
        }
    }

    proptest! {
        /// Answers as the set of (address, MAC) pairs and the map of (site, address)
        /// timelines it replaces, whatever the order of holders and sightings.
        #[test]
        fn agrees_with_a_set_of_pairs_and_a_map_of_timelines(ops in proptest::collection::vec(arb_op(), 0..80)) {
            let mut addresses = Addresses::default();
            let mut pairs = BTreeSet::new();
            let mut timelines: BTreeMap<(u32, IpAddr), AddressTimeline> = BTreeMap::new();
            for op in &ops {
                match op {
                    Op::Holder(i, m) => prop_assert_eq!(addresses.insert(ip(*i), mac(*m)), pairs.insert((ip(*i), mac(*m)))),
                    Op::Binding { site, ip: i, mac: m, seen_us, lease_us } => {
                        let b = AddressBinding {
                            mac: mac(*m),
                            ip: ip(*i),
                            vlan: None,
                            source: if lease_us.is_some() { BindingSource::DhcpAck } else { BindingSource::Arp },
                            seen_us: *seen_us,
                            valid_until_us: lease_us.map(|l| seen_us + l),
                        };
                        let expected = timelines.entry((*site, b.ip)).or_default().record(&b);
                        prop_assert_eq!(addresses.record(*site, &b), expected);
                    }
                }
            }
            for i in 0u8..6 {
                let expected: Vec<MacAddr> = pairs.iter().filter(|(a, _)| *a == ip(i)).map(|(_, m)| *m).collect();
                prop_assert_eq!(addresses.lowest(&ip(i)), expected.first().copied());
                for site in [0, 1, 2, 3, u32::MAX] {
                    prop_assert_eq!(addresses.timeline(site, &ip(i)), timelines.get(&(site, ip(i))).cloned());
                }
            }
            prop_assert_eq!(addresses.timeline_count(), timelines.len());
            let listed: BTreeMap<(u32, IpAddr), AddressTimeline> = addresses.bindings().collect();
            prop_assert_eq!(&listed, &timelines);
            // Loading the list and the holders again gives equal entries (canonical encoding).
            let mut loaded = Addresses::default();
            for ((site, a), t) in timelines {
                loaded.set_timeline(site, a, t);
            }
            loaded.extend(pairs.iter().copied());
            prop_assert_eq!(loaded, addresses);
        }
    }
}
