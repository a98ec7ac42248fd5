//! Devices learned from traffic, keyed by unicast MAC.
//!
//! A device accumulates the IPs it used as a source (a router's MAC collects the IPs
//! behind it — recorded anyway, bounded), ARP sender pairs, VLANs, first/last seen,
//! counters, and evidence from dissector findings.
//!
//! [`DeviceTable::drain_changed`] reports each device that saw traffic or learned a fact
//! since the previous drain. Semantics of a [`DeviceObservation`] it produces:
//! - `ips`, `vlans`, `evidence`: only what is NEW since the previous drain (the receiver
//!   keeps the union), so steady traffic never re-sends the same facts;
//! - `packets`, `bytes`: the DELTA since the previous drain (the receiver adds them);
//! - `first_seen_us`, `last_seen_us`: absolute packet times.
//!
//! [`DeviceTable::drain_due`] is the batcher's drain: a device whose only news is traffic
//! (counters and a later last_seen) is reported at most once per
//! [`DeviceConfig::counter_report_interval_us`] of packet time and stays pending until then;
//! a new fact, or a device's first report, goes out at once with the counters accumulated.
//! [`DeviceTable::drain_changed`] reports everything pending (end of capture, shutdown), so
//! final totals are exact either way.
//!
//! Beside it, [`hosts::HostTable`] keeps hosts known only by address (behind a gateway's
//! MAC, or on a link without MACs) and [`bindings::BindingLog`] the MAC–IP bindings seen
//! announced; [`DeviceTable::drain_hosts`] and [`DeviceTable::drain_bindings`] report them.

use crate::dissect::{Finding, Side};
use std::collections::HashMap;
use std::net::IpAddr;
use wardline_common::wire::{AddressBinding, HostObservation};
use wardline_common::{DeviceObservation, Evidence, Field, MacAddr, Proto};

#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Devices tracked at most; beyond it new MACs are counted and ignored.
    pub max_devices: usize,
    /// IPs remembered per device (a router's MAC fronts many).
    pub max_ips_per_device: usize,
    /// Distinct (field, value) evidence pairs remembered per device.
    pub max_evidence_per_device: usize,
    /// Networks whose addresses, seen as an IP source, belong to the sending MAC. Outside
    /// them a source address is a remote host behind a gateway, and the gateway's MAC must
    /// not collect the internet. Addresses a device announces itself (ARP, DHCP, LLDP/CDP
    /// management address) are kept wherever they are.
    pub local_networks: Vec<IpNet>,
    /// Hosts known only by address tracked at most; beyond it new ones are counted.
    pub max_hosts: usize,
    /// Other sites' networks, seen only through a router: a MAC sending from one of their
    /// addresses is a router at once, and evidence about the address goes to a host of that
    /// site. Matched before `local_networks` (longest prefix among remote sites).
    pub remote_sites: Vec<RemoteSite>,
    /// Packet time between two reports of a device whose only news is traffic
    /// ([`DeviceTable::drain_due`]); 0 reports it at every drain. Re-reporting every busy
    /// device every batch interval was half the uplink's bytes (decision 0041). Safe well
    /// below the aggregator's disconnect threshold: it marks a device disconnected after 15
    /// minutes without packets relative to the sensor's latest reported packet
    /// (`DISCONNECTED_AFTER_US`), and a deferred device's last_seen lags by at most this.
    pub counter_report_interval_us: u64,
}

/// Default [`DeviceConfig::counter_report_interval_us`]: 5 minutes, a third of the
/// aggregator's 15-minute disconnect threshold.
pub const DEFAULT_COUNTER_REPORT_INTERVAL_US: u64 = 300 * 1_000_000;

/// An address prefix such as 10.0.0.0/8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let p = self.prefix.min(32) as u32;
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                u32::from(n) & mask == u32::from(*a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let p = self.prefix.min(128) as u32;
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                u128::from(n) & mask == u128::from(*a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| format!("network {s:?} needs a /prefix, e.g. 10.0.0.0/8"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("network {s:?}: {a:?} is not an IP address"))?;
        let prefix: u8 = p.parse().map_err(|_| format!("network {s:?}: prefix {p:?} is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("network {s:?}: prefix longer than {max}"));
        }
        Ok(IpNet { addr, prefix })
    }
}

/// RFC 1918, CGNAT, link-local, and IPv6 ULA and link-local: where hospital devices live.
pub fn default_local_networks() -> Vec<IpNet> {
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10"]
        .iter()
        .map(|n| n.parse().expect("literal network"))
        .collect()
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            max_devices: 200_000,
            max_ips_per_device: 256,
            max_evidence_per_device: 512,
            local_networks: default_local_networks(),
            max_hosts: 200_000,
            remote_sites: Vec::new(),
            counter_report_interval_us: DEFAULT_COUNTER_REPORT_INTERVAL_US,
        }
    }
}

mod bindings;
mod evidence_set;
pub mod hosts;
mod hot;
mod mac_index;
pub mod sites;
use bindings::BindingLog;
use evidence_set::EvidenceSet;
use hosts::HostTable;
use hot::HotDevice;
use mac_index::MacIndex;
pub use sites::RemoteSite;
use sites::RemoteSiteMap;

/// The bulk of a device, read only when it learns something; the per-packet part (MAC,
/// counters, times, settled source and VLAN, flags) is its [`HotDevice`].
#[derive(Debug, Default)]
struct DeviceState {
    reported_packets: u64,
    reported_bytes: u64,
    /// Packet time of the drain that last reported the device; None before its first report.
    reported_at_us: Option<u64>,
    ips: Vec<IpAddr>,
    new_ips: Vec<IpAddr>,
    vlans: Vec<u16>,
    new_vlans: Vec<u16>,
    evidence_seen: EvidenceSet,
    new_evidence: Vec<Evidence>,
    /// Addresses the device announced itself (ARP sender, DHCP lease, LLDP/CDP).
    announced: Vec<IpAddr>,
    /// Distinct local source IPs seen in its frames (not announced by ARP/DHCP/LLDP).
    sourced_ips: u32,
}

/// More distinct local source addresses than this from one MAC mark it as a gateway. One
/// host rarely has more than an IPv4, a global and a link-local IPv6 address.
const GATEWAY_SOURCE_IPS: u32 = 4;

/// Counters about what the table had to drop to stay bounded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceDrops {
    pub devices_over_limit: u64,
    pub ips_over_limit: u64,
    pub evidence_over_limit: u64,
    /// Findings about an end that names no device at the site: a remote (non-local)
    /// address behind a gateway, or a non-host address on a MAC-less link.
    pub findings_unattributed: u64,
    /// Hosts known only by address not tracked because the host table is full.
    pub hosts_over_limit: u64,
    /// Bindings not reported because an interval's bound was reached.
    pub bindings_over_limit: u64,
}

/// Slot of a device in the table, stable for the table's life (devices are never removed).
/// A flow remembers the slot of each sender so its next packets skip the MAC lookup.
pub type DeviceSlot = u32;

