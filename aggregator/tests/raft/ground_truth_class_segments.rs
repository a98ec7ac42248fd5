//! "Device in the wrong segment for its class" against the generated hospital (issue 11
//! part 3, decision 0043). The hospital (scale 1, seed 7) goes through the real sensor path
//! into one `ClusterState` as in `ground_truth_alerts` (learning: 55 % of the run in data
//! time); every device is classified with the built-in knowledge base, as the leader's risk
//! recorder does, and `risk::class_segments::findings` looks for devices on a VLAN their
//! class was not learned on at their site.
//!
//! - The clean hospital: no finding.
//! - The clean hospital with one injected behaviour (the simulator has none of this kind):
//!   the reports of one classified device that cover 70 % of the run on carry another VLAN
//!   of its site, one its class was never learned on, from that time. Exactly that device and VLAN are found, from the
//!   injected time, with the class named; applied through the recorder's command it opens a
//!   `wrong_segment` alert, and the next pass finds nothing new.
//! - The risky hospital (its labelled behaviours): every finding is a labelled placement;
//!   with seed 7 the new workstation on the ICU VLAN (workstations were learned elsewhere)
//!   is found.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use wardline_aggregator::query::classify::classify_record;
use wardline_aggregator::risk::class_segments::findings;
use wardline_aggregator::state::alerts::AlertKind;
use wardline_aggregator::state::anomaly::{AnomalyConfig, ClinicalVlan};
use wardline_aggregator::state::risk_history::RiskRecord;
use wardline_aggregator::state::{BatchSummary, ClusterState, Command, IngestBatch};
use wardline_common::MacAddr;
use wardline_intel::KnowledgeBase;
use wardline_sim::{generate, GenerateOptions, GroundTruth, Scenario};

/// One device's reports moved to `vlan` from `from_us` on.
#[derive(Clone, Copy, Debug)]
struct Injection {
    mac: MacAddr,
    vlan: u16,
    from_us: u64,
}

struct Run {
    truth: GroundTruth,
    state: ClusterState,
    classes: BTreeMap<MacAddr, String>,
    /// Observations the injection changed.
    injected: usize,
}

fn kb() -> &'static KnowledgeBase {
    KnowledgeBase::shared_builtin().expect("builtin KB")
}

fn run(risky: bool, inject: Option<Injection>) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("hospital.pcap");
    let mut opts = GenerateOptions::new(Scenario::Hospital);
    opts.seed = 7;
    opts.risky = risky;
    let truth = generate(&opts, &out).expect("generate the hospital");
    let learning_us = (truth.last_packet_us - truth.first_packet_us) * 55 / 100;
    let mut state = ClusterState::new();
    let clinical_vlans = [20, 30, 40, 50, 210].iter().map(|v| ClinicalVlan { site: None, vlan: *v }).collect();
    state.apply(&Command::SetAnomalyConfig(AnomalyConfig { learning_us, clinical_vlans }));
    let mut injected = 0;
    for capture in &truth.captures {
        for b in crate::raft_support::truth_sensor_batches(dir.path(), &truth, capture) {
            let mut summary = BatchSummary::from_batch(&b);
            if let Some(i) = inject {
                // A report covering the time from the injection on: the device is on the
                // other VLAN from then (a sensor reports a device's whole span so far).
                for obs in summary.devices.iter_mut().filter(|o| o.mac == i.mac && o.last_seen_us >= i.from_us) {
                    obs.vlans = vec![i.vlan];
                    obs.first_seen_us = obs.first_seen_us.max(i.from_us);
                    injected += 1;
                }
            }
            let ingest = IngestBatch { summary, flows: b.flows().cloned().collect() };
            assert!(state.apply(&Command::ApplyBatches(vec![ingest])).applied, "batch {} of {}", b.seq, b.sensor_id);
        }
    }
    let classes = state.devices().iter().map(|(mac, d)| (*mac, classify_record(kb(), d).class.value)).collect();
    Run { truth, state, classes, injected }
}

fn clean() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| run(false, None))
}

