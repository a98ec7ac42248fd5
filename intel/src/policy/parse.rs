//! Reading a policy file. Every problem is reported with its line and what to do about it;
//! all problems of a file are collected, and a file with any problem yields no policy at
//! all (nothing is half-applied).
//!
//! ```toml
//! [policy]
//! name = "st-mary"
//! default = "deny"                  # allow | deny | monitor
//! life_sustaining_override = false  # true needs override_reason
//!
//! [[group]]
//! name = "vulnerable_pumps"
//! match = 'class in ["infusion_pump", "pca_pump"] and vulnerable'
//! members = ["00:d0:75:00:00:09"]   # static members by MAC
//! exclude = ["00:d0:75:00:00:01"]
//!
//! [[scope]]                         # default for flows of the group's devices
//! group = "vulnerable_pumps"
//! default = "monitor"
//!
//! [[rule]]
//! name = "pumps-to-server"
//! from = ["vulnerable_pumps"]       # groups, any, external, internal, CIDRs
//! to = ["pump_servers", "10.9.0.0/24", "domain:updates.vendor.example"]
//! protocol = "tcp"                  # tcp | udp | any (default any)
//! ports = [3613, "8000-8100"]       # default: any port
//! app = "alaris"                    # optional application label
//! action = "allow"                  # default allow
//! ```

use super::cidr::Cidr;
use super::expr::Expr;
use super::groups::Group;
use super::model::{normalize_ports, Action, Endpoint, Policy, PortRange, Rule, Scope};
use crate::model::Transport;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use toml::Spanned;
use wardline_common::MacAddr;

/// One problem in a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub message: String,
}

/// Everything wrong with a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyErrors {
    /// The name the caller gave the file ("policy.toml", "proposal v3").
    pub source: String,
    pub errors: Vec<PolicyError>,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {} has {} problem(s); nothing was applied:", self.source, self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n  {}:{}: {}", self.source, e.line, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

// ---- file format ------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    policy: Option<Spanned<HeaderIn>>,
    #[serde(default)]
    group: Vec<Spanned<GroupIn>>,
    #[serde(default)]
    scope: Vec<Spanned<ScopeIn>>,
    #[serde(default)]
    rule: Vec<Spanned<RuleIn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderIn {
    name: Spanned<String>,
    description: Option<String>,
    default: Spanned<String>,
    #[serde(default)]
    life_sustaining_override: bool,
    override_reason: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupIn {
    name: Spanned<String>,
    description: Option<String>,
    #[serde(rename = "match")]
    matches: Option<Spanned<String>>,
    #[serde(default)]
    members: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    exclude_match: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeIn {
    group: Spanned<String>,
    default: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortIn {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleIn {
    name: Spanned<String>,
    description: Option<String>,
    from: Spanned<OneOrMany>,
    to: Spanned<OneOrMany>,
    protocol: Option<Spanned<String>>,
    ports: Option<Spanned<Vec<PortIn>>>,
    app: Option<Spanned<String>>,
    action: Option<Spanned<String>>,
}

// ---- validation ---------------------------------------------------------------------------

/// Words that mean something as an endpoint and so cannot name a group.
const RESERVED: &[&str] = &["any", "external", "internal"];

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|b| **b == b'\n').count() + 1
}

struct Ctx<'a> {
    text: &'a str,
    errors: Vec<PolicyError>,
}

impl Ctx<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        line_of(self.text, span.start)
    }
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.line(span);
        self.errors.push(PolicyError { line, message: message.into() });
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && s.as_bytes()[0].is_ascii_alphabetic()
}

pub(crate) fn valid_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Parse and validate a policy file. `source` names it in error messages.
pub fn parse_policy(source: &str, text: &str) -> Result<Policy, PolicyErrors> {
    let fail = |errors| PolicyErrors { source: source.to_string(), errors };
    let file: FileIn = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        fail(vec![PolicyError { line, message: e.message().trim().to_string() }])
    })?;
    let mut cx = Ctx { text, errors: Vec::new() };
    let policy = validate(&mut cx, file);
    if cx.errors.is_empty() {
        Ok(policy.expect("validated policy without errors"))
    } else {
        cx.errors.sort_by_key(|e| e.line);
        Err(fail(cx.errors))
    }
}

fn action(cx: &mut Ctx, s: &Spanned<String>, what: &str) -> Action {
    Action::parse(s.get_ref()).unwrap_or_else(|| {
        cx.err(s.span(), format!("{what} {:?} is not an action: use allow, deny or monitor", s.get_ref()));
        Action::Deny
    })
}

