//! MAC–IP bindings the sensor saw announced (ARP sender, DHCPACK, NDP link-layer address
//! options), reported once per interval: the same (MAC, IP, VLAN, source) is sent again
//! only in a later interval, or in the same one when its lease length changed. The cluster
//! keeps bindings as time intervals, so one sighting per interval bounds them well enough
//! while a steady ARP chatter costs a handful of events.

use std::collections::HashMap;
use std::net::IpAddr;
use wardline_common::wire::{AddressBinding, BindingSource};
use wardline_common::MacAddr;

type BindingKey = (MacAddr, IpAddr, Option<u16>, BindingSource);

pub struct BindingLog {
    /// Distinct bindings held per interval; more are counted in `dropped`.
    max_per_interval: usize,
    /// Sent this interval, with the lease length (µs) they were sent with.
    sent: HashMap<BindingKey, Option<u64>, foldhash::fast::RandomState>,
    pending: Vec<AddressBinding>,
    dropped: u64,
    recorded: u64,
}

impl BindingLog {
    pub fn new(max_per_interval: usize) -> BindingLog {
        BindingLog {
            max_per_interval,
            sent: HashMap::with_hasher(Default::default()),
            pending: Vec::new(),
            dropped: 0,
            recorded: 0,
        }
    }

    /// Bindings not reported because the per-interval bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bindings reported so far (after de-duplication).
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// One sighting. Group or zero MACs and addresses that never name one host are ignored.
    pub fn record(&mut self, b: AddressBinding) {
        if !b.mac.is_device() || !super::is_host_ip(&b.ip) {
            return;
        }
        let lease = b.valid_until_us.map(|v| v.saturating_sub(b.seen_us));
        let key = (b.mac, b.ip, b.vlan, b.source);
        match self.sent.get_mut(&key) {
            Some(l) if *l == lease => return,
            Some(l) => *l = lease,
            None => {
                if self.sent.len() >= self.max_per_interval {
                    self.dropped += 1;
                    return;
                }
                self.sent.insert(key, lease);
            }
        }
        self.recorded += 1;
        self.pending.push(b);
    }

    /// This interval's bindings in packet-time order (then address, MAC, VLAN, source);
    /// the next interval starts with nothing sent.
    pub fn drain(&mut self) -> Vec<AddressBinding> {
        self.sent.clear();
        let mut out = std::mem::take(&mut self.pending);
        out.sort_by_key(|b| (b.seen_us, b.ip, b.mac, b.vlan, b.source));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(mac: u8, ip: u8, ts: u64) -> AddressBinding {
        AddressBinding {
            mac: MacAddr([0, 0x1b, 0x21, 0, 0, mac]),
            ip: IpAddr::from([10, 0, 0, ip]),
            vlan: None,
            source: BindingSource::Arp,
            seen_us: ts,
            valid_until_us: None,
        }
    }

    #[test]
    fn once_per_interval_unless_the_lease_changes() {
        let mut log = BindingLog::new(8);
        log.record(arp(1, 5, 30));
        log.record(arp(1, 5, 40));
        log.record(arp(2, 5, 20));
        let ack = |ts: u64, lease_s: u64| AddressBinding {
            source: BindingSource::DhcpAck,
            valid_until_us: Some(ts + lease_s * 1_000_000),
            ..arp(1, 5, ts)
        };
        log.record(ack(50, 3600));
        log.record(ack(60, 3600));
        log.record(ack(70, 600));
        let out = log.drain();
        let seen: Vec<(u64, u8)> = out.iter().map(|b| (b.seen_us, b.mac.0[5])).collect();
        assert_eq!(seen, vec![(20, 2), (30, 1), (50, 1), (70, 1)]);
        // Next interval: sent again.
        log.record(arp(1, 5, 100));
        assert_eq!(log.drain().len(), 1);
        assert_eq!(log.recorded(), 5);
    }

    #[test]
    fn bounded_per_interval_and_filtered() {
        let mut log = BindingLog::new(2);
        for i in 1..=4 {
            log.record(arp(i, i, 1));
        }
        log.record(AddressBinding { mac: MacAddr::BROADCAST, ..arp(1, 9, 1) });
        log.record(AddressBinding { ip: "255.255.255.255".parse().unwrap(), ..arp(1, 9, 1) });
        assert_eq!(log.drain().len(), 2);
        assert_eq!(log.dropped(), 2);
        log.record(arp(3, 3, 2));
        assert_eq!(log.drain().len(), 1);
    }
}
