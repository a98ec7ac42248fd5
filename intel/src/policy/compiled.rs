//! The compiled evaluator: a policy plus the device list, turned into per-device group
//! bitsets and rules indexed by (protocol, destination port), so deciding a flow costs a
//! binary search and a few word ANDs.
//!
//! Semantics (the reference evaluation in the tests spells them out the slow way):
//! - The rules that could decide are those whose protocol and ports fit the flow and whose
//!   app label (if any) equals the flow's; the first of them in file order whose `from`
//!   holds the source and whose `to` holds the destination decides.
//! - An end holds a device when it names a group the device belongs to; it holds an address
//!   when it is `any`, a network containing it, `external`/`internal` by the address's range
//!   (a known device without an address given counts as internal); a domain holds a
//!   destination whose DNS name is the domain or under it.
//! - No rule: the first scope (file order) whose group holds the source or the destination
//!   device gives the action; otherwise the policy's default.
//! - A flow end given only by address is the device that lists that address (the first in
//!   the device list when several do).

use super::cidr::Cidr;
use super::device::PolicyDevice;
use super::groups::Membership;
use super::model::{domain_covers, external, Action, Endpoint, Policy};
use crate::model::Transport;
use std::collections::HashMap;
use std::net::IpAddr;
use wardline_common::MacAddr;

/// A device's position in the list the policy was compiled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u32);

/// One end of a flow: the device if known, its address if known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEnd {
    pub device: Option<DeviceId>,
    pub ip: Option<IpAddr>,
}

/// A flow to decide: who opened it to whom, on what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow<'a> {
    pub src: FlowEnd,
    pub dst: FlowEnd,
    /// IP protocol number (6 TCP, 17 UDP; others only match `protocol = "any"` rules
    /// without ports).
    pub ip_proto: u8,
    pub dst_port: u16,
    /// Application label ("hl7"), lower case.
    pub app: Option<&'a str>,
    /// The destination's DNS name, if known (DNS answers, TLS SNI).
    pub dst_domain: Option<&'a str>,
}

/// Which part of the policy decided a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// Index into [`Policy::rules`].
    Rule(u32),
    /// Index into [`Policy::scopes`]: that scope's default.
    Scope(u32),
    /// The policy's default.
    Default,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verdict {
    pub action: Action,
    pub decided_by: DecidedBy,
}

/// Counters a caller accumulates over many evaluations (per thread, then [`merge`](Self::merge)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HitCounts {
    /// Per rule, in policy order.
    pub rules: Vec<u64>,
    /// Per scope default, in policy order.
    pub scopes: Vec<u64>,
    pub default: u64,
    /// Per group (in [`CompiledPolicy::group_names`] order): flows from a member.
    pub group_src: Vec<u64>,
    /// Per group: flows to a member.
    pub group_dst: Vec<u64>,
    /// allow, deny, monitor.
    pub actions: [u64; 3],
}

impl HitCounts {
    pub fn merge(&mut self, other: &HitCounts) {
        let add = |a: &mut Vec<u64>, b: &Vec<u64>| {
            if a.len() < b.len() {
                a.resize(b.len(), 0);
            }
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        };
        add(&mut self.rules, &other.rules);
        add(&mut self.scopes, &other.scopes);
        add(&mut self.group_src, &other.group_src);
        add(&mut self.group_dst, &other.group_dst);
        self.default += other.default;
        for i in 0..3 {
            self.actions[i] += other.actions[i];
        }
    }
}

/// One end of a compiled rule.
#[derive(Clone, Debug, Default)]
struct EndSet {
    any: bool,
    external: bool,
    internal: bool,
    /// Group bitset, `words` long; empty when the end names no group.
    groups: Vec<u64>,
    nets: Vec<Cidr>,
    domains: Vec<Box<str>>,
}

#[derive(Clone, Debug)]
struct CompiledRule {
    action: Action,
    app: Option<Box<str>>,
    src: EndSet,
    dst: EndSet,
}

