//! Cisco Discovery Protocol: sent by Cisco switches, routers, phones and APs to
//! 01:00:0c:cc:cc:cc inside LLC/SNAP (OUI 00000c, protocol id 0x2000). All findings
//! describe the sender (Src).
//!
//! [`parse`] accepts the frame payload either starting with the LLC/SNAP header
//! (AA AA 03 00 00 0C 20 00) or already past it. Other SNAP protocol ids on the same
//! multicast address (DTP 0x2004, VTP 0x2003, PVST) are rejected as "not_cdp".

use super::text::{be16, be32, display};
use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const PROTO: Proto = Proto::Cdp;
pub const MULTICAST: MacAddr = MacAddr([0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc]);
const SNAP_CDP: [u8; 8] = [0xaa, 0xaa, 0x03, 0x00, 0x00, 0x0c, 0x20, 0x00];
const MAX_TLVS: usize = 512;
const MAX_ADDRESSES: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CdpRecord {
    pub version: u8,
    pub ttl: u8,
    pub device_id: Option<String>,
    pub addresses: Vec<String>,
    pub port_id: Option<String>,
    pub capabilities: Vec<&'static str>,
    pub software_version: Option<String>,
    pub platform: Option<String>,
    pub native_vlan: Option<u16>,
    pub management_addresses: Vec<String>,
}

const CAP_NAMES: [&str; 10] = [
    "router",
    "transparent-bridge",
    "source-route-bridge",
    "switch",
    "host",
    "igmp",
    "repeater",
    "phone",
    "remote",
    "cvta",
];

fn err(kind: &'static str, detail: impl Into<String>) -> DissectError {
    DissectError::new(PROTO, kind, detail)
}

/// Is this frame payload a CDP PDU (by SNAP header), so the pipeline can dispatch it?
pub fn is_cdp_snap(payload: &[u8]) -> bool {
    payload.starts_with(&SNAP_CDP)
}

/// Address list: u32 count, then (proto type, proto len, proto, u16 addr len, addr).
fn addresses(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let count = be32(body, 0).unwrap_or(0) as usize;
    let mut pos = 4;
    for _ in 0..count.min(MAX_ADDRESSES) {
        let Some(&plen) = body.get(pos + 1) else { break };
        let proto = body.get(pos + 2..pos + 2 + plen as usize).unwrap_or(&[]);
        let apos = pos + 2 + plen as usize;
        let Some(alen) = be16(body, apos) else { break };
        let Some(addr) = body.get(apos + 2..apos + 2 + alen as usize) else { break };
        let text = match (proto, addr.len()) {
            ([0xcc], 4) => Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string(),
            // 802.2 SNAP with ethertype 0x86dd: IPv6.
            ([0xaa, 0xaa, 0x03, 0, 0, 0, 0x86, 0xdd], 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(addr);
                Ipv6Addr::from(a).to_string()
            }
            _ => hex::encode(addr),
        };
        out.push(text);
        pos = apos + 2 + alen as usize;
    }
    out
}

pub fn parse(payload: &[u8]) -> Result<CdpRecord, DissectError> {
    let pdu = if payload.starts_with(&[0xaa, 0xaa, 0x03]) {
        if !is_cdp_snap(payload) {
            return Err(err(
                "not_cdp",
                format!("SNAP header {} is not CDP (00000c/2000)", hex::encode(payload.get(..8).unwrap_or(payload))),
            ));
        }
        &payload[8..]
    } else {
        payload
    };
    if pdu.len() < 4 {
        return Err(DissectError::truncated(PROTO, format!("header needs 4 bytes, got {}", pdu.len())));
    }
    let mut rec = CdpRecord { version: pdu[0], ttl: pdu[1], ..Default::default() };
    if !(1..=2).contains(&rec.version) {
        return Err(err("bad_version", format!("CDP version {} (expected 1 or 2)", rec.version)));
    }
    let mut pos = 4;
    let mut n = 0;
    while pos < pdu.len() {
        n += 1;
        if n > MAX_TLVS {
            return Err(err("too_many_tlvs", format!("more than {MAX_TLVS} TLVs")));
        }
        let (Some(ty), Some(len)) = (be16(pdu, pos), be16(pdu, pos + 2)) else {
            return Err(DissectError::truncated(PROTO, format!("TLV header at offset {pos} cut short")));
        };
        let len = len as usize;
        if len < 4 {
            return Err(err("bad_length", format!("TLV type 0x{ty:04x} at offset {pos} has length {len} < 4")));
        }
        let body = pdu.get(pos + 4..pos + len).ok_or_else(|| {
            DissectError::truncated(
                PROTO,
                format!("TLV type 0x{ty:04x} says {len} bytes at offset {pos}, PDU is {}", pdu.len()),
            )
        })?;
        pos += len;
        match ty {
            0x01 => rec.device_id = Some(display(body)),
            0x02 => rec.addresses = addresses(body),
            0x03 => rec.port_id = Some(display(body)),
            0x04 => {
                let bits = be32(body, 0).unwrap_or(0);
                rec.capabilities =
                    CAP_NAMES.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, n)| *n).collect();
            }
            0x05 => rec.software_version = Some(display(body)),
            0x06 => rec.platform = Some(display(body)),
            0x0a => rec.native_vlan = be16(body, 0),
            0x16 => rec.management_addresses = addresses(body),
            _ => {}
        }
    }
    Ok(rec)
}

pub fn findings(rec: &CdpRecord, out: &mut Vec<Finding>) {
    let mut put = |f: Field, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push(Finding::src(f, v));
        }
    };
    put(Field::CdpDeviceId, rec.device_id.clone());
    put(Field::CdpPlatform, rec.platform.clone());
    put(Field::CdpSoftwareVersion, rec.software_version.clone());
    put(Field::CdpPortId, rec.port_id.clone());
    put(Field::CdpCapabilities, Some(rec.capabilities.join(",")));
    put(Field::CdpNativeVlan, rec.native_vlan.map(|v| v.to_string()));
    let mut mgmt: Vec<&String> = rec.management_addresses.iter().chain(rec.addresses.iter()).collect();
    mgmt.sort();
    mgmt.dedup();
    for a in mgmt {
        out.push(Finding::src(Field::CdpManagementAddress, a.clone()));
    }
}

pub struct CdpDissector;

impl Dissector for CdpDissector {
    fn proto(&self) -> Proto {
        Proto::Cdp
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        matches!(ctx.transport, Transport::L2 { .. })
            && (is_cdp_snap(payload) || ctx.dst_mac == MULTICAST && !payload.starts_with(&[0xaa, 0xaa]))
    }
    fn dissect(&self, _ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        findings(&parse(payload)?, out);
        Ok(())
    }
}
