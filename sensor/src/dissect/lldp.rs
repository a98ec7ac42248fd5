//! LLDP (IEEE 802.1AB, ethertype 0x88cc): what a switch, phone or medical device says
//! about itself on every link. All findings describe the sender (Src).
//!
//! The payload is the LLDPDU after the ethertype: a list of TLVs with a 7-bit type and a
//! 9-bit length, ended by type 0.

use super::text::{be16, display};
use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const PROTO: Proto = Proto::Lldp;
pub const ETHERTYPE: u16 = 0x88cc;
/// An LLDPDU fits in one Ethernet frame; more TLVs than this is garbage.
const MAX_TLVS: usize = 512;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LldpRecord {
    pub chassis_id: Option<String>,
    pub port_id: Option<String>,
    pub ttl: Option<u16>,
    pub port_description: Option<String>,
    pub system_name: Option<String>,
    pub system_description: Option<String>,
    /// Names of the capabilities the system has, and of those enabled.
    pub capabilities: Vec<&'static str>,
    pub enabled_capabilities: Vec<&'static str>,
    pub management_addresses: Vec<String>,
    /// IEEE 802.1 Port VLAN ID TLV (OUI 00-80-c2, subtype 1).
    pub port_vlan: Option<u16>,
}

const CAP_NAMES: [&str; 11] =
    ["other", "repeater", "bridge", "wlan-ap", "router", "telephone", "docsis", "station", "c-vlan", "s-vlan", "tpmr"];

fn caps(bits: u16) -> Vec<&'static str> {
    CAP_NAMES.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, n)| *n).collect()
}

fn mac(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// Render an IANA address-family-numbered address (1 IPv4, 2 IPv6, 6 MAC).
fn address(family: u8, b: &[u8]) -> String {
    match (family, b.len()) {
        (1, 4) => Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        (2, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Ipv6Addr::from(a).to_string()
        }
        (6, 6) => mac(b),
        _ => hex::encode(b),
    }
}

/// Chassis/port id subtypes: MAC address (chassis 4, port 3), network address (chassis
/// 5, port 4), everything else is a text name.
fn id_value(subtype: u8, body: &[u8], mac_subtype: u8, net_subtype: u8) -> String {
    if subtype == mac_subtype && body.len() == 6 {
        mac(body)
    } else if subtype == net_subtype && !body.is_empty() {
        address(body[0], &body[1..])
    } else {
        display(body)
    }
}

pub fn parse(payload: &[u8]) -> Result<LldpRecord, DissectError> {
    let mut rec = LldpRecord::default();
    let mut pos = 0;
    for n in 0.. {
        if n >= MAX_TLVS {
            return Err(DissectError::new(PROTO, "too_many_tlvs", format!("more than {MAX_TLVS} TLVs")));
        }
        let Some(hdr) = be16(payload, pos) else {
            // Frames often end without an End TLV once padding is stripped.
            if rec.chassis_id.is_none() {
                return Err(DissectError::truncated(PROTO, format!("no TLV header at offset {pos}")));
            }
            break;
        };
        let ty = (hdr >> 9) as u8;
        let len = (hdr & 0x1ff) as usize;
        let body = payload.get(pos + 2..pos + 2 + len).ok_or_else(|| {
            DissectError::truncated(
                PROTO,
                format!("TLV type {ty} says {len} bytes at offset {pos}, frame ends at {}", payload.len()),
            )
        })?;
        pos += 2 + len;
        let sub = body.first().copied().unwrap_or(0);
        let rest = body.get(1..).unwrap_or(&[]);
        match ty {
            0 => break,
            1 => rec.chassis_id = Some(id_value(sub, rest, 4, 5)),
            2 => rec.port_id = Some(id_value(sub, rest, 3, 4)),
            3 => rec.ttl = be16(body, 0),
            4 => rec.port_description = Some(display(body)),
            5 => rec.system_name = Some(display(body)),
            6 => rec.system_description = Some(display(body)),
            7 => {
                let have = be16(body, 0)
                    .ok_or_else(|| DissectError::truncated(PROTO, "capabilities TLV shorter than 4 bytes"))?;
                let enabled = be16(body, 2).unwrap_or(0);
                rec.capabilities = caps(have);
                rec.enabled_capabilities = caps(enabled);
            }
            8 => {
                // addr string length (subtype + address), subtype, address, ...
                let alen = sub as usize;
                if alen >= 1 {
                    if let Some(a) = body.get(2..1 + alen) {
                        let family = body.get(1).copied().unwrap_or(0);
                        rec.management_addresses.push(address(family, a));
                    }
                }
            }
            127 if body.len() >= 6 && body[..3] == [0x00, 0x80, 0xc2] && body[3] == 1 => {
                rec.port_vlan = be16(body, 4);
            }
            _ => {}
        }
    }
    if rec.chassis_id.is_none() {
        return Err(DissectError::new(PROTO, "no_chassis_id", "LLDPDU lacks the mandatory chassis id TLV"));
    }
    Ok(rec)
}

pub fn findings(rec: &LldpRecord, out: &mut Vec<Finding>) {
    let mut put = |f: Field, v: &Option<String>| {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            out.push(Finding::src(f, v.clone()));
        }
    };
    put(Field::LldpSystemName, &rec.system_name);
    put(Field::LldpSystemDescription, &rec.system_description);
    put(Field::LldpPortId, &rec.port_id);
    if !rec.capabilities.is_empty() {
        put(Field::LldpCapabilities, &Some(rec.capabilities.join(",")));
    }
    for a in &rec.management_addresses {
        out.push(Finding::src(Field::LldpManagementAddress, a.clone()));
    }
    if let Some(v) = rec.port_vlan {
        out.push(Finding::src(Field::LldpVlan, v.to_string()));
    }
}

pub struct LldpDissector;

impl Dissector for LldpDissector {
    fn proto(&self) -> Proto {
        Proto::Lldp
    }
    fn wants(&self, ctx: &PacketCtx, _payload: &[u8]) -> bool {
        ctx.transport == (Transport::L2 { ethertype: ETHERTYPE })
    }
    fn dissect(&self, _ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        findings(&parse(payload)?, out);
        Ok(())
    }
}
