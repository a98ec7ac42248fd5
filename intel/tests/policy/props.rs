//! Property tests: the parser never panics and its canonical text round-trips; the
//! compiled evaluator agrees with a slow reference evaluation on random policies and flows.

use super::parse::EXAMPLE;
use super::support::{mac, plain};
use proptest::prelude::*;
use std::net::IpAddr;
use wardline_intel::flow_context::is_external;
use wardline_intel::policy::{
    parse_policy, Action, CompiledPolicy, DecidedBy, Endpoint, Expr, Flow, FlowEnd, Membership, Policy, PolicyDevice,
    Verdict,
};
use wardline_intel::Transport;

fn check_round_trip(text: &str) {
    if let Ok(p) = parse_policy("fuzz", text) {
        let canon = p.to_canonical();
        let again =
            parse_policy("canonical", &canon).unwrap_or_else(|e| panic!("canonical text must parse: {e}\n{canon}"));
        assert_eq!(again.to_canonical(), canon);
        // Compiling with no devices must not panic either.
        let c = CompiledPolicy::compile(&p, &[]);
        let _ = c.evaluate(&Flow {
            src: FlowEnd::default(),
            dst: FlowEnd::default(),
            ip_proto: 6,
            dst_port: 443,
            app: None,
            dst_domain: None,
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
        check_round_trip(&text);
        let _ = Expr::parse(&text);
    }

    #[test]
    fn parser_never_panics_on_edited_policies(edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, "[\\[\\]\"'=,a-z0-9./:\\- \n]{0,3}"), 1..6)) {
        let mut text = EXAMPLE.to_string();
        for (at, kind, s) in edits {
            let mut pos = at.index(text.len() + 1);
            while !text.is_char_boundary(pos) { pos -= 1; }
            match kind {
                0 => text.insert_str(pos, &s),
                1 => { let end = (pos + s.len().max(1)).min(text.len()); if text.is_char_boundary(end) { text.replace_range(pos..end, ""); } }
                _ => { let end = (pos + s.len()).min(text.len()); if text.is_char_boundary(end) { text.replace_range(pos..end, &s); } }
            }
        }
        check_round_trip(&text);
    }
}

// ---- reference evaluation ------------------------------------------------------------------

fn reference(p: &Policy, devices: &[PolicyDevice], m: &Membership, f: &Flow) -> Verdict {
    let resolve = |e: &FlowEnd| -> Option<usize> {
        match e.device {
            Some(d) => ((d.0 as usize) < devices.len()).then_some(d.0 as usize),
            None => e.ip.and_then(|ip| devices.iter().position(|d| d.ips.contains(&ip))),
        }
    };
    let (src, dst) = (resolve(&f.src), resolve(&f.dst));
    let in_group = |dev: Option<usize>, g: &str| dev.is_some_and(|i| m.groups[g].contains(&devices[i].mac));
    let holds = |eps: &[Endpoint], dev: Option<usize>, ip: Option<IpAddr>, domain: Option<&str>| {
        eps.iter().any(|e| match e {
            Endpoint::Any => true,
            Endpoint::Group(g) => in_group(dev, g),
            Endpoint::External => ip.is_some_and(|ip| is_external(&ip)),
            Endpoint::Internal => match ip {
                Some(ip) => !is_external(&ip),
                None => dev.is_some(),
            },
            Endpoint::Network(c) => ip.is_some_and(|ip| c.contains(&ip)),
            Endpoint::Domain(d) => domain.is_some_and(|n| {
                let n = n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase();
                n == *d || n.ends_with(&format!(".{d}"))
            }),
        })
    };
    for (i, r) in p.rules.iter().enumerate() {
        let fits = match f.ip_proto {
            6 => matches!(r.protocol, Transport::Tcp | Transport::Any) && r.matches_port(f.dst_port),
            17 => matches!(r.protocol, Transport::Udp | Transport::Any) && r.matches_port(f.dst_port),
            _ => r.protocol == Transport::Any && r.ports.is_empty(),
        };
        let app_ok = r.app.as_ref().is_none_or(|a| f.app.is_some_and(|x| x.eq_ignore_ascii_case(a)));
        if fits && app_ok && holds(&r.from, src, f.src.ip, None) && holds(&r.to, dst, f.dst.ip, f.dst_domain) {
            return Verdict { action: r.action, decided_by: DecidedBy::Rule(i as u32) };
        }
    }
    for (i, s) in p.scopes.iter().enumerate() {
        if in_group(src, &s.group) || in_group(dst, &s.group) {
            return Verdict { action: s.default, decided_by: DecidedBy::Scope(i as u32) };
        }
    }
    Verdict { action: p.default, decided_by: DecidedBy::Default }
}

