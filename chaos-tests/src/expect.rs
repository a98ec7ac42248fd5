//! Comparisons between what a capture's ground truth says and what the cluster stored.

use anyhow::{bail, Result};
use serde_json::Value;
use std::collections::BTreeMap;

/// Direction-free flow key: (proto, lower endpoint, higher endpoint).
pub type FlowKey = (u8, String, u16, String, u16);

pub fn flow_key(proto: u8, a_ip: &str, a_port: u16, b_ip: &str, b_port: u16) -> FlowKey {
    let a = (a_ip.to_string(), a_port);
    let b = (b_ip.to_string(), b_port);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    (proto, lo.0, lo.1, hi.0, hi.1)
}

/// Packets and bytes per direction-free flow key from the ground truth's flows.
pub fn truth_flows(truth: &Value) -> BTreeMap<FlowKey, (u64, u64)> {
    let mut out = BTreeMap::new();
    for f in truth["flows"].as_array().into_iter().flatten() {
        let k = flow_key(
            f["ip_proto"].as_u64().unwrap_or(0) as u8,
            f["a_ip"].as_str().unwrap_or(""),
            f["a_port"].as_u64().unwrap_or(0) as u16,
            f["b_ip"].as_str().unwrap_or(""),
            f["b_port"].as_u64().unwrap_or(0) as u16,
        );
        let e = out.entry(k).or_insert((0, 0));
        e.0 += f["packets_ab"].as_u64().unwrap_or(0) + f["packets_ba"].as_u64().unwrap_or(0);
        e.1 += f["bytes_ab"].as_u64().unwrap_or(0) + f["bytes_ba"].as_u64().unwrap_or(0);
    }
    out
}

/// Parse `SELECT ip_proto, a_ip, a_port, b_ip, b_port, packets, bytes ... FORMAT TabSeparated`.
pub fn tsv_flows(tsv: &str) -> Result<BTreeMap<FlowKey, (u64, u64)>> {
    let mut out = BTreeMap::new();
    for line in tsv.lines().filter(|l| !l.is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        if c.len() != 7 {
            bail!("unexpected ClickHouse row {line:?}");
        }
        let k = flow_key(c[0].parse()?, c[1], c[2].parse()?, c[3], c[4].parse()?);
        let e = out.entry(k).or_insert((0, 0));
        e.0 += c[5].parse::<u64>()?;
        e.1 += c[6].parse::<u64>()?;
    }
    Ok(out)
}

/// The query that sums stored flows per 5-tuple, deduplicated by FINAL.
pub const CLICKHOUSE_FLOWS_SQL: &str = "SELECT ip_proto, a_ip, a_port, b_ip, b_port, \
    sum(packets_ab + packets_ba), sum(bytes_ab + bytes_ba) FROM wardline.flows FINAL \
    GROUP BY ip_proto, a_ip, a_port, b_ip, b_port FORMAT TabSeparated";

/// Every difference between two flow maps, for a readable failure.
pub fn flow_differences(expected: &BTreeMap<FlowKey, (u64, u64)>, got: &BTreeMap<FlowKey, (u64, u64)>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match got.get(k) {
            None => diffs.push(format!("missing flow {k:?} (expected {v:?})")),
            Some(g) if g != v => diffs.push(format!("flow {k:?}: expected (packets, bytes) {v:?}, stored {g:?}")),
            _ => {}
        }
    }
    for k in got.keys() {
        if !expected.contains_key(k) {
            diffs.push(format!("unexpected flow {k:?} = {:?}", got[k]));
        }
    }
    diffs
}

/// Check every ground-truth device is in the inventory with its MAC, IPs, vendor and hostname.
pub fn inventory_differences(truth: &Value, inventory: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    let devices = inventory["devices"].as_array().cloned().unwrap_or_default();
    for t in truth["devices"].as_array().into_iter().flatten() {
        let mac = t["mac"].as_str().unwrap_or("");
        let Some(d) = devices.iter().find(|d| d["mac"].as_str() == Some(mac)) else {
            diffs.push(format!("device {mac} ({}) missing from the inventory", t["name"]));
            continue;
        };
        for ip in t["ips"].as_array().into_iter().flatten() {
            if !d["ips"].as_array().is_some_and(|a| a.contains(ip)) {
                diffs.push(format!("device {mac}: IP {ip} missing (inventory has {})", d["ips"]));
            }
        }
        if d["vendor"] != t["vendor"] {
            diffs.push(format!("device {mac}: vendor {} expected {}", d["vendor"], t["vendor"]));
        }
        if !t["hostname"].is_null() && d["hostname"] != t["hostname"] {
            diffs.push(format!("device {mac}: hostname {} expected {}", d["hostname"], t["hostname"]));
        }
    }
    diffs
}
