//! Loading the knowledge base: builtin data is valid and complete, site directories add and
//! override entries by id, and a bad file's error names the file, the line and the key.

use std::fs;
use std::path::PathBuf;
use wardline_intel::{Category, Criticality, KnowledgeBase};

fn site_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        fs::write(dir.path().join(name), text).expect("write site file");
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

fn load_err(text: &str) -> wardline_intel::KbError {
    let (_d, path) = site_dir(&[("site.toml", text)]);
    KnowledgeBase::load(&[path]).expect_err("the file is bad")
}

#[test]
fn builtin_knowledge_is_valid_and_rich() {
    let kb = KnowledgeBase::builtin().expect("builtin KB loads");
    assert!(kb.profiles.len() >= 40, "{} profiles", kb.profiles.len());
    assert!(kb.classes.len() >= 30);
    let medical_vendors = kb.vendors.values().filter(|v| v.medical).count();
    assert!(medical_vendors >= 25, "{medical_vendors} medical vendors");
    // Every class the issue lists exists.
    for class in [
        "infusion_pump",
        "pca_pump",
        "patient_monitor",
        "central_station",
        "telemetry",
        "ventilator",
        "anesthesia_machine",
        "defibrillator",
        "ct",
        "mr",
        "xray",
        "ultrasound",
        "nuclear_medicine",
        "pacs",
        "modality_worklist",
        "lab_analyzer",
        "blood_gas",
        "medication_cabinet",
        "nurse_call",
        "rtls",
        "badge_reader",
        "camera",
        "bms_hvac",
        "printer",
        "voip_phone",
        "thin_client",
        "workstation",
        "server",
        "network_gear",
        "mobile",
        "unknown_it",
        "unknown_medical",
    ] {
        assert!(kb.class(class).is_some(), "class {class} missing");
    }
    let pump = kb.profile("bd_alaris_pcu_8015").expect("Alaris profile");
    assert_eq!(pump.class, "infusion_pump");
    assert_eq!(pump.category, Category::Medical, "inherited from the class");
    assert_eq!(pump.criticality, Criticality::LifeSustaining);
    assert!(pump.comms.iter().any(|c| c.ports == vec![3613]));
    // Profiles that set their own criticality keep it.
    assert_eq!(kb.profile("philips_intellivue_mx").map(|p| p.criticality), Some(Criticality::LifeSustaining));
    // OS end-of-support dates from kb-sources.
    assert_eq!(kb.os("windows_xp").and_then(|o| o.info.end_of_support.clone()).as_deref(), Some("2014-04-08"));
    assert_eq!(kb.os("windows_server_2016").and_then(|o| o.info.end_of_support.clone()).as_deref(), Some("2027-01-12"));
    assert!(kb.os("windows_7").is_some_and(|o| o.unsupported_on("2026-01-01")));
    assert!(!kb.os("windows_server_2016").is_some_and(|o| o.unsupported_on("2026-01-01")));
    // Vendor look-up: explicit OUI and organisation pattern.
    let mac = |s: &str| s.parse().expect("mac");
    assert_eq!(kb.vendor_for_mac(&mac("00:d0:75:01:02:03")).map(|v| v.id.as_str()), Some("bd"));
    assert!(kb.vendor_for_mac(&mac("00:d0:75:01:02:03")).is_some_and(|v| v.medical));
    assert_eq!(kb.vendor_for_mac(&mac("00:00:0c:01:02:03")).map(|v| v.id.as_str()), Some("cisco"));
    assert!(kb.vendor_for_mac(&mac("00:00:0c:01:02:03")).is_some_and(|v| !v.medical));
    assert_eq!(kb.vendor_for_oui([0x08, 0x00, 0x19]).map(|v| v.id.as_str()), Some("ge"));
}

#[test]
fn site_files_add_and_override_by_id() {
    let (_d, path) = site_dir(&[
        (
            "10-local.toml",
            r#"
[[class]]
id = "infusion_pump"
name = "Infusion pump (site wording)"
category = "medical"
criticality = "patient_critical"

[[vendor]]
id = "acme_med"
name = "ACME Medical"
medical = true
ouis = ["AC:DE:48"]

[[profile]]
id = "acme_pump"
vendor = "acme_med"
model_family = "ACME P1"
class = "infusion_pump"
rule = [ { field = "hostname", prefix = "acme-p1", weight = 0.8 } ]

[[remove]]
profile = "zoll_r_series"
"#,
        ),
        // Loaded after 10-local.toml: overrides its profile again.
        ("20-later.toml", "[[profile]]\nid = \"acme_pump\"\nvendor = \"acme_med\"\nmodel_family = \"ACME P2\"\nclass = \"pca_pump\"\nrule = [ { field = \"hostname\", prefix = \"acme-p2\", weight = 0.8 } ]\n"),
        ("notes.txt", "not toml, ignored"),
    ]);
    let kb = KnowledgeBase::load(&[path]).expect("site KB loads");
    assert_eq!(kb.class("infusion_pump").map(|c| c.criticality), Some(Criticality::PatientCritical));
    assert_eq!(kb.profile("acme_pump").map(|p| p.model_family.as_str()), Some("ACME P2"));
    assert_eq!(kb.profile("acme_pump").map(|p| p.class.as_str()), Some("pca_pump"));
    assert!(kb.profile("zoll_r_series").is_none(), "disabled by the site");
    assert!(kb.profile("bd_alaris_pcu_8015").is_some(), "builtin entries stay");
    assert_eq!(kb.vendor_for_mac(&"ac:de:48:00:11:22".parse().expect("mac")).map(|v| v.id.as_str()), Some("acme_med"));
    assert_eq!(kb.files.len(), 11, "9 builtin files + 2 site files: {:?}", kb.files);
}

