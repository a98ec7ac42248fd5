//! CSAF 2.0 security advisories (CISA ICS Medical Advisories, ICSMA) into [`Advisory`].
//!
//! The input structs below name only the fields Wardline uses; serde ignores every other
//! field, so newer files (new notes, references, product_identification_helper, CVSS v4)
//! load without code changes. A field that is present with the wrong type fails the
//! advisory with its JSON pointer ("/vulnerabilities/2/scores/0/cvss_v3/baseScore"), because
//! a guessed score or product would be worse than a missing advisory the operator is told
//! about. [`load_advisory_dir`] reports such files and keeps importing the others.

use super::version::VersionSpec;
use super::FeedError;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// One advisory, as Wardline uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Advisory {
    /// document.tracking.id, e.g. "ICSMA-20-317-01".
    pub id: String,
    /// document.tracking.version ("1", "2", "1.0.0"): a newer revision has a higher one.
    pub version: String,
    /// document.tracking.current_release_date (ISO 8601 text).
    pub current_release_date: String,
    pub title: String,
    /// The file it came from (name only), for messages.
    pub source: String,
    /// Every product the tree defines, by product id.
    pub products: Vec<Product>,
    pub vulnerabilities: Vec<Vulnerability>,
}

/// A product of the product tree: a vendor → product_name → version leaf, a relationship,
/// or a bare full_product_name.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub product_id: String,
    /// The vendor branch name; empty when the tree gives none (bare full_product_names).
    pub vendor: String,
    /// The product_name branch name (or the full name when there is no such branch).
    pub product_name: String,
    /// The leaf's full name, e.g. "Alaris PC Unit Model 8015 <= 9.33.1".
    pub full_name: String,
    /// The product_version / product_version_range branch, parsed.
    pub versions: VersionSpec,
    /// For relationship products: the product it is installed on / a component of.
    pub platform: Option<String>,
}

/// One vulnerability of an advisory.
#[derive(Debug, Clone, PartialEq)]
pub struct Vulnerability {
    pub cve: Option<String>,
    /// CWE id and name ("CWE-798", "Use of Hard-coded Credentials").
    pub cwe: Option<(String, String)>,
    pub title: Option<String>,
    pub scores: Vec<Score>,
    /// known_affected, first_affected and last_affected product ids.
    pub affected: Vec<String>,
    /// fixed and first_fixed product ids.
    pub fixed: Vec<String>,
    pub not_affected: Vec<String>,
    pub remediations: Vec<Remediation>,
}

/// A CVSS score and the products it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub products: Vec<String>,
    /// "3.0"/"3.1" (from cvss_v3) or "2.0" when only cvss_v2 is given.
    pub cvss_version: String,
    pub vector: String,
    pub base_score: f64,
    pub base_severity: Option<String>,
}

/// What to do about a vulnerability, for some products.
#[derive(Debug, Clone, PartialEq)]
pub struct Remediation {
    /// vendor_fix, mitigation, workaround, none_available, no_fix_planned.
    pub category: String,
    pub details: String,
    pub url: Option<String>,
    /// Empty: applies to every affected product.
    pub product_ids: Vec<String>,
}

// ---- input structs: only what is used; unknown fields are ignored ------------------------

#[derive(Deserialize)]
struct CsafDoc {
    document: CsafDocument,
    #[serde(default)]
    product_tree: Option<CsafProductTree>,
    #[serde(default)]
    vulnerabilities: Vec<CsafVulnerability>,
}

#[derive(Deserialize)]
struct CsafDocument {
    #[serde(default)]
    title: String,
    tracking: CsafTracking,
}

#[derive(Deserialize)]
struct CsafTracking {
    id: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    current_release_date: String,
}

#[derive(Deserialize, Default)]
struct CsafProductTree {
    #[serde(default)]
    branches: Vec<CsafBranch>,
    #[serde(default)]
    full_product_names: Vec<CsafFullProductName>,
    #[serde(default)]
    relationships: Vec<CsafRelationship>,
}

