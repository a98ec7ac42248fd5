//! `wardline-aggregator device | flows | sensors`: the read routes of the API from the
//! command line, a readable table by default and the API's own JSON with `--json`.

use super::{cell, client, get_json, print_json, ApiTarget, READ_TIMEOUT};
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::Value;

/// One device: `show`, `history`, `flows`.
#[derive(Subcommand)]
pub enum DeviceCmd {
    /// The merged record of one device (a MAC, or `site:ip[@vlan]` for a device known by address).
    Show(DeviceArgs),
    /// Its connections, disconnections, address, VLAN and site changes.
    History(DeviceArgs),
    /// Its newest flows, each labelled required / acceptable / risky / unknown for its clinical function.
    Flows {
        #[command(flatten)]
        device: DeviceArgs,
        /// How many flows (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Its operator tags (group conditions `tag == "…"`); with --set or --clear, replace them
    /// (analyst). Groups follow on the next membership refresh.
    Tags {
        #[command(flatten)]
        device: DeviceArgs,
        /// A tag to set (repeatable); the device's tags become exactly these.
        #[arg(long = "set", value_name = "TAG")]
        set: Vec<String>,
        /// Remove every tag of the device.
        #[arg(long, conflicts_with = "set")]
        clear: bool,
    },
}

#[derive(Args)]
pub struct DeviceArgs {
    #[command(flatten)]
    pub target: ApiTarget,
    /// A MAC (any case, `:` or `-`) or an IP-keyed device's id (`site:ip` or `site:ip@vlan`).
    pub id: String,
    /// The API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Stored flows: a filtered list, or the totals.
#[derive(Subcommand)]
pub enum FlowsCmd {
    /// Newest flows first; filters combine with AND.
    List {
        #[command(flatten)]
        target: ApiTarget,
        /// Either end has this MAC.
        #[arg(long)]
        mac: Option<String>,
        /// Either end has this address.
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        sensor: Option<String>,
        /// Application label (`hl7`, `dicom`, `telnet`, …).
        #[arg(long)]
        app: Option<String>,
        /// How many flows (1 to 10000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Flows, packets and bytes: carried through Raft, in the flow store, waiting in the outbox.
    Totals {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        json: bool,
    },
}

pub async fn device(cmd: DeviceCmd) -> Result<()> {
    if let DeviceCmd::Tags { device, set, clear } = &cmd {
        let c = client(&device.target.auth, READ_TIMEOUT)?;
        let path = format!("/api/v1/devices/{}/tags", device.id);
        let v = if set.is_empty() && !clear {
            get_json(&c, &device.target.api, &path).await?
        } else {
            let body = serde_json::json!({ "tags": set });
            super::send(super::request(&c, reqwest::Method::PUT, &device.target.api, &path).json(&body)).await?
        };
        if device.json {
            return print_json(&v);
        }
        let tags: Vec<String> = v["tags"].as_array().into_iter().flatten().map(cell).collect();
        println!("{}: {}", cell(&v["mac"]), if tags.is_empty() { "no tags".to_string() } else { tags.join(", ") });
        return Ok(());
    }
    let (args, path) = match &cmd {
        DeviceCmd::Tags { .. } => unreachable!("answered above"),
        DeviceCmd::Show(a) => (a, format!("/api/v1/devices/{}", a.id)),
        DeviceCmd::History(a) => (a, format!("/api/v1/devices/{}/history", a.id)),
        DeviceCmd::Flows { device, limit } => (device, format!("/api/v1/devices/{}/flows?limit={limit}", device.id)),
    };
    let api = &args.target.api;
    let v = get_json(&client(&args.target.auth, READ_TIMEOUT)?, api, &path).await?;
    if args.json {
        return print_json(&v);
    }
    match cmd {
        DeviceCmd::Show(_) => print_device(&v),
        DeviceCmd::History(_) => {
            println!("{} history: {} events", cell(&v["id"]), v["count"]);
            for e in v["events"].as_array().into_iter().flatten() {
                let details: Vec<String> = e
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| *k != "at_us" && *k != "kind")
                    .map(|(k, x)| format!("{k}={}", cell(x)))
                    .collect();
                println!("{:>20}  {:<16}  {}", cell(&e["at_us"]), cell(&e["kind"]), details.join(" "));
            }
        }
        DeviceCmd::Tags { .. } => {}
        DeviceCmd::Flows { .. } => {
            println!("{} ({}): {} flows", cell(&v["id"]), cell(&v["class"]), v["count"]);
            println!(
                "{:<10}  {:<39}  {:<22}  {:<10}  {:>10}  {:>12}",
                "CONTEXT", "PEER", "PEER CLASS", "APP", "PACKETS", "BYTES"
            );
            for f in v["flows"].as_array().into_iter().flatten() {
                let flow = &f["flow"];
                let me_a = flow["a_mac"] == v["mac"];
                let (peer_ip, port) =
                    if me_a { (&flow["b_ip"], &flow["b_port"]) } else { (&flow["a_ip"], &flow["a_port"]) };
                println!(
                    "{:<10}  {:<39}  {:<22}  {:<10}  {:>10}  {:>12}",
                    cell(&f["context"]["tag"]),
                    format!("{}:{}", cell(peer_ip), cell(port)),
                    cell(&f["peer_class"]),
                    cell(&flow["app"]),
                    packets(flow),
                    bytes(flow)
                );
            }
        }
    }
    Ok(())
}

pub async fn flows(cmd: FlowsCmd) -> Result<()> {
    match cmd {
        FlowsCmd::List { target, mac, ip, sensor, app, limit, json } => {
            let mut query = vec![format!("limit={limit}")];
            for (k, v) in [("mac", mac), ("ip", ip), ("sensor", sensor), ("app", app)] {
                if let Some(v) = v {
                    query.push(format!("{k}={v}"));
                }
            }
            let path = format!("/api/v1/flows?{}", query.join("&"));
            let v = get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, &path).await?;
            if json {
                return print_json(&v);
            }
            println!("{} flows", v["count"]);
            println!("{:<45}  {:<45}  {:<5}  {:<10}  {:>10}  {:>12}", "FROM", "TO", "PROTO", "APP", "PACKETS", "BYTES");
            for f in v["flows"].as_array().into_iter().flatten() {
                println!(
                    "{:<45}  {:<45}  {:<5}  {:<10}  {:>10}  {:>12}",
                    format!("{}:{}", cell(&f["a_ip"]), cell(&f["a_port"])),
                    format!("{}:{}", cell(&f["b_ip"]), cell(&f["b_port"])),
                    cell(&f["ip_proto"]),
                    cell(&f["app"]),
                    packets(f),
                    bytes(f)
                );
            }
        }
        FlowsCmd::Totals { target, json } => {
            let v = get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, "/api/v1/flows/totals").await?;
            if json {
                return print_json(&v);
            }
            for (name, part, count) in
                [("replicated", "replicated", "flows"), ("flow store", "store", "rows"), ("outbox", "outbox", "rows")]
            {
                let p = &v[part];
                println!(
                    "{name:<11} {:>12} flows  {:>14} packets  {:>16} bytes",
                    cell(&p[count]),
                    cell(&p["packets"]),
                    cell(&p["bytes"])
                );
            }
        }
    }
    Ok(())
}

