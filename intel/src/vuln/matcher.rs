//! Which advisories apply to a device: a compiled index over advisories and the KEV set.
//!
//! Rules (docs/vulnerabilities.md):
//! 1. Vendor: the device's vendor string and the advisory's vendor branch must share a
//!    canonical key ([`vendor_keys`]).
//! 2. Product: every distinctive word of the advisory's product name must appear in the
//!    device's model words, or all in its OS words ([`ProductPattern`]).
//! 3. Version: the product's version spec decides [`Confidence`]; versions outside it,
//!    and products a vulnerability lists as fixed or not affected, give no match.
//!
//! The index groups products by canonical vendor, then by one word every matching model
//! must contain, so a device is compared with a handful of products, not all of them.

use super::csaf::Advisory;
use super::kev::KevCatalog;
use super::names::{vendor_keys, words, ProductPattern};
use super::version::{Version, VersionSpec};
use std::collections::HashMap;
use std::sync::Arc;

/// What is known about a device. Any field may be missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DeviceQuery<'a> {
    /// Manufacturer as any source spells it: IEEE organisation, KB vendor id or name,
    /// the device's own "BD/CareFusion".
    pub vendor: Option<&'a str>,
    pub model: Option<&'a str>,
    pub firmware: Option<&'a str>,
    pub os: Option<&'a str>,
}

/// How sure a match is. Ordered from most to least certain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Vendor and product match, and the device's version is affected (or the advisory
    /// says every version is).
    Confirmed,
    /// Vendor and product match and the device's version is known, but the advisory states
    /// versions in a form that cannot be compared (dates, model lists, prose). A possible
    /// match: check the advisory text.
    VersionUnclear,
    /// Vendor and product match but the device's version is unknown. A possible match.
    VersionUnknown,
}

/// One vulnerability that applies to a device. Plain values, for the risk model and the API.
/// Text fields are shared (`Arc<str>`, read them as `&str`): a million devices share a few
/// thousand distinct matches, and cloning kilobytes of remediation text per device would
/// dominate matching time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VulnMatch {
    /// "ICSMA-20-317-01".
    pub advisory_id: Arc<str>,
    /// "CVE-2020-25165"; `None` for advisories without CVE ids.
    pub cve: Option<Arc<str>>,
    /// CVSS v3 vector ("CVSS:3.1/AV:N/...") or v2 when that is all there is.
    pub cvss_vector: Option<Arc<str>>,
    /// CVSS base score, 0.0 to 10.0.
    pub cvss_score: Option<f64>,
    /// "CRITICAL", "HIGH", "MEDIUM", "LOW", when the advisory gives it.
    pub severity: Option<Arc<str>>,
    /// The CVE is in CISA's Known Exploited Vulnerabilities catalog.
    pub kev: bool,
    /// What the advisory says to do for this product ("vendor_fix: Update to 9.33.2 ...";
    /// several remediations separated by blank lines). Empty when it says nothing.
    pub remediation: Arc<str>,
    /// The advisory's vendor and product name, e.g. "Becton, Dickinson and Company (BD)
    /// Alaris PC Unit Model 8015 <= 9.33.1".
    pub product: Arc<str>,
    pub confidence: Confidence,
}

/// One matchable product of one advisory, with what each of the advisory's
/// vulnerabilities says about it (resolved once, at build).
struct Entry {
    advisory: usize,
    product: usize,
    pattern: ProductPattern,
    vulns: Vec<(usize, Link)>,
}

#[derive(Clone, Copy)]
enum Link {
    /// Affected: the match, ready but for the confidence, is `templates[i]`.
    Affected(usize),
    /// Listed as fixed or not affected.
    Excluded,
}

#[derive(Default)]
struct VendorProducts {
    by_anchor: HashMap<String, Vec<usize>>,
    /// Patterns without a plain word (only families/ranges): checked for every device.
    unanchored: Vec<usize>,
}

/// Advisories and the KEV set compiled for fast matching. Build once per feed import.
pub struct VulnIndex {
    advisories: Vec<Advisory>,
    kev: KevCatalog,
    entries: Vec<Entry>,
    templates: Vec<VulnMatch>,
    by_vendor: HashMap<String, VendorProducts>,
    /// Older revisions replaced by a newer file with the same tracking id.
    pub superseded: usize,
    /// Products whose name has nothing distinctive ("Version"); they never match.
    pub unmatchable_products: usize,
}

