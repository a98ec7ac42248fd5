//! Reading knowledge-base files: the embedded defaults, then a site's own directories.
//!
//! Every file has the same shape (any of `[[vendor]]`, `[[class]]`, `[[os]]`, `[[profile]]`,
//! `[[rule]]`, `[[comm]]`, `[[override]]`), so a site can add or replace any kind of entry
//! by id in any file. Entries later in the load order replace earlier ones with the same id
//! wholesale; a `[[remove]]` entry deletes one. Unknown keys are errors, because a misspelt
//! `wieght` silently ignored would change classifications without anyone noticing.

use super::os::{OsEntry, OsInfo};
use super::{Category, Criticality, Direction, FlowTag, Transport};
use crate::evidence::Field;
use crate::net::MacAddr;
use regex::Regex;
use serde::{de, Deserialize, Deserializer};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// The knowledge files compiled into every binary, in load order.
const BUILTIN: &[(&str, &str)] = &[
    ("classes.toml", include_str!("../../kb/classes.toml")),
    ("vendors.toml", include_str!("../../kb/vendors.toml")),
    ("os.toml", include_str!("../../kb/os.toml")),
    ("rules.toml", include_str!("../../kb/rules.toml")),
    ("comms.toml", include_str!("../../kb/comms.toml")),
    ("profiles-medical.toml", include_str!("../../kb/profiles-medical.toml")),
    ("profiles-imaging.toml", include_str!("../../kb/profiles-imaging.toml")),
    ("profiles-infrastructure.toml", include_str!("../../kb/profiles-infrastructure.toml")),
];

/// A knowledge-base file that cannot be used, located precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("knowledge base file {file}, line {line}, key `{key}`: {message}")]
pub struct KbError {
    pub file: String,
    /// 1-based; 0 when the problem is the file as a whole (unreadable, missing directory).
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Where an entry was defined, for explanations and error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

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

impl<'de> Deserialize<'de> for MatchKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "mac_vendor" => return Ok(MatchKey::MacVendor),
            "mac_org" => return Ok(MatchKey::MacOrg),
            "device_id_vendor" => return Ok(MatchKey::DeviceIdVendor),
            "connects_to" => return Ok(MatchKey::ConnectsTo),
            _ => {}
        }
        serde_json::from_value::<Field>(serde_json::Value::String(s.clone()))
            .map(MatchKey::Field)
            .map_err(|_| {
                de::Error::custom(format!(
                    "unknown evidence field {s:?}: use a wardline_common::Field name in snake_case \
                     (hostname, dhcp_vendor_class, dhcp_param_list, dicom_impl_class_uid, hl7_sending_app, \
                     listening_port, os_hint, ...) or one of mac_vendor, mac_org, device_id_vendor, connects_to"
                ))
            })
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

/// A regex checked when the file is read, so a bad pattern names its line.
#[derive(Clone, Debug)]
struct Pattern(Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Regex::new(&s).map(Pattern).map_err(|e| de::Error::custom(format!("invalid regex: {e}")))
    }
}

/// Rule weight: how strongly one match alone identifies the target, in (0, 1].
#[derive(Clone, Copy, Debug)]
struct Weight(f64);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = f64::deserialize(d)?;
        if w > 0.0 && w <= 1.0 {
            Ok(Weight(w))
        } else {
            Err(de::Error::custom(format!("weight {w} is outside (0, 1]; 0.3 is weak evidence, 0.9 nearly proof")))
        }
    }
}

// ---- file schema -------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KbFile {
    #[serde(default)]
    vendor: Vec<RawVendor>,
    #[serde(default)]
    class: Vec<RawClass>,
    #[serde(default)]
    os: Vec<OsEntryRaw>,
    #[serde(default)]
    profile: Vec<RawProfile>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    comm: Vec<RawComm>,
    #[serde(default, rename = "override")]
    overrides: Vec<RawOverride>,
    #[serde(default)]
    remove: Vec<RawRemove>,
}

