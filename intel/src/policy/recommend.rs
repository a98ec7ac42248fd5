//! Least-privilege recommendation: propose a policy from the knowledge base's expected
//! communications and the flows actually observed, each rule with its justification.
//!
//! - One group per device class involved (`class_<id>`), and a `life_sustaining` group
//!   whose scope default is `monitor`: a first enforcement never hard-blocks therapy
//!   devices on something nobody foresaw. The policy default is `deny`.
//! - Observed flows labelled required or acceptable (by [`crate::flow_context()`]) become
//!   allow rules from the source's class group to the destination's class group (or to the
//!   external DNS names / addresses seen, up to [`MAX_EXTERNAL_DESTINATIONS`], then
//!   `external`), per protocol and expected-communication entry, ports merged. Justified by
//!   the entry id and the observed flows (aggregates, count, first/last seen per port).
//! - Required communications of classes present whose peer class is also present become
//!   allow rules even when not observed yet (a pump's quarterly drug-library update), justified
//!   by the entry alone.
//! - Risky and unknown flows are left out and listed with the reason.
//! - Coverage: the share of observed required and acceptable flows the proposal allows.

use super::cidr::Cidr;
use super::compiled::{CompiledPolicy, DecidedBy, Flow, FlowEnd};
use super::device::PolicyDevice;
use super::expr::Expr;
use super::groups::Group;
use super::model::{normalize_ports, Action, Endpoint, Policy, PortRange, Rule, Scope};
use crate::model::{Comm, Direction, FlowTag, KnowledgeBase, PeerRole, Transport};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use wardline_common::MacAddr;

/// Beyond this many distinct external destinations, a rule names `external` instead.
pub const MAX_EXTERNAL_DESTINATIONS: usize = 32;

/// One end of an observed flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObservedEnd {
    /// A device of the inventory (its attributes are in the device list).
    Device(MacAddr),
    /// An address not in the inventory, with its DNS name if known.
    Address { ip: IpAddr, domain: Option<String> },
}

/// Flows aggregated by (source, destination, protocol, port), with their clinical context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedFlow {
    /// The end that opened the conversation.
    pub src: ObservedEnd,
    pub dst: ObservedEnd,
    /// Tcp or Udp.
    pub transport: Transport,
    pub port: u16,
    pub app: Option<String>,
    /// Flows (or connections) aggregated here.
    pub count: u64,
    /// Capture time, seconds since the epoch.
    pub first_seen: u64,
    pub last_seen: u64,
    /// Label from [`crate::flow_context()`].
    pub context: FlowTag,
    /// Expected-communication entry behind the label.
    pub comm: Option<String>,
    /// The label's reason.
    pub reason: String,
}

/// Observed traffic behind one rule, per port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedEvidence {
    pub port: u16,
    /// Flow aggregates.
    pub aggregates: u64,
    pub count: u64,
    pub first_seen: u64,
    pub last_seen: u64,
}

/// Why a proposed rule exists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Justification {
    /// Knowledge-base expected-communication ids.
    pub kb_entries: Vec<String>,
    /// Reasons of those entries.
    pub reasons: Vec<String>,
    /// Empty when the rule comes from the knowledge base alone.
    pub observed: Vec<ObservedEvidence>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProposedRule {
    pub rule: Rule,
    pub justification: Justification,
}

/// Observed flows deliberately not allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    pub src: String,
    pub dst: String,
    pub transport: Transport,
    pub port: u16,
    pub context: FlowTag,
    pub comm: Option<String>,
    pub reason: String,
    pub aggregates: u64,
    pub count: u64,
    pub first_seen: u64,
    pub last_seen: u64,
}

/// Share of observed flows (aggregates and counts) a policy allows by a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    pub aggregates: u64,
    pub aggregates_allowed: u64,
    pub count: u64,
    pub count_allowed: u64,
}

