//! Membership refresh: a device that appears after the policy was applied joins its group
//! on the next refresh, which is audited by `wardline`; an unchanged inventory proposes
//! nothing.

use crate::raft_support::{config, ServedNode, WAIT};
use crate::{batch, canonical, device, T0_US};
use std::sync::Arc;
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::policy::refresh::refresh_once;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::state::policy::{GroupMembers, PolicyProposal};
use wardline_aggregator::state::Command;
use wardline_common::MacAddr;
use wardline_intel::KnowledgeBase;

const BY_ADDRESS: &str = r#"
[policy]
name = "by-address"
default = "allow"
[[group]]
name = "ward40"
match = 'ip in "10.0.40.0/24"'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_joins_its_group_on_refresh_and_the_change_is_audited() {
    let data = tempfile::tempdir().unwrap();
    let served = ServedNode::start(1, &data.path().join("raft"), config(1000)).await;
    let raft = served.node.clone();
    raft.initialize_single_if_new().await.unwrap();
    raft.wait_for_leader(WAIT).await.unwrap();
    let sink = Arc::new(EmbeddedSink::open(&data.path().join("flows")).unwrap());
    let kb = Arc::new(KnowledgeBase::builtin().unwrap());
    let query = QueryService::new(raft.clone(), sink, kb, Arc::new(IngestStats::default()));

    let first = MacAddr([0x00, 0x09, 0xfb, 0x40, 0x00, 0x01]);
    let second = MacAddr([0x00, 0x09, 0xfb, 0x40, 0x00, 0x02]);
    let outside = MacAddr([0x00, 0x09, 0xfb, 0x40, 0x00, 0x03]);
    raft.propose(batch(1, vec![device(first, "10.0.40.11", T0_US)], vec![])).await.unwrap();
    let proposal = PolicyProposal {
        base: None,
        text: canonical(BY_ADDRESS),
        author: "op-admin".into(),
        message: "first".into(),
        at_ms: 1,
        membership: vec![GroupMembers { group: "ward40".into(), members: vec![first] }],
        rollback_of: None,
    };
    assert!(raft.propose(Command::PolicyVersion(proposal)).await.unwrap().applied);
    assert!(!refresh_once(&query).await.unwrap(), "nothing changed");

    raft.propose(batch(
        2,
        vec![device(second, "10.0.40.12", T0_US + 1), device(outside, "10.0.41.12", T0_US + 1)],
        vec![],
    ))
    .await
    .unwrap();
    assert!(refresh_once(&query).await.unwrap());
    let members = raft.read_state(|s| s.policy().membership()[0].members.clone()).await;
    assert_eq!(members, [first, second], "the new device in 10.0.40.0/24 joined, the one outside did not");
    assert!(!refresh_once(&query).await.unwrap());
    let audited = raft
        .read_state(|s| {
            s.audit().newest(5).find(|e| e.who == "wardline").map(|e| (e.outcome.clone(), e.detail.clone()))
        })
        .await;
    assert_eq!(audited, Some(("ok".to_string(), "membership of policy version 1 refreshed: ward40 +1 -0".to_string())));
    served.stop().await;
}
