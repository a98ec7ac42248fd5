//! TCP conversations: handshake, MSS-sized data segments with delayed ACKs, orderly close,
//! with sequence and acknowledgement numbers consistent across the whole session.

use super::emitter::{Emitter, IpPacket, Leg};
use super::frames::{TcpHdr, IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};
use super::host::{HostId, Stack};
use rand::Rng;
use std::io::Write;

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

/// Header of a segment without TCP options.
fn plain(seq: u32, ack: u32, flags: u8, window: u16) -> TcpHdr<'static> {
    TcpHdr { seq, ack, flags, window, options: &[] }
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
        let conn = TcpConn {
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
        let syn = TcpHdr { options: &syn_options(&cst), ..plain(cisn, 0, TCP_SYN, cst.syn_window) };
        conn.segment(em, true, &syn, &[])?;
        em.gap(150, 2500);
        let syn_ack =
            TcpHdr { options: &syn_options(&sst), ..plain(sisn, conn.cseq, TCP_SYN | TCP_ACK, sst.syn_window) };
        conn.segment(em, false, &syn_ack, &[])?;
        em.gap(50, 400);
        let ack = plain(conn.cseq, conn.sseq, TCP_ACK, conn.cwin);
        conn.segment(em, true, &ack, &[])?;
        em.gap(50, 400);
        Ok(conn)
    }

    /// Writes one segment in the given direction.
    fn segment<W: Write>(
        &self,
        em: &mut Emitter<W>,
        from_client: bool,
        h: &TcpHdr,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let (ports, sender) =
            if from_client { ((self.cport, self.sport), self.c) } else { ((self.sport, self.cport), self.s) };
        let id = em.next_ip_id(sender);
        let p = IpPacket { proto: IPPROTO_TCP, ports, tcp: Some(h), payload, app: self.app, sender };
        em.ip_on_leg(&self.leg, from_client, id, &p)
    }

    /// Sends `data` in MSS-sized segments; the receiver ACKs every second segment and the last.
    pub fn send<W: Write>(&mut self, em: &mut Emitter<W>, from_client: bool, data: &[u8]) -> anyhow::Result<()> {
        let chunks: Vec<&[u8]> = data.chunks(self.cmss.max(1)).collect();
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = i + 1 == n;
            let flags = if last { TCP_ACK | TCP_PSH } else { TCP_ACK };
            let (seq, ack, win) =
                if from_client { (self.cseq, self.sseq, self.cwin) } else { (self.sseq, self.cseq, self.swin) };
            self.segment(em, from_client, &plain(seq, ack, flags, win), chunk)?;
            let adv = chunk.len() as u32;
            if from_client {
                self.cseq = self.cseq.wrapping_add(adv);
            } else {
                self.sseq = self.sseq.wrapping_add(adv);
            }
            em.gap(10, 120);
            if last || i % 2 == 1 {
                let (seq, ack, win) =
                    if from_client { (self.sseq, self.cseq, self.swin) } else { (self.cseq, self.sseq, self.cwin) };
                self.segment(em, !from_client, &plain(seq, ack, TCP_ACK, win), &[])?;
                em.gap(10, 120);
            }
        }
        Ok(())
    }

    /// Client sends `req`, server answers `resp` after a think time.
    pub fn request<W: Write>(&mut self, em: &mut Emitter<W>, req: &[u8], resp: &[u8]) -> anyhow::Result<()> {
        self.send(em, true, req)?;
        em.gap(300, 4000);
        if !resp.is_empty() {
            self.send(em, false, resp)?;
        }
        em.gap(100, 1000);
        Ok(())
    }

    /// Orderly close: FIN from `client_first` side, FIN from the other, final ACK.
    pub fn close<W: Write>(&mut self, em: &mut Emitter<W>, client_first: bool) -> anyhow::Result<()> {
        if !self.open {
            return Ok(());
        }
        let a = client_first;
        let (s1, a1, w1) = if a { (self.cseq, self.sseq, self.cwin) } else { (self.sseq, self.cseq, self.swin) };
        self.segment(em, a, &plain(s1, a1, TCP_FIN | TCP_ACK, w1), &[])?;
        em.gap(100, 800);
        let (s2, w2) = if a { (self.sseq, self.swin) } else { (self.cseq, self.cwin) };
        let fin = plain(s2, s1.wrapping_add(1), TCP_FIN | TCP_ACK, w2);
        self.segment(em, !a, &fin, &[])?;
        em.gap(50, 300);
        let ack = plain(s1.wrapping_add(1), s2.wrapping_add(1), TCP_ACK, w1);
        self.segment(em, a, &ack, &[])?;
        self.cseq = self.cseq.wrapping_add(1);
        self.sseq = self.sseq.wrapping_add(1);
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
