//! `admin import-bundle`: send a sneakernet bundle (`wardline-sensor spool export`) to the
//! leader's API, streamed from the file, and print what was applied.

use super::{cell, client, print_json, request, send, ApiError, ApiTarget};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

/// A bundle of a long outage is large and every batch goes through a Raft commit.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(3600);

pub async fn import(target: &ApiTarget, file: &Path, as_json: bool) -> Result<()> {
    let c = client(&target.auth, IMPORT_TIMEOUT)?;
    let f = tokio::fs::File::open(file).await.with_context(|| format!("cannot open the bundle {}", file.display()))?;
    let req = request(&c, reqwest::Method::POST, &target.api, "/api/v1/bundles")
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::from(f));
    // An import that stopped part way answers 422 with its report: show it like a success.
    let report = match send(req).await {
        Ok(v) => v,
        Err(e) => match e.downcast::<ApiError>() {
            Ok(api) if api.body.get("verified").is_some() => api.body,
            Ok(api) => return Err(api.into()),
            Err(e) => return Err(e),
        },
    };
    if as_json {
        print_json(&report)?;
    } else {
        println!(
            "bundle of sensor {}@{} (certificate {}): {} of {} batches verified; {} applied, {} already there, {} rejected",
            cell(&report["sensor_id"]),
            cell(&report["site"]),
            cell(&report["certificate_serial"]),
            cell(&report["verified"]),
            cell(&report["batches_in_bundle"]),
            cell(&report["applied"]),
            cell(&report["duplicates"]),
            cell(&report["rejected"]),
        );
        for r in report["rejected_batches"].as_array().into_iter().flatten() {
            println!("  rejected: {}", cell(r));
        }
    }
    match report["error"].as_str() {
        Some(e) => anyhow::bail!("the import stopped: {e}"),
        None => Ok(()),
    }
}