fn expr(cx: &mut Ctx, s: &Spanned<String>, what: &str) -> Option<Expr> {
    match Expr::parse(s.get_ref()) {
        Ok(e) => Some(e),
        Err(e) => {
            cx.err(s.span(), format!("{what}: {e} (in {:?})", s.get_ref()));
            None
        }
    }
}

fn macs(cx: &mut Ctx, list: &[Spanned<String>], what: &str) -> BTreeSet<MacAddr> {
    let mut out = BTreeSet::new();
    for m in list {
        match m.get_ref().parse::<MacAddr>() {
            Ok(mac) => {
                out.insert(mac);
            }
            Err(e) => cx.err(m.span(), format!("{what}: {e}")),
        }
    }
    out
}

fn validate(cx: &mut Ctx, file: FileIn) -> Option<Policy> {
    let Some(header) = file.policy else {
        cx.errors.push(PolicyError {
            line: 0,
            message: "no [policy] table: add one with name and default (allow, deny or monitor)".into(),
        });
        return None;
    };
    let hspan = header.span();
    let header = header.into_inner();
    if !valid_name(header.name.get_ref()) {
        cx.err(
            header.name.span(),
            format!("policy name {:?}: use letters, digits, '_', '-', '.'", header.name.get_ref()),
        );
    }
    let default = action(cx, &header.default, "default");
    let override_reason = header.override_reason.as_ref().map(|r| r.get_ref().trim().to_string());
    if header.life_sustaining_override && override_reason.as_deref().is_none_or(str::is_empty) {
        cx.err(
            hspan.clone(),
            "life_sustaining_override = true needs override_reason: say why cutting life-sustaining devices off \
             their required peers is acceptable and who decided",
        );
    }

    // Groups.
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for g in &file.group {
        let span = g.span();
        let g = g.get_ref();
        let name = g.name.get_ref().clone();
        if !valid_name(&name) || RESERVED.contains(&name.as_str()) {
            cx.err(
                g.name.span(),
                format!(
                    "group name {name:?}: use letters, digits, '_', '-', '.' starting with a letter, and not any, \
                     external or internal"
                ),
            );
        }
        let what = format!("group {name:?}");
        let matches = g.matches.as_ref().and_then(|m| expr(cx, m, &format!("{what} match")));
        let exclude_match = g.exclude_match.as_ref().and_then(|m| expr(cx, m, &format!("{what} exclude_match")));
        let members = macs(cx, &g.members, &format!("{what} members"));
        let exclude = macs(cx, &g.exclude, &format!("{what} exclude"));
        if g.matches.is_none() && g.members.is_empty() {
            cx.err(span.clone(), format!("{what} has neither match nor members, so it can never hold a device"));
        }
        let group = Group {
            name: name.clone(),
            description: g.description.clone(),
            matches,
            members,
            exclude,
            exclude_match,
            line: cx.line(span.clone()),
        };
        if groups.insert(name.clone(), group).is_some() {
            cx.err(g.name.span(), format!("group {name:?} is defined twice; group names must be unique"));
        }
    }
    let known = |cx: &mut Ctx, name: &Spanned<String>, what: &str| -> bool {
        if groups.contains_key(name.get_ref()) {
            return true;
        }
        let names: Vec<&str> = groups.keys().map(String::as_str).collect();
        cx.err(
            name.span(),
            format!(
                "{what}: unknown group {:?} (declared groups: {})",
                name.get_ref(),
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ),
        );
        false
    };

    // Scopes.
    let mut scopes = Vec::new();
    let mut scoped = BTreeSet::new();
    for s in &file.scope {
        let s = s.get_ref();
        known(cx, &s.group, "scope");
        if !scoped.insert(s.group.get_ref().clone()) {
            cx.err(s.group.span(), format!("scope for group {:?} given twice", s.group.get_ref()));
        }
        let default = action(cx, &s.default, "scope default");
        scopes.push(Scope { group: s.group.get_ref().clone(), default });
    }

    // Rules.
    let mut rules = Vec::new();
    let mut rule_names = BTreeSet::new();
    for r in &file.rule {
        let line = cx.line(r.span());
        let r = r.get_ref();
        let name = r.name.get_ref().clone();
        if name.trim().is_empty() || name.len() > 128 {
            cx.err(r.name.span(), "rule name must be 1 to 128 characters");
        }
        if !rule_names.insert(name.clone()) {
            cx.err(r.name.span(), format!("rule name {name:?} is used twice; rule names must be unique"));
        }
        let what = format!("rule {name:?}");
        let from = endpoints(cx, &r.from, &format!("{what} from"), false, &known);
        let to = endpoints(cx, &r.to, &format!("{what} to"), true, &known);
        let protocol = match r.protocol.as_ref().map(|p| (p, p.get_ref().as_str())) {
            None | Some((_, "any")) => Transport::Any,
            Some((_, "tcp")) => Transport::Tcp,
            Some((_, "udp")) => Transport::Udp,
            Some((p, other)) => {
                cx.err(p.span(), format!("{what}: protocol {other:?}: use tcp, udp or any"));
                Transport::Any
            }
        };
        let mut ports = Vec::new();
        if let Some(list) = &r.ports {
            if list.get_ref().is_empty() {
                cx.err(list.span(), format!("{what}: ports = [] allows nothing; leave ports out for any port"));
            }
            for p in list.get_ref() {
                match port_range(p) {
                    Ok(pr) => ports.push(pr),
                    Err(m) => cx.err(list.span(), format!("{what}: {m}")),
                }
            }
        }
        let ports = normalize_ports(ports);
        let app = r.app.as_ref().map(|a| a.get_ref().trim().to_ascii_lowercase());
        if let (Some(a), Some(span)) = (&app, r.app.as_ref().map(|a| a.span())) {
            if !valid_name(a) {
                cx.err(span, format!("{what}: app label {a:?}: use letters, digits, '_', '-', '.'"));
            }
        }
        let action = r.action.as_ref().map(|a| action(cx, a, &format!("{what} action"))).unwrap_or(Action::Allow);
        rules.push(Rule { name, description: r.description.clone(), from, to, protocol, ports, app, action, line });
    }

    Some(Policy {
        name: header.name.get_ref().clone(),
        description: header.description,
        default,
        life_sustaining_override: header.life_sustaining_override,
        override_reason,
        groups: groups.into_values().collect(),
        scopes,
        rules,
    })
}