/// Rules by destination port for one protocol bucket: `starts` are the first ports of
/// elementary intervals (no rule's ports begin or end inside one); `lists[i]` are the
/// candidate rules of interval i in policy order.
#[derive(Clone, Debug, Default)]
struct PortIndex {
    starts: Vec<u16>,
    offsets: Vec<u32>,
    rules: Vec<u32>,
}

impl PortIndex {
    fn build(policy: &Policy, bucket: Transport) -> PortIndex {
        // Which rules can ever match in this bucket; "other" protocols only portless `any` rules.
        let fits = |r: &super::model::Rule| match bucket {
            Transport::Any => r.protocol == Transport::Any && r.ports.is_empty(),
            b => r.protocol == Transport::Any || r.protocol == b,
        };
        let mut starts = vec![0u16];
        for r in policy.rules.iter().filter(|r| fits(r)) {
            for p in &r.ports {
                starts.push(p.lo);
                if p.hi < u16::MAX {
                    starts.push(p.hi + 1);
                }
            }
        }
        starts.sort_unstable();
        starts.dedup();
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); starts.len()];
        for (i, r) in policy.rules.iter().enumerate().filter(|(_, r)| fits(r)) {
            if r.ports.is_empty() {
                lists.iter_mut().for_each(|l| l.push(i as u32));
                continue;
            }
            for p in &r.ports {
                let first = starts.partition_point(|s| *s < p.lo);
                let end = starts.partition_point(|s| *s <= p.hi);
                for l in &mut lists[first..end] {
                    l.push(i as u32);
                }
            }
        }
        let mut offsets = Vec::with_capacity(starts.len() + 1);
        let mut rules = Vec::new();
        offsets.push(0);
        for l in lists {
            rules.extend(l);
            offsets.push(rules.len() as u32);
        }
        PortIndex { starts, offsets, rules }
    }

    #[inline]
    fn candidates(&self, port: u16) -> &[u32] {
        let i = self.starts.partition_point(|s| *s <= port) - 1;
        &self.rules[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// A policy compiled against one device list.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    words: usize,
    group_names: Vec<String>,
    rule_names: Vec<String>,
    /// devices × words.
    bits: Vec<u64>,
    /// First scope holding the device, `u32::MAX` for none.
    device_scope: Vec<u32>,
    scope_actions: Vec<Action>,
    default: Action,
    rules: Vec<CompiledRule>,
    tcp: PortIndex,
    udp: PortIndex,
    other: PortIndex,
    macs: HashMap<MacAddr, DeviceId>,
    ips: HashMap<IpAddr, DeviceId>,
    /// Some rule names a network, `external` or `internal`: verdicts depend on addresses,
    /// not only on group membership.
    uses_addresses: bool,
}

const NO_SCOPE: u32 = u32::MAX;

impl CompiledPolicy {
    /// Compile `policy` for `devices` (membership is evaluated here).
    pub fn compile(policy: &Policy, devices: &[PolicyDevice]) -> CompiledPolicy {
        let membership = Membership::evaluate(&policy.groups, devices);
        Self::compile_with(policy, devices, &membership)
    }

    /// Compile with a membership the caller already evaluated (the aggregator keeps it to
    /// record history). Groups missing from `membership` have no members.
    pub fn compile_with(policy: &Policy, devices: &[PolicyDevice], membership: &Membership) -> CompiledPolicy {
        let group_names: Vec<String> = policy.groups.iter().map(|g| g.name.clone()).collect();
        let words = group_names.len().div_ceil(64).max(1);
        let bit_of: HashMap<&str, usize> = group_names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let mut macs = HashMap::with_capacity(devices.len());
        let mut ips = HashMap::with_capacity(devices.len());
        for (i, d) in devices.iter().enumerate() {
            let id = DeviceId(i as u32);
            macs.entry(d.mac).or_insert(id);
            for ip in &d.ips {
                ips.entry(*ip).or_insert(id);
            }
        }
        let mut bits = vec![0u64; devices.len() * words];
        for (bit, name) in group_names.iter().enumerate() {
            let Some(members) = membership.groups.get(name) else { continue };
            if members.is_empty() {
                continue;
            }
            for (i, d) in devices.iter().enumerate() {
                if members.contains(&d.mac) {
                    bits[i * words + bit / 64] |= 1 << (bit % 64);
                }
            }
        }
        let scope_bits: Vec<Option<usize>> =
            policy.scopes.iter().map(|s| bit_of.get(s.group.as_str()).copied()).collect();
        let device_scope = (0..devices.len())
            .map(|i| {
                let row = &bits[i * words..(i + 1) * words];
                scope_bits
                    .iter()
                    .position(|b| b.is_some_and(|b| row[b / 64] & (1 << (b % 64)) != 0))
                    .map(|p| p as u32)
                    .unwrap_or(NO_SCOPE)
            })
            .collect();
        let end = |eps: &[Endpoint]| {
            let mut e = EndSet::default();
            for ep in eps {
                match ep {
                    Endpoint::Any => e.any = true,
                    Endpoint::External => e.external = true,
                    Endpoint::Internal => e.internal = true,
                    Endpoint::Network(c) => e.nets.push(*c),
                    Endpoint::Domain(d) => e.domains.push(d.as_str().into()),
                    Endpoint::Group(g) => {
                        if let Some(&bit) = bit_of.get(g.as_str()) {
                            if e.groups.is_empty() {
                                e.groups = vec![0; words];
                            }
                            e.groups[bit / 64] |= 1 << (bit % 64);
                        }
                    }
                }
            }
            e
        };
        let rules = policy
            .rules
            .iter()
            .map(|r| CompiledRule {
                action: r.action,
                app: r.app.as_deref().map(Into::into),
                src: end(&r.from),
                dst: end(&r.to),
            })
            .collect();
        CompiledPolicy {
            words,
            group_names,
            rule_names: policy.rules.iter().map(|r| r.name.clone()).collect(),
            bits,
            device_scope,
            scope_actions: policy.scopes.iter().map(|s| s.default).collect(),
            default: policy.default,
            rules,
            tcp: PortIndex::build(policy, Transport::Tcp),
            udp: PortIndex::build(policy, Transport::Udp),
            other: PortIndex::build(policy, Transport::Any),
            macs,
            ips,
            uses_addresses: policy
                .rules
                .iter()
                .flat_map(|r| r.from.iter().chain(&r.to))
                .any(|e| matches!(e, Endpoint::Network(_) | Endpoint::External | Endpoint::Internal)),
        }
    }

    /// The device's group bitset (crate-internal: devices with equal rows and, unless
    /// [`Self::uses_addresses`], any addresses get the same verdicts).
    pub(crate) fn groups_row(&self, d: DeviceId) -> &[u64] {
        self.row(d).unwrap_or(&[])
    }
    pub(crate) fn uses_addresses(&self) -> bool {
        self.uses_addresses
    }

    pub fn device(&self, mac: &MacAddr) -> Option<DeviceId> {
        self.macs.get(mac).copied()
    }
    pub fn device_by_ip(&self, ip: &IpAddr) -> Option<DeviceId> {
        self.ips.get(ip).copied()
    }
    /// Group names in bit order (the order of [`HitCounts::group_src`]).
    pub fn group_names(&self) -> &[String] {
        &self.group_names
    }
    pub fn rule_name(&self, id: u32) -> Option<&str> {
        self.rule_names.get(id as usize).map(String::as_str)
    }
    /// Zeroed counters sized for this policy.
    pub fn new_counts(&self) -> HitCounts {
        HitCounts {
            rules: vec![0; self.rules.len()],
            scopes: vec![0; self.scope_actions.len()],
            default: 0,
            group_src: vec![0; self.group_names.len()],
            group_dst: vec![0; self.group_names.len()],
            actions: [0; 3],
        }
    }

    #[inline]
    fn row(&self, d: DeviceId) -> Option<&[u64]> {
        let start = d.0 as usize * self.words;
        self.bits.get(start..start + self.words)
    }

    #[inline]
    fn resolve(&self, e: &FlowEnd) -> Option<DeviceId> {
        match e.device {
            Some(d) if (d.0 as usize) < self.device_scope.len() => Some(d),
            Some(_) => None,
            None => e.ip.and_then(|ip| self.ips.get(&ip).copied()),
        }
    }

    /// Decide one flow.
    #[inline]
    pub fn evaluate(&self, flow: &Flow) -> Verdict {
        let src = self.resolve(&flow.src);
        let dst = self.resolve(&flow.dst);
        self.decide(flow, src, dst)
    }

    /// Decide one flow and count it.
    pub fn evaluate_counted(&self, flow: &Flow, counts: &mut HitCounts) -> Verdict {
        let src = self.resolve(&flow.src);
        let dst = self.resolve(&flow.dst);
        let v = self.decide(flow, src, dst);
        match v.decided_by {
            DecidedBy::Rule(i) => bump(&mut counts.rules, i as usize),
            DecidedBy::Scope(i) => bump(&mut counts.scopes, i as usize),
            DecidedBy::Default => counts.default += 1,
        }
        counts.actions[match v.action {
            Action::Allow => 0,
            Action::Deny => 1,
            Action::Monitor => 2,
        }] += 1;
        for (dev, out) in [(src, &mut counts.group_src), (dst, &mut counts.group_dst)] {
            if let Some(row) = dev.and_then(|d| self.row(d)) {
                for (w, word) in row.iter().enumerate() {
                    let mut b = *word;
                    while b != 0 {
                        bump(out, w * 64 + b.trailing_zeros() as usize);
                        b &= b - 1;
                    }
                }
            }
        }
        v
    }

    #[inline]
    fn decide(&self, flow: &Flow, src: Option<DeviceId>, dst: Option<DeviceId>) -> Verdict {
        let index = match flow.ip_proto {
            6 => &self.tcp,
            17 => &self.udp,
            _ => &self.other,
        };
        let port = if matches!(flow.ip_proto, 6 | 17) { flow.dst_port } else { 0 };
        let candidates = index.candidates(port);
        if !candidates.is_empty() {
            let src_row = src.and_then(|d| self.row(d));
            let dst_row = dst.and_then(|d| self.row(d));
            // Address classes are computed once per flow, not once per rule.
            let src_ext = flow.src.ip.map(|ip| external(&ip));
            let dst_ext = flow.dst.ip.map(|ip| external(&ip));
            for &i in candidates {
                let r = &self.rules[i as usize];
                if let Some(app) = &r.app {
                    if flow.app.is_none_or(|a| !a.eq_ignore_ascii_case(app)) {
                        continue;
                    }
                }
                if end_holds(&r.src, src_row, src.is_some(), flow.src.ip, src_ext, None)
                    && end_holds(&r.dst, dst_row, dst.is_some(), flow.dst.ip, dst_ext, flow.dst_domain)
                {
                    return Verdict { action: r.action, decided_by: DecidedBy::Rule(i) };
                }
            }
        }
        let scope = |d: Option<DeviceId>| d.map(|d| self.device_scope[d.0 as usize]).unwrap_or(NO_SCOPE);
        let s = scope(src).min(scope(dst));
        if s != NO_SCOPE {
            return Verdict { action: self.scope_actions[s as usize], decided_by: DecidedBy::Scope(s) };
        }
        Verdict { action: self.default, decided_by: DecidedBy::Default }
    }
}

#[inline]
fn bump(v: &mut Vec<u64>, i: usize) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += 1;
}

#[inline]
fn end_holds(
    e: &EndSet,
    row: Option<&[u64]>,
    known_device: bool,
    ip: Option<IpAddr>,
    ip_external: Option<bool>,
    domain: Option<&str>,
) -> bool {
    if e.any {
        return true;
    }
    if let (false, Some(row)) = (e.groups.is_empty(), row) {
        if e.groups.iter().zip(row).any(|(a, b)| a & b != 0) {
            return true;
        }
    }
    // A known device given without an address is inside the hospital.
    let is_external = ip_external.unwrap_or(false);
    if (e.external && ip.is_some() && is_external) || (e.internal && (ip.is_some() || known_device) && !is_external) {
        return true;
    }
    if let Some(ip) = ip {
        if e.nets.iter().any(|n| n.contains(&ip)) {
            return true;
        }
    }
    if let Some(name) = domain {
        if e.domains.iter().any(|d| domain_covers(d, name)) {
            return true;
        }
    }
    false
}
