//! The risky variant (`--risky`): every labelled behaviour is in the capture where and when
//! the truth says (decoded by tshark), the clean run of the same seed has none of them, and
//! the vulnerable-firmware pump reports its firmware on the wire.

use crate::generate_common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wardline_sim::{generate, GenerateOptions, GroundTruth, Scenario, TruthRisky, RISKY_KINDS};

struct Pair {
    risky: (PathBuf, GroundTruth),
    clean: (PathBuf, GroundTruth),
}

/// The hospital (4 minutes) with and without `--risky`, same seed (generated once per run).
fn pair() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generate_risky");
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let run = |risky: bool, name: &str| {
            let pcap = dir.join(name);
            let mut opts = GenerateOptions::new(Scenario::Hospital);
            opts.seed = 7;
            // 4 minutes keep the tshark runs short; the behaviours are placed by fraction.
            opts.scale.minutes = 4;
            opts.risky = risky;
            let truth = generate(&opts, &pcap).expect("generate hospital");
            (pcap, truth)
        };
        Pair { risky: run(true, "risky.pcap"), clean: run(false, "clean.pcap") }
    })
}

fn entry<'a>(truth: &'a GroundTruth, kind: &str) -> &'a TruthRisky {
    let found: Vec<&TruthRisky> = truth.risky.iter().filter(|r| r.kind == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind} entry: {:#?}", truth.risky);
    found[0]
}

/// Times (µs) of the frames matching `filter`.
fn times(pcap: &Path, filter: &str) -> Vec<u64> {
    tshark_fields(pcap, filter, &["frame.time_epoch"], &[]).iter().map(|r| epoch_us(&r[0])).collect()
}

/// The behaviour's frames start at the truth's `first_us` (within the exchange's first
/// second: handshake and think time) and nowhere earlier.
fn assert_starts_at(pcap: &Path, r: &TruthRisky, filter: &str) {
    let t = times(pcap, filter);
    assert!(!t.is_empty(), "{}: no frame matches {filter}", r.kind);
    let first = t[0];
    assert!(
        first >= r.first_us && first < r.first_us + 1_000_000,
        "{}: first matching frame at {first}, truth says {}",
        r.kind,
        r.first_us
    );
}

#[test]
fn risky_truth_lists_each_behaviour_once_after_the_identity_cases() {
    if !have_tshark() {
        return;
    }
    let (_, truth) = &pair().risky;
    let kinds: Vec<&str> = truth.risky.iter().map(|r| r.kind.as_str()).collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    let mut want = RISKY_KINDS.to_vec();
    want.sort();
    assert_eq!(sorted, want, "one entry per kind");
    let span = truth.last_packet_us - truth.first_packet_us;
    for r in &truth.risky {
        let d = truth.device_by_id(&r.device).unwrap_or_else(|| panic!("{}: no device {}", r.kind, r.device));
        assert_eq!(d.mac, r.mac, "{}: MAC of {}", r.kind, r.device);
        // Late in the run: after the identity cases (which end by 50 %).
        assert!(
            r.first_us > truth.first_packet_us + span * 6 / 10,
            "{} at {} is not late in the run",
            r.kind,
            r.first_us
        );
        if let Some(p) = &r.peer_device {
            let pd = truth.device_by_id(p).expect("peer device");
            assert_eq!(Some(pd.mac), r.peer_mac);
            assert!(pd.ips.contains(&r.peer_ip.expect("peer ip")));
        }
    }
    assert!(kinds.windows(2).all(|w| w[0] != w[1]));
}

