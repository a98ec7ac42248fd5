//! Matching devices: the simulator's generated models, KB vendor names, real advisory
//! product names, firmware versions and the KEV flag.

use crate::{advisories, feeds_dir, index};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use wardline_intel::vuln::names::{vendor_keys, words, ProductPattern};
use wardline_intel::vuln::VulnMatch;
use wardline_intel::{Confidence, DeviceQuery, KnowledgeBase};
use wardline_sim::profiles::PROFILES;

fn ids(m: &[VulnMatch]) -> BTreeSet<String> {
    m.iter().map(|m| m.advisory_id.to_string()).collect()
}

/// Which advisories name each generated model, found by reading the advisories' product
/// trees (not by running the matcher). Every other generated model is in no advisory.
const EXPECTED: &[(&str, &[&str])] = &[
    // "Alaris 8015 PC unit", "Alaris PC Unit" (family), "Alaris PC Unit Model 8015";
    // not ICSMA-17-017-01 ("Alaris 8000 PC unit") nor GE's stray "Alaris PC Unit" entry.
    ("alaris_pcu", &["ICSMA-17-017-02", "ICSMA-20-170-06", "ICSMA-20-317-01"]),
    ("alaris_systems_manager", &["ICSMA-20-317-01"]),
    // "IntelliVue Patient Monitors MX (MX400-550)", "IntelliVue patient monitor MX400-MX850";
    // not the MX40, MX100, X2/X3 or MP series entries.
    ("philips_intellivue", &["ICSMA-18-156-01", "ICSMA-20-254-01"]),
    // "IntelliVue Information Center iX", "Patient Information Center iX (PICiX / PIC iX)".
    ("philips_piic", &["ICSMA-18-233-01", "ICSMA-20-254-01", "ICSMA-21-322-02"]),
    // "Revolution CT"; not "Revolution Discover CT", "Revolution XQ/i", "Revolution EVO".
    ("ge_ct", &["ICSMA-20-343-01"]),
    ("ge_anesthesia", &["ICSMA-19-190-01"]),
    // "BD Pyxis MedStation ES", "Pyxis MedStation ES System", "Pyxis ES"; not "MedStation
    // ES Server", "MedStation 4000" or the Anesthesia stations.
    ("bd_pyxis", &["ICSMA-18-114-01", "ICSMA-19-248-01", "ICSMA-20-091-01", "ICSMA-22-062-01", "ICSMA-22-151-01"]),
];

