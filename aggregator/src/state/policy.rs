//! Segmentation policy in the replicated state (issue 12, decision 0025): the versions of
//! the policy text, the active version with its group membership, the draft area, and
//! virtual enforcement (monitor mode) of the active version over every applied flow.
//!
//! Group membership needs the knowledge base (classification), which is per node
//! configuration and not part of the replicated state. So the *proposer* resolves it
//! (`crate::policy::resolve`) and the command carries it: compile and evaluation inside
//! `apply` are then a pure function of the policy text and that membership, identical on
//! every node. A device whose attributes change joins its groups when the membership is
//! refreshed (`Command::PolicyMembership`, proposed on apply, rollback and refresh).
//!
//! Apply re-checks everything it can without the knowledge base (the text parses, is
//! canonical, the membership names exactly the policy's groups, the proposal was made
//! against the version still active), so a stale or hand-made proposal is refused whole.
//!
//! Bounds: at most [`MAX_VERSIONS`] versions kept (the oldest non-active ones go, counted),
//! texts at most [`MAX_POLICY_BYTES`], at most [`MAX_DRAFTS`] drafts (one more is refused).

use super::alerts::{AlertKind, Occurrence, Severity};
use super::anomaly::FlowSides;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use wardline_common::{FlowRecord, MacAddr};
use wardline_intel::policy::{
    self as engine, Action, CompiledPolicy, DecidedBy, Flow, FlowEnd, HitCounts, Policy, PolicyDevice,
};
use wardline_intel::{Category, Criticality};

/// Versions kept at most.
pub const MAX_VERSIONS: usize = 64;
/// Longest policy text accepted (canonical form).
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Draft rules kept at most.
pub const MAX_DRAFTS: usize = 500;
/// Members of one group in a membership at most (a bigger group is refused on propose).
pub const MAX_MEMBERS: usize = 100_000;
/// The source name policies are parsed under in the replicated state (shows in errors).
pub const SOURCE: &str = "policy";

/// One stored version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version: u64,
    pub author: String,
    pub message: String,
    /// The proposing node's clock, ms since the epoch.
    pub at_ms: u64,
    /// The canonical text (`Policy::to_canonical`).
    pub text: String,
    /// The diff against the version active before this one, in words ("first version"
    /// for the first).
    pub diff: String,
    /// The version active before this one.
    pub previous: Option<u64>,
    /// Set when this version restores an earlier one.
    pub rollback_of: Option<u64>,
}

/// The members of one group (sorted MACs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembers {
    pub group: String,
    pub members: Vec<MacAddr>,
}

/// A new version as proposed: canonical text, its membership, and the version the
/// proposer checked it against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyProposal {
    /// The version active when the proposer validated (None: no policy yet). Apply refuses
    /// the proposal when another version became active meanwhile.
    pub base: Option<u64>,
    pub text: String,
    pub author: String,
    pub message: String,
    pub at_ms: u64,
    /// One entry per group of the policy, sorted by group name.
    pub membership: Vec<GroupMembers>,
    pub rollback_of: Option<u64>,
}

/// Fresh membership for the active version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipUpdate {
    pub version: u64,
    pub membership: Vec<GroupMembers>,
    pub at_ms: u64,
}

/// A rule waiting in the draft area (from triage "add to policy", or written by hand).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftRule {
    /// Assigned on apply (0 in a proposal).
    pub id: u64,
    /// The policy-violation alert it came from.
    pub alert: Option<u64>,
    pub author: String,
    pub at_ms: u64,
    /// TOML to paste into the policy (`[[group]]` and `[[rule]]` tables).
    pub toml: String,
    pub note: String,
}

/// Counters of monitor mode for the active version, in policy order (rules, scopes) and
/// group-name order (groups). Reset when another version becomes active.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyHits {
    pub version: u64,
    pub flows: u64,
    pub rules: Vec<u64>,
    pub scopes: Vec<u64>,
    pub default: u64,
    pub group_src: Vec<u64>,
    pub group_dst: Vec<u64>,
    /// allow, deny, monitor.
    pub actions: [u64; 3],
    /// Denied flows (each an occurrence of a policy-violation alert).
    pub violations: u64,
}

