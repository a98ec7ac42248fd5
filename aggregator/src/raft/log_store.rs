//! The Raft log on sled: entries in tree `raft_log` keyed by big-endian index (so sled's
//! byte order is log order), and the vote, committed and last-purged log ids in tree
//! `raft_meta`. Values are bincode 2 (serde, standard config).
//!
//! Durability: `append` acknowledges (calls the callback) only after `Db::flush`, and
//! `save_vote` returns only after a flush, as Raft requires. `committed` is written
//! without its own flush: the next flush (any append, vote, or sled's periodic flush)
//! persists it, and a stale `committed` after a crash only means the node re-learns the
//! commit index from the leader before re-applying those entries.
//!
//! We flush with the blocking `Db::flush` on tokio's blocking pool rather than
//! `flush_async`: sled 0.34's `flush_async` can deadlock when several flushes are in
//! flight (spacejam/sled#1308, fixed only on sled's unreleased main branch).

use super::{codec, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogId, StorageError, StorageIOError, Vote};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

type NodeId = u64;

const TREE_LOG: &str = "raft_log";
const TREE_META: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Encoded bytes of the recent entries [`EntryCache`] keeps decoded.
pub const ENTRY_CACHE_BYTES: usize = 32 << 20;

/// The entries appended last, decoded, in index order without gaps. Each entry is read
/// back once per follower (replication) and once more to apply it; decoding it from sled
/// every time was a fifth of a node's CPU under ingest, and a clone of a decoded entry is
/// far cheaper. Bounded by the entries' encoded size; anything else is read from sled.
#[derive(Default)]
struct EntryCache {
    entries: std::collections::VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl EntryCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    /// Keep `entry` (appended after every cached one; a gap starts the cache over).
    fn push(&mut self, entry: Entry<TypeConfig>, encoded: usize) {
        let next = self.entries.back().map(|(e, _)| e.log_id.index + 1);
        if next.is_some_and(|n| n != entry.log_id.index) {
            self.clear();
        }
        self.bytes += encoded;
        self.entries.push_back((entry, encoded));
        while self.bytes > ENTRY_CACHE_BYTES && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, n)) = self.entries.pop_front() {
            self.bytes -= n;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Clones of the entries `start..end`, when every one of them is here.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.first_index()?;
        let from = usize::try_from(start.checked_sub(first)?).ok()?;
        let to = usize::try_from(end.checked_sub(first)?).ok()?;
        if from > to || to > self.entries.len() {
            return None;
        }
        Some(self.entries.range(from..to).map(|(e, _)| e.clone()).collect())
    }

    /// Forget entries from `index` on (the log was truncated there).
    fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= index) {
            if let Some((_, n)) = self.entries.pop_back() {
                self.bytes -= n;
            }
        }
    }

    /// Forget entries up to and including `index` (purged).
    fn purge_through(&mut self, index: u64) {
        while self.first_index().is_some_and(|i| i <= index) {
            self.pop_front();
        }
    }
}

/// Sled-backed Raft log and vote store. Cheap to clone: clones share the same trees and
/// entry cache, so a clone serves as the log reader for replication tasks.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    cache: std::sync::Arc<std::sync::Mutex<EntryCache>>,
}

