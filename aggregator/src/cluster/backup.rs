//! Backup and restore of the replicated state (docs/operations.md, "Backup and restore").
//!
//! A backup file is self-describing:
//!
//! ```text
//! "WLBACKUP" | format version (u32 BE) | header length (u32 BE) | header (JSON)
//!            | state (bincode of ClusterState, `header.state_bytes` long)
//!            | SHA-256 of every byte before it (32 bytes)
//! ```
//!
//! The header is JSON so an operator can read it with `head -c 2000 FILE`; it names the
//! source cluster and node, the last applied log id, when and how the backup was made.
//!
//! Three ways in and one way out:
//! - [`capture`]: the applied state of a running node (`GET /api/v1/cluster/backup`);
//! - [`offline`]: a stopped node's data directory, rebuilt from its stored snapshot plus
//!   the log entries after it (committed ones by default; all for majority-loss salvage);
//! - [`prepare_restore`] + [`finish_restore`]: `run --init --restore FILE` founds a new
//!   cluster whose state starts as the backup's, then snapshots and purges its log so every
//!   node that joins later installs that state from a snapshot.

use crate::raft::log_store::LogStore;
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{codec, RaftNode};
use crate::state::ClusterState;
use anyhow::{Context, Result};
use openraft::storage::{RaftLogReader, RaftStateMachine};
use openraft::LogId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const MAGIC: &[u8; 8] = b"WLBACKUP";
/// Version of the file layout and of the state encoding inside it.
pub const FORMAT_VERSION: u32 = 1;
/// Headers are small JSON; anything larger is not a backup of ours.
const MAX_HEADER_BYTES: usize = 64 * 1024;
const PREFIX_BYTES: usize = 8 + 4 + 4;
const TRAILER_BYTES: usize = 32;

/// A log position as the header shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    pub term: u64,
    pub index: u64,
}

impl From<LogId<u64>> for LogPosition {
    fn from(l: LogId<u64>) -> Self {
        LogPosition { term: l.leader_id.term, index: l.index }
    }
}

/// The header of a backup file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    pub format_version: u32,
    /// Cluster the state comes from (None: a node that never recorded one).
    pub cluster_id: Option<String>,
    /// Node the backup was taken from.
    pub node_id: u64,
    /// Last log entry included in the state.
    pub last_applied: Option<LogPosition>,
    /// Milliseconds since the Unix epoch on the node that made the backup.
    pub created_ms: u64,
    /// `online` (a running node's applied state) or `offline` (a stopped node's data dir).
    pub source: String,
    /// Offline only: log entries after the last known commit point that were included
    /// (`--include-uncommitted`); they may never have been committed by the cluster.
    pub uncommitted_entries: u64,
    /// Length of the encoded state that follows the header.
    pub state_bytes: u64,
    /// Version of the aggregator that wrote the file.
    pub wardline_version: String,
}

/// A decoded, verified backup.
#[derive(Clone, Debug, PartialEq)]
pub struct Backup {
    pub header: BackupHeader,
    pub state: ClusterState,
    /// Hex SHA-256 of the whole file (its trailer); identifies the backup.
    pub sha256: String,
}

/// Why bytes are not a usable backup.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    #[error("not a Wardline backup file (it does not start with WLBACKUP)")]
    NotABackup,
    #[error("truncated: {0}")]
    Truncated(String),
    #[error(
        "backup format version {found} is not supported by this aggregator (it reads version {FORMAT_VERSION}); \
         restore with the aggregator version that wrote it ({writer})"
    )]
    UnsupportedVersion { found: u32, writer: String },
    #[error("checksum mismatch: the file is corrupt (SHA-256 of the content {actual}, trailer says {expected})")]
    Checksum { expected: String, actual: String },
    #[error("invalid header: {0}")]
    Header(String),
    #[error("the state inside cannot be decoded: {0}")]
    State(String),
}

