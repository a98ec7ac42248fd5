//! The hospital's identity cases, checked against the captures themselves (decoded by
//! tshark): every truth binding is announced (DHCPACK or ARP) in the capture that sees its
//! segment; the routed clinic's hosts reach the core capture only behind their router's MAC;
//! the churned address goes from one device to the other at the stated times; the
//! dual-homed CT's two MACs carry the same DICOM AE title and implementation UID; the
//! portable ultrasound shows up at the main campus, then at the clinic.

use crate::generate_common::*;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::OnceLock;
use wardline_sim::{generate, truth_path, GenerateOptions, GroundTruth, Scenario, TruthCapture};

/// One hospital capture set shared by the tests of this file.
fn hospital() -> &'static (PathBuf, GroundTruth) {
    static H: OnceLock<(PathBuf, GroundTruth)> = OnceLock::new();
    H.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generate_identity");
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let pcap = dir.join("hospital.pcap");
        let mut opts = GenerateOptions::new(Scenario::Hospital);
        opts.scale.minutes = 3;
        let truth = generate(&opts, &pcap).expect("generate hospital");
        (pcap, truth)
    })
}

fn file(cap: &TruthCapture) -> PathBuf {
    hospital().0.with_file_name(&cap.file)
}

/// The capture whose sensor sees `site`'s segments.
fn native_capture<'a>(truth: &'a GroundTruth, site: &str) -> &'a TruthCapture {
    truth.captures.iter().find(|c| c.native_sites.iter().any(|s| s == site)).expect("a capture sees every site")
}

fn core(truth: &GroundTruth) -> &TruthCapture {
    truth.captures.iter().find(|c| c.sensor == "core").expect("core capture")
}

fn access(truth: &GroundTruth) -> &TruthCapture {
    truth.captures.iter().find(|c| c.sensor.starts_with("access-")).expect("access capture")
}

#[test]
fn truth_lists_every_capture_with_its_sensor_and_file_naming() {
    let (pcap, truth) = hospital();
    assert_eq!(GroundTruth::load(&truth_path(pcap)).expect("load truth"), *truth);
    let sensors: Vec<(&str, &str)> = truth.captures.iter().map(|c| (c.sensor.as_str(), c.file.as_str())).collect();
    assert_eq!(
        sensors,
        [("core", "hospital.pcap"), ("access-north-clinic", "hospital.pcap.access-north-clinic.pcap")],
        "main capture first, then <main>.access-<site>.pcap"
    );
    assert_eq!(wardline_sim::access_capture_path(pcap, "north-clinic"), file(access(truth)));
    let core = core(truth);
    assert_eq!(core.native_sites, ["main-campus", "east-campus"]);
    assert_eq!(core.routed_sites.len(), 1);
    assert_eq!(core.routed_sites[0].site, "north-clinic");
    assert_eq!(access(truth).native_sites, ["north-clinic"]);
    for cap in &truth.captures {
        let size = std::fs::metadata(file(cap)).expect("capture written").len();
        assert_eq!(size, 24 + 16 * cap.packets + cap.bytes, "{}", cap.file);
    }
    // Every zone's network is listed, the clinic's included.
    assert!(truth.networks.iter().any(|n| n.site == "north-clinic" && n.vlan == Some(210)));
    let ids: BTreeSet<&str> = truth.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), truth.devices.len(), "device ids are unique");
}

