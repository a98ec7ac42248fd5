//! Blast radius (issue 12 item 6, decision 0031): which devices and services a compromised
//! device (or every member of a group) can reach, weighted by clinical criticality, under
//! one reachability regime, and the difference between two regimes ("now" and a candidate
//! policy).
//!
//! The model, precisely (docs/segmentation.md, "Blast radius"):
//!
//! - The **candidates** of a source `s` are the other devices `t` (not themselves sources)
//!   that were *observed* talking with `s` in either direction, or that share a *segment*
//!   with `s` (the same VLAN at the same site, or the same untagged sensor segment): what an
//!   attacker on `s` can try without routing through a firewall, plus what `s` already talks to.
//! - The **services** of `t` are its known listening services (`tcp/3613`). A device with
//!   none is probed as "any traffic" (IP protocol 0, port 0), which only a rule without
//!   protocol and ports allows.
//! - Under [`Regime::Open`] (no policy) every service of every candidate is reachable.
//! - Under [`Regime::Policy`] a service is reachable when the policy's verdict for
//!   `s → t` on it is `allow` or `monitor` (monitor lets flows through); a candidate is
//!   reached when at least one of its services is.
//!
//! A regime that allows less never reaches more (the filter is over a fixed candidate set),
//! and the result is a pure function of the inputs in sorted order: deterministic.

use super::compiled::{CompiledPolicy, Flow, FlowEnd};
use super::model::Action;
use crate::model::{Criticality, Transport};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use wardline_common::MacAddr;

/// A listening service: transport and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    pub transport: Transport,
    pub port: u16,
}

impl Service {
    /// `tcp/443`, `udp/161`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Service> {
        let (t, p) = s.split_once('/')?;
        let transport = match t.to_ascii_lowercase().as_str() {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            _ => return None,
        };
        Some(Service { transport, port: p.parse().ok()? })
    }
    fn ip_proto(self) -> u8 {
        match self.transport {
            Transport::Udp => 17,
            _ => 6,
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = if self.transport == Transport::Udp { "udp" } else { "tcp" };
        write!(f, "{t}/{}", self.port)
    }
}

/// One device as the blast radius sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct BlastDevice {
    pub mac: MacAddr,
    /// The address flows to it are evaluated with (its first), if any.
    pub ip: Option<IpAddr>,
    pub class: String,
    pub criticality: Criticality,
    /// Segments it was seen on ("ward/vlan 40"); equal strings are the same segment.
    pub segments: Vec<String>,
    /// Known listening services.
    pub services: Vec<Service>,
}

/// The inputs: every known device, the observed peer pairs (either order), and the sources.
#[derive(Clone, Copy, Debug)]
pub struct BlastInput<'a> {
    pub devices: &'a [BlastDevice],
    pub observed: &'a [(MacAddr, MacAddr)],
    pub sources: &'a BTreeSet<MacAddr>,
}

/// What decides reachability.
#[derive(Clone, Copy)]
pub enum Regime<'a> {
    /// No policy: everything a candidate offers.
    Open,
    /// The verdicts of a compiled policy.
    Policy(&'a CompiledPolicy),
}

/// Weight of one reached device by its criticality: a reached pump counts ten times a
/// reached printer.
pub fn weight(c: Criticality) -> u64 {
    match c {
        Criticality::LifeSustaining => 10,
        Criticality::PatientCritical => 5,
        Criticality::ClinicalSupport => 2,
        Criticality::NonClinical => 1,
    }
}

/// One reached device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reached {
    pub mac: MacAddr,
    pub class: String,
    pub criticality: Criticality,
    /// Seen talking with a source (rather than only sharing a segment).
    pub observed: bool,
    /// Reachable services (`tcp/2575`); `any` when it was reached by the any-traffic probe.
    pub services: Vec<String>,
}

/// Reached devices of one class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassReach {
    pub class: String,
    pub criticality: Criticality,
    pub devices: usize,
    pub services: usize,
    pub score: u64,
}