/// "No device" for [`DeviceSlot`] hints.
pub const NO_DEVICE: DeviceSlot = u32::MAX;

pub struct DeviceTable {
    cfg: DeviceConfig,
    /// Which device an IP belongs to, so evidence about a routed peer lands on the peer,
    /// not on the router whose MAC carried the packet.
    ip_owner: HashMap<IpAddr, DeviceSlot, foldhash::fast::RandomState>,
    /// MAC → slot in `hot` and `cold`.
    index: MacIndex,
    /// Per-packet state of each device, by slot: one cache line each.
    hot: Vec<HotDevice>,
    /// Everything else about each device, by slot.
    cold: Vec<DeviceState>,
    dirty: Vec<DeviceSlot>,
    drops: DeviceDrops,
    /// Reused formatting buffer for per-packet evidence values.
    scratch: String,
    /// Sender of the latest accounted frame, whose cached resolution findings can reuse.
    last_sender: DeviceSlot,
    /// Hosts known only by (IP, VLAN).
    hosts: HostTable,
    bindings: BindingLog,
    /// `cfg.remote_sites`, ready for matching.
    remote: RemoteSiteMap,
}

/// Where a finding lands: a known device, or a MAC not (yet) in the table.
#[derive(Clone, Copy)]
enum Target {
    Slot(DeviceSlot),
    Mac(MacAddr),
    /// A host known only by address (on the finding's VLAN), seen through this router
    /// MAC or (None) on a link without MACs.
    Host(IpAddr, Option<MacAddr>),
}

/// Addresses that never identify one host.
fn is_host_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

impl DeviceTable {
    pub fn new(cfg: DeviceConfig) -> DeviceTable {
        let remote = RemoteSiteMap::new(&cfg.remote_sites);
        DeviceTable {
            hosts: HostTable::new(cfg.max_hosts, cfg.max_evidence_per_device, remote.clone()),
            remote,
            bindings: BindingLog::new(cfg.max_devices.saturating_mul(4)),
            cfg,
            ip_owner: HashMap::with_hasher(Default::default()),
            index: MacIndex::default(),
            hot: Vec::new(),
            cold: Vec::new(),
            dirty: Vec::new(),
            drops: DeviceDrops::default(),
            scratch: String::new(),
            last_sender: NO_DEVICE,
        }
    }

    pub fn len(&self) -> usize {
        self.hot.len()
    }
    pub fn is_empty(&self) -> bool {
        self.hot.is_empty()
    }
    /// What the device, host and binding tables dropped to stay bounded.
    pub fn drops(&self) -> DeviceDrops {
        let h = self.hosts.drops();
        DeviceDrops {
            evidence_over_limit: self.drops.evidence_over_limit + h.evidence_over_limit,
            hosts_over_limit: h.hosts_over_limit,
            bindings_over_limit: self.bindings.dropped(),
            ..self.drops.clone()
        }
    }

    /// Hosts known only by address.
    pub fn hosts_len(&self) -> usize {
        self.hosts.len()
    }

    /// Bindings reported so far.
    pub fn bindings_recorded(&self) -> u64 {
        self.bindings.recorded()
    }

    /// Is `ip` a host of the site networks? On a link without MACs a loopback address is
    /// too: such a capture was taken on the machine itself.
    fn is_site_host(&self, ip: &IpAddr, mac_less: bool) -> bool {
        is_host_ip(ip)
            && (self.cfg.local_networks.iter().any(|n| n.contains(ip))
                || (mac_less && ip.is_loopback())
                || self.remote.site_of(ip).is_some())
    }

    /// The host table's key for `ip` seen on `vlan`. A remote site's host keeps no VLAN:
    /// the one seen here is the transit link's, not the host's segment at its site.
    fn host_key(&self, ip: IpAddr, vlan: Option<u16>) -> hosts::HostKey {
        if self.remote.site_of(&ip).is_some() {
            (ip, None)
        } else {
            (ip, vlan)
        }
    }

    /// Account a frame from a host known only by address: `src_mac` is a gateway (or ZERO
    /// on a link without MACs) and no device owns the address.
    fn host_packet(&mut self, src_mac: MacAddr, ts_us: u64, wire_len: u64, vlan: Option<u16>, ip: IpAddr) {
        let mac_less = src_mac == MacAddr::ZERO;
        if self.ip_owner.contains_key(&ip) || !self.is_site_host(&ip, mac_less) {
            return;
        }
        let via = (!mac_less).then_some(src_mac);
        let key = self.host_key(ip, vlan);
        self.hosts.packet(key, via, ts_us, wire_len);
    }

    /// A MAC–IP binding seen announced (ARP sender, DHCPACK, NDP option), reported once per
    /// interval. The address is also a fact of the MAC's device.
    pub fn binding(&mut self, b: AddressBinding) {
        self.ip(b.mac, b.seen_us, b.ip);
        self.bindings.record(b);
    }

    /// Hosts known only by address with news since the last drain, sorted by (IP, VLAN).
    pub fn drain_hosts(&mut self) -> Vec<HostObservation> {
        self.hosts.drain_changed()
    }

    /// Bindings seen since the last drain, in packet-time order.
    pub fn drain_bindings(&mut self) -> Vec<AddressBinding> {
        self.bindings.drain()
    }

    /// The device's slot, created on first sight; None for non-device MACs and past the bound.
    fn slot(&mut self, mac: MacAddr, ts_us: u64) -> Option<DeviceSlot> {
        if !mac.is_device() {
            return None;
        }
        // One hash lookup per packet: this runs for every frame without a flow hint.
        let (max, cold, drops) = (self.cfg.max_devices, &mut self.cold, &mut self.drops);
        self.index.get_or_insert(&mut self.hot, mac, |hot| {
            if hot.len() >= max {
                drops.devices_over_limit += 1;
                return None;
            }
            hot.push(HotDevice::new(mac, ts_us));
            cold.push(DeviceState::default());
            Some((hot.len() - 1) as DeviceSlot)
        })
    }

    /// Mark slot `i` as changed since the last drain.
    fn mark_dirty(&mut self, i: DeviceSlot) {
        let h = &mut self.hot[i as usize];
        if !h.is_dirty() {
            h.set_dirty(true);
            self.dirty.push(i);
        }
    }

    /// The bulk state in slot `i`, marked as changed since the last drain.
    fn touch(&mut self, i: DeviceSlot) -> &mut DeviceState {
        self.mark_dirty(i);
        &mut self.cold[i as usize]
    }

    /// The device slot of a MAC target; None for a host known only by address.
    fn target_slot(&mut self, t: Target, ts_us: u64) -> Option<DeviceSlot> {
        match t {
            Target::Slot(i) => Some(i),
            Target::Mac(mac) => self.slot(mac, ts_us),
            Target::Host(..) => None,
        }
    }

    /// Account a frame sent by `src_mac`.
    pub fn packet(&mut self, src_mac: MacAddr, ts_us: u64, wire_len: u64, vlan: Option<u16>, src_ip: Option<IpAddr>) {
        self.packet_hinted(NO_DEVICE, src_mac, ts_us, wire_len, vlan, src_ip);
    }

