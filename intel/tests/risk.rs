//! The per-device risk model: impact from the clinical function, each exposure factor on its
//! own, the ordering of realistic devices, site overrides of weights, determinism, roll-ups,
//! history, and (proptest) bounds and monotonicity of the score.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use wardline_common::{Evidence, Field, FlowRecord, MacAddr, Proto};
use wardline_intel::risk::{
    assess, by_category, by_class, by_site, roll_up, summarize_flows, DeviceRisk, FlowSummary, IsoDate, Recorded,
    RiskHistory, RiskInput, RiskScore, VulnConfidence, VulnMatch,
};
use wardline_intel::{Attribute, Category, Classification, Criticality, Direction, FlowTag, KnowledgeBase, Transport};

fn kb() -> &'static KnowledgeBase {
    KnowledgeBase::shared_builtin().expect("builtin KB")
}

fn day(s: &str) -> IsoDate {
    s.parse().expect("date")
}

fn attr<T>(value: T) -> Attribute<T> {
    Attribute { value, confidence: 0.9, evidence: Vec::new() }
}

/// A device of knowledge-base class `class` (category, criticality and clinical function
/// from the class), optionally running OS `os`.
fn device(kb: &KnowledgeBase, mac: &str, class: &str, os: Option<&str>) -> Classification {
    let c = kb.class(class).unwrap_or_else(|| panic!("class {class}"));
    Classification {
        mac: mac.parse().expect("mac"),
        profile: None,
        vendor: None,
        model: None,
        class: attr(class.to_string()),
        category: attr(c.category),
        criticality: attr(c.criticality),
        clinical_function: c.clinical_function.clone().map(attr),
        os: os.map(|o| attr(o.to_string())),
        os_info: os.map(|o| kb.os(o).unwrap_or_else(|| panic!("os {o}")).info.clone()),
        medical_vendor: false,
        overridden: None,
    }
}

fn ev(field: Field, value: &str) -> Evidence {
    Evidence::new(field, value, Proto::Unknown, 0)
}

fn flow(peer: &str, app: &str, port: u16, direction: Direction, external: bool) -> FlowSummary {
    FlowSummary {
        peer: peer.into(),
        transport: Transport::Tcp,
        app: app.into(),
        server_port: port,
        direction,
        peer_external: external,
        peer_score: None,
        context: None,
        flows: 1,
        packets: 10,
        bytes: 1000,
    }
}

fn kev(cve: &str, cvss: f64) -> VulnMatch {
    VulnMatch { cve: cve.into(), cvss_base_score: cvss, known_exploited: true, confidence: VulnConfidence::Confirmed }
}

const AS_OF: &str = "2026-12-06";

fn score(
    kb: &KnowledgeBase,
    c: &Classification,
    evidence: &[Evidence],
    flows: &[FlowSummary],
    vulns: &[VulnMatch],
) -> RiskScore {
    assess(kb, &RiskInput { classification: c, evidence, flows, vulnerabilities: vulns, as_of: day(AS_OF) })
}

fn fired(s: &RiskScore) -> Vec<&str> {
    s.factors.iter().map(|f| f.factor.as_str()).collect()
}

#[test]
fn builtin_risk_model_is_complete() {
    let r = &kb().risk;
    assert_eq!(r.data_classes.len(), 5, "every MITRE data class has axes");
    for f in [
        "end_of_support",
        "vulnerability",
        "known_exploited",
        "cleartext_phi",
        "cleartext_management",
        "cleartext_credentials",
        "exposed_management",
        "remote_access",
        "misuse",
        "risky_peer",
        "risky_flow",
    ] {
        let w = r.factor(f).unwrap_or_else(|| panic!("factor {f} missing")).weight;
        assert!(w > 0.0 && w <= 1.0, "{f} weight {w}");
    }
    assert!(kb().files.iter().any(|f| f == "builtin:risk.toml"));
}

