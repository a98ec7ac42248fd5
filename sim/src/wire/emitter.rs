//! The emitter: a simulated clock, the hosts on the wire and the frames they send. Frames
//! go straight to the pcap writer; only per-flow counters (the flow ledger) stay in memory.

use super::flows::{FlowLedger, WrittenPacket};
use super::frames::{self, Ip4, TcpHdr, L2, TCP_SYN};
use super::host::{Host, HostId};
use super::pcap::PcapWriter;
use crate::truth::TruthFlow;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::net::Ipv4Addr;

/// Where the capture sees a conversation: on the client's segment. Peers in another subnet
/// appear behind the client's gateway MAC, and their packets arrive one hop older.
#[derive(Clone, Copy, Debug)]
pub struct Leg {
    pub vlan: Option<u16>,
    pub c_mac: [u8; 6],
    /// Destination MAC of client→server frames, source MAC of server→client frames.
    pub s_mac: [u8; 6],
    pub c_ip: Ipv4Addr,
    pub s_ip: Ipv4Addr,
    pub c_ttl: u8,
    pub s_ttl: u8,
}

impl Leg {
    /// Layer-2 addressing of a frame sent by the client (`from_client`) or the server.
    pub fn l2(&self, from_client: bool) -> L2 {
        let (src, dst) = if from_client { (self.c_mac, self.s_mac) } else { (self.s_mac, self.c_mac) };
        L2 { src, dst, vlan: self.vlan }
    }

    /// Source address, destination address and TTL of a packet in that direction.
    pub fn ip(&self, from_client: bool) -> (Ipv4Addr, Ipv4Addr, u8) {
        if from_client {
            (self.c_ip, self.s_ip, self.c_ttl)
        } else {
            (self.s_ip, self.c_ip, self.s_ttl)
        }
    }
}

/// What the capture holds once every frame is written.
pub struct CaptureSummary<W> {
    /// Flows in order of their first packet.
    pub flows: Vec<TruthFlow>,
    pub packets: u64,
    pub bytes: u64,
    pub first_packet_us: u64,
    pub last_packet_us: u64,
    /// The writer's output, flushed.
    pub output: W,
}

pub struct Emitter<W: Write> {
    writer: PcapWriter<W>,
    pub now_us: u64,
    pub rng: ChaCha8Rng,
    pub hosts: Vec<Host>,
    ledger: FlowLedger,
    buf: Vec<u8>,
    first_us: Option<u64>,
    last_us: u64,
}

impl<W: Write> Emitter<W> {
    pub fn new(writer: PcapWriter<W>, start_us: u64, rng: ChaCha8Rng) -> Self {
        Emitter {
            writer,
            now_us: start_us,
            rng,
            hosts: Vec::new(),
            ledger: FlowLedger::default(),
            buf: Vec::with_capacity(2048),
            first_us: None,
            last_us: start_us,
        }
    }

    pub fn add_host(&mut self, h: Host) -> HostId {
        self.hosts.push(h);
        self.hosts.len() - 1
    }

    pub fn packets(&self) -> u64 {
        self.writer.packets()
    }

    /// Moves the clock forward by a random gap in `[min_us, max_us]`.
    pub fn gap(&mut self, min_us: u64, max_us: u64) {
        self.now_us += self.rng.gen_range(min_us..=max_us);
    }

    pub(super) fn next_ip_id(&mut self, h: HostId) -> u16 {
        let host = &mut self.hosts[h];
        host.ip_id = host.ip_id.wrapping_add(1);
        host.ip_id
    }

    pub fn ephemeral_port(&mut self, h: HostId) -> u16 {
        let host = &mut self.hosts[h];
        let p = host.next_port;
        host.next_port = if p >= 65000 { host.stack.ephemeral_base } else { p + 1 };
        p
    }

    pub fn leg(&self, c: HostId, s: HostId) -> Leg {
        let (ch, sh) = (&self.hosts[c], &self.hosts[s]);
        let same_segment = ch.vlan == sh.vlan && same_subnet(ch.ip, sh.ip);
        let (s_mac, s_ttl) = match (same_segment, ch.gateway) {
            (false, Some(gw)) => (self.hosts[gw].mac, sh.stack.ttl.saturating_sub(1)),
            _ => (sh.mac, sh.stack.ttl),
        };
        Leg { vlan: ch.vlan, c_mac: ch.mac, s_mac, c_ip: ch.ip, s_ip: sh.ip, c_ttl: ch.stack.ttl, s_ttl }
    }

    fn write_frame(&mut self) -> anyhow::Result<()> {
        let ts = self.now_us;
        self.first_us.get_or_insert(ts);
        self.last_us = ts;
        self.writer.write(ts, &self.buf)?;
        Ok(())
    }

