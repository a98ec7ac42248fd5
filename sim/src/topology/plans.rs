//! Address plans of the scenarios: which zones a site has, on which VLAN, and which kinds
//! of devices (profile keys) live in each, how many per unit of scale.

/// One zone: (name, 802.1Q VLAN or untagged, members); each member is (profile key, how
/// many per unit of scale, fixed count).
pub(super) type ZonePlan = (&'static str, Option<u16>, &'static [(&'static str, u32, u32)]);

pub(super) const WARD_PLAN: &[ZonePlan] = &[(
    "ward-3a",
    None,
    &[
        ("cisco_router", 0, 1),
        ("dell_dc", 0, 1),
        ("alaris_systems_manager", 0, 1),
        ("dell_pacs", 0, 1),
        ("hp_hl7_engine", 0, 1),
        ("philips_piic", 0, 1),
        ("ge_ct", 0, 1),
        ("alaris_pcu", 2, 0),
        ("philips_intellivue", 2, 0),
        ("win7_workstation", 1, 0),
        ("hp_printer", 0, 1),
    ],
)];

pub(super) const HOSPITAL_PLAN: &[ZonePlan] = &[
    (
        "datacenter",
        Some(100),
        &[
            ("dell_dc", 0, 1),
            ("alaris_systems_manager", 0, 1),
            ("dell_pacs", 0, 1),
            ("dell_mwl", 0, 1),
            ("hp_hl7_engine", 0, 1),
            ("hp_lis", 0, 1),
            ("dell_ehr", 0, 1),
            ("dell_pyxis_server", 0, 1),
            ("cisco_call_manager", 0, 1),
            ("dell_nvr", 0, 1),
            ("dell_access_server", 0, 1),
        ],
    ),
    (
        "ward",
        Some(20),
        &[
            ("alaris_pcu", 4, 0),
            ("philips_intellivue", 3, 0),
            ("icu_pca", 1, 0),
            ("mindray_telemetry", 1, 0),
            ("win7_workstation", 2, 0),
            ("hp_printer", 0, 1),
            ("vocera_badge", 2, 0),
            ("rauland_nurse_call", 0, 1),
        ],
    ),
    (
        "icu",
        Some(30),
        &[
            ("philips_piic", 0, 1),
            ("drager_ventilator", 2, 0),
            ("ge_anesthesia", 1, 0),
            ("philips_intellivue", 3, 0),
            ("alaris_pcu", 3, 0),
            ("zoll_defib", 0, 1),
        ],
    ),
    (
        "radiology",
        Some(40),
        &[
            ("ge_ct", 0, 1),
            ("siemens_mr", 0, 1),
            ("carestream_xray", 0, 1),
            ("sonosite_us", 1, 0),
            ("win10_workstation", 1, 0),
        ],
    ),
    (
        "lab",
        Some(50),
        &[
            ("sysmex_analyzer", 0, 1),
            ("roche_analyzer", 0, 1),
            ("abbott_blood_gas", 0, 1),
            ("zebra_label_printer", 0, 1),
            ("win10_workstation", 0, 1),
        ],
    ),
    ("pharmacy", Some(60), &[("bd_pyxis", 2, 0), ("win10_workstation", 0, 1), ("hp_printer", 0, 1)]),
    ("admin", Some(10), &[("win10_workstation", 3, 0), ("hp_thin_client", 2, 0), ("hp_printer", 0, 1)]),
    ("voice", Some(80), &[("yealink_phone", 4, 0)]),
    (
        "building",
        Some(90),
        &[
            ("tridium_jace", 0, 1),
            ("jci_hvac", 2, 0),
            ("stanley_badge", 3, 0),
            ("axis_camera", 3, 0),
            ("aeroscout_rtls", 2, 0),
        ],
    ),
];

/// A small clinic reached through its router: workstations and infusion pumps on one VLAN.
/// Its router serves DHCP; its other servers are at the main campus.
pub(super) const CLINIC_PLAN: &[ZonePlan] =
    &[("clinic", Some(210), &[("win10_workstation", 1, 0), ("alaris_pcu", 1, 0)])];

pub(super) const SITE_NAMES: &[&str] = &["main-campus", "east-campus", "north-clinic", "west-clinic"];

/// Roles other devices look up by name within their site.
pub(super) fn role_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "dell_dc" => "dc",
        "alaris_systems_manager" => "pump_server",
        "dell_pacs" => "pacs",
        "dell_mwl" => "mwl",
        "hp_hl7_engine" => "hl7_engine",
        "hp_lis" => "lis",
        "dell_ehr" => "ehr",
        "dell_pyxis_server" => "pyxis_server",
        "cisco_call_manager" => "call_manager",
        "dell_nvr" => "nvr",
        "dell_access_server" => "access_server",
        "philips_piic" => "central_station",
        "tridium_jace" => "bms",
        "rauland_nurse_call" => "nurse_call",
        _ => return None,
    })
}
