//! The protocol registry: the one place that knows which protocols the sensor recognises,
//! on which transports and ports, how their TCP flows are handled and which dissector
//! reads them. Dispatch ([`crate::dissect::Dispatch`]), TCP reassembly, the per-segment
//! rule of the pipeline, flow labelling by port ([`guess_app`]) and docs/protocols.md all
//! read [`PROTOCOLS`]; no other module keeps a port list (a test checks).
//!
//! To add a protocol: write its dissector module under `dissect/`, add a `pub const` entry
//! below and list it in [`PROTOCOLS`] at its dispatch position (more specific first), have
//! the dissector's `wants` ask its entry about ports ([`Protocol::claims`]), then run
//! `WARDLINE_BLESS=1 cargo test -p wardline-sensor --test dissectors registry` to
//! regenerate the table in docs/protocols.md.
//!
//! Per-packet questions (is this a stream port? an every-segment port?) are answered from
//! bitsets computed at compile time from the registry: one load, no hashing.

use crate::dissect::{
    cdp, dhcp, dicom, dns, ftp, hl7, http, lldp, netbios, rdp, smb, snmp, ssdp, ssh, telnet, tls, vendor, vnc,
    Dissector, PacketCtx, Transport,
};
use wardline_common::Proto;

/// The transports a protocol is carried on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transports {
    /// Frames with no IP layer (identified by ethertype or LLC/SNAP).
    pub l2: bool,
    pub udp: bool,
    pub tcp: bool,
}

impl Transports {
    pub const L2: Transports = Transports { l2: true, udp: false, tcp: false };
    pub const UDP: Transports = Transports { l2: false, udp: true, tcp: false };
    pub const TCP: Transports = Transports { l2: false, udp: false, tcp: true };
    pub const TCP_UDP: Transports = Transports { l2: false, udp: true, tcp: true };

    pub fn carries(self, t: Transport) -> bool {
        match t {
            Transport::Tcp => self.tcp,
            Transport::Udp => self.udp,
            Transport::L2 { .. } => self.l2,
        }
    }

    /// The transport of an IP protocol number, if it is one of those a registry entry can name.
    fn carries_ip_proto(self, ip_proto: u8) -> bool {
        match ip_proto {
            6 => self.tcp,
            17 => self.udp,
            _ => false,
        }
    }

    fn label(self) -> &'static str {
        match (self.l2, self.udp, self.tcp) {
            (true, _, _) => "L2",
            (false, true, true) => "TCP, UDP",
            (false, true, false) => "UDP",
            (false, false, true) => "TCP",
            (false, false, false) => "none",
        }
    }
}

/// An inclusive range of ports; most entries are single ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn one(p: u16) -> PortRange {
        PortRange { first: p, last: p }
    }
    pub const fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }
    pub fn contains(self, p: u16) -> bool {
        self.first <= p && p <= self.last
    }
}

/// What a dissector needs to claim a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recognition {
    /// Any payload on a registered port (no public payload description, or none needed).
    Port,
    /// A registered port and a payload shape.
    PortAndPayload,
    /// A payload shape on any port; the registered ports only label flows and start
    /// reassembly (some dissectors accept a looser shape on them).
    Payload,
    /// A non-IP frame, by ethertype or LLC/SNAP header.
    Frame,
    /// No dissector: the ports only label flows.
    LabelOnly,
}

/// How TCP flows on the entry's ports are dissected (UDP datagrams and L2 frames are
/// always dissected one by one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dissection {
    /// Reassembled from the SYN (and when the first payload looks like the protocol), then
    /// framed into whole messages: the protocol's messages span segments.
    Stream,
    /// Every segment is dissected, none reassembled: identity can come in any message
    /// (Telnet and FTP logins after many keystrokes, DNS, port-identified vendor protocols).
    EverySegment,
    /// Only the first payloads per direction are dissected; later segments are counted.
    FirstPayloads,
}

/// One protocol the sensor knows.
pub struct Protocol {
    /// Human name, for docs.
    pub name: &'static str,
    /// The label a flow on one of [`ports`](Self::ports) gets when no dissector recognised
    /// its payload (a dissector labels with its own `proto()`, which differs only for DICOM
    /// over TLS: an undissected flow on 2762 is just TLS).
    pub app: Proto,
    pub transports: Transports,
    pub ports: &'static [PortRange],
    pub recognition: Recognition,
    pub dissection: Dissection,
    pub dissector: Option<&'static dyn Dissector>,
    /// Source file of the dissector, relative to sensor/src (docs).
    pub module: &'static str,
}

