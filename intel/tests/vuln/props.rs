//! Properties of the parsers of untrusted feed files and of version comparison.

use crate::icsma_dir;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::cmp::Ordering;
use wardline_intel::vuln::{parse_advisory, KevCatalog, Version, VersionSpec, VulnIndex};
use wardline_intel::DeviceQuery;

fn version_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}(\\.[0-9]{1,3}){0,4}",
        "v?[0-9]{1,2}(\\.[0-9]{1,2}){0,3}[a-d]?( build [0-9]{1,3})?",
        "[A-D]\\.[0-9]{2}(\\.[0-9]{2})?",
        "[0-9]{1,2}\\.[0-9]{1,2}(rc|beta|alpha)[0-9]?",
        "[0-9]{1,2}(\\.[0-9]{1,2})?\\.x",
    ]
}

fn numeric_version() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..20, 1..5)
}

fn dotted(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

/// Arbitrary JSON whose object keys are mostly CSAF's own, so the parser gets past the
/// first level and meets wrong types deep inside.
fn csafish() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("document".to_string()),
        Just("tracking".to_string()),
        Just("id".to_string()),
        Just("version".to_string()),
        Just("product_tree".to_string()),
        Just("branches".to_string()),
        Just("category".to_string()),
        Just("name".to_string()),
        Just("product".to_string()),
        Just("product_id".to_string()),
        Just("vulnerabilities".to_string()),
        Just("scores".to_string()),
        Just("cvss_v3".to_string()),
        Just("baseScore".to_string()),
        Just("vectorString".to_string()),
        Just("product_status".to_string()),
        Just("known_affected".to_string()),
        Just("remediations".to_string()),
        Just("relationships".to_string()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just("vendor".to_string()),
            Just("product_name".to_string()),
            Just("product_version_range".to_string()),
            Just("vers:all/*".to_string()),
            Just("<= 9.33.1".to_string()),
            Just("CSAFPID-0001".to_string()),
            ".{0,12}"
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every node of a document, by JSON pointer.
fn pointers(v: &Value, here: String, out: &mut Vec<String>) {
    out.push(here.clone());
    match v {
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| pointers(x, format!("{here}/{i}"), out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| pointers(x, format!("{here}/{k}"), out)),
        _ => {}
    }
}

fn real_doc() -> Value {
    serde_json::from_slice(&std::fs::read(icsma_dir().join("icsma-20-317-01.json")).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn version_order_is_total_and_consistent(a in version_text(), b in version_text(), c in version_text()) {
        let (a, b, c) = (Version::parse(&a).unwrap(), Version::parse(&b).unwrap(), Version::parse(&c).unwrap());
        prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
        if a <= b && b <= c {
            prop_assert!(a <= c, "{} <= {} <= {}", a, b, c);
        }
    }

    #[test]
    fn numeric_versions_compare_like_their_numbers(a in numeric_version(), b in numeric_version()) {
        let pad = |v: &[u32]| { let mut v = v.to_vec(); v.resize(6, 0); v };
        let expected = pad(&a).cmp(&pad(&b));
        prop_assert_eq!(Version::parse(&dotted(&a)).unwrap().cmp(&Version::parse(&dotted(&b)).unwrap()), expected);
    }

    #[test]
    fn a_version_inside_a_parsed_range_compares_inside(lo in numeric_version(), hi in numeric_version(), v in numeric_version()) {
        let (vl, vh, vv) = (Version::parse(&dotted(&lo)).unwrap(), Version::parse(&dotted(&hi)).unwrap(), Version::parse(&dotted(&v)).unwrap());
        // vers sorts constraints: with lo > hi the terms read "<= hi | >= lo", two open ranges.
        let inside = if vl <= vh { vl <= vv && vv <= vh } else { vv <= vh || vv >= vl };
        for spec in [
            format!(">= {} | <= {}", dotted(&lo), dotted(&hi)),
            format!("vers:generic/>={}|<={}", dotted(&lo), dotted(&hi)),
        ] {
            prop_assert_eq!(VersionSpec::parse(&spec).contains(&vv), Some(inside), "{} in {}", dotted(&v), spec);
        }
        prop_assert_eq!(VersionSpec::parse(&format!("<= {}", dotted(&hi))).contains(&vv), Some(vv <= vh));
        prop_assert_eq!(VersionSpec::parse(&format!("< {}", dotted(&hi))).contains(&vv), Some(vv < vh));
        prop_assert_eq!(VersionSpec::parse(&format!("{} and below", dotted(&hi))).contains(&vv), Some(vv <= vh));
        prop_assert_eq!(VersionSpec::parse(&format!("{} | {}", dotted(&lo), dotted(&hi))).contains(&vv), Some(vv == vl || vv == vh));
        // A wildcard bound covers exactly the versions with its prefix.
        let prefix = &hi[..1];
        let wild = format!("{}.x", dotted(prefix));
        prop_assert_eq!(VersionSpec::parse(&wild).contains(&vv), Some(v[0] == hi[0]));
    }

    #[test]
    fn version_parsers_never_panic(s in "\\PC{0,40}", t in ".{0,80}") {
        let _ = Version::parse(&s);
        let _ = VersionSpec::parse(&s);
        let _ = VersionSpec::parse(&format!("vers:{t}"));
        if let (Some(a), Some(b)) = (Version::parse(&s), Version::parse(&t)) {
            let _ = a.cmp_to_bound(&b);
            let _ = VersionSpec::parse(&t).contains(&a);
        }
    }

    #[test]
    fn advisory_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_advisory(&bytes, "fuzz.json");
        let _ = KevCatalog::parse(&bytes, "kev.json");
    }

    #[test]
    fn advisory_parser_never_panics_on_csaf_shaped_json(doc in csafish()) {
        let bytes = serde_json::to_vec(&doc).unwrap();
        if let Ok(a) = parse_advisory(&bytes, "x.json") {
            // Whatever parsed can be indexed and matched.
            let idx = VulnIndex::build(vec![a], KevCatalog::default());
            let _ = idx.match_device(&DeviceQuery { vendor: Some("vendor"), model: Some("product_name"), firmware: Some("1.0"), os: None });
        }
    }

    /// One node of a real advisory replaced by arbitrary JSON: the advisory loads or the
    /// error points at a node that exists in the damaged document.
    #[test]
    fn damaged_real_advisory_error_points_into_the_document(pick in any::<prop::sample::Index>(), replacement in csafish()) {
        let mut doc = real_doc();
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        let target = all[pick.index(all.len())].clone();
        if target.is_empty() {
            doc = replacement;
        } else {
            *doc.pointer_mut(&target).unwrap() = replacement;
        }
        let bytes = serde_json::to_vec(&doc).unwrap();
        if let Err(e) = parse_advisory(&bytes, "icsma-20-317-01.json") {
            prop_assert_eq!(e.file.as_str(), "icsma-20-317-01.json");
            prop_assert!(e.pointer.is_empty() || doc.pointer(&e.pointer).is_some(), "{} (changed {})", e, target);
        }
    }
}
