//! Evidence: one identifying fact a sensor saw about a device, with where it came from.
//!
//! Every dissector turns bytes into `(Field, value)` pairs; the classifier in the
//! knowledge base matches rules against them. Keeping the vocabulary in one enum lets the
//! aggregator re-classify merged inventories with exactly the rules the sensor used.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol that produced a piece of evidence or labels a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Ethernet,
    Arp,
    Ip,
    Dhcp,
    Dhcpv6,
    Dns,
    Mdns,
    Llmnr,
    Ssdp,
    Netbios,
    Lldp,
    Cdp,
    Snmp,
    Http,
    Tls,
    Ssh,
    Smb,
    Telnet,
    Ftp,
    Rdp,
    Vnc,
    Dicom,
    Hl7,
    Alaris,
    IntellivueDataExport,
    Sdc,
    Carescape,
    TcpSyn,
    Unknown,
}

impl Proto {
    /// Every protocol, in declaration order.
    pub const ALL: [Proto; 29] = [
        Proto::Ethernet,
        Proto::Arp,
        Proto::Ip,
        Proto::Dhcp,
        Proto::Dhcpv6,
        Proto::Dns,
        Proto::Mdns,
        Proto::Llmnr,
        Proto::Ssdp,
        Proto::Netbios,
        Proto::Lldp,
        Proto::Cdp,
        Proto::Snmp,
        Proto::Http,
        Proto::Tls,
        Proto::Ssh,
        Proto::Smb,
        Proto::Telnet,
        Proto::Ftp,
        Proto::Rdp,
        Proto::Vnc,
        Proto::Dicom,
        Proto::Hl7,
        Proto::Alaris,
        Proto::IntellivueDataExport,
        Proto::Sdc,
        Proto::Carescape,
        Proto::TcpSyn,
        Proto::Unknown,
    ];

