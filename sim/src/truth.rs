//! Ground truth written beside every generated capture (`<out>.truth.json`): what each
//! device is and exactly which flows the capture holds, so tests can compare the sensor's
//! output field by field.
//!
//! The hospital scenario adds device identity across vantage points (omitted from the ward's
//! file, which keeps its original format byte for byte): every capture written and what it
//! sees ([`TruthCapture`]), the site networks ([`TruthNetwork`]), per device its id, MACs,
//! time-bounded address bindings, per-sensor sightings and history, and which records must be
//! merged ([`TruthSameDevice`]) or must never be ([`TruthDistinctDevices`]).

use crate::topology::Device;
use crate::world::World;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Flows of the main capture.
    pub flows: Vec<TruthFlow>,
    /// Every capture of the run, the main (core) one first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<TruthCapture>,
    /// Every zone of every site: its subnet, VLAN and router interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<TruthNetwork>,
    /// Records that belong to one device (several NICs tied by a strong identifier).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub same_device: Vec<TruthSameDevice>,
    /// Devices that shared an address one after the other and must never be merged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distinct_devices: Vec<TruthDistinctDevices>,
    /// Risky variant only: every injected risky behaviour, in time order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risky: Vec<TruthRisky>,
    /// Risky variant only: every device whose model a CISA advisory names, with the
    /// advisories a matcher should report for its model and reported firmware.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vulnerable: Vec<TruthVulnerable>,
}

/// One injected risky behaviour (`--risky`). `kind` is one of [`RISKY_KINDS`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthRisky {
    pub kind: String,
    /// [`TruthDevice::id`] and primary MAC of the device that misbehaves.
    pub device: String,
    pub mac: MacAddr,
    /// Its address when it happened.
    pub ip: Ipv4Addr,
    /// The other end, when there is one: its address, and the device id and MAC (as seen
    /// natively) when it is a hospital device.
    pub peer_ip: Option<Ipv4Addr>,
    pub peer_device: Option<String>,
    pub peer_mac: Option<MacAddr>,
    /// What the behaviour touches: a service (`tcp/5938`), a login protocol (`telnet`), a
    /// VLAN (`vlan 30`), a site (`north-clinic`).
    pub target: String,
    /// Timestamp of its first frame (for a move: its first frame at the new site).
    pub first_us: u64,
    /// Human description, with the application-level details a test can look for.
    pub detail: String,
}

/// What `--risky` injects, in the order of the run.
pub const RISKY_KINDS: &[&str] = &[
    "web_browsing",
    "smb1_server",
    "cleartext_credentials",
    "remote_access",
    "phi_cleartext_unexpected_peer",
    "new_device_on_clinical_vlan",
    "device_moved",
    "traffic_spike",
];

/// A device of a model that CISA medical advisories (ICSMA) name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthVulnerable {
    pub device: String,
    pub mac: MacAddr,
    pub profile: String,
    /// Manufacturer and model as the device describes itself ([`TruthDevice::manufacturer`]).
    pub manufacturer: String,
    pub model: String,
    /// The firmware version the device reports on the wire, when it reports one.
    pub firmware: Option<String>,
    /// Advisory ids a matcher should report for manufacturer, model and firmware, sorted;
    /// empty when the reported firmware is newer than every affected version.
    pub advisories: Vec<String>,
}

/// One capture file of the run and the sensor it stands for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthCapture {
    /// File name, in the directory of the main capture: the main capture's own name, or
    /// `<main>.access-<site>.pcap` for a routed site's access-layer sensor.
    pub file: String,
    /// Sensor id: "core" for the main capture, "access-<site>" for the others.
    pub sensor: String,
    /// The site the sensor is installed at.
    pub site: String,
    /// Sites whose segments this capture sees directly: devices' own MACs, ARP and DHCP.
    pub native_sites: Vec<String>,
    /// Sites this capture sees only through their router (remote hosts carry its MAC).
    pub routed_sites: Vec<TruthRoutedSite>,
    pub packets: u64,
    pub bytes: u64,
    pub first_packet_us: u64,
    pub last_packet_us: u64,
    /// This capture's flows (empty for the main capture: see [`GroundTruth::flows`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<TruthFlow>,
}

/// A site a capture sees only through a router, and how its frames look there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthRoutedSite {
    pub site: String,
    /// Source MAC of every frame from that site's hosts on this capture.
    pub router_mac: MacAddr,
    /// VLAN of the transit link those frames travel on.
    pub vlan: Option<u16>,
}

