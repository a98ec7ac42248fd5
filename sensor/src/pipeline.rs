//! The per-packet data plane: decode → devices → flows → dissectors → events.
//!
//! Everything is driven by packet time, so replaying the same capture yields the same
//! events. Decode and dissect failures are counted by kind and never stop processing.

use crate::capture::{LinkType, RawPacket};
use crate::decode::{self, tcp_flags, Decoded, Fragment, IpHeader, Net, TcpHeader, L4};
use crate::devices::{DeviceConfig, DeviceTable};
use crate::dissect::{self, Dispatch, PacketCtx, Transport};
use crate::flow::{FlowConfig, FlowRef, FlowTable, PacketMeta};
use crate::protocols;
use crate::reassembly::{fragment_of, FragConfig, FragTable, Segment, TcpReassembler, TcpReassemblyConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use wardline_common::wire::{AddressBinding, BindingSource};
use wardline_common::{Event, Field, Proto};

#[derive(Clone, Debug, Default)]
pub struct PipelineConfig {
    pub flow: FlowConfig,
    pub devices: DeviceConfig,
    /// TCP reassembly bounds; its idle timeout follows `flow.idle_timeout_us`.
    pub tcp: TcpReassemblyConfig,
    pub ip_frag: FragConfig,
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
    /// IP fragment frames (first and later). A fragmented datagram is attributed to its
    /// flow once, when reassembled, with the completing frame's length (as tshark does).
    pub ip_fragments: u64,
    /// Datagrams rebuilt from fragments and sent through the normal UDP/TCP path.
    pub ip_datagrams_reassembled: u64,
    /// Fragments overlapping bytes already held (first copy kept).
    pub ip_fragment_overlaps: u64,
    /// Incomplete datagrams dropped at their timeout or to stay within the memory bound.
    pub ip_fragments_expired: u64,
    /// Fragments that could not be used (past 64 KiB, inconsistent, headers not found).
    pub ip_fragments_malformed: u64,
    /// TCP segments buffered ahead of a hole.
    pub tcp_out_of_order: u64,
    /// TCP payload bytes seen again (retransmissions, overlaps; first copy kept).
    pub tcp_retransmitted_bytes: u64,
    /// Holes in TCP streams skipped after the buffering bound.
    pub tcp_gaps: u64,
    /// Streams dropped to keep reassembly within the sensor-wide budget.
    pub reassembly_evictions: u64,
    /// Buffered stream bytes thrown away (gaps, evictions, expiry, end of input).
    pub reassembly_bytes_dropped: u64,
    /// Frames with no IP layer (ARP, LLDP, STP, ...).
    pub non_ip_frames: u64,
    /// Frames unwrapped from a GRE or ERSPAN tunnel (a remote mirror session).
    pub tunnelled_frames: u64,
    pub flows_emitted: u64,
    pub flows_evicted: u64,
    pub devices_over_limit: u64,
    /// Hosts known only by address (behind a router, or on a link without MACs).
    pub hosts: u64,
    pub hosts_over_limit: u64,
    /// MAC–IP bindings reported (ARP, DHCPACK, NDP), after per-interval de-duplication.
    pub bindings: u64,
    pub bindings_over_limit: u64,
    /// NDP solicitations/advertisements that yielded a binding.
    pub ndp_bindings: u64,
    /// NDP messages too short to read.
    pub ndp_malformed: u64,
    /// Findings about an end that names no device at the site (an Internet peer).
    pub findings_unattributed: u64,
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
    dissectors: Dispatch,
    streams: TcpReassembler,
    frags: FragTable,
    stats: PipelineStats,
    dissect_counts: DissectCounts,
}

/// Per-protocol dissection counters as arrays indexed by [`Proto`]: a payload costs an
/// array increment, not a BTreeMap search by name. Folded into
/// [`PipelineStats::dissected`] and [`PipelineStats::dissect_errors`] by `stats()`.
struct DissectCounts {
    ok: [u64; PROTO_SLOTS],
    errors: [u64; PROTO_SLOTS],
    names: [&'static str; PROTO_SLOTS],
}

/// More than the number of [`Proto`] variants; a larger discriminant falls back to the maps.
const PROTO_SLOTS: usize = 64;

impl DissectCounts {
    fn new() -> Self {
        DissectCounts { ok: [0; PROTO_SLOTS], errors: [0; PROTO_SLOTS], names: [""; PROTO_SLOTS] }
    }

    /// Count one payload of `proto`; false when `proto` has no slot (count it elsewhere).
    fn add(&mut self, proto: Proto, ok: bool) -> bool {
        let i = proto as usize;
        if i >= PROTO_SLOTS {
            return false;
        }
        self.names[i] = proto.as_str();
        if ok {
            self.ok[i] += 1;
        } else {
            self.errors[i] += 1;
        }
        true
    }

    fn fold_into(&self, stats: &mut PipelineStats) {
        for i in 0..PROTO_SLOTS {
            if self.ok[i] > 0 {
                *stats.dissected.entry(self.names[i]).or_insert(0) += self.ok[i];
            }
            if self.errors[i] > 0 {
                *stats.dissect_errors.entry(self.names[i]).or_insert(0) += self.errors[i];
            }
        }
    }
}

/// How often (in packets) idle reassembly streams are swept besides `drain_events`.
const STREAM_SWEEP_PACKETS: u64 = 1 << 16;

/// TCP payloads per direction dissected on a flow that is not reassembled (and not on an
/// [`protocols::EVERY_SEGMENT_PORTS`]); later segments are only counted, so a bulk transfer
/// costs flow accounting and nothing else. Identity (banners, hellos, negotiates) comes in
/// the first few.
pub const TCP_PAYLOADS_DISSECTED: u8 = 8;

/// TCP segments per direction reassembled on a flow labelled TLS before it is dropped
/// from reassembly: enough for a handshake with a long certificate chain (~45 KB).
pub const TLS_SEGMENTS_DISSECTED: u8 = 32;

/// Flows ended per batch when the table is flushed at the end of input.
const FINISH_BATCH: usize = 16_384;

impl Pipeline {
    pub fn new(cfg: PipelineConfig) -> Pipeline {
        // A stream lives as long as its flow would.
        let tcp = TcpReassemblyConfig { idle_timeout_us: cfg.flow.idle_timeout_us, ..cfg.tcp };
        Pipeline {
            flows: FlowTable::new(cfg.flow),
            devices: DeviceTable::new(cfg.devices),
            dissectors: Dispatch::default(),
            streams: TcpReassembler::new(tcp),
            frags: FragTable::new(cfg.ip_frag),
            stats: PipelineStats::default(),
            dissect_counts: DissectCounts::new(),
        }
    }

    /// Live counters (flow/device/reassembly gauges refreshed).
    pub fn stats(&self) -> PipelineStats {
        let mut s = self.stats.clone();
        self.dissect_counts.fold_into(&mut s);
        s.flows_evicted = self.flows.evicted();
        let drops = self.devices.drops();
        s.devices_over_limit = drops.devices_over_limit;
        s.hosts = self.devices.hosts_len() as u64;
        s.hosts_over_limit = drops.hosts_over_limit;
        s.bindings = self.devices.bindings_recorded();
        s.bindings_over_limit = drops.bindings_over_limit;
        s.findings_unattributed = drops.findings_unattributed;
        let t = self.streams.stats();
        s.tcp_out_of_order = t.out_of_order;
        s.tcp_retransmitted_bytes = t.retransmitted_bytes;
        s.tcp_gaps = t.gaps;
        s.reassembly_evictions = t.evictions;
        s.reassembly_bytes_dropped = t.bytes_dropped;
        let f = self.frags.stats();
        s.ip_datagrams_reassembled = f.reassembled;
        s.ip_fragment_overlaps = f.overlaps;
        s.ip_fragments_expired = f.timed_out + f.evicted;
        s.ip_fragments_malformed = f.malformed + self.stats.ip_fragments_malformed;
        s
    }

    /// TCP streams being reassembled now, and the bytes charged to their budget.
    pub fn reassembly_usage(&self) -> (usize, usize) {
        (self.streams.len(), self.streams.charged_bytes())
    }

    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    /// Records of ended flows held until the next `drain_events`. A caller that drains on
    /// a packet-time interval should also drain when this grows, or a burst of idle
    /// expiries (a million short flows timing out together) is held in memory at once.
    pub fn pending_flows(&self) -> usize {
        self.flows.pending()
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
        // ERSPAN-mirrored frames count as the frame the monitored port carried.
        let wire = d.accounted_len(wire);
        if d.tunnel.is_some() {
            self.stats.tunnelled_frames += 1;
        }
        // A whole IP packet is accounted to its sender in `ip_packet`, after the flow
        // lookup, whose entry remembers the sender's device slot.
        let whole_ip = matches!(d.net, Net::Ip(h) if h.fragment == Fragment::Whole);
        if !whole_ip {
            let ip = d.ip().copied();
            self.devices.packet(d.src_mac, ts, wire, d.vlan, ip.map(|h| h.src));
        }
        match d.net {
            Net::Arp(a) => {
                self.stats.non_ip_frames += 1;
                if !a.sender_ip.is_unspecified() {
                    // Requests, replies and gratuitous ARP all state the sender's binding.
                    self.devices.binding(AddressBinding {
                        mac: a.sender_mac,
                        ip: IpAddr::V4(a.sender_ip),
                        vlan: d.vlan,
                        source: BindingSource::Arp,
                        seen_us: ts,
                        valid_until_us: None,
                    });
                }
            }
            Net::Other => {
                self.stats.non_ip_frames += 1;
                if !d.payload.is_empty() {
                    let ctx = PacketCtx::of(&d, ts);
                    self.dispatch(None, &ctx, d.payload);
                }
            }
            Net::Ip(h) => {
                if self.stats.packets.is_multiple_of(STREAM_SWEEP_PACKETS) {
                    self.streams.expire(ts);
                }
                if h.fragment != Fragment::Whole {
                    self.stats.ip_fragments += 1;
                    self.fragment(pkt.data, &d, &h, ts, wire);
                    return;
                }
                self.ip_packet(pkt.data, &d, &h, ts, wire, true);
            }
        }
    }

    /// Hold a fragment; when it completes its datagram, process the rebuilt packet with
    /// the link-layer facts of the completing frame.
    fn fragment(&mut self, frame: &[u8], d: &Decoded<'_>, h: &IpHeader, ts: u64, wire: u64) {
        let Some(info) = fragment_of(frame, d) else {
            self.stats.ip_fragments_malformed += 1;
            return;
        };
        let Some(packet) = self.frags.push(d.vlan, h.src, h.dst, ts, &info) else {
            return;
        };
        match decode::decode(LinkType::RawIp, &packet) {
            Ok(mut whole) => {
                whole.src_mac = d.src_mac;
                whole.dst_mac = d.dst_mac;
                whole.vlan = d.vlan;
                whole.inner_vlan = d.inner_vlan;
                if let Net::Ip(wh) = whole.net {
                    // The completing frame was accounted to its sender in `process`.
                    self.ip_packet(&packet, &whole, &wh, ts, wire, false);
                }
            }
            Err(e) => *self.stats.decode_errors.entry(e.kind).or_insert(0) += 1,
        }
    }

    /// A whole IP packet: flow accounting, handshake evidence, transport payload.
    fn ip_packet(&mut self, frame: &[u8], d: &Decoded<'_>, h: &IpHeader, ts: u64, wire: u64, account_sender: bool) {
        let meta = PacketMeta::from_decoded(d, h, ts, wire);
        let (sp, dp, flags) = (meta.src_port, meta.dst_port, meta.tcp_flags);
        let fref = self.flows.observe(&meta);
        if account_sender {
            let hint = self.flows.sender_hint(fref);
            let slot = self.devices.packet_hinted(hint, d.src_mac, ts, wire, d.vlan, Some(h.src));
            if slot != hint {
                self.flows.set_sender_hint(fref, slot);
            }
        }
        if flags & 0x12 == 0x12 {
            // SYN+ACK: the sender accepts connections on this port.
            self.devices.port_evidence(d.src_mac, h.src, d.vlan, Field::ListeningPort, "tcp", sp, ts);
        } else if flags & 0x12 == 0x02 {
            // SYN: the sender is a client of this service.
            self.devices.port_evidence(d.src_mac, h.src, d.vlan, Field::ConnectsTo, "tcp", dp, ts);
        }
        if let L4::Tcp(t) = d.l4 {
            if t.flags & tcp_flags::SYN != 0 {
                self.syn_signature(frame, d, h, &t, ts);
            }
        }
        if let L4::Icmpv6 { icmp_type: 135 | 136, .. } = d.l4 {
            self.neighbor_discovery(d, h, ts);
        }
        self.transport_payload(fref, d, ts);
    }

    /// An NDP solicitation or advertisement with a link-layer address option binds an
    /// IPv6 address to a MAC (the solicitor's source, the advertised target).
    fn neighbor_discovery(&mut self, d: &Decoded<'_>, h: &IpHeader, ts: u64) {
        let Some((mac, ip)) = dissect::ndp::binding(d.payload, h.src) else {
            self.stats.ndp_malformed += u64::from(d.payload.len() < dissect::ndp::MIN_LEN);
            return;
        };
        self.stats.ndp_bindings += 1;
        self.devices.binding(AddressBinding {
            mac,
            ip: IpAddr::V6(ip),
            vlan: d.vlan,
            source: BindingSource::Ndp,
            seen_us: ts,
            valid_until_us: None,
        });
    }

    /// p0f-style signature of a SYN (client) or SYN+ACK (server), credited to its sender.
    /// The device table keeps one copy per (device, signature); repeats are not re-sent.
    fn syn_signature(&mut self, frame: &[u8], d: &Decoded<'_>, h: &IpHeader, t: &TcpHeader, ts: u64) {
        let Some(hdr) = tcp_header_bytes(frame, d, t) else {
            return;
        };
        let version = if h.src.is_ipv6() { 6 } else { 4 };
        let Some(f) = dissect::tcp_syn::finding(h.ttl, version, hdr) else {
            return;
        };
        let ctx = PacketCtx::of(d, ts);
        self.devices.findings_at(&ctx, Proto::TcpSyn, std::slice::from_ref(&f));
    }

    fn transport_payload(&mut self, fref: FlowRef, d: &Decoded<'_>, ts_us: u64) {
        if d.ip().is_none() {
            return;
        }
        let (transport, seq, flags) = match d.l4 {
            L4::Tcp(t) => (Transport::Tcp, t.seq, t.flags),
            L4::Udp { .. } => (Transport::Udp, 0, 0),
            _ => return,
        };
        // Payload-less TCP segments still matter to reassembly (SYN, FIN, RST).
        let control = transport == Transport::Tcp && flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) != 0;
        if d.payload.is_empty() && !control {
            return;
        }
        let ctx = PacketCtx::of(d, ts_us);
        match transport {
            Transport::Tcp => self.tcp_payload(fref, seq, flags, d.payload, &ctx),
            _ => self.dispatch(Some(fref), &ctx, d.payload),
        }
    }

    /// One TCP segment (direction in `flow.dir`). Flows a stream dissector wants (by port
    /// on the SYN, or by the first payload bytes) are reassembled and framed into whole
    /// messages; all others are dissected segment by segment with no buffering or copy.
    pub fn tcp_payload(&mut self, flow: FlowRef, seq: u32, flags: u8, bytes: &[u8], ctx: &PacketCtx) {
        let Pipeline { flows, devices, dissectors, streams, stats, dissect_counts, .. } = self;
        let seg = Segment { ts_us: ctx.ts_us, seq, flags, payload: bytes };
        let tracked = streams.is_tracked(flow);
        if !bytes.is_empty() && !protocols::EVERY_SEGMENT_PORTS.either(ctx.src_port, ctx.dst_port) {
            // Past its first payloads an unreassembled flow is bulk: count it, skip the rest.
            // A reassembled TLS flow is bulk once its handshake is surely over; other
            // reassembled protocols (HTTP keep-alive, DICOM, HL7, SMB) carry identity or
            // volume in every message and stay tracked.
            let before = flows.count_payload(flow).unwrap_or(0);
            if !tracked && before >= TCP_PAYLOADS_DISSECTED {
                return;
            }
            if tracked && before >= TLS_SEGMENTS_DISSECTED && flows.app(flow) == Some(Proto::Tls) {
                streams.untrack(flow);
                return;
            }
        }
        let mut deliver = |m: &[u8]| dispatch_to(dissectors, flows, devices, stats, dissect_counts, Some(flow), ctx, m);
        if tracked && streams.segment(flow, &seg, &mut deliver) {
            return;
        }
        let syn_only = flags & (tcp_flags::SYN | tcp_flags::RST) == tcp_flags::SYN;
        let wanted = (syn_only && protocols::STREAM_PORTS.either(ctx.src_port, ctx.dst_port))
            || dissectors.starts_stream(ctx, bytes);
        if wanted {
            streams.track(flow, (ctx.src_port, ctx.dst_port), ctx.ts_us);
            streams.segment(flow, &seg, &mut deliver);
        } else if !bytes.is_empty() {
            deliver(bytes);
        }
    }

    fn dispatch(&mut self, flow: Option<FlowRef>, ctx: &PacketCtx, payload: &[u8]) {
        dispatch_to(
            &self.dissectors,
            &mut self.flows,
            &mut self.devices,
            &mut self.stats,
            &mut self.dissect_counts,
            flow,
            ctx,
            payload,
        );
    }

    /// Flows that ended by `now_us` (packet time), and devices, hosts known by address and
    /// bindings with news since the last drain (in that order, flows last).
    pub fn drain_events(&mut self, now_us: u64) -> Vec<Event> {
        self.streams.expire(now_us);
        self.frags.expire(now_us);
        let devices = self.devices.drain_due(now_us);
        let hosts = self.devices.drain_hosts();
        let bindings = self.devices.drain_bindings();
        let flows = self.flows.drain(now_us);
        self.stats.flows_emitted += flows.len() as u64;
        let mut ev = Vec::with_capacity(devices.len() + hosts.len() + bindings.len() + flows.len());
        ev.extend(devices.into_iter().map(Event::Device));
        ev.extend(hosts.into_iter().map(Event::Host));
        ev.extend(bindings.into_iter().map(Event::Binding));
        ev.extend(flows.into_iter().map(Event::Flow));
        ev
    }

    /// [`drain_events`](Self::drain_events) handing each event to `sink` (devices, hosts and
    /// bindings first, then flows, in the same order) with no intermediate Vec of records.
    pub fn drain_events_with(&mut self, now_us: u64, mut sink: impl FnMut(Event)) {
        self.streams.expire(now_us);
        self.frags.expire(now_us);
        self.drain_identity(Some(now_us), |e| {
            sink(e);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
        let mut n = 0u64;
        self.flows.drain_with(now_us, |f| {
            n += 1;
            sink(Event::Flow(f));
        });
        self.stats.flows_emitted += n;
    }

    /// Devices, hosts and bindings with news since the last drain, in that order. At packet
    /// time `now_us` a device whose only news is traffic may wait (`drain_due`); None (the
    /// final drain) reports everything pending, so final totals are exact.
    fn drain_identity<E>(
        &mut self,
        now_us: Option<u64>,
        mut sink: impl FnMut(Event) -> Result<(), E>,
    ) -> Result<(), E> {
        let devices = match now_us {
            Some(now) => self.devices.drain_due(now),
            None => self.devices.drain_changed(),
        };
        for d in devices {
            sink(Event::Device(d))?;
        }
        for h in self.devices.drain_hosts() {
            sink(Event::Host(h))?;
        }
        for b in self.devices.drain_bindings() {
            sink(Event::Binding(b))?;
        }
        Ok(())
    }

    /// [`finish_with`](Self::finish_with) handing the events to `sink` one at a time.
    pub fn finish_each<E>(mut self, mut sink: impl FnMut(Event) -> Result<(), E>) -> Result<PipelineStats, E> {
        self.streams.clear();
        self.drain_identity(None, &mut sink)?;
        let mut failed = None;
        loop {
            let n = self.flows.flush_batch_with(FINISH_BATCH, |f| {
                if failed.is_none() {
                    if let Err(e) = sink(Event::Flow(f)) {
                        failed = Some(e);
                    }
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            if n == 0 {
                break;
            }
            self.stats.flows_emitted += n as u64;
        }
        Ok(self.stats())
    }

    /// End of input: every remaining flow (reason "end"), device, host and binding, plus stats.
    /// Holds every event at once; see [`finish_with`](Self::finish_with) to stream them.
    pub fn finish(self) -> (Vec<Event>, PipelineStats) {
        let mut all = Vec::new();
        let stats = self
            .finish_with(|events| {
                all.extend(events);
                Ok::<(), std::convert::Infallible>(())
            })
            .unwrap_or_else(|never| match never {});
        (all, stats)
    }

    /// Like [`finish`](Self::finish), but hands the events to `sink` in batches (devices
    /// first, then flows a slice at a time), so the records of a million live flows never
    /// exist at once: peak memory stays at the flow table's. Stops at the sink's first error.
    pub fn finish_with<E>(mut self, mut sink: impl FnMut(Vec<Event>) -> Result<(), E>) -> Result<PipelineStats, E> {
        self.streams.clear();
        let mut identity = Vec::new();
        self.drain_identity(None, |e| {
            identity.push(e);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
        if !identity.is_empty() {
            sink(identity)?;
        }
        loop {
            let flows = self.flows.flush_batch(FINISH_BATCH);
            if flows.is_empty() {
                break;
            }
            self.stats.flows_emitted += flows.len() as u64;
            sink(flows.into_iter().map(Event::Flow).collect())?;
        }
        Ok(self.stats())
    }
}

/// Run the dissectors on one payload and record what they found.
#[allow(clippy::too_many_arguments)]
fn dispatch_to(
    dissectors: &Dispatch,
    flows: &mut FlowTable,
    devices: &mut DeviceTable,
    stats: &mut PipelineStats,
    counts: &mut DissectCounts,
    flow: Option<FlowRef>,
    ctx: &PacketCtx,
    payload: &[u8],
) {
    match dissectors.dissect(ctx, payload) {
        Ok(out) => {
            let Some(app) = out.app else { return };
            if !counts.add(app, true) {
                *stats.dissected.entry(app.as_str()).or_insert(0) += 1;
            }
            if let Some(f) = flow {
                flows.set_app(f, app);
            }
            if !out.findings.is_empty() {
                devices.findings_at(ctx, app, &out.findings);
            }
            if app == Proto::Dhcp {
                // Parsed again only for the rare server ACK: the dissector's findings carry
                // no lease time.
                if let Some(ack) = dissect::dhcp::ack_binding(payload) {
                    devices.binding(AddressBinding {
                        mac: ack.client,
                        ip: IpAddr::V4(ack.ip),
                        vlan: ctx.vlan,
                        source: BindingSource::DhcpAck,
                        seen_us: ctx.ts_us,
                        valid_until_us: ack.lease_secs.map(|s| ctx.ts_us.saturating_add(u64::from(s) * 1_000_000)),
                    });
                }
            }
        }
        Err(e) => {
            if !counts.add(e.proto, false) {
                *stats.dissect_errors.entry(e.proto.as_str()).or_insert(0) += 1;
            }
            if let (Some(f), true) = (flow, e.proto != Proto::Unknown) {
                // The payload was this protocol, only broken: the label still holds.
                if flows.app(f).is_none() {
                    flows.set_app(f, e.proto);
                }
            }
        }
    }
}

/// The TCP header (options included) of a decoded segment: the bytes just before its payload.
fn tcp_header_bytes<'a>(frame: &'a [u8], d: &Decoded<'a>, t: &TcpHeader) -> Option<&'a [u8]> {
    let base = frame.as_ptr() as usize;
    let p = d.payload.as_ptr() as usize;
    if p < base || p > base + frame.len() {
        return None;
    }
    let end = p - base;
    frame.get(end.checked_sub(t.header_len as usize)?..end)
}
