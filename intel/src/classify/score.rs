//! Scoring: turning a device's facts into votes for profiles, classes, vendors and operating
//! systems, and choosing the winners with hysteresis against the previous answer.

use super::{Attribute, Because, Classification, DeviceFacts, HYSTERESIS_MARGIN};
use crate::model::{
    Category, Criticality, KnowledgeBase, MatchKey, OsInfo, Profile, Rule, Vendor, UNKNOWN_IT_CLASS,
    UNKNOWN_MEDICAL_CLASS,
};
use std::collections::BTreeMap;
use wardline_common::Field;

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

pub(super) type Item = (MatchKey, String);

pub(super) fn facts_to_items(kb: &KnowledgeBase, facts: &DeviceFacts) -> Vec<Item> {
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
    let hex: String = v
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-' || *c == ':')
        .filter(|c| c.is_ascii_hexdigit())
        .collect();
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
pub(super) fn round(x: f64) -> f64 {
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

/// Evidence votes of the generic rules, per target id.
#[derive(Default)]
struct Votes<'k> {
    class: BTreeMap<&'k str, Vec<Because>>,
    os: BTreeMap<String, Vec<Because>>,
    vendor: BTreeMap<String, Vec<Because>>,
}

/// The class picked for a device: id, confidence, evidence, and its best profile if any.
type ClassPick<'a> = (String, f64, Vec<Because>, Option<&'a ProfileScore<'a>>);

pub(super) fn score(
    kb: &KnowledgeBase,
    facts: &DeviceFacts,
    items: &[Item],
    prev: Option<&Classification>,
) -> Classification {
    let profiles = score_profiles(kb, items);
    let mut votes = generic_votes(kb, items);
    let classes = score_classes(kb, &profiles, &votes.class);
    let chosen_class = choose_class(&classes, prev);

    let mac_vendor: Option<&Vendor> = kb.vendor_for_mac(&facts.mac);
    let device_id_vendor: Option<&Vendor> =
        items.iter().find(|(k, _)| *k == MatchKey::DeviceIdVendor).and_then(|(_, id)| kb.vendor(id));
    let medical_vendor = mac_vendor.is_some_and(|v| v.medical) || device_id_vendor.is_some_and(|v| v.medical);

    let (class_id, class_conf, class_ev, best_profile) = match chosen_class {
        Some(c) => (c.id.clone(), c.score, c.evidence.clone(), c.best_profile),
        None => fallback_class(&classes, mac_vendor, device_id_vendor),
    };
    let chosen_profile = choose_profile(&profiles, &class_id, prev);
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

    let category_value =
        chosen_profile.map(|p| p.profile.category).or(class_def.map(|c| c.category)).unwrap_or(Category::It);
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

    let vendor = vendor_attribute(kb, facts, items, &mut votes.vendor, [mac_vendor, device_id_vendor], chosen_profile);
    let (os, os_info) = os_attribute(kb, &mut votes.os, chosen_profile);

    let profile_attr = chosen_profile.map(|p| Attribute {
        value: p.profile.id.clone(),
        confidence: p.score,
        evidence: p.evidence.clone(),
    });
    let model = chosen_profile.map(|p| Attribute {
        value: p.profile.model_family.clone(),
        confidence: p.score,
        evidence: p.evidence.clone(),
    });

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

/// Profiles: every matching rule of the profile, once.
fn score_profiles<'k>(kb: &'k KnowledgeBase, items: &[Item]) -> Vec<ProfileScore<'k>> {
    let mut profiles: Vec<ProfileScore> = Vec::new();
    for p in kb.profiles.values() {
        let ev: Vec<Because> = p.rules.iter().filter_map(|r| rule_match(r, items).map(|i| because(r, i))).collect();
        if !ev.is_empty() {
            profiles.push(ProfileScore { profile: p, score: noisy_or(&ev), evidence: ev });
        }
    }
    profiles
}

/// Generic rules vote for attributes directly.
fn generic_votes<'k>(kb: &'k KnowledgeBase, items: &[Item]) -> Votes<'k> {
    let mut votes = Votes::default();
    for r in kb.rules.values() {
        let Some(item) = rule_match(r, items) else {
            continue;
        };
        let b = because(r, item);
        if let Some(c) = &r.target.class {
            votes.class.entry(c.as_str()).or_default().push(b.clone());
        }
        if let Some(o) = &r.target.os {
            votes.os.entry(o.clone()).or_default().push(b.clone());
        }
        if let Some(v) = &r.target.vendor {
            votes.vendor.entry(v.clone()).or_default().push(b);
        }
    }
    votes
}

/// Classes: generic votes plus the evidence of the class's best profile (only the best,
/// so two similar profiles of one class do not count the same clue twice).
fn score_classes<'a>(
    kb: &KnowledgeBase,
    profiles: &'a [ProfileScore<'a>],
    class_votes: &BTreeMap<&str, Vec<Because>>,
) -> Vec<ClassScore<'a>> {
    let mut class_ids: Vec<&str> = class_votes.keys().copied().collect();
    class_ids.extend(profiles.iter().map(|p| p.profile.class.as_str()));
    class_ids.sort_unstable();
    class_ids.dedup();
    let mut classes: Vec<ClassScore> = Vec::new();
    for id in class_ids {
        let Some(class) = kb.class(id) else { continue };
        let best_profile =
            best_of(profiles.iter().filter(|p| p.profile.class == id), |p| (p.score, p.profile.id.as_str()));
        let mut ev = class_votes.get(id).cloned().unwrap_or_default();
        if let Some(bp) = best_profile {
            ev.extend(bp.evidence.iter().cloned());
        }
        classes.push(ClassScore {
            id: id.to_string(),
            score: noisy_or(&ev),
            evidence: ev,
            best_profile,
            category: class.category,
        });
    }
    classes
}

