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

/// Sled-backed Raft log and vote store. Cheap to clone: clones share the same trees, so
/// a clone serves as the log reader for replication tasks.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(LogStore { db: db.clone(), log: db.open_tree(TREE_LOG)?, meta: db.open_tree(TREE_META)? })
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
        for entry in entries {
            let bytes = codec::encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &Msg(e.to_string())))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        // An acknowledgement must mean durable: report completion only after the flush.
        let flushed = flush(&self.db).await;
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
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
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
