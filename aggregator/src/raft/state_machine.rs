//! The Raft state machine: applies committed entries to the in-memory `ClusterState`.
//!
//! Persistence design (snapshot + replay): the state lives in memory; what is durable is
//! the latest snapshot (meta under key `snapshot_meta`, the bincode of `SnapshotPayload`
//! under `snapshot_data`, both in sled tree `raft_sm`, written in one batch and flushed
//! before a build or install returns) and the Raft log. On open the
//! state is loaded from that snapshot, and openraft re-applies the committed log entries
//! after the snapshot's last log id (it persists `committed` via the log store for this).
//! Applying is deterministic, so the replay rebuilds exactly the state the node had.
//! Openraft purges log entries only up to a snapshot it built, and that snapshot is durable
//! first, so no entry needed for replay is ever purged. Snapshots are taken every
//! `RaftConfig::snapshot_every` entries, which bounds the replay after a restart.
//!
//! Compared with writing every change through to sled, this keeps `apply` free of I/O
//! (cheap, and the per-batch cost is the log append only) at the price of a bounded replay.

use super::log_store::{flush, Msg};
use super::{codec, ClusterNode, TypeConfig};
use crate::state::{ApplyResponse, ClusterState, Command};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{Entry, EntryPayload, LogId, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{Mutex, RwLock};

type NodeId = u64;

const TREE_SM: &str = "raft_sm";
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";
/// Hex SHA-256 of the backup a restored node was seeded from (`crate::cluster::backup`).
const KEY_RESTORED_FROM: &[u8] = b"restored_from";

/// What a snapshot carries: the cluster id (from the cluster's first entry) and the state.
/// Encoded with `codec::encode` and decoded with `codec::decode_large`, which has no size
/// limit, so any state that can be saved can also be loaded (issue 10).
#[derive(Serialize, Deserialize)]
pub struct SnapshotPayload {
    pub cluster_id: Option<String>,
    pub state: ClusterState,
}

impl SnapshotPayload {
    /// Decode snapshot bytes (from this node's store or a completed transfer).
    pub fn decode(bytes: &[u8]) -> Result<SnapshotPayload, codec::CodecError> {
        codec::decode_large(bytes)
    }
}

/// What the state machine holds between entries.
#[derive(Debug, Default)]
pub struct StateMachineData {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, ClusterNode>,
    /// The cluster id recorded by the cluster's first entry (None before it is applied).
    pub cluster_id: Option<String>,
    pub state: ClusterState,
}

/// A snapshot as stored in sled.
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, ClusterNode>,
    /// bincode of `SnapshotPayload`.
    data: Vec<u8>,
}

/// The state machine and its snapshot store. Clones share everything; a clone is the
/// snapshot builder, and `RaftNode` keeps one for reads.
#[derive(Clone)]
pub struct StateMachineStore {
    data: Arc<RwLock<StateMachineData>>,
    db: sled::Db,
    tree: sled::Tree,
    /// Serializes snapshot writes so an older snapshot never overwrites a newer one.
    snapshot_write: Arc<Mutex<()>>,
    snapshots_built: Arc<AtomicU64>,
}

impl StateMachineStore {
    /// Open the store and load the state from the latest durable snapshot, if any.
    pub fn open(db: &sled::Db) -> anyhow::Result<Self> {
        let tree = db.open_tree(TREE_SM)?;
        let mut data = StateMachineData::default();
        if let Some(stored) = read_stored_snapshot(&tree).map_err(anyhow::Error::msg)? {
            let payload = SnapshotPayload::decode(&stored.data).map_err(|e| {
                anyhow::anyhow!(
                    "the stored Raft snapshot {} cannot be decoded ({e}); the data directory is \
                     corrupt or from an incompatible version: restore it from a peer",
                    stored.meta.snapshot_id
                )
            })?;
            data.state = payload.state;
            data.cluster_id = payload.cluster_id;
            data.last_applied = stored.meta.last_log_id;
            data.last_membership = stored.meta.last_membership;
        }
        Ok(StateMachineStore {
            data: Arc::new(RwLock::new(data)),
            db: db.clone(),
            tree,
            snapshot_write: Arc::new(Mutex::new(())),
            snapshots_built: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Restore hook (`run --init --restore`): seed an empty store with `state` as its stored
    /// snapshot (no log id, no membership), so `open` loads it and the new cluster's first
    /// entries apply on top of it. Durable before it returns, so a crash before the first
    /// real snapshot still reloads the restored state.
    pub fn seed_restored(db: &sled::Db, state: &ClusterState, backup_sha256: &str) -> anyhow::Result<()> {
        let tree = db.open_tree(TREE_SM)?;
        anyhow::ensure!(
            read_stored_snapshot(&tree).map_err(anyhow::Error::msg)?.is_none(),
            "cannot restore over an existing Raft snapshot: use an empty data directory"
        );
        let meta: SnapshotMeta<NodeId, ClusterNode> =
            SnapshotMeta { snapshot_id: format!("restored-{backup_sha256}"), ..Default::default() };
        let payload = SnapshotPayload { cluster_id: None, state: state.clone() };
        let mut batch = sled::Batch::default();
        batch.insert(KEY_SNAPSHOT_META, codec::encode(&meta)?);
        batch.insert(KEY_SNAPSHOT_DATA, codec::encode_large(&payload)?);
        batch.insert(KEY_RESTORED_FROM, backup_sha256.as_bytes());
        tree.apply_batch(batch)?;
        db.flush()?;
        Ok(())
    }

    /// The backup (hex SHA-256) this store was seeded from, if it was restored.
    pub fn restored_from(db: &sled::Db) -> anyhow::Result<Option<String>> {
        let tree = db.open_tree(TREE_SM)?;
        Ok(tree.get(KEY_RESTORED_FROM)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Shared handle to the live data, for reads outside Raft.
    pub fn data(&self) -> Arc<RwLock<StateMachineData>> {
        self.data.clone()
    }

    /// Store a snapshot durably unless a newer one is already stored.
    async fn persist_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let sig = Some(stored.meta.signature());
        let _guard = self.snapshot_write.lock().await;
        let current =
            read_stored_snapshot(&self.tree).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &Msg(e)))?;
        if let Some(current) = current {
            if current.meta.last_log_id > stored.meta.last_log_id {
                return Ok(());
            }
        }
        let meta = codec::encode(&stored.meta)
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &Msg(e.to_string())))?;
        // One batch: a crash never leaves the meta of one snapshot beside the data of another.
        let mut batch = sled::Batch::default();
        batch.insert(KEY_SNAPSHOT_META, meta);
        batch.insert(KEY_SNAPSHOT_DATA, stored.data.as_slice());
        self.tree.apply_batch(batch).map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        flush(&self.db).await.map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        Ok(())
    }
}