fn eligible(c: &ClassScore) -> bool {
    let min = if c.category == Category::Medical { MIN_MEDICAL_CLASS_SCORE } else { MIN_CLASS_SCORE };
    c.score >= min
}

/// The best eligible class, unless the previous class is still eligible and within
/// [`HYSTERESIS_MARGIN`] of it.
fn choose_class<'c, 'a>(classes: &'c [ClassScore<'a>], prev: Option<&Classification>) -> Option<&'c ClassScore<'a>> {
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
}

/// No class is eligible: a low-confidence fallback that never claims "medical" unless the
/// manufacturer itself is a medical one.
fn fallback_class<'a>(
    classes: &[ClassScore<'a>],
    mac_vendor: Option<&Vendor>,
    device_id_vendor: Option<&Vendor>,
) -> ClassPick<'a> {
    let weak =
        best_of(classes.iter().filter(|c| c.category != Category::Medical && c.score >= MIN_FALLBACK_SCORE), |c| {
            (c.score, c.id.as_str())
        });
    let medical = device_id_vendor.filter(|v| v.medical).or(mac_vendor.filter(|v| v.medical));
    match (weak, medical) {
        (_, Some(v)) => {
            let ev = vec![Because {
                field: "mac_vendor".into(),
                value: v.name.clone(),
                rule: format!("oui:{}", v.id),
                weight: v.oui_weight,
            }];
            (UNKNOWN_MEDICAL_CLASS.to_string(), round(v.oui_weight * 0.5), ev, None)
        }
        (Some(w), None) => (w.id.clone(), w.score, w.evidence.clone(), None),
        (None, None) => (UNKNOWN_IT_CLASS.to_string(), 0.1, Vec::new(), None),
    }
}

/// Profile within the class, with the same stickiness as the class.
fn choose_profile<'p, 'a>(
    profiles: &'p [ProfileScore<'a>],
    class_id: &str,
    prev: Option<&Classification>,
) -> Option<&'p ProfileScore<'a>> {
    let candidates = || profiles.iter().filter(|p| p.profile.class == class_id && p.score >= MIN_PROFILE_SCORE);
    let best = best_of(candidates(), |p| (p.score, p.profile.id.as_str()));
    match (best, prev.and_then(|p| p.profile.as_ref())) {
        (Some(best), Some(pp)) if best.profile.id != pp.value => {
            match candidates().find(|p| p.profile.id == pp.value) {
                Some(k) if best.score < k.score + HYSTERESIS_MARGIN => Some(k),
                _ => Some(best),
            }
        }
        (best, _) => best,
    }
}

/// Vendor: KB vendors by combined evidence (generic rules, the MAC block, an HL7 device id,
/// the chosen profile); the bare IEEE name when none is known.
fn vendor_attribute(
    kb: &KnowledgeBase,
    facts: &DeviceFacts,
    items: &[Item],
    vendor_votes: &mut BTreeMap<String, Vec<Because>>,
    [mac_vendor, device_id_vendor]: [Option<&Vendor>; 2],
    chosen_profile: Option<&ProfileScore>,
) -> Option<Attribute<String>> {
    if let Some(v) = mac_vendor {
        let org = crate::oui::lookup(&facts.mac).unwrap_or(&v.name).to_string();
        vendor_votes.entry(v.id.clone()).or_default().push(Because {
            field: "mac_vendor".into(),
            value: org,
            rule: format!("oui:{}", v.id),
            weight: v.oui_weight,
        });
    }
    if let Some(v) = device_id_vendor {
        let value = items
            .iter()
            .find(|(k, _)| *k == MatchKey::Field(Field::Hl7DeviceId))
            .map(|i| i.1.clone())
            .unwrap_or_default();
        vendor_votes.entry(v.id.clone()).or_default().push(Because {
            field: "hl7_device_id".into(),
            value,
            rule: format!("eui64:{}", v.id),
            weight: DEVICE_ID_VENDOR_WEIGHT,
        });
    }
    if let Some(p) = chosen_profile {
        vendor_votes.entry(p.profile.vendor.clone()).or_default().push(Because {
            field: "profile".into(),
            value: p.profile.id.clone(),
            rule: p.profile.id.clone(),
            weight: p.score,
        });
    }
    best_of(vendor_votes.iter().filter_map(|(id, ev)| kb.vendor(id).map(|v| (v, ev))), |(v, ev)| {
        (noisy_or(ev), v.id.as_str())
    })
    .map(|(v, ev)| Attribute { value: v.name.clone(), confidence: noisy_or(ev), evidence: ev.clone() })
    .or_else(|| {
        crate::oui::lookup(&facts.mac).map(|org| Attribute {
            value: org.to_string(),
            confidence: 0.5,
            evidence: vec![Because {
                field: "mac_org".into(),
                value: org.to_string(),
                rule: "ieee-oui".into(),
                weight: 0.5,
            }],
        })
    })
}

/// OS: generic OS rules, plus the profile's known platform.
fn os_attribute(
    kb: &KnowledgeBase,
    os_votes: &mut BTreeMap<String, Vec<Because>>,
    chosen_profile: Option<&ProfileScore>,
) -> (Option<Attribute<String>>, Option<OsInfo>) {
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
    (os, os_info)
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