pub async fn sensors(target: ApiTarget, json: bool) -> Result<()> {
    let v = get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, "/api/v1/sensors").await?;
    if json {
        return print_json(&v);
    }
    println!(
        "{:<20}  {:<14}  {:>10}  {:>10}  {:>12}  {:>10}  {:>20}  {:<26}  {:>7}",
        "SENSOR", "SITE", "LAST SEQ", "BATCHES", "FLOWS", "DROPPED", "LAST PACKET (us)", "SPOOL EPOCH", "CHANGES"
    );
    for (id, r) in v["sensors"].as_object().into_iter().flatten() {
        let e = &v["sensor_epochs"][id];
        println!(
            "{:<20}  {:<14}  {:>10}  {:>10}  {:>12}  {:>10}  {:>20}  {:<26}  {:>7}",
            id,
            cell(&r["site"]),
            cell(&r["last_seq"]),
            cell(&r["batches_applied"]),
            cell(&r["flows"]),
            cell(&r["stats"]["batches_dropped"]),
            cell(&r["last_packet_us"]),
            if e.is_null() { "(not recorded)".to_string() } else { cell(&e["epoch"]) },
            if e.is_null() { "-".to_string() } else { cell(&e["changes"]) }
        );
    }
    print_sensor_health(&v["health"]);
    // Decision 0045: data a sensor's spool gave up while it could not deliver.
    for (id, t) in v["spool_losses"].as_object().into_iter().flatten() {
        println!(
            "spool of {id}: {} batches evicted ({} flow records, {} bytes of traffic), {} flows rolled up into {} \
             summaries, {} records quarantined; `wardline-aggregator sensor-losses {id}` lists them",
            cell(&t["batches_evicted"]),
            cell(&t["flows_evicted"]),
            cell(&t["flow_bytes_evicted"]),
            cell(&t["flows_rolled_up"]),
            cell(&t["rollups_created"]),
            cell(&t["records_quarantined"])
        );
    }
    // What operators must know about reinstalls (decision 0036): each epoch a sensor left,
    // and batches refused as of an older epoch or for a sequence jump.
    for (id, e) in v["sensor_epochs"].as_object().into_iter().flatten() {
        for old in e["retired"].as_array().into_iter().flatten() {
            let name = if old["epoch"].is_null() { "(not recorded)".to_string() } else { cell(&old["epoch"]) };
            println!(
                "{id}: left spool epoch {name} at batch {} after {} batches (next epoch began {} ms)",
                cell(&old["last_seq"]),
                cell(&old["batches"]),
                cell(&old["ended_ms"])
            );
        }
        let listed = e["retired"].as_array().map_or(0, |r| r.len() as u64);
        let forgotten = e["changes"].as_u64().unwrap_or(0).saturating_sub(listed);
        if forgotten > 0 {
            println!(
                "{id}: {forgotten} older spool epochs are no longer listed (the cluster keeps the last {listed}); \
                 a late batch of one of them is refused, never applied twice"
            );
        }
        let refused = (e["stale_refused"].as_u64().unwrap_or(0), e["jumps_refused"].as_u64().unwrap_or(0));
        if refused != (0, 0) {
            println!(
                "{id}: refused {} batches of an older spool epoch and {} for a sequence jump (see the aggregator log)",
                refused.0, refused.1
            );
        }
    }
    Ok(())
}

