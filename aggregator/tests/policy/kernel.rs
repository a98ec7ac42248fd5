//! Proof on a real packet filter, end to end (issue 12 item 8): the generated hospital's
//! traffic (wardline-sim, main campus) is replayed between network namespaces — a router
//! between a clinical, an IT and a server segment, plus an outside network for the Internet
//! peers, on veth pairs with 198.18.0.0/15 addresses only — with the nftables export of the
//! stored policy version loaded into the router. The same flows are written as flow rows into
//! a real ClickHouse 18.16 through the ClickHouse sink, and the replay SQL runs over them for
//! that version. The flows the kernel dropped must be exactly the flows the replay says the
//! policy denies, and exactly those both in-memory evaluators deny.
//!
//! The lab, the probes and the comparison helpers are the export crate's
//! (`export/tests/netlab`), shared rather than copied. Needs root; skips with the reason
//! otherwise (CI runs as root).

#[path = "../../../export/tests/netlab/mod.rs"]
mod netlab;

use netlab::{assert_kernel_matches_policy, assert_lab_forwards_everything, describe, probe, skip_reason};
use netlab::{Lab, Listeners, Net};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use ulid::Ulid;
use wardline_aggregator::policy::resolve::{self, membership};
use wardline_aggregator::sink::clickhouse::ClickHouseSink;
use wardline_aggregator::sink::replay::{blocked_by_workflow, verdicts, ReplayContext};
use wardline_aggregator::sink::FlowSink;
use wardline_aggregator::state::policy::{parse, PolicyProposal};
use wardline_aggregator::state::{ClusterState, Command};
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_common::{FlowRecord, MacAddr};
use wardline_export::targets::nftables::Nftables;
use wardline_export::{Exporter, Flow, FlowProtocol};
use wardline_intel::policy::{CompiledPolicy, FlowEnd, PolicyDevice};
use wardline_intel::{Category, Criticality, KnowledgeBase};

/// The campus whose devices are placed in the lab.
const CAMPUS: &str = "main-campus";

/// The lab segment of a hospital zone: 0 clinical, 1 IT, 2 servers; `None` for zones left out
/// (the core switch's DHCP relay).
fn segment_of(zone: &str) -> Option<usize> {
    match zone {
        "ward" | "icu" | "radiology" | "lab" | "pharmacy" => Some(0),
        "admin" | "voice" | "building" => Some(1),
        "datacenter" => Some(2),
        _ => None,
    }
}

const SEGMENT_KEYS: [&str; 3] = ["clin", "it", "srv"];

/// The hospital's policy for the campus: class groups, the clinical workflows and IT
/// services the campus needs, default deny. A pump browsing the web, TeamViewer on the MR,
/// HL7 to an unexpected host and plain-HTTP browsing are what it leaves blocked. The
/// monitor rule passes the kernel (exports treat monitor as allow) and is not a replay
/// denial either. The telnet deny rule follows every allow rule, so it repeats the default
/// and is left out of the export.
const POLICY: &str = r#"
[policy]
name = "main-campus"
default = "deny"

[[group]]
name = "pumps"
match = 'class in ["infusion_pump", "pca_pump"]'

[[group]]
name = "pump_servers"
match = 'class == "pump_server"'

[[group]]
name = "modalities"
match = 'class in ["ct", "mr", "xray", "ultrasound"]'

[[group]]
name = "imaging_servers"
match = 'class in ["pacs", "modality_worklist"]'

[[group]]
name = "hl7_senders"
match = 'class in ["central_station", "anesthesia_machine", "ventilator", "telemetry", "patient_monitor", "nurse_call", "lab_analyzer", "blood_gas"]'

[[group]]
name = "hl7_receivers"
match = 'class in ["hl7_interface_engine", "lis", "central_station"]'

[[group]]
name = "desktops"
match = 'class in ["workstation", "thin_client"]'

[[group]]
name = "servers"
match = 'class == "server"'

[[group]]
name = "clinical_devices"
match = 'category == "medical"'

[[group]]
name = "building"
match = 'class in ["badge_reader", "rtls", "bms_hvac", "camera"]'

[[group]]
name = "phones"
match = 'class in ["voip_phone", "mobile"]'

[[group]]
name = "cabinets"
match = 'class == "medication_cabinet"'

