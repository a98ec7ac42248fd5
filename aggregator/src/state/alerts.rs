//! Alerts in the replicated state (issue 11, decision 0024): one alert per (device, kind,
//! target), its triage lifecycle, suppression rules, and the queue of alert events waiting
//! for the SIEM forwarder with its replicated "forwarded through" watermark.
//!
//! Occurrences come from the detectors (`super::anomaly`) inside `apply`, so every node
//! opens the same alerts with the same ids at the same applied index. Triage and rules come
//! from operators through `Command`s stamped by the proposing node (who, when).
//!
//! Lifecycle: `open → acknowledged → resolved`, or `open | acknowledged → suppressed`.
//! A later occurrence of the same (device, kind, target) bumps `last_seen_us` and `count`;
//! on a resolved alert it also reopens it (state `open`, `reopened` + 1): resolving says
//! "handled", and a recurrence is news. A suppressed alert only counts.
//!
//! Bounds, never silent: at most [`MAX_ALERTS`] alerts — a new one pushes out the oldest
//! resolved alert (`resolved_dropped`), and when none is resolved the occurrence is counted
//! in `occurrences_refused`; at most [`MAX_PENDING_EVENTS`] events wait for the SIEM, older
//! ones counted in `events_dropped`; at most [`MAX_RULES`] suppression rules.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Alerts kept at most.
pub const MAX_ALERTS: usize = 10_000;
/// Alert events waiting for the SIEM forwarder at most.
pub const MAX_PENDING_EVENTS: usize = 10_000;
/// Suppression rules kept at most; adding one more is refused.
pub const MAX_RULES: usize = 1_000;
/// Longest evidence summary, note or reason kept (cut at a char boundary).
pub const MAX_TEXT_CHARS: usize = 256;
/// Lifecycle changes kept per alert (the newest; the audit log has them all).
pub const MAX_HISTORY: usize = 8;

/// What an alert is about. New kinds go last: bincode numbers the variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    NewExternalDestination,
    NewProtocol,
    NewPeer,
    NewListeningService,
    WrongSegment,
    TrafficSpike,
    NewDeviceOnClinicalVlan,
    DeviceMoved,
    PhiCleartextUnexpectedPeer,
    CleartextCredentials,
    PolicyViolation,
    SensorSilent,
    /// A sensor's heartbeat shows a problem (decision 0038; target: the condition).
    SensorUnhealthy,
    /// A sensor began a new spool epoch (wiped or reinstalled; decision 0036).
    SensorEpochChanged,
}

/// How bad. Ordered, so `severity >= high` filters work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// Where an alert is in triage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
    Suppressed,
}

/// What happened to an alert: the SIEM event types and the per-alert history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    Opened,
    Reopened,
    Acknowledged,
    Resolved,
    Suppressed,
}

macro_rules! snake_names {
    ($($t:ty),*) => {$(
        impl $t {
            /// The serde (snake_case) name: the spelling of the API, CLI and SIEM events.
            pub fn as_str(&self) -> String {
                serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.as_str())
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                serde_json::from_value(serde_json::Value::String(text.to_string()))
                    .map_err(|_| format!("{text:?} is not a {}", stringify!($t)))
            }
        }
    )*};
}
snake_names!(AlertKind, Severity, AlertState, AlertAction);

/// One occurrence a detector found: the input of [`AlertStore::occur`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    pub kind: AlertKind,
    pub severity: Severity,
    /// The device's API id (a MAC, or `site:ip[@vlan]`).
    pub device: String,
    pub site: String,
    /// The peer, service or segment the alert is about ("" when the kind has none).
    pub target: String,
    /// Capture time of the evidence, µs since the epoch (data time, never the wall clock).
    pub ts_us: u64,
    pub evidence: String,
}

