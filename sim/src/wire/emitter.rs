//! The emitter: a simulated clock, the hosts on the wire and the frames they send. Frames
//! go straight to the pcap writer; only per-flow counters (the flow ledger) stay in memory.

use super::flows::{FlowLedger, WrittenPacket};
use super::frames::{self, Ip4, TcpHdr, L2, TCP_SYN};
use super::host::{CaptureId, Host, HostId, MAX_CAPTURES};
use super::pcap::PcapWriter;
use crate::truth::TruthFlow;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::net::Ipv4Addr;

/// A site reached only through its router: its own (access-layer) capture sees the site's
/// segments; the core capture sees its traffic on the transit link between the site's router
/// and the core switch, so remote hosts there carry the site router's MAC.
#[derive(Clone, Copy, Debug)]
pub struct WanLink {
    pub access_capture: CaptureId,
    pub core_capture: CaptureId,
    pub transit_vlan: Option<u16>,
    /// The remote site's router (its host and MAC), as the core sees it on the transit link.
    pub site_router: HostId,
    pub site_router_mac: [u8; 6],
    /// The core switch's interface on the transit link.
    pub core: HostId,
    pub core_mac: [u8; 6],
}

/// How one capture sees a conversation: the VLAN, MACs and TTLs of its frames there.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub capture: CaptureId,
    pub vlan: Option<u16>,
    pub c_mac: [u8; 6],
    /// Destination MAC of client→server frames, source MAC of server→client frames.
    pub s_mac: [u8; 6],
    pub c_ttl: u8,
    pub s_ttl: u8,
    /// The router whose MAC stands in for the client (`c_via`) or the server (`s_via`).
    pub c_via: Option<HostId>,
    pub s_via: Option<HostId>,
}

impl View {
    /// Layer-2 addressing of a frame sent by the client (`from_client`) or the server.
    pub fn l2(&self, from_client: bool) -> L2 {
        let (src, dst) = if from_client { (self.c_mac, self.s_mac) } else { (self.s_mac, self.c_mac) };
        L2 { src, dst, vlan: self.vlan }
    }
}

/// Where the captures see a conversation. The main view is on the client's segment: peers
/// in another subnet appear behind the client's gateway MAC, and their packets arrive one
/// hop older. A conversation that crosses a routed link is also seen on the core's transit
/// link (`also`), between the two routers' MACs.
#[derive(Clone, Copy, Debug)]
pub struct Leg {
    pub c_ip: Ipv4Addr,
    pub s_ip: Ipv4Addr,
    pub main: View,
    pub also: Option<View>,
}

impl Leg {
    /// Source address, destination address and TTL of a packet in that direction on `view`.
    pub fn ip(&self, view: &View, from_client: bool) -> (Ipv4Addr, Ipv4Addr, u8) {
        if from_client {
            (self.c_ip, self.s_ip, view.c_ttl)
        } else {
            (self.s_ip, self.c_ip, view.s_ttl)
        }
    }

    fn views(&self) -> impl Iterator<Item = &View> {
        std::iter::once(&self.main).chain(self.also.as_ref())
    }
}

/// What one capture holds once every frame is written.
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

/// One capture being written: its file, its flow ledger and its time span.
struct CaptureOut<W: Write> {
    writer: PcapWriter<W>,
    ledger: FlowLedger,
    first_us: Option<u64>,
    last_us: u64,
}

/// An IPv4 packet to write on every view of a leg.
pub(super) struct IpPacket<'a> {
    pub proto: u8,
    /// (source port, destination port).
    pub ports: (u16, u16),
    /// TCP header (TCP packets only).
    pub tcp: Option<&'a TcpHdr<'a>>,
    pub payload: &'a [u8],
    pub app: &'a str,
    pub sender: HostId,
}

pub struct Emitter<W: Write> {
    captures: Vec<CaptureOut<W>>,
    pub now_us: u64,
    pub rng: ChaCha8Rng,
    pub hosts: Vec<Host>,
    pub wan_links: Vec<WanLink>,
    buf: Vec<u8>,
    start_us: u64,
}

impl<W: Write> Emitter<W> {
    /// An emitter whose main (core) capture goes to `writer`.
    pub fn new(writer: PcapWriter<W>, start_us: u64, rng: ChaCha8Rng) -> Self {
        let mut em = Emitter {
            captures: Vec::new(),
            now_us: start_us,
            rng,
            hosts: Vec::new(),
            wan_links: Vec::new(),
            buf: Vec::with_capacity(2048),
            start_us,
        };
        em.add_capture(writer);
        em
    }

