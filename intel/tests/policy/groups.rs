//! Group membership: expressions over device attributes, static members, exclusions, and
//! membership history as a diff.

use super::support::{device, mac};
use std::collections::BTreeSet;
use wardline_intel::policy::{members, membership_diff, Expr, Group, Membership, PolicyDevice};

fn vulnerable_pumps() -> Group {
    Group::matching("vulnerable_pumps", r#"class == "infusion_pump" and vulnerable"#).expect("expression")
}

#[test]
fn all_vulnerable_infusion_pumps_and_a_new_pump_joins_by_itself() {
    let g = vulnerable_pumps();
    let mut pump_a = device(1, "infusion_pump", "10.1.0.1");
    pump_a.vulns = 2;
    let pump_b = device(2, "infusion_pump", "10.1.0.2");
    let mut monitor = device(3, "patient_monitor", "10.1.0.3");
    monitor.vulns = 5;
    let mut kev_pump = device(4, "infusion_pump", "10.1.0.4");
    kev_pump.kev = true;
    let mut devices = vec![pump_a, pump_b, monitor, kev_pump];
    let before = Membership::evaluate([&g], &devices);
    assert_eq!(members(&g, &devices), BTreeSet::from([mac(1), mac(4)]));

    // A new vulnerable pump appears and pump B gets a vulnerability match: both join with
    // no change to the group; pump A is patched and leaves.
    let mut new_pump = device(5, "infusion_pump", "10.1.0.5");
    new_pump.vulns = 1;
    devices.push(new_pump);
    devices[1].vulns = 1;
    devices[0].vulns = 0;
    let after = Membership::evaluate([&g], &devices);
    assert_eq!(after.groups["vulnerable_pumps"], BTreeSet::from([mac(2), mac(4), mac(5)]));
    let changes = membership_diff(&before, &after);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].group, "vulnerable_pumps");
    assert_eq!(changes[0].joined, vec![mac(2), mac(5)]);
    assert_eq!(changes[0].left, vec![mac(1)]);
    assert!(membership_diff(&after, &after).is_empty());
}