#[test]
fn impact_follows_the_clinical_function() {
    let kb = kb();
    let pump = score(kb, &device(kb, "00:d0:75:00:00:01", "infusion_pump", None), &[], &[], &[]);
    assert_eq!(pump.impact.axes.safety, 1.0, "therapy delivery is the top safety impact");
    assert!(pump.impact.data_classes.contains(&wardline_intel::model::DataClass::TherapyDelivery));
    let monitor = score(kb, &device(kb, "00:09:fb:00:00:01", "patient_monitor", None), &[], &[], &[]);
    let ct = score(kb, &device(kb, "00:09:fb:00:00:02", "ct", None), &[], &[], &[]);
    let printer = score(kb, &device(kb, "00:00:aa:00:00:01", "printer", None), &[], &[], &[]);
    assert!(pump.impact.combined > monitor.impact.combined, "{pump:?}\n{monitor:?}");
    assert!(monitor.impact.combined > ct.impact.combined);
    assert!(ct.impact.combined > printer.impact.combined);
    assert_eq!(printer.impact.axes.privacy, 0.1, "a printer only holds system data by default");
    // The central station's function mentions the EHR: PHI is added by clinical_function.
    let cs = score(kb, &device(kb, "00:09:fb:00:00:03", "central_station", None), &[], &[], &[]);
    assert!(cs.impact.rules.iter().any(|r| r.starts_with("function.records")), "{:?}", cs.impact.rules);
    // A class entry beats the criticality entry: workstations reach PHI.
    let ws = score(kb, &device(kb, "18:66:da:00:00:01", "workstation", None), &[], &[], &[]);
    assert_eq!(ws.impact.axes.privacy, 1.0);
    assert!(ws.impact.rules.iter().all(|r| !r.starts_with("criticality.")), "{:?}", ws.impact.rules);
    // No exposure at all: the baseline times the impact.
    assert!(pump.factors.is_empty());
    assert!((pump.score - 10.0).abs() < 0.05, "{}", pump.score);
}

#[test]
fn pump_with_kev_and_telnet_to_a_laptop_outscores_printer_with_an_old_os() {
    let kb = kb();
    let pump = device(kb, "58:42:e4:10:33:a3", "infusion_pump", None);
    let pump_evidence = [
        ev(Field::CleartextLogin, "telnet"),
        ev(Field::TelnetBanner, "PUMPGW-ICU3 login:"),
        ev(Field::ListeningPort, "tcp/23"),
    ];
    let mut from_laptop = flow("10.77.0.102", "telnet", 23, Direction::Inbound, false);
    from_laptop.peer_score = Some(62.0);
    from_laptop.context = Some(FlowTag::Risky);
    let pump_score = score(kb, &pump, &pump_evidence, &[from_laptop], &[kev("CVE-2017-12725", 9.8)]);

    let printer = device(kb, "00:00:aa:00:00:01", "printer", Some("windows_xp_embedded"));
    let printer_score = score(kb, &printer, &[ev(Field::ListeningPort, "tcp/9100")], &[], &[]);

    assert!(pump_score.score > printer_score.score, "{}\n{}", pump_score.explain(), printer_score.explain());
    assert!(pump_score.score >= 90.0, "{}", pump_score.explain());
    let text = pump_score.explain();
    for f in [
        "known_exploited",
        "vulnerability",
        "cleartext_credentials",
        "exposed_management",
        "cleartext_management",
        "risky_peer",
        "risky_flow",
    ] {
        assert!(pump_score.factor(f).is_some(), "{f} should fire:\n{text}");
        assert!(text.contains(f), "explanation names {f}:\n{text}");
    }
    assert!(text.contains("CVE-2017-12725"), "{text}");
    assert!(text.contains("risk_indicator cleartext_login"), "{text}");
    // The largest contribution comes first.
    assert_eq!(pump_score.factors[0].factor, "known_exploited", "{text}");

    let ptext = printer_score.explain();
    assert_eq!(fired(&printer_score), ["end_of_support"], "{ptext}");
    assert!(ptext.contains("Windows XP Embedded") && ptext.contains("2016-01-12"), "{ptext}");
    // JSON carries the same.
    let json = serde_json::to_value(&pump_score).expect("json");
    assert_eq!(json["factors"][0]["factor"], "known_exploited");
    let back: RiskScore = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, pump_score);
}