/// Encode a backup file.
pub fn encode(header: &BackupHeader, state: &ClusterState) -> Result<Vec<u8>> {
    let state_bytes = codec::encode_large(state).context("cannot encode the state")?;
    let mut header = header.clone();
    header.format_version = FORMAT_VERSION;
    header.state_bytes = state_bytes.len() as u64;
    let header_json = serde_json::to_vec(&header)?;
    anyhow::ensure!(header_json.len() <= MAX_HEADER_BYTES, "backup header too large");
    let mut out = Vec::with_capacity(PREFIX_BYTES + header_json.len() + state_bytes.len() + TRAILER_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&(header_json.len() as u32).to_be_bytes());
    out.extend_from_slice(&header_json);
    out.extend_from_slice(&state_bytes);
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(digest.as_ref());
    Ok(out)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Read only the header (checks magic, version and lengths, not the checksum).
pub fn decode_header(bytes: &[u8]) -> Result<BackupHeader, BackupError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            BackupError::Truncated(format!("{} bytes, not even the file signature", bytes.len()))
        } else {
            BackupError::NotABackup
        });
    }
    if bytes.len() < PREFIX_BYTES {
        return Err(BackupError::Truncated(format!("{} bytes, the fixed prefix needs {PREFIX_BYTES}", bytes.len())));
    }
    let version = be_u32(&bytes[8..12]);
    let header_len = be_u32(&bytes[12..16]) as usize;
    if header_len > MAX_HEADER_BYTES {
        return Err(BackupError::Header(format!("header length {header_len} exceeds {MAX_HEADER_BYTES} bytes")));
    }
    let header_end = PREFIX_BYTES + header_len;
    if bytes.len() < header_end {
        return Err(BackupError::Truncated(format!(
            "{} bytes, the header alone ends at byte {header_end}",
            bytes.len()
        )));
    }
    let raw = &bytes[PREFIX_BYTES..header_end];
    if version != FORMAT_VERSION {
        // Name the writer if its header is readable JSON.
        let writer = serde_json::from_slice::<serde_json::Value>(raw)
            .ok()
            .and_then(|v| v["wardline_version"].as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        return Err(BackupError::UnsupportedVersion { found: version, writer });
    }
    let header: BackupHeader = serde_json::from_slice(raw).map_err(|e| BackupError::Header(e.to_string()))?;
    if header.format_version != version {
        return Err(BackupError::Header(format!(
            "header says format version {} but the file prefix says {version}",
            header.format_version
        )));
    }
    Ok(header)
}

/// Decode and verify a whole backup file.
pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
    let header = decode_header(bytes)?;
    let header_end = PREFIX_BYTES + be_u32(&bytes[12..16]) as usize;
    let expected_len = (header_end as u64)
        .checked_add(header.state_bytes)
        .and_then(|n| n.checked_add(TRAILER_BYTES as u64))
        .ok_or_else(|| BackupError::Header(format!("state_bytes {} is impossible", header.state_bytes)))?;
    if (bytes.len() as u64) < expected_len {
        return Err(BackupError::Truncated(format!("{} bytes, the header announces {expected_len}", bytes.len())));
    }
    if bytes.len() as u64 > expected_len {
        return Err(BackupError::Header(format!(
            "{} bytes after the announced end of the file",
            bytes.len() as u64 - expected_len
        )));
    }
    let body_end = bytes.len() - TRAILER_BYTES;
    let actual = ring::digest::digest(&ring::digest::SHA256, &bytes[..body_end]);
    let expected = &bytes[body_end..];
    if actual.as_ref() != expected {
        return Err(BackupError::Checksum { expected: hex::encode(expected), actual: hex::encode(actual.as_ref()) });
    }
    let state: ClusterState =
        codec::decode_large(&bytes[header_end..body_end]).map_err(|e| BackupError::State(e.to_string()))?;
    Ok(Backup { header, state, sha256: hex::encode(expected) })
}

