//! End to end against the generated hospital's ground truth (issue 9, item 6): every
//! capture of the run goes through the real sensor path (pipeline → batcher → spool, with a
//! configuration derived from the truth), every spooled batch is applied to one
//! `ClusterState`, and the read side's device answers are compared with the truth:
//!
//! - the merge does not depend on arrival order (core first or access first: same answers);
//! - every truth device is present exactly once, with its evidence;
//! - no two truth devices are merged (identity evidence, the churned address's leases);
//! - the dual-homed modality's records are linked, not merged;
//! - moves and IP changes are in the derived history.
//!
//! The run is generated and processed once and shared by the tests below.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::OnceLock;
use wardline_aggregator::query::classify::classify_record;
use wardline_aggregator::query::devices::{DeviceSnapshot, DISCONNECTED_AFTER_US};
use wardline_aggregator::query::views::{DeviceView, HistoryEvent, HistoryKind};
use wardline_aggregator::state::{BatchSummary, ClusterState, Command, DeviceId, DeviceRecord};
use wardline_common::{Batch, Field, MacAddr};
use wardline_intel::KnowledgeBase;
use wardline_sim::{generate, GenerateOptions, GroundTruth, Scale, Scenario, TruthDevice};

/// Fields that identify one device (a name or an id it was given), as opposed to what a
/// model or a configuration shares. A value of one of these that the truth lists for some
/// devices must never sit in another device's record.
const IDENTITY_FIELDS: &[Field] = &[
    Field::Hostname,
    Field::DhcpClientId,
    Field::DhcpFqdn,
    Field::NetbiosName,
    Field::DicomCallingAe,
    Field::Hl7DeviceId,
    Field::LldpSystemName,
    Field::SnmpV3EngineId,
];

/// The identifier an evidence value carries, as the truth writes it: a NetBIOS name
/// without its `<suffix>` byte (`WARD-WS001<20>`), an HL7 equipment id's first component
/// (`0030E6FFFE1C0001^V500^EUI-64`: the EUI-64).
fn identifier(field: Field, value: &str) -> &str {
    match field {
        Field::NetbiosName => value.rsplit_once('<').map_or(value, |(name, _)| name),
        Field::Hl7DeviceId => value.split('^').next().unwrap_or(value),
        _ => value,
    }
}

/// The generated hospital, its sensors' batches, and the state after applying them.
struct Run {
    _dir: tempfile::TempDir,
    truth: GroundTruth,
    /// Per truth capture (in truth order): the batches its sensor spooled.
    batches: Vec<(String, Vec<Batch>)>,
    /// All batches applied core first, then each access sensor.
    state: ClusterState,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("hospital.pcap");
        let mut opts = GenerateOptions::new(Scenario::Hospital);
        opts.seed = 1;
        opts.scale = Scale::factor(Scenario::Hospital, 1);
        let truth = generate(&opts, &out).expect("generate the hospital");
        assert!(truth.captures.len() >= 2, "the hospital has a core and an access capture");
        let batches: Vec<(String, Vec<Batch>)> = truth
            .captures
            .iter()
            .map(|c| (c.sensor.clone(), crate::raft_support::truth_sensor_batches(dir.path(), &truth, c)))
            .collect();
        let state = apply_all(batches.iter().flat_map(|(_, b)| b));
        Run { _dir: dir, truth, batches, state }
    })
}

fn apply_all<'a>(batches: impl IntoIterator<Item = &'a Batch>) -> ClusterState {
    let mut state = ClusterState::new();
    for b in batches {
        let applied = state.apply(&Command::ApplyBatch(BatchSummary::from_batch(b))).applied;
        assert!(applied, "batch {} of {} applied once", b.seq, b.sensor_id);
    }
    state
}

/// Every device the read side lists: MAC devices, and IP-keyed devices with unowned pieces.
fn device_ids(state: &ClusterState) -> Vec<DeviceId> {
    let macs = state.devices().keys().map(|m| DeviceId::Mac(*m));
    let hosts = state.hosts().iter().filter(|(_, h)| h.has_unowned()).map(|(k, _)| DeviceId::Host(k.clone()));
    macs.chain(hosts).collect()
}

