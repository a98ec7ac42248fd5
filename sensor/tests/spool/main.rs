//! The spool's byte bound, priorities, roll-up, eviction accounting, checksums and crash
//! safety (decision 0022). Crash tests re-run this test binary as a child that aborts at a
//! spool crash point (`WARDLINE_FAULT`), like kill -9, then check the reopened spool.

use std::net::IpAddr;
use std::process::Command;
use wardline_common::wire::{encode_frame, Batch, SpoolLossKind, SpoolReport};
use wardline_common::{DeviceObservation, Event, FlowRecord, MacAddr, SensorStats};
use wardline_sensor::spool::{record, Class, Spool, BATCH_TREE, QUEUED_TREE, SEAL_AHEAD};

fn device(n: u8) -> Event {
    Event::Device(DeviceObservation {
        mac: MacAddr([0x00, 0x1a, 0x2b, 0, 0, n]),
        ips: vec![IpAddr::from([10, 0, 0, n])],
        vlans: vec![20],
        first_seen_us: 1,
        last_seen_us: 2,
        packets: 3,
        bytes: 300,
        evidence: vec![],
    })
}

/// Flow `n` of a small set of conversations (`pairs` device pairs), with traffic `bytes`.
fn flow(n: u32, pairs: u32, bytes: u64) -> Event {
    let pair = (n % pairs) as u8;
    Event::Flow(FlowRecord {
        ip_proto: 6,
        vlan: None,
        a_mac: MacAddr([2, 0, 0, 0, 1, pair]),
        b_mac: MacAddr([2, 0, 0, 0, 2, pair]),
        a_ip: IpAddr::from([10, 0, 1, pair]),
        b_ip: IpAddr::from([10, 0, 2, pair]),
        a_port: 40000 + (n % 20000) as u16,
        b_port: 104,
        first_seen_us: 1_700_000_000_000_000 + u64::from(n) * 1000,
        last_seen_us: 1_700_000_000_000_000 + u64::from(n) * 1000 + 500,
        packets_ab: 5,
        packets_ba: 4,
        bytes_ab: bytes,
        bytes_ba: 0,
        tcp_flags_ab: 0x1b,
        tcp_flags_ba: 0x12,
        app: "dicom".into(),
        end_reason: "fin".into(),
    })
}

fn flows(from: u32, k: u32, pairs: u32, bytes: u64) -> Vec<Event> {
    (from..from + k).map(|n| flow(n, pairs, bytes)).collect()
}

/// Flows `from..from + k`, each a conversation of its own (its own server port), so
/// roll-up cannot merge them and the bound must evict (decision 0045: summaries of one
/// device pair, app, server port and hour merge, whatever batch they came from).
fn distinct_flows(from: u32, k: u32, bytes: u64) -> Vec<Event> {
    let mut ev = flows(from, k, 256, bytes);
    for (e, n) in ev.iter_mut().zip(from..) {
        if let Event::Flow(f) = e {
            f.b_port = 1000 + (n % 60_000) as u16;
        }
    }
    ev
}

/// Traffic bytes and packets of the flows (detail and summaries) in these batches.
fn traffic(batches: &[Batch]) -> (u64, u64) {
    batches
        .iter()
        .flat_map(|b| b.flows())
        .fold((0, 0), |(by, p), f| (by + f.bytes_ab + f.bytes_ba, p + f.packets_ab + f.packets_ba))
}

/// The batch's spool report, which every sealed batch carries to name its epoch (decision
/// 0036).
fn any_report_of(b: &Batch) -> Option<&SpoolReport> {
    b.events.iter().find_map(|e| match e {
        Event::SpoolReport(r) => Some(r),
        _ => None,
    })
}

/// The batch's spool report when it carries loss entries (the other batches' reports hold
/// the totals only, to name the epoch).
fn report_of(b: &Batch) -> Option<&SpoolReport> {
    any_report_of(b).filter(|r| !r.losses.is_empty())
}