    /// [`packet`](Self::packet) with the slot this sender had on the flow's previous packet
    /// (or [`NO_DEVICE`]): when it still holds `src_mac`, no MAC lookup is needed. Returns
    /// the sender's slot ([`NO_DEVICE`] when it is not tracked) for the next hint.
    pub fn packet_hinted(
        &mut self,
        hint: DeviceSlot,
        src_mac: MacAddr,
        ts_us: u64,
        wire_len: u64,
        vlan: Option<u16>,
        src_ip: Option<IpAddr>,
    ) -> DeviceSlot {
        let i = match self.hot.get(hint as usize) {
            Some(h) if h.mac == src_mac => hint,
            _ => match self.slot(src_mac, ts_us) {
                Some(i) => {
                    // A flow's first packets carry most findings (a DNS query, a SYN, a
                    // hello): start loading what their "already known?" test reads.
                    self.cold[i as usize].evidence_seen.prefetch();
                    i
                }
                None => {
                    self.last_sender = NO_DEVICE;
                    if let (MacAddr::ZERO, Some(ip)) = (src_mac, src_ip) {
                        self.host_packet(src_mac, ts_us, wire_len, vlan, ip);
                    }
                    return NO_DEVICE;
                }
            },
        };
        self.last_sender = i;
        let max_ips = self.cfg.max_ips_per_device;
        let max_owners = self.cfg.max_devices * 4;
        let mut ip_dropped = false;
        let mut became_gateway = false;
        self.mark_dirty(i);
        let (nets, remote) = (&self.cfg.local_networks, &self.remote);
        let h = &mut self.hot[i as usize];
        h.packets += 1;
        h.bytes += wire_len;
        h.first_us = h.first_us.min(ts_us);
        h.last_us = h.last_us.max(ts_us);
        if let Some(v) = vlan.filter(|v| h.settled_vlan() != Some(*v)) {
            let d = &mut self.cold[i as usize];
            if !d.vlans.contains(&v) && d.vlans.len() < 64 {
                d.vlans.push(v);
                d.new_vlans.push(v);
            }
            // Recorded now or never: the outcome for `v` cannot change.
            h.settle_vlan(v);
        }
        // A gateway's, a known or a non-local source address changes nothing: only local
        // addresses new to the device are counted (and possibly recorded).
        if let Some(ip) = src_ip.filter(|ip| h.settled_src != Some(*ip)) {
            let d = &mut self.cold[i as usize];
            let settled = if h.is_gateway() {
                true
            } else if remote.site_of(&ip).is_some() {
                // A remote site's address is never on this segment: its sender routes.
                h.set_gateway();
                became_gateway = true;
                true
            } else if d.ips.contains(&ip) || !nets.iter().any(|n| n.contains(&ip)) {
                true
            } else {
                d.sourced_ips += 1;
                if d.sourced_ips > GATEWAY_SOURCE_IPS {
                    h.set_gateway();
                    became_gateway = true;
                } else {
                    ip_dropped = !add_ip(d, ip, max_ips);
                    if !ip_dropped && self.ip_owner.len() < max_owners {
                        self.ip_owner.entry(ip).or_insert(i);
                    }
                }
                // Not settled when the address could not be recorded: counted again next time.
                h.is_gateway() || d.ips.contains(&ip)
            };
            if settled {
                h.settle_src(ip);
            }
        }
        if ip_dropped {
            self.drops.ips_over_limit += 1;
        }
        if became_gateway {
            // Addresses it only carried are not its own; announced ones (ARP, DHCP) stay.
            self.ip_owner.retain(|_, m| *m != i);
            for ip in self.cold[i as usize].announced.iter() {
                self.ip_owner.insert(*ip, i);
            }
            self.disowned(i);
        }
        if let (true, Some(ip)) = (self.hot[i as usize].is_gateway(), src_ip) {
            // The router forwards for this host: the host sent the frame.
            self.host_packet(src_mac, ts_us, wire_len, vlan, ip);
        }
        i
    }

    /// The device an address belongs to: its known owner, else the frame's MAC unless
    /// that MAC is a gateway or the link has no MACs: then the host known by its address
    /// when it is at the site, else nothing (an Internet peer is not a device).
    fn resolve(&self, mac: MacAddr, ip: Option<IpAddr>) -> Option<Target> {
        if let Some(owner) = ip.and_then(|ip| self.ip_owner.get(&ip)) {
            return Some(Target::Slot(*owner));
        }
        if let Some(ip) = ip.filter(|ip| is_host_ip(ip) && self.remote.site_of(ip).is_some()) {
            // A remote site's host, whichever MAC carried it (the router, maybe not known
            // as one yet when the first frame goes towards the host).
            return Some(Target::Host(ip, (mac != MacAddr::ZERO).then_some(mac)));
        }
        if mac == MacAddr::ZERO {
            // No L2 on this link: the address is all there is.
            return ip.filter(|ip| self.is_site_host(ip, true)).map(|ip| Target::Host(ip, None));
        }
        match self.index.get(&self.hot, &mac) {
            Some(i) if self.hot[i as usize].is_gateway() => {
                ip.filter(|ip| self.is_site_host(ip, false)).map(|ip| Target::Host(ip, Some(mac)))
            }
            Some(i) => Some(Target::Slot(i)),
            None => Some(Target::Mac(mac)),
        }
    }

    /// [`resolve`](Self::resolve), answered from the latest frame's sender's cache when
    /// `mac` is that sender, `ip` is its settled source address, and the owner it cached
    /// for that address lost no address since (its owner epoch is unchanged). Only answers
    /// found in `ip_owner` are cached: the fallback (the sender itself, or nothing for a
    /// gateway) can change when an address is added.
    fn resolve_sender(&mut self, mac: MacAddr, ip: Option<IpAddr>) -> Option<Target> {
        let s = self.last_sender;
        let (Some(ip), Some(h)) = (ip, self.hot.get(s as usize)) else {
            return self.resolve(mac, ip);
        };
        if h.mac != mac {
            return self.resolve(mac, Some(ip));
        }
        let settled = h.settled_src == Some(ip);
        if let (true, Some((owner, epoch))) = (settled, h.resolved()) {
            // The owner is most often the sender itself, whose line is at hand.
            let current = if owner == s { h.owner_epoch() } else { self.hot[owner as usize].owner_epoch() };
            if current == epoch {
                return Some(Target::Slot(owner));
            }
        }
        match self.ip_owner.get(&ip) {
            Some(&owner) => {
                if settled {
                    let epoch = self.hot[owner as usize].owner_epoch();
                    self.hot[s as usize].cache_resolved(owner, epoch);
                }
                Some(Target::Slot(owner))
            }
            None => self.resolve(mac, Some(ip)),
        }
    }

