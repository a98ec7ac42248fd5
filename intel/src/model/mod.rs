//! The knowledge base's domain model: what Wardline knows about vendors, device classes,
//! operating systems, product profiles, matching rules, expected communications and operator
//! overrides, after loading and merging ([`crate::load`] builds it from TOML files).
//!
//! Nothing here reads files or knows the TOML layout, so the classifier, the flow context and
//! the risk and policy models to come depend on this module alone.

mod comms;
mod entries;
mod knowledge_base;
mod os;
mod risk;
mod rules;

pub use comms::{Comm, PeerRole};
pub use entries::{Class, Loc, Override, Profile, Vendor};
pub use knowledge_base::KnowledgeBase;
pub use os::{OsEntry, OsInfo};
pub use risk::{
    DataClass, DataClassImpact, ImpactAxes, ImpactRule, ImpactSelector, PeerScope, RiskFactor, RiskIndicator,
    RiskModel, RiskService, RiskSettings,
};
pub use rules::{MatchKey, Matcher, Rule, RuleTarget};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Fallback class of a device nothing identifies; every knowledge base must define it.
pub const UNKNOWN_IT_CLASS: &str = "unknown_it";
/// Fallback class of a device from a medical manufacturer that no profile matches; every
/// knowledge base must define it.
pub const UNKNOWN_MEDICAL_CLASS: &str = "unknown_medical";

/// Broad kind of a device; drives default segmentation zones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Medical,
    Ot,
    Iot,
    It,
}

impl Category {
    pub fn as_str(&self) -> &'static str {
        match self {
            Category::Medical => "medical",
            Category::Ot => "ot",
            Category::Iot => "iot",
            Category::It => "it",
        }
    }
}

/// Patient-safety tier, after Cisco's medical NAC taxonomy (kb-sources §signals): what happens
/// to a patient if the device stops or misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    /// Sustains or delivers therapy (pumps, ventilators, defibrillators, anaesthesia).
    LifeSustaining,
    /// Diagnosis or monitoring a patient depends on now (monitors, telemetry, imaging).
    PatientCritical,
    /// Supports clinical work without direct patient effect (PACS, lab, nurse call, EHR).
    ClinicalSupport,
    NonClinical,
}

impl Criticality {
    pub fn as_str(&self) -> &'static str {
        match self {
            Criticality::LifeSustaining => "life_sustaining",
            Criticality::PatientCritical => "patient_critical",
            Criticality::ClinicalSupport => "clinical_support",
            Criticality::NonClinical => "non_clinical",
        }
    }
}

/// Transport protocol of an expected communication or a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Tcp,
    Udp,
    /// Matches either (only meaningful in knowledge-base entries).
    Any,
}

impl Transport {
    pub fn from_ip_proto(p: u8) -> Option<Transport> {
        match p {
            6 => Some(Transport::Tcp),
            17 => Some(Transport::Udp),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Any => "any",
        }
    }
    pub(crate) fn matches(&self, other: Transport) -> bool {
        *self == Transport::Any || other == Transport::Any || *self == other
    }
}

/// Which side opens the conversation, seen from the device the entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The device connects to the peer's port.
    Outbound,
    /// The peer connects to the device's port.
    Inbound,
    /// Either way round.
    Any,
}

impl Direction {
    pub(crate) fn reversed(self) -> Direction {
        match self {
            Direction::Outbound => Direction::Inbound,
            Direction::Inbound => Direction::Outbound,
            Direction::Any => Direction::Any,
        }
    }
    pub(crate) fn matches(&self, other: Direction) -> bool {
        *self == Direction::Any || other == Direction::Any || *self == other
    }
}

/// How a flow relates to the device's clinical function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowTag {
    /// Needed for the clinical function: blocking it breaks a workflow.
    Required,
    /// Expected and harmless (infrastructure, management from the right place).
    Acceptable,
    /// Known to widen exposure (cleartext management, remote access, browsing).
    Risky,
    /// Nothing in the knowledge base speaks to it.
    Unknown,
}

impl FlowTag {
    pub fn as_str(&self) -> &'static str {
        match self {
            FlowTag::Required => "required",
            FlowTag::Acceptable => "acceptable",
            FlowTag::Risky => "risky",
            FlowTag::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Display for FlowTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
