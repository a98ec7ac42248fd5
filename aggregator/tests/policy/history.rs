//! Group membership history in the replicated state (decision 0031): every join and leave
//! of a policy command, with why, identical on every replica and after a snapshot, bounded
//! with a dropped count, and a format-6 snapshot (before history) still loads.

use crate::{batch, canonical, device, T0_US};
use wardline_aggregator::state::policy::{
    GroupMembers, MembershipChange as C, MembershipReason as R, MembershipUpdate, PolicyProposal, MAX_HISTORY,
};
use wardline_aggregator::state::{ClusterState, Command, STATE_FORMAT};
use wardline_common::MacAddr;

const PUMP_A: MacAddr = MacAddr([0x00, 0x09, 0xfb, 0x20, 0x00, 0x01]);
const PUMP_B: MacAddr = MacAddr([0x00, 0x09, 0xfb, 0x20, 0x00, 0x02]);
const SERVER: MacAddr = MacAddr([0x00, 0x15, 0x5d, 0x20, 0x00, 0x03]);

fn v1() -> String {
    format!(
        r#"
[policy]
name = "h"
default = "allow"
[[group]]
name = "pumps"
match = 'class == "infusion_pump"'
[[group]]
name = "servers"
members = ["{SERVER}"]
"#
    )
}

/// v1 without "servers", and pump B excluded by MAC.
fn v2() -> String {
    format!(
        r#"
[policy]
name = "h"
default = "allow"
[[group]]
name = "pumps"
match = 'class == "infusion_pump"'
exclude = ["{PUMP_B}"]
"#
    )
}

fn members(pumps: &[MacAddr], servers: Option<&[MacAddr]>) -> Vec<GroupMembers> {
    let mut m = vec![GroupMembers { group: "pumps".into(), members: pumps.to_vec() }];
    if let Some(s) = servers {
        m.push(GroupMembers { group: "servers".into(), members: s.to_vec() });
    }
    m
}

fn version(base: Option<u64>, text: &str, membership: Vec<GroupMembers>, at_ms: u64) -> Command {
    Command::PolicyVersion(PolicyProposal {
        base,
        text: canonical(text),
        author: "op-admin".into(),
        message: "m".into(),
        at_ms,
        membership,
        rollback_of: None,
    })
}

fn update(version: u64, membership: Vec<GroupMembers>, at_ms: u64) -> Command {
    Command::PolicyMembership(MembershipUpdate { version, membership, at_ms })
}

fn commands() -> Vec<Command> {
    vec![
        batch(1, vec![device(PUMP_A, "10.0.40.21", T0_US), device(SERVER, "10.0.40.23", T0_US)], vec![]),
        version(None, &v1(), members(&[PUMP_A], Some(&[SERVER])), 1_000),
        // A second pump joins on refresh; then the first stops matching.
        update(1, members(&[PUMP_A, PUMP_B], Some(&[SERVER])), 2_000),
        update(1, members(&[PUMP_B], Some(&[SERVER])), 3_000),
        // Unchanged: nothing recorded. Stale (version 7 is not active): refused, nothing recorded.
        update(1, members(&[PUMP_B], Some(&[SERVER])), 3_500),
        update(7, members(&[], Some(&[])), 3_600),
        // v2 excludes pump B and drops the servers group.
        version(Some(1), &v2(), members(&[], None), 4_000),
    ]
}