[[rule]]
name = "pump library and status"
from = ["pumps"]
to = ["pump_servers"]
protocol = "tcp"
ports = [443, 3613]

[[rule]]
name = "images and worklist"
from = ["modalities"]
to = ["imaging_servers"]
protocol = "tcp"
ports = [104, 11112]

[[rule]]
name = "hl7 and nurse call"
from = ["hl7_senders"]
to = ["hl7_receivers"]
protocol = "tcp"
ports = [2575, 5001]

[[rule]]
name = "desktop services"
from = ["desktops"]
to = ["servers"]
protocol = "tcp"
ports = [443, 445, 3389]

[[rule]]
name = "name service and time"
from = ["desktops", "clinical_devices"]
to = ["servers"]
protocol = "udp"
ports = [53, 123]

[[rule]]
name = "interfaces to the engine"
from = ["servers"]
to = ["hl7_receivers"]
protocol = "tcp"
ports = [2575]

[[rule]]
name = "video and building control"
from = ["servers"]
to = ["building"]
protocol = "tcp"
ports = [554]

[[rule]]
name = "building to servers"
from = ["building"]
to = ["servers"]
protocol = "any"
ports = [1144, 3001]

[[rule]]
name = "voice"
from = ["phones"]
to = ["servers"]
protocol = "udp"
ports = [5060]

[[rule]]
name = "vocera, watched first"
from = ["phones"]
to = ["servers"]
protocol = "udp"
ports = [5002]
action = "monitor"

[[rule]]
name = "cabinets to servers"
from = ["cabinets"]
to = ["servers"]
protocol = "tcp"
ports = [443]

[[rule]]
name = "web through the proxy only"
from = ["desktops"]
to = ["198.19.0.0/24"]
protocol = "tcp"
ports = [443]

[[rule]]
name = "no telnet"
from = ["any"]
to = ["any"]
protocol = "tcp"
ports = [23]
action = "deny"
"#;

/// One hospital device placed in the lab.
struct Placed {
    mac: MacAddr,
    class: String,
    segment: usize,
    lab_ip: IpAddr,
}

/// One driven flow and what the hospital's capture said about it.
struct Driven {
    flow: Flow,
    app: String,
    a_mac: MacAddr,
    b_mac: MacAddr,
}

/// The lab networks: one per segment, holding the placed devices' addresses, and the
/// outside network holding one address per Internet peer of the capture.
fn nets(placed: &[Placed], outside: &[IpAddr]) -> Vec<Net> {
    let ifs = ["r-clin", "r-it", "r-srv"];
    let gateways = ["198.18.1.1", "198.18.2.1", "198.18.3.1"];
    let mut nets: Vec<Net> = (0..3)
        .map(|s| Net {
            key: SEGMENT_KEYS[s],
            router_if: ifs[s],
            gateway: gateways[s],
            prefix: 24,
            hosts: placed.iter().filter(|p| p.segment == s).map(|p| p.lab_ip).collect(),
        })
        .collect();
    nets.push(Net { key: "out", router_if: "r-out", gateway: "198.19.0.1", prefix: 24, hosts: outside.to_vec() });
    nets
}

/// The campus devices (with lab addresses) and the flows of the capture between lab
/// segments or to the Internet, one per (source, destination, protocol, port).
fn hospital_scenario(truth: &wardline_sim::GroundTruth) -> (Vec<Placed>, Vec<IpAddr>, Vec<Driven>) {
    let mut placed: Vec<Placed> = Vec::new();
    let mut by_truth_ip: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut next_host = [10u8; 3];
    for d in truth.devices.iter().filter(|d| d.site == CAMPUS) {
        let Some(segment) = segment_of(&d.zone) else { continue };
        let lab_ip = IpAddr::V4(Ipv4Addr::new(198, 18, segment as u8 + 1, next_host[segment]));
        next_host[segment] += 1;
        for b in d.bindings.iter().filter(|b| b.site == CAMPUS) {
            by_truth_ip.entry(b.ip).or_insert(placed.len());
        }
        placed.push(Placed { mac: d.mac, class: d.class.clone(), segment, lab_ip });
    }
    let internet = |ip: &Ipv4Addr| !(ip.is_private() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback());
    let mut outside: BTreeMap<Ipv4Addr, IpAddr> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut driven = Vec::new();
    let router_mac = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x01]);
    for f in truth.flows.iter().filter(|f| matches!(f.ip_proto, 6 | 17)) {
        let Some(&a) = by_truth_ip.get(&f.a_ip) else { continue };
        let (dst, b_mac) = match by_truth_ip.get(&f.b_ip) {
            // Traffic inside one segment never crosses the router.
            Some(&b) if placed[b].segment == placed[a].segment => continue,
            Some(&b) => (placed[b].lab_ip, placed[b].mac),
            None if internet(&f.b_ip) => {
                let n = outside.len() as u8;
                (*outside.entry(f.b_ip).or_insert(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 10 + n))), router_mac)
            }
            None => continue,
        };
        let protocol = if f.ip_proto == 6 { FlowProtocol::Tcp } else { FlowProtocol::Udp };
        let flow = Flow { src: placed[a].lab_ip, dst, protocol, dst_port: f.b_port };
        if seen.insert(flow) {
            driven.push(Driven { flow, app: f.app.clone(), a_mac: placed[a].mac, b_mac });
        }
    }
    (placed, outside.into_values().collect(), driven)
}