/// Read and verify a backup file; errors name the file.
pub fn read_file(path: &Path) -> Result<Backup> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read backup file {}", path.display()))?;
    decode(&bytes).map_err(|e| anyhow::anyhow!("backup file {} is refused: {e}", path.display()))
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = tmp_path(path);
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {} for the backup", tmp.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// The temporary name a backup is written under before it is complete.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

fn header(node_id: u64, cluster_id: Option<String>, last: Option<LogId<u64>>, source: &str) -> BackupHeader {
    BackupHeader {
        format_version: FORMAT_VERSION,
        cluster_id,
        node_id,
        last_applied: last.map(LogPosition::from),
        created_ms: crate::auth::now_ms(),
        source: source.into(),
        uncommitted_entries: 0,
        state_bytes: 0,
        wardline_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// A backup of the state `node` has applied (the online backup).
pub async fn capture(node: &RaftNode) -> Result<Vec<u8>> {
    let (last, cluster_id, state) = node.applied_state_copy().await;
    let cluster_id = cluster_id.or_else(|| node.cluster_id());
    encode(&header(node.node_id(), cluster_id, last, "online"), &state)
}

/// What an offline backup found in a data directory.
#[derive(Debug)]
pub struct OfflineReport {
    pub node_id: u64,
    pub cluster_id: Option<String>,
    /// Last log id of the stored snapshot the rebuild started from.
    pub snapshot: Option<LogPosition>,
    /// Log entries applied after the snapshot that this node knew committed.
    pub committed_entries: u64,
    /// Log entries after the known commit point (appended locally, maybe never committed).
    pub uncommitted_entries: u64,
    /// Whether those were included.
    pub included_uncommitted: bool,
    pub last_applied: Option<LogPosition>,
}

/// Build a backup from the data directory of a STOPPED node: its stored snapshot plus the
/// log entries after it, applied as the node would (committed ones only unless
/// `include_uncommitted`).
pub async fn offline(data_dir: &Path, include_uncommitted: bool) -> Result<(Vec<u8>, OfflineReport)> {
    let path = data_dir.join("raft.sled");
    anyhow::ensure!(
        path.is_dir(),
        "{} holds no Raft store ({} is missing): give the data_dir of an aggregator node",
        data_dir.display(),
        path.display()
    );
    let db = open_stopped(&path).await.map_err(|e| {
        if e.to_string().contains("could not acquire lock") {
            anyhow::anyhow!(
                "the data directory {} is in use by a running aggregator (its Raft store is locked): stop that \
                 node first, or take an online backup with `wardline-aggregator cluster backup --api ...`",
                data_dir.display()
            )
        } else {
            anyhow::anyhow!("cannot open the Raft store {}: {e}", path.display())
        }
    })?;
    let meta = db.open_tree("raft_meta")?;
    let node_id = meta
        .get(b"node_id")?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .with_context(|| format!("{} has no node id: this node never started", path.display()))?;
    let stored_cluster_id = meta.get(b"cluster_id")?.map(|v| String::from_utf8_lossy(&v).into_owned());

    let mut log = LogStore::open(&db)?;
    let mut sm = StateMachineStore::open(&db)?;
    let data = sm.data();
    let snapshot_last = data.read().await.last_applied;
    let committed = log.committed_index();
    let start = snapshot_last.map_or(0, |l| l.index + 1);
    let entries = log.try_get_log_entries(start..).await.map_err(|e| anyhow::anyhow!("cannot read the log: {e}"))?;
    let (known_committed, after): (Vec<_>, Vec<_>) =
        entries.into_iter().partition(|e| committed.is_some_and(|c| e.log_id.index <= c));
    let report_counts = (known_committed.len() as u64, after.len() as u64);
    sm.apply(known_committed).await.map_err(|e| anyhow::anyhow!("cannot apply the committed entries: {e}"))?;
    if include_uncommitted {
        sm.apply(after).await.map_err(|e| anyhow::anyhow!("cannot apply the uncommitted entries: {e}"))?;
    }
    let (last, cluster_id, state) = {
        let d = data.read().await;
        (d.last_applied, d.cluster_id.clone(), d.state.clone())
    };
    drop(sm);
    drop(log);
    drop(meta);
    drop(db);
    let cluster_id = cluster_id.or(stored_cluster_id);
    let mut h = header(node_id, cluster_id.clone(), last, "offline");
    if include_uncommitted {
        h.uncommitted_entries = report_counts.1;
    }
    let bytes = encode(&h, &state)?;
    Ok((
        bytes,
        OfflineReport {
            node_id,
            cluster_id,
            snapshot: snapshot_last.map(LogPosition::from),
            committed_entries: report_counts.0,
            uncommitted_entries: report_counts.1,
            included_uncommitted: include_uncommitted,
            last_applied: last.map(LogPosition::from),
        },
    ))
}

/// Open the store of a node that should be stopped; waits up to 2 s for a node that is
/// just stopping (in this process or another) to release its lock.
async fn open_stopped(path: &Path) -> sled::Result<sled::Db> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || open_stopped_blocking(&path))
        .await
        .unwrap_or_else(|e| Err(sled::Error::Io(std::io::Error::other(format!("opening the store failed: {e}")))))
}

