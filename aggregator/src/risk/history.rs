//! The leader's risk recorder (decision 0043): every [`DEFAULT_INTERVAL`] (environment
//! `WARDLINE_RISK_HISTORY_SECS`; `0` turns it off) and after every vulnerability feed
//! import, the node that leads scores every device as the roll-up does (evidence, OS and
//! vulnerabilities; no flows), and proposes `Command::RecordRiskHistory` with the scores
//! that moved by at least `[risk] history_min_change` since their last recorded point, each
//! with its reason (the trigger and which factors appeared, left or changed), and the
//! site roll-ups that changed, and the devices found on a VLAN their class was not learned
//! on at their site (`super::class_segments`, opened as `wrong_segment` alerts on apply).
//! Followers only apply: the history is replicated state, the
//! same on every node.
//!
//! Also served here: `GET /api/v1/devices/{id}/risk/history` and `GET /api/v1/risk/history`.

use crate::query::risk::DeviceRiskRow;
use crate::query::QueryService;
use crate::state::alerts::Occurrence;
use crate::state::risk_history::{
    FactorPoints, RiskRecord, ScoreChange, SitePoint, SiteRollup, MAX_CHANGES_PER_RECORD, MAX_REASON_BYTES,
};
use crate::state::Command;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wardline_common::MacAddr;

/// Environment variable with the recorder's interval in seconds (`0`: off).
pub const INTERVAL_ENV: &str = "WARDLINE_RISK_HISTORY_SECS";
/// How often the leader re-scores by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// The recorder's interval, or None when `WARDLINE_RISK_HISTORY_SECS=0` turns it off. (During
/// a rolling upgrade the recorder waits by itself until every node knows `RecordRiskHistory`.)
pub fn interval() -> Option<Duration> {
    match std::env::var(INTERVAL_ENV) {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                tracing::warn!("{INTERVAL_ENV}={v:?} is not a number of seconds; using {DEFAULT_INTERVAL:?}");
                Some(DEFAULT_INTERVAL)
            }
        },
        Err(_) => Some(DEFAULT_INTERVAL),
    }
}

/// What one pass proposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassSummary {
    /// Devices whose score moved (or that were scored for the first time).
    pub changes: usize,
    /// Sites whose roll-up changed.
    pub sites: usize,
    /// Alert occurrences proposed (devices on a VLAN their class was not learned on).
    pub alerts: usize,
    /// Log entries proposed.
    pub entries: usize,
}

fn fmt_points(p: f64) -> String {
    format!("{p:.1}")
}

/// Why a score moved: the factors that appeared (+), left (−) or changed points.
fn explain_change(trigger: &str, before: Option<(f64, &[FactorPoints])>, row: &DeviceRiskRow) -> String {
    let mut parts = Vec::new();
    match before {
        None => {
            for f in &row.factor_points {
                parts.push(format!("{} +{}", f.factor, fmt_points(f.points)));
            }
            let factors = if parts.is_empty() { "no factor".to_string() } else { parts.join(", ") };
            crate::state::risk_history::cut(
                &format!("{trigger}: first score {:.1}: {factors}", row.score),
                MAX_REASON_BYTES,
            )
        }
        Some((old_score, old)) => {
            for f in &row.factor_points {
                match old.iter().find(|o| o.factor == f.factor) {
                    None => parts.push(format!("+{} (+{})", f.factor, fmt_points(f.points))),
                    Some(o) if (o.points - f.points).abs() >= 0.1 => {
                        parts.push(format!("{} {}→{}", f.factor, fmt_points(o.points), fmt_points(f.points)))
                    }
                    Some(_) => {}
                }
            }
            for o in old.iter().filter(|o| row.factor_points.iter().all(|f| f.factor != o.factor)) {
                parts.push(format!("-{} (-{})", o.factor, fmt_points(o.points)));
            }
            let what = if parts.is_empty() { "impact changed".to_string() } else { parts.join(", ") };
            crate::state::risk_history::cut(
                &format!("{trigger}: {old_score:.1} → {:.1}: {what}", row.score),
                MAX_REASON_BYTES,
            )
        }
    }
}

/// Per site: devices, max, mean (one decimal), devices at or above each threshold.
pub fn site_rollups(rows: &[DeviceRiskRow], thresholds: &[f64]) -> Vec<SiteRollup> {
    let mut by_site: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in rows {
        by_site.entry(r.site.as_str()).or_default().push(r.score);
    }
    by_site
        .into_iter()
        .map(|(site, scores)| SiteRollup {
            site: site.to_string(),
            devices: scores.len() as u64,
            max: scores.iter().copied().fold(0.0, f64::max),
            mean: (scores.iter().sum::<f64>() / scores.len() as f64 * 10.0).round() / 10.0,
            above: thresholds.iter().map(|t| scores.iter().filter(|s| **s >= *t).count() as u64).collect(),
        })
        .collect()
}

