//! `wardline-aggregator inventory`: print a running node's inventory.

use super::{client, get_json, READ_TIMEOUT};
use anyhow::{bail, Result};
use serde_json::Value;

pub async fn print_inventory(
    api: &str,
    auth: &crate::auth::client::ApiAuth,
    json: bool,
    wait_leader: bool,
) -> Result<()> {
    let api = api.trim_end_matches('/');
    let client = client(auth, READ_TIMEOUT)?;
    if wait_leader {
        let h = get_json(&client, api, "/healthz").await?;
        if h["leader"].is_null() {
            bail!("node {} has no Raft leader yet", h["node_id"]);
        }
    }
    let inv = get_json(&client, api, "/api/v1/inventory").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&inv)?);
        return Ok(());
    }
    let devices = inv["devices"].as_array().cloned().unwrap_or_default();
    println!("Inventory: {} devices", devices.len());
    println!(
        "{:<17}  {:<28}  {:<22}  {:<18}  {:<20}  DHCP VENDOR CLASS",
        "MAC", "VENDOR (IEEE OUI)", "CLASS", "HOSTNAME", "IPS"
    );
    for d in devices {
        let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
        let ips: Vec<String> = d["ips"].as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default();
        let class = d["classification"]["class"]["value"].as_str().unwrap_or("-").to_string();
        println!(
            "{:<17}  {:<28}  {:<22}  {:<18}  {:<20}  {}",
            s(&d["mac"]),
            truncate(&s(&d["vendor"]), 28),
            truncate(&class, 22),
            truncate(&s(&d["hostname"]), 18),
            truncate(&ips.join(","), 20),
            s(&d["dhcp_vendor_class"]),
        );
    }
    let totals = get_json(&client, api, "/api/v1/flows/totals").await?;
    // Acks come before the outbox drains into the store (decision 0016), so right after a
    // sensor finishes the store may not hold everything yet: say both.
    println!(
        "Flows acknowledged: {} ({} packets, {} bytes); in the flow store: {}, waiting in the outbox: {}",
        totals["replicated"]["flows"],
        totals["replicated"]["packets"],
        totals["replicated"]["bytes"],
        totals["store"]["rows"],
        totals["outbox"]["rows"]
    );
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
