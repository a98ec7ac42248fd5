//! Loading the real feeds, reporting bad files, and importing newer files.

use crate::{advisories, feeds_dir, icsma_dir, index, kev};
use serde_json::{json, Value};
use std::path::Path;
use wardline_intel::vuln::{load_advisory_dir, parse_advisory, KevCatalog, VersionSpec, VulnIndex};

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn every_real_advisory_loads_with_its_tracking_products_and_vulnerabilities() {
    let files: Vec<_> = std::fs::read_dir(icsma_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| e.path())
        .collect();
    let adv = advisories();
    assert_eq!(adv.len(), files.len());
    for f in &files {
        let raw = read_json(f);
        let a = adv.iter().find(|a| a.source == f.file_name().unwrap().to_string_lossy()).unwrap();
        assert_eq!(a.id, raw["document"]["tracking"]["id"].as_str().unwrap());
        assert_eq!(a.version, raw["document"]["tracking"]["version"].as_str().unwrap());
        assert_eq!(a.vulnerabilities.len(), raw["vulnerabilities"].as_array().unwrap().len(), "{}", a.id);
        // Every product a vulnerability names is defined by the tree.
        for v in &a.vulnerabilities {
            for id in &v.affected {
                assert!(a.products.iter().any(|p| &p.product_id == id), "{}: {id} not in product_tree", a.id);
            }
        }
        for (i, v) in a.vulnerabilities.iter().enumerate() {
            let rv = &raw["vulnerabilities"][i];
            assert_eq!(v.cve.as_deref(), rv["cve"].as_str());
            if let Some(s) = rv["scores"][0]["cvss_v3"]["baseScore"].as_f64() {
                assert_eq!(v.scores[0].base_score, s);
                assert_eq!(v.scores[0].vector, rv["scores"][0]["cvss_v3"]["vectorString"].as_str().unwrap());
            }
        }
    }
}

#[test]
fn cisa_version_texts_in_the_feed_parse_as_ranges() {
    let mut all = 0;
    let mut ranges = 0;
    let mut unparsed = Vec::new();
    for a in advisories() {
        for p in &a.products {
            match &p.versions {
                VersionSpec::All => all += 1,
                VersionSpec::Range(_) => ranges += 1,
                VersionSpec::Unparsed(t) => unparsed.push(t.clone()),
            }
        }
    }
    // Every product whose range is written "<= 1.2", ">= a | <= b" or "vers:..." parses;
    // what is left is prose, dates and model lists.
    for t in &unparsed {
        let l = t.to_ascii_lowercase();
        assert!(!l.starts_with("vers:"), "{t}");
        let looks_numeric = |s: &str| s.trim().chars().next().is_some_and(|c| c.is_ascii_digit());
        if let Some(rest) = l.strip_prefix("<=").or_else(|| l.strip_prefix('<')) {
            assert!(!looks_numeric(rest) || rest.contains(" on ") || rest.contains('x'), "{t} should parse");
        }
    }
    eprintln!("versions: {all} all, {ranges} ranges, {} free text: {unparsed:?}", unparsed.len());
    assert!(ranges > 200 && all > 250, "{ranges} ranges, {all} all");
}

#[test]
fn kev_catalog_loads_every_entry() {
    let raw = read_json(&feeds_dir().join("known_exploited_vulnerabilities.json"));
    let k = kev();
    assert_eq!(k.len() as u64, raw["count"].as_u64().unwrap());
    assert_eq!(k.catalog_version, raw["catalogVersion"].as_str().unwrap());
    for e in raw["vulnerabilities"].as_array().unwrap() {
        let got = k.get(e["cveID"].as_str().unwrap()).unwrap();
        assert_eq!(got.due_date, e["dueDate"].as_str().unwrap());
        assert_eq!(got.ransomware(), e["knownRansomwareCampaignUse"] == "Known");
    }
}

