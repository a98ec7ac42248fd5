//! Merging parsed files into the model: entries replace earlier ones with the same id,
//! `[[remove]]` deletes them, and references between entries are collected while merging
//! and checked once every file is in (a site file may refer to a builtin entry).

use super::schema::{KbFile, RawClass, RawComm, RawOs, RawOverride, RawProfile, RawRemove, RawRule, RawVendor};
use super::KbError;
use crate::model::{
    Category, Class, Comm, Criticality, KnowledgeBase, Loc, Matcher, OsEntry, OsInfo, Override, PeerRole, Profile,
    Rule, RuleTarget, Vendor, UNKNOWN_IT_CLASS, UNKNOWN_MEDICAL_CLASS,
};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use toml::Spanned;
use wardline_common::net::MacParseError;
use wardline_common::MacAddr;

/// A knowledge base being assembled from files in load order.
#[derive(Default)]
pub(super) struct Merger {
    kb: KnowledgeBase,
    pending: Vec<PendingRef>,
    /// Per profile id: whether its category and criticality are left to its class (filled
    /// in by `finish`, since the class may come from a later file).
    inherits: HashMap<String, (bool, bool)>,
}

/// A reference to another entry, checked once every file is merged.
struct PendingRef {
    kind: RefKind,
    id: String,
    key: &'static str,
    file: String,
    line: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RefKind {
    Vendor,
    Class,
    Os,
    Profile,
    PeerClass,
}

/// The file being merged, to locate entries and errors in it.
struct Ctx<'a> {
    file: Arc<str>,
    text: &'a str,
}

impl Ctx<'_> {
    fn loc(&self, span: Range<usize>) -> Loc {
        Loc { file: self.file.clone(), line: line_of(self.text, span.start) }
    }
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> KbError {
        KbError {
            file: self.file.to_string(),
            line: line_of(self.text, span.start),
            key: key.into(),
            message: message.into(),
        }
    }
    fn reference(&self, kind: RefKind, id: &Spanned<String>, key: &'static str) -> PendingRef {
        PendingRef {
            kind,
            id: id.get_ref().clone(),
            key,
            file: self.file.to_string(),
            line: line_of(self.text, id.span().start),
        }
    }
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The key on a line such as `weight = "high"`, or the table header on `[[profile.rule]]`.
fn key_on_line(text: &str, line: usize) -> String {
    let l = text.lines().nth(line.saturating_sub(1)).unwrap_or("").trim();
    if let Some((k, _)) = l.split_once('=') {
        return k.trim().to_string();
    }
    l.trim_matches(|c| c == '[' || c == ']').to_string()
}

/// A plausible calendar date written YYYY-MM-DD.
fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    matches!((num(0..4), num(5..7), num(8..10)), (Some(y), Some(m), Some(d)) if y >= 1970 && (1..=12).contains(&m) && (1..=31).contains(&d))
}

