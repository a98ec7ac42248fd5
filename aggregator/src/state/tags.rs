//! Operators' tags on devices ("icu", "ward-3b", "loaner"), in the replicated state so every
//! node resolves `tag == "…"` group conditions the same way (issue 12). Set through
//! `PUT /api/v1/devices/{mac}/tags` (analyst) and `wardline-aggregator device tag`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use wardline_common::MacAddr;

/// Tags one device may carry.
pub const MAX_TAGS_PER_DEVICE: usize = 32;
/// Devices with tags at most; tagging one more is refused.
pub const MAX_TAGGED_DEVICES: usize = 1_000_000;
/// Longest tag.
pub const MAX_TAG_CHARS: usize = 64;

/// Why a set of tags is refused.
pub fn check_tags(tags: &[String]) -> Result<(), String> {
    if tags.len() > MAX_TAGS_PER_DEVICE {
        return Err(format!("{} tags given; a device carries at most {MAX_TAGS_PER_DEVICE}", tags.len()));
    }
    for t in tags {
        let ok = !t.is_empty()
            && t.chars().count() <= MAX_TAG_CHARS
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
        if !ok {
            return Err(format!(
                "tag {t:?} is not valid: 1 to {MAX_TAG_CHARS} characters of letters, digits and - _ . : /"
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceTags {
    by_mac: BTreeMap<MacAddr, BTreeSet<String>>,
}

impl DeviceTags {
    pub fn of(&self, mac: &MacAddr) -> Option<&BTreeSet<String>> {
        self.by_mac.get(mac)
    }

    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    /// Replace a device's tags (an empty list removes them). Tags are kept lowercase, so
    /// `ICU` and `icu` are one tag. False when the tags are invalid or the map is full.
    pub fn set(&mut self, mac: MacAddr, tags: &[String]) -> bool {
        if check_tags(tags).is_err() {
            return false;
        }
        if tags.is_empty() {
            self.by_mac.remove(&mac);
            return true;
        }
        if !self.by_mac.contains_key(&mac) && self.by_mac.len() >= MAX_TAGGED_DEVICES {
            return false;
        }
        self.by_mac.insert(mac, tags.iter().map(|t| t.to_ascii_lowercase()).collect());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_set_replaced_cleared_and_checked() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut t = DeviceTags::default();
        assert!(t.set(mac, &["ICU".into(), "ward-3a".into()]));
        assert_eq!(t.of(&mac).unwrap().iter().collect::<Vec<_>>(), ["icu", "ward-3a"]);
        assert!(t.set(mac, &["loaner".into()]));
        assert_eq!(t.of(&mac).unwrap().len(), 1);
        assert!(!t.set(mac, &["has space".into()]));
        assert!(!t.set(mac, &vec!["x".to_string(); MAX_TAGS_PER_DEVICE + 1]));
        assert!(!t.set(mac, &["".into()]));
        assert_eq!(t.of(&mac).unwrap().len(), 1, "a refused set changes nothing");
        assert!(t.set(mac, &[]));
        assert!(t.is_empty());
    }
}
