//! Impact: what harm compromising the device could do, from its classification.
//!
//! The device's data classes (MITRE's rubric: therapy delivery, diagnosis and monitoring,
//! PHI, clinical workflow, system data) come from the most specific `[[risk_impact]]`
//! selector that matches (class, else criticality, else category) plus every matching
//! clinical-function entry. Each axis is the highest value among those data classes; the
//! combined impact is the weighted noisy-OR of the three axes.

use super::round;
use crate::classify::Classification;
use crate::model::{DataClass, ImpactAxes, ImpactRule, ImpactSelector, RiskModel};
use serde::{Deserialize, Serialize};

/// The device's impact, explained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    /// Patient safety, privacy and service disruption, each 0..1.
    pub axes: ImpactAxes,
    /// The three axes combined, 0..1.
    pub combined: f64,
    pub data_classes: Vec<DataClass>,
    /// The `[[risk_impact]]` entries that decided, as "id (file:line)".
    pub rules: Vec<String>,
}

pub(super) fn assess_impact(model: &RiskModel, c: &Classification) -> Impact {
    let class = c.class.value.as_str();
    let levels: [&dyn Fn(&ImpactRule) -> bool; 3] = [
        &|r| matches!(&r.selector, ImpactSelector::Class(x) if x == class),
        &|r| matches!(&r.selector, ImpactSelector::Criticality(x) if *x == c.criticality.value),
        &|r| matches!(&r.selector, ImpactSelector::Category(x) if *x == c.category.value),
    ];
    let mut used: Vec<&ImpactRule> = Vec::new();
    for level in levels {
        used.extend(model.impacts.values().filter(|r| level(r)));
        if !used.is_empty() {
            break;
        }
    }
    if let Some(function) = &c.clinical_function {
        used.extend(
            model.impacts.values().filter(
                |r| matches!(&r.selector, ImpactSelector::ClinicalFunction(re) if re.is_match(&function.value)),
            ),
        );
    }
    let mut data_classes: Vec<DataClass> = used.iter().flat_map(|r| r.data_classes.iter().copied()).collect();
    data_classes.sort();
    data_classes.dedup();
    let mut axes = ImpactAxes::default();
    for dc in &data_classes {
        if let Some(d) = model.data_classes.get(dc) {
            axes.safety = axes.safety.max(d.axes.safety);
            axes.privacy = axes.privacy.max(d.axes.privacy);
            axes.service = axes.service.max(d.axes.service);
        }
    }
    let s = &model.settings;
    let combined = 1.0
        - (1.0 - s.safety_weight * axes.safety)
            * (1.0 - s.privacy_weight * axes.privacy)
            * (1.0 - s.service_weight * axes.service);
    Impact {
        axes,
        combined: round(combined.clamp(0.0, 1.0)),
        data_classes,
        rules: used.iter().map(|r| format!("{} ({})", r.id, r.origin)).collect(),
    }
}
