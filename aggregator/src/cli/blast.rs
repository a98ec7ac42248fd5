//! `wardline-aggregator blast --device ID | --group NAME [--candidate N | --draft ID] [--json]`:
//! what a compromised device or group member reaches now and under a candidate policy,
//! weighted by clinical criticality (decision 0031). Prints the headline, then per-class tables.

use super::groups::path_segment;
use super::{cell, client, get_json, print_json, ApiTarget, READ_TIMEOUT};
use anyhow::{bail, Result};
use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct BlastArgs {
    #[command(flatten)]
    pub target: ApiTarget,
    /// The source device (MAC).
    #[arg(long, conflicts_with = "group")]
    pub device: Option<String>,
    /// Every member of this group of the active policy as a source.
    #[arg(long)]
    pub group: Option<String>,
    /// Compare with this stored policy version.
    #[arg(long, conflicts_with = "draft")]
    pub candidate: Option<u64>,
    /// Compare with the active version plus this draft rule.
    #[arg(long)]
    pub draft: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

fn print_reach(title: &str, r: &Value) {
    let reach = &r["reach"];
    println!(
        "\n{title} ({}): {} devices, {} services, score {}",
        cell(&r["name"]),
        cell(&reach["devices"]),
        cell(&reach["services"]),
        cell(&reach["score"])
    );
    println!("  {:<26} {:<17} {:>7} {:>8} {:>6}", "CLASS", "CRITICALITY", "DEVICES", "SERVICES", "SCORE");
    for c in reach["by_class"].as_array().into_iter().flatten() {
        println!(
            "  {:<26} {:<17} {:>7} {:>8} {:>6}",
            cell(&c["class"]),
            cell(&c["criticality"]),
            cell(&c["devices"]),
            cell(&c["services"]),
            cell(&c["score"])
        );
    }
}

pub async fn run(a: BlastArgs) -> Result<()> {
    let source = match (&a.device, &a.group) {
        (Some(d), None) => format!("device={}", path_segment(d)),
        (None, Some(g)) => format!("group={}", path_segment(g)),
        _ => bail!("give --device ID or --group NAME"),
    };
    let mut path = format!("/api/v1/blast?{source}");
    if let Some(n) = a.candidate {
        path.push_str(&format!("&candidate={n}"));
    }
    if let Some(d) = a.draft {
        path.push_str(&format!("&draft={d}"));
    }
    let c = client(&a.target.auth, READ_TIMEOUT)?;
    let v = get_json(&c, &a.target.api, &path).await?;
    if a.json {
        return print_json(&v);
    }
    println!("{}", cell(&v["headline"]));
    print_reach("now", &v["now"]);
    if !v["candidate"].is_null() {
        print_reach("candidate", &v["candidate"]);
        let d = &v["diff"];
        println!(
            "\ndifference: {} no longer reached, {} newly reached, score change {}",
            d["no_longer_reached"].as_array().map_or(0, Vec::len),
            d["newly_reached"].as_array().map_or(0, Vec::len),
            cell(&d["score_change"])
        );
        println!("  {:<26} {:<17} {:>5} {:>9}", "CLASS", "CRITICALITY", "NOW", "CANDIDATE");
        for c in d["by_class"].as_array().into_iter().flatten() {
            println!(
                "  {:<26} {:<17} {:>5} {:>9}",
                cell(&c["class"]),
                cell(&c["criticality"]),
                cell(&c["now"]),
                cell(&c["candidate"])
            );
        }
    }
    Ok(())
}
