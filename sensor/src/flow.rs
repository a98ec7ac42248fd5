//! Bidirectional flow table driven by packet time.
//!
//! Flows are keyed by (VLAN, IP protocol, canonical (ip, port) pair) so both directions
//! land in one entry; side `a` is whoever sent the first packet seen. Timeouts use the
//! packets' capture time, never the wall clock, so replaying a pcap gives identical
//! records. Entries live in a slab threaded on an LRU list (least recently active at the
//! head): idle expiry pops the head, and when the table is full the head is evicted and
//! counted. Per-flow state is 128 bytes with no heap data; the app label is a one-byte
//! [`Proto`]. The hash index (`flow/index.rs`) holds slot numbers and hash bits, 8 bytes per
//! bucket at most half full (the key lives once, in the slab), so a million flows cost
//! about 145 MB. Slab and index are advised onto huge pages when the process uses them
//! (`WARDLINE_THP=1`, see `hugepages.rs`): they are read at random per packet.

use crate::decode::tcp_flags;
use crate::protocols::guess_app;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use wardline_common::wire::flow_label::{ACTIVE, END, FIN, IDLE};
use wardline_common::{FlowRecord, MacAddr, Proto};

#[derive(Clone, Debug)]
pub struct FlowConfig {
    /// A flow with no packet for this long (packet time) is emitted with reason "idle".
    pub idle_timeout_us: u64,
    /// A flow older than this is emitted with reason "active" on its next packet and
    /// restarted, so long-lived connections still report regularly.
    pub active_timeout_us: u64,
    /// Hard bound on concurrent flows; beyond it the least recently active is evicted.
    pub max_flows: usize,
    /// After FIN both ways or RST, how long to keep the flow for trailing ACKs.
    pub close_linger_us: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            idle_timeout_us: 60_000_000,
            active_timeout_us: 300_000_000,
            max_flows: 1_000_000,
            close_linger_us: 2_000_000,
        }
    }
}

/// One endpoint as a fixed-size, hashable value (IPv4 stored in the first 4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Endpoint {
    ip: [u8; 16],
    port: u16,
}

/// Direction-free flow identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    lo: Endpoint,
    hi: Endpoint,
    /// VLAN id, or `NO_VLAN`.
    vlan: u16,
    proto: u8,
    v6: bool,
}

const NO_VLAN: u16 = u16::MAX;
/// Largest flow bound whose index and slab are reserved at construction.
const MAX_PRESIZED_FLOWS: usize = 4 << 20;
const NIL: u32 = u32::MAX;

/// An address as one number whose order is the byte order of `Endpoint::ip` (IPv4 in the
/// first 4 bytes): endpoints are ordered on these values in registers, because comparing the
/// freshly written byte arrays stalled on store forwarding.
fn ip_value(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => (u32::from(v4) as u128) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn endpoint(ip: u128, port: u16) -> Endpoint {
    Endpoint { ip: ip.to_be_bytes(), port }
}

fn ip_of(e: &Endpoint, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(e.ip))
    } else {
        IpAddr::V4(Ipv4Addr::new(e.ip[0], e.ip[1], e.ip[2], e.ip[3]))
    }
}

/// Which way a packet went relative to the flow's `a` side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    AtoB = 0,
    BtoA = 1,
}

/// The per-packet facts the flow table needs.
#[derive(Clone, Copy, Debug)]
pub struct PacketMeta {
    pub ts_us: u64,
    pub vlan: Option<u16>,
    pub ip_proto: u8,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// Frame length on the wire (what `tshark -z conv` counts).
    pub wire_len: u64,
    /// TCP flags byte, 0 for other protocols.
    pub tcp_flags: u8,
}

