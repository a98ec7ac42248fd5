//! The flow outbox (decision 0016): flow rows of committed batches wait in the replicated
//! state until the leader has written them to the flow sink in large inserts.
//!
//! - [`group_commit`] turns concurrent batches into one Raft entry (`Command::ApplyBatches`)
//!   and refuses batches with flows only when the outbox is over its byte bound.
//! - [`OutboxDrainer`] runs on every node; only the leader drains: it takes the oldest
//!   entries (up to `insert_rows` rows), writes them with one `FlowSink::write_rows`, then
//!   replicates `Command::FlowsDrained`. A new leader resumes after the last drained entry;
//!   if the old leader wrote rows but died before `FlowsDrained` committed, the new one
//!   writes them again, which the sinks collapse by row key (ReplacingMergeTree + FINAL,
//!   sled key overwrite).

pub mod group_commit;

use crate::raft::RaftNode;
use crate::sink::{FlowRow, FlowSink};
use crate::state::Command;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use wardline_common::fault::{crash_point_at_or_after, CrashPoint};

/// Outbox bounds and drain pacing.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// Estimated bytes the outbox may hold; beyond it batches carrying flows get RetryLater.
    pub max_bytes: u64,
    /// Rows per insert: the drain writes as soon as this many are waiting.
    pub insert_rows: usize,
    /// Longest a row waits for a fuller insert (ClickHouse wants about one insert per second).
    pub flush_interval: Duration,
    /// Write what is waiting sooner when nothing new arrived for this long: a burst (a
    /// backlog drained, a capture's end) then reaches the store without waiting out
    /// `flush_interval`, and inserts stay at most one per `idle_flush` under a trickle.
    pub idle_flush: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: 256 * 1024 * 1024,
            insert_rows: 100_000,
            flush_interval: Duration::from_secs(1),
            idle_flush: Duration::from_millis(300),
        }
    }
}

/// Whether the drain writes now: a full insert, the oldest row waited `flush_interval`, or
/// nothing new arrived for `idle_flush` (and the oldest waited that long too).
fn drain_due(config: &OutboxConfig, rows_waiting: usize, oldest_age: Duration, quiet_for: Duration) -> bool {
    rows_waiting >= config.insert_rows.max(1)
        || oldest_age >= config.flush_interval
        || (quiet_for >= config.idle_flush && oldest_age >= config.idle_flush)
}

/// What the outbox looks like from this node (`GET /api/v1/flows/totals`, field `outbox`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxView {
    /// Batches whose rows are waiting (replicated: equal on every node at the same index).
    pub entries: u64,
    pub rows: u64,
    /// Estimated bytes held, and the bound beyond which sensors are told to retry later.
    pub bytes: u64,
    pub max_bytes: u64,
    /// How long the oldest waiting entry has been in the outbox as seen by this node, in ms.
    pub oldest_age_ms: u64,
    /// Rows this node wrote to the flow sink, and in how many inserts (leader only).
    pub rows_drained: u64,
    pub inserts: u64,
    /// The last failed drain (e.g. ClickHouse unreachable), cleared by the next success.
    pub last_error: Option<String>,
}

/// Node-local drain counters shared with the read side.
#[derive(Debug, Default)]
pub struct OutboxStatus {
    inner: Mutex<OutboxView>,
}

impl OutboxStatus {
    pub fn view(&self) -> OutboxView {
        self.inner.lock().map(|v| v.clone()).unwrap_or_default()
    }
    /// The view with its replicated fields read from `outbox` itself rather than from the
    /// drainer's last pass: right after a restart the drainer has not looked yet, and an
    /// empty-looking outbox then would be a lie (a test waiting for the drain believed it).
    pub fn view_at(&self, outbox: &crate::state::FlowOutbox) -> OutboxView {
        OutboxView { entries: outbox.entries.len() as u64, rows: outbox.rows, bytes: outbox.bytes, ..self.view() }
    }
    fn update(&self, f: impl FnOnce(&mut OutboxView)) {
        if let Ok(mut v) = self.inner.lock() {
            f(&mut v);
        }
    }
}

/// Drains the outbox into the flow sink while this node leads.
pub struct OutboxDrainer {
    raft: Arc<RaftNode>,
    sink: Arc<dyn FlowSink>,
    config: OutboxConfig,
    status: Arc<OutboxStatus>,
}

/// `(outbox.next, when)` samples, to tell how long the oldest entry has existed.
struct AgeTracker {
    samples: VecDeque<(u64, Instant)>,
}

impl AgeTracker {
    fn observe(&mut self, next: u64, first_key: Option<u64>, now: Instant) -> Duration {
        if self.samples.back().is_none_or(|(n, _)| *n != next) {
            self.samples.push_back((next, now));
        }
        let Some(first) = first_key else {
            self.samples.clear();
            self.samples.push_back((next, now));
            return Duration::ZERO;
        };
        // A sample (n, t) says entries below n existed at t; those not showing `first` go.
        while self.samples.front().is_some_and(|(n, _)| *n <= first) {
            self.samples.pop_front();
        }
        let since = self.samples.front().map_or(now, |(_, t)| *t);
        now.saturating_duration_since(since)
    }
}

impl OutboxDrainer {
    pub fn new(raft: Arc<RaftNode>, sink: Arc<dyn FlowSink>, config: OutboxConfig, status: Arc<OutboxStatus>) -> Self {
        status.update(|v| v.max_bytes = config.max_bytes);
        OutboxDrainer { raft, sink, config, status }
    }

