//! Sensor spool epochs (decision 0036): a sensor whose spool was wiped, or that was
//! reinstalled, numbers its batches from 1 again under a new random spool epoch (a ULID made
//! when the spool was created, carried by the `SpoolReport` every batch holds). The cluster
//! accepts the new epoch explicitly, here in the replicated state: it retires the old epoch
//! with its last sequence number, restarts the sensor's watermark, counts the change and
//! raises `sensor_epoch_changed`. A batch of a retired epoch is a duplicate when it is at or
//! below that epoch's last sequence number, else refused with the reason.
//!
//! Which epoch is newer is decided by time, never by arrival: a batch of an epoch the cluster
//! has not seen begins a new epoch only when that spool was created (the epoch ULID's time)
//! after the sensor's last applied batch was created (its batch id's time; both are the
//! sensor's own clock). So a re-send of a batch applied long ago by a spool the cluster never
//! recorded (older sensors carried the epoch only now and then) is still a duplicate, and an
//! old spool brought back, or a cloned sensor running beside the real one, is refused instead
//! of flapping the watermark. Deterministic: only the state and the command decide.

use super::SensorRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use ulid::Ulid;

/// Retired epochs remembered per sensor (oldest are forgotten first; a batch of a forgotten
/// epoch is still refused by the time rule, as its spool is older than later batches).
pub const MAX_RETIRED_EPOCHS: usize = 16;

/// Default largest forward jump of a sensor's sequence in one batch (`max_seq_jump`
/// in the aggregator's configuration). A sensor skips sequence numbers only for sealed batches its spool evicted
/// and for batches the cluster refused, a few thousand at the very most.
pub const DEFAULT_MAX_SEQ_JUMP: u64 = 65_536;

/// One sensor's current spool epoch and the ones it left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The current spool epoch.
    pub epoch: Ulid,
    /// Sequence number and id of the batch that began it.
    pub started_seq: u64,
    pub started_batch: Ulid,
    /// When that batch was created (its id's time, ms since the Unix epoch, sensor clock).
    pub started_ms: u64,
    /// Batches applied in this epoch.
    pub batches: u64,
    /// How many times the sensor changed epoch (its first recorded epoch is no change).
    pub changes: u64,
    /// Epochs left behind, oldest first (at most [`MAX_RETIRED_EPOCHS`]).
    pub retired: Vec<RetiredEpoch>,
    /// Batches of a retired or older epoch refused (not applied).
    pub stale_refused: u64,
    /// Batches of a retired epoch at or below its last sequence number (acked as duplicates).
    pub stale_duplicates: u64,
    /// Batches refused because their sequence number jumped too far ahead.
    pub jumps_refused: u64,
}

impl EpochRecord {
    /// A record whose current epoch `epoch` began with batch `batch` (sequence `seq`), with
    /// nothing retired or refused yet.
    fn starting(epoch: Ulid, seq: u64, batch: Ulid) -> EpochRecord {
        EpochRecord {
            epoch,
            started_seq: seq,
            started_batch: batch,
            started_ms: ulid_ms(&batch),
            batches: 0,
            changes: 0,
            retired: Vec::new(),
            stale_refused: 0,
            stale_duplicates: 0,
            jumps_refused: 0,
        }
    }

    /// Retired epochs no longer listed because only the last [`MAX_RETIRED_EPOCHS`] are kept.
    /// Every epoch change retires exactly one epoch, so this is the changes beyond the list;
    /// a late batch of a forgotten epoch is refused (never applied twice), not acked.
    pub fn retired_forgotten(&self) -> u64 {
        self.changes.saturating_sub(self.retired.len() as u64)
    }
}

/// An epoch a sensor left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredEpoch {
    /// None when the sensor's batches of that time did not carry their epoch (sensors
    /// before decision 0036, or a sensor first seen by an older aggregator).
    pub epoch: Option<Ulid>,
    /// The watermark it ended with: the highest sequence number applied in it.
    pub last_seq: u64,
    pub last_batch: Ulid,
    /// Batches applied in it (since the cluster recorded it).
    pub batches: u64,
    /// When the batch that began the next epoch was created (ms, sensor clock).
    pub ended_ms: u64,
}