/// Everything reached under one regime.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reach {
    pub devices: usize,
    pub services: usize,
    /// Sum of [`weight`] over the reached devices.
    pub score: u64,
    /// Highest score first, then class name.
    pub by_class: Vec<ClassReach>,
    /// Sorted by MAC.
    pub reached: Vec<Reached>,
}

impl Reach {
    pub fn macs(&self) -> BTreeSet<MacAddr> {
        self.reached.iter().map(|r| r.mac).collect()
    }
    pub fn class_count(&self, class: &str) -> usize {
        self.by_class.iter().find(|c| c.class == class).map_or(0, |c| c.devices)
    }
}

/// Per class: devices reached under each regime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassDelta {
    pub class: String,
    pub criticality: Criticality,
    pub now: usize,
    pub candidate: usize,
}

/// How the candidate differs from now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BlastDiff {
    /// Reached now, not under the candidate (sorted).
    pub no_longer_reached: Vec<MacAddr>,
    /// Reached under the candidate, not now (sorted).
    pub newly_reached: Vec<MacAddr>,
    pub score_change: i64,
    /// Most critical first, then class name.
    pub by_class: Vec<ClassDelta>,
}

const PROBE: &str = "any";

/// The devices and services the sources reach under `regime`.
pub fn reach(input: &BlastInput, regime: Regime) -> Reach {
    let by_mac: BTreeMap<MacAddr, &BlastDevice> = input.devices.iter().map(|d| (d.mac, d)).collect();
    let mut observed: BTreeMap<MacAddr, BTreeSet<MacAddr>> = BTreeMap::new();
    for (a, b) in input.observed {
        if a != b {
            observed.entry(*a).or_default().insert(*b);
            observed.entry(*b).or_default().insert(*a);
        }
    }
    let mut by_segment: BTreeMap<&str, Vec<MacAddr>> = BTreeMap::new();
    for d in input.devices {
        for s in &d.segments {
            by_segment.entry(s.as_str()).or_default().push(d.mac);
        }
    }
    // Target → (observed, reachable services).
    let mut hits: BTreeMap<MacAddr, (bool, BTreeSet<String>)> = BTreeMap::new();
    for src_mac in input.sources {
        let src = by_mac.get(src_mac).copied();
        let seen = observed.get(src_mac);
        let mut candidates: BTreeSet<MacAddr> = seen.cloned().unwrap_or_default();
        for seg in src.map(|d| d.segments.as_slice()).unwrap_or_default() {
            candidates.extend(by_segment.get(seg.as_str()).into_iter().flatten().copied());
        }
        for t in candidates {
            if input.sources.contains(&t) {
                continue;
            }
            let Some(dst) = by_mac.get(&t).copied() else { continue };
            let was_observed = seen.is_some_and(|s| s.contains(&t));
            let mut services: BTreeSet<String> = BTreeSet::new();
            if dst.services.is_empty() {
                if allows(regime, src_mac, src, dst, 0, 0) {
                    services.insert(PROBE.to_string());
                }
            } else {
                for svc in &dst.services {
                    if allows(regime, src_mac, src, dst, svc.ip_proto(), svc.port) {
                        services.insert(svc.to_string());
                    }
                }
            }
            if services.is_empty() {
                continue;
            }
            let e = hits.entry(t).or_default();
            e.0 |= was_observed;
            e.1.extend(services);
        }
    }
    let mut out = Reach::default();
    let mut classes: BTreeMap<&str, ClassReach> = BTreeMap::new();
    for (mac, (was_observed, services)) in hits {
        let d = by_mac[&mac];
        let n = services.iter().filter(|s| *s != PROBE).count();
        let c = classes.entry(d.class.as_str()).or_insert_with(|| ClassReach {
            class: d.class.clone(),
            criticality: d.criticality,
            devices: 0,
            services: 0,
            score: 0,
        });
        c.devices += 1;
        c.services += n;
        c.score += weight(d.criticality);
        // A class's criticality is its most critical member's.
        if weight(d.criticality) > weight(c.criticality) {
            c.criticality = d.criticality;
        }
        out.devices += 1;
        out.services += n;
        out.score += weight(d.criticality);
        out.reached.push(Reached {
            mac,
            class: d.class.clone(),
            criticality: d.criticality,
            observed: was_observed,
            services: services.into_iter().collect(),
        });
    }
    out.by_class = classes.into_values().collect();
    out.by_class.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.class.cmp(&b.class)));
    out
}