/// A lifecycle change: who (operator, or `wardline` for data-driven changes), when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub action: AlertAction,
    pub by: String,
    /// Operator changes: the proposing node's clock in ms. Data-driven ones: the capture
    /// time of the occurrence in ms.
    pub at_ms: u64,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: u64,
    pub kind: AlertKind,
    pub severity: Severity,
    pub device: String,
    pub site: String,
    pub target: String,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    /// Occurrences, the first included.
    pub count: u64,
    /// What the latest occurrence showed.
    pub evidence: String,
    pub state: AlertState,
    /// Times a resolved alert was opened again by a new occurrence.
    pub reopened: u64,
    /// The newest lifecycle changes, oldest first.
    pub history: Vec<Transition>,
}

/// An operator's triage command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triage {
    pub id: u64,
    /// `Acknowledged`, `Resolved` or `Suppressed`.
    pub action: AlertAction,
    pub by: String,
    pub at_ms: u64,
    pub note: String,
}

/// Stops matching occurrences from opening (or reopening) alerts. Unset fields match
/// anything; every set field must match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionRule {
    /// Assigned on apply (0 in a proposal).
    pub id: u64,
    pub kind: Option<AlertKind>,
    pub device: Option<String>,
    pub target: Option<String>,
    pub site: Option<String>,
    pub reason: String,
    pub author: String,
    pub created_at_ms: u64,
    /// Data time (capture µs) from which the rule no longer matches; `None`: never expires.
    pub expires_us: Option<u64>,
    /// Occurrences it stopped.
    pub matched: u64,
}

impl SuppressionRule {
    pub fn matches(&self, o: &Occurrence) -> bool {
        self.kind.is_none_or(|k| k == o.kind)
            && self.device.as_deref().is_none_or(|d| d == o.device)
            && self.target.as_deref().is_none_or(|t| t == o.target)
            && self.site.as_deref().is_none_or(|s| s == o.site)
            && self.expires_us.is_none_or(|end| o.ts_us < end)
    }
}

/// One event for the SIEM: the alert as it was right after the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Position in the event stream since the cluster began (the SIEM's dedup key).
    pub seq: u64,
    pub action: AlertAction,
    /// When, in ms since the epoch (see [`Transition::at_ms`]).
    pub at_ms: u64,
    pub by: String,
    pub alert: Alert,
}

/// Why a triage or rule command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlertRefusal {
    UnknownAlert,
    /// The alert's state does not allow the action.
    NotAllowed {
        from: AlertState,
        action: AlertAction,
    },
    UnknownRule,
    RulesFull,
    /// A rule must name at least one of kind, device, target, site.
    RuleMatchesEverything,
}

impl std::fmt::Display for AlertRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlertRefusal::UnknownAlert => f.write_str("no such alert"),
            AlertRefusal::NotAllowed { from, action } => {
                write!(f, "an alert in state {from} cannot be {action}")
            }
            AlertRefusal::UnknownRule => f.write_str("no such suppression rule"),
            AlertRefusal::RulesFull => write!(f, "{MAX_RULES} suppression rules exist, the most kept; delete some"),
            AlertRefusal::RuleMatchesEverything => {
                f.write_str("a suppression rule must name at least one of kind, device, target, site")
            }
        }
    }
}

/// Counters of the store (all since the cluster began).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertCounters {
    /// Occurrences detected (before suppression).
    pub occurrences: u64,
    /// Occurrences a suppression rule stopped.
    pub suppressed_by_rule: u64,
    /// Resolved alerts pushed out by [`MAX_ALERTS`].
    pub resolved_dropped: u64,
    /// New alerts not opened because the store was full of unresolved ones.
    pub occurrences_refused: u64,
    /// Events pushed out of the SIEM queue before they were forwarded.
    pub events_dropped: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertStore {
    alerts: BTreeMap<u64, Alert>,
    /// (device, kind, target) → alert id: the dedup key.
    by_key: BTreeMap<(String, AlertKind, String), u64>,
    /// Ids handed out (the next alert gets `last_id + 1`; ids are never reused).
    last_id: u64,
    rules: BTreeMap<u64, SuppressionRule>,
    last_rule_id: u64,
    /// Events not yet forwarded, oldest first.
    pending: VecDeque<AlertEvent>,
    /// Events ever recorded (the next event's seq is this + 1).
    last_event_seq: u64,
    /// The SIEM forwarder sent every event up to and including this seq.
    forwarded_through: u64,
    counters: AlertCounters,
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((i, _)) => text[..i].to_string(),
        None => text.to_string(),
    }
}

