//! Combining weighted evidence into explainable device attributes.
//!
//! Each matching rule contributes its weight once; weights combine as a noisy-OR
//! (`1 - Π(1 - w)`), so independent clues reinforce each other, the result stays in 0..1,
//! and adding evidence never lowers a score. Everything iterates in sorted order, so the
//! same facts always give the same answer on a sensor and on the aggregator.

use super::loader::{KnowledgeBase, MatchKey, Override, Profile, Rule, Vendor};
use super::os::OsInfo;
use super::{Category, Criticality, Transport};
use crate::evidence::{Evidence, Field};
use crate::net::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A class must beat the previous one by this much before a device changes class, so one
/// new packet cannot flip a classification back and forth.
pub const HYSTERESIS_MARGIN: f64 = 0.15;
/// Below this a non-medical class is only used when nothing better exists.
const MIN_CLASS_SCORE: f64 = 0.25;
/// Medical classes need real medical evidence before they are claimed.
const MIN_MEDICAL_CLASS_SCORE: f64 = 0.5;
/// Fallback classes (below their normal threshold) still need this much, so a bare
/// manufacturer OUI does not make every HP MAC a thin client.
const MIN_FALLBACK_SCORE: f64 = 0.2;
/// A profile (vendor + model) is named only above this score.
const MIN_PROFILE_SCORE: f64 = 0.5;
/// Weight of an IEEE EUI-64 device identifier's OUI (HL7 OBX-18/MSH-3) as vendor evidence:
/// higher than a MAC's, because it names the device itself, not its network module.
const DEVICE_ID_VENDOR_WEIGHT: f64 = 0.8;
/// Fallback classes every knowledge base must define.
pub const UNKNOWN_IT_CLASS: &str = "unknown_it";
pub const UNKNOWN_MEDICAL_CLASS: &str = "unknown_medical";

/// A transport port such as `tcp/3613` (the format of [`Field::ListeningPort`] evidence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRef {
    pub transport: Transport,
    pub port: u16,
}

impl PortRef {
    pub fn tcp(port: u16) -> PortRef {
        PortRef { transport: Transport::Tcp, port }
    }
    pub fn udp(port: u16) -> PortRef {
        PortRef { transport: Transport::Udp, port }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.transport.as_str(), self.port)
    }
}

impl FromStr for PortRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid port {s:?}: expected tcp/<n> or udp/<n>");
        let (proto, port) = s.split_once('/').ok_or_else(bad)?;
        let transport = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            _ => return Err(bad()),
        };
        Ok(PortRef { transport, port: port.parse().map_err(|_| bad())? })
    }
}

/// Everything known about one device that the classifier may use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceFacts {
    pub mac: MacAddr,
    pub evidence: Vec<Evidence>,
    /// Ports the device accepted connections on.
    pub listening: Vec<PortRef>,
    /// Services the device connected to as a client.
    pub connects_to: Vec<PortRef>,
}

impl DeviceFacts {
    pub fn new(mac: MacAddr) -> DeviceFacts {
        DeviceFacts { mac, ..Default::default() }
    }

    /// Facts from a device's evidence list, reading ports out of `listening_port` and
    /// `connects_to` evidence (how sensors report them).
    pub fn from_evidence(mac: MacAddr, evidence: Vec<Evidence>) -> DeviceFacts {
        let mut f = DeviceFacts::new(mac);
        for e in &evidence {
            let list = match e.field {
                Field::ListeningPort => &mut f.listening,
                Field::ConnectsTo => &mut f.connects_to,
                _ => continue,
            };
            if let Ok(p) = e.value.parse::<PortRef>() {
                list.push(p);
            }
        }
        f.listening.sort();
        f.listening.dedup();
        f.connects_to.sort();
        f.connects_to.dedup();
        f.evidence = evidence
            .into_iter()
            .filter(|e| !matches!(e.field, Field::ListeningPort | Field::ConnectsTo))
            .collect();
        f
    }
}

