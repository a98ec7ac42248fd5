//! Knowledge-base classification accuracy on a generated hospital: the sensor pipeline
//! reads every capture of the run (the core one and each routed site's access-layer one),
//! each configured as its sensor would be from the truth's networks (its native sites'
//! networks local, its routed sites' networks remote). Each truth device is classified with
//! the builtin knowledge base over what the records that are its own say (the MAC devices of
//! any of its MACs, and the hosts of its site at its addresses where a capture sees it only
//! routed), as one merged record would, and class/category are compared with the truth.
//! Prints a per-class table; fails below 95 % class accuracy or 99 % category accuracy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use wardline_common::{Event, Evidence, MacAddr, Proto};
use wardline_intel::{classify, Classification, DeviceFacts, KnowledgeBase, PortRef, Transport};
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::devices::{IpNet, RemoteSite};
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};
use wardline_sim::{generate, GenerateOptions, GroundTruth, Scenario, TruthCapture, TruthDevice};

/// A record the pipeline reports: a device by MAC, or a host by (remote site or None for
/// the capture's own site, address).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Record {
    Mac(MacAddr),
    Host(Option<String>, IpAddr),
}

/// The configuration of the sensor behind `capture`, from the truth's networks: its native
/// sites' networks are local, its routed sites' networks remote.
pub fn sensor_config(truth: &GroundTruth, capture: &TruthCapture) -> PipelineConfig {
    let nets_of = |site: &str| -> Vec<IpNet> {
        truth.networks.iter().filter(|n| n.site == site).map(|n| n.cidr.parse().expect("truth cidr")).collect()
    };
    let mut cfg = PipelineConfig::default();
    cfg.devices.local_networks = capture.native_sites.iter().flat_map(|s| nets_of(s)).collect();
    cfg.devices.remote_sites =
        capture.routed_sites.iter().map(|r| RemoteSite { site: r.site.clone(), networks: nets_of(&r.site) }).collect();
    cfg
}

/// Every event the pipeline reports over one capture.
pub fn run_capture(path: &Path, cfg: PipelineConfig) -> Vec<Event> {
    let mut reader = FileReader::open(path).expect("open generated capture");
    let mut pipeline = Pipeline::new(cfg);
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
    events
}

/// Everything the pipeline reported about each record of one capture, as classifier input.
fn facts_from_events(events: &[Event]) -> BTreeMap<Record, DeviceFacts> {
    let mut facts: BTreeMap<Record, DeviceFacts> = BTreeMap::new();
    let mut ips_of: BTreeMap<MacAddr, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut host_of: HashMap<IpAddr, Record> = HashMap::new();
    for e in events {
        match e {
            Event::Device(d) => {
                let f = facts.entry(Record::Mac(d.mac)).or_insert_with(|| DeviceFacts::new(d.mac));
                f.evidence.extend(d.evidence.iter().cloned());
                ips_of.entry(d.mac).or_default().extend(d.ips.iter().copied());
            }
            Event::Host(h) => {
                let rec = Record::Host(h.site.clone(), h.ip);
                // No MAC: the router's must not lend the host its vendor.
                let f = facts.entry(rec.clone()).or_insert_with(|| DeviceFacts::new(MacAddr([0x02, 0, 0, 0, 0, 0])));
                f.evidence.extend(h.evidence.iter().cloned());
                host_of.insert(h.ip, rec);
            }
            _ => {}
        }
    }
    // A router's MAC carries every routed address; an address belongs to the MAC that
    // uses the fewest addresses, else to the host known by it.
    let mut by_ip: HashMap<IpAddr, Record> = host_of;
    let mut owner_ips: HashMap<IpAddr, usize> = HashMap::new();
    for (mac, ips) in &ips_of {
        for ip in ips {
            if owner_ips.get(ip).is_none_or(|&n| n > ips.len()) {
                owner_ips.insert(*ip, ips.len());
                by_ip.insert(*ip, Record::Mac(*mac));
            }
        }
    }
    // Ports: who listened and who connected, attributed by address so routed peers (seen
    // behind the router's MAC) still count for the right record.
    for e in events {
        if let Event::Flow(fl) = e {
            let Some(t) = Transport::from_ip_proto(fl.ip_proto) else { continue };
            let (client_ip, server_ip, port) = if fl.a_port < 1024 && fl.b_port >= 1024 {
                (fl.b_ip, fl.a_ip, fl.a_port)
            } else {
                (fl.a_ip, fl.b_ip, fl.b_port)
            };
            let p = PortRef { transport: t, port };
            if let Some(f) = by_ip.get(&client_ip).and_then(|r| facts.get_mut(r)) {
                f.connects_to.push(p);
            }
            if fl.packets_ba > 0 {
                if let Some(f) = by_ip.get(&server_ip).and_then(|r| facts.get_mut(r)) {
                    f.listening.push(p);
                }
            }
        }
    }
    facts
}

