//! Knowledge-base classification accuracy on a generated hospital: the sensor
//! pipeline reads the capture, every device is classified with the builtin knowledge base,
//! and class/category are compared with the generator's ground truth. Prints a per-class
//! table; fails below 95 % class accuracy or 99 % category accuracy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use wardline_common::{Event, Evidence, MacAddr, Proto};
use wardline_intel::{classify, Classification, DeviceFacts, KnowledgeBase, PortRef, Transport};
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};
use wardline_sim::{generate, GenerateOptions, GroundTruth, Scenario};

/// Everything the pipeline reported about each MAC, as classifier input.
fn facts_from_capture(path: &Path) -> BTreeMap<MacAddr, DeviceFacts> {
    let mut reader = FileReader::open(path).expect("open generated capture");
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    let mut events: Vec<Event> = Vec::new();
    let mut next_drain = 0u64;
    while let Some(pkt) = reader.next_packet().expect("read generated capture") {
        let ts = pkt.ts_us;
        pipeline.process(&pkt);
        if ts >= next_drain {
            next_drain = ts + 10_000_000;
            events.extend(pipeline.drain_events(ts));
        }
    }
    let (rest, _stats) = pipeline.finish();
    events.extend(rest);

    let mut facts: BTreeMap<MacAddr, DeviceFacts> = BTreeMap::new();
    let mut ips_of: BTreeMap<MacAddr, std::collections::BTreeSet<std::net::IpAddr>> = BTreeMap::new();
    for e in &events {
        if let Event::Device(d) = e {
            let f = facts.entry(d.mac).or_insert_with(|| DeviceFacts::new(d.mac));
            f.evidence.extend(d.evidence.iter().cloned());
            ips_of.entry(d.mac).or_default().extend(d.ips.iter().copied());
        }
    }
    // A router's MAC carries every routed address; an address belongs to the MAC that
    // uses the fewest addresses.
    let mut by_ip: HashMap<std::net::IpAddr, MacAddr> = HashMap::new();
    for (mac, ips) in &ips_of {
        for ip in ips {
            let better = match by_ip.get(ip) {
                None => true,
                Some(other) => ips_of.get(other).map_or(0, |s| s.len()) > ips.len(),
            };
            if better {
                by_ip.insert(*ip, *mac);
            }
        }
    }
    // Ports: who listened and who connected, attributed by address so routed peers (seen
    // behind the router's MAC) still count for the right device.
    for e in &events {
        if let Event::Flow(fl) = e {
            let Some(t) = Transport::from_ip_proto(fl.ip_proto) else { continue };
            let (client_ip, server_ip, port) = if fl.a_port < 1024 && fl.b_port >= 1024 {
                (fl.b_ip, fl.a_ip, fl.a_port)
            } else {
                (fl.a_ip, fl.b_ip, fl.b_port)
            };
            let p = PortRef { transport: t, port };
            if let Some(f) = by_ip.get(&client_ip).and_then(|m| facts.get_mut(m)) {
                f.connects_to.push(p);
            }
            if fl.packets_ba > 0 {
                if let Some(f) = by_ip.get(&server_ip).and_then(|m| facts.get_mut(m)) {
                    f.listening.push(p);
                }
            }
        }
    }
    for f in facts.values_mut() {
        f.connects_to.sort();
        f.connects_to.dedup();
        f.listening.sort();
        f.listening.dedup();
    }
    facts
}

