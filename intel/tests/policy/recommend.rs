//! Least-privilege recommendation from expected communications and observed flows.

use super::support::{device, kb, mac};
use wardline_intel::policy::{
    parse_policy, recommend, safety_check, CompiledPolicy, Endpoint, ObservedEnd, ObservedFlow, PolicyDevice,
};
use wardline_intel::{FlowTag, Transport};

fn hospital() -> Vec<PolicyDevice> {
    let mut pumps: Vec<PolicyDevice> = (1..=3)
        .map(|i| {
            let mut d = device(i, "infusion_pump", &format!("10.1.0.{i}"));
            d.profile = Some("bd_alaris_pcu_8015".into());
            d
        })
        .collect();
    let mut server = device(10, "pump_server", "10.2.0.10");
    server.profile = Some("bd_alaris_systems_manager".into());
    pumps.extend([
        server,
        device(11, "hl7_interface_engine", "10.2.0.11"),
        device(12, "workstation", "10.4.0.12"),
        device(13, "ct", "10.5.0.13"),
        device(14, "pacs", "10.5.0.14"),
        device(15, "server", "10.2.0.53"),
    ]);
    pumps
}

#[allow(clippy::too_many_arguments)]
fn seen(
    src: ObservedEnd,
    dst: ObservedEnd,
    t: Transport,
    port: u16,
    count: u64,
    first: u64,
    tag: FlowTag,
    comm: &str,
) -> ObservedFlow {
    ObservedFlow {
        src,
        dst,
        transport: t,
        port,
        app: None,
        count,
        first_seen: first,
        last_seen: first + 3600,
        context: tag,
        comm: (!comm.is_empty()).then(|| comm.to_string()),
        reason: format!("{tag}: label for the test"),
    }
}

fn dev(n: u32) -> ObservedEnd {
    ObservedEnd::Device(mac(n))
}

fn observed() -> Vec<ObservedFlow> {
    let web = ObservedEnd::Address { ip: "203.0.113.10".parse().expect("ip"), domain: Some("Portal.Example.".into()) };
    vec![
        seen(dev(1), dev(10), Transport::Tcp, 3613, 100, 1000, FlowTag::Required, "bd_alaris_pcu_8015#comm1"),
        seen(dev(2), dev(10), Transport::Tcp, 3613, 50, 500, FlowTag::Required, "bd_alaris_pcu_8015#comm1"),
        seen(dev(12), web, Transport::Tcp, 443, 10, 2000, FlowTag::Acceptable, "workstation#comm1"),
        seen(dev(1), dev(15), Transport::Udp, 53, 30, 100, FlowTag::Acceptable, "global.dns"),
        seen(dev(12), dev(1), Transport::Tcp, 23, 2, 300, FlowTag::Risky, "global.telnet"),
        seen(dev(13), dev(12), Transport::Tcp, 40000, 1, 400, FlowTag::Unknown, ""),
        seen(dev(99), dev(10), Transport::Tcp, 3613, 5, 400, FlowTag::Required, "bd_alaris_pcu_8015#comm1"),
    ]
}