    /// An `ip_owner` entry naming `owner` was replaced or removed: resolutions to it cached
    /// before may be stale.
    fn disowned(&mut self, owner: DeviceSlot) {
        if self.hot[owner as usize].bump_owner_epoch() {
            // The epoch wrapped: a cache 256 epochs old would look current again.
            for h in self.hot.iter_mut() {
                h.forget_resolved_to(owner);
            }
        }
    }

    /// Attach dissector findings, resolving each end through its IP address.
    pub fn findings_at(&mut self, ctx: &crate::dissect::PacketCtx, proto: Proto, findings: &[Finding]) {
        // Resolved on first use: most payloads only speak about one end.
        let (mut src, mut dst) = (None, None);
        for f in findings {
            let target = match f.side {
                Side::Src => match src {
                    Some(t) => t,
                    None => *src.insert(self.resolve_sender(ctx.src_mac, ctx.src_ip)),
                },
                Side::Dst => *dst.get_or_insert_with(|| self.resolve(ctx.dst_mac, ctx.dst_ip)),
                Side::Mac(m) => Some(Target::Mac(m)),
            };
            match target {
                Some(Target::Host(ip, via)) => {
                    let key = self.host_key(ip, ctx.vlan);
                    self.hosts.evidence(key, via, f.field, &f.value, proto, ctx.ts_us)
                }
                Some(t) => {
                    // A MAC met for the first time becomes a slot: later findings of this
                    // payload about the same end reuse it.
                    let slot = self.target_slot(t, ctx.ts_us);
                    if let (Some(i), Side::Src | Side::Dst) = (slot, f.side) {
                        let memo = if f.side == Side::Src { &mut src } else { &mut dst };
                        *memo = Some(Some(Target::Slot(i)));
                    }
                    if let Some(i) = slot {
                        self.finding_at(i, ctx.ts_us, proto, f);
                    }
                }
                None => self.drops.findings_unattributed += 1,
            }
        }
    }

    /// Port evidence from the TCP handshake: `ListeningPort` for a SYN+ACK sender,
    /// `ConnectsTo` for a SYN sender.
    #[allow(clippy::too_many_arguments)]
    pub fn port_evidence(
        &mut self,
        mac: MacAddr,
        ip: IpAddr,
        vlan: Option<u16>,
        field: Field,
        transport: &str,
        port: u16,
        ts_us: u64,
    ) {
        let Some(t) = self.resolve_sender(mac, Some(ip)) else { return };
        // Every SYN lands here: format into a reused buffer, allocate only when new.
        let mut value = std::mem::take(&mut self.scratch);
        value.clear();
        value.push_str(transport);
        value.push('/');
        crate::digits::push_decimal(&mut value, port as u64);
        match t {
            Target::Host(ip, via) => {
                let key = self.host_key(ip, vlan);
                self.hosts.evidence(key, via, field, &value, Proto::Ip, ts_us)
            }
            t => {
                if let Some(i) = self.target_slot(t, ts_us) {
                    self.evidence_at(i, field, &value, Proto::Ip, ts_us);
                }
            }
        }
        self.scratch = value;
    }

    /// Record an IP the device is known to own (ARP sender, DHCP lease).
    pub fn ip(&mut self, mac: MacAddr, ts_us: u64, ip: IpAddr) {
        if let Some(i) = self.slot(mac, ts_us) {
            self.ip_at(i, ip);
        }
    }

    fn ip_at(&mut self, i: DeviceSlot, ip: IpAddr) {
        let max_ips = self.cfg.max_ips_per_device;
        let d = self.touch(i);
        if !d.announced.contains(&ip) && d.announced.len() < max_ips {
            d.announced.push(ip);
        }
        if !add_ip(d, ip, max_ips) && !d.ips.contains(&ip) {
            self.drops.ips_over_limit += 1;
        }
        // Bounded like the device map: an address flood cannot grow it without limit.
        // A replaced owner invalidates resolutions cached to it (see `resolve_sender`).
        if is_host_ip(&ip) && (self.ip_owner.len() < self.cfg.max_devices * 4 || self.ip_owner.contains_key(&ip)) {
            if let Some(old) = self.ip_owner.insert(ip, i).filter(|&old| old != i) {
                self.disowned(old);
            }
        }
    }

    fn finding_at(&mut self, i: DeviceSlot, ts_us: u64, proto: Proto, f: &Finding) {
        if matches!(f.field, Field::IpAddress | Field::LldpManagementAddress | Field::CdpManagementAddress) {
            if let Ok(ip) = f.value.parse::<IpAddr>() {
                self.ip_at(i, ip);
            }
        }
        self.evidence_at(i, f.field, &f.value, proto, ts_us);
    }

    /// Record one piece of evidence; repeats of a known (field, value) are not re-sent and
    /// allocate nothing.
    fn evidence_at(&mut self, i: DeviceSlot, field: Field, value: &str, proto: Proto, ts_us: u64) {
        let max_ev = self.cfg.max_evidence_per_device;
        let d = self.touch(i);
        if d.evidence_seen.contains(field, value) {
            return;
        }
        if d.evidence_seen.len() >= max_ev {
            self.drops.evidence_over_limit += 1;
            return;
        }
        d.evidence_seen.insert_new(field, value);
        d.new_evidence.push(Evidence::new(field, value, proto, ts_us));
    }

    /// Every device with traffic or facts not yet reported, sorted by MAC: the final drain
    /// (end of capture, shutdown), and the test of what a table holds.
    pub fn drain_changed(&mut self) -> Vec<DeviceObservation> {
        self.drain(None)
    }

    /// The batcher's drain at packet time `now_us`, sorted by MAC: devices with new facts or
    /// never reported yet, and devices whose only news is traffic when their last report is
    /// at least `counter_report_interval_us` old. The others stay pending (dirty) with their
    /// counters accumulating for a later drain.
    pub fn drain_due(&mut self, now_us: u64) -> Vec<DeviceObservation> {
        self.drain(Some(now_us))
    }

    /// `now_us` None reports everything pending.
    fn drain(&mut self, now_us: Option<u64>) -> Vec<DeviceObservation> {
        let interval = self.cfg.counter_report_interval_us;
        let mut changed = std::mem::take(&mut self.dirty);
        changed.sort_unstable_by_key(|&i| self.hot[i as usize].mac);
        let mut out = Vec::with_capacity(changed.len());
        for i in changed {
            let (h, d) = (&mut self.hot[i as usize], &mut self.cold[i as usize]);
            let mac = h.mac;
            let packets = h.packets - d.reported_packets;
            let bytes = h.bytes - d.reported_bytes;
            let facts = !(d.new_ips.is_empty() && d.new_vlans.is_empty() && d.new_evidence.is_empty());
            if packets == 0 && !facts {
                h.set_dirty(false);
                continue;
            }
            let counters_only_not_due = match (now_us, d.reported_at_us) {
                (Some(now), Some(at)) => !facts && interval > 0 && now.saturating_sub(at) < interval,
                _ => false,
            };
            if counters_only_not_due {
                // Still dirty: reported by a later drain, or by the final one.
                self.dirty.push(i);
                continue;
            }
            h.set_dirty(false);
            d.reported_at_us = Some(now_us.unwrap_or(h.last_us));
            d.reported_packets = h.packets;
            d.reported_bytes = h.bytes;
            out.push(DeviceObservation {
                mac,
                ips: std::mem::take(&mut d.new_ips),
                vlans: std::mem::take(&mut d.new_vlans),
                first_seen_us: h.first_us,
                last_seen_us: h.last_us,
                packets,
                bytes,
                evidence: std::mem::take(&mut d.new_evidence),
            });
        }
        out
    }
}

