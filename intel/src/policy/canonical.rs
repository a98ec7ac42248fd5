//! Versioning helpers: one canonical text per policy (the aggregator stores and hashes
//! it; parsing it gives back an equal policy) and a human-readable diff between two
//! versions.

use super::groups::Group;
use super::model::{Policy, Rule};
use std::fmt::{self, Write};

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list<T: fmt::Display>(xs: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = xs.into_iter().map(|x| q(&x.to_string())).collect();
    format!("[{}]", items.join(", "))
}

fn ports(r: &Rule) -> String {
    let items: Vec<String> =
        r.ports.iter().map(|p| if p.lo == p.hi { p.lo.to_string() } else { q(&p.to_string()) }).collect();
    format!("[{}]", items.join(", "))
}

impl Policy {
    /// The canonical TOML text: fixed key order, groups by name, scopes and rules in their
    /// (meaningful) order, lists sorted, expressions in their canonical spelling, no
    /// comments. Two policies that mean the same have the same text.
    pub fn to_canonical(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "[policy]\nname = {}", q(&self.name));
        if let Some(d) = &self.description {
            let _ = writeln!(o, "description = {}", q(d));
        }
        let _ = writeln!(o, "default = {}", q(self.default.as_str()));
        let _ = writeln!(o, "life_sustaining_override = {}", self.life_sustaining_override);
        if let Some(r) = &self.override_reason {
            let _ = writeln!(o, "override_reason = {}", q(r));
        }
        for g in &self.groups {
            let _ = writeln!(o, "\n[[group]]\nname = {}", q(&g.name));
            if let Some(d) = &g.description {
                let _ = writeln!(o, "description = {}", q(d));
            }
            if let Some(m) = &g.matches {
                let _ = writeln!(o, "match = {}", q(&m.to_string()));
            }
            if !g.members.is_empty() {
                let _ = writeln!(o, "members = {}", list(&g.members));
            }
            if !g.exclude.is_empty() {
                let _ = writeln!(o, "exclude = {}", list(&g.exclude));
            }
            if let Some(m) = &g.exclude_match {
                let _ = writeln!(o, "exclude_match = {}", q(&m.to_string()));
            }
        }
        for s in &self.scopes {
            let _ = writeln!(o, "\n[[scope]]\ngroup = {}\ndefault = {}", q(&s.group), q(s.default.as_str()));
        }
        for r in &self.rules {
            let _ = writeln!(o, "\n[[rule]]\nname = {}", q(&r.name));
            if let Some(d) = &r.description {
                let _ = writeln!(o, "description = {}", q(d));
            }
            let _ = writeln!(o, "from = {}\nto = {}", list(&r.from), list(&r.to));
            let _ = writeln!(o, "protocol = {}", q(r.protocol.as_str()));
            if !r.ports.is_empty() {
                let _ = writeln!(o, "ports = {}", ports(r));
            }
            if let Some(a) = &r.app {
                let _ = writeln!(o, "app = {}", q(a));
            }
            let _ = writeln!(o, "action = {}", q(r.action.as_str()));
        }
        o
    }
}

/// One difference between two policy versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Setting {
        key: String,
        before: String,
        after: String,
    },
    GroupAdded {
        name: String,
        summary: String,
    },
    GroupRemoved {
        name: String,
    },
    GroupChanged {
        name: String,
        key: String,
        before: String,
        after: String,
    },
    ScopesChanged {
        before: String,
        after: String,
    },
    RuleAdded {
        name: String,
        position: usize,
        summary: String,
    },
    RuleRemoved {
        name: String,
    },
    RuleChanged {
        name: String,
        key: String,
        before: String,
        after: String,
    },
    /// Same rule, different place in the order (first match decides, so order matters).
    RuleMoved {
        name: String,
        before: usize,
        after: usize,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Setting { key, before, after } => write!(f, "~ policy {key}: {before} -> {after}"),
            Change::GroupAdded { name, summary } => write!(f, "+ group {name}: {summary}"),
            Change::GroupRemoved { name } => write!(f, "- group {name}"),
            Change::GroupChanged { name, key, before, after } => write!(f, "~ group {name} {key}: {before} -> {after}"),
            Change::ScopesChanged { before, after } => write!(f, "~ scopes: {before} -> {after}"),
            Change::RuleAdded { name, position, summary } => write!(f, "+ rule {name} (#{position}): {summary}"),
            Change::RuleRemoved { name } => write!(f, "- rule {name}"),
            Change::RuleChanged { name, key, before, after } => write!(f, "~ rule {name} {key}: {before} -> {after}"),
            Change::RuleMoved { name, before, after } => write!(f, "~ rule {name} moved from #{before} to #{after}"),
        }
    }
}

/// The differences from `before` to `after`, in a stable order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    pub changes: Vec<Change>,
}

impl PolicyDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for PolicyDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return f.write_str("no changes");
        }
        for (i, c) in self.changes.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