/// Each factor alone: fires with the expected evidence and raises the score.
#[test]
fn each_factor_fires_on_its_own_input_and_raises_the_score() {
    let kb = kb();
    let monitor = device(kb, "00:09:fb:00:00:01", "patient_monitor", None);
    let base = score(kb, &monitor, &[], &[], &[]).score;
    let external = |app: &str, port: u16| flow("203.0.113.9", app, port, Direction::Inbound, true);
    let mut risky_peer = flow("10.0.0.9", "unknown", 8080, Direction::Outbound, false);
    risky_peer.peer_score = Some(95.0);
    let mut risky_flow = flow("10.0.0.9", "http", 80, Direction::Outbound, false);
    risky_flow.context = Some(FlowTag::Risky);
    let version_unknown = VulnMatch {
        cve: "CVE-2020-0001".into(),
        cvss_base_score: 7.5,
        known_exploited: false,
        confidence: VulnConfidence::VersionUnknown,
    };
    type Case = (&'static str, Vec<Evidence>, Vec<FlowSummary>, Vec<VulnMatch>);
    let cases: Vec<Case> = vec![
        ("cleartext_credentials", vec![ev(Field::CleartextLogin, "ftp")], vec![], vec![]),
        ("cleartext_credentials", vec![ev(Field::HttpBasicAuth, "present")], vec![], vec![]),
        ("cleartext_credentials", vec![ev(Field::SnmpCommunityInUse, "public (default)")], vec![], vec![]),
        ("cleartext_management", vec![ev(Field::SnmpCommunityInUse, "non-default (len 9)")], vec![], vec![]),
        ("cleartext_management", vec![], vec![flow("10.0.0.2", "ftp", 21, Direction::Outbound, false)], vec![]),
        ("cleartext_phi", vec![ev(Field::Hl7PhiSegments, "3")], vec![], vec![]),
        ("cleartext_phi", vec![], vec![flow("10.0.0.3", "hl7", 2575, Direction::Outbound, false)], vec![]),
        ("cleartext_phi", vec![], vec![flow("10.0.0.4", "dicom", 104, Direction::Outbound, false)], vec![]),
        ("exposed_management", vec![ev(Field::Smb1InUse, "server")], vec![], vec![]),
        ("exposed_management", vec![ev(Field::ListeningPort, "tcp/5900")], vec![], vec![]),
        ("exposed_management", vec![], vec![flow("10.0.0.5", "ssh", 22, Direction::Inbound, false)], vec![]),
        ("remote_access", vec![ev(Field::TlsAlpn, "anydesk/6.2.0/linux")], vec![], vec![]),
        ("remote_access", vec![ev(Field::DnsQuery, "relay-1.net.anydesk.com")], vec![], vec![]),
        ("remote_access", vec![ev(Field::ConnectsTo, "tcp/5938")], vec![], vec![]),
        ("remote_access", vec![], vec![external("rdp", 3389)], vec![]),
        ("remote_access", vec![], vec![external("vnc", 5901)], vec![]),
        (
            "misuse",
            vec![ev(Field::HttpUserAgent, "Mozilla/5.0 (Windows NT 6.1) Chrome/109.0 Safari/537.36")],
            vec![],
            vec![],
        ),
        ("misuse", vec![ev(Field::TlsSni, "www.6gyip7tqim7sieb.com")], vec![], vec![]),
        ("misuse", vec![], vec![flow("198.51.100.7", "tls", 9001, Direction::Outbound, true)], vec![]),
        ("vulnerability", vec![], vec![], vec![version_unknown]),
        ("known_exploited", vec![], vec![], vec![kev("CVE-2021-44228", 10.0)]),
        ("risky_peer", vec![], vec![risky_peer], vec![]),
        ("risky_flow", vec![], vec![risky_flow], vec![]),
    ];
    for (factor, evidence, flows, vulns) in cases {
        let s = score(kb, &monitor, &evidence, &flows, &vulns);
        let f = s
            .factor(factor)
            .unwrap_or_else(|| panic!("{factor} did not fire for {evidence:?} {flows:?}\n{}", s.explain()));
        assert!(f.strength > 0.0 && f.contribution > 0.0 && f.points > 0.0, "{f:?}");
        assert!(!f.evidence.is_empty(), "{factor} lists its evidence");
        assert!(s.score > base, "{factor}: {} <= {base}", s.score);
    }
    // HL7 or DICOM wrapped in TLS on their usual ports is not cleartext.
    let tls = [
        flow("10.0.0.3", "tls", 2575, Direction::Outbound, false),
        flow("10.0.0.4", "tls", 104, Direction::Outbound, false),
    ];
    assert!(score(kb, &monitor, &[], &tls, &[]).factor("cleartext_phi").is_none());
    // Half strength for a version-unknown match: 7.5/10 × 0.5.
    let s = score(
        kb,
        &monitor,
        &[],
        &[],
        &[VulnMatch {
            cve: "CVE-2020-0001".into(),
            cvss_base_score: 7.5,
            known_exploited: false,
            confidence: VulnConfidence::VersionUnknown,
        }],
    );
    assert_eq!(s.factor("vulnerability").map(|f| f.strength), Some(0.375));
}

#[test]
fn browsing_is_misuse_only_on_medical_and_ot_devices() {
    let kb = kb();
    let ua = [ev(Field::HttpUserAgent, "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0")];
    let ws = score(kb, &device(kb, "18:66:da:00:00:01", "workstation", None), &ua, &[], &[]);
    assert!(ws.factor("misuse").is_none(), "{}", ws.explain());
    let pump = score(kb, &device(kb, "00:d0:75:00:00:01", "infusion_pump", None), &ua, &[], &[]);
    assert!(pump.factor("misuse").is_some(), "{}", pump.explain());
    // An ordinary www name is not taken for Tor.
    let sni = [ev(Field::TlsSni, "www.example.com"), ev(Field::TlsSni, "www.facebook.com")];
    assert!(score(kb, &device(kb, "18:66:da:00:00:01", "workstation", None), &sni, &[], &[]).factors.is_empty());
}

#[test]
fn internal_remote_desktop_is_management_not_remote_access() {
    let kb = kb();
    let ws = device(kb, "18:66:da:00:00:01", "workstation", Some("windows_10"));
    let internal = score(kb, &ws, &[], &[flow("10.1.1.1", "rdp", 3389, Direction::Inbound, false)], &[]);
    assert!(internal.factor("exposed_management").is_some(), "{}", internal.explain());
    assert!(internal.factor("remote_access").is_none(), "{}", internal.explain());
    let outside = score(kb, &ws, &[], &[flow("203.0.113.1", "rdp", 3389, Direction::Inbound, true)], &[]);
    assert_eq!(outside.factor("remote_access").map(|f| f.strength), Some(1.0));
    assert!(outside.score > internal.score);
}

#[test]
fn end_of_support_grows_with_the_callers_date() {
    let kb = kb();
    let xp = device(kb, "18:66:da:00:00:01", "workstation", Some("windows_7"));
    let at = |d: &str| {
        assess(kb, &RiskInput { classification: &xp, evidence: &[], flows: &[], vulnerabilities: &[], as_of: day(d) })
    };
    assert!(at("2020-01-14").factor("end_of_support").is_none(), "last day of support");
    let first = at("2020-01-15").factor("end_of_support").map(|f| f.strength).expect("fires the day after");
    assert!((first - 0.5).abs() < 0.001, "{first}");
    let later = at("2022-07-15").factor("end_of_support").map(|f| f.strength).expect("fires");
    assert!(later > first && later < 1.0, "{later}");
    assert_eq!(at("2030-01-01").factor("end_of_support").map(|f| f.strength), Some(1.0));
    // Supported or unknown-date OSes never fire.
    let w11 = device(kb, "18:66:da:00:00:02", "workstation", Some("windows_11"));
    let s = assess(
        kb,
        &RiskInput { classification: &w11, evidence: &[], flows: &[], vulnerabilities: &[], as_of: day("2040-01-01") },
    );
    assert!(s.factor("end_of_support").is_none());
}

fn site_kb(files: &[(&str, &str)]) -> (tempfile::TempDir, KnowledgeBase) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let path: PathBuf = dir.path().to_path_buf();
    let kb = KnowledgeBase::load(&[path]).expect("site KB loads");
    (dir, kb)
}

