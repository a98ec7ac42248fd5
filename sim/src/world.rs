//! The simulated network while it runs: the devices and sites of the topology, and the
//! emitter (clock, random source, hosts on the wire) their behaviours write through.

use crate::topology::{Device, RiskyPlan, ScriptedEvent, Site};
use crate::truth::{TruthBinding, TruthEvidence, TruthHistoryEvent};
use crate::wire::{Emitter, Host, HostId, Stack};
use std::collections::HashMap;
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::{Field, MacAddr};

pub(crate) struct World<W: Write> {
    pub em: Emitter<W>,
    pub devices: Vec<Device>,
    pub sites: Vec<Site>,
    /// Servers outside the hospital, created on first contact.
    pub externals: HashMap<Ipv4Addr, HostId>,
    /// Shared sequence for message numbers, study numbers and the like.
    pub counter: u32,
    /// Device changes during the run (releases, moves), scheduled with the activities.
    pub scripted: Vec<ScriptedEvent>,
    /// The risky variant's behaviours (`--risky`), and what they did so far.
    pub risky: Option<RiskyPlan>,
}

impl<W: Write> World<W> {
    /// Records an identity fact the capture now carries about `dev`.
    pub fn ev(&mut self, dev: usize, field: Field, value: impl Into<String>) {
        self.devices[dev].evidence.insert(TruthEvidence { field, value: value.into() });
    }
    /// Records that the capture announced NIC `h`'s current address for `dev` at `at_us`
    /// (`announced_by`: "dhcp_ack" or "arp").
    pub fn bind(&mut self, dev: usize, h: HostId, announced_by: &str, at_us: u64) {
        let host = &self.em.hosts[h];
        let (site, zone) = self.segment_of(h).unwrap_or((self.devices[dev].site, self.devices[dev].zone));
        let binding = TruthBinding {
            mac: MacAddr(host.mac),
            ip: host.ip,
            vlan: host.vlan,
            site: self.sites[site].name.clone(),
            zone: zone.to_string(),
            from_us: at_us,
            until_us: None,
            announced_by: announced_by.to_string(),
        };
        self.devices[dev].bindings.push(binding);
    }
    /// Ends the open bindings of `dev`'s primary NIC at `at_us` (release or unplug).
    pub fn unbind(&mut self, dev: usize, at_us: u64) {
        let mac = MacAddr(self.em.hosts[self.devices[dev].host].mac);
        for b in self.devices[dev].bindings.iter_mut().filter(|b| b.mac == mac && b.until_us.is_none()) {
            b.until_us = Some(at_us);
        }
    }
    pub fn history(&mut self, dev: usize, at_us: u64, kind: &str, from: String, to: String) {
        self.devices[dev].history.push(TruthHistoryEvent { at_us, kind: kind.to_string(), from, to });
    }
    /// The site and zone whose router is host `h`'s gateway.
    fn segment_of(&self, h: HostId) -> Option<(usize, &'static str)> {
        let gw = self.em.hosts[h].gateway?;
        self.sites
            .iter()
            .enumerate()
            .find_map(|(si, s)| s.zones.iter().find(|z| z.router_host == gw).map(|z| (si, z.name)))
    }
    pub fn next(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }
    /// The device that holds `role` (see `topology::plans::role_of`) at `site`, or at its
    /// hub for a routed site without one.
    pub fn role(&self, site: usize, role: &str) -> Option<usize> {
        let s = &self.sites[site];
        s.roles.get(role).copied().or_else(|| s.hub.and_then(|h| self.sites[h].roles.get(role).copied()))
    }
    pub fn host(&self, dev: usize) -> HostId {
        self.devices[dev].host
    }
    pub fn ip(&self, dev: usize) -> Ipv4Addr {
        self.devices[dev].ips[0]
    }
    /// A server outside the hospital, reached through the client's gateway.
    pub fn external(&mut self, ip: Ipv4Addr) -> HostId {
        if let Some(h) = self.externals.get(&ip) {
            return *h;
        }
        let o = ip.octets();
        let h = self.em.add_host(Host::new([0x02, 0, o[0], o[1], o[2], o[3]], ip, None, Stack::LINUX));
        self.externals.insert(ip, h);
        h
    }
    pub fn hostname(&self, dev: usize) -> String {
        self.devices[dev].hostname.clone().unwrap_or_else(|| self.ip(dev).to_string())
    }
}
