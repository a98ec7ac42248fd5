//! The iptables export on a real kernel: `iptables-restore --test` and
//! `ip6tables-restore --test` accept it inside a namespace, and loaded into the router it
//! drops exactly the flows the policy blocks. Needs root; skips with the reason otherwise.

mod netlab;

use netlab::*;
use wardline_export::targets::iptables::Iptables;
use wardline_export::Exporter;

#[test]
fn iptables_export_is_accepted_and_drops_exactly_the_flows_the_policy_blocks() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED iptables_export_is_accepted_and_drops_exactly_the_flows_the_policy_blocks: {why}");
        return;
    }
    let policy = clinic_policy();
    let files = Iptables.render_all(&policy).expect("export renders");
    let (v4, v6) = (&files[0], &files[1]);
    assert_eq!((v4.path.as_str(), v6.path.as_str()), ("wardline.iptables", "wardline.ip6tables"));
    let lab = Lab::create(&clinic_nets()).expect("lab");
    lab.in_router_stdin("iptables-restore", &["--test"], &v4.bytes).expect("iptables-restore --test accepts it");
    lab.in_router_stdin("ip6tables-restore", &["--test"], &v6.bytes).expect("ip6tables-restore --test accepts it");

    let listeners = Listeners::open(&lab, PORTS);
    let flows = flow_matrix(&lab, PORTS);
    assert_lab_forwards_everything(&lab, &listeners, &flows);
    lab.in_router_stdin("iptables-restore", &[], &v4.bytes).expect("iptables-restore loads it");
    lab.in_router_stdin("ip6tables-restore", &[], &v6.bytes).expect("ip6tables-restore loads it");
    let listed = lab.in_router("iptables", &["-S", "WL-clinical"]).unwrap();
    assert!(listed.contains("rule r1 (HL7 MLLP)"), "loaded chain lacks the rules:\n{listed}");

    let reached = probe(&lab, &listeners, &flows);
    assert_kernel_matches_policy(&policy, &flows, &reached);
}
