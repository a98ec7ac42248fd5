//! Sensor spool epochs in the replicated state (decision 0036).

use super::epochs::{EpochVerdict, DEFAULT_MAX_SEQ_JUMP};
use super::*;
use wardline_common::{Evidence, Proto};

const T0: u64 = 1_800_000_000_000;

fn mac(last: u8) -> MacAddr {
    MacAddr([0x00, 0x1a, 0x2b, 0x3c, 0x4d, last])
}

/// A batch `seq` of sensor `s1` created at `ms` (its id's time) with one device sighting.
fn batch(seq: u64, ms: u64) -> IngestBatch {
    let mut summary = BatchSummary::empty(Ulid::from_parts(ms, u128::from(seq) + 77), "s1".into(), "north".into(), seq);
    summary.devices.push(DeviceObservation {
        mac: mac(seq as u8),
        ips: vec![],
        vlans: vec![],
        first_seen_us: ms * 1000,
        last_seen_us: ms * 1000,
        packets: 1,
        bytes: 100,
        evidence: vec![Evidence::new(Field::Hostname, "h", Proto::Dhcp, ms * 1000)],
    });
    summary.flow_count = 1;
    IngestBatch { summary, flows: vec![] }
}

fn epoch_at(ms: u64) -> Ulid {
    Ulid::from_parts(ms, 4242)
}

fn with_epoch(st: &mut ClusterState, epoch: Ulid, batches: Vec<IngestBatch>) -> ApplyResponse {
    let batches = batches.into_iter().map(|batch| EpochBatch { epoch, batch, report: None }).collect();
    st.apply(&Command::ApplyEpochBatches { max_seq_jump: DEFAULT_MAX_SEQ_JUMP, batches })
}

fn legacy(st: &mut ClusterState, batches: Vec<IngestBatch>) -> ApplyResponse {
    st.apply(&Command::ApplyBatches(batches))
}

/// A sensor of before decision 0036 delivered 1..=50 (created T0+1..); its spool epoch was
/// made at T0 and never recorded.
fn old_fleet() -> ClusterState {
    let mut st = ClusterState::new();
    let r = legacy(&mut st, (1..=50).map(|seq| batch(seq, T0 + seq)).collect());
    assert!(r.batches.iter().all(|a| *a));
    assert_eq!(st.watermark("s1"), 50);
    st
}

fn verdict(st: &ClusterState, epoch: Ulid, seq: u64, ms: u64) -> IngestVerdict {
    st.ingest_verdict("s1", Some(epoch), seq, &batch(seq, ms).summary.batch_id, DEFAULT_MAX_SEQ_JUMP)
}

#[test]
fn a_wiped_sensor_begins_a_new_epoch_and_everything_after_is_applied_once() {
    let mut st = old_fleet();
    let old = epoch_at(T0);
    // A re-send of an applied batch by the same (unrecorded) spool is still a duplicate.
    assert_eq!(verdict(&st, old, 20, T0 + 20), IngestVerdict::Duplicate);
    assert_eq!(st.epochs().verdict("s1", st.sensors().get("s1"), old, 20), EpochVerdict::Unrecorded);
    // Wiped at T0+1000: a new spool, numbering from 1 again.
    let new = epoch_at(T0 + 1_000);
    assert_eq!(verdict(&st, new, 1, T0 + 1_001), IngestVerdict::Propose { with_epoch: true, begins_epoch: true });
    let r = with_epoch(&mut st, new, (1..=5).map(|seq| batch(seq, T0 + 1_000 + seq)).collect());
    assert_eq!(r.batches, [true; 5], "{r:?}");
    assert!(r.refused.is_empty());
    assert_eq!(st.watermark("s1"), 5, "the watermark restarted in the new epoch");
    assert_eq!(st.sensors()["s1"].batches_applied, 55);
    assert_eq!(st.sensors()["s1"].seq_gaps, 0, "1 after a restart is no gap");
    let rec = st.epochs().get("s1").unwrap();
    assert_eq!((rec.epoch, rec.started_seq, rec.changes, rec.batches), (new, 1, 1, 5));
    assert_eq!(rec.started_ms, T0 + 1_001);
    let left = &rec.retired[..];
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].epoch, left[0].last_seq, left[0].batches, left[0].ended_ms), (None, 50, 50, T0 + 1_001));
    assert_eq!(st.epochs().changes, 1);
    // Re-sent: duplicates, nothing applied twice.
    let again = with_epoch(&mut st, new, (1..=5).map(|seq| batch(seq, T0 + 1_000 + seq)).collect());
    assert_eq!(again.batches, [false; 5]);
    assert!(again.refused.is_empty());
    assert_eq!(st.sensors()["s1"].batches_applied, 55);
    // Operators are told: one alert, naming both epochs' ends.
    let alerts: Vec<_> =
        st.alerts().alerts().values().filter(|a| a.kind == alerts::AlertKind::SensorEpochChanged).collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].device.as_str(), alerts[0].target.clone()), ("s1", new.to_string()));
}