#[test]
fn static_members_and_exclusions() {
    let mut g = vulnerable_pumps();
    let mut a = device(1, "infusion_pump", "");
    a.vulns = 1;
    let mut b = device(2, "infusion_pump", "");
    b.vulns = 1;
    b.tags.push("bench-test".into());
    let ws = device(3, "workstation", "");
    g.members.insert(mac(3)); // a workstation that programs pumps
    g.members.insert(mac(99)); // not seen yet: still a member
    g.exclude.insert(mac(1));
    g.exclude_match = Some(Expr::parse(r#"tag == "BENCH-TEST""#).expect("expr"));
    let devices = vec![a, b, ws];
    assert_eq!(members(&g, &devices), BTreeSet::from([mac(3), mac(99)]));
    // A static member that is excluded stays out.
    g.exclude.insert(mac(99));
    assert_eq!(members(&g, &devices), BTreeSet::from([mac(3)]));
}

fn dev_with(f: impl FnOnce(&mut PolicyDevice)) -> PolicyDevice {
    let mut d = device(7, "ct", "10.20.30.40");
    d.vendor = Some("siemens".into());
    d.site = Some("North".into());
    d.vlans = vec![20, 300];
    d.risk = 72.5;
    d.tags = vec!["radiology".into()];
    d.os = Some("windows_7".into());
    f(&mut d);
    d
}

#[test]
fn every_attribute_can_be_matched() {
    let d = dev_with(|_| {});
    let yes = [
        r#"class == "CT""#,
        r#"category == "medical""#,
        r#"criticality == "clinical_support""#,
        r#"criticality >= "clinical_support" and criticality < "patient_critical""#,
        r#"vendor == "siemens" and site == "north""#,
        r#"vendor in ["ge", "siemens"]"#,
        r#"model != "x""#,
        r#"profile != "x""#,
        r#"os == "windows_7""#,
        r#"tag == "radiology""#,
        "vlan == 300",
        "vlan in [5, 20]",
        "vlan > 100",
        r#"ip in "10.20.0.0/16""#,
        r#"ip in ["192.168.0.0/16", "10.20.30.0/24"]"#,
        "risk > 70 and risk <= 72.5",
        "vulns == 0",
        "not vulnerable and not kev and not end_of_support",
        r#"(class == "mr" or class == "ct") and not tag == "lab""#,
    ];
    for e in yes {
        assert!(Expr::parse(e).unwrap_or_else(|err| panic!("{e}: {err}")).matches(&d), "{e}");
    }
    let no = [
        r#"class == "mr""#,
        r#"model == "x""#,
        r#"site != "north""#,
        "vlan == 21",
        r#"ip in "10.21.0.0/16""#,
        "risk >= 80",
        "vulnerable",
        r#"criticality >= "patient_critical""#,
        r#"not (class == "ct")"#,
    ];
    for e in no {
        assert!(!Expr::parse(e).unwrap_or_else(|err| panic!("{e}: {err}")).matches(&d), "{e}");
    }
    let eos = dev_with(|d| {
        d.end_of_support = true;
        d.kev = true;
    });
    assert!(Expr::parse("end_of_support and kev and vulnerable").expect("expr").matches(&eos));
}

#[test]
fn expression_errors_say_where_and_what() {
    let cases = [
        (r#"clas == "ct""#, 0, "unknown attribute `clas`"),
        (r#"class == 3"#, 9, "quoted string"),
        (r#"vlan == "20""#, 8, "number"),
        (r#"ip in "10.0.0/8""#, 6, "not an IP network"),
        (r#"category == "medic""#, 12, "not a category"),
        (r#"class < "ct""#, 6, "only with =="),
        (r#"class == "ct" and"#, 17, "ends where a condition"),
        (r#"class == "ct"#, 9, "not closed"),
        (r#"class == "ct" vulnerable"#, 14, "join conditions"),
        (r#"(vulnerable"#, 11, "expected `)`"),
        (r#"class = "ct""#, 6, "`==`"),
    ];
    for (text, offset, needle) in cases {
        let e = Expr::parse(text).expect_err(text);
        assert_eq!(e.offset, offset, "{text}: {e}");
        assert!(e.message.contains(needle), "{text}: {e}");
    }
    let deep = format!("{}vulnerable{}", "(".repeat(100), ")".repeat(100));
    assert!(Expr::parse(&deep).expect_err("too deep").message.contains("nested"));
}

#[test]
fn canonical_expression_text_round_trips() {
    for (text, canon) in [
        (r#"  CLASS=="Infusion_Pump"   AND vulnerable"#, r#"class == "infusion_pump" and vulnerable"#),
        (r#"a_flag_free == 1"#, ""),
        (r#"(kev or vulnerable) and (not (kev))"#, "(kev or vulnerable) and not kev"),
        (r#"kev or (vulnerable or end_of_support)"#, "kev or vulnerable or end_of_support"),
        (r#"vlan in [10]"#, "vlan == 10"),
        (r#"not (kev and vulnerable)"#, "not (kev and vulnerable)"),
        (r#"ip in ["10.1.2.3/8", "::1"]"#, r#"ip in ["10.0.0.0/8", "::1/128"]"#),
        (r#"model == 'say "hi"'"#, r#"model == "say \"hi\"""#),
    ] {
        let Ok(e) = Expr::parse(text) else {
            assert!(canon.is_empty(), "{text} should parse");
            continue;
        };
        assert_eq!(e.to_string(), canon);
        assert_eq!(Expr::parse(&e.to_string()).expect("canonical parses"), e);
    }
}

#[test]
fn device_attributes_come_from_the_classification() {
    use wardline_common::{Evidence, Field, Proto};
    use wardline_intel::{classify, DeviceFacts, PortRef};
    let kb = super::support::kb();
    let mut f = DeviceFacts::new("00:d0:75:00:00:01".parse().expect("mac"));
    f.evidence = vec![Evidence::new(Field::Hostname, "ALARIS-8015-1", Proto::Unknown, 0)];
    f.connects_to = vec![PortRef::tcp(3613)];
    let c = classify(kb, &f);
    let d = PolicyDevice::from_classification(&c, "2026-12-07");
    assert_eq!(d.class, "infusion_pump");
    assert_eq!(d.profile.as_deref(), Some("bd_alaris_pcu_8015"));
    assert_eq!(d.criticality, wardline_intel::Criticality::LifeSustaining);
    let g = Group::matching("life", r#"criticality == "life_sustaining" and profile == "bd_alaris_pcu_8015""#)
        .expect("expr");
    assert!(g.contains(&d));
}
