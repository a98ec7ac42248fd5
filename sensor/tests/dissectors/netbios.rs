//! NetBIOS name service dissector on real captures.
use crate::dissect_common::*;
use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::netbios;

#[test]
fn registrations_and_answers_name_the_sender() {
    let (found, errors) = run_dissector(&pcap("discovery/netbios.pcap"), &netbios::NetbiosDissector);
    assert!(errors.is_empty(), "{errors:?}");
    let of = |ip: &str| -> Vec<String> {
        found
            .iter()
            .filter(|(c, f)| f.field == Field::NetbiosName && c.src_ip.map(|i| i.to_string()).as_deref() == Some(ip))
            .map(|(_, f)| f.value.clone())
            .collect()
    };
    // 10.0.4.24 answers a node-status query with its own name table.
    let gunnar = of("10.0.4.24");
    assert!(gunnar.contains(&"GUNNAR<00>".to_string()) && gunnar.contains(&"GUNNAR<20>".to_string()), "{gunnar:?}");
    assert!(of("10.0.5.1").contains(&"GURU<00>".to_string()));
    let names = values(&found, Field::NetbiosName);
    // 10.0.4.131 only *queries* XSTREAM_HY<00> 181 times: that is not its name.
    assert!(!names.contains(&"XSTREAM_HY<00>".to_string()), "{names:?}");
    // Wildcard node-status queries ("*<00>...") are not anybody's name.
    assert!(names.iter().all(|n| !n.starts_with('*')));
}

#[test]
fn decoded_names_match_tshark_nbns_name() {
    let cap = load(&pcap("discovery/netbios.pcap"));
    let mut ours = std::collections::BTreeSet::new();
    for p in cap.datagrams.iter().filter(|p| p.ctx.src_port == 137 || p.ctx.dst_port == 137) {
        if let Ok(r) = netbios::parse(&p.payload) {
            ours.extend(r.questions.iter().chain(r.record_names.iter().map(|(n, _)| n)).map(|n| n.display()));
        }
    }
    let out = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap("discovery/netbios.pcap"))
        .args(["-T", "fields", "-e", "nbns.name"])
        .output();
    let Ok(out) = out else { return };
    let theirs: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .flat_map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        // tshark appends " (Workstation/Redirector)" etc.; the NAME<xx> part is the name.
        .map(|s| s.split(' ').next().unwrap_or("").to_string())
        .collect();
    let missing: Vec<_> = theirs.iter().filter(|n| !n.starts_with('*') && !ours.contains(*n)).collect();
    assert!(missing.is_empty(), "names tshark decoded that we did not: {missing:?} (ours: {ours:?})");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = netbios::parse(&bytes);
    }
}