#[test]
fn every_sealed_batch_names_its_spool_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let epoch = {
        let spool = Spool::open(dir.path(), 1 << 30).unwrap();
        let epoch = spool.epoch();
        for i in 0..3u8 {
            let b = spool.push(vec![device(i)], "s1", "north").unwrap();
            let r = any_report_of(&b).expect("a sealed batch names its epoch");
            assert_eq!((r.spool_epoch, r.losses.len()), (epoch, 0));
        }
        for i in 0..40u32 {
            spool.push(flows(i * 50, 50, 1_000_000, 7), "s1", "north").unwrap();
        }
        for b in spool.next_batches(usize::MAX).unwrap() {
            assert!(b.seq > 0);
            assert_eq!(any_report_of(&b).map(|r| r.spool_epoch), Some(epoch), "batch {}", b.seq);
            assert_eq!(b.events.iter().filter(|e| matches!(e, Event::SpoolReport(_))).count(), 1);
        }
        epoch
    };
    // Reopened: the same epoch; wiped: a new one, numbering from 1 again.
    assert_eq!(Spool::open(dir.path(), 1 << 30).unwrap().epoch(), epoch);
    let wiped = tempfile::tempdir().unwrap();
    let spool = Spool::open(wiped.path(), 1 << 30).unwrap();
    let b = spool.push(vec![device(9)], "s1", "north").unwrap();
    assert_eq!(b.seq, 1);
    let r = any_report_of(&b).unwrap();
    assert_ne!(r.spool_epoch, epoch);
    assert!(r.spool_epoch.timestamp_ms() >= epoch.timestamp_ms(), "a later spool's epoch is later in time");
}

#[test]
fn one_bound_over_everything_with_exact_accounting() {
    let dir = tempfile::tempdir().unwrap();
    let max = 40_000u64;
    let spool = Spool::open(dir.path(), max).unwrap();
    let (mut pushed_bytes, mut pushed_packets) = (0u64, 0u64);
    for i in 0..60u32 {
        // Every conversation distinct: roll-up cannot shrink these, eviction must.
        let ev = distinct_flows(i * 50, 50, 100 + u64::from(i));
        pushed_bytes += 50 * (100 + u64::from(i));
        pushed_packets += 50 * 9;
        spool.push(ev, "s1", "north").unwrap();
        spool.push(vec![device(i as u8)], "s1", "north").unwrap();
        assert!(spool.bytes() <= max, "bound holds after push {i}: {} > {max}", spool.bytes());
    }
    let st = spool.stats().unwrap();
    assert!(st.dropped_batches > 0, "the bound forced evictions");
    let all = spool.next_batches(usize::MAX).unwrap();
    let (bytes, packets) = traffic(&all);
    // Nothing vanished unaccounted: what is here plus what was evicted is what was pushed.
    assert_eq!(bytes + st.flow_bytes_evicted, pushed_bytes);
    let evicted_packets = pushed_packets - packets;
    assert_eq!(evicted_packets % 9, 0);
    assert_eq!(st.flows_evicted, evicted_packets / 9, "every evicted flow counted once");
    // Flow detail went first: all 60 inventory batches are still here.
    assert_eq!(all.iter().filter(|b| b.devices().count() > 0).count(), 60);
    drop(spool);
    // Sealing attached a report with every loss entry, which may put the spool over this
    // small bound; reopened under the same bound it would evict more (counted), so the
    // persisted totals are compared under a bound it fits.
    let spool = Spool::open(dir.path(), u64::MAX).unwrap();
    let again = spool.stats().unwrap();
    assert_eq!((again.dropped_batches, again.flow_bytes_evicted), (st.dropped_batches, st.flow_bytes_evicted));
    assert_eq!(again.epoch, st.epoch, "the epoch belongs to the spool, not the process");
}

