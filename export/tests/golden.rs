//! Every target's export of the fixture policy, compared byte for byte with
//! `tests/golden/<target>/…`. After an intended change, rewrite them with
//! `WARDLINE_BLESS=1 cargo test -p wardline-export --test golden` and review the diff.

mod netlab;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use wardline_export::targets::paloalto::userid_update;
use wardline_export::{all_exporters, Destination, ExportError, Protocol, ResolvedPolicy, Rule};

fn clinic() -> ResolvedPolicy {
    serde_json::from_str(include_str!("fixtures/clinic.json")).expect("fixture parses")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn bless() -> bool {
    std::env::var_os("WARDLINE_BLESS").is_some_and(|v| v == "1")
}

fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.insert(p);
            }
        }
    }
    out
}

/// Compare `bytes` with the golden file at `path` (or write it when blessing).
fn check(path: &Path, bytes: &[u8], failures: &mut Vec<String>) {
    if bless() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        return;
    }
    match std::fs::read(path) {
        Ok(want) if want == bytes => {}
        Ok(want) => {
            let (w, g) = (String::from_utf8_lossy(&want), String::from_utf8_lossy(bytes));
            let line =
                w.lines().zip(g.lines()).position(|(a, b)| a != b).unwrap_or(w.lines().count().min(g.lines().count()));
            failures.push(format!(
                "{} differs from the export, first at line {}:\n  golden: {:?}\n  export: {:?}",
                path.display(),
                line + 1,
                w.lines().nth(line).unwrap_or("<end>"),
                g.lines().nth(line).unwrap_or("<end>")
            ));
        }
        Err(e) => failures.push(format!("{}: {e} (run with WARDLINE_BLESS=1 to create it)", path.display())),
    }
}

#[test]
fn every_target_matches_its_golden_files() {
    let policy = clinic();
    let mut failures = Vec::new();
    for exporter in all_exporters() {
        let dir = golden_dir().join(exporter.name());
        let files = exporter.render_all(&policy).unwrap_or_else(|e| panic!("{}: {e}", exporter.name()));
        assert_eq!(files[0].path, exporter.file_name(), "{}: main output first", exporter.name());
        assert_eq!(files[0].bytes, exporter.render(&policy).unwrap(), "{}: render() is the main file", exporter.name());
        let produced: BTreeSet<PathBuf> = files.iter().map(|f| dir.join(&f.path)).collect();
        for f in &files {
            let text = String::from_utf8(f.bytes.clone()).expect("text output");
            assert!(
                text.contains("clinic-baseline") && text.contains('7'),
                "{}/{}: policy name and version missing",
                exporter.name(),
                f.path
            );
            check(&dir.join(&f.path), &f.bytes, &mut failures);
        }
        for stale in files_under(&dir).difference(&produced) {
            if bless() {
                std::fs::remove_file(stale).unwrap();
            } else {
                failures.push(format!("{} is no longer produced (bless to remove it)", stale.display()));
            }
        }
    }
    let update = {
        let mut next = clinic();
        next.version = 8;
        // The pump leaves the group, a new monitor joins.
        next.groups.iter_mut().find(|g| g.name == "infusion-pumps").unwrap().members.clear();
        let monitors = next.groups.iter_mut().find(|g| g.name == "patient-monitors").unwrap();
        let mut m = monitors.members[0].clone();
        m.mac = "00:1a:2b:00:01:21".parse().unwrap();
        m.addresses = vec!["198.18.1.21".parse().unwrap()];
        monitors.members.push(m);
        userid_update(&clinic(), &next).unwrap()
    };
    check(&golden_dir().join("paloalto-update/userid-update-7-to-8.xml"), &update, &mut failures);
    assert!(failures.is_empty(), "golden mismatches:\n{}", failures.join("\n"));
}

/// Input order never changes the bytes: groups, members, segments and ports shuffled.
#[test]
fn exports_do_not_depend_on_input_order() {
    let policy = clinic();
    let mut shuffled = policy.clone();
    shuffled.groups.reverse();
    shuffled.segments.reverse();
    for g in &mut shuffled.groups {
        g.members.reverse();
        for m in &mut g.members {
            m.addresses.reverse();
        }
    }
    for s in &mut shuffled.segments {
        s.subnets.reverse();
    }
    for r in &mut shuffled.rules {
        r.ports.reverse();
    }
    assert_ne!(policy, shuffled);
    for exporter in all_exporters() {
        assert_eq!(
            exporter.render_all(&policy).unwrap(),
            exporter.render_all(&shuffled).unwrap(),
            "{} output depends on input order",
            exporter.name()
        );
    }
}

