//! The leader's sensor-silence tick through Raft (decision 0033): `sensor_watch::tick_once`
//! proposes only when something changes, the `sensor_silent` alert opens and resolves
//! alike on both nodes, and the follower's proposal is refused (only the leader ticks).

use crate::raft_support::{config, ServedNode, WAIT};
use crate::{batch, device, scenario, PUMP, T0_US};
use std::collections::BTreeSet;
use std::sync::Arc;
use wardline_aggregator::alerts::sensor_watch::tick_once;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::sink::FlowSink;
use wardline_aggregator::state::alerts::{AlertKind, AlertState};
use wardline_aggregator::state::anomaly::detectors::DetectorConfig;
use wardline_aggregator::state::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sensor_alerts_on_every_node_and_resolves_when_it_delivers() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let sink: Arc<dyn FlowSink> = Arc::new(EmbeddedSink::open(dirs[2].path()).unwrap());
    let n1 = ServedNode::start_with_api(1, dirs[0].path(), config(100), sink.clone()).await;
    let n2 = ServedNode::start_with_api(2, dirs[1].path(), config(100), sink.clone()).await;
    assert!(n1.node.initialize_single_if_new().await.unwrap());
    n1.node.wait_for_leader(WAIT).await.unwrap();
    n1.node.add_learner(2, n2.member(), true).await.unwrap();
    n1.node.change_membership(BTreeSet::from([1, 2]), false).await.unwrap();
    let silent_after_ms = 60_000;
    let cfg = DetectorConfig { sensor_silent_after_ms: silent_after_ms, ..DetectorConfig::default() };
    assert!(n1.node.propose(Command::SetDetectorConfig(cfg)).await.unwrap().applied);
    for cmd in scenario() {
        n1.node.propose(cmd).await.unwrap();
    }

    let t0 = 1_800_000_000_000;
    assert!(tick_once(&n1.node, t0).await.unwrap(), "the first tick notes sensor ward-1");
    assert!(!tick_once(&n1.node, t0 + 30_000).await.unwrap(), "nothing changed: nothing proposed");
    assert!(tick_once(&n2.node, t0 + silent_after_ms).await.is_err(), "a follower's tick is refused");
    assert!(tick_once(&n1.node, t0 + silent_after_ms).await.unwrap(), "a minute without a batch");
    let silent = |s: &wardline_aggregator::state::ClusterState| {
        s.alerts().alerts().values().find(|a| a.kind == AlertKind::SensorSilent).cloned()
    };
    let index = n1.node.applied_index().await.unwrap();
    n2.node.wait_for_applied(index, WAIT).await.unwrap();
    let (s1, s2) = (n1.node.applied_state_copy().await, n2.node.applied_state_copy().await);
    assert_eq!(s1.2.alerts(), s2.2.alerts());
    assert_eq!(s1.2.detectors(), s2.2.detectors());
    let a = silent(&s1.2).expect("a sensor_silent alert");
    assert_eq!((a.device.as_str(), a.site.as_str(), a.state), ("ward-1", "clinic", AlertState::Open));

    // It delivers again: the next tick resolves the alert, on both nodes.
    let next = batch("clinic", 5, vec![device(PUMP, "10.0.40.5", T0_US + 100, &[])], vec![]);
    assert!(n1.node.propose(next).await.unwrap().applied);
    assert!(tick_once(&n1.node, t0 + silent_after_ms + 1_000).await.unwrap());
    let index = n1.node.applied_index().await.unwrap();
    n2.node.wait_for_applied(index, WAIT).await.unwrap();
    let (s1, s2) = (n1.node.applied_state_copy().await, n2.node.applied_state_copy().await);
    assert_eq!(s1.2.alerts(), s2.2.alerts());
    assert_eq!(silent(&s2.2).expect("still there").state, AlertState::Resolved);
}
