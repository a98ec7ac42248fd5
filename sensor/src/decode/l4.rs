//! Transport layers: TCP, UDP, ICMP, ICMPv6; GRE is unwrapped by [`super::tunnel`].

use super::{err, tunnel, Bytes, DecodeError, Decoded, TcpHeader, L4};

/// TCP flag bits as they appear in the header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// `body` ends where the IP packet ends (padding removed); `off` is the transport header.
pub(super) fn decode_l4<'a>(
    proto: u8,
    v6: bool,
    body: &'a [u8],
    off: usize,
    d: &mut Decoded<'a>,
) -> Result<(), DecodeError> {
    let b = Bytes { data: body };
    let n = body.len();
    match proto {
        6 => {
            let src_port = b.u16(off).ok_or(err("tcp_truncated", off, n))?;
            let dst_port = b.u16(off + 2).ok_or(err("tcp_truncated", off, n))?;
            let seq = b.u32(off + 4).ok_or(err("tcp_truncated", off, n))?;
            let ack = b.u32(off + 8).ok_or(err("tcp_truncated", off, n))?;
            let data_off = b.u8(off + 12).ok_or(err("tcp_truncated", off, n))?;
            let flags = b.u8(off + 13).ok_or(err("tcp_truncated", off, n))?;
            let window = b.u16(off + 14).ok_or(err("tcp_truncated", off, n))?;
            let hlen = (data_off >> 4) as usize * 4;
            if hlen < 20 {
                return Err(err("tcp_bad_offset", off, n));
            }
            if off + hlen > n {
                return Err(err("tcp_truncated", off, n));
            }
            d.l4 = L4::Tcp(TcpHeader { src_port, dst_port, seq, ack, flags, window, header_len: hlen as u8 });
            d.payload = &body[off + hlen..];
            Ok(())
        }
        17 => {
            let src_port = b.u16(off).ok_or(err("udp_truncated", off, n))?;
            let dst_port = b.u16(off + 2).ok_or(err("udp_truncated", off, n))?;
            let len = b.u16(off + 4).ok_or(err("udp_truncated", off, n))? as usize;
            if off + 8 > n {
                return Err(err("udp_truncated", off, n));
            }
            // len 0 is legal for IPv6 jumbograms; len < 8 otherwise is broken.
            let end = if len == 0 {
                n
            } else if len < 8 {
                return Err(err("udp_bad_length", off, n));
            } else {
                (off + len).min(n)
            };
            d.l4 = L4::Udp { src_port, dst_port };
            d.payload = &body[off + 8..end];
            Ok(())
        }
        1 if !v6 => {
            let t = b.u8(off).ok_or(err("icmp_truncated", off, n))?;
            let c = b.u8(off + 1).unwrap_or(0);
            d.l4 = L4::Icmp { icmp_type: t, code: c };
            d.payload = body.get(off..).unwrap_or(&[]);
            Ok(())
        }
        58 if v6 => {
            let t = b.u8(off).ok_or(err("icmpv6_truncated", off, n))?;
            let c = b.u8(off + 1).unwrap_or(0);
            d.l4 = L4::Icmpv6 { icmp_type: t, code: c };
            d.payload = body.get(off..).unwrap_or(&[]);
            Ok(())
        }
        tunnel::IPPROTO_GRE if tunnel::decode_gre(body, off, d)? => Ok(()),
        _ => {
            d.l4 = L4::Other;
            d.payload = body.get(off..).unwrap_or(&[]);
            Ok(())
        }
    }
}
