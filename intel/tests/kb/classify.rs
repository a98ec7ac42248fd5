//! The classifier on hand-built evidence: each profile is recognised from the evidence a
//! sensor would extract, every attribute is explained, weak evidence never yields a medical
//! class, results are deterministic and stable, and operator overrides win.

use std::fs;
use wardline_common::{Evidence, Field, MacAddr, Proto};
use wardline_intel::{classify, classify_stable, Category, Criticality, DeviceFacts, KnowledgeBase, PortRef};

fn kb() -> KnowledgeBase {
    KnowledgeBase::builtin().expect("builtin KB")
}

fn facts(mac: &str, ev: &[(Field, &str)]) -> DeviceFacts {
    let mac: MacAddr = mac.parse().expect("mac");
    let mut f = DeviceFacts::new(mac);
    f.evidence =
        ev.iter().enumerate().map(|(i, (field, v))| Evidence::new(*field, *v, Proto::Unknown, i as u64)).collect();
    f
}

struct Case {
    name: &'static str,
    facts: DeviceFacts,
    profile: Option<&'static str>,
    class: &'static str,
    category: Category,
}

fn cases() -> Vec<Case> {
    use Field::*;
    let mut alaris = facts("00:d0:75:12:34:56", &[(Hostname, "ALARIS-8015-0042")]);
    alaris.connects_to.push(PortRef::tcp(3613));
    let mut asm = facts("d4:be:d9:00:00:01", &[(Hostname, "ALARIS-SM"), (OsHint, "Windows Server 2008 R2")]);
    asm.listening.push(PortRef::tcp(3613));
    vec![
        Case {
            name: "Alaris PC unit",
            facts: alaris,
            profile: Some("bd_alaris_pcu_8015"),
            class: "infusion_pump",
            category: Category::Medical,
        },
        Case {
            name: "Alaris Systems Manager on a Dell server",
            facts: asm,
            profile: Some("bd_alaris_systems_manager"),
            class: "pump_server",
            category: Category::Medical,
        },
        Case {
            name: "Philips IntelliVue MX450",
            facts: facts(
                "00:09:fb:01:02:03",
                &[(VendorProtocol, "intellivue/udp 24105"), (DhcpVendorClass, "Philips IntelliVue MX450")],
            ),
            profile: Some("philips_intellivue_mx"),
            class: "patient_monitor",
            category: Category::Medical,
        },
        Case {
            name: "Philips PIIC iX",
            facts: facts("00:09:5c:01:02:03", &[(Hl7SendingApp, "PIIC_IX"), (Hl7MessageType, "ORU^R01")]),
            profile: Some("philips_piic_ix"),
            class: "central_station",
            category: Category::Medical,
        },
        Case {
            name: "GE CARESCAPE monitor identified through its HL7 EUI-64 behind a router",
            // The MAC is the router's; the EUI-64 in OBX-18 carries GE's OUI 08:00:19.
            facts: facts("00:1a:a1:00:00:01", &[(Hl7DeviceId, "080019FFFEAABBCC^B40_GE")]),
            profile: Some("ge_carescape_monitor"),
            class: "patient_monitor",
            category: Category::Medical,
        },
        Case {
            name: "Hospira LifeCare PCA",
            facts: facts(
                "00:03:b1:00:00:09",
                &[(TelnetBanner, "LifeCare PCA 3.0"), (DhcpVendorClass, "Hospira LifeCare PCA")],
            ),
            profile: Some("icu_medical_lifecare_pca"),
            class: "pca_pump",
            category: Category::Medical,
        },
        Case {
            name: "GE Revolution CT",
            facts: facts(
                "44:4b:5d:00:00:02",
                &[
                    (DicomCallingAe, "CT_REV01"),
                    (DicomImplClassUid, "1.2.840.113619.6.374"),
                    (DicomImplVersion, "REVOLUTION_CT_1"),
                    (DicomAbstractSyntax, "1.2.840.10008.5.1.4.1.1.2"),
                ],
            ),
            profile: Some("ge_revolution_ct"),
            class: "ct",
            category: Category::Medical,
        },
        Case {
            name: "Siemens MAGNETOM",
            facts: facts(
                "88:4b:39:00:00:03",
                &[
                    (DicomCallingAe, "MR_AERA01"),
                    (DicomImplClassUid, "1.3.12.2.1107.5.2"),
                    (DicomImplVersion, "MR_VE11C"),
                    (DicomAbstractSyntax, "1.2.840.10008.5.1.4.1.1.4"),
                ],
            ),
            profile: Some("siemens_magnetom"),
            class: "mr",
            category: Category::Medical,
        },
        Case {
            name: "SonoSite via DHCP option 60",
            facts: facts("00:08:fb:00:00:04", &[(DhcpVendorClass, "SonoSite MicroMaxx")]),
            profile: Some("sonosite_ultrasound"),
            class: "ultrasound",
            category: Category::Medical,
        },
        Case {
            name: "PACS archive (DCMTK on a Dell)",
            facts: {
                let mut f = facts(
                    "f8:b1:56:00:00:05",
                    &[
                        (DicomCalledAe, "PACS_ARCHIVE"),
                        (DicomImplClassUid, "1.2.276.0.7230010.3.0.3.6.4"),
                        (DicomImplVersion, "OFFIS_DCMTK_364"),
                    ],
                );
                f.listening.push(PortRef::tcp(104));
                f
            },
            profile: None,
            class: "pacs",
            category: Category::Medical,
        },
        Case {
            name: "Dräger Evita ventilator",
            facts: facts("00:30:e6:00:00:06", &[(Hl7SendingApp, "EVITA_V500"), (Hostname, "EVITA-ICU-07")]),
            profile: Some("draeger_evita_v500"),
            class: "ventilator",
            category: Category::Medical,
        },
        Case {
            name: "ZOLL defibrillator uploading to ZOLL Online",
            facts: facts("00:22:52:00:00:07", &[(TlsSni, "casereview.zollonline.com")]),
            profile: Some("zoll_r_series"),
            class: "defibrillator",
            category: Category::Medical,
        },
        Case {
            name: "Sysmex analyzer",
            facts: facts("00:06:6b:00:00:08", &[(Hl7SendingApp, "XN-1000"), (Hostname, "XN1000-LAB1")]),
            profile: Some("sysmex_xn"),
            class: "lab_analyzer",
            category: Category::Medical,
        },
        Case {
            name: "Vocera badge",
            facts: facts("00:09:ef:00:00:0a", &[(VendorProtocol, "vocera/udp 5002")]),
            profile: Some("vocera_badge"),
            class: "mobile",
            category: Category::Iot,
        },
        Case {
            name: "Windows 7 workstation",
            facts: facts(
                "18:66:da:00:00:0b",
                &[
                    (DhcpVendorClass, "MSFT 5.0"),
                    (DhcpParamList, "1,15,3,6,44,46,47,31,33,121,249,43,252"),
                    (NetbiosName, "WS-ADMIN-01"),
                ],
            ),
            profile: None,
            class: "workstation",
            category: Category::It,
        },
        Case {
            name: "HP printer",
            facts: {
                let mut f = facts("3c:d9:2b:00:00:0c", &[(DhcpVendorClass, "Hewlett-Packard JetDirect")]);
                f.listening.push(PortRef::tcp(9100));
                f
            },
            profile: Some("hp_laserjet"),
            class: "printer",
            category: Category::It,
        },
        Case {
            name: "Cisco switch from LLDP",
            facts: facts(
                "00:1a:a1:00:00:0d",
                &[(
                    LldpSystemDescription,
                    "Cisco IOS Software [Bengaluru], Catalyst L3 Switch Software (CAT9K_IOSXE), Version 17.6.4",
                )],
            ),
            profile: Some("cisco_catalyst"),
            class: "network_gear",
            category: Category::It,
        },
        Case {
            name: "JCI Metasys over BACnet",
            facts: facts("00:10:8d:00:00:0e", &[(VendorProtocol, "bacnet/udp 47808 vendor-id 5")]),
            profile: Some("jci_metasys"),
            class: "bms_hvac",
            category: Category::Ot,
        },
        Case {
            name: "Axis camera",
            facts: {
                let mut f = facts("00:40:8c:00:00:0f", &[(Hostname, "axis-accc8e000000")]);
                f.listening.push(PortRef::tcp(554));
                f
            },
            profile: Some("axis_camera"),
            class: "camera",
            category: Category::Iot,
        },
    ]
}

