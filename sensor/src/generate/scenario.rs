//! Scenarios: which devices exist where (sites, zones, VLANs, addresses) and which
//! periodic exchanges each one performs. The ward is one flat untagged segment; the
//! hospital is several sites, each a set of 802.1Q zones routed by a core switch.
//!
//! Every activity is a small state machine run by a time-ordered scheduler; each run emits
//! one complete exchange (a TCP session, a request/response, a burst) and says when it wants
//! to run again. Adding a device kind = a profile in `profiles.rs` + a `match` arm in
//! [`activities_for`].

use super::emit::{tcp_transaction, Emitter, Host, HostId, Stack, TcpConn};
use super::frames::{ETHERTYPE_LLDP, L2};
use super::profiles::{profile, Profile};
use super::protocols::{
    bacnet, dhcp, dicom, dns, hl7, http, lldp, netbios, smb, snmp, tls, vendor,
};
use super::truth::{TruthDevice, TruthEvidence};
use super::{GenerateOptions, Scenario};
use rand::Rng;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::{Field, MacAddr};

const SEC: u64 = 1_000_000;
const DOMAIN: &str = "hosp.local";

pub(crate) struct Device {
    pub profile: &'static Profile,
    pub host: HostId,
    pub ips: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub site: usize,
    pub zone: &'static str,
    pub vlan: Option<u16>,
    pub serial: String,
    pub evidence: BTreeSet<TruthEvidence>,
}

struct Zone {
    name: &'static str,
    vlan: Option<u16>,
    net: [u8; 2],
    router_host: HostId,
    next_static: u16,
    next_dhcp: u16,
}

struct Site {
    name: String,
    zones: Vec<Zone>,
    roles: HashMap<&'static str, usize>,
}

pub(crate) struct World<W: Write> {
    pub em: Emitter<W>,
    pub devices: Vec<Device>,
    sites: Vec<Site>,
    externals: HashMap<Ipv4Addr, HostId>,
    counter: u32,
}

impl<W: Write> World<W> {
    fn ev(&mut self, dev: usize, field: Field, value: impl Into<String>) {
        self.devices[dev].evidence.insert(TruthEvidence {
            field,
            value: value.into(),
        });
    }
    fn next(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }
    fn role(&self, site: usize, role: &str) -> Option<usize> {
        self.sites[site].roles.get(role).copied()
    }
    fn host(&self, dev: usize) -> HostId {
        self.devices[dev].host
    }
    fn ip(&self, dev: usize) -> Ipv4Addr {
        self.devices[dev].ips[0]
    }
    /// A server outside the hospital, reached through the client's gateway.
    fn external(&mut self, ip: Ipv4Addr) -> HostId {
        if let Some(h) = self.externals.get(&ip) {
            return *h;
        }
        let o = ip.octets();
        let h = self.em.add_host(Host::new(
            [0x02, 0, o[0], o[1], o[2], o[3]],
            ip,
            None,
            Stack::LINUX,
        ));
        self.externals.insert(ip, h);
        h
    }
    fn hostname(&self, dev: usize) -> String {
        self.devices[dev]
            .hostname
            .clone()
            .unwrap_or_else(|| self.ip(dev).to_string())
    }
}

/// HL7/DICOM style timestamp (UTC) from microseconds since the epoch.
pub fn hl7_time(us: u64) -> String {
    let secs = us / SEC;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The next MAC under `p`'s OUI: a per-OUI counter keeps addresses unique even when several
/// profiles share a vendor prefix; the salt varies the NIC-specific bytes between vendors.
fn mac_for(p: &Profile, per_oui: &mut HashMap<[u8; 3], u32>) -> [u8; 6] {
    let n = per_oui.entry(p.oui).or_insert(0);
    *n += 1;
    let tail = *n;
    let salt = p
        .oui
        .iter()
        .fold(0x5au8, |a, b| a.wrapping_mul(31).wrapping_add(*b));
    [
        p.oui[0],
        p.oui[1],
        p.oui[2],
        salt ^ (tail >> 16) as u8,
        (tail >> 8) as u8,
        tail as u8,
    ]
}

fn eui64(mac: [u8; 6]) -> String {
    format!(
        "{:02X}{:02X}{:02X}FFFE{:02X}{:02X}{:02X}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// Devices of one zone: (profile key, how many per unit of scale, fixed count).
type ZonePlan = (
    &'static str,
    Option<u16>,
    &'static [(&'static str, u32, u32)],
);

const WARD_PLAN: &[ZonePlan] = &[(
    "ward-3a",
    None,
    &[
        ("cisco_router", 0, 1),
        ("dell_dc", 0, 1),
        ("alaris_systems_manager", 0, 1),
        ("dell_pacs", 0, 1),
        ("hp_hl7_engine", 0, 1),
        ("philips_piic", 0, 1),
        ("ge_ct", 0, 1),
        ("alaris_pcu", 2, 0),
        ("philips_intellivue", 2, 0),
        ("win7_workstation", 1, 0),
        ("hp_printer", 0, 1),
    ],
)];

const HOSPITAL_PLAN: &[ZonePlan] = &[
    (
        "datacenter",
        Some(100),
        &[
            ("dell_dc", 0, 1),
            ("alaris_systems_manager", 0, 1),
            ("dell_pacs", 0, 1),
            ("dell_mwl", 0, 1),
            ("hp_hl7_engine", 0, 1),
            ("hp_lis", 0, 1),
            ("dell_ehr", 0, 1),
            ("dell_pyxis_server", 0, 1),
            ("cisco_call_manager", 0, 1),
            ("dell_nvr", 0, 1),
            ("dell_access_server", 0, 1),
        ],
    ),
    (
        "ward",
        Some(20),
        &[
            ("alaris_pcu", 4, 0),
            ("philips_intellivue", 3, 0),
            ("icu_pca", 1, 0),
            ("mindray_telemetry", 1, 0),
            ("win7_workstation", 2, 0),
            ("hp_printer", 0, 1),
            ("vocera_badge", 2, 0),
            ("rauland_nurse_call", 0, 1),
        ],
    ),
    (
        "icu",
        Some(30),
        &[
            ("philips_piic", 0, 1),
            ("drager_ventilator", 2, 0),
            ("ge_anesthesia", 1, 0),
            ("philips_intellivue", 3, 0),
            ("alaris_pcu", 3, 0),
            ("zoll_defib", 0, 1),
        ],
    ),
    (
        "radiology",
        Some(40),
        &[
            ("ge_ct", 0, 1),
            ("siemens_mr", 0, 1),
            ("carestream_xray", 0, 1),
            ("sonosite_us", 1, 0),
            ("win10_workstation", 1, 0),
        ],
    ),
    (
        "lab",
        Some(50),
        &[
            ("sysmex_analyzer", 0, 1),
            ("roche_analyzer", 0, 1),
            ("abbott_blood_gas", 0, 1),
            ("zebra_label_printer", 0, 1),
            ("win10_workstation", 0, 1),
        ],
    ),
    (
        "pharmacy",
        Some(60),
        &[
            ("bd_pyxis", 2, 0),
            ("win10_workstation", 0, 1),
            ("hp_printer", 0, 1),
        ],
    ),
    (
        "admin",
        Some(10),
        &[
            ("win10_workstation", 3, 0),
            ("hp_thin_client", 2, 0),
            ("hp_printer", 0, 1),
        ],
    ),
    ("voice", Some(80), &[("yealink_phone", 4, 0)]),
    (
        "building",
        Some(90),
        &[
            ("tridium_jace", 0, 1),
            ("jci_hvac", 2, 0),
            ("stanley_badge", 3, 0),
            ("axis_camera", 3, 0),
            ("aeroscout_rtls", 2, 0),
        ],
    ),
];

const SITE_NAMES: &[&str] = &["main-campus", "east-campus", "north-clinic", "west-clinic"];

/// Roles other devices look up by name within their site.
fn role_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "dell_dc" => "dc",
        "alaris_systems_manager" => "pump_server",
        "dell_pacs" => "pacs",
        "dell_mwl" => "mwl",
        "hp_hl7_engine" => "hl7_engine",
        "hp_lis" => "lis",
        "dell_ehr" => "ehr",
        "dell_pyxis_server" => "pyxis_server",
        "cisco_call_manager" => "call_manager",
        "dell_nvr" => "nvr",
        "dell_access_server" => "access_server",
        "philips_piic" => "central_station",
        "tridium_jace" => "bms",
        "rauland_nurse_call" => "nurse_call",
        _ => return None,
    })
}