impl Protocol {
    pub fn has_port(&self, p: u16) -> bool {
        self.ports.iter().any(|r| r.contains(p))
    }

    /// Is either end of the payload on one of the entry's ports?
    pub fn claims(&self, ctx: &PacketCtx) -> bool {
        self.has_port(ctx.src_port) || self.has_port(ctx.dst_port)
    }

    /// The registered port the payload uses, taking the entry's ports in order (within a
    /// range the source end first): the service port when both ends are registered.
    pub fn port_used(&self, ctx: &PacketCtx) -> Option<u16> {
        self.ports.iter().find_map(|r| [ctx.src_port, ctx.dst_port].into_iter().find(|&p| r.contains(p)))
    }
}

const fn ports<const N: usize>(list: [u16; N]) -> [PortRange; N] {
    let mut out = [PortRange::one(0); N];
    let mut i = 0;
    while i < N {
        out[i] = PortRange::one(list[i]);
        i += 1;
    }
    out
}

pub const DHCP: Protocol = Protocol {
    name: "DHCP",
    app: Proto::Dhcp,
    transports: Transports::UDP,
    ports: &ports([67, 68]),
    recognition: Recognition::Port,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&dhcp::DhcpDissector),
    module: "dissect/dhcp.rs",
};
pub const LLDP: Protocol = Protocol {
    name: "LLDP",
    app: Proto::Lldp,
    transports: Transports::L2,
    ports: &[],
    recognition: Recognition::Frame,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&lldp::LldpDissector),
    module: "dissect/lldp.rs",
};
pub const CDP: Protocol = Protocol {
    name: "CDP",
    app: Proto::Cdp,
    transports: Transports::L2,
    ports: &[],
    recognition: Recognition::Frame,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&cdp::CdpDissector),
    module: "dissect/cdp.rs",
};
pub const NETBIOS_NAME: Protocol = Protocol {
    name: "NetBIOS name service",
    app: Proto::Netbios,
    transports: Transports::UDP,
    ports: &ports([137]),
    recognition: Recognition::Port,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&netbios::NetbiosDissector),
    module: "dissect/netbios.rs",
};
pub const SNMP: Protocol = Protocol {
    name: "SNMP",
    app: Proto::Snmp,
    transports: Transports::UDP,
    ports: &ports([161, 162]),
    recognition: Recognition::PortAndPayload,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&snmp::SnmpDissector),
    module: "dissect/snmp.rs",
};
pub const MDNS: Protocol = Protocol {
    name: "mDNS",
    app: Proto::Mdns,
    transports: Transports::UDP,
    ports: &ports([5353]),
    recognition: Recognition::Port,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&dns::MdnsDissector),
    module: "dissect/dns.rs",
};
pub const LLMNR: Protocol = Protocol {
    name: "LLMNR",
    app: Proto::Llmnr,
    transports: Transports::UDP,
    ports: &ports([5355]),
    recognition: Recognition::Port,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&dns::LlmnrDissector),
    module: "dissect/dns.rs",
};
pub const DNS: Protocol = Protocol {
    name: "DNS",
    app: Proto::Dns,
    transports: Transports::TCP_UDP,
    ports: &ports([53]),
    recognition: Recognition::Port,
    dissection: Dissection::EverySegment,
    dissector: Some(&dns::DnsDissector),
    module: "dissect/dns.rs",
};
pub const SSDP: Protocol = Protocol {
    name: "SSDP",
    app: Proto::Ssdp,
    transports: Transports::UDP,
    ports: &ports([1900]),
    recognition: Recognition::Payload,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&ssdp::SsdpDissector),
    module: "dissect/ssdp.rs",
};
/// IANA `dicom-tls`.
pub const DICOM_TLS: Protocol = Protocol {
    name: "DICOM over TLS",
    app: Proto::Tls,
    transports: Transports::TCP,
    ports: &ports([2762]),
    recognition: Recognition::PortAndPayload,
    dissection: Dissection::Stream,
    dissector: Some(&dicom::DicomTlsDissector),
    module: "dissect/dicom.rs",
};
/// IANA `acr-nema` 104, `dicom` 11112, `dicom-iscl` 2761, and 4242, the usual PACS
/// (Orthanc) default. Off these ports only association requests/accepts are taken.
pub const DICOM: Protocol = Protocol {
    name: "DICOM upper layer",
    app: Proto::Dicom,
    transports: Transports::TCP,
    ports: &ports([104, 11112, 2761, 4242]),
    recognition: Recognition::Payload,
    dissection: Dissection::Stream,
    dissector: Some(&dicom::DicomDissector),
    module: "dissect/dicom.rs",
};
/// IANA `hl7` 2575 and the common 6661; MLLP also runs on many site-chosen ports, which the
/// payload shape finds.
pub const HL7: Protocol = Protocol {
    name: "HL7 v2 (MLLP)",
    app: Proto::Hl7,
    transports: Transports::TCP,
    ports: &ports([2575, 6661]),
    recognition: Recognition::Payload,
    dissection: Dissection::Stream,
    dissector: Some(&hl7::Hl7Dissector),
    module: "dissect/hl7.rs",
};
pub const SMB: Protocol = Protocol {
    name: "SMB (NetBIOS session / direct TCP)",
    app: Proto::Smb,
    transports: Transports::TCP,
    ports: &ports([445, 139]),
    recognition: Recognition::Payload,
    dissection: Dissection::Stream,
    dissector: Some(&smb::SmbDissector),
    module: "dissect/smb.rs",
};
pub const RDP: Protocol = Protocol {
    name: "RDP",
    app: Proto::Rdp,
    transports: Transports::TCP,
    ports: &ports([3389]),
    recognition: Recognition::Payload,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&rdp::RdpDissector),
    module: "dissect/rdp.rs",
};
/// The first VNC display ports.
pub const VNC: Protocol = Protocol {
    name: "VNC (RFB)",
    app: Proto::Vnc,
    transports: Transports::TCP,
    ports: &[PortRange::range(5900, 5903)],
    recognition: Recognition::Payload,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&vnc::VncDissector),
    module: "dissect/vnc.rs",
};
pub const INTELLIVUE: Protocol = Protocol {
    name: "Philips IntelliVue Data Export",
    app: Proto::IntellivueDataExport,
    transports: Transports::UDP,
    ports: &ports([24105]),
    recognition: Recognition::PortAndPayload,
    dissection: Dissection::EverySegment,
    dissector: Some(&vendor::VendorDissector(vendor::VendorProtocol::IntellivueDataExport)),
    module: "dissect/vendor.rs",
};
pub const SDC: Protocol = Protocol {
    name: "IEEE 11073 SDC",
    app: Proto::Sdc,
    transports: Transports::TCP_UDP,
    ports: &ports([6464]),
    recognition: Recognition::PortAndPayload,
    dissection: Dissection::EverySegment,
    dissector: Some(&vendor::VendorDissector(vendor::VendorProtocol::Sdc)),
    module: "dissect/vendor.rs",
};
pub const SSH: Protocol = Protocol {
    name: "SSH",
    app: Proto::Ssh,
    transports: Transports::TCP,
    ports: &ports([22]),
    recognition: Recognition::Payload,
    dissection: Dissection::FirstPayloads,
    dissector: Some(&ssh::SshDissector),
    module: "dissect/ssh.rs",
};
pub const TLS: Protocol = Protocol {
    name: "TLS",
    app: Proto::Tls,
    transports: Transports::TCP,
    ports: &ports([443, 8443]),
    recognition: Recognition::Payload,
    dissection: Dissection::Stream,
    dissector: Some(&tls::TlsDissector),
    module: "dissect/tls.rs",
};
pub const HTTP: Protocol = Protocol {
    name: "HTTP/1.x",
    app: Proto::Http,
    transports: Transports::TCP,
    ports: &ports([80, 8080]),
    recognition: Recognition::Payload,
    dissection: Dissection::Stream,
    dissector: Some(&http::HttpDissector),
    module: "dissect/http.rs",
};
pub const TELNET: Protocol = Protocol {
    name: "Telnet",
    app: Proto::Telnet,
    transports: Transports::TCP,
    ports: &ports([23]),
    recognition: Recognition::Port,
    dissection: Dissection::EverySegment,
    dissector: Some(&telnet::TelnetDissector),
    module: "dissect/telnet.rs",
};
pub const FTP: Protocol = Protocol {
    name: "FTP control",
    app: Proto::Ftp,
    transports: Transports::TCP,
    ports: &ports([21]),
    recognition: Recognition::Port,
    dissection: Dissection::EverySegment,
    dissector: Some(&ftp::FtpDissector),
    module: "dissect/ftp.rs",
};
pub const ALARIS: Protocol = Protocol {
    name: "BD Alaris device discovery",
    app: Proto::Alaris,
    transports: Transports::TCP_UDP,
    ports: &ports([3613]),
    recognition: Recognition::Port,
    dissection: Dissection::EverySegment,
    dissector: Some(&vendor::VendorDissector(vendor::VendorProtocol::Alaris)),
    module: "dissect/vendor.rs",
};
pub const CARESCAPE: Protocol = Protocol {
    name: "GE CARESCAPE gateway",
    app: Proto::Carescape,
    transports: Transports::UDP,
    ports: &ports([2000, 7000]),
    recognition: Recognition::Port,
    dissection: Dissection::EverySegment,
    dissector: Some(&vendor::VendorDissector(vendor::VendorProtocol::Carescape)),
    module: "dissect/vendor.rs",
};
pub const NETBIOS_DATAGRAM: Protocol = Protocol {
    name: "NetBIOS datagram service",
    app: Proto::Netbios,
    transports: Transports::UDP,
    ports: &ports([138]),
    recognition: Recognition::LabelOnly,
    dissection: Dissection::FirstPayloads,
    dissector: None,
    module: "",
};
pub const DHCPV6: Protocol = Protocol {
    name: "DHCPv6",
    app: Proto::Dhcpv6,
    transports: Transports::UDP,
    ports: &ports([546, 547]),
    recognition: Recognition::LabelOnly,
    dissection: Dissection::FirstPayloads,
    dissector: None,
    module: "",
};