#[test]
fn inventory_is_evicted_only_when_nothing_else_is_left_and_still_counted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 4_000).unwrap();
    for i in 0..200u8 {
        spool.push(vec![device(i); 3], "s1", "north").unwrap();
        assert!(spool.bytes() <= 4_000);
    }
    let st = spool.stats().unwrap();
    assert!(st.dropped_batches > 0);
    assert_eq!(st.dropped_batches + st.pending_batches, 200, "each batch is here or counted as evicted");
    // The oldest queued went first; the sealed head (possibly in flight) is evicted last.
    let kept = spool.next_batches(usize::MAX).unwrap();
    let mut macs: Vec<u8> = kept.iter().flat_map(|b| b.devices()).map(|d| d.mac.0[5]).collect();
    macs.dedup();
    let head: Vec<u8> = (0..SEAL_AHEAD as u8).collect();
    assert_eq!(&macs[..head.len()], &head[..]);
    let newest = &macs[head.len()..];
    let expected: Vec<u8> = (200 - newest.len() as u8..200).collect();
    assert_eq!(newest, &expected[..], "the newest queued batches are the ones kept");
}

#[test]
fn backlog_is_sent_by_priority_then_age_with_ascending_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let mut pushed = Vec::new();
    for i in 0..(SEAL_AHEAD as u32 + 10) {
        pushed.push(spool.push(flows(i * 10, 10, 1000, 10), "s1", "north").unwrap());
    }
    let dev = spool.push(vec![device(7)], "s1", "north").unwrap();
    assert_eq!(dev.seq, 0, "behind a backlog a new batch is queued without a seq");
    let order = spool.next_batches(usize::MAX).unwrap();
    let seqs: Vec<u64> = order.iter().map(|b| b.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "seqs ascend without holes: {seqs:?}");
    let pos = order.iter().position(|b| b.id == dev.id).unwrap();
    assert_eq!(pos, SEAL_AHEAD as usize, "the device batch goes right after the already-sealed head");
    // Age within a class: flow batches keep their push order.
    let flow_ids: Vec<_> = order.iter().filter(|b| b.id != dev.id).map(|b| b.id).collect();
    assert_eq!(flow_ids, pushed.iter().map(|b| b.id).collect::<Vec<_>>());
    // Sealing is durable: the same seqs and ids after a reopen.
    drop(spool);
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    assert_eq!(spool.next_batches(usize::MAX).unwrap(), order);
}

#[test]
fn a_sender_pages_through_the_backlog_after_what_it_holds_and_gets_every_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let total = SEAL_AHEAD as u32 + 40;
    for i in 0..total {
        spool.push(flows(i * 10, 10, 1000, 10), "s1", "north").unwrap();
    }
    // Windows of 7 after the last seq held, as the uplink's refill asks; every other window
    // is acked and removed before the next read, as replies come back meanwhile.
    let (mut after, mut seen, mut round) = (0u64, Vec::new(), 0);
    loop {
        let window = spool.next_batches_after(after, 7).unwrap();
        if window.is_empty() {
            break;
        }
        assert!(window.len() <= 7);
        assert!(window.iter().all(|b| b.seq > after), "nothing at or before {after}");
        after = window.last().unwrap().seq;
        let seqs: Vec<u64> = window.iter().map(|b| b.seq).collect();
        if round % 2 == 0 {
            assert_eq!(spool.try_remove_acked(&seqs).unwrap().unwrap(), seqs.len());
        }
        seen.extend(seqs);
        round += 1;
    }
    assert_eq!(seen, (1..=u64::from(total)).collect::<Vec<_>>(), "each batch once, in seq order");
    // What was not removed is still there from the start; nothing comes after the last seq.
    let left = spool.next_batches(usize::MAX).unwrap();
    assert!(!left.is_empty() && left.len() < total as usize);
    assert!(spool.next_batches_after(u64::MAX, 10).unwrap().is_empty());
    assert!(spool.next_batches_after(after, 10).unwrap().is_empty());
    // Removal without its own flush still survives a clean reopen.
    drop(spool);
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    assert_eq!(spool.next_batches(usize::MAX).unwrap(), left);
}