/// One piece of evidence that moved an attribute: which fact, through which rule, how much.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Because {
    /// Evidence field (`wardline_common::Field` name, or mac_vendor, connects_to, override...).
    pub field: String,
    pub value: String,
    /// Rule id (`<profile>#<n>` for unnamed profile rules, `oui:<vendor>` for MAC blocks).
    pub rule: String,
    pub weight: f64,
}

/// An attribute value with its confidence (0..1) and the evidence behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribute<T> {
    pub value: T,
    pub confidence: f64,
    pub evidence: Vec<Because>,
}

/// What a device is, each attribute explained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub mac: MacAddr,
    /// Knowledge-base profile id, when the evidence names a specific product family.
    pub profile: Option<Attribute<String>>,
    pub vendor: Option<Attribute<String>>,
    pub model: Option<Attribute<String>>,
    pub class: Attribute<String>,
    pub category: Attribute<Category>,
    pub criticality: Attribute<Criticality>,
    pub clinical_function: Option<Attribute<String>>,
    /// Operating system id from os.toml.
    pub os: Option<Attribute<String>>,
    pub os_info: Option<OsInfo>,
    /// The MAC belongs to a manufacturer marked medical.
    pub medical_vendor: bool,
    /// Where the operator override that applied was defined ("overrides.toml:12").
    pub overridden: Option<String>,
}

impl Classification {
    /// Human-readable account of every attribute and what produced it.
    pub fn explain(&self) -> String {
        use std::fmt::Write;
        let mut out = format!("device {}\n", self.mac);
        if let Some(o) = &self.overridden {
            let _ = writeln!(out, "  operator override from {o}");
        }
        let mut attr = |name: &str, value: &str, a_conf: f64, ev: &[Because]| {
            let _ = writeln!(out, "  {name}: {value} (confidence {a_conf:.2})");
            for b in ev {
                let _ = writeln!(out, "    {} = {:?} via rule {} (weight {:.2})", b.field, b.value, b.rule, b.weight);
            }
        };
        if let Some(a) = &self.vendor {
            attr("vendor", &a.value, a.confidence, &a.evidence);
        }
        if let Some(a) = &self.model {
            attr("model", &a.value, a.confidence, &a.evidence);
        }
        attr("class", &self.class.value, self.class.confidence, &self.class.evidence);
        attr("category", self.category.value.as_str(), self.category.confidence, &self.category.evidence);
        attr("criticality", self.criticality.value.as_str(), self.criticality.confidence, &self.criticality.evidence);
        if let Some(a) = &self.clinical_function {
            attr("clinical function", &a.value, a.confidence, &[]);
        }
        if let Some(a) = &self.os {
            let name = self.os_info.as_ref().map(|o| o.name.as_str()).unwrap_or(&a.value);
            attr("os", name, a.confidence, &a.evidence);
        }
        out
    }
}

/// Classify a device from scratch.
pub fn classify(kb: &KnowledgeBase, facts: &DeviceFacts) -> Classification {
    classify_stable(kb, None, facts)
}

/// Classify a device that already had a classification: the previous class and profile are
/// kept unless the new best beats them by [`HYSTERESIS_MARGIN`] (or they lost all support).
/// An operator override in the knowledge base always wins.
pub fn classify_stable(kb: &KnowledgeBase, prev: Option<&Classification>, facts: &DeviceFacts) -> Classification {
    // A previous result that came from an override says nothing about the evidence.
    let prev = prev.filter(|p| p.overridden.is_none() && p.mac == facts.mac);
    let items = facts_to_items(kb, facts);
    let mut c = score(kb, facts, &items, prev);
    if let Some(ov) = kb.override_for(&facts.mac) {
        apply_override(kb, &mut c, ov);
    }
    c
}

type Item = (MatchKey, String);

