//! Strong identifiers: evidence that names one physical device whatever interface or MAC
//! it uses (decision 0013). Records holding the same strong identifier are linked (the
//! API's `same_device_as`), never merged, and only when the link is unambiguous. Weak
//! hints (hostname, vendor, OUI, DHCP fingerprint) never link records.

use super::DeviceRecord;
use std::collections::BTreeSet;
use wardline_common::{Field, MacAddr};

/// More holders than this for one identifier means it is not unique to a device (a
/// vendor default, a cloned configuration): it links nothing. A device with more
/// interfaces than this is not expected in a clinical network.
pub const MAX_IDENTITY_GROUP: usize = 4;

/// Fields that name one device on their own.
const SINGLE_STRONG_FIELDS: [Field; 3] = [Field::Hl7SendingAppUniversalId, Field::Hl7DeviceId, Field::SnmpV3EngineId];

/// Whether evidence of `field` can change a record's strong identifiers.
pub fn is_strong_field(field: Field) -> bool {
    SINGLE_STRONG_FIELDS.contains(&field)
        || matches!(field, Field::DicomCallingAe | Field::DicomImplClassUid | Field::SerialNumber)
}

/// The strong identifiers a record holds, as (field, value):
/// - each HL7 sending-application universal id with its type (IHE PCD gateways put their
///   EUI-64 there), HL7 equipment id (unless the record reports several devices' ids: a
///   gateway relaying them) and SNMPv3 engine id, as seen;
/// - a serial number (`SerialNumber`) when the record reports exactly one;
/// - a DICOM calling AE title together with the implementation class UID, as
///   `(DicomCallingAe, "AE|UID")`, when the record has exactly one implementation UID
///   (an AE title alone is a configured name, often reused; the UID alone names software).
pub fn strong_identifiers(record: &DeviceRecord) -> BTreeSet<(Field, String)> {
    let mut ids = BTreeSet::new();
    // A record reporting several devices' equipment ids is a gateway or central station
    // relaying their observations (OBX-18 names the device that measured): they are not
    // its own.
    let equipment: BTreeSet<&str> =
        record.values(Field::Hl7DeviceId).into_iter().map(|v| v.split('^').next().unwrap_or(v)).collect();
    let relays = equipment.len() > 1;
    for field in SINGLE_STRONG_FIELDS {
        if field == Field::Hl7DeviceId && relays {
            continue;
        }
        for value in record.values(field) {
            // A universal id without its type (`Sysmex`) is free text, often the vendor's
            // name shared by every unit: only `id^type` (`0009FBFFFE6A1C00^EUI-64`) or a
            // bare EUI-64 names one.
            let typed = field != Field::Hl7SendingAppUniversalId
                || value.split_once('^').is_some_and(|(id, kind)| !id.is_empty() && !kind.is_empty())
                || (value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()));
            if typed && is_meaningful(value) {
                ids.insert((field, value.to_string()));
            }
        }
    }
    // A serial number names one device only when the record reports exactly one: a chassis
    // lists its modules' and power supplies' serials too, and a module moves between
    // devices, so a record with several has none as identifiers.
    if let [serial] = record.values(Field::SerialNumber).as_slice() {
        if is_meaningful(serial) {
            ids.insert((Field::SerialNumber, serial.to_string()));
        }
    }
    let uids = record.values(Field::DicomImplClassUid);
    if let [uid] = uids.as_slice() {
        for ae in record.values(Field::DicomCallingAe) {
            if is_meaningful(ae) {
                ids.insert((Field::DicomCallingAe, format!("{ae}|{uid}")));
            }
        }
    }
    ids
}

/// Empty, all-zero or all-`0`/`f` values are placeholders, not identities.
fn is_meaningful(value: &str) -> bool {
    let core: String = value.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    !core.is_empty() && !core.chars().all(|c| c == '0') && !core.chars().all(|c| c.eq_ignore_ascii_case(&'f'))
}

