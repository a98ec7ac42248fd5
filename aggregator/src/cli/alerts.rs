//! `wardline-aggregator alerts ...`: list, show and triage alerts, and manage suppression
//! rules and the detectors' settings, through a running node's API (decision 0024).
//! Every command prints a table or, with `--json`, the API's JSON.

use super::{cell, client, get_json, post_json, print_json, request, send, ApiTarget, READ_TIMEOUT};
use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand, Debug)]
pub enum AlertsCmd {
    /// List alerts, newest first.
    List {
        #[command(flatten)]
        target: ApiTarget,
        /// open, acknowledged, resolved, suppressed (comma-separated).
        #[arg(long)]
        state: Option<String>,
        /// info, low, medium, high, critical (comma-separated).
        #[arg(long)]
        severity: Option<String>,
        /// Alert kinds (comma-separated), e.g. new_peer,device_moved.
        #[arg(long)]
        kind: Option<String>,
        /// Device id (MAC or site:ip).
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        site: Option<String>,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one alert with its history.
    Show {
        #[command(flatten)]
        target: ApiTarget,
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an open alert (analyst).
    Ack(Triage),
    /// Resolve an alert (analyst); a new occurrence reopens it.
    Resolve(Triage),
    /// Suppress an open or acknowledged alert (analyst): it keeps counting but stays quiet.
    Suppress(Triage),
    /// Suppression rules: stop matching occurrences from opening alerts.
    #[command(subcommand)]
    Rules(RulesCmd),
    /// Show the detectors' settings (learning period, clinical VLANs) and counters, or
    /// change them (admin) with --learning-secs / --clinical-vlan.
    Settings {
        #[command(flatten)]
        target: ApiTarget,
        /// New learning period in seconds of capture time.
        #[arg(long)]
        learning_secs: Option<u64>,
        /// A clinical VLAN, `VLAN` (every site) or `SITE:VLAN`; repeat for more. Replaces the list.
        #[arg(long)]
        clinical_vlan: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show the traffic-spike, segment, PHI-receiver and sensor-silence detectors' settings
    /// (decision 0033), or replace them (admin) with --set FILE: a JSON object of the same
    /// fields (missing ones take their defaults).
    Detectors {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long, value_name = "FILE")]
        set: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct Triage {
    #[command(flatten)]
    target: ApiTarget,
    id: u64,
    /// Why (kept in the alert's history and the audit log).
    #[arg(long, default_value = "")]
    note: String,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum RulesCmd {
    List {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        json: bool,
    },
    /// Add a rule (analyst); give at least one of --kind, --device, --target, --site.
    Add {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        device: Option<String>,
        /// The alert target to match (peer IP, service such as tcp/23, site, `vlan N`).
        #[arg(long = "match-target")]
        match_target: Option<String>,
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        reason: String,
        /// Capture time (µs since the epoch) from which the rule stops matching.
        #[arg(long)]
        expires_us: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a rule by id (analyst).
    Delete {
        #[command(flatten)]
        target: ApiTarget,
        id: u64,
    },
}

fn print_alert_row(a: &Value) {
    println!(
        "{:>6}  {:<13}  {:<8}  {:<28}  {:<17}  {:<24}  {:>6}",
        cell(&a["id"]),
        cell(&a["state"]),
        cell(&a["severity"]),
        cell(&a["kind"]),
        cell(&a["device"]),
        cell(&a["target"]),
        cell(&a["count"])
    );
}

fn print_alert(a: &Value) {
    println!(
        "alert {} ({}, {}): {} on {} at {}",
        cell(&a["id"]),
        cell(&a["severity"]),
        cell(&a["state"]),
        cell(&a["kind"]),
        cell(&a["device"]),
        cell(&a["site"])
    );
    println!("  target:   {}", cell(&a["target"]));
    println!(
        "  seen:     {} times, first {} µs, last {} µs (capture time)",
        cell(&a["count"]),
        cell(&a["first_seen_us"]),
        cell(&a["last_seen_us"])
    );
    println!("  evidence: {}", cell(&a["evidence"]));
    for t in a["history"].as_array().into_iter().flatten() {
        println!("  {:>13} by {} at {} ms {}", cell(&t["action"]), cell(&t["by"]), cell(&t["at_ms"]), cell(&t["note"]));
    }
}

fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v)))).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `SITE:VLAN` or `VLAN`.
fn parse_clinical_vlan(text: &str) -> Result<Value> {
    let (site, vlan) = match text.rsplit_once(':') {
        Some((site, vlan)) => (Some(site.to_string()), vlan),
        None => (None, text),
    };
    let vlan: u16 =
        vlan.parse().ok().filter(|v| *v < 4096).ok_or_else(|| {
            anyhow::anyhow!("--clinical-vlan {text:?}: give VLAN or SITE:VLAN with a VLAN id 0 to 4095")
        })?;
    Ok(json!({ "site": site, "vlan": vlan }))
}

pub async fn run(cmd: AlertsCmd) -> Result<()> {
    match cmd {
        AlertsCmd::List { target, state, severity, kind, device, site, offset, limit, json } => {
            let q = query_string(&[
                ("state", state),
                ("severity", severity),
                ("kind", kind),
                ("device", device),
                ("site", site),
                ("offset", Some(offset.to_string())),
                ("limit", Some(limit.to_string())),
            ]);
            let v = get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, &format!("/api/v1/alerts{q}")).await?;
            if json {
                return print_json(&v);
            }
            println!("{} of {} alerts match (showing from {})", v["matched"], v["total"], v["offset"]);
            println!(
                "{:>6}  {:<13}  {:<8}  {:<28}  {:<17}  {:<24}  {:>6}",
                "ID", "STATE", "SEVERITY", "KIND", "DEVICE", "TARGET", "COUNT"
            );
            for a in v["alerts"].as_array().into_iter().flatten() {
                print_alert_row(a);
            }
            Ok(())
        }
        AlertsCmd::Show { target, id, json } => {
            let v =
                get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, &format!("/api/v1/alerts/{id}")).await?;
            if json {
                return print_json(&v);
            }
            print_alert(&v);
            Ok(())
        }
        AlertsCmd::Ack(t) => triage(t, "ack").await,
        AlertsCmd::Resolve(t) => triage(t, "resolve").await,
        AlertsCmd::Suppress(t) => triage(t, "suppress").await,
        AlertsCmd::Rules(RulesCmd::List { target, json }) => {
            let v = get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, "/api/v1/alerts/rules").await?;
            if json {
                return print_json(&v);
            }
            println!(
                "{:>4}  {:<28}  {:<17}  {:<20}  {:<10}  {:>8}  REASON (AUTHOR)",
                "ID", "KIND", "DEVICE", "TARGET", "SITE", "MATCHED"
            );
            for r in v["rules"].as_array().into_iter().flatten() {
                println!(
                    "{:>4}  {:<28}  {:<17}  {:<20}  {:<10}  {:>8}  {} ({})",
                    cell(&r["id"]),
                    cell(&r["kind"]),
                    cell(&r["device"]),
                    cell(&r["target"]),
                    cell(&r["site"]),
                    cell(&r["matched"]),
                    cell(&r["reason"]),
                    cell(&r["author"])
                );
            }
            Ok(())
        }
        AlertsCmd::Rules(RulesCmd::Add { target, kind, device, match_target, site, reason, expires_us, json }) => {
            let body = json!({"kind": kind, "device": device, "target": match_target, "site": site, "reason": reason,
                              "expires_us": expires_us});
            let v = post_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, "/api/v1/alerts/rules", &body).await?;
            if json {
                return print_json(&v);
            }
            println!("added suppression rule {}", cell(&v["id"]));
            Ok(())
        }
        AlertsCmd::Rules(RulesCmd::Delete { target, id }) => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            send(request(&c, reqwest::Method::DELETE, &target.api, &format!("/api/v1/alerts/rules/{id}"))).await?;
            println!("deleted suppression rule {id}");
            Ok(())
        }
        AlertsCmd::Detectors { target, set, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            if let Some(file) = set {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read the detector settings {}", file.display()))?;
                let body: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON (see GET /api/v1/alerts/detectors)", file.display()))?;
                send(request(&c, reqwest::Method::PUT, &target.api, "/api/v1/alerts/detectors").json(&body)).await?;
            }
            let v = get_json(&c, &target.api, "/api/v1/alerts/detectors").await?;
            if json {
                return print_json(&v);
            }
            for (k, x) in v.as_object().into_iter().flatten() {
                println!("{k:<28} {}", if x.is_object() || x.is_array() { x.to_string() } else { cell(x) });
            }
            Ok(())
        }
        AlertsCmd::Settings { target, learning_secs, clinical_vlan, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            if learning_secs.is_some() || !clinical_vlan.is_empty() {
                let current = get_json(&c, &target.api, "/api/v1/alerts/settings").await?;
                let vlans = if clinical_vlan.is_empty() {
                    current["clinical_vlans"].clone()
                } else {
                    Value::Array(clinical_vlan.iter().map(|t| parse_clinical_vlan(t)).collect::<Result<_>>()?)
                };
                let body = json!({"learning_secs": learning_secs.unwrap_or(current["learning_secs"].as_u64().unwrap_or(0)),
                                  "clinical_vlans": vlans});
                send(request(&c, reqwest::Method::PUT, &target.api, "/api/v1/alerts/settings").json(&body)).await?;
            }
            let v = get_json(&c, &target.api, "/api/v1/alerts/settings").await?;
            if json {
                return print_json(&v);
            }
            println!("learning period: {} s of capture time", v["learning_secs"]);
            println!("clinical VLANs:  {}", v["clinical_vlans"]);
            println!("baselines:       {} devices ({} saturated sets)", v["baselines"], v["counters"]["saturated"]);
            println!(
                "SIEM queue:      {} events, forwarded through {}",
                v["siem_pending"], v["siem_forwarded_through"]
            );
            Ok(())
        }
    }
}

async fn triage(t: Triage, action: &str) -> Result<()> {
    let c = client(&t.target.auth, READ_TIMEOUT)?;
    let v =
        post_json(&c, &t.target.api, &format!("/api/v1/alerts/{}/{action}", t.id), &json!({ "note": t.note })).await?;
    if t.json {
        return print_json(&v);
    }
    println!("alert {} is now {}", t.id, cell(&v["state"]));
    Ok(())
}
