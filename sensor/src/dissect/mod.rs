//! Application-layer dissectors: one module per protocol, each turning payload bytes into
//! typed records and then into [`Finding`]s about the sending or receiving device.
//!
//! Contract for every dissector module `foo.rs`:
//! - `pub fn parse(payload: &[u8]) -> Result<FooRecord, DissectError>`: pure, never panics,
//!   bounded allocation, unit-tested on real captures, fuzzed (fuzz/fuzz_targets/foo.rs).
//! - `pub fn findings(rec: &FooRecord, ctx: &PacketCtx, out: &mut Vec<Finding>)`: what the
//!   record says about the devices at either end.
//! - a `Dissector` impl registered in [`registry`] so the pipeline can dispatch to it.
//!
//! The pipeline calls [`dissect`] for each payload (a UDP datagram, a reassembled TCP
//! message or a non-IP frame such as LLDP) and counts errors by dissector name.

use std::net::IpAddr;
use wardline_common::{Field, MacAddr, Proto};

/// Transport the payload arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    /// A frame with no IP layer, identified by its ethertype (or 0 for LLC/SNAP frames).
    L2 { ethertype: u16 },
}

/// Where a payload came from and went to.
#[derive(Clone, Debug)]
pub struct PacketCtx {
    pub ts_us: u64,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub vlan: Option<u16>,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub src_port: u16,
    pub dst_port: u16,
    pub transport: Transport,
}

impl PacketCtx {
    /// The context of a decoded frame's payload: its addresses, ports and transport
    /// (`L2` with the ethertype for frames that are not TCP or UDP over IP).
    pub fn of(d: &crate::decode::Decoded<'_>, ts_us: u64) -> PacketCtx {
        use crate::decode::L4;
        let ip = d.ip();
        let (src_port, dst_port) = d.ports();
        PacketCtx {
            ts_us,
            src_mac: d.src_mac,
            dst_mac: d.dst_mac,
            vlan: d.vlan,
            src_ip: ip.map(|h| h.src),
            dst_ip: ip.map(|h| h.dst),
            src_port,
            dst_port,
            transport: match d.l4 {
                L4::Tcp(_) => Transport::Tcp,
                L4::Udp { .. } => Transport::Udp,
                _ => Transport::L2 { ethertype: d.ethertype },
            },
        }
    }
}

/// Which device a finding describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The packet's source (its source MAC).
    Src,
    /// The packet's destination (its destination MAC).
    Dst,
    /// A device named inside the payload, e.g. the DHCP client hardware address of a
    /// relayed request whose source MAC is the relay's.
    Mac(MacAddr),
}

/// One identity fact about one end of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub side: Side,
    pub field: Field,
    pub value: String,
}

impl Finding {
    pub fn src(field: Field, value: impl Into<String>) -> Self {
        Finding { side: Side::Src, field, value: value.into() }
    }
    pub fn dst(field: Field, value: impl Into<String>) -> Self {
        Finding { side: Side::Dst, field, value: value.into() }
    }
    pub fn about(mac: MacAddr, field: Field, value: impl Into<String>) -> Self {
        Finding { side: Side::Mac(mac), field, value: value.into() }
    }
}

/// Why a payload could not be dissected. `kind` is a short stable label used in counters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{proto} payload malformed ({kind}): {detail}")]
pub struct DissectError {
    pub proto: Proto,
    pub kind: &'static str,
    pub detail: String,
}

impl DissectError {
    pub fn new(proto: Proto, kind: &'static str, detail: impl Into<String>) -> Self {
        DissectError { proto, kind, detail: detail.into() }
    }
    pub fn truncated(proto: Proto, detail: impl Into<String>) -> Self {
        Self::new(proto, "truncated", detail)
    }
}

/// Result of dissecting one payload.
#[derive(Debug, Default)]
pub struct Dissected {
    /// Application protocol label for the flow, if recognised.
    pub app: Option<Proto>,
    pub findings: Vec<Finding>,
}

/// A protocol dissector the pipeline can dispatch to.
pub trait Dissector: Send + Sync {
    fn proto(&self) -> Proto;
    /// Cheap test on ports and the first bytes: should this dissector try the payload?
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool;
    /// Parse and append findings. An error means the payload was this protocol but broken.
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError>;
}

pub mod dhcp;
pub mod ber;
pub mod cdp;
pub mod dns;
pub mod http;
pub mod lldp;
pub mod netbios;
pub mod snmp;
pub mod ssdp;
pub mod ssh;
pub mod text;
pub mod tls;
pub mod dicom;
pub mod ftp;
pub mod hl7;
pub mod rdp;
pub mod smb;
pub mod tcp_syn;
pub mod telnet;
pub mod vendor;
pub mod vnc;