#[test]
fn pressure_rolls_flow_detail_up_so_the_map_survives() {
    let dir = tempfile::tempdir().unwrap();
    let max = 60_000u64;
    let spool = Spool::open(dir.path(), max).unwrap();
    let mut pushed_bytes = 0;
    // Fill the sealed head first so the rest is queued (roll-up works on queued detail).
    for i in 0..SEAL_AHEAD as u32 {
        spool.push(vec![device(i as u8)], "s1", "north").unwrap();
    }
    for i in 0..80u32 {
        // Eight conversations, many flows each: roll-up condenses them well.
        spool.push(flows(i * 40, 40, 8, 1000), "s1", "north").unwrap();
        pushed_bytes += 40 * 1000;
        assert!(spool.bytes() <= max);
    }
    let st = spool.stats().unwrap();
    assert!(st.flows_rolled_up > 0 && st.rollups_created > 0, "{st:?}");
    assert_eq!(st.dropped_batches, 0, "roll-up alone made room: {st:?}");
    let all = spool.next_batches(usize::MAX).unwrap();
    assert_eq!(traffic(&all).0, pushed_bytes, "roll-up keeps every byte");
    let summaries: Vec<&FlowRecord> = all.iter().flat_map(|b| b.flows()).filter(|f| f.end_reason == "rollup").collect();
    assert!(!summaries.is_empty());
    let mut pairs: Vec<_> = all.iter().flat_map(|b| b.flows()).map(|f| (f.a_ip, f.b_ip, f.b_port)).collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 8, "every conversation of the map is still there");
    for s in summaries {
        assert_eq!(s.a_port, 0);
        assert_eq!(s.app, "dicom");
        assert!(s.last_seen_us >= s.first_seen_us);
    }
}

#[test]
fn summaries_merge_into_one_row_per_key_and_hour_and_the_newest_detail_is_kept() {
    const HOUR_US: u64 = 3_600_000_000;
    let dir = tempfile::tempdir().unwrap();
    let max = 60_000u64;
    let spool = Spool::open(dir.path(), max).unwrap();
    for i in 0..SEAL_AHEAD as u32 {
        spool.push(vec![device(i as u8)], "s1", "north").unwrap();
    }
    let (mut pushed_bytes, mut pushed_flows, mut newest) = (0u64, 0u64, None);
    for i in 0..200u32 {
        // Eight conversations, 50 batches an hour over four hours.
        let mut ev = flows(i * 40, 40, 8, 1000);
        for e in &mut ev {
            if let Event::Flow(f) = e {
                f.first_seen_us += u64::from(i / 50) * HOUR_US;
                f.last_seen_us += u64::from(i / 50) * HOUR_US;
            }
        }
        pushed_bytes += 40 * 1000;
        pushed_flows += 40;
        newest = Some(spool.push(ev, "s1", "north").unwrap().id);
        assert!(spool.bytes() <= max);
    }
    let st = spool.stats().unwrap();
    assert_eq!(st.dropped_batches, 0, "roll-up alone made room: {st:?}");
    let all = spool.next_batches(usize::MAX).unwrap();
    assert_eq!(traffic(&all).0, pushed_bytes, "roll-up keeps every byte");
    assert!(all.iter().any(|b| Some(b.id) == newest), "the newest detail is still detail");
    let rows: Vec<&FlowRecord> = all.iter().flat_map(|b| b.flows()).collect();
    assert_eq!(rows.len() as u64, pushed_flows - st.flows_rolled_up + st.rollups_created, "{st:?}");
    let mut keys: Vec<_> = rows
        .iter()
        .filter(|f| f.end_reason == "rollup")
        .map(|f| (f.first_seen_us / HOUR_US, f.a_ip, f.b_ip, f.b_port))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "summaries of one key and hour are merged, not one per roll-up");
    assert!(n <= 8 * 4, "at most one row per conversation and hour: {n}");
}