fn facts_to_items(kb: &KnowledgeBase, facts: &DeviceFacts) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    for e in &facts.evidence {
        let v = e.value.trim();
        if v.is_empty() {
            continue;
        }
        items.push((MatchKey::Field(e.field), v.to_string()));
        if e.field == Field::Hl7DeviceId {
            if let Some(vendor) = eui64_oui(v).and_then(|oui| kb.vendor_for_oui(oui)) {
                items.push((MatchKey::DeviceIdVendor, vendor.id.clone()));
            }
        }
    }
    items.extend(facts.listening.iter().map(|p| (MatchKey::Field(Field::ListeningPort), p.to_string())));
    items.extend(facts.connects_to.iter().map(|p| (MatchKey::ConnectsTo, p.to_string())));
    if let Some(v) = kb.vendor_for_mac(&facts.mac) {
        items.push((MatchKey::MacVendor, v.id.clone()));
    }
    if let Some(org) = crate::oui::lookup(&facts.mac) {
        items.push((MatchKey::MacOrg, org.to_string()));
    }
    items.sort();
    items.dedup();
    items
}

/// The OUI at the start of an IEEE EUI-64 identifier ("080019FFFEAABBCC^B40_GE").
fn eui64_oui(v: &str) -> Option<[u8; 3]> {
    let hex: String = v.chars().take_while(|c| c.is_ascii_hexdigit() || *c == '-' || *c == ':').filter(|c| c.is_ascii_hexdigit()).collect();
    if hex.len() != 16 {
        return None;
    }
    let b = hex::decode(&hex[..6]).ok()?;
    Some([b[0], b[1], b[2]])
}

/// The first item (in sorted order) that `rule` matches. `items` is sorted by key
/// ([`facts_to_items`]), so only the rule's key range is scanned: a client with hundreds of
/// looked-up names is not walked once per rule.
fn rule_match<'a>(rule: &Rule, items: &'a [Item]) -> Option<&'a Item> {
    let start = items.partition_point(|(k, _)| *k < rule.key);
    items[start..].iter().take_while(|(k, _)| *k == rule.key).find(|(_, v)| rule.matcher.is_match(v))
}

fn because(rule: &Rule, item: &Item) -> Because {
    Because { field: rule.key.name(), value: item.1.clone(), rule: rule.id.clone(), weight: rule.weight }
}

fn noisy_or(ev: &[Because]) -> f64 {
    let miss: f64 = ev.iter().map(|b| 1.0 - b.weight.clamp(0.0, 1.0)).product();
    round(1.0 - miss)
}

/// Fixed precision keeps serialised scores stable and comparisons free of float noise.
fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

struct ProfileScore<'a> {
    profile: &'a Profile,
    score: f64,
    evidence: Vec<Because>,
}

struct ClassScore<'a> {
    id: String,
    score: f64,
    evidence: Vec<Because>,
    /// Best-scoring profile of this class, if any profile matched at all.
    best_profile: Option<&'a ProfileScore<'a>>,
    category: Category,
}

