//! Risk and anomaly checks at cluster scale (issue 11 "Scale", decision 0043):
//!
//! 1. **Full re-score after a feed import**: a state of 1M devices drawn from the
//!    simulator's profiles (MAC OUI, DHCP vendor class and host name, so the classifier
//!    names vendor and model and the matcher finds advisories), a third of them with risk
//!    evidence (Telnet login and service, SMBv1 server, TeamViewer, SNMP community, browser
//!    user agent), and the real CISA feeds imported as the cluster imports them. Timed: the
//!    roll-up's scoring of every device (`query::risk::score_rows`: merge, classify, match
//!    the inventory, `assess`), what the risk recorder proposes from it (`records_for`) and
//!    applying that, and a second pass with nothing changed.
//! 2. **Anomaly checks at ingest rate**: 10,000 devices learn for one hour of capture time,
//!    then batches of 1,000 flows (1 % to a new peer or port, which alert) are applied as
//!    the cluster applies them (`Command::ApplyBatches`: merge, outbox, every detector).
//!    Timed: flows applied per second after learning, against the ~61k flows/s one node
//!    ingests (docs/benchmarks.md).
//!
//! Full size (release):
//!     cargo bench -p wardline-aggregator --bench risk_scale
//! Other sizes: WARDLINE_RISK_DEVICES=200000 WARDLINE_RISK_FLOWS=500000 cargo bench ...
//! Reads the real feeds from $WARDLINE_VULNFEEDS (default <workspace>/../shared/vulnfeeds).
//! Run without `--bench` (as `cargo test --benches` does) it uses 5,000 devices and 50,000
//! flows and checks what it measures.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;
use ulid::Ulid;
#[path = "bench_support/mod.rs"]
mod bench_support;

use bench_support::{env_or, vm_rss_kib, T0_US};
use wardline_aggregator::query::devices::DeviceSnapshot;
use wardline_aggregator::query::risk::score_rows;
use wardline_aggregator::risk::history::{records_for, Pass};
use wardline_aggregator::risk::CompiledFeeds;
use wardline_aggregator::state::anomaly::{AnomalyConfig, ClinicalVlan};
use wardline_aggregator::state::{BatchSummary, ClusterState, Command, DeviceId, IngestBatch};
use wardline_common::{DeviceObservation, Evidence, Field, FlowRecord, MacAddr, Proto};
use wardline_intel::KnowledgeBase;
use wardline_sim::profiles::PROFILES;

const PER_BATCH: u64 = 1_000;
const SITES: u64 = 10;

fn feeds_dir() -> PathBuf {
    match std::env::var_os("WARDLINE_VULNFEEDS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vulnfeeds"),
    }
}

