//! Durable spool of batches waiting for the aggregator's acknowledgement (sled), with one
//! hard byte bound over everything it holds (decision 0022).
//!
//! Guarantees:
//! - A pushed batch is flushed to disk before `push` returns: it survives kill -9.
//! - Records carry a checksum; one that fails it (or does not decode) is moved to the
//!   dead-letter tree, counted and reported upstream, never sent and never blocking others.
//! - Priority: every record has a class ([`Class`]: inventory and sensor reports, then
//!   flow summaries, then flow detail). Batches are sent by class, then age.
//! - Sequence numbers start at 1, never go backwards, and are assigned in send order: a
//!   record is *sealed* (given the next seq) either when it is pushed while nothing waits
//!   unsealed and fewer than [`SEAL_AHEAD`] sealed batches wait, or when the uplink asks
//!   for more batches than are sealed ([`Spool::next_batches`]), which seals the best
//!   queued records. So the aggregator's per-sensor watermark sees ascending seqs while a
//!   backlog drains by priority. The counter is stored in the same transaction as the
//!   records, so it survives restarts.
//! - Byte bound (`max_bytes`, counted as stored record bytes): when the spool is over it,
//!   the oldest queued flow detail is rolled up into the summary tier ([`rollup`]), merged
//!   with the summaries of the same hours (one row per device pair, app, server port and
//!   hour), so the communication map survives and the newest detail is kept longest; only
//!   when no detail is left to roll up are whole records evicted, lowest class first,
//!   oldest first (queued summaries by packet hour, sealed detail/summaries, queued then
//!   sealed inventory; decision 0045). Every eviction is counted exactly (batches, events, flows, flow
//!   bytes) and recorded as a [`SpoolLoss`]; the next sealed batch carries a
//!   `SpoolReport` with the totals and the losses not yet acknowledged.
//! - Every sealed batch carries a `SpoolReport` naming the spool's epoch (the others with
//!   the totals only), so the cluster tells a wiped or reinstalled sensor's new numbering
//!   from re-sends (decision 0036).
//! - A batch leaves the spool only by an Ack (`remove_acked`), `dead_letter` (refused for
//!   good: kept for the operator), quarantine (corrupt), roll-up or eviction (counted).
//!
//! Trees: `batches` (sealed: seq BE → record), `queued` (class u8 + order BE → record; for
//! summaries the order is packet hour << 16 | chunk),
//! `meta` (`state`: counters, sequence, epoch), `losses` (index BE → `SpoolLoss` frame),
//! `dead` (original key → `DeadLetter` frame), `checkpoints` (caller key → u64 BE, written
//! atomically with a batch). Records written by an older sensor (bare wire frames in
//! `batches`, counters under `next_seq`/`dropped_*`) are read as they are.

pub mod record;
pub mod rollup;

use anyhow::{anyhow, bail, Context, Result};
pub use record::{Class, SpoolRecord};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use tracing::{error, info, warn};
use ulid::Ulid;
use wardline_common::fault::{crash_point, CrashPoint};
use wardline_common::wire::{decode_frame, encode_frame, Batch, Event, SpoolLoss, SpoolLossKind, SpoolReport};

pub const BATCH_TREE: &str = "batches";
pub const QUEUED_TREE: &str = "queued";
pub const META_TREE: &str = "meta";
pub const LOSS_TREE: &str = "losses";
pub const DEAD_TREE: &str = "dead";
pub const CHECKPOINT_TREE: &str = "checkpoints";

/// Sealed batches allowed to wait before new pushes stay queued (and so are ordered by
/// priority rather than arrival). About one uplink window.
pub const SEAL_AHEAD: u64 = 16;
/// Loss entries kept for the report; older ones remain only in the totals.
pub const MAX_LOSSES_KEPT: u64 = 256;
/// Records rolled up together at most in one step.
const ROLLUP_MAX_RECORDS: usize = 256;
/// Summary rows per summary record at most (a row is about 100 stored bytes); fewer under a
/// small bound, so that one record is a small part of it (the unit of eviction and sending).
pub const SUMMARY_ROWS_PER_RECORD: usize = 1000;

fn summary_rows_per_record(max_bytes: u64) -> usize {
    ((max_bytes / 16 / 100) as usize).clamp(8, SUMMARY_ROWS_PER_RECORD)
}

/// Queue position of chunk `index` of an hour's summary records: summaries are keyed by
/// packet hour (so the oldest hour is sent, and evicted, first, and a roll-up finds the
/// hour's records to merge with), not by push order like the other classes.
fn summary_order(hour: u64, index: u64) -> u64 {
    (hour << 16) | (index & 0xffff)
}

const STATE_KEY: &[u8] = b"state";
const LEGACY_NEXT_SEQ: &[u8] = b"next_seq";
const LEGACY_DROPPED_BATCHES: &[u8] = b"dropped_batches";
const LEGACY_DROPPED_EVENTS: &[u8] = b"dropped_events";

/// A batch (or undecodable record) the aggregator refused for good, kept for the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Sequence number, when the record had one.
    pub seq: Option<u64>,
    pub batch_id: Option<Ulid>,
    pub reason: String,
    /// Milliseconds since the Unix epoch when it was dead-lettered.
    pub at_ms: u64,
    /// The record exactly as it was stored.
    pub record: Vec<u8>,
}

