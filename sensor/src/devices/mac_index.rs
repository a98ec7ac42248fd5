//! MAC → device slot, for frames whose flow has no sender hint yet (a new flow).
//!
//! A flat open-addressing table (linear probing, never more than half full) of 8-byte
//! entries: the slot and 32 bits of the MAC's hash. A lookup reads one entry line, then
//! confirms the MAC in the device's hot line, which the caller reads next anyway to account
//! the frame; a table of control bytes and separate buckets costs two dependent reads
//! before that, and the tag keeps other devices' lines from being read on the way.
//! Devices are never removed, so there are no tombstones. The hash is seeded per table,
//! so crafted MACs cannot line up in one run.

use super::hot::HotDevice;
use super::{DeviceSlot, NO_DEVICE};
use std::hash::BuildHasher;
use wardline_common::MacAddr;

#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Entry {
    /// The upper half of the MAC's hash (the lower half picks the home entry).
    tag: u32,
    /// [`NO_DEVICE`] for an empty entry.
    slot: DeviceSlot,
}

const EMPTY: Entry = Entry { tag: 0, slot: NO_DEVICE };

pub(super) struct MacIndex {
    entries: Vec<Entry>,
    len: usize,
    state: foldhash::fast::RandomState,
}

impl Default for MacIndex {
    fn default() -> Self {
        MacIndex { entries: vec![EMPTY; 64], len: 0, state: Default::default() }
    }
}

impl MacIndex {
    #[inline]
    fn hash(&self, mac: &MacAddr) -> u64 {
        let b = mac.0;
        self.state.hash_one(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0]))
    }

    /// The entry holding `mac` (`Ok`), or the empty entry where it would go (`Err`).
    #[inline]
    fn position(&self, hot: &[HotDevice], mac: &MacAddr, hash: u64) -> Result<usize, usize> {
        let mask = self.entries.len() - 1;
        let tag = (hash >> 32) as u32;
        let mut i = hash as usize & mask;
        loop {
            let e = self.entries[i];
            if e.slot == NO_DEVICE {
                return Err(i);
            }
            if e.tag == tag && hot.get(e.slot as usize).is_some_and(|h| h.mac == *mac) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot of `mac` among `hot`, if indexed.
    #[inline]
    pub fn get(&self, hot: &[HotDevice], mac: &MacAddr) -> Option<DeviceSlot> {
        let i = self.position(hot, mac, self.hash(mac)).ok()?;
        Some(self.entries[i].slot)
    }

    /// The slot of `mac`, or `new_slot()`'s (then indexed) when it is not indexed yet and
    /// that gives one. `new_slot` must push the device to `hot` at the slot it returns.
    #[inline]
    pub fn get_or_insert(
        &mut self,
        hot: &mut Vec<HotDevice>,
        mac: MacAddr,
        new_slot: impl FnOnce(&mut Vec<HotDevice>) -> Option<DeviceSlot>,
    ) -> Option<DeviceSlot> {
        let hash = self.hash(&mac);
        let mut i = match self.position(hot, &mac, hash) {
            Ok(i) => return Some(self.entries[i].slot),
            Err(i) => i,
        };
        let slot = new_slot(hot)?;
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow(hot);
            // Not found before growing, so not found after: this is its empty entry.
            i = match self.position(hot, &mac, hash) {
                Err(i) | Ok(i) => i,
            };
        }
        self.entries[i] = Entry { tag: (hash >> 32) as u32, slot };
        self.len += 1;
        Some(slot)
    }

    /// Double the table, placing each entry by its device's MAC.
    fn grow(&mut self, hot: &[HotDevice]) {
        let bigger = vec![EMPTY; self.entries.len() * 2];
        let old = std::mem::replace(&mut self.entries, bigger);
        let mask = self.entries.len() - 1;
        for e in old.into_iter().filter(|e| e.slot != NO_DEVICE) {
            let mut i = self.hash(&hot[e.slot as usize].mac) as usize & mask;
            while self.entries[i].slot != NO_DEVICE {
                i = (i + 1) & mask;
            }
            self.entries[i] = e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(ix: &mut MacIndex, hot: &mut Vec<HotDevice>, mac: MacAddr) -> Option<DeviceSlot> {
        ix.get_or_insert(hot, mac, |hot| {
            hot.push(HotDevice::new(mac, 0));
            Some((hot.len() - 1) as DeviceSlot)
        })
    }

    #[test]
    fn finds_every_inserted_mac_across_growth_and_nothing_else() {
        let (mut ix, mut hot) = (MacIndex::default(), Vec::new());
        let mac = |i: u32| MacAddr([0x02, (i >> 24) as u8, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0x5a]);
        // Far more MACs than the first table has entries: probes collide and the table grows.
        for i in 0..5_000u32 {
            assert_eq!(ix.get(&hot, &mac(i)), None);
            assert_eq!(add(&mut ix, &mut hot, mac(i)), Some(i));
            // A second insert returns the first slot and does not call `new_slot`.
            assert_eq!(ix.get_or_insert(&mut hot, mac(i), |_| panic!("indexed twice")), Some(i));
        }
        for i in 0..5_000u32 {
            assert_eq!(ix.get(&hot, &mac(i)), Some(i));
            assert_eq!(hot[i as usize].mac, mac(i));
        }
        assert_eq!(ix.get(&hot, &mac(5_000)), None);
        assert_eq!(hot.len(), 5_000);
        // The all-zero MAC is a key like any other.
        assert_eq!(ix.get(&hot, &MacAddr::ZERO), None);
        assert_eq!(add(&mut ix, &mut hot, MacAddr::ZERO), Some(5_000));
        assert_eq!(ix.get(&hot, &MacAddr::ZERO), Some(5_000));
        // No slot given (the device table is full): nothing is indexed.
        assert_eq!(ix.get_or_insert(&mut hot, mac(9_999), |_| None), None);
        assert_eq!(ix.get(&hot, &mac(9_999)), None);
    }
}