#[test]
fn evictions_are_reported_upstream_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 30_000).unwrap();
    for i in 0..40u32 {
        spool.push(distinct_flows(i * 50, 50, 7), "s1", "north").unwrap();
    }
    let st = spool.stats().unwrap();
    assert!(st.dropped_batches > 0);
    spool.push(vec![device(1), Event::Stats(SensorStats::default())], "s1", "north").unwrap();
    let batches = spool.next_batches(usize::MAX).unwrap();
    let carriers: Vec<&Batch> = batches.iter().filter(|b| report_of(b).is_some()).collect();
    assert!(!carriers.is_empty(), "a sealed batch carries the report");
    let st = spool.stats().unwrap();
    let now = spool.report_now().unwrap();
    assert_eq!(
        (now.batches_evicted, now.flows_evicted, now.flow_bytes_evicted, now.spool_epoch),
        (st.dropped_batches, st.flows_evicted, st.flow_bytes_evicted, st.epoch)
    );
    assert_eq!(now.losses.len() as u64, st.dropped_batches, "one loss entry per evicted batch");
    // Each carried report is consistent in itself (totals as of its sealing).
    for r in carriers.iter().map(|b| report_of(b).unwrap()) {
        assert_eq!(r.losses.len() as u64, r.batches_evicted);
        // Queued detail is rolled up before anything is evicted (decision 0045; before it,
        // whole queued detail batches were evicted): the losses are summary records, or the
        // sealed head (this bound is below it), each with its flows.
        assert!(
            r.losses.iter().all(|l| l.flows > 0
                && (l.kind == SpoolLossKind::EvictedFlowSummaries
                    || (l.kind == SpoolLossKind::EvictedFlowDetail && l.seq.is_some()))),
            "{:?}",
            r.losses.iter().map(|l| (l.kind, l.seq, l.flows)).collect::<Vec<_>>()
        );
        assert_eq!(r.losses.iter().map(|l| l.flow_bytes).sum::<u64>(), r.flow_bytes_evicted);
        assert_eq!(r.losses.iter().map(|l| l.flows).sum::<u64>(), r.flows_evicted);
    }
    for b in &batches {
        for e in &b.events {
            if let Event::Stats(s) = e {
                let carried = any_report_of(b).map(|r| r.batches_evicted);
                assert_eq!(Some(s.batches_dropped), carried, "the stats event carries the evicted-batch total");
            }
        }
    }
    // Acknowledged: the losses they carried are pruned; only later ones remain and travel next.
    let carried = report_of(carriers.last().unwrap()).unwrap().batches_evicted;
    let seqs: Vec<u64> = batches.iter().map(|b| b.seq).collect();
    spool.remove_acked(&seqs).unwrap();
    let left = spool.report_now().unwrap();
    assert_eq!(left.losses.len() as u64, left.batches_evicted - carried);
    let next = spool.push(vec![device(2)], "s1", "north").unwrap();
    if left.losses.is_empty() {
        assert!(report_of(&next).is_none(), "nothing new to report");
    } else {
        assert_eq!(report_of(&next).unwrap().losses, left.losses);
        spool.remove_acked(&[next.seq]).unwrap();
        assert!(spool.report_now().unwrap().losses.is_empty());
        assert!(report_of(&spool.push(vec![device(3)], "s1", "north").unwrap()).is_none());
    }
}

#[test]
fn a_lost_report_carrier_is_reported_again() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 20_000).unwrap();
    for i in 0..30u32 {
        spool.push(distinct_flows(i * 50, 50, 7), "s1", "north").unwrap();
    }
    let carrier = spool.next_batches(usize::MAX).unwrap().into_iter().find(|b| report_of(b).is_some()).unwrap();
    // The aggregator refuses it: the losses it carried are still unacknowledged.
    spool.dead_letter(carrier.seq, "test").unwrap();
    spool.push(vec![device(3)], "s1", "north").unwrap();
    let again = spool.next_batches(usize::MAX).unwrap();
    let _ = again;
    let r = spool.report_now().unwrap();
    assert_eq!(r.losses.len() as u64, r.batches_evicted, "losses stay until a carrier is acknowledged");
}

