//! Device profiles: what each kind of device is (ground truth) and how it identifies
//! itself on the wire (OUI, DHCP fingerprint, TCP/IP stack). Vendors are the IEEE registry
//! names of the OUIs, checked against /usr/share/ieee-data/oui.txt by a test.
//!
//! DHCP option 60 strings marked "synthetic" are plausible but not taken from a vendor
//! document; "MSFT 5.0", "udhcp", "yealink" and SonoSite's "MicroMaxx" are documented values.

use crate::wire::Stack;

#[derive(Clone, Copy, Debug)]
pub struct DhcpStyle {
    pub vendor_class: Option<&'static str>,
    pub params: &'static [u8],
    pub client_id: bool,
    pub fqdn: bool,
    pub max_size: Option<u16>,
    pub broadcast: bool,
}

#[derive(Debug)]
pub struct Profile {
    /// Stable key, also written to the ground truth.
    pub key: &'static str,
    pub class: &'static str,
    pub category: &'static str,
    pub criticality: &'static str,
    pub oui: [u8; 3],
    /// IEEE registry organisation name for `oui`, verbatim.
    pub vendor: &'static str,
    pub manufacturer: &'static str,
    pub model: &'static str,
    pub os: &'static str,
    /// Hostname prefix; the device's MAC tail or a counter completes it.
    pub hostname_prefix: &'static str,
    pub dhcp: Option<DhcpStyle>,
    pub stack: Stack,
}

const WIN7_PARAMS: &[u8] = &[1, 15, 3, 6, 44, 46, 47, 31, 33, 121, 249, 43, 252];
const WIN10_PARAMS: &[u8] = &[1, 3, 6, 15, 31, 33, 43, 44, 46, 47, 119, 121, 249, 252];
const WINDOWS_DHCP: DhcpStyle = DhcpStyle {
    vendor_class: Some("MSFT 5.0"),
    params: WIN7_PARAMS,
    client_id: true,
    fqdn: true,
    max_size: None,
    broadcast: false,
};
const WIN10_DHCP: DhcpStyle = DhcpStyle {
    vendor_class: Some("MSFT 5.0"),
    params: WIN10_PARAMS,
    client_id: true,
    fqdn: true,
    max_size: None,
    broadcast: false,
};
const fn embedded(vc: &'static str, params: &'static [u8]) -> Option<DhcpStyle> {
    Some(DhcpStyle {
        vendor_class: Some(vc),
        params,
        client_id: true,
        fqdn: false,
        max_size: Some(576),
        broadcast: true,
    })
}
const EMB_PARAMS: &[u8] = &[1, 3, 6, 15, 28, 51, 58, 59];

pub const MEDICAL: &str = "medical";
pub const IT: &str = "it";
pub const IOT: &str = "iot";
pub const OT: &str = "ot";

pub const LIFE: &str = "life_sustaining";
pub const PATIENT: &str = "patient_critical";
pub const SUPPORT: &str = "clinical_support";
pub const NONCLIN: &str = "non_clinical";

macro_rules! profile {
    ($key:expr, $class:expr, $cat:expr, $crit:expr, [$a:expr, $b:expr, $c:expr], $vendor:expr, $manu:expr, $model:expr, $os:expr, $host:expr, $dhcp:expr, $stack:expr) => {
        Profile {
            key: $key,
            class: $class,
            category: $cat,
            criticality: $crit,
            oui: [$a, $b, $c],
            vendor: $vendor,
            manufacturer: $manu,
            model: $model,
            os: $os,
            hostname_prefix: $host,
            dhcp: $dhcp,
            stack: $stack,
        }
    };
}