/// Every sensor's epoch record, by sensor id. Only sensors whose epoch the cluster recorded
/// have one: sensors first seen with an epoch, and every sensor once it changed epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorEpochs {
    by_sensor: BTreeMap<String, EpochRecord>,
    /// Epoch changes of all sensors.
    pub changes: u64,
    /// Batches of all sensors refused as of an older epoch, or for a sequence jump.
    pub stale_refused: u64,
    pub jumps_refused: u64,
}

/// How a batch that names its spool epoch relates to its sensor's recorded epochs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpochVerdict {
    /// The sensor's current epoch: the usual watermark rule decides.
    Current,
    /// The cluster has no epoch recorded for this known sensor and the batch's spool is not
    /// newer than its last applied batch: the epoch it has always had, not yet recorded.
    Unrecorded,
    /// Begins an epoch: the sensor's first (`first`: the cluster never applied a batch of
    /// it) or a new one after a wipe or reinstall.
    Begins { first: bool },
    /// A retired epoch's batch at or below that epoch's last sequence number: already
    /// applied (or skipped) in it.
    RetiredDuplicate,
    /// Of a retired or older epoch and not applied in it: refused, with the reason.
    Stale(String),
}

/// Milliseconds since the Unix epoch in a ULID (its creator's clock).
pub fn ulid_ms(id: &Ulid) -> u64 {
    id.timestamp_ms()
}

fn time_text(ms: u64) -> String {
    crate::siem::syslog::rfc3339_ms(ms)
}

