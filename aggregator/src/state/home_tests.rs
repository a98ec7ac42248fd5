//! The cross-site merge rule (decision 0037): only a device's home site changes its
//! attributes; another site's sighting is recorded, counted and alerted, not merged.

use super::alerts::AlertKind;
use super::anomaly::AnomalyConfig;
use super::home::REHOME_AFTER_US;
use super::*;
use wardline_common::{Evidence, Proto};

const HOUR: u64 = 3_600_000_000;
const T0: u64 = 1_800_000_000_000_000;
const PUMP: MacAddr = MacAddr([0x00, 0x09, 0xfb, 0x11, 0x22, 0x33]);
const OTHER: MacAddr = MacAddr([0x00, 0x09, 0xfb, 0x44, 0x55, 0x66]);

struct Fleet {
    state: ClusterState,
    seq: BTreeMap<String, u64>,
}

fn pump(mac: MacAddr, ip: &str, ts: u64, facts: &[(Field, &str)]) -> DeviceObservation {
    DeviceObservation {
        mac,
        ips: vec![ip.parse().unwrap()],
        vlans: vec![40],
        first_seen_us: ts,
        last_seen_us: ts + 10,
        packets: 5,
        bytes: 500,
        evidence: facts.iter().map(|(f, v)| Evidence::new(*f, *v, Proto::Dhcp, ts)).collect(),
    }
}

impl Fleet {
    fn new() -> Fleet {
        let mut state = ClusterState::new();
        state.apply(&Command::SetAnomalyConfig(AnomalyConfig { learning_us: HOUR, clinical_vlans: vec![] }));
        Fleet { state, seq: BTreeMap::new() }
    }

    /// A batch of `sensor` at `site` with these device sightings.
    fn send(&mut self, sensor: &str, site: &str, devices: Vec<DeviceObservation>) {
        let seq = self.seq.entry(sensor.to_string()).or_default();
        *seq += 1;
        let id = Ulid::from_parts(1_800_000_000_000 + *seq, sensor.len() as u128 * 1000 + u128::from(*seq));
        let mut summary = BatchSummary::empty(id, sensor.into(), site.into(), *seq);
        summary.devices = devices;
        let cmd = Command::ApplyBatches(vec![IngestBatch { summary, flows: vec![] }]);
        assert_eq!(self.state.apply(&cmd).batches, [true]);
    }

    fn device(&self, mac: MacAddr) -> &DeviceRecord {
        self.state.device(&mac).unwrap()
    }
}

/// Vendor (SNMP sysDescr), model (CDP platform), firmware (CDP software version), serial.
const HOME_FACTS: &[(Field, &str)] = &[
    (Field::SnmpSysDescr, "Baxter Sigma Spectrum"),
    (Field::CdpPlatform, "Sigma Spectrum 35700"),
    (Field::CdpSoftwareVersion, "8.01.01"),
    (Field::SerialNumber, "SP-0001"),
];
const FOREIGN_FACTS: &[(Field, &str)] = &[
    (Field::SnmpSysDescr, "Evil Corp Router"),
    (Field::CdpPlatform, "Not A Pump"),
    (Field::CdpSoftwareVersion, "0.0.1"),
    (Field::SerialNumber, "SP-0002"),
];

