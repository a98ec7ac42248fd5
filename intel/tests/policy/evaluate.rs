//! The compiled evaluator on hand-written cases, with hit counts.

use super::support::{device, mac, policy};
use wardline_intel::policy::{Action, CompiledPolicy, DecidedBy, Flow, FlowEnd, PolicyDevice};

const POLICY: &str = r#"
[policy]
name = "ward"
default = "deny"

[[group]]
name = "pumps"
match = 'class == "infusion_pump"'

[[group]]
name = "servers"
match = 'class == "pump_server"'

[[group]]
name = "monitors"
match = 'class == "patient_monitor"'

[[group]]
name = "life"
match = 'criticality == "life_sustaining"'

[[scope]]
group = "monitors"
default = "allow"

[[scope]]
group = "life"
default = "monitor"

[[rule]]
name = "no telnet"
from = "any"
to = "any"
protocol = "tcp"
ports = [23]
action = "deny"

[[rule]]
name = "pump status"
from = "pumps"
to = "servers"
protocol = "tcp"
ports = [3613]

[[rule]]
name = "hl7 only"
from = "servers"
to = "10.9.0.0/24"
protocol = "tcp"
ports = ["2575-2576"]
app = "hl7"

[[rule]]
name = "vendor updates"
from = "servers"
to = ["domain:updates.vendor.example", "external"]
protocol = "tcp"
ports = [443]

[[rule]]
name = "dns"
from = "internal"
to = "internal"
protocol = "any"
ports = [53]

[[rule]]
name = "ping"
from = "10.4.0.4"
to = "10.2.0.0/24"
protocol = "any"
"#;

fn devices() -> Vec<PolicyDevice> {
    vec![
        device(1, "infusion_pump", "10.1.0.1"),
        device(2, "pump_server", "10.2.0.2"),
        device(3, "patient_monitor", "10.3.0.3"),
        device(4, "workstation", "10.4.0.4"),
    ]
}

fn flow<'a>(src: &str, dst: &str, proto: u8, port: u16, app: Option<&'a str>, domain: Option<&'a str>) -> Flow<'a> {
    Flow {
        src: FlowEnd { device: None, ip: Some(src.parse().expect("ip")) },
        dst: FlowEnd { device: None, ip: Some(dst.parse().expect("ip")) },
        ip_proto: proto,
        dst_port: port,
        app,
        dst_domain: domain,
    }
}

#[test]
fn verdicts_follow_rules_scopes_and_default() {
    let p = policy(POLICY);
    let devs = devices();
    let c = CompiledPolicy::compile(&p, &devs);
    let rule = |name: &str| DecidedBy::Rule(p.rules.iter().position(|r| r.name == name).expect("rule") as u32);
    let check = |f: Flow, action: Action, by: DecidedBy| {
        let v = c.evaluate(&f);
        assert_eq!((v.action, v.decided_by), (action, by), "{f:?}");
    };
    check(flow("10.1.0.1", "10.2.0.2", 6, 3613, None, None), Action::Allow, rule("pump status"));
    // Reverse direction: not the rule; the pump's scope (life) gives monitor.
    check(flow("10.2.0.2", "10.1.0.1", 6, 3613, None, None), Action::Monitor, DecidedBy::Scope(1));
    // Telnet to the pump: the first rule denies, before any scope.
    check(flow("10.4.0.4", "10.1.0.1", 6, 23, None, None), Action::Deny, rule("no telnet"));
    // A monitor's flow: the monitors scope comes first.
    check(flow("10.3.0.3", "10.4.0.4", 6, 8080, None, None), Action::Allow, DecidedBy::Scope(0));
    // Workstation to workstation-ish address: policy default.
    check(flow("10.4.0.4", "10.99.0.1", 6, 8080, None, None), Action::Deny, DecidedBy::Default);
    // App label must match; the network must contain the destination.
    check(flow("10.2.0.2", "10.9.0.7", 6, 2576, Some("hl7"), None), Action::Allow, rule("hl7 only"));
    check(flow("10.2.0.2", "10.9.0.7", 6, 2576, Some("HL7"), None), Action::Allow, rule("hl7 only"));
    check(flow("10.2.0.2", "10.9.0.7", 6, 2576, Some("http"), None), Action::Deny, DecidedBy::Default);
    check(flow("10.2.0.2", "10.9.0.7", 6, 2576, None, None), Action::Deny, DecidedBy::Default);
    check(flow("10.2.0.2", "10.9.1.7", 6, 2575, Some("hl7"), None), Action::Deny, DecidedBy::Default);
    // Domain (and subdomains) or any external address on 443.
    check(
        flow("10.2.0.2", "10.50.0.1", 6, 443, None, Some("cdn.updates.vendor.example")),
        Action::Allow,
        rule("vendor updates"),
    );
    check(
        flow("10.2.0.2", "10.50.0.1", 6, 443, None, Some("evilupdates.vendor.example")),
        Action::Deny,
        DecidedBy::Default,
    );
    check(flow("10.2.0.2", "198.51.100.1", 6, 443, None, None), Action::Allow, rule("vendor updates"));
    // DNS: both ends internal, either transport.
    check(flow("10.4.0.4", "10.0.0.53", 17, 53, None, None), Action::Allow, rule("dns"));
    check(flow("10.4.0.4", "8.8.8.8", 17, 53, None, None), Action::Deny, DecidedBy::Default);
    // ICMP (no ports): only the portless `any` rule.
    check(flow("10.4.0.4", "10.2.0.2", 1, 0, None, None), Action::Allow, rule("ping"));
    // A device given by id without an address is internal.
    let by_id = Flow {
        src: FlowEnd { device: c.device(&mac(4)), ip: None },
        dst: FlowEnd { device: c.device(&mac(2)), ip: None },
        ip_proto: 17,
        dst_port: 53,
        app: None,
        dst_domain: None,
    };
    check(by_id, Action::Allow, rule("dns"));
}

