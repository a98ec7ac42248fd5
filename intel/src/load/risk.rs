//! The risk model's part of a knowledge-base file (`[risk]`, `[[risk_data_class]]`,
//! `[[risk_impact]]`, `[[risk_factor]]`, `[[risk_indicator]]`, `[[risk_service]]`), and
//! merging it: entries replace earlier ones with the same id, `[risk]` keys replace earlier
//! values one by one, and references (factor ids, class ids) are checked once every file is in.

use super::merge::line_of;
use super::schema::Pattern;
use super::KbError;
use crate::model::{
    Category, Criticality, DataClass, DataClassImpact, Direction, ImpactAxes, ImpactRule, ImpactSelector,
    KnowledgeBase, Loc, Matcher, PeerScope, RiskFactor, RiskIndicator, RiskModel, RiskService, Transport,
};
use serde::{de, Deserialize, Deserializer};
use std::ops::Range;
use std::sync::Arc;
use toml::Spanned;
use wardline_common::Field;

/// A share in [0, 1]: a weight (0 switches a factor off), a strength, an axis value.
#[derive(Clone, Copy, Debug)]
pub(super) struct Unit(pub(super) f64);

impl<'de> Deserialize<'de> for Unit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = f64::deserialize(d)?;
        if (0.0..=1.0).contains(&w) {
            Ok(Unit(w))
        } else {
            Err(de::Error::custom(format!("{w} is outside [0, 1]; risk weights, strengths and impacts are shares")))
        }
    }
}

