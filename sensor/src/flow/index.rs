//! The flow table's hash index: slot numbers by flow-key hash, in one flat array.
//!
//! Linear probing over 8-byte buckets `(low 32 bits of the hash) << 32 | (slot + 1)`, at
//! most half full. A lookup touches one bucket line, then the slab entry to compare keys;
//! a SwissTable touches its control bytes and, elsewhere, its bucket array first: one more
//! cache miss per packet in a million-flow table. Removal shifts the following run back
//! (no tombstones), so probe runs stay short under constant churn. The stored hash bits
//! give each entry's home bucket, so growing needs no access to the keys.

const EMPTY: u64 = 0;
const MIN_BUCKETS: usize = 16;

pub(super) struct FlowIndex {
    buckets: Vec<u64>,
    mask: usize,
    len: usize,
}

fn bucket_of(hash: u64, slot: u32) -> u64 {
    ((hash as u32 as u64) << 32) | (slot as u64 + 1)
}

fn slot_in(b: u64) -> u32 {
    (b as u32).wrapping_sub(1)
}

impl FlowIndex {
    /// Room for `flows` entries without growing.
    pub(super) fn with_capacity(flows: usize) -> FlowIndex {
        let n = (flows.saturating_mul(2)).max(MIN_BUCKETS).next_power_of_two().min(1 << 32);
        let buckets = vec![EMPTY; n];
        crate::hugepages::advise(&buckets);
        FlowIndex { mask: n - 1, buckets, len: 0 }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn home(&self, stored_hash: u64) -> usize {
        stored_hash as usize & self.mask
    }

    /// The slot whose entry has this hash and satisfies `eq`.
    #[inline]
    pub(super) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = hash as u32;
        let mut i = self.home(hash as u32 as u64);
        loop {
            let b = self.buckets[i];
            if b == EMPTY {
                return None;
            }
            if (b >> 32) as u32 == tag && eq(slot_in(b)) {
                return Some(slot_in(b));
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Add `slot` under `hash`; the caller knows it is not present.
    pub(super) fn insert(&mut self, hash: u64, slot: u32) {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        self.place(bucket_of(hash, slot));
        self.len += 1;
    }

    fn place(&mut self, b: u64) {
        let mut i = self.home(b >> 32);
        while self.buckets[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.buckets[i] = b;
    }

    fn grow(&mut self) {
        let n = self.buckets.len() * 2;
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; n]);
        crate::hugepages::advise(&self.buckets);
        self.mask = n - 1;
        for b in old.into_iter().filter(|&b| b != EMPTY) {
            self.place(b);
        }
    }

    /// Remove `slot` (stored under `hash`); false if it was not there.
    pub(super) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let want = bucket_of(hash, slot);
        let mut i = self.home(hash as u32 as u64);
        loop {
            let b = self.buckets[i];
            if b == EMPTY {
                return false;
            }
            if b == want {
                break;
            }
            i = (i + 1) & self.mask;
        }
        // Backward shift: pull later entries of the run into the hole unless that would put
        // them before their home bucket.
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        loop {
            let b = self.buckets[j];
            if b == EMPTY {
                break;
            }
            let home = self.home(b >> 32);
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.buckets[hole] = b;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Random inserts and removals with deliberately colliding hashes, checked against a
    /// HashMap after every step; the table also grows from its minimum size.
    #[test]
    fn matches_a_map_under_churn_and_growth() {
        let mut idx = FlowIndex::with_capacity(0);
        let mut model: HashMap<u32, u64> = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..6_000u32 {
            let r = rnd();
            if r % 3 != 0 || model.is_empty() {
                let slot = step;
                // Few distinct hash values: long runs, wrap-around and equal tags.
                let hash = ((r >> 8) % 64) | if r & 1 == 0 { 0 } else { u64::MAX - 63 };
                idx.insert(hash, slot);
                model.insert(slot, hash);
            } else {
                let k = *model.keys().nth((r >> 16) as usize % model.len()).unwrap();
                let h = model.remove(&k).unwrap();
                assert!(idx.remove(h, k));
                assert!(!idx.remove(h, k));
            }
            if step % 97 == 0 {
                for (&s, &h) in &model {
                    assert_eq!(idx.find(h, |j| j == s), Some(s), "step {step}");
                }
            }
            assert_eq!(idx.len(), model.len());
        }
        for (&s, &h) in &model {
            assert_eq!(idx.find(h, |j| j == s), Some(s));
        }
    }
}
