//! Policy replay over ClickHouse (issue 12 part 3, decision 0025): a candidate policy
//! translated into one SQL expression pushed down to the `flows` table, so "what would this
//! policy have blocked last month" is one scan on the server, not a download.
//!
//! The expression follows `CompiledPolicy::evaluate` with flow ends given by address (the
//! device listing the address; addresses are strings in the table): a `multiIf` over the
//! rules in order (protocol, ports, app label, source and destination ends), then the scopes
//! in order (source or destination in the scope's group), then the default. Groups become
//! IN-lists of their members' addresses; networks, `external` and `internal` become
//! arithmetic on `IPv4StringToNum` / `IPv6StringToNum` (ClickHouse 18.16 has no IPv4 type).
//! Domains never hold (the table has no DNS names). IPv6 networks other than single hosts
//! are refused. Very large groups make long queries (ClickHouse's `max_query_size`, 256 KiB
//! by default, bounds them).

use super::clickhouse::ClickHouseSink;
use super::SinkError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use wardline_common::MacAddr;
use wardline_intel::policy::{Endpoint, Membership, Policy, PolicyDevice, Rule};
use wardline_intel::Transport;

/// What a replay needs besides the policy: each group's member addresses, and each known
/// address's device class (for the clinical-workflow grouping).
#[derive(Clone, Debug, Default)]
pub struct ReplayContext {
    pub group_ips: BTreeMap<String, Vec<IpAddr>>,
    pub classes: BTreeMap<IpAddr, String>,
}

