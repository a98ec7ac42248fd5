//! Time-bounded MAC–IP bindings: per (site, address), the timeline of which MAC owned the
//! address when, built from ARP, DHCP ACK and NDP sightings of every sensor at the site.
//!
//! A timeline is a list of spans sorted by start time; adjacent spans always name different
//! MACs (sightings of the same owner extend its span). A span owns the address from its
//! start until the next span starts, or until its DHCP lease ends when the lease was not
//! renewed and no later ARP/NDP sighting showed the owner still using it. The earliest
//! span is also taken to own the address before its first sighting (nothing says anyone
//! else did), unless older spans were dropped by the bound, in which case that time is
//! unknown. Everything here is a pure function of the sightings applied, in apply order.

use serde::{Deserialize, Serialize};
use wardline_common::wire::{AddressBinding, BindingSource};
use wardline_common::MacAddr;

/// Spans kept per address; beyond this the oldest span is dropped and counted.
pub const MAX_SPANS_PER_ADDRESS: usize = 8;

/// One owner of an address over a time interval (packet times, µs since the epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingSpan {
    pub mac: MacAddr,
    /// How the span was first learned.
    pub source: BindingSource,
    pub from_us: u64,
    pub last_seen_us: u64,
    /// Latest DHCP lease end among the span's DHCP ACKs; `None` for ARP/NDP-only spans,
    /// which are open-ended.
    pub lease_until_us: Option<u64>,
}

impl BindingSpan {
    /// The last instant this span can own the address, ignoring later spans.
    pub fn owned_until_us(&self) -> u64 {
        self.lease_until_us.map_or(u64::MAX, |until| until.max(self.last_seen_us))
    }

    fn absorb(&mut self, b: &AddressBinding) {
        self.last_seen_us = self.last_seen_us.max(b.seen_us);
        if let Some(until) = b.valid_until_us {
            self.lease_until_us = Some(self.lease_until_us.map_or(until, |u| u.max(until)));
        }
    }
}

/// Who owned one address at a site, over time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressTimeline {
    /// Sorted by `from_us`; adjacent spans name different MACs.
    pub spans: Vec<BindingSpan>,
    /// Spans dropped by `MAX_SPANS_PER_ADDRESS` (oldest first).
    pub spans_dropped: u64,
}

impl AddressTimeline {
    /// Record one sighting. Returns whether who owns the address at some instant changed
    /// (callers then re-attribute evidence about the address); a refresh of the current
    /// owner that moves no boundary returns false.
    pub fn record(&mut self, b: &AddressBinding) -> bool {
        // Invariant: every span's last sighting is before the next span's start.
        let at = self.spans.partition_point(|s| s.from_us <= b.seen_us);
        if at > 0 && self.spans[at - 1].mac == b.mac {
            let span = &mut self.spans[at - 1];
            let before = span.owned_until_us();
            span.absorb(b);
            return span.owned_until_us() != before;
        }
        let mut next = at;
        if at > 0 && self.spans[at - 1].last_seen_us > b.seen_us {
            // The covering span's owner was seen after this sighting too: split it, so
            // the order sightings arrive in does not decide who owned the address when.
            let head = &mut self.spans[at - 1];
            let tail = BindingSpan { from_us: head.last_seen_us, ..head.clone() };
            head.last_seen_us = head.from_us;
            self.spans.insert(at, tail);
        } else if at < self.spans.len() && self.spans[at].mac == b.mac {
            // The same owner seen earlier than its span started: move the start back.
            let span = &mut self.spans[at];
            span.from_us = b.seen_us;
            span.absorb(b);
            next = usize::MAX;
        }
        if next != usize::MAX {
            let span = BindingSpan {
                mac: b.mac,
                source: b.source,
                from_us: b.seen_us,
                last_seen_us: b.seen_us,
                lease_until_us: b.valid_until_us,
            };
            self.spans.insert(next, span);
        }
        while self.spans.len() > MAX_SPANS_PER_ADDRESS {
            self.spans.remove(0);
            self.spans_dropped = self.spans_dropped.saturating_add(1);
        }
        true
    }

