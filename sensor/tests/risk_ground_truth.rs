//! The risk model against the simulator's labelled risky behaviours (`wardline-sim
//! --risky`): the hospital at scale 1 with and without them (same seed) goes through the
//! real `analyze --json`, every device is scored with `wardline_intel::risk::assess`, and
//!
//! - the evidence each behaviour should leave is in the report (browser user agent on the
//!   pump, SMBv1 on both ends, the Telnet login on both ends, the TeamViewer port);
//! - the factor that behaviour should raise fires, by the knowledge-base rule that names it,
//!   on exactly the devices the truth labels, and on none in the clean run;
//! - the truth's expected advisories are what the vulnerability matcher finds for each
//!   device's model and reported firmware, and the vulnerable-firmware pump scores a
//!   confirmed vulnerability.
//!
//! Not risk-model concerns (they are alerts, see aggregator/tests/raft/ground_truth_alerts.rs):
//! the new device, the site move and the traffic spike. HL7 with PHI to an unexpected host
//! has no factor of its own (the EHR's `cleartext_phi` fires for its usual HL7 feed as well):
//! only its flow is checked here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wardline_common::{Evidence, Field, FlowRecord, MacAddr, Proto};
use wardline_intel::risk::{assess, summarize_flows, IsoDate, RiskInput, RiskScore, VulnConfidence};
use wardline_intel::vuln::{load_advisory_dir, KevCatalog, VulnIndex};
use wardline_intel::{Classification, DeviceQuery, KnowledgeBase};
use wardline_sensor::analyze::{run_analyze_with, AnalyzeOptions};
use wardline_sim::{generate, GenerateOptions, GroundTruth, Scenario, TruthRisky};

/// One device as `analyze --json` reports it.
struct Seen {
    evidence: Vec<Evidence>,
    classification: Classification,
}

/// One generated run, analysed and scored.
struct Run {
    truth: GroundTruth,
    flows: Vec<FlowRecord>,
    devices: BTreeMap<MacAddr, Seen>,
    scores: BTreeMap<MacAddr, RiskScore>,
}

fn kb() -> &'static KnowledgeBase {
    KnowledgeBase::shared_builtin().expect("builtin KB")
}

fn as_of() -> IsoDate {
    "2026-12-06".parse().expect("date")
}

/// The real CISA feeds ($WARDLINE_VULNFEEDS, else <workspace>/../shared/vulnfeeds).
fn vuln_index() -> &'static VulnIndex {
    static IDX: OnceLock<VulnIndex> = OnceLock::new();
    IDX.get_or_init(|| {
        let dir = std::env::var_os("WARDLINE_VULNFEEDS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vulnfeeds"));
        let (advisories, errors) = load_advisory_dir(&dir.join("icsma"))
            .unwrap_or_else(|e| panic!("{e}; set WARDLINE_VULNFEEDS to the shared vulnfeeds folder"));
        assert!(errors.is_empty(), "advisories failed to load: {errors:#?}");
        let kev = KevCatalog::load(&dir.join("known_exploited_vulnerabilities.json")).expect("KEV catalog");
        VulnIndex::build(advisories, kev)
    })
}

/// One evidence entry of the report. `analyze --json` spells the IntelliVue protocol
/// `"intellivue"` (`Proto::as_str`) while `Proto`'s serde name is `"intellivue_data_export"`,
/// so the report does not read back as `Evidence` (reported to the sensor's owner); the
/// risk model does not look at the protocol, so one it cannot read counts as `unknown`.
fn evidence(v: &serde_json::Value) -> Evidence {
    Evidence {
        field: serde_json::from_value(v["field"].clone()).expect("evidence field"),
        value: v["value"].as_str().expect("evidence value").to_string(),
        proto: serde_json::from_value(v["proto"].clone()).unwrap_or(Proto::Unknown),
        ts_us: v["ts_us"].as_u64().expect("evidence time"),
    }
}

fn analyse(dir: &Path, risky: bool) -> Run {
    let pcap = dir.join(if risky { "risky.pcap" } else { "clean.pcap" });
    let mut opts = GenerateOptions::new(Scenario::Hospital);
    opts.seed = 7;
    opts.risky = risky;
    let truth = generate(&opts, &pcap).expect("generate the hospital");
    let mut out = Vec::new();
    let aopts = AnalyzeOptions { json: true, ..Default::default() };
    run_analyze_with(std::slice::from_ref(&pcap), &aopts, &mut out)
        .unwrap_or_else(|e| panic!("analyze {}: {e:#}", pcap.display()));
    let mut flows: Vec<FlowRecord> = Vec::new();
    let mut devices = BTreeMap::new();
    for line in String::from_utf8(out).expect("utf-8 report").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        match v["type"].as_str() {
            Some("flow") => flows.push(serde_json::from_value(v.clone()).expect("flow record")),
            Some("device") => {
                let mac: MacAddr = serde_json::from_value(v["mac"].clone()).expect("mac");
                let seen = Seen {
                    evidence: v["evidence"].as_array().expect("evidence").iter().map(evidence).collect(),
                    classification: serde_json::from_value(v["classification"].clone()).expect("classification"),
                };
                devices.insert(mac, seen);
            }
            _ => {}
        }
    }
    let scores = devices
        .iter()
        .map(|(mac, d)| {
            let summary = summarize_flows(kb(), &d.classification, &flows, |m, _| m == mac, |_, _| (None, None));
            let input = RiskInput {
                classification: &d.classification,
                evidence: &d.evidence,
                flows: &summary,
                vulnerabilities: &[],
                as_of: as_of(),
            };
            (*mac, assess(kb(), &input))
        })
        .collect();
    Run { truth, flows, devices, scores }
}