fn score(kb: &KnowledgeBase, facts: &DeviceFacts, items: &[Item], prev: Option<&Classification>) -> Classification {
    // Profiles: every matching rule of the profile, once.
    let mut profiles: Vec<ProfileScore> = Vec::new();
    for p in kb.profiles.values() {
        let ev: Vec<Because> = p.rules.iter().filter_map(|r| rule_match(r, items).map(|i| because(r, i))).collect();
        if !ev.is_empty() {
            profiles.push(ProfileScore { profile: p, score: noisy_or(&ev), evidence: ev });
        }
    }
    // Generic rules vote for attributes directly.
    let mut class_votes: BTreeMap<&str, Vec<Because>> = BTreeMap::new();
    let mut os_votes: BTreeMap<String, Vec<Because>> = BTreeMap::new();
    let mut vendor_votes: BTreeMap<String, Vec<Because>> = BTreeMap::new();
    for r in kb.rules.values() {
        let Some(item) = rule_match(r, items) else { continue };
        let b = because(r, item);
        if let Some(c) = &r.target.class {
            class_votes.entry(c.as_str()).or_default().push(b.clone());
        }
        if let Some(o) = &r.target.os {
            os_votes.entry(o.clone()).or_default().push(b.clone());
        }
        if let Some(v) = &r.target.vendor {
            vendor_votes.entry(v.clone()).or_default().push(b);
        }
    }

    // Classes: generic votes plus the evidence of the class's best profile (only the best,
    // so two similar profiles of one class do not count the same clue twice).
    let mut class_ids: Vec<&str> = class_votes.keys().copied().collect();
    class_ids.extend(profiles.iter().map(|p| p.profile.class.as_str()));
    class_ids.sort_unstable();
    class_ids.dedup();
    let mut classes: Vec<ClassScore> = Vec::new();
    for id in class_ids {
        let Some(class) = kb.class(id) else { continue };
        let best_profile = best_of(profiles.iter().filter(|p| p.profile.class == id), |p| (p.score, p.profile.id.as_str()));
        let mut ev = class_votes.get(id).cloned().unwrap_or_default();
        if let Some(bp) = best_profile {
            ev.extend(bp.evidence.iter().cloned());
        }
        classes.push(ClassScore { id: id.to_string(), score: noisy_or(&ev), evidence: ev, best_profile, category: class.category });
    }
    let eligible = |c: &ClassScore| {
        let min = if c.category == Category::Medical { MIN_MEDICAL_CLASS_SCORE } else { MIN_CLASS_SCORE };
        c.score >= min
    };

    let chosen_class: Option<&ClassScore> = {
        let best = best_of(classes.iter().filter(|c| eligible(c)), |c| (c.score, c.id.as_str()));
        match (best, prev) {
            (Some(best), Some(prev)) if best.id != prev.class.value => {
                let keep = classes.iter().find(|c| c.id == prev.class.value && eligible(c));
                match keep {
                    Some(k) if best.score < k.score + HYSTERESIS_MARGIN => Some(k),
                    _ => Some(best),
                }
            }
            (best, _) => best,
        }
    };

    let mac_vendor: Option<&Vendor> = kb.vendor_for_mac(&facts.mac);
    let device_id_vendor: Option<&Vendor> = items
        .iter()
        .find(|(k, _)| *k == MatchKey::DeviceIdVendor)
        .and_then(|(_, id)| kb.vendor(id));
    let medical_vendor = mac_vendor.is_some_and(|v| v.medical) || device_id_vendor.is_some_and(|v| v.medical);

    // Class: the chosen one, or a low-confidence fallback that never claims "medical"
    // unless the manufacturer itself is a medical one.
    let (class_id, class_conf, class_ev, best_profile) = match chosen_class {
        Some(c) => (c.id.clone(), c.score, c.evidence.clone(), c.best_profile),
        None => {
            let weak = best_of(
                classes.iter().filter(|c| c.category != Category::Medical && c.score >= MIN_FALLBACK_SCORE),
                |c| (c.score, c.id.as_str()),
            );
            let medical = device_id_vendor.filter(|v| v.medical).or(mac_vendor.filter(|v| v.medical));
            match (weak, medical) {
                (_, Some(v)) => {
                    let ev = vec![Because { field: "mac_vendor".into(), value: v.name.clone(), rule: format!("oui:{}", v.id), weight: v.oui_weight }];
                    (UNKNOWN_MEDICAL_CLASS.to_string(), round(v.oui_weight * 0.5), ev, None)
                }
                (Some(w), None) => (w.id.clone(), w.score, w.evidence.clone(), None),
                (None, None) => (UNKNOWN_IT_CLASS.to_string(), 0.1, Vec::new(), None),
            }
        }
    };

    // Profile within the class, with the same stickiness.
    let chosen_profile: Option<&ProfileScore> = {
        let candidates = || profiles.iter().filter(|p| p.profile.class == class_id && p.score >= MIN_PROFILE_SCORE);
        let best = best_of(candidates(), |p| (p.score, p.profile.id.as_str()));
        match (best, prev.and_then(|p| p.profile.as_ref())) {
            (Some(best), Some(pp)) if best.profile.id != pp.value => match candidates().find(|p| p.profile.id == pp.value) {
                Some(k) if best.score < k.score + HYSTERESIS_MARGIN => Some(k),
                _ => Some(best),
            },
            (best, _) => best,
        }
    };
    // Keep the class evidence aligned with the profile actually chosen.
    let class_ev = match (chosen_profile, best_profile) {
        (Some(cp), Some(bp)) if cp.profile.id != bp.profile.id => {
            let mut ev: Vec<Because> = class_ev.into_iter().filter(|b| !bp.evidence.contains(b)).collect();
            ev.extend(cp.evidence.iter().cloned());
            ev
        }
        _ => class_ev,
    };
    let class_conf = if chosen_class.is_some() { noisy_or(&class_ev) } else { class_conf };
    let class_def = kb.class(&class_id);

    let category_value = chosen_profile
        .map(|p| p.profile.category)
        .or(class_def.map(|c| c.category))
        .unwrap_or(Category::It);
    // Category is at least as sure as any eligible class of that category.
    let category_conf = classes
        .iter()
        .filter(|c| eligible(c) && c.category == category_value)
        .map(|c| c.score)
        .fold(class_conf, f64::max);
    let criticality_value = chosen_profile
        .map(|p| p.profile.criticality)
        .or(class_def.map(|c| c.criticality))
        .unwrap_or(Criticality::NonClinical);
    let clinical = chosen_profile
        .and_then(|p| p.profile.clinical_function.clone())
        .or_else(|| class_def.and_then(|c| c.clinical_function.clone()));

    // Vendor: KB vendors by combined evidence; the bare IEEE name when none is known.
    if let Some(v) = mac_vendor {
        let org = crate::oui::lookup(&facts.mac).unwrap_or(&v.name).to_string();
        vendor_votes.entry(v.id.clone()).or_default().push(Because { field: "mac_vendor".into(), value: org, rule: format!("oui:{}", v.id), weight: v.oui_weight });
    }
    if let Some(v) = device_id_vendor {
        let value = items.iter().find(|(k, _)| *k == MatchKey::Field(Field::Hl7DeviceId)).map(|i| i.1.clone()).unwrap_or_default();
        vendor_votes.entry(v.id.clone()).or_default().push(Because { field: "hl7_device_id".into(), value, rule: format!("eui64:{}", v.id), weight: DEVICE_ID_VENDOR_WEIGHT });
    }
    if let Some(p) = chosen_profile {
        vendor_votes.entry(p.profile.vendor.clone()).or_default().push(Because {
            field: "profile".into(),
            value: p.profile.id.clone(),
            rule: p.profile.id.clone(),
            weight: p.score,
        });
    }
    let vendor = best_of(vendor_votes.iter().filter_map(|(id, ev)| kb.vendor(id).map(|v| (v, ev))), |(v, ev)| (noisy_or(ev), v.id.as_str()))
        .map(|(v, ev)| Attribute { value: v.name.clone(), confidence: noisy_or(ev), evidence: ev.clone() })
        .or_else(|| {
            crate::oui::lookup(&facts.mac).map(|org| Attribute {
                value: org.to_string(),
                confidence: 0.5,
                evidence: vec![Because { field: "mac_org".into(), value: org.to_string(), rule: "ieee-oui".into(), weight: 0.5 }],
            })
        });

    // OS: generic OS rules, plus the profile's known platform.
    if let Some(p) = chosen_profile {
        if let Some(os) = &p.profile.os {
            os_votes.entry(os.clone()).or_default().push(Because {
                field: "profile".into(),
                value: p.profile.id.clone(),
                rule: p.profile.id.clone(),
                weight: round(p.score * 0.9),
            });
        }
    }
    let os = best_of(os_votes.iter().filter(|(id, _)| kb.os(id).is_some()), |(id, ev)| (noisy_or(ev), id.as_str()))
        .map(|(id, ev)| Attribute { value: id.clone(), confidence: noisy_or(ev), evidence: ev.clone() });
    let os_info = os.as_ref().and_then(|o| kb.os(&o.value)).map(|e| e.info.clone());

    let profile_attr = chosen_profile.map(|p| Attribute { value: p.profile.id.clone(), confidence: p.score, evidence: p.evidence.clone() });
    let model = chosen_profile.map(|p| Attribute { value: p.profile.model_family.clone(), confidence: p.score, evidence: p.evidence.clone() });

    Classification {
        mac: facts.mac,
        profile: profile_attr,
        vendor,
        model,
        class: Attribute { value: class_id, confidence: class_conf, evidence: class_ev.clone() },
        category: Attribute { value: category_value, confidence: round(category_conf), evidence: class_ev.clone() },
        criticality: Attribute { value: criticality_value, confidence: class_conf, evidence: class_ev },
        clinical_function: clinical.map(|f| Attribute { value: f, confidence: class_conf, evidence: Vec::new() }),
        os,
        os_info,
        medical_vendor,
        overridden: None,
    }
}

