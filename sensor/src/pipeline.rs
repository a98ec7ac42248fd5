//! The per-packet data plane: decode → devices → flows → dissectors → events.
//!
//! Everything is driven by packet time, so replaying the same capture yields the same
//! events. Decode and dissect failures are counted by kind and never stop processing.

use crate::capture::RawPacket;
use crate::decode::{self, Decoded, Fragment, Net, L4};
use crate::devices::{DeviceConfig, DeviceTable};
use crate::dissect::{self, Dissector, PacketCtx, Transport};
use crate::flow::{Dir, FlowConfig, FlowRef, FlowTable, PacketMeta};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use wardline_common::{Event, Field, Proto};

#[derive(Clone, Debug, Default)]
pub struct PipelineConfig {
    pub flow: FlowConfig,
    pub devices: DeviceConfig,
}

/// Counters of one pipeline run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PipelineStats {
    pub packets: u64,
    /// Wire bytes of all frames.
    pub bytes: u64,
    /// Frames that failed to decode, by error kind ("ipv4_truncated", ...).
    pub decode_errors: BTreeMap<&'static str, u64>,
    /// Payloads a dissector claimed but could not parse, by protocol ("dhcp", ...).
    pub dissect_errors: BTreeMap<&'static str, u64>,
    /// Payloads successfully dissected, by protocol.
    pub dissected: BTreeMap<&'static str, u64>,
    /// IP fragments after the first (no transport header; not attributed to a flow).
    pub ip_fragments: u64,
    /// Frames with no IP layer (ARP, LLDP, STP, ...).
    pub non_ip_frames: u64,
    pub flows_emitted: u64,
    pub flows_evicted: u64,
    pub devices_over_limit: u64,
    pub first_ts_us: u64,
    pub last_ts_us: u64,
}

impl PipelineStats {
    pub fn decode_errors_total(&self) -> u64 {
        self.decode_errors.values().sum()
    }
    pub fn dissect_errors_total(&self) -> u64 {
        self.dissect_errors.values().sum()
    }
}

pub struct Pipeline {
    flows: FlowTable,
    devices: DeviceTable,
    dissectors: Vec<Box<dyn Dissector>>,
    stats: PipelineStats,
}

impl Pipeline {
    pub fn new(cfg: PipelineConfig) -> Pipeline {
        Pipeline {
            flows: FlowTable::new(cfg.flow),
            devices: DeviceTable::new(cfg.devices),
            dissectors: dissect::registry(),
            stats: PipelineStats::default(),
        }
    }

    /// Live counters (flow/device gauges refreshed).
    pub fn stats(&self) -> PipelineStats {
        let mut s = self.stats.clone();
        s.flows_evicted = self.flows.evicted();
        s.devices_over_limit = self.devices.drops().devices_over_limit;
        s
    }

    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    /// Process one captured frame.
    pub fn process(&mut self, pkt: &RawPacket<'_>) {
        let wire = pkt.wire_len();
        self.stats.packets += 1;
        self.stats.bytes += wire;
        if self.stats.first_ts_us == 0 || pkt.ts_us < self.stats.first_ts_us {
            self.stats.first_ts_us = pkt.ts_us;
        }
        self.stats.last_ts_us = self.stats.last_ts_us.max(pkt.ts_us);
        let d = match decode::decode(pkt.linktype, pkt.data) {
            Ok(d) => d,
            Err(e) => {
                *self.stats.decode_errors.entry(e.kind).or_insert(0) += 1;
                return;
            }
        };
        let ts = pkt.ts_us;
        let ip = d.ip().copied();
        self.devices.packet(d.src_mac, ts, wire, d.vlan, ip.map(|h| h.src));
        match d.net {
            Net::Arp(a) => {
                self.stats.non_ip_frames += 1;
                if !a.sender_ip.is_unspecified() {
                    self.devices.ip(a.sender_mac, ts, IpAddr::V4(a.sender_ip));
                }
            }
            Net::Other => {
                self.stats.non_ip_frames += 1;
                if !d.payload.is_empty() {
                    let ctx = PacketCtx {
                        ts_us: ts,
                        src_mac: d.src_mac,
                        dst_mac: d.dst_mac,
                        vlan: d.vlan,
                        src_ip: None,
                        dst_ip: None,
                        src_port: 0,
                        dst_port: 0,
                        transport: Transport::L2 { ethertype: d.ethertype },
                    };
                    self.dispatch(None, &ctx, d.payload);
                }
            }
            Net::Ip(h) => {
                if h.fragment == Fragment::Later {
                    self.stats.ip_fragments += 1;
                    return;
                }
                let (sp, dp) = d.ports();
                let flags = match d.l4 {
                    L4::Tcp(t) => t.flags,
                    _ => 0,
                };
                let meta = PacketMeta {
                    ts_us: ts,
                    vlan: d.vlan,
                    ip_proto: h.proto,
                    src_ip: h.src,
                    dst_ip: h.dst,
                    src_port: sp,
                    dst_port: dp,
                    src_mac: d.src_mac,
                    dst_mac: d.dst_mac,
                    wire_len: wire,
                    tcp_flags: flags,
                };
                let fref = self.flows.observe(&meta);
                if flags & 0x12 == 0x12 {
                    // SYN+ACK: the sender accepts connections on this port.
                    self.devices.port_evidence(d.src_mac, h.src, Field::ListeningPort, "tcp", sp, ts);
                } else if flags & 0x12 == 0x02 {
                    // SYN: the sender is a client of this service.
                    self.devices.port_evidence(d.src_mac, h.src, Field::ConnectsTo, "tcp", dp, ts);
                }
                self.transport_payload(fref, &d, ts);
            }
        }
    }