#[test]
fn proposal_allows_what_is_needed_with_justifications_and_leaves_out_the_risky() {
    let devices = hospital();
    let r = recommend(kb(), &devices, &observed(), "proposal");
    let pump_rule =
        r.rules.iter().find(|p| p.justification.kb_entries == ["bd_alaris_pcu_8015#comm1"]).expect("pump rule");
    assert_eq!(pump_rule.rule.from, vec![Endpoint::Group("class_infusion_pump".into())]);
    assert_eq!(pump_rule.rule.to, vec![Endpoint::Group("class_pump_server".into())]);
    assert_eq!(pump_rule.rule.protocol, Transport::Tcp);
    assert_eq!(pump_rule.rule.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["3613"]);
    let ev = &pump_rule.justification.observed;
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].aggregates, ev[0].count, ev[0].first_seen, ev[0].last_seen), (2, 150, 500, 4600));

    // The workstation's web access goes to the DNS name seen, not to the whole internet.
    let web = r.rules.iter().find(|p| p.justification.kb_entries == ["workstation#comm1"]).expect("web rule");
    assert_eq!(web.rule.to, vec![Endpoint::Domain("portal.example".into())]);

    // Required by the knowledge base though not observed: CT stores to PACS.
    let store = r
        .rules
        .iter()
        .find(|p| {
            p.rule.from == vec![Endpoint::Group("class_ct".into())]
                && p.rule.to == vec![Endpoint::Group("class_pacs".into())]
        })
        .expect("ct -> pacs from the KB");
    assert!(store.justification.observed.is_empty());
    assert!(store.justification.kb_entries[0].starts_with("pacs#"), "{:?}", store.justification);
    assert!(store.rule.ports.iter().any(|p| p.contains(104)) && store.rule.ports.iter().any(|p| p.contains(11112)));

    // Risky and unknown flows are listed with their reasons, largest first; the flow of a
    // device not in the list is counted and skipped.
    assert_eq!(r.left_out.len(), 2, "{:?}", r.left_out);
    assert_eq!((r.left_out[0].port, r.left_out[0].context), (23, FlowTag::Risky));
    assert!(r.left_out[0].reason.starts_with("risky"));
    assert_eq!(r.left_out[0].comm.as_deref(), Some("global.telnet"));
    assert_eq!((r.left_out[1].port, r.left_out[1].context), (40000, FlowTag::Unknown));
    assert!(r.left_out[1].reason.contains("review"));
    assert_eq!(r.skipped, 1);

    // Everything required and acceptable that was observed is allowed by a rule.
    assert_eq!((r.required.aggregates, r.required.aggregates_allowed, r.required.count_allowed), (2, 2, 150));
    assert_eq!((r.acceptable.aggregates, r.acceptable.aggregates_allowed), (2, 2));
    assert_eq!(r.required.share(), 1.0);

    // And nothing risky is allowed by the proposal.
    let c = CompiledPolicy::compile(&r.policy, &devices);
    let telnet = wardline_intel::policy::Flow {
        src: wardline_intel::policy::FlowEnd { device: c.device(&mac(12)), ip: None },
        dst: wardline_intel::policy::FlowEnd { device: c.device(&mac(1)), ip: None },
        ip_proto: 6,
        dst_port: 23,
        app: None,
        dst_domain: None,
    };
    assert_ne!(c.evaluate(&telnet).action, wardline_intel::policy::Action::Allow);
}

#[test]
fn proposal_is_a_valid_safe_deterministic_policy() {
    let devices = hospital();
    let r = recommend(kb(), &devices, &observed(), "proposal");
    let canon = r.policy.to_canonical();
    let parsed = parse_policy("proposal", &canon).unwrap_or_else(|e| panic!("{e}\n{canon}"));
    assert_eq!(parsed.to_canonical(), canon);
    let c = CompiledPolicy::compile(&parsed, &devices);
    let safety = safety_check(kb(), &parsed, &devices, &c);
    assert!(safety.findings.is_empty(), "{:?}", safety.findings);
    // Input order does not matter.
    let mut reversed = observed();
    reversed.reverse();
    let mut shuffled_devices = hospital();
    shuffled_devices.reverse();
    assert_eq!(recommend(kb(), &shuffled_devices, &reversed, "proposal").policy.to_canonical(), canon);
    assert_eq!(r.rules.len(), r.policy.rules.len());
}

#[test]
fn many_external_destinations_collapse_to_external() {
    let devices = hospital();
    let flows: Vec<ObservedFlow> = (0..40u8)
        .map(|i| {
            let dst = ObservedEnd::Address { ip: format!("198.51.100.{i}").parse().expect("ip"), domain: None };
            seen(dev(12), dst, Transport::Tcp, 443, 1, 0, FlowTag::Acceptable, "workstation#comm1")
        })
        .collect();
    let r = recommend(kb(), &devices, &flows[..5], "p");
    let web = r.rules.iter().find(|p| p.justification.kb_entries == ["workstation#comm1"]).expect("rule");
    assert_eq!(web.rule.to.len(), 5);
    assert!(matches!(web.rule.to[0], Endpoint::Network(_)));
    let r = recommend(kb(), &devices, &flows, "p");
    let web = r.rules.iter().find(|p| p.justification.kb_entries == ["workstation#comm1"]).expect("rule");
    assert_eq!(web.rule.to, vec![Endpoint::External]);
    assert_eq!(web.justification.observed[0].aggregates, 40);
}
