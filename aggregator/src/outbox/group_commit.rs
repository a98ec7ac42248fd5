//! Group commit: batches arriving while a Raft proposal is in flight are proposed together
//! as one `Command::ApplyBatches` entry, one proposal at a time.
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
use crate::state::{outbox_bytes_of, BatchSummary, Command, IngestBatch};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
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
/// Largest forward jump of a sensor's sequence accepted in one batch. A sensor skips seqs
/// only for batches its spool evicted or the cluster refused; a jump beyond this is a bug or
/// a forgery and is refused, so one batch (seq u64::MAX) cannot put the watermark out of
/// reach of every later batch (decision 0022).
pub const MAX_SEQ_JUMP: u64 = 1 << 32;

struct Pending {
    batch: IngestBatch,
    reply: oneshot::Sender<BatchReply>,
}

/// Submits batches to the group-commit task.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::UnboundedSender<Pending>,
}

impl GroupCommitter {
    /// Start the committing task. `max_outbox_bytes` is the outbox bound (decision 0016).
    pub fn start(raft: Arc<RaftNode>, max_outbox_bytes: u64) -> Self {
        // Unbounded is safe: ingest bounds the batches in flight (IngestLimits).
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, max_outbox_bytes, rx));
        GroupCommitter { tx }
    }

    /// Queue `batch` now (so call order is proposal order) and resolve to its reply once
    /// its group was committed or refused.
    pub fn submit(&self, batch: Batch) -> impl std::future::Future<Output = BatchReply> + Send + 'static {
        let (id, seq) = (batch.id, batch.seq);
        let summary = BatchSummary::from_batch(&batch);
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
        let sent = self.tx.send(Pending { batch: IngestBatch { summary, flows }, reply }).is_ok();
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

/// A refused batch of a sensor; its later batches wait for it.
struct Refusal {
    seq: u64,
    at: Instant,
}

async fn run(raft: Arc<RaftNode>, max_outbox_bytes: u64, mut rx: mpsc::UnboundedReceiver<Pending>) {
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
        commit_group(&raft, max_outbox_bytes, &mut refused, group).await;
    }
}

fn retry(p: Pending, reason: String) {
    let s = &p.batch.summary;
    let _ = p.reply.send(BatchReply::RetryLater { batch_id: s.batch_id, seq: s.seq, reason });
}

async fn commit_group(
    raft: &RaftNode,
    max_outbox_bytes: u64,
    refused: &mut HashMap<String, Refusal>,
    group: Vec<Pending>,
) {
    let (outbox_bytes, checks): (u64, Vec<(bool, u64)>) = raft
        .read_state(|s| {
            let checks = group
                .iter()
                .map(|p| {
                    let b = &p.batch.summary;
                    (s.is_applied(&b.sensor_id, b.seq, &b.batch_id), s.watermark(&b.sensor_id))
                })
                .collect();
            (s.outbox().bytes, checks)
        })
        .await;
    refused.retain(|_, r| r.at.elapsed() < REFUSAL_HOLD);
    let mut added = 0u64;
    let mut proposal: Vec<Pending> = Vec::new();
    for (p, (already, watermark)) in group.into_iter().zip(checks) {
        let s = &p.batch.summary;
        // The refused batch was applied since (through another node while this one was a
        // follower): nothing is missing any more.
        if refused.get(&s.sensor_id).is_some_and(|r| watermark >= r.seq) {
            refused.remove(&s.sensor_id);
        }
        if already {
            if refused.get(&s.sensor_id).is_some_and(|r| s.seq <= r.seq) {
                refused.remove(&s.sensor_id);
            }
            let _ = p.reply.send(BatchReply::Ack { batch_id: s.batch_id, seq: s.seq, duplicate: true });
            continue;
        }
        if s.seq > watermark.saturating_add(MAX_SEQ_JUMP) {
            let reason = format!(
                "sequence jump from {watermark} to {} exceeds {MAX_SEQ_JUMP}: refused so it cannot move this sensor's \
                 watermark out of reach of its later batches (decision 0022)",
                s.seq
            );
            warn!(sensor = %s.sensor_id, seq = s.seq, watermark, "refused a batch: {reason}");
            let _ = p.reply.send(BatchReply::Rejected { batch_id: s.batch_id, seq: s.seq, reason });
            continue;
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
        proposal.push(p);
    }
    if proposal.is_empty() {
        return;
    }
    let (batches, replies): (Vec<IngestBatch>, Vec<oneshot::Sender<BatchReply>>) =
        proposal.into_iter().map(|p| (p.batch, p.reply)).unzip();
    let ids: Vec<(String, ulid::Ulid, u64)> =
        batches.iter().map(|b| (b.summary.sensor_id.clone(), b.summary.batch_id, b.summary.seq)).collect();
    let n = batches.len();
    match raft.propose(Command::ApplyBatches(batches)).await {
        Ok(resp) => {
            debug!(batches = n, "group committed");
            for (i, ((_, batch_id, seq), reply)) in ids.into_iter().zip(replies).enumerate() {
                let applied = resp.batches.get(i).copied().unwrap_or(false);
                let _ = reply.send(BatchReply::Ack { batch_id, seq, duplicate: !applied });
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
