//! Policy engine benchmarks on a synthetic 20,000-device hospital:
//! - `evaluate`: compiled verdicts per second (flows given by device id, and by address);
//! - `compile`: group membership + bitsets + port index for the whole hospital;
//! - `recommend`: a least-privilege proposal from 200,000 observed flow aggregates.
//!
//! `cargo bench -p wardline-intel --bench policy`; numbers go to docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use wardline_common::MacAddr;
use wardline_intel::policy::{
    parse_policy, recommend, safety_check, CompiledPolicy, Flow, FlowEnd, ObservedEnd, ObservedFlow, Policy,
    PolicyDevice,
};
use wardline_intel::{FlowTag, KnowledgeBase, Transport};

const DEVICES: u32 = 20_000;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Class mix of a large hospital (share per 1000 devices) and the profile when one applies.
const MIX: &[(&str, Option<&str>, u32)] = &[
    ("infusion_pump", Some("bd_alaris_pcu_8015"), 150),
    ("pump_server", Some("bd_alaris_systems_manager"), 1),
    ("patient_monitor", Some("ge_carescape_monitor"), 100),
    ("central_station", Some("ge_carescape_central"), 5),
    ("ventilator", None, 20),
    ("ct", None, 2),
    ("pacs", None, 1),
    ("modality_worklist", None, 1),
    ("hl7_interface_engine", None, 1),
    ("lab_analyzer", None, 10),
    ("workstation", None, 400),
    ("voip_phone", None, 150),
    ("printer", None, 50),
    ("camera", None, 40),
    ("server", None, 29),
    ("bms_hvac", None, 40),
];

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

fn hospital(kb: &KnowledgeBase) -> Vec<PolicyDevice> {
    let total: u32 = MIX.iter().map(|m| m.2).sum();
    let mut rng = Rng(0x5eed);
    (0..DEVICES)
        .map(|n| {
            let mut pick = (n * 7919) % total;
            let (class, profile, _) =
                MIX.iter().find(|m| if pick < m.2 { true } else { (pick -= m.2, false).1 }).expect("mix");
            let c = kb.class(class).expect("class");
            let mut d = PolicyDevice::new(mac(n), class, c.category, c.criticality);
            d.profile = profile.map(str::to_string);
            d.ips = vec![ip(n + 1)];
            d.vlans = vec![(n % 40) as u16 + 10];
            d.site = Some(["north", "south", "east"][(n % 3) as usize].to_string());
            d.vulns = (rng.below(10) == 0) as u32 * 2;
            d.kev = rng.below(50) == 0;
            d.risk = rng.below(100) as f64;
            d
        })
        .collect()
}

fn observed(devices: &[PolicyDevice], n: usize) -> Vec<ObservedFlow> {
    let mut rng = Rng(0xf1_0e5);
    let by_class = |c: &str| devices.iter().filter(|d| d.class == c).map(|d| d.mac).collect::<Vec<_>>();
    let servers = by_class("pump_server");
    let dns = by_class("server");
    (0..n)
        .map(|i| {
            let d = &devices[rng.below(devices.len() as u64) as usize];
            let src = ObservedEnd::Device(d.mac);
            let (dst, t, port, tag, comm) = match (d.class.as_str(), i % 4) {
                ("infusion_pump", 0 | 1) => (
                    ObservedEnd::Device(servers[i % servers.len()]),
                    Transport::Tcp,
                    3613,
                    FlowTag::Required,
                    Some("bd_alaris_pcu_8015#comm1"),
                ),
                (_, 0) => (
                    ObservedEnd::Device(dns[i % dns.len()]),
                    Transport::Udp,
                    53,
                    FlowTag::Acceptable,
                    Some("global.dns"),
                ),
                (_, 1) => (
                    ObservedEnd::Address { ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, (i % 250) as u8)), domain: None },
                    Transport::Tcp,
                    443,
                    FlowTag::Risky,
                    Some("global.web_external"),
                ),
                (_, 2) => (
                    ObservedEnd::Device(devices[rng.below(devices.len() as u64) as usize].mac),
                    Transport::Tcp,
                    23,
                    FlowTag::Risky,
                    Some("global.telnet"),
                ),
                _ => (
                    ObservedEnd::Device(devices[rng.below(devices.len() as u64) as usize].mac),
                    Transport::Tcp,
                    40000 + (i % 100) as u16,
                    FlowTag::Unknown,
                    None,
                ),
            };
            ObservedFlow {
                src,
                dst,
                transport: t,
                port,
                app: None,
                count: 1 + rng.below(1000),
                first_seen: 1_700_000_000 + rng.below(86_400),
                last_seen: 1_700_100_000 + rng.below(86_400),
                context: tag,
                comm: comm.map(str::to_string),
                reason: "synthetic".into(),
            }
        })
        .collect()
}

