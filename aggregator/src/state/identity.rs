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
    SINGLE_STRONG_FIELDS.contains(&field) || matches!(field, Field::DicomCallingAe | Field::DicomImplClassUid)
}

/// The strong identifiers a record holds, as (field, value):
/// - each HL7 sending-application universal id (IHE PCD gateways put their EUI-64 there),
///   HL7 equipment id and SNMPv3 engine id, as seen;
/// - a DICOM calling AE title together with the implementation class UID, as
///   `(DicomCallingAe, "AE|UID")`, when the record has exactly one implementation UID
///   (an AE title alone is a configured name, often reused; the UID alone names software).
pub fn strong_identifiers(record: &DeviceRecord) -> BTreeSet<(Field, String)> {
    let mut ids = BTreeSet::new();
    for field in SINGLE_STRONG_FIELDS {
        for value in record.values(field) {
            if is_meaningful(value) {
                ids.insert((field, value.to_string()));
            }
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
}