impl VulnIndex {
    /// Compiles advisories (several revisions of one advisory: the newest wins) and the KEV
    /// catalog (empty when none is loaded).
    pub fn build(advisories: Vec<Advisory>, kev: KevCatalog) -> VulnIndex {
        let mut newest: HashMap<String, Advisory> = HashMap::new();
        let mut superseded = 0;
        for a in advisories {
            match newest.get(&a.id) {
                Some(old) if !is_newer(&a, old) => superseded += 1,
                Some(_) => {
                    superseded += 1;
                    newest.insert(a.id.clone(), a);
                }
                None => {
                    newest.insert(a.id.clone(), a);
                }
            }
        }
        let mut advisories: Vec<Advisory> = newest.into_values().collect();
        advisories.sort_by(|a, b| a.id.cmp(&b.id));
        let mut idx = VulnIndex {
            advisories,
            kev,
            entries: Vec::new(),
            templates: Vec::new(),
            by_vendor: HashMap::new(),
            superseded,
            unmatchable_products: 0,
        };
        for (ai, a) in idx.advisories.iter().enumerate() {
            for (pi, p) in a.products.iter().enumerate() {
                let pattern = ProductPattern::new(&p.vendor, &p.product_name);
                let keys = vendor_keys(&p.vendor);
                if !pattern.is_matchable() || keys.is_empty() {
                    idx.unmatchable_products += 1;
                    continue;
                }
                let e = idx.entries.len();
                for k in keys {
                    let vp = idx.by_vendor.entry(k).or_default();
                    match pattern.anchor() {
                        Some(w) => vp.by_anchor.entry(w.to_string()).or_default().push(e),
                        None => vp.unanchored.push(e),
                    }
                }
                let mut vulns = Vec::new();
                for (vi, v) in a.vulnerabilities.iter().enumerate() {
                    let id = &p.product_id;
                    if v.fixed.contains(id) || v.not_affected.contains(id) {
                        vulns.push((vi, Link::Excluded));
                    } else if v.affected.contains(id) {
                        vulns.push((vi, Link::Affected(idx.templates.len())));
                        idx.templates.push(describe(a, vi, pi, &idx.kev));
                    }
                }
                idx.entries.push(Entry { advisory: ai, product: pi, pattern, vulns });
            }
        }
        idx
    }

    pub fn advisories(&self) -> &[Advisory] {
        &self.advisories
    }

    pub fn kev(&self) -> &KevCatalog {
        &self.kev
    }

