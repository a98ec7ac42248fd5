//! TCP stream reassembly for the flows a dissector wants.
//!
//! Per direction: bytes are delivered in order from the ISN + 1 (SYN seen) or from the
//! first segment seen (mid-stream pickup). Out-of-order segments are buffered; where a
//! retransmission or overlap covers bytes already held or delivered, the first copy wins
//! (Suricata's default policy) and the repeated bytes are counted. A hole is skipped and
//! counted once the out-of-order bytes behind it exceed the per-direction bound. Memory
//! is bounded per direction (`max_buffered_per_dir` of out-of-order data, plus one
//! incomplete message of at most the same size) and per sensor (`max_total_bytes`, the
//! least recently active stream is dropped and counted).
//!
//! Streams are keyed by the flow table slot; a slot reused by another flow (new
//! generation) starts a fresh stream, and streams idle past the flow idle timeout are
//! dropped by [`TcpReassembler::expire`].

use super::framing::{Framer, Limits};
use crate::decode::tcp_flags;
use crate::flow::FlowRef;
use std::collections::{BTreeMap, HashMap, VecDeque};

#[derive(Clone, Debug)]
pub struct TcpReassemblyConfig {
    /// Out-of-order bytes held per direction before the hole in front of them is skipped;
    /// also the largest message buffered whole.
    pub max_buffered_per_dir: usize,
    /// Bytes held across all streams (buffers plus a fixed cost per stream); beyond it the
    /// least recently active stream is dropped.
    pub max_total_bytes: usize,
    /// A stream with no segment for this long (packet time) is dropped.
    pub idle_timeout_us: u64,
    /// Bytes delivered of large messages whose head is all a dissector reads (DICOM
    /// P-DATA, SMB reads and writes); the rest is skipped unbuffered.
    pub head_prefix: usize,
}

impl Default for TcpReassemblyConfig {
    fn default() -> Self {
        TcpReassemblyConfig {
            max_buffered_per_dir: 64 * 1024,
            max_total_bytes: 64 * 1024 * 1024,
            idle_timeout_us: 60_000_000,
            head_prefix: 4096,
        }
    }
}

/// Reassembly counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Segments that arrived ahead of a hole and were buffered.
    pub out_of_order: u64,
    /// Payload bytes already held or delivered when they arrived again (retransmissions
    /// and overlaps; the first copy was kept).
    pub retransmitted_bytes: u64,
    /// Holes skipped (their bytes never arrived in time).
    pub gaps: u64,
    /// Streams dropped to stay within the sensor-wide budget.
    pub evictions: u64,
    /// Buffered bytes thrown away: incomplete messages before a gap, evicted or expired
    /// streams' buffers.
    pub bytes_dropped: u64,
}

/// One TCP segment as the reassembler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub ts_us: u64,
    pub seq: u32,
    pub flags: u8,
    pub payload: &'a [u8],
}

/// Fixed accounting cost of one tracked stream (entry, two framers, map slot).
const STREAM_OVERHEAD: usize = 512;
/// Accounting cost of one buffered out-of-order piece beyond its bytes (map node).
const PIECE_OVERHEAD: usize = 64;

#[derive(Debug)]
struct Half {
    started: bool,
    next_seq: u32,
    /// Stream offset of `next_seq` (bytes delivered or skipped so far).
    next_off: u64,
    /// Out-of-order pieces by stream offset; never overlapping, all beyond `next_off`.
    ooo: BTreeMap<u64, Vec<u8>>,
    /// Bytes in `ooo` plus per-piece overhead.
    ooo_cost: usize,
    framer: Framer,
    closed: bool,
}

impl Half {
    fn new(netbios_port: bool) -> Half {
        Half {
            started: false,
            next_seq: 0,
            next_off: 0,
            ooo: BTreeMap::new(),
            ooo_cost: 0,
            framer: Framer::new(netbios_port),
            closed: false,
        }
    }

    fn cost(&self) -> usize {
        self.ooo_cost + self.framer.buffered()
    }

    fn start_at(&mut self, seq: u32) {
        self.started = true;
        self.next_seq = seq;
    }

    fn advance(&mut self, n: u64) {
        self.next_off += n;
        self.next_seq = self.next_seq.wrapping_add(n as u32);
    }

    /// Hand the first stored piece to the framer while it starts at `next_off`.
    fn drain_ooo(&mut self, lim: Limits, out: &mut dyn FnMut(&[u8])) {
        while let Some(entry) = self.ooo.first_entry() {
            if *entry.key() != self.next_off {
                break;
            }
            let piece = entry.remove();
            self.ooo_cost -= piece.len() + PIECE_OVERHEAD;
            self.advance(piece.len() as u64);
            self.framer.feed(&piece, lim, out);
        }
    }

    /// Skip the hole from `next_off` to `target` (counted), then deliver what follows it.
    fn skip_to(&mut self, target: u64, st: &mut TcpStats, lim: Limits, out: &mut dyn FnMut(&[u8])) {
        if target <= self.next_off {
            return;
        }
        st.gaps += 1;
        st.bytes_dropped += self.framer.gap(target - self.next_off) as u64;
        self.advance(target - self.next_off);
        self.drain_ooo(lim, out);
    }

