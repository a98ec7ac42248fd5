//! Replay over a real ClickHouse 18.16 server: the SQL the replay pushes down decides every
//! generated flow exactly as `CompiledPolicy::evaluate` does, the per-workflow totals add up
//! to the denied flows, and comparing two versions counts the flows whose verdict changes.

use crate::flow;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use ulid::Ulid;
use wardline_aggregator::policy::resolve::membership;
use wardline_aggregator::sink::clickhouse::ClickHouseSink;
use wardline_aggregator::sink::replay::{blocked_by_workflow, compare, verdicts, ReplayContext};
use wardline_aggregator::sink::FlowSink;
use wardline_aggregator::state::policy::parse;
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_common::{FlowRecord, MacAddr};
use wardline_intel::policy::{CompiledPolicy, Flow, FlowEnd, Policy, PolicyDevice};
use wardline_intel::{Category, Criticality};

const CANDIDATE: &str = r#"
[policy]
name = "replay"
default = "monitor"
[[group]]
name = "pumps"
members = ["00:09:fb:30:00:01", "00:09:fb:30:00:02", "00:09:fb:30:00:03"]
[[group]]
name = "servers"
members = ["00:09:fb:30:00:04", "00:09:fb:30:00:05"]
[[group]]
name = "v6"
members = ["00:09:fb:30:00:07", "00:09:fb:30:00:08"]
[[scope]]
group = "servers"
default = "deny"
[[scope]]
group = "pumps"
default = "allow"
[[rule]]
name = "hl7"
from = ["pumps"]
to = ["servers"]
protocol = "tcp"
ports = [2575]
app = "hl7"
[[rule]]
name = "pump web"
from = ["pumps"]
to = ["servers", "10.0.60.0/29"]
protocol = "tcp"
ports = [80, "8000-8080"]
[[rule]]
name = "no pumps outside"
from = ["pumps", "v6"]
to = ["external"]
action = "deny"
[[rule]]
name = "dns inside"
from = ["any"]
to = ["internal"]
protocol = "udp"
ports = [53]
[[rule]]
name = "v6 host"
from = ["v6"]
to = ["fd00::9"]
protocol = "any"
action = "monitor"
[[rule]]
name = "no telnet"
from = ["any"]
to = ["any"]
protocol = "tcp"
ports = [23]
action = "deny"
"#;

fn devices() -> Vec<PolicyDevice> {
    let ips = [
        "10.0.60.1",
        "10.0.60.2",
        "10.0.60.3",
        "10.0.60.20",
        "10.0.60.21",
        "10.0.60.30",
        "fd00::7",
        "fd00::8",
        "fd00::9",
    ];
    let classes = ["infusion_pump", "infusion_pump", "infusion_pump", "pump_server", "pacs", "workstation"];
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            let mac = MacAddr([0x00, 0x09, 0xfb, 0x30, 0x00, i as u8 + 1]);
            let class = classes.get(i).copied().unwrap_or("monitor");
            let mut d = PolicyDevice::new(mac, class, Category::Medical, Criticality::PatientCritical);
            d.ips = vec![ip.parse().unwrap()];
            d
        })
        .collect()
}

fn context(policy: &Policy, devices: &[PolicyDevice]) -> ReplayContext {
    let by_mac: BTreeMap<MacAddr, &PolicyDevice> = devices.iter().map(|d| (d.mac, d)).collect();
    ReplayContext {
        group_ips: membership(policy, devices)
            .into_iter()
            .map(|m| (m.group, m.members.iter().flat_map(|mac| by_mac[mac].ips.clone()).collect()))
            .collect(),
        classes: devices.iter().flat_map(|d| d.ips.iter().map(|ip| (*ip, d.class.clone()))).collect(),
    }
}

fn generated_flows(devices: &[PolicyDevice]) -> Vec<FlowRecord> {
    let mut addresses: Vec<IpAddr> = devices.iter().flat_map(|d| d.ips.clone()).collect();
    for extra in [
        "10.0.60.5",
        "203.0.113.7",
        "8.8.8.8",
        "100.64.1.1",
        "169.254.1.1",
        "224.0.0.251",
        "172.20.1.1",
        "2001:db8::1",
        "ff02::1",
        "fe80::1",
        "::1",
    ] {
        addresses.push(extra.parse().unwrap());
    }
    let ports = [23u16, 53, 80, 443, 2575, 8000, 8080, 8081, 104];
    let apps = ["unknown", "hl7", "HL7", "dicom", ""];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    (0..3000)
        .filter_map(|i| {
            let a = addresses[next(addresses.len())];
            let b = addresses[next(addresses.len())];
            if a.is_ipv4() != b.is_ipv4() {
                return None;
            }
            let mut f =
                flow((MacAddr([2, 0, 0, 0, 0, 1]), "10.0.0.1"), (MacAddr([2, 0, 0, 0, 0, 2]), "10.0.0.2"), 0, 0);
            f.a_ip = a;
            f.b_ip = b;
            f.ip_proto = [6u8, 6, 17, 1][next(4)];
            f.b_port = if matches!(f.ip_proto, 6 | 17) { ports[next(ports.len())] } else { 0 };
            f.app = Cow::Owned(apps[next(apps.len())].to_string());
            f.first_seen_us = crate::T0_US + i;
            Some(f)
        })
        .collect()
}

