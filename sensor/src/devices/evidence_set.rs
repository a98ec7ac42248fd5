//! The set of (field, value) evidence pairs one device has shown, for "is this new?"
//! checks on every finding.
//!
//! Keys live back to back in one byte arena per device (`[field: u16][len: u32][value]`),
//! held inline in the device's state while they fit in [`INLINE`] bytes (a client with one
//! looked-up name), on the heap after. A small set is scanned linearly: no cache miss
//! inline, one or two lines on the heap, where a hash set costs a miss on its control
//! bytes, one on its bucket and one on the boxed string. Past [`LINEAR_MAX`] entries a
//! hash index of arena offsets takes over.

use hashbrown::HashTable;
use std::hash::BuildHasher;
use wardline_common::Field;

/// Entries scanned linearly before the hash index is built.
const LINEAR_MAX: usize = 8;
const HEADER: usize = 6;
/// Arena bytes kept inside the set itself before moving to the heap.
const INLINE: usize = 56;

#[derive(Debug)]
pub(super) struct EvidenceSet {
    inline: [u8; INLINE],
    inline_len: u8,
    /// The whole arena once it outgrew `inline` (then `inline` is unused).
    arena: Vec<u8>,
    len: usize,
    /// Offsets of entries in `arena`, hashed by (field, value); built past `LINEAR_MAX`.
    index: Option<(HashTable<u32>, foldhash::fast::RandomState)>,
}

impl Default for EvidenceSet {
    fn default() -> Self {
        EvidenceSet { inline: [0; INLINE], inline_len: 0, arena: Vec::new(), len: 0, index: None }
    }
}

fn field_code(f: Field) -> u16 {
    f as u16
}

/// The (field, value) of the entry at `off` in arena `a`, and the offset of the next one.
#[inline]
fn entry_in(a: &[u8], off: usize) -> (u16, &[u8], usize) {
    let code = u16::from_le_bytes([a[off], a[off + 1]]);
    let n = u32::from_le_bytes([a[off + 2], a[off + 3], a[off + 4], a[off + 5]]) as usize;
    let start = off + HEADER;
    (code, &a[start..start + n], start + n)
}

impl EvidenceSet {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn bytes(&self) -> &[u8] {
        if self.arena.is_empty() {
            &self.inline[..self.inline_len as usize]
        } else {
            &self.arena
        }
    }

    fn entry_at(&self, off: usize) -> (u16, &[u8], usize) {
        entry_in(self.bytes(), off)
    }

    fn hash(state: &foldhash::fast::RandomState, code: u16, value: &[u8]) -> u64 {
        state.hash_one((code, value))
    }

    pub(super) fn contains(&self, field: Field, value: &str) -> bool {
        let (code, value) = (field_code(field), value.as_bytes());
        if let Some((index, state)) = &self.index {
            let h = Self::hash(state, code, value);
            return index
                .find(h, |&off| {
                    let (c, v, _) = self.entry_at(off as usize);
                    c == code && v == value
                })
                .is_some();
        }
        let bytes = self.bytes();
        let mut off = 0;
        while off < bytes.len() {
            let (c, v, next) = entry_in(bytes, off);
            if c == code && v == value {
                return true;
            }
            off = next;
        }
        false
    }

    /// Add a pair the caller checked is not in the set.
    pub(super) fn insert_new(&mut self, field: Field, value: &str) {
        let code = field_code(field);
        let used = self.inline_len as usize;
        if self.arena.is_empty() && used + HEADER + value.len() <= INLINE {
            let e = &mut self.inline[used..used + HEADER + value.len()];
            e[..2].copy_from_slice(&code.to_le_bytes());
            e[2..HEADER].copy_from_slice(&(value.len() as u32).to_le_bytes());
            e[HEADER..].copy_from_slice(value.as_bytes());
            self.inline_len = (used + HEADER + value.len()) as u8;
            self.len += 1;
            return;
        }
        if self.arena.is_empty() {
            self.arena.extend_from_slice(&self.inline[..used]);
        }
        let off = self.arena.len();
        self.arena.extend_from_slice(&code.to_le_bytes());
        self.arena.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.arena.extend_from_slice(value.as_bytes());
        self.len += 1;
        if self.index.is_none() && self.len > LINEAR_MAX {
            let state = foldhash::fast::RandomState::default();
            let mut index = HashTable::with_capacity(self.len * 2);
            let mut o = 0;
            while o < self.arena.len() {
                let (c, v, next) = self.entry_at(o);
                index.insert_unique(Self::hash(&state, c, v), o as u32, |_| 0);
                o = next;
            }
            self.index = Some((index, state));
            return;
        }
        if let Some((index, state)) = &mut self.index {
            let arena = &self.arena;
            let rehash = |&o: &u32| {
                let o = o as usize;
                let c = u16::from_le_bytes([arena[o], arena[o + 1]]);
                let n = u32::from_le_bytes([arena[o + 2], arena[o + 3], arena[o + 4], arena[o + 5]]) as usize;
                Self::hash(state, c, &arena[o + HEADER..o + HEADER + n])
            };
            index.insert_unique(Self::hash(state, code, value.as_bytes()), off as u32, rehash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_exact_before_and_after_the_index() {
        let mut s = EvidenceSet::default();
        let fields = [Field::Hostname, Field::DnsQuery, Field::ListeningPort];
        let mut added = Vec::new();
        for i in 0..40 {
            let f = fields[i % 3];
            let v = format!("value-{}", i / 3);
            assert!(!s.contains(f, &v));
            s.insert_new(f, &v);
            added.push((f, v));
            for (f, v) in &added {
                assert!(s.contains(*f, v), "{f:?} {v}");
            }
            // Same value under another field, a prefix, and the empty value are distinct.
            assert!(!s.contains(Field::MdnsTxt, &added[0].1));
            assert!(!s.contains(added[0].0, "value-"));
            assert!(!s.contains(added[0].0, ""));
        }
        assert_eq!(s.len(), 40);
        s.insert_new(Field::MdnsTxt, "");
        assert!(s.contains(Field::MdnsTxt, ""));
    }

    #[test]
    fn many_tiny_entries_stay_exact_across_the_move_to_the_heap() {
        let mut s = EvidenceSet::default();
        let values = ["", "a", "b", "ab", "", "c"];
        let fields = [Field::Hostname, Field::DnsQuery];
        let mut added = Vec::new();
        for (i, v) in values.iter().cycle().take(12).enumerate() {
            let f = fields[i / values.len()];
            if !s.contains(f, v) {
                s.insert_new(f, v);
                added.push((f, *v));
            }
            for (f, v) in &added {
                assert!(s.contains(*f, v));
            }
            assert!(!s.contains(Field::MdnsTxt, v));
        }
        assert_eq!(s.len(), 10);
        // A long value after inline entries moves the arena; all earlier ones still match.
        let long = "x".repeat(100);
        s.insert_new(Field::MdnsTxt, &long);
        for (f, v) in &added {
            assert!(s.contains(*f, v));
        }
        assert!(s.contains(Field::MdnsTxt, &long));
    }
}