#[test]
fn recognises_each_profile_from_its_evidence() {
    let kb = kb();
    let cases = cases();
    assert!(cases.iter().filter(|c| c.profile.is_some()).count() >= 10);
    for case in &cases {
        let c = classify(&kb, &case.facts);
        assert_eq!(c.class.value, case.class, "{}: class\n{}", case.name, c.explain());
        assert_eq!(c.category.value, case.category, "{}: category\n{}", case.name, c.explain());
        assert_eq!(
            c.profile.as_ref().map(|p| p.value.as_str()),
            case.profile,
            "{}: profile\n{}",
            case.name,
            c.explain()
        );
        assert!(c.class.confidence > 0.0 && c.class.confidence <= 1.0, "{}", case.name);
        assert!(!c.class.evidence.is_empty(), "{}: class without evidence", case.name);
        for b in &c.class.evidence {
            assert!(b.weight > 0.0 && !b.rule.is_empty() && !b.field.is_empty(), "{}: {b:?}", case.name);
        }
    }
}

#[test]
fn attributes_carry_their_evidence() {
    let kb = kb();
    let mut f = facts("00:d0:75:12:34:56", &[(Field::Hostname, "ALARIS-8015-0042")]);
    f.connects_to.push(PortRef::tcp(3613));
    let c = classify(&kb, &f);
    let vendor = c.vendor.as_ref().expect("vendor");
    assert!(vendor.value.contains("BD"), "{}", vendor.value);
    assert!(
        vendor.evidence.iter().any(|b| b.rule == "oui:bd" && b.value == "ALARIS MEDICAL SYSTEMS, INC."),
        "{:?}",
        vendor.evidence
    );
    assert_eq!(c.model.as_ref().map(|m| m.value.as_str()), Some("Alaris PC unit 8015"));
    assert_eq!(c.criticality.value, Criticality::LifeSustaining);
    assert!(c.clinical_function.as_ref().is_some_and(|f| f.value.contains("IV")));
    assert!(c.medical_vendor);
    let ev = &c.class.evidence;
    assert!(
        ev.iter().any(|b| b.field == "connects_to" && b.value == "tcp/3613" && (b.weight - 0.7).abs() < 1e-9),
        "{ev:?}"
    );
    assert!(ev.iter().any(|b| b.field == "hostname" && b.value == "ALARIS-8015-0042"), "{ev:?}");
    // Noisy-OR of 0.35 (OUI), 0.7 (port) and 0.45 (hostname).
    let expected = 1.0 - (0.65 * 0.3 * 0.55);
    assert!((c.class.confidence - expected).abs() < 1e-3, "{}", c.class.confidence);
    let text = c.explain();
    assert!(text.contains("class: infusion_pump") && text.contains("via rule"), "{text}");
}