#[test]
fn corrupt_records_are_quarantined_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (good, flipped_seq) = {
        let spool = Spool::open(dir.path(), 1 << 30).unwrap();
        let a = spool.push(vec![device(1)], "s1", "north").unwrap();
        let b = spool.push(vec![device(2)], "s1", "north").unwrap();
        (a, b.seq)
    };
    {
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(BATCH_TREE).unwrap();
        let mut v = tree.get(flipped_seq.to_be_bytes()).unwrap().unwrap().to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0x40; // one flipped bit: only the checksum notices
        tree.insert(flipped_seq.to_be_bytes(), v).unwrap();
        db.open_tree(QUEUED_TREE).unwrap().insert([2u8, 0, 0, 0, 0, 0, 0, 0, 9], &b"garbage"[..]).unwrap();
        db.flush().unwrap();
    }
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let out = spool.next_batches(10).unwrap();
    assert_eq!(out.iter().map(|b| b.id).collect::<Vec<_>>(), vec![good.id]);
    let st = spool.stats().unwrap();
    assert_eq!(st.records_quarantined, 2);
    assert_eq!(st.dead_letters, 2);
    assert!(spool.dead_letters().unwrap().iter().any(|d| d.reason.contains("checksum")));
    let next = spool.push(vec![device(3)], "s1", "north").unwrap();
    let r = report_of(&next).expect("the quarantine is reported upstream");
    assert_eq!(r.records_quarantined, 2);
    assert_eq!(r.losses.iter().filter(|l| l.kind == SpoolLossKind::Quarantined).count(), 2);
}

#[test]
fn records_of_an_older_sensor_are_still_sent() {
    let dir = tempfile::tempdir().unwrap();
    let legacy =
        Batch { id: ulid::Ulid::new(), sensor_id: "s1".into(), site: "north".into(), seq: 5, events: vec![device(9)] };
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree(BATCH_TREE).unwrap().insert(5u64.to_be_bytes(), encode_frame(&legacy).unwrap()).unwrap();
        db.open_tree("meta").unwrap().insert(b"next_seq", &6u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    assert_eq!(spool.next_batches(10).unwrap(), vec![legacy]);
    assert_eq!(spool.push(vec![device(1)], "s1", "north").unwrap().seq, 6);
}

#[test]
fn classes_follow_content() {
    assert_eq!(Class::of(&[device(1)]), Class::Inventory);
    assert_eq!(Class::of(&flows(0, 3, 1, 1)), Class::FlowDetail);
    assert_eq!(Class::of(&[flow(0, 1, 1), device(1)]), Class::Inventory);
    let (sum, n) = wardline_sensor::spool::rollup::roll_up(flows(0, 4, 1, 10).iter().filter_map(|e| {
        if let Event::Flow(f) = e {
            Some(f)
        } else {
            None
        }
    }));
    assert_eq!((sum.len(), n), (1, 4));
    assert_eq!(Class::of(&sum.into_iter().map(Event::Flow).collect::<Vec<_>>()), Class::FlowSummary);
}

mod codec {
    use super::*;
    use proptest::prelude::*;
    use wardline_sensor::spool::SpoolRecord;

    fn record(n: u32, seq: u64) -> SpoolRecord {
        let events = flows(n, (n % 7) + 1, 3, u64::from(n));
        SpoolRecord {
            id: ulid::Ulid::from_parts(u64::from(n), u128::from(n)),
            sensor_id: "s1".into(),
            site: "north".into(),
            class: Class::of(&events),
            seq,
            created_ms: u64::from(n),
            report_through: seq / 2,
            events,
        }
    }

    proptest! {
        #[test]
        fn roundtrip(n in 0u32..10_000, seq in any::<u64>()) {
            let r = record(n, seq);
            prop_assert_eq!(record::decode(&record::encode(&r).unwrap()).unwrap(), r);
        }

        #[test]
        fn any_single_byte_change_is_detected(n in 0u32..1000, at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = record::encode(&record(n, 3)).unwrap();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(record::decode(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = record::decode(&bytes);
            let mut tagged = vec![record::RECORD_FORMAT];
            tagged.extend_from_slice(&bytes);
            let _ = record::decode(&tagged);
        }

        #[test]
        fn truncated_records_are_errors(n in 0u32..1000, cut in 0usize..400) {
            let bytes = record::encode(&record(n, 3)).unwrap();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(record::decode(&bytes[..cut]).is_err());
        }
    }
}

// --- crash safety ---------------------------------------------------------------------

const CHILD_DIR: &str = "WARDLINE_SPOOL_CHILD_DIR";
const FLOW_BATCHES: u32 = 120;

/// Bytes of flow batch `i` (distinct per batch, so a sum names exactly which batches).
fn batch_flow_bytes(i: u32) -> u64 {
    1 << (i % 40)
}

/// Child side: push deterministic batches under a tight bound until a crash point aborts.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let spool = Spool::open(std::path::Path::new(&dir), 30_000).unwrap();
    for i in 0..FLOW_BATCHES {
        println!("start {i}");
        // Two conversations per batch (roll-up shrinks a run of them a lot), every third
        // batch all distinct ones (roll-up cannot help: eviction must).
        let mut ev = if i % 3 == 0 { distinct_flows(i * 40, 40, 0) } else { flows(i * 20, 20, 2, 0) };
        for e in &mut ev {
            if let Event::Flow(f) = e {
                f.bytes_ab = 0;
            }
        }
        if let Event::Flow(f) = &mut ev[0] {
            f.bytes_ab = batch_flow_bytes(i);
        }
        spool.push(ev, "s1", "north").unwrap();
        if i % 10 == 9 {
            spool.push(vec![device(i as u8)], "s1", "north").unwrap();
        }
        if i % 25 == 24 {
            // The uplink takes some (sealing them) and gets half of them acked.
            let got = spool.next_batches(20).unwrap();
            let acked: Vec<u64> = got.iter().take(10).map(|b| b.seq).collect();
            spool.remove_acked(&acked).unwrap();
            println!("acked {}", got.iter().take(10).map(|b| traffic(std::slice::from_ref(b)).0).sum::<u64>());
        }
    }
    println!("finished {:?}", spool.stats().unwrap());
}

fn run_child(fault: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env("WARDLINE_FAULT", fault)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "the child must abort at {fault}: {stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARDLINE_FAULT: aborting"), "{out:?}");
    (dir, stdout)
}

