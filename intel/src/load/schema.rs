//! The TOML input structs: exactly what a knowledge-base file may contain. Unknown keys are
//! errors (`deny_unknown_fields`), and values that can be checked on their own (weights,
//! regexes, evidence field names) are checked while parsing, so the error names the line.

use super::risk::{RawDataClass, RawFactor, RawImpact, RawIndicator, RawRiskSettings, RawService};
use crate::model::{Category, Criticality, Direction, FlowTag, MatchKey, Transport};
use regex::Regex;
use serde::{de, Deserialize, Deserializer};
use toml::Spanned;
use wardline_common::Field;

impl<'de> Deserialize<'de> for MatchKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "mac_vendor" => return Ok(MatchKey::MacVendor),
            "mac_org" => return Ok(MatchKey::MacOrg),
            "device_id_vendor" => return Ok(MatchKey::DeviceIdVendor),
            "connects_to" => return Ok(MatchKey::ConnectsTo),
            _ => {}
        }
        serde_json::from_value::<Field>(serde_json::Value::String(s.clone())).map(MatchKey::Field).map_err(|_| {
            de::Error::custom(format!(
                "unknown evidence field {s:?}: use a wardline_common::Field name in snake_case \
                     (hostname, dhcp_vendor_class, dhcp_param_list, dicom_impl_class_uid, hl7_sending_app, \
                     listening_port, os_hint, ...) or one of mac_vendor, mac_org, device_id_vendor, connects_to"
            ))
        })
    }
}

/// A regex checked when the file is read, so a bad pattern names its line.
#[derive(Clone, Debug)]
pub(super) struct Pattern(pub(super) Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Regex::new(&s).map(Pattern).map_err(|e| de::Error::custom(format!("invalid regex: {e}")))
    }
}

/// Rule weight: how strongly one match alone identifies the target, in (0, 1].
#[derive(Clone, Copy, Debug)]
pub(super) struct Weight(pub(super) f64);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = f64::deserialize(d)?;
        if w > 0.0 && w <= 1.0 {
            Ok(Weight(w))
        } else {
            Err(de::Error::custom(format!("weight {w} is outside (0, 1]; 0.3 is weak evidence, 0.9 nearly proof")))
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct KbFile {
    #[serde(default)]
    pub(super) vendor: Vec<RawVendor>,
    #[serde(default)]
    pub(super) class: Vec<RawClass>,
    #[serde(default)]
    pub(super) os: Vec<RawOs>,
    #[serde(default)]
    pub(super) profile: Vec<RawProfile>,
    #[serde(default)]
    pub(super) rule: Vec<RawRule>,
    #[serde(default)]
    pub(super) comm: Vec<RawComm>,
    #[serde(default, rename = "override")]
    pub(super) overrides: Vec<RawOverride>,
    #[serde(default)]
    pub(super) remove: Vec<RawRemove>,
    // The risk model's tables (load/risk.rs).
    pub(super) risk: Option<Spanned<RawRiskSettings>>,
    #[serde(default)]
    pub(super) risk_data_class: Vec<RawDataClass>,
    #[serde(default)]
    pub(super) risk_impact: Vec<RawImpact>,
    #[serde(default)]
    pub(super) risk_factor: Vec<RawFactor>,
    #[serde(default)]
    pub(super) risk_indicator: Vec<RawIndicator>,
    #[serde(default)]
    pub(super) risk_service: Vec<RawService>,
}

/// Deletes entries loaded earlier (e.g. a builtin profile a site does not want).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRemove {
    pub(super) profile: Option<String>,
    pub(super) rule: Option<String>,
    pub(super) vendor: Option<String>,
    pub(super) class: Option<String>,
    pub(super) os: Option<String>,
    pub(super) comm: Option<String>,
    #[serde(rename = "override")]
    pub(super) override_mac: Option<Spanned<String>>,
    pub(super) risk_impact: Option<String>,
    pub(super) risk_factor: Option<String>,
    pub(super) risk_indicator: Option<String>,
    pub(super) risk_service: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVendor {
    pub(super) id: Spanned<String>,
    pub(super) name: String,
    #[serde(default)]
    pub(super) medical: bool,
    /// Hex prefixes: 6 digits (MA-L), 7 (MA-M) or 9 (MA-S); separators allowed.
    #[serde(default)]
    pub(super) ouis: Vec<Spanned<String>>,
    /// Regexes over IEEE organisation names, for vendors with hundreds of blocks.
    #[serde(default)]
    pub(super) org_patterns: Vec<Pattern>,
    pub(super) oui_weight: Option<Weight>,
    #[serde(default)]
    pub(super) sources: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClass {
    pub(super) id: Spanned<String>,
    pub(super) name: String,
    pub(super) category: Category,
    pub(super) criticality: Criticality,
    pub(super) clinical_function: Option<String>,
    #[serde(default)]
    pub(super) comm: Vec<RawComm>,
    #[serde(default)]
    pub(super) sources: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOs {
    pub(super) id: Spanned<String>,
    pub(super) name: String,
    pub(super) family: String,
    pub(super) version: Option<String>,
    pub(super) end_of_support: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) embedded: bool,
    #[serde(default)]
    pub(super) sources: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    pub(super) id: Spanned<String>,
    pub(super) vendor: Spanned<String>,
    pub(super) model_family: String,
    pub(super) class: Spanned<String>,
    pub(super) category: Option<Category>,
    pub(super) criticality: Option<Criticality>,
    pub(super) clinical_function: Option<String>,
    pub(super) os: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) sources: Vec<String>,
    #[serde(default)]
    pub(super) rule: Vec<RawRule>,
    #[serde(default)]
    pub(super) comm: Vec<RawComm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) id: Option<String>,
    pub(super) field: Spanned<MatchKey>,
    pub(super) exact: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) contains: Option<String>,
    pub(super) regex: Option<Pattern>,
    pub(super) weight: Weight,
    pub(super) class: Option<Spanned<String>>,
    pub(super) os: Option<Spanned<String>>,
    pub(super) vendor: Option<Spanned<String>>,
    pub(super) source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComm {
    pub(super) id: Option<String>,
    /// Peer roles: a class id, "category:<medical|ot|iot|it>", "any", "external", "internal".
    pub(super) peer: Spanned<Vec<String>>,
    pub(super) protocol: Transport,
    pub(super) port: Option<u16>,
    #[serde(default)]
    pub(super) ports: Vec<u16>,
    pub(super) port_range: Option<[u16; 2]>,
    pub(super) direction: Direction,
    pub(super) tag: FlowTag,
    pub(super) reason: String,
    pub(super) source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverride {
    pub(super) mac: Spanned<String>,
    pub(super) profile: Option<Spanned<String>>,
    pub(super) class: Option<Spanned<String>>,
    pub(super) vendor: Option<String>,
    pub(super) model: Option<String>,
    pub(super) category: Option<Category>,
    pub(super) criticality: Option<Criticality>,
    pub(super) clinical_function: Option<String>,
    pub(super) os: Option<Spanned<String>>,
    pub(super) note: Option<String>,
    pub(super) by: Option<String>,
}
