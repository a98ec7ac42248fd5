//! Matching rules: which piece of evidence a rule looks at, how it compares the value, and
//! what it votes for.

use super::entries::Loc;
use regex::Regex;
use wardline_common::Field;

/// Evidence a rule can look at: any sensor [`Field`], or a fact derived from the device's
/// addresses and flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchKey {
    Field(Field),
    /// Knowledge-base vendor id of the MAC's IEEE block.
    MacVendor,
    /// IEEE organisation name of the MAC's block, as registered.
    MacOrg,
    /// Knowledge-base vendor id of the OUI inside an HL7 EUI-64 device identifier.
    DeviceIdVendor,
    /// A service the device connected to as a client ("tcp/3613").
    ConnectsTo,
}

impl MatchKey {
    pub fn name(&self) -> String {
        match self {
            MatchKey::Field(f) => f.as_str(),
            MatchKey::MacVendor => "mac_vendor".into(),
            MatchKey::MacOrg => "mac_org".into(),
            MatchKey::DeviceIdVendor => "device_id_vendor".into(),
            MatchKey::ConnectsTo => "connects_to".into(),
        }
    }
}

/// How a rule compares an evidence value. Exact, prefix and contains ignore ASCII case;
/// a regex is used as written (add `(?i)` for case-insensitive).
#[derive(Clone, Debug)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    Contains(String),
    Regex(Regex),
}

impl Matcher {
    pub fn is_match(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => value.trim().eq_ignore_ascii_case(s),
            Matcher::Prefix(s) => value.to_ascii_lowercase().starts_with(s.as_str()),
            Matcher::Contains(s) => value.to_ascii_lowercase().contains(s.as_str()),
            Matcher::Regex(r) => r.is_match(value),
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Matcher::Exact(s) => format!("= {s:?}"),
            Matcher::Prefix(s) => format!("starts with {s:?}"),
            Matcher::Contains(s) => format!("contains {s:?}"),
            Matcher::Regex(r) => format!("~ /{}/", r.as_str()),
        }
    }
}

/// What a generic rule votes for (profile rules vote for their profile).
#[derive(Clone, Debug, Default)]
pub struct RuleTarget {
    pub class: Option<String>,
    pub os: Option<String>,
    pub vendor: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub key: MatchKey,
    pub matcher: Matcher,
    pub weight: f64,
    pub target: RuleTarget,
    pub source: Option<String>,
    pub origin: Loc,
}