#[test]
fn site_overlay_weights_change_the_score() {
    let builtin = kb();
    let pump = device(builtin, "58:42:e4:10:33:a3", "infusion_pump", None);
    let evidence = [ev(Field::ListeningPort, "tcp/23"), ev(Field::TlsSni, "www.6gyip7tqim7sieb.com")];
    let before = score(builtin, &pump, &evidence, &[], &[]);
    let (_d, site) = site_kb(&[(
        "risk-site.toml",
        r#"
[risk]
baseline_exposure = 0.2

[[risk_factor]]
id = "exposed_management"
weight = 0.9

[[remove]]
risk_factor = "misuse"

[[risk_indicator]]
id = "listening.ssh"
factor = "exposed_management"
field = "listening_port"
exact = "tcp/22"
strength = 1.0
reason = "site policy: no SSH on clinical devices"
"#,
    )]);
    assert_eq!(site.risk.settings.baseline_exposure, 0.2);
    assert_eq!(site.risk.settings.impact_floor, builtin.risk.settings.impact_floor, "other [risk] keys stay");
    let after = score(&site, &pump, &evidence, &[], &[]);
    assert!(after.score > before.score, "{}\n{}", before.explain(), after.explain());
    assert_eq!(after.factor("exposed_management").map(|f| f.weight), Some(0.9));
    assert_eq!(
        site.risk.factor("exposed_management").map(|f| &f.description),
        builtin.risk.factor("exposed_management").map(|f| &f.description),
        "a weight-only override keeps the description"
    );
    assert!(before.factor("misuse").is_some() && after.factor("misuse").is_none(), "removed by the site");
    // A weight of 0 switches a factor off.
    let (_d2, off) =
        site_kb(&[("off.toml", "[[risk_factor]]\nid = \"exposed_management\"\nweight = 0.0\ndescription = \"off\"\n")]);
    let s = score(&off, &pump, &[ev(Field::ListeningPort, "tcp/23")], &[], &[]);
    assert_eq!(s.factor("exposed_management").map(|f| f.contribution), Some(0.0));
    assert!((s.score - 10.0).abs() < 0.05, "{}", s.explain());
}