/// `[risk]`: the score formula's settings; each key is optional so a site overrides one.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRiskSettings {
    baseline_exposure: Option<Unit>,
    impact_floor: Option<Unit>,
    safety_weight: Option<Unit>,
    privacy_weight: Option<Unit>,
    service_weight: Option<Unit>,
    eos_initial_strength: Option<Unit>,
    eos_full_after_days: Option<u32>,
    peer_score_threshold: Option<f64>,
    version_unknown_factor: Option<Unit>,
    risky_flow_step: Option<Unit>,
    thresholds: Option<Vec<f64>>,
    history_len: Option<usize>,
    history_min_change: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDataClass {
    class: Spanned<DataClass>,
    safety: Unit,
    privacy: Unit,
    service: Unit,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImpact {
    id: Spanned<String>,
    class: Option<String>,
    criticality: Option<Criticality>,
    category: Option<Category>,
    clinical_function: Option<Pattern>,
    data_classes: Vec<DataClass>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFactor {
    id: Spanned<String>,
    weight: Unit,
    /// Optional when replacing a factor: a site changing a weight keeps the description.
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIndicator {
    id: Spanned<String>,
    factor: String,
    field: Field,
    exact: Option<String>,
    prefix: Option<String>,
    contains: Option<String>,
    regex: Option<Pattern>,
    strength: Unit,
    #[serde(default)]
    categories: Vec<Category>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    id: Spanned<String>,
    factor: String,
    #[serde(default)]
    apps: Vec<String>,
    #[serde(default)]
    except_apps: Vec<String>,
    protocol: Option<Transport>,
    port: Option<u16>,
    #[serde(default)]
    ports: Vec<u16>,
    port_range: Option<[u16; 2]>,
    direction: Option<Direction>,
    peer: Option<PeerScope>,
    strength: Unit,
    #[serde(default)]
    categories: Vec<Category>,
    reason: String,
}

/// The risk tables of one parsed file.
#[derive(Default)]
pub(super) struct RawRiskParts {
    pub(super) settings: Option<Spanned<RawRiskSettings>>,
    pub(super) data_classes: Vec<RawDataClass>,
    pub(super) impacts: Vec<RawImpact>,
    pub(super) factors: Vec<RawFactor>,
    pub(super) indicators: Vec<RawIndicator>,
    pub(super) services: Vec<RawService>,
}

/// `[[remove]]` keys for risk entries.
#[derive(Default)]
pub(super) struct RiskRemovals<'a> {
    pub(super) impact: Option<&'a str>,
    pub(super) factor: Option<&'a str>,
    pub(super) indicator: Option<&'a str>,
    pub(super) service: Option<&'a str>,
}

pub(super) fn remove(risk: &mut RiskModel, r: RiskRemovals<'_>) {
    if let Some(id) = r.impact {
        risk.impacts.remove(id);
    }
    if let Some(id) = r.factor {
        risk.factors.remove(id);
        risk.removed_factors.insert(id.to_string());
    }
    if let Some(id) = r.indicator {
        risk.indicators.remove(id);
    }
    if let Some(id) = r.service {
        risk.services.remove(id);
    }
}

struct Ctx<'a> {
    file: Arc<str>,
    text: &'a str,
}

impl Ctx<'_> {
    fn loc(&self, span: Range<usize>) -> Loc {
        Loc { file: self.file.clone(), line: line_of(self.text, span.start) }
    }
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> KbError {
        KbError {
            file: self.file.to_string(),
            line: line_of(self.text, span.start),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Merge one file's risk tables into `risk`.
pub(super) fn merge(risk: &mut RiskModel, file: &str, text: &str, parts: RawRiskParts) -> Result<(), KbError> {
    let ctx = Ctx { file: Arc::from(file), text };
    if let Some(s) = parts.settings {
        merge_settings(risk, &ctx, s)?;
    }
    for d in parts.data_classes {
        let class = *d.class.get_ref();
        let axes = ImpactAxes { safety: d.safety.0, privacy: d.privacy.0, service: d.service.0 };
        risk.data_classes.insert(class, DataClassImpact { class, axes, origin: ctx.loc(d.class.span()) });
    }
    for i in parts.impacts {
        let id = i.id.get_ref().clone();
        let mut selectors = Vec::new();
        selectors.extend(i.class.map(ImpactSelector::Class));
        selectors.extend(i.criticality.map(ImpactSelector::Criticality));
        selectors.extend(i.category.map(ImpactSelector::Category));
        selectors.extend(i.clinical_function.map(|p| ImpactSelector::ClinicalFunction(p.0)));
        if selectors.len() != 1 {
            return Err(ctx.err(
                i.id.span(),
                "id",
                format!(
                    "risk_impact {id:?} needs exactly one of class, criticality, category, clinical_function (has {})",
                    selectors.len()
                ),
            ));
        }
        let rule = ImpactRule {
            id: id.clone(),
            selector: selectors.remove(0),
            data_classes: i.data_classes,
            origin: ctx.loc(i.id.span()),
        };
        risk.impacts.insert(id, rule);
    }
    for f in parts.factors {
        let id = f.id.get_ref().clone();
        let origin = ctx.loc(f.id.span());
        let Some(description) = f.description.or_else(|| risk.factors.get(&id).map(|old| old.description.clone()))
        else {
            return Err(ctx.err(
                f.id.span(),
                "description",
                format!("risk_factor {id:?} is new: give a description (what exposure it stands for)"),
            ));
        };
        risk.removed_factors.remove(&id);
        risk.factors.insert(id.clone(), RiskFactor { id, weight: f.weight.0, description, origin });
    }
    for i in parts.indicators {
        let id = i.id.get_ref().clone();
        let mut matchers = Vec::new();
        matchers.extend(i.exact.map(|s| Matcher::Exact(s.trim().to_string())));
        matchers.extend(i.prefix.map(|s| Matcher::Prefix(s.to_ascii_lowercase())));
        matchers.extend(i.contains.map(|s| Matcher::Contains(s.to_ascii_lowercase())));
        matchers.extend(i.regex.map(|p| Matcher::Regex(p.0)));
        if matchers.len() != 1 {
            return Err(ctx.err(
                i.id.span(),
                "id",
                format!(
                    "risk_indicator {id:?} needs exactly one of exact, prefix, contains, regex (has {})",
                    matchers.len()
                ),
            ));
        }
        let ind = RiskIndicator {
            id: id.clone(),
            factor: i.factor,
            field: i.field,
            matcher: matchers.remove(0),
            strength: i.strength.0,
            categories: i.categories,
            reason: i.reason,
            origin: ctx.loc(i.id.span()),
        };
        risk.indicators.insert(id, ind);
    }
    for s in parts.services {
        let id = s.id.get_ref().clone();
        let mut ports = s.ports;
        ports.extend(s.port);
        let port_range = match s.port_range {
            Some([lo, hi]) if lo > hi => {
                return Err(ctx.err(s.id.span(), "port_range", format!("range {lo}-{hi} is backwards")))
            }
            r => r.map(|[lo, hi]| (lo, hi)),
        };
        if s.apps.is_empty() && ports.is_empty() && port_range.is_none() {
            return Err(ctx.err(
                s.id.span(),
                "id",
                format!("risk_service {id:?} matches no flow: give apps, port, ports or port_range"),
            ));
        }
        let svc = RiskService {
            id: id.clone(),
            factor: s.factor,
            apps: s.apps.into_iter().map(|a| a.to_ascii_lowercase()).collect(),
            except_apps: s.except_apps.into_iter().map(|a| a.to_ascii_lowercase()).collect(),
            transport: s.protocol.unwrap_or(Transport::Any),
            ports,
            port_range,
            direction: s.direction.unwrap_or(Direction::Any),
            peer: s.peer.unwrap_or(PeerScope::Any),
            strength: s.strength.0,
            categories: s.categories,
            reason: s.reason,
            origin: ctx.loc(s.id.span()),
        };
        risk.services.insert(id, svc);
    }
    Ok(())
}

fn merge_settings(risk: &mut RiskModel, ctx: &Ctx<'_>, s: Spanned<RawRiskSettings>) -> Result<(), KbError> {
    let span = s.span();
    let s = s.into_inner();
    let t = &mut risk.settings;
    let set = |dst: &mut f64, v: Option<Unit>| {
        if let Some(v) = v {
            *dst = v.0;
        }
    };
    set(&mut t.baseline_exposure, s.baseline_exposure);
    set(&mut t.impact_floor, s.impact_floor);
    set(&mut t.safety_weight, s.safety_weight);
    set(&mut t.privacy_weight, s.privacy_weight);
    set(&mut t.service_weight, s.service_weight);
    set(&mut t.eos_initial_strength, s.eos_initial_strength);
    set(&mut t.version_unknown_factor, s.version_unknown_factor);
    set(&mut t.risky_flow_step, s.risky_flow_step);
    if let Some(d) = s.eos_full_after_days {
        t.eos_full_after_days = d;
    }
    if let Some(p) = s.peer_score_threshold {
        if !(0.0..100.0).contains(&p) {
            return Err(ctx.err(span, "peer_score_threshold", format!("{p} is outside [0, 100)")));
        }
        t.peer_score_threshold = p;
    }
    if let Some(th) = s.thresholds {
        if th.iter().any(|x| !(0.0..=100.0).contains(x)) || th.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ctx.err(span, "thresholds", format!("{th:?}: give ascending scores within [0, 100]")));
        }
        t.thresholds = th;
    }
    if let Some(n) = s.history_len {
        if n == 0 {
            return Err(ctx.err(span, "history_len", "a risk history must keep at least one point"));
        }
        t.history_len = n;
    }
    if let Some(m) = s.history_min_change {
        if !(0.0..=100.0).contains(&m) {
            return Err(ctx.err(span, "history_min_change", format!("{m} is outside [0, 100]")));
        }
        t.history_min_change = m;
    }
    t.origin = Some(ctx.loc(span));
    Ok(())
}

/// References between risk entries and to classes, checked after every file is merged (a
/// site indicator may name a builtin factor).
pub(super) fn check(kb: &KnowledgeBase) -> Result<(), KbError> {
    let at = |loc: &Loc, key: &str, message: String| KbError {
        file: loc.file.to_string(),
        line: loc.line,
        key: key.into(),
        message,
    };
    let risk = &kb.risk;
    let known = || risk.factors.keys().cloned().collect::<Vec<_>>().join(", ");
    let unknown = |f: &str| risk.factor(f).is_none() && !risk.removed_factors.contains(f);
    for i in risk.indicators.values() {
        if unknown(&i.factor) {
            return Err(at(
                &i.origin,
                "factor",
                format!("risk_indicator {:?} names unknown factor {:?}; known: {}", i.id, i.factor, known()),
            ));
        }
    }
    for s in risk.services.values() {
        if unknown(&s.factor) {
            return Err(at(
                &s.origin,
                "factor",
                format!("risk_service {:?} names unknown factor {:?}; known: {}", s.id, s.factor, known()),
            ));
        }
    }
    for r in risk.impacts.values() {
        if let ImpactSelector::Class(c) = &r.selector {
            if kb.class(c).is_none() {
                return Err(at(
                    &r.origin,
                    "class",
                    format!(
                        "risk_impact {:?}: unknown class id {c:?}; define it in a [[class]] entry or fix the spelling",
                        r.id
                    ),
                ));
            }
        }
    }
    Ok(())
}