#[test]
fn a_bad_file_is_reported_by_name_and_field_and_the_others_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let src = icsma_dir();
    for f in ["icsma-20-317-01.json", "icsma-20-049-01.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut bad = read_json(&src.join("icsma-18-037-02.json"));
    bad["vulnerabilities"][2]["scores"][0]["cvss_v3"]["baseScore"] = json!("high");
    std::fs::write(dir.path().join("icsma-18-037-02.json"), serde_json::to_vec(&bad).unwrap()).unwrap();
    let truncated = std::fs::read(src.join("icsma-17-250-02a.json")).unwrap();
    std::fs::create_dir(dir.path().join("2017")).unwrap();
    std::fs::write(dir.path().join("2017/icsma-17-250-02a.json"), &truncated[..truncated.len() / 2]).unwrap();
    std::fs::write(dir.path().join("README.md"), "not an advisory").unwrap();

    let (ok, errors) = load_advisory_dir(dir.path()).unwrap();
    let mut ids: Vec<_> = ok.iter().map(|a| a.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["ICSMA-20-049-01", "ICSMA-20-317-01"]);
    assert_eq!(errors.len(), 2, "{errors:?}");
    let score = errors.iter().find(|e| e.file == "icsma-18-037-02.json").unwrap();
    assert_eq!(score.pointer, "/vulnerabilities/2/scores/0/cvss_v3/baseScore");
    assert!(
        score.to_string().starts_with("icsma-18-037-02.json: /vulnerabilities/2/scores/0/cvss_v3/baseScore: "),
        "{score}"
    );
    assert!(score.message.contains("expected a number"), "{score}");
    let cut = errors.iter().find(|e| e.file == "icsma-17-250-02a.json").unwrap();
    assert!(cut.message.contains("EOF"), "{cut}");

    let missing = load_advisory_dir(&dir.path().join("nope")).unwrap_err();
    assert!(missing.to_string().contains("cannot list"), "{missing}");
}

/// A hospital copies in a newer revision of an advisory it already has, in a newer layout
/// (fields this code has never seen): it loads, and it replaces the old revision.
#[test]
fn newer_revision_with_unknown_fields_replaces_the_older_one() {
    let old = read_json(&icsma_dir().join("icsma-20-317-01.json"));
    let mut new = old.clone();
    new["document"]["tracking"]["version"] = json!("2");
    new["document"]["tracking"]["current_release_date"] = json!("2030-01-01T00:00:00Z");
    new["document"]["x_generator_hints"] = json!({"a": [1, 2, 3]});
    let leaf = &mut new["product_tree"]["branches"][0]["branches"][0]["branches"][0];
    leaf["name"] = json!("vers:intdot/<9.33.2");
    leaf["product"]["product_identification_helper"] = json!({"model_numbers": ["8015"], "cpe": "cpe:/h:bd:8015"});
    new["vulnerabilities"][0]["scores"][0]["cvss_v4"] = json!({"version": "4.0", "baseScore": 7.1});
    new["vulnerabilities"][0]["flags"] = json!([{"label": "component_not_present"}]);
    let bytes = serde_json::to_vec(&new).unwrap();
    let newer = parse_advisory(&bytes, "icsma-20-317-01-rev2.json").unwrap();
    let older = advisories().iter().find(|a| a.id == "ICSMA-20-317-01").unwrap().clone();

    let idx = VulnIndex::build(vec![newer.clone(), older.clone()], KevCatalog::default());
    assert_eq!(idx.superseded, 1);
    let kept: Vec<_> = idx.advisories().iter().filter(|a| a.id == "ICSMA-20-317-01").collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].version, "2");
    // Order of files does not matter.
    let idx = VulnIndex::build(vec![older, newer], KevCatalog::default());
    assert_eq!(idx.advisories()[0].version, "2");
    let alaris = wardline_intel::DeviceQuery {
        vendor: Some("BD"),
        model: Some("Alaris PC unit 8015"),
        firmware: Some("9.33.1.4"),
        os: None,
    };
    let m = idx.match_device(&alaris);
    assert_eq!(m.len(), 1, "the new range <9.33.2 covers 9.33.1.4: {m:?}");
    assert_eq!(m[0].confidence, wardline_intel::Confidence::Confirmed);
    assert!(index().advisories().len() >= 124);
}
