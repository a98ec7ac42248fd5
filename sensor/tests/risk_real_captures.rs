//! The risk model on real captures: `analyze --json` output of the remote-access and
//! management captures in ../shared/pcaps (override with WARDLINE_PCAPS) is fed to
//! `wardline_intel::risk`, and the remote-access, misuse, cleartext-credential and
//! exposed-management factors fire on exactly the devices the captures show doing that.

mod corpus;

use corpus::pcap;
use std::collections::BTreeMap;
use std::net::IpAddr;
use wardline_common::{Evidence, FlowRecord, MacAddr};
use wardline_intel::risk::{assess, summarize_flows, IsoDate, RiskInput, RiskScore};
use wardline_intel::{Classification, KnowledgeBase};
use wardline_sensor::analyze::{run_analyze_with, AnalyzeOptions};

/// A device (by MAC) or a host known only by address, as `analyze --json` reports it.
struct Seen {
    mac: Option<MacAddr>,
    ips: Vec<IpAddr>,
    evidence: Vec<Evidence>,
    classification: Classification,
}

/// Risk of every device and host of one capture, keyed by MAC or (for hosts) address.
fn risk_of(rel: &str) -> BTreeMap<String, RiskScore> {
    let mut out = Vec::new();
    let opts = AnalyzeOptions { json: true, ..Default::default() };
    run_analyze_with(&[pcap(rel)], &opts, &mut out).unwrap_or_else(|e| panic!("analyze {rel}: {e:#}"));
    let mut flows: Vec<FlowRecord> = Vec::new();
    let mut seen: Vec<Seen> = Vec::new();
    for line in String::from_utf8(out).expect("utf-8 report").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let parse = |key: &str| v[key].clone();
        match v["type"].as_str() {
            Some("flow") => flows.push(serde_json::from_value(v.clone()).expect("flow record")),
            Some(kind @ ("device" | "host")) => {
                let ips: Vec<IpAddr> = if kind == "device" {
                    serde_json::from_value(parse("ips")).expect("ips")
                } else {
                    vec![serde_json::from_value(parse("ip")).expect("ip")]
                };
                seen.push(Seen {
                    mac: (kind == "device").then(|| serde_json::from_value(parse("mac")).expect("mac")),
                    ips,
                    evidence: serde_json::from_value(parse("evidence")).expect("evidence"),
                    classification: serde_json::from_value(parse("classification")).expect("classification"),
                });
            }
            _ => {}
        }
    }
    let kb = KnowledgeBase::shared_builtin().expect("builtin KB");
    let as_of: IsoDate = "2026-12-06".parse().expect("date");
    seen.iter()
        .map(|d| {
            let is_device = |mac: &MacAddr, ip: &IpAddr| match d.mac {
                Some(m) => *mac == m,
                None => d.ips.contains(ip),
            };
            let summary = summarize_flows(kb, &d.classification, &flows, is_device, |_, _| (None, None));
            let input = RiskInput {
                classification: &d.classification,
                evidence: &d.evidence,
                flows: &summary,
                vulnerabilities: &[],
                as_of,
            };
            let key = d.mac.map(|m| m.to_string()).unwrap_or_else(|| d.ips[0].to_string());
            (key, assess(kb, &input))
        })
        .collect()
}

/// The device's score, failing with the capture's whole picture when it is missing.
fn device<'a>(scores: &'a BTreeMap<String, RiskScore>, rel: &str, key: &str) -> &'a RiskScore {
    scores.get(key).unwrap_or_else(|| panic!("{rel}: no device {key}; have {:?}", scores.keys().collect::<Vec<_>>()))
}

fn assert_fires(scores: &BTreeMap<String, RiskScore>, rel: &str, key: &str, factor: &str, evidence_mentions: &str) {
    let s = device(scores, rel, key);
    let f = s.factor(factor).unwrap_or_else(|| panic!("{rel} {key}: {factor} did not fire\n{}", s.explain()));
    assert!(
        f.evidence.iter().any(|e| e.detail.contains(evidence_mentions)),
        "{rel} {key}: {factor} evidence does not mention {evidence_mentions:?}\n{}",
        s.explain()
    );
}

fn assert_quiet(scores: &BTreeMap<String, RiskScore>, rel: &str, key: &str, factor: &str) {
    let s = device(scores, rel, key);
    assert!(s.factor(factor).is_none(), "{rel} {key}: {factor} fired\n{}", s.explain());
}