/// The records of a run that are each truth device's own, merged as one record would be.
struct RunFacts {
    /// Per capture (in truth order): its records.
    captures: Vec<(TruthCapture, BTreeMap<Record, DeviceFacts>)>,
}

impl RunFacts {
    fn of_run(dir: &Path, truth: &GroundTruth) -> RunFacts {
        assert!(truth.captures.len() >= 2, "the hospital run should write a core and an access capture");
        let captures = truth
            .captures
            .iter()
            .map(|c| (c.clone(), facts_from_events(&run_capture(&dir.join(&c.file), sensor_config(truth, c)))))
            .collect();
        RunFacts { captures }
    }

    /// The records that belong to `dev`: its MACs' devices on every capture, plus on a
    /// capture that sees it only routed, the hosts of its site at the addresses it held there.
    fn records_of(&self, dev: &TruthDevice) -> Vec<(&str, Record)> {
        let macs: Vec<MacAddr> = if dev.macs.is_empty() { vec![dev.mac] } else { dev.macs.clone() };
        let mut out = Vec::new();
        for (c, facts) in &self.captures {
            out.extend(
                macs.iter().map(|m| Record::Mac(*m)).filter(|r| facts.contains_key(r)).map(|r| (c.sensor.as_str(), r)),
            );
            let routed_only = dev.sightings.iter().any(|s| s.sensor == c.sensor && s.routed && !s.native);
            if !routed_only {
                continue;
            }
            for r in &c.routed_sites {
                for b in dev.bindings.iter().filter(|b| b.site == r.site) {
                    let rec = Record::Host(Some(r.site.clone()), IpAddr::V4(b.ip));
                    if facts.contains_key(&rec) && !out.iter().any(|(_, o)| *o == rec) {
                        out.push((c.sensor.as_str(), rec));
                    }
                }
            }
        }
        out
    }

    fn facts_of(&self, dev: &TruthDevice) -> DeviceFacts {
        let mut merged = DeviceFacts::new(dev.mac);
        let mut seen: BTreeSet<(wardline_common::Field, String)> = BTreeSet::new();
        for (sensor, rec) in self.records_of(dev) {
            let (_, facts) = self.captures.iter().find(|(c, _)| c.sensor == sensor).expect("capture");
            let f = &facts[&rec];
            for e in &f.evidence {
                if seen.insert((e.field, e.value.clone())) {
                    merged.evidence.push(e.clone());
                }
            }
            merged.connects_to.extend(f.connects_to.iter().copied());
            merged.listening.extend(f.listening.iter().copied());
        }
        merged.connects_to.sort();
        merged.connects_to.dedup();
        merged.listening.sort();
        merged.listening.dedup();
        merged
    }
}

/// Classifies every ground-truth device with `facts_of` and prints the per-class table;
/// returns (class accuracy, category accuracy, distinct generator profiles).
fn score(label: &str, truth: &GroundTruth, facts_of: impl Fn(&TruthDevice) -> DeviceFacts) -> (f64, f64, usize) {
    let kb = KnowledgeBase::builtin().expect("builtin KB");
    // class -> (devices, class correct, category correct)
    let mut per_class: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    let profiles: BTreeSet<&str> = truth.devices.iter().map(|d| d.profile.as_str()).collect();
    for dev in &truth.devices {
        let c: Classification = classify(&kb, &facts_of(dev));
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

pub fn hospital() -> (tempfile::TempDir, std::path::PathBuf, GroundTruth) {
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
    let result = score("ground-truth evidence", &truth, |d| {
        facts.get(&d.mac).cloned().unwrap_or_else(|| DeviceFacts::new(d.mac))
    });
    check("ground-truth evidence", result);
}

/// End to end: the sensor pipeline's own evidence from every capture of the run.
#[test]
fn pipeline_accuracy_on_generated_capture() {
    let (dir, _pcap, truth) = hospital();
    let run = RunFacts::of_run(dir.path(), &truth);
    let result = score("sensor pipeline", &truth, |d| run.facts_of(d));
    check("sensor pipeline", result);
}