/// Returns false when the IP was new but the per-device bound is reached.
fn add_ip(d: &mut DeviceState, ip: IpAddr, max: usize) -> bool {
    if !is_host_ip(&ip) || d.ips.contains(&ip) {
        return true;
    }
    if d.ips.len() >= max {
        return false;
    }
    d.ips.push(ip);
    d.new_ips.push(ip);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dissect::{PacketCtx, Transport};

    /// A broadcast frame `mac` sent with no IP layer (as LLDP is).
    pub(super) fn l2_frame(mac: MacAddr, ts_us: u64) -> PacketCtx {
        PacketCtx {
            ts_us,
            src_mac: mac,
            dst_mac: MacAddr::BROADCAST,
            vlan: None,
            src_ip: None,
            dst_ip: None,
            src_port: 0,
            dst_port: 0,
            transport: Transport::L2 { ethertype: 0x88cc },
        }
    }

    /// A hostname finding about `mac` from a frame it sent with no IP layer.
    fn hostname(t: &mut DeviceTable, mac: MacAddr, ts_us: u64, name: &str) {
        t.findings_at(&l2_frame(mac, ts_us), Proto::Dhcp, &[Finding::src(Field::Hostname, name)]);
    }

    #[test]
    fn evidence_is_sent_once_and_counters_are_deltas() {
        let mut t = DeviceTable::new(DeviceConfig::default());
        let m = MacAddr([0, 0x1b, 0x21, 1, 2, 3]);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        t.packet(m, 10, 100, Some(20), Some(ip));
        hostname(&mut t, m, 10, "pump-1");
        let o = t.drain_changed();
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].ips, vec![ip]);
        assert_eq!(o[0].vlans, vec![20]);
        assert_eq!(o[0].evidence.len(), 1);
        assert_eq!((o[0].packets, o[0].bytes), (1, 100));
        t.packet(m, 20, 50, Some(20), Some(ip));
        hostname(&mut t, m, 20, "pump-1");
        let o = t.drain_changed();
        assert_eq!(o.len(), 1);
        assert!(o[0].ips.is_empty() && o[0].evidence.is_empty() && o[0].vlans.is_empty());
        assert_eq!((o[0].packets, o[0].bytes, o[0].first_seen_us, o[0].last_seen_us), (1, 50, 10, 20));
        assert!(t.drain_changed().is_empty());
        // Multicast and zero MACs are not devices.
        t.packet(MacAddr::BROADCAST, 30, 60, None, None);
        assert!(t.drain_changed().is_empty());
    }

    #[test]
    fn bounds_hold() {
        let mut t = DeviceTable::new(DeviceConfig {
            max_devices: 1,
            max_ips_per_device: 2,
            max_evidence_per_device: 1,
            ..DeviceConfig::default()
        });
        let m = MacAddr([0, 1, 2, 3, 4, 5]);
        // Announced addresses (ARP/DHCP) are bounded per device; sourced ones also mark gateways.
        for i in 1..=5u8 {
            t.ip(m, 1, IpAddr::from([10, 0, 0, i]));
        }
        t.packet(MacAddr([0, 1, 2, 3, 4, 6]), 1, 1, None, None);
        hostname(&mut t, m, 1, "a");
        hostname(&mut t, m, 1, "b");
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.drops(),
            DeviceDrops { devices_over_limit: 1, ips_over_limit: 3, evidence_over_limit: 1, ..DeviceDrops::default() }
        );
        assert_eq!(t.drain_changed()[0].ips.len(), 2);
    }
}

#[cfg(test)]
mod local_network_tests {
    use super::*;