#[test]
fn os_and_version_with_end_of_support() {
    let kb = kb();
    let c = classify(
        &kb,
        &facts(
            "18:66:da:00:00:0b",
            &[(Field::DhcpVendorClass, "MSFT 5.0"), (Field::DhcpParamList, "1,15,3,6,44,46,47,31,33,121,249,43,252")],
        ),
    );
    assert_eq!(c.os.as_ref().map(|o| o.value.as_str()), Some("windows_7"));
    let info = c.os_info.expect("os info");
    assert_eq!(info.version.as_deref(), Some("6.1"));
    assert!(info.unsupported_on("2026-11-28"));
}

#[test]
fn weak_or_no_evidence_is_never_medical() {
    let kb = kb();
    // Nothing at all: a randomised MAC.
    let c = classify(&kb, &facts("da:a1:19:00:00:01", &[]));
    assert_eq!(c.class.value, "unknown_it");
    assert_eq!(c.category.value, Category::It);
    assert!(c.class.confidence < 0.3);
    // An IT vendor with some traffic: IT, not medical.
    let c = classify(
        &kb,
        &facts("3c:22:fb:00:00:01", &[(Field::DnsQuery, "www.apple.com"), (Field::MdnsName, "Johns-iPhone.local")]),
    );
    assert_ne!(c.category.value, Category::Medical);
    assert_ne!(c.criticality.value, Criticality::LifeSustaining);
    // A hostname that looks like a pump on a laptop: below the medical threshold.
    let c = classify(&kb, &facts("18:66:da:00:00:02", &[(Field::Hostname, "alaris-8015-test")]));
    assert_ne!(c.category.value, Category::Medical, "{}", c.explain());
    // An OS alone gives an IT class.
    let c = classify(&kb, &facts("00:50:56:00:00:01", &[(Field::OsHint, "Windows Server 2016")]));
    assert_eq!(c.class.value, "server");
    assert_eq!(c.os.as_ref().map(|o| o.value.as_str()), Some("windows_server_2016"));
}