#[test]
fn another_sites_sensor_cannot_change_a_device_and_is_counted_and_alerted() {
    let mut f = Fleet::new();
    f.send("north-1", "north", vec![pump(PUMP, "10.0.40.5", T0, HOME_FACTS)]);
    f.send("north-1", "north", vec![pump(OTHER, "10.0.40.6", T0 + 2 * HOUR, &[(Field::SerialNumber, "SP-0002")])]);
    let before = f.device(PUMP).clone();
    let ids_before = identity::strong_identifiers(&before);

    // Site south's sensor reports north's pump with other vendor, model, firmware, serial.
    f.send("south-1", "south", vec![pump(PUMP, "10.9.0.7", T0 + 3 * HOUR, FOREIGN_FACTS)]);
    let after = f.device(PUMP);
    assert_eq!(after.evidence, before.evidence, "no attribute of north's device changed");
    for (field, value) in HOME_FACTS {
        assert_eq!(after.latest(*field), Some(*value), "{field:?}");
    }
    assert_eq!(identity::strong_identifiers(after), ids_before);
    let serial = (Field::SerialNumber, "SP-0002".to_string());
    assert_eq!(f.state.holders_of(&serial).map(|h| h.len()), Some(1), "south's serial links nothing to the pump");
    // Where and when it was seen still counts: the move is visible.
    assert_eq!(after.sites.iter().collect::<Vec<_>>(), ["north", "south"]);
    assert_eq!(after.last_seen_us, T0 + 3 * HOUR + 10);
    // Recorded, counted and visible with the device.
    let home = f.state.homes().get(&PUMP).unwrap();
    assert_eq!((home.site.as_str(), home.rehomed), ("north", 0));
    let south = &home.foreign["south"];
    assert_eq!(
        (south.observations, south.sensors.iter().map(String::as_str).collect::<Vec<_>>()),
        (1, vec!["south-1"])
    );
    let withheld: Vec<(Field, &str)> = south.withheld.iter().map(|w| (w.field, w.value.as_str())).collect();
    assert_eq!(withheld, FOREIGN_FACTS);
    assert_eq!(f.state.homes().foreign_by_sensor["south-1"], 1);
    assert_eq!((f.state.homes().foreign_observations, f.state.homes().withheld_facts), (1, 4));
    // And alerted: the anomaly detectors see the sighting at another site.
    let moved: Vec<_> =
        f.state.alerts().alerts().values().filter(|a| a.kind == AlertKind::DeviceMoved).map(|a| &a.target).collect();
    assert_eq!(moved, ["south"]);
    // The home site's own sensors still change it.
    f.send("north-1", "north", vec![pump(PUMP, "10.0.40.5", T0 + 4 * HOUR, &[(Field::CdpSoftwareVersion, "8.02.00")])]);
    assert_eq!(f.device(PUMP).latest(Field::CdpSoftwareVersion), Some("8.02.00"));
}

#[test]
fn a_device_its_home_lost_for_a_day_moves_home_and_then_merges_there() {
    let mut f = Fleet::new();
    f.send("north-1", "north", vec![pump(PUMP, "10.0.40.5", T0, &[(Field::Hostname, "PUMP-NORTH")])]);
    // South sees it while north still does: its other name is withheld.
    f.send("south-1", "south", vec![pump(PUMP, "10.9.0.7", T0 + HOUR, &[(Field::Hostname, "PUMP-SOUTH")])]);
    f.send("north-1", "north", vec![pump(OTHER, "10.0.40.6", T0 + REHOME_AFTER_US - HOUR, &[])]);
    f.send("south-1", "south", vec![pump(PUMP, "10.9.0.7", T0 + REHOME_AFTER_US, &[(Field::Hostname, "PUMP-SOUTH")])]);
    assert_eq!(f.state.homes().get(&PUMP).unwrap().site, "north", "north's sensor has not run a day without it");
    assert_eq!(f.device(PUMP).values(Field::Hostname), ["PUMP-NORTH"]);
    // North's sensor kept capturing for more than a day without the pump: it left north.
    f.send("north-1", "north", vec![pump(OTHER, "10.0.40.6", T0 + REHOME_AFTER_US + HOUR, &[])]);
    f.send(
        "south-1",
        "south",
        vec![pump(PUMP, "10.9.0.7", T0 + REHOME_AFTER_US + 2 * HOUR, &[(Field::Hostname, "PUMP-SOUTH")])],
    );
    let home = f.state.homes().get(&PUMP).unwrap();
    assert_eq!((home.site.as_str(), home.rehomed), ("south", 1));
    assert!(!home.foreign.contains_key("south"));
    assert_eq!(f.device(PUMP).hostname(), Some("PUMP-SOUTH"), "south's facts merge once it is home");
    assert_eq!(f.device(PUMP).values(Field::Hostname), ["PUMP-NORTH", "PUMP-SOUTH"], "what north knew stays");
    // North is now the foreign site.
    f.send(
        "north-1",
        "north",
        vec![pump(PUMP, "10.0.40.5", T0 + REHOME_AFTER_US + 3 * HOUR, &[(Field::Hostname, "X")])],
    );
    assert_eq!(f.device(PUMP).hostname(), Some("PUMP-SOUTH"));
    assert_eq!(f.state.homes().get(&PUMP).unwrap().foreign["north"].observations, 1);
}