const IPS: &[&str] =
    &["10.0.0.1", "10.0.0.2", "10.0.1.9", "192.168.5.5", "8.8.8.8", "203.0.113.7", "fd00::1", "2001:db8::5"];
const NETS: &[&str] = &["10.0.0.0/24", "10.0.0.0/8", "203.0.113.0/24", "8.8.8.8", "fd00::/8", "0.0.0.0/0"];
const DOMAINS: &[&str] = &["a.example", "x.a.example", "b.example", "xa.example"];
const ACTIONS: &[&str] = &["allow", "deny", "monitor"];
const EXPRS: &[&str] = &[
    "class == \"c0\"",
    "class in [\"c1\", \"c2\"]",
    "vlan == 1",
    "vlan > 1",
    "tag == \"t0\"",
    "not tag == \"t1\"",
    "class == \"c0\" and vlan == 2",
    "class == \"c3\" or tag == \"t0\"",
    "ip in \"10.0.0.0/24\"",
    "vulnerable",
];

#[derive(Debug, Clone)]
struct RuleSpec {
    from: Vec<u8>,
    to: Vec<u8>,
    proto: u8,
    ports: Vec<(u16, u16)>,
    app: u8,
    action: u8,
}

fn endpoint_text(code: u8, groups: usize, destination: bool) -> String {
    let n_named = 3 + NETS.len() + if destination { DOMAINS.len() } else { 0 };
    let code = code as usize % (groups + n_named);
    if code < groups {
        return format!("g{code}");
    }
    let code = code - groups;
    match code {
        0 => "any".into(),
        1 => "external".into(),
        2 => "internal".into(),
        c if c < 3 + NETS.len() => NETS[c - 3].into(),
        c => format!("domain:{}", DOMAINS[c - 3 - NETS.len()]),
    }
}

