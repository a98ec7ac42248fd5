//! Proof on a real packet filter: the nftables export, loaded into a router namespace,
//! drops exactly the flows the policy's reference evaluation (`ResolvedPolicy::verdict`)
//! says are blocked. Needs root; skips with the reason otherwise.

mod netlab;

use netlab::*;
use wardline_export::targets::nftables::Nftables;
use wardline_export::{Action, Exporter};

#[test]
fn nftables_export_drops_exactly_the_flows_the_policy_blocks() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED nftables_export_drops_exactly_the_flows_the_policy_blocks: {why}");
        return;
    }
    let policy = clinic_policy();
    let ruleset = Nftables.render(&policy).expect("export renders");
    let lab = Lab::create(&clinic_nets()).expect("lab");
    let listeners = Listeners::open(&lab, PORTS);
    let flows = flow_matrix(&lab, PORTS);
    assert_lab_forwards_everything(&lab, &listeners, &flows);

    lab.in_router_stdin("nft", &["-c", "-f", "-"], &ruleset).expect("nft -c accepts the export");
    lab.in_router_stdin("nft", &["-f", "-"], &ruleset).expect("nft loads the export");
    let listed = lab.in_router("nft", &["list", "table", "inet", "wardline"]).unwrap();
    assert!(listed.contains("chain seg_clinical"), "loaded table lacks the segment chains:\n{listed}");

    let reached = probe(&lab, &listeners, &flows);
    assert_kernel_matches_policy(&policy, &flows, &reached);

    // Loading it again replaces the table instead of failing or doubling it.
    lab.in_router_stdin("nft", &["-f", "-"], &ruleset).expect("nft reloads the export");
    let again = lab.in_router("nft", &["list", "table", "inet", "wardline"]).unwrap();
    assert_eq!(again, listed, "a reload changed the loaded table");
}

/// The comparison is not vacuous: a ruleset exported from a different policy (the IT
/// segment's default flipped to deny, the DICOM rule gone) is caught on exactly the flows
/// the two policies decide differently.
#[test]
fn a_ruleset_from_another_policy_is_caught() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED a_ruleset_from_another_policy_is_caught: {why}");
        return;
    }
    let policy = clinic_policy();
    let mut other = policy.clone();
    other.segments.iter_mut().find(|s| s.name == "it").unwrap().default_action = Action::Deny;
    other.rules.retain(|r| r.id != "r4");
    let lab = Lab::create(&clinic_nets()).expect("lab");
    let listeners = Listeners::open(&lab, PORTS);
    let flows = flow_matrix(&lab, PORTS);
    lab.in_router_stdin("nft", &["-f", "-"], &Nftables.render(&other).unwrap()).expect("nft loads");
    let reached = probe(&lab, &listeners, &flows);

    let (wrongly_dropped, wrongly_passed) = disagreements(&policy, &flows, &reached);
    let differ: std::collections::BTreeSet<_> =
        flows.iter().copied().filter(|f| policy.verdict(f).action != other.verdict(f).action).collect();
    assert!(!differ.is_empty());
    assert!(wrongly_passed.is_empty(), "the stricter ruleset passed:\n{}", describe(&wrongly_passed));
    assert_eq!(wrongly_dropped, differ, "caught flows differ from where the policies differ");
    assert_kernel_matches_policy(&other, &flows, &reached);
}

/// Random policies (awkward names, overlapping groups, every destination kind, protocol
/// and port shape) through both packet-filter exports: the kernel agrees with the
/// reference evaluation on every probed flow. Seeds are fixed so a failure replays.
#[test]
fn random_policies_agree_with_the_kernel_under_nftables_and_iptables() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED random_policies_agree_with_the_kernel_under_nftables_and_iptables: {why}");
        return;
    }
    use wardline_export::targets::iptables::Iptables;
    let lab = Lab::create(&clinic_nets()).expect("lab");
    let listeners = Listeners::open(&lab, PORTS);
    let flows = flow_matrix(&lab, PORTS);
    // The first three seeds whose policy both allows and blocks some probed flows.
    let mixed = |p: &wardline_export::ResolvedPolicy| {
        let blocked = flows.iter().filter(|f| p.verdict(f).action == Action::Deny).count();
        blocked > 0 && blocked < flows.len()
    };
    let seeds: Vec<u64> = (1..100u64).filter(|s| mixed(&random_policy(*s))).take(3).collect();
    assert_eq!(seeds.len(), 3);
    for seed in seeds {
        let policy = random_policy(seed);
        for target in ["nftables", "iptables"] {
            match target {
                "nftables" => {
                    let ruleset = Nftables.render(&policy).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                    lab.in_router_stdin("nft", &["-f", "-"], &ruleset).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                }
                _ => {
                    let rules = Iptables.render(&policy).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                    lab.in_router_stdin("iptables-restore", &[], &rules).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                }
            }
            let reached = probe(&lab, &listeners, &flows);
            let (wrongly_dropped, wrongly_passed) = disagreements(&policy, &flows, &reached);
            assert!(
                wrongly_dropped.is_empty() && wrongly_passed.is_empty(),
                "seed {seed}, {target}: kernel and policy disagree.\ndropped but allowed:\n{}passed but blocked:\n{}",
                describe(&wrongly_dropped),
                describe(&wrongly_passed)
            );
            eprintln!(
                "seed {seed} {target}: {} of {} flows dropped, as the policy says",
                flows.len() - reached.len(),
                flows.len()
            );
            // Unload before the next target so only one filter decides.
            match target {
                "nftables" => lab.in_router("nft", &["delete", "table", "inet", "wardline"]).map(drop),
                _ => {
                    lab.in_router_stdin("iptables-restore", &[], b"*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n").map(drop)
                }
            }
            .unwrap();
        }
    }
}
