//! The address → device index: every (address, MAC) of the devices' `ips`, so a device is
//! found by address without scanning every record.
//!
//! Kept as one entry per address with its MACs, not one entry per (address, MAC): with
//! DHCP hand-overs each leased address is on several MACs' records, and repeating the
//! 17-byte address in a tree entry per MAC was a large part of the state at 10M bindings.
//! Derived state (rebuilt on load), so its layout is free.

use std::collections::BTreeMap;
use std::net::IpAddr;
use wardline_common::MacAddr;

/// The MACs seen using one address, sorted and distinct. One MAC (the usual case) is held
/// inline; more in one boxed slice.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Holders {
    One(MacAddr),
    Many(Box<[MacAddr]>),
}

impl Holders {
    fn as_slice(&self) -> &[MacAddr] {
        match self {
            Holders::One(mac) => std::slice::from_ref(mac),
            Holders::Many(macs) => macs,
        }
    }

    /// Add `mac`; returns whether it was new.
    fn insert(&mut self, mac: MacAddr) -> bool {
        let macs = self.as_slice();
        let Err(at) = macs.binary_search(&mac) else { return false };
        let mut grown = Vec::with_capacity(macs.len() + 1);
        grown.extend_from_slice(&macs[..at]);
        grown.push(mac);
        grown.extend_from_slice(&macs[at..]);
        *self = Holders::Many(grown.into_boxed_slice());
        true
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressIndex(BTreeMap<IpAddr, Holders>);

impl AddressIndex {
    /// Note that `mac` used `ip`; returns whether the pair was new.
    pub fn insert(&mut self, ip: IpAddr, mac: MacAddr) -> bool {
        match self.0.get_mut(&ip) {
            Some(holders) => holders.insert(mac),
            None => {
                self.0.insert(ip, Holders::One(mac));
                true
            }
        }
    }

    /// The lowest MAC seen using `ip`, so every node picks the same one.
    pub fn lowest(&self, ip: &IpAddr) -> Option<MacAddr> {
        self.0.get(ip).and_then(|h| h.as_slice().first().copied())
    }

    /// Every MAC seen using `ip`, sorted.
    #[cfg(test)]
    fn macs(&self, ip: &IpAddr) -> &[MacAddr] {
        self.0.get(ip).map_or(&[], Holders::as_slice)
    }
}

impl Extend<(IpAddr, MacAddr)> for AddressIndex {
    fn extend<I: IntoIterator<Item = (IpAddr, MacAddr)>>(&mut self, iter: I) {
        for (ip, mac) in iter {
            self.insert(ip, mac);
        }
    }
}

impl FromIterator<(IpAddr, MacAddr)> for AddressIndex {
    fn from_iter<I: IntoIterator<Item = (IpAddr, MacAddr)>>(iter: I) -> Self {
        let mut index = AddressIndex::default();
        index.extend(iter);
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Answers as the set of (address, MAC) pairs it replaces, whatever the insert order.
        #[test]
        fn agrees_with_a_set_of_pairs(pairs in proptest::collection::vec((0u8..6, 0u8..5), 0..60)) {
            let mut index = AddressIndex::default();
            let mut set = BTreeSet::new();
            for (ip, mac) in &pairs {
                let (ip, mac) = (IpAddr::from([10, 0, 0, *ip]), MacAddr([0, 0x1b, 0, 0, 0, *mac]));
                prop_assert_eq!(index.insert(ip, mac), set.insert((ip, mac)));
            }
            for ip in 0u8..6 {
                let ip = IpAddr::from([10, 0, 0, ip]);
                let expected: Vec<MacAddr> = set.iter().filter(|(i, _)| *i == ip).map(|(_, m)| *m).collect();
                prop_assert_eq!(index.macs(&ip), expected.as_slice());
                prop_assert_eq!(index.lowest(&ip), expected.first().copied());
            }
        }
    }
}