    /// The protocol whose label (`as_str`) this is.
    pub fn from_label(label: &str) -> Option<Proto> {
        // Lengths differ for most labels, so this is mostly length compares.
        Proto::ALL.into_iter().find(|p| p.as_str() == label)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Ethernet => "ethernet",
            Proto::Arp => "arp",
            Proto::Ip => "ip",
            Proto::Dhcp => "dhcp",
            Proto::Dhcpv6 => "dhcpv6",
            Proto::Dns => "dns",
            Proto::Mdns => "mdns",
            Proto::Llmnr => "llmnr",
            Proto::Ssdp => "ssdp",
            Proto::Netbios => "netbios",
            Proto::Lldp => "lldp",
            Proto::Cdp => "cdp",
            Proto::Snmp => "snmp",
            Proto::Http => "http",
            Proto::Tls => "tls",
            Proto::Ssh => "ssh",
            Proto::Smb => "smb",
            Proto::Telnet => "telnet",
            Proto::Ftp => "ftp",
            Proto::Rdp => "rdp",
            Proto::Vnc => "vnc",
            Proto::Dicom => "dicom",
            Proto::Hl7 => "hl7",
            Proto::Alaris => "alaris",
            Proto::IntellivueDataExport => "intellivue",
            Proto::Sdc => "sdc",
            Proto::Carescape => "carescape",
            Proto::TcpSyn => "tcp_syn",
            Proto::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which identity attribute a piece of evidence speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// An IPv4/IPv6 address the device used as a source.
    IpAddress,
    Hostname,
    /// DHCP option 60 (vendor class identifier) or DHCPv6 vendor class.
    DhcpVendorClass,
    /// DHCP option 55, the parameter request list in order, comma separated decimals.
    DhcpParamList,
    /// DHCP option 61 client identifier, hex.
    DhcpClientId,
    /// DHCP option 57 max message size.
    DhcpMaxMsgSize,
    /// DHCP option 50 requested address.
    DhcpRequestedIp,
    /// DHCP option 81 client FQDN.
    DhcpFqdn,
    /// DHCP option 82 relay agent information (circuit/remote id), hex.
    DhcpRelayInfo,
    DnsQuery,
    MdnsName,
    MdnsService,
    MdnsTxt,
    SsdpServer,
    SsdpUsn,
    SsdpLocation,
    NetbiosName,
    LldpSystemName,
    LldpSystemDescription,
    LldpPortId,
    LldpCapabilities,
    LldpManagementAddress,
    LldpVlan,
    CdpDeviceId,
    CdpPlatform,
    CdpSoftwareVersion,
    CdpPortId,
    CdpCapabilities,
    CdpManagementAddress,
    CdpNativeVlan,
    SnmpCommunityInUse,
    SnmpSysDescr,
    SnmpSysObjectId,
    SnmpV3EngineId,
    SnmpV3User,
    HttpUserAgent,
    HttpServer,
    HttpHost,
    HttpBasicAuth,
    TlsSni,
    TlsVersion,
    TlsAlpn,
    Ja3,
    Ja4,
    TlsServerVersion,
    TlsCertSubject,
    TlsCertIssuer,
    SshBanner,
    SmbDialect,
    Smb1InUse,
    SmbNativeOs,
    SmbNativeLanman,
    TelnetBanner,
    FtpBanner,
    CleartextLogin,
    RdpInUse,
    VncInUse,
    DicomCallingAe,
    DicomCalledAe,
    DicomAppContext,
    DicomAbstractSyntax,
    DicomImplClassUid,
    DicomImplVersion,
    DicomTls,
    Hl7SendingApp,
    Hl7SendingFacility,
    Hl7ReceivingApp,
    Hl7ReceivingFacility,
    Hl7MessageType,
    Hl7Version,
    Hl7DeviceId,
    /// Count of PHI-bearing HL7 segments (PID, NK1, ...) seen; the content is never kept.
    Hl7PhiSegments,
    VendorProtocol,
    TcpSynSignature,
    OsHint,
    /// A port this device accepted connections on ("tcp/3613").
    ListeningPort,
    /// A service port this device opened connections to as a client ("tcp/104").
    ConnectsTo,
    // Appended for issue 9 (identity fields still missed): new variants go last so the
    // numbers of the ones above, used by compact wire encodings, never change.
    /// SNMP sysName.0 (1.3.6.1.2.1.1.5.0) from an agent's response, report or trap.
    SnmpSysName,
    /// SNMP sysLocation.0 (1.3.6.1.2.1.1.6.0): where the agent's operator says it is.
    SnmpSysLocation,
    /// SNMP sysContact.0 (1.3.6.1.2.1.1.4.0).
    SnmpSysContact,
    /// HL7 MSH-3 components 2 and 3 (universal id ^ universal id type, e.g.
    /// "0009FBFFFE6A1C00^EUI-64"); just the id when the type is absent.
    Hl7SendingAppUniversalId,
    /// HL7 MSH-5 components 2 and 3, as [`Field::Hl7SendingAppUniversalId`].
    Hl7ReceivingAppUniversalId,
    /// The whole HL7 MSH-9: message code ^ trigger event ^ message structure ("ACK^A04^ACK").
    Hl7MessageTypeFull,
    /// An HL7 equipment id (OBX-18, PRT-10, PRT-16) the sender reported that names neither
    /// itself (MSH-3's universal id) nor a device by MAC (a MAC-derived EUI-64): a device
    /// it relays observations for. Never the sender's own identity (decision 0013).
    Hl7RelayedDeviceId,
    /// A hardware serial number the device reports about itself: SNMP entPhysicalSerialNum
    /// (1.3.6.1.2.1.47.1.1.1.1.11.<entPhysicalIndex>, ENTITY-MIB) in an agent's response;
    /// one value per physical entity (chassis, modules, power supplies) that has one.
    SerialNumber,
}

impl Field {
    pub fn as_str(&self) -> String {
        // serde's snake_case name is the stable, documented spelling.
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// One observed fact about a device.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Evidence {
    pub field: Field,
    pub value: String,
    pub proto: Proto,
    /// Capture time of the packet that showed it, microseconds since the Unix epoch.
    pub ts_us: u64,
}

impl Evidence {
    pub fn new(field: Field, value: impl Into<String>, proto: Proto, ts_us: u64) -> Self {
        Evidence { field, value: value.into(), proto, ts_us }
    }
}
