//! The addresses a device was seen using, each with its first and last sighting.
//!
//! Held in a compact encoding (about 12 bytes per IPv4 address instead of a 40-byte
//! `(IpAddr, IpSeen)` entry): with DHCP hand-overs every leased address lands on each of
//! its MACs' records, and at ten bindings per device these entries were the largest part
//! of a device record. The encoding is canonical (equal tables are equal bytes) and the
//! table is serialized as the `(address, seen)` list a sorted map gives, so snapshots do
//! not depend on it.

use super::bindings::{exact_box, get_varint, put_varint};
use super::IpSeen;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Addresses sorted by `IpAddr` order, distinct, each with when it was seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpTable {
    /// The entry count, then each entry in address order: family (4 or 6), the address
    /// bytes, `first_seen_us` as the zigzag of its wrapping difference from the previous
    /// entry's (the first from 0), `last_seen_us - first_seen_us` (wrapping); numbers as
    /// LEB128 varints. Empty when there is no entry.
    encoded: Box<[u8]>,
}

fn zigzag(v: u64) -> u64 {
    (v << 1) ^ ((v as i64 >> 63) as u64)
}

fn unzigzag(v: u64) -> u64 {
    (v >> 1) ^ (v & 1).wrapping_neg()
}

/// The entries of an encoded table, in order.
pub struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
    prev_first_us: u64,
    /// Entries not yet read (serializers need the exact length up front).
    remaining: usize,
}

