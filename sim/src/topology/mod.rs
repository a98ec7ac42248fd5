//! Topology of a scenario: sites, their zones on VLANs (or one untagged segment), the
//! core switch that routes them, and every device placed in a zone with its addresses,
//! hostname, serial number and the role other devices find it by.

mod identity;
mod naming;
mod plans;
mod risky;

pub(crate) use risky::{risky_truth, RiskyAct, RiskyEntry, RiskyPlan, ALARIS_FIRMWARE};

pub(crate) use naming::eui64;

use crate::options::{GenerateOptions, Scenario};
use crate::profiles::{profile, Profile};
use crate::truth::{TruthBinding, TruthEvidence, TruthHistoryEvent};
use crate::wire::{CaptureId, Emitter, Host, HostId, Stack};
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
    /// Further network interfaces (a dual-homed device), besides `host`.
    pub extra_hosts: Vec<HostId>,
    /// Where the device was first placed: (site, zone, VLAN); the truth's legacy fields.
    pub placed: (usize, &'static str, Option<u16>),
    /// Every address binding announced on the wire so far, in time order.
    pub bindings: Vec<TruthBinding>,
    /// Moves, address changes and releases, in time order.
    pub history: Vec<TruthHistoryEvent>,
    /// Offset from the start (µs) at which the device first joins the network.
    pub joins_at_us: u64,
    /// Absolute time windows [from, until) when the device is off the network: activities
    /// that involve it wait until the window ends (or stop, for `u64::MAX`).
    pub absent: Vec<(u64, u64)>,
    /// Firmware the device reports instead of its model's usual one (risky variant).
    pub firmware: Option<&'static str>,
}

impl Device {
    fn new(profile: &'static Profile, host: HostId, site: usize, zone: &'static str, vlan: Option<u16>) -> Device {
        Device {
            profile,
            host,
            ips: Vec::new(),
            hostname: None,
            site,
            zone,
            vlan,
            serial: String::new(),
            evidence: BTreeSet::new(),
            extra_hosts: Vec::new(),
            placed: (site, zone, vlan),
            bindings: Vec::new(),
            history: Vec::new(),
            joins_at_us: 0,
            absent: Vec::new(),
            firmware: None,
        }
    }

    /// Every network interface: the primary one first.
    pub fn hosts(&self) -> impl Iterator<Item = HostId> + '_ {
        std::iter::once(self.host).chain(self.extra_hosts.iter().copied())
    }

    /// When an activity involving this device that is due at `t_us` may run: `None` = now,
    /// `Some(u64::MAX)` = never again, `Some(t)` = at `t`.
    pub fn deferred_until(&self, t_us: u64) -> Option<u64> {
        self.absent.iter().find(|(from, until)| t_us >= *from && t_us < *until).map(|(_, until)| *until)
    }
}

/// A scripted change of a device during the run (see `identity`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum DeviceEvent {
    /// The device sends DHCPRELEASE for its address and leaves the network for good.
    Release,
    /// The device is unplugged from its segment (its lease is not released).
    Leave,
    /// The device is plugged in at another site's zone, takes `ip` by DHCP there.
    Arrive { site: usize, zone: usize, ip: Ipv4Addr },
}

/// A device event due `at_us` after the start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScriptedEvent {
    pub at_us: u64,
    pub dev: usize,
    pub event: DeviceEvent,
}

/// One subnet (a /16) of a site, with its router interface and address counters.
pub(crate) struct Zone {
    pub name: &'static str,
    pub vlan: Option<u16>,
    pub router_host: HostId,
    /// First two octets of the zone's /16.
    pub net: [u8; 2],
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
    /// The capture that sees this site's segments (0 = the main capture).
    pub capture: CaptureId,
    /// The routed link to the core for a site reachable only through its router.
    pub wan: Option<usize>,
    /// The site whose servers a routed site uses (its DHCP comes from its own router).
    pub hub: Option<usize>,
}

