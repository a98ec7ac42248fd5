//! Group commit: batches arriving while a Raft proposal is in flight are proposed together
//! as one `Command::ApplyBatches` entry, one proposal at a time (`ApplyEpochBatches` for
//! sensors whose spool epoch the cluster records, decision 0036; `ApplyReportedBatches` when a
//! batch of the group carries its sensor's spool report, decision 0045). The newer commands
//! are proposed only once every member can decode them (`RaftNode::cluster_supports`).
//!
//! Order: batches are proposed in the order they were submitted (ingest submits a
//! connection's batches in stream order, which is the sensor's seq order), and the state
//! machine applies a group in order. A batch that is refused here (outbox full, proposal
//! failed) would leave a hole if a later batch of the same sensor were applied (the
//! watermark would pass it, and its re-send would be acked as a duplicate and lost), so
//! after a refusal the sensor's later batches are refused too until the refused one (or an
//! earlier one) comes back, the replicated watermark passes it (applied through another
//! node), or [`REFUSAL_HOLD`] passes (the sensor no longer has it: it
//! only moves past a batch when it was acked or dead-lettered).

use crate::raft::{ProposeError, RaftNode};
use crate::state::{
    batch_epoch, outbox_bytes_of, BatchSpoolReport, BatchSummary, Command, EpochBatch, IngestBatch, IngestVerdict,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use wardline_common::wire::{not_leader_reason, BatchReply};
use wardline_common::{Batch, Event};

/// Most batches in one Raft entry.
pub const MAX_GROUP_BATCHES: usize = 1024;
/// Most estimated flow bytes in one Raft entry (well under the RPC and codec limits). Kept at
/// a few MiB so an AppendEntries of `RaftConfig::max_payload_entries` entries still crosses
/// within openraft's per-request time (the heartbeat interval) on a busy machine.
pub const MAX_GROUP_BYTES: u64 = 4 * 1024 * 1024;
/// How long later batches of a sensor are refused after one of its batches was refused.
pub const REFUSAL_HOLD: Duration = Duration::from_secs(30);
/// Largest forward jump of a sensor's sequence accepted in one batch by default (`max_seq_jump`
/// in the aggregator's configuration). A sensor skips seqs only for batches its spool evicted or the cluster
/// refused; a jump beyond the bound is a bug or a forgery and is refused, so one batch (seq
/// u64::MAX) cannot put the watermark out of reach of every later batch (decisions 0022, 0036).
pub const MAX_SEQ_JUMP: u64 = crate::state::epochs::DEFAULT_MAX_SEQ_JUMP;

struct Pending {
    batch: IngestBatch,
    /// The spool epoch the batch names (decision 0036), if any.
    epoch: Option<ulid::Ulid>,
    reply: oneshot::Sender<BatchReply>,
    /// The spool report the batch carried, kept in the state when it is applied (0045).
    report: Option<wardline_common::wire::SpoolReport>,
}

/// Submits batches to the group-commit task.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::UnboundedSender<Pending>,
}

/// What the committer did, for `/api/v1/sensors` (`ingest.group_commit`) and the metrics.
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    groups: AtomicU64,
    batches: AtomicU64,
    flows: AtomicU64,
    micros: AtomicU64,
    failed: AtomicU64,
}

/// [`GroupCommitStats`] read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCommitSnapshot {
    /// Raft entries proposed for ingest groups, and the proposals among them that failed.
    pub groups: u64,
    pub failed: u64,
    /// Batches and flow records in those entries.
    pub batches: u64,
    pub flows: u64,
    /// Time from proposal to the applied answer, summed over the groups (µs).
    pub commit_micros: u64,
}