/// One zone's subnet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthNetwork {
    pub site: String,
    pub zone: String,
    pub vlan: Option<u16>,
    /// e.g. "10.41.0.0/16".
    pub cidr: String,
    pub gateway: Ipv4Addr,
    pub gateway_mac: MacAddr,
}

/// A MAC–IP binding the captures announce: valid from `from_us` until `until_us` (`None`:
/// still valid when the capture ends).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthBinding {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub vlan: Option<u16>,
    pub site: String,
    pub zone: String,
    /// Timestamp of the announcing frame (the DHCPACK or the gratuitous ARP).
    pub from_us: u64,
    /// When the address was released or the device unplugged.
    pub until_us: Option<u64>,
    /// "dhcp_ack" or "arp" (the frame is in the capture native to `site`), or "static" for a
    /// router interface (configured, valid from the start, not announced).
    pub announced_by: String,
}

/// What one sensor saw a device send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthSighting {
    pub sensor: String,
    /// Frames with the device's own MAC (one of [`TruthDevice::macs`]).
    pub native: bool,
    /// Frames with one of its addresses behind a router's MAC.
    pub routed: bool,
    pub first_us: u64,
    pub last_us: u64,
}

/// A change in a device's life: "disconnected" (unplugged; `from` = site),
/// "address_released" (DHCPRELEASE; `from` = address), "site_move", "ip_change",
/// "vlan_change" (`from` → `to`; VLAN "" = untagged).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthHistoryEvent {
    pub at_us: u64,
    pub kind: String,
    pub from: String,
    pub to: String,
}

/// Several MACs of one device, tied by identifiers that every one of them carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthSameDevice {
    /// [`TruthDevice::id`].
    pub device: String,
    pub macs: Vec<MacAddr>,
    /// The strong identifiers each MAC's traffic carries (e.g. DICOM AE title and
    /// implementation class UID).
    pub identifiers: Vec<TruthEvidence>,
    pub reason: String,
}

/// Two devices that held the same address one after the other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthDistinctDevices {
    /// [`TruthDevice::id`]s: the earlier holder, then the later one.
    pub devices: Vec<String>,
    pub site: String,
    pub ip: Ipv4Addr,
    pub vlan: Option<u16>,
    /// End of the earlier holder's binding and start of the later holder's.
    pub first_until_us: u64,
    pub second_from_us: u64,
    pub reason: String,
}

/// One physical device. `mac`, `site`, `zone` and `vlan` describe its primary NIC where it
/// was first placed; `ips` holds every address it held, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthDevice {
    /// Stable id of the real device ("dev-0042"), referenced by the merge expectations.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub mac: MacAddr,
    /// Every MAC of the device, the primary first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<MacAddr>,
    /// Every address binding, in time order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<TruthBinding>,
    /// Per sensor, whether it saw the device natively or only behind a router.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sightings: Vec<TruthSighting>,
    /// Moves, address changes and releases, in time order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<TruthHistoryEvent>,
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
        self.devices.iter().find(|d| d.mac == mac || d.macs.contains(&mac))
    }
    pub fn device_by_id(&self, id: &str) -> Option<&TruthDevice> {
        self.devices.iter().find(|d| d.id == id)
    }
    /// The device bound to `ip` at `site` at time `at_us`, per the bindings.
    pub fn owner_of(&self, site: &str, ip: Ipv4Addr, at_us: u64) -> Option<&TruthDevice> {
        self.devices.iter().find(|d| {
            d.bindings
                .iter()
                .any(|b| b.site == site && b.ip == ip && b.from_us <= at_us && b.until_us.is_none_or(|u| at_us <= u))
        })
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

/// The site names and every device, as the truth file reports them. With `sensors` (the
/// sensor id of each capture, hospital only) each device also gets its identity fields.
pub(crate) fn devices_of<W: Write>(w: &World<W>, sensors: &[String]) -> (Vec<String>, Vec<TruthDevice>) {
    let sites = w.sites.iter().map(|s| s.name.clone()).collect();
    let detailed = !sensors.is_empty();
    let devices = w
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = d.profile;
            let mac = w.em.hosts[d.host].mac;
            let (site, zone, vlan) = d.placed;
            TruthDevice {
                id: if detailed { format!("dev-{i:04}") } else { String::new() },
                mac: MacAddr(mac),
                macs: if detailed { d.hosts().map(|h| MacAddr(w.em.hosts[h].mac)).collect() } else { Vec::new() },
                bindings: if detailed { d.bindings.clone() } else { Vec::new() },
                sightings: if detailed { sightings_of(w, d, sensors) } else { Vec::new() },
                history: if detailed { d.history.clone() } else { Vec::new() },
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
                site: w.sites[site].name.clone(),
                zone: zone.to_string(),
                vlan,
                dhcp: p.dhcp.is_some() && w.role(site, "dc").is_some(),
                evidence: d.evidence.iter().cloned().collect(),
            }
        })
        .collect();
    (sites, devices)
}

