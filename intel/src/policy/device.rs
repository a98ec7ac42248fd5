//! The attributes of a device that group membership and policy evaluation look at.
//!
//! The caller assembles them (classification from [`crate::classify()`], addresses, VLANs and
//! site from the inventory, risk score and vulnerability matches from the risk model), so
//! the policy code never reaches into the aggregator's state and every node computes the
//! same memberships from the same inputs.

use crate::classify::Classification;
use crate::model::{Category, Criticality};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use wardline_common::MacAddr;

/// One device as the policy sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyDevice {
    pub mac: MacAddr,
    pub ips: Vec<IpAddr>,
    /// Knowledge-base class id ("infusion_pump").
    pub class: String,
    pub category: Category,
    pub criticality: Criticality,
    /// Knowledge-base profile id, when the classification named one.
    pub profile: Option<String>,
    /// Knowledge-base vendor id ("bd").
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub site: Option<String>,
    pub vlans: Vec<u16>,
    /// Operating system id from os.toml.
    pub os: Option<String>,
    /// The operating system is past its end of vendor support (on the caller's date).
    pub end_of_support: bool,
    /// Risk score from the risk model (the caller's scale; typically 0–100).
    pub risk: f64,
    /// Number of vulnerabilities matched to the device.
    pub vulns: u32,
    /// At least one matched vulnerability is on CISA's Known Exploited list.
    pub kev: bool,
    /// Operator tags ("icu", "ward-3b").
    pub tags: Vec<String>,
}

impl PolicyDevice {
    /// A device with only its identity and class; everything else empty or zero.
    pub fn new(mac: MacAddr, class: &str, category: Category, criticality: Criticality) -> PolicyDevice {
        PolicyDevice {
            mac,
            ips: Vec::new(),
            class: class.to_string(),
            category,
            criticality,
            profile: None,
            vendor: None,
            model: None,
            site: None,
            vlans: Vec::new(),
            os: None,
            end_of_support: false,
            risk: 0.0,
            vulns: 0,
            kev: false,
            tags: Vec::new(),
        }
    }

    /// The classified attributes of `c`; `today` (YYYY-MM-DD) decides end of support. The
    /// caller adds addresses, VLANs, site, risk, vulnerabilities and tags.
    pub fn from_classification(c: &Classification, today: &str) -> PolicyDevice {
        let mut d = PolicyDevice::new(c.mac, &c.class.value, c.category.value, c.criticality.value);
        d.profile = c.profile.as_ref().map(|a| a.value.clone());
        d.vendor = c.vendor.as_ref().map(|a| a.value.clone());
        d.model = c.model.as_ref().map(|a| a.value.clone());
        d.os = c.os.as_ref().map(|a| a.value.clone());
        d.end_of_support = c.os_info.as_ref().is_some_and(|o| o.unsupported_on(today));
        d
    }
}
