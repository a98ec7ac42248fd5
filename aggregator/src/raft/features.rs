//! Which features every member of the cluster supports (decision 0038): a leader asks before
//! it proposes a command an older node could not decode (a Raft entry a node cannot decode
//! stops it), over the Raft listener (`network::PATH_FEATURES`; an older node answers 404).
//! Shared by everything that proposes newer commands: sensor heartbeats
//! (`Command::SensorHeartbeat`), spool reports (`Command::ApplyReportedBatches`), sensor
//! epochs (`Command::ApplyEpochBatches`) and risk history (`Command::RecordRiskHistory`).
//!
//! Once the replicated state holds something only the feature's command creates, every
//! member applied such a command already, so the feature is used without asking: a member
//! that is down (or a leader elected after a failover, which has no answers yet) does not
//! stop a feature the cluster is already using.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a member's "supported" answer is trusted before it is asked again (a node
/// may have been started again with another binary).
const RECHECK_SUPPORTED: Duration = Duration::from_secs(300);
/// How long a "not supported" (or "cannot tell") answer holds before asking again.
const RECHECK_UNSUPPORTED: Duration = Duration::from_secs(30);

/// Whether every member of the cluster supports a feature, asked of each and remembered.
#[derive(Default)]
pub struct FeatureGate {
    /// (member id, Raft address) → (supported, when asked).
    answers: tokio::sync::Mutex<HashMap<(u64, String), (bool, Instant)>>,
}

impl FeatureGate {
    /// Ok when every other member supports `feature`; else which one does not (or could not
    /// be asked: an unreachable member may run an older version, and would stop on an entry
    /// it cannot decode once it is back; an answer it gave before still holds).
    pub async fn check(&self, raft: &super::RaftNode, feature: &str) -> Result<(), String> {
        let feature_owned = feature.to_string();
        if raft.read_state(move |s| in_use(s, &feature_owned)).await {
            return Ok(());
        }
        let me = raft.node_id();
        let members: Vec<(u64, super::ClusterNode)> = raft
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        // One asker at a time: concurrent heartbeats wait for its answers instead of asking too.
        let mut answers = self.answers.lock().await;
        for (id, node) in members {
            let key = (id, node.raft_addr.clone());
            let known = answers.get(&key).copied();
            let fresh =
                known.is_some_and(|(ok, at)| at.elapsed() < if ok { RECHECK_SUPPORTED } else { RECHECK_UNSUPPORTED });
            let supported = if fresh {
                known.is_some_and(|(ok, _)| ok)
            } else {
                match raft.peer_features(id, node).await {
                    Ok(features) => {
                        let ok = features.iter().any(|f| f == feature);
                        answers.insert(key, (ok, Instant::now()));
                        ok
                    }
                    Err(e) if e.contains("HTTP 404") => {
                        answers.insert(key, (false, Instant::now()));
                        false
                    }
                    Err(e) => match known {
                        // Keep its last answer until the next check, so heartbeats do not
                        // each wait for a member that is down.
                        Some((ok, _)) => {
                            answers.insert(key, (ok, Instant::now()));
                            ok
                        }
                        None => {
                            answers.insert(key, (false, Instant::now()));
                            return Err(format!("node {id} could not be asked whether it supports {feature}: {e}"));
                        }
                    },
                }
            };
            if !supported {
                return Err(format!(
                    "node {id} runs a version that does not know {feature} (upgrade it; what needs it starts once \
                     every node runs this version)"
                ));
            }
        }
        Ok(())
    }
}

/// Whether the applied state holds something only `feature`'s command creates.
fn in_use(s: &crate::state::ClusterState, feature: &str) -> bool {
    match feature {
        super::FEATURE_SENSOR_HEALTH => !s.sensor_health().sensors().is_empty(),
        super::FEATURE_SPOOL_LOSSES => !s.spool_losses().is_empty(),
        super::FEATURE_SENSOR_EPOCHS => s.epochs().iter().next().is_some(),
        super::FEATURE_RISK_HISTORY => !s.risk_history().devices().is_empty() || !s.risk_history().sites().is_empty(),
        _ => false,
    }
}