pub(crate) fn build<W: Write>(opts: &GenerateOptions, em: Emitter<W>) -> World<W> {
    let mut w = World {
        em,
        devices: Vec::new(),
        sites: Vec::new(),
        externals: HashMap::new(),
        counter: 0,
    };
    let (plan, n_sites): (&[ZonePlan], usize) = match opts.scenario {
        Scenario::Ward => (WARD_PLAN, opts.sites.max(1) as usize),
        Scenario::Hospital => (HOSPITAL_PLAN, opts.sites.max(1) as usize),
    };
    let mult = opts.scale.device_multiplier.max(1);
    let mut per_profile: HashMap<&'static str, u32> = HashMap::new();
    let mut per_oui: HashMap<[u8; 3], u32> = HashMap::new();
    for s in 0..n_sites {
        let name = SITE_NAMES
            .get(s)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("site-{}", s + 1));
        // One core switch per site routes every zone; one interface (same MAC) per VLAN.
        let router_p = profile("cisco_router");
        let rn = per_profile.entry(router_p.key).or_insert(0);
        let router_mac = mac_for(router_p, &mut per_oui);
        *rn += 1;
        let router_dev = w.devices.len();
        w.devices.push(Device {
            profile: router_p,
            host: usize::MAX,
            ips: Vec::new(),
            hostname: Some(format!("core-sw-{}", s + 1)),
            site: s,
            zone: "core",
            vlan: None,
            serial: format!("FOC{:08}", s + 1),
            evidence: BTreeSet::new(),
        });
        let mut site = Site {
            name,
            zones: Vec::new(),
            roles: HashMap::new(),
        };
        for (zi, (zname, vlan, _)) in plan.iter().enumerate() {
            let net = match opts.scenario {
                Scenario::Ward => [10, (20 + s * 20) as u8],
                Scenario::Hospital => [10, (s * 20 + zi + 1) as u8],
            };
            let rip = Ipv4Addr::new(net[0], net[1], 0, 1);
            let mut rh = Host::new(router_mac, rip, *vlan, Stack::LINUX);
            rh.gateway = None;
            let router_host = w.em.add_host(rh);
            if w.devices[router_dev].host == usize::MAX {
                w.devices[router_dev].host = router_host;
            }
            w.devices[router_dev].ips.push(rip);
            site.zones.push(Zone {
                name: zname,
                vlan: *vlan,
                net,
                router_host,
                next_static: 2,
                next_dhcp: 0,
            });
        }
        w.sites.push(site);
        for (zi, (_, _, members)) in plan.iter().enumerate() {
            for &(key, per_unit, fixed) in members.iter() {
                if key == "cisco_router" {
                    continue;
                }
                let p = profile(key);
                let count = per_unit * mult + fixed;
                for _ in 0..count {
                    let n = per_profile.entry(p.key).or_insert(0);
                    let idx = *n;
                    *n += 1;
                    let mac = mac_for(p, &mut per_oui);
                    let zone = &mut w.sites[s].zones[zi];
                    let ip = if p.dhcp.is_some() {
                        let k = zone.next_dhcp;
                        zone.next_dhcp += 1;
                        // DHCP pool: x.y.128.10 upwards; static hosts use x.y.0.2 .. x.y.127.251.
                        Ipv4Addr::new(
                            zone.net[0],
                            zone.net[1],
                            128 + (k / 240) as u8,
                            10 + (k % 240) as u8,
                        )
                    } else {
                        let k = zone.next_static;
                        zone.next_static += 1;
                        Ipv4Addr::new(
                            zone.net[0],
                            zone.net[1],
                            ((k - 2) / 250) as u8,
                            2 + ((k - 2) % 250) as u8,
                        )
                    };
                    let mut h = Host::new(mac, ip, zone.vlan, p.stack);
                    h.gateway = Some(zone.router_host);
                    let (zname, vlan) = (zone.name, zone.vlan);
                    let host = w.em.add_host(h);
                    let hostname = match p.key {
                        "win7_workstation" | "win10_workstation" | "hp_thin_client" => {
                            format!(
                                "{}-{}{:03}",
                                zname.to_uppercase(),
                                p.hostname_prefix,
                                idx + 1
                            )
                        }
                        "hp_printer" => format!("NPI{:02X}{:02X}{:02X}", mac[3], mac[4], mac[5]),
                        "axis_camera" => format!("axis-{}", hex::encode(mac)),
                        _ if p.hostname_prefix.ends_with('-') => {
                            format!(
                                "{}{:02X}{:02X}{:02X}",
                                p.hostname_prefix, mac[3], mac[4], mac[5]
                            )
                        }
                        _ => format!("{}{:02}", p.hostname_prefix, s + 1),
                    };
                    let serial = format!(
                        "{}{:06}",
                        &p.key[..3].to_uppercase(),
                        idx * 7919 % 1_000_000 + s as u32
                    );
                    let dev = w.devices.len();
                    w.devices.push(Device {
                        profile: p,
                        host,
                        ips: vec![ip],
                        hostname: Some(hostname),
                        site: s,
                        zone: zname,
                        vlan,
                        serial,
                        evidence: BTreeSet::new(),
                    });
                    if let Some(role) = role_of(p.key) {
                        w.sites[s].roles.entry(role).or_insert(dev);
                    }
                }
            }
        }
    }
    w
}

/// One scheduled behaviour.
pub(crate) enum Act {
    Boot {
        dev: usize,
    },
    Lldp {
        router: usize,
        zone: usize,
    },
    AlarisCheckin {
        pump: usize,
        server: usize,
        seq: u32,
    },
    IntellivuePoll {
        central: usize,
        monitor: usize,
        poll: u16,
        associated: bool,
    },
    Hl7Oru {
        sender: usize,
        receiver: usize,
        kind: Hl7Kind,
    },
    DicomStore {
        modality: usize,
        pacs: usize,
    },
    DicomWorklist {
        modality: usize,
        mwl: usize,
    },
    WinStartup {
        ws: usize,
    },
    WebBrowse {
        ws: usize,
    },
    Smb {
        ws: usize,
        server: usize,
    },
    PrintIpp {
        ws: usize,
        printer: usize,
    },
    PrintRaw {
        ws: usize,
        printer: usize,
    },
    SnmpPoll {
        manager: usize,
        agent: usize,
    },
    PrinterWeb {
        ws: usize,
        printer: usize,
    },
    Sip {
        phone: usize,
        pbx: usize,
    },
    RtpCall {
        a: usize,
        b: usize,
    },
    Bacnet {
        bms: usize,
        controller: usize,
        invoke: u8,
    },
    Rtsp {
        nvr: usize,
        camera: usize,
        seq: u16,
    },
    Ascii {
        client: usize,
        server: usize,
        port: u16,
        app: &'static str,
        kind: &'static str,
        udp: bool,
    },
    Tls {
        client: usize,
        server: Option<usize>,
        ext_ip: Ipv4Addr,
        sni: &'static str,
        profile: tls::ClientProfile,
    },
    Rdp {
        client: usize,
        server: usize,
    },
    Ntp {
        client: usize,
        server: usize,
    },
    Syslog {
        dev: usize,
        server: usize,
    },
    Telnet {
        client: usize,
        server: usize,
    },
}

#[derive(Clone, Copy)]
pub(crate) enum Hl7Kind {
    /// A monitor reporting its own vitals (device id = its EUI-64).
    MonitorVitals,
    /// The central station gateway forwarding one monitor's vitals.
    Gateway { monitor: usize },
    /// A lab analyzer result.
    LabResult,
    /// The EHR's ADT feed.
    Adt,
}