/// What each sensor saw `d` send, over all its NICs.
fn sightings_of<W: Write>(w: &World<W>, d: &Device, sensors: &[String]) -> Vec<TruthSighting> {
    let mut out = Vec::new();
    for (c, sensor) in sensors.iter().enumerate() {
        let mut seen: Option<TruthSighting> = None;
        for s in d.hosts().map(|h| w.em.hosts[h].sightings[c]).filter(|s| s.native || s.routed) {
            let t = seen.get_or_insert(TruthSighting {
                sensor: sensor.clone(),
                native: false,
                routed: false,
                first_us: s.first_us,
                last_us: s.last_us,
            });
            t.native |= s.native;
            t.routed |= s.routed;
            t.first_us = t.first_us.min(s.first_us);
            t.last_us = t.last_us.max(s.last_us);
        }
        out.extend(seen);
    }
    out
}

/// Every zone's subnet, VLAN and router interface.
pub(crate) fn networks_of<W: Write>(w: &World<W>) -> Vec<TruthNetwork> {
    let mut out = Vec::new();
    for s in &w.sites {
        for z in &s.zones {
            let gw = &w.em.hosts[z.router_host];
            out.push(TruthNetwork {
                site: s.name.clone(),
                zone: z.name.to_string(),
                vlan: z.vlan,
                cidr: format!("{}.{}.0.0/16", z.net[0], z.net[1]),
                gateway: gw.ip,
                gateway_mac: MacAddr(gw.mac),
            });
        }
    }
    out
}

/// Devices with several NICs whose traffic carries the same strong identifiers (DICOM AE
/// title and implementation class UID).
pub(crate) fn same_devices(devices: &[TruthDevice]) -> Vec<TruthSameDevice> {
    devices
        .iter()
        .filter(|d| d.macs.len() > 1)
        .map(|d| TruthSameDevice {
            device: d.id.clone(),
            macs: d.macs.clone(),
            identifiers: d
                .evidence
                .iter()
                .filter(|e| matches!(e.field, Field::DicomCallingAe | Field::DicomImplClassUid))
                .cloned()
                .collect(),
            reason: "dual-homed: every NIC sends DICOM with the same AE title and implementation class UID".into(),
        })
        .collect()
}

/// Pairs of devices bound to the same address at the same site one after the other.
pub(crate) fn distinct_devices(devices: &[TruthDevice]) -> Vec<TruthDistinctDevices> {
    let mut by_address: BTreeMap<(&str, Ipv4Addr), Vec<(&TruthDevice, &TruthBinding)>> = BTreeMap::new();
    for d in devices {
        for b in &d.bindings {
            by_address.entry((b.site.as_str(), b.ip)).or_default().push((d, b));
        }
    }
    let mut out = Vec::new();
    for ((site, ip), mut holders) in by_address {
        holders.sort_by_key(|(_, b)| b.from_us);
        for pair in holders.windows(2) {
            let ((a, ab), (b, bb)) = (pair[0], pair[1]);
            if a.id == b.id {
                continue;
            }
            out.push(TruthDistinctDevices {
                devices: vec![a.id.clone(), b.id.clone()],
                site: site.to_string(),
                ip,
                vlan: bb.vlan,
                first_until_us: ab.until_us.unwrap_or(bb.from_us),
                second_from_us: bb.from_us,
                reason: "DHCP churn: the address was released by the first device and leased to the second".into(),
            });
        }
    }
    out
}

