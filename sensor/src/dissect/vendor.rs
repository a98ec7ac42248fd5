//! Medical vendor protocols recognised by port AND payload shape where a shape is public,
//! by port alone where it is not (and the record says which).
//!
//! | protocol | shape | source |
//! |---|---|---|
//! | Alaris (BD/CareFusion) device discovery | none public: port only | IANA `alaris-disc` (local `/usr/share/wireshark/services`); no public description of the payload was found |
//! | Philips IntelliVue Data Export | session header (CN 0x0D, AC 0x0E, RF 0x0C, FN 0x09, DN 0x0A, AB 0x19) + LI length matching the datagram, or SPpdu 0xE100 + ROapdu type 1/2/3/5 | Philips Data Export Interface Programming Guide 4535 642 59271 (PIPG p.29, 42-45, 67), as encoded in xeonfusion/VSCaptureMP and a public scapy implementation |
//! | IEEE 11073 SDC (MDPWS, SOAP over HTTPS) | TLS/DTLS record header, or HTTP carrying SOAP | IANA `ieee11073-20701`; IEEE 11073-20702 (MDPWS binds DPWS/SOAP over HTTP(S)) |
//! | GE CARESCAPE gateway (time and discovery ports) | none public: port only | pubs.vocera.com CARESCAPE adapter 1.3.0 |
//!
//! Transports and ports are the registry's (`crate::protocols`, docs/protocols.md).
//!
//! Port-only matches are weak (ports are reused), so they are reported as such in the
//! record and the classifier should weigh them below payload evidence.

use super::*;
use crate::protocols::{Protocol, ALARIS, CARESCAPE, INTELLIVUE, SDC};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VendorProtocol {
    Alaris,
    IntellivueDataExport,
    Sdc,
    Carescape,
}

impl VendorProtocol {
    /// Stable value of [`Field::VendorProtocol`] findings.
    pub fn id(self) -> &'static str {
        match self {
            VendorProtocol::Alaris => "alaris",
            VendorProtocol::IntellivueDataExport => "philips-intellivue-data-export",
            VendorProtocol::Sdc => "ieee11073-sdc",
            VendorProtocol::Carescape => "ge-carescape",
        }
    }
    pub fn proto(self) -> Proto {
        match self {
            VendorProtocol::Alaris => Proto::Alaris,
            VendorProtocol::IntellivueDataExport => Proto::IntellivueDataExport,
            VendorProtocol::Sdc => Proto::Sdc,
            VendorProtocol::Carescape => Proto::Carescape,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// Only the port matched; no public payload description exists.
    PortOnly,
    /// Port and a documented payload shape (named) matched.
    PortAndShape(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorRecord {
    pub protocol: VendorProtocol,
    pub matched: Match,
    /// The end on the vendor port (the service); both if both ports are the vendor port.
    pub service_sides: Vec<Side>,
    /// "tcp/3613", "udp/24105", ...
    pub port_label: String,
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Udp => "udp",
        Transport::L2 { .. } => "l2",
    }
}

/// IntelliVue session header: SPDU id then an LI length (1 byte up to 254, else 0xFF + 2
/// bytes big endian) that must account for the rest of the datagram.
fn intellivue_session_header(p: &[u8]) -> bool {
    if p.len() < 2 || !matches!(p[0], 0x0D | 0x0E | 0x0C | 0x09 | 0x0A | 0x19) {
        return false;
    }
    let (len, hdr) = if p[1] == 0xFF {
        match p.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as usize, 4),
            None => return false,
        }
    } else {
        (p[1] as usize, 2)
    };
    // The association messages end with presentation trailers beyond the session LI, so
    // require only that the LI fits in the datagram.
    len > 0 && hdr + len <= p.len()
}

/// IntelliVue data export command: SPpdu session_id 0xE100, context id, ROapdus
/// {ro_type 1 ROIV, 2 RORS, 3 ROER, 5 ROLRS; length} with the length fitting.
fn intellivue_data_export(p: &[u8]) -> bool {
    p.len() >= 8
        && p[0] == 0xE1
        && p[1] == 0x00
        && matches!(u16::from_be_bytes([p[4], p[5]]), 1 | 2 | 3 | 5)
        && 8 + u16::from_be_bytes([p[6], p[7]]) as usize <= p.len()
}