impl Merger {
    /// Parse one file and merge its entries, in the order removals, classes, vendors,
    /// operating systems, rules, profiles, global communications, overrides.
    pub(super) fn merge_file(&mut self, name: &str, text: &str) -> Result<(), KbError> {
        let ctx = Ctx { file: Arc::from(name), text };
        let parsed: KbFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            let key = if line > 0 { key_on_line(text, line) } else { String::new() };
            KbError { file: name.to_string(), line, key, message: e.message().trim().to_string() }
        })?;
        self.remove(&ctx, parsed.remove)?;
        self.merge_classes(&ctx, parsed.class)?;
        self.merge_vendors(&ctx, parsed.vendor)?;
        self.merge_oses(&ctx, parsed.os)?;
        self.merge_rules(&ctx, parsed.rule)?;
        self.merge_profiles(&ctx, parsed.profile)?;
        let global = compile_comms(&ctx, "global", parsed.comm, &mut self.pending)?;
        for c in global {
            self.kb.comms.retain(|old| old.id != c.id);
            self.kb.comms.push(c);
        }
        self.merge_overrides(&ctx, parsed.overrides)?;
        let risk_parts = super::risk::RawRiskParts {
            settings: parsed.risk,
            data_classes: parsed.risk_data_class,
            impacts: parsed.risk_impact,
            factors: parsed.risk_factor,
            indicators: parsed.risk_indicator,
            services: parsed.risk_service,
        };
        super::risk::merge(&mut self.kb.risk, name, text, risk_parts)?;
        self.kb.files.push(name.to_string());
        Ok(())
    }

    fn remove(&mut self, ctx: &Ctx<'_>, removals: Vec<RawRemove>) -> Result<(), KbError> {
        let kb = &mut self.kb;
        for r in removals {
            if let Some(id) = &r.profile {
                kb.profiles.remove(id);
            }
            if let Some(id) = &r.rule {
                kb.rules.remove(id);
            }
            if let Some(id) = &r.vendor {
                kb.vendors.remove(id);
            }
            if let Some(id) = &r.class {
                kb.classes.remove(id);
            }
            if let Some(id) = &r.os {
                kb.oses.remove(id);
            }
            if let Some(id) = &r.comm {
                kb.comms.retain(|c| &c.id != id);
            }
            super::risk::remove(
                &mut kb.risk,
                super::risk::RiskRemovals {
                    impact: r.risk_impact.as_deref(),
                    factor: r.risk_factor.as_deref(),
                    indicator: r.risk_indicator.as_deref(),
                    service: r.risk_service.as_deref(),
                },
            );
            if let Some(mac) = &r.override_mac {
                let m: MacAddr =
                    mac.get_ref().parse().map_err(|e: MacParseError| ctx.err(mac.span(), "override", e.to_string()))?;
                kb.overrides.remove(&m);
            }
        }
        Ok(())
    }

    fn merge_classes(&mut self, ctx: &Ctx<'_>, classes: Vec<RawClass>) -> Result<(), KbError> {
        for c in classes {
            let id = c.id.get_ref().clone();
            let comms = compile_comms(ctx, &id, c.comm, &mut self.pending)?;
            let class = Class {
                id: id.clone(),
                name: c.name,
                category: c.category,
                criticality: c.criticality,
                clinical_function: c.clinical_function,
                comms,
                sources: c.sources,
                origin: ctx.loc(c.id.span()),
            };
            self.kb.classes.insert(id, class);
        }
        Ok(())
    }

    fn merge_vendors(&mut self, ctx: &Ctx<'_>, vendors: Vec<RawVendor>) -> Result<(), KbError> {
        for v in vendors {
            let id = v.id.get_ref().clone();
            let mut ouis = Vec::new();
            for o in &v.ouis {
                let hex: String =
                    o.get_ref().chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_uppercase();
                let seps_ok = o.get_ref().chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '-' | '.'));
                if !seps_ok || !matches!(hex.len(), 6 | 7 | 9) {
                    return Err(ctx.err(o.span(), "ouis", format!("{:?} is not an OUI prefix: give 6 (MA-L), 7 (MA-M) or 9 (MA-S) hex digits, e.g. \"00:B0:94\"", o.get_ref())));
                }
                ouis.push(hex);
            }
            let vendor = Vendor {
                id: id.clone(),
                name: v.name,
                medical: v.medical,
                ouis,
                org_patterns: v.org_patterns.into_iter().map(|p| p.0).collect(),
                oui_weight: v.oui_weight.map(|w| w.0).unwrap_or(0.6),
                sources: v.sources,
                origin: ctx.loc(v.id.span()),
            };
            self.kb.vendors.insert(id, vendor);
        }
        Ok(())
    }

    fn merge_oses(&mut self, ctx: &Ctx<'_>, oses: Vec<RawOs>) -> Result<(), KbError> {
        for o in oses {
            let id = o.id.get_ref().clone();
            if let Some(d) = &o.end_of_support {
                if !is_iso_date(d.get_ref()) {
                    return Err(ctx.err(
                        d.span(),
                        "end_of_support",
                        format!("{:?} is not a date; write YYYY-MM-DD", d.get_ref()),
                    ));
                }
            }
            let entry = OsEntry {
                info: OsInfo {
                    id: id.clone(),
                    name: o.name,
                    family: o.family,
                    version: o.version,
                    end_of_support: o.end_of_support.map(|d| d.into_inner()),
                    embedded: o.embedded,
                },
                sources: o.sources,
            };
            self.kb.oses.insert(id, entry);
        }
        Ok(())
    }

    fn merge_rules(&mut self, ctx: &Ctx<'_>, rules: Vec<RawRule>) -> Result<(), KbError> {
        for r in rules {
            let Some(id) = r.id.clone() else {
                return Err(ctx.err(r.field.span(), "id", "a [[rule]] needs an id so sites can override it"));
            };
            let rule = compile_rule(ctx, id.clone(), r, true, &mut self.pending)?;
            self.kb.rules.insert(id, rule);
        }
        Ok(())
    }

    fn merge_profiles(&mut self, ctx: &Ctx<'_>, profiles: Vec<RawProfile>) -> Result<(), KbError> {
        for p in profiles {
            let id = p.id.get_ref().clone();
            self.pending.push(ctx.reference(RefKind::Vendor, &p.vendor, "vendor"));
            self.pending.push(ctx.reference(RefKind::Class, &p.class, "class"));
            if let Some(os) = &p.os {
                self.pending.push(ctx.reference(RefKind::Os, os, "os"));
            }
            if p.rule.is_empty() {
                return Err(ctx.err(
                    p.id.span(),
                    "rule",
                    format!("profile {id:?} has no [[profile.rule]]; nothing could ever match it"),
                ));
            }
            let mut rules = Vec::new();
            for (i, r) in p.rule.into_iter().enumerate() {
                let rid = r.id.clone().unwrap_or_else(|| format!("{id}#{}", i + 1));
                rules.push(compile_rule(ctx, rid, r, false, &mut self.pending)?);
            }
            let comms = compile_comms(ctx, &id, p.comm, &mut self.pending)?;
            let profile = Profile {
                id: id.clone(),
                vendor: p.vendor.into_inner(),
                model_family: p.model_family,
                class: p.class.into_inner(),
                // Filled from the class when the profile leaves them out (see finish).
                category: p.category.unwrap_or(Category::It),
                criticality: p.criticality.unwrap_or(Criticality::NonClinical),
                clinical_function: p.clinical_function,
                os: p.os.map(|o| o.into_inner()),
                rules,
                comms,
                sources: p.sources,
                origin: ctx.loc(p.id.span()),
            };
            self.inherits.insert(id.clone(), (p.category.is_none(), p.criticality.is_none()));
            self.kb.profiles.insert(id, profile);
        }
        Ok(())
    }

    fn merge_overrides(&mut self, ctx: &Ctx<'_>, overrides: Vec<RawOverride>) -> Result<(), KbError> {
        for o in overrides {
            let mac: MacAddr =
                o.mac.get_ref().parse().map_err(|e: MacParseError| ctx.err(o.mac.span(), "mac", e.to_string()))?;
            if let Some(p) = &o.profile {
                self.pending.push(ctx.reference(RefKind::Profile, p, "profile"));
            }
            if let Some(c) = &o.class {
                self.pending.push(ctx.reference(RefKind::Class, c, "class"));
            }
            if let Some(os) = &o.os {
                self.pending.push(ctx.reference(RefKind::Os, os, "os"));
            }
            if o.profile.is_none()
                && o.class.is_none()
                && o.vendor.is_none()
                && o.model.is_none()
                && o.category.is_none()
                && o.criticality.is_none()
                && o.os.is_none()
                && o.clinical_function.is_none()
            {
                return Err(ctx.err(o.mac.span(), "override", "an [[override]] must set at least one of profile, class, vendor, model, category, criticality, clinical_function, os"));
            }
            let ov = Override {
                mac,
                profile: o.profile.map(|s| s.into_inner()),
                class: o.class.map(|s| s.into_inner()),
                vendor: o.vendor,
                model: o.model,
                category: o.category,
                criticality: o.criticality,
                clinical_function: o.clinical_function,
                os: o.os.map(|s| s.into_inner()),
                note: o.note,
                by: o.by,
                origin: ctx.loc(o.mac.span()),
            };
            self.kb.overrides.insert(mac, ov);
        }
        Ok(())
    }

    /// Check cross-references once everything is merged, fill inherited profile fields and
    /// index the vendors' OUI blocks.
    pub(super) fn finish(mut self) -> Result<KnowledgeBase, KbError> {
        let kb = &mut self.kb;
        for r in &self.pending {
            let (exists, what) = match r.kind {
                RefKind::Vendor => (kb.vendors.contains_key(&r.id), "vendor"),
                RefKind::Class | RefKind::PeerClass => (kb.classes.contains_key(&r.id), "class"),
                RefKind::Os => (kb.oses.contains_key(&r.id), "os"),
                RefKind::Profile => (kb.profiles.contains_key(&r.id), "profile"),
            };
            if !exists {
                return Err(KbError {
                    file: r.file.clone(),
                    line: r.line,
                    key: r.key.to_string(),
                    message: format!(
                        "unknown {what} id {:?}; define it in a [[{what}]] entry or fix the spelling",
                        r.id
                    ),
                });
            }
        }
        for required in [UNKNOWN_IT_CLASS, UNKNOWN_MEDICAL_CLASS] {
            if !kb.classes.contains_key(required) {
                return Err(KbError {
                    file: kb.files.first().cloned().unwrap_or_default(),
                    line: 0,
                    key: "class".into(),
                    message: format!("the fallback class {required:?} is missing (or removed); every device needs a class to fall back to"),
                });
            }
        }
        for profile in kb.profiles.values_mut() {
            let Some(class) = kb.classes.get(&profile.class) else {
                continue;
            };
            let (inherit_category, inherit_criticality) = self.inherits.get(&profile.id).copied().unwrap_or_default();
            if inherit_category {
                profile.category = class.category;
            }
            if inherit_criticality {
                profile.criticality = class.criticality;
            }
            if profile.clinical_function.is_none() {
                profile.clinical_function = class.clinical_function.clone();
            }
        }
        kb.index_ouis();
        super::risk::check(kb)?;
        Ok(self.kb)
    }
}
fn compile_rule(
    ctx: &Ctx<'_>,
    id: String,
    r: RawRule,
    generic: bool,
    pending: &mut Vec<PendingRef>,
) -> Result<Rule, KbError> {
    let span = r.field.span();
    let mut matchers = Vec::new();
    if let Some(s) = r.exact {
        matchers.push(Matcher::Exact(s.trim().to_string()));
    }
    if let Some(s) = r.prefix {
        matchers.push(Matcher::Prefix(s.to_ascii_lowercase()));
    }
    if let Some(s) = r.contains {
        matchers.push(Matcher::Contains(s.to_ascii_lowercase()));
    }
    if let Some(p) = r.regex {
        matchers.push(Matcher::Regex(p.0));
    }
    if matchers.len() != 1 {
        return Err(ctx.err(
            span,
            "field",
            format!("rule {id:?} needs exactly one of exact, prefix, contains, regex (has {})", matchers.len()),
        ));
    }
    let has_target = r.class.is_some() || r.os.is_some() || r.vendor.is_some();
    if generic && !has_target {
        return Err(ctx.err(span, "class", format!("rule {id:?} votes for nothing: set class, os and/or vendor")));
    }
    if !generic && has_target {
        return Err(ctx.err(
            span,
            "class",
            format!("rule {id:?} is inside a profile, which it votes for; class/os/vendor belong on [[rule]] entries"),
        ));
    }
    if let Some(c) = &r.class {
        pending.push(ctx.reference(RefKind::Class, c, "class"));
    }
    if let Some(o) = &r.os {
        pending.push(ctx.reference(RefKind::Os, o, "os"));
    }
    if let Some(v) = &r.vendor {
        pending.push(ctx.reference(RefKind::Vendor, v, "vendor"));
    }
    Ok(Rule {
        id,
        key: *r.field.get_ref(),
        matcher: matchers.remove(0),
        weight: r.weight.0,
        target: RuleTarget {
            class: r.class.map(|s| s.into_inner()),
            os: r.os.map(|s| s.into_inner()),
            vendor: r.vendor.map(|s| s.into_inner()),
        },
        source: r.source,
        origin: ctx.loc(span),
    })
}

