//! DHCPv4 (RFC 2131/2132): BOOTP header plus the options that identify a client.
//!
//! Values are rendered the way `tshark -T fields` prints them, so differential tests can
//! compare directly:
//! - option 55 (`dhcp.option.request_list_item`): decimal codes in request order, joined
//!   with "," — e.g. "1,121,33,3,6".
//! - option 60 / 12: the bytes as text (invalid UTF-8 replaced, trailing NULs dropped).
//! - option 61: lower-case hex of the whole option value, type byte included
//!   ("01b827ebb853c8"); tshark splits it into `dhcp.hw.type` + `dhcp.hw.mac_addr`.
//! - option 57: decimal. Option 50: dotted quad. Option 81: the FQDN as a dotted name.
//! - option 82: "circuit_id=<hex>,remote_id=<hex>" for whichever sub-options are present.
//!
//! Repeated options are concatenated (RFC 3396) and option overload (52) is honoured:
//! options continue in the `file` and/or `sname` fields.
//!
//! Findings describe the CLIENT: the `chaddr` hardware address when it is an Ethernet
//! MAC (correct even for requests forwarded by a relay), else the packet's source.
//! Client messages (BOOTREQUEST) give the identity options; a server ACK gives the
//! address assigned to the client (`yiaddr`). A server's OFFER or ACK that carries a
//! hostname (12) or client FQDN (81) echoes or assigns the client's name: that is
//! evidence about the client, so it goes to `chaddr` and never to the sending server
//! (nor anywhere when `chaddr` is not an Ethernet MAC: the reply names no device).

use super::*;
use crate::protocols::DHCP;
use std::net::Ipv4Addr;

const BOOTP_FIXED: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// A parsed DHCPv4 message (only the parts Wardline uses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhcpRecord {
    /// 1 BOOTREQUEST (client → server), 2 BOOTREPLY.
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub xid: u32,
    pub ciaddr: Option<Ipv4Addr>,
    pub yiaddr: Option<Ipv4Addr>,
    pub giaddr: Option<Ipv4Addr>,
    pub chaddr: [u8; 16],
    pub message_type: Option<u8>,
    pub hostname: Option<String>,
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 55 codes in the order the client asked for them.
    pub param_request_list: Option<Vec<u8>>,
    pub max_msg_size: Option<u16>,
    pub vendor_class: Option<String>,
    pub client_id: Option<Vec<u8>>,
    pub fqdn: Option<String>,
    pub relay_circuit_id: Option<Vec<u8>>,
    pub relay_remote_id: Option<Vec<u8>>,
    pub overload: Option<u8>,
    /// Option 51: the lease time in seconds (0xffffffff is infinite).
    pub lease_secs: Option<u32>,
}

/// What a DHCPACK binds: the client's MAC (`chaddr`) to the address it was given
/// (`yiaddr`), for the lease time when the server said (option 51).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckBinding {
    pub client: MacAddr,
    pub ip: Ipv4Addr,
    /// None when the server gave no lease time or an infinite one.
    pub lease_secs: Option<u32>,
}

/// The binding a DHCPACK states; None for any other message (an ACK to an INFORM has no
/// `yiaddr`) or a client hardware address that is not an Ethernet MAC.
pub fn ack_binding(payload: &[u8]) -> Option<AckBinding> {
    let rec = parse(payload).ok()?;
    if rec.op != 2 || rec.message_type != Some(5) {
        return None;
    }
    Some(AckBinding {
        client: rec.client_mac().filter(|m| m.is_device())?,
        ip: rec.yiaddr?,
        lease_secs: rec.lease_secs.filter(|s| *s != u32::MAX),
    })
}

impl DhcpRecord {
    /// The client's MAC when the hardware address is Ethernet.
    pub fn client_mac(&self) -> Option<MacAddr> {
        if self.htype == 1 && self.hlen == 6 {
            let c = &self.chaddr;
            Some(MacAddr([c[0], c[1], c[2], c[3], c[4], c[5]]))
        } else {
            None
        }
    }