/// Every dissector, in dispatch order (most specific first).
pub fn registry() -> Vec<Box<dyn Dissector>> {
    vec![
        Box::new(dhcp::DhcpDissector),
        // Discovery protocols: L2 by ethertype/SNAP, UDP by well-known port.
        Box::new(lldp::LldpDissector),
        Box::new(cdp::CdpDissector),
        Box::new(netbios::NetbiosDissector),
        Box::new(snmp::SnmpDissector),
        Box::new(dns::MdnsDissector),
        Box::new(dns::LlmnrDissector),
        Box::new(dns::DnsDissector),
        Box::new(ssdp::SsdpDissector),
        // Payload-shaped medical and management protocols (before port-only matches).
        Box::new(dicom::DicomTlsDissector),
        Box::new(dicom::DicomDissector),
        Box::new(hl7::Hl7Dissector),
        Box::new(smb::SmbDissector),
        Box::new(rdp::RdpDissector),
        Box::new(vnc::VncDissector),
        Box::new(vendor::VendorDissector(vendor::VendorProtocol::IntellivueDataExport)),
        Box::new(vendor::VendorDissector(vendor::VendorProtocol::Sdc)),
        // Generic TCP protocols recognised by their first bytes, on any port.
        Box::new(ssh::SshDissector),
        Box::new(tls::TlsDissector),
        Box::new(http::HttpDissector),
        // Port-based last: they accept any bytes on their port.
        Box::new(telnet::TelnetDissector),
        Box::new(ftp::FtpDissector),
        Box::new(vendor::VendorDissector(vendor::VendorProtocol::Alaris)),
        Box::new(vendor::VendorDissector(vendor::VendorProtocol::Carescape)),
    ]
}

/// Run the first dissector that wants the payload.
pub fn dissect(dissectors: &[Box<dyn Dissector>], ctx: &PacketCtx, payload: &[u8]) -> Result<Dissected, DissectError> {
    let mut out = Dissected::default();
    dissect_into(dissectors.iter().map(|d| &**d), ctx, payload, &mut out)?;
    Ok(out)
}

fn dissect_into<'a>(
    candidates: impl Iterator<Item = &'a dyn Dissector>,
    ctx: &PacketCtx,
    payload: &[u8],
    out: &mut Dissected,
) -> Result<(), DissectError> {
    for d in candidates {
        if d.wants(ctx, payload) {
            out.app = Some(d.proto());
            return d.dissect(ctx, payload, &mut out.findings);
        }
    }
    Ok(())
}

/// Which transports a registered dissector can ever want: (L2, UDP, TCP). Every `wants`
/// starts by testing the transport, so skipping the others changes no result.
fn carried_on(p: Proto) -> (bool, bool, bool) {
    match p {
        Proto::Lldp | Proto::Cdp => (true, false, false),
        Proto::Dhcp | Proto::Netbios | Proto::Snmp | Proto::Mdns | Proto::Llmnr | Proto::Ssdp => (false, true, false),
        Proto::Dns | Proto::Alaris | Proto::Sdc | Proto::IntellivueDataExport | Proto::Carescape => (false, true, true),
        Proto::Dicom | Proto::Hl7 | Proto::Smb | Proto::Rdp | Proto::Vnc | Proto::Ssh | Proto::Tls | Proto::Http => {
            (false, false, true)
        }
        Proto::Telnet | Proto::Ftp => (false, false, true),
        // Unknown to this table: try it everywhere, as the plain registry walk would.
        _ => (true, true, true),
    }
}

/// UDP ports claimed by a dissector that comes before DNS in the registry; a DNS datagram
/// whose other port is none of these can go straight to the DNS dissector.
/// Spelled out as a `matches!` in `udp_port_before_dns`; a test checks they agree.
#[cfg_attr(not(test), allow(dead_code))]
const UDP_PORTS_BEFORE_DNS: [u16; 7] = [67, 68, 137, 161, 162, 5353, 5355];

/// The registry indexed for the per-payload hot path: one candidate list per transport (in
/// registry order, so the first dissector that wants a payload is the same as in
/// [`dissect`]), and a direct route for plain DNS, the bulk of UDP payloads.
pub struct Dispatch {
    all: Vec<Box<dyn Dissector>>,
    l2: Vec<usize>,
    udp: Vec<usize>,
    tcp: Vec<usize>,
    dns: Option<usize>,
}

impl Default for Dispatch {
    fn default() -> Self {
        Dispatch::new(registry())
    }
}

