//! Exact per-flow accounting of what the emitter writes: the flows of the ground truth.

use super::frames::L2;
use crate::truth::TruthFlow;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use wardline_common::MacAddr;

/// Both directions of one IPv4 5-tuple (plus VLAN) map to the same key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    proto: u8,
    vlan: Option<u16>,
    lo: (Ipv4Addr, u16),
    hi: (Ipv4Addr, u16),
}

/// What the ledger needs to know about one written IPv4 packet.
pub(crate) struct WrittenPacket<'a> {
    pub proto: u8,
    /// MACs and VLAN as on the wire.
    pub l2: &'a L2,
    /// Source and destination (address, port).
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
    /// Transport payload length.
    pub payload_len: usize,
    pub app: &'a str,
    /// A bare SYN: the first packet of a TCP session.
    pub opens_tcp_session: bool,
}

/// Flows in order of their first packet, with their counters.
#[derive(Default)]
pub(crate) struct FlowLedger {
    flows: Vec<TruthFlow>,
    index: HashMap<FlowKey, usize>,
}

impl FlowLedger {
    /// Counts one packet of `frame_len` bytes (whole frame) written at `now_us`.
    pub fn record(&mut self, p: &WrittenPacket, frame_len: u64, now_us: u64) {
        let (a, b) = (p.src, p.dst);
        let key = FlowKey { proto: p.proto, vlan: p.l2.vlan, lo: a.min(b), hi: a.max(b) };
        let idx = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.flows.push(new_flow(p, now_us));
                self.index.insert(key, self.flows.len() - 1);
                self.flows.len() - 1
            }
        };
        let f = &mut self.flows[idx];
        f.last_us = now_us;
        if p.opens_tcp_session {
            f.tcp_sessions += 1;
        }
        if (f.a_ip, f.a_port) == a {
            f.packets_ab += 1;
            f.bytes_ab += frame_len;
            f.payload_ab += p.payload_len as u64;
        } else {
            f.packets_ba += 1;
            f.bytes_ba += frame_len;
            f.payload_ba += p.payload_len as u64;
        }
    }

    pub fn into_flows(self) -> Vec<TruthFlow> {
        self.flows
    }
}

/// A flow with no packets counted yet; `a` is the sender of `first`.
fn new_flow(first: &WrittenPacket, now_us: u64) -> TruthFlow {
    TruthFlow {
        ip_proto: first.proto,
        vlan: first.l2.vlan,
        a_mac: MacAddr(first.l2.src),
        b_mac: MacAddr(first.l2.dst),
        a_ip: first.src.0,
        b_ip: first.dst.0,
        a_port: first.src.1,
        b_port: first.dst.1,
        first_us: now_us,
        last_us: now_us,
        packets_ab: 0,
        packets_ba: 0,
        bytes_ab: 0,
        bytes_ba: 0,
        payload_ab: 0,
        payload_ba: 0,
        app: first.app.to_string(),
        tcp_sessions: 0,
    }
}
