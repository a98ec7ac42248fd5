//! The exporter-side reference evaluation (`ResolvedPolicy::verdict`) on the fixture: rule
//! order, segment defaults, the policy default for sources in no segment, ports, protocols
//! and the destination kinds.

use wardline_export::{Action, Destination, Flow, FlowProtocol, PortRange, Protocol, ResolvedPolicy, Rule};

fn clinic() -> ResolvedPolicy {
    serde_json::from_str(include_str!("fixtures/clinic.json")).expect("fixture parses")
}

fn flow(src: &str, dst: &str, protocol: FlowProtocol, dst_port: u16) -> Flow {
    Flow { src: src.parse().unwrap(), dst: dst.parse().unwrap(), protocol, dst_port }
}

fn decide(p: &ResolvedPolicy, f: Flow) -> (Action, Option<String>) {
    let v = p.verdict(&f);
    (v.action, v.rule)
}

use FlowProtocol::{Icmp, Tcp, Udp};

#[test]
fn rules_allow_their_flows_and_defaults_decide_the_rest() {
    let p = clinic();
    let allow = |r: &str| (Action::Allow, Some(r.to_string()));
    // r1: pump -> HL7 engine on 2575 only, tcp only.
    assert_eq!(decide(&p, flow("198.18.1.10", "198.18.3.10", Tcp, 2575)), allow("r1"));
    assert_eq!(decide(&p, flow("198.18.1.10", "198.18.3.10", Tcp, 2576)), (Action::Deny, None));
    assert_eq!(decide(&p, flow("198.18.1.10", "198.18.3.10", Udp, 2575)), (Action::Deny, None));
    // r2: a port range, both ends included.
    assert_eq!(decide(&p, flow("198.18.1.20", "198.18.3.10", Tcp, 8000)), allow("r2"));
    assert_eq!(decide(&p, flow("198.18.1.20", "198.18.3.10", Tcp, 8010)), allow("r2"));
    assert_eq!(decide(&p, flow("198.18.1.20", "198.18.3.10", Tcp, 8011)), (Action::Deny, None));
    // r3: an external network.
    assert_eq!(decide(&p, flow("198.18.1.10", "198.19.0.200", Udp, 123)), allow("r3"));
    assert_eq!(decide(&p, flow("198.18.1.10", "198.19.1.1", Udp, 123)), (Action::Deny, None));
    // r7: icmp regardless of port.
    assert_eq!(decide(&p, flow("198.18.1.20", "198.18.3.10", Icmp, 0)), allow("r7"));
    // IT's default is allow; an unmanaged IT host reaches anything.
    assert_eq!(decide(&p, flow("198.18.2.20", "198.18.1.10", Tcp, 443)), (Action::Allow, None));
    // Sources in no segment: r5 or the policy default (deny).
    assert_eq!(decide(&p, flow("198.19.0.10", "198.18.1.10", Tcp, 22)), allow("r5"));
    assert_eq!(decide(&p, flow("198.19.0.10", "198.18.1.20", Tcp, 22)), (Action::Deny, None));
    // IPv6 members take part like IPv4 ones.
    assert_eq!(decide(&p, flow("2001:db8:1::10", "2001:db8:3::10", Tcp, 2575)), allow("r1"));
}

#[test]
fn first_matching_rule_is_reported_and_domains_never_match_addresses() {
    let mut p = clinic();
    p.rules.insert(
        0,
        Rule {
            id: "r0".into(),
            source: "infusion-pumps".into(),
            destination: Destination::Domain("hl7.example".into()),
            protocol: Protocol::Any,
            ports: vec![],
            application: None,
        },
    );
    p.rules.push(Rule {
        id: "r9".into(),
        source: "infusion-pumps".into(),
        destination: Destination::Cidr("198.18.3.0/24".parse().unwrap()),
        protocol: Protocol::Tcp,
        ports: vec![PortRange { start: 2000, end: 3000 }],
        application: None,
    });
    let v = p.verdict(&flow("198.18.1.10", "198.18.3.10", Tcp, 2575));
    assert_eq!(v.rule.as_deref(), Some("r1"), "r1 comes before r9; the domain rule matches no address");
    let v = p.verdict(&flow("198.18.1.10", "198.18.3.10", Tcp, 2999));
    assert_eq!(v.rule.as_deref(), Some("r9"));
}

#[test]
fn fixture_round_trips_through_json() {
    let p = clinic();
    let text = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<ResolvedPolicy>(&text).unwrap(), p);
    assert!(serde_json::from_str::<ResolvedPolicy>(&text.replace("198.18.1.0/24", "198.18.1.1/24")).is_err());
}