    /// The MAC that owned the address at `ts_us`, if any.
    pub fn owner_at(&self, ts_us: u64) -> Option<MacAddr> {
        let at = self.spans.partition_point(|s| s.from_us <= ts_us);
        if at == 0 {
            // Before the first known owner: assume it, unless older owners were dropped.
            return self.spans.first().filter(|_| self.spans_dropped == 0).map(|s| s.mac);
        }
        let span = &self.spans[at - 1];
        (ts_us <= span.owned_until_us()).then_some(span.mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0, 0x1b, 0, 0, 0, n])
    }

    fn binding(m: u8, seen_us: u64, lease_us: Option<u64>) -> AddressBinding {
        AddressBinding {
            mac: mac(m),
            ip: IpAddr::from([10, 9, 0, 5]),
            vlan: None,
            source: if lease_us.is_some() { BindingSource::DhcpAck } else { BindingSource::Arp },
            seen_us,
            valid_until_us: lease_us.map(|l| seen_us + l),
        }
    }

    #[test]
    fn a_later_lease_to_another_mac_splits_the_timeline() {
        let mut t = AddressTimeline::default();
        assert!(t.record(&binding(1, 100, Some(1_000))));
        assert!(t.record(&binding(2, 5_000, Some(1_000))));
        assert_eq!(t.owner_at(50), Some(mac(1)), "the first owner is assumed before its first sighting");
        assert_eq!(t.owner_at(900), Some(mac(1)));
        assert_eq!(t.owner_at(3_000), None, "mac 1's lease ended at 1100 and was not renewed");
        assert_eq!(t.owner_at(5_000), Some(mac(2)));
        assert_eq!(t.owner_at(u64::MAX), None);
        // ARP from mac 1 during its lease only refreshes it: no boundary moves.
        assert!(!t.record(&binding(1, 200, None)));
    }

    #[test]
    fn arp_owners_hold_until_the_next_owner() {
        let mut t = AddressTimeline::default();
        t.record(&binding(1, 100, None));
        t.record(&binding(2, 500, None));
        t.record(&binding(1, 900, None));
        assert_eq!(
            [t.owner_at(0), t.owner_at(499), t.owner_at(500), t.owner_at(899), t.owner_at(10_000)],
            [Some(mac(1)), Some(mac(1)), Some(mac(2)), Some(mac(2)), Some(mac(1))]
        );
        // A late, earlier sighting of mac 2 moves its start back.
        assert!(t.record(&binding(2, 300, None)));
        assert_eq!(t.owner_at(300), Some(mac(2)));
    }

    #[test]
    fn arrival_order_does_not_decide_the_owner() {
        let orders = [[(1, 100), (1, 300), (2, 200)], [(1, 100), (2, 200), (1, 300)], [(2, 200), (1, 300), (1, 100)]];
        for order in orders {
            let mut t = AddressTimeline::default();
            for (m, ts) in order {
                t.record(&binding(m, ts, None));
            }
            let owners: Vec<_> = [100, 250, 300].iter().map(|ts| t.owner_at(*ts)).collect();
            assert_eq!(owners, [Some(mac(1)), Some(mac(2)), Some(mac(1))], "order {order:?}");
        }
    }

    #[test]
    fn the_bound_drops_the_oldest_and_forgets_the_time_before() {
        let mut t = AddressTimeline::default();
        for i in 0..(MAX_SPANS_PER_ADDRESS as u64 + 3) {
            t.record(&binding((i % 2) as u8, 100 * (i + 1), None));
        }
        assert_eq!(t.spans.len(), MAX_SPANS_PER_ADDRESS);
        assert_eq!(t.spans_dropped, 3);
        assert_eq!(t.owner_at(0), None);
    }

    proptest! {
        /// Whatever the order sightings arrive in, the timeline stays sorted with no two
        /// adjacent spans of one MAC, and the latest sighting owns its own instant.
        #[test]
        fn timelines_stay_sorted_and_alternating(
            sightings in proptest::collection::vec((0u8..3, 0u64..10_000, proptest::option::of(1u64..3_000)), 1..30)
        ) {
            let mut t = AddressTimeline::default();
            for (m, ts, lease) in &sightings {
                t.record(&binding(*m, *ts, *lease));
                prop_assert!(t.spans.len() <= MAX_SPANS_PER_ADDRESS);
                prop_assert!(t.spans.windows(2).all(|w| w[0].from_us <= w[1].from_us && w[0].last_seen_us <= w[1].from_us && w[0].mac != w[1].mac));
            }
            let (m, ts, _) = sightings.last().unwrap();
            if t.spans_dropped == 0 {
                prop_assert_eq!(t.owner_at(*ts), Some(mac(*m)), "the latest sighting owns its own instant");
            }
        }

        #[test]
        fn replaying_the_same_sightings_gives_the_same_timeline(
            sightings in proptest::collection::vec((0u8..3, 0u64..10_000, proptest::option::of(1u64..3_000)), 1..30)
        ) {
            let build = || {
                let mut t = AddressTimeline::default();
                for (m, ts, lease) in &sightings {
                    t.record(&binding(*m, *ts, *lease));
                }
                t
            };
            prop_assert_eq!(build(), build());
        }
    }
}