#[test]
fn hit_counts_accumulate_per_rule_scope_and_group() {
    let p = policy(POLICY);
    let devs = devices();
    let c = CompiledPolicy::compile(&p, &devs);
    let mut counts = c.new_counts();
    for _ in 0..3 {
        c.evaluate_counted(&flow("10.1.0.1", "10.2.0.2", 6, 3613, None, None), &mut counts);
    }
    c.evaluate_counted(&flow("10.4.0.4", "10.1.0.1", 6, 23, None, None), &mut counts);
    c.evaluate_counted(&flow("10.4.0.4", "10.99.0.1", 6, 8080, None, None), &mut counts);
    c.evaluate_counted(&flow("10.3.0.3", "10.4.0.4", 6, 8080, None, None), &mut counts);
    assert_eq!(counts.rules[1], 3);
    assert_eq!(counts.rules[0], 1);
    assert_eq!(counts.default, 1);
    assert_eq!(counts.scopes, vec![1, 0]);
    assert_eq!(counts.actions, [4, 2, 0]);
    let g = |name: &str| c.group_names().iter().position(|n| n == name).expect("group");
    assert_eq!(counts.group_src[g("pumps")], 3);
    assert_eq!(counts.group_src[g("life")], 3);
    assert_eq!(counts.group_dst[g("servers")], 3);
    assert_eq!(counts.group_dst[g("pumps")], 1);
    let mut total = c.new_counts();
    total.merge(&counts);
    total.merge(&counts);
    assert_eq!(total.rules[1], 6);
    assert_eq!(total.actions, [8, 4, 0]);
    assert_eq!(c.rule_name(1), Some("pump status"));
}

#[test]
fn many_groups_use_more_than_one_word() {
    let mut text = String::from("[policy]\nname = \"wide\"\ndefault = \"deny\"\n");
    for i in 0..150 {
        text.push_str(&format!("\n[[group]]\nname = \"g{i}\"\nmatch = 'vlan == {i}'\n"));
    }
    text.push_str("\n[[rule]]\nname = \"r\"\nfrom = \"g140\"\nto = \"g3\"\nprotocol = \"udp\"\n");
    let p = policy(&text);
    let mut a = device(1, "workstation", "10.0.0.1");
    a.vlans = vec![140];
    let mut b = device(2, "workstation", "10.0.0.2");
    b.vlans = vec![3];
    let c = CompiledPolicy::compile(&p, &[a, b]);
    assert_eq!(c.evaluate(&flow("10.0.0.1", "10.0.0.2", 17, 9, None, None)).action, Action::Allow);
    assert_eq!(c.evaluate(&flow("10.0.0.2", "10.0.0.1", 17, 9, None, None)).action, Action::Deny);
}