/// The exchanges a device performs, keyed by its profile.
fn activities_for<W: Write>(w: &World<W>, dev: usize, out: &mut Vec<(u64, Act)>) {
    let d = &w.devices[dev];
    let s = d.site;
    let role = |r: &str| w.role(s, r);
    let same_zone_ws = || {
        w.devices.iter().position(|o| {
            o.site == s
                && o.zone == d.zone
                && matches!(o.profile.key, "win7_workstation" | "win10_workstation")
        })
    };
    let boot_at = 1 + (dev as u64 % 20);
    out.push((boot_at * SEC / 2, Act::Boot { dev }));
    let later = |secs: u64| (boot_at + secs) * SEC;
    match d.profile.key {
        "cisco_router" => {
            let zones = w.sites[s].zones.len();
            for zone in 0..zones {
                out.push((
                    SEC / 4 + zone as u64 * 1000,
                    Act::Lldp { router: dev, zone },
                ));
            }
        }
        "alaris_pcu" => {
            if let Some(server) = role("pump_server") {
                out.push((
                    later(5),
                    Act::AlarisCheckin {
                        pump: dev,
                        server,
                        seq: 0,
                    },
                ));
            }
        }
        "philips_intellivue" => {
            if let Some(central) = role("central_station") {
                out.push((
                    later(8),
                    Act::IntellivuePoll {
                        central,
                        monitor: dev,
                        poll: 0,
                        associated: false,
                    },
                ));
                out.push((
                    later(20),
                    Act::Hl7Oru {
                        sender: dev,
                        receiver: central,
                        kind: Hl7Kind::MonitorVitals,
                    },
                ));
                if let Some(engine) = role("hl7_engine") {
                    out.push((
                        later(25),
                        Act::Hl7Oru {
                            sender: central,
                            receiver: engine,
                            kind: Hl7Kind::Gateway { monitor: dev },
                        },
                    ));
                }
            }
        }
        "ge_ct" | "siemens_mr" | "carestream_xray" | "sonosite_us" => {
            if let Some(pacs) = role("pacs") {
                out.push((
                    later(15),
                    Act::DicomStore {
                        modality: dev,
                        pacs,
                    },
                ));
            }
            if let Some(mwl) = role("mwl") {
                out.push((later(10), Act::DicomWorklist { modality: dev, mwl }));
            }
        }
        "win7_workstation" | "win10_workstation" => {
            out.push((later(2), Act::WinStartup { ws: dev }));
            out.push((later(40), Act::WebBrowse { ws: dev }));
            if let Some(dc) = role("dc") {
                out.push((
                    later(60),
                    Act::Smb {
                        ws: dev,
                        server: dc,
                    },
                ));
            }
            if let Some(ehr) = role("ehr") {
                out.push((
                    later(30),
                    Act::Tls {
                        client: dev,
                        server: Some(ehr),
                        ext_ip: Ipv4Addr::UNSPECIFIED,
                        sni: "ehr.hosp.local",
                        profile: tls::WINDOWS7_SCHANNEL,
                    },
                ));
            }
        }
        "hp_printer" => {
            if let Some(ws) = same_zone_ws() {
                out.push((later(30), Act::PrinterWeb { ws, printer: dev }));
                out.push((later(45), Act::PrintIpp { ws, printer: dev }));
                out.push((
                    later(12),
                    Act::SnmpPoll {
                        manager: ws,
                        agent: dev,
                    },
                ));
            }
        }
        "zebra_label_printer" => {
            if let Some(ws) = same_zone_ws() {
                out.push((later(20), Act::PrintRaw { ws, printer: dev }));
            }
        }
        "icu_pca" => {
            // Hospira MedNet runs on the pump server role here; a biomed telnet session is the
            // documented risky exposure (ICSA-15-125-01B).
            if let Some(server) = role("pump_server") {
                out.push((
                    later(10),
                    Act::Tls {
                        client: dev,
                        server: Some(server),
                        ext_ip: Ipv4Addr::UNSPECIFIED,
                        sni: "mednet.hosp.local",
                        profile: tls::EMBEDDED_OPENSSL,
                    },
                ));
            }
            if let Some(ws) = w
                .devices
                .iter()
                .position(|o| o.site == s && o.profile.key == "win7_workstation")
            {
                out.push((
                    later(90),
                    Act::Telnet {
                        client: ws,
                        server: dev,
                    },
                ));
            }
        }
        "mindray_telemetry" | "drager_ventilator" | "ge_anesthesia" => {
            if let Some(gw) = role("hl7_engine") {
                out.push((
                    later(20),
                    Act::Hl7Oru {
                        sender: dev,
                        receiver: gw,
                        kind: Hl7Kind::MonitorVitals,
                    },
                ));
            }
            if d.profile.key == "ge_anesthesia" {
                if let Some(ntp) = role("dc") {
                    out.push((
                        later(3),
                        Act::Ntp {
                            client: dev,
                            server: ntp,
                        },
                    ));
                }
            }
        }
        "zoll_defib" => {
            out.push((
                later(60),
                Act::Tls {
                    client: dev,
                    server: None,
                    ext_ip: Ipv4Addr::new(52, 45, 120, 17),
                    sni: "casereview.zollonline.com",
                    profile: tls::EMBEDDED_OPENSSL,
                },
            ));
        }
        "sysmex_analyzer" | "roche_analyzer" | "abbott_blood_gas" => {
            if let Some(lis) = role("lis") {
                out.push((
                    later(15),
                    Act::Hl7Oru {
                        sender: dev,
                        receiver: lis,
                        kind: Hl7Kind::LabResult,
                    },
                ));
            }
        }
        "dell_ehr" => {
            if let Some(engine) = role("hl7_engine") {
                out.push((
                    later(30),
                    Act::Hl7Oru {
                        sender: dev,
                        receiver: engine,
                        kind: Hl7Kind::Adt,
                    },
                ));
            }
        }
        "bd_pyxis" => {
            if let Some(server) = role("pyxis_server") {
                out.push((
                    later(20),
                    Act::Tls {
                        client: dev,
                        server: Some(server),
                        ext_ip: Ipv4Addr::UNSPECIFIED,
                        sni: "pyxis-es.hosp.local",
                        profile: tls::MODERN_BROWSER,
                    },
                ));
            }
        }
        "hp_thin_client" => {
            if let Some(server) = role("ehr") {
                out.push((
                    later(10),
                    Act::Rdp {
                        client: dev,
                        server,
                    },
                ));
            }
        }
        "yealink_phone" => {
            if let Some(pbx) = role("call_manager") {
                out.push((later(3), Act::Sip { phone: dev, pbx }));
                let phones: Vec<usize> = w
                    .devices
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.site == s && o.profile.key == "yealink_phone")
                    .map(|(i, _)| i)
                    .collect();
                if let Some(pos) = phones.iter().position(|&p| p == dev) {
                    if pos % 2 == 0 && pos + 1 < phones.len() {
                        out.push((
                            later(30),
                            Act::RtpCall {
                                a: dev,
                                b: phones[pos + 1],
                            },
                        ));
                    }
                }
            }
        }
        "vocera_badge" => {
            if let Some(pbx) = role("call_manager") {
                out.push((
                    later(5),
                    Act::Ascii {
                        client: dev,
                        server: pbx,
                        port: 5002,
                        app: "vocera",
                        kind: "VOCERA_KEEPALIVE",
                        udp: true,
                    },
                ));
            }
        }
        "jci_hvac" => {
            if let Some(bms) = role("bms") {
                out.push((
                    later(5),
                    Act::Bacnet {
                        bms,
                        controller: dev,
                        invoke: 0,
                    },
                ));
            }
        }
        "stanley_badge" => {
            if let Some(server) = role("access_server") {
                out.push((
                    later(7),
                    Act::Ascii {
                        client: dev,
                        server,
                        port: 3001,
                        app: "access_control",
                        kind: "BADGE",
                        udp: false,
                    },
                ));
            }
        }
        "axis_camera" => {
            if let Some(nvr) = role("nvr") {
                out.push((
                    later(6),
                    Act::Rtsp {
                        nvr,
                        camera: dev,
                        seq: 0,
                    },
                ));
            }
        }
        "rauland_nurse_call" => {
            if let Some(engine) = role("hl7_engine") {
                out.push((
                    later(25),
                    Act::Ascii {
                        client: dev,
                        server: engine,
                        port: 5001,
                        app: "nurse_call",
                        kind: "NURSECALL",
                        udp: false,
                    },
                ));
            }
        }
        "aeroscout_rtls" => {
            if let Some(engine) = role("access_server") {
                out.push((
                    later(2),
                    Act::Ascii {
                        client: dev,
                        server: engine,
                        port: 1144,
                        app: "rtls",
                        kind: "TAGREPORT",
                        udp: true,
                    },
                ));
            }
        }
        "dell_pacs" | "dell_mwl" | "hp_lis" | "dell_nvr" => {
            if let Some(dc) = role("dc") {
                out.push((later(50), Act::Syslog { dev, server: dc }));
            }
        }
        _ => {}
    }
}

pub(crate) fn schedule<W: Write>(w: &World<W>) -> Vec<(u64, Act)> {
    let mut out = Vec::new();
    for dev in 0..w.devices.len() {
        activities_for(w, dev, &mut out);
    }
    out
}

/// Runs every activity in time order until `end_us` (or `max_packets`).
pub(crate) fn run<W: Write>(
    w: &mut World<W>,
    acts: Vec<(u64, Act)>,
    start_us: u64,
    end_us: u64,
    max_packets: Option<u64>,
) -> anyhow::Result<()> {
    let mut heap = BinaryHeap::new();
    let mut slots: Vec<Act> = Vec::with_capacity(acts.len());
    for (i, (t, a)) in acts.into_iter().enumerate() {
        heap.push(Reverse((start_us + t, i)));
        slots.push(a);
    }
    while let Some(Reverse((t, i))) = heap.pop() {
        if t > end_us || max_packets.is_some_and(|m| w.em.packets() >= m) {
            break;
        }
        w.em.now_us = w.em.now_us.max(t);
        if let Some(next) = step(w, &mut slots[i])? {
            let jitter = w.em.rng.gen_range(0..=next / 10 + 1);
            heap.push(Reverse((t + next + jitter, i)));
        }
    }
    Ok(())
}

