//! The simulated network while it runs: the devices and sites of the topology, and the
//! emitter (clock, random source, hosts on the wire) their behaviours write through.

use crate::topology::{Device, Site};
use crate::truth::TruthEvidence;
use crate::wire::{Emitter, Host, HostId, Stack};
use std::collections::HashMap;
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::Field;

pub(crate) struct World<W: Write> {
    pub em: Emitter<W>,
    pub devices: Vec<Device>,
    pub sites: Vec<Site>,
    /// Servers outside the hospital, created on first contact.
    pub externals: HashMap<Ipv4Addr, HostId>,
    /// Shared sequence for message numbers, study numbers and the like.
    pub counter: u32,
}

impl<W: Write> World<W> {
    /// Records an identity fact the capture now carries about `dev`.
    pub fn ev(&mut self, dev: usize, field: Field, value: impl Into<String>) {
        self.devices[dev].evidence.insert(TruthEvidence { field, value: value.into() });
    }
    pub fn next(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }
    /// The device that holds `role` (see `topology::plans::role_of`) at `site`.
    pub fn role(&self, site: usize, role: &str) -> Option<usize> {
        self.sites[site].roles.get(role).copied()
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