impl Site {
    /// True for a site the core sees only through its router.
    pub fn is_routed(&self) -> bool {
        self.wan.is_some()
    }
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
/// `access_captures`: the capture of each routed site's access-layer sensor, in the order
/// of [`routed_site_names`].
pub(crate) fn build<W: Write>(opts: &GenerateOptions, em: Emitter<W>, access_captures: &[CaptureId]) -> World<W> {
    let mut w = World {
        em,
        devices: Vec::new(),
        sites: Vec::new(),
        externals: HashMap::new(),
        counter: 0,
        scripted: Vec::new(),
        risky: None,
    };
    let plan: &[ZonePlan] = match opts.scenario {
        Scenario::Ward => WARD_PLAN,
        Scenario::Hospital => HOSPITAL_PLAN,
    };
    let mult = opts.scale.device_multiplier.max(1);
    let mut counters = Counters::default();
    for s in 0..opts.sites.max(1) as usize {
        add_site(&mut w, opts.scenario, plan, s, site_name(s), &mut counters);
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
    if opts.scenario == Scenario::Hospital {
        let capture = access_captures.first().copied().expect("the hospital has a routed site with its own capture");
        let name = routed_site_names(opts).swap_remove(0);
        identity::add_identity_cases(&mut w, opts, &mut counters, capture, name);
        if opts.risky {
            risky::add_risky_cases(&mut w, opts, &mut counters);
        }
    }
    w
}

/// Names of the sites the core sees only through their router (one access capture each).
pub(crate) fn routed_site_names(opts: &GenerateOptions) -> Vec<String> {
    match opts.scenario {
        Scenario::Ward => Vec::new(),
        Scenario::Hospital => {
            let campuses = opts.sites.max(1) as usize;
            let taken: Vec<String> = (0..campuses).map(site_name).collect();
            let clinic = ["north-clinic", "west-clinic"].into_iter().find(|n| !taken.iter().any(|t| t == n));
            vec![clinic.map(str::to_string).unwrap_or_else(|| format!("site-{}", campuses + 1))]
        }
    }
}

fn site_name(s: usize) -> String {
    SITE_NAMES.get(s).map(|n| n.to_string()).unwrap_or_else(|| format!("site-{}", s + 1))
}

/// Site `s`: its core switch, which routes every zone with one interface (same MAC) per
/// VLAN, and its zones.
fn add_site<W: Write>(
    w: &mut World<W>,
    scenario: Scenario,
    plan: &[ZonePlan],
    s: usize,
    name: String,
    counters: &mut Counters,
) {
    let router_p = profile("cisco_router");
    let (_, router_mac) = counters.next_device(router_p);
    let router_dev = w.devices.len();
    let mut router = Device::new(router_p, usize::MAX, s, "core", None);
    router.hostname = Some(format!("core-sw-{}", s + 1));
    router.serial = format!("FOC{:08}", s + 1);
    w.devices.push(router);
    let mut site =
        Site { name: name.clone(), zones: Vec::new(), roles: HashMap::new(), capture: 0, wan: None, hub: None };
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
        // Configured on the router: valid from the start, never announced by ARP or DHCP.
        let start = w.em.now_us;
        w.devices[router_dev].bindings.push(TruthBinding {
            mac: wardline_common::MacAddr(router_mac),
            ip: rip,
            vlan: *vlan,
            site: name.clone(),
            zone: zname.to_string(),
            from_us: start,
            until_us: None,
            announced_by: "static".into(),
        });
        site.zones.push(Zone { name: zname, vlan: *vlan, net, router_host, next_static: 2, next_dhcp: 0 });
    }
    w.sites.push(site);
}

/// One device of profile `p` in zone `zi` of site `s`.
fn add_device<W: Write>(w: &mut World<W>, counters: &mut Counters, p: &'static Profile, s: usize, zi: usize) -> usize {
    let (idx, mac) = counters.next_device(p);
    let host = add_nic(w, mac, p, s, zi);
    let ip = w.em.hosts[host].ip;
    let zone = &w.sites[s].zones[zi];
    let dev = w.devices.len();
    let mut d = Device::new(p, host, s, zone.name, zone.vlan);
    d.ips.push(ip);
    d.hostname = Some(hostname_for(p, zone.name, idx, mac, s));
    d.serial = serial_for(p, idx, s);
    w.devices.push(d);
    if let Some(role) = role_of(p.key) {
        w.sites[s].roles.entry(role).or_insert(dev);
    }
    dev
}

/// A network interface with MAC `mac` on zone `zi` of site `s`, with the zone's next
/// address (from the DHCP pool for DHCP clients of profile `p`).
fn add_nic<W: Write>(w: &mut World<W>, mac: [u8; 6], p: &Profile, s: usize, zi: usize) -> HostId {
    let site = &mut w.sites[s];
    let (capture, wan) = (site.capture, site.wan);
    let zone = &mut site.zones[zi];
    let ip = zone.next_address(p.dhcp.is_some());
    let mut h = Host::new(mac, ip, zone.vlan, p.stack);
    h.gateway = Some(zone.router_host);
    h.capture = capture;
    h.wan = wan;
    w.em.add_host(h)
}