/// The recommended policy plus a band of hand-written rules with networks and port ranges,
/// so the index holds both kinds.
fn policy(kb: &KnowledgeBase, devices: &[PolicyDevice]) -> Policy {
    let rec = recommend(kb, devices, &observed(devices, 20_000), "bench");
    let mut text = rec.policy.to_canonical();
    text.push_str("\n[[group]]\nname = \"vulnerable_pumps\"\nmatch = 'class == \"infusion_pump\" and vulnerable'\n");
    text.push_str("\n[[group]]\nname = \"north_medical\"\nmatch = 'site == \"north\" and category == \"medical\"'\n");
    for i in 0..100u32 {
        text.push_str(&format!(
            "\n[[rule]]\nname = \"extra {i}\"\nfrom = [\"north_medical\", \"10.{}.0.0/16\"]\nto = [\"10.{}.0.0/24\"]\nprotocol = \"{}\"\nports = [\"{}-{}\"]\naction = \"{}\"\n",
            i % 200,
            (i * 7) % 200,
            ["tcp", "udp"][(i % 2) as usize],
            1000 + i * 50,
            1000 + i * 50 + 20,
            ["allow", "deny", "monitor"][(i % 3) as usize],
        ));
    }
    text.push_str(
        "\n[[rule]]\nname = \"quarantine\"\nfrom = \"vulnerable_pumps\"\nto = \"external\"\naction = \"deny\"\n",
    );
    parse_policy("bench", &text).unwrap_or_else(|e| panic!("{e}"))
}

fn flows(devices: &[PolicyDevice], n: usize) -> Vec<(u32, u32, u8, u16)> {
    let mut rng = Rng(0xbeef);
    let ports = [3613u16, 53, 443, 23, 104, 2575, 1010, 8080, 40000, 1500];
    (0..n)
        .map(|_| {
            let s = rng.below(devices.len() as u64) as u32;
            let d = rng.below(devices.len() as u64) as u32;
            let proto = if rng.below(4) == 0 { 17 } else { 6 };
            (s, d, proto, ports[rng.below(ports.len() as u64) as usize])
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let kb = KnowledgeBase::builtin().expect("kb");
    let devices = hospital(&kb);
    let p = policy(&kb, &devices);
    let compiled = CompiledPolicy::compile(&p, &devices);
    const N: usize = 1_000_000;
    let fs = flows(&devices, N);
    println!("policy: {} groups, {} rules, {} devices", p.groups.len(), p.rules.len(), devices.len());

    let mut g = c.benchmark_group("policy");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("evaluate_by_device_1M", |b| {
        b.iter(|| {
            let mut allowed = 0u32;
            for &(s, d, proto, port) in &fs {
                let f = Flow {
                    src: FlowEnd { device: Some(wardline_intel::policy::DeviceId(s)), ip: Some(ip(s + 1)) },
                    dst: FlowEnd { device: Some(wardline_intel::policy::DeviceId(d)), ip: Some(ip(d + 1)) },
                    ip_proto: proto,
                    dst_port: port,
                    app: None,
                    dst_domain: None,
                };
                allowed += (compiled.evaluate(&f).action == wardline_intel::policy::Action::Allow) as u32;
            }
            black_box(allowed)
        })
    });
    g.bench_function("evaluate_by_address_1M", |b| {
        b.iter(|| {
            let mut allowed = 0u32;
            for &(s, d, proto, port) in &fs {
                let f = Flow {
                    src: FlowEnd { device: None, ip: Some(ip(s + 1)) },
                    dst: FlowEnd { device: None, ip: Some(ip(d + 1)) },
                    ip_proto: proto,
                    dst_port: port,
                    app: None,
                    dst_domain: None,
                };
                allowed += (compiled.evaluate(&f).action == wardline_intel::policy::Action::Allow) as u32;
            }
            black_box(allowed)
        })
    });
    g.bench_function("evaluate_counted_1M", |b| {
        b.iter_batched_ref(
            || compiled.new_counts(),
            |counts| {
                for &(s, d, proto, port) in &fs {
                    let f = Flow {
                        src: FlowEnd { device: Some(wardline_intel::policy::DeviceId(s)), ip: Some(ip(s + 1)) },
                        dst: FlowEnd { device: Some(wardline_intel::policy::DeviceId(d)), ip: Some(ip(d + 1)) },
                        ip_proto: proto,
                        dst_port: port,
                        app: None,
                        dst_domain: None,
                    };
                    compiled.evaluate_counted(&f, counts);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("policy_hospital_20k");
    g.sample_size(10);
    g.bench_function("compile", |b| b.iter(|| black_box(CompiledPolicy::compile(&p, &devices))));
    g.bench_function("safety_check", |b| b.iter(|| black_box(safety_check(&kb, &p, &devices, &compiled))));
    let obs = observed(&devices, 200_000);
    g.bench_function("recommend_200k_aggregates", |b| b.iter(|| black_box(recommend(&kb, &devices, &obs, "bench"))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