fn policy_devices(placed: &[Placed]) -> Vec<PolicyDevice> {
    let kb = KnowledgeBase::builtin().expect("built-in knowledge base");
    placed
        .iter()
        .map(|p| {
            let (category, criticality) = kb
                .class(&p.class)
                .map(|c| (c.category, c.criticality))
                .unwrap_or((Category::It, Criticality::NonClinical));
            let mut d = PolicyDevice::new(p.mac, &p.class, category, criticality);
            d.ips = vec![p.lab_ip];
            d
        })
        .collect()
}

#[test]
fn the_kernel_drops_exactly_the_hospital_flows_the_clickhouse_replay_blocks() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED the_kernel_drops_exactly_the_hospital_flows_the_clickhouse_replay_blocks: {why}");
        return;
    }
    // The generated hospital, with its risky behaviours (a pump on the web, TeamViewer, ...).
    let dir = tempfile::tempdir().unwrap();
    let mut opts = wardline_sim::GenerateOptions::new(wardline_sim::Scenario::Hospital);
    opts.seed = 7;
    opts.risky = true;
    let truth = wardline_sim::generate(&opts, &dir.path().join("hospital.pcap")).expect("generate the hospital");
    let (placed, outside, driven) = hospital_scenario(&truth);
    let flows: Vec<Flow> = driven.iter().map(|d| d.flow).collect();
    let classes: BTreeSet<&str> = placed.iter().map(|p| p.class.as_str()).collect();
    assert!(
        classes.is_superset(&["infusion_pump", "pump_server", "ct", "pacs", "workstation", "server"].into()),
        "the campus lacks device classes the policy is about: {classes:?}"
    );
    let udp = flows.iter().filter(|f| f.protocol == FlowProtocol::Udp).count();
    assert!(udp > 0 && udp < flows.len(), "the scenario drives both TCP and UDP");

    // The policy as the cluster stores it: the devices in the inventory, the version with
    // its membership resolved from their classes, read back the way the export API does.
    let devices = policy_devices(&placed);
    let text = crate::canonical(POLICY);
    let mut state = ClusterState::new();
    let observed = placed.iter().map(|p| crate::device(p.mac, &p.lab_ip.to_string(), crate::T0_US)).collect::<Vec<_>>();
    assert!(state.apply(&crate::batch(1, observed, vec![])).applied);
    let proposal = PolicyProposal {
        base: None,
        text: text.clone(),
        author: "op-admin".into(),
        message: "campus enforcement".into(),
        at_ms: crate::T0_US / 1000,
        membership: membership(&parse(&text).unwrap(), &devices),
        rollback_of: None,
    };
    assert!(state.apply(&Command::PolicyVersion(proposal)).applied, "the policy version is stored");
    let stored = state.policy().active().unwrap().clone();
    let policy = parse(&stored.text).unwrap();
    let groups = state.policy().membership().to_vec();
    let resolved = resolve::to_export(&policy, stored.version, &groups, &resolve::records(&state)).expect("exportable");
    let ruleset = Nftables.render(&resolved).expect("nftables export renders");

    // The lab: nothing dropped before the export is loaded.
    let lab = Lab::create(&nets(&placed, &outside)).expect("lab");
    let ports: Vec<u16> = flows.iter().map(|f| f.dst_port).collect::<BTreeSet<_>>().into_iter().collect();
    let listeners = Listeners::open(&lab, &ports);
    assert_lab_forwards_everything(&lab, &listeners, &flows);
    lab.in_router_stdin("nft", &["-c", "-f", "-"], &ruleset).expect("nft -c accepts the export");
    lab.in_router_stdin("nft", &["-f", "-"], &ruleset).expect("nft loads the export");
    let reached = probe(&lab, &listeners, &flows);
    let dropped: BTreeSet<Flow> = flows.iter().copied().filter(|f| !reached.contains(f)).collect();

    // The same flows as the sensors would have stored them, in a real ClickHouse.
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sink = rt.block_on(ClickHouseSink::connect(&ch.http_url, "wardline_kernel")).expect("ClickHouse sink");
    let batch = Ulid::from_parts(1, 8);
    let rows: Vec<FlowRecord> = driven
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut r =
                crate::flow((d.a_mac, "198.18.0.1"), (d.b_mac, "198.18.0.2"), d.flow.dst_port, crate::T0_US + i as u64);
            r.a_ip = d.flow.src;
            r.b_ip = d.flow.dst;
            r.ip_proto = if d.flow.protocol == FlowProtocol::Tcp { 6 } else { 17 };
            r.app = Cow::Owned(d.app.clone());
            r
        })
        .collect();
    rt.block_on(sink.write_batch(batch, "core", CAMPUS, &rows)).expect("flows stored");
    let by_mac: BTreeMap<MacAddr, &Placed> = placed.iter().map(|p| (p.mac, p)).collect();
    let ctx = ReplayContext {
        group_ips: groups
            .iter()
            .map(|g| (g.group.clone(), g.members.iter().map(|m| by_mac[m].lab_ip).collect()))
            .collect(),
        classes: placed.iter().map(|p| (p.lab_ip, p.class.clone())).collect(),
    };
    let replayed = rt.block_on(verdicts(&sink, &policy, &ctx)).expect("replay");
    assert_eq!(replayed.len(), flows.len(), "every stored flow is replayed once");
    let replay_blocked: BTreeSet<Flow> = replayed
        .iter()
        .inspect(|v| assert_eq!(v.batch_id, batch.to_string()))
        .filter(|v| v.action == "deny")
        .map(|v| flows[v.idx as usize])
        .collect();

    // Kernel and replay: the same flows.
    let only_kernel: BTreeSet<Flow> = dropped.difference(&replay_blocked).copied().collect();
    let only_replay: BTreeSet<Flow> = replay_blocked.difference(&dropped).copied().collect();
    assert!(
        only_kernel.is_empty() && only_replay.is_empty(),
        "kernel and ClickHouse replay disagree.\ndropped by the kernel, not blocked by the replay:\n{}\
         blocked by the replay, passed by the kernel:\n{}",
        describe(&only_kernel),
        describe(&only_replay)
    );
    // And both evaluators: the export's reference and the aggregator's compiled policy.
    assert_kernel_matches_policy(&resolved, &flows, &reached);
    let compiled = CompiledPolicy::compile(&policy, &devices);
    let evaluator_blocked: BTreeSet<Flow> = driven
        .iter()
        .filter(|d| {
            let app = Some(d.app.as_str()).filter(|a| !a.is_empty() && *a != "unknown");
            let f = wardline_intel::policy::Flow {
                src: FlowEnd { device: None, ip: Some(d.flow.src) },
                dst: FlowEnd { device: None, ip: Some(d.flow.dst) },
                ip_proto: if d.flow.protocol == FlowProtocol::Tcp { 6 } else { 17 },
                dst_port: d.flow.dst_port,
                app,
                dst_domain: None,
            };
            compiled.evaluate(&f).action.as_str() == "deny"
        })
        .map(|d| d.flow)
        .collect();
    assert_eq!(evaluator_blocked, dropped, "the compiled evaluator and the kernel disagree");

    // The replay's per-workflow view counts the same flows, and names the risky ones.
    let workflows = rt.block_on(blocked_by_workflow(&sink, &policy, &ctx, 0, u64::MAX, 1000)).unwrap();
    assert_eq!(workflows.iter().map(|w| w.flows).sum::<u64>(), dropped.len() as u64);
    assert!(
        workflows.iter().any(|w| w.src_class == "infusion_pump" && w.app == "http"),
        "the pump browsing the web is blocked: {workflows:#?}"
    );
    for w in &workflows {
        eprintln!("blocked: {} -> {} {} x{} e.g. {:?}", w.src_class, w.dst_class, w.app, w.flows, w.examples);
    }

    // Not vacuous: replaying a version without the desktop services rule over the same
    // stored rows departs from the kernel on exactly the flows that rule let through.
    let mut narrower = policy.clone();
    narrower.rules.retain(|r| r.name != "desktop services");
    let narrow_blocked: BTreeSet<Flow> = rt
        .block_on(verdicts(&sink, &narrower, &ctx))
        .unwrap()
        .iter()
        .filter(|v| v.action == "deny")
        .map(|v| flows[v.idx as usize])
        .collect();
    let newly: BTreeSet<Flow> = narrow_blocked.difference(&dropped).copied().collect();
    assert!(!newly.is_empty() && dropped.is_subset(&narrow_blocked));
    assert!(
        newly.iter().all(|f| f.protocol == FlowProtocol::Tcp && [443, 445, 3389].contains(&f.dst_port)),
        "{}",
        describe(&newly)
    );
    eprintln!(
        "{} hospital flows ({} UDP) between {} devices in {} classes and {} Internet peers: \
         {} dropped by the kernel, the same {} blocked by the ClickHouse replay ({}) in {} workflows",
        flows.len(),
        udp,
        placed.len(),
        classes.len(),
        outside.len(),
        dropped.len(),
        replay_blocked.len(),
        ch.query("SELECT version()").unwrap().trim(),
        workflows.len()
    );
}