/// Why a policy command was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    #[error("version {active:?} is active now, the proposal was made against {base:?}; validate again")]
    Stale { base: Option<u64>, active: Option<u64> },
    #[error("the policy text does not parse: {0}")]
    Invalid(String),
    #[error("the policy text is not in canonical form")]
    NotCanonical,
    #[error("the policy text is {0} bytes, more than the {MAX_POLICY_BYTES} accepted")]
    TooLarge(usize),
    #[error("the membership does not name exactly the policy's groups")]
    MembershipMismatch,
    #[error("version {0} is not kept (the oldest versions are dropped)")]
    UnknownVersion(u64),
    #[error("rollback text differs from version {0}")]
    RollbackMismatch(u64),
    #[error("{MAX_DRAFTS} drafts exist, the most kept; delete some first")]
    DraftsFull,
    #[error("no draft {0}")]
    UnknownDraft(u64),
}

/// The compiled active policy (derived, never serialized; rebuilt on the first batch after
/// a restart, a new version or a new membership).
#[derive(Clone, Default)]
struct CompiledCache(Option<Arc<(u64, u64, Policy, CompiledPolicy)>>);

impl PartialEq for CompiledCache {
    /// Derived data: two states with equal replicated parts are equal whatever they cached.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for CompiledCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(c) => write!(f, "compiled(version {}, membership {})", c.0, c.1),
            None => f.write_str("not compiled"),
        }
    }
}

/// Policy versions, the active one, drafts and monitor-mode counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStore {
    versions: Vec<PolicyVersion>,
    last_version: u64,
    versions_dropped: u64,
    active: Option<u64>,
    membership: Vec<GroupMembers>,
    /// Bumped by every membership change (the compile cache key with the version).
    membership_generation: u64,
    membership_at_ms: u64,
    drafts: BTreeMap<u64, DraftRule>,
    last_draft: u64,
    hits: PolicyHits,
    #[serde(skip)]
    cache: CompiledCache,
}

/// Parse a stored or proposed text (the engine's own errors, one line each).
pub fn parse(text: &str) -> Result<Policy, String> {
    engine::parse_policy(SOURCE, text).map_err(|e| e.to_string())
}

impl PolicyStore {
    pub fn versions(&self) -> &[PolicyVersion] {
        &self.versions
    }
    pub fn version(&self, n: u64) -> Option<&PolicyVersion> {
        self.versions.iter().find(|v| v.version == n)
    }
    pub fn active(&self) -> Option<&PolicyVersion> {
        self.active.and_then(|n| self.version(n))
    }
    pub fn active_version(&self) -> Option<u64> {
        self.active
    }
    pub fn versions_dropped(&self) -> u64 {
        self.versions_dropped
    }
    pub fn membership(&self) -> &[GroupMembers] {
        &self.membership
    }
    pub fn membership_at_ms(&self) -> u64 {
        self.membership_at_ms
    }
    pub fn drafts(&self) -> &BTreeMap<u64, DraftRule> {
        &self.drafts
    }
    pub fn hits(&self) -> &PolicyHits {
        &self.hits
    }

    /// Everything [`Self::apply_version`] checks, without changing anything.
    pub fn check_version(&self, p: &PolicyProposal) -> Result<Policy, PolicyRefusal> {
        if p.base != self.active {
            return Err(PolicyRefusal::Stale { base: p.base, active: self.active });
        }
        if p.text.len() > MAX_POLICY_BYTES {
            return Err(PolicyRefusal::TooLarge(p.text.len()));
        }
        let policy = parse(&p.text).map_err(PolicyRefusal::Invalid)?;
        if policy.to_canonical() != p.text {
            return Err(PolicyRefusal::NotCanonical);
        }
        check_membership(&policy, &p.membership)?;
        if let Some(n) = p.rollback_of {
            let old = self.version(n).ok_or(PolicyRefusal::UnknownVersion(n))?;
            if old.text != p.text {
                return Err(PolicyRefusal::RollbackMismatch(n));
            }
        }
        Ok(policy)
    }