/// What the spool persists in `meta/state`, updated in the same transaction as the records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolCounters {
    /// Created with the spool: a wiped or reinstalled sensor gets a new one.
    pub epoch: Ulid,
    pub next_seq: u64,
    /// Next queue position (global across classes, so it also orders by age).
    pub next_order: u64,
    pub batches_evicted: u64,
    pub events_evicted: u64,
    pub flows_evicted: u64,
    pub flow_bytes_evicted: u64,
    /// Evicted batches per class (inventory, summaries, detail).
    pub evicted_by_class: [u64; 3],
    pub flows_rolled_up: u64,
    pub rollups_created: u64,
    pub records_quarantined: u64,
    /// Index the next loss entry gets (starts at 1).
    pub loss_next: u64,
    /// Loss entries up to here were carried by an acknowledged batch.
    pub report_acked_through: u64,
    /// Bumped whenever a total changes; a report is attached when it moved since the last.
    pub report_gen: u64,
    pub report_sealed_gen: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolStats {
    pub pending_batches: u64,
    pub pending_bytes: u64,
    /// Of the pending batches: those with a sequence number, and those still queued.
    pub sealed_batches: u64,
    pub queued_batches: u64,
    pub dead_letters: u64,
    /// Batches evicted to keep the spool within its byte bound.
    pub dropped_batches: u64,
    /// Events inside them.
    pub dropped_events: u64,
    pub flows_evicted: u64,
    pub flow_bytes_evicted: u64,
    pub flows_rolled_up: u64,
    pub rollups_created: u64,
    pub records_quarantined: u64,
    /// The sequence number the next sealed batch gets.
    pub next_seq: u64,
    pub max_bytes: u64,
    pub epoch: Ulid,
}

/// Mutable state, guarded by one lock so the counters match the trees.
struct Inner {
    c: SpoolCounters,
    sealed: u64,
    queued: u64,
    bytes: u64,
    /// Per-process occurrence counters for the crash points.
    seals: u64,
    rollups: u64,
    evictions: u64,
    /// `report_through` of sealed batches this process sealed or read, by seq, so removing
    /// an acked batch need not read and decode it again (a miss falls back to reading it).
    report_through: std::collections::HashMap<u64, u64>,
}

pub struct Spool {
    db: sled::Db,
    dir: PathBuf,
    sealed: sled::Tree,
    queued: sled::Tree,
    meta: sled::Tree,
    losses: sled::Tree,
    dead: sled::Tree,
    checkpoints: sled::Tree,
    max_bytes: u64,
    inner: Mutex<Inner>,
    /// Wakes the uplink when a batch arrives.
    pushed: tokio::sync::Notify,
}

// Tree indices for `Ops`.
const T_SEALED: usize = 0;
const T_QUEUED: usize = 1;
const T_META: usize = 2;
const T_CHECKPOINTS: usize = 3;
const T_LOSSES: usize = 4;
const T_DEAD: usize = 5;

/// Writes applied together in one transaction.
#[derive(Default)]
struct Ops(Vec<(usize, Vec<u8>, Option<Vec<u8>>)>);

