//! The anomaly detectors against the simulator's labelled risky behaviours (`wardline-sim
//! --risky`, issue 11 part 6). The hospital (scale 1, ten minutes) with and without them
//! (same seed) goes through the real sensor path (pipeline → batcher → spool, configured
//! from the truth), and every spooled batch, flows included, is applied to one
//! `ClusterState` (core sensor first, then the clinic's access sensor, as in
//! `ground_truth_identity`). Learning is set to 55 % of the run in data time: the clean
//! hospital's own changes (DHCP churn, the ultrasound's move, at 35–50 %) fall inside it,
//! the injected behaviours (65 % on) after it.
//!
//! - The clean run raises no alert at all after learning.
//! - The risky run raises, for each behaviour a detector covers, the alert that names it,
//!   on the device the truth labels and with the truth's target; and every alert it raises
//!   is explained by a labelled behaviour (its device, peer or address).
//!
//! Covered: `web_browsing` (new external destination, new protocol tcp/80),
//! `remote_access` (new external destination, new protocol tcp/5938), `cleartext_credentials`
//! (new peer / new protocol tcp/23, and `cleartext_credentials` on both ends),
//! `smb1_server` (new peer, new listening service), `phi_cleartext_unexpected_peer` (the
//! PHI alert on the EHR naming the workstation, besides its new peer), `device_moved`,
//! `new_device_on_clinical_vlan`, and `traffic_spike` (the CT's 40 studies to its usual
//! PACS, in one-minute buckets: [`spike_config`]). The simulator injects no `wrong_segment` (it
//! needs a policy's groups; its unit test is in `state::anomaly`) and no silent sensor
//! (driven by the leader's clock, not capture data).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::OnceLock;
use wardline_aggregator::state::alerts::{Alert, AlertKind};
use wardline_aggregator::state::anomaly::detectors::DetectorConfig;
use wardline_aggregator::state::anomaly::{AnomalyConfig, ClinicalVlan};
use wardline_aggregator::state::{BatchSummary, ClusterState, Command, IngestBatch};
use wardline_sim::{generate, GenerateOptions, GroundTruth, Scenario, TruthRisky};

/// The VLANs the test declares clinical (ward, ICU, radiology, lab, clinic) at every site.
const CLINICAL_VLANS: &[u16] = &[20, 30, 40, 50, 210];

/// Traffic-spike settings for a ten-minute run: one-minute buckets (a modality stores a
/// study every two minutes), four times the busiest learned minute, and floors a quiet
/// device's burst of DHCP, DNS and NTP does not reach. With seed 7 the clean run's busiest
/// minute after learning is at most 1.43 times a device's learned maximum; the CT's spike
/// is 30 times (1.15 MB in 41 flows against 38 kB in 2).
fn spike_config() -> DetectorConfig {
    DetectorConfig {
        spike_bucket_us: 60_000_000,
        spike_factor_percent: 400,
        spike_min_bytes: 1_000_000,
        spike_min_packets: 1_000,
        spike_min_flows: 20,
        ..DetectorConfig::default()
    }
}

struct Run {
    truth: GroundTruth,
    state: ClusterState,
    learning_us: u64,
}

fn run(risky: bool) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("hospital.pcap");
    let mut opts = GenerateOptions::new(Scenario::Hospital);
    opts.seed = 7;
    opts.risky = risky;
    let truth = generate(&opts, &out).expect("generate the hospital");
    let learning_us = (truth.last_packet_us - truth.first_packet_us) * 55 / 100;
    let mut state = ClusterState::new();
    let clinical_vlans = CLINICAL_VLANS.iter().map(|v| ClinicalVlan { site: None, vlan: *v }).collect();
    state.apply(&Command::SetAnomalyConfig(AnomalyConfig { learning_us, clinical_vlans }));
    state.apply(&Command::SetDetectorConfig(spike_config()));
    for capture in &truth.captures {
        for b in crate::raft_support::truth_sensor_batches(dir.path(), &truth, capture) {
            let ingest = IngestBatch { summary: BatchSummary::from_batch(&b), flows: b.flows().cloned().collect() };
            assert!(state.apply(&Command::ApplyBatches(vec![ingest])).applied, "batch {} of {}", b.seq, b.sensor_id);
        }
    }
    Run { truth, state, learning_us }
}