    /// One UDP datagram with explicit addressing (broadcasts, DHCP before an address).
    #[allow(clippy::too_many_arguments)]
    pub fn udp_raw(
        &mut self,
        l2: L2,
        src_ip: Ipv4Addr,
        dst_ip: Ipv4Addr,
        ttl: u8,
        ip_id_of: HostId,
        sport: u16,
        dport: u16,
        payload: &[u8],
        app: &str,
    ) -> anyhow::Result<()> {
        let id = self.next_ip_id(ip_id_of);
        let ip = Ip4 { src: src_ip, dst: dst_ip, ttl, id };
        frames::udp(&mut self.buf, &l2, &ip, sport, dport, payload);
        self.write_frame()?;
        let packet = WrittenPacket {
            proto: frames::IPPROTO_UDP,
            l2: &l2,
            src: (src_ip, sport),
            dst: (dst_ip, dport),
            payload_len: payload.len(),
            app,
            opens_tcp_session: false,
        };
        self.ledger.record(&packet, self.buf.len() as u64, self.now_us);
        Ok(())
    }

    /// One UDP datagram between two hosts; `from_client` picks the direction on `leg`.
    #[allow(clippy::too_many_arguments)]
    pub fn udp(
        &mut self,
        leg: &Leg,
        c: HostId,
        s: HostId,
        from_client: bool,
        cport: u16,
        sport: u16,
        payload: &[u8],
        app: &str,
    ) -> anyhow::Result<()> {
        let l2 = leg.l2(from_client);
        let (src, dst, ttl) = leg.ip(from_client);
        if from_client {
            self.udp_raw(l2, src, dst, ttl, c, cport, sport, payload, app)
        } else {
            self.udp_raw(l2, src, dst, ttl, s, sport, cport, payload, app)
        }
    }

    /// A client→server datagram answered by one server→client datagram.
    #[allow(clippy::too_many_arguments)]
    pub fn udp_exchange(
        &mut self,
        c: HostId,
        s: HostId,
        cport: u16,
        sport: u16,
        request: &[u8],
        reply: Option<&[u8]>,
        app: &str,
    ) -> anyhow::Result<()> {
        let leg = self.leg(c, s);
        self.udp(&leg, c, s, true, cport, sport, request, app)?;
        if let Some(r) = reply {
            self.gap(200, 3000);
            self.udp(&leg, c, s, false, cport, sport, r, app)?;
        }
        self.gap(50, 500);
        Ok(())
    }

    pub fn arp(
        &mut self,
        l2: L2,
        op: u16,
        sha: [u8; 6],
        spa: Ipv4Addr,
        tha: [u8; 6],
        tpa: Ipv4Addr,
    ) -> anyhow::Result<()> {
        frames::arp(&mut self.buf, &l2, op, sha, spa, tha, tpa);
        self.write_frame()
    }

    /// A gratuitous ARP announcing `h`'s address (what static hosts send at boot).
    pub fn gratuitous_arp(&mut self, h: HostId) -> anyhow::Result<()> {
        let host = &self.hosts[h];
        let (mac, ip, vlan) = (host.mac, host.ip, host.vlan);
        self.arp(L2 { src: mac, dst: [0xff; 6], vlan }, 1, mac, ip, [0; 6], ip)?;
        self.gap(100, 1000);
        Ok(())
    }

    pub fn raw(&mut self, l2: L2, ethertype: u16, body: &[u8]) -> anyhow::Result<()> {
        frames::raw(&mut self.buf, &l2, ethertype, body);
        self.write_frame()
    }

    /// One TCP segment (a [`super::TcpConn`] keeps the numbers consistent).
    pub(super) fn tcp(
        &mut self,
        l2: &L2,
        ip: &Ip4,
        (sport, dport): (u16, u16),
        h: &TcpHdr,
        payload: &[u8],
        app: &str,
    ) -> anyhow::Result<()> {
        frames::tcp(&mut self.buf, l2, ip, sport, dport, h, payload);
        self.write_frame()?;
        let packet = WrittenPacket {
            proto: frames::IPPROTO_TCP,
            l2,
            src: (ip.src, sport),
            dst: (ip.dst, dport),
            payload_len: payload.len(),
            app,
            opens_tcp_session: h.flags == TCP_SYN,
        };
        self.ledger.record(&packet, self.buf.len() as u64, self.now_us);
        Ok(())
    }

    /// Flushes the capture; returns its totals and the flow accounting.
    pub fn finish(self) -> anyhow::Result<CaptureSummary<W>> {
        let packets = self.writer.packets();
        let bytes = self.writer.bytes();
        let first_packet_us = self.first_us.unwrap_or(self.now_us);
        let last_packet_us = self.last_us;
        let output = self.writer.finish()?;
        Ok(CaptureSummary { flows: self.ledger.into_flows(), packets, bytes, first_packet_us, last_packet_us, output })
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr) -> bool {
    // Every generated segment is a /16 with its router at x.y.0.1.
    a.octets()[..2] == b.octets()[..2]
}
