//! Revoked sensors, in the replicated state so every node refuses them (issue 13). A
//! revocation names a sensor id — every certificate of that sensor, for a stolen or retired
//! sensor — or one certificate serial of it, for a rotated or leaked certificate while the
//! sensor's new certificate keeps working. Ingest checks the list at the handshake and on
//! live connections (`ingest::BatchHandler::revoked`), bundle imports check it too.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Revocations kept at most; one more is refused (lift old ones, or revoke whole sensors
/// instead of single certificates).
pub const MAX_REVOCATIONS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub sensor_id: String,
    /// One certificate (serial number, lowercase hex); None revokes every certificate of
    /// the sensor.
    pub serial: Option<String>,
    pub reason: String,
    /// The operator who revoked it.
    pub revoked_by: String,
    /// Proposing node's clock, ms since the epoch (inside the command, so every node agrees).
    pub revoked_at_ms: u64,
}

impl Revocation {
    fn key(&self) -> (String, String) {
        key(&self.sensor_id, self.serial.as_deref())
    }
}

fn key(sensor_id: &str, serial: Option<&str>) -> (String, String) {
    (sensor_id.to_string(), serial.unwrap_or("").to_ascii_lowercase())
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Revocations {
    /// (sensor id, serial or "" for the whole sensor) → revocation.
    by_key: BTreeMap<(String, String), Revocation>,
}

impl Revocations {
    pub fn iter(&self) -> impl Iterator<Item = &Revocation> {
        self.by_key.values()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The revocation that refuses this sensor's certificate, if any: the whole sensor's
    /// first, then the certificate's own.
    pub fn check(&self, sensor_id: &str, serial: &str) -> Option<&Revocation> {
        self.by_key.get(&key(sensor_id, None)).or_else(|| self.by_key.get(&key(sensor_id, Some(serial))))
    }

    /// Add (or restate, keeping the first) a revocation; false when the list is full.
    pub fn revoke(&mut self, r: &Revocation) -> bool {
        if self.by_key.contains_key(&r.key()) {
            return true;
        }
        if self.by_key.len() >= MAX_REVOCATIONS {
            return false;
        }
        let mut r = r.clone();
        r.serial = r.serial.map(|s| s.to_ascii_lowercase());
        self.by_key.insert(r.key(), r);
        true
    }

    /// Lift a revocation; false when there was none with that sensor id and serial.
    pub fn lift(&mut self, sensor_id: &str, serial: Option<&str>) -> bool {
        self.by_key.remove(&key(sensor_id, serial)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(id: &str, serial: Option<&str>) -> Revocation {
        Revocation {
            sensor_id: id.into(),
            serial: serial.map(Into::into),
            reason: "stolen".into(),
            revoked_by: "alice".into(),
            revoked_at_ms: 1,
        }
    }

    #[test]
    fn a_sensor_revocation_covers_every_certificate_and_a_serial_only_its_own() {
        let mut r = Revocations::default();
        assert!(r.check("s1", "ab").is_none());
        assert!(r.revoke(&rev("s1", None)));
        assert!(r.check("s1", "ab").is_some() && r.check("s1", "cd").is_some());
        assert!(r.check("s2", "ab").is_none());
        assert!(r.revoke(&rev("s2", Some("AB01"))));
        assert!(r.check("s2", "ab01").is_some(), "serials compare case-insensitively");
        assert!(r.check("s2", "ab02").is_none(), "the sensor's new certificate keeps working");
        assert!(r.lift("s2", Some("ab01")));
        assert!(!r.lift("s2", Some("ab01")));
        assert!(r.check("s2", "ab01").is_none());
        assert!(!r.lift("s1", Some("ab")), "a whole-sensor revocation is lifted as a whole");
        assert!(r.lift("s1", None));
        assert!(r.is_empty());
    }

    #[test]
    fn restating_keeps_the_first_and_the_list_is_bounded() {
        let mut r = Revocations::default();
        let mut first = rev("s", None);
        first.reason = "first".into();
        r.revoke(&first);
        r.revoke(&rev("s", None));
        assert_eq!(r.check("s", "x").unwrap().reason, "first");
        for i in 1..MAX_REVOCATIONS {
            assert!(r.revoke(&rev(&format!("x{i}"), None)));
        }
        assert!(!r.revoke(&rev("one-more", None)));
        assert_eq!(r.len(), MAX_REVOCATIONS);
    }
}