#[test]
fn remote_access_tools_fire_remote_access() {
    let rel = "remote-access/anydesk.pcapng";
    let s = risk_of(rel);
    // 192.168.1.128 announces AnyDesk in its TLS ALPN; 192.168.1.187 resolves *.net.anydesk.com
    // and connects to tcp/7070.
    assert_fires(&s, rel, "3c:a9:f4:a8:1f:ec", "remote_access", "anydesk/6.2.0/linux");
    assert_fires(&s, rel, "d8:cb:8a:e1:2d:2e", "remote_access", "net.anydesk.com");
    assert_fires(&s, rel, "d8:cb:8a:e1:2d:2e", "remote_access", "tcp/7070");

    let rel = "remote-access/teamviewer.pcap";
    let s = risk_of(rel);
    assert_fires(&s, rel, "08:00:27:b3:e6:2e", "remote_access", "tcp/5938");

    let rel = "remote-access/vnc.pcap";
    let s = risk_of(rel);
    // The VNC server (port 6900, recognised by payload) is exposed; both ends take part.
    assert_fires(&s, rel, "10:fe:ed:02:49:ed", "exposed_management", "vnc");
    assert_fires(&s, rel, "10:fe:ed:02:49:ed", "remote_access", "vnc_in_use");
    assert_fires(&s, rel, "c4:ea:1d:c5:01:86", "remote_access", "vnc_in_use");
    assert_quiet(&s, rel, "c4:ea:1d:c5:01:86", "exposed_management");

    let rel = "remote-access/rdp.pcap";
    let s = risk_of(rel);
    // Hosts on a link without MACs, known by address.
    assert_fires(&s, rel, "192.168.2.142", "exposed_management", "tcp/3389");
    assert_fires(&s, rel, "192.168.2.142", "remote_access", "rdp_in_use");
    assert_fires(&s, rel, "172.16.2.185", "remote_access", "rdp_in_use");
    assert_quiet(&s, rel, "172.16.2.185", "exposed_management");

    let rel = "remote-access/rdp_over_tls.pcap";
    let s = risk_of(rel);
    // Labelled `tls`: the port and the RDP negotiation give it away.
    assert_fires(&s, rel, "2c:ea:7f:41:e0:fd", "exposed_management", "tcp/3389");
    assert_fires(&s, rel, "2c:ea:7f:41:e0:fd", "remote_access", "rdp_in_use");
    assert_fires(&s, rel, "34:ed:1b:54:c7:81", "remote_access", "rdp_in_use");
}

#[test]
fn tor_fires_misuse() {
    let rel = "remote-access/tor.pcap";
    let s = risk_of(rel);
    assert_fires(&s, rel, "52:54:00:5a:e9:77", "misuse", "tls_sni");
    // The relay it talks to is not itself misusing anything.
    assert_quiet(&s, rel, "52:54:00:d8:46:21", "misuse");
}

#[test]
fn cleartext_logins_fire_credentials_and_management_exposure() {
    let rel = "mgmt/lab-mgmt-telnet-login.pcap";
    let s = risk_of(rel);
    let pump_gw = "58:42:e4:10:33:a3";
    assert_fires(&s, rel, pump_gw, "cleartext_credentials", "cleartext_login");
    assert_fires(&s, rel, pump_gw, "exposed_management", "PUMPGW-ICU3");
    assert_fires(&s, rel, pump_gw, "cleartext_management", "telnet");
    let laptop = "48:c3:5a:0f:2e:a2";
    assert_fires(&s, rel, laptop, "cleartext_credentials", "cleartext_login");
    assert_quiet(&s, rel, laptop, "exposed_management");
    // The Baxter pump gateway (medical) outranks the biomed laptop on the same session.
    assert!(device(&s, rel, pump_gw).score > device(&s, rel, laptop).score);

    let rel = "mgmt/lab-mgmt-ftp-vsftpd.pcap";
    let s = risk_of(rel);
    assert_fires(&s, rel, "00:1a:a0:52:11:a1", "cleartext_credentials", "ftp");
    assert_fires(&s, rel, "00:1a:a0:52:11:a1", "exposed_management", "vsFTPd");
    assert_fires(&s, rel, "48:c3:5a:0f:2e:a2", "cleartext_management", "ftp");

    let rel = "mgmt/lab-mgmt-ssh-dropbear.pcap";
    let s = risk_of(rel);
    assert_fires(&s, rel, "00:09:fb:6a:1c:a0", "exposed_management", "tcp/22");
    assert_quiet(&s, rel, "00:09:fb:6a:1c:a0", "cleartext_credentials");
}