#[test]
fn every_binding_is_announced_in_the_capture_that_sees_its_segment() {
    if !have_tshark() {
        return;
    }
    let (_, truth) = hospital();
    for cap in &truth.captures {
        let f = file(cap);
        let acks: BTreeSet<(String, String, String, u64)> = tshark_fields(
            &f,
            "dhcp.option.dhcp == 5",
            &["dhcp.hw.mac_addr", "dhcp.ip.your", "vlan.id", "frame.time_epoch"],
            &[],
        )
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone(), epoch_us(&r[3])))
        .collect();
        let arps: BTreeSet<(String, String, String, u64)> =
            tshark_fields(&f, "arp", &["arp.src.hw_mac", "arp.src.proto_ipv4", "vlan.id", "frame.time_epoch"], &[])
                .into_iter()
                .map(|r| (r[0].clone(), r[1].clone(), r[2].clone(), epoch_us(&r[3])))
                .collect();
        let mut checked = 0;
        for d in &truth.devices {
            for b in d.bindings.iter().filter(|b| cap.native_sites.contains(&b.site)) {
                let vlan = b.vlan.map(|v| v.to_string()).unwrap_or_default();
                let key = (b.mac.to_string(), b.ip.to_string(), vlan, b.from_us);
                match b.announced_by.as_str() {
                    "dhcp_ack" => assert!(acks.contains(&key), "{}: no DHCPACK {key:?} on {}", d.name, cap.sensor),
                    "arp" => assert!(arps.contains(&key), "{}: no ARP {key:?} on {}", d.name, cap.sensor),
                    "static" => continue,
                    other => panic!("unknown announcement {other}"),
                }
                checked += 1;
            }
        }
        assert!(checked > 3, "{}: only {checked} bindings checked", cap.sensor);
    }
}

#[test]
fn routed_clinic_hosts_reach_the_core_only_behind_their_router() {
    if !have_tshark() {
        return;
    }
    let (_, truth) = hospital();
    let (core, access) = (core(truth), access(truth));
    let routed = &core.routed_sites[0];
    let clinic_net = truth.networks.iter().find(|n| n.site == routed.site).expect("clinic network");
    let prefix = clinic_net.cidr.split(".0.0/16").next().expect("a /16").to_string() + ".";
    // Frames from clinic addresses on the core: only the router's MAC, only the transit VLAN.
    let from_clinic =
        tshark_fields(&file(core), &format!("ip.src == {}", clinic_net.cidr), &["eth.src", "vlan.id", "ip.src"], &[]);
    assert!(from_clinic.len() > 50, "the core sees the clinic's traffic ({} frames)", from_clinic.len());
    let transit = routed.vlan.map(|v| v.to_string()).unwrap_or_default();
    for r in &from_clinic {
        assert!(r[2].starts_with(&prefix));
        assert_eq!((r[0].as_str(), r[1].as_str()), (routed.router_mac.to_string().as_str(), transit.as_str()));
    }
    // Devices bound only at the clinic never show their MAC on the core, yet the core sees
    // their addresses (routed), and the access capture sees them natively.
    let core_macs: BTreeSet<String> =
        tshark_fields(&file(core), "eth", &["eth.src", "eth.dst"], &[]).into_iter().flatten().collect();
    let core_ips: BTreeSet<String> = from_clinic.iter().map(|r| r[2].clone()).collect();
    let clinic_only: Vec<_> = truth
        .devices
        .iter()
        .filter(|d| d.class != "network_gear" && !d.bindings.is_empty())
        .filter(|d| d.bindings.iter().all(|b| b.site == routed.site))
        .collect();
    assert!(clinic_only.len() >= 3, "the clinic holds workstations and a pump");
    for d in clinic_only {
        assert!(!core_macs.contains(&d.mac.to_string()), "{} ({}) visible by MAC on the core", d.name, d.mac);
        let on = |sensor: &str| d.sightings.iter().find(|s| s.sensor == sensor);
        let c = on("core").unwrap_or_else(|| panic!("{}: the core sees every clinic device", d.name));
        assert!(c.routed && !c.native, "{}: core sighting {c:?}", d.name);
        let a = on(&access.sensor).unwrap_or_else(|| panic!("{}: no access sighting", d.name));
        assert!(a.native && !a.routed, "{}: access sighting {a:?}", d.name);
        assert!(d.bindings.iter().any(|b| core_ips.contains(&b.ip.to_string())), "{}: address not on the core", d.name);
    }
}

/// Frame times at which `ip` sends on `cap`.
fn sends_from(cap: &TruthCapture, ip: Ipv4Addr) -> Vec<u64> {
    tshark_fields(&file(cap), &format!("ip.src == {ip}"), &["frame.time_epoch"], &[])
        .iter()
        .map(|r| epoch_us(&r[0]))
        .collect()
}