#[test]
fn batches_of_a_retired_epoch_are_duplicates_or_refused_never_applied() {
    let mut st = old_fleet();
    let e1 = epoch_at(T0 + 1_000);
    with_epoch(&mut st, e1, (1..=30).map(|seq| batch(seq, T0 + 1_000 + seq)).collect());
    let e2 = epoch_at(T0 + 5_000);
    assert_eq!(with_epoch(&mut st, e2, vec![batch(1, T0 + 5_001)]).batches, [true]);
    let applied = st.sensors()["s1"].batches_applied;
    // e1's batch 30 arrives late (it was applied): a duplicate. Its 31, never applied: refused.
    let late = with_epoch(&mut st, e1, vec![batch(30, T0 + 1_030), batch(31, T0 + 1_031)]);
    assert_eq!(late.batches, [false, false]);
    assert_eq!(late.refused.len(), 1);
    assert_eq!((late.refused[0].index, late.refused[0].retry), (1, false));
    assert!(late.refused[0].reason.contains("left at batch 30"), "{}", late.refused[0].reason);
    assert_eq!(st.sensors()["s1"].batches_applied, applied);
    assert_eq!(st.watermark("s1"), 1, "the current epoch's watermark did not move");
    let rec = st.epochs().get("s1").unwrap();
    assert_eq!((rec.changes, rec.stale_duplicates, rec.stale_refused), (2, 1, 1));
    assert_eq!(rec.retired.iter().map(|r| (r.epoch, r.last_seq)).collect::<Vec<_>>(), [(None, 50), (Some(e1), 30)]);
    // A spool older than the sensor's last applied batch (restored, or a clone) is refused.
    let older = epoch_at(T0 + 2_000);
    match verdict(&st, older, 7, T0 + 2_007) {
        IngestVerdict::Refuse(reason) => assert!(reason.contains("before sensor s1's last applied batch"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let r = with_epoch(&mut st, older, vec![batch(7, T0 + 2_007)]);
    assert_eq!((r.batches.as_slice(), r.refused.len()), (&[false][..], 1));
    assert_eq!(st.epochs().get("s1").unwrap().epoch, e2, "no flapping back");
}

#[test]
fn retired_epochs_beyond_the_list_are_counted_and_their_late_batches_refused() {
    let mut st = old_fleet();
    // Wiped 18 times: 18 epoch changes, only the last 16 retired epochs listed.
    let epochs: Vec<Ulid> = (1..=18u64).map(|i| epoch_at(T0 + i * 1_000)).collect();
    for (i, e) in epochs.iter().enumerate() {
        let ms = T0 + (i as u64 + 1) * 1_000;
        assert_eq!(with_epoch(&mut st, *e, vec![batch(1, ms + 1), batch(2, ms + 2)]).batches, [true, true]);
    }
    let rec = st.epochs().get("s1").unwrap();
    assert_eq!((rec.changes, rec.retired.len()), (18, epochs::MAX_RETIRED_EPOCHS));
    assert_eq!(rec.retired_forgotten(), 2);
    assert_eq!(st.epochs().retired_forgotten(), 2);
    // The oldest listed is the second wipe's epoch: the legacy one and the first are forgotten.
    assert_eq!(rec.retired[0].epoch, Some(epochs[1]));
    // A late batch of a forgotten epoch is not applied again (it was applied once).
    let applied = st.sensors()["s1"].batches_applied;
    let late = with_epoch(&mut st, epochs[0], vec![batch(2, T0 + 1_002)]);
    assert_eq!((late.batches.as_slice(), late.refused.len()), (&[false][..], 1), "{late:?}");
    assert_eq!(st.sensors()["s1"].batches_applied, applied);
}

#[test]
fn sequence_jumps_are_bounded_and_u64_max_cannot_blackhole_a_sensor() {
    let mut st = ClusterState::new();
    let e = epoch_at(T0);
    assert_eq!(with_epoch(&mut st, e, vec![batch(1, T0 + 1)]).batches, [true]);
    let rec = st.epochs().get("s1").unwrap();
    assert_eq!((rec.changes, rec.retired.len()), (0, 0), "a new sensor's first epoch is no change");
    assert!(st.alerts().alerts().is_empty());
    let r = with_epoch(&mut st, e, vec![batch(u64::MAX, T0 + 2), batch(2 + DEFAULT_MAX_SEQ_JUMP, T0 + 3)]);
    assert_eq!(r.batches, [false, false]);
    assert_eq!(r.refused.iter().map(|x| x.index).collect::<Vec<_>>(), [0, 1]);
    assert!(r.refused[0].reason.contains("max_seq_jump"), "{}", r.refused[0].reason);
    assert_eq!(st.watermark("s1"), 1);
    // A jump within the bound is taken and counted as a gap.
    assert_eq!(with_epoch(&mut st, e, vec![batch(1 + DEFAULT_MAX_SEQ_JUMP, T0 + 4)]).batches, [true]);
    assert_eq!((st.sensors()["s1"].seq_gaps, st.sensors()["s1"].seqs_skipped), (1, DEFAULT_MAX_SEQ_JUMP - 1));
    assert_eq!(st.epochs().get("s1").unwrap().jumps_refused, 2);
    assert_eq!(st.epochs().jumps_refused, 2);
    // The proposer's bound travels in the command: a tighter one refuses what this one took.
    let tight = Command::ApplyEpochBatches {
        max_seq_jump: 10,
        batches: vec![EpochBatch { epoch: e, batch: batch(DEFAULT_MAX_SEQ_JUMP + 20, T0 + 5), report: None }],
    };
    assert_eq!(st.apply(&tight).batches, [false]);
    // Ingest refuses the same for an unrecorded sensor before proposing anything.
    let legacy_state = old_fleet();
    let id = batch(u64::MAX, T0 + 60).summary.batch_id;
    assert!(matches!(legacy_state.ingest_verdict("s1", None, u64::MAX, &id, 1000), IngestVerdict::Refuse(_)));
}

#[test]
fn a_recorded_sensor_needs_its_epoch_on_every_batch() {
    let mut st = ClusterState::new();
    with_epoch(&mut st, epoch_at(T0), vec![batch(1, T0 + 1)]);
    // Proposed without it (a node that had not applied the record): retried, not applied.
    let r = legacy(&mut st, vec![batch(2, T0 + 2)]);
    assert_eq!(r.batches, [false]);
    assert!(r.refused[0].retry, "{r:?}");
    assert_eq!(st.watermark("s1"), 1);
    // A batch without an epoch at all (a downgraded sensor) is refused with the reason.
    let id = batch(2, T0 + 2).summary.batch_id;
    match st.ingest_verdict("s1", None, 2, &id, DEFAULT_MAX_SEQ_JUMP) {
        IngestVerdict::Refuse(reason) => assert!(reason.contains("upgrade the sensor"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn epochs_are_deterministic_and_survive_a_snapshot() {
    let commands = {
        let e1 = epoch_at(T0 + 1_000);
        let e2 = epoch_at(T0 + 9_000);
        let eb = |epoch, seqs: std::ops::RangeInclusive<u64>, base: u64| Command::ApplyEpochBatches {
            max_seq_jump: 100,
            batches: seqs.map(|seq| EpochBatch { epoch, batch: batch(seq, base + seq), report: None }).collect(),
        };
        vec![
            Command::ApplyBatches((1..=10).map(|seq| batch(seq, T0 + seq)).collect()),
            eb(e1, 1..=4, T0 + 1_000),
            eb(e1, 3..=6, T0 + 1_000),
            eb(e2, 1..=2, T0 + 9_000),
            eb(e1, 5..=8, T0 + 1_000),
            eb(e2, 500..=500, T0 + 9_500),
        ]
    };
    let mut a = ClusterState::new();
    let mut b = ClusterState::new();
    let ra: Vec<_> = commands.iter().map(|c| a.apply(c)).collect();
    let rb: Vec<_> = commands.iter().map(|c| b.apply(c)).collect();
    assert_eq!(ra, rb);
    assert_eq!(a, b);
    let rec = a.epochs().get("s1").unwrap();
    assert_eq!((rec.changes, rec.batches, rec.stale_duplicates, rec.stale_refused, rec.jumps_refused), (2, 2, 2, 2, 1));
    let bytes = bincode::serde::encode_to_vec(&a, bincode::config::standard()).unwrap();
    let (back, _): (ClusterState, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!(back, a);
    let json: epochs::SensorEpochs = serde_json::from_str(&serde_json::to_string(a.epochs()).unwrap()).unwrap();
    assert_eq!(&json, a.epochs());
}