#[test]
fn joins_and_leaves_are_recorded_with_why_the_same_on_every_replica_and_after_a_snapshot() {
    let mut a = ClusterState::new();
    let applied = crate::apply_all(&mut a, &commands());
    assert_eq!(applied, [true, true, true, true, false, false, true]);
    /// seq, at_ms, group, MAC, change, reason, rule.
    type Row<'a> = (u64, u64, &'a str, MacAddr, C, R, Option<&'a str>);
    let got: Vec<Row> = a
        .group_history()
        .entries()
        .map(|e| (e.seq, e.at_ms, e.group.as_str(), e.mac, e.change, e.reason, e.rule.as_deref()))
        .collect();
    let rule = Some(r#"class == "infusion_pump""#);
    assert_eq!(
        got,
        [
            (1, 1_000, "pumps", PUMP_A, C::Joined, R::Matched, rule),
            (2, 1_000, "servers", SERVER, C::Joined, R::Static, None),
            (3, 2_000, "pumps", PUMP_B, C::Joined, R::Matched, rule),
            (4, 3_000, "pumps", PUMP_A, C::Left, R::NoLongerMatches, rule),
            (5, 4_000, "pumps", PUMP_B, C::Left, R::Excluded, None),
            (6, 4_000, "servers", SERVER, C::Left, R::GroupRemoved, None),
        ]
    );
    assert_eq!(a.group_history().entries().map(|e| e.version).collect::<Vec<_>>(), [1, 1, 1, 1, 2, 2]);
    assert_eq!(a.group_history().of_group("servers").count(), 2);

    // Another replica applying the same log holds the same history; so does a snapshot.
    let mut b = ClusterState::new();
    crate::apply_all(&mut b, &commands());
    assert_eq!(a.group_history(), b.group_history());
    let bytes = bincode::serde::encode_to_vec(&a, bincode::config::standard()).unwrap();
    let (back, _): (ClusterState, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!(back.group_history(), a.group_history());
    assert_eq!(back, a);
    let json = serde_json::to_vec(&a).unwrap();
    let back: ClusterState = serde_json::from_slice(&json).unwrap();
    assert_eq!(back.group_history(), a.group_history());
}

#[test]
fn history_is_bounded_and_counts_what_it_dropped() {
    let mut st = ClusterState::new();
    assert!(st.apply(&version(None, &v1(), members(&[], Some(&[])), 1)).applied);
    let many: Vec<MacAddr> = (0..(MAX_HISTORY as u32 / 2 + 1))
        .map(|i| {
            let b = i.to_be_bytes();
            MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
        })
        .collect();
    assert!(st.apply(&update(1, members(&many, Some(&[])), 2)).applied);
    assert!(st.apply(&update(1, members(&[], Some(&[])), 3)).applied);
    let total = 2 * many.len() as u64;
    let h = st.group_history();
    assert_eq!(h.len(), MAX_HISTORY);
    assert_eq!(h.dropped(), total - MAX_HISTORY as u64);
    assert_eq!(h.entries().next().unwrap().seq, h.dropped() + 1, "the oldest went first");
    assert_eq!(h.entries().last().unwrap().seq, total);
}

/// A format-7 snapshot (written before membership history existed) loads with an empty
/// history and everything else intact.
#[test]
fn a_format_7_snapshot_loads_with_empty_history() {
    let mut st = ClusterState::new();
    crate::apply_all(&mut st, &commands()[..2]);
    let mut fresh = st.clone();
    // The same state without history, as a format-7 node would have written it: the
    // history is the last part, and the format the first number.
    fresh = {
        let json = serde_json::to_value(&fresh).unwrap();
        let mut json = json;
        json.as_object_mut().unwrap().remove("group_history");
        // Parts of format 11 (sensor epochs, device homes) are left off too.
        json.as_object_mut().unwrap().remove("epochs");
        json.as_object_mut().unwrap().remove("homes");
        serde_json::from_value(json).unwrap()
    };
    assert!(fresh.group_history().is_empty());
    let cfg = bincode::config::standard();
    let mut bytes = bincode::serde::encode_to_vec(&fresh, cfg).unwrap();
    // Format 7 ends with the revocations: the parts added after it (history, the second
    // detectors, device tags, sensor health, spool losses, sensor epochs, device homes, risk
    // history) are left off, all empty here.
    let mut empty =
        bincode::serde::encode_to_vec(wardline_aggregator::state::policy::GroupHistory::default(), cfg).unwrap();
    empty.extend(
        bincode::serde::encode_to_vec(wardline_aggregator::state::anomaly::detectors::Detectors::default(), cfg)
            .unwrap(),
    );
    empty.extend(bincode::serde::encode_to_vec(wardline_aggregator::state::tags::DeviceTags::default(), cfg).unwrap());
    empty.extend(
        bincode::serde::encode_to_vec(wardline_aggregator::state::sensor_health::SensorHealth::default(), cfg).unwrap(),
    );
    empty.extend(
        bincode::serde::encode_to_vec(wardline_aggregator::state::spool_losses::SpoolLosses::default(), cfg).unwrap(),
    );
    empty.extend(
        bincode::serde::encode_to_vec(wardline_aggregator::state::epochs::SensorEpochs::default(), cfg).unwrap(),
    );
    empty.extend(bincode::serde::encode_to_vec(wardline_aggregator::state::home::DeviceHomes::default(), cfg).unwrap());
    empty.extend(
        bincode::serde::encode_to_vec(wardline_aggregator::state::risk_history::RiskHistoryStore::default(), cfg)
            .unwrap(),
    );
    assert!(bytes.ends_with(&empty));
    bytes.truncate(bytes.len() - empty.len());
    let current = bincode::serde::encode_to_vec(STATE_FORMAT, cfg).unwrap();
    let seven = bincode::serde::encode_to_vec(0x574c_0007u32, cfg).unwrap();
    assert_eq!(bytes[..current.len()], current[..]);
    bytes.splice(..current.len(), seven);
    let (back, used): (ClusterState, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
    assert_eq!(used, bytes.len());
    assert!(back.group_history().is_empty());
    assert_eq!(back.policy(), st.policy());
    assert_eq!(back.devices(), st.devices());
}