fn allows(
    regime: Regime,
    src_mac: &MacAddr,
    src: Option<&BlastDevice>,
    dst: &BlastDevice,
    proto: u8,
    port: u16,
) -> bool {
    let Regime::Policy(p) = regime else { return true };
    let flow = Flow {
        src: FlowEnd { device: p.device(src_mac), ip: src.and_then(|d| d.ip) },
        dst: FlowEnd { device: p.device(&dst.mac), ip: dst.ip },
        ip_proto: proto,
        dst_port: port,
        app: None,
        dst_domain: None,
    };
    p.evaluate(&flow).action != Action::Deny
}

/// The difference from `now` to `candidate`.
pub fn diff(now: &Reach, candidate: &Reach) -> BlastDiff {
    let (a, b) = (now.macs(), candidate.macs());
    let mut classes: BTreeMap<&str, ClassDelta> = BTreeMap::new();
    for (r, is_now) in now.reached.iter().map(|r| (r, true)).chain(candidate.reached.iter().map(|r| (r, false))) {
        let c = classes.entry(r.class.as_str()).or_insert_with(|| ClassDelta {
            class: r.class.clone(),
            criticality: r.criticality,
            now: 0,
            candidate: 0,
        });
        if weight(r.criticality) > weight(c.criticality) {
            c.criticality = r.criticality;
        }
        if is_now {
            c.now += 1;
        } else {
            c.candidate += 1;
        }
    }
    let mut by_class: Vec<ClassDelta> = classes.into_values().collect();
    by_class.sort_by(|x, y| weight(y.criticality).cmp(&weight(x.criticality)).then_with(|| x.class.cmp(&y.class)));
    BlastDiff {
        no_longer_reached: a.difference(&b).copied().collect(),
        newly_reached: b.difference(&a).copied().collect(),
        score_change: candidate.score as i64 - now.score as i64,
        by_class,
    }
}