fn compile_comms(
    ctx: &Ctx<'_>,
    owner: &str,
    raw: Vec<RawComm>,
    pending: &mut Vec<PendingRef>,
) -> Result<Vec<Comm>, KbError> {
    let mut out = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let span = c.peer.span();
        let mut peers = Vec::new();
        for p in c.peer.get_ref() {
            let role = match p.as_str() {
                "any" => PeerRole::Any,
                "external" => PeerRole::External,
                "internal" => PeerRole::Internal,
                s if s.starts_with("category:") => {
                    let cat = serde_json::from_value::<Category>(serde_json::Value::String(
                        s["category:".len()..].to_string(),
                    ))
                    .map_err(|_| {
                        ctx.err(span.clone(), "peer", format!("{s:?}: category must be medical, ot, iot or it"))
                    })?;
                    PeerRole::Category(cat)
                }
                s => {
                    pending.push(ctx.reference(RefKind::PeerClass, &Spanned::new(span.clone(), s.to_string()), "peer"));
                    PeerRole::Class(s.to_string())
                }
            };
            peers.push(role);
        }
        if peers.is_empty() {
            return Err(ctx.err(span, "peer", "list at least one peer role (a class id, \"any\", \"external\", ...)"));
        }
        let mut ports = c.ports;
        ports.extend(c.port);
        let port_range = match c.port_range {
            Some([lo, hi]) if lo > hi => {
                return Err(ctx.err(span, "port_range", format!("range {lo}-{hi} is backwards")))
            }
            Some([lo, hi]) => Some((lo, hi)),
            None => None,
        };
        out.push(Comm {
            id: c.id.unwrap_or_else(|| format!("{owner}#comm{}", i + 1)),
            peers,
            transport: c.protocol,
            ports,
            port_range,
            direction: c.direction,
            tag: c.tag,
            reason: c.reason,
            source: c.source,
            origin: ctx.loc(span),
        });
    }
    Ok(out)
}
