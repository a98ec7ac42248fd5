//! The emitter: a simulated clock, the hosts on the wire, TCP/UDP conversation helpers and
//! exact flow accounting. Frames go straight to the pcap writer; only per-flow counters stay
//! in memory.

use super::frames::{self, Ip4, TcpHdr, L2, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};
use super::pcap::PcapWriter;
use super::truth::TruthFlow;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::MacAddr;

pub type HostId = usize;

/// How a host's TCP/IP stack looks on the wire (p0f-style signals).
#[derive(Clone, Copy, Debug)]
pub struct Stack {
    pub ttl: u8,
    pub syn_window: u16,
    pub window: u16,
    pub mss: u16,
    /// Window-scale shift offered in the SYN, if any.
    pub wscale: Option<u8>,
    pub sack: bool,
    /// First ephemeral port the OS hands out.
    pub ephemeral_base: u16,
}

impl Stack {
    pub const WINDOWS: Stack = Stack {
        ttl: 128,
        syn_window: 8192,
        window: 256,
        mss: 1460,
        wscale: Some(8),
        sack: true,
        ephemeral_base: 49152,
    };
    pub const LINUX: Stack = Stack {
        ttl: 64,
        syn_window: 29200,
        window: 229,
        mss: 1460,
        wscale: Some(7),
        sack: true,
        ephemeral_base: 32768,
    };
    /// Small embedded TCP stacks (pumps, monitors, controllers): no options beyond MSS.
    pub const EMBEDDED: Stack = Stack {
        ttl: 64,
        syn_window: 4096,
        window: 4096,
        mss: 1460,
        wscale: None,
        sack: false,
        ephemeral_base: 1024,
    };
    pub const VXWORKS: Stack = Stack {
        ttl: 255,
        syn_window: 8192,
        window: 8192,
        mss: 1460,
        wscale: None,
        sack: false,
        ephemeral_base: 1025,
    };
}

/// One network interface on the wire.
#[derive(Clone, Debug)]
pub struct Host {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub vlan: Option<u16>,
    /// The router interface this host uses to leave its subnet.
    pub gateway: Option<HostId>,
    pub stack: Stack,
    ip_id: u16,
    next_port: u16,
}

