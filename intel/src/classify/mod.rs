//! Combining weighted evidence into explainable device attributes.
//!
//! Each matching rule contributes its weight once; weights combine as a noisy-OR
//! (`1 - Π(1 - w)`), so independent clues reinforce each other, the result stays in 0..1,
//! and adding evidence never lowers a score. Everything iterates in sorted order, so the
//! same facts always give the same answer on a sensor and on the aggregator.

//!
//! The classifier reads the [model](crate::model) only; how the knowledge got there (files,
//! overlays) is [`crate::load`]'s business.

mod overrides;
mod score;

use crate::model::{Category, Criticality, KnowledgeBase, OsInfo, Transport};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use wardline_common::{Evidence, Field, MacAddr};

/// A class must beat the previous one by this much before a device changes class, so one
/// new packet cannot flip a classification back and forth.
pub const HYSTERESIS_MARGIN: f64 = 0.15;
/// A transport port such as `tcp/3613` (the format of [`Field::ListeningPort`] evidence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRef {
    pub transport: Transport,
    pub port: u16,
}

impl PortRef {
    pub fn tcp(port: u16) -> PortRef {
        PortRef { transport: Transport::Tcp, port }
    }
    pub fn udp(port: u16) -> PortRef {
        PortRef { transport: Transport::Udp, port }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.transport.as_str(), self.port)
    }
}

impl FromStr for PortRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid port {s:?}: expected tcp/<n> or udp/<n>");
        let (proto, port) = s.split_once('/').ok_or_else(bad)?;
        let transport = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            _ => return Err(bad()),
        };
        Ok(PortRef { transport, port: port.parse().map_err(|_| bad())? })
    }
}

/// Everything known about one device that the classifier may use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceFacts {
    pub mac: MacAddr,
    pub evidence: Vec<Evidence>,
    /// Ports the device accepted connections on.
    pub listening: Vec<PortRef>,
    /// Services the device connected to as a client.
    pub connects_to: Vec<PortRef>,
}

impl DeviceFacts {
    pub fn new(mac: MacAddr) -> DeviceFacts {
        DeviceFacts { mac, ..Default::default() }
    }

    /// Facts from a device's evidence list, reading ports out of `listening_port` and
    /// `connects_to` evidence (how sensors report them).
    pub fn from_evidence(mac: MacAddr, evidence: Vec<Evidence>) -> DeviceFacts {
        let mut f = DeviceFacts::new(mac);
        for e in &evidence {
            let list = match e.field {
                Field::ListeningPort => &mut f.listening,
                Field::ConnectsTo => &mut f.connects_to,
                _ => continue,
            };
            if let Ok(p) = e.value.parse::<PortRef>() {
                list.push(p);
            }
        }
        f.listening.sort();
        f.listening.dedup();
        f.connects_to.sort();
        f.connects_to.dedup();
        f.evidence =
            evidence.into_iter().filter(|e| !matches!(e.field, Field::ListeningPort | Field::ConnectsTo)).collect();
        f
    }
}

/// One piece of evidence that moved an attribute: which fact, through which rule, how much.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Because {
    /// Evidence field (`wardline_common::Field` name, or mac_vendor, connects_to, override...).
    pub field: String,
    pub value: String,
    /// Rule id (`<profile>#<n>` for unnamed profile rules, `oui:<vendor>` for MAC blocks).
    pub rule: String,
    pub weight: f64,
}

/// An attribute value with its confidence (0..1) and the evidence behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribute<T> {
    pub value: T,
    pub confidence: f64,
    pub evidence: Vec<Because>,
}

/// What a device is, each attribute explained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub mac: MacAddr,
    /// Knowledge-base profile id, when the evidence names a specific product family.
    pub profile: Option<Attribute<String>>,
    pub vendor: Option<Attribute<String>>,
    pub model: Option<Attribute<String>>,
    pub class: Attribute<String>,
    pub category: Attribute<Category>,
    pub criticality: Attribute<Criticality>,
    pub clinical_function: Option<Attribute<String>>,
    /// Operating system id from os.toml.
    pub os: Option<Attribute<String>>,
    pub os_info: Option<OsInfo>,
    /// The MAC belongs to a manufacturer marked medical.
    pub medical_vendor: bool,
    /// Where the operator override that applied was defined ("overrides.toml:12").
    pub overridden: Option<String>,
}

impl Classification {
    /// Human-readable account of every attribute and what produced it.
    pub fn explain(&self) -> String {
        use std::fmt::Write;
        let mut out = format!("device {}\n", self.mac);
        if let Some(o) = &self.overridden {
            let _ = writeln!(out, "  operator override from {o}");
        }
        let mut attr = |name: &str, value: &str, a_conf: f64, ev: &[Because]| {
            let _ = writeln!(out, "  {name}: {value} (confidence {a_conf:.2})");
            for b in ev {
                let _ = writeln!(out, "    {} = {:?} via rule {} (weight {:.2})", b.field, b.value, b.rule, b.weight);
            }
        };
        if let Some(a) = &self.vendor {
            attr("vendor", &a.value, a.confidence, &a.evidence);
        }
        if let Some(a) = &self.model {
            attr("model", &a.value, a.confidence, &a.evidence);
        }
        attr("class", &self.class.value, self.class.confidence, &self.class.evidence);
        attr("category", self.category.value.as_str(), self.category.confidence, &self.category.evidence);
        attr("criticality", self.criticality.value.as_str(), self.criticality.confidence, &self.criticality.evidence);
        if let Some(a) = &self.clinical_function {
            attr("clinical function", &a.value, a.confidence, &[]);
        }
        if let Some(a) = &self.os {
            let name = self.os_info.as_ref().map(|o| o.name.as_str()).unwrap_or(&a.value);
            attr("os", name, a.confidence, &a.evidence);
        }
        out
    }
}

/// Classify a device from scratch.
pub fn classify(kb: &KnowledgeBase, facts: &DeviceFacts) -> Classification {
    classify_stable(kb, None, facts)
}

/// Classify a device that already had a classification: the previous class and profile are
/// kept unless the new best beats them by [`HYSTERESIS_MARGIN`] (or they lost all support).
/// An operator override in the knowledge base always wins.
pub fn classify_stable(kb: &KnowledgeBase, prev: Option<&Classification>, facts: &DeviceFacts) -> Classification {
    // A previous result that came from an override says nothing about the evidence.
    let prev = prev.filter(|p| p.overridden.is_none() && p.mac == facts.mac);
    let items = score::facts_to_items(kb, facts);
    let mut c = score::score(kb, facts, &items, prev);
    if let Some(ov) = kb.override_for(&facts.mac) {
        overrides::apply_override(kb, &mut c, ov);
    }
    c
}