impl PacketMeta {
    /// The flow facts of a decoded IP packet.
    #[inline]
    pub fn from_decoded(
        d: &crate::decode::Decoded<'_>,
        h: &crate::decode::IpHeader,
        ts_us: u64,
        wire_len: u64,
    ) -> Self {
        let (src_port, dst_port) = d.ports();
        PacketMeta {
            ts_us,
            vlan: d.vlan,
            ip_proto: h.proto,
            src_ip: h.src,
            dst_ip: h.dst,
            src_port,
            dst_port,
            src_mac: d.src_mac,
            dst_mac: d.dst_mac,
            wire_len,
            tcp_flags: match d.l4 {
                crate::decode::L4::Tcp(t) => t.flags,
                _ => 0,
            },
        }
    }
}

/// Handle to a live flow returned by [`FlowTable::observe`]; stale handles are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRef {
    pub idx: u32,
    pub gen: u32,
    pub dir: Dir,
}

#[derive(Clone, Debug)]
struct Flow {
    key: FlowKey,
    /// The `a` side (first sender) is `key.lo`.
    a_is_lo: bool,
    a_mac: MacAddr,
    b_mac: MacAddr,
    first_us: u64,
    last_us: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
    flags: [u8; 2],
    app: Option<Proto>,
    /// Payloads offered for dissection per direction (saturating): once a bulk flow has
    /// shown its first few, the pipeline stops dissecting it.
    payloads: [u8; 2],
    closed: bool,
    live: bool,
    gen: u32,
    prev: u32,
    next: u32,
    /// Device-table slot of each direction's sender on its last packet (a hint the device
    /// table checks against the MAC), so most packets skip the MAC lookup.
    senders: [u32; 2],
}

mod index;
use index::FlowIndex;

/// Bidirectional flow table; see the module docs.
pub struct FlowTable {
    cfg: FlowConfig,
    /// Slot numbers of live flows, hashed by their slab key.
    map: FlowIndex,
    hasher: foldhash::fast::RandomState,
    slab: Vec<Flow>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    /// (deadline, slot, generation) of closed flows, in deadline order.
    closing: VecDeque<(u64, u32, u32)>,
    pending: Vec<FlowRecord>,
    evicted: u64,
    /// Latest packet time seen (packet clock).
    now_us: u64,
}