impl LogStore {
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(LogStore {
            db: db.clone(),
            log: db.open_tree(TREE_LOG)?,
            meta: db.open_tree(TREE_META)?,
            cache: Default::default(),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, EntryCache> {
        // The cache holds no invariant a panicking holder could break half-way that a
        // clear would not fix; a poisoned lock starts it over.
        self.cache.lock().unwrap_or_else(|p| {
            let mut g = p.into_inner();
            g.clear();
            g
        })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, String> {
        let what = String::from_utf8_lossy(key).into_owned();
        match self.meta.get(key).map_err(|e| format!("cannot read raft_meta/{what}: {e}"))? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| format!("corrupt raft_meta/{what}: {e}")),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), String> {
        let what = String::from_utf8_lossy(key).into_owned();
        let bytes = codec::encode(value).map_err(|e| format!("cannot encode raft_meta/{what}: {e}"))?;
        self.meta.insert(key, bytes).map_err(|e| format!("cannot write raft_meta/{what}: {e}"))?;
        Ok(())
    }

    /// Index of the last entry this node knows committed (as openraft last saved it).
    pub fn committed_index(&self) -> Option<u64> {
        self.read_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED).ok().flatten().flatten().map(|l| l.index)
    }

    fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry<TypeConfig>, String> {
        codec::decode(value).map_err(|e| format!("corrupt raft_log entry at key {}: {e}", hex::encode(key)))
    }
}

/// An error message as an `std::error::Error`, for openraft's `AnyError` wrappers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Msg(pub String);

/// Persist everything sled holds in memory, on the blocking pool.
pub(crate) async fn flush(db: &sled::Db) -> std::io::Result<()> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(std::io::Error::other(format!("sled flush failed: {e}"))),
        Err(e) => Err(std::io::Error::other(format!("sled flush task failed: {e}"))),
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(hit) = end.and_then(|end| self.cache().get(start, end)) {
            return Ok(hit);
        }
        let mut out = Vec::new();
        for item in self.log.range(index_key(start)..) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let entry = Self::decode_entry(&key, &value).map_err(|e| StorageIOError::read_logs(&Msg(e)))?;
            if !range.contains(&entry.log_id.index) {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            self.read_meta(KEY_LAST_PURGED).map_err(|e| StorageIOError::read_logs(&Msg(e)))?;
        let last = match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            None => None,
            Some((key, value)) => {
                let entry = Self::decode_entry(&key, &value).map_err(|e| StorageIOError::read_logs(&Msg(e)))?;
                Some(*entry.get_log_id())
            }
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_VOTE, vote).map_err(|e| StorageIOError::write_vote(&Msg(e)))?;
        flush(&self.db).await.map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(KEY_VOTE).map_err(|e| StorageIOError::read_vote(&Msg(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_COMMITTED, &committed).map_err(|e| StorageIOError::write(&Msg(e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed: Option<Option<LogId<NodeId>>> =
            self.read_meta(KEY_COMMITTED).map_err(|e| StorageIOError::read(&Msg(e)))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // One sled batch: the entries become visible (and later durable) together.
        let mut batch = sled::Batch::default();
        let mut decoded = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &Msg(e.to_string())))?;
            let encoded = bytes.len();
            batch.insert(&index_key(entry.log_id.index), bytes);
            decoded.push((entry, encoded));
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        // Cached only once sled holds them, so a read never sees an entry sled does not.
        {
            let mut cache = self.cache();
            for (entry, encoded) in decoded {
                cache.push(entry, encoded);
            }
        }
        // An acknowledgement must mean durable: report completion only after the flush.
        let flushed = flush(&self.db).await;
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // The cache first: a concurrent read then finds them in neither or only in sled.
        self.cache().truncate_from(log_id.index);
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        flush(&self.db).await.map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: if we crash midway, the log still reads as
        // "everything up to last_purged is gone", never as a hole.
        self.write_meta(KEY_LAST_PURGED, &log_id).map_err(|e| StorageIOError::write_logs(&Msg(e)))?;
        self.cache().purge_through(log_id.index);
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    fn indices(got: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        got.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn the_entry_cache_answers_only_ranges_it_holds_whole() {
        let mut c = EntryCache::default();
        for i in 5..10 {
            c.push(entry(i), 100);
        }
        assert_eq!(indices(c.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indices(c.get(7, 9)), Some(vec![7, 8]));
        assert_eq!(indices(c.get(7, 7)), Some(vec![]));
        assert_eq!(indices(c.get(4, 8)), None, "starts before the cache");
        assert_eq!(indices(c.get(8, 11)), None, "ends after the cache");
        assert_eq!(indices(c.get(9, 8)), None, "an empty range backwards");
        // A gap (entries appended after others were lost) starts the cache over.
        c.push(entry(12), 100);
        assert_eq!(indices(c.get(12, 13)), Some(vec![12]));
        assert_eq!(indices(c.get(9, 10)), None);
        assert_eq!(c.bytes, 100);
    }

    #[test]
    fn the_entry_cache_follows_truncation_purge_and_its_bound() {
        let mut c = EntryCache::default();
        for i in 1..=10 {
            c.push(entry(i), 10);
        }
        c.truncate_from(8);
        assert_eq!(indices(c.get(1, 8)), Some((1..8).collect()));
        assert_eq!(indices(c.get(7, 9)), None, "truncated entries are gone");
        c.push(entry(8), 10);
        assert_eq!(indices(c.get(8, 9)), Some(vec![8]), "the new entry at a truncated index");
        c.purge_through(3);
        assert_eq!(indices(c.get(3, 5)), None);
        assert_eq!(indices(c.get(4, 9)), Some((4..9).collect()));
        assert_eq!(c.bytes, 50);
        // Over the bound the oldest go first; the newest always stays.
        c.push(entry(9), ENTRY_CACHE_BYTES - 20);
        assert_eq!(c.first_index(), Some(7), "4, 5 and 6 made room");
        assert!(c.bytes <= ENTRY_CACHE_BYTES);
        c.push(entry(10), ENTRY_CACHE_BYTES * 2);
        assert_eq!(indices(c.get(10, 11)), Some(vec![10]));
        assert_eq!(c.entries.len(), 1);
    }
}