#[test]
fn bad_risk_entries_name_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let load = |text: &str| {
        std::fs::write(dir.path().join("site.toml"), text).expect("write");
        KnowledgeBase::load(&[dir.path().to_path_buf()]).expect_err("bad file")
    };
    let e = load("[[risk_indicator]]\nid = \"x\"\nfactor = \"no_such_factor\"\nfield = \"hostname\"\nregex = \".\"\nstrength = 0.5\nreason = \"r\"\n");
    assert!(e.file.ends_with("site.toml") && e.line == 2 && e.key == "factor", "{e}");
    assert!(e.message.contains("no_such_factor") && e.message.contains("exposed_management"), "{e}");
    let e = load("[[risk_factor]]\nid = \"misuse\"\nweight = 1.5\ndescription = \"d\"\n");
    assert_eq!((e.line, e.key.as_str()), (3, "weight"), "{e}");
    let e = load("[[risk_factor]]\nid = \"brand_new\"\nweight = 0.5\n");
    assert!(e.key == "description" && e.line == 2, "{e}");
    let e = load("[[risk_impact]]\nid = \"x\"\nclass = \"infusion_pumpp\"\ndata_classes = [\"phi\"]\n");
    assert!(e.key == "class" && e.message.contains("infusion_pumpp"), "{e}");
    let e = load(
        "[[risk_impact]]\nid = \"x\"\nclass = \"printer\"\ncriticality = \"non_clinical\"\ndata_classes = [\"phi\"]\n",
    );
    assert!(e.message.contains("exactly one"), "{e}");
    let e = load("[[risk_service]]\nid = \"x\"\nfactor = \"misuse\"\nstrength = 0.5\nreason = \"r\"\n");
    assert!(e.message.contains("matches no flow"), "{e}");
    let e = load("[risk]\nthresholds = [70.0, 40.0]\n");
    assert_eq!(e.key, "thresholds", "{e}");
    let e = load("[risk]\nbaseline_exposur = 0.2\n");
    assert!(e.message.contains("baseline_exposur"), "unknown keys are errors: {e}");
}

#[test]
fn same_inputs_same_score_in_any_order() {
    let kb = kb();
    let c = device(kb, "00:09:fb:00:00:01", "patient_monitor", Some("windows_xp_embedded"));
    let mut evidence = vec![
        ev(Field::CleartextLogin, "telnet"),
        ev(Field::SnmpCommunityInUse, "public (default)"),
        ev(Field::ListeningPort, "tcp/23"),
        ev(Field::ListeningPort, "tcp/21"),
        ev(Field::CleartextLogin, "telnet"),
    ];
    let mut flows: Vec<FlowSummary> = (0..12)
        .map(|i| {
            let mut f = flow(
                &format!("10.0.0.{i}"),
                if i % 2 == 0 { "telnet" } else { "ftp" },
                if i % 2 == 0 { 23 } else { 21 },
                Direction::Inbound,
                false,
            );
            f.context = Some(FlowTag::Risky);
            f.peer_score = Some(40.0 + i as f64 * 5.0);
            f
        })
        .collect();
    let mut vulns = vec![kev("CVE-2019-0708", 9.8), kev("CVE-2017-0144", 8.1)];
    let a = score(kb, &c, &evidence, &flows, &vulns);
    evidence.reverse();
    flows.reverse();
    vulns.reverse();
    let b = score(kb, &c, &evidence, &flows, &vulns);
    assert_eq!(a, b);
    assert_eq!(serde_json::to_string(&a).expect("json"), serde_json::to_string(&b).expect("json"));
    assert_eq!(a.explain(), b.explain());
    // Twelve distinct risky flows, but only MAX_EVIDENCE_PER_FACTOR listed.
    let rf = a.factor("risky_flow").expect("risky_flow");
    assert_eq!(rf.evidence.len() + rf.more_evidence, 12);
    assert_eq!(rf.evidence.len(), wardline_intel::risk::MAX_EVIDENCE_PER_FACTOR);
}