#[test]
fn medical_vendor_alone_gives_unknown_medical_not_a_therapy_class() {
    let kb = kb();
    let c = classify(&kb, &facts("00:d0:75:00:00:99", &[]));
    assert_eq!(c.class.value, "unknown_medical", "{}", c.explain());
    assert_eq!(c.category.value, Category::Medical);
    assert_ne!(c.criticality.value, Criticality::LifeSustaining);
    assert!(c.class.confidence < 0.5);
}

#[test]
fn deterministic_whatever_the_evidence_order() {
    let kb = kb();
    for case in cases() {
        let a = classify(&kb, &case.facts);
        let mut reversed = case.facts.clone();
        reversed.evidence.reverse();
        reversed.evidence.extend(case.facts.evidence.iter().cloned()); // duplicates too
        let b = classify(&kb, &reversed);
        assert_eq!(a, b, "{}", case.name);
    }
}

#[test]
fn one_new_clue_does_not_flip_the_class() {
    let kb = kb();
    // A pump is established from its OUI and its protocol (0.35, 0.7 -> 0.805)...
    let mut f = facts("00:d0:75:12:34:56", &[]);
    f.connects_to.push(PortRef::tcp(3613));
    let first = classify(&kb, &f);
    assert_eq!(first.class.value, "infusion_pump");
    assert!((first.class.confidence - 0.805).abs() < 1e-9, "{}", first.class.confidence);
    // ...then packets suggest a monitor (0.8, 0.75 -> 0.95): ahead, but by less than the margin.
    let mut g = f.clone();
    g.evidence.push(Evidence::new(Field::VendorProtocol, "intellivue/udp 24105", Proto::IntellivueDataExport, 99));
    g.listening.push(PortRef::udp(24105));
    let fresh = classify(&kb, &g);
    assert_eq!(fresh.class.value, "patient_monitor", "without history the higher score wins");
    let stable = classify_stable(&kb, Some(&first), &g);
    assert_eq!(stable.class.value, "infusion_pump", "hysteresis keeps the class\n{}", stable.explain());
    assert_eq!(stable.profile.as_ref().map(|p| p.value.as_str()), Some("bd_alaris_pcu_8015"));
    // Applying the same facts again is a fixed point.
    assert_eq!(classify_stable(&kb, Some(&stable), &g), stable);
    // Evidence that beats the old class by more than the margin moves it (0.9925 vs 0.805).
    let mut h = g.clone();
    h.evidence.push(Evidence::new(Field::DhcpVendorClass, "Philips IntelliVue MX450", Proto::Dhcp, 101));
    let moved = classify_stable(&kb, Some(&stable), &h);
    assert_eq!(moved.class.value, "patient_monitor", "{}", moved.explain());
    // A previous class that lost all support is dropped at once.
    let other = facts("00:11:22:00:00:01", &[(Field::LldpSystemDescription, "Cisco IOS Software, Catalyst")]);
    let mut prev_for_other = first.clone();
    prev_for_other.mac = other.mac;
    assert_eq!(classify_stable(&kb, Some(&prev_for_other), &other).class.value, "network_gear");
}

