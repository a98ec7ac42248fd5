//! IPv4 and IPv6 fragment reassembly with bounded memory and packet-time timeouts.
//!
//! Fragments are keyed by (VLAN, source, destination, identification, and for IPv4 the
//! protocol), as RFC 791 / RFC 8200 prescribe. Overlap policy: the first copy of a byte
//! wins (later fragments only fill bytes not yet held); every fragment that overlapped is
//! counted. A datagram is complete when the offset-0 fragment (which carries the header
//! to rebuild from) and the last fragment (which fixes the length) are in and no hole
//! remains; it is returned as a whole IP packet for the normal decode path. Incomplete
//! datagrams expire after `timeout_us` of packet time (30 s, Linux's `ipfrag_time`) and
//! the oldest is dropped when `max_datagrams` or `max_bytes` would be exceeded.

use crate::decode::{Decoded, Fragment, L4};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

#[derive(Clone, Debug)]
pub struct FragConfig {
    pub timeout_us: u64,
    pub max_datagrams: usize,
    /// Fragment bytes held across all datagrams.
    pub max_bytes: usize,
}

impl Default for FragConfig {
    fn default() -> Self {
        FragConfig { timeout_us: 30_000_000, max_datagrams: 4096, max_bytes: 16 * 1024 * 1024 }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragStats {
    /// Datagrams rebuilt from their fragments.
    pub reassembled: u64,
    /// Fragments that overlapped bytes already held (the held bytes were kept).
    pub overlaps: u64,
    /// Incomplete datagrams dropped at their timeout.
    pub timed_out: u64,
    /// Incomplete datagrams dropped to stay within the memory bound.
    pub evicted: u64,
    /// Fragments that could not be used: past 64 KiB, inconsistent length, headers not found.
    pub malformed: u64,
}

/// One fragment's place in its datagram, borrowed from the captured frame.
#[derive(Clone, Copy, Debug)]
pub struct FragInfo<'a> {
    pub v6: bool,
    pub id: u32,
    /// Transport protocol (IPv4 header's protocol; IPv6 fragment header's next header).
    pub proto: u8,
    /// Byte offset of `data` in the reassembled payload.
    pub offset: u32,
    pub more: bool,
    /// IPv4: the IP header. IPv6: the fixed header plus the extension headers before the
    /// Fragment header (the "unfragmentable part").
    pub header: &'a [u8],
    /// IPv6: offset in `header` of the Next Header byte that names the Fragment header.
    pub next_header_at: usize,
    pub data: &'a [u8],
}

/// Largest reassembled payload (both IPv4 total length and IPv6 payload length are 16 bits).
const MAX_PAYLOAD: u32 = 65535;
/// How far before the fragmentable part we look for the IPv6 fixed header.
const MAX_V6_UNFRAGMENTABLE: usize = 512;

/// Locate the fragment fields of a decoded IP fragment inside `frame`. The decoder
/// stops at fragments without exposing identification or offset, so the IP header is
/// found again just before the payload it returned (matched by version and addresses).
pub fn fragment_of<'a>(frame: &'a [u8], d: &Decoded<'a>) -> Option<FragInfo<'a>> {
    let h = d.ip()?;
    if h.fragment == Fragment::Whole {
        return None;
    }
    let base = frame.as_ptr() as usize;
    let p = d.payload.as_ptr() as usize;
    if p < base || p > base + frame.len() {
        return None;
    }
    let mut s = p - base;
    if h.fragment == Fragment::First {
        match d.l4 {
            L4::Tcp(t) => s = s.checked_sub(t.header_len as usize)?,
            L4::Udp { .. } => s = s.checked_sub(8)?,
            _ => {}
        }
    }
    match (h.src, h.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let (src, dst) = (src.octets(), dst.octets());
            let o = (20..=60).step_by(4).filter_map(|ihl| s.checked_sub(ihl).map(|o| (o, ihl))).find(|&(o, ihl)| {
                frame.get(o) == Some(&(0x40 | (ihl / 4) as u8))
                    && frame.get(o + 12..o + 16) == Some(&src[..])
                    && frame.get(o + 16..o + 20) == Some(&dst[..])
            });
            let (o, ihl) = o?;
            let total = u16::from_be_bytes([frame[o + 2], frame[o + 3]]) as usize;
            let end = if total == 0 { frame.len() } else { (o + total).min(frame.len()) };
            let fo = u16::from_be_bytes([frame[o + 6], frame[o + 7]]);
            Some(FragInfo {
                v6: false,
                id: u16::from_be_bytes([frame[o + 4], frame[o + 5]]) as u32,
                proto: frame[o + 9],
                offset: (fo & 0x1fff) as u32 * 8,
                more: fo & 0x2000 != 0,
                header: &frame[o..o + ihl],
                next_header_at: 9,
                data: frame.get(o + ihl..end).unwrap_or(&[]),
            })
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let (src, dst) = (src.octets(), dst.octets());
            let hi = s.checked_sub(48)?;
            let lo = hi.saturating_sub(MAX_V6_UNFRAGMENTABLE);
            let o = (lo..=hi).rev().find(|&o| {
                frame[o] >> 4 == 6
                    && frame.get(o + 8..o + 24) == Some(&src[..])
                    && frame.get(o + 24..o + 40) == Some(&dst[..])
            })?;
            let plen = u16::from_be_bytes([frame[o + 4], frame[o + 5]]) as usize;
            let end = if plen == 0 { frame.len() } else { (o + 40 + plen).min(frame.len()) };
            // Walk the extension headers to the Fragment header.
            let mut next = frame[o + 6];
            let mut next_at = o + 6;
            let mut at = o + 40;
            for _ in 0..16 {
                let len = match next {
                    0 | 43 | 60 | 135 | 139 | 140 => (*frame.get(at + 1)? as usize + 1) * 8,
                    51 => (*frame.get(at + 1)? as usize + 2) * 4,
                    44 => {
                        let fh = frame.get(at..at + 8)?;
                        let fo = u16::from_be_bytes([fh[2], fh[3]]);
                        return Some(FragInfo {
                            v6: true,
                            id: u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]),
                            proto: fh[0],
                            offset: (fo >> 3) as u32 * 8,
                            more: fo & 1 != 0,
                            header: &frame[o..at],
                            next_header_at: next_at - o,
                            data: frame.get(at + 8..end).unwrap_or(&[]),
                        });
                    }
                    _ => return None,
                };
                next = *frame.get(at)?;
                next_at = at;
                at += len;
            }
            None
        }
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FragKey {
    vlan: Option<u16>,
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

#[derive(Debug)]
struct Datagram {
    created_us: u64,
    /// Header of the offset-0 fragment and where its Next Header byte is.
    header: Option<(Vec<u8>, usize)>,
    proto: u8,
    data: Vec<u8>,
    /// Byte ranges of `data` held, sorted and merged.
    held: Vec<(u32, u32)>,
    /// Payload length, once the last fragment (more = false) arrived.
    total: Option<u32>,
}

impl Datagram {
    fn cost(&self) -> usize {
        self.data.len() + self.header.as_ref().map_or(0, |h| h.0.len()) + 128
    }

    /// Copy the bytes of `[off, off + bytes.len())` not already held; true if any
    /// were held already (an overlap: the held copy stays).
    fn fill(&mut self, off: u32, bytes: &[u8]) -> bool {
        let end = off + bytes.len() as u32;
        if self.data.len() < end as usize {
            self.data.resize(end as usize, 0);
        }
        let mut overlapped = false;
        let mut cur = off;
        for &(s, e) in &self.held {
            if e <= cur {
                continue;
            }
            if s >= end {
                break;
            }
            overlapped = true;
            if s > cur {
                self.data[cur as usize..s as usize].copy_from_slice(&bytes[(cur - off) as usize..(s - off) as usize]);
            }
            cur = e;
            if cur >= end {
                break;
            }
        }
        if cur < end {
            self.data[cur as usize..end as usize].copy_from_slice(&bytes[(cur - off) as usize..]);
        }
        let mut all = std::mem::take(&mut self.held);
        all.push((off, end));
        all.sort_unstable();
        for (s, e) in all {
            match self.held.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => self.held.push((s, e)),
            }
        }
        overlapped
    }

    fn complete(&self) -> bool {
        match self.total {
            Some(t) => self.header.is_some() && self.held.first() == Some(&(0, t)),
            None => false,
        }
    }

    /// The whole packet, as if it had never been fragmented.
    fn rebuild(&self, v6: bool) -> Option<Vec<u8>> {
        let (hdr, nh_at) = self.header.as_ref()?;
        let total = self.total? as usize;
        let payload = self.data.get(..total)?;
        let mut pkt = Vec::with_capacity(hdr.len() + total);
        pkt.extend_from_slice(hdr);
        if v6 {
            let plen = u16::try_from(hdr.len() - 40 + total).ok()?;
            pkt[4..6].copy_from_slice(&plen.to_be_bytes());
            *pkt.get_mut(*nh_at)? = self.proto;
        } else {
            let tl = u16::try_from(hdr.len() + total).ok()?;
            pkt[2..4].copy_from_slice(&tl.to_be_bytes());
            // Keep DF, clear MF and the offset; recompute the header checksum.
            pkt[6] &= 0x40;
            pkt[7] = 0;
            pkt[10] = 0;
            pkt[11] = 0;
            let sum = ipv4_checksum(&pkt);
            pkt[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        pkt.extend_from_slice(payload);
        Some(pkt)
    }
}

fn ipv4_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = hdr.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Incomplete datagrams awaiting their fragments.
pub struct FragTable {
    cfg: FragConfig,
    map: HashMap<FragKey, Datagram, foldhash::fast::RandomState>,
    /// (created, key) in arrival order: expiry and eviction pop from the front.
    order: VecDeque<(u64, FragKey)>,
    bytes: usize,
    stats: FragStats,
}

impl FragTable {
    pub fn new(cfg: FragConfig) -> FragTable {
        FragTable {
            cfg,
            map: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            order: VecDeque::new(),
            bytes: 0,
            stats: FragStats::default(),
        }
    }

    pub fn stats(&self) -> FragStats {
        self.stats
    }
    /// Incomplete datagrams held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    fn remove(&mut self, key: &FragKey) -> Option<Datagram> {
        let d = self.map.remove(key)?;
        self.bytes -= d.cost();
        Some(d)
    }

    /// Drop datagrams older than the timeout at packet time `now_us`.
    pub fn expire(&mut self, now_us: u64) {
        while let Some(&(created, key)) = self.order.front() {
            if created.saturating_add(self.cfg.timeout_us) > now_us {
                break;
            }
            self.order.pop_front();
            if self.map.get(&key).is_some_and(|d| d.created_us == created) {
                self.remove(&key);
                self.stats.timed_out += 1;
            }
        }
    }

    /// Add one fragment; returns the rebuilt IP packet when this completes a datagram.
    pub fn push(
        &mut self,
        vlan: Option<u16>,
        src: IpAddr,
        dst: IpAddr,
        ts_us: u64,
        f: &FragInfo<'_>,
    ) -> Option<Vec<u8>> {
        self.expire(ts_us);
        let end = f.offset as u64 + f.data.len() as u64;
        if end > MAX_PAYLOAD as u64 || (f.more && !f.data.len().is_multiple_of(8)) {
            self.stats.malformed += 1;
            return None;
        }
        let key = FragKey { vlan, src, dst, id: f.id, proto: if f.v6 { 0 } else { f.proto } };
        if !self.map.contains_key(&key) {
            while (self.map.len() >= self.cfg.max_datagrams || self.bytes + f.data.len() > self.cfg.max_bytes)
                && self.evict_oldest()
            {}
            let d = Datagram {
                created_us: ts_us,
                header: None,
                proto: f.proto,
                data: Vec::new(),
                held: Vec::new(),
                total: None,
            };
            self.bytes += d.cost();
            self.map.insert(key, d);
            self.order.push_back((ts_us, key));
            if self.order.len() > 2 * self.map.len() + 1024 {
                let map = &self.map;
                self.order.retain(|(c, k)| map.get(k).is_some_and(|d| d.created_us == *c));
            }
        }
        let d = self.map.get_mut(&key)?;
        let before = d.cost();
        if !f.more {
            match d.total {
                Some(t) if t as u64 != end => {
                    self.stats.malformed += 1;
                }
                _ => d.total = Some(end as u32),
            }
        }
        if f.offset == 0 && d.header.is_none() {
            d.header = Some((f.header.to_vec(), f.next_header_at));
            d.proto = f.proto;
        }
        if !f.data.is_empty() && d.fill(f.offset, f.data) {
            self.stats.overlaps += 1;
        }
        let after = d.cost();
        let complete = d.complete();
        self.bytes = self.bytes + after - before;
        if !complete {
            if self.bytes > self.cfg.max_bytes {
                // This datagram alone is past the bound: give it up.
                self.remove(&key);
                self.stats.evicted += 1;
            }
            return None;
        }
        let d = self.remove(&key)?;
        match d.rebuild(f.v6) {
            Some(pkt) => {
                self.stats.reassembled += 1;
                Some(pkt)
            }
            None => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((created, key)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|d| d.created_us == created) {
                self.remove(&key);
                self.stats.evicted += 1;
                return true;
            }
        }
        false
    }
}