#[test]
fn risky_capture_holds_each_labelled_behaviour() {
    if !have_tshark() {
        return;
    }
    let (pcap, truth) = &pair().risky;
    let access = pcap.with_file_name(&truth.captures[1].file);

    let r = entry(truth, "web_browsing");
    assert_eq!(truth.device_by_id(&r.device).unwrap().class, "infusion_pump");
    let ua = "Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36";
    assert!(r.detail.contains(ua));
    let peer = r.peer_ip.expect("web server");
    assert_starts_at(pcap, r, &format!("eth.src == {} && ip.dst == {peer} && tcp.flags.syn == 1", r.mac));
    let got =
        tshark_fields(pcap, &format!("eth.src == {} && http.request", r.mac), &["http.user_agent", "http.host"], &[]);
    assert_eq!(got, vec![vec![ua.to_string(), "www.example.com".to_string()]]);

    let r = entry(truth, "smb1_server");
    let d = truth.device_by_id(&r.device).unwrap();
    assert!(d.os.starts_with("Windows 7"), "an SMB1 server running {}", d.os);
    let ws = r.peer_ip.unwrap();
    assert_starts_at(pcap, r, &format!("ip.src == {ws} && ip.dst == {} && tcp.dstport == 445", r.ip));
    let req = tshark_fields(pcap, &format!("ip.src == {ws} && smb.cmd == 0x72"), &["smb.dialect.name"], &[]);
    assert_eq!(req, vec![vec!["NT LM 0.12".to_string()]], "the client offers SMB1 only");
    let resp = tshark_count(pcap, &format!("eth.src == {} && smb.cmd == 0x72 && smb.flags.response == 1", r.mac), &[]);
    assert_eq!(resp, 1, "the modality answers the SMB1 negotiate");

    let r = entry(truth, "cleartext_credentials");
    assert_eq!(truth.device_by_id(&r.device).unwrap().class, "lab_analyzer");
    assert_eq!(r.target, "telnet");
    assert_starts_at(pcap, r, &format!("ip.dst == {} && tcp.dstport == 23 && tcp.flags.syn == 1", r.ip));
    let prompts = tshark_count(pcap, &format!("eth.src == {} && telnet.data contains \"Password:\"", r.mac), &[]);
    assert_eq!(prompts, 1, "the analyzer asks for a password in cleartext");

    let r = entry(truth, "remote_access");
    assert_eq!(truth.device_by_id(&r.device).unwrap().class, "mr");
    let tv = r.peer_ip.unwrap();
    assert_starts_at(pcap, r, &format!("eth.src == {} && ip.dst == {tv} && tcp.dstport == 5938", r.mac));

    let r = entry(truth, "phi_cleartext_unexpected_peer");
    let to = r.peer_ip.unwrap();
    assert_starts_at(pcap, r, &format!("ip.src == {} && ip.dst == {to} && tcp.dstport == 2575", r.ip));
    let pid = tshark_count(pcap, &format!("ip.src == {} && ip.dst == {to} && frame contains \"PID|||\"", r.ip), &[]);
    assert_eq!(pid, 1, "one ADT with a PID segment to the workstation");

    let r = entry(truth, "new_device_on_clinical_vlan");
    assert_eq!(r.target, "vlan 30");
    assert_starts_at(pcap, r, &format!("eth.src == {}", r.mac));
    let vlans = tshark_fields(pcap, &format!("eth.src == {}", r.mac), &["vlan.id"], &[]);
    assert!(vlans.iter().all(|v| v[0] == "30"), "the laptop is only on the ICU VLAN");

    let r = entry(truth, "device_moved");
    let d = truth.device_by_id(&r.device).unwrap();
    assert_eq!((d.site.as_str(), r.target.as_str()), ("east-campus", "north-clinic"));
    // Native at the east campus on the core before; native at the clinic's access sensor
    // from `first_us` on (its DHCPDISCOVER), leased the address the truth gives.
    let before = times(pcap, &format!("eth.src == {}", r.mac));
    assert!(!before.is_empty() && before.iter().all(|t| *t < r.first_us), "seen natively by the core only before");
    let at_clinic = times(&access, &format!("eth.src == {}", r.mac));
    assert_eq!(at_clinic.first(), Some(&r.first_us), "its first frame at the clinic is the move");
    let ack = format!("dhcp.option.dhcp == 5 && dhcp.ip.your == {} && dhcp.hw.mac_addr == {}", r.ip, r.mac);
    let acked = times(&access, &ack);
    assert_eq!(acked.len(), 1, "the clinic leases it {}", r.ip);
    assert!(acked[0] > r.first_us);

    let r = entry(truth, "traffic_spike");
    let syns =
        times(pcap, &format!("eth.src == {} && tcp.dstport == 104 && tcp.flags.syn == 1 && tcp.flags.ack == 0", r.mac));
    let in_spike = syns.iter().filter(|t| **t >= r.first_us && **t < r.first_us + 60_000_000).count();
    let before = syns.iter().filter(|t| **t < r.first_us).count();
    assert!(in_spike >= 40, "{in_spike} associations in the spike's minute");
    assert!(in_spike > 4 * before.max(1), "{in_spike} in the spike's minute, {before} in the whole run before");
}