/// `(risky, clean)`, generated and analysed once per test binary.
fn runs() -> &'static (Run, Run) {
    static RUNS: OnceLock<(tempfile::TempDir, (Run, Run))> = OnceLock::new();
    &RUNS
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let pair = (analyse(dir.path(), true), analyse(dir.path(), false));
            (dir, pair)
        })
        .1
}

fn entry<'a>(truth: &'a GroundTruth, kind: &str) -> &'a TruthRisky {
    truth.risky.iter().find(|r| r.kind == kind).unwrap_or_else(|| panic!("no {kind} in the truth: {:#?}", truth.risky))
}

/// Devices on which `factor` fired with a hit from the knowledge-base rule `rule_id`
/// (`risk_indicator <id>` / `risk_service <id>`).
fn fired_by(run: &Run, factor: &str, rule_id: &str) -> BTreeSet<MacAddr> {
    let prefix = format!("{rule_id} (");
    run.scores
        .iter()
        .filter(|(_, s)| s.factor(factor).is_some_and(|f| f.evidence.iter().any(|e| e.rule.starts_with(&prefix))))
        .map(|(m, _)| *m)
        .collect()
}

fn has(run: &Run, mac: MacAddr, field: Field, value: &str) -> bool {
    run.devices.get(&mac).is_some_and(|d| d.evidence.iter().any(|e| e.field == field && e.value == value))
}

fn labelled(run: &Run, kind: &str, with_peer: bool) -> BTreeSet<MacAddr> {
    let r = entry(&run.truth, kind);
    std::iter::once(r.mac).chain(r.peer_mac.filter(|_| with_peer)).collect()
}

#[test]
fn analyze_reports_the_evidence_each_risky_behaviour_leaves() {
    let (risky, clean) = runs();
    let r = entry(&risky.truth, "web_browsing");
    let ua = risky
        .devices
        .get(&r.mac)
        .and_then(|d| d.evidence.iter().find(|e| e.field == Field::HttpUserAgent))
        .map(|e| e.value.as_str());
    assert!(ua.is_some_and(|ua| r.detail.contains(ua) && ua.contains("Chrome/")), "pump user agent: {ua:?}");
    assert!(!has(clean, r.mac, Field::ConnectsTo, "tcp/80"), "the clean pump makes no web request");

    let r = entry(&risky.truth, "smb1_server");
    let ws = r.peer_mac.expect("SMB client");
    assert!(has(risky, r.mac, Field::Smb1InUse, "server") && has(risky, ws, Field::Smb1InUse, "client"));
    let r = entry(&risky.truth, "cleartext_credentials");
    let ws = r.peer_mac.expect("Telnet client");
    assert!(has(risky, r.mac, Field::CleartextLogin, "telnet") && has(risky, ws, Field::CleartextLogin, "telnet"));
    let r = entry(&risky.truth, "remote_access");
    assert!(has(risky, r.mac, Field::ConnectsTo, "tcp/5938"), "the MRI's TeamViewer connection");
    for run in [clean] {
        for (mac, d) in &run.devices {
            for e in &d.evidence {
                let risky_value = matches!(e.field, Field::Smb1InUse | Field::CleartextLogin)
                    || (e.field == Field::ConnectsTo && e.value == "tcp/5938");
                assert!(!risky_value, "clean run: {mac} has {} = {:?}", e.field, e.value);
            }
        }
    }

    // HL7 with a PID segment from the EHR to a workstation: the flow is in the report.
    let r = entry(&risky.truth, "phi_cleartext_unexpected_peer");
    let to = std::net::IpAddr::V4(r.peer_ip.expect("receiver"));
    let to_ws = |run: &Run| run.flows.iter().filter(|f| f.app == "hl7" && f.b_ip == to).count();
    assert!(to_ws(risky) >= 1, "no hl7 flow to {to}");
    assert_eq!(to_ws(clean), 0, "clean run: hl7 to {to}");
}