/// Every protocol, in dispatch order: the first dissector whose `wants` accepts a payload
/// dissects it, so payload-shaped protocols come before those that accept any bytes on
/// their port.
pub const PROTOCOLS: &[Protocol] = &[
    DHCP,
    // Discovery protocols: L2 by ethertype/SNAP, UDP by well-known port.
    LLDP,
    CDP,
    NETBIOS_NAME,
    SNMP,
    MDNS,
    LLMNR,
    DNS,
    SSDP,
    // Payload-shaped medical and management protocols (before port-only matches).
    DICOM_TLS,
    DICOM,
    HL7,
    SMB,
    RDP,
    VNC,
    INTELLIVUE,
    SDC,
    // Generic TCP protocols recognised by their first bytes, on any port.
    SSH,
    TLS,
    HTTP,
    // Port-based last: they accept any bytes on their port.
    TELNET,
    FTP,
    ALARIS,
    CARESCAPE,
    // No dissector: ports that only label flows.
    NETBIOS_DATAGRAM,
    DHCPV6,
];

/// Every dissector, in dispatch order.
pub fn dissectors() -> impl Iterator<Item = &'static dyn Dissector> {
    PROTOCOLS.iter().filter_map(|p| p.dissector)
}

/// A set of ports as a bitmap: membership is one load and a shift.
pub struct PortSet([u64; 1024]);