impl GroupCommitStats {
    pub fn snapshot(&self) -> GroupCommitSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GroupCommitSnapshot {
            groups: g(&self.groups),
            failed: g(&self.failed),
            batches: g(&self.batches),
            flows: g(&self.flows),
            commit_micros: g(&self.micros),
        }
    }

    fn record(&self, batches: usize, flows: usize, took: Duration, ok: bool) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.batches.fetch_add(batches as u64, Ordering::Relaxed);
        self.flows.fetch_add(flows as u64, Ordering::Relaxed);
        self.micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl GroupCommitter {
    /// Start the committing task. `max_outbox_bytes` is the outbox bound (decision 0016);
    /// batches whose seq jumps more than `max_seq_jump` past their sensor's watermark are
    /// refused (decision 0036).
    pub fn start(raft: Arc<RaftNode>, max_outbox_bytes: u64, max_seq_jump: u64, stats: Arc<GroupCommitStats>) -> Self {
        // Unbounded is safe: ingest bounds the batches in flight (IngestLimits).
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, max_outbox_bytes, max_seq_jump.max(1), stats, rx));
        GroupCommitter { tx }
    }

    /// Queue `batch` now (so call order is proposal order) and resolve to its reply once
    /// its group was committed or refused.
    pub fn submit(&self, batch: Batch) -> impl std::future::Future<Output = BatchReply> + Send + 'static {
        let (id, seq) = (batch.id, batch.seq);
        let summary = BatchSummary::from_batch(&batch);
        let epoch = batch_epoch(&batch);
        // Only a report of something lost or condensed is kept: every batch carries one that
        // names its spool epoch (decision 0036), and those must not cost a state entry.
        let report = batch.events.iter().rev().find_map(|e| match e {
            Event::SpoolReport(r) if reports_something(r) => Some(r.clone()),
            _ => None,
        });
        // Moved out of the batch, not copied: the flows are most of its bytes.
        let flows = batch
            .events
            .into_iter()
            .filter_map(|e| match e {
                Event::Flow(f) => Some(f),
                _ => None,
            })
            .collect();
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Pending { batch: IngestBatch { summary, flows }, epoch, reply, report }).is_ok();
        async move {
            if !sent {
                return BatchReply::RetryLater { batch_id: id, seq, reason: "aggregator node shutting down".into() };
            }
            rx.await.unwrap_or_else(|_| BatchReply::RetryLater {
                batch_id: id,
                seq,
                reason: "aggregator node shutting down".into(),
            })
        }
    }
}

/// True when a spool report says the spool evicted, rolled up or quarantined anything.
fn reports_something(r: &wardline_common::wire::SpoolReport) -> bool {
    !r.losses.is_empty()
        || r.batches_evicted > 0
        || r.flows_rolled_up > 0
        || r.rollups_created > 0
        || r.records_quarantined > 0
}

/// A refused batch of a sensor; its later batches wait for it.
struct Refusal {
    seq: u64,
    at: Instant,
}

async fn run(
    raft: Arc<RaftNode>,
    max_outbox_bytes: u64,
    max_seq_jump: u64,
    stats: Arc<GroupCommitStats>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut refused: HashMap<String, Refusal> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut bytes = outbox_bytes_of(&group[0].batch.flows);
        while group.len() < MAX_GROUP_BATCHES && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += outbox_bytes_of(&p.batch.flows);
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        commit_group(&raft, max_outbox_bytes, max_seq_jump, &stats, &mut refused, group).await;
    }
}

fn retry(p: Pending, reason: String) {
    let s = &p.batch.summary;
    let _ = p.reply.send(BatchReply::RetryLater { batch_id: s.batch_id, seq: s.seq, reason });
}