#[test]
fn a_sensor_elsewhere_cannot_move_a_device_its_home_still_sees() {
    let mut f = Fleet::new();
    for day in 0..4u64 {
        let ts = T0 + day * REHOME_AFTER_US;
        f.send("north-1", "north", vec![pump(PUMP, "10.0.40.5", ts, HOME_FACTS)]);
        // A rogue sensor claims it, with far-future packet times too.
        f.send("rogue", "south", vec![pump(PUMP, "10.9.0.7", ts + 10 * REHOME_AFTER_US, FOREIGN_FACTS)]);
    }
    let home = f.state.homes().get(&PUMP).unwrap();
    assert_eq!((home.site.as_str(), home.rehomed, home.foreign["south"].observations), ("north", 0, 4));
    assert_eq!(f.device(PUMP).latest(Field::SnmpSysDescr), Some("Baxter Sigma Spectrum"));
    assert_eq!(home.foreign["south"].withheld.len(), FOREIGN_FACTS.len(), "distinct facts kept once");
}

#[test]
fn devices_merged_before_the_rule_get_their_earliest_site_as_home() {
    let mut f = Fleet::new();
    f.send("north-1", "north", vec![pump(PUMP, "10.0.40.5", T0, HOME_FACTS)]);
    // A state from before decision 0037 has no homes.
    f.state.homes = home::DeviceHomes::default();
    f.send("south-1", "south", vec![pump(PUMP, "10.9.0.7", T0 + HOUR, FOREIGN_FACTS)]);
    assert_eq!(f.state.homes().get(&PUMP).unwrap().site, "north");
    assert_eq!(f.device(PUMP).latest(Field::SnmpSysDescr), Some("Baxter Sigma Spectrum"));
}

#[test]
fn another_site_may_confirm_or_fill_in_but_not_contradict() {
    let mut f = Fleet::new();
    f.send("north-1", "north", vec![pump(PUMP, "10.0.40.5", T0, &[(Field::Hostname, "PUMP-01")])]);
    // The same name from a transit link elsewhere, and a field north never reported: merged,
    // nothing withheld (so the order sensors' batches arrive in does not matter for them).
    let lldp = (Field::LldpSystemName, "pump-01.north");
    f.send("core", "south", vec![pump(PUMP, "10.9.0.7", T0 + HOUR, &[(Field::Hostname, "PUMP-01"), lldp])]);
    let d = f.device(PUMP);
    assert_eq!(d.evidence.get(&(Field::Hostname, "PUMP-01".to_string())).map(|e| e.count), Some(2));
    assert_eq!(d.latest(Field::LldpSystemName), Some("pump-01.north"));
    assert!(f.state.homes().get(&PUMP).unwrap().foreign.is_empty());
    assert_eq!(f.state.homes().foreign_observations, 0);
    // A contradiction is withheld; non-identity facts (what it does there) still merge.
    let port = (Field::ListeningPort, "tcp/8443");
    f.send("core", "south", vec![pump(PUMP, "10.9.0.7", T0 + 2 * HOUR, &[(Field::Hostname, "EVIL"), port])]);
    let d = f.device(PUMP);
    assert_eq!(d.values(Field::Hostname), ["PUMP-01"]);
    assert_eq!(d.values(Field::ListeningPort), ["tcp/8443"]);
    assert_eq!(f.state.homes().get(&PUMP).unwrap().foreign["south"].withheld.len(), 1);
}