/// `sensor-losses SENSOR`: what the sensor's spool gave up (decision 0045).
pub async fn sensor_losses(target: ApiTarget, sensor: String, json: bool) -> Result<()> {
    let path = format!("/api/v1/sensors/{sensor}/losses");
    let v = get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, &path).await?;
    if json {
        return print_json(&v);
    }
    let t = &v["total"];
    println!(
        "{sensor}: {} batches evicted ({} events, {} flow records, {} bytes of traffic); {} flow records rolled up \
         into {} summaries; {} records quarantined; {} reports",
        cell(&t["batches_evicted"]),
        cell(&t["events_evicted"]),
        cell(&t["flows_evicted"]),
        cell(&t["flow_bytes_evicted"]),
        cell(&t["flows_rolled_up"]),
        cell(&t["rollups_created"]),
        cell(&t["records_quarantined"]),
        cell(&v["reports"])
    );
    println!(
        "{:<28}  {:<22}  {:>8}  {:>8}  {:>14}  {:>18}  {:>18}",
        "SPOOL EPOCH", "KIND", "SEQ", "FLOWS", "BYTES", "FIRST SEEN (us)", "LAST SEEN (us)"
    );
    for l in v["losses"].as_array().into_iter().flatten() {
        let loss = &l["loss"];
        println!(
            "{:<28}  {:<22}  {:>8}  {:>8}  {:>14}  {:>18}  {:>18}",
            cell(&l["epoch"]),
            cell(&loss["kind"]),
            cell(&loss["seq"]),
            cell(&loss["flows"]),
            cell(&loss["flow_bytes"]),
            cell(&loss["first_seen_us"]),
            cell(&loss["last_seen_us"])
        );
    }
    if v["losses_dropped"].as_u64().unwrap_or(0) > 0 {
        println!("({} older losses dropped from the list; the totals include them)", cell(&v["losses_dropped"]));
    }
    Ok(())
}

