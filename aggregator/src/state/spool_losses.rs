//! What each sensor's spool gave up while it could not deliver (decision 0045): the latest
//! cumulative totals of every spool epoch, and the individual losses, in the replicated state
//! so every node shows the same account (`GET /api/v1/sensors/{id}/losses`, the sensors
//! view, `wardline-aggregator sensor losses`, `wardline_sensor_spool_*` metrics).
//!
//! A sensor attaches a `SpoolReport` to a batch when its totals moved (decision 0022); it is
//! applied with that batch (`Command::ApplyReportedBatches`), so a duplicate batch applies
//! nothing twice. Totals are cumulative per spool epoch: a later report supersedes an earlier
//! one (field by field the larger, so an out-of-order report can never lower them). A loss
//! entry travels again in later reports until a batch carrying it is acknowledged, so entries
//! are deduplicated; the list is bounded per sensor, the oldest dropped and counted.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use ulid::Ulid;
use wardline_common::wire::{SpoolLoss, SpoolLossKind, SpoolReport};

/// Individual losses kept per sensor; older ones remain in the totals only.
pub const MAX_LOSSES_PER_SENSOR: usize = 1024;
/// Spool epochs kept per sensor (a sensor wiped this often is a case for its own alert);
/// the oldest epoch's totals are dropped beyond this and counted.
pub const MAX_EPOCHS_PER_SENSOR: usize = 16;
/// Sensors with a loss account at most (a bound on the replicated state).
pub const MAX_SENSORS: usize = 100_000;

/// Cumulative totals of one spool epoch, as the latest report of it said.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochTotals {
    pub epoch: Ulid,
    /// Whole batches evicted to stay within the spool's byte bound, the events in them,
    /// the flow records among those (detail flows and summary rows) and their traffic bytes.
    pub batches_evicted: u64,
    pub events_evicted: u64,
    pub flows_evicted: u64,
    pub flow_bytes_evicted: u64,
    /// Flow records folded into summaries, and summary rows that replaced them (net).
    pub flows_rolled_up: u64,
    pub rollups_created: u64,
    /// Stored records that failed their checksum or did not decode.
    pub records_quarantined: u64,
    /// Sequence number of the batch that carried the latest report of this epoch.
    pub reported_seq: u64,
}

impl EpochTotals {
    fn supersede(&mut self, r: &SpoolReport, seq: u64) {
        self.batches_evicted = self.batches_evicted.max(r.batches_evicted);
        self.events_evicted = self.events_evicted.max(r.events_evicted);
        self.flows_evicted = self.flows_evicted.max(r.flows_evicted);
        self.flow_bytes_evicted = self.flow_bytes_evicted.max(r.flow_bytes_evicted);
        self.flows_rolled_up = self.flows_rolled_up.max(r.flows_rolled_up);
        self.rollups_created = self.rollups_created.max(r.rollups_created);
        self.records_quarantined = self.records_quarantined.max(r.records_quarantined);
        self.reported_seq = self.reported_seq.max(seq);
    }
}

/// One lost batch (or quarantined record) as a sensor reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedLoss {
    pub epoch: Ulid,
    /// Sequence number of the batch whose report first carried it.
    pub reported_seq: u64,
    pub loss: SpoolLoss,
}

/// One sensor's account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorLosses {
    /// Totals per spool epoch, in the order the epochs were first reported.
    pub epochs: Vec<EpochTotals>,
    /// Epochs dropped beyond [`MAX_EPOCHS_PER_SENSOR`] (their totals are gone).
    pub epochs_dropped: u64,
    /// Individual losses, oldest first.
    pub losses: VecDeque<RecordedLoss>,
    /// Losses dropped beyond [`MAX_LOSSES_PER_SENSOR`] (still in the totals).
    pub losses_dropped: u64,
    /// Reports applied.
    pub reports: u64,
}