fn read_stored_snapshot(tree: &sled::Tree) -> Result<Option<StoredSnapshot>, String> {
    let meta = match tree.get(KEY_SNAPSHOT_META).map_err(|e| format!("cannot read the stored Raft snapshot: {e}"))? {
        None => return Ok(None),
        Some(bytes) => codec::decode(&bytes).map_err(|e| format!("the stored Raft snapshot meta is corrupt: {e}"))?,
    };
    let data = tree
        .get(KEY_SNAPSHOT_DATA)
        .map_err(|e| format!("cannot read the stored Raft snapshot: {e}"))?
        .ok_or("the stored Raft snapshot has meta but no data")?;
    Ok(Some(StoredSnapshot { meta, data: data.to_vec() }))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Copy under the lock (device records are `Arc`s, so this is cheap) and encode after
        // releasing it: apply waits for the lock, and encoding a large inventory is not cheap.
        let (meta, state) = {
            let sm = self.data.read().await;
            let n = self.snapshots_built.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match sm.last_applied {
                Some(id) => format!("{}-{}-{}", id.leader_id, id.index, n),
                None => format!("empty-{n}"),
            };
            let meta =
                SnapshotMeta { last_log_id: sm.last_applied, last_membership: sm.last_membership.clone(), snapshot_id };
            (meta, SnapshotPayload { cluster_id: sm.cluster_id.clone(), state: sm.state.clone() })
        };
        let data =
            codec::encode_large(&state).map_err(|e| StorageIOError::write_snapshot(None, &Msg(e.to_string())))?;
        let stored = StoredSnapshot { meta, data };
        self.persist_snapshot(&stored).await?;
        Ok(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, ClusterNode>), StorageError<NodeId>> {
        let sm = self.data.read().await;
        Ok((sm.last_applied, sm.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut sm = self.data.write().await;
        let mut responses = Vec::new();
        for entry in entries {
            sm.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(ApplyResponse::default()),
                EntryPayload::Normal(cmd) => {
                    if let Command::InitCluster { cluster_id } = &cmd {
                        // Only the first one counts: a cluster id never changes.
                        if sm.cluster_id.is_none() {
                            sm.cluster_id = Some(cluster_id.clone());
                        }
                    }
                    // By value: a group's flows move into the outbox without a copy.
                    responses.push(sm.state.apply_owned(cmd))
                }
                EntryPayload::Membership(m) => {
                    sm.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(ApplyResponse::default());
                }
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ClusterNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let payload = SnapshotPayload::decode(&data).map_err(|e| {
            StorageIOError::read_snapshot(
                Some(meta.signature()),
                &Msg(format!("snapshot {} from the leader cannot be decoded: {e}", meta.snapshot_id)),
            )
        })?;
        // Durable first, then visible: a crash in between reloads the new snapshot.
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.persist_snapshot(&stored).await?;
        let mut sm = self.data.write().await;
        sm.state = payload.state;
        sm.cluster_id = payload.cluster_id;
        sm.last_applied = meta.last_log_id;
        sm.last_membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = read_stored_snapshot(&self.tree).map_err(|e| StorageIOError::read_snapshot(None, &Msg(e)))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
