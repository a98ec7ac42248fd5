//! Link flapping (issue 13): a core sensor ships a generated hospital capture to a real
//! aggregator over a WAN-like link (`wardline-fault-proxy`'s UDP proxy in the test process,
//! 25 ms each way) that is cut every few seconds — up 2–5 s, down 1–3 s, drawn from
//! `WARDLINE_CHAOS_SEED` — for `WARDLINE_FLAP_SECS` (60 s in the normal run, minutes with
//! `just flapping`). One batch per frame and one frame in flight, so the link, not the
//! sensor, sets the pace and the sensor is still sending when the flapping ends (the
//! capture is sized from the flapping time). Then the link is healed and the sensor drains.
//!
//! Asserted: the uplink recovered after every cut it had something to send for (the
//! sensor's watermark on the cluster moved after the heal, within the recovery limit the
//! chaos checker uses); every batch the sensor spooled was acked and applied exactly once
//! (watermark = batches applied = batches spooled, no sequence gap, nothing dead-lettered);
//! the inventory holds every ground-truth device and the flow totals equal the truth.

use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wardline_chaos_tests::checker::RECOVERY_LIMIT;
use wardline_chaos_tests::expect::*;
use wardline_chaos_tests::fault_proxy::{FaultProxy, Faults, Transport};
use wardline_chaos_tests::multiday::{self, core_config, core_truth, HOUR_US};
use wardline_chaos_tests::procs::*;

const SENSOR: &str = "core-flap";
/// One-way delay of the link: with one batch in flight, at most ~20 batches a second.
const LINK_DELAY: Duration = Duration::from_millis(25);
/// Batches the capture should make per second of flapping: more than the link can carry
/// (it is also down a third of the time), so the sensor is still sending at the end.
const BATCHES_PER_FLAP_SEC: u64 = 20;
/// Batches one hospital slice makes at `MAX_EVENTS` (measured with seed 7: 687).
const BATCHES_PER_SLICE: u64 = 690;
const MAX_EVENTS: usize = 10;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The sensor's applied watermark (0 before its first batch), or None if the node did not answer.
fn watermark(client: &reqwest::blocking::Client, api: &str) -> Option<u64> {
    let v: Value = client.get(format!("{api}/api/v1/sensors")).send().ok()?.json().ok()?;
    Some(v["sensors"][SENSOR]["last_seq"].as_u64().unwrap_or(0))
}