impl ReplayContext {
    /// The context of `policy` over `devices`: each group's members' addresses (sorted) and
    /// each device address's class.
    pub fn from_devices(policy: &Policy, devices: &[PolicyDevice]) -> Self {
        let membership = Membership::evaluate(&policy.groups, devices);
        let by_mac: BTreeMap<MacAddr, &PolicyDevice> = devices.iter().map(|d| (d.mac, d)).collect();
        let group_ips = membership
            .groups
            .into_iter()
            .map(|(group, members)| {
                let mut ips: Vec<IpAddr> =
                    members.iter().filter_map(|m| by_mac.get(m)).flat_map(|d| d.ips.iter().copied()).collect();
                ips.sort();
                ips.dedup();
                (group, ips)
            })
            .collect();
        let classes = devices.iter().flat_map(|d| d.ips.iter().map(|ip| (*ip, d.class.clone()))).collect();
        ReplayContext { group_ips, classes }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn ip_list(ips: &[IpAddr]) -> String {
    ips.iter().map(|ip| quote(&ip.to_string())).collect::<Vec<_>>().join(", ")
}

fn v4(col: &str) -> String {
    format!("IPv4StringToNum({col})")
}

fn in_v4_net(col: &str, net: u32, prefix: u8) -> String {
    let mask: u64 = if prefix == 0 { 0 } else { (u32::MAX << (32 - prefix)) as u64 };
    format!("(position({col}, ':') = 0 AND bitAnd({}, {mask}) = {})", v4(col), (net as u64) & mask)
}

/// `crate::flow_context::is_external` in SQL.
fn external(col: &str) -> String {
    let inside_v4 = [
        ("10.0.0.0", 8),
        ("172.16.0.0", 12),
        ("192.168.0.0", 16),
        ("127.0.0.0", 8),
        ("169.254.0.0", 16),
        ("224.0.0.0", 4),
        ("100.64.0.0", 10),
        ("255.255.255.255", 32),
        ("0.0.0.0", 32),
    ]
    .iter()
    .map(|(n, p)| in_v4_net(col, u32::from(n.parse::<std::net::Ipv4Addr>().expect("valid")), *p))
    .collect::<Vec<_>>()
    .join(" OR ");
    let b = |i: u8| format!("reinterpretAsUInt8(substring(IPv6StringToNum({col}), {i}, 1))");
    let inside_v6 = format!(
        "{col} IN ('::1', '::') OR {b0} = 255 OR bitAnd({b0}, 254) = 252 OR ({b0} = 254 AND bitAnd({b1}, 192) = 128)",
        b0 = b(1),
        b1 = b(2)
    );
    format!("(if(position({col}, ':') = 0, NOT ({inside_v4}), NOT ({inside_v6})))")
}

fn end_sql(col: &str, ends: &[Endpoint], ctx: &ReplayContext, rule: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for e in ends {
        parts.push(match e {
            Endpoint::Any => return Ok("1".into()),
            Endpoint::Group(g) => match ctx.group_ips.get(g).filter(|ips| !ips.is_empty()) {
                Some(ips) => format!("{col} IN ({})", ip_list(ips)),
                None => "0".into(),
            },
            Endpoint::Network(c) => match c.to_string().split_once('/') {
                Some((addr, prefix)) => match (addr.parse::<IpAddr>(), prefix.parse::<u8>()) {
                    (Ok(IpAddr::V4(a)), Ok(p)) => in_v4_net(col, u32::from(a), p),
                    (Ok(IpAddr::V6(a)), Ok(128)) => format!("{col} = {}", quote(&a.to_string())),
                    _ => return Err(format!("rule {rule:?}: network {c} cannot be replayed (IPv6 networks)")),
                },
                None => return Err(format!("rule {rule:?}: network {c} is not in prefix notation")),
            },
            Endpoint::External => external(col),
            Endpoint::Internal => format!("NOT {}", external(col)),
            Endpoint::Domain(_) => "0".into(),
        });
    }
    Ok(if parts.is_empty() { "0".into() } else { format!("({})", parts.join(" OR ")) })
}

fn rule_sql(r: &Rule, ctx: &ReplayContext) -> Result<String, String> {
    let proto = match (r.protocol, r.ports.is_empty()) {
        (Transport::Tcp, _) => "ip_proto = 6".to_string(),
        (Transport::Udp, _) => "ip_proto = 17".to_string(),
        (Transport::Any, true) => "1".to_string(),
        (Transport::Any, false) => "ip_proto IN (6, 17)".to_string(),
    };
    let ports = if r.ports.is_empty() {
        "1".to_string()
    } else {
        let ranges: Vec<String> =
            r.ports.iter().map(|p| format!("(b_port >= {} AND b_port <= {})", p.lo, p.hi)).collect();
        format!("({})", ranges.join(" OR "))
    };
    let app = match &r.app {
        Some(a) => format!("(app NOT IN ('', 'unknown') AND lower(app) = {})", quote(&a.to_ascii_lowercase())),
        None => "1".to_string(),
    };
    let src = end_sql("a_ip", &r.from, ctx, &r.name)?;
    let dst = end_sql("b_ip", &r.to, ctx, &r.name)?;
    Ok(format!("({proto} AND {ports} AND {app} AND {src} AND {dst})"))
}

/// The SQL expression giving each flow's action (`'allow'`, `'deny'`, `'monitor'`).
pub fn action_sql(policy: &Policy, ctx: &ReplayContext) -> Result<String, String> {
    let mut arms = Vec::new();
    for r in &policy.rules {
        arms.push(format!("{}, {}", rule_sql(r, ctx)?, quote(r.action.as_str())));
    }
    for s in &policy.scopes {
        let held = match ctx.group_ips.get(&s.group).filter(|ips| !ips.is_empty()) {
            Some(ips) => {
                let list = ip_list(ips);
                format!("(a_ip IN ({list}) OR b_ip IN ({list}))")
            }
            None => "0".into(),
        };
        arms.push(format!("{held}, {}", quote(s.default.as_str())));
    }
    let default = quote(policy.default.as_str());
    Ok(if arms.is_empty() { default } else { format!("multiIf({}, {default})", arms.join(", ")) })
}

fn class_sql(col: &str, ctx: &ReplayContext) -> String {
    if ctx.classes.is_empty() {
        return "'unknown'".into();
    }
    let ips: Vec<String> = ctx.classes.keys().map(|ip| quote(&ip.to_string())).collect();
    let classes: Vec<String> = ctx.classes.values().map(|c| quote(c)).collect();
    format!("transform({col}, [{}], [{}], 'unknown')", ips.join(", "), classes.join(", "))
}

fn window(from_us: u64, to_us: u64) -> String {
    format!("first_seen_us >= {from_us} AND first_seen_us < {to_us}")
}

/// Flows one clinical workflow (source class → destination class, application) has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct WorkflowBlocked {
    pub src_class: String,
    pub dst_class: String,
    pub app: String,
    pub flows: u64,
    /// Up to three examples, `a_ip -> b_ip proto/port`.
    pub examples: Vec<String>,
}

const EXAMPLE: &str = "groupArray(3)(concat(a_ip, ' -> ', b_ip, ' ', toString(ip_proto), '/', toString(b_port)))";

/// The flows first seen in `[from_us, to_us)` that `policy` would deny, grouped by clinical
/// workflow, most flows first.
pub async fn blocked_by_workflow(
    sink: &ClickHouseSink,
    policy: &Policy,
    ctx: &ReplayContext,
    from_us: u64,
    to_us: u64,
    limit: u32,
) -> Result<Vec<WorkflowBlocked>, ReplayError> {
    let action = action_sql(policy, ctx).map_err(ReplayError::Unsupported)?;
    let sql = format!(
        "SELECT {src} AS src_class, {dst} AS dst_class, app, count() AS flows, {EXAMPLE} AS examples \
         FROM flows FINAL WHERE {w} AND ({action}) = 'deny' \
         GROUP BY src_class, dst_class, app ORDER BY flows DESC, src_class, dst_class, app LIMIT {limit}",
        src = class_sql("a_ip", ctx),
        dst = class_sql("b_ip", ctx),
        w = window(from_us, to_us),
    );
    Ok(sink.fetch_raw("replaying a policy", &sql).await?)
}

/// One workflow's difference between two versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct WorkflowChange {
    pub src_class: String,
    pub dst_class: String,
    pub app: String,
    /// Denied by the candidate, not by the current version.
    pub newly_blocked: u64,
    /// Denied by the current version, not by the candidate.
    pub no_longer_blocked: u64,
}