/// The sentence an operator reads first: "a compromised workstation reaches 42 devices now
/// (score 310), most critical 12 infusion_pump; none under version 7". `who` names the
/// source(s); `candidate` is the candidate's name and reach, when there is one.
pub fn headline(who: &str, now: &Reach, candidate: Option<(&str, &Reach)>) -> String {
    let top = now.by_class.iter().max_by(|a, b| {
        weight(a.criticality)
            .cmp(&weight(b.criticality))
            .then_with(|| a.devices.cmp(&b.devices))
            .then(b.class.cmp(&a.class))
    });
    let mut s = match top {
        None => format!("{who} reaches no device now"),
        Some(top) => format!(
            "{who} reaches {} now (score {}), {} of them {}",
            plural(now.devices, "device"),
            now.score,
            top.devices,
            top.class
        ),
    };
    if let Some((name, c)) = candidate {
        let n = match top {
            Some(top) => {
                let k = c.class_count(&top.class);
                format!(
                    "{} {} and {} in all (score {})",
                    if k == 0 { "none".to_string() } else { k.to_string() },
                    top.class,
                    c.devices,
                    c.score
                )
            }
            None => format!("{} (score {})", plural(c.devices, "device"), c.score),
        };
        s.push_str(&format!("; under {name}: {n}"));
    }
    s
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_policy, CompiledPolicy, Membership, PolicyDevice};
    use crate::Category;
    use proptest::prelude::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn dev(n: u8, class: &str, crit: Criticality, seg: &str, services: &[&str]) -> BlastDevice {
        BlastDevice {
            mac: mac(n),
            ip: Some(IpAddr::from([10, 0, 0, n])),
            class: class.into(),
            criticality: crit,
            segments: if seg.is_empty() { vec![] } else { vec![seg.to_string()] },
            services: services.iter().map(|s| Service::parse(s).unwrap()).collect(),
        }
    }

    /// A workstation on ward 3A, three pumps on its VLAN, a PACS server it talks to on
    /// another VLAN and a printer elsewhere it never talked to.
    fn ward() -> Vec<BlastDevice> {
        vec![
            dev(1, "workstation", Criticality::NonClinical, "3a/vlan 30", &[]),
            dev(2, "infusion_pump", Criticality::LifeSustaining, "3a/vlan 30", &["tcp/3613"]),
            dev(3, "infusion_pump", Criticality::LifeSustaining, "3a/vlan 30", &["tcp/3613", "udp/161"]),
            dev(4, "infusion_pump", Criticality::LifeSustaining, "3a/vlan 30", &[]),
            dev(5, "pacs", Criticality::ClinicalSupport, "dc/vlan 10", &["tcp/104"]),
            dev(6, "printer", Criticality::NonClinical, "3b/vlan 31", &["tcp/9100"]),
        ]
    }

    fn compiled(text: &str, devices: &[BlastDevice]) -> CompiledPolicy {
        let policy = parse_policy("t", text).unwrap();
        let pdevs: Vec<PolicyDevice> = devices
            .iter()
            .map(|d| {
                let mut p = PolicyDevice::new(d.mac, &d.class, Category::Medical, d.criticality);
                p.ips = d.ip.into_iter().collect();
                p
            })
            .collect();
        let m = Membership::evaluate(&policy.groups, &pdevs);
        CompiledPolicy::compile_with(&policy, &pdevs, &m)
    }

    const PUMPS_CLOSED: &str = r#"