impl Host {
    pub fn new(mac: [u8; 6], ip: Ipv4Addr, vlan: Option<u16>, stack: Stack) -> Host {
        // The starting IP id is derived from the MAC so it is deterministic but varied.
        let ip_id = u16::from_be_bytes([mac[4], mac[5]]);
        Host {
            mac,
            ip,
            vlan,
            gateway: None,
            stack,
            ip_id,
            next_port: stack.ephemeral_base,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    proto: u8,
    vlan: Option<u16>,
    lo: (Ipv4Addr, u16),
    hi: (Ipv4Addr, u16),
}

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

pub struct Emitter<W: Write> {
    writer: PcapWriter<W>,
    pub now_us: u64,
    pub rng: ChaCha8Rng,
    pub hosts: Vec<Host>,
    flows: Vec<TruthFlow>,
    flow_index: HashMap<FlowKey, usize>,
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
            flows: Vec::new(),
            flow_index: HashMap::new(),
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

    fn next_ip_id(&mut self, h: HostId) -> u16 {
        let host = &mut self.hosts[h];
        host.ip_id = host.ip_id.wrapping_add(1);
        host.ip_id
    }

    pub fn ephemeral_port(&mut self, h: HostId) -> u16 {
        let host = &mut self.hosts[h];
        let p = host.next_port;
        host.next_port = if p >= 65000 {
            host.stack.ephemeral_base
        } else {
            p + 1
        };
        p
    }

    pub fn leg(&self, c: HostId, s: HostId) -> Leg {
        let (ch, sh) = (&self.hosts[c], &self.hosts[s]);
        let same_segment = ch.vlan == sh.vlan && same_subnet(ch.ip, sh.ip);
        let (s_mac, s_ttl) = match (same_segment, ch.gateway) {
            (false, Some(gw)) => (self.hosts[gw].mac, sh.stack.ttl.saturating_sub(1)),
            _ => (sh.mac, sh.stack.ttl),
        };
        Leg {
            vlan: ch.vlan,
            c_mac: ch.mac,
            s_mac,
            c_ip: ch.ip,
            s_ip: sh.ip,
            c_ttl: ch.stack.ttl,
            s_ttl,
        }
    }

    fn write_frame(&mut self) -> anyhow::Result<()> {
        let ts = self.now_us;
        self.first_us.get_or_insert(ts);
        self.last_us = ts;
        self.writer.write(ts, &self.buf)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn account(
        &mut self,
        proto: u8,
        vlan: Option<u16>,
        src: (Ipv4Addr, u16, [u8; 6]),
        dst: (Ipv4Addr, u16, [u8; 6]),
        payload: usize,
        app: &str,
        syn_only: bool,
    ) {
        let (a, b) = ((src.0, src.1), (dst.0, dst.1));
        let key = FlowKey {
            proto,
            vlan,
            lo: a.min(b),
            hi: a.max(b),
        };
        let frame_len = self.buf.len() as u64;
        let now = self.now_us;
        let idx = match self.flow_index.get(&key) {
            Some(&i) => i,
            None => {
                self.flows.push(TruthFlow {
                    ip_proto: proto,
                    vlan,
                    a_mac: MacAddr(src.2),
                    b_mac: MacAddr(dst.2),
                    a_ip: src.0,
                    b_ip: dst.0,
                    a_port: src.1,
                    b_port: dst.1,
                    first_us: now,
                    last_us: now,
                    packets_ab: 0,
                    packets_ba: 0,
                    bytes_ab: 0,
                    bytes_ba: 0,
                    payload_ab: 0,
                    payload_ba: 0,
                    app: app.to_string(),
                    tcp_sessions: 0,
                });
                self.flow_index.insert(key, self.flows.len() - 1);
                self.flows.len() - 1
            }
        };
        let f = &mut self.flows[idx];
        f.last_us = now;
        if syn_only {
            f.tcp_sessions += 1;
        }
        if (f.a_ip, f.a_port) == a {
            f.packets_ab += 1;
            f.bytes_ab += frame_len;
            f.payload_ab += payload as u64;
        } else {
            f.packets_ba += 1;
            f.bytes_ba += frame_len;
            f.payload_ba += payload as u64;
        }
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
        let ip = Ip4 {
            src: src_ip,
            dst: dst_ip,
            ttl,
            id,
        };
        frames::udp(&mut self.buf, &l2, &ip, sport, dport, payload);
        self.write_frame()?;
        self.account(
            frames::IPPROTO_UDP,
            l2.vlan,
            (src_ip, sport, l2.src),
            (dst_ip, dport, l2.dst),
            payload.len(),
            app,
            false,
        );
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
        if from_client {
            let l2 = L2 {
                src: leg.c_mac,
                dst: leg.s_mac,
                vlan: leg.vlan,
            };
            self.udp_raw(
                l2, leg.c_ip, leg.s_ip, leg.c_ttl, c, cport, sport, payload, app,
            )
        } else {
            let l2 = L2 {
                src: leg.s_mac,
                dst: leg.c_mac,
                vlan: leg.vlan,
            };
            self.udp_raw(
                l2, leg.s_ip, leg.c_ip, leg.s_ttl, s, sport, cport, payload, app,
            )
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
        self.arp(
            L2 {
                src: mac,
                dst: [0xff; 6],
                vlan,
            },
            1,
            mac,
            ip,
            [0; 6],
            ip,
        )?;
        self.gap(100, 1000);
        Ok(())
    }

    pub fn raw(&mut self, l2: L2, ethertype: u16, body: &[u8]) -> anyhow::Result<()> {
        frames::raw(&mut self.buf, &l2, ethertype, body);
        self.write_frame()
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp_packet(
        &mut self,
        conn: &TcpConn,
        from_client: bool,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        options: &[u8],
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let leg = &conn.leg;
        let (l2, ip, sp, dp, idh) = if from_client {
            (
                L2 {
                    src: leg.c_mac,
                    dst: leg.s_mac,
                    vlan: leg.vlan,
                },
                (leg.c_ip, leg.s_ip, leg.c_ttl),
                conn.cport,
                conn.sport,
                conn.c,
            )
        } else {
            (
                L2 {
                    src: leg.s_mac,
                    dst: leg.c_mac,
                    vlan: leg.vlan,
                },
                (leg.s_ip, leg.c_ip, leg.s_ttl),
                conn.sport,
                conn.cport,
                conn.s,
            )
        };
        let id = self.next_ip_id(idh);
        let ip4 = Ip4 {
            src: ip.0,
            dst: ip.1,
            ttl: ip.2,
            id,
        };
        let h = TcpHdr {
            seq,
            ack,
            flags,
            window,
            options,
        };
        frames::tcp(&mut self.buf, &l2, &ip4, sp, dp, &h, payload);
        self.write_frame()?;
        self.account(
            frames::IPPROTO_TCP,
            l2.vlan,
            (ip.0, sp, l2.src),
            (ip.1, dp, l2.dst),
            payload.len(),
            conn.app,
            flags == TCP_SYN,
        );
        Ok(())
    }

    /// Flow accounting so far, in order of first packet.
    pub fn finish(self) -> anyhow::Result<(Vec<TruthFlow>, u64, u64, u64, u64, W)> {
        let packets = self.writer.packets();
        let bytes = self.writer.bytes();
        let first = self.first_us.unwrap_or(self.now_us);
        let last = self.last_us;
        let w = self.writer.finish()?;
        Ok((self.flows, packets, bytes, first, last, w))
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr) -> bool {
    // Every generated segment is a /16 with its router at x.y.0.1.
    a.octets()[..2] == b.octets()[..2]
}

fn syn_options(st: &Stack) -> Vec<u8> {
    let mut o = vec![2, 4];
    o.extend_from_slice(&st.mss.to_be_bytes());
    if let Some(ws) = st.wscale {
        o.extend_from_slice(&[1, 3, 3, ws]);
    }
    if st.sack {
        o.extend_from_slice(&[1, 1, 4, 2]);
    }
    while o.len() % 4 != 0 {
        o.push(1);
    }
    o
}

/// A TCP connection with consistent sequence and acknowledgement numbers.
pub struct TcpConn {
    pub c: HostId,
    pub s: HostId,
    pub cport: u16,
    pub sport: u16,
    leg: Leg,
    cseq: u32,
    sseq: u32,
    cwin: u16,
    swin: u16,
    cmss: usize,
    app: &'static str,
    pub open: bool,
}

impl TcpConn {
    /// Three-way handshake from `c` to `s`'s port `sport`.
    pub fn open<W: Write>(
        em: &mut Emitter<W>,
        c: HostId,
        s: HostId,
        sport: u16,
        app: &'static str,
    ) -> anyhow::Result<TcpConn> {
        let cport = em.ephemeral_port(c);
        let leg = em.leg(c, s);
        let (cst, sst) = (em.hosts[c].stack, em.hosts[s].stack);
        let cisn: u32 = em.rng.gen();
        let sisn: u32 = em.rng.gen();
        let mut conn = TcpConn {
            c,
            s,
            cport,
            sport,
            leg,
            cseq: cisn.wrapping_add(1),
            sseq: sisn.wrapping_add(1),
            cwin: cst.window,
            swin: sst.window,
            cmss: usize::from(cst.mss.min(sst.mss)),
            app,
            open: true,
        };
        em.tcp_packet(
            &conn,
            true,
            cisn,
            0,
            TCP_SYN,
            cst.syn_window,
            &syn_options(&cst),
            &[],
        )?;
        em.gap(150, 2500);
        em.tcp_packet(
            &conn,
            false,
            sisn,
            conn.cseq,
            TCP_SYN | TCP_ACK,
            sst.syn_window,
            &syn_options(&sst),
            &[],
        )?;
        em.gap(50, 400);
        em.tcp_packet(
            &conn,
            true,
            conn.cseq,
            conn.sseq,
            TCP_ACK,
            conn.cwin,
            &[],
            &[],
        )?;
        em.gap(50, 400);
        conn.leg = leg;
        Ok(conn)
    }

    /// Sends `data` in MSS-sized segments; the receiver ACKs every second segment and the last.
    pub fn send<W: Write>(
        &mut self,
        em: &mut Emitter<W>,
        from_client: bool,
        data: &[u8],
    ) -> anyhow::Result<()> {
        let chunks: Vec<&[u8]> = data.chunks(self.cmss.max(1)).collect();
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = i + 1 == n;
            let flags = if last { TCP_ACK | TCP_PSH } else { TCP_ACK };
            let (seq, ack, win) = if from_client {
                (self.cseq, self.sseq, self.cwin)
            } else {
                (self.sseq, self.cseq, self.swin)
            };
            em.tcp_packet(self, from_client, seq, ack, flags, win, &[], chunk)?;
            let adv = chunk.len() as u32;
            if from_client {
                self.cseq = self.cseq.wrapping_add(adv);
            } else {
                self.sseq = self.sseq.wrapping_add(adv);
            }
            em.gap(10, 120);
            if last || i % 2 == 1 {
                let (seq, ack, win) = if from_client {
                    (self.sseq, self.cseq, self.swin)
                } else {
                    (self.cseq, self.sseq, self.cwin)
                };
                em.tcp_packet(self, !from_client, seq, ack, TCP_ACK, win, &[], &[])?;
                em.gap(10, 120);
            }
        }
        Ok(())
    }

    /// Client sends `req`, server answers `resp` after a think time.
    pub fn request<W: Write>(
        &mut self,
        em: &mut Emitter<W>,
        req: &[u8],
        resp: &[u8],
    ) -> anyhow::Result<()> {
        self.send(em, true, req)?;
        em.gap(300, 4000);
        if !resp.is_empty() {
            self.send(em, false, resp)?;
        }
        em.gap(100, 1000);
        Ok(())
    }

    /// Orderly close: FIN from `client_first` side, FIN from the other, final ACK.
    pub fn close<W: Write>(
        &mut self,
        em: &mut Emitter<W>,
        client_first: bool,
    ) -> anyhow::Result<()> {
        if !self.open {
            return Ok(());
        }
        let a = client_first;
        let (s1, a1, w1) = if a {
            (self.cseq, self.sseq, self.cwin)
        } else {
            (self.sseq, self.cseq, self.swin)
        };
        em.tcp_packet(self, a, s1, a1, TCP_FIN | TCP_ACK, w1, &[], &[])?;
        em.gap(100, 800);
        let (s2, w2) = if a {
            (self.sseq, self.swin)
        } else {
            (self.cseq, self.cwin)
        };
        em.tcp_packet(
            self,
            !a,
            s2,
            s1.wrapping_add(1),
            TCP_FIN | TCP_ACK,
            w2,
            &[],
            &[],
        )?;
        em.gap(50, 300);
        em.tcp_packet(
            self,
            a,
            s1.wrapping_add(1),
            s2.wrapping_add(1),
            TCP_ACK,
            w1,
            &[],
            &[],
        )?;
        if a {
            self.cseq = self.cseq.wrapping_add(1);
            self.sseq = self.sseq.wrapping_add(1);
        } else {
            self.sseq = self.sseq.wrapping_add(1);
            self.cseq = self.cseq.wrapping_add(1);
        }
        self.open = false;
        em.gap(100, 1000);
        Ok(())
    }
}

/// Open, one request/response, close: the shape of most short TCP exchanges.
pub fn tcp_transaction<W: Write>(
    em: &mut Emitter<W>,
    c: HostId,
    s: HostId,
    sport: u16,
    app: &'static str,
    req: &[u8],
    resp: &[u8],
) -> anyhow::Result<()> {
    let mut conn = TcpConn::open(em, c, s, sport, app)?;
    conn.request(em, req, resp)?;
    conn.close(em, true)
}
