//! The policy as loaded and validated: groups, per-scope default actions and ordered rules.
//! [`super::parse`] builds it from TOML; [`super::compiled`] turns it into the evaluator.

use super::cidr::Cidr;
use super::groups::Group;
use crate::model::Transport;
use std::fmt;
use std::net::IpAddr;

/// What happens to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
    /// Let it through and report it (the safe way to introduce a rule set on clinical networks).
    Monitor,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Monitor => "monitor",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Action> {
        match s {
            "allow" => Some(Action::Allow),
            "deny" => Some(Action::Deny),
            "monitor" => Some(Action::Monitor),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One end of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// Any device or address.
    Any,
    /// An address outside private, loopback, link-local and multicast ranges.
    External,
    /// An address inside them.
    Internal,
    /// A device in the named group.
    Group(String),
    /// An address in the network.
    Network(Cidr),
    /// A destination whose DNS name (from DNS answers or TLS SNI) is this domain or a
    /// subdomain of it. Lower case, no trailing dot.
    Domain(String),
}

impl fmt::Display for Endpoint {
    /// The spelling of the policy file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Any => f.write_str("any"),
            Endpoint::External => f.write_str("external"),
            Endpoint::Internal => f.write_str("internal"),
            Endpoint::Group(g) => f.write_str(g),
            Endpoint::Network(c) => write!(f, "{c}"),
            Endpoint::Domain(d) => write!(f, "domain:{d}"),
        }
    }
}

/// An inclusive range of destination ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Sort and merge overlapping or adjacent ranges, so equal port sets have one spelling.
pub(crate) fn normalize_ports(mut ports: Vec<PortRange>) -> Vec<PortRange> {
    ports.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ports.len());
    for p in ports {
        match out.last_mut() {
            Some(last) if u32::from(p.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(p.hi),
            _ => out.push(p),
        }
    }
    out
}

/// One rule: flows opened by `from` to `to` on `protocol` / `ports` (carrying `app`, when
/// given) get `action`. Rules are consulted in order; the first that matches decides.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    /// Sorted, no duplicates.
    pub from: Vec<Endpoint>,
    /// Sorted, no duplicates.
    pub to: Vec<Endpoint>,
    pub protocol: Transport,
    /// Destination ports, normalized; empty means any port.
    pub ports: Vec<PortRange>,
    /// Application label the flow must carry ("hl7", "dicom"), lower case.
    pub app: Option<String>,
    pub action: Action,
    /// Line of the rule in the file it was read from (0 when built in code).
    pub line: usize,
}

impl Rule {
    pub fn matches_port(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.iter().any(|r| r.contains(port))
    }
}

/// The default action for flows of a group's devices that no rule decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub group: String,
    pub default: Action,
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    pub description: Option<String>,
    /// For flows no rule and no scope decides.
    pub default: Action,
    /// The operator accepts rules that cut life-sustaining devices off peers the knowledge
    /// base says they need (see [`super::safety`]).
    pub life_sustaining_override: bool,
    /// Why, and who decided; required with the override.
    pub override_reason: Option<String>,
    /// Sorted by name.
    pub groups: Vec<Group>,
    /// In file order: the first scope whose group holds the flow's source or destination
    /// gives the default.
    pub scopes: Vec<Scope>,
    /// In file order: the first rule that matches decides.
    pub rules: Vec<Rule>,
}

impl Policy {
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.binary_search_by(|g| g.name.as_str().cmp(name)).ok().map(|i| &self.groups[i])
    }
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Whether a domain endpoint covers a flow's DNS name (equal, or a subdomain).
pub(crate) fn domain_covers(domain: &str, name: &str) -> bool {
    // Bytes, not str slices: a hostile name need not split on a char boundary.
    let name = name.strip_suffix('.').unwrap_or(name).as_bytes();
    let domain = domain.as_bytes();
    if name.len() == domain.len() {
        return name.eq_ignore_ascii_case(domain);
    }
    name.len() > domain.len()
        && name[name.len() - domain.len() - 1] == b'.'
        && name[name.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

/// Whether an address is outside the private and local ranges (see
/// [`crate::flow_context::is_external`]).
pub(crate) fn external(ip: &IpAddr) -> bool {
    crate::flow_context::is_external(ip)
}