    /// Store a new version and make it active. Returns its number.
    pub fn apply_version(&mut self, p: &PolicyProposal) -> Result<u64, PolicyRefusal> {
        let policy = self.check_version(p)?;
        let diff = match self.active().map(|v| parse(&v.text)) {
            Some(Ok(before)) => engine::diff(&before, &policy).to_string(),
            _ => "first version".to_string(),
        };
        let version = self.last_version + 1;
        self.last_version = version;
        self.versions.push(PolicyVersion {
            version,
            author: p.author.clone(),
            message: p.message.clone(),
            at_ms: p.at_ms,
            text: p.text.clone(),
            diff,
            previous: self.active,
            rollback_of: p.rollback_of,
        });
        self.active = Some(version);
        while self.versions.len() > MAX_VERSIONS {
            // The active version is the newest, never the first.
            self.versions.remove(0);
            self.versions_dropped += 1;
        }
        self.set_membership(p.membership.clone(), p.at_ms);
        let counts = engine::CompiledPolicy::compile(&policy, &[]).new_counts();
        self.hits = PolicyHits {
            version,
            rules: counts.rules,
            scopes: counts.scopes,
            group_src: counts.group_src,
            group_dst: counts.group_dst,
            ..Default::default()
        };
        Ok(version)
    }

    fn set_membership(&mut self, membership: Vec<GroupMembers>, at_ms: u64) {
        self.membership = membership;
        self.membership_generation += 1;
        self.membership_at_ms = at_ms;
        self.cache = CompiledCache::default();
    }

    pub fn check_membership_update(&self, u: &MembershipUpdate) -> Result<(), PolicyRefusal> {
        let active = self.active().ok_or(PolicyRefusal::UnknownVersion(u.version))?;
        if active.version != u.version {
            return Err(PolicyRefusal::Stale { base: Some(u.version), active: self.active });
        }
        let policy = parse(&active.text).map_err(PolicyRefusal::Invalid)?;
        check_membership(&policy, &u.membership)
    }

    /// Replace the active version's membership (not applied when unchanged).
    pub fn update_membership(&mut self, u: &MembershipUpdate) -> Result<bool, PolicyRefusal> {
        self.check_membership_update(u)?;
        if u.membership == self.membership {
            return Ok(false);
        }
        self.set_membership(u.membership.clone(), u.at_ms);
        Ok(true)
    }

    pub fn check_draft(&self) -> Result<(), PolicyRefusal> {
        if self.drafts.len() >= MAX_DRAFTS {
            return Err(PolicyRefusal::DraftsFull);
        }
        Ok(())
    }

    pub fn add_draft(&mut self, d: &DraftRule) -> Result<u64, PolicyRefusal> {
        self.check_draft()?;
        self.last_draft += 1;
        let id = self.last_draft;
        self.drafts.insert(id, DraftRule { id, ..d.clone() });
        Ok(id)
    }

    pub fn remove_draft(&mut self, id: u64) -> Result<DraftRule, PolicyRefusal> {
        self.drafts.remove(&id).ok_or(PolicyRefusal::UnknownDraft(id))
    }

    /// The active policy compiled against its membership, from the cache or built now.
    fn compiled(&mut self) -> Option<Arc<(u64, u64, Policy, CompiledPolicy)>> {
        let active = self.active?;
        if let Some(c) = &self.cache.0 {
            if c.0 == active && c.1 == self.membership_generation {
                return Some(c.clone());
            }
        }
        let policy = parse(&self.active()?.text).ok()?;
        let compiled = compile(&policy, &self.membership);
        let entry = Arc::new((active, self.membership_generation, policy, compiled));
        self.cache = CompiledCache(Some(entry.clone()));
        Some(entry)
    }

