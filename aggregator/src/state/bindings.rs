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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
///
/// Held in a compact encoding (one allocation of about 18 bytes per span instead of a
/// vector of 40-byte spans): at 10M lease hand-overs the timelines were the largest part
/// of the state. The encoding is canonical, so equal timelines are equal bytes; it is
/// serialized as the span list (`TimelineParts`), so snapshots do not depend on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TimelineParts", into = "TimelineParts")]
pub struct AddressTimeline {
    /// `spans_dropped`, then each span (sorted by `from_us`; adjacent spans name different
    /// MACs): MAC, source and lease flag, `from_us` as the delta from the previous span's
    /// (the first absolute), `last_seen_us - from_us`, and with a lease `lease_until_us -
    /// last_seen_us`; numbers as LEB128 varints of wrapping differences. Empty when no span.
    encoded: Box<[u8]>,
}

/// The serialized (and pre-encoding) form of a timeline.
#[derive(Clone, Serialize, Deserialize)]
struct TimelineParts {
    /// Sorted by `from_us`; adjacent spans name different MACs.
    spans: Vec<BindingSpan>,
    /// Spans dropped by `MAX_SPANS_PER_ADDRESS` (oldest first).
    spans_dropped: u64,
}

impl From<TimelineParts> for AddressTimeline {
    fn from(parts: TimelineParts) -> Self {
        AddressTimeline::encode(&parts.spans, parts.spans_dropped)
    }
}

impl From<AddressTimeline> for TimelineParts {
    fn from(t: AddressTimeline) -> Self {
        TimelineParts { spans: t.spans(), spans_dropped: t.spans_dropped() }
    }
}

const LEASE_FLAG: u8 = 0x80;

fn source_code(source: BindingSource) -> u8 {
    match source {
        BindingSource::Arp => 0,
        BindingSource::DhcpAck => 1,
        BindingSource::Ndp => 2,
    }
}

fn source_of(code: u8) -> BindingSource {
    match code & !LEASE_FLAG {
        0 => BindingSource::Arp,
        1 => BindingSource::DhcpAck,
        _ => BindingSource::Ndp,
    }
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A long-lived copy of an encoding, allocated at its exact size. Shrinking the encoding
/// buffer in place (`into_boxed_slice`) would leave its spare tail as a small free block
/// next to every record, which at millions of records showed up as resident memory.
pub(super) fn exact_box(encoded: &[u8]) -> Box<[u8]> {
    encoded.into()
}

/// Read a varint at `*at`; the encoding is only ever written by `encode`, so a short or
/// overlong one cannot occur (it reads as what it holds, never panics).
pub(super) fn get_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&b) = bytes.get(*at) {
        *at += 1;
        if shift < 64 {
            v |= u64::from(b & 0x7f) << shift;
        }
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    v
}

/// The spans of an encoded timeline, in order.
struct Spans<'a> {
    bytes: &'a [u8],
    at: usize,
    prev_from_us: u64,
}

impl Iterator for Spans<'_> {
    type Item = BindingSpan;

    fn next(&mut self) -> Option<BindingSpan> {
        let mac: [u8; 6] = self.bytes.get(self.at..self.at + 6)?.try_into().ok()?;
        let code = *self.bytes.get(self.at + 6)?;
        self.at += 7;
        let from_us = self.prev_from_us.wrapping_add(get_varint(self.bytes, &mut self.at));
        let last_seen_us = from_us.wrapping_add(get_varint(self.bytes, &mut self.at));
        let lease_until_us =
            (code & LEASE_FLAG != 0).then(|| last_seen_us.wrapping_add(get_varint(self.bytes, &mut self.at)));
        self.prev_from_us = from_us;
        Some(BindingSpan { mac: MacAddr(mac), source: source_of(code), from_us, last_seen_us, lease_until_us })
    }
}