    /// Payload bytes held (out-of-order pieces and an incomplete message).
    fn held_bytes(&self) -> usize {
        self.framer.buffered() + self.ooo.values().map(Vec::len).sum::<usize>()
    }

    /// Store `[start, start + data.len())` minus what is already held (first copy wins).
    fn insert(&mut self, start: u64, data: &[u8], st: &mut TcpStats) {
        let end = start + data.len() as u64;
        let mut held: Vec<(u64, u64)> = Vec::new();
        for (&s, v) in self.ooo.range(..end).rev() {
            let e = s + v.len() as u64;
            if e <= start {
                break;
            }
            held.push((s, e));
        }
        held.reverse();
        let mut cur = start;
        for (s, e) in held {
            if s > cur {
                self.put(cur, &data[(cur - start) as usize..(s - start) as usize]);
            }
            let (os, oe) = (s.max(cur), e.min(end));
            if oe > os {
                st.retransmitted_bytes += oe - os;
            }
            cur = cur.max(e);
        }
        if cur < end {
            self.put(cur, &data[(cur - start) as usize..]);
        }
    }

    fn put(&mut self, at: u64, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.ooo_cost += bytes.len() + PIECE_OVERHEAD;
            self.ooo.insert(at, bytes.to_vec());
        }
    }

    fn segment(&mut self, seg: &Segment<'_>, cfg: &TcpReassemblyConfig, st: &mut TcpStats, out: &mut dyn FnMut(&[u8])) {
        let lim = Limits { max_message: cfg.max_buffered_per_dir, head_prefix: cfg.head_prefix };
        let syn = seg.flags & tcp_flags::SYN != 0;
        let mut seq = seg.seq;
        if syn {
            // A SYN opens a new sequence space: whatever this direction held is void.
            st.bytes_dropped += self.held_bytes() as u64;
            *self = Half::new(self.framer.netbios_port());
            seq = seq.wrapping_add(1);
            self.start_at(seq);
        } else if !self.started {
            if seg.payload.is_empty() {
                return;
            }
            self.start_at(seq);
        }
        if self.closed {
            return;
        }
        if self.framer.is_done() {
            // Nothing more to frame (e.g. TLS past its handshake): no tracking, no copies.
            self.closed |= seg.flags & tcp_flags::FIN != 0;
            self.ooo.clear();
            self.ooo_cost = 0;
            return;
        }
        let mut data = seg.payload;
        // Where this segment sits relative to the next expected byte (wrapping compare).
        let rel = seq.wrapping_sub(self.next_seq) as i32 as i64;
        if rel < 0 {
            let old = ((-rel) as u64).min(data.len() as u64);
            st.retransmitted_bytes += old;
            data = &data[old as usize..];
        }
        let start = self.next_off + rel.max(0) as u64;
        if !data.is_empty() {
            if start == self.next_off && self.ooo.is_empty() {
                self.advance(data.len() as u64);
                self.framer.feed(data, lim, out);
            } else {
                if start > self.next_off {
                    st.out_of_order += 1;
                }
                let cost = data.len() + PIECE_OVERHEAD;
                // Over the bound: skip holes in front (never past this segment's start).
                while self.ooo_cost + cost > cfg.max_buffered_per_dir && start > self.next_off {
                    let target = self.ooo.keys().next().map_or(start, |&k| k.min(start));
                    self.skip_to(target, st, lim, out);
                }
                // The hole may have been skipped past part of this segment.
                let (s, d) = if start < self.next_off {
                    let cut = ((self.next_off - start) as usize).min(data.len());
                    st.retransmitted_bytes += cut as u64;
                    (self.next_off, &data[cut..])
                } else {
                    (start, data)
                };
                self.insert(s, d, st);
                self.drain_ooo(lim, out);
            }
        }
        // A FIN in order ends the direction: an incomplete message goes out as it is.
        let fin = seg.flags & tcp_flags::FIN != 0;
        let end_seq = seq.wrapping_add(seg.payload.len() as u32);
        if fin && end_seq.wrapping_sub(self.next_seq) as i32 <= 0 && self.ooo.is_empty() {
            self.closed = true;
            self.framer.finish(out);
        }
    }
}

#[derive(Debug)]
struct Stream {
    gen: u32,
    halves: [Half; 2],
    last_us: u64,
    /// LRU stamp: the value pushed with this stream's latest entry in the LRU queue.
    tick: u64,
    /// Bytes charged to the sensor budget.
    charged: usize,
}

/// Reassembly state of every tracked stream, keyed by flow table slot.
pub struct TcpReassembler {
    cfg: TcpReassemblyConfig,
    streams: HashMap<u32, Stream, foldhash::fast::RandomState>,
    /// (tick, slot) in touch order; stale entries (tick no longer current) are skipped.
    lru: VecDeque<(u64, u32)>,
    tick: u64,
    total: usize,
    stats: TcpStats,
}

impl TcpReassembler {
    pub fn new(cfg: TcpReassemblyConfig) -> TcpReassembler {
        TcpReassembler {
            cfg,
            streams: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            lru: VecDeque::new(),
            tick: 0,
            total: 0,
            stats: TcpStats::default(),
        }
    }