/// Device `i`: a simulator profile's OUI, DHCP vendor class and host name; every third
/// one also shows risk evidence.
fn device(i: u64, ts: u64) -> DeviceObservation {
    let p = &PROFILES[(i as usize).wrapping_mul(2_654_435_761) % PROFILES.len()];
    let mac = MacAddr([p.oui[0], p.oui[1], p.oui[2], (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    let mut evidence = vec![Evidence::new(Field::Hostname, format!("{}{i:07}", p.hostname_prefix), Proto::Dhcp, ts)];
    if let Some(vc) = p.dhcp.as_ref().and_then(|d| d.vendor_class) {
        evidence.push(Evidence::new(Field::DhcpVendorClass, vc, Proto::Dhcp, ts));
    }
    match i % 15 {
        0 => {
            evidence.push(Evidence::new(Field::ListeningPort, "tcp/23", Proto::Telnet, ts));
            evidence.push(Evidence::new(Field::CleartextLogin, "telnet", Proto::Telnet, ts));
        }
        3 => evidence.push(Evidence::new(Field::Smb1InUse, "server", Proto::Smb, ts)),
        6 => evidence.push(Evidence::new(Field::ConnectsTo, "tcp/5938", Proto::Ip, ts)),
        9 => evidence.push(Evidence::new(Field::SnmpCommunityInUse, "public", Proto::Snmp, ts)),
        12 => evidence.push(Evidence::new(Field::HttpUserAgent, "Mozilla/5.0 (Windows NT 10.0)", Proto::Http, ts)),
        _ => {}
    }
    DeviceObservation {
        mac,
        ips: vec![ip_of(i)],
        vlans: vec![(i % 40) as u16 + 10],
        first_seen_us: ts,
        last_seen_us: ts + 1_000,
        packets: 10,
        bytes: 1_500,
        evidence,
    }
}

fn ip_of(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32))
}

/// Batches from one sensor per site, with increasing sequence numbers.
struct Sensors(std::collections::BTreeMap<u64, u64>);

impl Sensors {
    fn batch(&mut self, site: u64) -> BatchSummary {
        let seq = self.0.entry(site).or_insert(0);
        *seq += 1;
        BatchSummary::empty(
            Ulid::from_parts(*seq, u128::from(site) << 64 | u128::from(*seq)),
            format!("sensor-{site}"),
            format!("site-{site}"),
            *seq,
        )
    }
}

fn apply_devices(state: &mut ClusterState, sensors: &mut Sensors, devices: u64) {
    for b in 0..devices.div_ceil(PER_BATCH) {
        let mut batch = sensors.batch(b % SITES);
        batch.devices = (b * PER_BATCH..((b + 1) * PER_BATCH).min(devices)).map(|i| device(i, T0_US)).collect();
        assert!(state.apply(&Command::ApplyBatch(batch)).applied);
    }
}

/// Import the real feeds into `state` as `POST /api/v1/vuln/import` does.
fn import_feeds(state: &mut ClusterState) -> usize {
    let dir = feeds_dir();
    let requests = wardline_aggregator::cli::risk::import_requests(
        &dir.join("icsma"),
        Some(&dir.join("known_exploited_vulnerabilities.json")),
    )
    .unwrap_or_else(|e| panic!("benchmark input missing ({e:#}); set WARDLINE_VULNFEEDS"));
    let mut advisories = 0;
    for req in requests {
        let prepared = wardline_aggregator::risk::import::prepare(req, "bench", 0, "bench");
        for part in prepared.parts {
            advisories += part.advisories.len();
            assert!(state.apply(&Command::ImportVulnFeed(part)).applied);
        }
    }
    advisories
}

fn rescore(devices: u64) {
    let kb = KnowledgeBase::builtin().expect("builtin KB");
    let mut state = ClusterState::new();
    let mut sensors = Sensors(Default::default());
    let rss0 = vm_rss_kib();
    let t = Instant::now();
    apply_devices(&mut state, &mut sensors, devices);
    println!("state:    {devices} devices applied in {:.2} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let advisories = import_feeds(&mut state);
    let f = state.vulnfeeds();
    let advisory_texts: Vec<_> = f.advisories().values().cloned().collect();
    let feeds = CompiledFeeds::compile(f.version(), &advisory_texts, f.kev());
    println!(
        "feeds:    {advisories} advisories and the KEV catalog imported and compiled in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // What `risk_rows` does under the state lock, then outside it.
    let t = Instant::now();
    let snapshots: Vec<DeviceSnapshot> =
        state.devices().keys().filter_map(|m| DeviceSnapshot::take(&state, &DeviceId::Mac(*m), false)).collect();
    let take_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let rows = score_rows(&kb, &feeds, &snapshots, &Default::default());
    let score_s = t.elapsed().as_secs_f64();
    let n = rows.len() as f64;
    let vulnerable = rows.iter().filter(|r| !r.vulnerabilities.is_empty()).count();
    let with_factors = rows.iter().filter(|r| !r.factor_points.is_empty()).count();
    println!(
        "rescore:  {} devices: snapshots {take_s:.2} s, scored (merge, classify, match, assess) in {score_s:.2} s = {:.0} devices/s; {vulnerable} with matched advisories, {with_factors} with factors",
        rows.len(),
        n / score_s
    );
    assert_eq!(rows.len() as u64, devices);
    assert!(vulnerable > 0 && with_factors > rows.len() / 4, "{vulnerable} vulnerable, {with_factors} with factors");

    // The recorder's first pass: every device's first point.
    let settings = &kb.risk.settings;
    let pass = |at_ms| Pass {
        thresholds: &settings.thresholds,
        min_change: settings.history_min_change,
        trigger: "bench",
        feeds_version: 1,
        at_ms,
    };
    let t = Instant::now();
    let records = records_for(&rows, state.risk_history(), &pass(1), vec![]);
    let diff_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let entries = records.len();
    for r in records {
        assert!(state.apply(&Command::RecordRiskHistory(r)).applied);
    }
    println!(
        "history:  first pass {} changes in {entries} entries: computed in {diff_s:.2} s, applied in {:.2} s",
        state.risk_history().counters().changes,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let again = records_for(&rows, state.risk_history(), &pass(2), vec![]);
    println!("history:  a pass with nothing moved: {} entries, {:.2} s", again.len(), t.elapsed().as_secs_f64());
    assert!(again.is_empty());
    println!("memory:   {} MiB resident growth", (vm_rss_kib().saturating_sub(rss0)) / 1024);
}

/// Flow `k` of the anomaly phase: device → one of its usual peers and ports, or (when
/// `novel`) a new peer on a new port.
fn flow(devices: u64, k: u64, ts: u64, novel: bool) -> FlowRecord {
    let a = k % devices;
    let (b, port) = if novel {
        ((a + 7 + k % 50) % devices, 8_000 + (k % 100) as u16)
    } else {
        ((a + 1 + k % 3) % devices, [443, 2575, 104][(k % 3) as usize])
    };
    let da = device(a, ts);
    let db = device(b, ts);
    FlowRecord {
        ip_proto: 6,
        vlan: Some(da.vlans[0]),
        a_mac: da.mac,
        b_mac: db.mac,
        a_ip: ip_of(a),
        b_ip: ip_of(b),
        a_port: 49_152 + (k % 10_000) as u16,
        b_port: port,
        first_seen_us: ts,
        last_seen_us: ts + 5_000,
        packets_ab: 6,
        packets_ba: 5,
        bytes_ab: 900,
        bytes_ba: 4_000,
        tcp_flags_ab: 0x1b,
        tcp_flags_ba: 0x1b,
        app: std::borrow::Cow::Borrowed("tls"),
        end_reason: std::borrow::Cow::Borrowed("fin"),
    }
}

fn anomaly(flows: u64) {
    const DEVICES: u64 = 10_000;
    const LEARNING_US: u64 = 3_600_000_000;
    let mut state = ClusterState::new();
    let clinical_vlans = (10..50).map(|vlan| ClinicalVlan { site: None, vlan }).collect();
    state.apply(&Command::SetAnomalyConfig(AnomalyConfig { learning_us: LEARNING_US, clinical_vlans }));
    let mut sensors = Sensors(Default::default());
    apply_devices(&mut state, &mut sensors, DEVICES);

    // Learning: the usual peers and ports, spread over the hour; after it, 1 % novel.
    let learn_flows = DEVICES * 6;
    let mut apply_flows = |state: &mut ClusterState, from: u64, to: u64, t0: u64, span_us: u64, novel_every: u64| {
        let mut busy = 0.0;
        let mut k = from;
        while k < to {
            let end = (k + PER_BATCH).min(to);
            let ts = t0 + (k - from) * span_us / (to - from).max(1);
            let batch_flows: Vec<FlowRecord> =
                (k..end).map(|j| flow(DEVICES, j, ts, novel_every > 0 && j % novel_every == 0)).collect();
            let mut summary = sensors.batch(k / PER_BATCH % SITES);
            summary.flow_count = batch_flows.len() as u64;
            let cmd = Command::ApplyBatches(vec![IngestBatch { summary, flows: batch_flows }]);
            let t = Instant::now();
            assert!(state.apply(&cmd).applied);
            busy += t.elapsed().as_secs_f64();
            let through = state.outbox().next.saturating_sub(1);
            state.apply(&Command::FlowsDrained { through });
            k = end;
        }
        busy
    };
    let learn_s = apply_flows(&mut state, 0, learn_flows, T0_US, LEARNING_US - 60_000_000, 0);
    let alerts_before = state.alerts().alerts().len();
    let busy =
        apply_flows(&mut state, learn_flows, learn_flows + flows, T0_US + LEARNING_US + 60_000_000, 3_600_000_000, 100);
    let alerts = state.alerts().alerts().len() - alerts_before;
    println!(
        "anomaly:  learning {learn_flows} flows in {learn_s:.2} s; after learning {flows} flows applied with every detector in {busy:.2} s = {:.0} flows/s ({} new alerts)",
        flows as f64 / busy,
        alerts
    );
    assert!(alerts > 0, "novel flows after learning alert");
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let devices = env_or("WARDLINE_RISK_DEVICES", if full { 1_000_000 } else { 5_000 });
    let flows = env_or("WARDLINE_RISK_FLOWS", if full { 2_000_000 } else { 50_000 });
    rescore(devices);
    anomaly(flows);
}