impl Iterator for Entries<'_> {
    type Item = (IpAddr, IpSeen);

    fn next(&mut self) -> Option<(IpAddr, IpSeen)> {
        let family = *self.bytes.get(self.at)?;
        let ip = if family == 4 {
            let octets: [u8; 4] = self.bytes.get(self.at + 1..self.at + 5)?.try_into().ok()?;
            self.at += 5;
            IpAddr::V4(Ipv4Addr::from(octets))
        } else {
            let octets: [u8; 16] = self.bytes.get(self.at + 1..self.at + 17)?.try_into().ok()?;
            self.at += 17;
            IpAddr::V6(Ipv6Addr::from(octets))
        };
        let first_seen_us = self.prev_first_us.wrapping_add(unzigzag(get_varint(self.bytes, &mut self.at)));
        let last_seen_us = first_seen_us.wrapping_add(get_varint(self.bytes, &mut self.at));
        self.prev_first_us = first_seen_us;
        self.remaining = self.remaining.saturating_sub(1);
        Some((ip, IpSeen { first_seen_us, last_seen_us }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Entries<'_> {}

impl IpTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// `entries` must be sorted by address and distinct.
    fn encode(entries: &[(IpAddr, IpSeen)]) -> Self {
        if entries.is_empty() {
            return IpTable::default();
        }
        let mut out = Vec::with_capacity(2 + entries.len() * 14);
        put_varint(&mut out, entries.len() as u64);
        let mut prev_first_us = 0u64;
        for (ip, seen) in entries {
            match ip {
                IpAddr::V4(v4) => {
                    out.push(4);
                    out.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    out.push(6);
                    out.extend_from_slice(&v6.octets());
                }
            }
            put_varint(&mut out, zigzag(seen.first_seen_us.wrapping_sub(prev_first_us)));
            put_varint(&mut out, seen.last_seen_us.wrapping_sub(seen.first_seen_us));
            prev_first_us = seen.first_seen_us;
        }
        IpTable { encoded: exact_box(&out) }
    }

    pub fn len(&self) -> usize {
        get_varint(&self.encoded, &mut 0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }

    /// Every `(address, seen)`, in address order.
    pub fn iter(&self) -> Entries<'_> {
        let mut at = 0;
        let remaining = get_varint(&self.encoded, &mut at) as usize;
        Entries { bytes: &self.encoded, at, prev_first_us: 0, remaining }
    }

    /// Every address, in order.
    pub fn keys(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.iter().map(|(ip, _)| ip)
    }

    pub fn get(&self, ip: &IpAddr) -> Option<IpSeen> {
        self.iter().take_while(|(at, _)| at <= ip).find(|(at, _)| at == ip).map(|(_, seen)| seen)
    }

    /// Whether `ip` is in the table. Compares the encoded address bytes and skips the
    /// sighting times without decoding them: every detector asks this for every flow side.
    pub fn contains_key(&self, ip: &IpAddr) -> bool {
        let mut octets = [0u8; 16];
        let (family, target) = match ip {
            IpAddr::V4(v4) => {
                octets[..4].copy_from_slice(&v4.octets());
                (4u8, &octets[..4])
            }
            IpAddr::V6(v6) => {
                octets.copy_from_slice(&v6.octets());
                (6u8, &octets[..])
            }
        };
        let bytes = &self.encoded[..];
        let mut at = 0;
        let count = get_varint(bytes, &mut at);
        for _ in 0..count {
            let Some(&f) = bytes.get(at) else { return false };
            let len = if f == 4 { 4 } else { 16 };
            let Some(addr) = bytes.get(at + 1..at + 1 + len) else { return false };
            // Entries are in `IpAddr` order (every V4 before every V6; octets big-endian).
            match (f, addr).cmp(&(family, target)) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Greater => return false,
                std::cmp::Ordering::Less => {}
            }
            at += 1 + len;
            for _ in 0..2 {
                while bytes.get(at).is_some_and(|b| b & 0x80 != 0) {
                    at += 1;
                }
                at += 1;
            }
        }
        false
    }

    /// Insert or replace; returns the value replaced.
    pub fn insert(&mut self, ip: IpAddr, seen: IpSeen) -> Option<IpSeen> {
        let mut entries: Vec<(IpAddr, IpSeen)> = self.iter().collect();
        let replaced = match entries.binary_search_by(|(at, _)| at.cmp(&ip)) {
            Ok(i) => Some(std::mem::replace(&mut entries[i].1, seen)),
            Err(i) => {
                entries.insert(i, (ip, seen));
                None
            }
        };
        *self = IpTable::encode(&entries);
        replaced
    }

    /// Widen `ip`'s sighting to cover `first..=last`, adding it when absent and fewer than
    /// `max` addresses are held. Returns `None` when absent and full (the caller counts the
    /// drop), else whether the address was new.
    pub fn see(&mut self, ip: IpAddr, first_seen_us: u64, last_seen_us: u64, max: usize) -> Option<bool> {
        match self.get(&ip) {
            Some(seen) => {
                let widened = IpSeen {
                    first_seen_us: seen.first_seen_us.min(first_seen_us),
                    last_seen_us: seen.last_seen_us.max(last_seen_us),
                };
                if widened != seen {
                    self.insert(ip, widened);
                }
                Some(false)
            }
            None if self.len() >= max => None,
            None => {
                self.insert(ip, IpSeen { first_seen_us, last_seen_us });
                Some(true)
            }
        }
    }
}

impl FromIterator<(IpAddr, IpSeen)> for IpTable {
    /// Later entries of an address replace earlier ones, as repeated `insert`s would.
    fn from_iter<I: IntoIterator<Item = (IpAddr, IpSeen)>>(iter: I) -> Self {
        let mut entries: Vec<(IpAddr, IpSeen)> = iter.into_iter().collect();
        entries.reverse();
        entries.sort_by_key(|(ip, _)| *ip);
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        IpTable::encode(&entries)
    }
}

impl Serialize for IpTable {
    /// As `VecMap<IpAddr, IpSeen>` was: a list of `(address, seen)` pairs.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for IpTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<(IpAddr, IpSeen)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::VecMap;
    use proptest::prelude::*;

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..8).prop_map(|n| IpAddr::from([10, 0, 0, n])),
            (0u16..4).prop_map(|n| IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, n])),
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    fn arb_seen() -> impl Strategy<Value = IpSeen> {
        prop_oneof![
            (any::<u64>(), any::<u64>())
                .prop_map(|(first_seen_us, last_seen_us)| IpSeen { first_seen_us, last_seen_us }),
            (1_767_225_600_000_000u64..1_767_325_600_000_000, 0u64..10_000_000_000)
                .prop_map(|(first, span)| IpSeen { first_seen_us: first, last_seen_us: first + span }),
        ]
    }

    proptest! {
        /// Any sequence of inserts and widenings gives what the sorted map it replaces
        /// gives, and serializes to the same bytes.
        #[test]
        fn agrees_with_a_sorted_map(
            ops in proptest::collection::vec((any::<bool>(), arb_ip(), arb_seen()), 0..40),
            max in 1usize..12,
            probes in proptest::collection::vec(arb_ip(), 0..10),
        ) {
            let mut table = IpTable::new();
            let mut map: VecMap<IpAddr, IpSeen> = VecMap::new();
            for (widen, ip, seen) in &ops {
                if *widen {
                    let full = map.len() >= max;
                    let expected = match map.get_mut(ip) {
                        Some(held) => {
                            held.first_seen_us = held.first_seen_us.min(seen.first_seen_us);
                            held.last_seen_us = held.last_seen_us.max(seen.last_seen_us);
                            Some(false)
                        }
                        None if full => None,
                        None => {
                            map.insert(*ip, *seen);
                            Some(true)
                        }
                    };
                    prop_assert_eq!(table.see(*ip, seen.first_seen_us, seen.last_seen_us, max), expected);
                } else {
                    prop_assert_eq!(table.insert(*ip, *seen), map.insert(*ip, *seen));
                }
                prop_assert_eq!(table.len(), map.len());
            }
            prop_assert!(table.iter().eq(map.iter().map(|(ip, seen)| (*ip, *seen))));
            prop_assert!(table.keys().eq(map.keys().copied()));
            for (_, ip, _) in &ops {
                prop_assert_eq!(table.get(ip), map.get(ip).copied());
                prop_assert_eq!(table.contains_key(ip), map.contains_key(ip));
            }
            // Addresses that may be absent, before, between or after the held ones.
            for ip in &probes {
                prop_assert_eq!(table.contains_key(ip), map.contains_key(ip));
            }
            let config = bincode::config::standard();
            let bytes = bincode::serde::encode_to_vec(&table, config).unwrap();
            prop_assert_eq!(&bytes, &bincode::serde::encode_to_vec(&map, config).unwrap());
            let (back, _): (IpTable, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
            prop_assert_eq!(&back, &table);
            let json = serde_json::to_string(&table).unwrap();
            prop_assert_eq!(&json, &serde_json::to_string(&map).unwrap());
            prop_assert_eq!(serde_json::from_str::<IpTable>(&json).unwrap(), table);
        }

        /// Collecting keeps the last of repeated addresses, as repeated inserts do.
        #[test]
        fn collecting_agrees_with_inserting(entries in proptest::collection::vec((arb_ip(), arb_seen()), 0..30)) {
            let mut inserted = IpTable::new();
            for (ip, seen) in &entries {
                inserted.insert(*ip, *seen);
            }
            prop_assert_eq!(entries.into_iter().collect::<IpTable>(), inserted);
        }
    }
}