    /// Run until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let tick = Duration::from_millis(50);
        let mut ages = AgeTracker { samples: VecDeque::new() };
        // When the outbox last grew (its `next` moved), for the idle flush.
        let mut grew: (u64, Instant) = (0, Instant::now());
        let mut failures = 0u32;
        let mut retry_at = Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(tick) => {}
            }
            if *stop.borrow() {
                break;
            }
            let insert_rows = self.config.insert_rows.max(1);
            let (next, first, rows_waiting, bytes, entries, taken) = self
                .raft
                .read_state(|s| {
                    let o = s.outbox();
                    let mut taken = Vec::new();
                    let mut rows = 0usize;
                    for (k, e) in &o.entries {
                        if rows >= insert_rows {
                            break;
                        }
                        rows += e.flows.len();
                        taken.push((*k, e.clone()));
                    }
                    (o.next, o.entries.keys().next().copied(), o.rows, o.bytes, o.entries.len() as u64, taken)
                })
                .await;
            let now = Instant::now();
            let age = ages.observe(next, first, now);
            if next != grew.0 {
                grew = (next, now);
            }
            self.status.update(|v| {
                v.entries = entries;
                v.rows = rows_waiting;
                v.bytes = bytes;
                v.oldest_age_ms = age.as_millis() as u64;
            });
            let leading = self.raft.metrics().current_leader == Some(self.raft.node_id());
            if !leading || taken.is_empty() || now < retry_at {
                continue;
            }
            if !drain_due(&self.config, rows_waiting as usize, age, now.saturating_duration_since(grew.1)) {
                continue;
            }
            let through = taken.last().map_or(0, |(k, _)| *k);
            let rows: Vec<FlowRow> = taken
                .iter()
                .flat_map(|(_, e)| {
                    (0u32..)
                        .zip(&e.flows)
                        .map(|(idx, f)| FlowRow::from_record(e.batch_id, idx, &e.sensor_id, &e.site, f))
                        .collect::<Vec<_>>()
                })
                .collect();
            if let Err(e) = self.sink.write_rows(&rows).await {
                failures = failures.saturating_add(1);
                let wait =
                    Duration::from_millis(250u64.saturating_mul(1 << failures.min(7))).min(Duration::from_secs(30));
                retry_at = Instant::now() + wait;
                // Inventory keeps being applied meanwhile; only a full outbox slows sensors.
                warn!(
                    rows = rows.len(),
                    "cannot drain the flow outbox to {}: {e}; the rows stay in the outbox (replicated), \
                     retrying in {wait:.1?}",
                    self.sink.describe()
                );
                self.status.update(|v| v.last_error = Some(e.to_string()));
                continue;
            }
            if let Some(seq) = taken.iter().map(|(_, e)| e.seq).max() {
                crash_point_at_or_after(CrashPoint::AggregatorAfterSink, seq);
            }
            if failures > 0 {
                info!("flow outbox drains again into {}", self.sink.describe());
            }
            failures = 0;
            match self.raft.propose(Command::FlowsDrained { through }).await {
                Ok(_) => {
                    debug!(rows = rows.len(), through, "outbox drained");
                    self.status.update(|v| {
                        v.rows_drained = v.rows_drained.saturating_add(rows.len() as u64);
                        v.inserts = v.inserts.saturating_add(1);
                        v.last_error = None;
                    });
                }
                // The rows are in the sink; whoever leads next writes them again (idempotent).
                Err(e) => debug!("cannot record the outbox drain through {through}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_is_due_when_full_when_old_or_after_a_quiet_spell() {
        let c = OutboxConfig { insert_rows: 1000, ..OutboxConfig::default() };
        let ms = Duration::from_millis;
        // Rows still arriving, young: wait for more.
        assert!(!drain_due(&c, 10, ms(200), ms(10)));
        assert!(!drain_due(&c, 999, ms(900), ms(0)));
        // A full insert, or the oldest row waited the flush interval.
        assert!(drain_due(&c, 1000, ms(0), ms(0)));
        assert!(drain_due(&c, 1, ms(1000), ms(0)));
        // Nothing new for the idle time: written without waiting out the interval.
        assert!(drain_due(&c, 10, ms(300), ms(300)));
        // ...but a row that just came after a quiet spell waits its idle time too.
        assert!(!drain_due(&c, 10, ms(50), ms(300)));
    }

    #[test]
    fn age_tracks_the_oldest_entry() {
        let t0 = Instant::now();
        let mut a = AgeTracker { samples: VecDeque::new() };
        assert_eq!(a.observe(1, None, t0), Duration::ZERO);
        // Entry 1 appears.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(a.observe(2, Some(1), t1), Duration::ZERO);
        // Entries 2, 3 appear later; oldest is still 1, first seen at t1.
        let t2 = t0 + Duration::from_millis(600);
        assert_eq!(a.observe(4, Some(1), t2), Duration::from_millis(500));
        // 1 and 2 drained: entry 3 was first seen at t2.
        let t3 = t0 + Duration::from_millis(900);
        assert_eq!(a.observe(4, Some(3), t3), Duration::from_millis(300));
        assert_eq!(a.observe(4, None, t3), Duration::ZERO);
    }
}
