//! Groups of devices: a membership expression over device attributes, static members by
//! MAC and exclusions. Membership is a pure function of the group and the device list, so a
//! new infusion pump that turns up vulnerable joins "vulnerable infusion pumps" on the next
//! evaluation without anyone editing the group; [`membership_diff`] says who joined and left
//! between two evaluations, for the aggregator to record as history.

use super::device::PolicyDevice;
use super::expr::Expr;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use wardline_common::MacAddr;

/// A named set of devices.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    /// Devices matching this expression are members (`None`: only static members).
    pub matches: Option<Expr>,
    /// Members by MAC whatever their attributes; they count even before the device is seen.
    pub members: BTreeSet<MacAddr>,
    /// Never members, whatever the expression or the static list says.
    pub exclude: BTreeSet<MacAddr>,
    /// Devices matching this expression are never members.
    pub exclude_match: Option<Expr>,
    /// Line of the group in the file it was read from (0 when built in code).
    pub line: usize,
}

impl Group {
    /// A group of the devices matching `expr` (parsed here; panics are not an option for
    /// callers building groups in code, so it returns the parse error).
    pub fn matching(name: &str, expr: &str) -> Result<Group, super::expr::ExprError> {
        Ok(Group {
            name: name.to_string(),
            description: None,
            matches: Some(Expr::parse(expr)?),
            members: BTreeSet::new(),
            exclude: BTreeSet::new(),
            exclude_match: None,
            line: 0,
        })
    }

    /// Whether `d` is a member.
    pub fn contains(&self, d: &PolicyDevice) -> bool {
        if self.exclude.contains(&d.mac) || self.exclude_match.as_ref().is_some_and(|e| e.matches(d)) {
            return false;
        }
        self.members.contains(&d.mac) || self.matches.as_ref().is_some_and(|e| e.matches(d))
    }
}

/// The members of `group` among `devices`, plus its static members not (yet) in the list.
pub fn members(group: &Group, devices: &[PolicyDevice]) -> BTreeSet<MacAddr> {
    let mut out: BTreeSet<MacAddr> = devices.iter().filter(|d| group.contains(d)).map(|d| d.mac).collect();
    if !group.members.is_empty() {
        // Listed devices were decided above (exclude_match needs their attributes).
        let known: std::collections::HashSet<MacAddr> = devices.iter().map(|d| d.mac).collect();
        out.extend(group.members.iter().filter(|m| !known.contains(m) && !group.exclude.contains(m)));
    }
    out
}

/// Every group's members, by group name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub groups: BTreeMap<String, BTreeSet<MacAddr>>,
}

impl Membership {
    pub fn evaluate<'a>(groups: impl IntoIterator<Item = &'a Group>, devices: &[PolicyDevice]) -> Membership {
        Membership { groups: groups.into_iter().map(|g| (g.name.clone(), members(g, devices))).collect() }
    }
}

/// Who joined and who left one group between two evaluations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChange {
    pub group: String,
    pub joined: Vec<MacAddr>,
    pub left: Vec<MacAddr>,
}

/// The changes from `before` to `after`, groups and MACs in sorted order; groups that did
/// not change are left out. A group only in `after` lists all its members as joined; one
/// only in `before`, all as left.
pub fn membership_diff(before: &Membership, after: &Membership) -> Vec<GroupChange> {
    let empty = BTreeSet::new();
    let names: BTreeSet<&String> = before.groups.keys().chain(after.groups.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let b = before.groups.get(name).unwrap_or(&empty);
        let a = after.groups.get(name).unwrap_or(&empty);
        let joined: Vec<MacAddr> = a.difference(b).copied().collect();
        let left: Vec<MacAddr> = b.difference(a).copied().collect();
        if !joined.is_empty() || !left.is_empty() {
            out.push(GroupChange { group: name.clone(), joined, left });
        }
    }
    out
}
