//! A policy against the current inventory: each MAC device's policy attributes (its
//! classification by this node's knowledge base, addresses, VLANs, site), and from them the
//! group membership a proposal carries into the replicated state.
//!
//! Done by the proposing node, outside the state lock: classification needs the knowledge
//! base, which is node configuration, so the result travels in the command and every node
//! applies the same membership (see `crate::state::policy`).

use crate::query::classify::classify_record;
use crate::state::policy::GroupMembers;
use crate::state::{ClusterState, DeviceRecord};
use std::sync::Arc;
use wardline_intel::policy::{Membership, Policy, PolicyDevice};
use wardline_intel::KnowledgeBase;

/// The device records to resolve and the operators' tags, copied out under the state lock
/// (cheap `Arc` clones). Derefs to the records.
#[derive(Clone, Default)]
pub struct Records {
    pub devices: Vec<Arc<DeviceRecord>>,
    pub tags: Arc<crate::state::tags::DeviceTags>,
}

impl std::ops::Deref for Records {
    type Target = [Arc<DeviceRecord>];
    fn deref(&self) -> &Self::Target {
        &self.devices
    }
}

impl<'a> IntoIterator for &'a Records {
    type Item = &'a Arc<DeviceRecord>;
    type IntoIter = std::slice::Iter<'a, Arc<DeviceRecord>>;
    fn into_iter(self) -> Self::IntoIter {
        self.devices.iter()
    }
}

pub fn records(state: &ClusterState) -> Records {
    Records { devices: state.devices().values().cloned().collect(), tags: Arc::new(state.device_tags().clone()) }
}

/// `YYYY-MM-DD` of a time in ms since the epoch (for end-of-support dates).
pub fn date_of(ms: u64) -> String {
    crate::siem::syslog::rfc3339_ms(ms)[..10].to_string()
}

/// The policy attributes of every device, sorted by MAC, with the operators' tags. Risk and
/// vulnerabilities stay zero (see [`policy_devices_with_risk`]).
pub fn policy_devices(records: &Records, kb: &KnowledgeBase, today: &str) -> Vec<PolicyDevice> {
    records.iter().map(|r| inventory_attributes(r, &classify_record(kb, r), records, today)).collect()
}

/// What the inventory and the operators say of one device: class, addresses, VLANs, site, tags.
fn inventory_attributes(
    r: &DeviceRecord,
    class: &wardline_intel::Classification,
    records: &Records,
    today: &str,
) -> PolicyDevice {
    let mut d = PolicyDevice::from_classification(class, today);
    d.ips = r.ips.keys().collect();
    d.vlans = r.vlans.iter().copied().collect();
    d.site = r.sites.iter().next().cloned();
    d.tags = records.tags.of(&r.mac).map(|t| t.iter().cloned().collect()).unwrap_or_default();
    d
}

/// [`policy_devices`] plus what the risk model knows (decision 0031): the number of matched
/// vulnerabilities, whether one is known exploited, and the risk score from evidence, OS and
/// vulnerabilities (no flows, as in the risk roll-up; `as_of` the day of the device's last
/// packet), so `vulnerable`, `kev`, `vulns` and `risk` conditions hold. A device joins
/// "vulnerable infusion pumps" on the first refresh after a feed import matches it.
pub fn policy_devices_with_risk(
    records: &Records,
    kb: &KnowledgeBase,
    feeds: &crate::risk::CompiledFeeds,
    today: &str,
) -> Vec<PolicyDevice> {
    use crate::query::risk::device_query;
    use wardline_intel::risk::RiskInput;
    let classes: Vec<_> = records.iter().map(|r| classify_record(kb, r)).collect();
    let queries: Vec<_> = classes.iter().map(device_query).collect();
    let matches = feeds.index.match_inventory(&queries);
    records
        .iter()
        .zip(classes.iter().zip(matches))
        .map(|(r, (class, vulns))| {
            let mut d = inventory_attributes(r, class, records, today);
            d.vulns = u32::try_from(vulns.len()).unwrap_or(u32::MAX);
            d.kev = vulns.iter().any(|v| v.kev);
            let evidence: Vec<wardline_common::Evidence> = r
                .evidence
                .iter()
                .map(|((field, value), seen)| {
                    wardline_common::Evidence::new(*field, value.clone(), seen.proto, seen.last_ts_us)
                })
                .collect();
            let risk_vulns: Vec<wardline_intel::VulnMatch> = vulns.iter().map(Into::into).collect();
            let input = RiskInput {
                classification: class,
                evidence: &evidence,
                flows: &[],
                vulnerabilities: &risk_vulns,
                as_of: crate::risk::day_of_us(r.last_seen_us),
            };
            d.risk = wardline_intel::assess(kb, &input).score;
            d
        })
        .collect()
}

/// One entry per group of `policy` (sorted by name, as the policy keeps them), members sorted.
pub fn membership(policy: &Policy, devices: &[PolicyDevice]) -> Vec<GroupMembers> {
    let mut m = Membership::evaluate(&policy.groups, devices);
    policy
        .groups
        .iter()
        .map(|g| GroupMembers {
            group: g.name.clone(),
            members: m.groups.remove(&g.name).unwrap_or_default().into_iter().collect(),
        })
        .collect()
}

