//! The spool keeps what it promised: durable pushes, a sequence that never goes back, and
//! corrupt records that are reported and set aside instead of crashing or blocking the
//! uplink. (Byte bound, priorities and roll-up: sensor/tests/spool.)

use std::net::IpAddr;
use wardline_common::{DeviceObservation, Event, FlowRecord, MacAddr};
use wardline_sensor::spool::{Spool, BATCH_TREE};

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

fn flow(n: u16) -> Event {
    Event::Flow(FlowRecord {
        ip_proto: 6,
        vlan: None,
        a_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        b_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        a_ip: IpAddr::from([10, 0, 0, 1]),
        b_ip: IpAddr::from([10, 0, 0, 2]),
        a_port: 40000 + n,
        b_port: 3613,
        first_seen_us: 10,
        last_seen_us: 20,
        packets_ab: 5,
        packets_ba: 4,
        bytes_ab: 500,
        bytes_ba: 400,
        tcp_flags_ab: 0x1b,
        tcp_flags_ba: 0x1b,
        app: "alaris".into(),
        end_reason: "fin".into(),
    })
}

fn flows(k: u16) -> Vec<Event> {
    (0..k).map(flow).collect()
}

#[test]
fn seq_is_monotonic_across_reopen_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), 1 << 30).unwrap();
        let a = spool.push(vec![device(1)], "s1", "north").unwrap();
        let b = spool.push(vec![device(2)], "s1", "north").unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_ne!(a.id, b.id);
        // Removing everything must not let the counter restart.
        assert!(spool.remove(1).unwrap());
        assert!(spool.remove(2).unwrap());
        assert!(!spool.remove(2).unwrap(), "second removal of the same seq reports nothing removed");
        assert_eq!(spool.len(), 0);
        assert_eq!(spool.bytes(), 0);
    }
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let c = spool.push(vec![device(3)], "s1", "north").unwrap();
    assert_eq!(c.seq, 3, "seq continues after a restart with an empty spool");
    assert_eq!(spool.stats().unwrap().next_seq, 4);
}

#[test]
fn acked_batches_are_removed_together_and_stay_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), 1 << 30).unwrap();
        for i in 0..5u16 {
            spool.push(flows(i + 1), "s1", "north").unwrap();
        }
        let kept = spool.oldest(10).unwrap()[3..].to_vec();
        // One unknown seq among them: counted as not stored, the rest still removed.
        assert_eq!(spool.remove_acked(&[1, 2, 3, 42]).unwrap(), 3);
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.oldest(10).unwrap(), kept);
        assert_eq!(spool.remove_acked(&[]).unwrap(), 0);
    }
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let seqs: Vec<u64> = spool.oldest(10).unwrap().iter().map(|b| b.seq).collect();
    assert_eq!(seqs, vec![4, 5], "the group removal reached the disk");
    assert!(spool.bytes() > 0);
    assert_eq!(spool.remove_acked(&[4, 5]).unwrap(), 2);
    assert_eq!((spool.len(), spool.bytes()), (0, 0));
}

#[test]
fn batches_survive_reopen_in_order_with_content() {
    let dir = tempfile::tempdir().unwrap();
    let pushed: Vec<_> = {
        let spool = Spool::open(dir.path(), 1 << 30).unwrap();
        (0..5u8).map(|i| spool.push(vec![device(i), flow(i as u16)], "s1", "north").unwrap()).collect()
    };
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    assert_eq!(spool.len(), 5);
    assert!(spool.bytes() > 0);
    let back = spool.oldest(10).unwrap();
    assert_eq!(back, pushed, "same batches, same ids, oldest first");
    assert_eq!(spool.oldest(2).unwrap(), pushed[..2].to_vec());
}

#[test]
fn checkpoint_is_stored_with_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(spool.checkpoint("files:x").unwrap(), None);
        spool.push_checkpointed(vec![device(1)], "s1", "north", Some(("files:x", 1))).unwrap();
        spool.push_checkpointed(vec![device(2)], "s1", "north", Some(("files:x", 2))).unwrap();
    }
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    assert_eq!(spool.checkpoint("files:x").unwrap(), Some(2));
    assert_eq!(spool.len(), 2);
}

// The byte bound, priorities, roll-up and eviction accounting are tested in
// sensor/tests/spool (decision 0022).

#[test]
fn dead_letter_keeps_the_batch_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let a = spool.push(vec![device(1)], "s1", "north").unwrap();
    let b = spool.push(vec![device(2)], "s1", "north").unwrap();
    assert!(spool.dead_letter(a.seq, "wrong sensor id").unwrap());
    assert_eq!(spool.len(), 1);
    assert_eq!(spool.oldest(10).unwrap()[0].seq, b.seq);
    drop(spool);
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let dead = spool.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].seq, Some(a.seq));
    assert_eq!(dead[0].batch_id, Some(a.id));
    assert_eq!(dead[0].reason, "wrong sensor id");
    let original = wardline_sensor::spool::record::decode(&dead[0].record).unwrap().to_batch();
    assert_eq!(original, a);
}