fn risky() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| run(true))
}

fn clean() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| run(false))
}

fn entry<'a>(truth: &'a GroundTruth, kind: &str) -> &'a TruthRisky {
    truth.risky.iter().find(|r| r.kind == kind).unwrap_or_else(|| panic!("no {kind} in the truth: {:#?}", truth.risky))
}

fn alerts(run: &Run) -> Vec<&Alert> {
    run.state.alerts().alerts().values().collect()
}

/// The alert of `kind` on `device` (a MAC) about `target`, failing with every alert raised.
fn expect_alert<'a>(run: &'a Run, kind: AlertKind, device: String, target: &str, behaviour: &TruthRisky) -> &'a Alert {
    let all = alerts(run);
    let found = all.iter().find(|a| a.kind == kind && a.device == device && a.target == target);
    let a = found.unwrap_or_else(|| {
        let raised: Vec<String> =
            all.iter().map(|a| format!("{:?} {} {} {}", a.kind, a.device, a.target, a.evidence)).collect();
        panic!("{}: no {kind:?} alert on {device} about {target:?}; raised:\n{}", behaviour.kind, raised.join("\n"))
    });
    // Raised from the behaviour's own frames: not before it started.
    assert!(a.first_seen_us >= behaviour.first_us, "{}: {a:#?} predates {}", behaviour.kind, behaviour.first_us);
    a
}

#[test]
fn clean_hospital_raises_no_alert_after_learning() {
    let run = clean();
    assert!(run.truth.risky.is_empty());
    assert!(run.state.baselines().device_count() > run.truth.devices.len() / 2, "the detectors saw the hospital");
    let raised = alerts(run);
    assert!(raised.is_empty(), "the clean hospital raised {} alerts: {raised:#?}", raised.len());
}

#[test]
fn risky_hospital_raises_an_alert_for_each_covered_behaviour() {
    let run = risky();
    let t = &run.truth;
    // Every behaviour starts after the learning period of every device seen from the start.
    for r in &t.risky {
        assert!(r.first_us > t.first_packet_us + run.learning_us + 30_000_000, "{} starts while learning", r.kind);
    }

    let r = entry(t, "web_browsing");
    let web = r.peer_ip.expect("web server").to_string();
    expect_alert(run, AlertKind::NewExternalDestination, r.mac.to_string(), &web, r);
    expect_alert(run, AlertKind::NewProtocol, r.mac.to_string(), "tcp/80", r);

    let r = entry(t, "remote_access");
    let teamviewer = r.peer_ip.expect("TeamViewer router").to_string();
    expect_alert(run, AlertKind::NewExternalDestination, r.mac.to_string(), &teamviewer, r);
    expect_alert(run, AlertKind::NewProtocol, r.mac.to_string(), "tcp/5938", r);

    // Flow-based detectors see both ends of the Telnet login, the SMB1 exchange and the HL7
    // leak (the evidence-based alerts on them are in the evidence test below).
    let r = entry(t, "cleartext_credentials");
    let client = r.peer_mac.expect("client").to_string();
    expect_alert(run, AlertKind::NewProtocol, client.clone(), "tcp/23", r);
    expect_alert(run, AlertKind::NewPeer, client, &r.ip.to_string(), r);
    expect_alert(run, AlertKind::NewPeer, r.mac.to_string(), &r.peer_ip.expect("client").to_string(), r);

    let r = entry(t, "smb1_server");
    expect_alert(run, AlertKind::NewPeer, r.mac.to_string(), &r.peer_ip.expect("client").to_string(), r);

    // The leak: PHI to a peer outside the EHR's baseline, and that peer as a new one.
    let r = entry(t, "phi_cleartext_unexpected_peer");
    let receiver = r.peer_ip.expect("receiver").to_string();
    let phi = expect_alert(run, AlertKind::PhiCleartextUnexpectedPeer, r.mac.to_string(), &receiver, r);
    assert!(phi.evidence.contains("hl7 with patient data"), "{}", phi.evidence);
    expect_alert(run, AlertKind::NewPeer, r.mac.to_string(), &receiver, r);

    let r = entry(t, "new_device_on_clinical_vlan");
    expect_alert(run, AlertKind::NewDeviceOnClinicalVlan, r.mac.to_string(), &r.target, r);

    let r = entry(t, "device_moved");
    expect_alert(run, AlertKind::DeviceMoved, r.mac.to_string(), &r.target, r);

    // The CT's burst: its usual peer and protocol, many times its busiest learned minute.
    let r = entry(t, "traffic_spike");
    let spike = expect_alert(run, AlertKind::TrafficSpike, r.mac.to_string(), "traffic", r);
    assert!(spike.evidence.contains(&r.peer_ip.expect("PACS").to_string()), "{}", spike.evidence);
}