/// Classifies every ground-truth device with `facts_of` and prints the per-class table;
/// returns (class accuracy, category accuracy, distinct generator profiles).
fn score(label: &str, truth: &GroundTruth, facts_of: impl Fn(&MacAddr) -> DeviceFacts) -> (f64, f64, usize) {
    let kb = KnowledgeBase::builtin().expect("builtin KB");
    // class -> (devices, class correct, category correct)
    let mut per_class: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    let profiles: BTreeSet<&str> = truth.devices.iter().map(|d| d.profile.as_str()).collect();
    for dev in &truth.devices {
        let c: Classification = classify(&kb, &facts_of(&dev.mac));
        let row = per_class.entry(dev.class.clone()).or_default();
        row.0 += 1;
        let class_ok = c.class.value == dev.class;
        let cat_ok = c.category.value.as_str() == dev.category;
        row.1 += class_ok as u32;
        row.2 += cat_ok as u32;
        if !class_ok || !cat_ok {
            misses.push(format!(
                "{} {} ({}): expected {}/{}, got {}/{} ({:.2})",
                dev.mac,
                dev.profile,
                dev.model,
                dev.class,
                dev.category,
                c.class.value,
                c.category.value,
                c.class.confidence
            ));
        }
        // Nothing that is not medical may come out medical or life-sustaining.
        if dev.category != "medical" {
            assert_ne!(
                c.category.value.as_str(),
                "medical",
                "{label}: {} ({}) labelled medical\n{}",
                dev.mac,
                dev.profile,
                c.explain()
            );
            assert_ne!(c.criticality.value.as_str(), "life_sustaining", "{label}: {} ({})", dev.mac, dev.profile);
        }
        // Every class except the last-resort one is explained by evidence.
        assert!(
            c.class.value == "unknown_it" || !c.class.evidence.is_empty(),
            "{label}: {}: class without evidence",
            dev.mac
        );
    }
    let (n, class_ok, cat_ok) = per_class.values().fold((0, 0, 0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
    println!("== {label}: {n} devices, {} generator profiles, {} classes", profiles.len(), per_class.len());
    println!("{:<22} {:>7} {:>9} {:>11}", "class", "devices", "class %", "category %");
    for (class, (d, c, k)) in &per_class {
        println!(
            "{:<22} {:>7} {:>8.1}% {:>10.1}%",
            class,
            d,
            100.0 * *c as f64 / *d as f64,
            100.0 * *k as f64 / *d as f64
        );
    }
    let class_acc = class_ok as f64 / n.max(1) as f64;
    let cat_acc = cat_ok as f64 / n.max(1) as f64;
    println!("{:<22} {:>7} {:>8.1}% {:>10.1}%", "TOTAL", n, 100.0 * class_acc, 100.0 * cat_acc);
    for m in &misses {
        println!("MISS {m}");
    }
    (class_acc, cat_acc, profiles.len())
}

fn hospital() -> (tempfile::TempDir, std::path::PathBuf, GroundTruth) {
    let dir = tempfile::tempdir().expect("tmp");
    let pcap = dir.path().join("hospital.pcap");
    let truth = generate(&GenerateOptions::new(Scenario::Hospital), &pcap).expect("generate hospital capture");
    (dir, pcap, truth)
}

fn check(label: &str, (class_acc, cat_acc, profiles): (f64, f64, usize)) {
    assert!(profiles >= 25, "{label}: the hospital scenario should hold at least 25 profiles, has {profiles}");
    assert!(class_acc >= 0.95, "{label}: class accuracy {:.1}% < 95%", 100.0 * class_acc);
    assert!(cat_acc >= 0.99, "{label}: category accuracy {:.1}% < 99%", 100.0 * cat_acc);
}

/// The knowledge base alone: each device's evidence as the generator says a perfect sensor
/// would extract it, plus the ports it served and used according to the truth flows.
#[test]
fn kb_accuracy_on_ground_truth_evidence() {
    let (_dir, _pcap, truth) = hospital();
    let mut mac_of: HashMap<std::net::IpAddr, MacAddr> = HashMap::new();
    for d in &truth.devices {
        for ip in &d.ips {
            mac_of.insert(std::net::IpAddr::V4(*ip), d.mac);
        }
    }
    let mut facts: BTreeMap<MacAddr, DeviceFacts> = BTreeMap::new();
    for d in &truth.devices {
        let mut f = DeviceFacts::new(d.mac);
        f.evidence = d.evidence.iter().map(|e| Evidence::new(e.field, e.value.clone(), Proto::Unknown, 0)).collect();
        facts.insert(d.mac, f);
    }
    for fl in &truth.flows {
        let Some(t) = Transport::from_ip_proto(fl.ip_proto) else { continue };
        let p = PortRef { transport: t, port: fl.b_port };
        if let Some(f) = mac_of.get(&std::net::IpAddr::V4(fl.a_ip)).and_then(|m| facts.get_mut(m)) {
            f.connects_to.push(p);
        }
        if fl.packets_ba > 0 {
            if let Some(f) = mac_of.get(&std::net::IpAddr::V4(fl.b_ip)).and_then(|m| facts.get_mut(m)) {
                f.listening.push(p);
            }
        }
    }
    let result =
        score("ground-truth evidence", &truth, |m| facts.get(m).cloned().unwrap_or_else(|| DeviceFacts::new(*m)));
    check("ground-truth evidence", result);
}

/// End to end: the sensor pipeline's own evidence from the generated capture.
#[test]
fn pipeline_accuracy_on_generated_capture() {
    let (_dir, pcap, truth) = hospital();
    let facts = facts_from_capture(&pcap);
    let result = score("sensor pipeline", &truth, |m| facts.get(m).cloned().unwrap_or_else(|| DeviceFacts::new(*m)));
    check("sensor pipeline", result);
}