/// Each listed device's API answers: the device (merged record, sightings, links,
/// classification) and its history.
fn answers(state: &ClusterState) -> BTreeMap<String, serde_json::Value> {
    static KB: OnceLock<KnowledgeBase> = OnceLock::new();
    let kb = KB.get_or_init(|| KnowledgeBase::builtin().expect("builtin knowledge base"));
    device_ids(state)
        .into_iter()
        .map(|id| {
            let snap = DeviceSnapshot::take(state, &id, true).expect("a listed device has an answer");
            let record = snap.merged();
            let view = DeviceView::new(&snap, &record, classify_record(kb, &record));
            let answer = serde_json::json!({ "device": view, "history": snap.history() });
            (id.to_string(), answer)
        })
        .collect()
}

fn macs_of(dev: &TruthDevice) -> Vec<MacAddr> {
    if dev.macs.is_empty() {
        vec![dev.mac]
    } else {
        dev.macs.clone()
    }
}

fn snapshot(state: &ClusterState, mac: MacAddr) -> Option<DeviceSnapshot> {
    DeviceSnapshot::take(state, &DeviceId::Mac(mac), true)
}

/// Everything the records of `dev`'s MACs hold, merged with their routed pieces.
fn records_of(state: &ClusterState, dev: &TruthDevice) -> Vec<(MacAddr, DeviceRecord)> {
    macs_of(dev).into_iter().filter_map(|m| snapshot(state, m).map(|s| (m, s.merged()))).collect()
}

#[test]
fn ground_truth_merge_does_not_depend_on_arrival_order() {
    let run = run();
    let core_first = answers(&run.state);
    let access_first = answers(&apply_all(run.batches.iter().rev().flat_map(|(_, b)| b)));
    // Round robin, one batch of each sensor in turn: bindings and routed hosts interleave.
    let longest = run.batches.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
    let round_robin =
        answers(&apply_all((0..longest).flat_map(|i| run.batches.iter().filter_map(move |(_, b)| b.get(i)))));
    assert!(core_first.len() > run.truth.devices.len() / 2, "the state lists the hospital's devices");
    for (label, other) in [("access first", &access_first), ("round robin", &round_robin)] {
        let ids: BTreeSet<&String> = core_first.keys().chain(other.keys()).collect();
        for id in ids {
            assert_eq!(core_first.get(id), other.get(id), "device {id}: core first and {label} answer differently");
        }
    }
}

