//! The core capture of the generated hospital with the routed clinic configured as a remote
//! site: every clinic device the core sees only through the clinic router is a host of the
//! clinic at one of its clinic addresses, none of the clinic devices' evidence lands on the
//! router, and the router itself is classified as the network gear it is.

use crate::accuracy::{hospital, run_capture, sensor_config};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use wardline_common::wire::HostObservation;
use wardline_common::{Event, Field};
use wardline_intel::{classify, DeviceFacts, KnowledgeBase};

#[test]
fn core_capture_reports_clinic_hosts_at_the_clinic_never_on_its_router() {
    let (dir, _pcap, truth) = hospital();
    let core = truth.captures.iter().find(|c| c.sensor == "core").expect("core capture in truth");
    assert!(!core.routed_sites.is_empty(), "the hospital's core should see a routed site");
    let events = run_capture(&dir.path().join(&core.file), sensor_config(&truth, core));

    // Hosts, merged over the drains, by (site, ip).
    let mut hosts: BTreeMap<(Option<String>, IpAddr), Vec<HostObservation>> = BTreeMap::new();
    let mut evidence_of_mac: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for e in &events {
        match e {
            Event::Host(h) => hosts.entry((h.site.clone(), h.ip)).or_default().push(h.clone()),
            Event::Device(d) => evidence_of_mac.entry(d.mac).or_default().extend(d.evidence.iter().cloned()),
            _ => {}
        }
    }
    let kb = KnowledgeBase::builtin().expect("builtin KB");
    for routed in &core.routed_sites {
        let seen_routed: Vec<_> = truth
            .devices
            .iter()
            .filter(|d| d.sightings.iter().any(|s| s.sensor == core.sensor && s.routed && !s.native))
            .filter(|d| d.bindings.iter().any(|b| b.site == routed.site))
            .collect();
        assert!(!seen_routed.is_empty(), "no device of {} seen routed by the core", routed.site);
        let router_evidence: BTreeSet<(Field, &str)> = evidence_of_mac
            .get(&routed.router_mac)
            .map(|ev| ev.iter().map(|e| (e.field, e.value.as_str())).collect())
            .unwrap_or_default();
        for dev in &seen_routed {
            let ips: Vec<IpAddr> =
                dev.bindings.iter().filter(|b| b.site == routed.site).map(|b| IpAddr::V4(b.ip)).collect();
            let records: Vec<&HostObservation> =
                ips.iter().filter_map(|ip| hosts.get(&(Some(routed.site.clone()), *ip))).flatten().collect();
            assert!(
                !records.is_empty(),
                "{} ({}) at {:?}: no host of site {} reported",
                dev.mac,
                dev.profile,
                ips,
                routed.site
            );
            assert!(records.iter().all(|h| h.via_mac == Some(routed.router_mac) && h.vlan.is_none()));
            // What the device says about itself is on the router in no form.
            for e in &dev.evidence {
                assert!(
                    !router_evidence.contains(&(e.field, e.value.as_str())),
                    "{} ({}): {} = {:?} landed on the router {}",
                    dev.mac,
                    dev.profile,
                    e.field,
                    e.value,
                    routed.router_mac
                );
            }
        }
        // No clinic address is reported as a host of the core's own site.
        let clinic_ips: BTreeSet<IpAddr> = seen_routed
            .iter()
            .flat_map(|d| d.bindings.iter().filter(|b| b.site == routed.site).map(|b| IpAddr::V4(b.ip)))
            .collect();
        assert!(hosts.keys().all(|(site, ip)| site.is_some() || !clinic_ips.contains(ip)));
        // The router: network gear by its own evidence and vendor, as the truth says.
        let router = truth.devices.iter().find(|d| d.macs.contains(&routed.router_mac) || d.mac == routed.router_mac);
        let facts = DeviceFacts::from_evidence(
            routed.router_mac,
            evidence_of_mac.get(&routed.router_mac).cloned().unwrap_or_default(),
        );
        let c = classify(&kb, &facts);
        assert_eq!(c.category.value.as_str(), "it", "router {}:\n{}", routed.router_mac, c.explain());
        if let Some(r) = router {
            assert_eq!(c.class.value, r.class, "router {}:\n{}", routed.router_mac, c.explain());
        }
        println!(
            "{}: {} devices seen routed, {} hosts at the site, router {} classified {}",
            routed.site,
            seen_routed.len(),
            hosts.keys().filter(|(s, _)| s.as_deref() == Some(routed.site.as_str())).count(),
            routed.router_mac,
            c.class.value
        );
    }
}