    /// Every vulnerability that applies to the device, one per (advisory, CVE) with the
    /// most certain confidence, sorted by advisory id then CVE. Empty without a vendor or
    /// without a model and OS.
    pub fn match_device(&self, d: &DeviceQuery) -> Vec<VulnMatch> {
        let Some(vendor) = d.vendor else { return Vec::new() };
        // A product must be named entirely by the model or entirely by the OS: mixing them
        // would let "Windows 7" supply the "7" of a "Vivid 7".
        let model_words = d.model.map(words).unwrap_or_default();
        let os_words = d.os.map(words).unwrap_or_default();
        if model_words.is_empty() && os_words.is_empty() {
            return Vec::new();
        }
        let version = d.firmware.and_then(Version::parse);
        let mut candidates: Vec<usize> = Vec::new();
        for k in vendor_keys(vendor) {
            let Some(vp) = self.by_vendor.get(&k) else { continue };
            for w in model_words.iter().chain(&os_words) {
                if let Some(es) = vp.by_anchor.get(w) {
                    candidates.extend(es);
                }
            }
            candidates.extend(&vp.unanchored);
        }
        if candidates.is_empty() {
            return Vec::new();
        }
        candidates.sort_unstable();
        candidates.dedup();

        // (advisory, vulnerability) -> most certain (confidence, template); few per device.
        let mut best: Vec<((usize, usize), Confidence, usize)> = Vec::new();
        let mut excluded: Vec<(usize, usize)> = Vec::new();
        for &e in &candidates {
            let entry = &self.entries[e];
            if !entry.pattern.matches(&model_words) && !entry.pattern.matches(&os_words) {
                continue;
            }
            let p = &self.advisories[entry.advisory].products[entry.product];
            let confidence = match (&p.versions, &version) {
                (VersionSpec::All, _) => Some(Confidence::Confirmed),
                (_, None) => Some(Confidence::VersionUnknown),
                (spec, Some(v)) => match spec.contains(v) {
                    Some(true) => Some(Confidence::Confirmed),
                    Some(false) => None,
                    None => Some(Confidence::VersionUnclear),
                },
            };
            for &(vi, link) in &entry.vulns {
                let key = (entry.advisory, vi);
                match (link, confidence) {
                    // The device is one of the fixed/not-affected versions: that outranks
                    // any affected entry it may also fall into.
                    (Link::Excluded, Some(Confidence::Confirmed)) if version.is_some() => excluded.push(key),
                    (Link::Excluded, _) | (Link::Affected(_), None) => {}
                    (Link::Affected(t), Some(c)) => match best.iter_mut().find(|b| b.0 == key) {
                        Some(b) if c < b.1 => *b = (key, c, t),
                        Some(_) => {}
                        None => best.push((key, c, t)),
                    },
                }
            }
        }
        let mut out: Vec<VulnMatch> = best
            .into_iter()
            .filter(|(k, _, _)| !excluded.contains(k))
            .map(|(_, confidence, t)| VulnMatch { confidence, ..self.templates[t].clone() })
            .collect();
        out.sort_by(|a, b| (&a.advisory_id, &a.cve).cmp(&(&b.advisory_id, &b.cve)));
        out
    }

    /// [`match_device`](Self::match_device) for a whole inventory: identical devices (same
    /// vendor, model, firmware, OS — hundreds of one pump model) are matched once.
    pub fn match_inventory(&self, devices: &[DeviceQuery]) -> Vec<Vec<VulnMatch>> {
        let mut seen: HashMap<&DeviceQuery, usize> = HashMap::new();
        let mut distinct: Vec<Vec<VulnMatch>> = Vec::new();
        let slots: Vec<usize> = devices
            .iter()
            .map(|d| {
                *seen.entry(d).or_insert_with(|| {
                    distinct.push(self.match_device(d));
                    distinct.len() - 1
                })
            })
            .collect();
        slots.into_iter().map(|i| distinct[i].clone()).collect()
    }
}

/// The match for (advisory, vulnerability, product), confidence to be filled in.
fn describe(a: &Advisory, vi: usize, pi: usize, kev: &KevCatalog) -> VulnMatch {
    let v = &a.vulnerabilities[vi];
    let p = &a.products[pi];
    let score = v.scores.iter().find(|s| s.products.contains(&p.product_id)).or_else(|| v.scores.first());
    let remediation = v
        .remediations
        .iter()
        .filter(|r| r.product_ids.is_empty() || r.product_ids.contains(&p.product_id))
        .map(|r| format!("{}: {}", r.category, r.details.trim()))
        .collect::<Vec<_>>()
        .join("\n\n");
    VulnMatch {
        advisory_id: a.id.as_str().into(),
        cve: v.cve.as_deref().map(Arc::from),
        cvss_vector: score.map(|s| s.vector.as_str().into()),
        cvss_score: score.map(|s| s.base_score),
        severity: score.and_then(|s| s.base_severity.as_deref().map(Arc::from)),
        kev: v.cve.as_deref().is_some_and(|c| kev.contains(c)),
        remediation: remediation.into(),
        product: format!("{} {}", p.vendor, p.full_name).trim().into(),
        confidence: Confidence::Confirmed,
    }
}

