//! Helpers shared by the generator tests: generation into a temp dir, tshark runs with
//! checksum verification on, and the IEEE registry.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use wardline_common::Field;
use wardline_sim::{generate, GenerateOptions, GroundTruth, Scenario, TruthDevice, TruthFlow};

pub fn ward(seed: u64) -> (tempfile::TempDir, PathBuf, GroundTruth) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("ward.pcap");
    let mut opts = GenerateOptions::new(Scenario::Ward);
    opts.seed = seed;
    let truth = generate(&opts, &pcap).expect("generate ward");
    (dir, pcap, truth)
}

pub fn have_tshark() -> bool {
    let ok = Command::new("tshark").arg("-v").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        eprintln!("SKIP: tshark not installed (the test command installs it)");
    }
    ok
}

const CHECKS: &[&str] =
    &["-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"];

fn tshark(pcap: &Path, filter: &str, fields: &[&str], extra: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(CHECKS).args(extra).args([
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
        "-E",
        "separator=/t",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(out.status.success(), "tshark failed on {filter:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn tshark_count(pcap: &Path, filter: &str, extra: &[&str]) -> u64 {
    tshark(pcap, filter, &["frame.number"], extra).lines().filter(|l| !l.is_empty()).count() as u64
}

pub fn tshark_fields(pcap: &Path, filter: &str, fields: &[&str], extra: &[&str]) -> Vec<Vec<String>> {
    tshark(pcap, filter, fields, extra).lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

/// Conversation key independent of direction: sorted ((ip, port), (ip, port)).
pub type ConvKey = ((String, u16), (String, u16));

fn conv_key(a: (String, u16), b: (String, u16)) -> ConvKey {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// (packets, frame bytes) per conversation, as tshark decodes the capture.
pub fn tshark_conversations(pcap: &Path, proto: &str) -> BTreeMap<ConvKey, (u64, u64)> {
    let sp = format!("{proto}.srcport");
    let dp = format!("{proto}.dstport");
    let mut out = BTreeMap::new();
    // Only the outer header: ICMP errors would quote inner ones (the generator sends none).
    for r in tshark_fields(pcap, &format!("{proto} && !icmp"), &["ip.src", "ip.dst", &sp, &dp, "frame.len"], &[]) {
        let port = |s: &str| s.parse::<u16>().expect("port");
        let k = conv_key((r[0].clone(), port(&r[2])), (r[1].clone(), port(&r[3])));
        let e = out.entry(k).or_insert((0, 0));
        e.0 += 1;
        e.1 += r[4].parse::<u64>().expect("frame.len");
    }
    out
}

/// Truth flows of one IP protocol summed per conversation (VLAN ignored, as tshark's).
pub fn truth_conversations(flows: &[TruthFlow], ip_proto: u8) -> BTreeMap<ConvKey, (u64, u64)> {
    let mut out = BTreeMap::new();
    for f in flows.iter().filter(|f| f.ip_proto == ip_proto) {
        let k = conv_key((f.a_ip.to_string(), f.a_port), (f.b_ip.to_string(), f.b_port));
        let e = out.entry(k).or_insert((0, 0));
        e.0 += f.packets_ab + f.packets_ba;
        e.1 += f.bytes_ab + f.bytes_ba;
    }
    out
}

/// OUI ("00-D0-75") → organisation name from Debian's ieee-data.
pub fn oui_registry() -> HashMap<String, String> {
    let text = std::fs::read_to_string("/usr/share/ieee-data/oui.txt")
        .expect("ieee-data installed (/usr/share/ieee-data/oui.txt)");
    text.lines()
        .filter_map(|l| {
            let (prefix, rest) = l.split_once("(hex)")?;
            Some((prefix.trim().to_string(), rest.trim().to_string()))
        })
        .collect()
}

/// The first evidence value of `field` the truth lists for `d` ("" if none).
pub fn ev(d: &TruthDevice, field: Field) -> String {
    d.evidence.iter().find(|e| e.field == field).map(|e| e.value.clone()).unwrap_or_default()
}

/// A `frame.time_epoch` value ("1710230610.000123000") in microseconds.
pub fn epoch_us(s: &str) -> u64 {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let micros: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    secs.parse::<u64>().expect("seconds") * 1_000_000 + micros.parse::<u64>().expect("micros")
}
