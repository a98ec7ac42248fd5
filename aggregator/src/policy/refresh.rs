//! Keeping the active version's group membership current: on the leader, every so often,
//! classify the inventory again, evaluate the groups, and propose the membership when it
//! changed (a new infusion pump joins "pumps" without an edit). The proposal carries an
//! audit entry by `wardline` naming who joined and left, in the same Raft entry.

use super::resolve;
use crate::auth::{now_ms, Credential};
use crate::query::QueryService;
use crate::state::audit::AuditEntry;
use crate::state::policy::{self as stored, MembershipUpdate};
use crate::state::Command;
use std::sync::Arc;
use std::time::Duration;

/// How often the running node refreshes membership.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Recompute and, when it changed, commit the active version's membership. Returns whether
/// a change was committed. Leader or not is the caller's concern (a follower's proposal is
/// refused by Raft).
pub async fn refresh_once(query: &QueryService) -> Result<bool, String> {
    let (active, current, records) = query
        .raft()
        .read_state(|s| (s.policy().active().cloned(), s.policy().membership().to_vec(), resolve::records(s)))
        .await;
    let Some(active) = active else { return Ok(false) };
    let policy = stored::parse(&active.text)?;
    let devices = super::groups::inventory_devices(query, records).await;
    let membership = resolve::membership(&policy, &devices);
    if membership == current {
        return Ok(false);
    }
    let mut changes = Vec::new();
    for (new, old) in membership.iter().zip(&current) {
        let joined = new.members.iter().filter(|m| !old.members.contains(m)).count();
        let left = old.members.iter().filter(|m| !new.members.contains(m)).count();
        if joined + left > 0 {
            changes.push(format!("{} +{joined} -{left}", new.group));
        }
    }
    let node_id = query.raft().node_id();
    let entry = AuditEntry {
        seq: 0,
        at_ms: now_ms(),
        node_id,
        who: "wardline".into(),
        role: None,
        credential: Credential::certificate(format!("node-{node_id}")),
        method: "REFRESH".into(),
        path: "policy membership".into(),
        status: 200,
        outcome: String::new(),
        detail: format!("membership of policy version {} refreshed: {}", active.version, changes.join(", ")),
        peer: String::new(),
    };
    let update = MembershipUpdate { version: active.version, membership, at_ms: now_ms() };
    let command = Command::Audited { entry, command: Box::new(Command::PolicyMembership(update)) };
    let applied = query.raft().propose(command).await.map_err(|e| e.to_string())?.applied;
    Ok(applied)
}

/// Run [`refresh_once`] every `every` on whichever node leads, until `stop` turns true.
/// (For `node::serve` to spawn next to the SIEM forwarder.)
pub async fn run(query: Arc<QueryService>, every: Duration, stop: tokio::sync::watch::Receiver<bool>) {
    crate::raft::every_while_leader(query.raft(), every, "refresh the policy's group membership", stop, || {
        let query = query.clone();
        async move { refresh_once(&query).await }
    })
    .await
}