impl Ops {
    fn put(&mut self, tree: usize, key: &[u8], value: Vec<u8>) {
        self.0.push((tree, key.to_vec(), Some(value)));
    }
    fn del(&mut self, tree: usize, key: &[u8]) {
        self.0.push((tree, key.to_vec(), None));
    }
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn key_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn queued_key(class: Class, order: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = class as u8;
    k[1..].copy_from_slice(&order.to_be_bytes());
    k
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn read_legacy_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64> {
    Ok(tree.get(key).context("cannot read the spool metadata")?.and_then(|v| key_seq(&v)).unwrap_or(0))
}

fn loss_kind(class: Class) -> SpoolLossKind {
    match class {
        Class::Inventory => SpoolLossKind::EvictedInventory,
        Class::FlowSummary => SpoolLossKind::EvictedFlowSummaries,
        Class::FlowDetail => SpoolLossKind::EvictedFlowDetail,
    }
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
        let sealed = open_tree(BATCH_TREE)?;
        let queued = open_tree(QUEUED_TREE)?;
        let meta = open_tree(META_TREE)?;
        let losses = open_tree(LOSS_TREE)?;
        let dead = open_tree(DEAD_TREE)?;
        let checkpoints = open_tree(CHECKPOINT_TREE)?;
        let mut created = false;
        let mut c = match meta.get(STATE_KEY).context("cannot read the spool state")? {
            Some(v) => decode_frame::<SpoolCounters>(&v).map_err(|e| {
                anyhow!(
                    "the spool state in {} is unreadable ({e}); move the folder aside to start a new spool epoch",
                    dir.display()
                )
            })?,
            None => {
                created = true;
                // A spool written before decision 0022 keeps its sequence and drop counts.
                SpoolCounters {
                    epoch: Ulid::new(),
                    next_seq: read_legacy_u64(&meta, LEGACY_NEXT_SEQ)?.max(1),
                    next_order: 1,
                    batches_evicted: read_legacy_u64(&meta, LEGACY_DROPPED_BATCHES)?,
                    events_evicted: read_legacy_u64(&meta, LEGACY_DROPPED_EVENTS)?,
                    loss_next: 1,
                    ..SpoolCounters::default()
                }
            }
        };
        let (mut n_sealed, mut n_queued, mut bytes) = (0u64, 0u64, 0u64);
        for item in sealed.iter() {
            let (_, v) = item.context("cannot scan the spool")?;
            n_sealed += 1;
            bytes += v.len() as u64;
        }
        for item in queued.iter() {
            let (k, v) = item.context("cannot scan the spool")?;
            n_queued += 1;
            bytes += v.len() as u64;
            // Defensive: orders must stay unique even if the state was rolled back (summaries
            // are keyed by hour, not by this counter).
            if let Some(o) = k.get(1..).and_then(key_seq).filter(|_| k.first() != Some(&(Class::FlowSummary as u8))) {
                c.next_order = c.next_order.max(o + 1);
            }
        }
        // Defensive: the counter must exceed every stored seq even if the state was lost.
        let last_stored = sealed.last().context("cannot read the spool")?.and_then(|(k, _)| key_seq(&k)).unwrap_or(0);
        if last_stored >= c.next_seq {
            warn!(last_stored, next = c.next_seq, "spool sequence counter behind stored batches; moving it forward");
            c.next_seq = last_stored + 1;
        }
        let spool = Spool {
            db,
            dir: dir.to_path_buf(),
            sealed,
            queued,
            meta,
            losses,
            dead,
            checkpoints,
            max_bytes,
            inner: Mutex::new(Inner {
                c,
                sealed: n_sealed,
                queued: n_queued,
                bytes,
                seals: 0,
                rollups: 0,
                evictions: 0,
                report_through: std::collections::HashMap::new(),
            }),
            pushed: tokio::sync::Notify::new(),
        };
        {
            let mut g = spool.lock();
            let mut ops = Ops::default();
            Self::put_state(&g, &mut ops)?;
            spool.commit(ops, "save the spool state")?;
            if created {
                info!(spool = %dir.display(), epoch = %g.c.epoch, "spool opened with a new epoch");
            }
            // The bound may have been lowered since the last run.
            spool.enforce_bound(&mut g)?;
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id created with this spool; a wiped or reinstalled sensor has another.
    pub fn epoch(&self) -> Ulid {
        self.lock().c.epoch
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counters are only changed after their transaction committed; a panic between
        // the two leaves them behind the trees at worst, which a reopen recounts.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put_state(g: &Inner, ops: &mut Ops) -> Result<()> {
        ops.put(T_META, STATE_KEY, encode_frame(&g.c).context("cannot encode the spool state")?);
        Ok(())
    }

    fn commit(&self, ops: Ops, what: &str) -> Result<()> {
        let trees = (&self.sealed, &self.queued, &self.meta, &self.checkpoints, &self.losses, &self.dead);
        trees
            .transaction(|(a, b, c, d, e, f)| -> std::result::Result<(), ConflictableTransactionError<()>> {
                let t = [a, b, c, d, e, f];
                for (i, k, v) in &ops.0 {
                    match v {
                        Some(v) => t[*i].insert(k.as_slice(), v.as_slice())?,
                        None => t[*i].remove(k.as_slice())?,
                    };
                }
                Ok(())
            })
            .map_err(|e| anyhow!("spool: cannot {what}: {e:?}"))
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().context("cannot flush the spool to disk")?;
        Ok(())
    }

    /// Create the next batch from `events`, store it durably and return it. Its `seq` is
    /// 0 when it was queued behind a backlog (it gets one when it is next to be sent).
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
        let mut g = self.lock();
        let mut rec = SpoolRecord {
            id: Ulid::new(),
            sensor_id: sensor_id.to_string(),
            site: site.to_string(),
            class: Class::of(&events),
            seq: 0,
            created_ms: now_ms(),
            report_through: 0,
            events,
        };
        // Named now, so the bound counts the report's bytes from the start.
        rec.events.push(Event::SpoolReport(Self::epoch_report(&g.c)));
        let seal_now = g.queued == 0 && g.sealed < SEAL_AHEAD;
        let mut ops = Ops::default();
        let bytes = if seal_now {
            self.seal(&mut g, &mut rec)?;
            let bytes = record::encode(&rec).with_context(|| format!("cannot encode batch {}", rec.seq))?;
            ops.put(T_SEALED, &seq_key(rec.seq), bytes.clone());
            bytes
        } else {
            let order = g.c.next_order;
            g.c.next_order += 1;
            let bytes = record::encode(&rec).context("cannot encode a batch")?;
            ops.put(T_QUEUED, &queued_key(rec.class, order), bytes.clone());
            bytes
        };
        if let Some((k, v)) = checkpoint {
            ops.put(T_CHECKPOINTS, k.as_bytes(), v.to_be_bytes().to_vec());
        }
        Self::put_state(&g, &mut ops)?;
        if let Err(e) = self.commit(ops, "store a batch") {
            // Nothing was written: put the in-memory counters back with the disk's.
            if let Ok(Some(v)) = self.meta.get(STATE_KEY) {
                if let Ok(c) = decode_frame::<SpoolCounters>(&v) {
                    g.c = c;
                }
            }
            return Err(e);
        }
        if seal_now {
            g.report_through.insert(rec.seq, rec.report_through);
            g.sealed += 1;
            g.seals += 1;
            crash_point(CrashPoint::SpoolAfterSeal, g.seals);
        } else {
            g.queued += 1;
        }
        g.bytes += bytes.len() as u64;
        self.flush()?;
        self.enforce_bound(&mut g)?;
        drop(g);
        self.pushed.notify_one();
        Ok(rec.to_batch())
    }

    /// Give `rec` the next seq, and attach the spool report and drop count it must carry.
    /// Caller writes the record and the state in one transaction.
    fn seal(&self, g: &mut Inner, rec: &mut SpoolRecord) -> Result<()> {
        rec.seq = g.c.next_seq;
        g.c.next_seq = g.c.next_seq.checked_add(1).context("spool sequence exhausted")?;
        for e in &mut rec.events {
            if let Event::Stats(s) = e {
                s.batches_dropped = g.c.batches_evicted;
            }
        }
        if g.c.report_gen > g.c.report_sealed_gen {
            let report = self.report(g)?;
            rec.report_through = g.c.loss_next.saturating_sub(1);
            rec.events.retain(|e| !matches!(e, Event::SpoolReport(_)));
            rec.events.push(Event::SpoolReport(report));
            g.c.report_sealed_gen = g.c.report_gen;
        } else if !rec.events.iter().any(|e| matches!(e, Event::SpoolReport(_))) {
            // Every batch names its spool epoch, so the cluster can tell a wiped or
            // reinstalled sensor's new numbering from re-sends (decision 0036). Records get
            // it when spooled (with the totals of that moment, without loss entries: those
            // travel on the batch sealed when they changed, until one such batch is acked);
            // this is for records an older sensor version spooled.
            rec.events.push(Event::SpoolReport(Self::epoch_report(&g.c)));
        }
        Ok(())
    }

    /// A report of the totals only: what a batch carries to name its epoch.
    fn epoch_report(c: &SpoolCounters) -> SpoolReport {
        SpoolReport {
            spool_epoch: c.epoch,
            batches_evicted: c.batches_evicted,
            events_evicted: c.events_evicted,
            flows_evicted: c.flows_evicted,
            flow_bytes_evicted: c.flow_bytes_evicted,
            flows_rolled_up: c.flows_rolled_up,
            rollups_created: c.rollups_created,
            records_quarantined: c.records_quarantined,
            losses: Vec::new(),
        }
    }

    /// Current totals and the losses not yet acknowledged.
    pub fn report_now(&self) -> Result<SpoolReport> {
        let g = self.lock();
        self.report(&g)
    }

    fn report(&self, g: &Inner) -> Result<SpoolReport> {
        let mut losses = Vec::new();
        for item in self.losses.range(seq_key(g.c.report_acked_through + 1)..) {
            let (k, v) = item.context("cannot read the spool's loss entries")?;
            match decode_frame::<SpoolLoss>(&v) {
                Ok(l) => losses.push(l),
                Err(e) => {
                    warn!("spool loss entry {} is unreadable ({e}); only its totals are reported", hex::encode(&k))
                }
            }
        }
        Ok(SpoolReport { losses, ..Self::epoch_report(&g.c) })
    }

    /// Record a loss entry (and prune the oldest beyond the bound) into `ops`.
    fn note_loss(g: &mut Inner, ops: &mut Ops, loss: &SpoolLoss) -> Result<()> {
        let index = g.c.loss_next;
        g.c.loss_next += 1;
        g.c.report_gen += 1;
        ops.put(T_LOSSES, &seq_key(index), encode_frame(loss).context("cannot encode a loss entry")?);
        if index > MAX_LOSSES_KEPT {
            ops.del(T_LOSSES, &seq_key(index - MAX_LOSSES_KEPT));
        }
        Ok(())
    }

    /// Roll up and evict until the spool is within its bound.
    fn enforce_bound(&self, g: &mut Inner) -> Result<()> {
        while g.bytes > self.max_bytes {
            if self.roll_up_oldest_detail(g)? {
                continue;
            }
            if !self.evict_one(g)? {
                warn!(
                    bytes = g.bytes,
                    max_bytes = self.max_bytes,
                    "spool is over its byte bound and holds nothing it may evict; restore the uplink or raise spool.max_bytes"
                );
                break;
            }
        }
        Ok(())
    }

    /// Roll the oldest queued flow-detail records up into the summary tier: their flows and
    /// the queued summaries of the same hours are merged into one row per (device pair,
    /// app, server port, protocol, VLAN, hour), rewritten as that hour's summary records.
    /// Done whether or not it shrinks the spool (detail would otherwise be evicted whole,
    /// and with it conversations of the map); it takes at least the bytes the bound is
    /// exceeded by plus an eighth of the bound, so it does not run at every push. False
    /// when no detail is queued.
    fn roll_up_oldest_detail(&self, g: &mut Inner) -> Result<bool> {
        let want = g.bytes.saturating_sub(self.max_bytes).saturating_add(self.max_bytes / 8);
        let mut inputs: Vec<(sled::IVec, u64, SpoolRecord)> = Vec::new();
        let mut in_bytes = 0u64;
        let mut corrupt = Vec::new();
        for item in self.queued.scan_prefix([Class::FlowDetail as u8]) {
            let (k, v) = item.context("cannot read the spool")?;
            match record::decode(&v) {
                Ok(r) => {
                    in_bytes += v.len() as u64;
                    inputs.push((k, v.len() as u64, r));
                }
                Err(e) => corrupt.push((k, v, e.to_string())),
            }
            if inputs.len() >= ROLLUP_MAX_RECORDS || in_bytes >= want {
                break;
            }
        }
        for (k, v, reason) in corrupt {
            self.quarantine(g, T_QUEUED, &k, &v, &reason)?;
        }
        let Some(first) = inputs.first() else { return Ok(false) };
        let (sensor_id, site, created_ms) = (first.2.sensor_id.clone(), first.2.site.clone(), first.2.created_ms);
        let detail: Vec<&wardline_common::wire::FlowRecord> =
            inputs.iter().flat_map(|(_, _, r)| rollup::flows_of(&r.events)).collect();
        let n_detail = detail.len() as u64;
        // The queued summaries of the hours this detail falls in, merged with it.
        let hours: std::collections::BTreeSet<u64> = detail.iter().map(|f| rollup::hour_of(f)).collect();
        let mut existing: Vec<(sled::IVec, u64, SpoolRecord)> = Vec::new();
        let mut corrupt = Vec::new();
        for &hour in &hours {
            let range = queued_key(Class::FlowSummary, summary_order(hour, 0))
                ..queued_key(Class::FlowSummary, summary_order(hour + 1, 0));
            for item in self.queued.range(range) {
                let (k, v) = item.context("cannot read the spool")?;
                match record::decode(&v) {
                    Ok(r) => existing.push((k, v.len() as u64, r)),
                    Err(e) => corrupt.push((k, v, e.to_string())),
                }
            }
        }
        for (k, v, reason) in corrupt {
            self.quarantine(g, T_QUEUED, &k, &v, &reason)?;
        }
        let old_rows: u64 = existing.iter().map(|(_, _, r)| rollup::flows_of(&r.events).count() as u64).sum();
        let old_bytes: u64 = existing.iter().map(|(_, n, _)| n).sum();
        let (summaries, _) = rollup::roll_up(
            existing.iter().flat_map(|(_, _, r)| rollup::flows_of(&r.events)).chain(detail.iter().copied()),
        );
        let new_rows = summaries.len() as u64;
        // Records of at most `rows_per_record` rows, keyed by hour (roll_up orders by hour).
        let mut outputs: Vec<([u8; 9], Vec<u8>)> = Vec::new();
        let rows_per_record = summary_rows_per_record(self.max_bytes);
        let mut chunk: Vec<Event> = Vec::new();
        let mut chunk_hour = None;
        let mut chunk_index = 0u64;
        let mut flush_chunk = |hour: u64, index: u64, events: Vec<Event>| -> Result<()> {
            let rec = SpoolRecord {
                id: Ulid::new(),
                sensor_id: sensor_id.clone(),
                site: site.clone(),
                class: Class::FlowSummary,
                seq: 0,
                created_ms,
                report_through: 0,
                events,
            };
            let bytes = record::encode(&rec).context("cannot encode a flow summary record")?;
            outputs.push((queued_key(Class::FlowSummary, summary_order(hour, index)), bytes));
            Ok(())
        };
        for s in summaries {
            let hour = rollup::hour_of(&s);
            if chunk_hour != Some(hour) || chunk.len() >= rows_per_record {
                if let Some(h) = chunk_hour {
                    flush_chunk(h, chunk_index, std::mem::take(&mut chunk))?;
                    chunk_index = if h == hour { chunk_index + 1 } else { 0 };
                }
                chunk_hour = Some(hour);
            }
            chunk.push(Event::Flow(s));
        }
        if let Some(h) = chunk_hour {
            flush_chunk(h, chunk_index, chunk)?;
        }
        let out_bytes: u64 = outputs.iter().map(|(_, v)| v.len() as u64).sum();
        let mut ops = Ops::default();
        for (k, _, _) in inputs.iter().chain(existing.iter()) {
            ops.del(T_QUEUED, k);
        }
        for (k, v) in &outputs {
            ops.put(T_QUEUED, k, v.clone());
        }
        // Flow records in the spool go from (detail + old rows) to new rows. The report's
        // flows_rolled_up - rollups_created is exactly how many records this removed.
        let (rolled, created) =
            if new_rows >= old_rows { (n_detail, new_rows - old_rows) } else { (n_detail + (old_rows - new_rows), 0) };
        let mut c = g.c.clone();
        c.flows_rolled_up += rolled;
        c.rollups_created += created;
        c.report_gen += 1;
        let saved = std::mem::replace(&mut g.c, c);
        Self::put_state(g, &mut ops)?;
        if let Err(e) = self.commit(ops, "roll up flow detail") {
            g.c = saved;
            return Err(e);
        }
        g.queued = g.queued + outputs.len() as u64 - inputs.len() as u64 - existing.len() as u64;
        g.bytes = g.bytes + out_bytes - in_bytes - old_bytes;
        g.rollups += 1;
        crash_point(CrashPoint::SpoolAfterRollup, g.rollups);
        self.flush()?;
        warn!(
            records = inputs.len(),
            flows = rolled,
            summaries = created,
            merged_rows = old_rows,
            rows = new_rows,
            hours = hours.len(),
            bytes_before = in_bytes + old_bytes,
            bytes_after = out_bytes,
            "spool over its bound: rolled flow detail up into per-(device pair, app, server port, hour) summaries"
        );
        Ok(true)
    }

    /// The next record to evict: lowest class first, oldest first; queued before sealed
    /// (a sealed batch may be in flight), inventory last. Queued detail is rolled up before
    /// anything is evicted, so in practice the first victims are the summaries of the oldest
    /// packet hour.
    fn eviction_candidate(&self) -> Result<Option<(usize, sled::IVec, sled::IVec)>> {
        let queued_first = |class: Class| -> Result<Option<(usize, sled::IVec, sled::IVec)>> {
            Ok(self.queued.scan_prefix([class as u8]).next().transpose()?.map(|(k, v)| (T_QUEUED, k, v)))
        };
        if let Some(c) = queued_first(Class::FlowDetail)? {
            return Ok(Some(c));
        }
        if let Some(c) = queued_first(Class::FlowSummary)? {
            return Ok(Some(c));
        }
        // Sealed flow records, oldest first (a short list: at most about one window).
        for want in [Class::FlowDetail, Class::FlowSummary] {
            for item in self.sealed.iter() {
                let (k, v) = item.context("cannot read the spool")?;
                match record::decode(&v) {
                    Ok(r) if r.class == want => return Ok(Some((T_SEALED, k, v))),
                    Ok(_) => {}
                    // Corrupt: evicting it is the quarantine path below.
                    Err(_) => return Ok(Some((T_SEALED, k, v))),
                }
            }
        }
        if let Some(c) = queued_first(Class::Inventory)? {
            return Ok(Some(c));
        }
        Ok(self.sealed.first().context("cannot read the spool")?.map(|(k, v)| (T_SEALED, k, v)))
    }

    /// Evict one record (counted); false when the spool is empty.
    fn evict_one(&self, g: &mut Inner) -> Result<bool> {
        let Some((tree, key, value)) = self.eviction_candidate()? else { return Ok(false) };
        let rec = match record::decode(&value) {
            Ok(r) => r,
            Err(e) => {
                self.quarantine(g, tree, &key, &value, &e.to_string())?;
                return Ok(true);
            }
        };
        let (flows, flow_bytes, first, last) = rec.flow_totals();
        let seq = (tree == T_SEALED).then_some(rec.seq);
        let loss = SpoolLoss {
            batch_id: rec.id,
            seq,
            kind: loss_kind(rec.class),
            // The spool's own report is bookkeeping, not data the sensor observed.
            events: rec.events.iter().filter(|e| !matches!(e, Event::SpoolReport(_))).count() as u64,
            flows,
            flow_bytes,
            first_seen_us: first,
            last_seen_us: last,
        };
        let saved = g.c.clone();
        let mut ops = Ops::default();
        ops.del(tree, &key);
        g.c.batches_evicted += 1;
        g.c.events_evicted += loss.events;
        g.c.flows_evicted += flows;
        g.c.flow_bytes_evicted = g.c.flow_bytes_evicted.saturating_add(flow_bytes);
        g.c.evicted_by_class[rec.class as usize] += 1;
        Self::note_loss(g, &mut ops, &loss)?;
        Self::put_state(g, &mut ops)?;
        if let Err(e) = self.commit(ops, "evict a batch") {
            g.c = saved;
            return Err(e);
        }
        Self::forget_record(g, tree, &key, value.len());
        g.evictions += 1;
        crash_point(CrashPoint::SpoolAfterEvict, g.evictions);
        self.flush()?;
        warn!(
            batch = %rec.id,
            seq = ?seq,
            class = ?rec.class,
            events = loss.events,
            flows,
            "spool over its bound: evicted a batch (counted and reported to the cluster)"
        );
        Ok(true)
    }

    /// Move a corrupt record to the dead-letter tree, counted and reported.
    fn quarantine(&self, g: &mut Inner, tree: usize, key: &[u8], value: &[u8], reason: &str) -> Result<()> {
        error!(
            spool = %self.dir.display(),
            key = %hex::encode(key),
            "corrupt spool record quarantined in the dead-letter tree: {reason} (disk damage or a foreign write; \
             kept for inspection and reported to the cluster)"
        );
        let letter = DeadLetter {
            seq: if tree == T_SEALED { key_seq(key) } else { None },
            batch_id: None,
            reason: format!("corrupt spool record: {reason}"),
            at_ms: now_ms(),
            record: value.to_vec(),
        };
        let saved = g.c.clone();
        let mut ops = Ops::default();
        ops.del(tree, key);
        ops.put(T_DEAD, key, encode_frame(&letter).context("cannot encode a dead letter")?);
        g.c.records_quarantined += 1;
        let loss = SpoolLoss {
            batch_id: Ulid::nil(),
            seq: letter.seq,
            kind: SpoolLossKind::Quarantined,
            events: 0,
            flows: 0,
            flow_bytes: 0,
            first_seen_us: 0,
            last_seen_us: 0,
        };
        Self::note_loss(g, &mut ops, &loss)?;
        Self::put_state(g, &mut ops)?;
        if let Err(e) = self.commit(ops, "quarantine a corrupt record") {
            g.c = saved;
            return Err(e);
        }
        Self::forget_record(g, tree, key, value.len());
        self.flush()
    }

    /// The counters after a record of `tree` under `key` (`len` bytes) left it.
    fn forget_record(g: &mut Inner, tree: usize, key: &[u8], len: usize) {
        if tree == T_SEALED {
            g.sealed -= 1;
            if let Some(seq) = key_seq(key) {
                g.report_through.remove(&seq);
            }
        } else {
            g.queued -= 1;
        }
        g.bytes -= len as u64;
    }

    /// Up to `n` batches to send next, in seq order: the sealed ones, then (sealing them
    /// now) queued ones by class, then age. Corrupt records are quarantined instead.
    pub fn next_batches(&self, n: usize) -> Result<Vec<Batch>> {
        self.next_batches_after(0, n)
    }

    /// Like [`Spool::next_batches`], leaving out sealed batches up to seq `after` (those
    /// the caller already has in flight), so a sender refilling its window reads and decodes
    /// only batches it has not sent yet.
    pub fn next_batches_after(&self, after: u64, n: usize) -> Result<Vec<Batch>> {
        let mut g = self.lock();
        let mut out = Vec::with_capacity(n.min(1024));
        let mut corrupt = Vec::new();
        let from = after.checked_add(1).map(seq_key);
        let sealed = match &from {
            Some(k) => self.sealed.range(k.as_slice()..),
            // Nothing comes after u64::MAX.
            None => self.sealed.range(seq_key(u64::MAX).as_slice()..seq_key(u64::MAX).as_slice()),
        };
        for item in sealed {
            if out.len() >= n {
                break;
            }
            let (key, value) = item.context("cannot read the spool")?;
            let checked = match key_seq(&key) {
                None => Err(format!("record key of {} bytes is not a sequence number", key.len())),
                Some(seq) => match record::decode(&value) {
                    Err(e) => Err(format!("batch {seq} is unreadable: {e}")),
                    Ok(r) if r.seq != seq => Err(format!("record under seq {seq} holds batch seq {}", r.seq)),
                    Ok(r) => Ok(r),
                },
            };
            match checked {
                Ok(r) => {
                    g.report_through.insert(r.seq, r.report_through);
                    out.push(r.into_batch())
                }
                Err(reason) => corrupt.push((key, value, reason)),
            }
        }
        for (k, v, reason) in corrupt {
            self.quarantine(&mut g, T_SEALED, &k, &v, &reason)?;
        }
        let mut sealed_any = false;
        while out.len() < n {
            let Some(batch) = self.seal_next_queued(&mut g)? else { break };
            sealed_any = true;
            out.push(batch);
        }
        if sealed_any {
            // Before a sealed batch is sent its seq must be on disk, so a restart re-sends
            // it under the same seq and id (the aggregator's duplicate check needs both).
            self.flush()?;
        }
        Ok(out)
    }

    /// Seal the next queued batch (by class, then age): give it the next sequence number and
    /// move it to the sealed tree. None when nothing is queued. Not flushed: callers flush
    /// before a sealed batch leaves the spool.
    fn seal_next_queued(&self, g: &mut MutexGuard<'_, Inner>) -> Result<Option<Batch>> {
        loop {
            let Some(item) = self.queued.iter().next() else { return Ok(None) };
            let (key, value) = item.context("cannot read the spool")?;
            let mut rec = match record::decode(&value) {
                Ok(r) => r,
                Err(e) => {
                    self.quarantine(g, T_QUEUED, &key, &value, &e.to_string())?;
                    continue;
                }
            };
            let saved = g.c.clone();
            self.seal(g, &mut rec)?;
            let bytes = record::encode(&rec).with_context(|| format!("cannot encode batch {}", rec.seq))?;
            let mut ops = Ops::default();
            ops.del(T_QUEUED, &key);
            ops.put(T_SEALED, &seq_key(rec.seq), bytes.clone());
            Self::put_state(g, &mut ops)?;
            if let Err(e) = self.commit(ops, "assign a sequence number") {
                g.c = saved;
                return Err(e);
            }
            g.queued -= 1;
            g.sealed += 1;
            g.report_through.insert(rec.seq, rec.report_through);
            g.bytes = g.bytes + bytes.len() as u64 - value.len() as u64;
            g.seals += 1;
            crash_point(CrashPoint::SpoolAfterSeal, g.seals);
            return Ok(Some(rec.to_batch()));
        }
    }

    /// Seal every queued batch (for a bundle export, which needs every batch numbered);
    /// returns how many were sealed. Flushed before it returns.
    pub fn seal_all(&self) -> Result<u64> {
        let mut g = self.lock();
        let mut n = 0;
        while self.seal_next_queued(&mut g)?.is_some() {
            n += 1;
        }
        drop(g);
        self.flush()?;
        Ok(n)
    }

    /// Up to `n` sealed batches with a sequence number ≥ `from`, in seq order, without
    /// sealing anything or changing the spool (bundle export reads the spool in chunks).
    /// Corrupt records are skipped and named in the error list.
    pub fn sealed_from(&self, from: u64, n: usize) -> Result<(Vec<Batch>, Vec<String>)> {
        let (mut out, mut corrupt) = (Vec::new(), Vec::new());
        for item in self.sealed.range(seq_key(from)..) {
            if out.len() >= n {
                break;
            }
            let (key, value) = item.context("cannot read the spool")?;
            match (key_seq(&key), record::decode(&value)) {
                (Some(seq), Ok(r)) if r.seq == seq => out.push(r.into_batch()),
                (seq, r) => corrupt.push(format!(
                    "record {:?} is unreadable ({})",
                    seq,
                    r.err().map_or("its sequence does not match its key".to_string(), |e| e.to_string())
                )),
            }
        }
        Ok((out, corrupt))
    }

    /// Same as [`Spool::next_batches`] (the name the uplink used before priorities).
    pub fn oldest(&self, n: usize) -> Result<Vec<Batch>> {
        self.next_batches(n)
    }

    /// Delete a batch the aggregator acknowledged. Returns false if it was not stored.
    pub fn remove(&self, seq: u64) -> Result<bool> {
        Ok(self.remove_acked(&[seq])? == 1)
    }

    /// Delete batches the aggregator acknowledged. Returns how many were stored. Loss
    /// entries their reports carried are pruned.
    ///
    /// Not flushed: removal only has to be durable enough that a crash re-sends rather than
    /// loses, and a batch whose removal had not reached the disk is sent again after a
    /// restart and acked by the aggregator as a duplicate (decision 0016). The removal
    /// reaches the disk with the next seal's flush or sled's periodic flush (500 ms); a
    /// flush per group of acks was half of the sensor's disk waits in a backlog drain.
    pub fn remove_acked(&self, seqs: &[u64]) -> Result<usize> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let mut g = self.lock();
        self.remove_acked_locked(&mut g, seqs)
    }

    /// Like [`Spool::remove_acked`], unless the spool is busy (another thread seals or
    /// stores batches): then None and nothing changed, so an async caller need not block.
    pub fn try_remove_acked(&self, seqs: &[u64]) -> Option<Result<usize>> {
        if seqs.is_empty() {
            return Some(Ok(0));
        }
        let mut g = match self.inner.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.remove_acked_locked(&mut g, seqs))
    }

