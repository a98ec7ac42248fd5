//! One chaos run: a cluster, sensors streaming generated captures through fault proxies, a
//! monitor sampling every node, one nemesis injected and healed, and the checker's verdict.
//!
//! Seeds: the run's seed picks the captures, the fault parameters and (for `random`) the
//! nemeses; it is printed with every result line and `WARDLINE_CHAOS_SEED` replays it.

use crate::checker::{check, LeaderSample, NodeReport, Verdict};
use crate::clickhouse::ClickHouseServer;
use crate::disk::SmallDisk;
use crate::expect::{tsv_flows, CLICKHOUSE_FLOWS_SQL};
use crate::fault_proxy::{FaultProxy, Faults, Transport};
use crate::nemesis::Nemesis;
use crate::netns::{in_namespace, NetLab};
use crate::procs::{Aggregator, Fleet, Sensor, SensorSpec};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Replays a run: `WARDLINE_CHAOS_SEED=N`.
pub const SEED_ENV: &str = "WARDLINE_CHAOS_SEED";

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub nemesis: Nemesis,
    pub seed: u64,
    /// Cluster size: node 1 initialises, the others join (`wardline-aggregator cluster join`).
    pub nodes: usize,
    /// Sensors, each shipping its own generated ward capture from its own site.
    pub sensors: usize,
    /// How long the fault is held.
    pub fault_for: Duration,
    /// Flows per batch: small batches make many of them, so the fault lands mid-stream.
    pub max_events: usize,
    /// `wardline-sim --scale` of each capture.
    pub scale: u32,
    pub clickhouse: bool,
}

impl RunSpec {
    /// The CI-sized run of one nemesis: a few seconds of fault.
    pub fn short(nemesis: Nemesis, seed: u64) -> RunSpec {
        RunSpec {
            nemesis,
            seed,
            nodes: 3,
            sensors: 2,
            fault_for: Duration::from_secs(3),
            max_events: 3,
            scale: 1,
            clickhouse: true,
        }
    }
}

/// The seed from `WARDLINE_CHAOS_SEED`, else a fresh random one.
pub fn seed_from_env() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("{SEED_ENV}={s:?} is not a whole number")),
        Err(_) => rand::random::<u32>() as u64,
    }
}