pub static PROFILES: &[Profile] = &[
    // --- infrastructure and IT ---
    profile!(
        "cisco_router",
        "network_gear",
        IT,
        NONCLIN,
        [0x00, 0x1a, 0xa1],
        "Cisco Systems, Inc",
        "Cisco",
        "Catalyst 9300",
        "IOS-XE 17.6",
        "core-sw",
        None,
        Stack::LINUX
    ),
    profile!(
        "dell_dc",
        "server",
        IT,
        SUPPORT,
        [0x14, 0x18, 0x77],
        "Dell Inc.",
        "Dell",
        "PowerEdge R640",
        "Windows Server 2008 R2",
        "DC",
        None,
        Stack::WINDOWS
    ),
    profile!(
        "alaris_systems_manager",
        "pump_server",
        MEDICAL,
        PATIENT,
        [0xd4, 0xbe, 0xd9],
        "Dell Inc.",
        "BD/CareFusion",
        "Alaris Systems Manager",
        "Windows Server 2008 R2",
        "ALARIS-SM",
        None,
        Stack::WINDOWS
    ),
    profile!(
        "dell_pacs",
        "pacs",
        MEDICAL,
        SUPPORT,
        [0xf8, 0xb1, 0x56],
        "Dell Inc.",
        "Dell",
        "PACS archive (DCMTK storescp)",
        "Linux",
        "pacs",
        None,
        Stack::LINUX
    ),
    profile!(
        "hp_hl7_engine",
        "hl7_interface_engine",
        IT,
        SUPPORT,
        [0x70, 0x10, 0x6f],
        "Hewlett Packard Enterprise",
        "HPE",
        "Interface engine on ProLiant DL380",
        "Linux",
        "hl7-engine",
        None,
        Stack::LINUX
    ),
    profile!(
        "win7_workstation",
        "workstation",
        IT,
        NONCLIN,
        [0x18, 0x66, 0xda],
        "Dell Inc.",
        "Dell",
        "OptiPlex 7010",
        "Windows 7",
        "WS",
        Some(WINDOWS_DHCP),
        Stack::WINDOWS
    ),
    profile!(
        "hp_printer",
        "printer",
        IT,
        NONCLIN,
        [0x3c, 0xd9, 0x2b],
        "Hewlett Packard",
        "HP",
        "LaserJet M402dn",
        "HP FutureSmart",
        "NPI",
        Some(DhcpStyle {
            vendor_class: Some("Hewlett-Packard JetDirect"),
            params: &[1, 3, 44, 6, 7, 12, 15, 22, 54, 58, 59, 69, 18, 144],
            client_id: false,
            fqdn: false,
            max_size: None,
            broadcast: false
        }),
        Stack::EMBEDDED
    ),
    // --- ward / ICU medical ---
    profile!(
        "alaris_pcu",
        "infusion_pump",
        MEDICAL,
        LIFE,
        [0x00, 0xd0, 0x75],
        "ALARIS MEDICAL SYSTEMS, INC.",
        "BD/CareFusion",
        "Alaris PC unit 8015",
        "embedded RTOS",
        "ALARIS-8015-",
        embedded("CareFusion Alaris PCU 8015", EMB_PARAMS), /* synthetic */
        Stack::EMBEDDED
    ),
    profile!(
        "philips_intellivue",
        "patient_monitor",
        MEDICAL,
        LIFE,
        [0x00, 0x09, 0xfb],
        "Philips Patient Monitoring",
        "Philips",
        "IntelliVue MX450",
        "embedded (IntelliVue)",
        "MX450-",
        embedded("Philips IntelliVue MX450", &[1, 3, 6, 12, 15, 28, 42, 51, 58, 59]), /* synthetic */
        Stack::VXWORKS
    ),
    profile!(
        "philips_piic",
        "central_station",
        MEDICAL,
        PATIENT,
        [0x00, 0x09, 0x5c],
        "Philips Medical Systems - Cardiac and Monitoring Systems (CM",
        "Philips",
        "IntelliVue Information Center iX",
        "Windows Server 2008 R2",
        "PIIC-",
        None,
        Stack::WINDOWS
    ),
    profile!(
        "ge_ct",
        "ct",
        MEDICAL,
        SUPPORT,
        [0x44, 0x4b, 0x5d],
        "GE Healthcare",
        "GE",
        "Revolution CT",
        "Linux (GE CT console)",
        "CT-REV",
        None,
        Stack::LINUX
    ),
    profile!(
        "icu_pca",
        "pca_pump",
        MEDICAL,
        LIFE,
        [0x00, 0x03, 0xb1],
        "ICU Medical, Inc.",
        "ICU Medical (Hospira)",
        "LifeCare PCA",
        "embedded Linux",
        "PCA-",
        embedded("Hospira LifeCare PCA", EMB_PARAMS), /* synthetic */
        Stack::EMBEDDED
    ),
    profile!(
        "drager_ventilator",
        "ventilator",
        MEDICAL,
        LIFE,
        [0x00, 0x30, 0xe6],
        "Draeger Medical Systems, Inc.",
        "Draeger",
        "Evita V500",
        "embedded (Draeger)",
        "EVITA-",
        None,
        Stack::VXWORKS
    ),
    profile!(
        "ge_anesthesia",
        "anesthesia_machine",
        MEDICAL,
        LIFE,
        [0x00, 0x40, 0x97],
        "DATEX DIVISION OF",
        "GE Healthcare (Datex-Ohmeda)",
        "Aisys CS2",
        "embedded (GE)",
        "AISYS-",
        None,
        Stack::VXWORKS
    ),
    profile!(
        "zoll_defib",
        "defibrillator",
        MEDICAL,
        LIFE,
        [0x00, 0x22, 0x52],
        "ZOLL Lifecor Corporation",
        "ZOLL",
        "R Series",
        "embedded (ZOLL)",
        "ZOLL-R-",
        embedded("ZOLL R Series", EMB_PARAMS), /* synthetic */
        Stack::EMBEDDED
    ),
    profile!(
        "mindray_telemetry",
        "telemetry",
        MEDICAL,
        PATIENT,
        [0x00, 0x0f, 0x14],
        "Mindray Co., Ltd.",
        "Mindray",
        "TMS-6016 telemetry receiver",
        "embedded Linux",
        "TMS-",
        embedded("Mindray TMS-6016", EMB_PARAMS), /* synthetic */
        Stack::LINUX
    ),
    // --- radiology ---
    profile!(
        "siemens_mr",
        "mr",
        MEDICAL,
        SUPPORT,
        [0x88, 0x4b, 0x39],
        "Siemens AG, Healthcare Sector",
        "Siemens Healthineers",
        "MAGNETOM Aera",
        "Windows 7 (syngo MR)",
        "MR-AERA",
        None,
        Stack::WINDOWS
    ),
    profile!(
        "carestream_xray",
        "xray",
        MEDICAL,
        SUPPORT,
        [0x00, 0x1d, 0x4a],
        "Carestream Health, Inc.",
        "Carestream",
        "DRX-Evolution",
        "Windows 7 Embedded",
        "DRX-",
        None,
        Stack::WINDOWS
    ),
    profile!(
        "sonosite_us",
        "ultrasound",
        MEDICAL,
        SUPPORT,
        [0x00, 0x08, 0xfb],
        "SonoSite, Inc.",
        "FUJIFILM SonoSite",
        "MicroMaxx",
        "embedded (SonoSite)",
        "SONOSITE-",
        embedded("SonoSite MicroMaxx", EMB_PARAMS),
        Stack::EMBEDDED
    ),
    profile!(
        "dell_mwl",
        "modality_worklist",
        MEDICAL,
        SUPPORT,
        [0xb0, 0x83, 0xfe],
        "Dell Inc.",
        "Dell",
        "Modality worklist broker",
        "Windows Server 2012 R2",
        "MWL",
        None,
        Stack::WINDOWS
    ),
    // --- lab and pharmacy ---
    profile!(
        "sysmex_analyzer",
        "lab_analyzer",
        MEDICAL,
        SUPPORT,
        [0x00, 0x06, 0x6b],
        "Sysmex Corporation",
        "Sysmex",
        "XN-1000 hematology analyzer",
        "Windows 7 Embedded",
        "XN1000-",
        None,
        Stack::WINDOWS
    ),
    profile!(
        "roche_analyzer",
        "lab_analyzer",
        MEDICAL,
        SUPPORT,
        [0x00, 0x60, 0x19],
        "Roche Diagnostics",
        "Roche",
        "cobas 6000 chemistry analyzer",
        "Windows 7 Embedded",
        "COBAS-",
        None,
        Stack::WINDOWS
    ),
    profile!(
        "abbott_blood_gas",
        "blood_gas",
        MEDICAL,
        PATIENT,
        [0xc0, 0xa2, 0x6d],
        "Abbott Point of Care",
        "Abbott",
        "i-STAT 1 downloader",
        "embedded",
        "ISTAT-",
        None,
        Stack::EMBEDDED
    ),
    profile!(
        "hp_lis",
        "lis",
        IT,
        SUPPORT,
        [0x00, 0x1e, 0x0b],
        "Hewlett Packard",
        "HP",
        "Laboratory information system on ProLiant",
        "Linux",
        "lis",
        None,
        Stack::LINUX
    ),
    profile!(
        "bd_pyxis",
        "medication_cabinet",
        MEDICAL,
        PATIENT,
        [0x9c, 0xc8, 0xae],
        "Becton, Dickinson  and Company",
        "BD",
        "Pyxis MedStation ES",
        "Windows 10 IoT Enterprise",
        "PYXIS-",
        Some(WIN10_DHCP),
        Stack::WINDOWS
    ),
    profile!(
        "dell_pyxis_server",
        "server",
        IT,
        SUPPORT,
        [0x00, 0x0d, 0x56],
        "Dell Inc.",
        "Dell",
        "Pyxis ES server",
        "Windows Server 2016",
        "PYXIS-SRV",
        None,
        Stack::WINDOWS
    ),
    // --- admin / IT ---
    profile!(
        "win10_workstation",
        "workstation",
        IT,
        NONCLIN,
        [0x18, 0x66, 0xda],
        "Dell Inc.",
        "Dell",
        "OptiPlex 7090",
        "Windows 10",
        "PC",
        Some(WIN10_DHCP),
        Stack::WINDOWS
    ),
    profile!(
        "hp_thin_client",
        "thin_client",
        IT,
        NONCLIN,
        [0x14, 0xcb, 0x19],
        "HP Inc.",
        "HP",
        "t630 thin client",
        "Windows Embedded Standard 7",
        "TC",
        Some(WINDOWS_DHCP),
        Stack::WINDOWS
    ),
    profile!(
        "zebra_label_printer",
        "printer",
        IT,
        NONCLIN,
        [0x00, 0x07, 0x4d],
        "Zebra Technologies Corp.",
        "Zebra",
        "ZT410 label printer",
        "Link-OS",
        "ZBR",
        embedded("Zebra ZT410", &[1, 3, 6, 12, 15, 28, 42]), /* synthetic */
        Stack::EMBEDDED
    ),
    profile!(
        "yealink_phone",
        "voip_phone",
        IT,
        NONCLIN,
        [0x80, 0x5e, 0xc0],
        "YEALINK(XIAMEN) NETWORK TECHNOLOGY CO.,LTD.",
        "Yealink",
        "SIP-T46S",
        "Linux (Yealink)",
        "SIP-T46S-",
        Some(DhcpStyle {
            vendor_class: Some("yealink"),
            params: &[1, 2, 3, 6, 12, 15, 28, 42, 43, 66, 120, 125],
            client_id: false,
            fqdn: false,
            max_size: Some(1500),
            broadcast: false
        }),
        Stack::LINUX
    ),
    profile!(
        "cisco_call_manager",
        "server",
        IT,
        SUPPORT,
        [0x00, 0x0f, 0x8f],
        "Cisco Systems, Inc",
        "Cisco",
        "Unified Communications Manager",
        "Linux (CUCM)",
        "cucm",
        None,
        Stack::LINUX
    ),
    profile!(
        "vocera_badge",
        "mobile",
        IOT,
        SUPPORT,
        [0x00, 0x09, 0xef],
        "Vocera Communications",
        "Vocera",
        "B3000n badge",
        "embedded",
        "VOCERA-",
        embedded("Vocera B3000n", &[1, 3, 6, 15, 28]), /* synthetic */
        Stack::EMBEDDED
    ),
    profile!(
        "dell_ehr",
        "server",
        IT,
        SUPPORT,
        [0x00, 0x06, 0x5b],
        "Dell Inc.",
        "Dell",
        "EHR application server",
        "Windows Server 2016",
        "EHR-APP",
        None,
        Stack::WINDOWS
    ),
    // --- building systems and security ---
    profile!(
        "jci_hvac",
        "bms_hvac",
        OT,
        NONCLIN,
        [0x00, 0x10, 0x8d],
        "Johnson Controls, Inc.",
        "Johnson Controls",
        "Metasys FEC2611",
        "embedded (Metasys)",
        "FEC-",
        None,
        Stack::EMBEDDED
    ),
    profile!(
        "tridium_jace",
        "bms_hvac",
        OT,
        NONCLIN,
        [0x00, 0x01, 0xf0],
        "Tridium, Inc.",
        "Tridium",
        "JACE 8000 (Niagara 4)",
        "QNX",
        "JACE-",
        None,
        Stack::EMBEDDED
    ),
    profile!(
        "stanley_badge",
        "badge_reader",
        IOT,
        NONCLIN,
        [0x0c, 0x6a, 0xe6],
        "Stanley Security Solutions",
        "Stanley",
        "door controller",
        "embedded",
        "DOOR-",
        None,
        Stack::EMBEDDED
    ),
    profile!(
        "dell_access_server",
        "server",
        IT,
        NONCLIN,
        [0x00, 0x08, 0x74],
        "Dell Inc.",
        "Dell",
        "Access control server",
        "Windows Server 2012 R2",
        "ACS",
        None,
        Stack::WINDOWS
    ),
    profile!(
        "axis_camera",
        "camera",
        IOT,
        NONCLIN,
        [0x00, 0x40, 0x8c],
        "AXIS COMMUNICATIONS AB",
        "Axis",
        "P3245-LV",
        "AXIS OS (Linux)",
        "axis-",
        Some(DhcpStyle {
            vendor_class: Some("udhcp 1.24.2"),
            params: &[1, 3, 6, 12, 15, 28, 42],
            client_id: true,
            fqdn: false,
            max_size: Some(576),
            broadcast: false
        }),
        Stack::LINUX
    ),
    profile!(
        "dell_nvr",
        "server",
        IT,
        NONCLIN,
        [0x00, 0x0b, 0xdb],
        "Dell Inc.",
        "Dell",
        "Video management server",
        "Windows Server 2016",
        "NVR",
        None,
        Stack::WINDOWS
    ),
    profile!(
        "rauland_nurse_call",
        "nurse_call",
        MEDICAL,
        PATIENT,
        [0x00, 0x90, 0x5e],
        "RAULAND-BORG CORPORATION",
        "Rauland",
        "Responder 5 master station",
        "embedded Linux",
        "R5-",
        None,
        Stack::LINUX
    ),
    profile!(
        "aeroscout_rtls",
        "rtls",
        IOT,
        SUPPORT,
        [0x00, 0x0c, 0xcc],
        "Aeroscout Ltd.",
        "AeroScout (Stanley Healthcare)",
        "LR-3000 location receiver",
        "embedded",
        "AERO-",
        embedded("AeroScout LR-3000", &[1, 3, 6, 15]), /* synthetic */
        Stack::EMBEDDED
    ),
];

pub fn profile(key: &str) -> &'static Profile {
    PROFILES.iter().find(|p| p.key == key).unwrap_or_else(|| panic!("generator bug: no profile {key}"))
}