#[test]
fn risk_factors_fire_on_exactly_the_labelled_devices() {
    let (risky, clean) = runs();
    // (behaviour, with its peer device, factor, KB rule): the factor each behaviour raises.
    let cases: &[(&str, bool, &str, &str)] = &[
        ("web_browsing", false, "misuse", "risk_indicator browser.user_agent"),
        ("smb1_server", false, "exposed_management", "risk_indicator smb1_server"),
        ("cleartext_credentials", true, "cleartext_credentials", "risk_indicator cleartext_login"),
        ("cleartext_credentials", false, "exposed_management", "risk_indicator telnet_banner"),
        ("remote_access", false, "remote_access", "risk_indicator remote_tool.teamviewer_port"),
    ];
    for &(kind, with_peer, factor, rule) in cases {
        let want = labelled(risky, kind, with_peer);
        let got = fired_by(risky, factor, rule);
        // The PCA pumps' biomed Telnet exposure is part of the clean hospital too.
        let clean_got = fired_by(clean, factor, rule);
        let extra: BTreeSet<MacAddr> = got.difference(&want).copied().collect();
        assert!(extra.is_subset(&clean_got), "{kind}: {factor} ({rule}) also fired on {extra:?}");
        assert!(want.is_subset(&got), "{kind}: {factor} ({rule}) fired on {got:?}, labelled {want:?}");
        assert!(want.is_disjoint(&clean_got), "{kind}: {factor} ({rule}) fired on the clean {clean_got:?}");
    }
    // The SMB1 client speaks the legacy protocol too (weaker indicator).
    let r = entry(&risky.truth, "smb1_server");
    let client: BTreeSet<MacAddr> = r.peer_mac.into_iter().collect();
    assert_eq!(fired_by(risky, "exposed_management", "risk_indicator smb1_client"), client);
    assert!(fired_by(clean, "exposed_management", "risk_indicator smb1_client").is_empty());
    for (kind, factor, rule) in [
        ("web_browsing", "misuse", "risk_indicator browser.user_agent"),
        ("smb1_server", "exposed_management", "risk_indicator smb1_server"),
        ("cleartext_credentials", "cleartext_credentials", "risk_indicator cleartext_login"),
        ("remote_access", "remote_access", "risk_indicator remote_tool.teamviewer_port"),
    ] {
        assert!(fired_by(clean, factor, rule).is_empty(), "clean run: {kind}'s {factor} ({rule}) fired");
    }
    // Each labelled device scores higher than in the clean run.
    for kind in ["web_browsing", "smb1_server", "cleartext_credentials", "remote_access"] {
        let mac = entry(&risky.truth, kind).mac;
        let (a, b) = (&risky.scores[&mac], &clean.scores[&mac]);
        assert!(a.score > b.score, "{kind} {mac}: {} risky vs {} clean\n{}", a.score, b.score, a.explain());
    }
}

#[test]
fn truth_advisories_are_what_the_matcher_finds_and_confirmed_firmware_scores() {
    let (risky, _) = runs();
    let idx = vuln_index();
    assert!(!risky.truth.vulnerable.is_empty());
    for v in &risky.truth.vulnerable {
        let d = risky.truth.device_by_id(&v.device).expect("device");
        let q = DeviceQuery {
            vendor: Some(&v.manufacturer),
            model: Some(&v.model),
            firmware: v.firmware.as_deref(),
            os: Some(&d.os),
        };
        let ids: BTreeSet<String> = idx.match_device(&q).iter().map(|m| m.advisory_id.to_string()).collect();
        let want: BTreeSet<String> = v.advisories.iter().cloned().collect();
        assert_eq!(ids, want, "{} {} {} firmware {:?}", v.device, v.manufacturer, v.model, v.firmware);
    }
    // The 9.19 pump: every match is confirmed, and the risk model scores it above a pump
    // with current firmware.
    let pump = risky.truth.vulnerable.iter().find(|v| v.firmware.as_deref() == Some("9.19")).expect("vulnerable pump");
    let q =
        DeviceQuery { vendor: Some(&pump.manufacturer), model: Some(&pump.model), firmware: Some("9.19"), os: None };
    let matches: Vec<wardline_intel::VulnMatch> = idx.match_device(&q).iter().map(Into::into).collect();
    assert!(matches.iter().all(|m| m.confidence == VulnConfidence::Confirmed), "{matches:#?}");
    let seen = &risky.devices[&pump.mac];
    let flows = summarize_flows(kb(), &seen.classification, &risky.flows, |m, _| *m == pump.mac, |_, _| (None, None));
    let input = RiskInput {
        classification: &seen.classification,
        evidence: &seen.evidence,
        flows: &flows,
        vulnerabilities: &matches,
        as_of: as_of(),
    };
    let scored = assess(kb(), &input);
    let f = scored.factor("vulnerability").unwrap_or_else(|| panic!("no vulnerability factor\n{}", scored.explain()));
    assert!(f.evidence.iter().any(|e| e.detail.contains("version confirmed")), "{}", scored.explain());
    assert!(scored.score > risky.scores[&pump.mac].score);
}