fn opt(o: &Option<impl fmt::Display>) -> String {
    o.as_ref().map(|x| x.to_string()).unwrap_or_else(|| "(none)".into())
}

fn group_fields(g: &Group) -> Vec<(&'static str, String)> {
    let macs = |s: &std::collections::BTreeSet<wardline_common::MacAddr>| {
        s.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
    };
    vec![
        ("description", opt(&g.description)),
        ("match", opt(&g.matches)),
        ("members", format!("[{}]", macs(&g.members))),
        ("exclude", format!("[{}]", macs(&g.exclude))),
        ("exclude_match", opt(&g.exclude_match)),
    ]
}

fn rule_fields(r: &Rule) -> Vec<(&'static str, String)> {
    let join = |xs: &[super::model::Endpoint]| xs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
    let ports = if r.ports.is_empty() {
        "any".to_string()
    } else {
        r.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")
    };
    vec![
        ("description", opt(&r.description)),
        ("from", join(&r.from)),
        ("to", join(&r.to)),
        ("protocol", r.protocol.as_str().to_string()),
        ("ports", ports),
        ("app", opt(&r.app)),
        ("action", r.action.as_str().to_string()),
    ]
}

/// One line describing a rule: "pumps -> servers tcp/3613 allow".
pub fn rule_summary(r: &Rule) -> String {
    let f = rule_fields(r);
    let app = r.app.as_ref().map(|a| format!(" app {a}")).unwrap_or_default();
    format!("{} -> {} {}/{}{app} {}", f[1].1, f[2].1, f[3].1, f[4].1, f[6].1)
}

/// What changed from `before` to `after`: settings, groups (by name), scopes, rules (by
/// name: added, removed, changed field by field, moved).
pub fn diff(before: &Policy, after: &Policy) -> PolicyDiff {
    let mut changes = Vec::new();
    let settings = |p: &Policy| {
        vec![
            ("name", p.name.clone()),
            ("description", opt(&p.description)),
            ("default", p.default.to_string()),
            ("life_sustaining_override", p.life_sustaining_override.to_string()),
            ("override_reason", opt(&p.override_reason)),
        ]
    };
    for ((key, b), (_, a)) in settings(before).into_iter().zip(settings(after)) {
        if a != b {
            changes.push(Change::Setting { key: key.into(), before: b, after: a });
        }
    }
    for g in &before.groups {
        match after.group(&g.name) {
            None => changes.push(Change::GroupRemoved { name: g.name.clone() }),
            Some(n) => {
                for ((key, b), (_, a)) in group_fields(g).into_iter().zip(group_fields(n)) {
                    if a != b {
                        changes.push(Change::GroupChanged {
                            name: g.name.clone(),
                            key: key.into(),
                            before: b,
                            after: a,
                        });
                    }
                }
            }
        }
    }
    for g in &after.groups {
        if before.group(&g.name).is_none() {
            let summary = g.matches.as_ref().map(|m| format!("match {m}")).unwrap_or_default();
            let summary = if g.members.is_empty() {
                summary
            } else {
                format!("{summary} + {} static member(s)", g.members.len())
            };
            changes.push(Change::GroupAdded { name: g.name.clone(), summary: summary.trim().to_string() });
        }
    }
    let scopes =
        |p: &Policy| p.scopes.iter().map(|s| format!("{}={}", s.group, s.default)).collect::<Vec<_>>().join(", ");
    if scopes(before) != scopes(after) {
        changes.push(Change::ScopesChanged { before: scopes(before), after: scopes(after) });
    }
    for r in &before.rules {
        match after.rule(&r.name) {
            None => changes.push(Change::RuleRemoved { name: r.name.clone() }),
            Some(n) => {
                for ((key, b), (_, a)) in rule_fields(r).into_iter().zip(rule_fields(n)) {
                    if a != b {
                        changes.push(Change::RuleChanged {
                            name: r.name.clone(),
                            key: key.into(),
                            before: b,
                            after: a,
                        });
                    }
                }
            }
        }
    }
    // Order among the rules both versions share: a moved rule can change which one decides.
    let common = |p: &Policy, other: &Policy| -> Vec<String> {
        p.rules.iter().filter(|r| other.rule(&r.name).is_some()).map(|r| r.name.clone()).collect()
    };
    let (cb, ca) = (common(before, after), common(after, before));
    if cb != ca {
        for (i, name) in ca.iter().enumerate() {
            let was = cb.iter().position(|n| n == name).unwrap_or(i);
            if was != i {
                changes.push(Change::RuleMoved { name: name.clone(), before: was + 1, after: i + 1 });
            }
        }
    }
    for (i, r) in after.rules.iter().enumerate() {
        if before.rule(&r.name).is_none() {
            changes.push(Change::RuleAdded { name: r.name.clone(), position: i + 1, summary: rule_summary(r) });
        }
    }
    PolicyDiff { changes }
}
