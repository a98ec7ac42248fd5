//! What a chaos run must end with, checked from what every node and ClickHouse report:
//!
//! - every batch acked to a sensor is applied exactly once on every node (per-sensor
//!   watermark = acked batches, batches applied = watermark, no sequence gap);
//! - the replicated flow totals of every node equal the ground truth (no double count);
//! - the inventory is identical on every node and holds every ground-truth device;
//! - ClickHouse's deduplicated flows equal the ground truth, per flow, packets and bytes;
//! - never two leaders in one term (from samples taken during the run);
//! - service came back (the next batch applied) within the stated time after the fault.

use crate::expect::{flow_differences, inventory_differences, truth_flows, FlowKey};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long service may take to come back after a fault ends (next batch applied): a
/// sensor retries with exponential backoff capped at 30 s (sensor `backoff_max`), so after
/// a long fault its next try can be 30 s away; 5 s more for a restart and an election.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(35);

/// One node's answers at the end of a run.
#[derive(Clone, Debug)]
pub struct NodeReport {
    pub node_id: u64,
    /// `GET /api/v1/sensors`.
    pub sensors: Value,
    /// `GET /api/v1/flows/totals`.
    pub totals: Value,
    /// `GET /api/v1/inventory`.
    pub inventory: Value,
}

/// A `(node, term, leader)` sample of `GET /api/v1/cluster` taken during the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderSample {
    pub node_id: u64,
    pub term: u64,
    pub leader: u64,
}

/// The run's measured outcome (one line of `just chaos`) and every violated property.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub acked: u64,
    /// Batches applied on the node that applied the fewest.
    pub applied: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Fault end → next batch applied; None when no batch was left to send by then.
    pub recovery: Option<Duration>,
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn line(&self, name: &str, seed: u64) -> String {
        let rec = match self.recovery {
            Some(d) => format!("{:.1}s", d.as_secs_f64()),
            None => "n/a".into(),
        };
        format!(
            "{name:<18} seed={seed:<20} acked={:<5} applied={:<5} lost={:<3} duplicated={:<3} recovery={rec:<6} {}",
            self.acked,
            self.applied,
            self.lost,
            self.duplicated,
            if self.problems.is_empty() {
                "OK".to_string()
            } else {
                format!("FAILED ({} problems)", self.problems.len())
            }
        )
    }
}

/// Every term in which the samples saw two different leaders.
pub fn split_brain(samples: &[LeaderSample]) -> Vec<String> {
    let mut by_term: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for s in samples {
        by_term.entry(s.term).or_default().insert(s.leader);
    }
    by_term
        .into_iter()
        .filter(|(_, leaders)| leaders.len() > 1)
        .map(|(term, leaders)| format!("two leaders in term {term}: nodes {leaders:?}"))
        .collect()
}

/// The inventory reduced to what must be identical everywhere (sorted by device id).
fn inventory_digest(inv: &Value) -> Vec<String> {
    let mut out: Vec<String> = inv["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let mut ips: Vec<String> = d["ips"].as_array().into_iter().flatten().map(|v| v.to_string()).collect();
            ips.sort();
            format!(
                "{} {} ips={} vendor={} host={} class={}",
                d["id"],
                d["mac"],
                ips.join(","),
                d["vendor"],
                d["hostname"],
                d["classification"]["class"]["value"]
            )
        })
        .collect();
    out.sort();
    out
}