/// Deletes entries loaded earlier (e.g. a builtin profile a site does not want).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemove {
    profile: Option<String>,
    rule: Option<String>,
    vendor: Option<String>,
    class: Option<String>,
    os: Option<String>,
    comm: Option<String>,
    #[serde(rename = "override")]
    override_mac: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVendor {
    id: Spanned<String>,
    name: String,
    #[serde(default)]
    medical: bool,
    /// Hex prefixes: 6 digits (MA-L), 7 (MA-M) or 9 (MA-S); separators allowed.
    #[serde(default)]
    ouis: Vec<Spanned<String>>,
    /// Regexes over IEEE organisation names, for vendors with hundreds of blocks.
    #[serde(default)]
    org_patterns: Vec<Pattern>,
    oui_weight: Option<Weight>,
    #[serde(default)]
    sources: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    id: Spanned<String>,
    name: String,
    category: Category,
    criticality: Criticality,
    clinical_function: Option<String>,
    #[serde(default)]
    comm: Vec<RawComm>,
    #[serde(default)]
    sources: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OsEntryRaw {
    id: Spanned<String>,
    name: String,
    family: String,
    version: Option<String>,
    end_of_support: Option<Spanned<String>>,
    #[serde(default)]
    embedded: bool,
    #[serde(default)]
    sources: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    id: Spanned<String>,
    vendor: Spanned<String>,
    model_family: String,
    class: Spanned<String>,
    category: Option<Category>,
    criticality: Option<Criticality>,
    clinical_function: Option<String>,
    os: Option<Spanned<String>>,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    comm: Vec<RawComm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<String>,
    field: Spanned<MatchKey>,
    exact: Option<String>,
    prefix: Option<String>,
    contains: Option<String>,
    regex: Option<Pattern>,
    weight: Weight,
    class: Option<Spanned<String>>,
    os: Option<Spanned<String>>,
    vendor: Option<Spanned<String>>,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComm {
    id: Option<String>,
    /// Peer roles: a class id, "category:<medical|ot|iot|it>", "any", "external", "internal".
    peer: Spanned<Vec<String>>,
    protocol: Transport,
    port: Option<u16>,
    #[serde(default)]
    ports: Vec<u16>,
    port_range: Option<[u16; 2]>,
    direction: Direction,
    tag: FlowTag,
    reason: String,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    mac: Spanned<String>,
    profile: Option<Spanned<String>>,
    class: Option<Spanned<String>>,
    vendor: Option<String>,
    model: Option<String>,
    category: Option<Category>,
    criticality: Option<Criticality>,
    clinical_function: Option<String>,
    os: Option<Spanned<String>>,
    note: Option<String>,
    by: Option<String>,
}

// ---- compiled entries --------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Vendor {
    pub id: String,
    pub name: String,
    pub medical: bool,
    pub ouis: Vec<String>,
    pub org_patterns: Vec<Regex>,
    /// Weight of "the MAC's block belongs to this vendor" as vendor evidence.
    pub oui_weight: f64,
    pub sources: Vec<String>,
    pub origin: Loc,
}

#[derive(Clone, Debug)]
pub struct Class {
    pub id: String,
    pub name: String,
    pub category: Category,
    pub criticality: Criticality,
    pub clinical_function: Option<String>,
    pub comms: Vec<Comm>,
    pub sources: Vec<String>,
    pub origin: Loc,
}

#[derive(Clone, Debug)]
pub struct Profile {
    pub id: String,
    pub vendor: String,
    pub model_family: String,
    pub class: String,
    pub category: Category,
    pub criticality: Criticality,
    pub clinical_function: Option<String>,
    pub os: Option<String>,
    pub rules: Vec<Rule>,
    pub comms: Vec<Comm>,
    pub sources: Vec<String>,
    pub origin: Loc,
    /// Category and criticality the entry left to its class (filled in by `resolve`).
    inherit: (bool, bool),
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

/// Who is on the other end of an expected communication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRole {
    Any,
    External,
    Internal,
    Class(String),
    Category(Category),
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRole::Any => f.write_str("any"),
            PeerRole::External => f.write_str("external"),
            PeerRole::Internal => f.write_str("internal"),
            PeerRole::Class(c) => f.write_str(c),
            PeerRole::Category(c) => write!(f, "category:{c}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Comm {
    pub id: String,
    pub peers: Vec<PeerRole>,
    pub transport: Transport,
    /// Empty with no range means any port.
    pub ports: Vec<u16>,
    pub port_range: Option<(u16, u16)>,
    pub direction: Direction,
    pub tag: FlowTag,
    pub reason: String,
    pub source: Option<String>,
    pub origin: Loc,
}

impl Comm {
    pub fn matches_port(&self, port: u16) -> bool {
        match self.port_range {
            Some((lo, hi)) => (lo..=hi).contains(&port) || self.ports.contains(&port),
            None => self.ports.is_empty() || self.ports.contains(&port),
        }
    }
}

/// An operator's decision about one device; always wins over evidence.
#[derive(Clone, Debug)]
pub struct Override {
    pub mac: MacAddr,
    pub profile: Option<String>,
    pub class: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub category: Option<Category>,
    pub criticality: Option<Criticality>,
    pub clinical_function: Option<String>,
    pub os: Option<String>,
    pub note: Option<String>,
    pub by: Option<String>,
    pub origin: Loc,
}

/// The merged, validated knowledge base.
#[derive(Clone, Debug, Default)]
pub struct KnowledgeBase {
    pub vendors: BTreeMap<String, Vendor>,
    pub classes: BTreeMap<String, Class>,
    pub oses: BTreeMap<String, OsEntry>,
    pub profiles: BTreeMap<String, Profile>,
    /// Generic rules (not tied to one profile), by id.
    pub rules: BTreeMap<String, Rule>,
    /// Communications that apply to every device, in load order.
    pub comms: Vec<Comm>,
    pub overrides: BTreeMap<MacAddr, Override>,
    /// Files read, in order ("builtin:vendors.toml", "/etc/wardline/kb/site.toml").
    pub files: Vec<String>,
    /// Explicit OUI prefix (hex, upper case, 6/7/9 digits) → vendor id.
    oui_index: HashMap<String, String>,
}

// ---- loading -----------------------------------------------------------------------------

fn line_of(text: &str, offset: usize) -> usize {
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

struct Ctx<'a> {
    file: Arc<str>,
    text: &'a str,
}

impl Ctx<'_> {
    fn loc(&self, span: std::ops::Range<usize>) -> Loc {
        Loc { file: self.file.clone(), line: line_of(self.text, span.start) }
    }
    fn err(&self, span: std::ops::Range<usize>, key: &str, message: impl Into<String>) -> KbError {
        KbError { file: self.file.to_string(), line: line_of(self.text, span.start), key: key.into(), message: message.into() }
    }
}

/// A reference to another entry, checked once every file is merged (a site file may refer
/// to an entry defined in a builtin one).
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

impl KnowledgeBase {
    /// Only the knowledge compiled into the binary.
    pub fn builtin() -> Result<KnowledgeBase, KbError> {
        Self::load(&[])
    }

    /// The builtin knowledge, parsed once per process and shared (the builtin files are
    /// tested, so the error case means a broken build).
    pub fn shared_builtin() -> Result<&'static KnowledgeBase, &'static KbError> {
        static SHARED: std::sync::OnceLock<Result<KnowledgeBase, KbError>> = std::sync::OnceLock::new();
        SHARED.get_or_init(Self::builtin).as_ref()
    }

    /// The builtin knowledge, then every `*.toml` file of each directory (sorted by name),
    /// later entries replacing earlier ones with the same id.
    pub fn load(extra_dirs: &[PathBuf]) -> Result<KnowledgeBase, KbError> {
        let mut sources: Vec<(String, String)> =
            BUILTIN.iter().map(|(n, t)| (format!("builtin:{n}"), t.to_string())).collect();
        for dir in extra_dirs {
            sources.extend(read_dir_sources(dir)?);
        }
        let refs: Vec<(&str, &str)> = sources.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        Self::from_sources(&refs)
    }

    /// Build from named texts in order (what [`load`](Self::load) does after reading files).
    pub fn from_sources(sources: &[(&str, &str)]) -> Result<KnowledgeBase, KbError> {
        let mut kb = KnowledgeBase::default();
        let mut pending = Vec::new();
        for (name, text) in sources {
            kb.merge_file(name, text, &mut pending)?;
            kb.files.push(name.to_string());
        }
        kb.resolve(&pending)?;
        Ok(kb)
    }

    fn merge_file(&mut self, name: &str, text: &str, pending: &mut Vec<PendingRef>) -> Result<(), KbError> {
        let ctx = Ctx { file: Arc::from(name), text };
        let parsed: KbFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            let key = if line > 0 { key_on_line(text, line) } else { String::new() };
            KbError { file: name.to_string(), line, key, message: e.message().trim().to_string() }
        })?;
        let mut pend = |kind, id: &Spanned<String>, key: &'static str| {
            pending.push(PendingRef {
                kind,
                id: id.get_ref().clone(),
                key,
                file: name.to_string(),
                line: line_of(text, id.span().start),
            })
        };

        for r in parsed.remove {
            if let Some(id) = &r.profile {
                self.profiles.remove(id);
            }
            if let Some(id) = &r.rule {
                self.rules.remove(id);
            }
            if let Some(id) = &r.vendor {
                self.vendors.remove(id);
            }
            if let Some(id) = &r.class {
                self.classes.remove(id);
            }
            if let Some(id) = &r.os {
                self.oses.remove(id);
            }
            if let Some(id) = &r.comm {
                self.comms.retain(|c| &c.id != id);
            }
            if let Some(mac) = &r.override_mac {
                let m: MacAddr = mac.get_ref().parse().map_err(|e: crate::net::MacParseError| ctx.err(mac.span(), "override", e.to_string()))?;
                self.overrides.remove(&m);
            }
        }
        for c in parsed.class {
            let id = c.id.get_ref().clone();
            let comms = compile_comms(&ctx, &id, c.comm, &mut pend)?;
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
            self.classes.insert(id, class);
        }
        for v in parsed.vendor {
            let id = v.id.get_ref().clone();
            let mut ouis = Vec::new();
            for o in &v.ouis {
                let hex: String = o.get_ref().chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_uppercase();
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
            self.vendors.insert(id, vendor);
        }
        for o in parsed.os {
            let id = o.id.get_ref().clone();
            if let Some(d) = &o.end_of_support {
                if !super::os::is_iso_date(d.get_ref()) {
                    return Err(ctx.err(d.span(), "end_of_support", format!("{:?} is not a date; write YYYY-MM-DD", d.get_ref())));
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
            self.oses.insert(id, entry);
        }
        for r in parsed.rule {
            let Some(id) = r.id.clone() else {
                return Err(ctx.err(r.field.span(), "id", "a [[rule]] needs an id so sites can override it"));
            };
            let rule = compile_rule(&ctx, id.clone(), r, true, &mut pend)?;
            self.rules.insert(id, rule);
        }
        for p in parsed.profile {
            let id = p.id.get_ref().clone();
            pend(RefKind::Vendor, &p.vendor, "vendor");
            pend(RefKind::Class, &p.class, "class");
            if let Some(os) = &p.os {
                pend(RefKind::Os, os, "os");
            }
            if p.rule.is_empty() {
                return Err(ctx.err(p.id.span(), "rule", format!("profile {id:?} has no [[profile.rule]]; nothing could ever match it")));
            }
            let mut rules = Vec::new();
            for (i, r) in p.rule.into_iter().enumerate() {
                let rid = r.id.clone().unwrap_or_else(|| format!("{id}#{}", i + 1));
                rules.push(compile_rule(&ctx, rid, r, false, &mut pend)?);
            }
            let comms = compile_comms(&ctx, &id, p.comm, &mut pend)?;
            let profile = Profile {
                id: id.clone(),
                vendor: p.vendor.into_inner(),
                model_family: p.model_family,
                class: p.class.into_inner(),
                // Filled from the class when the profile leaves them out (see resolve).
                category: p.category.unwrap_or(Category::It),
                criticality: p.criticality.unwrap_or(Criticality::NonClinical),
                clinical_function: p.clinical_function,
                os: p.os.map(|o| o.into_inner()),
                rules,
                comms,
                sources: p.sources,
                origin: ctx.loc(p.id.span()),
                inherit: (p.category.is_none(), p.criticality.is_none()),
            };
            self.profiles.insert(id, profile);
        }
        let global = compile_comms(&ctx, "global", parsed.comm, &mut pend)?;
        for c in global {
            self.comms.retain(|old| old.id != c.id);
            self.comms.push(c);
        }
        for o in parsed.overrides {
            let mac: MacAddr = o.mac.get_ref().parse().map_err(|e: crate::net::MacParseError| ctx.err(o.mac.span(), "mac", e.to_string()))?;
            if let Some(p) = &o.profile {
                pend(RefKind::Profile, p, "profile");
            }
            if let Some(c) = &o.class {
                pend(RefKind::Class, c, "class");
            }
            if let Some(os) = &o.os {
                pend(RefKind::Os, os, "os");
            }
            if o.profile.is_none() && o.class.is_none() && o.vendor.is_none() && o.model.is_none() && o.category.is_none() && o.criticality.is_none() && o.os.is_none() && o.clinical_function.is_none() {
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
            self.overrides.insert(mac, ov);
        }
        Ok(())
    }

    /// Check cross-references once everything is merged and fill inherited profile fields.
    fn resolve(&mut self, pending: &[PendingRef]) -> Result<(), KbError> {
        for r in pending {
            let (exists, what) = match r.kind {
                RefKind::Vendor => (self.vendors.contains_key(&r.id), "vendor"),
                RefKind::Class | RefKind::PeerClass => (self.classes.contains_key(&r.id), "class"),
                RefKind::Os => (self.oses.contains_key(&r.id), "os"),
                RefKind::Profile => (self.profiles.contains_key(&r.id), "profile"),
            };
            if !exists {
                return Err(KbError {
                    file: r.file.clone(),
                    line: r.line,
                    key: r.key.to_string(),
                    message: format!("unknown {what} id {:?}; define it in a [[{what}]] entry or fix the spelling", r.id),
                });
            }
        }
        for required in [super::classifier::UNKNOWN_IT_CLASS, super::classifier::UNKNOWN_MEDICAL_CLASS] {
            if !self.classes.contains_key(required) {
                return Err(KbError {
                    file: self.files.first().cloned().unwrap_or_default(),
                    line: 0,
                    key: "class".into(),
                    message: format!("the fallback class {required:?} is missing (or removed); every device needs a class to fall back to"),
                });
            }
        }
        for profile in self.profiles.values_mut() {
            let Some(class) = self.classes.get(&profile.class) else { continue };
            if profile.inherit.0 {
                profile.category = class.category;
            }
            if profile.inherit.1 {
                profile.criticality = class.criticality;
            }
            if profile.clinical_function.is_none() {
                profile.clinical_function = class.clinical_function.clone();
            }
        }
        self.oui_index.clear();
        for v in self.vendors.values() {
            for o in &v.ouis {
                self.oui_index.insert(o.clone(), v.id.clone());
            }
        }
        Ok(())
    }

    // ---- look-ups ------------------------------------------------------------------------

    pub fn profile(&self, id: &str) -> Option<&Profile> {
        self.profiles.get(id)
    }
    pub fn class(&self, id: &str) -> Option<&Class> {
        self.classes.get(id)
    }
    pub fn vendor(&self, id: &str) -> Option<&Vendor> {
        self.vendors.get(id)
    }
    pub fn os(&self, id: &str) -> Option<&OsEntry> {
        self.oses.get(id)
    }
    pub fn override_for(&self, mac: &MacAddr) -> Option<&Override> {
        self.overrides.get(mac)
    }

    /// The knowledge-base vendor a MAC address belongs to: an explicit OUI entry first
    /// (longest block), then a vendor whose organisation pattern matches the IEEE name.
    pub fn vendor_for_mac(&self, mac: &MacAddr) -> Option<&Vendor> {
        if mac.is_multicast() || mac.is_local() {
            return None;
        }
        let hex: String = mac.0.iter().map(|b| format!("{b:02X}")).collect();
        for len in [9, 7, 6] {
            if let Some(v) = self.oui_index.get(&hex[..len]).and_then(|id| self.vendors.get(id)) {
                return Some(v);
            }
        }
        let org = crate::oui::lookup(mac)?;
        self.vendor_for_org(org)
    }

    /// The knowledge-base vendor for a bare 24-bit OUI (e.g. from an EUI-64 device id).
    pub fn vendor_for_oui(&self, oui: [u8; 3]) -> Option<&Vendor> {
        let hex = format!("{:02X}{:02X}{:02X}", oui[0], oui[1], oui[2]);
        if let Some(v) = self.oui_index.get(&hex).and_then(|id| self.vendors.get(id)) {
            return Some(v);
        }
        self.vendor_for_org(crate::oui::lookup_oui(oui)?)
    }

    fn vendor_for_org(&self, org: &str) -> Option<&Vendor> {
        // BTreeMap order makes the choice deterministic when two patterns match.
        self.vendors.values().find(|v| v.org_patterns.iter().any(|p| p.is_match(org)))
    }
}

fn compile_rule(
    ctx: &Ctx<'_>,
    id: String,
    r: RawRule,
    generic: bool,
    pend: &mut impl FnMut(RefKind, &Spanned<String>, &'static str),
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
        return Err(ctx.err(span, "field", format!("rule {id:?} needs exactly one of exact, prefix, contains, regex (has {})", matchers.len())));
    }
    let has_target = r.class.is_some() || r.os.is_some() || r.vendor.is_some();
    if generic && !has_target {
        return Err(ctx.err(span, "class", format!("rule {id:?} votes for nothing: set class, os and/or vendor")));
    }
    if !generic && has_target {
        return Err(ctx.err(span, "class", format!("rule {id:?} is inside a profile, which it votes for; class/os/vendor belong on [[rule]] entries")));
    }
    if let Some(c) = &r.class {
        pend(RefKind::Class, c, "class");
    }
    if let Some(o) = &r.os {
        pend(RefKind::Os, o, "os");
    }
    if let Some(v) = &r.vendor {
        pend(RefKind::Vendor, v, "vendor");
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
    pend: &mut impl FnMut(RefKind, &Spanned<String>, &'static str),
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
                    let cat = serde_json::from_value::<Category>(serde_json::Value::String(s["category:".len()..].to_string()))
                        .map_err(|_| ctx.err(span.clone(), "peer", format!("{s:?}: category must be medical, ot, iot or it")))?;
                    PeerRole::Category(cat)
                }
                s => {
                    pend(RefKind::PeerClass, &Spanned::new(span.clone(), s.to_string()), "peer");
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
            Some([lo, hi]) if lo > hi => return Err(ctx.err(span, "port_range", format!("range {lo}-{hi} is backwards"))),
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

fn read_dir_sources(dir: &Path) -> Result<Vec<(String, String)>, KbError> {
    let whole = |message: String| KbError { file: dir.display().to_string(), line: 0, key: String::new(), message };
    let entries = std::fs::read_dir(dir).map_err(|e| whole(format!("cannot read knowledge-base directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| KbError {
            file: p.display().to_string(),
            line: 0,
            key: String::new(),
            message: format!("cannot read: {e} (knowledge-base files must be UTF-8 TOML)"),
        })?;
        out.push((p.display().to_string(), text));
    }
    Ok(out)
}

/// An operator override as written to a site file (see [`append_override`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct OverrideEntry {
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub criticality: Option<Criticality>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clinical_function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Append an operator override to a site file (created if missing), so it is reviewed like
/// any other knowledge-base change and survives restarts. The entry is validated against
/// `kb` first: an override naming an unknown class, profile or OS, or a bad MAC, is refused
/// before anything is written. Reload the knowledge base to apply it.
pub fn append_override(kb: &KnowledgeBase, path: &Path, entry: &OverrideEntry) -> Result<(), KbError> {
    #[derive(serde::Serialize)]
    struct Wrapper<'a> {
        #[serde(rename = "override")]
        overrides: [&'a OverrideEntry; 1],
    }
    let file = path.display().to_string();
    let text = toml::to_string(&Wrapper { overrides: [entry] })
        .map_err(|e| KbError { file: file.clone(), line: 0, key: "override".into(), message: format!("cannot encode override: {e}") })?;
    // Validate exactly what will be loaded, against the entries it may refer to.
    let mut check = kb.clone();
    let mut pending = Vec::new();
    check.merge_file(&file, &text, &mut pending)?;
    check.resolve(&pending)?;
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(KbError { file, line: 0, key: String::new(), message: format!("cannot read: {e}") }),
    };
    let sep = if existing.is_empty() || existing.ends_with("\n\n") { "" } else if existing.ends_with('\n') { "\n" } else { "\n\n" };
    let io_err = |e: std::io::Error| KbError { file: path.display().to_string(), line: 0, key: String::new(), message: format!("cannot write: {e}") };
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io_err)?;
    f.write_all(format!("{sep}{text}").as_bytes()).map_err(io_err)?;
    f.sync_all().map_err(io_err)
}
