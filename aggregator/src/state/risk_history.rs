//! Risk history replicated through Raft (issue 11, decision 0043): the leader scores every
//! device (the roll-up's score: evidence, OS and vulnerabilities, no flows) periodically and
//! after a vulnerability feed import, and proposes only the scores that moved, each with
//! its reason ([`RiskRecord`]); per site it proposes the roll-up when it changed. Every node
//! applies the same entries, so every node answers the same history.
//!
//! Bounded: [`MAX_POINTS_PER_DEVICE`] points per device (the oldest leave first, counted in
//! `points_dropped`), [`MAX_DEVICES`] devices (further new devices counted in
//! `devices_dropped`), [`MAX_SITE_POINTS`] points per site and [`MAX_SITES`] sites, reasons
//! cut to [`MAX_REASON_BYTES`].

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Points kept per device (newest).
pub const MAX_POINTS_PER_DEVICE: usize = 16;
/// Devices with a history at most.
pub const MAX_DEVICES: usize = 2_000_000;
/// Points kept per site (newest).
pub const MAX_SITE_POINTS: usize = 512;
/// Sites with a history at most.
pub const MAX_SITES: usize = 1_000;
/// Longest reason kept, bytes.
pub const MAX_REASON_BYTES: usize = 240;
/// Score changes in one log entry at most (a full first pass over 1M devices takes 50).
pub const MAX_CHANGES_PER_RECORD: usize = 20_000;
/// Alert occurrences in one log entry at most.
pub const MAX_OCCURRENCES_PER_RECORD: usize = 1_000;
/// Factor names kept per device (there are 11 factors).
pub const MAX_FACTORS: usize = 16;

/// One factor's share of a score, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactorPoints {
    pub factor: String,
    /// How much the score would drop without it.
    pub points: f64,
}

/// One device's new score, as the leader proposes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreChange {
    /// The device id (`MAC` or `site:ip[@vlan]`).
    pub device: String,
    pub score: f64,
    /// The data day the score is for (the day of the device's last packet).
    pub as_of: String,
    /// Why it moved: the trigger and the factors that appeared, left or changed.
    pub reason: String,
    /// Every fired factor with its points (the next change is explained against these).
    pub factors: Vec<FactorPoints>,
}

/// A site's roll-up at one time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteRollup {
    pub site: String,
    pub devices: u64,
    pub max: f64,
    pub mean: f64,
    /// Devices at or above each `[risk]` threshold, in threshold order.
    pub above: Vec<u64>,
}

/// `Command::RecordRiskHistory`: one part of a pass of the leader's recorder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskRecord {
    /// The leader's clock when it scored (ms); applied times never go back (a new leader
    /// whose clock is behind records at the last time applied).
    pub at_ms: u64,
    /// What started the pass ("periodic re-score", "vulnerability feed import …").
    pub trigger: String,
    /// The replicated feed version the pass matched against.
    pub feeds_version: u64,
    pub changes: Vec<ScoreChange>,
    /// Sites whose roll-up changed (in the last part of a pass).
    pub sites: Vec<SiteRollup>,
    /// Alerts the pass found (devices on a VLAN their class was not learned on at their
    /// site: `risk::class_segments`), opened or bumped on apply like detector occurrences.
    pub occurrences: Vec<crate::state::alerts::Occurrence>,
}

/// One point of a device's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskPoint {
    pub at_ms: u64,
    pub score: f64,
    pub as_of: String,
    pub reason: String,
}

/// One point of a site's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SitePoint {
    pub at_ms: u64,
    pub devices: u64,
    pub max: f64,
    pub mean: f64,
    pub above: Vec<u64>,
}

/// One device's history and its latest factors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceHistory {
    pub points: VecDeque<RiskPoint>,
    pub factors: Vec<FactorPoints>,
}

/// Counters of the history part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryCounters {
    /// Records (log entries) applied.
    pub records: u64,
    /// Score changes applied.
    pub changes: u64,
    /// Oldest points that left a full device or site history.
    pub points_dropped: u64,
    /// Changes of new devices refused because [`MAX_DEVICES`] have a history.
    pub devices_dropped: u64,
    /// Site roll-ups refused because [`MAX_SITES`] have a history.
    pub sites_dropped: u64,
}