#[test]
fn syntax_error_names_file_line_and_key() {
    let e = load_err("[[rule]]\nid = \"x\"\nfield = \"hostname\"\nweight = 0.5 0.6\n");
    assert!(e.file.ends_with("site.toml"), "{e}");
    assert_eq!(e.line, 4, "{e}");
    assert_eq!(e.key, "weight", "{e}");
}

#[test]
fn misspelt_key_is_an_error_not_ignored() {
    let e = load_err("[[rule]]\nid = \"x\"\nfield = \"hostname\"\nexact = \"a\"\nwieght = 0.5\nclass = \"printer\"\n");
    assert!(e.message.contains("wieght"), "{e}");
    assert!(e.line >= 1 && e.line <= 5, "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let e = load_err("[[rule]]\nid = \"x\"\nfield = \"hostnme\"\nexact = \"a\"\nweight = 0.5\nclass = \"printer\"\n");
    assert_eq!((e.line, e.key.as_str()), (3, "field"), "{e}");
    assert!(e.message.contains("hostnme"), "{e}");

    let e = load_err(
        "[[rule]]\nid = \"x\"\nfield = \"hostname\"\nregex = \"(unclosed\"\nweight = 0.5\nclass = \"printer\"\n",
    );
    assert_eq!((e.line, e.key.as_str()), (4, "regex"), "{e}");
    assert!(e.message.contains("regex"), "{e}");

    let e = load_err("[[rule]]\nid = \"x\"\nfield = \"hostname\"\nexact = \"a\"\nweight = 1.5\nclass = \"printer\"\n");
    assert_eq!((e.line, e.key.as_str()), (5, "weight"), "{e}");

    let e = load_err("[[class]]\nid = \"x\"\nname = \"X\"\ncategory = \"medicall\"\ncriticality = \"non_clinical\"\n");
    assert_eq!((e.line, e.key.as_str()), (4, "category"), "{e}");

    let e = load_err("[[os]]\nid = \"x\"\nname = \"X\"\nfamily = \"y\"\nend_of_support = \"31/12/2020\"\n");
    assert_eq!((e.line, e.key.as_str()), (5, "end_of_support"), "{e}");

    let e = load_err("[[vendor]]\nid = \"v\"\nname = \"V\"\nouis = [\"00:11\"]\n");
    assert_eq!((e.line, e.key.as_str()), (4, "ouis"), "{e}");
}

#[test]
fn dangling_reference_names_file_line_and_key() {
    let e = load_err("# a comment\n[[profile]]\nid = \"p\"\nvendor = \"bd\"\nmodel_family = \"M\"\nclass = \"infusion_pumpp\"\nrule = [ { field = \"hostname\", exact = \"a\", weight = 0.5 } ]\n");
    assert!(e.file.ends_with("site.toml"), "{e}");
    assert_eq!((e.line, e.key.as_str()), (6, "class"), "{e}");
    assert!(e.message.contains("infusion_pumpp"), "{e}");
    assert!(e.to_string().contains("site.toml, line 6, key `class`"), "{e}");

    let e = load_err("[[override]]\nmac = \"00:11:22:33:44:55\"\nclass = \"nonexistent\"\n");
    assert_eq!((e.line, e.key.as_str()), (3, "class"), "{e}");

    let e = load_err("[[override]]\nmac = \"00:11:22:33:44\"\nclass = \"printer\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "mac"), "{e}");
}

#[test]
fn missing_directory_is_a_clear_error() {
    let e = KnowledgeBase::load(&[PathBuf::from("/nonexistent/wardline-kb")]).expect_err("no such dir");
    assert!(e.file.contains("/nonexistent/wardline-kb"), "{e}");
    assert!(e.message.contains("cannot read"), "{e}");
}

#[test]
fn shared_builtin_is_parsed_once() {
    let a = KnowledgeBase::shared_builtin().expect("builtin");
    let b = KnowledgeBase::shared_builtin().expect("builtin");
    assert!(std::ptr::eq(a, b));
    assert_eq!(a.profiles.len(), KnowledgeBase::builtin().expect("builtin").profiles.len());
}