/// How `candidate` differs from `current` on the flows of `[from_us, to_us)`, per workflow.
pub async fn compare(
    sink: &ClickHouseSink,
    current: &Policy,
    candidate: &Policy,
    ctx: &ReplayContext,
    from_us: u64,
    to_us: u64,
) -> Result<Vec<WorkflowChange>, ReplayError> {
    compare_contexts(sink, (current, ctx), (candidate, ctx), from_us, to_us).await
}

/// [`compare`] with each policy's own context (its groups' members); the workflow classes
/// are the candidate context's.
pub async fn compare_contexts(
    sink: &ClickHouseSink,
    (current, current_ctx): (&Policy, &ReplayContext),
    (candidate, ctx): (&Policy, &ReplayContext),
    from_us: u64,
    to_us: u64,
) -> Result<Vec<WorkflowChange>, ReplayError> {
    let a = action_sql(current, current_ctx).map_err(ReplayError::Unsupported)?;
    let b = action_sql(candidate, ctx).map_err(ReplayError::Unsupported)?;
    let sql = format!(
        "SELECT src_class, dst_class, app, countIf(a != 'deny' AND b = 'deny') AS newly_blocked, \
         countIf(a = 'deny' AND b != 'deny') AS no_longer_blocked FROM \
         (SELECT {src} AS src_class, {dst} AS dst_class, app, {a} AS a, {b} AS b FROM flows FINAL WHERE {w}) \
         GROUP BY src_class, dst_class, app HAVING newly_blocked + no_longer_blocked > 0 \
         ORDER BY src_class, dst_class, app",
        src = class_sql("a_ip", ctx),
        dst = class_sql("b_ip", ctx),
        w = window(from_us, to_us),
    );
    Ok(sink.fetch_raw("comparing two policy versions", &sql).await?)
}

/// One stored flow's verdict (for checking the SQL against the in-memory evaluator).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct FlowVerdict {
    pub batch_id: String,
    pub idx: u32,
    pub action: String,
}

/// Every stored flow's action under `policy`, by (batch id, index).
pub async fn verdicts(
    sink: &ClickHouseSink,
    policy: &Policy,
    ctx: &ReplayContext,
) -> Result<Vec<FlowVerdict>, ReplayError> {
    let action = action_sql(policy, ctx).map_err(ReplayError::Unsupported)?;
    let sql = format!("SELECT batch_id, idx, {action} AS action FROM flows FINAL ORDER BY batch_id, idx");
    Ok(sink.fetch_raw("replaying a policy flow by flow", &sql).await?)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the policy cannot be replayed in SQL: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Sink(#[from] SinkError),
}