#[test]
fn churned_address_moves_from_one_device_to_the_other_at_the_stated_times() {
    if !have_tshark() {
        return;
    }
    let (_, truth) = hospital();
    assert_eq!(truth.distinct_devices.len(), 1, "{:?}", truth.distinct_devices);
    let churn = &truth.distinct_devices[0];
    let first = truth.device_by_id(&churn.devices[0]).expect("first holder");
    let second = truth.device_by_id(&churn.devices[1]).expect("second holder");
    assert_ne!(first.mac, second.mac);
    assert!(churn.first_until_us < churn.second_from_us);
    let b1 = first.bindings.iter().find(|b| b.ip == churn.ip).expect("first binding");
    let b2 = second.bindings.iter().find(|b| b.ip == churn.ip).expect("second binding");
    assert_eq!((b1.until_us, b2.from_us), (Some(churn.first_until_us), churn.second_from_us));
    assert_eq!(truth.owner_of(&churn.site, churn.ip, churn.first_until_us - 1).map(|d| &d.id), Some(&first.id));
    assert_eq!(truth.owner_of(&churn.site, churn.ip, churn.second_from_us).map(|d| &d.id), Some(&second.id));
    assert!(first.history.iter().any(|h| h.kind == "address_released" && h.at_us == churn.first_until_us));

    // The access capture: the first device's DHCPRELEASE, then the ACK to the second one.
    let cap = native_capture(truth, &churn.site);
    let dhcp = tshark_fields(
        &file(cap),
        "dhcp",
        &["dhcp.option.dhcp", "dhcp.hw.mac_addr", "dhcp.ip.client", "dhcp.ip.your", "frame.time_epoch"],
        &[],
    );
    let ip = churn.ip.to_string();
    // dhcp.hw.mac_addr repeats for option 61: the first value is chaddr.
    let chaddr = |r: &Vec<String>| r[1].split(',').next().unwrap_or_default().to_string();
    let release = dhcp.iter().find(|r| r[0] == "7" && r[2] == ip).expect("DHCPRELEASE of the churned address");
    assert_eq!((chaddr(release), epoch_us(&release[4])), (first.mac.to_string(), churn.first_until_us));
    let acks: Vec<(String, u64)> =
        dhcp.iter().filter(|r| r[0] == "5" && r[3] == ip).map(|r| (chaddr(r), epoch_us(&r[4]))).collect();
    assert_eq!(acks, [(first.mac.to_string(), b1.from_us), (second.mac.to_string(), churn.second_from_us)]);

    // Both captures: traffic from the address before the release (first device) and after
    // the new lease (second device), none in between.
    for cap in [native_capture(truth, &churn.site), core(truth)] {
        let times = sends_from(cap, churn.ip);
        let before = times.iter().filter(|t| **t <= churn.first_until_us).count();
        let after = times.iter().filter(|t| **t >= churn.second_from_us).count();
        assert!(before > 0 && after > 0, "{}: {before} frames before, {after} after", cap.sensor);
        assert_eq!(before + after, times.len(), "{}: the address is silent while unleased", cap.sensor);
    }
}

#[test]
fn dual_homed_ct_sends_the_same_ae_title_and_uid_from_both_macs() {
    if !have_tshark() {
        return;
    }
    let (_, truth) = hospital();
    assert_eq!(truth.same_device.len(), 1);
    let same = &truth.same_device[0];
    let ct = truth.device_by_id(&same.device).expect("dual-homed device");
    assert_eq!((ct.class.as_str(), ct.macs.len()), ("ct", 2));
    assert_eq!(same.macs, ct.macs);
    let want = |field: wardline_common::Field| {
        same.identifiers.iter().find(|e| e.field == field).map(|e| e.value.clone()).expect("identifier")
    };
    let (ae, uid) = (want(wardline_common::Field::DicomCallingAe), want(wardline_common::Field::DicomImplClassUid));
    let cap = native_capture(truth, &ct.site);
    let rqs = tshark_fields(
        &file(cap),
        "dicom.pdu.type == 1",
        &["eth.src", "dicom.assoc.ae.calling", "dicom.userinfo.uid"],
        &[],
    );
    let vlans: BTreeSet<Option<u16>> = ct.bindings.iter().map(|b| b.vlan).collect();
    assert_eq!(vlans.len(), 2, "two NICs on two VLANs");
    for mac in &ct.macs {
        let mine: Vec<_> = rqs.iter().filter(|r| r[0] == mac.to_string()).collect();
        assert!(!mine.is_empty(), "no A-ASSOCIATE-RQ from {mac}");
        for r in mine {
            assert_eq!((r[1].trim(), r[2].as_str()), (ae.as_str(), uid.as_str()), "{mac}");
        }
    }
    // No other device uses that AE title: the identifier is unambiguous.
    let ct_macs: BTreeSet<String> = ct.macs.iter().map(|m| m.to_string()).collect();
    for cap in &truth.captures {
        for r in tshark_fields(&file(cap), "dicom.pdu.type == 1", &["eth.src", "dicom.assoc.ae.calling"], &[]) {
            if r[1].trim() == ae {
                assert!(ct_macs.contains(&r[0]), "{} also calls itself {ae}", r[0]);
            }
        }
    }
}