/// The `health` part of `GET /api/v1/sensors` (decision 0038), one line per sensor.
fn print_sensor_health(health: &Value) {
    let Some(sensors) = health.as_object().filter(|m| !m.is_empty()) else {
        println!("\nno sensor heartbeats recorded (sensors of an older version, or a node of one in the cluster)");
        return;
    };
    println!(
        "\n{:<20}  {:<9}  {:>24}  {:>11}  {:>6}  {:>10}  {:>8}  {:<10}  CONDITIONS",
        "SENSOR", "STATUS", "LAST SEEN (ms)", "CLOCK (ms)", "SPOOL", "CAP DROPS", "RESTARTS", "VERSION"
    );
    for (id, h) in sensors {
        let hb = &h["heartbeat"];
        let drops =
            hb["capture_kernel_dropped"].as_u64().unwrap_or(0) + hb["capture_interface_dropped"].as_u64().unwrap_or(0);
        let clock = h["clock_offset_ms"].as_f64().map_or("-".to_string(), |o| format!("{o:.1}"));
        let conditions =
            h["conditions"].as_array().map(|a| a.iter().map(cell).collect::<Vec<_>>().join(",")).unwrap_or_default();
        println!(
            "{:<20}  {:<9}  {:>24}  {:>11}  {:>5}%  {:>10}  {:>8}  {:<10}  {}",
            id,
            cell(&h["status"]),
            cell(&h["last_seen_ms"]),
            clock,
            cell(&h["spool_percent"]),
            drops,
            cell(&hb["uplink_restarts"]),
            cell(&hb["version"]),
            if conditions.is_empty() { "-".to_string() } else { conditions }
        );
    }
}

fn print_device(v: &Value) {
    let attr = |name: &str| {
        let a = &v["classification"][name];
        match a["confidence"].as_f64() {
            Some(c) => format!("{} ({:.0} %)", cell(&a["value"]), c * 100.0),
            None => cell(&a["value"]),
        }
    };
    let list = |x: &Value| x.as_array().map(|a| a.iter().map(cell).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    for (k, val) in [
        ("id", cell(&v["id"])),
        ("vendor (OUI)", cell(&v["vendor"])),
        ("class", attr("class")),
        ("category", attr("category")),
        ("criticality", attr("criticality")),
        ("model", attr("model")),
        ("os", attr("os")),
        ("hostname", cell(&v["hostname"])),
        ("ips", list(&v["ips"])),
        ("vlans", list(&v["vlans"])),
        ("sites", list(&v["sites"])),
        ("first seen (us)", cell(&v["first_seen_us"])),
        ("last seen (us)", cell(&v["last_seen_us"])),
    ] {
        println!("{k:<16} {val}");
    }
}

fn packets(f: &Value) -> u64 {
    f["packets_ab"].as_u64().unwrap_or(0) + f["packets_ba"].as_u64().unwrap_or(0)
}

fn bytes(f: &Value) -> u64 {
    f["bytes_ab"].as_u64().unwrap_or(0) + f["bytes_ba"].as_u64().unwrap_or(0)
}
