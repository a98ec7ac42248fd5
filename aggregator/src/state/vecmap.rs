//! Sorted-vector map and set for the small per-device collections. A `BTreeMap` node is
//! allocated for eleven entries even when it holds one; at a million devices that alone
//! broke the 2 KB-per-device budget. Lookups are binary searches; inserts shift, which is
//! cheap at the sizes the per-device bounds allow. Iteration order is the key order, as
//! with `BTreeMap`, so serialization stays identical on every node.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;

/// A map kept as a vector sorted by key. Serialized as a list of `(key, value)` pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.position(key).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.position(key).is_ok()
    }

    /// Insert or replace; returns the value replaced. Grows the vector by exactly one, so
    /// a record holds no spare capacity.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// The value of `key`, inserted from `make` if absent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.position(&key) {
            Ok(i) => i,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (key, make()));
                i
            }
        };
        &mut self.0[i].1
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Entries with keys in `from..=to`, in order.
    pub fn range_inclusive<'a>(&'a self, from: &K, to: &K) -> impl DoubleEndedIterator<Item = (&'a K, &'a V)> + 'a {
        let start = self.0.partition_point(|(k, _)| k < from);
        let end = self.0.partition_point(|(k, _)| k <= to).max(start);
        self.0[start..end].iter().map(|(k, v)| (k, v))
    }

    /// Entries with keys at or after `from`, in order.
    pub fn iter_from<'a>(&'a self, from: &K) -> impl Iterator<Item = (&'a K, &'a V)> + 'a {
        let start = self.0.partition_point(|(k, _)| k < from);
        self.0[start..].iter().map(|(k, v)| (k, v))
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        // Keep the last of equal keys, as repeated `insert`s would.
        entries.reverse();
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        entries.reverse();
        entries.shrink_to_fit();
        VecMap(entries)
    }
}

impl<K: Serialize, V: Serialize> Serialize for VecMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for VecMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// A set kept as a sorted vector. Serialized as a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecSet<T>(Vec<T>);

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        VecSet(Vec::new())
    }
}

impl<T: Ord> VecSet<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains<Q: Ord + ?Sized>(&self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.0.binary_search_by(|v| v.borrow().cmp(value)).is_ok()
    }

    /// Insert; returns whether the value was new.
    pub fn insert(&mut self, value: T) -> bool {
        match self.0.binary_search(&value) {
            Ok(_) => false,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, value);
                true
            }
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T: Ord> Extend<T> for VecSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for value in iter {
            self.insert(value);
        }
    }
}

impl<T: Ord> FromIterator<T> for VecSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut values: Vec<T> = iter.into_iter().collect();
        values.sort();
        values.dedup();
        values.shrink_to_fit();
        VecSet(values)
    }
}

impl<'a, T> IntoIterator for &'a VecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Serialize> Serialize for VecSet<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de> + Ord> Deserialize<'de> for VecSet<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<T>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    proptest! {
        /// Behaves as `BTreeMap`/`BTreeSet` for any sequence of inserts, and round-trips.
        #[test]
        fn agrees_with_btree(ops in proptest::collection::vec((0u8..40, any::<u16>()), 0..200)) {
            let mut map = VecMap::new();
            let mut set = VecSet::new();
            let mut bmap = BTreeMap::new();
            let mut bset = BTreeSet::new();
            for (k, v) in &ops {
                prop_assert_eq!(map.insert(*k, *v), bmap.insert(*k, *v));
                prop_assert_eq!(set.insert(*k), bset.insert(*k));
            }
            prop_assert!(map.iter().map(|(k, v)| (*k, *v)).eq(bmap.iter().map(|(k, v)| (*k, *v))));
            prop_assert!(set.iter().eq(bset.iter()));
            prop_assert!(map.iter_from(&20).map(|(k, _)| *k).eq(bmap.range(20..).map(|(k, _)| *k)));
            prop_assert!(map.range_inclusive(&10, &30).map(|(k, _)| *k).eq(bmap.range(10..=30).map(|(k, _)| *k)));
            prop_assert!(map.range_inclusive(&30, &10).next().is_none());
            prop_assert!((&map).into_iter().map(|(k, _)| *k).eq(bmap.keys().copied()));
            let json = serde_json::to_string(&map).unwrap();
            prop_assert_eq!(serde_json::from_str::<VecMap<u8, u16>>(&json).unwrap(), map);
            let rebuilt: VecMap<u8, u16> = ops.iter().copied().collect();
            prop_assert!(rebuilt.iter().map(|(k, v)| (*k, *v)).eq(bmap.iter().map(|(k, v)| (*k, *v))));
        }
    }
}
