//! The life-sustaining safety check: would this policy cut a life-sustaining device off a
//! peer its knowledge-base profile or class says it needs (a `required` expected
//! communication)? Such a policy is refused unless the file sets
//! `life_sustaining_override = true` with an `override_reason`.
//!
//! Per device and required communication, the peers are the devices of the roles the entry
//! names (a class or a category). The device is cut off when no present peer of those roles
//! can be reached on any of the entry's ports — a pump that can still reach one pump server
//! is not. Entries whose peer is `any`, `internal` or `external`, whose ports are "any", or
//! whose peer role has no device in the inventory cannot be checked concretely and are
//! listed as unchecked.

use super::compiled::{CompiledPolicy, DecidedBy, DeviceId, Flow, FlowEnd};
use super::device::PolicyDevice;
use super::model::{Action, Policy};
use crate::model::{Comm, Criticality, Direction, FlowTag, KnowledgeBase, PeerRole, Transport};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use wardline_common::MacAddr;

/// A device's group bitset and (when rules name addresses) its addresses.
type Signature = (Vec<u64>, Vec<IpAddr>);

/// Devices of one class cut off from the peers of one required communication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetyFinding {
    /// Expected-communication id in the knowledge base.
    pub comm: String,
    pub reason: String,
    pub device_class: String,
    /// The peer roles, as written in the knowledge base.
    pub peers: Vec<String>,
    /// "tcp/3613" ...
    pub ports: Vec<String>,
    /// What denies it: `rule "x" (line N)`, `scope default of group "g"`, `policy default`.
    pub denied_by: Vec<String>,
    /// Devices cut off (sorted).
    pub devices: Vec<MacAddr>,
}

impl fmt::Display for SafetyFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let examples: Vec<String> = self.devices.iter().take(5).map(|m| m.to_string()).collect();
        write!(
            f,
            "LIFE-SUSTAINING DEVICES CUT OFF: {} {} device(s) ({}{}) could not reach any {} on {} that \
             knowledge-base entry {} requires ({}); denied by {}",
            self.devices.len(),
            self.device_class,
            examples.join(", "),
            if self.devices.len() > 5 { ", ..." } else { "" },
            self.peers.join(" or "),
            self.ports.join(", "),
            self.comm,
            self.reason,
            self.denied_by.join("; ")
        )
    }
}

/// The outcome of the check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SafetyReport {
    pub findings: Vec<SafetyFinding>,
    /// Required communications that could not be checked, with why.
    pub unchecked: Vec<String>,
    /// The policy sets life_sustaining_override (with a reason).
    pub overridden: bool,
}

impl SafetyReport {
    /// Whether the policy must not be applied as it stands: it cuts life-sustaining devices
    /// off and nobody accepted that explicitly.
    pub fn blocks(&self) -> bool {
        !self.findings.is_empty() && !self.overridden
    }
}

fn comms_of<'a>(kb: &'a KnowledgeBase, d: &PolicyDevice) -> impl Iterator<Item = &'a Comm> {
    let profile = d.profile.as_deref().and_then(|p| kb.profile(p)).map(|p| p.comms.as_slice()).unwrap_or(&[]);
    let class = kb.class(&d.class).map(|c| c.comms.as_slice()).unwrap_or(&[]);
    profile.iter().chain(class).filter(|c| c.tag == FlowTag::Required)
}

fn probes(c: &Comm) -> Vec<(u8, u16)> {
    let protos: &[u8] = match c.transport {
        Transport::Tcp => &[6],
        Transport::Udp => &[17],
        Transport::Any => &[6, 17],
    };
    let mut ports: Vec<u16> = c.ports.clone();
    if let Some((lo, hi)) = c.port_range {
        ports.extend([lo, hi]);
    }
    ports.sort_unstable();
    ports.dedup();
    protos.iter().flat_map(|p| ports.iter().map(move |port| (*p, *port))).collect()
}

fn proto_name(p: u8) -> &'static str {
    if p == 6 {
        "tcp"
    } else {
        "udp"
    }
}