/// Check the end state. `acked` is per sensor (batches every sensor was acked);
/// `clickhouse` the deduplicated flows stored there, when the run used ClickHouse.
pub fn check(
    acked: &BTreeMap<String, u64>,
    nodes: &[NodeReport],
    truth: &Value,
    clickhouse: Option<&BTreeMap<FlowKey, (u64, u64)>>,
    samples: &[LeaderSample],
    recovery: Option<Duration>,
) -> Verdict {
    let mut v = Verdict { acked: acked.values().sum(), recovery, ..Verdict::default() };
    let mut min_applied = u64::MAX;
    for n in nodes {
        let mut node_applied = 0;
        for (sensor, &want) in acked {
            let rec = &n.sensors["sensors"][sensor];
            let last = rec["last_seq"].as_u64().unwrap_or(0);
            let applied = rec["batches_applied"].as_u64().unwrap_or(0);
            let gaps = rec["seq_gaps"].as_u64().unwrap_or(0);
            node_applied += applied;
            if last < want {
                v.problems
                    .push(format!("node {}: sensor {sensor} acked {want} batches, watermark only {last}", n.node_id));
            }
            if applied < want {
                v.lost = v.lost.max(want - applied);
                if last >= want {
                    v.problems.push(format!(
                        "node {}: sensor {sensor} acked {want} batches, only {applied} applied (the watermark passed the rest)",
                        n.node_id
                    ));
                }
            }
            if applied > last {
                v.duplicated = v.duplicated.max(applied - last);
                v.problems.push(format!(
                    "node {}: sensor {sensor} has {applied} batches applied for watermark {last} (applied twice)",
                    n.node_id
                ));
            }
            if gaps > 0 {
                v.problems.push(format!("node {}: sensor {sensor} skipped sequence numbers {gaps} times", n.node_id));
            }
        }
        min_applied = min_applied.min(node_applied);
    }
    v.applied = if nodes.is_empty() { 0 } else { min_applied };

    let expected = truth_flows(truth);
    let (packets, bytes): (u64, u64) = expected.values().fold((0, 0), |a, f| (a.0 + f.0, a.1 + f.1));
    for n in nodes {
        let r = &n.totals["replicated"];
        let got = (r["packets"].as_u64().unwrap_or(0), r["bytes"].as_u64().unwrap_or(0));
        if got != (packets, bytes) {
            v.problems.push(format!(
                "node {}: replicated (packets, bytes) {got:?}, ground truth {:?}",
                n.node_id,
                (packets, bytes)
            ));
            if got.0 > packets {
                v.duplicated = v.duplicated.max(1);
            } else {
                v.lost = v.lost.max(1);
            }
        }
        for d in inventory_differences(truth, &n.inventory).into_iter().take(10) {
            v.problems.push(format!("node {}: {d}", n.node_id));
        }
    }
    if let Some(first) = nodes.first() {
        let reference = inventory_digest(&first.inventory);
        for n in &nodes[1..] {
            let other = inventory_digest(&n.inventory);
            if other != reference {
                let only_first = reference.iter().filter(|d| !other.contains(d)).take(3).collect::<Vec<_>>();
                let only_other = other.iter().filter(|d| !reference.contains(d)).take(3).collect::<Vec<_>>();
                v.problems.push(format!(
                    "inventory of node {} differs from node {}: only on {}: {only_first:?}; only on {}: {only_other:?}",
                    n.node_id, first.node_id, first.node_id, n.node_id
                ));
            }
        }
    }
    if let Some(stored) = clickhouse {
        let diffs = flow_differences(&expected, stored);
        if !diffs.is_empty() {
            v.problems.push(format!(
                "ClickHouse differs from the ground truth in {} flows, e.g. {}",
                diffs.len(),
                diffs.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
    }
    v.problems.extend(split_brain(samples));
    if let Some(r) = recovery {
        if r > RECOVERY_LIMIT {
            v.problems
                .push(format!("service came back {:.1}s after the fault, limit {RECOVERY_LIMIT:?}", r.as_secs_f64()));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn truth() -> Value {
        json!({
            "devices": [{"mac": "aa:bb:cc:00:00:01", "ips": ["10.0.0.1"], "vendor": "Acme", "hostname": null, "name": "pump"}],
            "flows": [{"ip_proto": 6, "a_ip": "10.0.0.1", "a_port": 1000, "b_ip": "10.0.0.2", "b_port": 80,
                       "packets_ab": 3, "packets_ba": 2, "bytes_ab": 300, "bytes_ba": 200}]
        })
    }

    fn node(id: u64, last: u64, applied: u64, packets: u64) -> NodeReport {
        NodeReport {
            node_id: id,
            sensors: json!({"sensors": {"s1": {"last_seq": last, "batches_applied": applied, "seq_gaps": 0}}}),
            totals: json!({"replicated": {"packets": packets, "bytes": if packets == 5 { 500 } else { 999 }}}),
            inventory: json!({"devices": [{"id": "aa:bb:cc:00:00:01", "mac": "aa:bb:cc:00:00:01", "ips": ["10.0.0.1"], "vendor": "Acme", "hostname": null}]}),
        }
    }

    fn acked(n: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([("s1".to_string(), n)])
    }

    #[test]
    fn exact_run_passes() {
        let v =
            check(&acked(4), &[node(1, 4, 4, 5), node(2, 4, 4, 5)], &truth(), None, &[], Some(Duration::from_secs(2)));
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!((v.acked, v.applied, v.lost, v.duplicated), (4, 4, 0, 0));
    }

    #[test]
    fn lost_and_duplicated_batches_are_reported_per_node() {
        let v = check(&acked(4), &[node(1, 4, 4, 5), node(2, 3, 3, 5), node(3, 4, 5, 5)], &truth(), None, &[], None);
        assert_eq!((v.lost, v.duplicated, v.applied), (1, 1, 3));
        assert!(v.problems.iter().any(|p| p.contains("node 2") && p.contains("watermark only 3")), "{:?}", v.problems);
        assert!(v.problems.iter().any(|p| p.contains("node 3") && p.contains("applied twice")), "{:?}", v.problems);
    }

    #[test]
    fn batches_passed_by_the_watermark_count_as_lost() {
        // Seq 4 applied before 3: the watermark says 4, yet batch 3 was never applied.
        let v = check(&acked(4), &[node(1, 4, 3, 5)], &truth(), None, &[], None);
        assert_eq!(v.lost, 1);
        assert!(v.problems.iter().any(|p| p.contains("only 3 applied")), "{:?}", v.problems);
    }

    #[test]
    fn double_counted_totals_and_diverging_inventories_fail() {
        let mut n2 = node(2, 4, 4, 10);
        n2.inventory = json!({"devices": []});
        let v = check(&acked(4), &[node(1, 4, 4, 5), n2], &truth(), None, &[], None);
        assert!(v.problems.iter().any(|p| p.contains("replicated (packets, bytes) (10, 999)")), "{:?}", v.problems);
        assert!(v.problems.iter().any(|p| p.contains("inventory of node 2 differs")), "{:?}", v.problems);
        assert!(v.problems.iter().any(|p| p.contains("missing from the inventory")), "{:?}", v.problems);
    }

    #[test]
    fn clickhouse_rows_are_compared_with_the_truth() {
        let mut stored = truth_flows(&truth());
        stored.values_mut().for_each(|f| f.0 += 1);
        let v = check(&acked(4), &[node(1, 4, 4, 5)], &truth(), Some(&stored), &[], None);
        assert!(v.problems.iter().any(|p| p.starts_with("ClickHouse differs")), "{:?}", v.problems);
    }

    #[test]
    fn two_leaders_in_one_term_and_slow_recovery_fail() {
        let s = |node_id, term, leader| LeaderSample { node_id, term, leader };
        let samples = [s(1, 3, 1), s(2, 3, 1), s(3, 4, 3), s(1, 4, 1)];
        assert_eq!(split_brain(&samples), vec!["two leaders in term 4: nodes {1, 3}".to_string()]);
        assert!(split_brain(&samples[..2]).is_empty());
        let v = check(&acked(4), &[node(1, 4, 4, 5)], &truth(), None, &samples, Some(RECOVERY_LIMIT * 2));
        assert!(v.problems.iter().any(|p| p.contains("two leaders")), "{:?}", v.problems);
        assert!(v.problems.iter().any(|p| p.contains("service came back")), "{:?}", v.problems);
        assert!(v.line("kill-leader", 7).contains("FAILED"));
    }
}