#[test]
fn clean_capture_of_the_same_seed_has_none_of_them() {
    if !have_tshark() {
        return;
    }
    let Pair { risky: (_, risky), clean: (pcap, clean) } = pair();
    assert!(clean.risky.is_empty() && clean.vulnerable.is_empty(), "the clean truth lists no risky entries");
    let access = pcap.with_file_name(&clean.captures[1].file);
    let r = entry(risky, "web_browsing");
    assert_eq!(tshark_count(pcap, &format!("eth.src == {} && http.request", r.mac), &[]), 0, "the pump browses");
    assert_eq!(tshark_count(pcap, "smb", &[]), 0, "SMB1 in the clean run");
    assert_eq!(tshark_count(pcap, "telnet.data contains \"assword\"", &[]), 0, "a password prompt in the clean run");
    assert_eq!(tshark_count(pcap, "tcp.port == 5938 || tcp.port == 6568 || tcp.port == 7070", &[]), 0);
    let r = entry(risky, "phi_cleartext_unexpected_peer");
    assert_eq!(tshark_count(pcap, &format!("ip.dst == {} && tcp.dstport == 2575", r.peer_ip.unwrap()), &[]), 0);
    let r = entry(risky, "new_device_on_clinical_vlan");
    assert!(clean.device_by_mac(r.mac).is_none(), "the laptop is not in the clean hospital");
    assert_eq!(tshark_count(pcap, &format!("eth.src == {}", r.mac), &[]), 0);
    let r = entry(risky, "device_moved");
    assert!(clean.device_by_id(&r.device).is_some_and(|d| d.history.is_empty()), "the ultrasound stays put");
    assert_eq!(tshark_count(&access, &format!("eth.src == {}", r.mac), &[]), 0);
    // The clean devices are the same devices: same ids, MACs and names.
    for d in &clean.devices {
        let twin = risky.device_by_id(&d.id).expect("every clean device is in the risky run");
        assert_eq!((twin.mac, &twin.name, &twin.profile), (d.mac, &d.name, &d.profile));
    }
    assert_eq!(risky.devices.len(), clean.devices.len() + 1, "the risky run adds only the laptop");
}

#[test]
fn vulnerable_pump_reports_its_firmware_and_the_truth_names_its_advisories() {
    if !have_tshark() {
        return;
    }
    let (pcap, truth) = &pair().risky;
    let pumps: Vec<_> = truth.vulnerable.iter().filter(|v| v.profile == "alaris_pcu").collect();
    let vulnerable: Vec<_> = pumps.iter().filter(|v| !v.advisories.is_empty()).collect();
    assert_eq!(vulnerable.len(), 1, "one pump with vulnerable firmware: {pumps:#?}");
    let v = vulnerable[0];
    assert_eq!(v.firmware.as_deref(), Some("9.19"));
    assert_eq!(v.advisories, ["ICSMA-17-017-02", "ICSMA-20-170-06", "ICSMA-20-317-01"]);
    assert!(pumps.iter().filter(|p| p.device != v.device).all(|p| p.firmware.as_deref() == Some("9.33.1.4")));
    // The check-ins carry the firmware: 9.19 from that pump only.
    let with =
        |fw: &str| tshark_fields(pcap, &format!("tcp.dstport == 3613 && frame contains \"{fw}\""), &["eth.src"], &[]);
    let senders: std::collections::BTreeSet<String> = with("FW=9.19;").into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(senders, [v.mac.to_string()].into_iter().collect());
    // Every model the advisories name is listed, each device once.
    for key in ["alaris_pcu", "philips_intellivue", "philips_piic", "ge_ct", "ge_anesthesia", "bd_pyxis"] {
        let devices = truth.devices.iter().filter(|d| d.profile == key).count();
        let listed = truth.vulnerable.iter().filter(|v| v.profile == key).count();
        assert_eq!((key, listed), (key, devices));
    }
}