impl AlertStore {
    pub fn alerts(&self) -> &BTreeMap<u64, Alert> {
        &self.alerts
    }

    pub fn get(&self, id: u64) -> Option<&Alert> {
        self.alerts.get(&id)
    }

    pub fn rules(&self) -> &BTreeMap<u64, SuppressionRule> {
        &self.rules
    }

    pub fn counters(&self) -> &AlertCounters {
        &self.counters
    }

    /// Events not yet forwarded, oldest first.
    pub fn pending_events(&self) -> &VecDeque<AlertEvent> {
        &self.pending
    }

    pub fn forwarded_through(&self) -> u64 {
        self.forwarded_through
    }

    pub fn last_event_seq(&self) -> u64 {
        self.last_event_seq
    }

    /// Record one detected occurrence: suppressed by a rule, a bump of its alert (reopening
    /// a resolved one), or a new alert.
    pub fn occur(&mut self, o: &Occurrence) {
        self.counters.occurrences = self.counters.occurrences.saturating_add(1);
        if let Some(rule) = self.rules.values_mut().find(|r| r.matches(o)) {
            rule.matched = rule.matched.saturating_add(1);
            self.counters.suppressed_by_rule = self.counters.suppressed_by_rule.saturating_add(1);
            return;
        }
        let key = (o.device.clone(), o.kind, o.target.clone());
        let at_ms = o.ts_us / 1000;
        if let Some(id) = self.by_key.get(&key).copied() {
            let Some(alert) = self.alerts.get_mut(&id) else { return };
            alert.count = alert.count.saturating_add(1);
            alert.first_seen_us = alert.first_seen_us.min(o.ts_us);
            if o.ts_us >= alert.last_seen_us {
                alert.last_seen_us = o.ts_us;
                alert.evidence = cut(&o.evidence);
            }
            alert.severity = alert.severity.max(o.severity);
            if alert.state == AlertState::Resolved {
                alert.state = AlertState::Open;
                alert.reopened = alert.reopened.saturating_add(1);
                let note = "a new occurrence after it was resolved".to_string();
                self.transition(id, AlertAction::Reopened, "wardline", at_ms, note);
            }
            return;
        }
        if self.alerts.len() >= MAX_ALERTS && !self.drop_oldest_resolved() {
            self.counters.occurrences_refused = self.counters.occurrences_refused.saturating_add(1);
            return;
        }
        self.last_id += 1;
        let id = self.last_id;
        self.alerts.insert(
            id,
            Alert {
                id,
                kind: o.kind,
                severity: o.severity,
                device: o.device.clone(),
                site: o.site.clone(),
                target: o.target.clone(),
                first_seen_us: o.ts_us,
                last_seen_us: o.ts_us,
                count: 1,
                evidence: cut(&o.evidence),
                state: AlertState::Open,
                reopened: 0,
                history: Vec::new(),
            },
        );
        self.by_key.insert(key, id);
        self.transition(id, AlertAction::Opened, "wardline", at_ms, String::new());
    }

    /// A data-driven resolution (the cause went away, e.g. a silent sensor delivered again):
    /// the open or acknowledged alert of (device, kind, target) resolves, by `wardline`.
    /// Returns whether one did.
    pub fn resolve_data(&mut self, device: &str, kind: AlertKind, target: &str, at_ms: u64, note: &str) -> bool {
        let key = (device.to_string(), kind, target.to_string());
        let Some(id) = self.by_key.get(&key).copied() else { return false };
        let Some(alert) = self.alerts.get_mut(&id) else { return false };
        if !matches!(alert.state, AlertState::Open | AlertState::Acknowledged) {
            return false;
        }
        alert.state = AlertState::Resolved;
        self.transition(id, AlertAction::Resolved, "wardline", at_ms, cut(note));
        true
    }