impl Coverage {
    /// Allowed share of the flow count, 1.0 when nothing was observed.
    pub fn share(&self) -> f64 {
        if self.count == 0 {
            1.0
        } else {
            self.count_allowed as f64 / self.count as f64
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    pub policy: Policy,
    /// In the policy's rule order.
    pub rules: Vec<ProposedRule>,
    /// Sorted by count, largest first.
    pub left_out: Vec<LeftOut>,
    pub required: Coverage,
    pub acceptable: Coverage,
    /// Observed flows naming a device not in the list, or neither TCP nor UDP (counted,
    /// skipped).
    pub skipped: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Dst {
    Class(String),
    /// External or not-inventoried destinations of one rule.
    Addresses,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    src: String,
    dst: Dst,
    transport: Transport,
    comm: String,
}

#[derive(Default)]
struct Draft {
    ports: Vec<PortRange>,
    kb: BTreeSet<String>,
    reasons: BTreeSet<String>,
    observed: BTreeMap<u16, ObservedEvidence>,
    destinations: BTreeSet<Endpoint>,
    too_many: bool,
}

fn group_name(class: &str) -> String {
    let clean: String =
        class.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    format!("class_{clean}")
}

fn comm_ports(c: &Comm) -> Vec<PortRange> {
    let mut v: Vec<PortRange> = c.ports.iter().map(|p| PortRange { lo: *p, hi: *p }).collect();
    if let Some((lo, hi)) = c.port_range {
        v.push(PortRange { lo, hi });
    }
    v
}

type LeftKey = (String, String, Transport, u16, FlowTag, Option<String>);

fn leave(left: &mut BTreeMap<LeftKey, LeftOut>, f: &ObservedFlow, src: String, dst: String, reason: String) {
    let k = (src.clone(), dst.clone(), f.transport, f.port, f.context, f.comm.clone());
    let e = left.entry(k).or_insert_with(|| LeftOut {
        src,
        dst,
        transport: f.transport,
        port: f.port,
        context: f.context,
        comm: f.comm.clone(),
        reason,
        aggregates: 0,
        count: 0,
        first_seen: u64::MAX,
        last_seen: 0,
    });
    e.aggregates += 1;
    e.count += f.count;
    e.first_seen = e.first_seen.min(f.first_seen);
    e.last_seen = e.last_seen.max(f.last_seen);
}

/// Propose a least-privilege policy named `name`.
pub fn recommend(
    kb: &KnowledgeBase,
    devices: &[PolicyDevice],
    observed: &[ObservedFlow],
    name: &str,
) -> Recommendation {
    let by_mac: HashMap<MacAddr, usize> = devices.iter().enumerate().map(|(i, d)| (d.mac, i)).collect();
    let class_of = |e: &ObservedEnd| match e {
        ObservedEnd::Device(m) => by_mac.get(m).map(|i| devices[*i].class.as_str()),
        ObservedEnd::Address { .. } => None,
    };
    let mut drafts: BTreeMap<Key, Draft> = BTreeMap::new();
    let mut left: BTreeMap<LeftKey, LeftOut> = BTreeMap::new();
    let mut skipped = 0u64;

    let describe = |e: &ObservedEnd| -> String {
        match e {
            ObservedEnd::Device(m) => by_mac.get(m).map(|i| devices[*i].class.clone()).unwrap_or_else(|| m.to_string()),
            ObservedEnd::Address { ip, domain } => match domain {
                Some(d) => d.clone(),
                None => ip.to_string(),
            },
        }
    };

    for f in observed {
        let unknown_device = |e: &ObservedEnd| matches!(e, ObservedEnd::Device(m) if !by_mac.contains_key(m));
        if unknown_device(&f.src) || unknown_device(&f.dst) || f.transport == Transport::Any {
            skipped += 1;
            continue;
        }
        if !matches!(f.context, FlowTag::Required | FlowTag::Acceptable) {
            let reason = match f.context {
                FlowTag::Risky => format!("risky: {}", f.reason),
                _ => format!("not expected by the knowledge base, review before allowing: {}", f.reason),
            };
            leave(&mut left, f, describe(&f.src), describe(&f.dst), reason);
            continue;
        }
        // An address source (not in the inventory) opening into the hospital: no class to
        // group it by, so it is left for review rather than allowed from anywhere.
        let Some(src_class) = class_of(&f.src) else {
            let reason = "opened from an address outside the inventory; allow it by hand with a network".to_string();
            leave(&mut left, f, describe(&f.src), describe(&f.dst), reason);
            continue;
        };
        let dst = match class_of(&f.dst) {
            Some(c) => Dst::Class(c.to_string()),
            None => Dst::Addresses,
        };
        let comm = f.comm.clone().unwrap_or_else(|| "observed".into());
        let d = drafts
            .entry(Key { src: src_class.to_string(), dst, transport: f.transport, comm: comm.clone() })
            .or_default();
        d.ports.push(PortRange { lo: f.port, hi: f.port });
        if f.comm.is_some() {
            d.kb.insert(comm);
            d.reasons.insert(f.reason.clone());
        }
        if let ObservedEnd::Address { ip, domain } = &f.dst {
            if !d.too_many {
                d.destinations.insert(match domain {
                    Some(dn) if super::parse::valid_domain(&dn.trim_end_matches('.').to_ascii_lowercase()) => {
                        Endpoint::Domain(dn.trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => Endpoint::Network(Cidr::host(*ip)),
                });
                if d.destinations.len() > MAX_EXTERNAL_DESTINATIONS {
                    d.too_many = true;
                    d.destinations.clear();
                }
            }
        }
        let ev = d.observed.entry(f.port).or_insert(ObservedEvidence {
            port: f.port,
            aggregates: 0,
            count: 0,
            first_seen: u64::MAX,
            last_seen: 0,
        });
        ev.aggregates += 1;
        ev.count += f.count;
        ev.first_seen = ev.first_seen.min(f.first_seen);
        ev.last_seen = ev.last_seen.max(f.last_seen);
    }

    // Required communications between classes that are both present, observed or not.
    let present: BTreeSet<&str> = devices.iter().map(|d| d.class.as_str()).collect();
    let mut entries: BTreeMap<&str, Vec<&Comm>> = BTreeMap::new();
    let kinds: BTreeSet<(&str, Option<&str>)> =
        devices.iter().map(|d| (d.class.as_str(), d.profile.as_deref())).collect();
    for (class, profile) in kinds {
        let e = entries.entry(class).or_default();
        let profile = profile.and_then(|p| kb.profile(p));
        for c in profile
            .map(|p| p.comms.as_slice())
            .unwrap_or(&[])
            .iter()
            .chain(kb.class(class).map(|c| c.comms.as_slice()).unwrap_or(&[]))
        {
            if c.tag == FlowTag::Required && !e.iter().any(|x| x.id == c.id) {
                e.push(c);
            }
        }
    }
    for (class, comms) in &entries {
        for c in comms {
            let ports = comm_ports(c);
            if ports.is_empty() {
                continue;
            }
            for role in &c.peers {
                let PeerRole::Class(peer) = role else { continue };
                if !present.contains(peer.as_str()) {
                    continue;
                }
                let transports: &[Transport] = match c.transport {
                    Transport::Tcp => &[Transport::Tcp],
                    Transport::Udp => &[Transport::Udp],
                    Transport::Any => &[Transport::Tcp, Transport::Udp],
                };
                let pairs: &[(&str, &str)] = match c.direction {
                    Direction::Outbound => &[(class, peer)],
                    Direction::Inbound => &[(peer, class)],
                    Direction::Any => &[(class, peer), (peer, class)],
                };
                for &(s, t) in pairs {
                    for &tr in transports {
                        let d = drafts
                            .entry(Key {
                                src: s.to_string(),
                                dst: Dst::Class(t.to_string()),
                                transport: tr,
                                comm: c.id.clone(),
                            })
                            .or_default();
                        d.ports.extend(ports.iter().copied());
                        d.kb.insert(c.id.clone());
                        d.reasons.insert(c.reason.clone());
                    }
                }
            }
        }
    }

    // Groups for every class a rule names, plus the life-sustaining scope.
    let mut classes: BTreeSet<String> = BTreeSet::new();
    for k in drafts.keys() {
        classes.insert(k.src.clone());
        if let Dst::Class(c) = &k.dst {
            classes.insert(c.clone());
        }
    }
    let mut groups: Vec<Group> = classes
        .iter()
        .map(|c| Group {
            name: group_name(c),
            description: Some(format!("devices of class {c}")),
            matches: Some(Expr::Cmp {
                field: super::expr::FieldName::Class,
                op: super::expr::Op::Eq,
                values: vec![super::expr::Value::Text(c.to_ascii_lowercase())],
            }),
            members: BTreeSet::new(),
            exclude: BTreeSet::new(),
            exclude_match: None,
            line: 0,
        })
        .collect();
    groups.push(Group {
        name: "life_sustaining".into(),
        description: Some("life-sustaining devices: unforeseen flows are monitored, not blocked".into()),
        matches: Some(Expr::Cmp {
            field: super::expr::FieldName::Criticality,
            op: super::expr::Op::Eq,
            values: vec![super::expr::Value::Criticality(crate::model::Criticality::LifeSustaining)],
        }),
        members: BTreeSet::new(),
        exclude: BTreeSet::new(),
        exclude_match: None,
        line: 0,
    });
    groups.sort_by(|a, b| a.name.cmp(&b.name));

    let mut rules = Vec::with_capacity(drafts.len());
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (k, d) in drafts {
        let to = match &k.dst {
            Dst::Class(c) => vec![Endpoint::Group(group_name(c))],
            Dst::Addresses if d.too_many || d.destinations.is_empty() => vec![Endpoint::External],
            Dst::Addresses => d.destinations.iter().cloned().collect(),
        };
        let dst_name = match &k.dst {
            Dst::Class(c) => c.clone(),
            Dst::Addresses => "addresses".into(),
        };
        let base = format!("{} to {} {} ({})", k.src, dst_name, k.transport.as_str(), k.comm);
        let mut rname: String = base.chars().take(120).collect();
        let mut n = 2;
        while !names.insert(rname.clone()) {
            rname = format!("{} {n}", base.chars().take(115).collect::<String>());
            n += 1;
        }
        let rule = Rule {
            name: rname,
            description: d.reasons.iter().next().cloned(),
            from: vec![Endpoint::Group(group_name(&k.src))],
            to,
            protocol: k.transport,
            ports: normalize_ports(d.ports),
            app: None,
            action: Action::Allow,
            line: 0,
        };
        let justification = Justification {
            kb_entries: d.kb.into_iter().collect(),
            reasons: d.reasons.into_iter().collect(),
            observed: d.observed.into_values().collect(),
        };
        rules.push(ProposedRule { rule, justification });
    }

    let policy = Policy {
        name: name.to_string(),
        description: Some("least-privilege proposal from expected communications and observed flows".into()),
        default: Action::Deny,
        life_sustaining_override: false,
        override_reason: None,
        groups,
        scopes: vec![Scope { group: "life_sustaining".into(), default: Action::Monitor }],
        rules: rules.iter().map(|r| r.rule.clone()).collect(),
    };

    let (required, acceptable) = coverage(&policy, devices, observed);
    let mut left_out: Vec<LeftOut> = left.into_values().collect();
    left_out
        .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (&a.src, &a.dst, a.port).cmp(&(&b.src, &b.dst, b.port))));
    Recommendation { policy, rules, left_out, required, acceptable, skipped }
}

/// How much of the observed required and acceptable traffic `policy` allows by a rule
/// (flows naming a device not in `devices` are left out).
pub fn coverage(policy: &Policy, devices: &[PolicyDevice], observed: &[ObservedFlow]) -> (Coverage, Coverage) {
    let compiled = CompiledPolicy::compile(policy, devices);
    let mut required = Coverage::default();
    let mut acceptable = Coverage::default();
    for f in observed {
        let cov = match f.context {
            FlowTag::Required => &mut required,
            FlowTag::Acceptable => &mut acceptable,
            _ => continue,
        };
        // Skipped as the recommendation skips them: devices not in the list, not TCP/UDP.
        let unknown = |e: &ObservedEnd| matches!(e, ObservedEnd::Device(m) if compiled.device(m).is_none());
        if unknown(&f.src) || unknown(&f.dst) || f.transport == Transport::Any {
            continue;
        }
        let end = |e: &ObservedEnd| match e {
            ObservedEnd::Device(m) => {
                let id = compiled.device(m);
                FlowEnd { device: id, ip: id.and_then(|i| devices[i.0 as usize].ips.first().copied()) }
            }
            ObservedEnd::Address { ip, .. } => FlowEnd { device: None, ip: Some(*ip) },
        };
        let domain = match &f.dst {
            ObservedEnd::Address { domain, .. } => domain.as_deref(),
            _ => None,
        };
        let ip_proto = match f.transport {
            Transport::Tcp => 6,
            Transport::Udp => 17,
            Transport::Any => 0,
        };
        let v = compiled.evaluate(&Flow {
            src: end(&f.src),
            dst: end(&f.dst),
            ip_proto,
            dst_port: f.port,
            app: f.app.as_deref(),
            dst_domain: domain,
        });
        cov.aggregates += 1;
        cov.count += f.count;
        if v.action == Action::Allow && matches!(v.decided_by, DecidedBy::Rule(_)) {
            cov.aggregates_allowed += 1;
            cov.count_allowed += f.count;
        }
    }
    (required, acceptable)
}