fn endpoints(
    cx: &mut Ctx,
    v: &Spanned<OneOrMany>,
    what: &str,
    destination: bool,
    known: &dyn Fn(&mut Ctx, &Spanned<String>, &str) -> bool,
) -> Vec<Endpoint> {
    let items: Vec<&String> = match v.get_ref() {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(xs) => xs.iter().collect(),
    };
    if items.is_empty() {
        cx.err(v.span(), format!("{what} is empty: name groups, any, external, internal or networks"));
    }
    let mut out = BTreeSet::new();
    for item in items {
        let s = item.trim();
        let e = if s == "any" {
            Endpoint::Any
        } else if s == "external" {
            Endpoint::External
        } else if s == "internal" {
            Endpoint::Internal
        } else if let Some(d) = s.strip_prefix("domain:") {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if !destination {
                cx.err(v.span(), format!("{what}: {s:?}: a domain can only be a destination (to)"));
                continue;
            }
            if !valid_domain(&d) {
                cx.err(v.span(), format!("{what}: {s:?} is not a DNS name"));
                continue;
            }
            Endpoint::Domain(d)
        } else if s.contains('/') || s.contains(':') || s.starts_with(|c: char| c.is_ascii_digit()) {
            match s.parse::<Cidr>() {
                Ok(c) => Endpoint::Network(c),
                Err(e) => {
                    cx.err(v.span(), format!("{what}: {e}"));
                    continue;
                }
            }
        } else {
            let named = Spanned::new(v.span(), s.to_string());
            if !known(cx, &named, what) {
                continue;
            }
            Endpoint::Group(s.to_string())
        };
        out.insert(e);
    }
    // `any` already covers everything else listed beside it.
    if out.contains(&Endpoint::Any) {
        return vec![Endpoint::Any];
    }
    out.into_iter().collect()
}

fn port_range(p: &PortIn) -> Result<PortRange, String> {
    let one = |n: i64| -> Result<u16, String> {
        if (1..=65535).contains(&n) {
            Ok(n as u16)
        } else {
            Err(format!("port {n} is outside 1-65535"))
        }
    };
    let num = |s: &str| -> Result<u16, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not a port number"));
        }
        one(s.parse::<i64>().map_err(|_| format!("{s:?} is not a port number"))?)
    };
    match p {
        PortIn::Number(n) => one(*n).map(|p| PortRange { lo: p, hi: p }),
        PortIn::Text(s) => {
            let (lo, hi) = match s.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let p = num(s)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(format!("port range {s:?} runs backwards; write the lower port first"));
            }
            Ok(PortRange { lo, hi })
        }
    }
}