    /// Another vantage point (an access-layer sensor); frames of hosts whose `capture` is
    /// the returned id go there.
    pub fn add_capture(&mut self, writer: PcapWriter<W>) -> CaptureId {
        assert!(self.captures.len() < MAX_CAPTURES, "at most {MAX_CAPTURES} captures per run");
        self.captures.push(CaptureOut {
            writer,
            ledger: FlowLedger::default(),
            first_us: None,
            last_us: self.start_us,
        });
        self.captures.len() - 1
    }

    pub fn add_wan_link(&mut self, link: WanLink) -> usize {
        self.wan_links.push(link);
        self.wan_links.len() - 1
    }

    pub fn add_host(&mut self, h: Host) -> HostId {
        self.hosts.push(h);
        self.hosts.len() - 1
    }

    /// Packets written to the main capture so far.
    pub fn packets(&self) -> u64 {
        self.captures[0].writer.packets()
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

    /// How the captures see a conversation from `c` to `s`.
    pub fn leg(&self, c: HostId, s: HostId) -> Leg {
        let (ch, sh) = (&self.hosts[c], &self.hosts[s]);
        let same_segment = ch.vlan == sh.vlan && same_subnet(ch.ip, sh.ip) && ch.wan == sh.wan;
        let (c_ttl, s_ttl) = (ch.stack.ttl, sh.stack.ttl);
        let on_segment = |h: &Host, c_ttl, s_ttl| View {
            capture: h.capture,
            vlan: h.vlan,
            c_mac: ch.mac,
            s_mac: sh.mac,
            c_ttl,
            s_ttl,
            c_via: None,
            s_via: None,
        };
        // The client's (or server's) segment, the peer behind that segment's gateway.
        let behind_gateway = |h: &Host, client_side: bool, hops: u8| {
            let mut v = on_segment(h, c_ttl, s_ttl);
            if let Some(g) = h.gateway {
                if client_side {
                    (v.s_mac, v.s_via, v.s_ttl) = (self.hosts[g].mac, Some(g), s_ttl.saturating_sub(hops));
                } else {
                    (v.c_mac, v.c_via, v.c_ttl) = (self.hosts[g].mac, Some(g), c_ttl.saturating_sub(hops));
                }
            }
            v
        };
        let transit = |l: &WanLink, client_remote: bool| {
            let (remote, core) = ((l.site_router_mac, Some(l.site_router)), (l.core_mac, Some(l.core)));
            let ((c_mac, c_via), (s_mac, s_via)) = if client_remote { (remote, core) } else { (core, remote) };
            View {
                capture: l.core_capture,
                vlan: l.transit_vlan,
                c_mac,
                s_mac,
                c_ttl: c_ttl.saturating_sub(1),
                s_ttl: s_ttl.saturating_sub(1),
                c_via,
                s_via,
            }
        };
        let (main, also) = match (same_segment, ch.wan, sh.wan) {
            (true, _, _) => (on_segment(ch, c_ttl, s_ttl), None),
            // A remote client: its own segment, then the transit link to the core.
            (false, Some(w), _) if sh.wan != Some(w) => {
                (behind_gateway(ch, true, 2), Some(transit(&self.wan_links[w], true)))
            }
            // A core-side client of a remote server: the transit link, then the server's segment.
            (false, None, Some(w)) => (transit(&self.wan_links[w], false), Some(behind_gateway(sh, false, 2))),
            // Routed within one site: seen on the client's segment behind its gateway.
            _ => (behind_gateway(ch, true, 1), None),
        };
        Leg { c_ip: ch.ip, s_ip: sh.ip, main, also }
    }

    /// Writes the frame in `buf` to `capture`, sent by `sender` (its sightings are updated).
    fn write_frame(&mut self, capture: CaptureId, sender: HostId, src_mac: [u8; 6]) -> anyhow::Result<()> {
        let ts = self.now_us;
        let out = &mut self.captures[capture];
        out.first_us.get_or_insert(ts);
        out.last_us = ts;
        out.writer.write(ts, &self.buf)?;
        self.hosts[sender].note_sent(capture, src_mac, ts);
        Ok(())
    }

    /// Writes one IPv4 packet on every view of `leg` and counts it in each capture's ledger.
    pub(super) fn ip_on_leg(&mut self, leg: &Leg, from_client: bool, id: u16, p: &IpPacket) -> anyhow::Result<()> {
        for view in leg.views() {
            let l2 = view.l2(from_client);
            let (src, dst, ttl) = leg.ip(view, from_client);
            let ip = Ip4 { src, dst, ttl, id };
            match p.tcp {
                Some(h) => frames::tcp(&mut self.buf, &l2, &ip, p.ports.0, p.ports.1, h, p.payload),
                None => frames::udp(&mut self.buf, &l2, &ip, p.ports.0, p.ports.1, p.payload),
            }
            self.write_frame(view.capture, p.sender, l2.src)?;
            // A routed frame: the router whose MAC it carries is seen sending natively.
            if let Some(router) = if from_client { view.c_via } else { view.s_via } {
                self.hosts[router].note_sent(view.capture, l2.src, self.now_us);
            }
            let packet = WrittenPacket {
                proto: p.proto,
                l2: &l2,
                src: (src, p.ports.0),
                dst: (dst, p.ports.1),
                payload_len: p.payload.len(),
                app: p.app,
                opens_tcp_session: p.tcp.is_some_and(|h| h.flags == TCP_SYN),
            };
            let len = self.buf.len() as u64;
            self.captures[view.capture].ledger.record(&packet, len, self.now_us);
        }
        Ok(())
    }

    /// One UDP datagram with explicit addressing (broadcasts, DHCP before an address), sent
    /// by `ip_id_of` on its segment's capture.
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
        let capture = self.hosts[ip_id_of].capture;
        let ip = Ip4 { src: src_ip, dst: dst_ip, ttl, id };
        frames::udp(&mut self.buf, &l2, &ip, sport, dport, payload);
        self.write_frame(capture, ip_id_of, l2.src)?;
        let packet = WrittenPacket {
            proto: frames::IPPROTO_UDP,
            l2: &l2,
            src: (src_ip, sport),
            dst: (dst_ip, dport),
            payload_len: payload.len(),
            app,
            opens_tcp_session: false,
        };
        let len = self.buf.len() as u64;
        self.captures[capture].ledger.record(&packet, len, self.now_us);
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
        let (sender, ports) = if from_client { (c, (cport, sport)) } else { (s, (sport, cport)) };
        let id = self.next_ip_id(sender);
        let p = IpPacket { proto: frames::IPPROTO_UDP, ports, tcp: None, payload, app, sender };
        self.ip_on_leg(leg, from_client, id, &p)
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

    /// An ARP frame sent by `via` on its segment's capture.
    #[allow(clippy::too_many_arguments)]
    pub fn arp(
        &mut self,
        via: HostId,
        l2: L2,
        op: u16,
        sha: [u8; 6],
        spa: Ipv4Addr,
        tha: [u8; 6],
        tpa: Ipv4Addr,
    ) -> anyhow::Result<()> {
        frames::arp(&mut self.buf, &l2, op, sha, spa, tha, tpa);
        self.write_frame(self.hosts[via].capture, via, l2.src)
    }

    /// A gratuitous ARP announcing `h`'s address (what static hosts send at boot).
    pub fn gratuitous_arp(&mut self, h: HostId) -> anyhow::Result<()> {
        let host = &self.hosts[h];
        let (mac, ip, vlan) = (host.mac, host.ip, host.vlan);
        self.arp(h, L2 { src: mac, dst: [0xff; 6], vlan }, 1, mac, ip, [0; 6], ip)?;
        self.gap(100, 1000);
        Ok(())
    }

    /// A non-IP frame sent by `via` on its segment's capture.
    pub fn raw(&mut self, via: HostId, l2: L2, ethertype: u16, body: &[u8]) -> anyhow::Result<()> {
        frames::raw(&mut self.buf, &l2, ethertype, body);
        self.write_frame(self.hosts[via].capture, via, l2.src)
    }

    /// Flushes every capture; returns their totals and flow accounting, by capture id.
    pub fn finish(self) -> anyhow::Result<Vec<CaptureSummary<W>>> {
        let now = self.now_us;
        self.captures
            .into_iter()
            .map(|c| {
                let packets = c.writer.packets();
                let bytes = c.writer.bytes();
                let output = c.writer.finish()?;
                Ok(CaptureSummary {
                    flows: c.ledger.into_flows(),
                    packets,
                    bytes,
                    first_packet_us: c.first_us.unwrap_or(now),
                    last_packet_us: c.last_us,
                    output,
                })
            })
            .collect()
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr) -> bool {
    // Every generated segment is a /16 with its router at x.y.0.1.
    a.octets()[..2] == b.octets()[..2]
}