fn open_stopped_blocking(path: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match sled::open(path) {
            Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => return other,
        }
    }
}

/// A restore being carried out by `run --init --restore FILE`.
#[derive(Debug)]
pub struct Restore {
    pub file: PathBuf,
    pub header: BackupHeader,
    pub sha256: String,
    /// The data directory was already restored from this file (a restart): nothing to seed.
    pub resumed: bool,
}

/// Before the Raft node opens: verify the backup and seed an EMPTY data directory with
/// its state (durably, as the stored snapshot). A data directory already restored from
/// the same file resumes; any other non-empty one is refused.
/// `expected_cluster` is the node's configured `cluster_id`: a restore founds a NEW
/// cluster, so a configured id is refused before anything is written.
pub fn prepare_restore(data_dir: &Path, file: &Path, expected_cluster: Option<&str>) -> Result<Restore> {
    let backup = read_file(file)?;
    let store = data_dir.join("raft.sled");
    let mut restore =
        Restore { file: file.to_path_buf(), header: backup.header, sha256: backup.sha256, resumed: false };
    if store.exists() {
        let db = open_stopped_blocking(&store).map_err(|e| {
            anyhow::anyhow!("cannot open {} ({e}); is another aggregator using this data_dir?", store.display())
        })?;
        let done = StateMachineStore::restored_from(&db)?;
        if done.as_deref() == Some(restore.sha256.as_str()) {
            restore.resumed = true;
            return Ok(restore);
        }
        anyhow::bail!(
            "--restore needs an empty data directory, but {} already holds a Raft store{}: restore into a fresh \
             data_dir (move this one aside if you may still need it)",
            data_dir.display(),
            done.map(|d| format!(" restored from another backup (SHA-256 {d})")).unwrap_or_default()
        );
    }
    if let Some(id) = expected_cluster {
        anyhow::bail!(
            "--restore founds a NEW cluster with a new id, but this node is configured for cluster {id} (cluster_id \
             / --cluster-id): remove that setting for the restore, then set the new id it prints"
        );
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let db = sled::open(&store).with_context(|| format!("cannot create the Raft store {}", store.display()))?;
    StateMachineStore::seed_restored(&db, &backup.state, &restore.sha256)?;
    db.flush()?;
    Ok(restore)
}

/// What the operator is told once a restore founded its new cluster.
pub fn describe_restore(r: &Restore, new_cluster: &str) -> String {
    let h = &r.header;
    format!(
        "founded a NEW cluster {new_cluster} from backup {} of cluster {} (node {}, log index {}, taken {} ms after \
         the epoch, {}); the old cluster id is not reused: put {new_cluster} in the configs of nodes that join; \
         sensors resend whatever the backup lacks",
        r.file.display(),
        h.cluster_id.as_deref().unwrap_or("(unknown)"),
        h.node_id,
        h.last_applied.map_or_else(|| "none".into(), |l| l.index.to_string()),
        h.created_ms,
        h.source
    )
}

/// After the new cluster is initialised on the restored node: build a snapshot that holds
/// the restored state and purge the log up to it, so nodes that join later install the
/// state from the snapshot (the log alone does not contain it).
pub async fn finish_restore(node: &RaftNode) -> Result<()> {
    const WAIT: Duration = Duration::from_secs(60);
    let raft = node.raft();
    // After a restart mid-restore the log may still be replaying: wait until it is applied.
    node.wait_for_leader(WAIT).await?;
    let m = raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.last_applied.is_some() && m.last_applied.map(|l| l.index) >= m.last_log_index,
            "the restored node applied its log",
        )
        .await
        .context("the restored node did not apply its own log")?;
    let applied = m.last_applied.map_or(0, |l| l.index);
    if node.metrics().snapshot.is_none_or(|s| s.index < applied) {
        raft.trigger().snapshot().await.context("cannot trigger a snapshot")?;
        raft.wait(Some(WAIT))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied), "a snapshot of the restored state")
            .await
            .context("the restored node did not build its first snapshot")?;
    }
    raft.trigger().purge_log(applied).await.context("cannot trigger a log purge")?;
    raft.wait(Some(WAIT))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= applied), "the log purged up to the restored snapshot")
        .await
        .context("the restored node did not purge its log")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let mut h = header(3, Some("01HTESTCLUSTER".into()), None, "online");
        h.last_applied = Some(LogPosition { term: 2, index: 41 });
        encode(&h, &ClusterState::default()).unwrap()
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let b = decode(&bytes).unwrap();
        assert_eq!(b.header.node_id, 3);
        assert_eq!(b.header.cluster_id.as_deref(), Some("01HTESTCLUSTER"));
        assert_eq!(b.header.last_applied, Some(LogPosition { term: 2, index: 41 }));
        assert_eq!(b.state, ClusterState::default());
        assert_eq!(decode_header(&bytes).unwrap(), b.header);
    }

    #[test]
    fn corruption_truncation_and_versions_are_named() {
        let bytes = sample();
        let mut flipped = bytes.clone();
        let i = flipped.len() - TRAILER_BYTES - 1;
        flipped[i] ^= 0x40;
        assert!(matches!(decode(&flipped), Err(BackupError::Checksum { .. })));
        assert!(matches!(decode(&bytes[..bytes.len() - 5]), Err(BackupError::Truncated(_))));
        let mut v2 = bytes.clone();
        v2[8..12].copy_from_slice(&2u32.to_be_bytes());
        let err = decode(&v2).unwrap_err();
        assert!(matches!(err, BackupError::UnsupportedVersion { found: 2, .. }), "{err}");
        assert!(err.to_string().contains(env!("CARGO_PKG_VERSION")), "{err}");
        assert_eq!(decode(b"PK\x03\x04 zip file"), Err(BackupError::NotABackup));
    }

    proptest! {
        /// Backup files come from disks and operators: any bytes decode to a value or an error.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let _ = decode_header(&bytes);
        }

        /// A valid file with any one byte changed or cut short is refused, never accepted or a panic.
        #[test]
        fn damaged_files_are_refused(pos in any::<prop::sample::Index>(), xor in 1u8.., cut in any::<bool>()) {
            let mut bytes = sample();
            let i = pos.index(bytes.len());
            if cut {
                bytes.truncate(i);
            } else {
                bytes[i] ^= xor;
            }
            prop_assert!(decode(&bytes).is_err());
        }

        /// Arbitrary bytes after a valid prefix and header exercise the length and checksum checks.
        #[test]
        fn arbitrary_tails_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let bytes = sample();
            let header_end = PREFIX_BYTES + be_u32(&bytes[12..16]) as usize;
            let mut forged = bytes[..header_end].to_vec();
            forged.extend_from_slice(&tail);
            let _ = decode(&forged);
        }
    }
}
