//! Durable spool of batches waiting for the aggregator's acknowledgement (sled).
//!
//! Guarantees:
//! - A pushed batch is flushed to disk before `push` returns: it survives kill -9.
//! - Sequence numbers start at 1 and never go backwards: the counter lives in the same sled
//!   database and is updated in the same transaction as the batch insert, so it survives
//!   restarts and does not depend on which batches are still stored.
//! - A batch leaves the spool only by `remove` (after an Ack), `dead_letter` (refused for
//!   good: moved to a separate tree, kept for the operator, never silently lost), or the
//!   disk-bound policy below (counted and persisted in `dropped_batches`).
//! - A stored batch's `Stats` events carry that count in `batches_dropped`, written in when
//!   the batch is stored: every batch given up before it (across restarts) is reported.
//! - A record that cannot be decoded is moved to the dead-letter tree with the reason and
//!   logged; it neither panics nor blocks the batches behind it.
//!
//! Disk bound (`max_bytes`, counted as stored frame bytes): when a push would exceed it,
//! the oldest batches that contain only flow records are dropped first, and a new
//! flow-only batch is itself dropped when nothing older is left to drop. Batches carrying
//! device observations (inventory changes) or sensor stats (which report what was
//! dropped) are never dropped: past the bound they are still stored and a warning says
//! the spool is over budget. Inventory is small and is what a cut-off site must not lose;
//! flow detail is bulk and can be given up first.
//!
//! Trees: `batches` (seq BE → `encode_frame(&Batch)`), `flow_only` (seq BE → empty, index
//! of droppable batches), `meta` (counters), `dead` (original key → `DeadLetter` frame),
//! `checkpoints` (caller-defined key → u64 BE, written atomically with a batch).

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tracing::{error, warn};
use ulid::Ulid;
use wardline_common::wire::{decode_frame, encode_frame, Batch, Event};

pub const BATCH_TREE: &str = "batches";
pub const FLOW_ONLY_TREE: &str = "flow_only";
pub const META_TREE: &str = "meta";
pub const DEAD_TREE: &str = "dead";
pub const CHECKPOINT_TREE: &str = "checkpoints";

const NEXT_SEQ: &[u8] = b"next_seq";
const DROPPED_BATCHES: &[u8] = b"dropped_batches";
const DROPPED_EVENTS: &[u8] = b"dropped_events";

/// A batch (or undecodable record) the aggregator refused for good, kept for the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Sequence number, when the record's key was readable.
    pub seq: Option<u64>,
    pub batch_id: Option<Ulid>,
    pub reason: String,
    /// Milliseconds since the Unix epoch when it was dead-lettered.
    pub at_ms: u64,
    /// The record exactly as it was stored (a batch frame, or the corrupt bytes).
    pub record: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolStats {
    pub pending_batches: u64,
    pub pending_bytes: u64,
    pub dead_letters: u64,
    /// Flow-only batches given up to keep the spool within its disk bound.
    pub dropped_batches: u64,
    /// Events inside those batches.
    pub dropped_events: u64,
    /// The sequence number the next pushed batch gets.
    pub next_seq: u64,
    pub max_bytes: u64,
}