#[test]
fn simulator_models_match_exactly_the_advisories_that_name_them() {
    let idx = index();
    let mut seen = BTreeMap::new();
    for p in PROFILES {
        let expected: BTreeSet<String> = EXPECTED
            .iter()
            .find(|(k, _)| *k == p.key)
            .map(|(_, ids)| ids.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        // The manufacturer as the device describes itself, and the IEEE organisation of its
        // MAC block (which for software on a Dell server is Dell, so nothing medical).
        let q = DeviceQuery { vendor: Some(p.manufacturer), model: Some(p.model), firmware: None, os: Some(p.os) };
        let m = idx.match_device(&q);
        assert_eq!(ids(&m), expected, "{}: {} {} ({}): {m:#?}", p.key, p.manufacturer, p.model, p.os);
        for x in &m {
            assert_ne!(x.confidence, Confidence::VersionUnclear, "no firmware given: {x:?}");
        }
        let by_oui = idx.match_device(&DeviceQuery { vendor: Some(p.vendor), ..q });
        assert!(ids(&by_oui).is_subset(&expected), "{}: {by_oui:#?}", p.key);
        seen.insert(p.key, expected.len());
    }
    for (k, _) in EXPECTED {
        assert!(seen.contains_key(k), "profile {k} no longer generated");
    }
    eprintln!("generated models in advisories: {seen:?}");
}

#[test]
fn firmware_version_decides_confirmed_possible_or_not_affected() {
    let idx = index();
    let alaris = |fw: Option<&str>| {
        idx.match_device(&DeviceQuery {
            vendor: Some("ALARIS MEDICAL SYSTEMS, INC."),
            model: Some("Alaris PC unit 8015"),
            firmware: fw,
            os: None,
        })
    };
    let unknown = alaris(None);
    assert_eq!(ids(&unknown).len(), 3);
    assert!(unknown.iter().all(|m| m.confidence == Confidence::VersionUnknown), "{unknown:#?}");
    assert_eq!(alaris(Some("not a version")), unknown);

    // 9.19: inside "<= 9.33" (ICSMA-17-017-02), listed in "9.13 | 9.19 | 9.33 | 12.1"
    // (ICSMA-20-170-06) and inside "<= 9.33.1" (ICSMA-20-317-01).
    let v919 = alaris(Some("9.19"));
    assert_eq!(ids(&v919), ids(&unknown));
    assert!(v919.iter().all(|m| m.confidence == Confidence::Confirmed), "{v919:#?}");
    // 9.33.1 is above 9.33 and not listed; only "<= 9.33.1" covers it.
    let v9331 = alaris(Some("v9.33.1"));
    assert_eq!(ids(&v9331), BTreeSet::from(["ICSMA-20-317-01".to_string()]));
    // The simulator's pumps report firmware 9.33.1.4 (`ALARIS_FIRMWARE` in sim/src/topology/risky.rs): newer
    // than every affected version.
    assert!(alaris(Some("9.33.1.4")).is_empty());

    // A version the advisory does not state comparably: GE Aisys "CS2 Avance | Amingo".
    let aisys = idx.match_device(&DeviceQuery {
        vendor: Some("GE Healthcare"),
        model: Some("Aisys CS2"),
        firmware: Some("11.0"),
        os: None,
    });
    assert!(!aisys.is_empty() && aisys.iter().all(|m| m.confidence == Confidence::VersionUnclear), "{aisys:#?}");
    // "vers:all/*": every version is affected, known or not.
    for fw in [None, Some("1.0")] {
        let ct = idx.match_device(&DeviceQuery {
            vendor: Some("GE Healthcare"),
            model: Some("Revolution CT"),
            firmware: fw,
            os: None,
        });
        assert!(!ct.is_empty() && ct.iter().all(|m| m.confidence == Confidence::Confirmed), "{ct:#?}");
    }
}

#[test]
fn match_carries_score_vector_remediation_and_kev_flag_from_the_feeds() {
    let idx = index();
    let raw: Value =
        serde_json::from_slice(&std::fs::read(feeds_dir().join("icsma/icsma-20-049-01.json")).unwrap()).unwrap();
    // Spacelabs' advisory lists the Windows versions its Xhibit receivers run on.
    let m = idx.match_device(&DeviceQuery {
        vendor: Some("Spacelabs Healthcare"),
        model: Some("Xhibit Telemetry Receiver"),
        firmware: None,
        os: Some("Windows 7 SP1"),
    });
    let bluekeep = m.iter().find(|m| m.cve.as_deref() == Some("CVE-2019-0708")).expect("BlueKeep");
    let rv = &raw["vulnerabilities"][0];
    assert_eq!(&*bluekeep.advisory_id, "ICSMA-20-049-01");
    assert_eq!(bluekeep.cvss_score, rv["scores"][0]["cvss_v3"]["baseScore"].as_f64());
    assert_eq!(bluekeep.cvss_vector.as_deref(), rv["scores"][0]["cvss_v3"]["vectorString"].as_str());
    assert_eq!(bluekeep.kev, crate::kev().contains("CVE-2019-0708"));
    assert!(bluekeep.kev, "BlueKeep is in the KEV catalog");
    assert_eq!(bluekeep.confidence, Confidence::Confirmed, "all versions of Windows 7 are listed");
    let first_fix = rv["remediations"][0]["details"].as_str().unwrap().trim();
    assert!(bluekeep.remediation.contains(first_fix), "{}", bluekeep.remediation);
    assert!(bluekeep.product.contains("Windows 7"), "{}", bluekeep.product);
    // As a risk input: the CVE, score, KEV flag and confidence carry over.
    let input = wardline_intel::risk::VulnMatch::from(bluekeep);
    assert_eq!(input.cve, "CVE-2019-0708");
    assert_eq!(Some(input.cvss_base_score), bluekeep.cvss_score);
    assert!(input.known_exploited);
    assert_eq!(input.confidence, wardline_intel::VulnConfidence::Confirmed);

    // Non-KEV CVEs are flagged false.
    let alaris = idx.match_device(&DeviceQuery {
        vendor: Some("BD"),
        model: Some("Alaris PC Unit Model 8015"),
        firmware: None,
        os: None,
    });
    assert!(!alaris.is_empty());
    for x in &alaris {
        assert_eq!(x.kev, x.cve.as_deref().is_some_and(|c| crate::kev().contains(c)));
    }
}

/// Every product name an advisory gives, used as a device's model under the advisory's
/// vendor name, matches that advisory; the same name under another vendor matches nothing
/// of that advisory.
#[test]
fn real_advisory_product_names_match_their_advisory_only_under_their_vendor() {
    let idx = index();
    let mut checked = 0;
    for a in advisories() {
        for p in &a.products {
            if !ProductPattern::new(&p.vendor, &p.product_name).is_matchable() || p.vendor.is_empty() {
                continue;
            }
            let q = DeviceQuery { vendor: Some(&p.vendor), model: Some(&p.product_name), firmware: None, os: None };
            let affected = a.vulnerabilities.iter().any(|v| v.affected.contains(&p.product_id));
            if affected {
                assert!(ids(&idx.match_device(&q)).contains(&a.id), "{} {} {}", a.id, p.vendor, p.product_name);
                checked += 1;
            }
            let other = DeviceQuery { vendor: Some("Unrelated Devices Ltd."), ..q };
            assert!(idx.match_device(&other).is_empty());
        }
    }
    assert!(checked > 500, "{checked}");
}

/// The KB's vendor ids and names (intel/kb/vendors.toml) reach the advisories' vendor
/// names; IT vendors reach none.
#[test]
fn kb_vendors_map_to_advisory_vendor_names() {
    let kb = KnowledgeBase::builtin().unwrap();
    let csaf: BTreeSet<String> =
        advisories().iter().flat_map(|a| a.products.iter().flat_map(|p| vendor_keys(&p.vendor))).collect();
    let medical_in_feeds = [
        "bd",
        "baxter",
        "bbraun",
        "icu_medical",
        "philips_medical",
        "ge_healthcare",
        "ge",
        "draeger",
        "spacelabs",
        "medtronic",
        "siemens_healthineers",
        "fujifilm_healthcare",
        "carestream",
        "hill_rom",
        "stryker",
        "zoll",
        "fresenius",
        "roche",
        "abbott",
        "respironics",
    ];
    for id in medical_in_feeds {
        let v = kb.vendor(id).unwrap_or_else(|| panic!("KB vendor {id}"));
        for s in [v.id.as_str(), v.name.as_str()] {
            let keys = vendor_keys(s);
            assert!(keys.iter().any(|k| csaf.contains(k)), "KB {s:?} -> {keys:?} reaches no advisory vendor");
        }
    }
    for id in ["cisco", "dell", "hp", "yealink", "axis", "zebra", "johnson_controls", "tridium", "mindray", "sysmex"] {
        let v = kb.vendor(id).unwrap();
        let keys = vendor_keys(&v.name);
        assert!(!keys.iter().any(|k| csaf.contains(k)), "{} -> {keys:?} should reach no advisory vendor", v.name);
    }
    assert!(words("Dräger").contains(&"drager".to_string()));
}

/// The bulk form gives each device exactly what matching it alone gives.
#[test]
fn inventory_matching_equals_matching_each_device() {
    let idx = index();
    let mut inventory = Vec::new();
    for round in 0..3 {
        for p in PROFILES {
            let firmware = [None, Some("9.19"), Some("9.33.1.4")][round];
            inventory.push(DeviceQuery {
                vendor: Some(p.manufacturer),
                model: Some(p.model),
                firmware,
                os: Some(p.os),
            });
        }
    }
    let bulk = idx.match_inventory(&inventory);
    assert_eq!(bulk.len(), inventory.len());
    let mut any = 0;
    for (d, got) in inventory.iter().zip(&bulk) {
        assert_eq!(got, &idx.match_device(d), "{d:?}");
        any += got.len();
    }
    assert!(any > 0);
}

/// The KB's device profiles (vendor id, model family, usual OS) that advisories name, found
/// by reading the advisories; every other profile matches nothing.
const KB_EXPECTED: &[(&str, &[&str])] = &[
    ("baxter_sigma_spectrum", &["ICSMA-20-170-04", "ICSMA-22-251-01"]),
    ("bbraun_spacecom", &["ICSMA-20-296-02"]),
    ("bd_alaris_pcu_8015", &["ICSMA-17-017-02", "ICSMA-20-170-06", "ICSMA-20-317-01"]),
    ("bd_alaris_systems_manager", &["ICSMA-20-317-01"]),
    (
        "bd_pyxis_medstation",
        &["ICSMA-18-114-01", "ICSMA-19-248-01", "ICSMA-20-091-01", "ICSMA-22-062-01", "ICSMA-22-151-01"],
    ),
    ("ge_aisys_cs2", &["ICSMA-19-190-01"]),
    // "CARESCAPE Central Station (CSCS)"; "B450", "B650", "B850".
    ("ge_carescape_central", &["ICSMA-20-023-01"]),
    ("ge_carescape_monitor", &["ICSMA-20-023-01"]),
    // "Revolution CT" in the family "Revolution / LightSpeed / Optima CT".
    ("ge_revolution_ct", &["ICSMA-20-343-01"]),
    // "IntelliVue Patient Monitors MX (MX400-550)"; the MX400-MX850 range needs a number.
    ("philips_intellivue_mx", &["ICSMA-18-156-01"]),
    ("philips_piic_ix", &["ICSMA-18-233-01", "ICSMA-20-254-01", "ICSMA-21-322-02"]),
    // Smiths Medical (now ICU Medical) "Medfusion 4000 Wireless Syringe Infusion Pump".
    ("smiths_medfusion_4000", &["ICSMA-17-250-02A"]),
];

#[test]
fn kb_profiles_match_exactly_the_advisories_that_name_them() {
    let kb = KnowledgeBase::builtin().unwrap();
    for p in kb.profiles.values() {
        let os = p.os.as_deref().and_then(|o| kb.os(o)).map(|o| o.info.name.clone());
        let m = index().match_device(&DeviceQuery {
            vendor: Some(&p.vendor),
            model: Some(&p.model_family),
            firmware: None,
            os: os.as_deref(),
        });
        let expected: BTreeSet<String> = KB_EXPECTED
            .iter()
            .find(|(k, _)| *k == p.id)
            .map(|(_, ids)| ids.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        assert_eq!(ids(&m), expected, "{}: {} {} ({os:?})", p.id, p.vendor, p.model_family);
    }
    for (k, _) in KB_EXPECTED {
        assert!(kb.profiles.contains_key(*k), "KB profile {k} is gone");
    }
}