/// Runs without root: a rule with protocol `any` and ports (TCP or UDP on those ports) is
/// exported as one tcp and one udp rule, which every packet-filter target renders, instead
/// of an `any` rule with ports that the export model refuses.
#[test]
fn an_any_rule_with_ports_exports_as_a_tcp_and_a_udp_rule() {
    let text = crate::canonical(
        "[policy]\nname = \"x\"\ndefault = \"deny\"\n[[group]]\nname = \"pumps\"\nmembers = [\"00:09:fb:10:00:01\"]\n\
         [[rule]]\nname = \"rtls and badges\"\nfrom = [\"pumps\"]\nto = [\"10.0.40.9\"]\nprotocol = \"any\"\nports = [1144, 3001]\n",
    );
    let mut state = ClusterState::new();
    assert!(state.apply(&crate::traffic(1, crate::T0_US)).applied);
    let proposal =
        crate::PolicyProposal { membership: crate::members()[..1].to_vec(), ..crate::proposal(None, &text, "x") };
    assert!(state.apply(&Command::PolicyVersion(proposal)).applied);
    let policy = parse(&state.policy().active().unwrap().text).unwrap();
    let resolved =
        resolve::to_export(&policy, 1, state.policy().membership(), &resolve::records(&state)).expect("exportable");
    let rules: Vec<(&str, wardline_export::Protocol)> =
        resolved.rules.iter().map(|r| (r.id.as_str(), r.protocol)).collect();
    assert_eq!(
        rules,
        [
            ("rtls and badges (tcp)", wardline_export::Protocol::Tcp),
            ("rtls and badges (udp)", wardline_export::Protocol::Udp)
        ]
    );
    let nft = String::from_utf8(Nftables.render(&resolved).expect("renders")).unwrap();
    assert!(nft.contains("tcp dport { 1144, 3001 }") && nft.contains("udp dport { 1144, 3001 }"), "{nft}");
    for (i, f) in [(6u8, 3001u16), (17, 1144), (1, 0)].into_iter().enumerate() {
        let flow = Flow {
            src: crate::PUMP_IP.parse().unwrap(),
            dst: "10.0.40.9".parse().unwrap(),
            protocol: match f.0 {
                6 => FlowProtocol::Tcp,
                17 => FlowProtocol::Udp,
                _ => FlowProtocol::Icmp,
            },
            dst_port: f.1,
        };
        let want = if i < 2 { wardline_export::Action::Allow } else { wardline_export::Action::Deny };
        assert_eq!(resolved.verdict(&flow).action, want, "{flow:?}");
    }
}