impl SensorLosses {
    /// Sum over the epochs kept: what this sensor's spools gave up in all.
    pub fn total(&self) -> EpochTotals {
        self.epochs.iter().fold(EpochTotals::default(), |t, e| EpochTotals {
            epoch: e.epoch,
            batches_evicted: t.batches_evicted + e.batches_evicted,
            events_evicted: t.events_evicted + e.events_evicted,
            flows_evicted: t.flows_evicted + e.flows_evicted,
            flow_bytes_evicted: t.flow_bytes_evicted.saturating_add(e.flow_bytes_evicted),
            flows_rolled_up: t.flows_rolled_up + e.flows_rolled_up,
            rollups_created: t.rollups_created + e.rollups_created,
            records_quarantined: t.records_quarantined + e.records_quarantined,
            reported_seq: t.reported_seq.max(e.reported_seq),
        })
    }

    fn note(&mut self, seq: u64, report: &SpoolReport) {
        self.reports += 1;
        let at = match self.epochs.iter().position(|e| e.epoch == report.spool_epoch) {
            Some(i) => i,
            None => {
                if self.epochs.len() >= MAX_EPOCHS_PER_SENSOR {
                    self.epochs.remove(0);
                    self.epochs_dropped += 1;
                }
                self.epochs.push(EpochTotals { epoch: report.spool_epoch, ..EpochTotals::default() });
                self.epochs.len() - 1
            }
        };
        self.epochs[at].supersede(report, seq);
        for loss in &report.losses {
            // Re-sent until acknowledged: known entries are skipped. A quarantined record too
            // damaged to name has no id; those are told apart by the totals only.
            let known = loss.kind != SpoolLossKind::Quarantined || loss.seq.is_some();
            if known && self.losses.iter().any(|l| l.epoch == report.spool_epoch && same_loss(&l.loss, loss)) {
                continue;
            }
            if self.losses.len() >= MAX_LOSSES_PER_SENSOR {
                self.losses.pop_front();
                self.losses_dropped += 1;
            }
            self.losses.push_back(RecordedLoss { epoch: report.spool_epoch, reported_seq: seq, loss: loss.clone() });
        }
    }
}

fn same_loss(a: &SpoolLoss, b: &SpoolLoss) -> bool {
    a.batch_id == b.batch_id && a.seq == b.seq && a.kind == b.kind
}

/// Every sensor's account, by sensor id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolLosses {
    by_sensor: BTreeMap<String, SensorLosses>,
    /// Reports of sensors beyond [`MAX_SENSORS`], not kept.
    pub sensors_dropped: u64,
}

impl SpoolLosses {
    /// Apply the report an applied batch `seq` of `sensor` carried.
    pub fn note(&mut self, sensor: &str, seq: u64, report: &SpoolReport) {
        if !self.by_sensor.contains_key(sensor) && self.by_sensor.len() >= MAX_SENSORS {
            self.sensors_dropped += 1;
            return;
        }
        self.by_sensor.entry(sensor.to_string()).or_default().note(seq, report);
    }

    pub fn of(&self, sensor: &str) -> Option<&SensorLosses> {
        self.by_sensor.get(sensor)
    }

    pub fn sensors(&self) -> &BTreeMap<String, SensorLosses> {
        &self.by_sensor
    }

