//! Topology of a scenario: sites, their zones on VLANs (or one untagged segment), the
//! core switch that routes them, and every device placed in a zone with its addresses,
//! hostname, serial number and the role other devices find it by.

mod naming;
mod plans;

pub(crate) use naming::eui64;

use crate::options::{GenerateOptions, Scenario};
use crate::profiles::{profile, Profile};
use crate::truth::TruthEvidence;
use crate::wire::{Emitter, Host, HostId, Stack};
use crate::world::World;
use naming::{hostname_for, mac_for, serial_for};
use plans::{role_of, ZonePlan, HOSPITAL_PLAN, SITE_NAMES, WARD_PLAN};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;

pub(crate) struct Device {
    pub profile: &'static Profile,
    pub host: HostId,
    pub ips: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub site: usize,
    pub zone: &'static str,
    pub vlan: Option<u16>,
    pub serial: String,
    /// Identity facts the capture carries about this device so far.
    pub evidence: BTreeSet<TruthEvidence>,
}

/// One subnet (a /16) of a site, with its router interface and address counters.
pub(crate) struct Zone {
    pub name: &'static str,
    pub vlan: Option<u16>,
    net: [u8; 2],
    pub router_host: HostId,
    next_static: u16,
    next_dhcp: u16,
}

impl Zone {
    /// The next free address: DHCP pool x.y.128.10 upwards; static hosts use x.y.0.2 ..
    /// x.y.127.251.
    fn next_address(&mut self, dhcp: bool) -> Ipv4Addr {
        let [a, b] = self.net;
        if dhcp {
            let k = self.next_dhcp;
            self.next_dhcp += 1;
            Ipv4Addr::new(a, b, 128 + (k / 240) as u8, 10 + (k % 240) as u8)
        } else {
            let k = self.next_static;
            self.next_static += 1;
            Ipv4Addr::new(a, b, ((k - 2) / 250) as u8, 2 + ((k - 2) % 250) as u8)
        }
    }
}

pub(crate) struct Site {
    pub name: String,
    pub zones: Vec<Zone>,
    /// Role name → device index (the first device of a role-bearing profile).
    pub roles: HashMap<&'static str, usize>,
}

/// Per-profile and per-OUI counters that make names and MACs unique across sites.
#[derive(Default)]
struct Counters {
    per_profile: HashMap<&'static str, u32>,
    per_oui: HashMap<[u8; 3], u32>,
}

impl Counters {
    /// The 0-based index of the next device of `p`, and its MAC.
    fn next_device(&mut self, p: &'static Profile) -> (u32, [u8; 6]) {
        let n = self.per_profile.entry(p.key).or_insert(0);
        let idx = *n;
        *n += 1;
        (idx, mac_for(p, &mut self.per_oui))
    }
}

/// Places every device of the scenario and registers its host on the emitter.
pub(crate) fn build<W: Write>(opts: &GenerateOptions, em: Emitter<W>) -> World<W> {
    let mut w = World { em, devices: Vec::new(), sites: Vec::new(), externals: HashMap::new(), counter: 0 };
    let plan: &[ZonePlan] = match opts.scenario {
        Scenario::Ward => WARD_PLAN,
        Scenario::Hospital => HOSPITAL_PLAN,
    };
    let mult = opts.scale.device_multiplier.max(1);
    let mut counters = Counters::default();
    for s in 0..opts.sites.max(1) as usize {
        add_site(&mut w, opts.scenario, plan, s, &mut counters);
        for (zi, (_, _, members)) in plan.iter().enumerate() {
            for &(key, per_unit, fixed) in members.iter() {
                if key == "cisco_router" {
                    continue;
                }
                let p = profile(key);
                for _ in 0..per_unit * mult + fixed {
                    add_device(&mut w, &mut counters, p, s, zi);
                }
            }
        }
    }
    w
}

/// Site `s`: its core switch, which routes every zone with one interface (same MAC) per
/// VLAN, and its zones.
fn add_site<W: Write>(w: &mut World<W>, scenario: Scenario, plan: &[ZonePlan], s: usize, counters: &mut Counters) {
    let name = SITE_NAMES.get(s).map(|n| n.to_string()).unwrap_or_else(|| format!("site-{}", s + 1));
    let router_p = profile("cisco_router");
    let (_, router_mac) = counters.next_device(router_p);
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
    let mut site = Site { name, zones: Vec::new(), roles: HashMap::new() };
    for (zi, (zname, vlan, _)) in plan.iter().enumerate() {
        let net = match scenario {
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
        site.zones.push(Zone { name: zname, vlan: *vlan, net, router_host, next_static: 2, next_dhcp: 0 });
    }
    w.sites.push(site);
}

/// One device of profile `p` in zone `zi` of site `s`.
fn add_device<W: Write>(w: &mut World<W>, counters: &mut Counters, p: &'static Profile, s: usize, zi: usize) {
    let (idx, mac) = counters.next_device(p);
    let zone = &mut w.sites[s].zones[zi];
    let ip = zone.next_address(p.dhcp.is_some());
    let mut h = Host::new(mac, ip, zone.vlan, p.stack);
    h.gateway = Some(zone.router_host);
    let (zname, vlan) = (zone.name, zone.vlan);
    let host = w.em.add_host(h);
    let dev = w.devices.len();
    w.devices.push(Device {
        profile: p,
        host,
        ips: vec![ip],
        hostname: Some(hostname_for(p, zname, idx, mac, s)),
        site: s,
        zone: zname,
        vlan,
        serial: serial_for(p, idx, s),
        evidence: BTreeSet::new(),
    });
    if let Some(role) = role_of(p.key) {
        w.sites[s].roles.entry(role).or_insert(dev);
    }
}