#[test]
fn user_id_update_unregisters_removed_members_and_registers_new_ones() {
    let old = clinic();
    let mut new = clinic();
    new.version = 8;
    new.groups.iter_mut().find(|g| g.name == "pacs").unwrap().members.clear();
    let xml = String::from_utf8(userid_update(&old, &new).unwrap()).unwrap();
    let unregister =
        xml.split("<unregister>").nth(1).expect("an unregister section").split("</unregister>").next().unwrap();
    assert!(unregister.contains("<entry ip=\"198.18.3.20\">") && unregister.contains("wardline-pacs"), "{xml}");
    assert!(!xml.contains("<register>"), "nothing was added:\n{xml}");
    // The reverse step registers it again, persistently.
    let back = String::from_utf8(userid_update(&new, &old).unwrap()).unwrap();
    assert!(back.contains("<register>") && back.contains("<entry ip=\"198.18.3.20\" persistent=\"1\">"), "{back}");
    assert!(!back.contains("<unregister>"));
    // Same policy twice: an empty update.
    let same = String::from_utf8(userid_update(&old, &old).unwrap()).unwrap();
    assert!(!same.contains("<entry"), "{same}");
}

#[test]
fn domain_destinations_are_refused_by_address_filters_and_kept_by_fortios() {
    let mut policy = clinic();
    policy.rules.push(Rule {
        id: "r8".into(),
        source: "it-workstations".into(),
        destination: Destination::Domain("updates.vendor.example".into()),
        protocol: Protocol::Tcp,
        ports: vec![wardline_export::PortRange::single(443)],
        application: Some("vendor updates".into()),
    });
    for exporter in all_exporters() {
        let result = exporter.render_all(&policy);
        match exporter.name() {
            "nftables" | "iptables" | "cisco-ios" | "cisco-ise" => match result {
                Err(ExportError::Unsupported { what, .. }) => {
                    assert!(
                        what.contains("updates.vendor.example") && what.contains("r8"),
                        "{}: {what}",
                        exporter.name()
                    )
                }
                other => panic!("{} accepted a domain destination: {other:?}", exporter.name()),
            },
            "fortios" => {
                let text = String::from_utf8(result.unwrap().remove(0).bytes).unwrap();
                assert!(text.contains("set type fqdn") && text.contains("set fqdn \"updates.vendor.example\""));
            }
            _ => {
                result.unwrap_or_else(|e| panic!("{}: {e}", exporter.name()));
            }
        }
    }
}

#[test]
fn invalid_policies_are_refused_with_the_reason() {
    let expect = |p: ResolvedPolicy, needle: &str| {
        for exporter in all_exporters() {
            match exporter.render(&p) {
                Err(ExportError::Invalid(why)) => assert!(why.contains(needle), "{}: {why}", exporter.name()),
                other => panic!("{} accepted an invalid policy ({needle}): {other:?}", exporter.name()),
            }
        }
    };
    let mut p = clinic();
    p.rules[0].source = "nobody".into();
    expect(p, "\"nobody\" does not exist");
    let mut p = clinic();
    p.segments[1].subnets.push("198.18.1.128/25".parse().unwrap());
    expect(p, "overlap");
    let mut p = clinic();
    p.rules[6].ports.push(wardline_export::PortRange::single(1));
    expect(p, "ports only apply to tcp and udp");
    let mut p = clinic();
    p.rules[1].id = "r1".into();
    expect(p, "\"r1\" is defined twice");
}

#[test]
fn a_mac_in_two_groups_is_refused_by_nac_targets() {
    let mut p = clinic();
    let pump = p.groups.iter().find(|g| g.name == "infusion-pumps").unwrap().members[0].clone();
    p.groups.iter_mut().find(|g| g.name == "pacs").unwrap().members.push(pump);
    for exporter in all_exporters() {
        let r = exporter.render(&p);
        if ["cisco-ise", "clearpass", "packetfence"].contains(&exporter.name()) {
            assert!(
                matches!(&r, Err(ExportError::Unsupported { what, .. }) if what.contains("00:1a:2b:00:01:10")),
                "{}: {r:?}",
                exporter.name()
            );
        } else {
            r.unwrap_or_else(|e| panic!("{}: {e}", exporter.name()));
        }
    }
}

/// Random policies (awkward names, overlapping groups, every destination kind and
/// protocol): every target renders them or refuses with a reason, never panics or calls a
/// valid policy invalid, renders the same bytes twice, and stamps every file.
#[test]
fn random_policies_render_or_are_refused_with_a_reason() {
    for seed in 1..=200u64 {
        let policy = netlab::random_policy(seed);
        for exporter in all_exporters() {
            match exporter.render_all(&policy) {
                Ok(files) => {
                    assert_eq!(Ok(files.clone()), exporter.render_all(&policy), "seed {seed} {}", exporter.name());
                    for f in files {
                        let text = String::from_utf8(f.bytes).unwrap();
                        let empty_edl = f.path.starts_with("edl/") && text.is_empty();
                        assert!(
                            empty_edl || text.contains(&policy.name),
                            "seed {seed} {}/{}: no stamp",
                            exporter.name(),
                            f.path
                        );
                    }
                }
                Err(ExportError::Unsupported { .. }) | Err(ExportError::NameClash { .. }) => {}
                Err(e) => panic!("seed {seed} {}: {e}", exporter.name()),
            }
        }
    }
}
