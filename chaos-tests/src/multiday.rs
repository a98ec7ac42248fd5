//! Multi-day captures for outage tests: generated hospital slices (`wardline-sim`, ten
//! minutes each at the scenario's own packet rate) spread over a long span of packet time
//! by shifting their timestamps, written as one capture with its combined ground truth.
//!
//! The sensor reads capture files as fast as it can, so a capture whose timestamps span 72
//! hours is a 72-hour outage replayed with time compression: every time-driven part of the
//! sensor (batch intervals, flow idle and active timeouts, roll-up hours) sees 72 hours go
//! by, while the test runs in a minute. Each slice is a complete, self-consistent capture
//! (handshakes, DHCP, closes), so shifting it whole keeps every flow intact; nothing is
//! stretched. Slices generated with the same seed have the same devices, so the inventory
//! is the one of the scenario and the flow truth is the sum of the slices'.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procs::{bin, run_ok, Fleet, Sensor, SensorSpec};
use std::collections::BTreeSet;

/// Microseconds in an hour.
pub const HOUR_US: u64 = 3_600_000_000;

/// One generated slice: its capture, its ground truth, and where it starts in the span.
#[derive(Clone, Debug)]
pub struct Slice {
    pub pcap: PathBuf,
    pub truth: Value,
}

/// Generate one hospital capture with `wardline-sim` (`risky` adds the labelled risky
/// behaviours); returns the main (core) capture and the ground truth.
pub fn generate(dir: &Path, name: &str, scenario: &str, seed: u64, risky: bool) -> Result<Slice> {
    let out = dir.join(name);
    let mut cmd = Command::new(bin("wardline-sim"));
    cmd.args(["--scenario", scenario, "--seed", &seed.to_string(), "--out"]).arg(&out);
    if risky {
        cmd.arg("--risky");
    }
    run_ok(&mut cmd)?;
    let truth_path = PathBuf::from(format!("{}.truth.json", out.display()));
    let truth: Value = serde_json::from_slice(&std::fs::read(&truth_path)?)
        .with_context(|| format!("ground truth {}", truth_path.display()))?;
    Ok(Slice { pcap: out, truth })
}

/// Where slice `i` of `n` starts, relative to the first, so that the last one ends `span_us`
/// after the first one starts (each lasting `slice_us`): evenly spread.
pub fn offsets(n: usize, span_us: u64, slice_us: u64) -> Vec<u64> {
    if n <= 1 {
        return vec![0];
    }
    let room = span_us.saturating_sub(slice_us);
    (0..n as u64).map(|i| i * room / (n as u64 - 1)).collect()
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

/// Write `slices` one after the other into `out`, slice `i`'s timestamps moved later by
/// `offsets[i]` µs (the slices must not overlap once shifted). Classic little-endian pcap
/// with microsecond timestamps, as `wardline-sim` writes. Returns the combined ground
/// truth: devices of all slices (by MAC, first description kept), flows of every slice with
/// shifted times, packet and byte totals summed, time range of the whole, risky behaviours
/// of every slice (shifted).
pub fn splice(slices: &[Slice], offsets: &[u64], out: &Path) -> Result<Value> {
    ensure!(!slices.is_empty() && slices.len() == offsets.len(), "one offset per slice");
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut last_ts = 0u64;
    for (i, (slice, &offset)) in slices.iter().zip(offsets).enumerate() {
        let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(&slice.pcap)?);
        let mut header = [0u8; 24];
        r.read_exact(&mut header).with_context(|| format!("pcap header of {}", slice.pcap.display()))?;
        if u32_le(&header[0..4]) != 0xa1b2_c3d4 {
            bail!("{}: not a little-endian microsecond pcap (what wardline-sim writes)", slice.pcap.display());
        }
        if i == 0 {
            w.write_all(&header)?;
        }
        let mut rec = [0u8; 16];
        let mut data = Vec::new();
        loop {
            match r.read_exact(&mut rec) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            }
            let ts = u64::from(u32_le(&rec[0..4])) * 1_000_000 + u64::from(u32_le(&rec[4..8])) + offset;
            ensure!(ts >= last_ts, "slice {i} overlaps the one before it once shifted; spread them further apart");
            last_ts = ts;
            let len = u32_le(&rec[8..12]) as usize;
            data.resize(len, 0);
            r.read_exact(&mut data)?;
            rec[0..4].copy_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
            rec[4..8].copy_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
            w.write_all(&rec)?;
            w.write_all(&data)?;
        }
    }
    w.flush()?;
    Ok(combined_truth(slices, offsets))
}

fn shift(v: &mut Value, key: &str, by: u64) {
    if let Some(t) = v[key].as_u64() {
        v[key] = Value::from(t + by);
    }
}

