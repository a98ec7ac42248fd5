//! Application-layer dissectors: one module per protocol, each turning payload bytes into
//! typed records and then into [`Finding`]s about the sending or receiving device.
//!
//! Contract for every dissector module `foo.rs`:
//! - `pub fn parse(payload: &[u8]) -> Result<FooRecord, DissectError>`: pure, never panics,
//!   bounded allocation, unit-tested on real captures, fuzzed (fuzz/fuzz_targets/foo.rs).
//! - `pub fn findings(rec: &FooRecord, ctx: &PacketCtx, out: &mut Vec<Finding>)`: what the
//!   record says about the devices at either end.
//! - a `Dissector` impl with an entry in [`crate::protocols::PROTOCOLS`] (ports, transport,
//!   label, TCP handling) so the pipeline can dispatch to it; port tests in `wants` ask the
//!   entry ([`crate::protocols::Protocol::claims`]) rather than naming ports.
//!
//! The pipeline calls [`dissect`] for each payload (a UDP datagram, a reassembled TCP
//! message or a non-IP frame such as LLDP) and counts errors by dissector name.

use crate::protocols::{Dissection, Recognition, PROTOCOLS};
use std::net::IpAddr;
use wardline_common::{Field, MacAddr, Proto};

/// Transport the payload arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    /// A frame with no IP layer, identified by its ethertype (or 0 for LLC/SNAP frames).
    L2 {
        ethertype: u16,
    },
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
    /// Should a TCP flow whose payload this is be reassembled from here on? Asked only of
    /// the dissectors of stream protocols; by default whenever the dissector wants it.
    fn starts_stream(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        self.wants(ctx, payload)
    }
    /// Parse and append findings. An error means the payload was this protocol but broken.
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError>;
}

pub mod ber;
pub mod cdp;
pub mod dhcp;
pub mod dicom;
pub mod dns;
pub mod ftp;
pub mod hl7;
pub mod http;
pub mod lldp;
pub mod ndp;
pub mod netbios;
pub mod rdp;
pub mod smb;
pub mod snmp;
pub mod ssdp;
pub mod ssh;
pub mod tcp_syn;
pub mod telnet;
pub mod text;
pub mod tls;
pub mod vendor;
pub mod vnc;

/// Every dissector, in dispatch order (most specific first): the dissectors of
/// [`crate::protocols::PROTOCOLS`].
pub fn registry() -> Vec<&'static dyn Dissector> {
    crate::protocols::dissectors().collect()
}

/// Run the first dissector that wants the payload.
pub fn dissect(
    dissectors: &[&'static dyn Dissector],
    ctx: &PacketCtx,
    payload: &[u8],
) -> Result<Dissected, DissectError> {
    let mut out = Dissected::default();
    dissect_into(dissectors.iter().copied(), ctx, payload, &mut out)?;
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

/// The registry indexed for the per-payload hot path: one candidate list per transport (in
/// registry order, so the first dissector that wants a payload is the same as in
/// [`dissect`]), and a direct route for plain DNS, the bulk of UDP payloads.
pub struct Dispatch {
    l2: Vec<&'static dyn Dissector>,
    udp: Vec<&'static dyn Dissector>,
    tcp: Vec<&'static dyn Dissector>,
    dns: Option<&'static dyn Dissector>,
    /// Dissectors of protocols whose TCP flows are reassembled ([`Dissection::Stream`]).
    stream: Vec<&'static dyn Dissector>,
}

impl Default for Dispatch {
    fn default() -> Self {
        Dispatch::new()
    }
}

impl Dispatch {
    /// Every `wants` starts by testing the transport, so leaving a dissector out of the
    /// lists of transports its registry entry does not carry changes no result.
    pub fn new() -> Dispatch {
        let (mut l2, mut udp, mut tcp, mut stream) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut dns = None;
        // The DNS shortcut is only exact if every UDP dissector before DNS needs one of its
        // own ports (so cannot claim port 53 traffic by payload sniffing).
        let mut dns_first_on_its_port = true;
        for entry in PROTOCOLS {
            let Some(d) = entry.dissector else { continue };
            if entry.transports.l2 {
                l2.push(d);
            }
            if entry.transports.udp {
                if d.proto() == Proto::Dns && dns.is_none() && dns_first_on_its_port {
                    dns = Some(d);
                }
                dns_first_on_its_port &= matches!(entry.recognition, Recognition::Port | Recognition::PortAndPayload);
                udp.push(d);
            }
            if entry.transports.tcp {
                tcp.push(d);
            }
            if entry.dissection == Dissection::Stream {
                stream.push(d);
            }
        }
        Dispatch { l2, udp, tcp, dns, stream }
    }

    /// Should this TCP payload's flow be reassembled? True when the dissector of a
    /// [`Dissection::Stream`] protocol would take it as the start of a stream.
    pub fn starts_stream(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Tcp
            && !payload.is_empty()
            && self.stream.iter().any(|d| d.starts_stream(ctx, payload))
    }

    /// Same result as [`dissect`] over the whole registry.
    pub fn dissect(&self, ctx: &PacketCtx, payload: &[u8]) -> Result<Dissected, DissectError> {
        let mut out = Dissected::default();
        let list = match ctx.transport {
            Transport::Udp => {
                if let Some(d) = self.dns {
                    let before_dns = &crate::protocols::UDP_PORTS_BEFORE_DNS;
                    if !before_dns.either(ctx.src_port, ctx.dst_port) && d.wants(ctx, payload) {
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
        dissect_into(list.iter().copied(), ctx, payload, &mut out)?;
        Ok(out)
    }
}