/// The export crate's input for `policy` (version `version`) with `membership`, each member
/// carrying the addresses, first VLAN and first site the inventory knows for its MAC.
///
/// The export model (decision 0021) has allow rules over a source *group* and one default,
/// so a policy is exported only when that says the same thing: the policy default is deny,
/// no deny rule precedes an allow rule (later deny rules repeat the default and are left
/// out), every scope's default is the policy's, and rule sources are groups. `monitor`
/// counts as allow (monitor lets flows through). Anything else is refused with what to
/// change, rather than exported with a different meaning.
pub fn to_export(
    policy: &Policy,
    version: u64,
    membership: &[GroupMembers],
    records: &[Arc<DeviceRecord>],
) -> Result<wardline_export::ResolvedPolicy, String> {
    use wardline_export as x;
    use wardline_intel::policy::{Action, Endpoint};
    use wardline_intel::Transport;
    if policy.default != Action::Deny {
        return Err(format!(
            "policy default is {}; exports enforce allow-lists, so set [policy] default = \"deny\"",
            policy.default
        ));
    }
    if let Some(s) = policy.scopes.iter().find(|s| s.default != Action::Deny) {
        return Err(format!("scope {:?} has default {}; exports have one default (deny)", s.group, s.default));
    }
    let mut rules = Vec::new();
    let mut seen_deny: Option<&str> = None;
    for r in &policy.rules {
        if r.action == Action::Deny {
            seen_deny.get_or_insert(&r.name);
            continue;
        }
        if let Some(d) = seen_deny {
            return Err(format!(
                "deny rule {d:?} comes before allow rule {:?}; exports cannot express that order (move the deny \
                 rule after the allow rules it should not override, or narrow them)",
                r.name
            ));
        }
        // Export rules carry ports on tcp or udp only; `any` with ports means either of the
        // two (other protocols never match ports), so it becomes one rule per protocol.
        let protocols: &[x::Protocol] = match (r.protocol, r.ports.is_empty()) {
            (Transport::Tcp, _) => &[x::Protocol::Tcp],
            (Transport::Udp, _) => &[x::Protocol::Udp],
            (Transport::Any, true) => &[x::Protocol::Any],
            (Transport::Any, false) => &[x::Protocol::Tcp, x::Protocol::Udp],
        };
        let ports: Vec<x::PortRange> = r.ports.iter().map(|p| x::PortRange { start: p.lo, end: p.hi }).collect();
        for (i, from) in r.from.iter().enumerate() {
            let Endpoint::Group(source) = from else {
                return Err(format!("rule {:?} has source {from}; exported rules need a group as source", r.name));
            };
            for (j, to) in r.to.iter().enumerate() {
                let destinations = match to {
                    Endpoint::Group(g) => vec![x::Destination::Group(g.clone())],
                    Endpoint::Network(c) => {
                        let c: x::IpCidr = c.to_string().parse().map_err(|e| format!("rule {:?}: {e}", r.name))?;
                        vec![x::Destination::Cidr(c)]
                    }
                    Endpoint::Domain(d) => vec![x::Destination::Domain(d.clone())],
                    Endpoint::Any => vec![
                        x::Destination::Cidr("0.0.0.0/0".parse().expect("valid")),
                        x::Destination::Cidr("::/0".parse().expect("valid")),
                    ],
                    Endpoint::External | Endpoint::Internal => {
                        return Err(format!(
                            "rule {:?} names {to}; exports need groups, networks or domains as destinations",
                            r.name
                        ))
                    }
                };
                for (k, destination) in destinations.into_iter().enumerate() {
                    let mut id = r.name.clone();
                    if r.from.len() > 1 || r.to.len() > 1 || k > 0 {
                        id = format!("{id} #{}", i * 100 + j * 2 + k + 1);
                    }
                    for &protocol in protocols {
                        rules.push(x::Rule {
                            id: if protocols.len() > 1 { format!("{id} ({})", protocol.as_str()) } else { id.clone() },
                            source: source.clone(),
                            destination: destination.clone(),
                            protocol,
                            ports: ports.clone(),
                            application: r.app.clone(),
                        });
                    }
                }
            }
        }
    }
    let by_mac: std::collections::BTreeMap<_, _> = records.iter().map(|r| (r.mac, r)).collect();
    let groups = policy
        .groups
        .iter()
        .map(|g| {
            let members = membership
                .iter()
                .find(|m| m.group == g.name)
                .map(|m| m.members.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|mac| {
                    let rec = by_mac.get(mac);
                    x::Member {
                        mac: *mac,
                        addresses: rec.map(|r| r.ips.keys().collect()).unwrap_or_default(),
                        vlan: rec.and_then(|r| r.vlans.iter().next().copied()),
                        site: rec.and_then(|r| r.sites.iter().next().cloned()),
                    }
                })
                .collect();
            x::Group { name: g.name.clone(), description: g.description.clone(), members }
        })
        .collect();
    Ok(x::ResolvedPolicy {
        name: policy.name.clone(),
        version,
        default_action: x::Action::Deny,
        groups,
        segments: Vec::new(),
        rules,
    })
}