impl AddressTimeline {
    fn encode(spans: &[BindingSpan], spans_dropped: u64) -> Self {
        if spans.is_empty() && spans_dropped == 0 {
            return AddressTimeline::default();
        }
        let mut out = Vec::with_capacity(1 + spans.len() * 24);
        put_varint(&mut out, spans_dropped);
        let mut prev_from_us = 0u64;
        for span in spans {
            out.extend_from_slice(&span.mac.0);
            out.push(source_code(span.source) | if span.lease_until_us.is_some() { LEASE_FLAG } else { 0 });
            put_varint(&mut out, span.from_us.wrapping_sub(prev_from_us));
            put_varint(&mut out, span.last_seen_us.wrapping_sub(span.from_us));
            if let Some(until) = span.lease_until_us {
                put_varint(&mut out, until.wrapping_sub(span.last_seen_us));
            }
            prev_from_us = span.from_us;
        }
        AddressTimeline { encoded: exact_box(&out) }
    }

    /// A timeline from the bytes `encoded()` gave.
    pub(super) fn from_encoded(encoded: &[u8]) -> Self {
        AddressTimeline { encoded: encoded.into() }
    }

    /// The canonical encoding (empty for an empty timeline).
    pub(super) fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    fn iter(&self) -> Spans<'_> {
        let mut at = 0;
        get_varint(&self.encoded, &mut at);
        Spans { bytes: &self.encoded, at, prev_from_us: 0 }
    }

    /// The spans, sorted by `from_us`; adjacent spans name different MACs.
    pub fn spans(&self) -> Vec<BindingSpan> {
        self.iter().collect()
    }

    /// How many spans there are.
    pub fn span_count(&self) -> usize {
        self.iter().count()
    }

    /// Spans dropped by `MAX_SPANS_PER_ADDRESS` (oldest first).
    pub fn spans_dropped(&self) -> u64 {
        get_varint(&self.encoded, &mut 0)
    }

    /// Record one sighting. Returns whether who owns the address at some instant changed
    /// (callers then re-attribute evidence about the address); a refresh of the current
    /// owner that moves no boundary returns false.
    pub fn record(&mut self, b: &AddressBinding) -> bool {
        let mut spans = self.spans();
        let mut spans_dropped = self.spans_dropped();
        let changed = record_in(&mut spans, &mut spans_dropped, b);
        let updated = AddressTimeline::encode(&spans, spans_dropped);
        if updated != *self {
            *self = updated;
        }
        changed
    }

    /// The MAC that owned the address at `ts_us`, if any.
    pub fn owner_at(&self, ts_us: u64) -> Option<MacAddr> {
        let mut spans = self.iter();
        let first = spans.next()?;
        if first.from_us > ts_us {
            // Before the first known owner: assume it, unless older owners were dropped.
            return (self.spans_dropped() == 0).then_some(first.mac);
        }
        let mut covering = first;
        for span in spans {
            if span.from_us > ts_us {
                break;
            }
            covering = span;
        }
        (ts_us <= covering.owned_until_us()).then_some(covering.mac)
    }
}