fn ascii_fields<W: Write>(w: &mut World<W>, kind: &str, dev: usize) -> Vec<u8> {
    let n = w.next();
    let room = 300 + (n % 40);
    let serial = w.devices[dev].serial.clone();
    match kind {
        "BADGE" => vendor::ascii_event(
            "DOOR_EVENT",
            &[
                ("reader", serial),
                ("card", format!("{:08}", n * 37 % 99_999_999)),
                ("result", "GRANTED".into()),
            ],
        ),
        "NURSECALL" => vendor::ascii_event(
            "CALL",
            &[
                ("station", serial),
                ("room", room.to_string()),
                ("bed", "A".into()),
                ("priority", "NORMAL".into()),
            ],
        ),
        "TAGREPORT" => vendor::ascii_event(
            "TAG",
            &[
                ("receiver", serial),
                ("tag", format!("000CCC{:06X}", n)),
                ("rssi", format!("-{}", 40 + n % 50)),
            ],
        ),
        _ => vendor::ascii_event(kind, &[("id", serial), ("seq", n.to_string())]),
    }
}

/// Runs one activity; returns the delay until its next run.
fn step<W: Write>(w: &mut World<W>, act: &mut Act) -> anyhow::Result<Option<u64>> {
    match act {
        Act::Boot { dev } => {
            boot(w, *dev)?;
            Ok(None)
        }
        Act::Lldp { router, zone } => {
            let (router, zone) = (*router, *zone);
            let site = w.devices[router].site;
            let z = &w.sites[site].zones[zone];
            let rh = z.router_host;
            let h = &w.em.hosts[rh];
            let (mac, vlan, ip) = (h.mac, h.vlan, h.ip);
            let name = w.hostname(router);
            let descr = "Cisco IOS Software [Bengaluru], Catalyst L3 Switch Software (CAT9K_IOSXE), Version 17.6.4";
            let body = lldp::frame_body(
                mac,
                &format!("Gi1/0/{}", zone + 1),
                &name,
                descr,
                ip.octets(),
            );
            let l2 = L2 {
                src: mac,
                dst: lldp::LLDP_MULTICAST,
                vlan,
            };
            w.em.raw(l2, ETHERTYPE_LLDP, &body)?;
            w.ev(router, Field::LldpSystemName, name);
            w.ev(router, Field::LldpSystemDescription, descr);
            Ok(Some(30 * SEC))
        }
        Act::AlarisCheckin { pump, server, seq } => {
            let (p, s) = (*pump, *server);
            *seq += 1;
            let d = &w.devices[p];
            let status = vendor::alaris_status(
                *seq,
                &d.serial,
                "8015",
                "9.33.1.4",
                "DL-2024-03",
                *seq % 3 != 0,
            );
            let (ch, sh) = (w.host(p), w.host(s));
            let mut conn = TcpConn::open(&mut w.em, ch, sh, 3613, "alaris")?;
            conn.request(&mut w.em, &status, &vendor::alaris_ack(*seq))?;
            conn.close(&mut w.em, true)?;
            w.ev(p, Field::VendorProtocol, "alaris/tcp 3613");
            w.ev(s, Field::ListeningPort, "tcp/3613");
            Ok(Some(30 * SEC))
        }
        Act::IntellivuePoll {
            central,
            monitor,
            poll,
            associated,
        } => {
            let (c, m) = (w.host(*central), w.host(*monitor));
            if !*associated {
                // The data export client associates once, then polls every second.
                w.em.udp_exchange(
                    c,
                    m,
                    24105,
                    24105,
                    &vendor::intellivue_assoc_request(),
                    Some(&vendor::intellivue_assoc_result()),
                    "intellivue",
                )?;
                *associated = true;
                w.ev(*monitor, Field::VendorProtocol, "intellivue/udp 24105");
            }
            *poll = poll.wrapping_add(1);
            let hr = 60 + u32::from(*poll % 30);
            let spo2 = 94 + u32::from(*poll % 5);
            let req = vendor::intellivue_poll_request(*poll, *poll);
            let res = vendor::intellivue_poll_result(
                *poll,
                *poll,
                &[(0x4182, hr), (0x4bb8, spo2), (0x4a05, 120)],
            );
            w.em.udp_exchange(c, m, 24105, 24105, &req, Some(&res), "intellivue")?;
            Ok(Some(SEC))
        }
        Act::Hl7Oru {
            sender,
            receiver,
            kind,
        } => {
            hl7_exchange(w, *sender, *receiver, *kind)?;
            let period = match kind {
                Hl7Kind::MonitorVitals => 60,
                Hl7Kind::Gateway { .. } => 30,
                Hl7Kind::LabResult => 45,
                Hl7Kind::Adt => 90,
            };
            Ok(Some(period * SEC))
        }
        Act::DicomStore { modality, pacs } => {
            dicom_store(w, *modality, *pacs)?;
            Ok(Some(120 * SEC))
        }
        Act::DicomWorklist { modality, mwl } => {
            dicom_worklist(w, *modality, *mwl)?;
            Ok(Some(300 * SEC))
        }
        Act::WinStartup { ws } => {
            win_startup(w, *ws)?;
            Ok(None)
        }
        Act::WebBrowse { ws } => {
            let ws = *ws;
            let ip = Ipv4Addr::new(204, 79, 197, 200);
            dns_lookup(w, ws, "www.bing.com", Some(ip))?;
            let ext = w.external(ip);
            let client = w.host(ws);
            tls_session(w, client, ext, "www.bing.com", &tls::WINDOWS7_SCHANNEL, 3)?;
            w.ev(ws, Field::TlsSni, "www.bing.com");
            Ok(Some(90 * SEC))
        }
        Act::Smb { ws, server } => {
            let (c, s) = (w.host(*ws), w.host(*server));
            let mut guid = [0u8; 16];
            w.em.rng.fill(&mut guid);
            let req = smb::negotiate_request(guid, &[0x0202, 0x0210]);
            let resp = smb::negotiate_response([0x5a; 16], 0x0210, smb::filetime(w.em.now_us));
            tcp_transaction(&mut w.em, c, s, 445, "smb", &req, &resp)?;
            w.ev(*server, Field::SmbDialect, "2.1");
            w.ev(*server, Field::ListeningPort, "tcp/445");
            Ok(Some(300 * SEC))
        }
        Act::PrintIpp { ws, printer } => {
            let (ws, printer) = (*ws, *printer);
            let n = w.next();
            let pip = w.ip(printer);
            let uri = format!("ipp://{pip}/ipp/print");
            let doc: Vec<u8> = b"\x1b%-12345X@PJL JOB NAME=\"Discharge summary\"\r\n"
                .iter()
                .copied()
                .cycle()
                .take(6000)
                .collect();
            let body = http::ipp_print_job(n, &uri, "nurse", "Discharge summary", &doc);
            let req = http::post(
                &format!("{pip}:631"),
                "/ipp/print",
                "Microsoft-Windows/6.1 UPnP/1.0",
                "application/ipp",
                &body,
            );
            let resp = http::response(
                "HP HTTP Server; HP LaserJet M402dn - C5F94A",
                "application/ipp",
                &http::ipp_print_job_response(n, 100 + n),
            );
            let (c, s) = (w.host(ws), w.host(printer));
            tcp_transaction(&mut w.em, c, s, 631, "ipp", &req, &resp)?;
            w.ev(printer, Field::ListeningPort, "tcp/631");
            Ok(Some(180 * SEC))
        }
        Act::PrintRaw { ws, printer } => {
            let zpl = b"^XA^FO50,50^A0N,40,40^FDSPECIMEN 0042 HGB^FS^BY2^FO50,120^BCN,80,Y,N,N^FD0042^FS^XZ\r\n";
            let (c, s) = (w.host(*ws), w.host(*printer));
            let mut conn = TcpConn::open(&mut w.em, c, s, 9100, "raw_print")?;
            conn.send(&mut w.em, true, zpl)?;
            conn.close(&mut w.em, true)?;
            w.ev(*printer, Field::ListeningPort, "tcp/9100");
            Ok(Some(120 * SEC))
        }
        Act::SnmpPoll { manager, agent } => {
            let (m, a) = (*manager, *agent);
            let n = w.next();
            let descr = "HP ETHERNET MULTI-ENVIRONMENT,ROM none,JETDIRECT,JD153,EEPROM JSI23900012,CIDATE 02/05/2015";
            let name = w.hostname(a);
            let req = snmp::get_system("public", n);
            let resp = snmp::system_response("public", n, descr, "1.3.6.1.4.1.11.2.3.9.1", &name);
            let (mh, ah) = (w.host(m), w.host(a));
            let port = 49152 + (n % 1000) as u16;
            w.em.udp_exchange(mh, ah, port, 161, &req, Some(&resp), "snmp")?;
            w.ev(a, Field::SnmpSysDescr, descr);
            w.ev(a, Field::SnmpSysObjectId, "1.3.6.1.4.1.11.2.3.9.1");
            w.ev(m, Field::SnmpCommunityInUse, "public");
            Ok(Some(60 * SEC))
        }
        Act::PrinterWeb { ws, printer } => {
            let (ws, printer) = (*ws, *printer);
            let server = "HP HTTP Server; HP LaserJet M402dn - C5F94A; Serial Number: PHBBK12345; Built: Thu Feb 05, 2015 04:26:16PM {FDP1CN1505BR}";
            let ua = ua_of(w.devices[ws].profile.os);
            let pip = w.ip(printer).to_string();
            let req = http::get(&pip, "/hp/device/DeviceStatus/Index", ua);
            let resp = http::response(
                server,
                "text/html; charset=utf-8",
                b"<html><head><title>HP LaserJet M402dn</title></head><body>Ready</body></html>",
            );
            let (c, s) = (w.host(ws), w.host(printer));
            tcp_transaction(&mut w.em, c, s, 80, "http", &req, &resp)?;
            w.ev(printer, Field::HttpServer, server);
            w.ev(ws, Field::HttpUserAgent, ua);
            w.ev(printer, Field::ListeningPort, "tcp/80");
            Ok(Some(600 * SEC))
        }
        Act::Sip { phone, pbx } => {
            let (p, x) = (*phone, *pbx);
            let n = w.next();
            let ua = "Yealink SIP-T46S 66.86.0.15";
            let pip = w.ip(p).to_string();
            let user = format!("{}", 4000 + p);
            let call_id = format!("{:08x}", n.wrapping_mul(2_654_435_761));
            let req = vendor::sip_register(&user, DOMAIN, &pip, 5060, &call_id, n, ua);
            let resp = vendor::sip_ok(&user, DOMAIN, &pip, 5060, &call_id, n, "Cisco-CUCM14.0");
            let (ph, xh) = (w.host(p), w.host(x));
            w.em.udp_exchange(ph, xh, 5060, 5060, &req, Some(&resp), "sip")?;
            w.ev(p, Field::VendorProtocol, format!("sip user-agent {ua}"));
            Ok(Some(120 * SEC))
        }
        Act::RtpCall { a, b } => {
            let (ah, bh) = (w.host(*a), w.host(*b));
            let leg = w.em.leg(ah, bh);
            let ssrc_a: u32 = w.em.rng.gen();
            let ssrc_b: u32 = w.em.rng.gen();
            let base: u16 = w.em.rng.gen_range(0..30000);
            // 10 seconds of G.711 both ways, 20 ms packets.
            for i in 0..500u16 {
                let ts = u32::from(i) * 160;
                w.em.udp(
                    &leg,
                    ah,
                    bh,
                    true,
                    16384,
                    16386,
                    &vendor::rtp_pcmu(base.wrapping_add(i), ts, ssrc_a, 0xff),
                    "rtp",
                )?;
                w.em.gap(100, 400);
                w.em.udp(
                    &leg,
                    ah,
                    bh,
                    false,
                    16384,
                    16386,
                    &vendor::rtp_pcmu(base.wrapping_add(i), ts, ssrc_b, 0x7f),
                    "rtp",
                )?;
                w.em.gap(2000, 3000);
            }
            Ok(Some(240 * SEC))
        }
        Act::Bacnet {
            bms,
            controller,
            invoke,
        } => {
            let (b, c) = (*bms, *controller);
            let (bh, ch) = (w.host(b), w.host(c));
            if *invoke == 0 {
                // Discovery first: Who-Is broadcast from the supervisor, I-Am back.
                let h = &w.em.hosts[bh];
                let bcast = Ipv4Addr::new(h.ip.octets()[0], h.ip.octets()[1], 255, 255);
                let l2 = L2 {
                    src: h.mac,
                    dst: [0xff; 6],
                    vlan: h.vlan,
                };
                let (ip, ttl) = (h.ip, h.stack.ttl);
                w.em.udp_raw(
                    l2,
                    ip,
                    bcast,
                    ttl,
                    bh,
                    47808,
                    47808,
                    &bacnet::who_is(),
                    "bacnet",
                )?;
                w.em.gap(2000, 9000);
                let inst = 1000 + c as u32;
                w.em.udp_exchange(ch, bh, 47808, 47808, &bacnet::i_am(inst, 5), None, "bacnet")?;
                w.ev(c, Field::VendorProtocol, "bacnet/udp 47808 vendor-id 5");
            }
            *invoke = invoke.wrapping_add(1).max(1);
            let temp = 21.0 + f32::from(*invoke % 10) / 10.0;
            let req = bacnet::read_property(
                *invoke,
                bacnet::OBJECT_ANALOG_INPUT,
                1,
                bacnet::PROP_PRESENT_VALUE,
            );
            let resp = bacnet::read_property_ack(
                *invoke,
                bacnet::OBJECT_ANALOG_INPUT,
                1,
                bacnet::PROP_PRESENT_VALUE,
                temp,
            );
            w.em.udp_exchange(bh, ch, 47808, 47808, &req, Some(&resp), "bacnet")?;
            Ok(Some(10 * SEC))
        }
        Act::Rtsp { nvr, camera, seq } => {
            let (n, c) = (*nvr, *camera);
            let (nh, ch) = (w.host(n), w.host(c));
            let url = format!("rtsp://{}/axis-media/media.amp", w.ip(c));
            let ua = "Milestone XProtect RTSP client";
            let server = "GStreamer RTSP server";
            let mut conn = TcpConn::open(&mut w.em, nh, ch, 554, "rtsp")?;
            conn.request(
                &mut w.em,
                &vendor::rtsp_request("OPTIONS", &url, 1, ua, ""),
                &vendor::rtsp_response(
                    1,
                    server,
                    "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n",
                    "",
                ),
            )?;
            let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=Media Presentation\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
            conn.request(
                &mut w.em,
                &vendor::rtsp_request("DESCRIBE", &url, 2, ua, "Accept: application/sdp\r\n"),
                &vendor::rtsp_response(2, server, "Content-Type: application/sdp\r\n", sdp),
            )?;
            conn.request(
                &mut w.em,
                &vendor::rtsp_request(
                    "SETUP",
                    &format!("{url}/trackID=1"),
                    3,
                    ua,
                    "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
                ),
                &vendor::rtsp_response(
                    3,
                    server,
                    "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678\r\n",
                    "",
                ),
            )?;
            conn.request(
                &mut w.em,
                &vendor::rtsp_request("PLAY", &url, 4, ua, "Session: 12345678\r\n"),
                &vendor::rtsp_response(4, server, "Session: 12345678\r\n", ""),
            )?;
            // Two seconds of 25 fps video, one RTP packet per frame slice.
            let ssrc = 0x1234_0000 | c as u32;
            for f in 0..50u32 {
                *seq = seq.wrapping_add(1);
                let len = if f % 25 == 0 {
                    1400
                } else {
                    700 + (f as usize * 13) % 600
                };
                let pkt = vendor::rtsp_interleaved_video(0, *seq, f * 3600, ssrc, len);
                conn.send(&mut w.em, false, &pkt)?;
                w.em.gap(30_000, 40_000);
            }
            conn.request(
                &mut w.em,
                &vendor::rtsp_request("TEARDOWN", &url, 5, ua, "Session: 12345678\r\n"),
                &vendor::rtsp_response(5, server, "", ""),
            )?;
            conn.close(&mut w.em, true)?;
            w.ev(c, Field::ListeningPort, "tcp/554");
            Ok(Some(20 * SEC))
        }
        Act::Ascii {
            client,
            server,
            port,
            app,
            kind,
            udp,
        } => {
            let (c, s, port, app, kind, udp) = (*client, *server, *port, *app, *kind, *udp);
            let msg = ascii_fields(w, kind, c);
            let (chh, shh) = (w.host(c), w.host(s));
            if udp {
                w.em.udp_exchange(chh, shh, port, port, &msg, None, app)?;
            } else {
                tcp_transaction(&mut w.em, chh, shh, port, app, &msg, b"ACK\r\n")?;
            }
            w.ev(
                c,
                Field::VendorProtocol,
                format!("{app}/{} {port}", if udp { "udp" } else { "tcp" }),
            );
            Ok(Some(match kind {
                "TAGREPORT" => 5 * SEC,
                "VOCERA_KEEPALIVE" => 20 * SEC,
                _ => 45 * SEC,
            }))
        }
        Act::Tls {
            client,
            server,
            ext_ip,
            sni,
            profile,
        } => {
            let (c, sni) = (*client, *sni);
            let sh = match server {
                Some(s) => w.host(*s),
                None => {
                    let ip = *ext_ip;
                    dns_lookup(w, c, sni, Some(ip))?;
                    w.external(ip)
                }
            };
            let ch = w.host(c);
            let p = profile.clone();
            tls_session(w, ch, sh, sni, &p, 4)?;
            w.ev(c, Field::TlsSni, sni);
            if let Some(s) = server {
                w.ev(*s, Field::ListeningPort, "tcp/443");
            }
            Ok(Some(120 * SEC))
        }
        Act::Rdp { client, server } => {
            let (c, s) = (*client, *server);
            let user = w.hostname(c).to_lowercase();
            let (ch, sh) = (w.host(c), w.host(s));
            let mut conn = TcpConn::open(&mut w.em, ch, sh, 3389, "rdp")?;
            conn.request(
                &mut w.em,
                &vendor::rdp_connection_request(&user),
                &vendor::rdp_connection_confirm(),
            )?;
            let cp = tls::WINDOWS7_SCHANNEL;
            let mut random = [0u8; 32];
            w.em.rng.fill(&mut random);
            conn.request(
                &mut w.em,
                &tls::client_hello(&cp, "", random),
                &tls::server_hello(0xc030, random),
            )?;
            for _ in 0..10 {
                conn.request(
                    &mut w.em,
                    &tls::application_data(120, &[0x21, 0x7e]),
                    &tls::application_data(2800, &[0x5a, 0x11, 0x93]),
                )?;
            }
            conn.close(&mut w.em, true)?;
            w.ev(s, Field::RdpInUse, "true");
            w.ev(s, Field::ListeningPort, "tcp/3389");
            Ok(Some(60 * SEC))
        }
        Act::Ntp { client, server } => {
            let (ch, sh) = (w.host(*client), w.host(*server));
            let now = w.em.now_us;
            w.em.udp_exchange(
                ch,
                sh,
                123,
                123,
                &vendor::ntp(true, now),
                Some(&vendor::ntp(false, now + 800)),
                "ntp",
            )?;
            Ok(Some(64 * SEC))
        }
        Act::Syslog { dev, server } => {
            let (d, s) = (*dev, *server);
            let host = w.hostname(d);
            let msg = vendor::syslog(
                134,
                "Mar 12 10:00:00",
                &host,
                "storescp",
                "association accepted",
            );
            let (dh, sh) = (w.host(d), w.host(s));
            w.em.udp_exchange(dh, sh, 514, 514, &msg, None, "syslog")?;
            Ok(Some(60 * SEC))
        }
        Act::Telnet { client, server } => {
            let (c, s) = (*client, *server);
            let banner = b"\xff\xfd\x18\xff\xfd\x20LifeCare PCA 3.0\r\nlogin: ";
            let (ch, sh) = (w.host(c), w.host(s));
            let mut conn = TcpConn::open(&mut w.em, ch, sh, 23, "telnet")?;
            conn.send(&mut w.em, false, banner)?;
            conn.request(&mut w.em, b"root\r\n", b"# ")?;
            conn.request(&mut w.em, b"cat /etc/version\r\n", b"3.0.2.1\r\n# ")?;
            conn.close(&mut w.em, true)?;
            w.ev(s, Field::TelnetBanner, "LifeCare PCA 3.0");
            w.ev(s, Field::ListeningPort, "tcp/23");
            Ok(Some(600 * SEC))
        }
    }
}