/// Highest key wins; among equal scores the smallest id, so ties resolve the same way
/// everywhere.
fn best_of<T, I: Iterator<Item = T>>(iter: I, key: impl Fn(&T) -> (f64, &str)) -> Option<T> {
    let mut best: Option<T> = None;
    for x in iter {
        best = match best {
            None => Some(x),
            Some(b) => {
                let (sx, ix) = key(&x);
                let (sb, ib) = key(&b);
                if sx > sb || (sx == sb && ix < ib) {
                    Some(x)
                } else {
                    Some(b)
                }
            }
        };
    }
    best
}

fn apply_override(kb: &KnowledgeBase, c: &mut Classification, ov: &Override) {
    let origin = ov.origin.to_string();
    let why = vec![Because {
        field: "override".into(),
        value: ov.note.clone().unwrap_or_else(|| format!("operator override{}", ov.by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default())),
        rule: format!("override@{origin}"),
        weight: 1.0,
    }];
    let sure = |v: String| Attribute { value: v, confidence: 1.0, evidence: why.clone() };
    let set_class = |c: &mut Classification, id: &str| {
        c.class = sure(id.to_string());
        if let Some(cd) = kb.class(id) {
            c.category = Attribute { value: cd.category, confidence: 1.0, evidence: why.clone() };
            c.criticality = Attribute { value: cd.criticality, confidence: 1.0, evidence: why.clone() };
            c.clinical_function = cd.clinical_function.clone().map(sure);
        }
    };
    if let Some(p) = ov.profile.as_deref().and_then(|id| kb.profile(id)) {
        set_class(c, &p.class);
        c.profile = Some(sure(p.id.clone()));
        c.model = Some(sure(p.model_family.clone()));
        c.vendor = Some(sure(kb.vendor(&p.vendor).map(|v| v.name.clone()).unwrap_or_else(|| p.vendor.clone())));
        c.category = Attribute { value: p.category, confidence: 1.0, evidence: why.clone() };
        c.criticality = Attribute { value: p.criticality, confidence: 1.0, evidence: why.clone() };
        if let Some(f) = &p.clinical_function {
            c.clinical_function = Some(sure(f.clone()));
        }
        if let Some(os) = &p.os {
            c.os = Some(sure(os.clone()));
        }
    }
    if let Some(class) = &ov.class {
        set_class(c, class);
        // A profile of another class no longer describes the device.
        if c.profile.as_ref().and_then(|p| kb.profile(&p.value)).is_some_and(|p| &p.class != class) {
            c.profile = None;
            c.model = None;
        }
    }
    if let Some(v) = &ov.vendor {
        c.vendor = Some(sure(v.clone()));
    }
    if let Some(m) = &ov.model {
        c.model = Some(sure(m.clone()));
    }
    if let Some(cat) = ov.category {
        c.category = Attribute { value: cat, confidence: 1.0, evidence: why.clone() };
    }
    if let Some(crit) = ov.criticality {
        c.criticality = Attribute { value: crit, confidence: 1.0, evidence: why.clone() };
    }
    if let Some(f) = &ov.clinical_function {
        c.clinical_function = Some(sure(f.clone()));
    }
    if let Some(os) = &ov.os {
        c.os = Some(sure(os.clone()));
    }
    c.os_info = c.os.as_ref().and_then(|o| kb.os(&o.value)).map(|e| e.info.clone());
    c.overridden = Some(origin);
}
