//! How devices are named on the wire: MAC addresses under their vendor's OUI, hostnames,
//! serial numbers and EUI-64 identifiers.

use crate::profiles::Profile;
use std::collections::HashMap;

/// The next MAC under `p`'s OUI: a per-OUI counter keeps addresses unique even when several
/// profiles share a vendor prefix; the salt varies the NIC-specific bytes between vendors.
pub(super) fn mac_for(p: &Profile, per_oui: &mut HashMap<[u8; 3], u32>) -> [u8; 6] {
    let n = per_oui.entry(p.oui).or_insert(0);
    *n += 1;
    let tail = *n;
    let salt = p.oui.iter().fold(0x5au8, |a, b| a.wrapping_mul(31).wrapping_add(*b));
    [p.oui[0], p.oui[1], p.oui[2], salt ^ (tail >> 16) as u8, (tail >> 8) as u8, tail as u8]
}

/// EUI-64 of a MAC (FFFE in the middle), upper-case hex, as HL7 device identifiers carry it.
pub(crate) fn eui64(mac: [u8; 6]) -> String {
    format!("{:02X}{:02X}{:02X}FFFE{:02X}{:02X}{:02X}", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
}

/// The hostname of the `idx`-th device of profile `p` (0-based), in zone `zone` of site
/// `site` (0-based).
pub(super) fn hostname_for(p: &Profile, zone: &str, idx: u32, mac: [u8; 6], site: usize) -> String {
    match p.key {
        "win7_workstation" | "win10_workstation" | "hp_thin_client" => {
            format!("{}-{}{:03}", zone.to_uppercase(), p.hostname_prefix, idx + 1)
        }
        "hp_printer" => format!("NPI{:02X}{:02X}{:02X}", mac[3], mac[4], mac[5]),
        "axis_camera" => format!("axis-{}", hex::encode(mac)),
        _ if p.hostname_prefix.ends_with('-') => {
            format!("{}{:02X}{:02X}{:02X}", p.hostname_prefix, mac[3], mac[4], mac[5])
        }
        _ => format!("{}{:02}", p.hostname_prefix, site + 1),
    }
}

/// Serial number of the `idx`-th device of profile `p` at site `site`.
pub(super) fn serial_for(p: &Profile, idx: u32, site: usize) -> String {
    format!("{}{:06}", &p.key[..3].to_uppercase(), idx * 7919 % 1_000_000 + site as u32)
}