fn ua_of(os: &str) -> &'static str {
    if os.starts_with("Windows 10") {
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Trident/7.0; rv:11.0) like Gecko"
    } else {
        "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; WOW64; Trident/5.0)"
    }
}

fn tls_session<W: Write>(
    w: &mut World<W>,
    c: HostId,
    s: HostId,
    sni: &str,
    p: &tls::ClientProfile,
    exchanges: usize,
) -> anyhow::Result<()> {
    let mut random = [0u8; 32];
    w.em.rng.fill(&mut random);
    let mut conn = TcpConn::open(&mut w.em, c, s, 443, "tls")?;
    conn.request(
        &mut w.em,
        &tls::client_hello(p, sni, random),
        &tls::server_hello(p.ciphers[0].max(0xc02f), random),
    )?;
    conn.request(
        &mut w.em,
        &tls::change_cipher_and_finished(0x3c),
        &tls::change_cipher_and_finished(0x77),
    )?;
    for i in 0..exchanges {
        conn.request(
            &mut w.em,
            &tls::application_data(300 + i * 40, &[0x17, 0x42, 0x99]),
            &tls::application_data(2500 + i * 900, &[0x8e, 0x23]),
        )?;
    }
    conn.close(&mut w.em, true)
}

fn dns_lookup<W: Write>(
    w: &mut World<W>,
    dev: usize,
    name: &str,
    answer: Option<Ipv4Addr>,
) -> anyhow::Result<()> {
    let Some(dc) = w.role(w.devices[dev].site, "dc") else {
        return Ok(());
    };
    let id: u16 = w.em.rng.gen();
    let (c, s) = (w.host(dev), w.host(dc));
    let port = w.em.ephemeral_port(c);
    w.em.udp_exchange(
        c,
        s,
        port,
        53,
        &dns::query(id, name),
        Some(&dns::response(id, name, answer)),
        "dns",
    )?;
    w.ev(dev, Field::DnsQuery, name);
    Ok(())
}