    pub fn param_list_string(&self) -> Option<String> {
        self.param_request_list.as_ref().map(|l| l.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","))
    }
}

fn text(b: &[u8]) -> String {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn nonzero_ip(b: &[u8]) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.get(..4)?.try_into().ok()?;
    let ip = Ipv4Addr::from(a);
    (!ip.is_unspecified()).then_some(ip)
}

/// Walk one options area, appending (code, value) pairs. Stops at END (255).
fn walk_options<'a>(area: &'a [u8], where_: &str, out: &mut Vec<(u8, &'a [u8])>) -> Result<(), DissectError> {
    let mut p = 0;
    while p < area.len() {
        let code = area[p];
        match code {
            0 => p += 1,
            255 => return Ok(()),
            _ => {
                let Some(&len) = area.get(p + 1) else {
                    return Err(DissectError::truncated(
                        Proto::Dhcp,
                        format!("option {code} in {where_} has no length byte"),
                    ));
                };
                let start = p + 2;
                let end = start + len as usize;
                if end > area.len() {
                    return Err(DissectError::new(
                        Proto::Dhcp,
                        "option_length",
                        format!("option {code} in {where_} claims {len} bytes but only {} remain", area.len() - start),
                    ));
                }
                out.push((code, &area[start..end]));
                p = end;
            }
        }
    }
    // Missing END is common in the wild (tshark warns but decodes); accept it.
    Ok(())
}

/// Concatenated value of every instance of `code` (RFC 3396 long options).
fn option_value(opts: &[(u8, &[u8])], code: u8) -> Option<Vec<u8>> {
    let mut found = false;
    let mut v = Vec::new();
    for (c, val) in opts {
        if *c == code {
            found = true;
            v.extend_from_slice(val);
        }
    }
    found.then_some(v)
}

/// Decode a DNS-wire-format name (RFC 4702 canonical encoding), bounded and loop-free.
fn dns_wire_name(b: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let l = b[p] as usize;
        if l == 0 {
            break;
        }
        if l > 63 {
            return None; // compression pointers are not allowed here
        }
        let lab = b.get(p + 1..p + 1 + l)?;
        labels.push(String::from_utf8_lossy(lab).into_owned());
        p += 1 + l;
    }
    Some(labels.join("."))
}

/// Parse a DHCPv4 payload (the UDP datagram body).
pub fn parse(payload: &[u8]) -> Result<DhcpRecord, DissectError> {
    if payload.len() < BOOTP_FIXED + 4 {
        return Err(DissectError::truncated(
            Proto::Dhcp,
            format!("{} bytes, a BOOTP header and magic cookie need {}", payload.len(), BOOTP_FIXED + 4),
        ));
    }
    if payload[BOOTP_FIXED..BOOTP_FIXED + 4] != MAGIC {
        return Err(DissectError::new(
            Proto::Dhcp,
            "bad_magic_cookie",
            format!("magic cookie is {:02x?}, expected 63:82:53:63", &payload[BOOTP_FIXED..BOOTP_FIXED + 4]),
        ));
    }
    let op = payload[0];
    if op != 1 && op != 2 {
        return Err(DissectError::new(Proto::Dhcp, "bad_op", format!("op {op} is neither request (1) nor reply (2)")));
    }
    let mut rec = DhcpRecord {
        op,
        htype: payload[1],
        hlen: payload[2],
        xid: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
        ciaddr: nonzero_ip(&payload[12..16]),
        yiaddr: nonzero_ip(&payload[16..20]),
        giaddr: nonzero_ip(&payload[24..28]),
        ..Default::default()
    };
    rec.chaddr.copy_from_slice(&payload[28..44]);
    let mut opts: Vec<(u8, &[u8])> = Vec::new();
    walk_options(&payload[BOOTP_FIXED + 4..], "options", &mut opts)?;
    if let Some(ov) = option_value(&opts, 52) {
        let ov = ov.first().copied().unwrap_or(0);
        rec.overload = Some(ov);
        // RFC 2131 4.1: options field, then `file`, then `sname`.
        if ov & 1 != 0 {
            walk_options(&payload[108..236], "file field (overload)", &mut opts)?;
        }
        if ov & 2 != 0 {
            walk_options(&payload[44..108], "sname field (overload)", &mut opts)?;
        }
    }
    rec.message_type = option_value(&opts, 53).and_then(|v| v.first().copied());
    rec.hostname = option_value(&opts, 12).map(|v| text(&v));
    rec.requested_ip =
        option_value(&opts, 50).and_then(|v| Some(Ipv4Addr::from(<[u8; 4]>::try_from(v.get(..4)?).ok()?)));
    rec.param_request_list = option_value(&opts, 55);
    rec.max_msg_size = option_value(&opts, 57).and_then(|v| Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?)));
    rec.vendor_class = option_value(&opts, 60).map(|v| text(&v));
    rec.lease_secs = option_value(&opts, 51).and_then(|v| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)));
    rec.client_id = option_value(&opts, 61);
    if let Some(v) = option_value(&opts, 81) {
        if v.len() >= 3 {
            let flags = v[0];
            let name = &v[3..];
            rec.fqdn = if flags & 0x04 != 0 { dns_wire_name(name) } else { Some(text(name)) };
        }
    }
    if let Some(v) = option_value(&opts, 82) {
        let mut sub: Vec<(u8, &[u8])> = Vec::new();
        walk_options(&v, "relay agent information (82)", &mut sub)?;
        rec.relay_circuit_id = option_value(&sub, 1);
        rec.relay_remote_id = option_value(&sub, 2);
    }
    Ok(rec)
}