#[test]
fn portable_ultrasound_appears_at_the_main_campus_then_at_the_clinic() {
    if !have_tshark() {
        return;
    }
    let (_, truth) = hospital();
    let mover = truth.devices.iter().find(|d| d.history.iter().any(|h| h.kind == "site_move")).expect("a mover");
    let kinds: Vec<&str> = mover.history.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds, ["disconnected", "site_move", "ip_change", "vlan_change"]);
    let [old, new] = &mover.bindings[..] else { panic!("two bindings: {:?}", mover.bindings) };
    assert_eq!((old.site.as_str(), new.site.as_str()), ("main-campus", "north-clinic"));
    assert_ne!((old.ip, old.vlan), (new.ip, new.vlan));
    let left = old.until_us.expect("the first binding ends");
    assert!(left < new.from_us && new.until_us.is_none());
    let moved = &mover.history[1];
    assert_eq!((moved.at_us, moved.from.as_str(), moved.to.as_str()), (new.from_us, "main-campus", "north-clinic"));
    // The core: the old address natively (its own MAC) until it left, the new one routed after.
    let core = core(truth);
    let old_frames =
        tshark_fields(&file(core), &format!("ip.src == {}", old.ip), &["eth.src", "frame.time_epoch"], &[]);
    assert!(!old_frames.is_empty());
    for r in &old_frames {
        assert_eq!(r[0], mover.mac.to_string());
        assert!(epoch_us(&r[1]) <= left);
    }
    let new_frames =
        tshark_fields(&file(core), &format!("ip.src == {}", new.ip), &["eth.src", "frame.time_epoch"], &[]);
    assert!(!new_frames.is_empty(), "the core sees the ultrasound at the clinic (routed)");
    for r in &new_frames {
        assert_eq!(r[0], core.routed_sites[0].router_mac.to_string());
        assert!(epoch_us(&r[1]) > new.from_us);
    }
    // The clinic's access capture sees it only after it arrived, with its own MAC.
    let at_clinic =
        tshark_fields(&file(access(truth)), &format!("eth.src == {}", mover.mac), &["frame.time_epoch"], &[]);
    assert!(!at_clinic.is_empty());
    assert!(at_clinic.iter().all(|r| epoch_us(&r[0]) > left), "at the clinic before it left the main campus");
}

#[test]
fn the_routed_site_takes_a_name_no_campus_uses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("h.pcap");
    let mut opts = GenerateOptions::new(Scenario::Hospital);
    opts.sites = 3;
    opts.scale.minutes = 1;
    let truth = generate(&opts, &pcap).expect("generate");
    assert_eq!(truth.sites, ["main-campus", "east-campus", "north-clinic", "west-clinic"]);
    let access = access(&truth);
    assert_eq!(
        (access.sensor.as_str(), access.file.as_str()),
        ("access-west-clinic", "h.pcap.access-west-clinic.pcap")
    );
    assert!(dir.path().join(&access.file).exists());
    assert_eq!(core(&truth).native_sites, ["main-campus", "east-campus", "north-clinic"]);
}
