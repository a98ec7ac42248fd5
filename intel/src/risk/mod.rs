//! The per-device risk model: a 0–100 score from what a device could harm (impact) and how
//! exposed it is (exposure), with every factor's contribution and the evidence behind it.
//!
//! ```text
//! impact   = 1 − (1 − w_safety·safety)(1 − w_privacy·privacy)(1 − w_service·service)
//! exposure = 1 − Π_f (1 − weight_f · strength_f)
//! score    = 100 · (b + (1 − b)·exposure) · (f + (1 − f)·impact)
//! ```
//!
//! with `b` = `baseline_exposure` and `f` = `impact_floor` from `[risk]` in risk.toml. Every
//! term is in 0..1 and non-decreasing in each factor's weight and strength, so the score is
//! bounded and never drops when evidence, flows or vulnerabilities are added (docs/risk.md).
//!
//! Pure functions of their inputs: the caller supplies the date (`as_of`), never the wall
//! clock, so every node computes the same score from the same inputs.

mod date;
mod exposure;
mod history;
mod impact;
mod rollup;

pub use date::IsoDate;
pub use history::{Recorded, RiskHistory, RiskPoint};
pub use impact::Impact;
pub use rollup::{by_category, by_class, by_site, roll_up, DeviceRisk, RiskRollUp, ThresholdCount};

use crate::classify::Classification;
use crate::flow_context::{flow_context, is_external, FlowSpec};
use crate::model::{Direction, FlowTag, KnowledgeBase, Transport};
use exposure::unit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use wardline_common::{Evidence, FlowRecord, MacAddr};

/// Evidence entries listed per factor; further ones are only counted (`more_evidence`).
pub const MAX_EVIDENCE_PER_FACTOR: usize = 8;

/// How sure a vulnerability match is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VulnConfidence {
    /// Product and version both match the advisory.
    Confirmed,
    /// The product matches but the device's version is not known.
    VersionUnknown,
}

/// One vulnerability matched to the device (the CSAF/KEV matcher in `vuln` produces these).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VulnMatch {
    pub cve: String,
    /// CVSS base score 0–10 (out-of-range values are clamped, NaN counts as 0).
    pub cvss_base_score: f64,
    /// In CISA's Known Exploited Vulnerabilities catalog.
    pub known_exploited: bool,
    pub confidence: VulnConfidence,
}

impl From<&crate::vuln::VulnMatch> for VulnMatch {
    /// A feed match as a risk input: the advisory id stands in for a missing CVE, a missing
    /// score counts as 0, and a version the advisory gives only as prose counts like an
    /// unknown version (a possible match, weighted half).
    fn from(m: &crate::vuln::VulnMatch) -> Self {
        VulnMatch {
            cve: m.cve.as_deref().unwrap_or(&m.advisory_id).to_string(),
            cvss_base_score: m.cvss_score.unwrap_or(0.0),
            known_exploited: m.kev,
            confidence: match m.confidence {
                crate::vuln::Confidence::Confirmed => VulnConfidence::Confirmed,
                crate::vuln::Confidence::VersionUnclear | crate::vuln::Confidence::VersionUnknown => {
                    VulnConfidence::VersionUnknown
                }
            },
        }
    }
}

/// The device's conversations with one peer on one service, summarised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowSummary {
    /// The other end, for explanations (an IP address, a MAC, a device name).
    pub peer: String,
    pub transport: Transport,
    /// Application label as the sensor gives it (`telnet`, `hl7`, `unknown`, ...).
    pub app: String,
    /// The service (server-side) port.
    pub server_port: u16,
    /// Outbound: the device opened the conversations; inbound: the peer did.
    pub direction: Direction,
    /// The peer is outside the site's private/local ranges.
    pub peer_external: bool,
    /// The peer's own risk score (0–100), when it is a known device already scored.
    pub peer_score: Option<f64>,
    /// The flow-context label ([`crate::flow_context()`]) for the device's clinical function.
    pub context: Option<FlowTag>,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// What the risk model needs about one device. Pass the device's whole evidence list as the
/// sensor reports it (including `listening_port` and `connects_to`).
#[derive(Clone, Copy, Debug)]
pub struct RiskInput<'a> {
    pub classification: &'a Classification,
    pub evidence: &'a [Evidence],
    pub flows: &'a [FlowSummary],
    pub vulnerabilities: &'a [VulnMatch],
    /// The day the score is for: end of support is measured against it.
    pub as_of: IsoDate,
}

/// Where a factor's evidence came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskSource {
    Os,
    Vulnerability,
    Evidence,
    Flow,
}

