//! The set of (field, value) evidence pairs one device has shown, for "is this new?"
//! checks on every finding.
//!
//! Keys live back to back in one byte arena per device (`[field: u16][len: u32][value]`),
//! held inline in the set's first cache line (the head) while they fit in [`HEAD`] bytes
//! (a client with one looked-up name), on the heap after. A small set is scanned
//! linearly: no cache miss inline, one or two lines on the heap, where a hash set costs a
//! miss on its control bytes, one on its bucket and one on the boxed string. Past
//! [`LINEAR_MAX`] entries a hash index of arena offsets takes over.
//!
//! Once the arena is on the heap the head keeps copies of entries found recently, in the
//! same format: repeats (a monitor's every packet names the same vendor protocol and
//! port) are answered from the head alone, without hashing or reaching the heap. Entries
//! are never removed, so a copy found in the head is always a member.

use hashbrown::HashTable;
use std::hash::BuildHasher;
use wardline_common::Field;

/// Entries scanned linearly before the hash index is built.
const LINEAR_MAX: usize = 8;
const HEADER: usize = 6;
/// Entry bytes held in the set's first line: all entries while they fit, then recent hits.
const HEAD: usize = 56;

#[repr(C, align(64))]
#[derive(Debug)]
pub(super) struct EvidenceSet {
    head: [u8; HEAD],
    /// Bytes used in `head`.
    head_len: u8,
    /// The entries live in `arena`; `head` only caches some of them.
    spilled: bool,
    /// Entries (saturating: no set holds 4 billion entries in memory anyway).
    len: u32,
    /// All entries once they outgrew `head`.
    arena: Vec<u8>,
    /// Offsets of entries in `arena`, hashed by (field, value); built past `LINEAR_MAX`.
    index: Option<(HashTable<u32>, foldhash::fast::RandomState)>,
}

// What a membership test answered from the head reads must stay within the first line.
const _: () = assert!(std::mem::offset_of!(EvidenceSet, len) + 4 <= 64);

impl Default for EvidenceSet {
    fn default() -> Self {
        EvidenceSet { head: [0; HEAD], head_len: 0, spilled: false, len: 0, arena: Vec::new(), index: None }
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

/// Whether the entries packed in `a` include (code, value).
#[inline]
fn scan(a: &[u8], code: u16, value: &[u8]) -> bool {
    let mut off = 0;
    while off < a.len() {
        let (c, v, next) = entry_in(a, off);
        if c == code && v == value {
            return true;
        }
        off = next;
    }
    false
}

/// Append entry (code, value) to `buf` at `at` (the caller checked it fits); returns the end.
fn put_entry(buf: &mut [u8], at: usize, code: u16, value: &[u8]) -> usize {
    let e = &mut buf[at..at + HEADER + value.len()];
    e[..2].copy_from_slice(&code.to_le_bytes());
    e[2..HEADER].copy_from_slice(&(value.len() as u32).to_le_bytes());
    e[HEADER..].copy_from_slice(value);
    at + HEADER + value.len()
}

impl EvidenceSet {
    /// Start loading what [`contains`](Self::contains) reads first.
    #[inline]
    pub(super) fn prefetch(&self) {
        crate::prefetch::read(&self.head);
    }

    pub(super) fn len(&self) -> usize {
        self.len as usize
    }

    fn entry_at(&self, off: usize) -> (u16, &[u8], usize) {
        entry_in(&self.arena, off)
    }

    fn hash(state: &foldhash::fast::RandomState, code: u16, value: &[u8]) -> u64 {
        state.hash_one((code, value))
    }

    /// Whether (field, value) is in the set. A hit found on the heap is copied to the
    /// head, so its next test stays in the first line.
    pub(super) fn contains(&mut self, field: Field, value: &str) -> bool {
        let (code, value) = (field_code(field), value.as_bytes());
        // An inline set (the common case) or a recent hit is answered from the first line.
        if scan(&self.head[..self.head_len as usize], code, value) {
            return true;
        }
        if !self.spilled {
            return false;
        }
        let found = match &self.index {
            Some((index, state)) => index
                .find(Self::hash(state, code, value), |&off| {
                    let (c, v, _) = self.entry_at(off as usize);
                    c == code && v == value
                })
                .is_some(),
            None => scan(&self.arena, code, value),
        };
        if found {
            self.remember(code, value);
        }
        found
    }

    /// Copy a member of a spilled set to the head, making room by forgetting the others.
    fn remember(&mut self, code: u16, value: &[u8]) {
        let need = HEADER + value.len();
        if need > HEAD {
            return;
        }
        let at = if self.head_len as usize + need > HEAD { 0 } else { self.head_len as usize };
        self.head_len = put_entry(&mut self.head, at, code, value) as u8;
    }

    /// Add a pair the caller checked is not in the set.
    pub(super) fn insert_new(&mut self, field: Field, value: &str) {
        let (code, value) = (field_code(field), value.as_bytes());
        self.len = self.len.saturating_add(1);
        let used = self.head_len as usize;
        if !self.spilled && used + HEADER + value.len() <= HEAD {
            self.head_len = put_entry(&mut self.head, used, code, value) as u8;
            return;
        }
        if !self.spilled {
            // The head's entries move to the heap; from now on it caches recent hits.
            self.arena.extend_from_slice(&self.head[..used]);
            self.spilled = true;
            self.head_len = 0;
        }
        let off = self.arena.len();
        self.arena.extend_from_slice(&code.to_le_bytes());
        self.arena.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.arena.extend_from_slice(value);
        // A pair just learned is often seen again at once (the rest of its flow).
        self.remember(code, value);
        if self.index.is_none() && self.len() > LINEAR_MAX {
            let state = foldhash::fast::RandomState::default();
            let mut index = HashTable::with_capacity(self.len() * 2);
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
                let (c, v, _) = entry_in(arena, o as usize);
                Self::hash(state, c, v)
            };
            index.insert_unique(Self::hash(state, code, value), off as u32, rehash);
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

    #[test]
    fn the_head_caches_recent_hits_of_a_spilled_set_and_never_invents_members() {
        let mut s = EvidenceSet::default();
        let port = |i: usize| format!("udp/{}", 24_000 + i);
        for i in 0..20 {
            s.insert_new(Field::ListeningPort, &port(i));
        }
        assert!(s.spilled && s.index.is_some());
        // Alternating repeats (a monitor's every packet) hit the head once copied there.
        for _ in 0..3 {
            assert!(s.contains(Field::ListeningPort, &port(3)));
            assert!(s.contains(Field::ListeningPort, &port(17)));
        }
        assert!(scan(&s.head[..s.head_len as usize], field_code(Field::ListeningPort), port(3).as_bytes()));
        // Many other hits push those copies out of the head; the set still has them.
        for i in 0..20 {
            assert!(s.contains(Field::ListeningPort, &port(i)));
        }
        assert!(s.contains(Field::ListeningPort, &port(3)));
        // Cached values under another field, prefixes and extensions are not members.
        assert!(!s.contains(Field::VendorProtocol, &port(3)));
        assert!(!s.contains(Field::ListeningPort, "udp/2400"));
        assert!(!s.contains(Field::ListeningPort, &format!("{}0", port(3))));
        // A value too long for the head is still found (on the heap each time).
        let long = "v".repeat(HEAD);
        s.insert_new(Field::HttpUserAgent, &long);
        assert!(s.contains(Field::HttpUserAgent, &long));
        assert!(s.contains(Field::HttpUserAgent, &long));
        assert_eq!(s.len(), 21);
    }
}