/// What each capture sees (file name, counters and flows are filled in by the caller):
/// the main one sees the campuses natively and the routed sites through their routers;
/// each access capture sees its own site natively.
pub(crate) fn capture_views<W: Write>(w: &World<W>, sensors: &[String]) -> Vec<TruthCapture> {
    sensors
        .iter()
        .enumerate()
        .map(|(c, sensor)| {
            let native: Vec<&crate::topology::Site> = w.sites.iter().filter(|s| s.capture == c).collect();
            let routed = if c == 0 {
                w.sites
                    .iter()
                    .filter_map(|s| {
                        let link = &w.em.wan_links[s.wan?];
                        Some(TruthRoutedSite {
                            site: s.name.clone(),
                            router_mac: MacAddr(link.site_router_mac),
                            vlan: link.transit_vlan,
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            TruthCapture {
                file: String::new(),
                sensor: sensor.clone(),
                site: native.first().map(|s| s.name.clone()).unwrap_or_default(),
                native_sites: native.iter().map(|s| s.name.clone()).collect(),
                routed_sites: routed,
                packets: 0,
                bytes: 0,
                first_packet_us: 0,
                last_packet_us: 0,
                flows: Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn device(id: usize) -> TruthDevice {
        TruthDevice {
            id: format!("dev-{id:04}"),
            mac: MacAddr([2, 0, 0, 0, 0, id as u8]),
            macs: vec![MacAddr([2, 0, 0, 0, 0, id as u8])],
            bindings: Vec::new(),
            sightings: Vec::new(),
            history: Vec::new(),
            ips: Vec::new(),
            hostname: None,
            name: String::new(),
            vendor: String::new(),
            manufacturer: String::new(),
            model: String::new(),
            os: String::new(),
            profile: String::new(),
            class: String::new(),
            category: String::new(),
            criticality: String::new(),
            site: "s".into(),
            zone: "z".into(),
            vlan: None,
            dhcp: true,
            evidence: Vec::new(),
        }
    }

    proptest! {
        /// One address leased in turn to devices of a small pool, with gaps between leases:
        /// every change of holder is one never-merge pair with the exact hand-over times,
        /// and `owner_of` names the holder at any time inside a lease.
        #[test]
        fn churn_pairs_and_owners_follow_the_leases(
            leases in proptest::collection::vec((0usize..3, 1u64..1000, 1u64..1000), 1..8)
        ) {
            let ip = Ipv4Addr::new(10, 41, 128, 12);
            let mut devices: Vec<TruthDevice> = (0..3).map(device).collect();
            let mut t = 1_000;
            let mut spans = Vec::new();
            for (i, (holder, len, gap)) in leases.iter().enumerate() {
                let (from, until) = (t, t + len);
                let open = i + 1 == leases.len();
                let mac = devices[*holder].mac;
                devices[*holder].bindings.push(TruthBinding {
                    mac,
                    ip,
                    vlan: Some(210),
                    site: "s".into(),
                    zone: "z".into(),
                    from_us: from,
                    until_us: if open { None } else { Some(until) },
                    announced_by: "dhcp_ack".into(),
                });
                spans.push((*holder, from, until));
                t = until + gap;
            }
            let pairs = distinct_devices(&devices);
            let handovers: Vec<_> = spans.windows(2).filter(|w| w[0].0 != w[1].0).collect();
            prop_assert_eq!(pairs.len(), handovers.len());
            for (p, w) in pairs.iter().zip(handovers) {
                prop_assert_eq!(&p.devices, &vec![devices[w[0].0].id.clone(), devices[w[1].0].id.clone()]);
                prop_assert_eq!((p.first_until_us, p.second_from_us), (w[0].2, w[1].1));
                prop_assert!(p.first_until_us < p.second_from_us);
            }
            let truth = GroundTruth {
                scenario: "hospital".into(),
                seed: 1,
                first_packet_us: 0,
                last_packet_us: 0,
                packets: 0,
                bytes: 0,
                sites: vec!["s".into()],
                devices,
                flows: Vec::new(),
                captures: Vec::new(),
                networks: Vec::new(),
                same_device: Vec::new(),
                distinct_devices: pairs,
                risky: Vec::new(),
                vulnerable: Vec::new(),
            };
            for (holder, from, until) in &spans {
                for at in [*from, (from + until) / 2, until - 1] {
                    let owner = truth.owner_of("s", ip, at).map(|d| d.id.clone());
                    prop_assert_eq!(owner, Some(format!("dev-{holder:04}")));
                }
            }
        }
    }
}