/// After a crash anywhere: every record reads back, seqs are unique and ascending, the
/// counter is ahead of them, and every flow byte is in the spool, acked, or counted evicted.
fn check_after_crash(dir: &std::path::Path, stdout: &str) {
    let last_started: u32 = stdout.lines().rev().find_map(|l| l.strip_prefix("start ")).unwrap().parse().unwrap();
    let acked_bytes: u64 =
        stdout.lines().filter_map(|l| l.strip_prefix("acked ")).map(|v| v.parse::<u64>().unwrap()).sum();
    let spool = Spool::open(dir, 30_000).unwrap();
    let st = spool.stats().unwrap();
    assert_eq!(st.records_quarantined, 0);
    let all = spool.next_batches(usize::MAX).unwrap();
    assert_eq!(spool.stats().unwrap().records_quarantined, 0, "no torn record");
    let seqs: Vec<u64> = all.iter().map(|b| b.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(seqs.last().is_none_or(|s| *s < spool.stats().unwrap().next_seq));
    let held = traffic(&all).0 + st.flow_bytes_evicted + acked_bytes;
    // The crash hit inside push `last_started` (after its batch was committed) or just
    // before it: the total names exactly the batches that were stored, each once.
    let upto = |k: u32| (0..k).map(batch_flow_bytes).sum::<u64>();
    assert!(
        held == upto(last_started + 1) || held == upto(last_started),
        "flow bytes {held} = spool + evicted + acked must equal batches 0..={last_started} exactly"
    );
}

#[test]
fn kill_at_rollup_loses_and_doubles_nothing() {
    let (dir, out) = run_child("spool-after-rollup:3");
    check_after_crash(dir.path(), &out);
}

#[test]
fn kill_at_eviction_loses_and_doubles_nothing() {
    let (dir, out) = run_child("spool-after-evict:2");
    check_after_crash(dir.path(), &out);
}

#[test]
fn kill_at_sequence_assignment_keeps_seqs_unique() {
    let (dir, out) = run_child("spool-after-seal:40");
    check_after_crash(dir.path(), &out);
}
mod sigterm;