[policy]
name = "t"
default = "allow"
[[group]]
name = "pumps"
match = 'class == "infusion_pump"'
[[group]]
name = "workstations"
match = 'class == "workstation"'
[[rule]]
name = "no workstation to pumps"
from = ["workstations"]
to = ["pumps"]
protocol = "any"
action = "deny"
"#;

    #[test]
    fn open_reaches_observed_peers_and_the_segment() {
        let devices = ward();
        let sources = BTreeSet::from([mac(1)]);
        let observed = [(mac(5), mac(1))];
        let input = BlastInput { devices: &devices, observed: &observed, sources: &sources };
        let r = reach(&input, Regime::Open);
        assert_eq!(r.macs(), BTreeSet::from([mac(2), mac(3), mac(4), mac(5)]), "not the printer");
        assert_eq!(r.class_count("infusion_pump"), 3);
        assert_eq!(r.score, 10 * 3 + 2);
        assert_eq!(r.services, 4, "3613, 3613, 161, 104; the service-less pump is reached by the probe");
        assert_eq!(r.by_class[0].class, "infusion_pump");
        let pacs = r.reached.iter().find(|x| x.mac == mac(5)).unwrap();
        assert!(pacs.observed);
        assert!(!r.reached[0].observed);
        assert_eq!(r.reached.iter().find(|x| x.mac == mac(4)).unwrap().services, ["any"]);
    }

    #[test]
    fn a_policy_that_denies_pumps_leaves_the_rest_and_the_headline_says_so() {
        let devices = ward();
        let sources = BTreeSet::from([mac(1)]);
        let observed = [(mac(1), mac(5))];
        let input = BlastInput { devices: &devices, observed: &observed, sources: &sources };
        let now = reach(&input, Regime::Open);
        let p = compiled(PUMPS_CLOSED, &devices);
        let cand = reach(&input, Regime::Policy(&p));
        assert_eq!(cand.macs(), BTreeSet::from([mac(5)]));
        let d = diff(&now, &cand);
        assert_eq!(d.no_longer_reached, vec![mac(2), mac(3), mac(4)]);
        assert!(d.newly_reached.is_empty());
        assert_eq!(d.score_change, -30);
        assert_eq!(
            d.by_class[0],
            ClassDelta {
                class: "infusion_pump".into(),
                criticality: Criticality::LifeSustaining,
                now: 3,
                candidate: 0
            }
        );
        let h = headline("workstation 02:00:00:00:00:01", &now, Some(("version 7", &cand)));
        assert_eq!(
            h,
            "workstation 02:00:00:00:00:01 reaches 4 devices now (score 32), 3 of them infusion_pump; \
             under version 7: none infusion_pump and 1 in all (score 2)"
        );
    }

    #[test]
    fn ports_decide_per_service_and_group_sources_are_not_their_own_targets() {
        let devices = ward();
        let text = r#"
[policy]
name = "t"
default = "deny"
[[group]]
name = "pumps"
match = 'class == "infusion_pump"'
[[rule]]
name = "snmp only"
from = ["any"]
to = ["pumps"]
protocol = "udp"
ports = [161]
action = "allow"
"#;
        let p = compiled(text, &devices);
        let sources = BTreeSet::from([mac(1), mac(2)]);
        let input = BlastInput { devices: &devices, observed: &[], sources: &sources };
        let r = reach(&input, Regime::Policy(&p));
        assert_eq!(r.macs(), BTreeSet::from([mac(3)]), "pump 2 is a source; pump 4 has no port-less allow");
        assert_eq!(r.reached[0].services, ["udp/161"]);
    }

    #[test]
    fn unknown_sources_and_bad_services_are_harmless() {
        assert_eq!(Service::parse("tcp/70000"), None);
        assert_eq!(Service::parse("icmp/1"), None);
        assert_eq!(Service::parse("nonsense"), None);
        let devices = ward();
        let sources = BTreeSet::from([mac(99)]);
        let r =
            reach(&BlastInput { devices: &devices, observed: &[(mac(99), mac(6))], sources: &sources }, Regime::Open);
        assert_eq!(r.macs(), BTreeSet::from([mac(6)]), "an observed peer of a device without attributes");
        assert_eq!(headline("x", &Reach::default(), None), "x reaches no device now");
    }

    /// Devices, observed pairs (by index), sources (by index), rules (from class, to class,
    /// port, deny?).
    type Case = (Vec<BlastDevice>, Vec<(u8, u8)>, BTreeSet<u8>, Vec<(u8, u8, u16, bool)>);

    fn arb_case() -> impl Strategy<Value = Case> {
        let classes = ["infusion_pump", "workstation", "pacs", "printer"];
        let crits = [
            Criticality::LifeSustaining,
            Criticality::NonClinical,
            Criticality::ClinicalSupport,
            Criticality::PatientCritical,
        ];
        let device = (0usize..4, 0u8..3, proptest::collection::vec((0u8..2, 0u16..4), 0..3));
        (
            proptest::collection::vec(device, 1..12),
            proptest::collection::vec((0u8..12, 0u8..12), 0..10),
            proptest::collection::btree_set(0u8..12, 1..3),
            // Rules: (from class, to class, port, deny?)
            proptest::collection::vec((0u8..4, 0u8..4, 0u16..4, any::<bool>()), 0..6),
        )
            .prop_map(move |(devs, obs, src, rules)| {
                let devices = devs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (c, seg, svcs))| BlastDevice {
                        mac: mac(i as u8),
                        ip: Some(IpAddr::from([10, 0, 0, i as u8])),
                        class: classes[c].to_string(),
                        criticality: crits[c],
                        segments: vec![format!("s/vlan {seg}")],
                        services: svcs
                            .into_iter()
                            .map(|(t, p)| Service {
                                transport: if t == 0 { Transport::Tcp } else { Transport::Udp },
                                port: 100 + p,
                            })
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect(),
                    })
                    .collect();
                (devices, obs, src, rules)
            })
    }

    fn policy_text(default: &str, rules: &[(u8, u8, u16, bool)], extra_deny: Option<(u8, u8)>) -> String {
        let classes = ["infusion_pump", "workstation", "pacs", "printer"];
        let mut t = format!("[policy]\nname = \"p\"\ndefault = \"{default}\"\n");
        for c in classes {
            t.push_str(&format!("[[group]]\nname = \"{c}\"\nmatch = 'class == \"{c}\"'\n"));
        }
        // The extra deny goes first: with first-match semantics it only removes allows.
        let mut all: Vec<(u8, u8, Option<u16>, bool)> =
            extra_deny.map(|(f, to)| (f, to, None, true)).into_iter().collect();
        all.extend(rules.iter().map(|(f, to, p, d)| (*f, *to, Some(100 + *p), *d)));
        for (i, (f, to, port, deny)) in all.iter().enumerate() {
            t.push_str(&format!(
                "[[rule]]\nname = \"r{i}\"\nfrom = [\"{}\"]\nto = [\"{}\"]\nprotocol = \"{}\"\n{}action = \"{}\"\n",
                classes[*f as usize],
                classes[*to as usize],
                if port.is_some() { "tcp" } else { "any" },
                port.map(|p| format!("ports = [{p}]\n")).unwrap_or_default(),
                if *deny { "deny" } else { "allow" }
            ));
        }
        t
    }

    proptest! {
        /// A stricter policy (the same with one more deny rule in front, or a deny default
        /// instead of allow) never reaches a device or service the looser one does not, no
        /// policy reaches at least as much as any policy, and the answer is deterministic.
        #[test]
        fn stricter_never_reaches_more((devices, obs, src, rules) in arb_case(), deny in (0u8..4, 0u8..4)) {
            let n = devices.len() as u8;
            let observed: Vec<(MacAddr, MacAddr)> = obs.iter().filter(|(a, b)| *a < n && *b < n).map(|(a, b)| (mac(*a), mac(*b))).collect();
            let sources: BTreeSet<MacAddr> = src.iter().filter(|s| **s < n).map(|s| mac(*s)).collect();
            let input = BlastInput { devices: &devices, observed: &observed, sources: &sources };
            let open = reach(&input, Regime::Open);
            let loose = compiled(&policy_text("allow", &rules, None), &devices);
            let strict = compiled(&policy_text("allow", &rules, Some(deny)), &devices);
            let strictest = compiled(&policy_text("deny", &rules, Some(deny)), &devices);
            let l = reach(&input, Regime::Policy(&loose));
            let s = reach(&input, Regime::Policy(&strict));
            let ss = reach(&input, Regime::Policy(&strictest));
            let services = |r: &Reach| -> BTreeSet<(MacAddr, String)> {
                r.reached.iter().flat_map(|x| x.services.iter().map(move |s| (x.mac, s.clone()))).collect()
            };
            for (looser, stricter) in [(&open, &l), (&l, &s), (&s, &ss)] {
                prop_assert!(stricter.macs().is_subset(&looser.macs()));
                prop_assert!(services(stricter).is_subset(&services(looser)));
                prop_assert!(stricter.score <= looser.score);
                let d = diff(looser, stricter);
                prop_assert!(d.newly_reached.is_empty());
                prop_assert!(d.score_change <= 0);
            }
            prop_assert_eq!(&reach(&input, Regime::Policy(&strict)), &s);
            // Input order does not matter.
            let mut rev = devices.clone();
            rev.reverse();
            let mut obs_rev = observed.clone();
            obs_rev.reverse();
            let input_rev = BlastInput { devices: &rev, observed: &obs_rev, sources: &sources };
            prop_assert_eq!(reach(&input_rev, Regime::Open), open);
        }
    }
}