pub struct Spool {
    db: sled::Db,
    dir: PathBuf,
    batches: sled::Tree,
    flow_only: sled::Tree,
    meta: sled::Tree,
    dead: sled::Tree,
    checkpoints: sled::Tree,
    max_bytes: u64,
    /// Serialises mutations so the in-memory counters below match the trees.
    write_lock: Mutex<()>,
    len: AtomicU64,
    bytes: AtomicU64,
    /// Wakes the uplink when a batch arrives.
    pushed: tokio::sync::Notify,
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn key_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn read_u64(tree: &sled::Tree, key: &[u8], what: &str) -> Result<u64> {
    match tree.get(key).with_context(|| format!("cannot read {what} from the spool"))? {
        None => Ok(0),
        Some(v) => {
            key_seq(&v).with_context(|| format!("spool metadata {what} is corrupt ({} bytes instead of 8)", v.len()))
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Droppable under the disk bound: nothing but flow records.
fn is_flow_only(events: &[Event]) -> bool {
    events.iter().all(|e| matches!(e, Event::Flow(_)))
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<()>>;

fn tx_err(e: sled::transaction::TransactionError<()>, what: &str) -> anyhow::Error {
    anyhow!("spool: cannot {what}: {e:?}")
}

impl Spool {
    /// Open (or create) the spool in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create spool folder {}", dir.display()))?;
        // A previous holder in this process (a restart, a test) may release sled's file
        // lock a moment after it is dropped: wait briefly for it, as the Raft store does.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match sled::Config::new().path(dir).open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => {
                    break other.with_context(|| {
                        format!("cannot open the spool database in {} (is another sensor using it?)", dir.display())
                    })?
                }
            }
        };
        let open_tree = |name: &str| db.open_tree(name).with_context(|| format!("cannot open spool tree {name}"));
        let batches = open_tree(BATCH_TREE)?;
        let flow_only = open_tree(FLOW_ONLY_TREE)?;
        let meta = open_tree(META_TREE)?;
        let dead = open_tree(DEAD_TREE)?;
        let checkpoints = open_tree(CHECKPOINT_TREE)?;
        let (mut len, mut bytes) = (0u64, 0u64);
        for item in batches.iter() {
            let (_, v) = item.context("cannot scan the spool")?;
            len += 1;
            bytes += v.len() as u64;
        }
        // Defensive: the counter must exceed every stored seq even if meta was lost.
        let next = read_u64(&meta, NEXT_SEQ, "next_seq")?.max(1);
        let last_stored = batches.last().context("cannot read the spool")?.and_then(|(k, _)| key_seq(&k)).unwrap_or(0);
        if last_stored >= next {
            warn!(last_stored, next, "spool sequence counter behind stored batches; moving it forward");
            meta.insert(NEXT_SEQ, &seq_key(last_stored + 1)).context("cannot repair the spool counter")?;
            db.flush().context("cannot flush the spool")?;
        }
        Ok(Spool {
            db,
            dir: dir.to_path_buf(),
            batches,
            flow_only,
            meta,
            dead,
            checkpoints,
            max_bytes,
            write_lock: Mutex::new(()),
            len: AtomicU64::new(len),
            bytes: AtomicU64::new(bytes),
            pushed: tokio::sync::Notify::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guard protects no data of its own; a panic elsewhere cannot leave it torn.
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().context("cannot flush the spool to disk")?;
        Ok(())
    }

    /// Create the next batch from `events`, store it durably and return it.
    pub fn push(&self, events: Vec<Event>, sensor_id: &str, site: &str) -> Result<Batch> {
        self.push_checkpointed(events, sensor_id, site, None)
    }

    /// Like `push`, and also sets checkpoint `key` to `value` in the same transaction, so
    /// "this batch is spooled" and "the producer got this far" cannot disagree after a crash.
    pub fn push_checkpointed(
        &self,
        events: Vec<Event>,
        sensor_id: &str,
        site: &str,
        checkpoint: Option<(&str, u64)>,
    ) -> Result<Batch> {
        let _guard = self.lock();
        let seq = read_u64(&self.meta, NEXT_SEQ, "next_seq")?.max(1);
        let flow_only = is_flow_only(&events);
        let reports_drops = events.iter().any(|e| matches!(e, Event::Stats(_)));
        let mut batch =
            Batch { id: Ulid::new(), sensor_id: sensor_id.to_string(), site: site.to_string(), seq, events };
        let (frame, size) = loop {
            if reports_drops {
                let dropped = self.dropped_batches()?;
                for e in &mut batch.events {
                    if let Event::Stats(s) = e {
                        s.batches_dropped = dropped;
                    }
                }
            }
            let frame = encode_frame(&batch).with_context(|| format!("cannot encode batch {seq}"))?;
            let size = frame.len() as u64;
            // Make room by giving up the oldest flow-only batches.
            let mut made_room = false;
            while self.bytes.load(Ordering::Relaxed) + size > self.max_bytes {
                if !self.drop_oldest_flow_only()? {
                    break;
                }
                made_room = true;
            }
            // Stats must count the drops that made room for them: encode again with the new count.
            if !(made_room && reports_drops) {
                break (frame, size);
            }
        };
        let over = self.bytes.load(Ordering::Relaxed) + size > self.max_bytes;
        let store = !(over && flow_only);
        let n_events = batch.events.len() as u64;
        let trees = (&self.batches, &self.flow_only, &self.meta, &self.checkpoints);
        trees
            .transaction(|(b, f, m, c)| -> TxResult<()> {
                if store {
                    b.insert(&seq_key(seq), frame.as_slice())?;
                    if flow_only {
                        f.insert(&seq_key(seq), &[])?;
                    }
                } else {
                    let dropped = m.get(DROPPED_BATCHES)?.and_then(|v| key_seq(&v)).unwrap_or(0);
                    m.insert(DROPPED_BATCHES, &seq_key(dropped + 1))?;
                    let ev = m.get(DROPPED_EVENTS)?.and_then(|v| key_seq(&v)).unwrap_or(0);
                    m.insert(DROPPED_EVENTS, &seq_key(ev + n_events))?;
                }
                m.insert(NEXT_SEQ, &seq_key(seq + 1))?;
                if let Some((k, v)) = checkpoint {
                    c.insert(k.as_bytes(), &v.to_be_bytes())?;
                }
                Ok(())
            })
            .map_err(|e| tx_err(e, "store a batch"))?;
        self.flush()?;
        if store {
            self.len.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(size, Ordering::Relaxed);
            if over {
                warn!(
                    seq,
                    bytes = self.bytes.load(Ordering::Relaxed),
                    max_bytes = self.max_bytes,
                    "spool is over its disk bound with device/stats batches only; they are kept \
                     (never dropped) — restore the uplink or raise spool_max_bytes"
                );
            }
            self.pushed.notify_one();
        } else {
            warn!(seq, events = n_events, "spool full: dropped a new flow-only batch (counted in dropped_batches)");
        }
        Ok(batch)
    }

    /// Drop the oldest flow-only batch; false if there is none. Caller holds the lock.
    fn drop_oldest_flow_only(&self) -> Result<bool> {
        let Some((key, _)) = self.flow_only.first().context("cannot read the spool")? else {
            return Ok(false);
        };
        let value = self.batches.get(&key).context("cannot read the spool")?;
        let events =
            value.as_ref().and_then(|v| decode_frame::<Batch>(v).ok()).map(|b| b.events.len() as u64).unwrap_or(0);
        let trees = (&self.batches, &self.flow_only, &self.meta);
        trees
            .transaction(|(b, f, m)| -> TxResult<()> {
                b.remove(&key)?;
                f.remove(&key)?;
                if value.is_some() {
                    let dropped = m.get(DROPPED_BATCHES)?.and_then(|v| key_seq(&v)).unwrap_or(0);
                    m.insert(DROPPED_BATCHES, &seq_key(dropped + 1))?;
                    let ev = m.get(DROPPED_EVENTS)?.and_then(|v| key_seq(&v)).unwrap_or(0);
                    m.insert(DROPPED_EVENTS, &seq_key(ev + events))?;
                }
                Ok(())
            })
            .map_err(|e| tx_err(e, "drop a flow batch"))?;
        if let Some(v) = value {
            self.len.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(v.len() as u64, Ordering::Relaxed);
            warn!(
                seq = key_seq(&key).unwrap_or(0),
                events, "spool full: dropped the oldest flow-only batch (counted in dropped_batches)"
            );
        }
        Ok(true)
    }

    /// Up to `n` stored batches, lowest seq first. Undecodable records are moved to the
    /// dead-letter tree (logged at ERROR) instead of being returned.
    pub fn oldest(&self, n: usize) -> Result<Vec<Batch>> {
        let mut out = Vec::with_capacity(n.min(1024));
        let mut corrupt = Vec::new();
        for item in self.batches.iter() {
            if out.len() >= n {
                break;
            }
            let (key, value) = item.context("cannot read the spool")?;
            let checked = match key_seq(&key) {
                None => Err(format!("record key of {} bytes is not a sequence number", key.len())),
                Some(seq) => match decode_frame::<Batch>(&value) {
                    Err(e) => Err(format!("batch {seq} is unreadable: {e}")),
                    Ok(b) if b.seq != seq => Err(format!("record under seq {seq} holds batch seq {}", b.seq)),
                    Ok(b) => Ok(b),
                },
            };
            match checked {
                Ok(b) => out.push(b),
                Err(reason) => corrupt.push((key, reason)),
            }
        }
        for (key, reason) in corrupt {
            error!(
                spool = %self.dir.display(),
                "corrupt spool record moved to the dead-letter tree: {reason} (disk damage or a foreign write; \
                 the record is kept for inspection)"
            );
            self.move_to_dead(&key, &format!("corrupt spool record: {reason}"))?;
        }
        Ok(out)
    }

    /// Delete a batch the aggregator acknowledged. Returns false if it was not stored.
    pub fn remove(&self, seq: u64) -> Result<bool> {
        Ok(self.remove_acked(&[seq])? == 1)
    }

    /// Delete batches the aggregator acknowledged, with one flush to disk for all of them
    /// (the uplink removes the acks that arrived together). Returns how many were stored.
    ///
    /// Grouping is safe because removal only has to be durable enough that a crash re-sends
    /// rather than loses: a batch whose removal had not reached the disk is sent again after
    /// a restart and the aggregator acks it as a duplicate (decision 0016).
    pub fn remove_acked(&self, seqs: &[u64]) -> Result<usize> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let _guard = self.lock();
        let trees = (&self.batches, &self.flow_only);
        let removed = trees
            .transaction(|(b, f)| -> TxResult<(u64, u64)> {
                let (mut n, mut bytes) = (0u64, 0u64);
                for &seq in seqs {
                    let key = seq_key(seq);
                    f.remove(&key)?;
                    if let Some(v) = b.remove(&key)? {
                        n += 1;
                        bytes += v.len() as u64;
                    }
                }
                Ok((n, bytes))
            })
            .map_err(|e| tx_err(e, "remove acknowledged batches"))?;
        self.flush()?;
        self.len.fetch_sub(removed.0, Ordering::Relaxed);
        self.bytes.fetch_sub(removed.1, Ordering::Relaxed);
        Ok(removed.0 as usize)
    }

    /// Move a batch the aggregator refused for good into the dead-letter tree.
    pub fn dead_letter(&self, seq: u64, reason: &str) -> Result<bool> {
        let _guard = self.lock();
        self.move_to_dead_locked(&seq_key(seq), reason)
    }

    fn move_to_dead(&self, key: &[u8], reason: &str) -> Result<bool> {
        let _guard = self.lock();
        self.move_to_dead_locked(key, reason)
    }

    fn move_to_dead_locked(&self, key: &[u8], reason: &str) -> Result<bool> {
        let Some(record) = self.batches.get(key).context("cannot read the spool")? else {
            return Ok(false);
        };
        let letter = DeadLetter {
            seq: key_seq(key),
            batch_id: decode_frame::<Batch>(&record).ok().map(|b| b.id),
            reason: reason.to_string(),
            at_ms: now_ms(),
            record: record.to_vec(),
        };
        let encoded = encode_frame(&letter).context("cannot encode a dead letter")?;
        let trees = (&self.batches, &self.flow_only, &self.dead);
        trees
            .transaction(|(b, f, d)| -> TxResult<()> {
                b.remove(key)?;
                f.remove(key)?;
                d.insert(key, encoded.as_slice())?;
                Ok(())
            })
            .map_err(|e| tx_err(e, "dead-letter a batch"))?;
        self.flush()?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(record.len() as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// Every dead letter, oldest key first. Unreadable entries are reported as errors.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        for item in self.dead.iter() {
            let (key, value) = item.context("cannot read the dead-letter tree")?;
            match decode_frame::<DeadLetter>(&value) {
                Ok(d) => out.push(d),
                Err(e) => bail!("dead letter under key {} is unreadable: {e}", hex::encode(&key)),
            }
        }
        Ok(out)
    }

    /// Batches waiting for an ack.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stored frame bytes of the waiting batches (what `max_bytes` bounds).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn dropped_batches(&self) -> Result<u64> {
        read_u64(&self.meta, DROPPED_BATCHES, "dropped_batches")
    }

    /// The value last stored with `push_checkpointed` under `key`.
    pub fn checkpoint(&self, key: &str) -> Result<Option<u64>> {
        match self.checkpoints.get(key.as_bytes()).context("cannot read a spool checkpoint")? {
            None => Ok(None),
            Some(v) => Ok(Some(key_seq(&v).with_context(|| format!("spool checkpoint {key:?} is corrupt"))?)),
        }
    }

    pub fn stats(&self) -> Result<SpoolStats> {
        Ok(SpoolStats {
            pending_batches: self.len() as u64,
            pending_bytes: self.bytes(),
            dead_letters: self.dead.len() as u64,
            dropped_batches: self.dropped_batches()?,
            dropped_events: read_u64(&self.meta, DROPPED_EVENTS, "dropped_events")?,
            next_seq: read_u64(&self.meta, NEXT_SEQ, "next_seq")?.max(1),
            max_bytes: self.max_bytes,
        })
    }

    /// Resolves after the next push (or immediately if one happened since the last wait).
    pub async fn wait_for_push(&self) {
        self.pushed.notified().await
    }
}
