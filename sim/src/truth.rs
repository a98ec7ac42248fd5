//! Ground truth written beside every generated capture (`<out>.truth.json`): what each
//! device is and exactly which flows the capture holds, so tests can compare the sensor's
//! output field by field.

use crate::world::World;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::{Field, MacAddr};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub scenario: String,
    pub seed: u64,
    /// Timestamp of the first and last packet, microseconds since the Unix epoch.
    pub first_packet_us: u64,
    pub last_packet_us: u64,
    /// Every frame in the capture (IP and non-IP).
    pub packets: u64,
    /// Sum of frame lengths (Ethernet header, 802.1Q tag and padding included, no FCS).
    pub bytes: u64,
    pub sites: Vec<String>,
    pub devices: Vec<TruthDevice>,
    pub flows: Vec<TruthFlow>,
}

/// One physical device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthDevice {
    pub mac: MacAddr,
    pub ips: Vec<Ipv4Addr>,
    /// The hostname the capture reveals (DHCP option 12), if any.
    pub hostname: Option<String>,
    /// The generator's name for the device (what its hostname would be); always set.
    pub name: String,
    /// IEEE registry organisation name of the MAC's OUI, as in /usr/share/ieee-data/oui.txt.
    pub vendor: String,
    /// Brand shown to users when it differs from the registry name (e.g. "Philips").
    pub manufacturer: String,
    pub model: String,
    pub os: String,
    /// Stable profile key of the generator (one per distinct device kind).
    pub profile: String,
    /// Expected device class, snake_case ("infusion_pump", "ct", "pacs", ...).
    pub class: String,
    /// "medical", "iot", "ot" or "it".
    pub category: String,
    pub criticality: String,
    pub site: String,
    pub zone: String,
    /// Access VLAN; `None` for untagged segments and for routers that span VLANs.
    pub vlan: Option<u16>,
    /// True when the address came from a DHCP exchange in the capture.
    pub dhcp: bool,
    /// Identity facts the capture carries about this device (what a perfect sensor extracts).
    pub evidence: Vec<TruthEvidence>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TruthEvidence {
    pub field: Field,
    pub value: String,
}

/// All packets of one IPv4 5-tuple (plus VLAN) over the whole capture. A sensor may split
/// one such flow into several records on idle/active timeouts; sum them to compare.
/// `a` is the side that sent the first packet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthFlow {
    /// 6 (TCP) or 17 (UDP).
    pub ip_proto: u8,
    pub vlan: Option<u16>,
    /// MAC addresses as seen on the wire (a router's MAC for routed peers).
    pub a_mac: MacAddr,
    pub b_mac: MacAddr,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
    pub a_port: u16,
    pub b_port: u16,
    pub first_us: u64,
    pub last_us: u64,
    pub packets_ab: u64,
    pub packets_ba: u64,
    /// Frame bytes (same convention as [`GroundTruth::bytes`]).
    pub bytes_ab: u64,
    pub bytes_ba: u64,
    /// Transport payload bytes.
    pub payload_ab: u64,
    pub payload_ba: u64,
    /// Application protocol label ("dicom", "hl7", "dhcp", ...), as `Proto::as_str` spells it
    /// where such a variant exists.
    pub app: String,
    /// TCP sessions opened with a full 3-way handshake within this 5-tuple.
    pub tcp_sessions: u32,
}

impl GroundTruth {
    pub fn device_by_mac(&self, mac: MacAddr) -> Option<&TruthDevice> {
        self.devices.iter().find(|d| d.mac == mac)
    }
    pub fn device_by_ip(&self, ip: Ipv4Addr) -> Option<&TruthDevice> {
        self.devices.iter().find(|d| d.ips.contains(&ip))
    }
    pub fn flows_with_app<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a TruthFlow> + 'a {
        self.flows.iter().filter(move |f| f.app == app)
    }
    /// Reads a truth file written by [`crate::generate`].
    pub fn load(path: &std::path::Path) -> anyhow::Result<GroundTruth> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading ground truth {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing ground truth {}: not a file written by `wardline-sim`", path.display()))
    }
}

/// The site names and every device, as the truth file reports them.
pub(crate) fn devices_of<W: Write>(w: &World<W>) -> (Vec<String>, Vec<TruthDevice>) {
    let sites = w.sites.iter().map(|s| s.name.clone()).collect();
    let devices = w
        .devices
        .iter()
        .map(|d| {
            let p = d.profile;
            let mac = w.em.hosts[d.host].mac;
            TruthDevice {
                mac: MacAddr(mac),
                ips: d.ips.clone(),
                hostname: d.evidence.iter().find(|e| e.field == Field::Hostname).map(|e| e.value.clone()),
                name: d.hostname.clone().unwrap_or_default(),
                vendor: p.vendor.to_string(),
                manufacturer: p.manufacturer.to_string(),
                model: p.model.to_string(),
                os: p.os.to_string(),
                profile: p.key.to_string(),
                class: p.class.to_string(),
                category: p.category.to_string(),
                criticality: p.criticality.to_string(),
                site: w.sites[d.site].name.clone(),
                zone: d.zone.to_string(),
                vlan: d.vlan,
                dhcp: p.dhcp.is_some() && w.role(d.site, "dc").is_some(),
                evidence: d.evidence.iter().cloned().collect(),
            }
        })
        .collect();
    (sites, devices)
}