#[test]
fn corrupt_record_is_reported_and_set_aside_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), 1 << 30).unwrap();
        spool.push(vec![device(1)], "s1", "north").unwrap();
        spool.push(vec![device(2)], "s1", "north").unwrap();
        spool.push(vec![device(3)], "s1", "north").unwrap();
    }
    {
        // Damage seq 2 behind the spool's back, as disk corruption would.
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(BATCH_TREE).unwrap();
        tree.insert(2u64.to_be_bytes(), &[1u8, 0xff, 0xff, 0xff, 0x07][..]).unwrap();
        db.flush().unwrap();
    }
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    assert_eq!(spool.len(), 3);
    let good: Vec<u64> = spool.oldest(10).unwrap().iter().map(|b| b.seq).collect();
    assert_eq!(good, vec![1, 3], "the corrupt record does not block the others");
    assert_eq!(spool.len(), 2);
    let dead = spool.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].seq, Some(2));
    assert!(dead[0].reason.contains("corrupt spool record"), "{}", dead[0].reason);
    assert_eq!(dead[0].record, vec![1u8, 0xff, 0xff, 0xff, 0x07], "bytes kept for inspection");
    // The counter is unaffected.
    assert_eq!(spool.push(vec![device(4)], "s1", "north").unwrap().seq, 4);
}

const CHILD_ENV: &str = "WARDLINE_SPOOL_ABORT_CHILD_DIR";

/// Child half of `pushed_batches_survive_abort`: push, then die without any cleanup.
#[test]
fn child_push_then_abort() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let spool = Spool::open(std::path::Path::new(&dir), 1 << 30).unwrap();
    for i in 0..20u8 {
        spool.push(vec![device(i)], "s1", "north").unwrap();
    }
    // Like kill -9: no destructors, no sled flush on drop.
    std::process::abort();
}

#[test]
fn pushed_batches_survive_abort() {
    let dir = tempfile::tempdir().unwrap();
    // The harness names a test by its path below the crate root.
    let child = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::child_push_then_abort"),
        None => "child_push_then_abort".to_string(),
    };
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &child, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have aborted");
    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let seqs: Vec<u64> = spool.oldest(100).unwrap().iter().map(|b| b.seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "every pushed batch is on disk");
    let next = spool.push(vec![device(99)], "s1", "north").unwrap();
    assert_eq!(spool.oldest(100).unwrap().iter().find(|b| b.id == next.id).map(|b| b.seq), Some(21));
}

fn reported_drops(batch: &wardline_common::Batch) -> Option<u64> {
    batch.events.iter().find_map(|e| match e {
        Event::Stats(s) => Some(s.batches_dropped),
        _ => None,
    })
}

#[test]
fn the_sensor_run_loop_sends_the_spool_drop_count() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use wardline_sensor::capture::Source;
    use wardline_sensor::config::SensorConfig;
    use wardline_sensor::run::{capture_all, Batcher};

    let capture = crate::corpus::pcap("mixed/bro.org.pcap");
    let dir = tempfile::tempdir().unwrap();
    // One flow per batch, every second of capture time, and a spool bound of a few KB:
    // flow batches are dropped while the capture is read.
    let cfg: SensorConfig = toml::from_str(&format!(
        r#"
        sensor_id = "s1"
        site = "north"
        spool_dir = "{}"
        spool_max_bytes = 2048
        [uplink]
        server = "127.0.0.1:4433"
        [tls]
        cert = "unused.pem"
        key = "unused.key"
        ca = "unused-ca.pem"
        [batch]
        max_events = 1
        interval_secs = 1
        "#,
        dir.path().display()
    ))
    .unwrap();
    let spool = Arc::new(Spool::open(&cfg.spool_dir, cfg.spool_max_bytes).unwrap());
    let mut batcher = Batcher::new(spool.clone(), &cfg, None).unwrap();
    capture_all(&cfg, &[Source::File(capture)], &AtomicBool::new(false), &mut batcher).unwrap();
    let batches = spool.oldest(100_000).unwrap();
    // The stats batch is the last inventory batch; flow batches that survived the bound are
    // sent after it.
    let reported = batches.iter().find_map(reported_drops).expect("a stored batch carries the stats");
    assert!(reported > 0, "the capture overflowed a 2 KB spool");
    // The stats carry the count when they were stored; storing the last flow batches (and
    // the stats batch itself) may evict more. Those are in the spool's own cumulative
    // report, which every later batch carries and which supersedes earlier ones.
    let dropped = spool.dropped_batches().unwrap();
    assert!(reported <= dropped, "stats claim {reported} drops, the spool made {dropped}");
    assert_eq!(spool.report_now().unwrap().batches_evicted, dropped);
}
