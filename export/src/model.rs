//! `ResolvedPolicy`: the one input every exporter reads. Groups are already resolved to
//! their members (MAC, addresses, VLAN, site), so exporters never consult the classifier or
//! the policy language; the lead converts intel's policy model into this type.

use crate::error::ExportError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use wardline_common::MacAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedPolicy {
    pub name: String,
    /// Stamped into every output so an operator can tell which policy a device runs.
    pub version: u64,
    /// For traffic whose source lies in no segment.
    pub default_action: Action,
    pub groups: Vec<Group>,
    pub segments: Vec<Segment>,
    /// First match wins; order is significant and kept as given.
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    pub mac: MacAddr,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub site: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub name: String,
    pub vlan: u16,
    /// The router/firewall interface facing this segment (e.g. `Vlan10`, `eth0.10`, `port3`).
    pub interface: String,
    pub subnets: Vec<IpCidr>,
    /// For traffic sourced in this segment that no rule allows.
    pub default_action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    /// Name of the source group.
    pub source: String,
    pub destination: Destination,
    pub protocol: Protocol,
    /// Destination ports; empty means every port. Only for tcp and udp.
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// Application label (e.g. "HL7 MLLP"), carried into comments only.
    #[serde(default)]
    pub application: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    Group(String),
    Cidr(IpCidr),
    Domain(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Any,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        }
    }
}

/// An inclusive destination port range; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange { start: port, end: port }
    }
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
    pub fn is_single(&self) -> bool {
        self.start == self.end
    }
}

impl fmt::Display for PortRange {
    /// `443` or `8000-8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// An IP network in prefix notation; host bits must be zero (`198.18.1.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpCidr {
    pub fn host(addr: IpAddr) -> IpCidr {
        IpCidr { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } }
    }
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
    pub fn is_host(&self) -> bool {
        self.prefix == if self.is_ipv4() { 32 } else { 128 }
    }
    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u32::from(a) as u128, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }
    fn full(width: u8) -> u128 {
        if width == 32 {
            u32::MAX as u128
        } else {
            u128::MAX
        }
    }
    fn mask(width: u8, prefix: u8) -> u128 {
        if prefix == 0 {
            0
        } else {
            (Self::full(width) << (width - prefix)) & Self::full(width)
        }
    }
    pub fn contains(&self, addr: IpAddr) -> bool {
        if addr.is_ipv4() != self.is_ipv4() {
            return false;
        }
        let (net, width) = Self::bits(self.addr);
        let (a, _) = Self::bits(addr);
        let m = Self::mask(width, self.prefix);
        a & m == net & m
    }
    pub fn overlaps(&self, other: &IpCidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
    /// The dotted netmask of an IPv4 network (`255.255.255.0`), for IOS and FortiOS.
    pub fn netmask_v4(&self) -> Option<std::net::Ipv4Addr> {
        self.is_ipv4().then(|| std::net::Ipv4Addr::from(Self::mask(32, self.prefix) as u32))
    }
    /// The inverse mask of an IPv4 network (`0.0.0.255`), for IOS access lists.
    pub fn wildcard_v4(&self) -> Option<std::net::Ipv4Addr> {
        self.netmask_v4().map(|m| std::net::Ipv4Addr::from(!u32::from(m)))
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpCidr {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ExportError::invalid(format!("network {s:?}: {why} (expected e.g. 198.18.1.0/24)"));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= width).ok_or_else(|| bad("bad prefix length"))?,
            None => width,
        };
        let net = IpCidr { addr, prefix };
        let (a, _) = Self::bits(addr);
        if a & !Self::mask(width, prefix) & Self::full(width) != 0 {
            return Err(bad("host bits set below the prefix"));
        }
        Ok(net)
    }
}

impl Serialize for IpCidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpCidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One connection attempt, as the reference evaluation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: FlowProtocol,
    /// Destination port for tcp and udp; ignored for icmp.
    pub dst_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowProtocol {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    /// The rule that allowed the flow; `None` when a default decided.
    pub rule: Option<String>,
}