fn policy_text(groups: &[(u8, Vec<u8>, Vec<u8>)], scopes: &[(u8, u8)], rules: &[RuleSpec], default: u8) -> String {
    let q = |s: &str| format!("{s:?}");
    let mut t = format!("[policy]\nname = \"random\"\ndefault = {}\n", q(ACTIONS[default as usize % 3]));
    for (i, (e, members, exclude)) in groups.iter().enumerate() {
        t.push_str(&format!("\n[[group]]\nname = \"g{i}\"\nmatch = {}\n", q(EXPRS[*e as usize % EXPRS.len()])));
        let macs = |xs: &[u8]| xs.iter().map(|m| q(&mac(*m as u32 % 14).to_string())).collect::<Vec<_>>().join(", ");
        if !members.is_empty() {
            t.push_str(&format!("members = [{}]\n", macs(members)));
        }
        if !exclude.is_empty() {
            t.push_str(&format!("exclude = [{}]\n", macs(exclude)));
        }
    }
    let mut used = std::collections::BTreeSet::new();
    for (g, a) in scopes {
        let g = *g as usize % groups.len();
        if used.insert(g) {
            t.push_str(&format!("\n[[scope]]\ngroup = \"g{g}\"\ndefault = {}\n", q(ACTIONS[*a as usize % 3])));
        }
    }
    for (i, r) in rules.iter().enumerate() {
        let list = |xs: &[u8], dst: bool| {
            xs.iter().map(|c| q(&endpoint_text(*c, groups.len(), dst))).collect::<Vec<_>>().join(", ")
        };
        t.push_str(&format!(
            "\n[[rule]]\nname = \"r{i}\"\nfrom = [{}]\nto = [{}]\nprotocol = {}\naction = {}\n",
            list(&r.from, false),
            list(&r.to, true),
            q(["tcp", "udp", "any"][r.proto as usize % 3]),
            q(ACTIONS[r.action as usize % 3])
        ));
        if !r.ports.is_empty() {
            let ps: Vec<String> = r.ports.iter().map(|(a, b)| q(&format!("{}-{}", a.min(b), a.max(b)))).collect();
            t.push_str(&format!("ports = [{}]\n", ps.join(", ")));
        }
        if r.app % 3 != 0 {
            t.push_str(&format!("app = {}\n", q(["", "hl7", "dicom"][r.app as usize % 3])));
        }
    }
    t
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (
        prop::collection::vec(any::<u8>(), 1..3),
        prop::collection::vec(any::<u8>(), 1..3),
        any::<u8>(),
        prop::collection::vec((1u16..40, 1u16..40), 0..3),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(|(from, to, proto, ports, app, action)| RuleSpec { from, to, proto, ports, app, action })
}

fn device_spec() -> impl Strategy<Value = (u8, Vec<u16>, u8, Vec<u8>, u32)> {
    (0u8..4, prop::collection::vec(0u16..4, 0..3), 0u8..3, prop::collection::vec(any::<u8>(), 0..3), 0u32..2)
}

fn end_spec() -> impl Strategy<Value = (u8, u8, u8)> {
    // (how: 0 device id, 1 device id + ip, 2 ip only, 3 nothing; which device; which ip)
    (0u8..4, any::<u8>(), any::<u8>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn compiled_evaluator_matches_the_reference(
        groups in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..2), prop::collection::vec(any::<u8>(), 0..2)), 1..6),
        scopes in prop::collection::vec((any::<u8>(), any::<u8>()), 0..3),
        rules in prop::collection::vec(rule_spec(), 0..8),
        default in any::<u8>(),
        devices in prop::collection::vec(device_spec(), 0..12),
        flows in prop::collection::vec((end_spec(), end_spec(), prop::sample::select(vec![6u8, 17, 1]), 0u16..45, 0u8..4, 0u8..5), 1..40),
    ) {
        let text = policy_text(&groups, &scopes, &rules, default);
        let p = parse_policy("random", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let canon = p.to_canonical();
        let again = parse_policy("canonical", &canon).unwrap_or_else(|e| panic!("{e}\n{canon}"));
        prop_assert_eq!(again.to_canonical(), canon.clone());
        prop_assert!(wardline_intel::policy::diff(&p, &again).is_empty());
        let devs: Vec<PolicyDevice> = devices.iter().enumerate().map(|(i, (class, vlans, tag, ips, vulns))| {
            let mut d = plain(i as u32, &format!("c{class}"));
            d.vlans = vlans.clone();
            if *tag < 2 { d.tags.push(format!("t{tag}")); }
            d.ips = ips.iter().map(|x| IPS[*x as usize % IPS.len()].parse().expect("ip")).collect();
            d.vulns = *vulns;
            d
        }).collect();
        let m = Membership::evaluate(&p.groups, &devs);
        let c = CompiledPolicy::compile(&p, &devs);
        let mut counts = c.new_counts();
        for (s, d, proto, port, app, domain) in flows {
            let end = |(how, which, ip): (u8, u8, u8)| {
                let dev = (!devs.is_empty()).then(|| c.device(&devs[which as usize % devs.len()].mac)).flatten();
                let ip: IpAddr = IPS[ip as usize % IPS.len()].parse().expect("ip");
                match how {
                    0 => FlowEnd { device: dev, ip: None },
                    1 => FlowEnd { device: dev, ip: Some(ip) },
                    2 => FlowEnd { device: None, ip: Some(ip) },
                    _ => FlowEnd::default(),
                }
            };
            let flow = Flow {
                src: end(s),
                dst: end(d),
                ip_proto: proto,
                dst_port: port,
                app: [None, Some("hl7"), Some("DICOM"), Some("x")][app as usize],
                dst_domain: [None, Some("a.example"), Some("x.a.example"), Some("B.example."), Some("xa.example")][domain as usize],
            };
            let want = reference(&p, &devs, &m, &flow);
            prop_assert_eq!(c.evaluate(&flow), want, "flow {:?}\npolicy:\n{}", flow, text);
            prop_assert_eq!(c.evaluate_counted(&flow, &mut counts), want);
        }
        let decided: u64 = counts.rules.iter().sum::<u64>() + counts.scopes.iter().sum::<u64>() + counts.default;
        prop_assert_eq!(decided, counts.actions.iter().sum::<u64>());
        let _ = Action::Allow;
    }
}

fn expr_text() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(
        EXPRS
            .iter()
            .map(|s| s.to_string())
            .chain(["kev", "end_of_support", "risk >= 50", "criticality > \"clinical_support\""].map(String::from))
            .collect::<Vec<_>>(),
    );
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            inner.prop_map(|a| format!("  ( {a} )  ")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any expression built from the grammar parses, its canonical text parses to the same
    /// expression, and both decide every device alike.
    #[test]
    fn expressions_round_trip_through_their_canonical_text(
        text in expr_text(),
        devices in prop::collection::vec(device_spec(), 1..8),
    ) {
        let e = Expr::parse(&text).unwrap_or_else(|err| panic!("{text}: {err}"));
        let canon = e.to_string();
        let again = Expr::parse(&canon).unwrap_or_else(|err| panic!("{canon}: {err}"));
        prop_assert_eq!(&again, &e);
        prop_assert_eq!(again.to_string(), canon);
        for (i, (class, vlans, tag, ips, vulns)) in devices.iter().enumerate() {
            let mut d = plain(i as u32, &format!("c{class}"));
            d.vlans = vlans.clone();
            if *tag < 2 { d.tags.push(format!("t{tag}")); }
            d.ips = ips.iter().map(|x| IPS[*x as usize % IPS.len()].parse().expect("ip")).collect();
            d.vulns = *vulns;
            d.risk = f64::from(*class) * 20.0;
            prop_assert_eq!(e.matches(&d), again.matches(&d));
        }
    }
}
