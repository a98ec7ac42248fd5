//! "Device in the wrong segment for its class" (issue 11 part 3, decision 0043): at each
//! site, the VLANs each device class was learned on — the VLANs where devices of the class
//! were first seen while the site learned (`[anomaly] learning period`, the same baseline
//! as the other detectors) — and the devices of that class that appear on another VLAN
//! there after learning.
//!
//! Classes are computed at read time (decision 0011), never inside `apply`, so the leader's
//! risk recorder (`super::history`) computes these findings from the replicated state and
//! its classifications and proposes them with its pass (`RiskRecord::occurrences`); every
//! node then applies the same alerts. A finding is proposed once per (device, VLAN) sighting:
//! its time is the device's first packet on that VLAN, and a finding an alert already
//! covers (same device and VLAN, last seen at or after it) is not proposed again.
//!
//! Not judged: unclassified devices (`unknown_it`, `unknown_medical`), classes with no
//! learned VLAN at the site (a class new to a site is not a segment mistake), untagged
//! segments, and sites still learning.

use crate::state::alerts::{AlertKind, Occurrence, Severity};
use crate::state::ClusterState;
use std::collections::{BTreeMap, BTreeSet};
use wardline_common::MacAddr;
use wardline_intel::model::{UNKNOWN_IT_CLASS, UNKNOWN_MEDICAL_CLASS};

/// Findings proposed per pass at most (the rest wait for the next pass).
pub const MAX_FINDINGS_PER_PASS: usize = crate::state::risk_history::MAX_OCCURRENCES_PER_RECORD;

/// Devices on a VLAN their class was not learned on at their site, not yet alerted, in
/// MAC then segment order. `classes` gives each MAC device its class id.
pub fn findings(state: &ClusterState, classes: &BTreeMap<MacAddr, String>) -> Vec<Occurrence> {
    let judged = |class: &str| class != UNKNOWN_IT_CLASS && class != UNKNOWN_MEDICAL_CLASS;
    let baselines = state.baselines();
    // (site, class) → VLANs its devices were first seen on while the site learned.
    let mut learned: BTreeMap<(&str, &str), BTreeSet<u16>> = BTreeMap::new();
    for (mac, class) in classes.iter().filter(|(_, c)| judged(c)) {
        let Some(device) = state.devices().get(mac) else { continue };
        for (key, seen) in device.segments.iter() {
            let (Some(vlan), site) = (key.vlan, state.site_name(seen.site_index)) else { continue };
            if baselines.site_learned_at(site).is_some_and(|at| seen.first_seen_us < at) {
                learned.entry((site, class.as_str())).or_default().insert(vlan);
            }
        }
    }
    // Alerts already raised: (device, target) → last seen.
    let alerted: BTreeMap<(&str, &str), u64> = state
        .alerts()
        .alerts()
        .values()
        .filter(|a| a.kind == AlertKind::WrongSegment)
        .map(|a| ((a.device.as_str(), a.target.as_str()), a.last_seen_us))
        .collect();
    let mut out = Vec::new();
    let mut emitted: BTreeSet<(String, String)> = BTreeSet::new();
    for (mac, class) in classes.iter().filter(|(_, c)| judged(c)) {
        let Some(device) = state.devices().get(mac) else { continue };
        let id = mac.to_string();
        for (key, seen) in device.segments.iter() {
            let (Some(vlan), site) = (key.vlan, state.site_name(seen.site_index)) else { continue };
            let Some(learned_at) = baselines.site_learned_at(site) else { continue };
            if seen.first_seen_us < learned_at {
                continue;
            }
            let Some(expected) = learned.get(&(site, class.as_str())) else { continue };
            if expected.contains(&vlan) {
                continue;
            }
            let target = format!("vlan {vlan}");
            if alerted.get(&(id.as_str(), target.as_str())).is_some_and(|last| *last >= seen.first_seen_us) {
                continue;
            }
            // The same VLAN through two sensors of the site: one finding (the first segment).
            if !emitted.insert((id.clone(), target.clone())) {
                continue;
            }
            let expected: Vec<String> = expected.iter().map(u16::to_string).collect();
            out.push(Occurrence {
                kind: AlertKind::WrongSegment,
                severity: Severity::High,
                device: id.clone(),
                site: site.to_string(),
                target,
                ts_us: seen.first_seen_us,
                evidence: format!(
                    "{class} seen by sensor {} at site {site} on VLAN {vlan}; {class} devices there were learned on \
                     VLANs {}",
                    key.sensor,
                    expected.join(", ")
                ),
            });
            if out.len() >= MAX_FINDINGS_PER_PASS {
                return out;
            }
        }
    }
    out
}