/// Check `policy` (compiled for `devices`) against the knowledge base's required
/// communications of every life-sustaining device.
pub fn check(kb: &KnowledgeBase, policy: &Policy, devices: &[PolicyDevice], compiled: &CompiledPolicy) -> SafetyReport {
    let mut by_class: HashMap<&str, Vec<DeviceId>> = HashMap::new();
    let mut by_category: HashMap<crate::model::Category, Vec<DeviceId>> = HashMap::new();
    for (i, d) in devices.iter().enumerate() {
        by_class.entry(d.class.as_str()).or_default().push(DeviceId(i as u32));
        by_category.entry(d.category).or_default().push(DeviceId(i as u32));
    }
    // Devices with the same groups (and, when rules name addresses, the same addresses)
    // get the same verdicts: evaluate one representative of each.
    let signature = |id: DeviceId| -> Signature {
        let ips = if compiled.uses_addresses() { devices[id.0 as usize].ips.clone() } else { Vec::new() };
        (compiled.groups_row(id).to_vec(), ips)
    };
    let end = |id: DeviceId| FlowEnd { device: Some(id), ip: devices[id.0 as usize].ips.first().copied() };
    let denied_by = |v: DecidedBy| match v {
        DecidedBy::Rule(i) => {
            let r = &policy.rules[i as usize];
            format!("rule {:?} (line {})", r.name, r.line)
        }
        DecidedBy::Scope(i) => format!("the scope default of group {:?}", policy.scopes[i as usize].group),
        DecidedBy::Default => format!("the policy default ({})", policy.default),
    };

    // (comm id, class, ...) -> finding under construction.
    let mut findings: BTreeMap<(String, String), SafetyFinding> = BTreeMap::new();
    let mut unchecked: BTreeSet<String> = BTreeSet::new();
    // (device signature, comm id) -> denied reasons (empty: reachable).
    let mut memo: HashMap<(Signature, String), Option<BTreeSet<String>>> = HashMap::new();

    for (i, d) in devices.iter().enumerate() {
        if d.criticality != Criticality::LifeSustaining {
            continue;
        }
        let me = DeviceId(i as u32);
        for c in comms_of(kb, d) {
            let probes = probes(c);
            if probes.is_empty() {
                unchecked.insert(format!("{}: any port, cannot be checked against port rules", c.id));
                continue;
            }
            let mut peers: Vec<DeviceId> = Vec::new();
            for role in &c.peers {
                match role {
                    PeerRole::Class(cl) => peers.extend(by_class.get(cl.as_str()).into_iter().flatten()),
                    PeerRole::Category(cat) => peers.extend(by_category.get(cat).into_iter().flatten()),
                    other => {
                        unchecked.insert(format!("{}: peer {other} is not a device role", c.id));
                    }
                }
            }
            peers.retain(|p| *p != me);
            if peers.is_empty() {
                if c.peers.iter().any(|r| matches!(r, PeerRole::Class(_) | PeerRole::Category(_))) {
                    let roles: Vec<String> = c.peers.iter().map(|r| r.to_string()).collect();
                    unchecked.insert(format!("{}: no {} in the inventory", c.id, roles.join(" or ")));
                }
                continue;
            }
            let key = (signature(me), c.id.clone());
            let outcome = memo.entry(key).or_insert_with(|| {
                let mut seen_peer: BTreeSet<Signature> = BTreeSet::new();
                let mut reasons = BTreeSet::new();
                for &p in &peers {
                    if !seen_peer.insert(signature(p)) {
                        continue;
                    }
                    for &(proto, port) in &probes {
                        let out = Flow {
                            src: end(me),
                            dst: end(p),
                            ip_proto: proto,
                            dst_port: port,
                            app: None,
                            dst_domain: None,
                        };
                        let inb = Flow { src: end(p), dst: end(me), ..out };
                        let dirs: &[&Flow] = match c.direction {
                            Direction::Outbound => &[&out],
                            Direction::Inbound => &[&inb],
                            Direction::Any => &[&out, &inb],
                        };
                        let mut reachable = false;
                        for f in dirs {
                            let v = compiled.evaluate(f);
                            if v.action == Action::Deny {
                                reasons.insert(denied_by(v.decided_by));
                            } else {
                                reachable = true;
                            }
                        }
                        if reachable {
                            return None;
                        }
                    }
                }
                Some(reasons)
            });
            if let Some(reasons) = outcome {
                let f = findings.entry((c.id.clone(), d.class.clone())).or_insert_with(|| SafetyFinding {
                    comm: c.id.clone(),
                    reason: c.reason.clone(),
                    device_class: d.class.clone(),
                    peers: c.peers.iter().map(|r| r.to_string()).collect(),
                    ports: probes.iter().map(|(p, port)| format!("{}/{port}", proto_name(*p))).collect(),
                    denied_by: Vec::new(),
                    devices: Vec::new(),
                });
                for r in reasons.iter() {
                    if !f.denied_by.contains(r) {
                        f.denied_by.push(r.clone());
                    }
                }
                f.devices.push(d.mac);
            }
        }
    }
    let mut findings: Vec<SafetyFinding> = findings.into_values().collect();
    for f in &mut findings {
        f.devices.sort_unstable();
        f.devices.dedup();
        f.denied_by.sort();
    }
    SafetyReport { findings, unchecked: unchecked.into_iter().collect(), overridden: policy.life_sustaining_override }
}
