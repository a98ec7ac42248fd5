//! Roll-up of flow detail into summaries when the spool is short of room: one summary per
//! (device pair, application, server port, protocol, VLAN, hour), keeping flows, packets,
//! bytes and first/last seen, so the communication map survives a long outage.
//!
//! A summary travels as a `FlowRecord` with `end_reason` "rollup" and client port 0: every
//! consumer of flows (state totals, flow sink, map) takes it unchanged; how many flows each
//! summary stands for is in the spool's `SpoolReport` totals (decision 0022).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use wardline_common::wire::{Event, FlowRecord};
use wardline_common::MacAddr;

pub const ROLLUP_REASON: &str = wardline_common::wire::flow_label::ROLLUP;
pub const HOUR_US: u64 = 3_600_000_000;

/// The hour (since the Unix epoch) a flow or summary belongs to: that of its first packet.
/// A summary's first packet is its earliest flow's, so merging never moves it to another hour.
pub fn hour_of(f: &FlowRecord) -> u64 {
    f.first_seen_us / HOUR_US
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    hour: u64,
    a_mac: MacAddr,
    b_mac: MacAddr,
    a_ip: IpAddr,
    b_ip: IpAddr,
    server_port: u16,
    ip_proto: u8,
    vlan: Option<u16>,
    app: String,
}

/// Fold `flows` into summaries. Returns the summaries (ordered by hour, then key) and how
/// many flow records went in. Summaries already in the input are merged like any flow, so
/// rolling a tier of summaries up again with new detail leaves one row per key.
pub fn roll_up<'a>(flows: impl IntoIterator<Item = &'a FlowRecord>) -> (Vec<FlowRecord>, u64) {
    let mut groups: BTreeMap<Key, FlowRecord> = BTreeMap::new();
    let mut n = 0u64;
    for f in flows {
        n += 1;
        let key = Key {
            hour: hour_of(f),
            a_mac: f.a_mac,
            b_mac: f.b_mac,
            a_ip: f.a_ip,
            b_ip: f.b_ip,
            server_port: f.b_port,
            ip_proto: f.ip_proto,
            vlan: f.vlan,
            app: f.app.to_string(),
        };
        groups
            .entry(key)
            .and_modify(|s| {
                s.first_seen_us = s.first_seen_us.min(f.first_seen_us);
                s.last_seen_us = s.last_seen_us.max(f.last_seen_us);
                s.packets_ab = s.packets_ab.saturating_add(f.packets_ab);
                s.packets_ba = s.packets_ba.saturating_add(f.packets_ba);
                s.bytes_ab = s.bytes_ab.saturating_add(f.bytes_ab);
                s.bytes_ba = s.bytes_ba.saturating_add(f.bytes_ba);
                s.tcp_flags_ab |= f.tcp_flags_ab;
                s.tcp_flags_ba |= f.tcp_flags_ba;
            })
            .or_insert_with(|| FlowRecord {
                a_port: 0,
                end_reason: Cow::Borrowed(ROLLUP_REASON),
                app: Cow::Owned(f.app.to_string()),
                ..f.clone()
            });
    }
    (groups.into_values().collect(), n)
}

/// The flow records among `events`.
pub fn flows_of(events: &[Event]) -> impl Iterator<Item = &FlowRecord> {
    events.iter().filter_map(|e| match e {
        Event::Flow(f) => Some(f),
        _ => None,
    })
}