#[test]
fn flow_records_are_summarised_with_their_context() {
    let kb = kb();
    let pump = device(kb, "58:42:e4:10:33:a3", "infusion_pump", None);
    let laptop: MacAddr = "48:c3:5a:0f:2e:a2".parse().expect("mac");
    let rec = |port_a: u16, port_b: u16| FlowRecord {
        ip_proto: 6,
        vlan: None,
        a_mac: laptop,
        b_mac: pump.mac,
        a_ip: IpAddr::V4(Ipv4Addr::new(10, 77, 0, 102)),
        b_ip: IpAddr::V4(Ipv4Addr::new(10, 77, 0, 103)),
        a_port: port_a,
        b_port: port_b,
        first_seen_us: 0,
        last_seen_us: 1,
        packets_ab: 5,
        packets_ba: 4,
        bytes_ab: 500,
        bytes_ba: 400,
        tcp_flags_ab: 0x1b,
        tcp_flags_ba: 0x1b,
        app: "telnet".into(),
        end_reason: "fin".into(),
    };
    let records = [rec(40000, 23), rec(40001, 23)];
    let flows = summarize_flows(kb, &pump, &records, |mac, _| *mac == pump.mac, |_, _| (None, Some(70.0)));
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(
        (f.peer.as_str(), f.server_port, f.direction, f.flows, f.packets),
        ("10.77.0.102", 23, Direction::Inbound, 2, 18)
    );
    assert_eq!(f.context, Some(FlowTag::Risky), "global.telnet labels it risky");
    let s = score(kb, &pump, &[], &flows, &[]);
    for factor in ["cleartext_management", "exposed_management", "risky_peer", "risky_flow"] {
        assert!(s.factor(factor).is_some(), "{factor}\n{}", s.explain());
    }
}

#[test]
fn roll_ups_by_site_class_category_and_any_key() {
    let kb = kb();
    let mk = |site: &str, mac: &str, class: &str, score: f64| {
        let c = device(kb, mac, class, None);
        DeviceRisk {
            mac: c.mac,
            site: site.into(),
            class: class.into(),
            category: c.category.value,
            criticality: c.criticality.value,
            score,
        }
    };
    let devices = vec![
        mk("north", "00:00:00:00:00:01", "infusion_pump", 95.0),
        mk("north", "00:00:00:00:00:02", "infusion_pump", 45.0),
        mk("north", "00:00:00:00:00:03", "printer", 12.0),
        mk("south", "00:00:00:00:00:04", "infusion_pump", 95.0),
        mk("south", "00:00:00:00:00:05", "workstation", 71.0),
    ];
    let t = &kb.risk.settings.thresholds;
    let sites = by_site(&devices, t);
    assert_eq!(sites.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["north", "south"]);
    let north = &sites[0];
    assert_eq!((north.devices, north.max, north.mean), (3, 95.0, 50.7));
    assert_eq!(north.max_device, "00:00:00:00:00:01".parse::<MacAddr>().expect("mac"));
    assert_eq!(
        north.above.iter().map(|a| (a.threshold, a.devices)).collect::<Vec<_>>(),
        [(40.0, 2), (70.0, 1), (90.0, 1)]
    );
    let classes = by_class(&devices, &[90.0]);
    let pumps = classes.iter().find(|r| r.key == "infusion_pump").expect("pumps");
    assert_eq!((pumps.devices, pumps.above[0].devices), (3, 2));
    assert_eq!(pumps.max_device, "00:00:00:00:00:01".parse::<MacAddr>().expect("mac"), "ties: smallest MAC");
    let cats = by_category(&devices, &[]);
    assert_eq!(cats.iter().map(|r| (r.key.as_str(), r.devices)).collect::<Vec<_>>(), [("medical", 3), ("it", 2)]);
    let crit = roll_up(&devices, &[50.0], |d| d.criticality == Criticality::LifeSustaining);
    assert_eq!(
        crit.iter().map(|r| (r.key.as_str(), r.devices, r.above[0].devices)).collect::<Vec<_>>(),
        [("false", 2, 1), ("true", 3, 2)]
    );
    assert!(roll_up(&devices[..0], t, |d| d.category == Category::Medical).is_empty());
}

#[test]
fn history_keeps_changes_bounded_and_in_order() {
    let mut h = RiskHistory::new(3, 0.5);
    assert_eq!(h.record(100, 10.0), Recorded::Added);
    assert_eq!(h.record(200, 10.3), Recorded::Unchanged, "below min_change");
    assert_eq!(h.record(50, 80.0), Recorded::OutOfOrder);
    assert_eq!(h.record(300, 40.0), Recorded::Added);
    assert_eq!(h.record(400, 90.0), Recorded::Added);
    assert_eq!(h.record(500, 20.0), Recorded::Added);
    assert_eq!(h.len(), 3, "bounded");
    assert_eq!(h.points().map(|p| p.ts_us).collect::<Vec<_>>(), [300, 400, 500], "oldest dropped first");
    assert_eq!(h.score_at(450), Some(90.0));
    assert_eq!(h.change_since(350), Some(-20.0));
    assert_eq!(h.latest().map(|p| p.score), Some(20.0));
    let json = serde_json::to_string(&h).expect("json");
    assert_eq!(serde_json::from_str::<RiskHistory>(&json).expect("back"), h);
    let d = RiskHistory::for_settings(&kb().risk.settings);
    assert!(d.is_empty());
}

