//! Knowledge-base classification on the real captures in ../shared/pcaps: every
//! device gets a class and a category, and no device outside the medical captures (dicom/,
//! hl7/) comes out medical or life-sustaining. Override the capture folder with
//! WARDLINE_PCAPS.

use std::collections::BTreeMap;
use wardline_common::{Event, MacAddr};
use wardline_intel::{classify, DeviceFacts, KnowledgeBase};
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};

use crate::corpus::pcaps_dir;

/// Device facts from one capture; `None` when the file cannot be read to the end (some
/// captures are deliberately truncated or exotic; the capture tests cover those).
fn facts_of(path: &std::path::Path) -> Option<BTreeMap<MacAddr, DeviceFacts>> {
    let mut reader = FileReader::open(path).ok()?;
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    let mut events = Vec::new();
    loop {
        match reader.next_packet() {
            Ok(Some(pkt)) => pipeline.process(&pkt),
            Ok(None) => break,
            Err(_) => break,
        }
    }
    let (rest, _) = pipeline.finish();
    events.extend(rest);
    let mut facts: BTreeMap<MacAddr, DeviceFacts> = BTreeMap::new();
    for e in events {
        if let Event::Device(d) = e {
            facts.entry(d.mac).or_insert_with(|| DeviceFacts::new(d.mac)).evidence.extend(d.evidence);
        }
    }
    Some(facts)
}

/// Medical devices in captures outside dicom/ and hl7/, as MANIFEST.tsv describes them.
const KNOWN_MEDICAL: &[(&str, &str)] = &[
    // "udhcpc 00:d0:75:12:04:12 (Alaris) ... 'CareFusion Alaris PCU'"
    ("dhcp/lab-dhcp-dnsmasq-3clients.pcap", "00:d0:75:12:04:12"),
    // "dhclient 00:09:fb:3e:bd:12 (Philips) MX450-ICU3-BED12 'Philips IntelliVue MX450'"
    ("dhcp/lab-dhcp-dnsmasq-3clients.pcap", "00:09:fb:3e:bd:12"),
    // "dhcpcd 44:4b:5d:4b:65:03 (GE) B650-ICU4-BED03 'GE CARESCAPE B650'"
    ("dhcp/lab-dhcp-dnsmasq-3clients.pcap", "44:4b:5d:4b:65:03"),
    // "monitoring gateway 10.77.0.100:22 (Philips 00:09:fb)"
    ("mgmt/lab-mgmt-ssh-dropbear.pcap", "00:09:fb:6a:1c:a0"),
    ("mgmt/lab-mgmt-ftp-vsftpd.pcap", "00:09:fb:6a:1c:a0"),
    // "pump gateway 10.77.0.103:23 (Baxter 58:42:e4)"
    ("mgmt/lab-mgmt-telnet-login.pcap", "58:42:e4:10:33:a3"),
];

#[test]
fn real_captures_every_device_classified_and_it_never_medical() {
    let dir = pcaps_dir();
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap_or_else(|e| {
        panic!("cannot read {}/MANIFEST.tsv ({e}); set WARDLINE_PCAPS to the shared pcaps folder", dir.display())
    });
    let kb = KnowledgeBase::builtin().expect("builtin KB");
    let (mut devices, mut with_evidence, mut files) = (0usize, 0usize, 0usize);
    let mut classes: BTreeMap<String, usize> = BTreeMap::new();
    for line in manifest.lines().skip(1) {
        let Some(rel) = line.split('\t').next().filter(|r| !r.is_empty()) else { continue };
        let Some(facts) = facts_of(&dir.join(rel)) else { continue };
        files += 1;
        let medical_capture = rel.starts_with("dicom/") || rel.starts_with("hl7/");
        for f in facts.values() {
            let c = classify(&kb, f);
            devices += 1;
            *classes.entry(c.class.value.clone()).or_default() += 1;
            assert!(!c.class.value.is_empty() && kb.class(&c.class.value).is_some(), "{rel} {}: no class", f.mac);
            let explained = !c.class.evidence.is_empty() || c.vendor.as_ref().is_some_and(|v| !v.evidence.is_empty());
            if !f.evidence.is_empty() || wardline_intel::oui::lookup(&f.mac).is_some() {
                assert!(
                    explained || c.class.value == "unknown_it",
                    "{rel} {}: evidence but no explanation\n{}",
                    f.mac,
                    c.explain()
                );
            }
            with_evidence += explained as usize;
            let known_medical = KNOWN_MEDICAL.iter().any(|(file, mac)| *file == rel && *mac == f.mac.to_string());
            if known_medical {
                assert_eq!(
                    c.category.value.as_str(),
                    "medical",
                    "{rel} {}: medical device missed\n{}",
                    f.mac,
                    c.explain()
                );
            } else if !medical_capture {
                assert_ne!(
                    c.category.value.as_str(),
                    "medical",
                    "{rel} {}: IT/IoT device labelled medical\n{}",
                    f.mac,
                    c.explain()
                );
                assert_ne!(c.criticality.value.as_str(), "life_sustaining", "{rel} {}", f.mac);
            }
        }
    }
    println!("{files} captures, {devices} devices, {with_evidence} with explained attributes");
    for (class, n) in &classes {
        println!("{class:<22} {n}");
    }
    assert!(files > 50 && devices > 50, "too few captures read: {files} files, {devices} devices");
}