impl SensorEpochs {
    pub fn get(&self, sensor_id: &str) -> Option<&EpochRecord> {
        self.by_sensor.get(sensor_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &EpochRecord)> {
        self.by_sensor.iter()
    }

    /// Retired epochs forgotten over all sensors ([`EpochRecord::retired_forgotten`]).
    pub fn retired_forgotten(&self) -> u64 {
        self.by_sensor.values().map(EpochRecord::retired_forgotten).sum()
    }

    /// Judge a batch of `sensor_id` from spool `epoch` with sequence `seq`; `sensor` is its
    /// replicated record, if the cluster applied any of its batches.
    pub fn verdict(&self, sensor_id: &str, sensor: Option<&SensorRecord>, epoch: Ulid, seq: u64) -> EpochVerdict {
        let Some(sensor) = sensor else {
            return EpochVerdict::Begins { first: true };
        };
        let record = self.by_sensor.get(sensor_id);
        if record.is_some_and(|r| r.epoch == epoch) {
            return EpochVerdict::Current;
        }
        if let Some(old) = record.and_then(|r| r.retired.iter().rev().find(|o| o.epoch == Some(epoch))) {
            if seq <= old.last_seq {
                return EpochVerdict::RetiredDuplicate;
            }
            let current = record.map_or(epoch, |r| r.epoch);
            return EpochVerdict::Stale(format!(
                "batch {seq} belongs to spool epoch {epoch}, which sensor {sensor_id} left at batch {} when epoch \
                 {current} began (its batch created {}): the old spool's unsent batches are not taken once a new \
                 epoch has begun (an old spool folder restored, or a second sensor running with this identity?); \
                 see docs/operations.md, \"Reinstalling a sensor\"",
                old.last_seq,
                time_text(old.ended_ms),
            ));
        }
        let created = ulid_ms(&epoch);
        let last = ulid_ms(&sensor.last_batch_id);
        if created > last {
            return EpochVerdict::Begins { first: false };
        }
        match record {
            None => EpochVerdict::Unrecorded,
            Some(r) => EpochVerdict::Stale(format!(
                "batch {seq} belongs to spool epoch {epoch}, created {} — before sensor {sensor_id}'s last applied \
                 batch (created {}, epoch {}): an older spool, or a second sensor running with this identity \
                 (a cloned machine?), not a reinstall; if the sensor's clock was set back, correct it and wipe the \
                 spool again; see docs/operations.md, \"Reinstalling a sensor\"",
                time_text(created),
                time_text(last),
                r.epoch
            )),
        }
    }

    /// Record that the batch `started_batch` (sequence `seq`) of `sensor_id` began `epoch`;
    /// `sensor` is the sensor's record before it (its watermark is the old epoch's end).
    pub fn begin(&mut self, sensor_id: &str, sensor: Option<&SensorRecord>, epoch: Ulid, seq: u64, started: Ulid) {
        let previous = self.by_sensor.remove(sensor_id);
        let mut record = EpochRecord::starting(epoch, seq, started);
        let started_ms = record.started_ms;
        if let Some(sensor) = sensor {
            let (old_epoch, old_batches) = match &previous {
                Some(p) => (Some(p.epoch), p.batches),
                None => (None, sensor.batches_applied),
            };
            if let Some(p) = previous {
                record.changes = p.changes;
                record.retired = p.retired;
                record.stale_refused = p.stale_refused;
                record.stale_duplicates = p.stale_duplicates;
                record.jumps_refused = p.jumps_refused;
            }
            record.retired.push(RetiredEpoch {
                epoch: old_epoch,
                last_seq: sensor.last_seq,
                last_batch: sensor.last_batch_id,
                batches: old_batches,
                ended_ms: started_ms,
            });
            if record.retired.len() > MAX_RETIRED_EPOCHS {
                // Counted: `retired_forgotten` (changes beyond the list), shown by the API,
                // the `sensors` CLI and the `wardline_sensor_epoch_events` metric.
                record.retired.remove(0);
            }
            record.changes = record.changes.saturating_add(1);
            self.changes = self.changes.saturating_add(1);
        }
        self.by_sensor.insert(sensor_id.to_string(), record);
    }

    /// Record `epoch` as the current one of a sensor the cluster knew without it.
    pub fn adopt(&mut self, sensor_id: &str, epoch: Ulid, seq: u64, batch: Ulid) {
        self.by_sensor.entry(sensor_id.to_string()).or_insert_with(|| EpochRecord::starting(epoch, seq, batch));
    }

    /// Count an applied batch in its sensor's current epoch.
    pub fn applied(&mut self, sensor_id: &str) {
        if let Some(r) = self.by_sensor.get_mut(sensor_id) {
            r.batches = r.batches.saturating_add(1);
        }
    }

    pub fn count_stale_duplicate(&mut self, sensor_id: &str) {
        if let Some(r) = self.by_sensor.get_mut(sensor_id) {
            r.stale_duplicates = r.stale_duplicates.saturating_add(1);
        }
    }

    pub fn count_stale_refused(&mut self, sensor_id: &str) {
        self.stale_refused = self.stale_refused.saturating_add(1);
        if let Some(r) = self.by_sensor.get_mut(sensor_id) {
            r.stale_refused = r.stale_refused.saturating_add(1);
        }
    }

    pub fn count_jump_refused(&mut self, sensor_id: &str) {
        self.jumps_refused = self.jumps_refused.saturating_add(1);
        if let Some(r) = self.by_sensor.get_mut(sensor_id) {
            r.jumps_refused = r.jumps_refused.saturating_add(1);
        }
    }
}

/// The reason a batch whose sequence number jumps more than `max_jump` past the watermark is
/// refused.
pub fn jump_reason(sensor_id: &str, watermark: u64, seq: u64, max_jump: u64) -> String {
    format!(
        "batch {seq} of sensor {sensor_id} jumps {} sequence numbers past its watermark {watermark}; at most \
         {max_jump} are accepted (`max_seq_jump` in the aggregator's configuration), so one batch cannot put the watermark out of reach of \
         every later one (decision 0036); a sensor skips numbers only for batches its spool evicted or the cluster \
         refused, far fewer",
        seq.saturating_sub(watermark),
    )
}