/// One reason a factor fired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskEvidence {
    pub source: RiskSource,
    pub detail: String,
    /// The knowledge-base entry (id and file:line) or built-in rule that made it count.
    pub rule: String,
    pub strength: f64,
}

/// One exposure factor's part in the score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactorScore {
    pub factor: String,
    pub description: String,
    pub weight: f64,
    /// 0..1: the strongest hit (for `risky_flow`, grows with the number of risky flows).
    pub strength: f64,
    /// `weight × strength`: the factor's share of exposure on its own.
    pub contribution: f64,
    /// How many points the score would lose without this factor.
    pub points: f64,
    /// Strongest first, at most [`MAX_EVIDENCE_PER_FACTOR`].
    pub evidence: Vec<RiskEvidence>,
    pub more_evidence: usize,
}

/// A device's risk, explained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskScore {
    pub mac: MacAddr,
    /// 0–100, one decimal.
    pub score: f64,
    pub impact: Impact,
    /// 0..1.
    pub exposure: f64,
    /// Factors that fired, largest contribution first (ties by id).
    pub factors: Vec<FactorScore>,
    pub as_of: IsoDate,
}

/// Fixed precision keeps serialised values stable and comparisons free of float noise.
pub(crate) fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn combine(baseline: f64, floor: f64, exposure: f64, impact: f64) -> f64 {
    let b = unit(baseline);
    let f = unit(floor);
    100.0 * (b + (1.0 - b) * unit(exposure)) * (f + (1.0 - f) * unit(impact))
}

fn exposure_of(contributions: &[(&str, f64)], without: Option<&str>) -> f64 {
    1.0 - contributions.iter().filter(|(id, _)| Some(*id) != without).map(|(_, c)| 1.0 - c).product::<f64>()
}

/// Score one device.
pub fn assess(kb: &KnowledgeBase, input: &RiskInput<'_>) -> RiskScore {
    let model = &kb.risk;
    let s = &model.settings;
    let impact = impact::assess_impact(model, input.classification);
    let hits = exposure::collect(model, input);
    let mut factors: Vec<FactorScore> = Vec::new();
    for (id, mut list) in hits.by_factor {
        let Some(def) = model.factor(&id) else { continue };
        let strength = if id == "risky_flow" {
            unit(1.0 - (1.0 - unit(s.risky_flow_step)).powi(hits.risky_flows.min(1000) as i32))
        } else {
            list.iter().map(|h| unit(h.strength)).fold(0.0, f64::max)
        };
        list.sort_by(|a, b| {
            b.strength.total_cmp(&a.strength).then_with(|| a.detail.cmp(&b.detail)).then_with(|| a.rule.cmp(&b.rule))
        });
        // The same flow summary passed twice is one piece of evidence.
        list.dedup_by(|a, b| a.detail == b.detail && a.rule == b.rule);
        let more = list.len().saturating_sub(MAX_EVIDENCE_PER_FACTOR);
        list.truncate(MAX_EVIDENCE_PER_FACTOR);
        factors.push(FactorScore {
            factor: id,
            description: def.description.clone(),
            weight: def.weight,
            strength: round(strength),
            contribution: unit(def.weight * strength),
            points: 0.0,
            evidence: list
                .into_iter()
                .map(|h| RiskEvidence { source: h.source, detail: h.detail, rule: h.rule, strength: h.strength })
                .collect(),
            more_evidence: more,
        });
    }
    let contributions: Vec<(&str, f64)> = factors.iter().map(|f| (f.factor.as_str(), f.contribution)).collect();
    let exposure = exposure_of(&contributions, None);
    let score = combine(s.baseline_exposure, s.impact_floor, exposure, impact.combined);
    let points: BTreeMap<String, f64> = contributions
        .iter()
        .map(|(id, _)| {
            let without =
                combine(s.baseline_exposure, s.impact_floor, exposure_of(&contributions, Some(id)), impact.combined);
            (id.to_string(), (score - without).max(0.0))
        })
        .collect();
    for f in &mut factors {
        f.points = (points.get(&f.factor).copied().unwrap_or(0.0) * 10.0).round() / 10.0;
        f.contribution = round(f.contribution);
    }
    factors.sort_by(|a, b| b.contribution.total_cmp(&a.contribution).then_with(|| a.factor.cmp(&b.factor)));
    RiskScore {
        mac: input.classification.mac,
        score: ((score * 10.0).round() / 10.0).clamp(0.0, 100.0),
        impact,
        exposure: round(unit(exposure)),
        factors,
        as_of: input.as_of,
    }
}

