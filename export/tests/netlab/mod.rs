//! A small routed lab of network namespaces for proving exports on a real kernel: a router
//! namespace with one veth per segment (plus one toward an "outside" network in no segment)
//! and one host namespace per network. Every interface is created inside the lab's own
//! namespaces (the host's interfaces are never touched) and only 198.18.0.0/15 addresses are
//! used. Namespace names carry the pid and a counter, so runs side by side never collide;
//! everything is removed on drop, panics included.
//!
//! The probe drives real TCP connections and UDP datagrams between host namespaces through
//! the router and reports which flows arrived.

#![allow(dead_code)]

use socket2::{Domain, Protocol as SockProto, SockAddr, Socket, Type};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};
use wardline_export::{Flow, FlowProtocol};

/// Why the netns tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root (run the test as root)".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Some(format!("`ip netns` unavailable: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => return Some(format!("`ip` (iproute2) not runnable: {e}")),
    }
    None
}

pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("running {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One network behind the router: the router's interface and address on it, and the host
/// namespace's addresses.
pub struct Net {
    pub key: &'static str,
    pub router_if: &'static str,
    pub gateway: &'static str,
    pub prefix: u8,
    pub hosts: Vec<IpAddr>,
}

pub struct Lab {
    tag: String,
    created: Vec<String>,
    /// host address -> namespace holding it
    pub ns_of: BTreeMap<IpAddr, String>,
}

impl Lab {
    pub fn create(nets: &[Net]) -> Result<Lab, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = format!("wlx{}x{n}", std::process::id());
        // From here on drop removes whatever was created.
        let mut lab = Lab { tag, created: Vec::new(), ns_of: BTreeMap::new() };
        let router = lab.router();
        lab.add_ns(&router)?;
        run("ip", &["netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for net in nets {
            let ns = lab.ns_name(net.key);
            lab.add_ns(&ns)?;
            run(
                "ip",
                &["-n", &router, "link", "add", net.router_if, "type", "veth", "peer", "name", "eth0", "netns", &ns],
            )?;
            run(
                "ip",
                &["-n", &router, "addr", "add", &format!("{}/{}", net.gateway, net.prefix), "dev", net.router_if],
            )?;
            run("ip", &["-n", &router, "link", "set", net.router_if, "up"])?;
            for h in &net.hosts {
                run("ip", &["-n", &ns, "addr", "add", &format!("{h}/{}", net.prefix), "dev", "eth0"])?;
                lab.ns_of.insert(*h, ns.clone());
            }
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run("ip", &["-n", &ns, "route", "add", "default", "via", net.gateway])?;
            // Unprivileged ICMP echo sockets ("ping sockets") for the ICMP probes.
            run("ip", &["netns", "exec", &ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"])?;
        }
        Ok(lab)
    }

    fn add_ns(&mut self, name: &str) -> Result<(), String> {
        run("ip", &["netns", "add", name])?;
        self.created.push(name.to_string());
        Ok(())
    }

    pub fn router(&self) -> String {
        self.ns_name("r")
    }

    pub fn ns_name(&self, key: &str) -> String {
        format!("{}-{key}", self.tag)
    }

    /// Run a program inside the router namespace.
    pub fn in_router(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let router = self.router();
        let mut full = vec!["netns", "exec", router.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Feed `input` to `program` running in the router namespace.
    pub fn in_router_stdin(&self, program: &str, args: &[&str], input: &[u8]) -> Result<String, String> {
        use std::io::Write;
        use std::process::Stdio;
        let router = self.router();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &router, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {program}: {e}"))?;
        child.stdin.take().unwrap().write_all(input).map_err(|e| format!("writing to {program}: {e}"))?;
        let out = child.wait_with_output().map_err(|e| format!("waiting for {program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veths inside it; nothing lives in the host's.
        for ns in self.created.iter().rev() {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

/// Run `f` on a thread that has entered namespace `ns`; sockets it creates stay there.
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns on this thread only, with a namespace fd we hold open.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns {path}: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// Listening TCP and UDP sockets on every host address and port, created once per lab.
pub struct Listeners {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl Listeners {
    pub fn open(lab: &Lab, ports: &[u16]) -> Listeners {
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for (addr, ns) in &lab.ns_of {
            let (addr, ports) = (*addr, ports.to_vec());
            let (t, u) = in_namespace(ns, move || {
                let mut t = Vec::new();
                let mut u = Vec::new();
                for p in ports {
                    let l = TcpListener::bind((addr, p)).unwrap_or_else(|e| panic!("listen tcp {addr}:{p}: {e}"));
                    l.set_nonblocking(true).unwrap();
                    t.push(l);
                    let s = UdpSocket::bind((addr, p)).unwrap_or_else(|e| panic!("bind udp {addr}:{p}: {e}"));
                    s.set_nonblocking(true).unwrap();
                    u.push(s);
                }
                (t, u)
            });
            tcp.extend(t);
            udp.extend(u);
        }
        Listeners { tcp, udp }
    }

    /// Accept and close queued connections so the next probe finds empty backlogs.
    fn drain_tcp(&self) {
        for l in &self.tcp {
            while l.accept().is_ok() {}
        }
    }
}

/// How long a connection attempt may take before the flow counts as dropped. Far above a
/// veth round trip; a dropped SYN is never answered.
const PROBE_WAIT: Duration = Duration::from_millis(2500);

/// Send every flow once (TCP: a connection attempt; UDP: three copies of a datagram naming
/// the flow; ICMP: an echo request, which arrived if its reply came back) and return the
/// flows that arrived. An answer other than success or silence
/// (refused, unreachable) is a lab fault and panics with the flow.
pub fn probe(lab: &Lab, listeners: &Listeners, flows: &[Flow]) -> BTreeSet<Flow> {
    let mut reached = BTreeSet::new();
    // Client sockets per source namespace, created there.
    let mut by_ns: BTreeMap<String, Vec<(usize, Flow)>> = BTreeMap::new();
    for (i, f) in flows.iter().enumerate() {
        let ns = lab.ns_of.get(&f.src).unwrap_or_else(|| panic!("no namespace holds {}", f.src)).clone();
        by_ns.entry(ns).or_default().push((i, *f));
    }
    let mut pending: Vec<(Flow, Socket)> = Vec::new();
    for (ns, list) in by_ns {
        let made = in_namespace(&ns, move || {
            let mut tcp = Vec::new();
            for (i, f) in list {
                let dst = SocketAddr::new(f.dst, f.dst_port);
                match f.protocol {
                    FlowProtocol::Tcp => {
                        let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(SockProto::TCP)).unwrap();
                        s.bind(&SockAddr::from(SocketAddr::new(f.src, 0))).unwrap();
                        s.set_nonblocking(true).unwrap();
                        match s.connect(&SockAddr::from(dst)) {
                            Ok(()) => {}
                            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                            Err(e) => panic!("connect {f:?}: {e}"),
                        }
                        tcp.push((f, s));
                    }
                    FlowProtocol::Udp => {
                        let s = UdpSocket::bind((f.src, 0)).unwrap();
                        for _ in 0..3 {
                            s.send_to(&(i as u32).to_be_bytes(), dst).unwrap_or_else(|e| panic!("send {f:?}: {e}"));
                        }
                    }
                    FlowProtocol::Icmp => {
                        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(SockProto::ICMPV4)).unwrap();
                        // A fresh echo identifier per probe: an identifier reused from an
                        // earlier probe could match a conntrack entry that probe left
                        // behind and pass as an established flow.
                        s.bind(&SockAddr::from(SocketAddr::new(f.src, next_echo_id()))).unwrap();
                        s.set_nonblocking(true).unwrap();
                        // Echo request; the kernel fills in identifier and checksum.
                        let mut msg = [8u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
                        msg[8..].copy_from_slice(&(i as u32).to_be_bytes());
                        s.send_to(&msg, &SockAddr::from(SocketAddr::new(f.dst, 0)))
                            .unwrap_or_else(|e| panic!("send {f:?}: {e}"));
                        tcp.push((f, s));
                    }
                }
            }
            tcp
        });
        pending.extend(made);
    }
    let deadline = Instant::now() + PROBE_WAIT;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Connections become writable when established; ping sockets readable on a reply.
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|(f, s)| {
                let events = if f.protocol == FlowProtocol::Icmp { libc::POLLIN } else { libc::POLLOUT };
                libc::pollfd { fd: s.as_raw_fd(), events, revents: 0 }
            })
            .collect();
        // SAFETY: fds points at fds.len() initialised pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, left.as_millis() as i32) };
        assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
        let mut still = Vec::new();
        for ((flow, s), fd) in pending.into_iter().zip(&fds) {
            if fd.revents == 0 {
                still.push((flow, s));
                continue;
            }
            if flow.protocol == FlowProtocol::Icmp {
                // Only the echo reply carrying this flow's number counts.
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
                match s.recv(&mut buf) {
                    Ok(n) => {
                        // SAFETY: recv initialised the first n bytes.
                        let b: Vec<u8> = buf[..n].iter().map(|x| unsafe { x.assume_init() }).collect();
                        let want = (flows.iter().position(|f| *f == flow).unwrap() as u32).to_be_bytes();
                        assert!(
                            n == 12 && b[0] == 0 && b[8..12] == want,
                            "flow {flow:?}: unexpected ICMP answer {b:?} (lab fault)"
                        );
                        reached.insert(flow);
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        still.push((flow, s));
                        continue;
                    }
                    Err(e) => panic!("flow {flow:?} was answered with an error, not dropped: {e} (lab fault)"),
                }
            }
            match s.take_error().unwrap() {
                None => {
                    reached.insert(flow);
                }
                Some(e) => panic!("flow {flow:?} was answered with an error, not dropped: {e} (lab fault)"),
            }
        }
        pending = still;
    }
    for u in &listeners.udp {
        let mut buf = [0u8; 16];
        while let Ok((n, from)) = u.recv_from(&mut buf) {
            if n == 4 {
                let f = flows[u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize];
                assert_eq!(from.ip(), f.src, "datagram of {f:?} arrived from another address");
                reached.insert(f);
            }
        }
    }
    listeners.drain_tcp();
    reached
}

fn next_echo_id() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    assert!(n < 60_000, "echo identifiers exhausted");
    (1024 + n) as u16
}

/// Every tcp and udp flow between addresses in different namespaces, to each port, and an
/// ICMP echo between each such pair.
pub fn flow_matrix(lab: &Lab, ports: &[u16]) -> Vec<Flow> {
    let mut flows = Vec::new();
    for (src, sns) in &lab.ns_of {
        for (dst, dns) in &lab.ns_of {
            if sns == dns {
                continue;
            }
            for &port in ports {
                for protocol in [FlowProtocol::Tcp, FlowProtocol::Udp] {
                    flows.push(Flow { src: *src, dst: *dst, protocol, dst_port: port });
                }
            }
            flows.push(Flow { src: *src, dst: *dst, protocol: FlowProtocol::Icmp, dst_port: 0 });
        }
    }
    flows
}

pub fn describe(flows: &BTreeSet<Flow>) -> String {
    flows.iter().map(|f| format!("  {:?} {} -> {}:{}\n", f.protocol, f.src, f.dst, f.dst_port)).collect()
}

/// Flows the kernel dropped although `policy` allows them, and flows it passed although
/// `policy` blocks them.
pub fn disagreements(
    policy: &wardline_export::ResolvedPolicy,
    flows: &[Flow],
    reached: &BTreeSet<Flow>,
) -> (BTreeSet<Flow>, BTreeSet<Flow>) {
    let deny = |f: &Flow| policy.verdict(f).action == wardline_export::Action::Deny;
    let wrongly_dropped = flows.iter().copied().filter(|f| !reached.contains(f) && !deny(f)).collect();
    let wrongly_passed = flows.iter().copied().filter(|f| reached.contains(f) && deny(f)).collect();
    (wrongly_dropped, wrongly_passed)
}

/// Probe with no ruleset loaded: the lab itself must drop nothing.
pub fn assert_lab_forwards_everything(lab: &Lab, listeners: &Listeners, flows: &[Flow]) {
    let open = probe(lab, listeners, flows);
    let lost: BTreeSet<Flow> = flows.iter().copied().filter(|f| !open.contains(f)).collect();
    assert!(lost.is_empty(), "flows lost with no ruleset loaded (lab fault):\n{}", describe(&lost));
}

/// Assert the kernel dropped exactly what `policy` blocks.
pub fn assert_kernel_matches_policy(
    policy: &wardline_export::ResolvedPolicy,
    flows: &[Flow],
    reached: &BTreeSet<Flow>,
) {
    let blocked = flows.iter().filter(|f| policy.verdict(f).action == wardline_export::Action::Deny).count();
    assert!(blocked > 0 && blocked < flows.len(), "the fixture must both allow and block");
    let (wrongly_dropped, wrongly_passed) = disagreements(policy, flows, reached);
    assert!(
        wrongly_dropped.is_empty() && wrongly_passed.is_empty(),
        "kernel and policy disagree.\ndropped but allowed by the policy:\n{}passed but blocked by the policy:\n{}",
        describe(&wrongly_dropped),
        describe(&wrongly_passed)
    );
    eprintln!(
        "{} flows probed: {} dropped, {} passed, as the policy says",
        flows.len(),
        flows.len() - reached.len(),
        reached.len()
    );
}

/// The fixture policy shared by the netns tests and the golden tests.
pub fn clinic_policy() -> wardline_export::ResolvedPolicy {
    serde_json::from_str(include_str!("../fixtures/clinic.json")).expect("fixture parses")
}

/// Every port a rule of the fixture names, plus ports no rule allows.
pub const PORTS: &[u16] = &[22, 104, 123, 443, 2575, 5000, 8005, 11112];

/// The fixture's segments as lab networks (router interfaces named as in the policy), and
/// an outside network (198.19.0.0/24) that lies in no segment.
pub fn clinic_nets() -> Vec<Net> {
    let a = |s: &str| s.parse().unwrap();
    vec![
        Net {
            key: "clin",
            router_if: "r-clin",
            gateway: "198.18.1.1",
            prefix: 24,
            hosts: vec![a("198.18.1.10"), a("198.18.1.20")],
        },
        Net {
            key: "it",
            router_if: "r-it",
            gateway: "198.18.2.1",
            prefix: 24,
            hosts: vec![a("198.18.2.10"), a("198.18.2.20")],
        },
        Net {
            key: "srv",
            router_if: "r-srv",
            gateway: "198.18.3.1",
            prefix: 24,
            hosts: vec![a("198.18.3.10"), a("198.18.3.20")],
        },
        Net { key: "out", router_if: "r-out", gateway: "198.19.0.1", prefix: 24, hosts: vec![a("198.19.0.10")] },
    ]
}

/// A small deterministic generator (xorshift64*), so a failing seed replays exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A random policy over the lab's hosts and segments: groups with awkward names and
/// overlapping membership, random defaults, rules with every destination kind, protocol
/// and port shape the probe can observe.
pub fn random_policy(seed: u64) -> wardline_export::ResolvedPolicy {
    use wardline_export::*;
    let mut rng = Rng::new(seed);
    let hosts: Vec<std::net::IpAddr> = clinic_nets().iter().flat_map(|n| n.hosts.clone()).collect();
    let action = |rng: &mut Rng| if rng.chance(50) { Action::Allow } else { Action::Deny };
    let names = ["ICU pumps", "monitors/ward 3", "imaging-modalities", "Verwaltung PCs", "jump hosts (vendor)"];
    let mut groups = Vec::new();
    for (gi, name) in names.iter().enumerate() {
        let mut members = Vec::new();
        for (hi, h) in hosts.iter().enumerate() {
            if rng.chance(30) {
                members.push(Member {
                    mac: format!("02:00:00:00:{gi:02x}:{hi:02x}").parse().unwrap(),
                    addresses: vec![*h],
                    vlan: None,
                    site: None,
                });
            }
        }
        groups.push(Group { name: name.to_string(), description: None, members });
    }
    let segment = |name: &str, vlan, interface: &str, net: &str, rng: &mut Rng| Segment {
        name: name.into(),
        vlan,
        interface: interface.into(),
        subnets: vec![net.parse().unwrap()],
        default_action: action(rng),
    };
    let segments = vec![
        segment("clinical", 10, "r-clin", "198.18.1.0/24", &mut rng),
        segment("it", 20, "r-it", "198.18.2.0/24", &mut rng),
        segment("servers", 30, "r-srv", "198.18.3.0/24", &mut rng),
    ];
    let nets = ["198.18.3.0/24", "198.19.0.0/24", "198.18.1.20/32", "198.18.0.0/15"];
    let mut rules = Vec::new();
    for i in 0..8 {
        let destination = match rng.below(3) {
            0 => Destination::Cidr(nets[rng.below(nets.len())].parse().unwrap()),
            _ => Destination::Group(names[rng.below(names.len())].to_string()),
        };
        let protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp, Protocol::Any][rng.below(4)];
        let mut ports = Vec::new();
        if matches!(protocol, Protocol::Tcp | Protocol::Udp) {
            for _ in 0..rng.below(4) {
                let p = PORTS[rng.below(PORTS.len())];
                ports.push(if rng.chance(30) {
                    PortRange { start: p.saturating_sub(5).max(1), end: p + 5 }
                } else {
                    PortRange::single(p)
                });
            }
        }
        rules.push(Rule {
            id: format!("rand{i}"),
            source: names[rng.below(names.len())].to_string(),
            destination,
            protocol,
            ports,
            application: Some(format!("app \"{i}\" ünïcode")),
        });
    }
    ResolvedPolicy {
        name: format!("random-{seed}"),
        version: seed,
        default_action: action(&mut rng),
        groups,
        segments,
        rules,
    }
}