    fn remove_acked_locked(&self, g: &mut MutexGuard<'_, Inner>, seqs: &[u64]) -> Result<usize> {
        let mut ops = Ops::default();
        let (mut n, mut bytes, mut report_through) = (0u64, 0u64, 0u64);
        for &seq in seqs {
            if let Some(v) = self.sealed.get(seq_key(seq)).context("cannot read the spool")? {
                n += 1;
                bytes += v.len() as u64;
                let through = match g.report_through.remove(&seq) {
                    Some(t) => t,
                    None => record::decode(&v).map_or(0, |r| r.report_through),
                };
                report_through = report_through.max(through);
                ops.del(T_SEALED, &seq_key(seq));
            }
        }
        let saved = g.c.clone();
        if report_through > g.c.report_acked_through {
            for i in g.c.report_acked_through + 1..=report_through {
                ops.del(T_LOSSES, &seq_key(i));
            }
            g.c.report_acked_through = report_through;
            Self::put_state(g, &mut ops)?;
        }
        if let Err(e) = self.commit(ops, "remove acknowledged batches") {
            g.c = saved;
            return Err(e);
        }
        g.sealed -= n;
        g.bytes -= bytes;
        Ok(n as usize)
    }

    /// Move a batch the aggregator refused for good into the dead-letter tree.
    pub fn dead_letter(&self, seq: u64, reason: &str) -> Result<bool> {
        let mut g = self.lock();
        let key = seq_key(seq);
        let Some(value) = self.sealed.get(key).context("cannot read the spool")? else {
            return Ok(false);
        };
        let letter = DeadLetter {
            seq: Some(seq),
            batch_id: record::decode(&value).ok().map(|r| r.id),
            reason: reason.to_string(),
            at_ms: now_ms(),
            record: value.to_vec(),
        };
        let mut ops = Ops::default();
        ops.del(T_SEALED, &key);
        ops.put(T_DEAD, &key, encode_frame(&letter).context("cannot encode a dead letter")?);
        self.commit(ops, "dead-letter a batch")?;
        self.flush()?;
        g.report_through.remove(&seq);
        g.sealed -= 1;
        g.bytes -= value.len() as u64;
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

    /// Batches waiting to be sent or acknowledged.
    pub fn len(&self) -> usize {
        let g = self.lock();
        (g.sealed + g.queued) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stored record bytes (what `max_bytes` bounds).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Batches evicted to stay within the byte bound, since the spool was created.
    pub fn dropped_batches(&self) -> Result<u64> {
        Ok(self.lock().c.batches_evicted)
    }

    /// The persisted counters (epoch, sequence, eviction and roll-up totals).
    pub fn counters(&self) -> SpoolCounters {
        self.lock().c.clone()
    }

    /// The value last stored with `push_checkpointed` under `key`.
    pub fn checkpoint(&self, key: &str) -> Result<Option<u64>> {
        match self.checkpoints.get(key.as_bytes()).context("cannot read a spool checkpoint")? {
            None => Ok(None),
            Some(v) => Ok(Some(key_seq(&v).with_context(|| format!("spool checkpoint {key:?} is corrupt"))?)),
        }
    }

    pub fn stats(&self) -> Result<SpoolStats> {
        let g = self.lock();
        let c = &g.c;
        Ok(SpoolStats {
            pending_batches: g.sealed + g.queued,
            pending_bytes: g.bytes,
            sealed_batches: g.sealed,
            queued_batches: g.queued,
            dead_letters: self.dead.len() as u64,
            dropped_batches: c.batches_evicted,
            dropped_events: c.events_evicted,
            flows_evicted: c.flows_evicted,
            flow_bytes_evicted: c.flow_bytes_evicted,
            flows_rolled_up: c.flows_rolled_up,
            rollups_created: c.rollups_created,
            records_quarantined: c.records_quarantined,
            next_seq: c.next_seq,
            max_bytes: self.max_bytes,
            epoch: c.epoch,
        })
    }

    /// Resolves after the next push (or immediately if one happened since the last wait).
    pub async fn wait_for_push(&self) {
        self.pushed.notified().await
    }
}