/// What a DHCP message says about its client.
pub fn findings(rec: &DhcpRecord, _ctx: &PacketCtx, out: &mut Vec<Finding>) {
    let client = rec.client_mac().filter(|m| m.is_device());
    let mk = |field: Field, value: String| match client {
        Some(mac) => Finding::about(mac, field, value),
        None => Finding::src(field, value),
    };
    if rec.op == 2 {
        server_reply_findings(rec, client, out);
        return;
    }
    if let Some(h) = &rec.hostname {
        if !h.is_empty() {
            out.push(mk(Field::Hostname, h.clone()));
        }
    }
    if let Some(v) = &rec.vendor_class {
        if !v.is_empty() {
            out.push(mk(Field::DhcpVendorClass, v.clone()));
        }
    }
    if let Some(p) = rec.param_list_string() {
        out.push(mk(Field::DhcpParamList, p));
    }
    if let Some(c) = &rec.client_id {
        out.push(mk(Field::DhcpClientId, hex::encode(c)));
    }
    if let Some(m) = rec.max_msg_size {
        out.push(mk(Field::DhcpMaxMsgSize, m.to_string()));
    }
    if let Some(ip) = rec.requested_ip.filter(|ip| !ip.is_unspecified()) {
        out.push(mk(Field::DhcpRequestedIp, ip.to_string()));
    }
    if let Some(f) = &rec.fqdn {
        if !f.is_empty() {
            out.push(mk(Field::DhcpFqdn, f.clone()));
        }
    }
    if rec.relay_circuit_id.is_some() || rec.relay_remote_id.is_some() {
        let mut parts = Vec::new();
        if let Some(c) = &rec.relay_circuit_id {
            parts.push(format!("circuit_id={}", hex::encode(c)));
        }
        if let Some(r) = &rec.relay_remote_id {
            parts.push(format!("remote_id={}", hex::encode(r)));
        }
        out.push(mk(Field::DhcpRelayInfo, parts.join(",")));
    }
    if let Some(ip) = rec.ciaddr {
        // A renewing/informing client states its own address.
        if client.is_some() {
            out.push(mk(Field::IpAddress, ip.to_string()));
        }
    }
}