/// `AddressTimeline::record` on the decoded spans.
fn record_in(spans: &mut Vec<BindingSpan>, spans_dropped: &mut u64, b: &AddressBinding) -> bool {
    // Invariant: every span's last sighting is before the next span's start.
    let at = spans.partition_point(|s| s.from_us <= b.seen_us);
    if at > 0 && spans[at - 1].mac == b.mac {
        let span = &mut spans[at - 1];
        let before = span.owned_until_us();
        span.absorb(b);
        return span.owned_until_us() != before;
    }
    let mut next = at;
    if at > 0 && spans[at - 1].last_seen_us > b.seen_us {
        // The covering span's owner was seen after this sighting too: split it, so
        // the order sightings arrive in does not decide who owned the address when.
        let head = &mut spans[at - 1];
        let tail = BindingSpan { from_us: head.last_seen_us, ..*head };
        head.last_seen_us = head.from_us;
        spans.insert(at, tail);
    } else if at < spans.len() && spans[at].mac == b.mac {
        // The same owner seen earlier than its span started: move the start back.
        let span = &mut spans[at];
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
        spans.insert(next, span);
    }
    while spans.len() > MAX_SPANS_PER_ADDRESS {
        spans.remove(0);
        *spans_dropped = spans_dropped.saturating_add(1);
    }
    true
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
        assert_eq!(t.span_count(), MAX_SPANS_PER_ADDRESS);
        assert_eq!(t.spans_dropped(), 3);
        assert_eq!(t.owner_at(0), None);
    }

    /// The owner at `ts_us` as a binary search over the decoded spans (the definition the
    /// encoded walk in `owner_at` must agree with).
    fn owner_by_search(t: &AddressTimeline, ts_us: u64) -> Option<MacAddr> {
        let spans = t.spans();
        let at = spans.partition_point(|s| s.from_us <= ts_us);
        if at == 0 {
            return spans.first().filter(|_| t.spans_dropped() == 0).map(|s| s.mac);
        }
        let span = &spans[at - 1];
        (ts_us <= span.owned_until_us()).then_some(span.mac)
    }

    #[test]
    fn serialized_as_the_span_list() {
        let mut t = AddressTimeline::default();
        t.record(&binding(1, 100, Some(1_000)));
        t.record(&binding(2, 5_000, None));
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"spans": [
                {"mac": mac(1), "source": BindingSource::DhcpAck, "from_us": 100, "last_seen_us": 100, "lease_until_us": 1_100},
                {"mac": mac(2), "source": BindingSource::Arp, "from_us": 5_000, "last_seen_us": 5_000, "lease_until_us": null},
            ], "spans_dropped": 0})
        );
        assert_eq!(serde_json::from_value::<AddressTimeline>(json).unwrap(), t);
    }

    proptest! {
        /// Any spans (any times, even out of order) survive the encoding unchanged.
        #[test]
        fn the_encoding_round_trips(
            spans in proptest::collection::vec((0u8..3, any::<u64>(), any::<u64>(), proptest::option::of(any::<u64>())), 0..10),
            dropped in any::<u64>(),
        ) {
            let spans: Vec<BindingSpan> = spans
                .iter()
                .map(|(m, from_us, last_seen_us, lease_until_us)| BindingSpan {
                    mac: mac(*m),
                    source: [BindingSource::Arp, BindingSource::DhcpAck, BindingSource::Ndp][*m as usize],
                    from_us: *from_us,
                    last_seen_us: *last_seen_us,
                    lease_until_us: *lease_until_us,
                })
                .collect();
            let t = AddressTimeline::encode(&spans, dropped);
            prop_assert_eq!(t.spans(), spans);
            prop_assert_eq!(t.spans_dropped(), dropped);
        }

        /// The walk over the encoding finds the owner a binary search over the spans finds.
        #[test]
        fn owner_at_agrees_with_a_search_over_the_spans(
            sightings in proptest::collection::vec((0u8..3, 0u64..10_000, proptest::option::of(1u64..3_000)), 1..30),
            probes in proptest::collection::vec(0u64..15_000, 1..20),
        ) {
            let mut t = AddressTimeline::default();
            for (m, ts, lease) in &sightings {
                t.record(&binding(*m, *ts, *lease));
            }
            for ts in probes {
                prop_assert_eq!(t.owner_at(ts), owner_by_search(&t, ts));
            }
        }

        /// Whatever the order sightings arrive in, the timeline stays sorted with no two
        /// adjacent spans of one MAC, and the latest sighting owns its own instant.
        #[test]
        fn timelines_stay_sorted_and_alternating(
            sightings in proptest::collection::vec((0u8..3, 0u64..10_000, proptest::option::of(1u64..3_000)), 1..30)
        ) {
            let mut t = AddressTimeline::default();
            for (m, ts, lease) in &sightings {
                t.record(&binding(*m, *ts, *lease));
                let spans = t.spans();
                prop_assert!(spans.len() <= MAX_SPANS_PER_ADDRESS);
                prop_assert!(spans.windows(2).all(|w| w[0].from_us <= w[1].from_us && w[0].last_seen_us <= w[1].from_us && w[0].mac != w[1].mac));
            }
            let (m, ts, _) = sightings.last().unwrap();
            if t.spans_dropped() == 0 {
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