/// The replicated risk history (state format 11).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RiskHistoryStore {
    devices: BTreeMap<String, DeviceHistory>,
    sites: BTreeMap<String, VecDeque<SitePoint>>,
    /// Time of the last record applied (ms).
    last_at_ms: u64,
    /// Feed version of the last record applied.
    feeds_version: u64,
    counters: HistoryCounters,
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl RiskHistoryStore {
    pub fn device(&self, id: &str) -> Option<&DeviceHistory> {
        self.devices.get(id)
    }

    pub fn devices(&self) -> &BTreeMap<String, DeviceHistory> {
        &self.devices
    }

    pub fn site(&self, site: &str) -> Option<&VecDeque<SitePoint>> {
        self.sites.get(site)
    }

    pub fn sites(&self) -> &BTreeMap<String, VecDeque<SitePoint>> {
        &self.sites
    }

    pub fn last_at_ms(&self) -> u64 {
        self.last_at_ms
    }

    pub fn feeds_version(&self) -> u64 {
        self.feeds_version
    }

    pub fn counters(&self) -> &HistoryCounters {
        &self.counters
    }

    /// Why a record cannot be applied (only malformed ones: too many changes).
    pub fn check(&self, r: &RiskRecord) -> Result<(), String> {
        if r.changes.len() > MAX_CHANGES_PER_RECORD
            || r.sites.len() > MAX_SITES
            || r.occurrences.len() > MAX_OCCURRENCES_PER_RECORD
        {
            return Err(format!(
                "a risk history record holds at most {MAX_CHANGES_PER_RECORD} changes, {MAX_SITES} sites and \
                 {MAX_OCCURRENCES_PER_RECORD} alert occurrences"
            ));
        }
        Ok(())
    }

    /// Apply one record; false (nothing changed) when it is malformed.
    pub fn apply(&mut self, r: &RiskRecord) -> bool {
        if self.check(r).is_err() {
            return false;
        }
        let at_ms = r.at_ms.max(self.last_at_ms);
        self.last_at_ms = at_ms;
        self.feeds_version = self.feeds_version.max(r.feeds_version);
        self.counters.records += 1;
        for c in &r.changes {
            if !self.devices.contains_key(&c.device) && self.devices.len() >= MAX_DEVICES {
                self.counters.devices_dropped += 1;
                continue;
            }
            let h = self.devices.entry(c.device.clone()).or_default();
            h.points.push_back(RiskPoint {
                at_ms,
                score: c.score,
                as_of: cut(&c.as_of, 16),
                reason: cut(&c.reason, MAX_REASON_BYTES),
            });
            while h.points.len() > MAX_POINTS_PER_DEVICE {
                h.points.pop_front();
                self.counters.points_dropped += 1;
            }
            h.factors = c
                .factors
                .iter()
                .take(MAX_FACTORS)
                .map(|f| FactorPoints { factor: cut(&f.factor, 64), points: f.points })
                .collect();
            self.counters.changes += 1;
        }
        for s in &r.sites {
            if !self.sites.contains_key(&s.site) && self.sites.len() >= MAX_SITES {
                self.counters.sites_dropped += 1;
                continue;
            }
            let points = self.sites.entry(cut(&s.site, 256)).or_default();
            points.push_back(SitePoint {
                at_ms,
                devices: s.devices,
                max: s.max,
                mean: s.mean,
                above: s.above.iter().copied().take(16).collect(),
            });
            while points.len() > MAX_SITE_POINTS {
                points.pop_front();
                self.counters.points_dropped += 1;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(device: &str, score: f64, reason: &str) -> ScoreChange {
        ScoreChange {
            device: device.into(),
            score,
            as_of: "2026-01-01".into(),
            reason: reason.into(),
            factors: vec![FactorPoints { factor: "vulnerability".into(), points: score / 2.0 }],
        }
    }

    fn record(at_ms: u64, changes: Vec<ScoreChange>) -> RiskRecord {
        RiskRecord { at_ms, trigger: "test".into(), feeds_version: 1, changes, sites: vec![], occurrences: vec![] }
    }

    #[test]
    fn history_survives_a_snapshot_round_trip_and_its_occurrences_open_alerts() {
        use crate::state::alerts::{AlertKind, Occurrence, Severity};
        use crate::state::{ClusterState, Command};
        let mut st = ClusterState::new();
        let mut r = record(7, vec![change("00:00:5e:00:00:01", 42.5, "first")]);
        r.sites = vec![SiteRollup { site: "ward".into(), devices: 1, max: 42.5, mean: 42.5, above: vec![1, 0, 0] }];
        r.occurrences = vec![Occurrence {
            kind: AlertKind::WrongSegment,
            severity: Severity::High,
            device: "00:00:5e:00:00:01".into(),
            site: "ward".into(),
            target: "vlan 60".into(),
            ts_us: 1_000,
            evidence: "infusion_pump seen on VLAN 60".into(),
        }];
        assert!(st.apply(&Command::RecordRiskHistory(r)).applied);
        assert_eq!(st.alerts().alerts().len(), 1);
        let bytes = bincode::serde::encode_to_vec(&st, bincode::config::standard()).unwrap();
        let (back, _): (ClusterState, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back.risk_history(), st.risk_history());
        assert_eq!(back.risk_history().site("ward").unwrap().len(), 1);
        assert_eq!(back.risk_history().device("00:00:5e:00:00:01").unwrap().points[0].score, 42.5);
    }

    #[test]
    fn points_are_bounded_ordered_and_never_go_back_in_time() {
        let mut h = RiskHistoryStore::default();
        for i in 0..(MAX_POINTS_PER_DEVICE as u64 + 3) {
            assert!(h.apply(&record(1_000 + i, vec![change("a", i as f64, "r")])));
        }
        let a = h.device("a").unwrap();
        assert_eq!(a.points.len(), MAX_POINTS_PER_DEVICE);
        assert_eq!(a.points[0].score, 3.0, "the oldest left first");
        assert_eq!(h.counters().points_dropped, 3);
        // A leader whose clock is behind records at the last time applied.
        assert!(h.apply(&record(5, vec![change("a", 99.0, "late clock")])));
        assert_eq!(h.device("a").unwrap().points.back().unwrap().at_ms, 1_000 + MAX_POINTS_PER_DEVICE as u64 + 2);
        // Reasons are cut on a character boundary.
        let long = "é".repeat(MAX_REASON_BYTES);
        assert!(h.apply(&record(2_000, vec![change("b", 1.0, &long)])));
        let kept = &h.device("b").unwrap().points[0].reason;
        assert!(kept.len() <= MAX_REASON_BYTES && long.starts_with(kept.as_str()));
        // Too many changes in one record: refused whole.
        let many = (0..=MAX_CHANGES_PER_RECORD).map(|i| change(&i.to_string(), 1.0, "")).collect();
        assert!(!h.apply(&record(3_000, many)));
        assert_eq!(h.devices().len(), 2);
    }
}