impl FlowTable {
    pub fn new(cfg: FlowConfig) -> FlowTable {
        // Sized for the bound up front: growing a million-entry index rehashes every key
        // (a slab cache miss each), and untouched slab pages cost no memory.
        let reserve = cfg.max_flows.min(MAX_PRESIZED_FLOWS);
        let slab = Vec::with_capacity(reserve);
        crate::hugepages::advise(&slab);
        FlowTable {
            map: FlowIndex::with_capacity(reserve),
            hasher: foldhash::fast::RandomState::default(),
            slab,
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            closing: VecDeque::new(),
            pending: Vec::new(),
            evicted: 0,
            now_us: 0,
            cfg,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
    /// Flows pushed out because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = (self.slab[i as usize].prev, self.slab[i as usize].next);
        if p != NIL {
            self.slab[p as usize].next = n;
        } else {
            self.head = n;
        }
        if n != NIL {
            self.slab[n as usize].prev = p;
        } else {
            self.tail = p;
        }
        self.slab[i as usize].prev = NIL;
        self.slab[i as usize].next = NIL;
    }

    fn push_tail(&mut self, i: u32) {
        self.slab[i as usize].prev = self.tail;
        self.slab[i as usize].next = NIL;
        if self.tail != NIL {
            self.slab[self.tail as usize].next = i;
        } else {
            self.head = i;
        }
        self.tail = i;
    }

    fn record(&self, f: &Flow, reason: &'static str) -> FlowRecord {
        let (a, b) = if f.a_is_lo { (&f.key.lo, &f.key.hi) } else { (&f.key.hi, &f.key.lo) };
        let app = f.app.or_else(|| guess_app(f.key.proto, a.port, b.port)).unwrap_or(Proto::Unknown);
        FlowRecord {
            ip_proto: f.key.proto,
            vlan: if f.key.vlan == NO_VLAN { None } else { Some(f.key.vlan) },
            a_mac: f.a_mac,
            b_mac: f.b_mac,
            a_ip: ip_of(a, f.key.v6),
            b_ip: ip_of(b, f.key.v6),
            a_port: a.port,
            b_port: b.port,
            first_seen_us: f.first_us,
            last_seen_us: f.last_us,
            packets_ab: f.packets[0],
            packets_ba: f.packets[1],
            bytes_ab: f.bytes[0],
            bytes_ba: f.bytes[1],
            tcp_flags_ab: f.flags[0],
            tcp_flags_ba: f.flags[1],
            app: Cow::Borrowed(app.as_str()),
            end_reason: Cow::Borrowed(reason),
        }
    }

    /// Emit and remove the flow in slot `i`.
    fn finish_slot(&mut self, i: u32, reason: &'static str) {
        let hash = self.hasher.hash_one(self.slab[i as usize].key);
        let rec = self.record(&self.slab[i as usize], reason);
        self.pending.push(rec);
        self.unlink(i);
        let f = &mut self.slab[i as usize];
        f.live = false;
        f.gen = f.gen.wrapping_add(1);
        self.map.remove(hash, i);
        self.free.push(i);
    }

    /// Emit the flow's counters so far and start counting afresh in the same slot.
    fn restart_slot(&mut self, i: u32, reason: &'static str, ts_us: u64) {
        let rec = self.record(&self.slab[i as usize], reason);
        self.pending.push(rec);
        let f = &mut self.slab[i as usize];
        f.first_us = ts_us;
        f.last_us = ts_us;
        f.packets = [0; 2];
        f.bytes = [0; 2];
        f.flags = [0; 2];
        f.closed = false;
        f.gen = f.gen.wrapping_add(1);
    }

    /// The flow key of a packet and whether its sender is the key's `lo` side.
    #[inline]
    fn key_of(m: &PacketMeta) -> (FlowKey, bool) {
        let (sv, dv) = (ip_value(m.src_ip), ip_value(m.dst_ip));
        let src_is_lo = (sv, m.src_port) <= (dv, m.dst_port);
        let (s, d) = (endpoint(sv, m.src_port), endpoint(dv, m.dst_port));
        let (lo, hi) = if src_is_lo { (s, d) } else { (d, s) };
        (FlowKey { lo, hi, vlan: m.vlan.unwrap_or(NO_VLAN), proto: m.ip_proto, v6: m.src_ip.is_ipv6() }, src_is_lo)
    }

    /// Account one packet; returns a handle to its flow for labelling.
    pub fn observe(&mut self, m: &PacketMeta) -> FlowRef {
        self.now_us = self.now_us.max(m.ts_us);
        self.expire_idle(self.now_us);
        let (key, src_is_lo) = Self::key_of(m);
        let hash = self.hasher.hash_one(key);
        let slab = &self.slab;
        let found = self.map.find(hash, |j| slab[j as usize].key == key);
        let i = match found {
            Some(i) => {
                let f = &self.slab[i as usize];
                let is_new_syn = m.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
                if f.closed && is_new_syn {
                    // Port reuse after a finished connection: a new flow, new orientation.
                    self.restart_slot(i, FIN, m.ts_us);
                    let f = &mut self.slab[i as usize];
                    f.a_is_lo = src_is_lo;
                    f.a_mac = m.src_mac;
                    f.b_mac = m.dst_mac;
                    f.app = None;
                    f.payloads = [0; 2];
                } else if m.ts_us >= f.first_us.saturating_add(self.cfg.active_timeout_us) {
                    self.restart_slot(i, ACTIVE, m.ts_us);
                }
                // Bursts hit the same flow; it is already the most recent.
                if self.tail != i {
                    self.unlink(i);
                    self.push_tail(i);
                }
                i
            }
            None => {
                if self.map.len() >= self.cfg.max_flows.max(1) && self.head != NIL {
                    let h = self.head;
                    self.finish_slot(h, "evicted");
                    self.evicted += 1;
                }
                let flow = Flow {
                    key,
                    a_is_lo: src_is_lo,
                    a_mac: m.src_mac,
                    b_mac: m.dst_mac,
                    first_us: m.ts_us,
                    last_us: m.ts_us,
                    packets: [0; 2],
                    bytes: [0; 2],
                    flags: [0; 2],
                    app: None,
                    payloads: [0; 2],
                    closed: false,
                    live: true,
                    gen: 0,
                    prev: NIL,
                    next: NIL,
                    senders: [NIL; 2],
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        let gen = self.slab[i as usize].gen;
                        self.slab[i as usize] = Flow { gen, ..flow };
                        i
                    }
                    None => {
                        self.slab.push(flow);
                        (self.slab.len() - 1) as u32
                    }
                };
                self.map.insert(hash, i);
                self.push_tail(i);
                i
            }
        };
        let linger = self.cfg.close_linger_us;
        let f = &mut self.slab[i as usize];
        let dir = if src_is_lo == f.a_is_lo { Dir::AtoB } else { Dir::BtoA };
        let di = dir as usize;
        f.packets[di] += 1;
        f.bytes[di] += m.wire_len;
        f.flags[di] |= m.tcp_flags;
        f.last_us = f.last_us.max(m.ts_us);
        if m.ip_proto == 6 && !f.closed {
            let fin_both = f.flags[0] & tcp_flags::FIN != 0 && f.flags[1] & tcp_flags::FIN != 0;
            if fin_both || m.tcp_flags & tcp_flags::RST != 0 {
                f.closed = true;
                let gen = f.gen;
                self.closing.push_back((m.ts_us.saturating_add(linger), i, gen));
            }
        }
        FlowRef { idx: i, gen: self.slab[i as usize].gen, dir }
    }