    fn transport_payload(&mut self, fref: FlowRef, d: &Decoded<'_>, ts_us: u64) {
        if d.payload.is_empty() {
            return;
        }
        let Some(h) = d.ip() else { return };
        let (transport, seq) = match d.l4 {
            L4::Tcp(t) => (Transport::Tcp, t.seq),
            L4::Udp { .. } => (Transport::Udp, 0),
            _ => return,
        };
        let (sp, dp) = d.ports();
        let ctx = PacketCtx {
            ts_us,
            src_mac: d.src_mac,
            dst_mac: d.dst_mac,
            vlan: d.vlan,
            src_ip: Some(h.src),
            dst_ip: Some(h.dst),
            src_port: sp,
            dst_port: dp,
            transport,
        };
        match transport {
            Transport::Tcp => self.tcp_payload(fref, fref.dir, seq, d.payload, &ctx),
            _ => self.dispatch(Some(fref), &ctx, d.payload),
        }
    }

    /// Seam for TCP stream reassembly: today each segment's payload is dissected on its
    /// own. A reassembler keyed by (flow, dir) slots in here, buffering by `seq` and
    /// calling `dispatch` with whole application messages.
    pub fn tcp_payload(&mut self, flow: FlowRef, _dir: Dir, _seq: u32, bytes: &[u8], ctx: &PacketCtx) {
        self.dispatch(Some(flow), ctx, bytes);
    }

    fn dispatch(&mut self, flow: Option<FlowRef>, ctx: &PacketCtx, payload: &[u8]) {
        match dissect::dissect(&self.dissectors, ctx, payload) {
            Ok(out) => {
                let Some(app) = out.app else { return };
                *self.stats.dissected.entry(app.as_str()).or_insert(0) += 1;
                if let Some(f) = flow {
                    self.flows.set_app(f, app);
                }
                if !out.findings.is_empty() {
                    self.devices.findings_at(ctx, app, &out.findings);
                }
            }
            Err(e) => {
                *self.stats.dissect_errors.entry(e.proto.as_str()).or_insert(0) += 1;
                if let (Some(f), true) = (flow, e.proto != Proto::Unknown) {
                    // The payload was this protocol, only broken: the label still holds.
                    if self.flows.app(f).is_none() {
                        self.flows.set_app(f, e.proto);
                    }
                }
            }
        }
    }

    /// Flows that ended by `now_us` (packet time) and devices with news since the last drain.
    pub fn drain_events(&mut self, now_us: u64) -> Vec<Event> {
        let devices = self.devices.drain_changed();
        let flows = self.flows.drain(now_us);
        self.stats.flows_emitted += flows.len() as u64;
        let mut ev = Vec::with_capacity(devices.len() + flows.len());
        ev.extend(devices.into_iter().map(Event::Device));
        ev.extend(flows.into_iter().map(Event::Flow));
        ev
    }

    /// End of input: every remaining flow (reason "end") and device change, plus stats.
    pub fn finish(mut self) -> (Vec<Event>, PipelineStats) {
        let devices = self.devices.drain_changed();
        let flows = self.flows.flush();
        self.stats.flows_emitted += flows.len() as u64;
        let mut ev = Vec::with_capacity(devices.len() + flows.len());
        ev.extend(devices.into_iter().map(Event::Device));
        ev.extend(flows.into_iter().map(Event::Flow));
        let stats = self.stats();
        (ev, stats)
    }
}
