//! Home sites of MAC devices: who may change a device's attributes (decision 0037).
//!
//! Any sensor may report any MAC. A device belongs to its *home* site, the first site whose
//! sensor reported it on its own segment. From a sensor of another site, where and when the
//! device was seen, its traffic, addresses and what it does there merge (so a move shows, and
//! `device_moved` is raised by the anomaly detectors), and so do identity facts that confirm
//! the device's or fill in a field it never had; an identity fact (name, vendor, model,
//! firmware, serial, identifiers: [`PROTECTED_FIELDS`]) that contradicts the device's values
//! is *withheld*: recorded here per foreign site, counted, shown with the device, never
//! merged. The device moves home only when its home site's own sensors kept capturing for
//! [`REHOME_AFTER_US`] after they last saw it and the other site saw it after that (a genuine
//! move: the home site lost it); from then on the new site's facts merge. So a rogue or
//! misconfigured sensor elsewhere can add sightings, never rewrite what the home site
//! established, and cannot move a device its home still sees. Deterministic: only packet
//! times in the replicated state decide, never a wall clock.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use wardline_common::{Field, MacAddr};

/// Capture time the home site's sensors must have kept running without seeing a device
/// before a sighting elsewhere moves its home (24 h).
pub const REHOME_AFTER_US: u64 = 24 * 3600 * 1_000_000;
/// Foreign sites remembered per device; sightings at more are counted in `foreign_dropped`.
pub const MAX_FOREIGN_SITES: usize = 8;
/// Distinct withheld (field, value) facts kept per foreign site; more are counted.
pub const MAX_WITHHELD_PER_SITE: usize = 32;
/// Sensors named per foreign site.
pub const MAX_FOREIGN_SENSORS: usize = 8;

/// A device's home site and what other sites reported about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHome {
    pub site: String,
    /// Latest packet time at which the home site's sensors saw the device (µs).
    pub home_last_seen_us: u64,
    /// How many times the device moved home (a confirmed move).
    pub rehomed: u64,
    /// Sightings at other sites that contradicted it (since it has this home), by site.
    pub foreign: BTreeMap<String, ForeignSighting>,
    /// Sightings at sites beyond [`MAX_FOREIGN_SITES`].
    pub foreign_dropped: u64,
}

/// What one other site's sensors reported against a device homed elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignSighting {
    pub sensors: BTreeSet<String>,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    /// Device observations from there with a withheld fact.
    pub observations: u64,
    /// Attribute facts reported there and not merged, distinct, in arrival order.
    pub withheld: Vec<WithheldFact>,
    /// Withheld facts beyond [`MAX_WITHHELD_PER_SITE`] (counted, not kept).
    pub withheld_dropped: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithheldFact {
    pub field: Field,
    pub value: String,
}

/// Every MAC device's home, and totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHomes {
    by_mac: BTreeMap<MacAddr, DeviceHome>,
    /// Foreign device observations with a withheld fact, per reporting sensor.
    pub foreign_by_sensor: BTreeMap<String, u64>,
    /// Foreign device observations of all sensors, and the facts withheld from them.
    pub foreign_observations: u64,
    pub withheld_facts: u64,
    /// Confirmed moves of all devices.
    pub rehomed: u64,
}

/// Fields that name what a device *is* — its name, vendor, model, firmware, serial number
/// and identifiers — and that another site's sensor may not change (decision 0037). Addresses,
/// services, peers and protocol details are what the device does where it is seen, and merge.
pub const PROTECTED_FIELDS: &[Field] = &[
    Field::Hostname,
    Field::DhcpVendorClass,
    Field::DhcpClientId,
    Field::NetbiosName,
    Field::MdnsName,
    Field::SsdpServer,
    Field::LldpSystemName,
    Field::LldpSystemDescription,
    Field::CdpDeviceId,
    Field::CdpPlatform,
    Field::CdpSoftwareVersion,
    Field::SnmpSysDescr,
    Field::SnmpSysObjectId,
    Field::SnmpSysName,
    Field::SnmpV3EngineId,
    Field::HttpServer,
    Field::SmbNativeOs,
    Field::DicomImplClassUid,
    Field::DicomImplVersion,
    Field::Hl7SendingAppUniversalId,
    Field::Hl7DeviceId,
    Field::SerialNumber,
    Field::OsHint,
];