fn combined_truth(slices: &[Slice], offsets: &[u64]) -> Value {
    let mut all = slices[0].truth.clone();
    let (mut devices, mut flows, mut risky) = (Vec::new(), Vec::new(), Vec::new());
    let (mut packets, mut bytes) = (0u64, 0u64);
    for (slice, &offset) in slices.iter().zip(offsets) {
        let t = &slice.truth;
        packets += t["packets"].as_u64().unwrap_or(0);
        bytes += t["bytes"].as_u64().unwrap_or(0);
        for d in t["devices"].as_array().into_iter().flatten() {
            if !devices.iter().any(|k: &Value| k["mac"] == d["mac"]) {
                devices.push(d.clone());
            }
        }
        for f in t["flows"].as_array().into_iter().flatten() {
            let mut f = f.clone();
            shift(&mut f, "first_us", offset);
            shift(&mut f, "last_us", offset);
            flows.push(f);
        }
        for r in t["risky"].as_array().into_iter().flatten() {
            let mut r = r.clone();
            shift(&mut r, "first_us", offset);
            risky.push(r);
        }
    }
    let last = slices.len() - 1;
    all["last_packet_us"] = Value::from(slices[last].truth["last_packet_us"].as_u64().unwrap_or(0) + offsets[last]);
    all["packets"] = Value::from(packets);
    all["bytes"] = Value::from(bytes);
    all["devices"] = Value::from(devices);
    all["flows"] = Value::from(flows);
    all["risky"] = Value::from(risky);
    all
}

/// The sensor config lines that make a core sensor of the hospital see it as the truth
/// describes: its own sites' networks local, every other site remote (seen through its
/// router). `capture` is the truth's entry for the capture the sensor reads.
pub fn hospital_network_config(truth: &Value, capture: &Value) -> String {
    let nets_of = |site: &str| -> Vec<String> {
        truth["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["site"] == site)
            .filter_map(|n| n["cidr"].as_str().map(str::to_string))
            .collect()
    };
    let native: Vec<&str> =
        capture["native_sites"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let local: Vec<String> = native.iter().flat_map(|s| nets_of(s)).collect();
    let mut text = format!("local_networks = {local:?}\n");
    let mut remote: Vec<&str> = truth["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["site"].as_str())
        .filter(|s| !native.contains(s))
        .collect();
    remote.sort();
    remote.dedup();
    for site in remote {
        text.push_str(&format!("[[remote_sites]]\nsite = {site:?}\nnetworks = {:?}\n", nets_of(site)));
    }
    text
}

/// A core sensor config for the hospital capture `pcap`: its networks as the truth
/// describes, batches of at most `max_events`, an optional spool byte cap.
pub fn core_config(
    fleet: &Fleet,
    truth: &Value,
    id: &str,
    server: String,
    pcap: &Path,
    max_events: usize,
    spool_bytes: Option<u64>,
) -> Result<PathBuf> {
    let capture = &truth["captures"][0];
    let site = capture["site"].as_str().context("the truth names no site for the core capture")?;
    let spec = SensorSpec {
        sensor_id: id,
        site,
        tls_dir: fleet.issue_sensor(id, site)?,
        server,
        pcaps: vec![pcap.to_path_buf()],
        max_events,
    };
    let path = Sensor::write_config(fleet, &spec)?;
    let text = std::fs::read_to_string(&path)?;
    let networks = hospital_network_config(truth, capture);
    let (top, tables) =
        networks.split_once("[[").map(|(t, r)| (t.to_string(), format!("[[{r}"))).unwrap_or((networks, String::new()));
    let cap = spool_bytes.map(|b| format!("[spool]\nmax_bytes = {b}\n")).unwrap_or_default();
    let text = text.replacen("[uplink]\n", &format!("{top}{cap}[uplink]\n"), 1) + &tables;
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Ground-truth devices the core sensor sees natively, with the addresses it saw them
/// use on its own sites (a device that moved to the clinic is seen there only routed).
pub fn core_truth(truth: &Value) -> Value {
    let capture = &truth["captures"][0];
    let sensor = capture["sensor"].clone();
    let native: Vec<&Value> = capture["native_sites"].as_array().into_iter().flatten().collect();
    let devices: Vec<Value> = truth["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| {
            d["sightings"].as_array().into_iter().flatten().any(|s| s["sensor"] == sensor && s["native"] == true)
        })
        .map(|d| {
            let mut d = d.clone();
            let ips: BTreeSet<String> = d["bindings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| native.contains(&&b["site"]) && b["mac"] == d["mac"])
                .filter_map(|b| b["ip"].as_str().map(str::to_string))
                .collect();
            d["ips"] = Value::from(ips.into_iter().collect::<Vec<_>>());
            // The IEEE registry spells some vendors with doubled spaces; the sensor's OUI
            // table collapses them.
            if let Some(v) = d["vendor"].as_str() {
                d["vendor"] = Value::from(v.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            d
        })
        .collect();
    serde_json::json!({ "devices": devices })
}