/// A server reply speaks about the client only: the address it assigned (ACK) and the
/// client's own name echoed or assigned (OFFER, ACK). Its other options describe the server
/// or the network, not the client.
fn server_reply_findings(rec: &DhcpRecord, client: Option<MacAddr>, out: &mut Vec<Finding>) {
    let Some(mac) = client else { return };
    if rec.message_type == Some(5) {
        if let Some(ip) = rec.yiaddr {
            out.push(Finding::about(mac, Field::IpAddress, ip.to_string()));
        }
    }
    if matches!(rec.message_type, Some(2 | 5)) {
        if let Some(h) = rec.hostname.as_ref().filter(|h| !h.is_empty()) {
            out.push(Finding::about(mac, Field::Hostname, h.clone()));
        }
        if let Some(f) = rec.fqdn.as_ref().filter(|f| !f.is_empty()) {
            out.push(Finding::about(mac, Field::DhcpFqdn, f.clone()));
        }
    }
}

pub struct DhcpDissector;

impl Dissector for DhcpDissector {
    fn proto(&self) -> Proto {
        Proto::Dhcp
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Udp
            && DHCP.has_port(ctx.src_port)
            && DHCP.has_port(ctx.dst_port)
            && !payload.is_empty()
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        let rec = parse(payload)?;
        findings(&rec, ctx, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn minimal(op: u8) -> Vec<u8> {
        let mut p = vec![0u8; BOOTP_FIXED];
        p[0] = op;
        p[1] = 1;
        p[2] = 6;
        p[28..34].copy_from_slice(&[0x00, 0x1b, 0x21, 1, 2, 3]);
        p.extend_from_slice(&MAGIC);
        p
    }

    #[test]
    fn options_in_order_and_concatenated() {
        let mut p = minimal(1);
        p.extend_from_slice(&[53, 1, 1, 55, 3, 1, 121, 3, 12, 3, b'a', b'b', b'c', 12, 2, b'd', b'e']);
        p.extend_from_slice(&[61, 7, 1, 0x00, 0x1b, 0x21, 1, 2, 3, 255]);
        let r = parse(&p).unwrap();
        assert_eq!(r.param_list_string().as_deref(), Some("1,121,3"));
        assert_eq!(r.hostname.as_deref(), Some("abcde"));
        assert_eq!(r.message_type, Some(1));
        assert_eq!(hex::encode(r.client_id.unwrap()), "01001b21010203");
    }

    #[test]
    fn overload_reads_file_field() {
        let mut p = minimal(1);
        p[108..114].copy_from_slice(&[12, 3, b'p', b'm', b'p', 255]);
        p.extend_from_slice(&[52, 1, 1, 255]);
        assert_eq!(parse(&p).unwrap().hostname.as_deref(), Some("pmp"));
    }

    #[test]
    fn absurd_length_and_bad_cookie_are_errors() {
        let mut p = minimal(1);
        p.extend_from_slice(&[12, 200, b'x']);
        assert_eq!(parse(&p).unwrap_err().kind, "option_length");
        let mut p = minimal(1);
        p[BOOTP_FIXED] = 0;
        assert_eq!(parse(&p).unwrap_err().kind, "bad_magic_cookie");
        assert_eq!(parse(&p[..100]).unwrap_err().kind, "truncated");
    }

    #[test]
    fn fqdn_wire_and_ascii() {
        let mut p = minimal(1);
        p.extend_from_slice(&[81, 13, 0x04, 0, 0, 3, b'p', b'c', b'1', 3, b'l', b'a', b'n', 0, 255]);
        assert_eq!(parse(&p).unwrap().fqdn.as_deref(), Some("pc1.lan"));
        let mut p = minimal(1);
        p.extend_from_slice(&[81, 6, 0x00, 0, 0, b'p', b'c', b'2', 255]);
        assert_eq!(parse(&p).unwrap().fqdn.as_deref(), Some("pc2"));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn garbage_options_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600), ov in 0u8..4) {
            let mut p = minimal(1);
            p.extend_from_slice(&[52, 1, ov]);
            p.extend_from_slice(&tail);
            let _ = parse(&p);
        }
    }
}