    pub fn is_empty(&self) -> bool {
        self.by_sensor.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(n: u8, kind: SpoolLossKind) -> SpoolLoss {
        SpoolLoss {
            batch_id: Ulid::from_parts(1, u128::from(n)),
            seq: None,
            kind,
            events: 10,
            flows: 10,
            flow_bytes: 1000,
            first_seen_us: 1,
            last_seen_us: 2,
        }
    }

    fn report(epoch: Ulid, evicted: u64, losses: Vec<SpoolLoss>) -> SpoolReport {
        SpoolReport {
            spool_epoch: epoch,
            batches_evicted: evicted,
            flows_evicted: evicted * 10,
            flow_bytes_evicted: evicted * 1000,
            losses,
            ..SpoolReport::default()
        }
    }

    #[test]
    fn totals_supersede_per_epoch_and_repeated_losses_count_once() {
        let (e1, e2) = (Ulid::from_parts(5, 1), Ulid::from_parts(6, 2));
        let mut s = SpoolLosses::default();
        let k = SpoolLossKind::EvictedFlowSummaries;
        s.note("s1", 3, &report(e1, 2, vec![loss(1, k), loss(2, k)]));
        // Sealed before the first carrier was acknowledged: the same two again, and a third.
        s.note("s1", 4, &report(e1, 3, vec![loss(1, k), loss(2, k), loss(3, k)]));
        // An older report applied late never lowers the totals.
        s.note("s1", 5, &report(e1, 1, vec![]));
        // A wiped sensor: a new epoch, counted apart.
        s.note("s1", 1, &report(e2, 1, vec![loss(9, SpoolLossKind::EvictedFlowDetail)]));
        let a = s.of("s1").unwrap();
        assert_eq!(a.epochs.len(), 2);
        assert_eq!(
            (a.epochs[0].batches_evicted, a.epochs[0].flow_bytes_evicted, a.epochs[0].reported_seq),
            (3, 3000, 5)
        );
        assert_eq!(a.total().batches_evicted, 4);
        assert_eq!(a.losses.len(), 4, "each loss once");
        assert_eq!(a.losses.iter().map(|l| l.loss.flows).sum::<u64>(), a.total().flows_evicted);
        assert_eq!(a.reports, 4);
    }

    /// Through the state machine: a report is kept when its batch is applied, not again
    /// for a duplicate, and it is part of the snapshot.
    #[test]
    fn reports_are_kept_with_their_batch_once_and_travel_in_snapshots() {
        use crate::state::{BatchSpoolReport, BatchSummary, ClusterState, Command, IngestBatch};
        let batch = |seq: u64| IngestBatch {
            summary: BatchSummary::empty(Ulid::from_parts(seq, 7), "s1".into(), "north".into(), seq),
            flows: Vec::new(),
        };
        let epoch = Ulid::from_parts(5, 1);
        let k = SpoolLossKind::EvictedFlowSummaries;
        let cmd = Command::ApplyReportedBatches {
            batches: vec![batch(1), batch(2)],
            reports: vec![BatchSpoolReport { index: 1, report: report(epoch, 2, vec![loss(1, k), loss(2, k)]) }],
        };
        let mut st = ClusterState::new();
        let r = st.apply(&cmd);
        assert_eq!(r.batches, vec![true, true]);
        let a = st.spool_losses().of("s1").unwrap().clone();
        assert_eq!((a.reports, a.total().batches_evicted, a.losses.len(), a.epochs[0].reported_seq), (1, 2, 2, 2));
        // Re-sent (its ack was lost): duplicates, nothing kept twice.
        assert_eq!(st.apply(&cmd).batches, vec![false, false]);
        assert_eq!(st.spool_losses().of("s1"), Some(&a));
        let bytes = bincode::serde::encode_to_vec(&st, bincode::config::standard()).unwrap();
        let (back, _): (ClusterState, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back.spool_losses(), st.spool_losses());
        assert_eq!(back, st);
    }

    #[test]
    fn bounded_losses_and_epochs_count_what_they_drop() {
        let mut s = SpoolLosses::default();
        let epoch = Ulid::from_parts(5, 1);
        for i in 0..(MAX_LOSSES_PER_SENSOR as u64 + 10) {
            let mut l = loss(0, SpoolLossKind::EvictedFlowDetail);
            l.batch_id = Ulid::from_parts(2, u128::from(i));
            s.note("s1", i + 1, &report(epoch, i + 1, vec![l]));
        }
        let a = s.of("s1").unwrap();
        assert_eq!((a.losses.len(), a.losses_dropped), (MAX_LOSSES_PER_SENSOR, 10));
        assert_eq!(a.losses.back().unwrap().loss.batch_id, Ulid::from_parts(2, MAX_LOSSES_PER_SENSOR as u128 + 9));
        for i in 0..(MAX_EPOCHS_PER_SENSOR as u128 + 3) {
            s.note("s2", 1, &report(Ulid::from_parts(9, i), 1, vec![]));
        }
        let b = s.of("s2").unwrap();
        assert_eq!((b.epochs.len(), b.epochs_dropped), (MAX_EPOCHS_PER_SENSOR, 3));
    }
}