/// Every behaviour the truth labels is alerted on its device by the detector named for it
/// (or, for kinds with no alert of their own, by the ones listed in the module comment).
#[test]
fn every_labelled_behaviour_is_alerted_on_its_device() {
    let run = risky();
    let t = &run.truth;
    assert_eq!(
        t.risky.iter().map(|r| r.kind.as_str()).collect::<BTreeSet<_>>(),
        wardline_sim::RISKY_KINDS.iter().copied().collect::<BTreeSet<_>>(),
        "the risky run injects every kind"
    );
    for r in &t.risky {
        let kinds: &[AlertKind] = match r.kind.as_str() {
            "web_browsing" | "remote_access" => &[AlertKind::NewExternalDestination],
            "smb1_server" => &[AlertKind::NewListeningService],
            "cleartext_credentials" => &[AlertKind::CleartextCredentials],
            "phi_cleartext_unexpected_peer" => &[AlertKind::PhiCleartextUnexpectedPeer],
            "new_device_on_clinical_vlan" => &[AlertKind::NewDeviceOnClinicalVlan],
            "device_moved" => &[AlertKind::DeviceMoved],
            "traffic_spike" => &[AlertKind::TrafficSpike],
            other => panic!("a labelled behaviour this test does not know: {other}"),
        };
        let on_device = alerts(run).into_iter().any(|a| kinds.contains(&a.kind) && a.device == r.mac.to_string());
        assert!(on_device, "{} on {} raised none of {kinds:?}", r.kind, r.mac);
    }
}

#[test]
fn every_risky_alert_is_explained_by_a_labelled_behaviour() {
    let run = risky();
    let t = &run.truth;
    for a in alerts(run) {
        let explained = t.risky.iter().any(|r| {
            let macs = [Some(r.mac), r.peer_mac];
            let ips: Vec<IpAddr> = [Some(r.ip), r.peer_ip].into_iter().flatten().map(IpAddr::V4).collect();
            macs.iter().flatten().any(|m| m.to_string() == a.device)
                || a.target.parse::<IpAddr>().is_ok_and(|ip| ips.contains(&ip))
        });
        assert!(explained, "an alert no labelled behaviour explains: {a:#?}\nbehaviours: {:#?}", t.risky);
    }
}

/// Evidence-based detectors on devices known since the start: the sensor reports a device's
/// first sighting ever in every batch, so the detectors judge each piece of evidence at its
/// own time (`ev.ts_us`) — a Telnet login or a new listening service after the learning
/// period alerts even on a device seen from the first minute.
#[test]
fn risky_hospital_raises_evidence_alerts_for_telnet_login_and_new_services() {
    let run = risky();
    let t = &run.truth;
    let r = entry(t, "cleartext_credentials");
    expect_alert(run, AlertKind::CleartextCredentials, r.mac.to_string(), "telnet", r);
    expect_alert(run, AlertKind::CleartextCredentials, r.peer_mac.expect("client").to_string(), "telnet", r);
    let r = entry(t, "smb1_server");
    expect_alert(run, AlertKind::NewListeningService, r.mac.to_string(), "tcp/445", r);
    let r = entry(t, "phi_cleartext_unexpected_peer");
    expect_alert(run, AlertKind::NewListeningService, r.peer_mac.expect("receiver").to_string(), "tcp/2575", r);
}