    pub fn stats(&self) -> TcpStats {
        self.stats
    }
    /// Streams tracked now.
    pub fn len(&self) -> usize {
        self.streams.len()
    }
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
    /// Bytes charged against `max_total_bytes` now (buffers plus per-stream overhead).
    pub fn charged_bytes(&self) -> usize {
        self.total
    }

    /// Is this flow's stream tracked (same flow, not a reused slot)?
    pub fn is_tracked(&self, flow: FlowRef) -> bool {
        self.streams.get(&flow.idx).is_some_and(|s| s.gen == flow.gen)
    }

    /// Stop tracking a flow whose later bytes no dissector needs (e.g. TLS application
    /// data after the handshake). Bytes still held are counted as dropped.
    pub fn untrack(&mut self, flow: FlowRef) {
        if self.is_tracked(flow) {
            self.drop_stream(flow.idx, true);
        }
    }

    /// Start tracking a flow; `ports` are the flow's two ports (a flow on an SMB port,
    /// NetBIOS session 139 or direct SMB 445, is framed by NetBIOS session headers).
    pub fn track(&mut self, flow: FlowRef, ports: (u16, u16), ts_us: u64) {
        if self.is_tracked(flow) {
            return;
        }
        self.drop_stream(flow.idx, false);
        let nb = crate::protocols::SMB.has_port(ports.0) || crate::protocols::SMB.has_port(ports.1);
        let s = Stream {
            gen: flow.gen,
            halves: [Half::new(nb), Half::new(nb)],
            last_us: ts_us,
            tick: 0,
            charged: STREAM_OVERHEAD,
        };
        self.total += STREAM_OVERHEAD;
        self.streams.insert(flow.idx, s);
        self.touch(flow.idx);
        self.enforce_budget(flow.idx);
    }

    /// Feed one segment of a tracked flow (direction from `flow.dir`); whole messages go
    /// to `out`. Returns false, doing nothing, if the flow is not tracked.
    pub fn segment(&mut self, flow: FlowRef, seg: &Segment<'_>, out: &mut dyn FnMut(&[u8])) -> bool {
        let cfg = &self.cfg;
        let Some(s) = self.streams.get_mut(&flow.idx).filter(|s| s.gen == flow.gen) else {
            return false;
        };
        s.last_us = s.last_us.max(seg.ts_us);
        let half = &mut s.halves[flow.dir as usize];
        half.segment(seg, cfg, &mut self.stats, out);
        let rst = seg.flags & tcp_flags::RST != 0;
        let both_closed = s.halves.iter().all(|h| h.closed);
        let cost = STREAM_OVERHEAD + s.halves[0].cost() + s.halves[1].cost();
        let old = std::mem::replace(&mut s.charged, cost);
        self.total = self.total + cost - old;
        if rst || both_closed {
            self.drop_stream(flow.idx, true);
        } else {
            self.touch(flow.idx);
            self.enforce_budget(flow.idx);
        }
        true
    }

    fn touch(&mut self, idx: u32) {
        self.tick += 1;
        if let Some(s) = self.streams.get_mut(&idx) {
            s.tick = self.tick;
            self.lru.push_back((self.tick, idx));
        }
        if self.lru.len() > 2 * self.streams.len() + 1024 {
            let streams = &self.streams;
            self.lru.retain(|(t, i)| streams.get(i).is_some_and(|s| s.tick == *t));
        }
    }

    /// Remove a stream; `counted` charges its buffers to `bytes_dropped`.
    fn drop_stream(&mut self, idx: u32, counted: bool) {
        if let Some(s) = self.streams.remove(&idx) {
            self.total -= s.charged;
            if counted {
                self.stats.bytes_dropped += s.halves.iter().map(Half::held_bytes).sum::<usize>() as u64;
            }
        }
    }

    /// Drop least recently active streams until within budget, the current one last.
    fn enforce_budget(&mut self, current: u32) {
        while self.total > self.cfg.max_total_bytes {
            let Some((t, idx)) = self.lru.pop_front() else {
                break;
            };
            let live = self.streams.get(&idx).is_some_and(|s| s.tick == t);
            if !live {
                continue;
            }
            if idx == current && self.streams.len() > 1 {
                self.lru.push_back((t, idx));
                continue;
            }
            self.drop_stream(idx, true);
            self.stats.evictions += 1;
        }
    }

    /// Drop streams idle since before `now_us - idle_timeout` (packet time).
    pub fn expire(&mut self, now_us: u64) {
        let horizon = now_us.saturating_sub(self.cfg.idle_timeout_us);
        let stale: Vec<u32> = self.streams.iter().filter(|(_, s)| s.last_us < horizon).map(|(&i, _)| i).collect();
        for i in stale {
            self.drop_stream(i, true);
        }
    }

    /// End of input: every stream dropped (incomplete messages counted as dropped bytes).
    pub fn clear(&mut self) {
        let idx: Vec<u32> = self.streams.keys().copied().collect();
        for i in idx {
            self.drop_stream(i, true);
        }
        self.lru.clear();
    }
}
