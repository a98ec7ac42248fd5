//! Versions in the replicated state: stored with author, message, canonical text and diff;
//! refused whole when stale, not canonical, or with a membership that does not fit.

use crate::*;
use wardline_aggregator::state::policy::{MembershipUpdate, PolicyRefusal, MAX_VERSIONS};
use wardline_aggregator::state::{ClusterState, Command};

#[test]
fn versions_are_stored_with_diff_and_stale_or_malformed_proposals_change_nothing() {
    let mut s = ClusterState::new();
    assert!(s.apply(&Command::PolicyVersion(proposal(None, POLICY_V1, "first"))).applied);
    let v1 = s.policy().active().unwrap().clone();
    assert_eq!((v1.version, v1.author.as_str(), v1.message.as_str()), (1, "op-admin", "first"));
    assert_eq!(v1.text, canonical(POLICY_V1));
    assert_eq!(v1.diff, "first version");

    // Proposed against "no policy" while v1 is active: stale, refused.
    let before = s.clone();
    let stale = Command::PolicyVersion(proposal(None, &policy_v2(), "second"));
    assert!(!s.apply(&stale).applied);
    assert_eq!(s, before, "a refused proposal changes nothing");
    assert!(matches!(
        s.policy().check_version(&proposal(None, &policy_v2(), "x")),
        Err(PolicyRefusal::Stale { base: None, active: Some(1) })
    ));

    // Not canonical (the raw text with comments and blank lines), or a membership naming
    // other groups: refused.
    let mut raw = proposal(Some(1), &policy_v2(), "raw");
    raw.text = format!("# comment\n{}", policy_v2());
    assert_eq!(s.policy().check_version(&raw), Err(PolicyRefusal::NotCanonical));
    let mut wrong = proposal(Some(1), &policy_v2(), "wrong groups");
    wrong.membership.pop();
    assert_eq!(s.policy().check_version(&wrong), Err(PolicyRefusal::MembershipMismatch));
    let mut garbage = proposal(Some(1), &policy_v2(), "garbage");
    garbage.text = "[policy]\nname = 3\n".into();
    assert!(matches!(s.policy().check_version(&garbage), Err(PolicyRefusal::Invalid(_))));
    for c in [raw, wrong, garbage] {
        assert!(!s.apply(&Command::PolicyVersion(c)).applied);
    }
    assert_eq!(s, before);

    assert!(s.apply(&Command::PolicyVersion(proposal(Some(1), &policy_v2(), "pumps stay inside"))).applied);
    let v2 = s.policy().active().unwrap().clone();
    assert_eq!((v2.version, v2.previous), (2, Some(1)));
    assert!(v2.diff.contains("+ rule pumps stay inside"), "{}", v2.diff);

    // Rollback: v1's text as version 3; a rollback whose text is not v1's is refused.
    let mut back = proposal(Some(2), POLICY_V1, "rollback to version 1");
    back.rollback_of = Some(1);
    let mut forged = back.clone();
    forged.text = canonical(&policy_v2());
    assert_eq!(s.policy().check_version(&forged), Err(PolicyRefusal::RollbackMismatch(1)));
    assert!(s.apply(&Command::PolicyVersion(back)).applied);
    let v3 = s.policy().active().unwrap();
    assert_eq!((v3.version, v3.rollback_of, v3.text.as_str()), (3, Some(1), v1.text.as_str()));
    assert!(v3.diff.contains("- rule pumps stay inside"), "{}", v3.diff);

    // Membership updates only for the active version.
    let update = |version| MembershipUpdate {
        version,
        membership: vec![
            GroupMembers { group: "pumps".into(), members: vec![] },
            GroupMembers { group: "servers".into(), members: vec![SERVER] },
        ],
        at_ms: 5,
    };
    assert!(!s.apply(&Command::PolicyMembership(update(2))).applied);
    assert!(s.apply(&Command::PolicyMembership(update(3))).applied);
    assert!(!s.apply(&Command::PolicyMembership(update(3))).applied, "unchanged membership is not a change");
    assert!(s.policy().membership()[0].members.is_empty());
}

#[test]
fn versions_are_bounded_and_the_active_one_is_always_kept() {
    let mut s = ClusterState::new();
    for i in 0..(MAX_VERSIONS as u64 + 10) {
        let base = s.policy().active_version();
        let text = POLICY_V1.replace("name = \"ward\"", &format!("name = \"ward-{i}\""));
        assert!(s.apply(&Command::PolicyVersion(proposal(base, &text, "bump"))).applied, "version {}", i + 1);
    }
    let p = s.policy();
    assert_eq!(p.versions().len(), MAX_VERSIONS);
    assert_eq!(p.versions_dropped(), 10);
    assert_eq!(p.active_version(), Some(MAX_VERSIONS as u64 + 10));
    assert!(p.version(10).is_none() && p.version(11).is_some() && p.active().is_some());
}

#[test]
fn the_change_and_its_audit_entry_apply_together_or_the_entry_says_not_applied() {
    use wardline_aggregator::auth::{Credential, Role};
    use wardline_aggregator::state::audit::AuditEntry;
    let entry = AuditEntry {
        seq: 0,
        at_ms: 1,
        node_id: 1,
        who: "op-admin".into(),
        role: Some(Role::Admin),
        credential: Credential::token("t1"),
        method: "POST".into(),
        path: "/api/v1/policy/apply".into(),
        status: 201,
        outcome: String::new(),
        detail: "applied".into(),
        peer: "127.0.0.1:1".into(),
    };
    let audited = |p| Command::Audited { entry: entry.clone(), command: Box::new(Command::PolicyVersion(p)) };
    let mut s = ClusterState::new();
    assert!(s.apply(&audited(proposal(None, POLICY_V1, "first"))).applied);
    assert!(!s.apply(&audited(proposal(None, POLICY_V1, "stale"))).applied);
    let outcomes: Vec<(String, u16)> = s.audit().newest(10).map(|e| (e.outcome.clone(), e.status)).collect();
    assert!(outcomes.contains(&("ok".to_string(), 201)), "{outcomes:?}");
    assert!(outcomes.contains(&("not applied".to_string(), 409)), "{outcomes:?}");
    assert_eq!(s.policy().versions().len(), 1);
}