async fn commit_group(
    raft: &RaftNode,
    max_outbox_bytes: u64,
    max_seq_jump: u64,
    stats: &GroupCommitStats,
    refused: &mut HashMap<String, Refusal>,
    group: Vec<Pending>,
) {
    let (outbox_bytes, checks): (u64, Vec<(IngestVerdict, u64)>) = raft
        .read_state(|s| {
            let checks = group
                .iter()
                .map(|p| {
                    let b = &p.batch.summary;
                    let verdict = s.ingest_verdict(&b.sensor_id, p.epoch, b.seq, &b.batch_id, max_seq_jump);
                    (verdict, s.watermark(&b.sensor_id))
                })
                .collect();
            (s.outbox().bytes, checks)
        })
        .await;
    refused.retain(|_, r| r.at.elapsed() < REFUSAL_HOLD);
    let mut added = 0u64;
    let mut proposal: Vec<Pending> = Vec::new();
    // (batch, its epoch, whether it begins that epoch after earlier ones)
    let mut with_epoch: Vec<(Pending, ulid::Ulid, bool)> = Vec::new();
    let mut beginning: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Asked once per group, and only when a batch needs `ApplyEpochBatches`.
    let mut epochs_supported: Option<Result<(), String>> = None;
    for (p, (verdict, watermark)) in group.into_iter().zip(checks) {
        let s = &p.batch.summary;
        // The refused batch was applied since (through another node while this one was a
        // follower): nothing is missing any more.
        if refused.get(&s.sensor_id).is_some_and(|r| watermark >= r.seq) {
            refused.remove(&s.sensor_id);
        }
        let (epoch_command, begins_epoch) = match verdict {
            IngestVerdict::Duplicate => {
                if refused.get(&s.sensor_id).is_some_and(|r| s.seq <= r.seq) {
                    refused.remove(&s.sensor_id);
                }
                let _ = p.reply.send(BatchReply::Ack { batch_id: s.batch_id, seq: s.seq, duplicate: true });
                continue;
            }
            IngestVerdict::Refuse(reason) => {
                warn!(sensor = %s.sensor_id, seq = s.seq, watermark, "refused a batch: {reason}");
                let _ = p.reply.send(BatchReply::Rejected { batch_id: s.batch_id, seq: s.seq, reason });
                continue;
            }
            IngestVerdict::Propose { with_epoch, begins_epoch } => (with_epoch, begins_epoch),
        };
        if begins_epoch {
            // The new epoch's watermark starts at 0: nothing of the old one is waited for.
            refused.remove(&s.sensor_id);
        } else if s.seq > watermark.saturating_add(1) {
            debug!(
                sensor = %s.sensor_id,
                seq = s.seq,
                watermark,
                "batch skips {} sequence numbers (batches the sensor's spool evicted or the cluster refused)",
                s.seq - watermark - 1
            );
        }
        if let Some(r) = refused.get(&s.sensor_id) {
            if s.seq > r.seq {
                let reason = format!(
                    "batch {} of this sensor was not accepted yet; later batches wait for it (re-send from it)",
                    r.seq
                );
                retry(p, reason);
                continue;
            }
            refused.remove(&s.sensor_id);
        }
        let size = if p.batch.flows.is_empty() { 0 } else { outbox_bytes_of(&p.batch.flows) };
        if size > 0 && outbox_bytes.saturating_add(added).saturating_add(size) > max_outbox_bytes {
            // Backpressure only here: batches without flows (inventory) still pass.
            let reason = format!(
                "flow outbox full ({} of {} bytes waiting for the flow store; is ClickHouse down or slow?) — \
                 the batch stays in the sensor's spool",
                outbox_bytes.saturating_add(added),
                max_outbox_bytes
            );
            refused.insert(s.sensor_id.clone(), Refusal { seq: s.seq, at: Instant::now() });
            retry(p, reason);
            continue;
        }
        added += size;
        if epoch_command && p.epoch.is_some() {
            if epochs_supported.is_none() {
                epochs_supported = Some(raft.cluster_supports(crate::raft::FEATURE_SENSOR_EPOCHS).await);
            }
            if let Some(Err(why)) = &epochs_supported {
                if begins_epoch && watermark == 0 {
                    // A new sensor: applied as before epochs; its epoch is recorded once it
                    // changes after the upgrade (an unrecorded epoch is judged by seq alone).
                    proposal.push(p);
                } else {
                    let reason = format!(
                        "this batch needs the cluster to record its sensor's spool epoch (decision 0036), which \
                         waits until every node runs this version: {why}"
                    );
                    refused.insert(s.sensor_id.clone(), Refusal { seq: s.seq, at: Instant::now() });
                    retry(p, reason);
                }
                continue;
            }
        }
        match (epoch_command, p.epoch) {
            // A sensor's first epoch is no change worth a log line.
            (true, Some(epoch)) => {
                let logged = begins_epoch && watermark > 0 && beginning.insert(p.batch.summary.sensor_id.clone());
                with_epoch.push((p, epoch, logged))
            }
            _ => proposal.push(p),
        }
    }
    if !proposal.is_empty() {
        let batches = proposal.into_iter().map(|p| (p.batch, p.report, p.reply)).collect();
        propose(raft, stats, refused, batches, None, max_seq_jump).await;
    }
    if !with_epoch.is_empty() {
        let epochs = with_epoch.iter().map(|(_, epoch, begins)| (*epoch, *begins)).collect();
        let batches = with_epoch.into_iter().map(|(p, _, _)| (p.batch, p.report, p.reply)).collect();
        propose(raft, stats, refused, batches, Some(epochs), max_seq_jump).await;
    }
}

