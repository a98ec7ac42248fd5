//! The [`Exporter`] trait and the registry of targets, one file each.

use crate::error::ExportError;
use crate::model::{Action, Destination, IpCidr, ResolvedPolicy, Rule, Segment};
use std::net::IpAddr;

pub mod cisco_ios;
pub mod cisco_ise;
pub mod clearpass;
pub mod fortios;
pub mod iptables;
pub mod nftables;
pub mod packetfence;
pub mod paloalto;

/// One enforcement target.
pub trait Exporter {
    /// Short stable identifier (`nftables`, `cisco-ios`, …), also the golden-test folder.
    fn name(&self) -> &'static str;
    /// File name of the main output.
    fn file_name(&self) -> &'static str;
    /// The main output, byte for byte reproducible.
    fn render(&self, policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError>;
    /// Every file of the export: the main output first, then any companions (per-group
    /// lists, a second address family, …). Names are relative paths.
    fn render_all(&self, policy: &ResolvedPolicy) -> Result<Vec<ExportFile>, ExportError> {
        Ok(vec![ExportFile { path: self.file_name().to_string(), bytes: self.render(policy)? }])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Every target, in a fixed order.
pub fn all_exporters() -> Vec<Box<dyn Exporter>> {
    vec![
        Box::new(nftables::Nftables),
        Box::new(iptables::Iptables),
        Box::new(cisco_ios::CiscoIos),
        Box::new(cisco_ise::CiscoIse),
        Box::new(paloalto::PaloAlto),
        Box::new(fortios::FortiOs),
        Box::new(clearpass::ClearPass),
        Box::new(packetfence::PacketFence),
    ]
}

/// Where a packet filter decides: one segment (traffic sourced in its subnets, arriving on
/// its interface) or, with `segment: None`, sources in no segment.
pub(crate) struct Scope<'a> {
    pub segment: Option<&'a Segment>,
    pub default: Action,
    pub entries: Vec<Entry<'a>>,
}

/// A rule as seen from one scope: only its source addresses that lie in the scope.
pub(crate) struct Entry<'a> {
    pub rule: &'a Rule,
    pub src: Vec<IpAddr>,
    pub dst: Dst,
}

pub(crate) enum Dst {
    Hosts(Vec<IpAddr>),
    Net(IpCidr),
}

impl Dst {
    /// The destination restricted to one address family (`None`: nothing of that family).
    pub fn family(&self, v4: bool) -> Option<Dst> {
        match self {
            Dst::Hosts(h) => {
                let h: Vec<IpAddr> = h.iter().copied().filter(|a| a.is_ipv4() == v4).collect();
                (!h.is_empty()).then_some(Dst::Hosts(h))
            }
            Dst::Net(n) => (n.is_ipv4() == v4).then_some(Dst::Net(*n)),
        }
    }
}

/// The decision structure shared by the address-based packet filters: segments in name
/// order, then the no-segment scope; each scope's rules in policy order. Rules with no
/// source address in a scope are left out of it (they could never match there).
pub(crate) fn scopes<'a>(policy: &'a ResolvedPolicy, target: &'static str) -> Result<Vec<Scope<'a>>, ExportError> {
    let mut out = Vec::new();
    let segs: Vec<Option<&Segment>> = policy.segments.iter().map(Some).chain([None]).collect();
    for seg in segs {
        let mut entries = Vec::new();
        for rule in &policy.rules {
            let group = policy.group(&rule.source).expect("validated");
            let src = policy.addresses_in(group, seg);
            if src.is_empty() {
                continue;
            }
            let dst = match &rule.destination {
                Destination::Group(g) => Dst::Hosts(policy.group(g).expect("validated").addresses()),
                Destination::Cidr(n) => Dst::Net(*n),
                Destination::Domain(d) => {
                    return Err(ExportError::unsupported(
                        target,
                        format!("rule {:?}: domain destination {d:?} (it filters on addresses only)", rule.id),
                    ))
                }
            };
            entries.push(Entry { rule, src, dst });
        }
        out.push(Scope { segment: seg, default: seg.map_or(policy.default_action, |s| s.default_action), entries });
    }
    Ok(out)
}

/// `rule r1 (HL7 MLLP)` — the comment text every target attaches to a rule.
pub(crate) fn rule_label(rule: &Rule) -> String {
    match &rule.application {
        Some(app) => format!("rule {} ({})", rule.id, app),
        None => format!("rule {}", rule.id),
    }
}

/// Each MAC with the one group it belongs to. NAC systems give an endpoint one identity
/// group or role, so a MAC in two groups cannot be expressed there.
pub(crate) fn group_of_mac<'a>(
    policy: &'a ResolvedPolicy,
    target: &'static str,
) -> Result<
    std::collections::BTreeMap<wardline_common::MacAddr, (&'a crate::model::Group, &'a crate::model::Member)>,
    ExportError,
> {
    let mut out = std::collections::BTreeMap::new();
    for g in &policy.groups {
        for m in &g.members {
            if let Some((first, _)) = out.insert(m.mac, (g, m)) {
                return Err(ExportError::unsupported(
                    target,
                    format!(
                        "endpoint {} in two groups ({:?} and {:?}); it takes one group per endpoint",
                        m.mac, first.name, g.name
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The default a per-endpoint filter (a downloadable ACL, a role) needs for `group`: the
/// default of the segment(s) its members are in, or the policy default for members in none.
/// Members in segments with different defaults cannot share one per-group filter.
pub(crate) fn group_default(
    policy: &ResolvedPolicy,
    group: &crate::model::Group,
    target: &'static str,
) -> Result<Action, ExportError> {
    let mut seen = std::collections::BTreeMap::new();
    for a in group.addresses() {
        let (scope, action) = match policy.segment_of(a) {
            Some(s) => (s.name.clone(), s.default_action),
            None => ("no segment".to_string(), policy.default_action),
        };
        seen.entry(action).or_insert(scope);
    }
    match seen.len() {
        0 => Ok(policy.default_action),
        1 => Ok(*seen.keys().next().unwrap()),
        _ => Err(ExportError::unsupported(
            target,
            format!(
                "group {:?}: its members sit in scopes with different defaults ({}); one per-group filter has one default",
                group.name,
                seen.iter().map(|(a, s)| format!("{s}: {a:?}")).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}
