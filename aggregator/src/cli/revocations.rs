//! `admin revoke-sensor`, `admin revocations`, `admin lift-revocation`: the sensor
//! revocation list through a running node's API (admin credential to change it).

use super::{cell, client, print_json, request, send, ApiTarget, READ_TIMEOUT};
use anyhow::Result;
use serde_json::json;

/// Revoke a whole sensor (`serial` None) or one of its certificates.
pub async fn revoke(target: &ApiTarget, sensor_id: &str, serial: Option<&str>, reason: &str) -> Result<()> {
    let c = client(&target.auth, READ_TIMEOUT)?;
    let body = json!({ "sensor_id": sensor_id, "serial": serial, "reason": reason });
    send(request(&c, reqwest::Method::POST, &target.api, "/api/v1/revocations").json(&body)).await?;
    match serial {
        Some(s) => println!("revoked certificate {s} of sensor {sensor_id}; it is refused and cut off within seconds"),
        None => println!("revoked sensor {sensor_id} (every certificate); it is refused and cut off within seconds"),
    }
    Ok(())
}

pub async fn list(target: &ApiTarget, as_json: bool) -> Result<()> {
    let c = client(&target.auth, READ_TIMEOUT)?;
    let v = send(request(&c, reqwest::Method::GET, &target.api, "/api/v1/revocations")).await?;
    if as_json {
        return print_json(&v);
    }
    println!("{:<24} {:<34} {:<14} {:<14} REASON", "SENSOR", "CERTIFICATE", "BY", "AT (ms)");
    for r in v["revocations"].as_array().into_iter().flatten() {
        let serial = if r["serial"].is_null() { "every certificate".to_string() } else { cell(&r["serial"]) };
        println!(
            "{:<24} {:<34} {:<14} {:<14} {}",
            cell(&r["sensor_id"]),
            serial,
            cell(&r["revoked_by"]),
            cell(&r["revoked_at_ms"]),
            cell(&r["reason"])
        );
    }
    Ok(())
}

pub async fn lift(target: &ApiTarget, sensor_id: &str, serial: Option<&str>) -> Result<()> {
    let c = client(&target.auth, READ_TIMEOUT)?;
    let mut path = format!("/api/v1/revocations/{sensor_id}");
    if let Some(s) = serial {
        path.push_str(&format!("?serial={s}"));
    }
    send(request(&c, reqwest::Method::DELETE, &target.api, &path)).await?;
    println!(
        "lifted the revocation of sensor {sensor_id}{}",
        serial.map(|s| format!(" certificate {s}")).unwrap_or_default()
    );
    Ok(())
}