/// A batch to propose: the batch, the spool report it carried (if it reports a loss), and
/// where its reply goes.
type ToPropose = (IngestBatch, Option<wardline_common::wire::SpoolReport>, oneshot::Sender<BatchReply>);

/// Propose `batches` as one entry and answer each: `ApplyBatches` (`ApplyReportedBatches`
/// when some carry spool reports and every member knows it), or `ApplyEpochBatches` when
/// `epochs` names each batch's epoch (and whether it begins it after earlier ones).
async fn propose(
    raft: &RaftNode,
    stats: &GroupCommitStats,
    refused: &mut HashMap<String, Refusal>,
    batches: Vec<ToPropose>,
    epochs: Option<Vec<(ulid::Ulid, bool)>>,
    max_seq_jump: u64,
) {
    let mut replies = Vec::with_capacity(batches.len());
    let mut reports = Vec::new();
    let batches: Vec<IngestBatch> = batches
        .into_iter()
        .enumerate()
        .map(|(i, (batch, report, reply))| {
            replies.push(reply);
            reports.push((i, report));
            batch
        })
        .collect();
    let ids: Vec<(String, ulid::Ulid, u64)> =
        batches.iter().map(|b| (b.summary.sensor_id.clone(), b.summary.batch_id, b.summary.seq)).collect();
    let n = batches.len();
    let flows: usize = batches.iter().map(|b| b.flows.len()).sum();
    let epochs = epochs.unwrap_or_default();
    let command = if epochs.is_empty() {
        let reports: Vec<BatchSpoolReport> = reports
            .into_iter()
            .filter_map(|(i, r)| r.map(|report| BatchSpoolReport { index: i as u32, report }))
            .collect();
        if reports.is_empty() {
            Command::ApplyBatches(batches)
        } else if let Err(why) = raft.cluster_supports(crate::raft::FEATURE_SPOOL_LOSSES).await {
            // Left out until every member can decode the newer command; report totals are
            // cumulative, so the next report after the upgrade carries them again.
            debug!(reports = reports.len(), "spool reports not recorded in the replicated state: {why}");
            Command::ApplyBatches(batches)
        } else {
            Command::ApplyReportedBatches { batches, reports }
        }
    } else {
        let batches = batches
            .into_iter()
            .zip(reports)
            .zip(&epochs)
            .map(|((batch, (_, report)), (epoch, _))| EpochBatch { epoch: *epoch, batch, report });
        Command::ApplyEpochBatches { max_seq_jump, batches: batches.collect() }
    };
    let started = Instant::now();
    let result = raft.propose(command).await;
    stats.record(n, flows, started.elapsed(), result.is_ok());
    match result {
        Ok(resp) => {
            debug!(batches = n, "group committed");
            for (i, ((sensor, batch_id, seq), reply)) in ids.into_iter().zip(replies).enumerate() {
                let applied = resp.batches.get(i).copied().unwrap_or(false);
                let refusal = resp.refused.iter().find(|r| r.index as usize == i);
                let answer = match refusal {
                    Some(r) if r.retry => BatchReply::RetryLater { batch_id, seq, reason: r.reason.clone() },
                    Some(r) => {
                        warn!(sensor = %sensor, seq, "refused a batch: {}", r.reason);
                        BatchReply::Rejected { batch_id, seq, reason: r.reason.clone() }
                    }
                    None => BatchReply::Ack { batch_id, seq, duplicate: !applied },
                };
                if applied {
                    if let Some((epoch, true)) = epochs.get(i) {
                        info!(
                            sensor = %sensor,
                            epoch = %epoch,
                            seq,
                            "sensor began a new spool epoch (its spool was wiped or it was reinstalled): its sequence \
                             numbers start again and `wardline-aggregator sensors` shows the epoch it left (decision 0036)"
                        );
                    }
                }
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            let reason = match &e {
                ProposeError::NotLeader { leader_ingest, .. } => not_leader_reason(leader_ingest.as_deref()),
                e => {
                    warn!(batches = n, "raft proposal failed, sensors will retry: {e}");
                    format!("cluster could not commit: {e}")
                }
            };
            for ((sensor, batch_id, seq), reply) in ids.into_iter().zip(replies) {
                let r = refused.entry(sensor).or_insert(Refusal { seq, at: Instant::now() });
                r.seq = r.seq.min(seq);
                let _ = reply.send(BatchReply::RetryLater { batch_id, seq, reason: reason.clone() });
            }
        }
    }
}