    fn valid(&self, r: FlowRef) -> Option<&Flow> {
        self.slab.get(r.idx as usize).filter(|f| f.live && f.gen == r.gen)
    }

    /// Label the flow with the application protocol a dissector recognised.
    pub fn set_app(&mut self, r: FlowRef, app: Proto) {
        if self.valid(r).is_some() {
            self.slab[r.idx as usize].app = Some(app);
        }
    }

    /// Count one payload in the handle's direction; returns how many came before it in that
    /// direction (saturating at 255), or None for a stale handle.
    pub fn count_payload(&mut self, r: FlowRef) -> Option<u8> {
        self.valid(r)?;
        let n = &mut self.slab[r.idx as usize].payloads[r.dir as usize];
        let before = *n;
        *n = n.saturating_add(1);
        Some(before)
    }

    /// The device-table slot the handle's sender had on this flow's previous packet in the
    /// same direction (`u32::MAX` when unknown); see [`crate::devices::DeviceTable::packet_hinted`].
    pub fn sender_hint(&self, r: FlowRef) -> u32 {
        self.valid(r).map_or(NIL, |f| f.senders[r.dir as usize])
    }

    /// Remember the sender's device-table slot for the handle's direction.
    pub fn set_sender_hint(&mut self, r: FlowRef, slot: u32) {
        if self.valid(r).is_some() {
            self.slab[r.idx as usize].senders[r.dir as usize] = slot;
        }
    }

    /// The flow's payload-derived label, if any.
    pub fn app(&self, r: FlowRef) -> Option<Proto> {
        self.valid(r).and_then(|f| f.app)
    }

    fn expire_idle(&mut self, now_us: u64) {
        while self.head != NIL {
            let h = self.head;
            let f = &self.slab[h as usize];
            if f.last_us.saturating_add(self.cfg.idle_timeout_us) > now_us {
                break;
            }
            // A closed connection that also went idle ended by its FIN/RST.
            let reason = if f.closed { FIN } else { IDLE };
            self.finish_slot(h, reason);
        }
        while let Some(&(deadline, i, gen)) = self.closing.front() {
            if deadline > now_us {
                break;
            }
            self.closing.pop_front();
            let f = &self.slab[i as usize];
            if f.live && f.gen == gen && f.closed {
                self.finish_slot(i, FIN);
            }
        }
    }

