//! DHCPv4 (RFC 2131/2132) messages: DISCOVER/OFFER/REQUEST/ACK and RELEASE.

use std::net::Ipv4Addr;

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const RELEASE: u8 = 7;

/// What a client puts in its messages: the fingerprint signals (options 12, 55, 60, 61, 81).
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub mac: [u8; 6],
    pub hostname: Option<String>,
    pub vendor_class: Option<String>,
    pub param_list: Vec<u8>,
    /// Option 61 as type 1 + MAC when true.
    pub client_id: bool,
    /// Option 81 client FQDN in REQUEST (Windows sends it).
    pub fqdn: Option<String>,
    pub max_msg_size: Option<u16>,
    /// Sets the BOOTP broadcast flag so replies go to 255.255.255.255.
    pub broadcast: bool,
}

/// What the server answers with.
#[derive(Clone, Debug)]
pub struct Lease {
    pub server_id: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub subnet_mask: Ipv4Addr,
    pub router: Ipv4Addr,
    pub dns: Ipv4Addr,
    pub domain: String,
    pub lease_secs: u32,
    /// Relay agent address when a router relays for another subnet.
    pub giaddr: Ipv4Addr,
}

#[allow(clippy::too_many_arguments)] // mirrors the BOOTP fixed header fields
fn header(
    op: u8,
    xid: u32,
    secs: u16,
    broadcast: bool,
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    mac: [u8; 6],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(400);
    p.extend_from_slice(&[op, 1, 6, 0]);
    p.extend_from_slice(&xid.to_be_bytes());
    p.extend_from_slice(&secs.to_be_bytes());
    p.extend_from_slice(&(if broadcast { 0x8000u16 } else { 0 }).to_be_bytes());
    p.extend_from_slice(&ciaddr.octets());
    p.extend_from_slice(&yiaddr.octets());
    p.extend_from_slice(&[0, 0, 0, 0]); // siaddr
    p.extend_from_slice(&giaddr.octets());
    p.extend_from_slice(&mac);
    p.extend_from_slice(&[0u8; 10]); // chaddr padding
    p.extend_from_slice(&[0u8; 64]); // sname
    p.extend_from_slice(&[0u8; 128]); // file
    p.extend_from_slice(&[99, 130, 83, 99]); // magic cookie
    p
}

fn opt(p: &mut Vec<u8>, code: u8, val: &[u8]) {
    p.push(code);
    p.push(val.len() as u8);
    p.extend_from_slice(val);
}

fn finish(mut p: Vec<u8>) -> Vec<u8> {
    p.push(255);
    // BOOTP minimum message size, as most clients and servers pad to.
    if p.len() < 300 {
        p.resize(300, 0);
    }
    p
}

/// DISCOVER (`requested` None) or REQUEST (selecting the offer from `server`).
pub fn client_message(
    id: &ClientIdentity,
    msg_type: u8,
    xid: u32,
    secs: u16,
    offer: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut p =
        header(1, xid, secs, id.broadcast, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, id.mac);
    opt(&mut p, 53, &[msg_type]);
    if id.client_id {
        let mut v = vec![1u8];
        v.extend_from_slice(&id.mac);
        opt(&mut p, 61, &v);
    }
    if let Some(m) = id.max_msg_size {
        opt(&mut p, 57, &m.to_be_bytes());
    }
    if let Some((yiaddr, server)) = offer {
        opt(&mut p, 50, &yiaddr.octets());
        opt(&mut p, 54, &server.octets());
    }
    if let Some(h) = &id.hostname {
        opt(&mut p, 12, h.as_bytes());
    }
    if let (Some(f), true) = (&id.fqdn, msg_type == REQUEST) {
        let mut v = vec![0u8, 0, 0];
        v.extend_from_slice(f.as_bytes());
        opt(&mut p, 81, &v);
    }
    if let Some(vc) = &id.vendor_class {
        opt(&mut p, 60, vc.as_bytes());
    }
    opt(&mut p, 55, &id.param_list);
    finish(p)
}

/// OFFER or ACK for `mac`.
pub fn server_message(lease: &Lease, msg_type: u8, xid: u32, mac: [u8; 6], broadcast: bool) -> Vec<u8> {
    let mut p = header(2, xid, 0, broadcast, Ipv4Addr::UNSPECIFIED, lease.yiaddr, lease.giaddr, mac);
    opt(&mut p, 53, &[msg_type]);
    opt(&mut p, 54, &lease.server_id.octets());
    opt(&mut p, 51, &lease.lease_secs.to_be_bytes());
    opt(&mut p, 58, &(lease.lease_secs / 2).to_be_bytes());
    opt(&mut p, 59, &(lease.lease_secs / 8 * 7).to_be_bytes());
    opt(&mut p, 1, &lease.subnet_mask.octets());
    opt(&mut p, 3, &lease.router.octets());
    opt(&mut p, 6, &lease.dns.octets());
    opt(&mut p, 15, lease.domain.as_bytes());
    finish(p)
}

/// RELEASE of `ciaddr` (unicast to the server that granted it, RFC 2131 §4.4.6).
pub fn release(id: &ClientIdentity, xid: u32, ciaddr: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut p = header(1, xid, 0, false, ciaddr, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, id.mac);
    opt(&mut p, 53, &[RELEASE]);
    opt(&mut p, 54, &server.octets());
    if id.client_id {
        let mut v = vec![1u8];
        v.extend_from_slice(&id.mac);
        opt(&mut p, 61, &v);
    }
    finish(p)
}