impl ResolvedPolicy {
    /// A copy in canonical order (groups, members, addresses, segments, subnets and ports
    /// sorted and de-duplicated; rules keep their order), after checking that it is
    /// consistent. Every exporter renders from this, so input order never changes output.
    pub fn canonical(&self) -> Result<ResolvedPolicy, ExportError> {
        let mut p = self.clone();
        for g in &mut p.groups {
            for m in &mut g.members {
                m.addresses.sort();
                m.addresses.dedup();
            }
            g.members.sort();
            g.members.dedup();
        }
        p.groups.sort_by(|a, b| a.name.cmp(&b.name));
        for s in &mut p.segments {
            s.subnets.sort();
            s.subnets.dedup();
        }
        p.segments.sort_by(|a, b| a.name.cmp(&b.name));
        for r in &mut p.rules {
            r.ports.sort();
            r.ports.dedup();
        }
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), ExportError> {
        let inv = ExportError::invalid;
        if self.name.trim().is_empty() {
            return Err(inv("the policy has no name".into()));
        }
        let mut seen = BTreeSet::new();
        for g in &self.groups {
            if g.name.trim().is_empty() {
                return Err(inv("a group has an empty name".into()));
            }
            if !seen.insert(g.name.as_str()) {
                return Err(inv(format!("group {:?} is defined twice", g.name)));
            }
            let mut macs = BTreeSet::new();
            for m in &g.members {
                if !macs.insert(m.mac) {
                    return Err(inv(format!("group {:?} lists member {} twice with different details", g.name, m.mac)));
                }
            }
        }
        let mut seg_names = BTreeSet::new();
        let mut vlans = BTreeMap::new();
        for s in &self.segments {
            if !seg_names.insert(s.name.as_str()) {
                return Err(inv(format!("segment {:?} is defined twice", s.name)));
            }
            if !(1..=4094).contains(&s.vlan) {
                return Err(inv(format!("segment {:?}: VLAN {} is outside 1-4094", s.name, s.vlan)));
            }
            if let Some(other) = vlans.insert(s.vlan, s.name.as_str()) {
                return Err(inv(format!("segments {other:?} and {:?} share VLAN {}", s.name, s.vlan)));
            }
            if s.interface.trim().is_empty() {
                return Err(inv(format!("segment {:?} has no interface name", s.name)));
            }
        }
        // A source address must select exactly one segment's default.
        let all: Vec<(&str, &IpCidr)> =
            self.segments.iter().flat_map(|s| s.subnets.iter().map(move |n| (s.name.as_str(), n))).collect();
        for (i, (sa, na)) in all.iter().enumerate() {
            for (sb, nb) in &all[i + 1..] {
                if na.overlaps(nb) {
                    return Err(inv(format!("subnets {na} (segment {sa:?}) and {nb} (segment {sb:?}) overlap")));
                }
            }
        }
        let mut ids = BTreeSet::new();
        for r in &self.rules {
            let what = format!("rule {:?}", r.id);
            if r.id.trim().is_empty() {
                return Err(inv("a rule has an empty id".into()));
            }
            if !ids.insert(r.id.as_str()) {
                return Err(inv(format!("{what} is defined twice")));
            }
            if !seen.contains(r.source.as_str()) {
                return Err(inv(format!("{what}: source group {:?} does not exist", r.source)));
            }
            match &r.destination {
                Destination::Group(g) if !seen.contains(g.as_str()) => {
                    return Err(inv(format!("{what}: destination group {g:?} does not exist")));
                }
                Destination::Domain(d) if !valid_domain(d) => {
                    return Err(inv(format!("{what}: {d:?} is not a domain name")));
                }
                _ => {}
            }
            match r.protocol {
                Protocol::Icmp | Protocol::Any if !r.ports.is_empty() => {
                    return Err(inv(format!("{what}: ports only apply to tcp and udp, not {}", r.protocol.as_str())));
                }
                _ => {}
            }
            for p in &r.ports {
                if p.start == 0 || p.start > p.end {
                    return Err(inv(format!("{what}: port range {}-{} is empty or includes port 0", p.start, p.end)));
                }
            }
        }
        Ok(())
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The segment whose subnets hold `addr` (segments never overlap once validated).
    pub fn segment_of(&self, addr: IpAddr) -> Option<&Segment> {
        self.segments.iter().find(|s| s.subnets.iter().any(|n| n.contains(addr)))
    }

    /// The exporter-side reference evaluation: what the exported filters must do with `flow`.
    ///
    /// Semantics (every packet-filter target implements exactly this):
    /// 1. Rules are tried in order; the first whose source group has `flow.src` as a member
    ///    address, whose destination holds `flow.dst` and whose protocol and ports match,
    ///    allows the flow.
    /// 2. Otherwise the default of the segment whose subnets hold `flow.src` decides, or the
    ///    policy's `default_action` when the source lies in no segment.
    ///
    /// Domain destinations never match here: an address-level evaluation cannot know what a
    /// name resolves to (targets that cannot resolve names refuse such rules). Replies of an
    /// allowed flow are allowed (the packet filters are stateful). A flow is assumed to arrive
    /// on the interface of its source's segment.
    pub fn verdict(&self, flow: &Flow) -> Verdict {
        for r in &self.rules {
            let Some(src) = self.group(&r.source) else { continue };
            if !src.members.iter().any(|m| m.addresses.contains(&flow.src)) {
                continue;
            }
            let dst_ok = match &r.destination {
                Destination::Group(g) => {
                    self.group(g).is_some_and(|g| g.members.iter().any(|m| m.addresses.contains(&flow.dst)))
                }
                Destination::Cidr(n) => n.contains(flow.dst),
                Destination::Domain(_) => false,
            };
            if !dst_ok {
                continue;
            }
            let proto_ok = match (r.protocol, flow.protocol) {
                (Protocol::Any, _) => true,
                (Protocol::Tcp, FlowProtocol::Tcp) | (Protocol::Udp, FlowProtocol::Udp) => {
                    r.ports.is_empty() || r.ports.iter().any(|p| p.contains(flow.dst_port))
                }
                (Protocol::Icmp, FlowProtocol::Icmp) => true,
                _ => false,
            };
            if proto_ok {
                return Verdict { action: Action::Allow, rule: Some(r.id.clone()) };
            }
        }
        let action = self.segment_of(flow.src).map_or(self.default_action, |s| s.default_action);
        Verdict { action, rule: None }
    }

    /// The header line every text output starts with (behind the target's comment marker).
    pub fn stamp(&self) -> String {
        format!("wardline policy {:?} version {}", self.name, self.version)
    }

    /// The stamp without quotes, for comment fields that reject them.
    pub fn stamp_plain(&self) -> String {
        format!("wardline policy {} version {}", self.name, self.version)
    }

    /// Addresses of the members of group `name` that lie in segment `seg` (`None`: in no segment).
    pub fn addresses_in(&self, group: &Group, seg: Option<&Segment>) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = group
            .members
            .iter()
            .flat_map(|m| m.addresses.iter().copied())
            .filter(|a| self.segment_of(*a).map(|s| &s.name) == seg.map(|s| &s.name))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Group {
    /// Every address of every member, sorted and de-duplicated.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self.members.iter().flat_map(|m| m.addresses.iter().copied()).collect();
        out.sort();
        out.dedup();
        out
    }
}

fn valid_domain(d: &str) -> bool {
    let d = d.strip_prefix("*.").unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_containment() {
        let n: IpCidr = "198.18.1.0/24".parse().unwrap();
        assert!(n.contains("198.18.1.77".parse().unwrap()));
        assert!(!n.contains("198.18.2.1".parse().unwrap()));
        assert_eq!(n.netmask_v4().unwrap().to_string(), "255.255.255.0");
        assert_eq!(n.wildcard_v4().unwrap().to_string(), "0.0.0.255");
        assert!("198.18.1.1/24".parse::<IpCidr>().is_err(), "host bits accepted");
        assert!("198.18.1.0/33".parse::<IpCidr>().is_err());
        let all: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let v6: IpCidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("198.18.1.1".parse().unwrap()));
        let host: IpCidr = "2001:db8::1".parse().unwrap();
        assert!(host.is_host());
    }

    #[test]
    fn domains_are_checked() {
        assert!(valid_domain("updates.vendor.example"));
        assert!(valid_domain("*.vendor.example"));
        assert!(!valid_domain("bad domain"));
        assert!(!valid_domain("-x.example"));
    }
}