impl PortSet {
    #[inline]
    pub fn contains(&self, p: u16) -> bool {
        self.0[(p >> 6) as usize] >> (p & 63) & 1 == 1
    }

    /// Is either port in the set?
    #[inline]
    pub fn either(&self, a: u16, b: u16) -> bool {
        self.contains(a) || self.contains(b)
    }

    /// The ports of the entries `select` picks, computed at compile time.
    const fn of(select: Select) -> PortSet {
        let mut bits = [0u64; 1024];
        let mut i = 0;
        while i < PROTOCOLS.len() {
            let e = &PROTOCOLS[i];
            if matches!(select, Select::BeforeDns) && matches!(e.app, Proto::Dns) {
                break;
            }
            if select.picks(e) {
                let mut r = 0;
                while r < e.ports.len() {
                    let (first, last) = (e.ports[r].first as u32, e.ports[r].last as u32);
                    let mut p = first;
                    while p <= last {
                        bits[(p >> 6) as usize] |= 1 << (p & 63);
                        p += 1;
                    }
                    r += 1;
                }
            }
            i += 1;
        }
        PortSet(bits)
    }
}

#[derive(Clone, Copy)]
enum Select {
    Stream,
    EverySegment,
    /// UDP ports of dissectors dispatched before DNS.
    BeforeDns,
    /// Every registered port.
    Any,
}

