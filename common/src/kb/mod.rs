//! The medical device knowledge base and its explainable classifier.
//!
//! Knowledge lives in human-readable TOML files (`common/kb/*.toml`, embedded at build time)
//! that a site extends or overrides with its own files at start-up, without rebuilding:
//! vendors (IEEE OUI blocks, medical manufacturers marked), device classes, operating
//! systems with end-of-support dates, device profiles with their matching rules and
//! expected communications, generic rules, and operator overrides keyed by MAC.
//! See docs/knowledge-base.md for the formats and a worked example.
//!
//! Both the sensor (locally) and the aggregator (after merging inventories) run the same
//! [`classify`] over the same [`crate::Evidence`] vocabulary, so they agree.

mod classifier;
mod flow_context;
mod loader;
mod os;

pub use classifier::{classify, classify_stable, Attribute, Because, Classification, DeviceFacts, PortRef};
pub use flow_context::{flow_context, FlowContext, FlowSpec};
pub use loader::{append_override, KbError, KnowledgeBase, OverrideEntry};
pub use os::{OsEntry, OsInfo};

use serde::{Deserialize, Serialize};
use std::fmt;

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

/// Patient-safety tier, after Cisco's medical NAC taxonomy (DOMAIN-NOTES §2): what happens
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
    fn matches(&self, other: Transport) -> bool {
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
    fn reversed(self) -> Direction {
        match self {
            Direction::Outbound => Direction::Inbound,
            Direction::Inbound => Direction::Outbound,
            Direction::Any => Direction::Any,
        }
    }
    fn matches(&self, other: Direction) -> bool {
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