/// Later release date wins; on the same date, the higher tracking version.
fn is_newer(a: &Advisory, b: &Advisory) -> bool {
    match a.current_release_date.cmp(&b.current_release_date) {
        std::cmp::Ordering::Equal => match (Version::parse(&a.version), Version::parse(&b.version)) {
            (Some(x), Some(y)) => x > y,
            _ => a.version > b.version,
        },
        o => o == std::cmp::Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vuln::parse_advisory;

    /// Pump 9: every version affected (P1) except 3.2, listed as fixed (P2); Pump 9 Pro's
    /// versions are prose (P3); P4 (Pump 9 2.x) is known not affected by the second CVE.
    const ADVISORY: &str = r#"{
      "document": {"title": "T", "tracking": {"id": "ICSMA-99-002-01", "version": "1", "current_release_date": "2024-01-01"}},
      "product_tree": {"branches": [{"category": "vendor", "name": "Acme Medical, Inc.", "branches": [
        {"category": "product_name", "name": "Pump 9", "branches": [
          {"category": "product_version_range", "name": "vers:all/*", "product": {"name": "Pump 9 all", "product_id": "P1"}},
          {"category": "product_version", "name": "3.2", "product": {"name": "Pump 9 3.2", "product_id": "P2"}},
          {"category": "product_version", "name": "2.x", "product": {"name": "Pump 9 2.x", "product_id": "P4"}}]},
        {"category": "product_name", "name": "Pump 9 Pro", "branches": [
          {"category": "product_version", "name": "shipped before May 2020", "product": {"name": "Pro", "product_id": "P3"}}]}]}]},
      "vulnerabilities": [
        {"cve": "CVE-2024-0001", "scores": [{"products": ["P1", "P3"], "cvss_v3": {"vectorString": "CVSS:3.1/AV:N", "baseScore": 9.8}}],
         "product_status": {"known_affected": ["P1", "P3"], "fixed": ["P2"]},
         "remediations": [{"category": "vendor_fix", "details": "Update to 3.2", "product_ids": ["P1"]},
                          {"category": "mitigation", "details": "Isolate the network"}]},
        {"cve": "CVE-2024-0002", "product_status": {"known_affected": ["P1"], "known_not_affected": ["P4"]}}]
    }"#;

    fn idx() -> VulnIndex {
        VulnIndex::build(vec![parse_advisory(ADVISORY.as_bytes(), "a.json").unwrap()], KevCatalog::default())
    }

    fn run(model: &str, fw: Option<&str>) -> Vec<(String, Confidence)> {
        idx()
            .match_device(&DeviceQuery {
                vendor: Some("ACME MEDICAL CORP"),
                model: Some(model),
                firmware: fw,
                os: None,
            })
            .into_iter()
            .map(|m| (m.cve.as_deref().unwrap_or("").to_string(), m.confidence))
            .collect()
    }

    #[test]
    fn fixed_and_not_affected_versions_are_excluded() {
        let c = |s: &str| s.to_string();
        assert_eq!(
            run("Pump 9", Some("3.1")),
            [(c("CVE-2024-0001"), Confidence::Confirmed), (c("CVE-2024-0002"), Confidence::Confirmed)]
        );
        assert_eq!(run("Pump 9", Some("3.2")), [(c("CVE-2024-0002"), Confidence::Confirmed)]);
        assert_eq!(run("Pump 9", Some("2.5")), [(c("CVE-2024-0001"), Confidence::Confirmed)]);
        // Unknown firmware: "all versions" still holds; nothing can be excluded.
        assert_eq!(run("Pump 9", None).len(), 2);
    }

    #[test]
    fn most_certain_entry_wins_and_remediation_is_per_product() {
        // "Pump 9 Pro" is also a "Pump 9" (family): P1 (all versions) beats P3 (prose).
        let m = idx().match_device(&DeviceQuery {
            vendor: Some("Acme Medical"),
            model: Some("Pump 9 Pro"),
            firmware: Some("4.0"),
            os: None,
        });
        let first = m.iter().find(|m| m.cve.as_deref() == Some("CVE-2024-0001")).unwrap();
        assert_eq!(first.confidence, Confidence::Confirmed);
        assert_eq!(&*first.remediation, "vendor_fix: Update to 3.2\n\nmitigation: Isolate the network");
        assert_eq!(first.cvss_score, Some(9.8));
        assert!(!first.kev);
        assert_eq!(run("Pump 8", None), []);
        assert!(idx()
            .match_device(&DeviceQuery { vendor: Some("Other Pumps Ltd"), model: Some("Pump 9"), ..Default::default() })
            .is_empty());
        assert!(idx().match_device(&DeviceQuery { model: Some("Pump 9"), ..Default::default() }).is_empty());
    }
}
