//! The risk model's knowledge (`intel/kb/risk.toml` plus site overlays): how much harm each
//! kind of data a device handles can do, which data classes each device kind handles, the
//! exposure factors and their weights, and the indicators (evidence) and services (flows)
//! that make a factor fire. [`crate::risk`] computes scores from it.

use super::entries::Loc;
use super::rules::Matcher;
use super::{Category, Criticality, Direction, Transport};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use wardline_common::Field;

/// The data classes of MITRE's *Rubric for Applying CVSS to Medical Devices* (2020): what
/// a compromise of the device's data can harm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    TherapyDelivery,
    DiagnosisMonitoring,
    Phi,
    ClinicalWorkflow,
    SystemData,
}

impl DataClass {
    pub const ALL: [DataClass; 5] = [
        DataClass::TherapyDelivery,
        DataClass::DiagnosisMonitoring,
        DataClass::Phi,
        DataClass::ClinicalWorkflow,
        DataClass::SystemData,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            DataClass::TherapyDelivery => "therapy_delivery",
            DataClass::DiagnosisMonitoring => "diagnosis_monitoring",
            DataClass::Phi => "phi",
            DataClass::ClinicalWorkflow => "clinical_workflow",
            DataClass::SystemData => "system_data",
        }
    }
}

impl fmt::Display for DataClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Harm on the three impact axes, each 0..1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImpactAxes {
    pub safety: f64,
    pub privacy: f64,
    pub service: f64,
}

/// What compromising one data class does to each axis.
#[derive(Clone, Debug, PartialEq)]
pub struct DataClassImpact {
    pub class: DataClass,
    pub axes: ImpactAxes,
    pub origin: Loc,
}

/// Which devices an impact rule applies to: exactly one selector.
#[derive(Clone, Debug)]
pub enum ImpactSelector {
    Class(String),
    Criticality(Criticality),
    Category(Category),
    /// Regex over the clinical function text; adds data classes to whatever the others gave.
    ClinicalFunction(Regex),
}

/// "Devices selected so handle these data classes."
#[derive(Clone, Debug)]
pub struct ImpactRule {
    pub id: String,
    pub selector: ImpactSelector,
    pub data_classes: Vec<DataClass>,
    pub origin: Loc,
}

/// One exposure factor and how much it weighs: its contribution to exposure is
/// `weight × strength`, strength (0..1) coming from the device's inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct RiskFactor {
    pub id: String,
    pub weight: f64,
    pub description: String,
    pub origin: Loc,
}

/// Which peers a flow rule means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerScope {
    Any,
    External,
    Internal,
}

impl PeerScope {
    pub fn matches(&self, external: bool) -> bool {
        match self {
            PeerScope::Any => true,
            PeerScope::External => external,
            PeerScope::Internal => !external,
        }
    }
}

/// A piece of evidence that makes a factor fire ("cleartext_login present → cleartext
/// credentials, strength 1").
#[derive(Clone, Debug)]
pub struct RiskIndicator {
    pub id: String,
    pub factor: String,
    pub field: Field,
    pub matcher: Matcher,
    pub strength: f64,
    /// Only devices of these categories; empty means every device.
    pub categories: Vec<Category>,
    pub reason: String,
    pub origin: Loc,
}

/// A kind of flow that makes a factor fire ("inbound tcp/23 → exposed management").
#[derive(Clone, Debug)]
pub struct RiskService {
    pub id: String,
    pub factor: String,
    /// Flow application labels (`telnet`, `rdp`, ...); a flow matches by label or by port.
    pub apps: Vec<String>,
    /// Flows with these labels never match, even on the port (`tls` on a cleartext port).
    pub except_apps: Vec<String>,
    pub transport: Transport,
    pub ports: Vec<u16>,
    pub port_range: Option<(u16, u16)>,
    pub direction: Direction,
    pub peer: PeerScope,
    pub strength: f64,
    pub categories: Vec<Category>,
    pub reason: String,
    pub origin: Loc,
}

impl RiskService {
    pub fn matches_port(&self, transport: Transport, port: u16) -> bool {
        let port_ok = self.ports.contains(&port) || self.port_range.is_some_and(|(lo, hi)| (lo..=hi).contains(&port));
        port_ok && self.transport.matches(transport)
    }
}

/// The scalar settings of the score formula (docs/risk.md). Every key can be overridden
/// one by one by a site's `[risk]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct RiskSettings {
    /// Exposure every networked device has, even with no factor firing (0..1).
    pub baseline_exposure: f64,
    /// Impact share every device has, even one handling no sensitive data (0..1).
    pub impact_floor: f64,
    /// How much each impact axis counts in the combined impact (0..1 each).
    pub safety_weight: f64,
    pub privacy_weight: f64,
    pub service_weight: f64,
    /// End-of-support strength on the day support ends ...
    pub eos_initial_strength: f64,
    /// ... rising linearly to 1 over this many days.
    pub eos_full_after_days: u32,
    /// Peers scoring at or below this (0..100) add nothing to `risky_peer`.
    pub peer_score_threshold: f64,
    /// Strength multiplier of a vulnerability matched without knowing the version.
    pub version_unknown_factor: f64,
    /// Each further distinct risky flow closes this share of the remaining gap to 1.
    pub risky_flow_step: f64,
    /// Score bands for roll-ups ("count above"), ascending.
    pub thresholds: Vec<f64>,
    /// Most points a [`crate::risk::RiskHistory`] keeps by default.
    pub history_len: usize,
    /// Smallest score change a history records.
    pub history_min_change: f64,
    pub origin: Option<Loc>,
}

impl Default for RiskSettings {
    /// Neutral values for a knowledge base without risk.toml (the builtin file sets the real
    /// ones).
    fn default() -> Self {
        RiskSettings {
            baseline_exposure: 0.1,
            impact_floor: 0.2,
            safety_weight: 1.0,
            privacy_weight: 0.6,
            service_weight: 0.5,
            eos_initial_strength: 0.5,
            eos_full_after_days: 1826,
            peer_score_threshold: 40.0,
            version_unknown_factor: 0.5,
            risky_flow_step: 0.5,
            thresholds: vec![40.0, 70.0, 90.0],
            history_len: 64,
            history_min_change: 0.5,
            origin: None,
        }
    }
}

/// Everything the risk model knows, merged from the builtin risk.toml and site overlays.
#[derive(Clone, Debug, Default)]
pub struct RiskModel {
    pub settings: RiskSettings,
    pub data_classes: BTreeMap<DataClass, DataClassImpact>,
    pub impacts: BTreeMap<String, ImpactRule>,
    pub factors: BTreeMap<String, RiskFactor>,
    pub indicators: BTreeMap<String, RiskIndicator>,
    pub services: BTreeMap<String, RiskService>,
    /// Factors a site deleted with `[[remove]] risk_factor`: indicators and services naming
    /// them still load (they count for nothing), so switching a factor off is one entry.
    pub removed_factors: BTreeSet<String>,
}

impl RiskModel {
    pub fn factor(&self, id: &str) -> Option<&RiskFactor> {
        self.factors.get(id)
    }
}