    /// Records of ended flows waiting for the next [`drain`](Self::drain).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Flows that ended by `now_us` (packet time): idle, closed, evicted, active restarts.
    pub fn drain(&mut self, now_us: u64) -> Vec<FlowRecord> {
        self.now_us = self.now_us.max(now_us);
        self.expire_idle(self.now_us);
        std::mem::take(&mut self.pending)
    }

    /// [`drain`](Self::drain) handing each record to `sink` in order, keeping the pending
    /// buffer's capacity: a steady stream of ended flows then costs no buffer regrowth.
    pub fn drain_with(&mut self, now_us: u64, mut sink: impl FnMut(FlowRecord)) {
        self.now_us = self.now_us.max(now_us);
        self.expire_idle(self.now_us);
        self.pending.drain(..).for_each(&mut sink);
    }

    /// [`flush_batch`](Self::flush_batch) handing the records to `sink`; returns how many.
    pub fn flush_batch_with(&mut self, max: usize, mut sink: impl FnMut(FlowRecord)) -> usize {
        self.end_oldest(max);
        let out = self.pending.len();
        self.pending.drain(..).for_each(&mut sink);
        out
    }

    /// End up to `max` live flows, oldest first ("fin" if closed, else "end"), into `pending`.
    fn end_oldest(&mut self, max: usize) {
        let mut n = 0;
        while self.head != NIL && n < max {
            n += 1;
            let h = self.head;
            let reason = if self.slab[h as usize].closed { FIN } else { END };
            self.finish_slot(h, reason);
        }
        if self.head == NIL {
            self.closing.clear();
        }
    }

    /// Everything: pending records, then every live flow with reason "end" (oldest first).
    pub fn flush(&mut self) -> Vec<FlowRecord> {
        self.flush_batch(usize::MAX)
    }

    /// Like [`flush`](Self::flush) but ends at most `max` live flows per call (pending
    /// records always come out), so a caller can stream a million flows out in slices
    /// instead of holding every record at once. Call until it returns an empty Vec.
    pub fn flush_batch(&mut self, max: usize) -> Vec<FlowRecord> {
        self.end_oldest(max);
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ts: u64, src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, flags: u8) -> PacketMeta {
        PacketMeta {
            ts_us: ts,
            vlan: None,
            ip_proto: 6,
            src_ip: IpAddr::from(src),
            dst_ip: IpAddr::from(dst),
            src_port: sp,
            dst_port: dp,
            src_mac: MacAddr([0, 1, 1, 1, 1, 1]),
            dst_mac: MacAddr([0, 2, 2, 2, 2, 2]),
            wire_len: 100,
            tcp_flags: flags,
        }
    }

    #[test]
    fn timeouts_follow_packet_time_and_a_is_first_sender() {
        let mut t = FlowTable::new(FlowConfig { idle_timeout_us: 10, active_timeout_us: 100, ..Default::default() });
        let r = t.observe(&pkt(1, [10, 0, 0, 9], 5000, [10, 0, 0, 1], 3613, tcp_flags::SYN));
        assert_eq!(r.dir, Dir::AtoB);
        let r2 = t.observe(&pkt(2, [10, 0, 0, 1], 3613, [10, 0, 0, 9], 5000, tcp_flags::SYN | tcp_flags::ACK));
        assert_eq!(r2.dir, Dir::BtoA);
        assert!(t.drain(5).is_empty(), "not idle yet at t=5");
        let out = t.drain(12);
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!((f.a_port, f.b_port, f.packets_ab, f.packets_ba, &*f.end_reason), (5000, 3613, 1, 1, "idle"));
        assert_eq!(f.app, "alaris", "port guess without a dissector label");
        assert!(t.is_empty());

        // Active timeout: a flow that never idles reports every 100 us of packet time.
        for ts in (200..=420).step_by(5) {
            t.observe(&pkt(ts, [10, 0, 0, 9], 5001, [10, 0, 0, 1], 80, tcp_flags::ACK));
        }
        let out = t.drain(420);
        assert_eq!(out.iter().filter(|f| f.end_reason == "active").count(), 2);
        assert_eq!(t.flush().len(), 1);
    }
}