impl Select {
    const fn picks(self, e: &Protocol) -> bool {
        match self {
            Select::Stream => matches!(e.dissection, Dissection::Stream),
            Select::EverySegment => matches!(e.dissection, Dissection::EverySegment),
            Select::BeforeDns => e.transports.udp && e.dissector.is_some(),
            Select::Any => true,
        }
    }
}

/// Ports of protocols whose messages span TCP segments: a SYN on one of them starts stream
/// reassembly (so out-of-order first data is still put in order).
pub static STREAM_PORTS: PortSet = PortSet::of(Select::Stream);

/// TCP ports on which every segment of an unreassembled flow is dissected; on other
/// unreassembled TCP flows only the first payloads per direction are (see the pipeline).
pub static EVERY_SEGMENT_PORTS: PortSet = PortSet::of(Select::EverySegment);

/// UDP ports claimed by a dissector dispatched before DNS: a datagram on port 53 whose
/// other port is none of these can go straight to the DNS dissector.
pub static UDP_PORTS_BEFORE_DNS: PortSet = PortSet::of(Select::BeforeDns);

/// Every port some entry registers: most flow ports are ephemeral and skip the lookup.
static REGISTERED_PORTS: PortSet = PortSet::of(Select::Any);

/// Application label from registered ports when no dissector recognised the payload.
pub fn guess_app(ip_proto: u8, port_a: u16, port_b: u16) -> Option<Proto> {
    let by_port = |p: u16| -> Option<Proto> {
        if !REGISTERED_PORTS.contains(p) {
            return None;
        }
        PROTOCOLS.iter().find(|e| e.transports.carries_ip_proto(ip_proto) && e.has_port(p)).map(|e| e.app)
    };
    // The lower port is usually the service; try it first.
    let (first, second) = if port_a <= port_b { (port_a, port_b) } else { (port_b, port_a) };
    by_port(first).or_else(|| by_port(second))
}

/// The registry as the Markdown table in docs/protocols.md (a test keeps them equal).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| protocol | label | transport | ports | recognised by | TCP flows | dissector |\n|---|---|---|---|---|---|---|\n",
    );
    for e in PROTOCOLS {
        let ports = if e.ports.is_empty() {
            "—".to_string()
        } else {
            let list: Vec<String> = e
                .ports
                .iter()
                .map(|r| if r.first == r.last { r.first.to_string() } else { format!("{}–{}", r.first, r.last) })
                .collect();
            list.join(", ")
        };
        let recognition = match e.recognition {
            Recognition::Port => "port",
            Recognition::PortAndPayload => "port and payload",
            Recognition::Payload => "payload",
            Recognition::Frame => "frame header",
            Recognition::LabelOnly => "port label only",
        };
        let tcp = match (e.transports.tcp || e.dissection == Dissection::EverySegment, e.dissection) {
            (false, _) => "—",
            (true, Dissection::Stream) => "reassembled",
            (true, Dissection::EverySegment) => "every segment",
            (true, Dissection::FirstPayloads) => "first payloads",
        };
        let dissector = if e.module.is_empty() { "—".to_string() } else { format!("`sensor/src/{}`", e.module) };
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} | {} |\n",
            e.name,
            e.app.as_str(),
            e.transports.label(),
            ports,
            recognition,
            tcp,
            dissector
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets_are_the_registry_ports() {
        let dns = PROTOCOLS.iter().position(|e| e.app == Proto::Dns).unwrap();
        for p in 0..=u16::MAX {
            let any = |f: &dyn Fn(&Protocol) -> bool| PROTOCOLS.iter().any(|e| f(e) && e.has_port(p));
            assert_eq!(STREAM_PORTS.contains(p), any(&|e| e.dissection == Dissection::Stream), "{p}");
            assert_eq!(EVERY_SEGMENT_PORTS.contains(p), any(&|e| e.dissection == Dissection::EverySegment), "{p}");
            let before_dns =
                PROTOCOLS[..dns].iter().any(|e| e.transports.udp && e.dissector.is_some() && e.has_port(p));
            assert_eq!(UDP_PORTS_BEFORE_DNS.contains(p), before_dns, "{p}");
            assert_eq!(REGISTERED_PORTS.contains(p), any(&|_| true), "{p}");
        }
        assert!(STREAM_PORTS.either(50000, 4242) && !STREAM_PORTS.either(50000, 3613));
    }
}
