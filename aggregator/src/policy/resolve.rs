//! A policy against the current inventory: each MAC device's policy attributes (its
//! classification by this node's knowledge base, addresses, VLANs, site), and from them the
//! group membership a proposal carries into the replicated state.
//!
//! Done by the proposing node, outside the state lock: classification needs the knowledge
//! base, which is node configuration, so the result travels in the command and every node
//! applies the same membership (see `crate::state::policy`).

use crate::query::classify::classify_record;
use crate::state::policy::GroupMembers;
use crate::state::{ClusterState, DeviceRecord};
use std::sync::Arc;
use wardline_intel::policy::{Membership, Policy, PolicyDevice};
use wardline_intel::KnowledgeBase;

/// The records to resolve, copied out under the state lock (cheap `Arc` clones).
pub fn records(state: &ClusterState) -> Vec<Arc<DeviceRecord>> {
    state.devices().values().cloned().collect()
}

/// `YYYY-MM-DD` of a time in ms since the epoch (for end-of-support dates).
pub fn date_of(ms: u64) -> String {
    crate::siem::syslog::rfc3339_ms(ms)[..10].to_string()
}

/// The policy attributes of every device, sorted by MAC. Risk, vulnerabilities and tags
/// are not known to the aggregator yet and stay zero / empty.
pub fn policy_devices(records: &[Arc<DeviceRecord>], kb: &KnowledgeBase, today: &str) -> Vec<PolicyDevice> {
    records
        .iter()
        .map(|r| {
            let mut d = PolicyDevice::from_classification(&classify_record(kb, r), today);
            d.ips = r.ips.keys().collect();
            d.vlans = r.vlans.iter().copied().collect();
            d.site = r.sites.iter().next().cloned();
            d
        })
        .collect()
}

/// One entry per group of `policy` (sorted by name, as the policy keeps them), members sorted.
pub fn membership(policy: &Policy, devices: &[PolicyDevice]) -> Vec<GroupMembers> {
    let mut m = Membership::evaluate(&policy.groups, devices);
    policy
        .groups
        .iter()
        .map(|g| GroupMembers {
            group: g.name.clone(),
            members: m.groups.remove(&g.name).unwrap_or_default().into_iter().collect(),
        })
        .collect()
}