pub fn is_protected(field: Field) -> bool {
    PROTECTED_FIELDS.contains(&field)
}

impl DeviceHomes {
    pub fn get(&self, mac: &MacAddr) -> Option<&DeviceHome> {
        self.by_mac.get(mac)
    }

    /// Whether an observation of `mac` at `site` (last packet `last_seen_us`) comes from the
    /// device's home site, recording the home on first sight. `derived_home` names the home
    /// of a device that has none recorded (one merged before this rule: its earliest site) and
    /// the latest packet time known of it; `home_sensors_latest_us(site)` is the latest packet
    /// time any sensor of `site` reported. A device its home lost for a day moves home here.
    pub fn is_home(
        &mut self,
        mac: MacAddr,
        site: &str,
        last_seen_us: u64,
        derived_home: impl FnOnce() -> (String, u64),
        home_sensors_latest_us: impl FnOnce(&str) -> u64,
    ) -> bool {
        let home = self.by_mac.entry(mac).or_insert_with(|| {
            let (site, home_last_seen_us) = derived_home();
            DeviceHome { site, home_last_seen_us, rehomed: 0, foreign: BTreeMap::new(), foreign_dropped: 0 }
        });
        if home.site == site {
            home.home_last_seen_us = home.home_last_seen_us.max(last_seen_us);
            return true;
        }
        // A genuine move: the home site's own sensors kept capturing for a day after they last
        // saw the device, and this site saw it after that.
        let home_now = home_sensors_latest_us(&home.site);
        let lost_at_home = home_now >= home.home_last_seen_us.saturating_add(REHOME_AFTER_US);
        if lost_at_home && last_seen_us > home.home_last_seen_us {
            home.site = site.to_string();
            home.home_last_seen_us = last_seen_us;
            home.rehomed = home.rehomed.saturating_add(1);
            home.foreign.remove(site);
            self.rehomed = self.rehomed.saturating_add(1);
            return true;
        }
        false
    }

    /// Record that `sensor` at `site` reported `mac` with attribute facts that would have
    /// changed what its home site established (`withheld`, not merged).
    pub fn withhold<'a>(
        &mut self,
        mac: MacAddr,
        sensor: &str,
        site: &str,
        first_seen_us: u64,
        last_seen_us: u64,
        withheld: impl Iterator<Item = (Field, &'a str)>,
    ) {
        let Some(home) = self.by_mac.get_mut(&mac) else { return };
        self.foreign_observations = self.foreign_observations.saturating_add(1);
        let by_sensor = self.foreign_by_sensor.entry(sensor.to_string()).or_default();
        *by_sensor = by_sensor.saturating_add(1);
        if !home.foreign.contains_key(site) && home.foreign.len() >= MAX_FOREIGN_SITES {
            home.foreign_dropped = home.foreign_dropped.saturating_add(1);
            self.withheld_facts = self.withheld_facts.saturating_add(withheld.count() as u64);
            return;
        }
        let seen = home.foreign.entry(site.to_string()).or_insert_with(|| ForeignSighting {
            first_seen_us,
            last_seen_us,
            ..ForeignSighting::default()
        });
        seen.first_seen_us = seen.first_seen_us.min(first_seen_us);
        seen.last_seen_us = seen.last_seen_us.max(last_seen_us);
        seen.observations = seen.observations.saturating_add(1);
        if seen.sensors.len() < MAX_FOREIGN_SENSORS || seen.sensors.contains(sensor) {
            seen.sensors.insert(sensor.to_string());
        }
        for (field, value) in withheld {
            self.withheld_facts = self.withheld_facts.saturating_add(1);
            if seen.withheld.iter().any(|w| w.field == field && w.value == value) {
                continue;
            }
            if seen.withheld.len() >= MAX_WITHHELD_PER_SITE {
                seen.withheld_dropped = seen.withheld_dropped.saturating_add(1);
                continue;
            }
            seen.withheld.push(WithheldFact { field, value: value.to_string() });
        }
    }
}