/// One link from a record to another record of the same device, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdentityLink {
    pub mac: MacAddr,
    pub field: Field,
    pub value: String,
}

/// The records linked to `mac` through unambiguous strong identifiers, and the
/// identifiers it holds that are ambiguous (held by more than `MAX_IDENTITY_GROUP`).
pub fn links_of(state: &super::ClusterState, record: &DeviceRecord) -> (Vec<IdentityLink>, Vec<(Field, String)>) {
    let mut links = BTreeSet::new();
    let mut ambiguous = Vec::new();
    for id in strong_identifiers(record) {
        let Some(holders) = state.holders_of(&id) else { continue };
        if holders.len() > MAX_IDENTITY_GROUP {
            ambiguous.push(id);
            continue;
        }
        for other in holders.iter().filter(|m| **m != record.mac) {
            links.insert(IdentityLink { mac: *other, field: id.0, value: id.1.clone() });
        }
    }
    (links.into_iter().collect(), ambiguous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_not_identities() {
        assert!(!is_meaningful(""));
        assert!(!is_meaningful("00:00:00:00:00:00:00:00"));
        assert!(!is_meaningful("FFFFFFFFFFFFFFFF"));
        assert!(is_meaningful("0012345678ABCDEF"));
    }

    fn record_with(evidence: &[(Field, &str)]) -> DeviceRecord {
        let mut record = DeviceRecord::new(MacAddr([0x00, 0x09, 0x5c, 0, 0, 1]));
        for (field, value) in evidence {
            let seen = super::super::EvidenceRecord {
                proto: wardline_common::Proto::Hl7,
                first_ts_us: 0,
                last_ts_us: 0,
                count: 1,
            };
            record.evidence.insert((*field, value.to_string()), seen);
        }
        record
    }

    #[test]
    fn an_untyped_universal_id_is_free_text() {
        let vendor_name = record_with(&[(Field::Hl7SendingAppUniversalId, "Sysmex")]);
        assert!(strong_identifiers(&vendor_name).is_empty());
        let eui = record_with(&[(Field::Hl7SendingAppUniversalId, "0009FBFFFE780001^EUI-64")]);
        assert_eq!(strong_identifiers(&eui).len(), 1);
        let bare_eui = record_with(&[(Field::Hl7SendingAppUniversalId, "0009FBFFFE780001")]);
        assert_eq!(strong_identifiers(&bare_eui).len(), 1);
    }

    #[test]
    fn one_serial_number_identifies_several_do_not() {
        let one = record_with(&[(Field::SerialNumber, "FOC1234X0AB")]);
        assert_eq!(
            strong_identifiers(&one).into_iter().collect::<Vec<_>>(),
            [(Field::SerialNumber, "FOC1234X0AB".to_string())]
        );
        // A chassis with a power supply: module serials move between devices.
        let chassis = record_with(&[(Field::SerialNumber, "FOC1234X0AB"), (Field::SerialNumber, "PSU-99812")]);
        assert!(strong_identifiers(&chassis).is_empty());
        assert!(strong_identifiers(&record_with(&[(Field::SerialNumber, "000000")])).is_empty());
    }

    #[test]
    fn a_relay_of_several_devices_equipment_ids_is_identified_by_none() {
        // A monitor: its EUI-64 from MSH-3 and from its own OBX-18 name one device.
        let monitor = record_with(&[
            (Field::Hl7DeviceId, "0009FBFFFE780001"),
            (Field::Hl7DeviceId, "0009FBFFFE780001^MX450^EUI-64"),
        ]);
        assert_eq!(strong_identifiers(&monitor).len(), 2);
        // A central station forwarding two monitors' observations.
        let station = record_with(&[
            (Field::Hl7DeviceId, "0009FBFFFE780001^MX450^EUI-64"),
            (Field::Hl7DeviceId, "0009FBFFFE780002^MX450^EUI-64"),
        ]);
        assert!(strong_identifiers(&station).is_empty());
    }
}
