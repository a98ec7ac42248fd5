//! Monitor mode: the active version decides every flow of every applied batch inside
//! `apply`; denied flows become deduplicated policy-violation alerts, hits are counted, and
//! every replica (and one restored from a snapshot, whose compile cache is gone) agrees.

use crate::*;
use wardline_aggregator::policy::api::draft_for;
use wardline_aggregator::state::alerts::{AlertAction, AlertKind, AlertState, Triage};
use wardline_aggregator::state::policy::{parse, DraftRule};
use wardline_aggregator::state::{ClusterState, Command};
use wardline_intel::policy::{Action, CompiledPolicy, Flow, FlowEnd, PolicyDevice};
use wardline_intel::{Category, Criticality};

const HOUR_US: u64 = 3_600_000_000;

fn violations(s: &ClusterState) -> Vec<(String, String, u64, AlertState)> {
    s.alerts()
        .alerts()
        .values()
        .filter(|a| a.kind == AlertKind::PolicyViolation)
        .map(|a| (a.device.clone(), a.target.clone(), a.count, a.state))
        .collect()
}

#[test]
fn denied_flows_become_one_alert_per_device_and_target_and_hits_are_counted() {
    let mut s = ClusterState::new();
    // Before any policy: flows raise no violation.
    assert_eq!(apply_all(&mut s, &[traffic(1, T0_US)]), [true]);
    assert!(violations(&s).is_empty());
    assert!(s.apply(&Command::PolicyVersion(proposal(None, POLICY_V1, "first"))).applied);
    assert!(s.apply(&traffic(2, T0_US + HOUR_US)).applied);
    let pump = PUMP.to_string();
    assert_eq!(violations(&s), [(pump.clone(), "10.0.40.9 tcp/23".to_string(), 2, AlertState::Open)]);
    let alert = s.alerts().alerts().values().find(|a| a.kind == AlertKind::PolicyViolation).unwrap();
    assert!(alert.evidence.contains("rule \"no telnet\" of policy version 1"), "{}", alert.evidence);
    let h = s.policy().hits().clone();
    assert_eq!((h.version, h.flows, h.violations), (1, 4, 2));
    assert_eq!(h.rules, [1, 2], "pumps to servers once, no telnet twice");
    assert_eq!((h.default, h.actions), (1, [2, 2, 0]));
    assert_eq!((h.group_src.clone(), h.group_dst.clone()), (vec![4, 0], vec![0, 3]), "pumps send, servers receive");

    // A re-sent batch is a duplicate: nothing counted twice.
    assert!(!s.apply(&traffic(2, T0_US + HOUR_US)).applied);
    assert_eq!(s.policy().hits().flows, 4);

    // v2 also denies pumps -> external: the flow through the router is a new violation (the
    // router's MAC does not hold the Internet address, so the destination is that address).
    assert!(s.apply(&Command::PolicyVersion(proposal(Some(1), &policy_v2(), "pumps inside"))).applied);
    assert_eq!(s.policy().hits().flows, 0, "hits restart with the version");
    assert!(s.apply(&traffic(3, T0_US + 2 * HOUR_US)).applied);
    let mut v = violations(&s);
    v.sort();
    assert_eq!(
        v,
        [
            (pump.clone(), "10.0.40.9 tcp/23".to_string(), 4, AlertState::Open),
            (pump, "93.184.216.34 tcp/443".to_string(), 1, AlertState::Open),
        ]
    );
    assert_eq!(s.policy().hits().violations, 3);
}