/// DHCP DORA for DHCP clients (relayed by the core switch across VLANs), a gratuitous ARP
/// for statically addressed devices.
fn boot<W: Write>(w: &mut World<W>, dev: usize) -> anyhow::Result<()> {
    let d = &w.devices[dev];
    let Some(style) = d.profile.dhcp else {
        if d.profile.key == "cisco_router" {
            return Ok(());
        }
        return w.em.gratuitous_arp(d.host);
    };
    let site = d.site;
    let Some(server) = w.role(site, "dc") else {
        return w.em.gratuitous_arp(d.host);
    };
    let (ch, sh) = (d.host, w.host(server));
    let host = w.em.hosts[ch].clone();
    let server_host = w.em.hosts[sh].clone();
    let relayed =
        host.vlan != server_host.vlan || host.ip.octets()[..2] != server_host.ip.octets()[..2];
    let gw = host.gateway.map(|g| w.em.hosts[g].clone());
    let (reply_mac, reply_ip, reply_ttl, reply_id_host) = match (&gw, relayed) {
        (Some(g), true) => (g.mac, g.ip, g.stack.ttl, host.gateway.unwrap_or(sh)),
        _ => (server_host.mac, server_host.ip, server_host.stack.ttl, sh),
    };
    let hostname = d.hostname.clone();
    let id = dhcp::ClientIdentity {
        mac: host.mac,
        hostname: hostname.clone(),
        vendor_class: style.vendor_class.map(str::to_string),
        param_list: style.params.to_vec(),
        client_id: style.client_id,
        fqdn: if style.fqdn {
            hostname.as_ref().map(|h| format!("{h}.{DOMAIN}"))
        } else {
            None
        },
        max_msg_size: style.max_size,
        broadcast: style.broadcast,
    };
    let o = host.ip.octets();
    let lease = dhcp::Lease {
        server_id: server_host.ip,
        yiaddr: host.ip,
        subnet_mask: Ipv4Addr::new(255, 255, 0, 0),
        router: Ipv4Addr::new(o[0], o[1], 0, 1),
        dns: server_host.ip,
        domain: DOMAIN.into(),
        lease_secs: 86_400,
        giaddr: if relayed {
            Ipv4Addr::new(o[0], o[1], 0, 1)
        } else {
            Ipv4Addr::UNSPECIFIED
        },
    };
    let xid: u32 = w.em.rng.gen();
    let bcast_l2 = L2 {
        src: host.mac,
        dst: [0xff; 6],
        vlan: host.vlan,
    };
    let reply_dst = if style.broadcast {
        ([0xff; 6], Ipv4Addr::BROADCAST)
    } else {
        (host.mac, host.ip)
    };
    let reply_l2 = L2 {
        src: reply_mac,
        dst: reply_dst.0,
        vlan: host.vlan,
    };
    let (src0, bcast) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST);
    let msgs = [
        dhcp::client_message(&id, dhcp::DISCOVER, xid, 0, None),
        dhcp::server_message(&lease, dhcp::OFFER, xid, host.mac, style.broadcast),
        dhcp::client_message(&id, dhcp::REQUEST, xid, 1, Some((host.ip, server_host.ip))),
        dhcp::server_message(&lease, dhcp::ACK, xid, host.mac, style.broadcast),
    ];
    for (i, m) in msgs.iter().enumerate() {
        if i % 2 == 0 {
            w.em.udp_raw(bcast_l2, src0, bcast, host.stack.ttl, ch, 68, 67, m, "dhcp")?;
            w.em.gap(1000, 20_000);
        } else {
            w.em.udp_raw(
                reply_l2,
                reply_ip,
                reply_dst.1,
                reply_ttl,
                reply_id_host,
                67,
                68,
                m,
                "dhcp",
            )?;
            w.em.gap(500, 3000);
        }
    }
    if let Some(h) = hostname {
        w.ev(dev, Field::Hostname, h);
    }
    if let Some(vc) = style.vendor_class {
        w.ev(dev, Field::DhcpVendorClass, vc);
    }
    let params: Vec<String> = style.params.iter().map(|p| p.to_string()).collect();
    w.ev(dev, Field::DhcpParamList, params.join(","));
    if style.client_id {
        w.ev(
            dev,
            Field::DhcpClientId,
            format!("01{}", hex::encode(host.mac)),
        );
    }
    if let Some(f) = &id.fqdn {
        w.ev(dev, Field::DhcpFqdn, f.clone());
    }
    Ok(())
}