/// A classified device still reporting after 70 % of the run, and a VLAN of its site its
/// class was not learned on (the lowest such VLAN any device of the site uses).
fn pick_injection(run: &Run) -> Injection {
    let from_us = run.truth.first_packet_us + (run.truth.last_packet_us - run.truth.first_packet_us) * 70 / 100;
    let s = &run.state;
    let site_of = |mac: &MacAddr| -> Option<(String, BTreeSet<u16>)> {
        let d = s.devices().get(mac)?;
        let (_, seen) = d.segments.iter().find(|(k, _)| k.vlan.is_some())?;
        let vlans = d.segments.iter().filter_map(|(k, _)| k.vlan).collect();
        Some((s.site_name(seen.site_index).to_string(), vlans))
    };
    for (mac, class) in &run.classes {
        if class.starts_with("unknown") || s.devices()[mac].last_seen_us < from_us + 60_000_000 {
            continue;
        }
        let Some((site, _)) = site_of(mac) else { continue };
        // VLANs of this class at this site, and every VLAN of the site.
        let mut class_vlans = BTreeSet::new();
        let mut site_vlans = BTreeSet::new();
        for (other, other_class) in &run.classes {
            if let Some((other_site, vlans)) = site_of(other) {
                if other_site == site {
                    site_vlans.extend(vlans.iter().copied());
                    if other_class == class {
                        class_vlans.extend(vlans);
                    }
                }
            }
        }
        if let Some(vlan) = site_vlans.difference(&class_vlans).next() {
            return Injection { mac: *mac, vlan: *vlan, from_us };
        }
    }
    panic!("no classified device reporting late with another VLAN at its site: {:#?}", run.classes);
}

#[test]
fn clean_hospital_has_every_class_on_its_learned_vlans() {
    let run = clean();
    assert!(run.classes.values().filter(|c| !c.starts_with("unknown")).count() > 10, "{:?}", run.classes);
    let found = findings(&run.state, &run.classes);
    assert!(found.is_empty(), "the clean hospital raised {found:#?}");
}

#[test]
fn a_device_moved_onto_another_classes_vlan_is_found_once_and_alerted() {
    let inject = pick_injection(clean());
    let run = run(false, Some(inject));
    assert!(run.injected > 0, "no report of {} after the injection time", inject.mac);
    assert_eq!(run.classes[&inject.mac], clean().classes[&inject.mac], "the VLAN does not change the class");
    let found = findings(&run.state, &run.classes);
    assert_eq!(found.len(), 1, "{inject:?}: {found:#?}");
    let f = &found[0];
    assert_eq!(
        (f.kind, f.device.as_str(), f.target.as_str()),
        (AlertKind::WrongSegment, &*inject.mac.to_string(), &*format!("vlan {}", inject.vlan))
    );
    assert!(f.ts_us >= inject.from_us, "found from the injected reports on: {f:#?}");
    assert!(f.evidence.starts_with(&format!("{} seen by sensor", run.classes[&inject.mac])), "{}", f.evidence);

    // Proposed with the recorder's pass, it opens the alert; the next pass finds nothing new.
    let mut state = run.state;
    let record = RiskRecord {
        at_ms: 1,
        trigger: "re-score".into(),
        feeds_version: 0,
        changes: vec![],
        sites: vec![],
        occurrences: found.clone(),
    };
    assert!(state.apply(&Command::RecordRiskHistory(record)).applied);
    let alerts: Vec<_> = state.alerts().alerts().values().filter(|a| a.kind == AlertKind::WrongSegment).collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!((alerts[0].device.as_str(), alerts[0].target.as_str()), (f.device.as_str(), f.target.as_str()));
    assert!(findings(&state, &run.classes).is_empty(), "an alerted sighting is not proposed again");
}

#[test]
fn risky_hospital_findings_are_on_labelled_devices() {
    let run = run(true, None);
    // The behaviours that put a device where it was not: new on a clinical VLAN, moved.
    let placed: BTreeMap<String, &str> = run
        .truth
        .risky
        .iter()
        .filter(|r| r.kind == "new_device_on_clinical_vlan" || r.kind == "device_moved")
        .map(|r| (r.mac.to_string(), r.kind.as_str()))
        .collect();
    let found = findings(&run.state, &run.classes);
    for f in &found {
        assert!(placed.contains_key(&f.device), "{f:#?} is not a labelled placement ({placed:?})");
    }
    // Seed 7: the new workstation on the ICU VLAN, where workstations were never learned.
    let kinds: BTreeSet<&str> = found.iter().map(|f| placed[&f.device]).collect();
    assert_eq!(kinds, BTreeSet::from(["new_device_on_clinical_vlan"]), "{found:#?}");
}