#[derive(Deserialize)]
struct CsafBranch {
    #[serde(default)]
    category: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    branches: Vec<CsafBranch>,
    #[serde(default)]
    product: Option<CsafFullProductName>,
}

#[derive(Deserialize, Clone)]
struct CsafFullProductName {
    #[serde(default)]
    name: String,
    product_id: String,
}

#[derive(Deserialize)]
struct CsafRelationship {
    #[serde(default)]
    category: String,
    full_product_name: CsafFullProductName,
    product_reference: String,
    relates_to_product_reference: String,
}

#[derive(Deserialize)]
struct CsafVulnerability {
    #[serde(default)]
    cve: Option<String>,
    #[serde(default)]
    cwe: Option<CsafCwe>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    scores: Vec<CsafScore>,
    #[serde(default)]
    product_status: CsafProductStatus,
    #[serde(default)]
    remediations: Vec<CsafRemediation>,
}

#[derive(Deserialize)]
struct CsafCwe {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct CsafScore {
    #[serde(default)]
    products: Vec<String>,
    #[serde(default)]
    cvss_v3: Option<CsafCvss>,
    #[serde(default)]
    cvss_v2: Option<CsafCvss>,
}

#[derive(Deserialize)]
struct CsafCvss {
    #[serde(default)]
    version: String,
    #[serde(rename = "vectorString")]
    vector_string: String,
    #[serde(rename = "baseScore")]
    base_score: f64,
    #[serde(rename = "baseSeverity", default)]
    base_severity: Option<String>,
}

#[derive(Deserialize, Default)]
struct CsafProductStatus {
    #[serde(default)]
    known_affected: Vec<String>,
    #[serde(default)]
    first_affected: Vec<String>,
    #[serde(default)]
    last_affected: Vec<String>,
    #[serde(default)]
    fixed: Vec<String>,
    #[serde(default)]
    first_fixed: Vec<String>,
    #[serde(default)]
    known_not_affected: Vec<String>,
}

#[derive(Deserialize)]
struct CsafRemediation {
    #[serde(default)]
    category: String,
    #[serde(default)]
    details: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    product_ids: Vec<String>,
}

/// Parses one advisory. `source` names the input in errors (usually the file name).
pub fn parse_advisory(bytes: &[u8], source: &str) -> Result<Advisory, FeedError> {
    let doc: CsafDoc = super::from_json(bytes, source)?;
    let mut products = Vec::new();
    let tree = doc.product_tree.unwrap_or_default();
    for b in &tree.branches {
        walk(b, &BranchPath::default(), &mut products);
    }
    for f in &tree.full_product_names {
        if !products.iter().any(|p: &Product| p.product_id == f.product_id) {
            products.push(Product {
                product_id: f.product_id.clone(),
                vendor: String::new(),
                product_name: f.name.clone(),
                full_name: f.name.clone(),
                versions: VersionSpec::Unparsed(String::new()),
                platform: None,
            });
        }
    }
    let by_id: HashMap<String, Product> = products.iter().map(|p| (p.product_id.clone(), p.clone())).collect();
    for r in &tree.relationships {
        // The vulnerable component is the product_reference; it keeps its vendor, name and
        // versions, and remembers what it is installed on.
        if let Some(component) = by_id.get(&r.product_reference) {
            let platform = by_id
                .get(&r.relates_to_product_reference)
                .map(|p| p.full_name.clone())
                .unwrap_or_else(|| r.relates_to_product_reference.clone());
            products.push(Product {
                product_id: r.full_product_name.product_id.clone(),
                full_name: if r.full_product_name.name.is_empty() {
                    format!("{} {} {}", component.full_name, r.category, platform)
                } else {
                    r.full_product_name.name.clone()
                },
                platform: Some(platform),
                ..component.clone()
            });
        }
    }
    let vulnerabilities = doc
        .vulnerabilities
        .into_iter()
        .map(|v| {
            let ps = v.product_status;
            Vulnerability {
                cve: v.cve.filter(|c| !c.trim().is_empty()).map(|c| c.trim().to_string()),
                cwe: v.cwe.map(|c| (c.id, c.name)),
                title: v.title,
                scores: v
                    .scores
                    .into_iter()
                    .filter_map(|s| {
                        let products = s.products;
                        s.cvss_v3.or(s.cvss_v2).map(|c| Score {
                            products,
                            cvss_version: c.version,
                            vector: c.vector_string,
                            base_score: c.base_score,
                            base_severity: c.base_severity,
                        })
                    })
                    .collect(),
                affected: [ps.known_affected, ps.first_affected, ps.last_affected].concat(),
                fixed: [ps.fixed, ps.first_fixed].concat(),
                not_affected: ps.known_not_affected,
                remediations: v
                    .remediations
                    .into_iter()
                    .map(|r| Remediation {
                        category: r.category,
                        details: r.details,
                        url: r.url,
                        product_ids: r.product_ids,
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Advisory {
        id: doc.document.tracking.id,
        version: doc.document.tracking.version,
        current_release_date: doc.document.tracking.current_release_date,
        title: doc.document.title,
        source: source.to_string(),
        products,
        vulnerabilities,
    })
}

/// What the branches above a product said: vendor, product name, version text.
#[derive(Default, Clone)]
struct BranchPath {
    vendor: String,
    product_name: String,
    version: Option<String>,
}

fn walk(b: &CsafBranch, ctx: &BranchPath, out: &mut Vec<Product>) {
    let mut here = ctx.clone();
    match b.category.as_str() {
        "vendor" => here.vendor = b.name.clone(),
        "product_name" | "product_family" if here.product_name.is_empty() => here.product_name = b.name.clone(),
        // A family above the product name ("IntelliVue" > "MX450"): join them.
        "product_name" | "product_family" => here.product_name = format!("{} {}", here.product_name, b.name),
        "product_version" | "product_version_range" => here.version = Some(b.name.clone()),
        _ => {}
    }
    if let Some(p) = &b.product {
        let versions = match &here.version {
            Some(v) => VersionSpec::parse(v),
            // A product without a version branch: the advisory names no versions, so all.
            None => VersionSpec::All,
        };
        out.push(Product {
            product_id: p.product_id.clone(),
            vendor: here.vendor.clone(),
            product_name: if here.product_name.is_empty() { p.name.clone() } else { here.product_name.clone() },
            full_name: p.name.clone(),
            versions,
            platform: None,
        });
    }
    for c in &b.branches {
        walk(c, &here, out);
    }
}

/// Reads and parses one advisory file.
pub fn load_advisory_file(path: &Path) -> Result<Advisory, FeedError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    let bytes =
        std::fs::read(path).map_err(|e| FeedError::file(&path.display().to_string(), format!("cannot read: {e}")))?;
    parse_advisory(&bytes, &name)
}

/// Every `*.json` file under `dir` (recursively, sorted by path): the advisories that
/// parsed and one error per file that did not. `Err` only when `dir` cannot be listed.
pub fn load_advisory_dir(dir: &Path) -> Result<(Vec<Advisory>, Vec<FeedError>), FeedError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut first = true;
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if first => {
                return Err(FeedError::file(
                    &dir.display().to_string(),
                    format!("cannot list the advisory folder: {e}"),
                ))
            }
            Err(_) => continue,
        };
        first = false;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("json")) {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match load_advisory_file(&f) {
            Ok(a) => ok.push(a),
            Err(e) => errors.push(e),
        }
    }
    Ok((ok, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
      "document": {"title": "T", "tracking": {"id": "ICSMA-99-001-01", "version": "2",
                   "current_release_date": "2024-01-02T00:00:00Z", "future_field": [1, 2]}},
      "product_tree": {"branches": [{"category": "vendor", "name": "Acme Medical, Inc.", "branches": [
         {"category": "product_name", "name": "Pump 9", "branches": [
            {"category": "product_version_range", "name": "vers:intdot/<3.2",
             "product": {"name": "Pump 9 <3.2", "product_id": "P1"}},
            {"category": "product_version", "name": "3.2",
             "product": {"name": "Pump 9 3.2", "product_id": "P2"}}]}]}],
        "relationships": [{"category": "installed_on", "product_reference": "P1",
           "relates_to_product_reference": "P2", "full_product_name": {"name": "x on y", "product_id": "R1"}}]},
      "vulnerabilities": [{"cve": "CVE-2024-0001", "cwe": {"id": "CWE-798", "name": "Hard-coded"},
         "scores": [{"products": ["P1"], "cvss_v3": {"version": "3.1", "vectorString": "CVSS:3.1/AV:N",
            "baseScore": 9.8, "baseSeverity": "CRITICAL"}}, {"products": ["P1"], "cvss_v4": {"x": 1}}],
         "product_status": {"known_affected": ["P1"], "fixed": ["P2"]},
         "remediations": [{"category": "vendor_fix", "details": "Update to 3.2", "product_ids": ["P1"]}]}]
    }"#;

    #[test]
    fn parses_tree_status_scores_and_ignores_unknown_fields() {
        let a = parse_advisory(MINIMAL.as_bytes(), "min.json").unwrap();
        assert_eq!(a.id, "ICSMA-99-001-01");
        assert_eq!(a.version, "2");
        assert_eq!(a.products.len(), 3);
        let p1 = &a.products[0];
        assert_eq!((p1.vendor.as_str(), p1.product_name.as_str()), ("Acme Medical, Inc.", "Pump 9"));
        assert!(matches!(p1.versions, VersionSpec::Range(_)));
        let r1 = a.products.iter().find(|p| p.product_id == "R1").unwrap();
        assert_eq!(r1.platform.as_deref(), Some("Pump 9 3.2"));
        let v = &a.vulnerabilities[0];
        assert_eq!(v.cve.as_deref(), Some("CVE-2024-0001"));
        assert_eq!(v.scores.len(), 1, "a score with only an unknown CVSS version is skipped");
        assert_eq!(v.scores[0].base_score, 9.8);
        assert_eq!((v.affected.clone(), v.fixed.clone()), (vec!["P1".to_string()], vec!["P2".to_string()]));
        assert_eq!(v.remediations[0].details, "Update to 3.2");
    }

    #[test]
    fn wrong_type_names_file_and_pointer() {
        let bad = MINIMAL.replace("\"baseScore\": 9.8", "\"baseScore\": \"9.8\"");
        let e = parse_advisory(bad.as_bytes(), "icsma-20-049-01.json").unwrap_err();
        assert_eq!(e.file, "icsma-20-049-01.json");
        assert_eq!(e.pointer, "/vulnerabilities/0/scores/0/cvss_v3/baseScore");
        assert!(e.to_string().starts_with("icsma-20-049-01.json: /vulnerabilities/0/scores/0/cvss_v3/baseScore: "));
        assert!(e.message.contains("expected a number"), "{}", e.message);
    }

    #[test]
    fn missing_tracking_id_and_bad_json_are_errors() {
        let e = parse_advisory(br#"{"document": {"tracking": {}}}"#, "a.json").unwrap_err();
        assert_eq!(e.pointer, "/document/tracking");
        assert!(e.message.contains("id"), "{}", e.message);
        let e = parse_advisory(b"{\"document\": ", "b.json").unwrap_err();
        assert_eq!(e.file, "b.json");
        let e = parse_advisory(b"[]", "c.json").unwrap_err();
        assert_eq!(e.file, "c.json");
    }
}