/// Samples every node's Raft view and the sensors' applied watermarks during a run.
struct Monitor {
    stop: Arc<AtomicBool>,
    data: Arc<Mutex<MonitorData>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct MonitorData {
    samples: Vec<LeaderSample>,
    /// (when, highest total of applied watermarks any node reported).
    progress: Vec<(Instant, u64)>,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(150);

impl Monitor {
    fn start(http: reqwest::blocking::Client, apis: Vec<(u64, String)>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let data = Arc::new(Mutex::new(MonitorData::default()));
        let (s, d) = (stop.clone(), data.clone());
        let thread = std::thread::spawn(move || {
            let get = |url: String| -> Option<Value> {
                http.get(url).timeout(Duration::from_millis(700)).send().ok()?.json().ok()
            };
            while !s.load(Ordering::Relaxed) {
                let mut best = 0;
                for (id, api) in &apis {
                    if let Some(c) = get(format!("{api}/api/v1/cluster")) {
                        if let (Some(term), Some(leader)) = (c["current_term"].as_u64(), c["current_leader"].as_u64()) {
                            // A node that calls itself leader, and a follower naming one, both
                            // claim "leader of this term"; Raft allows one per term.
                            d.lock().unwrap().samples.push(LeaderSample { node_id: *id, term, leader });
                        }
                    }
                    if let Some(v) = get(format!("{api}/api/v1/sensors")) {
                        let total: u64 = v["sensors"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(_, r)| r["last_seq"].as_u64().unwrap_or(0))
                            .sum();
                        best = best.max(total);
                    }
                }
                d.lock().unwrap().progress.push((Instant::now(), best));
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Monitor { stop, data, thread: Some(thread) }
    }

    fn applied_now(&self) -> u64 {
        self.data.lock().unwrap().progress.iter().map(|p| p.1).max().unwrap_or(0)
    }

    /// Time from `healed_at` to the first sample with more applied than at `healed_at`.
    fn recovery_after(&self, healed_at: Instant) -> Option<Duration> {
        let d = self.data.lock().unwrap();
        let before = d.progress.iter().filter(|p| p.0 <= healed_at).map(|p| p.1).max().unwrap_or(0);
        d.progress.iter().find(|p| p.0 > healed_at && p.1 > before).map(|p| p.0 - healed_at)
    }

    fn finish(mut self) -> Vec<LeaderSample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut self.data.lock().unwrap().samples)
    }
}

/// A fault in force, remembered so it can be healed.
enum Injected {
    Killed(usize),
    Paused(u32),
    Links,
    ClickHouseDown,
    DiskFull,
    ClockJumped,
    /// Nodes whose namespace link is down.
    Isolated(Vec<usize>),
    /// A membership change: nothing to heal.
    Replaced,
    Skipped(String),
}

/// Everything a run owns; dropped (processes killed, mounts removed) at the end.
struct Rig {
    fleet: Fleet,
    ch: Option<ClickHouseServer>,
    nodes: Vec<Aggregator>,
    /// UDP proxies in front of the nodes' QUIC listeners, one per (sensor, node).
    sensor_links: Vec<FaultProxy>,
    /// TCP proxies in front of each node's Raft listener (peers reach a node through its
    /// proxy: the address it advertises), for flaky Raft links.
    raft_links: Vec<FaultProxy>,
    /// Proxies that only carry traffic into and out of namespaces.
    #[allow(dead_code)]
    plumbing: Vec<FaultProxy>,
    disk: Option<SmallDisk>,
    clock: Option<FakeClock>,
    /// Dropped after the nodes (fields drop in order), so no node outlives its namespace.
    lab: Option<NetLab>,
    rng: ChaCha8Rng,
}

/// libfaketime preloaded into node 1, its offset read from a file (re-read every second).
struct FakeClock {
    file: std::path::PathBuf,
    lib: std::path::PathBuf,
}

/// Where Debian's libfaketime package puts the multi-threaded library.
const FAKETIME_LIBS: [&str; 2] =
    ["/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1"];

impl FakeClock {
    fn new(dir: &std::path::Path) -> Option<FakeClock> {
        let lib = FAKETIME_LIBS.iter().map(std::path::PathBuf::from).find(|p| p.exists())?;
        let file = dir.join("faketime-offset");
        std::fs::write(&file, "+0\n").ok()?;
        Some(FakeClock { file, lib })
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), self.lib.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE".into(), self.file.display().to_string()),
            ("FAKETIME_CACHE_DURATION".into(), "1".into()),
            // Only the wall clock steps (as an NTP step or a bad RTC does); a monotonic clock
            // never goes backwards on a real machine, and faking that breaks every timer.
            ("DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }

    /// Offset the node's wall clock by `secs` from real time.
    fn set(&self, secs: i64) -> Result<()> {
        std::fs::write(&self.file, format!("{secs:+}\n")).context("writing the faketime offset")
    }
}

impl Rig {
    /// The running node that leads; right after a fault (e.g. in a random combination the
    /// leader was just killed) it waits up to 10 s for an election, then falls back to the
    /// first running node.
    fn leader_index(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if n.pid().is_none() {
                    continue;
                }
                if let Ok(c) = n.get("/api/v1/cluster") {
                    if c["state"] == "Leader" {
                        return i;
                    }
                }
            }
            if Instant::now() >= deadline {
                return self.nodes.iter().position(|n| n.pid().is_some()).unwrap_or(0);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn inject(&mut self, nemesis: Nemesis) -> Result<Vec<Injected>> {
        Ok(match nemesis {
            Nemesis::KillLeader => {
                let i = self.leader_index();
                eprintln!("chaos: killing leader node {}", self.nodes[i].node_id);
                self.nodes[i].kill9();
                vec![Injected::Killed(i)]
            }
            Nemesis::KillFollower if self.nodes.len() > 1 => {
                let leader = self.leader_index();
                let i = (leader + 1 + self.rng.gen_range(0..self.nodes.len() - 1)) % self.nodes.len();
                eprintln!("chaos: killing follower node {}", self.nodes[i].node_id);
                self.nodes[i].kill9();
                vec![Injected::Killed(i)]
            }
            Nemesis::MembershipChange if self.nodes.len() >= 3 => {
                // Replace a follower by a fresh node while the sensors stream.
                let leader = self.leader_index();
                let old = (leader + 1) % self.nodes.len();
                let old_id = self.nodes[old].node_id;
                let new_id = self.nodes.iter().map(|n| n.node_id).max().unwrap_or(0) + 1;
                let mut node =
                    Aggregator::prepare(&self.fleet, new_id, self.ch.as_ref().map(|c| c.http_url.clone()), vec![])?;
                let proxy = FaultProxy::start(
                    Transport::Tcp,
                    "127.0.0.1:0".parse()?,
                    format!("127.0.0.1:{}", node.raft_port).parse()?,
                    self.rng.gen(),
                )?;
                node.extra_args = vec!["--advertise-raft".into(), proxy.listen.to_string()];
                node.joiner = true;
                node.launch()?;
                eprintln!("chaos: replacing node {old_id} by node {new_id}");
                crate::procs::run_ok(
                    std::process::Command::new(crate::procs::bin("wardline-aggregator"))
                        .args(["cluster", "replace", "--api", &self.nodes[leader].api()])
                        .env("WARDLINE_CERT_DIR", &self.nodes[leader].operator_dir)
                        .args(["--old", &old_id.to_string(), "--new", &new_id.to_string()])
                        .args(["--raft-addr", &proxy.listen.to_string()])
                        .args(["--api-addr", &format!("127.0.0.1:{}", node.api_port)])
                        .args(["--ingest-addr", &node.quic_addr()]),
                )
                .with_context(|| format!("replacing node {old_id} by node {new_id}"))?;
                // The removed node leaves the run: it is no longer checked.
                let mut gone = self.nodes.remove(old);
                gone.kill9();
                self.nodes.push(node);
                self.raft_links.push(proxy);
                vec![Injected::Replaced]
            }
            Nemesis::PartitionLeader if self.lab.is_some() => {
                let i = self.leader_index();
                eprintln!("chaos: partitioning leader node {} from the majority", self.nodes[i].node_id);
                self.lab.as_ref().expect("lab").isolate(self.nodes[i].node_id as usize)?;
                vec![Injected::Isolated(vec![self.nodes[i].node_id as usize])]
            }
            Nemesis::IsolateMinority if self.lab.is_some() => {
                let mut ids: Vec<usize> = self.nodes.iter().map(|n| n.node_id as usize).collect();
                ids.shuffle(&mut self.rng);
                ids.truncate((self.nodes.len() - 1) / 2);
                eprintln!("chaos: isolating minority nodes {ids:?}");
                for &id in &ids {
                    self.lab.as_ref().expect("lab").isolate(id)?;
                }
                vec![Injected::Isolated(ids)]
            }
            Nemesis::PauseLeader => {
                let i = self.leader_index();
                let pid = self.nodes[i].pid().context("leader not running")?;
                signal(pid, libc::SIGSTOP)?;
                vec![Injected::Paused(pid)]
            }
            Nemesis::FlakyLinks => {
                let f = Faults {
                    loss: self.rng.gen_range(0.05..=0.30),
                    delay: Duration::from_millis(self.rng.gen_range(2..=30)),
                    jitter: Duration::from_millis(self.rng.gen_range(0..=20)),
                    duplicate: self.rng.gen_range(0.0..=0.2),
                    reorder: self.rng.gen_range(0.0..=0.2),
                    partitioned: false,
                };
                eprintln!("chaos: flaky links {f:?}");
                self.sensor_links.iter().for_each(|p| p.handle().set(f.clone()));
                // Raft links get the same delays and loss (as TCP stalls); duplicates and
                // reordering do not exist inside a TCP stream.
                let tcp = Faults { duplicate: 0.0, reorder: 0.0, ..f.clone() };
                self.raft_links.iter().for_each(|p| p.handle().set(tcp.clone()));
                vec![Injected::Links]
            }
            Nemesis::PartitionSensors => {
                self.sensor_links.iter().for_each(|p| p.handle().partition());
                vec![Injected::Links]
            }
            Nemesis::ClickHouseRestart => match self.ch.as_mut() {
                Some(ch) => {
                    ch.stop_kill9();
                    vec![Injected::ClickHouseDown]
                }
                None => vec![Injected::Skipped("run has no ClickHouse".into())],
            },
            Nemesis::FullDisk => match self.disk.as_mut() {
                Some(d) => {
                    let filled = d.fill()?;
                    eprintln!("chaos: filled node 1's data folder with {filled} bytes");
                    vec![Injected::DiskFull]
                }
                None => vec![Injected::Skipped("no small disk could be mounted (needs root and tmpfs)".into())],
            },
            Nemesis::ClockJump => match self.clock.as_ref() {
                Some(c) => {
                    // Forward or back by 1 to 15 minutes.
                    let secs = self.rng.gen_range(60..=900) * if self.rng.gen() { 1 } else { -1 };
                    eprintln!("chaos: node 1's wall clock jumps {secs:+} s");
                    c.set(secs)?;
                    vec![Injected::ClockJumped]
                }
                None => vec![Injected::Skipped("libfaketime not installed (apt-get install faketime)".into())],
            },
            Nemesis::Random => {
                let (a, b) = Nemesis::pick_two(&mut self.rng, self.nodes.len());
                eprintln!("chaos: random combination {a} + {b}");
                let mut all = self.inject(a)?;
                all.extend(self.inject(b)?);
                all
            }
            n if n.min_nodes() > self.nodes.len() => {
                vec![Injected::Skipped(format!("needs {} nodes, the run has {}", n.min_nodes(), self.nodes.len()))]
            }
            n => vec![Injected::Skipped(format!("{n} is not wired yet (needs the cluster lifecycle CLI)"))],
        })
    }

    /// Heal every fault; returns the nodes that had to be restarted, and why.
    fn heal(&mut self, injected: Vec<Injected>) -> Result<Vec<String>> {
        for i in injected {
            match i {
                Injected::Killed(n) => self.nodes[n].start_again()?,
                Injected::Paused(pid) => signal(pid, libc::SIGCONT)?,
                Injected::Links => self.sensor_links.iter().chain(&self.raft_links).for_each(|p| p.handle().heal()),
                Injected::ClickHouseDown => self.ch.as_mut().context("ClickHouse")?.restart()?,
                Injected::DiskFull => self.disk.as_mut().context("disk")?.free()?,
                // And back: a backward jump is the harder half.
                Injected::ClockJumped => self.clock.as_ref().context("clock")?.set(0)?,
                Injected::Isolated(ids) => {
                    for id in ids {
                        self.lab.as_ref().context("lab")?.heal(id)?;
                    }
                }
                Injected::Skipped(_) | Injected::Replaced => {}
            }
        }
        // A node that died of the fault, or whose Raft core stopped for good (a storage
        // error stops it while the process stays up), is restarted as a supervisor would;
        // the run then checks it caught up, and the result line names it.
        let mut restarted = Vec::new();
        for n in self.nodes.iter_mut() {
            let raft_stopped = n.get("/api/v1/cluster").map(|c| c["state"] == "Shutdown").unwrap_or(false);
            if n.exited() || raft_stopped {
                let why = if raft_stopped { "its Raft core stopped" } else { "it exited" };
                eprintln!("chaos: node {} did not survive the fault ({why}); restarting it", n.node_id);
                n.kill9();
                n.start_again()?;
                restarted.push(format!("node {} ({why})", n.node_id));
            }
        }
        Ok(restarted)
    }
}

fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    // SAFETY: kill(2) with a pid we started and still own.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        bail!("cannot send signal {sig} to process {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Batches a finished sensor spooled in total (its `capture finished batches=N` log line).
fn spooled_batches(log: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("capture finished"))?;
    let rest = &line[line.find("batches=")? + "batches=".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The outcome of a run: the checker's verdict, its printed line, and skipped reasons.
pub struct Outcome {
    pub verdict: Verdict,
    /// Nodes restarted after the fault because they did not survive it, and why.
    pub restarted: Vec<String>,
    pub line: String,
    pub skipped: Option<String>,
}

/// Run one nemesis end to end.
pub fn run(spec: &RunSpec) -> Result<Outcome> {
    eprintln!("chaos: {} seed {} (replay: {SEED_ENV}={})", spec.nemesis, spec.seed, spec.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let fleet = Fleet::new()?;
    let ch = if spec.clickhouse { Some(ClickHouseServer::start().context("start ClickHouse")?) } else { None };

    // Node 1's data folder on a small disk when the nemesis fills it.
    let disk = if spec.nemesis == Nemesis::FullDisk {
        match SmallDisk::mount(&fleet.path().join("node1").join("data"), 64) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("chaos: full-disk skipped: {e:#}");
                None
            }
        }
    } else {
        None
    };
    // Node 1 runs under libfaketime when its clock is to jump.
    let clock = if spec.nemesis == Nemesis::ClockJump { FakeClock::new(fleet.path()) } else { None };
    // Partitions need each node in its own network namespace (decision 0017).
    let lab = if spec.nemesis.needs_netns() {
        match NetLab::create(spec.nodes) {
            Ok(lab) => Some(lab),
            // Namespaces need root (CI and the chaos machines are root).
            Err(e) => {
                let why = format!("cannot create network namespaces: {e:#}");
                let line = format!("{} seed={} skipped: {why}", spec.nemesis.name(), spec.seed);
                return Ok(Outcome { verdict: Verdict::default(), restarted: vec![], line, skipped: Some(why) });
            }
        }
    } else {
        None
    };
    let (nodes, raft_links, plumbing) =
        start_cluster(&fleet, spec.nodes, ch.as_ref(), clock.as_ref(), lab.as_ref(), &mut rng)?;

    // Captures: one ward per sensor, each its own seed and site; the truth is their union.
    let mut truth = serde_json::json!({"devices": [], "flows": []});
    let mut sensors = Vec::new();
    let mut sensor_links = Vec::new();
    let mut sensor_ids = Vec::new();
    for s in 0..spec.sensors {
        let capture_seed = rng.gen_range(1..1_000_000u64);
        let (pcap, t) = generate(&fleet, capture_seed, spec.scale, &format!("ward{s}.pcap"))?;
        for key in ["devices", "flows"] {
            let dst = truth[key].as_array_mut().expect("array");
            dst.extend(t[key].as_array().cloned().unwrap_or_default());
        }
        let id = format!("ward-{s}");
        let site = format!("site-{s}");
        // One proxy per node this sensor may reach; the first node is its preferred one.
        let mut links = Vec::new();
        for k in 0..nodes.len() {
            let node = &nodes[(s + k) % nodes.len()];
            links.push(FaultProxy::start(
                Transport::Udp,
                "127.0.0.1:0".parse()?,
                node.quic_addr().parse()?,
                rng.gen(),
            )?);
        }
        let cfg = Sensor::write_config(
            &fleet,
            &SensorSpec {
                sensor_id: &id,
                site: &site,
                tls_dir: fleet.issue_sensor(&id, &site)?,
                server: links[0].listen.to_string(),
                pcaps: vec![pcap],
                max_events: spec.max_events,
            },
        )?;
        if links.len() > 1 {
            // The other nodes, tried after `server` (sensor failover over an address list).
            let others: Vec<String> = links[1..].iter().map(|l| format!("{:?}", l.listen.to_string())).collect();
            let text = std::fs::read_to_string(&cfg)?.replacen(
                "[uplink]\n",
                &format!("[uplink]\nfallback_servers = [{}]\n", others.join(", ")),
                1,
            );
            std::fs::write(&cfg, text)?;
        }
        sensor_links.extend(links);
        sensors.push((id.clone(), cfg));
        sensor_ids.push(id);
    }
    let mut rig = Rig { fleet, ch, nodes, sensor_links, raft_links, plumbing, disk, clock, lab, rng };
    let monitor = Monitor::start(rig.nodes[0].api_client()?, rig.nodes.iter().map(|n| (n.node_id, n.api())).collect());
    let mut running = Vec::new();
    for (id, cfg) in &sensors {
        running.push(Sensor::start(cfg, &rig.fleet.path().join(format!("{id}.log")), &[])?);
    }

    // Inject once the cluster has applied a few batches: the fault must land mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while monitor.applied_now() < 3 {
        if Instant::now() > deadline {
            bail!("no batch applied within 60 s before the fault:\n{}", rig.nodes[0].log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let injected = rig.inject(spec.nemesis)?;
    let skipped = injected.iter().find_map(|i| match i {
        Injected::Skipped(why) => Some(why.clone()),
        _ => None,
    });
    std::thread::sleep(spec.fault_for);
    // The fault ends when healing starts: a restart's start-up time counts as recovery.
    let healed_at = Instant::now();
    let restarted = rig.heal(injected)?;

    let mut acked = BTreeMap::new();
    for (s, id) in running.iter_mut().zip(&sensor_ids) {
        let st = s.wait(Duration::from_secs(300))?;
        if !st.success() {
            bail!("sensor {id} failed ({st}):\n{}", s.log_text());
        }
        let n = spooled_batches(&s.log_text()).with_context(|| format!("sensor {id} logged no batch count"))?;
        acked.insert(id.clone(), n);
    }
    // Every node catches up before it is read (a follower may lag the leader), and the
    // flow outbox drains to ClickHouse (its rows are written after the ack).
    let total: u64 = acked.values().sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in &rig.nodes {
        loop {
            let applied: u64 = n
                .get("/api/v1/sensors")
                .ok()
                .and_then(|v| v["sensors"].as_object().map(|m| m.values().filter_map(|r| r["last_seq"].as_u64()).sum()))
                .unwrap_or(0);
            let t = n.get("/api/v1/flows/totals").unwrap_or_default();
            let drained = t["store"]["packets"] == t["replicated"]["packets"];
            if (applied >= total && drained) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let recovery = monitor.recovery_after(healed_at);
    let samples = monitor.finish();
    let mut reports = Vec::new();
    for n in &rig.nodes {
        reports.push(NodeReport {
            node_id: n.node_id,
            sensors: n.get("/api/v1/sensors")?,
            totals: n.get("/api/v1/flows/totals")?,
            inventory: n.get("/api/v1/inventory")?,
        });
    }
    let stored = match rig.ch.as_ref() {
        Some(ch) => Some(tsv_flows(&ch.query(CLICKHOUSE_FLOWS_SQL)?)?),
        None => None,
    };
    let verdict = check(&acked, &reports, &truth, stored.as_ref(), &samples, recovery);
    let mut line = verdict.line(spec.nemesis.name(), spec.seed);
    if !restarted.is_empty() {
        line.push_str(&format!(" restarted: {}", restarted.join(", ")));
    }
    if let Some(why) = &skipped {
        line = format!("{} seed={} skipped: {why}", spec.nemesis.name(), spec.seed);
    }
    Ok(Outcome { verdict, restarted, line, skipped })
}

/// Start `count` nodes: node 1 initialises the cluster, the others join it through the
/// `cluster join` CLI. Each node's Raft listener sits behind a TCP fault proxy that peers
/// reach it by. Returns the nodes and those proxies.
fn start_cluster(
    fleet: &Fleet,
    count: usize,
    ch: Option<&ClickHouseServer>,
    clock: Option<&FakeClock>,
    lab: Option<&NetLab>,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<Aggregator>, Vec<FaultProxy>, Vec<FaultProxy>)> {
    let mut nodes: Vec<Aggregator> = Vec::new();
    let mut raft_links = Vec::new();
    let mut plumbing = Vec::new();
    if let (Some(lab), Some(ch)) = (lab, ch) {
        // Nodes in namespaces reach ClickHouse through the bridge.
        let at = SocketAddr::new(lab.bridge_addr().into(), ch.http_port);
        plumbing.push(FaultProxy::start(Transport::Tcp, at, loopback(ch.http_port), rng.gen())?);
    }
    for id in 1..=count as u64 {
        let env = if id == 1 { clock.map(FakeClock::env).unwrap_or_default() } else { Vec::new() };
        let mut node = Aggregator::prepare(fleet, id, ch.map(|c| c.http_url.clone()), env)?;
        let raft_addr = match lab {
            None => {
                let proxy = FaultProxy::start(Transport::Tcp, loopback(0), loopback(node.raft_port), rng.gen())?;
                let addr = proxy.listen;
                raft_links.push(proxy);
                addr
            }
            Some(lab) => {
                let (addr, raft, mut more) = netns_plumbing(fleet, lab, &node, ch, rng)?;
                node.netns = Some(lab.ns_name(id as usize));
                raft_links.push(raft);
                plumbing.append(&mut more);
                addr
            }
        };
        node.extra_args = vec!["--advertise-raft".into(), raft_addr.to_string()];
        node.joiner = id > 1;
        node.launch()?;
        if id > 1 {
            crate::procs::run_ok(
                std::process::Command::new(crate::procs::bin("wardline-aggregator"))
                    .args(["cluster", "join", "--api", &nodes[0].api(), "--node-id", &id.to_string()])
                    .env("WARDLINE_CERT_DIR", &nodes[0].operator_dir)
                    .args(["--raft-addr", &raft_addr.to_string()])
                    .args(["--api-addr", &format!("127.0.0.1:{}", node.api_port)])
                    .args(["--ingest-addr", &node.quic_addr()]),
            )
            .with_context(|| format!("node {id} could not join the cluster"))?;
        }
        nodes.push(node);
    }
    Ok((nodes, raft_links, plumbing))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port)
}

/// A node in namespace N listens on its own loopback; proxies make it look as if it were on
/// the test's loopback (API, QUIC: 127.0.0.1 → 198.18.K.N → the node), give it a Raft
/// address on the bridge (198.18.K.N:raft, the fault link peers use), and bring ClickHouse
/// into the namespace. A partition (its link down) cuts all of these at once.
/// Returns the Raft address, the Raft fault proxy and the other proxies.
fn netns_plumbing(
    fleet: &Fleet,
    lab: &NetLab,
    node: &Aggregator,
    ch: Option<&ClickHouseServer>,
    rng: &mut ChaCha8Rng,
) -> Result<(SocketAddr, FaultProxy, Vec<FaultProxy>)> {
    let i = node.node_id as usize;
    let ip = lab.addr(i);
    let bridge = lab.bridge_addr();
    let at = move |port| SocketAddr::new(ip.into(), port);
    // Its certificate also names its bridge address, which peers dial.
    crate::procs::run_ok(
        std::process::Command::new(crate::procs::bin("wardline-aggregator"))
            .args(["admin", "issue-node", "--node-id", &i.to_string(), "--host", &ip.to_string(), "--ca-dir"])
            .arg(fleet.ca_dir())
            .arg("--out-dir")
            .arg(&node.tls_dir),
    )?;
    let mut plumbing = vec![
        FaultProxy::start(Transport::Tcp, loopback(node.api_port), at(node.api_port), rng.gen())?,
        FaultProxy::start(Transport::Udp, loopback(node.quic_port), at(node.quic_port), rng.gen())?,
    ];
    let (api, quic, raft, ch_port) = (node.api_port, node.quic_port, node.raft_port, ch.map(|c| c.http_port));
    let seeds: [u64; 4] = rng.gen();
    let (inner, raft_proxy) = in_namespace(&lab.ns_name(i), move || -> Result<(Vec<FaultProxy>, FaultProxy)> {
        let mut v = vec![
            FaultProxy::start(Transport::Tcp, at(api), loopback(api), seeds[0])?,
            FaultProxy::start(Transport::Udp, at(quic), loopback(quic), seeds[1])?,
        ];
        if let Some(p) = ch_port {
            v.push(FaultProxy::start(Transport::Tcp, loopback(p), SocketAddr::new(bridge.into(), p), seeds[2])?);
        }
        let raft = FaultProxy::start(Transport::Tcp, at(raft), loopback(raft), seeds[3])?;
        Ok((v, raft))
    })??;
    plumbing.extend(inner);
    Ok((at(raft), raft_proxy, plumbing))
}

fn generate(fleet: &Fleet, seed: u64, scale: u32, name: &str) -> Result<(std::path::PathBuf, Value)> {
    if scale == 1 {
        return fleet.generate("ward", seed, name);
    }
    let out = fleet.path().join(name);
    crate::procs::run_ok(
        std::process::Command::new(crate::procs::bin("wardline-sim"))
            .args(["--scenario", "ward", "--seed", &seed.to_string(), "--scale", &scale.to_string(), "--out"])
            .arg(&out),
    )?;
    let truth = serde_json::from_slice(&std::fs::read(format!("{}.truth.json", out.display()))?)?;
    Ok((out, truth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_count_is_read_from_the_sensor_log() {
        let log = "2026 INFO wardline_sensor::run: reading ward.pcap\n\
                   2026 INFO wardline_sensor::run: capture finished batches=42 spool_pending=3\n";
        assert_eq!(spooled_batches(log), Some(42));
        assert_eq!(spooled_batches("nothing here"), None);
    }
}