#[test]
fn ground_truth_every_device_appears_exactly_once_with_its_evidence() {
    let run = run();
    let (truth, state) = (&run.truth, &run.state);
    let mut problems: Vec<String> = Vec::new();
    let (mut routed_only, mut identity_values) = (0usize, 0usize);
    for dev in &truth.devices {
        let macs = macs_of(dev);
        let records = records_of(state, dev);
        if records.is_empty() {
            problems.push(format!("{} ({}): missing, no record for any of {macs:?}", dev.id, dev.profile));
            continue;
        }
        // Each MAC some sensor saw sending has its own record.
        if dev.sightings.iter().any(|s| s.native) {
            for m in &macs {
                if state.device(m).is_none() {
                    problems.push(format!("{}: MAC {m} seen natively has no record", dev.id));
                }
            }
        }
        // Seen only routed by a sensor: that sensor's routed sightings are attributed to
        // the device's MAC, at one of its addresses.
        let addresses: BTreeSet<IpAddr> = dev.bindings.iter().map(|b| IpAddr::V4(b.ip)).collect();
        for s in dev.sightings.iter().filter(|s| s.routed && !s.native) {
            let routed = macs.iter().filter_map(|m| snapshot(state, *m)).any(|snap| {
                snap.sightings().iter().any(|v| {
                    v.sensor == s.sensor && v.how == "routed" && v.ip.is_some_and(|ip| addresses.contains(&ip))
                })
            });
            if !routed {
                problems.push(format!("{}: seen only routed by {}, no routed sighting on its MAC", dev.id, s.sensor));
            }
            routed_only += 1;
        }
        // No IP-keyed leftover at an address the device held at a site some sensor sees
        // routed: a binding names its owner for the whole run (the earliest span also owns
        // the time before it), so nothing there may stay unowned.
        for b in &dev.bindings {
            for (key, host) in state.hosts().iter().filter(|(k, _)| k.site == b.site && k.ip == IpAddr::V4(b.ip)) {
                if host.has_unowned() {
                    problems.push(format!("{}: IP-keyed device {key} left over for its address {}", dev.id, b.ip));
                }
            }
        }
        // Its identity evidence is in its records.
        let held: BTreeSet<(Field, &str)> =
            records.iter().flat_map(|(_, r)| r.evidence.keys().map(|(f, v)| (*f, identifier(*f, v)))).collect();
        for e in dev.evidence.iter().filter(|e| IDENTITY_FIELDS.contains(&e.field)) {
            if !held.contains(&(e.field, e.value.as_str())) {
                problems.push(format!("{}: {:?} {:?} missing from its records", dev.id, e.field, e.value));
            }
            identity_values += 1;
        }
    }
    // Exactly once: every MAC record is a truth device's or a router's, and no IP-keyed
    // device is left at an address some truth device held.
    let truth_macs: BTreeSet<MacAddr> = truth.devices.iter().flat_map(macs_of).collect();
    let routers: BTreeSet<MacAddr> = truth
        .networks
        .iter()
        .map(|n| n.gateway_mac)
        .chain(truth.captures.iter().flat_map(|c| c.routed_sites.iter().map(|r| r.router_mac)))
        .collect();
    for mac in state.devices().keys() {
        if !truth_macs.contains(mac) && !routers.contains(mac) {
            problems.push(format!("MAC record {mac} is no truth device and no router"));
        }
    }
    let held_addresses: BTreeSet<(String, IpAddr)> =
        truth.devices.iter().flat_map(|d| d.bindings.iter().map(|b| (b.site.clone(), IpAddr::V4(b.ip)))).collect();
    let leftovers: Vec<String> =
        state.hosts().iter().filter(|(_, h)| h.has_unowned()).map(|(key, _)| key.to_string()).collect();
    for (key, _) in state.hosts().iter().filter(|(_, h)| h.has_unowned()) {
        if held_addresses.contains(&(key.site.clone(), key.ip)) {
            problems.push(format!("IP-keyed device {key} is at a truth device's address"));
        }
    }
    println!(
        "{} truth devices, {} MAC records, {routed_only} routed-only sightings attributed, {identity_values} identity \
         values found, IP-keyed devices left (no truth device's address): {leftovers:?}",
        truth.devices.len(),
        state.devices().len(),
    );
    assert!(routed_only >= 4 && identity_values >= 100, "the checks above ran on the routed site and identities");
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn ground_truth_no_two_devices_merged() {
    let fields: Vec<Field> = IDENTITY_FIELDS.iter().copied().filter(|f| *f != Field::Hl7DeviceId).collect();
    no_foreign_identity_evidence(&fields);
}

/// HL7 equipment ids on their own: the Philips PIIC central station (dev-0027, dev-0100)
/// forwards its monitors' ORU^R01; OBX-18 names each monitor by a MAC-derived EUI-64, so the
/// sensor credits it to the monitor's MAC, not to the station that sent it (decision 0013).
#[test]
fn ground_truth_no_two_devices_share_equipment_ids() {
    no_foreign_identity_evidence(&[Field::Hl7DeviceId]);
}

/// Every value of `fields` in a truth device's records is one the truth lists for that
/// device, or for no device at all.
fn no_foreign_identity_evidence(fields: &[Field]) {
    let run = run();
    let (truth, state) = (&run.truth, &run.state);
    // Who the truth says holds each identity value.
    let mut holders: BTreeMap<(Field, &str), BTreeSet<&str>> = BTreeMap::new();
    for dev in &truth.devices {
        for e in dev.evidence.iter().filter(|e| fields.contains(&e.field)) {
            holders.entry((e.field, e.value.as_str())).or_default().insert(dev.id.as_str());
        }
    }
    let mut problems: Vec<String> = Vec::new();
    for dev in &truth.devices {
        for (mac, record) in records_of(state, dev) {
            for (field, value) in record.evidence.keys() {
                match holders.get(&(*field, identifier(*field, value))) {
                    Some(ids) if !ids.contains(dev.id.as_str()) => {
                        problems.push(format!("{} ({mac}) holds {field:?} {value:?}, which is {ids:?}'s", dev.id))
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn ground_truth_churned_address_splits_between_its_holders() {
    let run = run();
    let (truth, state) = (&run.truth, &run.state);
    let mut problems: Vec<String> = Vec::new();
    // The churned address: each holder's routed pieces at it fall in its own lease.
    assert!(!truth.distinct_devices.is_empty(), "the hospital has a churned address");
    for d in &truth.distinct_devices {
        let ip = IpAddr::V4(d.ip);
        let [first, second] = [0, 1].map(|i| truth.device_by_id(&d.devices[i]).expect("truth device"));
        for (dev, from_us, until_us) in [(first, 0, d.first_until_us), (second, d.second_from_us, u64::MAX)] {
            let mac = dev.mac;
            let snap = snapshot(state, mac).unwrap_or_else(|| panic!("{}: no record", dev.id));
            let mut pieces = 0;
            for host in snap.hosts.iter().filter(|h| h.key.site == d.site && h.key.ip == ip) {
                for ((field, value, owner), rec) in &host.evidence {
                    if *owner == Some(mac) {
                        pieces += 1;
                        if rec.first_ts_us < from_us || rec.last_ts_us > until_us {
                            problems.push(format!(
                                "{} at {ip}: {field:?} {value:?} seen {}..{} outside its lease {from_us}..{until_us}",
                                dev.id, rec.first_ts_us, rec.last_ts_us
                            ));
                        }
                    }
                }
                for (key, seen) in host.sightings.iter().filter(|(k, _)| k.owner == Some(mac)) {
                    pieces += 1;
                    if seen.first_seen_us < from_us || seen.last_seen_us > until_us {
                        problems.push(format!(
                            "{} at {ip}: routed by {} {}..{} outside its lease {from_us}..{until_us}",
                            dev.id, key.sensor, seen.first_seen_us, seen.last_seen_us
                        ));
                    }
                }
            }
            if pieces == 0 {
                problems.push(format!("{} at {ip}: no routed piece attributed to it", dev.id));
            }
        }
        let a = snapshot(state, first.mac).expect("first holder").merged();
        let b = snapshot(state, second.mac).expect("second holder").merged();
        assert_ne!(a.hostname(), b.hostname(), "the churned address's two holders keep their own names");
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn ground_truth_same_device_records_are_linked_not_merged() {
    let run = run();
    let state = &run.state;
    // No link joins two truth devices.
    let device_of: BTreeMap<MacAddr, &str> =
        run.truth.devices.iter().flat_map(|d| macs_of(d).into_iter().map(move |m| (m, d.id.as_str()))).collect();
    for mac in state.devices().keys() {
        let snap = snapshot(state, *mac).expect("listed");
        for link in snap.links() {
            let other: MacAddr = link.mac.parse().expect("link MAC");
            assert_eq!(
                device_of.get(mac),
                device_of.get(&other),
                "{mac} is linked to {other} by {:?} {:?}, another device",
                link.field,
                link.value
            );
        }
    }
    assert!(!run.truth.same_device.is_empty(), "the hospital has a dual-homed modality");
    for same in &run.truth.same_device {
        for mac in &same.macs {
            let snap = snapshot(state, *mac).unwrap_or_else(|| panic!("{}: no record for {mac}", same.device));
            // Not merged: the record is this MAC's own, and only its own segments are in it.
            assert_eq!(snap.merged().mac, *mac);
            let linked: BTreeSet<String> = snap.links().into_iter().map(|l| l.mac).collect();
            let others: BTreeSet<String> = same.macs.iter().filter(|m| *m != mac).map(|m| m.to_string()).collect();
            assert_eq!(linked, others, "{} ({mac}): linked to exactly its other interfaces", same.device);
            let record = snap.merged();
            for id in &same.identifiers {
                assert!(
                    record.values(id.field).contains(&id.value.as_str()),
                    "{} ({mac}): {:?} {:?} not in its record",
                    same.device,
                    id.field,
                    id.value
                );
            }
        }
    }
}

/// Truth history kinds and the read side's derived kinds:
///
/// | truth | read side |
/// |---|---|
/// | `site_move` (from → to) | `site_moved`, `from_site` = from, `site` = to |
/// | `ip_change` (from → to) | `ip_bound` of `to` (the new lease) |
/// | `vlan_change` (from → to) | within a site: `vlan_changed` (`from_vlan` → `vlan`); with a site move at the same time: the `site_moved` event carries the new VLAN (VLAN ids are per site, so this is not a VLAN change) |
/// | `address_released` (from = address) | `ip_moved` of that address to the next holder, when the truth leases it to another device later; otherwise nothing can show it (no binding says so) |
/// | `disconnected` (from = site) | `disconnected` at that site, when a sensor there kept reporting longer than `DISCONNECTED_AFTER_US` after it; a shorter run cannot tell a quiet device from a gone one |
#[test]
fn ground_truth_moves_and_ip_changes_are_in_the_history() {
    let run = run();
    let (truth, state) = (&run.truth, &run.state);
    let mut problems: Vec<String> = Vec::new();
    let mut checked = BTreeMap::<&str, usize>::new();
    for dev in truth.devices.iter().filter(|d| !d.history.is_empty()) {
        let history: Vec<HistoryEvent> =
            macs_of(dev).into_iter().filter_map(|m| snapshot(state, m)).flat_map(|s| s.history().events).collect();
        let has = |pred: &dyn Fn(&HistoryEvent) -> bool| history.iter().any(pred);
        let site_move_at = |at: u64| dev.history.iter().any(|h| h.kind == "site_move" && h.at_us == at);
        for h in &dev.history {
            let found = match h.kind.as_str() {
                "site_move" => Some(has(&|e| {
                    e.kind == HistoryKind::SiteMoved
                        && e.from_site.as_deref() == Some(h.from.as_str())
                        && e.site.as_deref() == Some(h.to.as_str())
                })),
                "ip_change" => {
                    let to: IpAddr = h.to.parse().expect("truth address");
                    Some(has(&|e| e.kind == HistoryKind::IpBound && e.ip == Some(to)))
                }
                "vlan_change" => {
                    let vlan = |v: &str| if v.is_empty() { None } else { Some(v.parse::<u16>().expect("truth VLAN")) };
                    let (from, to) = (vlan(&h.from), vlan(&h.to));
                    Some(if site_move_at(h.at_us) {
                        has(&|e| e.kind == HistoryKind::SiteMoved && e.vlan == to)
                    } else {
                        has(&|e| e.kind == HistoryKind::VlanChanged && e.from_vlan == from && e.vlan == to)
                    })
                }
                "address_released" => {
                    let ip: IpAddr = h.from.parse().expect("truth address");
                    let next = truth.devices.iter().find(|o| {
                        o.id != dev.id && o.bindings.iter().any(|b| IpAddr::V4(b.ip) == ip && b.from_us >= h.at_us)
                    });
                    next.map(|o| {
                        let next_mac = o.mac.to_string();
                        has(&|e| {
                            e.kind == HistoryKind::IpMoved && e.ip == Some(ip) && e.mac.as_ref() == Some(&next_mac)
                        })
                    })
                }
                "disconnected" => {
                    let sensor_kept_reporting = truth.captures.iter().any(|c| {
                        c.native_sites.contains(&h.from) && c.last_packet_us > h.at_us + DISCONNECTED_AFTER_US
                    });
                    sensor_kept_reporting.then(|| {
                        has(&|e| {
                            e.kind == HistoryKind::Disconnected
                                && e.site.as_deref() == Some(h.from.as_str())
                                && e.at_us <= h.at_us
                        })
                    })
                }
                other => {
                    problems.push(format!("{}: unknown truth history kind {other:?}", dev.id));
                    None
                }
            };
            match found {
                Some(true) => *checked.entry(h.kind.as_str()).or_default() += 1,
                Some(false) => problems.push(format!(
                    "{}: truth {} {:?} → {:?} at {} not in its history:\n{history:#?}",
                    dev.id, h.kind, h.from, h.to, h.at_us
                )),
                None => {}
            }
        }
    }
    for kind in ["site_move", "ip_change", "vlan_change", "address_released"] {
        assert!(checked.contains_key(kind), "the hospital's truth checked no {kind} event (checked: {checked:?})");
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