fn decide(compiled: &CompiledPolicy, f: &FlowRecord) -> &'static str {
    let app = Some(f.app.as_ref()).filter(|a| !a.is_empty() && *a != "unknown");
    compiled
        .evaluate(&Flow {
            src: FlowEnd { device: None, ip: Some(f.a_ip) },
            dst: FlowEnd { device: None, ip: Some(f.b_ip) },
            ip_proto: f.ip_proto,
            dst_port: f.b_port,
            app,
            dst_domain: None,
        })
        .action
        .as_str()
}

#[test]
fn sql_replay_on_clickhouse_agrees_with_the_evaluator_flow_by_flow() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sink = rt.block_on(ClickHouseSink::connect(&ch.http_url, "wardline_replay")).expect("ClickHouse sink");
    let devices = devices();
    let flows = generated_flows(&devices);
    let mut expected = BTreeMap::new();
    let candidate = parse(CANDIDATE).unwrap();
    let compiled = CompiledPolicy::compile(&candidate, &devices);
    for (n, chunk) in flows.chunks(100).enumerate() {
        let batch = Ulid::from_parts(n as u64 + 1, 7);
        rt.block_on(sink.write_batch(batch, "ward-1", "ward", chunk)).unwrap();
        for (i, f) in chunk.iter().enumerate() {
            expected.insert((batch.to_string(), i as u32), decide(&compiled, f));
        }
    }
    let ctx = context(&candidate, &devices);
    let got = rt.block_on(verdicts(&sink, &candidate, &ctx)).unwrap();
    assert_eq!(got.len(), flows.len());
    let mut mismatches = Vec::new();
    for v in &got {
        let want = expected[&(v.batch_id.clone(), v.idx)];
        if v.action != want {
            mismatches.push(format!("{} #{}: sql {} memory {}", v.batch_id, v.idx, v.action, want));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ: {:#?}",
        mismatches.len(),
        got.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    for action in ["allow", "deny", "monitor"] {
        assert!(expected.values().any(|a| *a == action), "the generated flows exercise {action}");
    }

    // Grouped by workflow: the totals are the denied flows.
    let denied = expected.values().filter(|a| **a == "deny").count() as u64;
    let by_workflow = rt.block_on(blocked_by_workflow(&sink, &candidate, &ctx, 0, u64::MAX, 1000)).unwrap();
    assert_eq!(by_workflow.iter().map(|w| w.flows).sum::<u64>(), denied);
    assert!(by_workflow.iter().all(|w| !w.examples.is_empty() && w.examples.len() <= 3));
    assert!(by_workflow.iter().any(|w| w.src_class == "infusion_pump"), "{by_workflow:#?}");

    // Compare with a version that also allows telnet: no_longer_blocked counts exactly the
    // flows whose verdict moves off deny.
    let relaxed_text = CANDIDATE.replace("ports = [23]\naction = \"deny\"", "ports = [23]\naction = \"allow\"");
    let relaxed = parse(&relaxed_text).unwrap();
    let relaxed_compiled = CompiledPolicy::compile(&relaxed, &devices);
    let moved =
        flows.iter().filter(|f| decide(&compiled, f) == "deny" && decide(&relaxed_compiled, f) != "deny").count();
    let added =
        flows.iter().filter(|f| decide(&compiled, f) != "deny" && decide(&relaxed_compiled, f) == "deny").count();
    let changes = rt.block_on(compare(&sink, &candidate, &relaxed, &ctx, 0, u64::MAX)).unwrap();
    assert_eq!(changes.iter().map(|c| c.no_longer_blocked).sum::<u64>(), moved as u64);
    assert_eq!(changes.iter().map(|c| c.newly_blocked).sum::<u64>(), added as u64);
    assert!(moved > 0);
    eprintln!(
        "replayed {} flows on {}: {denied} denied in {} workflows, {moved} no longer blocked when telnet is allowed",
        got.len(),
        ch.query("SELECT version()").unwrap().trim(),
        by_workflow.len()
    );
}