    #[test]
    fn gateway_macs_do_not_collect_remote_addresses() {
        let mut t = DeviceTable::new(DeviceConfig::default());
        let gw: MacAddr = "00:1a:a1:00:00:01".parse().unwrap();
        t.packet(gw, 1, 60, None, Some("204.79.197.200".parse().unwrap()));
        t.packet(gw, 2, 60, None, Some("10.20.0.1".parse().unwrap()));
        let o = t.drain_changed();
        assert_eq!(o[0].ips, vec!["10.20.0.1".parse::<IpAddr>().unwrap()]);
        // An address the device announces itself counts wherever it is.
        t.findings_at(
            &tests::l2_frame(gw, 3),
            Proto::Lldp,
            &[Finding::src(Field::LldpManagementAddress, "198.51.100.7")],
        );
        assert_eq!(t.drain_changed()[0].ips, vec!["198.51.100.7".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn networks_parse_and_match() {
        let n: IpNet = "172.16.0.0/12".parse().unwrap();
        assert!(n.contains(&"172.31.255.1".parse().unwrap()));
        assert!(!n.contains(&"172.32.0.1".parse().unwrap()));
        assert!(!n.contains(&"fe80::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("10.0.0.0".parse::<IpNet>().is_err());
        let v6: IpNet = "fe80::/10".parse().unwrap();
        assert!(v6.contains(&"fe80::1234".parse().unwrap()));
    }
}

#[cfg(test)]
mod gateway_tests {
    use super::*;
    use crate::dissect::{PacketCtx, Transport};

    fn ctx(src_mac: MacAddr, src_ip: &str, dst_mac: MacAddr, dst_ip: &str) -> PacketCtx {
        PacketCtx {
            ts_us: 5,
            src_mac,
            dst_mac,
            vlan: None,
            src_ip: Some(src_ip.parse().unwrap()),
            dst_ip: Some(dst_ip.parse().unwrap()),
            src_port: 40000,
            dst_port: 104,
            transport: Transport::Tcp,
        }
    }

    #[test]
    fn routed_peer_evidence_lands_on_the_peer_not_the_router() {
        let mut t = DeviceTable::new(DeviceConfig::default());
        let router: MacAddr = "00:1a:a1:00:00:01".parse().unwrap();
        let pacs: MacAddr = "00:09:5c:00:00:02".parse().unwrap();
        let ct: MacAddr = "44:4b:5d:00:00:03".parse().unwrap();
        // The PACS sends from its own MAC in its own segment; the router forwards for many hosts.
        t.packet(pacs, 1, 60, None, Some("10.30.0.5".parse().unwrap()));
        for i in 1..=6 {
            t.packet(router, 2, 60, None, Some(format!("10.40.0.{i}").parse().unwrap()));
        }
        // CT → PACS through the router: the frame's destination MAC is the router.
        let c = ctx(ct, "10.20.0.9", router, "10.30.0.5");
        t.findings_at(
            &c,
            Proto::Dicom,
            &[Finding::dst(Field::DicomCalledAe, "PACS1"), Finding::src(Field::DicomCallingAe, "CT1")],
        );
        t.port_evidence(router, "10.30.0.5".parse().unwrap(), None, Field::ListeningPort, "tcp", 104, 6);
        let obs = t.drain_changed();
        let of = |m: MacAddr| obs.iter().find(|o| o.mac == m).unwrap();
        assert!(of(pacs).evidence.iter().any(|e| e.field == Field::DicomCalledAe && e.value == "PACS1"));
        assert!(of(pacs).evidence.iter().any(|e| e.field == Field::ListeningPort && e.value == "tcp/104"));
        assert!(of(ct).evidence.iter().any(|e| e.field == Field::DicomCallingAe));
        assert!(of(router).evidence.is_empty(), "router got {:?}", of(router).evidence);
        assert!(of(router).ips.len() <= GATEWAY_SOURCE_IPS as usize);
        // A host known only behind the router gets a record of its own, keyed by address;
        // an Internet peer behind it gets nothing.
        let c = ctx(ct, "10.20.0.9", router, "10.99.0.1");
        t.findings_at(&c, Proto::Dicom, &[Finding::dst(Field::DicomCalledAe, "FAR")]);
        let c = ctx(ct, "10.20.0.9", router, "198.51.100.1");
        t.findings_at(&c, Proto::Dicom, &[Finding::dst(Field::DicomCalledAe, "INTERNET")]);
        assert_eq!(t.drops().findings_unattributed, 1);
        // Hosts: the router's fifth and sixth sources (it was a gateway by then) and the
        // one the finding named.
        let hosts = t.drain_hosts();
        let ips: Vec<String> = hosts.iter().map(|h| h.ip.to_string()).collect();
        assert_eq!(ips, ["10.40.0.5", "10.40.0.6", "10.99.0.1"]);
        assert!(hosts.iter().all(|h| h.via_mac == Some(router)));
        assert_eq!(hosts[2].evidence[0].value, "FAR");
        assert_eq!(hosts[2].packets, 0);
    }

    #[test]
    fn a_remote_sites_address_makes_its_sender_a_router_at_once() {
        let clinic = RemoteSite { site: "north-clinic".into(), networks: vec!["10.41.0.0/16".parse().unwrap()] };
        let mut t = DeviceTable::new(DeviceConfig { remote_sites: vec![clinic], ..DeviceConfig::default() });
        let router: MacAddr = "00:1a:a1:2d:00:03".parse().unwrap();
        let pacs: MacAddr = "00:09:5c:00:00:02".parse().unwrap();
        t.packet(pacs, 1, 60, Some(20), Some("10.30.0.5".parse().unwrap()));
        // Campus → clinic before the router ever sent: the finding about the far end names
        // the clinic host, not the router whose MAC the frame is addressed to.
        let c = PacketCtx { vlan: Some(900), ..ctx(pacs, "10.30.0.5", router, "10.41.10.7") };
        t.findings_at(&c, Proto::Dicom, &[Finding::dst(Field::DicomCalledAe, "CLINIC_US")]);
        // One source address of the clinic is enough (the count rule needs more than four).
        t.packet(router, 2, 100, Some(900), Some("10.41.10.8".parse().unwrap()));
        let c = PacketCtx { vlan: Some(900), ..ctx(router, "10.41.10.8", pacs, "10.30.0.5") };
        t.findings_at(&c, Proto::Dicom, &[Finding::src(Field::DicomCallingAe, "CLINIC_CR")]);
        t.port_evidence(router, "10.41.10.8".parse().unwrap(), Some(900), Field::ConnectsTo, "tcp", 104, 3);
        let obs = t.drain_changed();
        let r = obs.iter().find(|o| o.mac == router).unwrap();
        assert!(r.evidence.is_empty() && r.ips.is_empty(), "router got {:?} {:?}", r.evidence, r.ips);
        let hosts = t.drain_hosts();
        let summary: Vec<String> = hosts
            .iter()
            .map(|h| format!("{} {:?} {:?} packets={} evidence={}", h.ip, h.site, h.vlan, h.packets, h.evidence.len()))
            .collect();
        assert_eq!(
            summary,
            [
                "10.41.10.7 Some(\"north-clinic\") None packets=0 evidence=1",
                "10.41.10.8 Some(\"north-clinic\") None packets=1 evidence=2",
            ]
        );
        assert!(hosts.iter().all(|h| h.via_mac == Some(router)));
        // The own site's hosts behind a router keep their VLAN and no site.
        for i in 1..=6 {
            t.packet(router, 4, 60, Some(7), Some(format!("10.40.0.{i}").parse().unwrap()));
        }
        let own = t.drain_hosts();
        assert!(!own.is_empty() && own.iter().all(|h| h.site.is_none() && h.vlan == Some(7)));
    }

    #[test]
    fn hosts_behind_a_gateway_get_their_own_packets_and_evidence() {
        let mut t = DeviceTable::new(DeviceConfig::default());
        let router: MacAddr = "00:1a:a1:00:00:01".parse().unwrap();
        let pacs: MacAddr = "00:09:5c:00:00:02".parse().unwrap();
        t.packet(pacs, 1, 60, None, Some("10.30.0.5".parse().unwrap()));
        // Six hosts behind the router: the router is a gateway from the fifth on, and the
        // sixth's packets are the host's from then on.
        for round in 0..2u64 {
            for i in 1..=6 {
                t.packet(router, 2 + round, 100, Some(7), Some(format!("10.40.0.{i}").parse().unwrap()));
            }
        }
        for i in 1..=6 {
            let c = PacketCtx { vlan: Some(7), ..ctx(router, &format!("10.40.0.{i}"), pacs, "10.30.0.5") };
            t.findings_at(&c, Proto::Dicom, &[Finding::src(Field::DicomCallingAe, format!("MOD{i}"))]);
        }
        let hosts = t.drain_hosts();
        let ips: Vec<String> = hosts.iter().map(|h| h.ip.to_string()).collect();
        assert_eq!(ips, (1..=6).map(|i| format!("10.40.0.{i}")).collect::<Vec<_>>());
        assert!(hosts.iter().all(|h| h.vlan == Some(7) && h.via_mac == Some(router)));
        assert!(hosts.iter().all(|h| h.evidence.len() == 1));
        // The host's frames after the router became a gateway are the host's.
        assert_eq!(hosts[5].packets, 2);
        let obs = t.drain_changed();
        assert!(obs.iter().find(|o| o.mac == router).unwrap().evidence.is_empty());
    }
}

#[cfg(test)]
mod resolve_cache_tests {
    //! The owner a sender's findings resolve to is cached in its hot line; these fail if
    //! the cache answers with an owner `ip_owner` no longer names.
    use super::*;
    use crate::dissect::{PacketCtx, Transport};

    fn ctx(src_mac: MacAddr, src_ip: IpAddr, ts_us: u64) -> PacketCtx {
        PacketCtx {
            ts_us,
            src_mac,
            dst_mac: "00:50:56:00:00:53".parse().unwrap(),
            vlan: None,
            src_ip: Some(src_ip),
            dst_ip: Some("10.0.0.53".parse().unwrap()),
            src_port: 40000,
            dst_port: 53,
            transport: Transport::Udp,
        }
    }

    /// A frame from `mac` at `ip` whose payload names `query`.
    fn query(t: &mut DeviceTable, mac: MacAddr, ip: IpAddr, ts: u64, query: &str) {
        t.packet(mac, ts, 60, None, Some(ip));
        t.findings_at(&ctx(mac, ip, ts), Proto::Dns, &[Finding::src(Field::DnsQuery, query)]);
    }

    fn holder(obs: &[DeviceObservation], query: &str) -> Vec<MacAddr> {
        obs.iter()
            .filter(|o| o.evidence.iter().any(|e| e.field == Field::DnsQuery && e.value == query))
            .map(|o| o.mac)
            .collect()
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x00, 0x09, 0x5c, 0x00, 0x00, last])
    }

    #[test]
    fn an_address_taken_over_by_another_device_is_not_answered_from_the_cache() {
        let mut t = DeviceTable::new(DeviceConfig::default());
        let (a, b) = (mac(0x0a), mac(0x0b));
        let x: IpAddr = "10.1.0.5".parse().unwrap();
        // The second query is resolved from A's cache.
        query(&mut t, a, x, 1, "first");
        query(&mut t, a, x, 2, "cached");
        // B announces x (ARP): findings about x belong to B now, even from A's frames.
        t.ip(b, 3, x);
        query(&mut t, a, x, 4, "after");
        let obs = t.drain_changed();
        assert_eq!(holder(&obs, "cached"), vec![a]);
        assert_eq!(holder(&obs, "after"), vec![b]);
    }

    #[test]
    fn addresses_a_new_gateway_loses_are_not_answered_from_another_senders_cache() {
        let mut t = DeviceTable::new(DeviceConfig::default());
        let (a, s) = (mac(0x0a), mac(0x05));
        let x: IpAddr = "10.1.0.5".parse().unwrap();
        t.packet(a, 1, 60, None, Some(x));
        // S sends from A's address: its findings resolve to A, and S caches that.
        query(&mut t, s, x, 2, "via-a");
        query(&mut t, s, x, 3, "via-a-cached");
        // A sends from four more local addresses: a gateway, whose sourced addresses are
        // dropped from `ip_owner`.
        for i in 6..=9 {
            t.packet(a, 4, 60, None, Some(IpAddr::from([10, 1, 0, i])));
        }
        query(&mut t, s, x, 5, "after");
        let obs = t.drain_changed();
        assert_eq!(holder(&obs, "via-a-cached"), vec![a]);
        assert_eq!(holder(&obs, "after"), vec![s]);
    }

    #[test]
    fn a_sender_moving_to_another_address_is_not_answered_with_the_old_owner() {
        let mut t = DeviceTable::new(DeviceConfig::default());
        let (a, b, s) = (mac(0x0a), mac(0x0b), mac(0x05));
        let (x, z): (IpAddr, IpAddr) = ("10.1.0.5".parse().unwrap(), "10.1.0.7".parse().unwrap());
        t.packet(a, 1, 60, None, Some(x));
        t.packet(b, 1, 60, None, Some(z));
        query(&mut t, s, x, 2, "via-a");
        query(&mut t, s, z, 3, "via-b");
        let obs = t.drain_changed();
        assert_eq!(holder(&obs, "via-a"), vec![a]);
        assert_eq!(holder(&obs, "via-b"), vec![b]);
    }

    #[test]
    fn an_owner_epoch_that_wraps_around_does_not_revive_a_stale_cache() {
        let mut t = DeviceTable::new(DeviceConfig::default());
        let (a, b, s) = (mac(0x0a), mac(0x0b), mac(0x05));
        let (x, y): (IpAddr, IpAddr) = ("10.1.0.5".parse().unwrap(), "10.1.0.6".parse().unwrap());
        t.packet(a, 1, 60, None, Some(x));
        query(&mut t, s, x, 2, "via-a");
        // x moves to B (A's epoch 1), then A loses y 255 more times: its epoch wraps to the
        // value S's cached resolution of x was taken at.
        t.ip(b, 3, x);
        t.ip(a, 3, y);
        for _ in 0..255 {
            t.ip(b, 4, y);
            t.ip(a, 4, y);
        }
        query(&mut t, s, x, 5, "after");
        let obs = t.drain_changed();
        assert_eq!(holder(&obs, "via-a"), vec![a]);
        assert_eq!(holder(&obs, "after"), vec![b]);
    }
}

#[cfg(test)]
mod drain_tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// Random traffic from a few dozen devices, hints right and wrong, drains at random
    /// points: every drain reports each changed device once, in MAC order, with exactly
    /// the packets and bytes since its previous report.
    #[test]
    fn every_packet_is_reported_exactly_once() {
        let mut t = DeviceTable::new(DeviceConfig::default());
        let macs: Vec<MacAddr> = (0..40u8).map(|i| MacAddr([0x00, 0x1b, 0x21, 0, 1, i])).collect();
        // Remote sources: nothing but counters and times changes.
        let remote: IpAddr = "203.0.113.9".parse().unwrap();
        let mut hints = vec![NO_DEVICE; macs.len()];
        let mut pending = vec![(0u64, 0u64); macs.len()];
        let mut seen: Vec<Option<(u64, u64)>> = vec![None; macs.len()];
        let (mut total, mut reported) = (0u64, 0u64);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for n in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = (x % macs.len() as u64) as usize;
            let ts = 1_000 + (x >> 40) % 5_000;
            let len = 60 + (x >> 20) % 1_400;
            // Every fourth packet carries another device's hint (a reused flow slot).
            let hint = if n % 4 == 0 { hints[(d + 1) % macs.len()] } else { hints[d] };
            hints[d] = t.packet_hinted(hint, macs[d], ts, len, None, Some(remote));
            pending[d].0 += 1;
            pending[d].1 += len;
            total += 1;
            let (first, last) = seen[d].map_or((ts, ts), |(f, l)| (f.min(ts), l.max(ts)));
            seen[d] = Some((first, last));
            if (x >> 8).is_multiple_of(97) {
                let obs = t.drain_changed();
                assert!(obs.windows(2).all(|w| w[0].mac < w[1].mac), "one report per device, sorted");
                for o in &obs {
                    let i = macs.iter().position(|m| *m == o.mac).unwrap();
                    assert_eq!((o.packets, o.bytes), pending[i]);
                    assert_eq!(Some((o.first_seen_us, o.last_seen_us)), seen[i]);
                    reported += o.packets;
                    pending[i] = (0, 0);
                }
                assert!(pending.iter().all(|p| p.0 == 0), "a device with traffic was not reported");
            }
        }
        reported += t.drain_changed().iter().map(|o| o.packets).sum::<u64>();
        assert_eq!(reported, total);
        assert!(t.drain_changed().is_empty());
    }

    const S: u64 = 1_000_000;

    fn remote() -> IpAddr {
        "203.0.113.9".parse().unwrap()
    }

    fn table(interval_us: u64) -> DeviceTable {
        DeviceTable::new(DeviceConfig { counter_report_interval_us: interval_us, ..DeviceConfig::default() })
    }

    fn hostname(t: &mut DeviceTable, mac: MacAddr, ts_us: u64, name: &str) {
        t.findings_at(&tests::l2_frame(mac, ts_us), Proto::Dhcp, &[Finding::src(Field::Hostname, name)]);
    }

    #[test]
    fn counter_only_news_waits_for_the_interval_and_then_carries_the_summed_delta() {
        let mut t = table(300 * S);
        let m = MacAddr([0x00, 0x1b, 0x21, 0, 2, 1]);
        t.packet(m, S, 100, None, Some(remote()));
        // The first report is immediate.
        let first = t.drain_due(5 * S);
        assert_eq!((first.len(), first[0].packets, first[0].bytes), (1, 1, 100));
        t.packet(m, 6 * S, 200, None, Some(remote()));
        t.packet(m, 7 * S, 300, None, Some(remote()));
        assert!(t.drain_due(10 * S).is_empty(), "traffic alone is reported at most once per interval");
        t.packet(m, 100 * S, 400, None, Some(remote()));
        assert!(t.drain_due(304 * S).is_empty(), "299 s after the last report");
        // No traffic in this interval: the pending counters still go out.
        let later = t.drain_due(305 * S);
        assert_eq!(later.len(), 1);
        assert_eq!((later[0].packets, later[0].bytes, later[0].last_seen_us), (3, 900, 100 * S));
        assert_eq!(later[0].first_seen_us, S);
        assert!(t.drain_due(1_000 * S).is_empty(), "nothing left");
    }

    #[test]
    fn a_new_fact_is_reported_at_once_with_the_counters_so_far() {
        let mut t = table(300 * S);
        let m = MacAddr([0x00, 0x1b, 0x21, 0, 2, 2]);
        t.packet(m, S, 100, None, Some(remote()));
        assert_eq!(t.drain_due(5 * S).len(), 1);
        t.packet(m, 6 * S, 100, None, Some(remote()));
        assert!(t.drain_due(10 * S).is_empty());
        t.packet(m, 11 * S, 100, Some(30), Some(remote()));
        let vlan = t.drain_due(15 * S);
        assert_eq!((vlan[0].vlans.clone(), vlan[0].packets), (vec![30], 2));
        t.packet(m, 16 * S, 100, Some(30), Some(remote()));
        hostname(&mut t, m, 17 * S, "INFUSION-7");
        let named = t.drain_due(20 * S);
        // Findings name the device; only its frames move last_seen.
        assert_eq!((named[0].evidence.len(), named[0].packets, named[0].last_seen_us), (1, 1, 16 * S));
    }

    #[test]
    fn the_final_drain_reports_everything_pending() {
        let mut t = table(300 * S);
        let macs: Vec<MacAddr> = (0..5u8).map(|i| MacAddr([0x00, 0x1b, 0x21, 0, 3, i])).collect();
        for m in &macs {
            t.packet(*m, S, 60, None, Some(remote()));
        }
        assert_eq!(t.drain_due(5 * S).len(), 5);
        for m in &macs[..3] {
            t.packet(*m, 8 * S, 70, None, Some(remote()));
        }
        assert!(t.drain_due(10 * S).is_empty());
        let rest = t.drain_changed();
        assert_eq!(rest.iter().map(|o| o.mac).collect::<Vec<_>>(), macs[..3]);
        assert!(rest.iter().all(|o| (o.packets, o.bytes, o.last_seen_us) == (1, 70, 8 * S)));
        assert!(t.drain_changed().is_empty());
    }

    /// Per device: packets, bytes, first and last seen, and the union of facts.
    type Totals = BTreeMap<MacAddr, (u64, u64, u64, u64, BTreeSet<String>)>;

    fn add(totals: &mut Totals, obs: &[DeviceObservation]) {
        for o in obs {
            let e = totals.entry(o.mac).or_insert((0, 0, u64::MAX, 0, BTreeSet::new()));
            e.0 += o.packets;
            e.1 += o.bytes;
            e.2 = e.2.min(o.first_seen_us);
            e.3 = e.3.max(o.last_seen_us);
            e.4.extend(o.ips.iter().map(|ip| ip.to_string()));
            e.4.extend(o.vlans.iter().map(|v| format!("vlan {v}")));
            e.4.extend(o.evidence.iter().map(|ev| format!("{:?}={}", ev.field, ev.value)));
        }
    }

    /// The same traffic, drained every 5 s of packet time, into a table reporting counters
    /// at every drain (interval 0, the old behaviour) and one reporting them every 300 s:
    /// after the final drain both reported the same totals and facts, the second in fewer
    /// observations.
    #[test]
    fn totals_equal_those_of_reporting_every_drain() {
        let (mut every, mut deferred) = (table(0), table(300 * S));
        let (mut t0, mut t1) = (Totals::new(), Totals::new());
        let (mut n0, mut n1) = (0usize, 0usize);
        let macs: Vec<MacAddr> = (0..30u8).map(|i| MacAddr([0x00, 0x1b, 0x21, 0, 4, i])).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next_drain = 5 * S;
        for n in 0..30_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ts = S + n * 100_000; // 50 minutes of packets
            let d = (x % macs.len() as u64) as usize;
            let len = 60 + (x >> 20) % 1_400;
            // Now and then a new fact: an address, a VLAN or a name.
            let src = if (x >> 30).is_multiple_of(500) {
                IpAddr::from([10, 9, d as u8, (x >> 40) as u8 % 4])
            } else {
                remote()
            };
            let vlan = (x >> 45).is_multiple_of(700).then_some(100 + (x >> 50) as u16 % 3);
            for t in [&mut every, &mut deferred] {
                t.packet(macs[d], ts, len, vlan, Some(src));
                if (x >> 12).is_multiple_of(900) {
                    hostname(t, macs[d], ts, &format!("HOST-{}", (x >> 52) % 3));
                }
            }
            if ts >= next_drain {
                next_drain = ts + 5 * S;
                let (a, b) = (every.drain_due(ts), deferred.drain_due(ts));
                (n0, n1) = (n0 + a.len(), n1 + b.len());
                add(&mut t0, &a);
                add(&mut t1, &b);
            }
        }
        add(&mut t0, &every.drain_changed());
        add(&mut t1, &deferred.drain_changed());
        assert_eq!(t0.len(), macs.len());
        assert_eq!(t0, t1);
        assert!(n1 * 3 < n0, "deferring counters saves observations: {n1} vs {n0}");
    }
}