#[test]
fn every_replica_and_one_restored_from_a_snapshot_decide_the_same() {
    let cmds = vec![
        Command::PolicyVersion(proposal(None, POLICY_V1, "first")),
        traffic(1, T0_US),
        Command::PolicyVersion(proposal(Some(1), &policy_v2(), "second")),
        traffic(2, T0_US + HOUR_US),
        traffic(3, T0_US + 2 * HOUR_US),
    ];
    let mut a = ClusterState::new();
    apply_all(&mut a, &cmds);
    for cut in 1..cmds.len() {
        let mut b = ClusterState::new();
        apply_all(&mut b, &cmds[..cut]);
        let bytes = bincode::serde::encode_to_vec(&b, bincode::config::standard()).unwrap();
        let (mut b, _): (ClusterState, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        apply_all(&mut b, &cmds[cut..]);
        assert_eq!(a, b, "snapshot after command {cut}");
        assert_eq!(violations(&a), violations(&b));
    }
    assert_eq!(violations(&a).len(), 2);
    assert_eq!(a.policy().hits().flows, 8);
}

/// The oracle: the engine compiled against full device attributes (addresses included)
/// must deny exactly the flows the replicated state counts, on generated traffic.
#[test]
fn generated_flows_are_denied_exactly_as_the_engine_decides() {
    let macs: Vec<MacAddr> = (1..=6).map(|i| MacAddr([0x00, 0x09, 0xfb, 0x20, 0x00, i])).collect();
    let ips: Vec<String> = (1..=6).map(|i| format!("10.0.50.{i}")).collect();
    let text = r#"
[policy]
name = "generated"
default = "deny"
[[group]]
name = "a"
members = ["00:09:fb:20:00:01", "00:09:fb:20:00:02", "00:09:fb:20:00:03"]
[[group]]
name = "b"
members = ["00:09:fb:20:00:03", "00:09:fb:20:00:04"]
[[scope]]
group = "b"
default = "allow"
[[rule]]
name = "a to b web"
from = ["a"]
to = ["b"]
protocol = "tcp"
ports = [80, "8000-8080"]
[[rule]]
name = "nothing to 5"
from = ["any"]
to = ["10.0.50.5/32"]
action = "deny"
[[rule]]
name = "a outward"
from = ["a"]
to = ["external"]
protocol = "tcp"
ports = [443]
"#;
    let policy = parse(text).unwrap();
    let devices: Vec<PolicyDevice> = macs
        .iter()
        .zip(&ips)
        .map(|(m, ip)| {
            let mut d = PolicyDevice::new(*m, "x", Category::It, Criticality::NonClinical);
            d.ips = vec![ip.parse().unwrap()];
            d
        })
        .collect();
    let engine = CompiledPolicy::compile(&policy, &devices);
    let membership = wardline_aggregator::policy::resolve::membership(&policy, &devices);
    let mut s = ClusterState::new();
    let mut p = proposal(None, text, "generated");
    p.membership = membership;
    assert!(s.apply(&Command::PolicyVersion(p)).applied);

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let ports = [22u16, 80, 443, 8000, 8080, 8081, 23];
    let mut expected = 0u64;
    for seq in 1..=20u64 {
        let mut flows = Vec::new();
        for _ in 0..25 {
            let a = next(6) as usize;
            let to_outside = next(4) == 0;
            let (b_mac, b_ip) = if to_outside {
                (ROUTER, format!("203.0.113.{}", next(200) + 1))
            } else {
                let b = next(6) as usize;
                (macs[b], ips[b].clone())
            };
            let port = ports[next(ports.len() as u64) as usize];
            let f = flow((macs[a], &ips[a]), (b_mac, &b_ip), port, T0_US + seq * 1000 + flows.len() as u64);
            let v = engine.evaluate(&Flow {
                src: FlowEnd { device: None, ip: Some(f.a_ip) },
                dst: FlowEnd { device: None, ip: Some(f.b_ip) },
                ip_proto: 6,
                dst_port: port,
                app: None,
                dst_domain: None,
            });
            expected += (v.action == Action::Deny) as u64;
            flows.push(f);
        }
        let devs = macs.iter().zip(&ips).map(|(m, ip)| device(*m, ip, T0_US)).collect();
        assert!(s.apply(&batch(seq, devs, flows)).applied);
    }
    let h = s.policy().hits();
    assert_eq!(h.flows, 500);
    assert_eq!(h.violations, expected);
    assert!(expected > 20 && expected < 480, "the generated traffic exercises both outcomes: {expected}");
}

#[test]
fn add_to_policy_resolves_the_alert_and_drafts_a_rule_that_allows_the_flow() {
    let mut s = ClusterState::new();
    s.apply(&Command::PolicyVersion(proposal(None, POLICY_V1, "first")));
    s.apply(&traffic(1, T0_US));
    let alert = s.alerts().alerts().values().find(|a| a.kind == AlertKind::PolicyViolation).unwrap().clone();
    let toml = draft_for(alert.id, &alert.device, &alert.target).unwrap();
    let draft =
        DraftRule { id: 0, alert: Some(alert.id), author: "op-analyst".into(), at_ms: 2, toml, note: String::new() };
    let triage = |action| Triage { id: alert.id, action, by: "op-analyst".into(), at_ms: 2, note: "draft".into() };
    assert!(
        s.apply(&Command::PolicyViolationToDraft { triage: triage(AlertAction::Resolved), draft: draft.clone() })
            .applied
    );
    assert_eq!(s.alerts().get(alert.id).unwrap().state, AlertState::Resolved);
    assert_eq!(s.policy().drafts().len(), 1);
    // Resolving twice is refused, and then no second draft appears either.
    let before = s.clone();
    assert!(
        !s.apply(&Command::PolicyViolationToDraft { triage: triage(AlertAction::Resolved), draft: draft.clone() })
            .applied
    );
    assert_eq!(s, before);

    // The drafted rule, placed before "no telnet", allows the flow that was denied.
    let stored = &s.policy().drafts().values().next().unwrap().toml;
    let (head, rules) = POLICY_V1.split_once("[[rule]]").unwrap();
    let edited = format!("{head}{stored}\n[[rule]]{rules}");
    let policy = parse(&edited).unwrap_or_else(|e| panic!("{e}\n{edited}"));
    let devices = vec![
        PolicyDevice {
            ips: vec![PUMP_IP.parse().unwrap()],
            ..PolicyDevice::new(PUMP, "x", Category::It, Criticality::NonClinical)
        },
        PolicyDevice {
            ips: vec![SERVER_IP.parse().unwrap()],
            ..PolicyDevice::new(SERVER, "x", Category::It, Criticality::NonClinical)
        },
    ];
    let v = CompiledPolicy::compile(&policy, &devices).evaluate(&Flow {
        src: FlowEnd { device: None, ip: Some(PUMP_IP.parse().unwrap()) },
        dst: FlowEnd { device: None, ip: Some(SERVER_IP.parse().unwrap()) },
        ip_proto: 6,
        dst_port: 23,
        app: None,
        dst_domain: None,
    });
    assert_eq!(v.action, Action::Allow);
    assert!(s.apply(&Command::PolicyRemoveDraft { id: 1 }).applied);
    assert!(!s.apply(&Command::PolicyRemoveDraft { id: 1 }).applied);
}
