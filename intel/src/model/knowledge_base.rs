//! The merged knowledge base and its look-ups.

use super::comms::Comm;
use super::entries::{Class, Override, Profile, Vendor};
use super::os::OsEntry;
use super::risk::RiskModel;
use super::rules::Rule;
use std::collections::{BTreeMap, HashMap};
use wardline_common::MacAddr;

/// The merged, validated knowledge base.
#[derive(Clone, Debug, Default)]
pub struct KnowledgeBase {
    pub vendors: BTreeMap<String, Vendor>,
    pub classes: BTreeMap<String, Class>,
    pub oses: BTreeMap<String, OsEntry>,
    pub profiles: BTreeMap<String, Profile>,
    /// Generic rules (not tied to one profile), by id.
    pub rules: BTreeMap<String, Rule>,
    /// Communications that apply to every device, in load order.
    pub comms: Vec<Comm>,
    pub overrides: BTreeMap<MacAddr, Override>,
    /// Impact mapping, exposure factors and weights of the risk model (risk.toml).
    pub risk: RiskModel,
    /// Files read, in order ("builtin:vendors.toml", "/etc/wardline/kb/site.toml").
    pub files: Vec<String>,
    /// Explicit OUI prefix (hex, upper case, 6/7/9 digits) → vendor id.
    oui_index: HashMap<String, String>,
}

impl KnowledgeBase {
    /// Rebuild the OUI → vendor index from `vendors`; the loader calls it once everything
    /// is merged.
    pub(crate) fn index_ouis(&mut self) {
        self.oui_index.clear();
        for v in self.vendors.values() {
            for o in &v.ouis {
                self.oui_index.insert(o.clone(), v.id.clone());
            }
        }
    }

    pub fn profile(&self, id: &str) -> Option<&Profile> {
        self.profiles.get(id)
    }
    pub fn class(&self, id: &str) -> Option<&Class> {
        self.classes.get(id)
    }
    pub fn vendor(&self, id: &str) -> Option<&Vendor> {
        self.vendors.get(id)
    }
    pub fn os(&self, id: &str) -> Option<&OsEntry> {
        self.oses.get(id)
    }
    pub fn override_for(&self, mac: &MacAddr) -> Option<&Override> {
        self.overrides.get(mac)
    }

    /// The knowledge-base vendor a MAC address belongs to: an explicit OUI entry first
    /// (longest block), then a vendor whose organisation pattern matches the IEEE name.
    pub fn vendor_for_mac(&self, mac: &MacAddr) -> Option<&Vendor> {
        if mac.is_multicast() || mac.is_local() {
            return None;
        }
        let hex: String = mac.0.iter().map(|b| format!("{b:02X}")).collect();
        for len in [9, 7, 6] {
            if let Some(v) = self.oui_index.get(&hex[..len]).and_then(|id| self.vendors.get(id)) {
                return Some(v);
            }
        }
        let org = crate::oui::lookup(mac)?;
        self.vendor_for_org(org)
    }

    /// The knowledge-base vendor for a bare 24-bit OUI (e.g. from an EUI-64 device id).
    pub fn vendor_for_oui(&self, oui: [u8; 3]) -> Option<&Vendor> {
        let hex = format!("{:02X}{:02X}{:02X}", oui[0], oui[1], oui[2]);
        if let Some(v) = self.oui_index.get(&hex).and_then(|id| self.vendors.get(id)) {
            return Some(v);
        }
        self.vendor_for_org(crate::oui::lookup_oui(oui)?)
    }

    fn vendor_for_org(&self, org: &str) -> Option<&Vendor> {
        // BTreeMap order makes the choice deterministic when two patterns match.
        self.vendors.values().find(|v| v.org_patterns.iter().any(|p| p.is_match(org)))
    }
}