#[test]
fn dates() {
    assert_eq!(day("1970-01-01").days_since_epoch(), 0);
    assert_eq!(day("2000-03-01").days_since_epoch(), 11017);
    assert_eq!(day("2024-03-01").days_after(&day("2024-02-28")), 2, "leap year");
    assert_eq!(day("2023-03-01").days_after(&day("2023-02-28")), 1);
    for bad in ["2023-02-29", "2023-13-01", "2023-1-01", "20230101xx", "2023-00-10", "+023-01-01"] {
        assert!(bad.parse::<IsoDate>().is_err(), "{bad}");
    }
    assert_eq!(day("2026-12-06").to_string(), "2026-12-06");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    const CLASSES: &[&str] =
        &["infusion_pump", "patient_monitor", "ct", "pacs", "printer", "workstation", "unknown_it"];
    const OSES: &[Option<&str>] = &[None, Some("windows_xp"), Some("windows_7"), Some("windows_11"), Some("linux")];

    fn evidence_pool() -> Vec<Evidence> {
        vec![
            ev(Field::CleartextLogin, "telnet"),
            ev(Field::HttpBasicAuth, "present"),
            ev(Field::SnmpCommunityInUse, "public (default)"),
            ev(Field::SnmpCommunityInUse, "non-default (len 4)"),
            ev(Field::TelnetBanner, "login:"),
            ev(Field::Smb1InUse, "server"),
            ev(Field::Smb1InUse, "client"),
            ev(Field::ListeningPort, "tcp/22"),
            ev(Field::ListeningPort, "tcp/3389"),
            ev(Field::Hl7PhiSegments, "2"),
            ev(Field::TlsAlpn, "anydesk/6.2.0/linux"),
            ev(Field::TlsSni, "www.ct7ctrgb6cr7.com"),
            ev(Field::HttpUserAgent, "Mozilla/5.0 Firefox/120.0"),
            ev(Field::DnsQuery, "tracker.example.org"),
            ev(Field::Hostname, "bed-12"),
        ]
    }

    fn arb_evidence() -> impl Strategy<Value = Vec<Evidence>> {
        let pool = evidence_pool();
        let n = pool.len();
        prop::collection::vec(
            prop_oneof![
                (0..n).prop_map(move |i| pool[i].clone()),
                ("[a-z./ 0-9]{0,12}", 0usize..6).prop_map(|(v, f)| {
                    let field = [
                        Field::TlsSni,
                        Field::DnsQuery,
                        Field::HttpUserAgent,
                        Field::ListeningPort,
                        Field::ConnectsTo,
                        Field::SnmpCommunityInUse,
                    ][f];
                    ev(field, &v)
                }),
            ],
            0..8,
        )
    }

    fn arb_flow() -> impl Strategy<Value = FlowSummary> {
        (
            0u8..8,
            prop::sample::select(vec![
                "telnet",
                "ftp",
                "ssh",
                "rdp",
                "vnc",
                "hl7",
                "dicom",
                "tls",
                "unknown",
                "bittorrent",
            ]),
            prop::sample::select(vec![21u16, 22, 23, 104, 443, 2575, 3389, 5900, 5938, 7070, 9001, 6881, 8080]),
            prop::sample::select(vec![Direction::Inbound, Direction::Outbound]),
            any::<bool>(),
            prop::option::of(prop_oneof![0.0f64..=100.0, Just(f64::NAN), Just(150.0), Just(-3.0)]),
            prop::option::of(prop::sample::select(vec![
                FlowTag::Required,
                FlowTag::Acceptable,
                FlowTag::Risky,
                FlowTag::Unknown,
            ])),
            any::<bool>(),
        )
            .prop_map(|(peer, app, port, direction, external, peer_score, context, udp)| FlowSummary {
                peer: format!("10.0.0.{peer}"),
                transport: if udp { Transport::Udp } else { Transport::Tcp },
                app: app.into(),
                server_port: port,
                direction,
                peer_external: external,
                peer_score,
                context,
                flows: 1,
                packets: 1,
                bytes: 1,
            })
    }

    fn arb_vuln() -> impl Strategy<Value = VulnMatch> {
        (0u16..100, prop_oneof![0.0f64..=10.0, Just(f64::NAN), Just(11.0)], any::<bool>(), any::<bool>()).prop_map(
            |(n, cvss, kev, confirmed)| VulnMatch {
                cve: format!("CVE-2024-{n:04}"),
                cvss_base_score: cvss,
                known_exploited: kev,
                confidence: if confirmed { VulnConfidence::Confirmed } else { VulnConfidence::VersionUnknown },
            },
        )
    }

    #[derive(Clone, Debug)]
    struct Inputs {
        class: usize,
        os: usize,
        evidence: Vec<Evidence>,
        flows: Vec<FlowSummary>,
        vulns: Vec<VulnMatch>,
        days: u32,
    }

    fn arb_inputs() -> impl Strategy<Value = Inputs> {
        (
            0..CLASSES.len(),
            0..OSES.len(),
            arb_evidence(),
            prop::collection::vec(arb_flow(), 0..6),
            prop::collection::vec(arb_vuln(), 0..3),
            0u32..10_000,
        )
            .prop_map(|(class, os, evidence, flows, vulns, days)| Inputs {
                class,
                os,
                evidence,
                flows,
                vulns,
                days,
            })
    }

    /// 2010-01-01 plus `days`, by stepping day by day (independent of the code's arithmetic).
    fn date_plus(days: u32) -> IsoDate {
        let (mut y, mut m, mut d) = (2010i32, 1u8, 1u8);
        for _ in 0..days {
            d += 1;
            if IsoDate::new(y, m, d).is_none() {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        IsoDate::new(y, m, d).expect("valid date")
    }

    fn run(kb: &KnowledgeBase, i: &Inputs, as_of: IsoDate) -> RiskScore {
        let c = device(kb, "00:00:00:00:00:01", CLASSES[i.class], OSES[i.os]);
        assess(
            kb,
            &RiskInput { classification: &c, evidence: &i.evidence, flows: &i.flows, vulnerabilities: &i.vulns, as_of },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn score_is_bounded(i in arb_inputs()) {
            let s = run(kb(), &i, date_plus(i.days));
            prop_assert!((0.0..=100.0).contains(&s.score), "{}", s.score);
            prop_assert!((0.0..=1.0).contains(&s.exposure));
            prop_assert!((0.0..=1.0).contains(&s.impact.combined));
            for f in &s.factors {
                prop_assert!((0.0..=1.0).contains(&f.strength) && (0.0..=1.0).contains(&f.contribution), "{f:?}");
                prop_assert!(f.points >= 0.0 && f.points <= s.score + 0.05, "{f:?}");
            }
        }

        #[test]
        fn adding_inputs_never_lowers_the_score(a in arb_inputs(), b in arb_inputs()) {
            let kb = kb();
            let as_of = date_plus(a.days);
            let before = run(kb, &a, as_of);
            let mut more = a.clone();
            more.evidence.extend(b.evidence.iter().cloned());
            more.flows.extend(b.flows.iter().cloned());
            more.vulns.extend(b.vulns.iter().cloned());
            let after = run(kb, &more, as_of);
            prop_assert!(after.score >= before.score, "{} -> {}\n{}\n{}", before.score, after.score, before.explain(), after.explain());
            prop_assert!(after.exposure >= before.exposure);
            for f in &before.factors {
                let g = after.factor(&f.factor);
                prop_assert!(g.is_some_and(|g| g.strength >= f.strength), "{} weakened", f.factor);
            }
        }

        #[test]
        fn later_dates_never_lower_the_score(i in arb_inputs(), extra in 0u32..4000) {
            let kb = kb();
            let early = run(kb, &i, date_plus(i.days));
            let late = run(kb, &i, date_plus(i.days + extra));
            prop_assert!(late.score >= early.score);
        }

        #[test]
        fn heavier_weights_never_lower_the_score(i in arb_inputs(), which in 0usize..11, w in 0.0f64..=1.0) {
            let base = kb();
            let mut light = base.clone();
            let id = light.risk.factors.keys().nth(which % light.risk.factors.len()).cloned().expect("factor");
            let mut heavy = light.clone();
            let old = base.risk.factors[&id].weight;
            light.risk.factors.get_mut(&id).expect("factor").weight = old.min(w);
            heavy.risk.factors.get_mut(&id).expect("factor").weight = old.max(w);
            let as_of = date_plus(i.days);
            prop_assert!(run(&heavy, &i, as_of).score >= run(&light, &i, as_of).score, "{id}");
        }

        #[test]
        fn higher_peer_scores_and_cvss_never_lower_the_score(i in arb_inputs(), bump in 0.0f64..50.0) {
            let kb = kb();
            let as_of = date_plus(i.days);
            let mut up = i.clone();
            for f in &mut up.flows {
                f.peer_score = f.peer_score.filter(|p| !p.is_nan()).map(|p| p + bump);
            }
            for v in &mut up.vulns {
                if !v.cvss_base_score.is_nan() { v.cvss_base_score += bump / 10.0; }
            }
            let mut down = i.clone();
            for f in &mut down.flows {
                f.peer_score = f.peer_score.filter(|p| !p.is_nan());
            }
            prop_assert!(run(kb, &up, as_of).score >= run(kb, &down, as_of).score);
        }
    }
}