impl RiskScore {
    /// The factor with this id, if it fired.
    pub fn factor(&self, id: &str) -> Option<&FactorScore> {
        self.factors.iter().find(|f| f.factor == id)
    }

    /// Human-readable account of the score: impact, then each factor with its evidence.
    pub fn explain(&self) -> String {
        let mut out = format!(
            "device {}: risk {:.1} (exposure {:.2}, impact {:.2}) as of {}\n",
            self.mac, self.score, self.exposure, self.impact.combined, self.as_of
        );
        let i = &self.impact;
        let classes: Vec<&str> = i.data_classes.iter().map(|d| d.as_str()).collect();
        let _ = writeln!(
            out,
            "  impact: safety {:.2}, privacy {:.2}, service {:.2} from data classes [{}] via {}",
            i.axes.safety,
            i.axes.privacy,
            i.axes.service,
            classes.join(", "),
            if i.rules.is_empty() { "no risk_impact entry".to_string() } else { i.rules.join(", ") }
        );
        if self.factors.is_empty() {
            let _ = writeln!(out, "  no exposure factor fired (baseline exposure only)");
        }
        for f in &self.factors {
            let _ = writeln!(
                out,
                "  {}: weight {:.2} x strength {:.2} = {:.2} (+{:.1} points): {}",
                f.factor, f.weight, f.strength, f.contribution, f.points, f.description
            );
            for e in &f.evidence {
                let _ = writeln!(out, "    {} (strength {:.2}, {})", e.detail, e.strength, e.rule);
            }
            if f.more_evidence > 0 {
                let _ = writeln!(out, "    ... and {} more", f.more_evidence);
            }
        }
        out
    }
}

/// Summarise a device's flow records into [`FlowSummary`]s, one per (peer address,
/// transport, service port, direction, application), labelled with the flow context.
/// `is_device` says whether a flow end (MAC, IP) is the device: by MAC for a device seen with
/// its own MAC, by address for a host behind a router or on a link without MACs. `peer` looks
/// up the other end: its classification if it is a known device, and its risk score if it
/// has one. Records the device is not exactly one end of, and non-TCP/UDP ones, are skipped.
pub fn summarize_flows<'p>(
    kb: &KnowledgeBase,
    device: &Classification,
    records: &[FlowRecord],
    is_device: impl Fn(&MacAddr, &IpAddr) -> bool,
    peer: impl Fn(&MacAddr, &IpAddr) -> (Option<&'p Classification>, Option<f64>),
) -> Vec<FlowSummary> {
    let mut out: BTreeMap<(String, Transport, u16, bool, String), FlowSummary> = BTreeMap::new();
    for r in records {
        let Some(transport) = Transport::from_ip_proto(r.ip_proto) else { continue };
        let (a_dev, b_dev) = (is_device(&r.a_mac, &r.a_ip), is_device(&r.b_mac, &r.b_ip));
        if a_dev == b_dev {
            continue;
        }
        // Same rule as FlowSpec::from_record: `a` sent the first packet seen, unless that
        // came from a well-known port to an ephemeral one (capture started mid-conversation).
        let a_is_server = r.a_port < 1024 && r.b_port >= 1024;
        let server_port = if a_is_server { r.a_port } else { r.b_port };
        let direction = if a_dev != a_is_server { Direction::Outbound } else { Direction::Inbound };
        let (peer_mac, peer_ip) = if a_dev { (r.b_mac, r.b_ip) } else { (r.a_mac, r.a_ip) };
        let spec = FlowSpec { transport, port: server_port, direction, peer_external: is_external(&peer_ip) };
        let (peer_class, peer_score) = peer(&peer_mac, &peer_ip);
        let ctx = flow_context(kb, device, peer_class, &spec);
        let key = (peer_ip.to_string(), transport, server_port, direction == Direction::Inbound, r.app.to_string());
        let e = out.entry(key).or_insert_with(|| FlowSummary {
            peer: peer_ip.to_string(),
            transport,
            app: r.app.to_string(),
            server_port,
            direction,
            peer_external: spec.peer_external,
            peer_score,
            context: Some(ctx.tag),
            flows: 0,
            packets: 0,
            bytes: 0,
        });
        e.flows += 1;
        e.packets = e.packets.saturating_add(r.packets_ab.saturating_add(r.packets_ba));
        e.bytes = e.bytes.saturating_add(r.bytes_ab.saturating_add(r.bytes_ba));
    }
    out.into_values().collect()
}