fn win_startup<W: Write>(w: &mut World<W>, ws: usize) -> anyhow::Result<()> {
    let h = w.em.hosts[w.host(ws)].clone();
    let name = w.hostname(ws);
    let o = h.ip.octets();
    let bcast = Ipv4Addr::new(o[0], o[1], 255, 255);
    let l2 = L2 {
        src: h.mac,
        dst: [0xff; 6],
        vlan: h.vlan,
    };
    // Windows registers <00> (workstation) and <20> (server) and its domain group <00>.
    for (nm, suffix, group) in [
        (name.as_str(), 0x00, false),
        (name.as_str(), 0x20, false),
        ("HOSP", 0x00, true),
    ] {
        let id: u16 = w.em.rng.gen();
        let msg = netbios::registration(id, nm, suffix, group, h.ip);
        w.em.udp_raw(
            l2,
            h.ip,
            bcast,
            h.stack.ttl,
            w.devices[ws].host,
            137,
            137,
            &msg,
            "netbios",
        )?;
        w.em.gap(700, 1500);
    }
    w.ev(ws, Field::NetbiosName, name.to_uppercase());
    let dc_ip = w.ip(w.role(w.devices[ws].site, "dc").unwrap_or(ws));
    dns_lookup(w, ws, &format!("dc01.{DOMAIN}"), Some(dc_ip))?;
    let ncsi = Ipv4Addr::new(131, 107, 255, 255);
    dns_lookup(w, ws, "www.msftncsi.com", Some(ncsi))?;
    let ext = w.external(ncsi);
    let c = w.host(ws);
    let req = http::get("www.msftncsi.com", "/ncsi.txt", "Microsoft NCSI");
    let resp = http::response("Microsoft-IIS/8.5", "text/plain", b"Microsoft NCSI");
    tcp_transaction(&mut w.em, c, ext, 80, "http", &req, &resp)?;
    w.ev(ws, Field::HttpUserAgent, "Microsoft NCSI");
    w.ev(ws, Field::HttpHost, "www.msftncsi.com");
    Ok(())
}

struct DicomPeer {
    ae: dicom::AeIdentity,
}

/// A modality's DICOM identity: AE, implementation UID/version, SOP class, modality code and
/// the Manufacturer (0008,0070) string its data sets carry.
fn modality_identity(
    key: &str,
    dev: usize,
) -> (dicom::AeIdentity, &'static str, &'static str, &'static str) {
    let (ae, uid, ver, sop, modality, manufacturer) = match key {
        "ge_ct" => (
            "CT_REV01",
            "1.2.840.113619.6.374",
            "REVOLUTION_CT_1",
            dicom::CT_IMAGE_STORAGE,
            "CT",
            "GE MEDICAL SYSTEMS",
        ),
        "siemens_mr" => (
            "MR_AERA01",
            "1.3.12.2.1107.5.2",
            "MR_VE11C",
            dicom::MR_IMAGE_STORAGE,
            "MR",
            "SIEMENS",
        ),
        "carestream_xray" => (
            "DRX_EVO01",
            "1.2.276.0.7230010.3.0.3.6.2",
            "OFFIS_DCMTK_362",
            dicom::DX_IMAGE_STORAGE,
            "DX",
            "Carestream Health",
        ),
        _ => (
            "SONOSITE",
            "1.2.276.0.7230010.3.0.3.6.0",
            "OFFIS_DCMTK_360",
            dicom::US_IMAGE_STORAGE,
            "US",
            "SonoSite",
        ),
    };
    let ae_title = if key == "sonosite_us" {
        format!("US{dev:04}")
    } else {
        ae.to_string()
    };
    (
        dicom::AeIdentity {
            ae_title,
            impl_class_uid: uid.into(),
            impl_version: ver.into(),
            max_pdu: 16384,
        },
        sop,
        modality,
        manufacturer,
    )
}

fn pacs_identity() -> DicomPeer {
    DicomPeer {
        ae: dicom::AeIdentity {
            ae_title: "PACS_ARCHIVE".into(),
            impl_class_uid: "1.2.276.0.7230010.3.0.3.6.4".into(),
            impl_version: "OFFIS_DCMTK_364".into(),
            max_pdu: 16384,
        },
    }
}

fn send_pdus<W: Write>(
    w: &mut World<W>,
    conn: &mut TcpConn,
    from_client: bool,
    pdus: &[Vec<u8>],
) -> anyhow::Result<()> {
    for p in pdus {
        conn.send(&mut w.em, from_client, p)?;
        w.em.gap(100, 600);
    }
    Ok(())
}

fn record_dicom<W: Write>(
    w: &mut World<W>,
    modality: usize,
    pacs: usize,
    me: &dicom::AeIdentity,
    peer: &dicom::AeIdentity,
    sop: &str,
) {
    w.ev(modality, Field::DicomCallingAe, me.ae_title.clone());
    w.ev(
        modality,
        Field::DicomImplClassUid,
        me.impl_class_uid.clone(),
    );
    w.ev(modality, Field::DicomImplVersion, me.impl_version.clone());
    w.ev(modality, Field::DicomAbstractSyntax, sop);
    w.ev(pacs, Field::DicomCalledAe, peer.ae_title.clone());
    w.ev(pacs, Field::DicomImplClassUid, peer.impl_class_uid.clone());
    w.ev(pacs, Field::DicomImplVersion, peer.impl_version.clone());
    w.ev(pacs, Field::ListeningPort, "tcp/104");
}

fn dicom_store<W: Write>(w: &mut World<W>, modality: usize, pacs: usize) -> anyhow::Result<()> {
    let (me, sop, mod_code, manufacturer) =
        modality_identity(w.devices[modality].profile.key, modality);
    let peer = pacs_identity().ae;
    let study_no = w.next();
    let root = me.impl_class_uid.clone();
    let study_uid = format!("{root}.2.{study_no}");
    let contexts = vec![
        dicom::PresentationContext {
            id: 1,
            abstract_syntax: sop.into(),
            transfer_syntaxes: vec![dicom::EXPLICIT_VR_LE.into(), dicom::IMPLICIT_VR_LE.into()],
        },
        dicom::PresentationContext {
            id: 3,
            abstract_syntax: dicom::VERIFICATION.into(),
            transfer_syntaxes: vec![dicom::IMPLICIT_VR_LE.into()],
        },
    ];
    let (ch, sh) = (w.host(modality), w.host(pacs));
    let mut conn = TcpConn::open(&mut w.em, ch, sh, 104, "dicom")?;
    let rq = dicom::associate_rq(&peer.ae_title, &me, &contexts);
    let ac = dicom::associate_ac(
        &peer,
        &me.ae_title,
        &[(1, dicom::EXPLICIT_VR_LE), (3, dicom::IMPLICIT_VR_LE)],
    );
    conn.request(&mut w.em, &rq, &ac)?;
    let images = w.em.rng.gen_range(2..=4u16);
    let model = w.devices[modality].profile.model;
    let station = w.hostname(modality);
    for img in 1..=images {
        let instance = format!("{study_uid}.{img}");
        let px_len = w.em.rng.gen_range(3000..=12_000usize) & !1;
        let seed: u8 = w.em.rng.gen();
        let pixels: Vec<u8> = (0..px_len)
            .map(|i| {
                (i as u8)
                    .wrapping_mul(seed | 1)
                    .wrapping_add((i >> 7) as u8)
            })
            .collect();
        let ds = dicom::image_dataset(
            sop,
            &instance,
            &study_uid,
            mod_code,
            manufacturer,
            model,
            &station,
            &format!("PID{:06}", study_no),
            &pixels,
        );
        let cmd = dicom::c_store_rq(sop, &instance, img);
        let mut pdus = dicom::p_data(1, true, &cmd, peer.max_pdu);
        pdus.extend(dicom::p_data(1, false, &ds, peer.max_pdu));
        send_pdus(w, &mut conn, true, &pdus)?;
        w.em.gap(2000, 15_000);
        let rsp = dicom::p_data(
            1,
            true,
            &dicom::c_store_rsp(sop, &instance, img),
            me.max_pdu,
        );
        send_pdus(w, &mut conn, false, &rsp)?;
    }
    conn.request(&mut w.em, &dicom::release_rq(), &dicom::release_rp())?;
    conn.close(&mut w.em, true)?;
    record_dicom(w, modality, pacs, &me, &peer, sop);
    w.ev(modality, Field::DicomAppContext, dicom::APPLICATION_CONTEXT);
    Ok(())
}