    /// Monitor mode: decide every flow of an applied batch with the active policy, count the
    /// hits, and return one policy-violation occurrence per denied flow.
    /// `sides` tells which flow sides are devices (`FlowSides::of` the merged inventory).
    pub fn evaluate_batch(&mut self, site: &str, flows: &[FlowRecord], sides: &FlowSides) -> Vec<Occurrence> {
        if flows.is_empty() {
            return Vec::new();
        }
        let Some(entry) = self.compiled() else { return Vec::new() };
        let (version, _, policy, compiled) = &*entry;
        let mut counts: HitCounts = compiled.new_counts();
        let mut out = Vec::new();
        for (i, f) in flows.iter().enumerate() {
            // The frame's MAC is the device only when it holds the address (a router's MAC
            // fronts every remote address).
            let end = |a_side: bool, mac: &MacAddr, ip| FlowEnd {
                device: if sides.is_device(i, a_side) { compiled.device(mac) } else { None },
                ip: Some(ip),
            };
            let app = flow_app(f);
            let flow = Flow {
                src: end(true, &f.a_mac, f.a_ip),
                dst: end(false, &f.b_mac, f.b_ip),
                ip_proto: f.ip_proto,
                dst_port: f.b_port,
                app,
                dst_domain: None,
            };
            let verdict = compiled.evaluate_counted(&flow, &mut counts);
            if verdict.action != Action::Deny {
                continue;
            }
            let by = match verdict.decided_by {
                DecidedBy::Rule(i) => format!("rule {:?}", compiled.rule_name(i).unwrap_or("?")),
                DecidedBy::Scope(i) => {
                    format!("the default of scope {:?}", policy.scopes.get(i as usize).map_or("?", |s| &s.group))
                }
                DecidedBy::Default => "the policy default".to_string(),
            };
            let device = if sides.is_device(i, true) { f.a_mac.to_string() } else { format!("{site}:{}", f.a_ip) };
            let target = violation_target(f);
            out.push(Occurrence {
                kind: AlertKind::PolicyViolation,
                severity: Severity::High,
                device,
                site: site.to_string(),
                evidence: format!(
                    "{by} of policy version {version} denies {} -> {target}{}",
                    f.a_ip,
                    app.map(|a| format!(" (app {a})")).unwrap_or_default()
                ),
                target,
                ts_us: f.first_seen_us,
            });
        }
        let h = &mut self.hits;
        h.flows += flows.len() as u64;
        add(&mut h.rules, &counts.rules);
        add(&mut h.scopes, &counts.scopes);
        add(&mut h.group_src, &counts.group_src);
        add(&mut h.group_dst, &counts.group_dst);
        h.default += counts.default;
        for i in 0..3 {
            h.actions[i] += counts.actions[i];
        }
        h.violations += out.len() as u64;
        out
    }
}

fn add(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    a.iter_mut().zip(b).for_each(|(x, y)| *x = x.saturating_add(*y));
}

/// The application label a flow carries for rules (`None` when the sensor did not know).
pub fn flow_app(f: &FlowRecord) -> Option<&str> {
    Some(f.app.as_ref()).filter(|a| !a.is_empty() && *a != "unknown")
}

/// The alert target of a violation: `peer proto/port` ("10.0.40.9 tcp/23").
pub fn violation_target(f: &FlowRecord) -> String {
    let proto = match f.ip_proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        p => format!("ip{p}"),
    };
    if matches!(f.ip_proto, 6 | 17) {
        format!("{} {proto}/{}", f.b_ip, f.b_port)
    } else {
        format!("{} {proto}", f.b_ip)
    }
}

fn check_membership(policy: &Policy, membership: &[GroupMembers]) -> Result<(), PolicyRefusal> {
    let names: Vec<&str> = policy.groups.iter().map(|g| g.name.as_str()).collect();
    let given: Vec<&str> = membership.iter().map(|m| m.group.as_str()).collect();
    let sorted = membership.iter().all(|m| m.members.windows(2).all(|w| w[0] < w[1]) && m.members.len() <= MAX_MEMBERS);
    if names != given || !sorted {
        return Err(PolicyRefusal::MembershipMismatch);
    }
    Ok(())
}

/// Compile `policy` against a membership: the devices are the members (their attributes no
/// longer matter, their groups are given), so this is a pure function of the two.
pub fn compile(policy: &Policy, membership: &[GroupMembers]) -> CompiledPolicy {
    let macs: std::collections::BTreeSet<MacAddr> = membership.iter().flat_map(|m| m.members.iter().copied()).collect();
    let devices: Vec<PolicyDevice> =
        macs.into_iter().map(|mac| PolicyDevice::new(mac, "", Category::It, Criticality::NonClinical)).collect();
    let groups = membership.iter().map(|m| (m.group.clone(), m.members.iter().copied().collect())).collect();
    CompiledPolicy::compile_with(policy, &devices, &engine::Membership { groups })
}

// ---- membership history (decision 0031) ------------------------------------------------

/// History entries kept at most; older ones go first, counted in [`GroupHistory::dropped`].
pub const MAX_HISTORY: usize = 20_000;

/// Whether a device joined or left a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipChange {
    Joined,
    Left,
}