    /// Whether `triage` would apply, and why not.
    pub fn check_triage(&self, t: &Triage) -> Result<(), AlertRefusal> {
        let alert = self.alerts.get(&t.id).ok_or(AlertRefusal::UnknownAlert)?;
        let allowed = match t.action {
            AlertAction::Acknowledged => alert.state == AlertState::Open,
            AlertAction::Resolved => alert.state != AlertState::Resolved,
            AlertAction::Suppressed => matches!(alert.state, AlertState::Open | AlertState::Acknowledged),
            AlertAction::Opened | AlertAction::Reopened => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(AlertRefusal::NotAllowed { from: alert.state, action: t.action })
        }
    }

    pub fn triage(&mut self, t: &Triage) -> Result<(), AlertRefusal> {
        self.check_triage(t)?;
        let state = match t.action {
            AlertAction::Acknowledged => AlertState::Acknowledged,
            AlertAction::Resolved => AlertState::Resolved,
            _ => AlertState::Suppressed,
        };
        if let Some(alert) = self.alerts.get_mut(&t.id) {
            alert.state = state;
        }
        self.transition(t.id, t.action, &t.by, t.at_ms, cut(&t.note));
        Ok(())
    }

    /// Whether `rule` would be added.
    pub fn check_rule(&self, rule: &SuppressionRule) -> Result<(), AlertRefusal> {
        if rule.kind.is_none() && rule.device.is_none() && rule.target.is_none() && rule.site.is_none() {
            return Err(AlertRefusal::RuleMatchesEverything);
        }
        if self.rules.len() >= MAX_RULES {
            return Err(AlertRefusal::RulesFull);
        }
        Ok(())
    }

    /// Add a rule; returns its id.
    pub fn add_rule(&mut self, rule: &SuppressionRule) -> Result<u64, AlertRefusal> {
        self.check_rule(rule)?;
        self.last_rule_id += 1;
        let mut r = rule.clone();
        r.id = self.last_rule_id;
        r.matched = 0;
        r.reason = cut(&r.reason);
        self.rules.insert(r.id, r);
        Ok(self.last_rule_id)
    }

    pub fn remove_rule(&mut self, id: u64) -> Result<SuppressionRule, AlertRefusal> {
        self.rules.remove(&id).ok_or(AlertRefusal::UnknownRule)
    }

    /// The forwarder sent every event through `through`: they leave the queue.
    pub fn forwarded(&mut self, through: u64) {
        self.forwarded_through = self.forwarded_through.max(through.min(self.last_event_seq));
        while self.pending.front().is_some_and(|e| e.seq <= self.forwarded_through) {
            self.pending.pop_front();
        }
    }

    fn transition(&mut self, id: u64, action: AlertAction, by: &str, at_ms: u64, note: String) {
        let Some(alert) = self.alerts.get_mut(&id) else { return };
        alert.history.push(Transition { action, by: by.to_string(), at_ms, note });
        if alert.history.len() > MAX_HISTORY {
            alert.history.remove(0);
        }
        self.last_event_seq += 1;
        self.pending.push_back(AlertEvent {
            seq: self.last_event_seq,
            action,
            at_ms,
            by: by.to_string(),
            alert: alert.clone(),
        });
        while self.pending.len() > MAX_PENDING_EVENTS {
            self.pending.pop_front();
            self.counters.events_dropped = self.counters.events_dropped.saturating_add(1);
        }
    }