fn same_site(last: &SitePoint, now: &SiteRollup) -> bool {
    last.devices == now.devices && last.max == now.max && last.mean == now.mean && last.above == now.above
}

/// What a pass records against: `[risk]` thresholds and `history_min_change`, its trigger
/// (the start of every reason), the feed version matched and the leader's clock.
#[derive(Clone, Copy, Debug)]
pub struct Pass<'a> {
    pub thresholds: &'a [f64],
    pub min_change: f64,
    pub trigger: &'a str,
    pub feeds_version: u64,
    pub at_ms: u64,
}

/// The records one pass proposes, from the scored rows and what the history holds: the
/// changes in parts of at most [`MAX_CHANGES_PER_RECORD`], the sites with the last part.
pub fn records_for(
    rows: &[DeviceRiskRow],
    history: &crate::state::risk_history::RiskHistoryStore,
    pass: &Pass,
    occurrences: Vec<Occurrence>,
) -> Vec<RiskRecord> {
    let Pass { thresholds, min_change, trigger, feeds_version, at_ms } = *pass;
    let mut changes = Vec::new();
    for row in rows {
        let before = history.device(&row.id).and_then(|h| h.points.back().map(|p| (p.score, h.factors.as_slice())));
        if let Some((old, _)) = before {
            if (row.score - old).abs() < min_change.max(0.05) {
                continue;
            }
        }
        changes.push(ScoreChange {
            device: row.id.clone(),
            score: row.score,
            as_of: row.as_of.to_string(),
            reason: explain_change(trigger, before, row),
            factors: row.factor_points.clone(),
        });
    }
    let sites: Vec<SiteRollup> = site_rollups(rows, thresholds)
        .into_iter()
        .filter(|s| history.site(&s.site).and_then(|p| p.back()).is_none_or(|last| !same_site(last, s)))
        .collect();
    if changes.is_empty() && sites.is_empty() && occurrences.is_empty() {
        return Vec::new();
    }
    let mut records: Vec<RiskRecord> = changes
        .chunks(MAX_CHANGES_PER_RECORD)
        .map(|c| RiskRecord {
            at_ms,
            trigger: trigger.to_string(),
            feeds_version,
            changes: c.to_vec(),
            sites: Vec::new(),
            occurrences: Vec::new(),
        })
        .collect();
    if records.is_empty() {
        records.push(RiskRecord {
            at_ms,
            trigger: trigger.to_string(),
            feeds_version,
            changes: vec![],
            sites: vec![],
            occurrences: vec![],
        });
    }
    if let Some(last) = records.last_mut() {
        last.sites = sites;
        last.occurrences = occurrences;
    }
    records
}

/// Score every device and propose what moved (on the leader: a follower's proposal is
/// refused by Raft).
pub async fn record_once(q: &QueryService, trigger: &str, at_ms: u64) -> Result<PassSummary, String> {
    // A node of an older version cannot decode the command and would stop on it.
    q.raft()
        .cluster_supports(crate::raft::FEATURE_RISK_HISTORY)
        .await
        .map_err(|why| format!("risk history is not recorded until every node runs this version: {why}"))?;
    let rows = q.risk_rows().await;
    let feeds_version = q.compiled_feeds().await.version;
    let settings = &q.kb().risk.settings;
    let (thresholds, min_change) = (settings.thresholds.clone(), settings.history_min_change);
    // Classes as the rows computed them, for the class-segment check.
    let classes: BTreeMap<MacAddr, String> =
        rows.iter().filter_map(|r| Some((r.mac.as_deref()?.parse::<MacAddr>().ok()?, r.class.clone()))).collect();
    let records = q
        .raft()
        .read_state(|s| {
            let found = super::class_segments::findings(s, &classes);
            let pass = Pass { thresholds: &thresholds, min_change, trigger, feeds_version, at_ms };
            records_for(&rows, s.risk_history(), &pass, found)
        })
        .await;
    let mut summary = PassSummary::default();
    for r in records {
        let (changes, sites) = (r.changes.len(), r.sites.len());
        summary.alerts += r.occurrences.len();
        let applied = q.raft().propose(Command::RecordRiskHistory(r)).await.map_err(|e| e.to_string())?.applied;
        if !applied {
            return Err("the cluster refused a risk history record".into());
        }
        summary.changes += changes;
        summary.sites += sites;
        summary.entries += 1;
    }
    Ok(summary)
}

/// Run [`record_once`] every `every` on whichever node leads, until `stop` turns true.
pub async fn run(query: Arc<QueryService>, every: Duration, stop: tokio::sync::watch::Receiver<bool>) {
    crate::raft::every_while_leader(query.raft(), every, "record risk history", stop, || {
        let query = query.clone();
        async move { record_once(&query, "re-score", crate::auth::now_ms()).await.map(|s| s.entries > 0) }
    })
    .await
}