/// Why a device joined or left, as far as the replicated state can tell without the
/// knowledge base: the static lists are in the policy text, device attributes are not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipReason {
    /// Joined: its attributes match the group's `match` expression.
    Matched,
    /// Joined: the group lists its MAC in `members`.
    Static,
    /// Left: the group lists its MAC in `exclude`.
    Excluded,
    /// Left: its attributes no longer match `match` (or now match `exclude_match`), or its
    /// MAC was taken off `members`.
    NoLongerMatches,
    /// Left: the active version has no group of that name any more.
    GroupRemoved,
}

impl MembershipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipReason::Matched => "matched",
            MembershipReason::Static => "static",
            MembershipReason::Excluded => "excluded",
            MembershipReason::NoLongerMatches => "no_longer_matches",
            MembershipReason::GroupRemoved => "group_removed",
        }
    }
}

/// One join or leave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Numbered from 1 in apply order, identical on every node.
    pub seq: u64,
    /// The proposer's clock when the membership was computed (ms since the epoch).
    pub at_ms: u64,
    /// The policy version active after the change.
    pub version: u64,
    pub group: String,
    pub mac: MacAddr,
    pub change: MembershipChange,
    pub reason: MembershipReason,
    /// The group's `match` expression in canonical form, when the reason is about it.
    pub rule: Option<String>,
}

/// Joins and leaves of the active version's groups, appended by `ClusterState::apply` when a
/// `PolicyVersion` or `PolicyMembership` command changed the membership, so every node holds
/// the same history. Bounded: at most [`MAX_HISTORY`] entries, the oldest dropped first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHistory {
    entries: std::collections::VecDeque<HistoryEntry>,
    last_seq: u64,
    dropped: u64,
}

impl GroupHistory {
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &HistoryEntry> {
        self.entries.iter()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Entries dropped to stay within [`MAX_HISTORY`].
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
    /// The kept entries of one group, oldest first.
    pub fn of_group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a HistoryEntry> + 'a {
        self.entries.iter().filter(move |e| e.group == group)
    }

    /// Append the joins and leaves from `before` to the store's membership now (after a
    /// policy command applied). Groups and MACs in sorted order, leaves before joins.
    pub fn record(&mut self, before: &[GroupMembers], store: &PolicyStore) {
        let Some(active) = store.active() else { return };
        // Stored texts parsed when they were applied; a failure here cannot happen, and
        // would only lose the reasons, so record what is known.
        let policy = parse(&active.text).ok();
        let after = store.membership();
        let (at_ms, version) = (store.membership_at_ms(), active.version);
        let old: BTreeMap<&str, &[MacAddr]> = before.iter().map(|g| (g.group.as_str(), g.members.as_slice())).collect();
        let new: BTreeMap<&str, &[MacAddr]> = after.iter().map(|g| (g.group.as_str(), g.members.as_slice())).collect();
        let names: std::collections::BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
        for name in names {
            let b = old.get(name).copied().unwrap_or_default();
            let a = new.get(name).copied().unwrap_or_default();
            let group = policy.as_ref().and_then(|p| p.group(name));
            let rule = group.and_then(|g| g.matches.as_ref()).map(|e| e.to_string());
            for mac in b.iter().filter(|m| a.binary_search(m).is_err()) {
                let reason = match group {
                    None => MembershipReason::GroupRemoved,
                    Some(g) if g.exclude.contains(mac) => MembershipReason::Excluded,
                    Some(_) => MembershipReason::NoLongerMatches,
                };
                let rule = if reason == MembershipReason::NoLongerMatches { rule.clone() } else { None };
                self.push(at_ms, version, name, *mac, MembershipChange::Left, reason, rule);
            }
            for mac in a.iter().filter(|m| b.binary_search(m).is_err()) {
                let stat = group.is_some_and(|g| g.members.contains(mac));
                let (reason, rule) =
                    if stat { (MembershipReason::Static, None) } else { (MembershipReason::Matched, rule.clone()) };
                self.push(at_ms, version, name, *mac, MembershipChange::Joined, reason, rule);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        at_ms: u64,
        version: u64,
        group: &str,
        mac: MacAddr,
        change: MembershipChange,
        reason: MembershipReason,
        rule: Option<String>,
    ) {
        self.last_seq += 1;
        self.entries.push_back(HistoryEntry {
            seq: self.last_seq,
            at_ms,
            version,
            group: group.to_string(),
            mac,
            change,
            reason,
            rule,
        });
        while self.entries.len() > MAX_HISTORY {
            self.entries.pop_front();
            self.dropped += 1;
        }
    }
}