impl Dispatch {
    pub fn new(all: Vec<Box<dyn Dissector>>) -> Dispatch {
        let (mut l2, mut udp, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
        let mut dns = None;
        for (i, d) in all.iter().enumerate() {
            let (on_l2, on_udp, on_tcp) = carried_on(d.proto());
            if on_l2 {
                l2.push(i);
            }
            if on_udp {
                udp.push(i);
            }
            if on_tcp {
                tcp.push(i);
            }
            if d.proto() == Proto::Dns && dns.is_none() {
                dns = Some(i);
            }
        }
        // The DNS shortcut is only exact if nothing before DNS in the UDP list could claim
        // port 53 traffic on other grounds (payload sniffing).
        let dns = dns.filter(|&di| {
            udp.iter().take_while(|&&i| i != di).all(|&i| {
                matches!(all[i].proto(), Proto::Dhcp | Proto::Netbios | Proto::Snmp | Proto::Mdns | Proto::Llmnr)
            })
        });
        Dispatch { all, l2, udp, tcp, dns }
    }

    /// Same result as [`dissect`] over the whole registry.
    pub fn dissect(&self, ctx: &PacketCtx, payload: &[u8]) -> Result<Dissected, DissectError> {
        let mut out = Dissected::default();
        let list = match ctx.transport {
            Transport::Udp => {
                if let Some(di) = self.dns {
                    let other = if ctx.src_port == 53 { ctx.dst_port } else if ctx.dst_port == 53 { ctx.src_port } else { 0 };
                    if other != 0 && payload.len() >= 12 && !udp_port_before_dns(other) {
                        let d = &self.all[di];
                        out.app = Some(d.proto());
                        d.dissect(ctx, payload, &mut out.findings)?;
                        return Ok(out);
                    }
                }
                &self.udp
            }
            Transport::Tcp => &self.tcp,
            Transport::L2 { .. } => &self.l2,
        };
        dissect_into(list.iter().map(|&i| &*self.all[i]), ctx, payload, &mut out)?;
        Ok(out)
    }
}

/// Ports of protocols whose messages span TCP segments: a SYN on one of them starts stream
/// reassembly (so out-of-order first data is still put in order).
pub const STREAM_PORTS: [u16; 11] = [104, 11112, 2762, 2575, 6661, 80, 8080, 443, 8443, 139, 445];

pub fn stream_port(src_port: u16, dst_port: u16) -> bool {
    // Port tests run per packet: `matches!` compiles to compares, `contains` to a slice call.
    // The lists equal the consts (checked by `port_sets_match_their_lists`).
    let on = |p: u16| matches!(p, 104 | 11112 | 2762 | 2575 | 6661 | 80 | 8080 | 443 | 8443 | 139 | 445);
    on(src_port) || on(dst_port)
}

fn udp_port_before_dns(p: u16) -> bool {
    matches!(p, 67 | 68 | 137 | 161 | 162 | 5353 | 5355)
}

/// TCP ports whose dissectors read every segment of a flow that is not reassembled: Telnet
/// and FTP logins come after many keystroke or command segments, DNS over TCP and the
/// port-identified vendor protocols carry identity in any message. On other unreassembled
/// TCP flows only the first payloads per direction are dissected (see the pipeline).
pub const EVERY_SEGMENT_PORTS: [u16; 8] = [21, 23, 53, 3613, 2000, 7000, 24105, 6464];

pub fn every_segment_port(src_port: u16, dst_port: u16) -> bool {
    let on = |p: u16| matches!(p, 21 | 23 | 53 | 3613 | 2000 | 7000 | 24105 | 6464);
    on(src_port) || on(dst_port)
}


/// Should this TCP payload's flow be reassembled? True when a dissector whose messages
/// can span segments claims it: DICOM, HL7 over MLLP, HTTP, TLS (also DICOM over TLS),
/// SMB. Everything else is dissected segment by segment and costs no buffering.
pub fn wants_stream(ctx: &PacketCtx, payload: &[u8]) -> bool {
    if ctx.transport != Transport::Tcp || payload.is_empty() {
        return false;
    }
    let mllp = payload[0] == 0x0b && hl7::Hl7Dissector.wants(ctx, payload);
    mllp || dicom::DicomDissector.wants(ctx, payload)
        || dicom::DicomTlsDissector.wants(ctx, payload)
        || tls::TlsDissector.wants(ctx, payload)
        || http::HttpDissector.wants(ctx, payload)
        || smb::SmbDissector.wants(ctx, payload)
}

#[cfg(test)]
mod port_set_tests {
    use super::*;

    #[test]
    fn port_sets_match_their_lists() {
        for p in 0..=u16::MAX {
            assert_eq!(stream_port(p, 1), STREAM_PORTS.contains(&p) || STREAM_PORTS.contains(&1), "{p}");
            assert_eq!(stream_port(1, p), STREAM_PORTS.contains(&p) || STREAM_PORTS.contains(&1), "{p}");
            assert_eq!(every_segment_port(p, 1), EVERY_SEGMENT_PORTS.contains(&p), "{p}");
            assert_eq!(every_segment_port(1, p), EVERY_SEGMENT_PORTS.contains(&p), "{p}");
            assert_eq!(udp_port_before_dns(p), UDP_PORTS_BEFORE_DNS.contains(&p), "{p}");
            assert_eq!(
                matches!(p, 0x8100 | 0x88a8 | 0x9100),
                crate::decode::VLAN_ETHERTYPES.contains(&p),
                "{p}"
            );
        }
    }
}