fn dicom_worklist<W: Write>(w: &mut World<W>, modality: usize, mwl: usize) -> anyhow::Result<()> {
    let (me, _, mod_code, _) = modality_identity(w.devices[modality].profile.key, modality);
    let peer = dicom::AeIdentity {
        ae_title: "MWL_SCP".into(),
        impl_class_uid: "1.2.826.0.1.3680043.9.3811.2.0.2".into(),
        impl_version: "PYNETDICOM_202".into(),
        max_pdu: 16384,
    };
    // Identifiers below are Explicit VR LE (DataSet), so that is the syntax negotiated.
    let ctx = [dicom::PresentationContext {
        id: 1,
        abstract_syntax: dicom::MWL_FIND.into(),
        transfer_syntaxes: vec![dicom::EXPLICIT_VR_LE.into(), dicom::IMPLICIT_VR_LE.into()],
    }];
    let (ch, sh) = (w.host(modality), w.host(mwl));
    let mut conn = TcpConn::open(&mut w.em, ch, sh, 104, "dicom")?;
    conn.request(
        &mut w.em,
        &dicom::associate_rq(&peer.ae_title, &me, &ctx),
        &dicom::associate_ac(&peer, &me.ae_title, &[(1, dicom::EXPLICIT_VR_LE)]),
    )?;
    let mut pdus = dicom::p_data(1, true, &dicom::c_find_rq(dicom::MWL_FIND, 1), peer.max_pdu);
    pdus.extend(dicom::p_data(
        1,
        false,
        &dicom::mwl_query(mod_code, &me.ae_title),
        peer.max_pdu,
    ));
    send_pdus(w, &mut conn, true, &pdus)?;
    let n = w.next();
    let mut rsp = Vec::new();
    for k in 0..2 {
        rsp.extend(dicom::p_data(
            1,
            true,
            &dicom::c_find_rsp(dicom::MWL_FIND, 1, true),
            me.max_pdu,
        ));
        rsp.extend(dicom::p_data(
            1,
            false,
            &dicom::mwl_result(
                mod_code,
                &me.ae_title,
                &format!("ACC{n:05}{k}"),
                &format!("PID{n:06}"),
            ),
            me.max_pdu,
        ));
    }
    rsp.extend(dicom::p_data(
        1,
        true,
        &dicom::c_find_rsp(dicom::MWL_FIND, 1, false),
        me.max_pdu,
    ));
    send_pdus(w, &mut conn, false, &rsp)?;
    conn.request(&mut w.em, &dicom::release_rq(), &dicom::release_rp())?;
    conn.close(&mut w.em, true)?;
    record_dicom(w, modality, mwl, &me, &peer, dicom::MWL_FIND);
    Ok(())
}

/// HL7 naming of a device in MSH-3/4.
fn hl7_party<W: Write>(w: &World<W>, dev: usize) -> hl7::Hl7Party {
    let d = &w.devices[dev];
    let facility = format!(
        "{}^{}",
        d.zone.to_uppercase(),
        w.sites[d.site].name.to_uppercase()
    );
    let application = match d.profile.key {
        "philips_intellivue" => format!("MX450^{}^EUI-64", eui64(w.em.hosts[d.host].mac)),
        "philips_piic" => "PIIC_IX^Philips".into(),
        "mindray_telemetry" => "MINDRAY_TMS^Mindray".into(),
        "drager_ventilator" => "EVITA_V500^Draeger".into(),
        "ge_anesthesia" => "AISYS_CS2^GE".into(),
        "sysmex_analyzer" => "XN-1000^Sysmex".into(),
        "roche_analyzer" => "COBAS6000^Roche".into(),
        "abbott_blood_gas" => "ISTAT^Abbott".into(),
        "hp_lis" => "LIS".into(),
        "dell_ehr" => "EHR".into(),
        _ => "HL7ENGINE".into(),
    };
    hl7::Hl7Party {
        application,
        facility,
    }
}

fn hl7_exchange<W: Write>(
    w: &mut World<W>,
    sender: usize,
    receiver: usize,
    kind: Hl7Kind,
) -> anyhow::Result<()> {
    let n = w.next();
    let ts = hl7_time(w.em.now_us);
    let from = hl7_party(w, sender);
    let to = hl7_party(w, receiver);
    let control = format!("MSG{n:08}");
    let subject = match kind {
        Hl7Kind::Gateway { monitor } => monitor,
        _ => sender,
    };
    let subject_mac = w.em.hosts[w.host(subject)].mac;
    let model = w.devices[subject].profile.model;
    let device_id = format!(
        "{}^{}^EUI-64",
        eui64(subject_mac),
        model.split_whitespace().last().unwrap_or(model)
    );
    let location = format!(
        "{}^{}^A",
        w.devices[subject].zone.to_uppercase(),
        300 + subject % 50
    );
    let (msg, version, trigger) = match kind {
        Hl7Kind::MonitorVitals | Hl7Kind::Gateway { .. } => {
            let obs = [
                hl7::Observation {
                    code: "147842^MDC_ECG_HEART_RATE^MDC",
                    value: (60 + n % 30).to_string(),
                    units: "264864^MDC_DIM_BEAT_PER_MIN^MDC",
                },
                hl7::Observation {
                    code: "150456^MDC_PULS_OXIM_SAT_O2^MDC",
                    value: (94 + n % 5).to_string(),
                    units: "262688^MDC_DIM_PERCENT^MDC",
                },
            ];
            (
                hl7::oru_r01(
                    &from,
                    &to,
                    &ts,
                    &control,
                    "2.6",
                    &format!("PID{:06}", subject),
                    &location,
                    &device_id,
                    &obs,
                ),
                "2.6",
                "R01",
            )
        }
        Hl7Kind::LabResult => {
            let obs = [
                hl7::Observation {
                    code: "718-7^Hemoglobin^LN",
                    value: format!("{}.{}", 11 + n % 5, n % 10),
                    units: "g/dL",
                },
                hl7::Observation {
                    code: "6690-2^Leukocytes^LN",
                    value: format!("{}.{}", 4 + n % 7, n % 10),
                    units: "10*3/uL",
                },
            ];
            (
                hl7::oru_r01(
                    &from,
                    &to,
                    &ts,
                    &control,
                    "2.5.1",
                    &format!("PID{:06}", n),
                    "LAB^1^A",
                    &device_id,
                    &obs,
                ),
                "2.5.1",
                "R01",
            )
        }
        Hl7Kind::Adt => (
            hl7::adt_a01(
                &from,
                &to,
                &ts,
                &control,
                &format!("PID{:06}", n),
                "WARD^312^A",
            ),
            "2.5.1",
            "A01",
        ),
    };
    let ack = hl7::ack(
        &to,
        &from,
        &ts,
        trigger,
        &control,
        &format!("ACK{n:08}"),
        version,
    );
    let (ch, sh) = (w.host(sender), w.host(receiver));
    tcp_transaction(
        &mut w.em,
        ch,
        sh,
        2575,
        "hl7",
        &hl7::mllp(&msg),
        &hl7::mllp(&ack),
    )?;
    let app0 = from.application.split('^').next().unwrap_or("").to_string();
    w.ev(sender, Field::Hl7SendingApp, app0);
    w.ev(
        sender,
        Field::Hl7SendingFacility,
        from.facility.split('^').next().unwrap_or("").to_string(),
    );
    w.ev(
        sender,
        Field::Hl7MessageType,
        msg.split('|').nth(8).unwrap_or("").to_string(),
    );
    w.ev(sender, Field::Hl7Version, version);
    if !matches!(kind, Hl7Kind::Adt) {
        w.ev(
            subject,
            Field::Hl7DeviceId,
            device_id.split('^').next().unwrap_or("").to_string(),
        );
    }
    w.ev(
        receiver,
        Field::Hl7ReceivingApp,
        to.application.split('^').next().unwrap_or("").to_string(),
    );
    w.ev(receiver, Field::ListeningPort, "tcp/2575");
    Ok(())
}

pub(crate) fn truth_devices<W: Write>(w: &World<W>) -> (Vec<String>, Vec<TruthDevice>) {
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
                hostname: d
                    .evidence
                    .iter()
                    .find(|e| e.field == Field::Hostname)
                    .map(|e| e.value.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hl7_time_formats_known_instant() {
        // 2024-03-12T10:00:00Z
        assert_eq!(hl7_time(1_710_237_600 * SEC), "20240312100000");
        assert_eq!(hl7_time(0), "19700101000000");
    }
}