#[test]
fn operator_override_wins_and_survives_reload() {
    let dir = tempfile::tempdir().expect("tmp");
    fs::write(
        dir.path().join("overrides.toml"),
        "[[override]]\nmac = \"00:d0:75:12:34:56\"\nclass = \"lab_analyzer\"\nmodel = \"Bench test rig\"\nnote = \"biomed confirmed: test rig, not a patient pump\"\nby = \"biomed\"\n",
    )
    .expect("write");
    let mut f = facts("00:d0:75:12:34:56", &[(Field::Hostname, "ALARIS-8015-0042")]);
    f.connects_to.push(PortRef::tcp(3613));
    // "Restart": a fresh load of the same directory applies the same override.
    for _ in 0..2 {
        let kb = KnowledgeBase::load(&[dir.path().to_path_buf()]).expect("load");
        let before = classify(&KnowledgeBase::builtin().expect("kb"), &f);
        assert_eq!(before.class.value, "infusion_pump");
        let c = classify_stable(&kb, Some(&before), &f);
        assert_eq!(c.class.value, "lab_analyzer");
        assert_eq!(c.class.confidence, 1.0);
        assert_eq!(c.category.value, Category::Medical);
        assert_eq!(c.criticality.value, Criticality::ClinicalSupport);
        assert_eq!(c.model.as_ref().map(|m| m.value.as_str()), Some("Bench test rig"));
        assert!(c.profile.is_none(), "the pump profile no longer applies");
        assert!(c.overridden.as_deref().is_some_and(|o| o.contains("overrides.toml:2")), "{:?}", c.overridden);
        assert!(c.class.evidence[0].value.contains("biomed confirmed"));
        // Even overwhelming evidence does not beat the override.
        let mut more = f.clone();
        more.evidence.push(Evidence::new(Field::DhcpVendorClass, "CareFusion Alaris PCU 8015", Proto::Dhcp, 5));
        assert_eq!(classify_stable(&kb, Some(&c), &more).class.value, "lab_analyzer");
    }
}

#[test]
fn override_to_a_profile_sets_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    fs::write(
        dir.path().join("o.toml"),
        "[[override]]\nmac = \"02:00:00:00:00:01\"\nprofile = \"baxter_sigma_spectrum\"\n",
    )
    .expect("write");
    let kb = KnowledgeBase::load(&[dir.path().to_path_buf()]).expect("load");
    let c = classify(&kb, &facts("02:00:00:00:00:01", &[]));
    assert_eq!(c.class.value, "infusion_pump");
    assert_eq!(c.profile.as_ref().map(|p| p.value.as_str()), Some("baxter_sigma_spectrum"));
    assert_eq!(c.vendor.as_ref().map(|v| v.value.as_str()), Some("Baxter"));
    assert_eq!(c.criticality.value, Criticality::LifeSustaining);
    assert_eq!(c.os.as_ref().map(|o| o.value.as_str()), Some("embedded_rtos"));
}

#[test]
fn override_added_to_a_site_file_applies_after_reload() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("overrides.toml");
    let site = || vec![dir.path().to_path_buf()];
    let cabinet = facts("18:66:da:00:00:0b", &[(Field::DhcpVendorClass, "MSFT 5.0")]);
    fs::write(&file, "# site overrides\n").expect("write");
    let before = KnowledgeBase::load(&site()).expect("load");
    assert_ne!(classify(&before, &cabinet).class.value, "medication_cabinet");

    // An entry naming an unknown class refuses the directory and points at the line.
    fs::write(&file, "# site overrides\n\n[[override]]\nmac = \"18:66:da:00:00:0c\"\nclass = \"no_such_class\"\n")
        .expect("write");
    let err = KnowledgeBase::load(&site()).expect_err("unknown class");
    assert_eq!((err.key.as_str(), err.line), ("class", 5), "{err}");

    fs::write(
        &file,
        "# site overrides\n\n[[override]]\nmac = \"18:66:da:00:00:0b\"\nclass = \"medication_cabinet\"\nnote = \"Omnicell cabinet on a Dell PC\"\n",
    )
    .expect("write");
    let kb = KnowledgeBase::load(&site()).expect("reload");
    let c = classify(&kb, &cabinet);
    assert_eq!(c.class.value, "medication_cabinet");
    assert_eq!(c.category.value, Category::Medical);
    assert!(c.overridden.as_deref().is_some_and(|o| o.contains("overrides.toml:4")), "{:?}", c.overridden);
}
