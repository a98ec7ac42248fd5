//! Exposure: which factors fire for the device, how strongly, and on what evidence.
//!
//! Every factor's strength is in 0..1 and never drops when inputs are added: it is the
//! strongest of its hits, except `risky_flow`, which grows with the number of distinct risky
//! flows. Factors missing from the model (removed by a site) are skipped.

use super::{FlowSummary, RiskInput, RiskSource, VulnConfidence};
use crate::model::{RiskModel, Transport};
use crate::FlowTag;
use std::collections::{BTreeMap, BTreeSet};

/// One reason a factor fires.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Hit {
    pub(super) strength: f64,
    pub(super) source: RiskSource,
    pub(super) detail: String,
    /// The knowledge-base entry that made it count ("risk_indicator cleartext_login at
    /// builtin:risk.toml:120"), or the built-in rule.
    pub(super) rule: String,
}

/// Factor id → its hits, plus (for `risky_flow`) the count-based strength.
pub(super) struct Hits {
    pub(super) by_factor: BTreeMap<String, Vec<Hit>>,
    pub(super) risky_flows: usize,
}

/// NaN and out-of-range inputs from callers are clamped so a bad number cannot escape the
/// 0..1 range (NaN counts as 0).
pub(super) fn unit(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

fn flow_text(f: &FlowSummary) -> String {
    let (dir, prep) = match f.direction {
        crate::Direction::Outbound => ("outbound ", "to"),
        crate::Direction::Inbound => ("inbound ", "from"),
        crate::Direction::Any => ("", "with"),
    };
    let place = if f.peer_external { "external " } else { "" };
    format!("{dir}{}/{} ({}) {prep} {place}{} x{}", f.transport.as_str(), f.server_port, f.app, f.peer, f.flows.max(1))
}

pub(super) fn collect(model: &RiskModel, input: &RiskInput<'_>) -> Hits {
    let mut by_factor: BTreeMap<String, Vec<Hit>> = BTreeMap::new();
    let mut add = |factor: &str, hit: Hit| {
        if model.factor(factor).is_some() && hit.strength > 0.0 {
            by_factor.entry(factor.to_string()).or_default().push(hit);
        }
    };
    let s = &model.settings;
    let category = input.classification.category.value;

    // Operating system past end of support, relative to the caller's date.
    if let Some(os) = &input.classification.os_info {
        if let Some(eos) = os.end_of_support.as_deref().and_then(|d| d.parse::<super::IsoDate>().ok()) {
            let days = input.as_of.days_after(&eos);
            if days > 0 {
                let ramp = f64::from(s.eos_full_after_days.max(1));
                let strength = unit(s.eos_initial_strength + (1.0 - s.eos_initial_strength) * days as f64 / ramp);
                add(
                    "end_of_support",
                    Hit {
                        strength,
                        source: RiskSource::Os,
                        detail: format!(
                            "{} ({}): support ended {eos}, {days} days before {}",
                            os.name, os.id, input.as_of
                        ),
                        rule: "os.toml end_of_support".into(),
                    },
                );
            }
        }
    }

    // Matched vulnerabilities.
    for v in input.vulnerabilities {
        let conf = match v.confidence {
            VulnConfidence::Confirmed => 1.0,
            VulnConfidence::VersionUnknown => unit(s.version_unknown_factor),
        };
        let cvss = if v.cvss_base_score.is_nan() { 0.0 } else { v.cvss_base_score.clamp(0.0, 10.0) };
        let what = match v.confidence {
            VulnConfidence::Confirmed => "version confirmed",
            VulnConfidence::VersionUnknown => "version unknown",
        };
        add(
            "vulnerability",
            Hit {
                strength: unit(cvss / 10.0 * conf),
                source: RiskSource::Vulnerability,
                detail: format!("{} CVSS {cvss:.1} ({what})", v.cve),
                rule: "cvss_base_score / 10".into(),
            },
        );
        if v.known_exploited {
            add(
                "known_exploited",
                Hit {
                    strength: conf,
                    source: RiskSource::Vulnerability,
                    detail: format!("{} is in the KEV catalog ({what})", v.cve),
                    rule: "known_exploited".into(),
                },
            );
        }
    }

    // Evidence indicators: each indicator counts each distinct value once.
    let mut evidence: Vec<(wardline_common::Field, &str)> =
        input.evidence.iter().map(|e| (e.field, e.value.trim())).filter(|(_, v)| !v.is_empty()).collect();
    evidence.sort();
    evidence.dedup();
    for ind in model.indicators.values() {
        if !ind.categories.is_empty() && !ind.categories.contains(&category) {
            continue;
        }
        let start = evidence.partition_point(|(f, _)| *f < ind.field);
        for (field, value) in evidence[start..].iter().take_while(|(f, _)| *f == ind.field) {
            if ind.matcher.is_match(value) {
                add(
                    &ind.factor,
                    Hit {
                        strength: ind.strength,
                        source: RiskSource::Evidence,
                        detail: format!("{field} = {value:?}: {}", ind.reason),
                        rule: format!("risk_indicator {} ({})", ind.id, ind.origin),
                    },
                );
            }
        }
    }

    // Flows: services, risky peers, risky flow context.
    let mut risky: BTreeSet<(&str, Transport, u16, bool)> = BTreeSet::new();
    for f in input.flows {
        let app = f.app.to_ascii_lowercase();
        for svc in model.services.values() {
            if (!svc.categories.is_empty() && !svc.categories.contains(&category)) || svc.except_apps.contains(&app) {
                continue;
            }
            let by_app = svc.apps.contains(&app);
            let by_port = svc.matches_port(f.transport, f.server_port);
            if (by_app || by_port) && svc.direction.matches(f.direction) && svc.peer.matches(f.peer_external) {
                add(
                    &svc.factor,
                    Hit {
                        strength: svc.strength,
                        source: RiskSource::Flow,
                        detail: format!("{}: {}", flow_text(f), svc.reason),
                        rule: format!("risk_service {} ({})", svc.id, svc.origin),
                    },
                );
            }
        }
        if let Some(p) = f.peer_score.filter(|p| !p.is_nan()) {
            let t = s.peer_score_threshold.clamp(0.0, 99.0);
            if p > t {
                add(
                    "risky_peer",
                    Hit {
                        strength: unit((p.min(100.0) - t) / (100.0 - t)),
                        source: RiskSource::Flow,
                        detail: format!("{} (peer risk {p:.1})", flow_text(f)),
                        rule: format!("peer score above {t}"),
                    },
                );
            }
        }
        if f.context == Some(FlowTag::Risky) {
            let key = (f.peer.as_str(), f.transport, f.server_port, f.direction == crate::Direction::Inbound);
            if risky.insert(key) {
                add(
                    "risky_flow",
                    Hit {
                        strength: 1.0,
                        source: RiskSource::Flow,
                        detail: format!("{}: labelled risky by flow context", flow_text(f)),
                        rule: "flow_context risky".into(),
                    },
                );
            }
        }
    }
    Hits { by_factor, risky_flows: risky.len() }
}