fn tls_or_dtls_record(p: &[u8]) -> bool {
    p.len() >= 5
        && (20..=23).contains(&p[0])
        && ((p[1] == 3 && p[2] <= 4) || (p[1] == 0xFE && matches!(p[2], 0xFD | 0xFF)))
}

fn http_soap(p: &[u8]) -> bool {
    let head = &p[..p.len().min(2048)];
    let starts = [&b"POST "[..], b"GET ", b"HTTP/1."];
    let lower: Vec<u8> = head.iter().map(u8::to_ascii_lowercase).collect();
    starts.iter().any(|s| head.starts_with(s)) && lower.windows(4).any(|w| w == b"soap")
}

/// Which vendor protocol a payload is, how it matched and on which port: [`parse`]
/// without building the record, so `wants` (asked for many payloads) allocates nothing.
fn classify(ctx: &PacketCtx, payload: &[u8]) -> Option<(VendorProtocol, Match, u16)> {
    let on = |entry: &Protocol| {
        if entry.transports.carries(ctx.transport) {
            entry.port_used(ctx)
        } else {
            None
        }
    };
    if let Some(port) = on(&ALARIS) {
        return Some((VendorProtocol::Alaris, Match::PortOnly, port));
    }
    if let Some(port) = on(&INTELLIVUE) {
        let shape = if intellivue_session_header(payload) {
            "session-header"
        } else if intellivue_data_export(payload) {
            "sppdu-roapdu"
        } else {
            return None;
        };
        return Some((VendorProtocol::IntellivueDataExport, Match::PortAndShape(shape), port));
    }
    if let Some(port) = on(&SDC) {
        let shape = if tls_or_dtls_record(payload) {
            "tls-record"
        } else if ctx.transport == Transport::Tcp && http_soap(payload) {
            "http-soap"
        } else {
            return None;
        };
        return Some((VendorProtocol::Sdc, Match::PortAndShape(shape), port));
    }
    on(&CARESCAPE).map(|port| (VendorProtocol::Carescape, Match::PortOnly, port))
}

/// Classify a payload; `None` when neither port nor (where required) shape fits.
pub fn parse(ctx: &PacketCtx, payload: &[u8]) -> Option<VendorRecord> {
    let (protocol, matched, port) = classify(ctx, payload)?;
    let mut service_sides = Vec::with_capacity(2);
    if ctx.src_port == port {
        service_sides.push(Side::Src);
    }
    if ctx.dst_port == port {
        service_sides.push(Side::Dst);
    }
    let mut port_label = String::with_capacity(9);
    port_label.push_str(transport_name(ctx.transport));
    port_label.push('/');
    crate::digits::push_decimal(&mut port_label, port as u64);
    Some(VendorRecord { protocol, matched, service_sides, port_label })
}

/// The service end gets the vendor protocol and the port it serves on.
pub fn findings(rec: &VendorRecord, _ctx: &PacketCtx, out: &mut Vec<Finding>) {
    for &side in &rec.service_sides {
        out.push(Finding { side, field: Field::VendorProtocol, value: rec.protocol.id().to_string() });
        out.push(Finding { side, field: Field::ListeningPort, value: rec.port_label.clone() });
    }
}

/// One dissector per vendor protocol so flows get the right application label.
pub struct VendorDissector(pub VendorProtocol);

impl Dissector for VendorDissector {
    fn proto(&self) -> Proto {
        self.0.proto()
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        classify(ctx, payload).is_some_and(|(p, _, _)| p == self.0)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        match parse(ctx, payload) {
            Some(rec) if rec.protocol == self.0 => {
                findings(&rec, ctx, out);
                // SDC runs over TLS and is dispatched before the generic TLS dissector: keep the
                // handshake identity (SNI, JA3, JA4) as well; other records add nothing.
                if rec.matched == Match::PortAndShape("tls-record") && ctx.transport == Transport::Tcp {
                    let _ = super::tls::TlsDissector.dissect(ctx, payload, out);
                }
                Ok(())
            }
            _ => Err(DissectError::new(
                self.0.proto(),
                "no_match",
                format!(
                    "ports {}->{} / {} bytes do not match {}",
                    ctx.src_port,
                    ctx.dst_port,
                    payload.len(),
                    self.0.id()
                ),
            )),
        }
    }
}