#[test]
fn link_flapping_every_few_seconds_loses_and_duplicates_nothing() {
    let seed: u64 = env_or("WARDLINE_CHAOS_SEED", 7);
    let flap_secs: u64 = env_or("WARDLINE_FLAP_SECS", 60);
    let fleet = Fleet::new().unwrap();

    // The capture: enough hospital slices (an hour apart) to outlast the flapping.
    let slices_n = (flap_secs * BATCHES_PER_FLAP_SEC).div_ceil(BATCHES_PER_SLICE).max(1) as usize;
    let slice = multiday::generate(fleet.path(), "slice.pcap", "hospital", seed, false).unwrap();
    let pcap = fleet.path().join("flapping.pcap");
    let offsets: Vec<u64> = (0..slices_n as u64).map(|i| i * HOUR_US).collect();
    let truth = multiday::splice(&vec![slice.clone(); slices_n], &offsets, &pcap).unwrap();
    let _ = std::fs::remove_file(&slice.pcap);

    let agg = Aggregator::start(&fleet, 1, None).unwrap();
    let link =
        FaultProxy::start(Transport::Udp, "127.0.0.1:0".parse().unwrap(), agg.quic_addr().parse().unwrap(), seed)
            .unwrap();
    let wan = Faults { delay: LINK_DELAY, ..Faults::default() };
    link.handle().set(wan.clone());
    let cfg = core_config(&fleet, &truth, SENSOR, link.listen.to_string(), &pcap, MAX_EVENTS, None).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replacen("[uplink]\n", "[uplink]\nmax_in_flight = 1\nmax_frame_batches = 1\n", 1))
        .unwrap();

    // Watermark samples every 100 ms, from before the sensor starts to the end.
    let samples: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (samples, done) = (samples.clone(), done.clone());
        let (client, api) = (agg.api_client().unwrap(), agg.api());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(w) = watermark(&client, &api) {
                    samples.lock().unwrap().push((Instant::now(), w));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor.log"), &[]).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xf1a9);
    let flapping_until = Instant::now() + Duration::from_secs(flap_secs);
    let mut heals: Vec<Instant> = Vec::new();
    while Instant::now() < flapping_until {
        std::thread::sleep(Duration::from_millis(rng.gen_range(2000..=5000)));
        link.handle().update(|f| f.partitioned = true);
        std::thread::sleep(Duration::from_millis(rng.gen_range(1000..=3000)));
        link.handle().set(wan.clone());
        heals.push(Instant::now());
        assert!(!sensor.exited(), "the sensor stopped while the link was flapping:\n{}", sensor.log_text());
    }
    let mark_at_end = watermark(&agg.api_client().unwrap(), &agg.api()).unwrap_or(0);
    let still_sending = !sensor.log_text().contains("spool drained");
    // Healed for good, and no more delay: the rest drains at loopback speed.
    link.handle().heal();
    let st = sensor.wait(Duration::from_secs(300)).unwrap();
    let log = sensor.log_text();
    assert!(st.success(), "sensor failed:\n{log}");
    done.store(true, Ordering::Relaxed);
    monitor.join().unwrap();
    assert!(
        still_sending,
        "the sensor had shipped its whole capture before the flapping ended (watermark {mark_at_end}); \
         raise BATCHES_PER_FLAP_SEC"
    );

    // Every batch spooled was acked (the sensor exits only once its spool is empty) and
    // applied exactly once.
    let spooled: u64 = log
        .lines()
        .find(|l| l.contains("capture finished"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("batches=")))
        .and_then(|v| v.parse().ok())
        .expect("the sensor logs how many batches it spooled");
    assert!(!log.contains("refused this batch for good"), "a batch was dead-lettered:\n{log}");
    agg.wait_outbox_drained(Duration::from_secs(60)).unwrap();
    let sensors = agg.get("/api/v1/sensors").unwrap();
    let rec = &sensors["sensors"][SENSOR];
    let n = |k: &str| rec[k].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        (n("last_seq"), n("batches_applied"), n("seq_gaps")),
        (spooled, spooled, 0),
        "watermark, batches applied and gaps vs the {spooled} batches the sensor spooled and was acked: {rec}"
    );

    // The end state equals the ground truth.
    let want = truth_flows(&truth);
    let (packets, bytes) = want.values().fold((0u64, 0u64), |(p, b), v| (p + v.0, b + v.1));
    let totals = agg.get("/api/v1/flows/totals").unwrap();
    assert_eq!(
        (totals["replicated"]["packets"].as_u64(), totals["replicated"]["bytes"].as_u64()),
        (Some(packets), Some(bytes)),
        "flow totals lost or double counted: {totals}"
    );
    assert_eq!(totals["store"]["packets"].as_u64(), Some(packets), "flow store: {totals}");
    let diffs = inventory_differences(&core_truth(&truth), &agg.get("/api/v1/inventory").unwrap());
    assert!(diffs.is_empty(), "inventory differs from the ground truth:\n{}", diffs.join("\n"));

    // The uplink came back after every cut that left it something to send.
    let samples = samples.lock().unwrap().clone();
    let at = |t: Instant| samples.iter().take_while(|(s, _)| *s <= t).last().map(|s| s.1).unwrap_or(0);
    let mut recoveries = Vec::new();
    for (i, &heal) in heals.iter().enumerate() {
        let before = at(heal);
        if before >= spooled {
            continue;
        }
        let next = samples.iter().find(|(t, w)| *t > heal && *w > before);
        let Some((t, _)) = next else {
            panic!("cut {i}: no batch applied after the link came back (watermark {before} of {spooled})")
        };
        let took = *t - heal;
        assert!(took <= RECOVERY_LIMIT, "cut {i}: the uplink took {took:?} to deliver again after the link came back");
        recoveries.push(took);
    }
    assert!(recoveries.len() >= heals.len() / 2, "most cuts happened while the sensor was sending");
    let connected = log.matches("connected to the aggregator").count();
    let failures = log.matches("sending to the aggregator at").count() + log.matches("cannot connect").count();
    let duplicates = sensors["ingest"]["batches_duplicate"].as_u64().unwrap_or(0);
    let stats = link.handle().stats();
    eprintln!(
        "flapping: {} cuts in {flap_secs} s, the sensor still sending at the end (watermark {mark_at_end} of \
         {spooled}); recovered after each: max {:.1?}, mean {:.1?}; uplink connections {connected}, send or \
         connect failures {failures}, re-sent batches acked as duplicates {duplicates}; proxy dropped {} of {} \
         datagrams; {spooled} batches applied once, {packets} packets, {bytes} bytes",
        heals.len(),
        recoveries.iter().max().copied().unwrap_or_default(),
        recoveries.iter().sum::<Duration>() / recoveries.len().max(1) as u32,
        stats.dropped,
        stats.received,
    );
}