    /// Push out the resolved alert with the lowest id (the oldest); false if none is resolved.
    fn drop_oldest_resolved(&mut self) -> bool {
        let Some(id) = self.alerts.values().find(|a| a.state == AlertState::Resolved).map(|a| a.id) else {
            return false;
        };
        if let Some(a) = self.alerts.remove(&id) {
            self.by_key.remove(&(a.device, a.kind, a.target));
        }
        self.counters.resolved_dropped = self.counters.resolved_dropped.saturating_add(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occ(device: &str, kind: AlertKind, target: &str, ts_us: u64) -> Occurrence {
        Occurrence {
            kind,
            severity: Severity::Medium,
            device: device.into(),
            site: "north".into(),
            target: target.into(),
            ts_us,
            evidence: format!("seen at {ts_us}"),
        }
    }

    fn triage(id: u64, action: AlertAction) -> Triage {
        Triage { id, action, by: "ana".into(), at_ms: 5, note: "checked".into() }
    }

    #[test]
    fn one_alert_per_device_kind_and_target_and_later_occurrences_count() {
        let mut s = AlertStore::default();
        s.occur(&occ("m1", AlertKind::NewPeer, "10.0.0.9", 2_000));
        s.occur(&occ("m1", AlertKind::NewPeer, "10.0.0.9", 5_000));
        s.occur(&occ("m1", AlertKind::NewPeer, "10.0.0.9", 1_000));
        s.occur(&occ("m1", AlertKind::NewPeer, "10.0.0.10", 3_000));
        s.occur(&occ("m1", AlertKind::NewProtocol, "10.0.0.9", 3_000));
        s.occur(&occ("m2", AlertKind::NewPeer, "10.0.0.9", 3_000));
        assert_eq!(s.alerts().len(), 4);
        let a = s.get(1).unwrap();
        assert_eq!((a.count, a.first_seen_us, a.last_seen_us), (3, 1_000, 5_000));
        assert_eq!(a.evidence, "seen at 5000", "the latest occurrence's evidence");
        assert_eq!(s.counters().occurrences, 6);
        // Only openings are events; bumps are not.
        assert_eq!(
            s.pending_events().iter().map(|e| (e.seq, e.alert.id)).collect::<Vec<_>>(),
            [(1, 1), (2, 2), (3, 3), (4, 4)]
        );
    }

    #[test]
    fn lifecycle_with_who_and_when_and_a_resolved_alert_reopens() {
        let mut s = AlertStore::default();
        s.occur(&occ("m1", AlertKind::DeviceMoved, "south", 1_000_000));
        assert_eq!(s.triage(&triage(1, AlertAction::Resolved)), Ok(()));
        assert_eq!(
            s.triage(&triage(1, AlertAction::Acknowledged)),
            Err(AlertRefusal::NotAllowed { from: AlertState::Resolved, action: AlertAction::Acknowledged })
        );
        s.occur(&occ("m1", AlertKind::DeviceMoved, "south", 2_000_000));
        let a = s.get(1).unwrap();
        assert_eq!((a.state, a.reopened, a.count), (AlertState::Open, 1, 2));
        s.triage(&triage(1, AlertAction::Acknowledged)).unwrap();
        assert!(s.triage(&triage(1, AlertAction::Acknowledged)).is_err(), "acknowledged twice");
        s.triage(&triage(1, AlertAction::Suppressed)).unwrap();
        s.occur(&occ("m1", AlertKind::DeviceMoved, "south", 3_000_000));
        let a = s.get(1).unwrap();
        assert_eq!((a.state, a.count), (AlertState::Suppressed, 3), "a suppressed alert only counts");
        let history: Vec<_> = a.history.iter().map(|t| (t.action, t.by.as_str(), t.at_ms)).collect();
        assert_eq!(
            history,
            [
                (AlertAction::Opened, "wardline", 1_000),
                (AlertAction::Resolved, "ana", 5),
                (AlertAction::Reopened, "wardline", 2_000),
                (AlertAction::Acknowledged, "ana", 5),
                (AlertAction::Suppressed, "ana", 5),
            ]
        );
        assert_eq!(s.triage(&triage(9, AlertAction::Resolved)), Err(AlertRefusal::UnknownAlert));
        assert_eq!(s.pending_events().len(), 5);
    }

    #[test]
    fn rules_stop_matching_occurrences_until_they_expire_in_data_time() {
        let mut s = AlertStore::default();
        let rule = SuppressionRule {
            id: 0,
            kind: Some(AlertKind::NewPeer),
            device: None,
            target: None,
            site: Some("north".into()),
            reason: "scanner".into(),
            author: "ana".into(),
            created_at_ms: 1,
            expires_us: Some(10_000),
            matched: 0,
        };
        let everything = SuppressionRule { kind: None, site: None, ..rule.clone() };
        assert_eq!(s.add_rule(&everything), Err(AlertRefusal::RuleMatchesEverything));
        assert_eq!(s.add_rule(&rule), Ok(1));
        s.occur(&occ("m1", AlertKind::NewPeer, "10.0.0.9", 5_000));
        s.occur(&occ("m1", AlertKind::NewProtocol, "tcp/23", 5_000));
        assert_eq!(s.alerts().len(), 1, "only the other kind opened");
        s.occur(&occ("m1", AlertKind::NewPeer, "10.0.0.9", 10_000));
        assert_eq!(s.alerts().len(), 2, "an expired rule stops nothing");
        assert_eq!((s.rules()[&1].matched, s.counters().suppressed_by_rule), (1, 1));
        assert_eq!(s.remove_rule(1).unwrap().reason, "scanner");
        assert_eq!(s.remove_rule(1), Err(AlertRefusal::UnknownRule));
    }

    #[test]
    fn the_store_is_bounded_dropping_the_oldest_resolved_and_counting_what_it_refuses() {
        let mut s = AlertStore::default();
        for i in 0..MAX_ALERTS as u64 {
            s.occur(&occ(&format!("m{i}"), AlertKind::NewPeer, "x", i));
        }
        s.triage(&triage(7, AlertAction::Resolved)).unwrap();
        s.triage(&triage(3, AlertAction::Resolved)).unwrap();
        s.occur(&occ("new-1", AlertKind::NewPeer, "x", 1));
        assert!(s.get(3).is_none() && s.get(7).is_some(), "the oldest resolved alert went first");
        s.occur(&occ("new-2", AlertKind::NewPeer, "x", 1));
        s.occur(&occ("new-3", AlertKind::NewPeer, "x", 1));
        assert_eq!(s.alerts().len(), MAX_ALERTS);
        assert_eq!((s.counters().resolved_dropped, s.counters().occurrences_refused), (2, 1));
        // The dropped alert's key (id 3 was m2's) is free: the device alerts again with a
        // fresh id.
        s.triage(&triage(MAX_ALERTS as u64 + 1, AlertAction::Resolved)).unwrap();
        s.occur(&occ("m2", AlertKind::NewPeer, "x", 9));
        let last = s.alerts().values().last().unwrap();
        assert_eq!((last.id, last.device.as_str()), (MAX_ALERTS as u64 + 3, "m2"));
        // The SIEM queue is bounded too, counting what it pushed out.
        assert_eq!(s.pending_events().len(), MAX_PENDING_EVENTS);
        assert_eq!(s.counters().events_dropped, s.last_event_seq() - MAX_PENDING_EVENTS as u64);
    }

    #[test]
    fn forwarded_events_leave_the_queue_and_the_watermark_never_goes_back() {
        let mut s = AlertStore::default();
        for i in 0..4 {
            s.occur(&occ("m1", AlertKind::NewPeer, &format!("p{i}"), i));
        }
        s.forwarded(2);
        assert_eq!(s.pending_events().iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        s.forwarded(1);
        assert_eq!(s.forwarded_through(), 2);
        s.forwarded(99);
        assert_eq!(s.forwarded_through(), 4, "never past the last event");
        assert!(s.pending_events().is_empty());
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(AlertKind::NewDeviceOnClinicalVlan.as_str(), "new_device_on_clinical_vlan");
        assert_eq!("cleartext_credentials".parse::<AlertKind>(), Ok(AlertKind::CleartextCredentials));
        assert!("nope".parse::<Severity>().is_err());
        assert!(Severity::Critical > Severity::High);
    }
}
