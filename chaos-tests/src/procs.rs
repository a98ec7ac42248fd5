//! Real `wardline-aggregator` and `wardline-sensor` processes for multi-process tests:
//! a temporary fleet CA, nodes and sensors on loopback with free ports, kill -9 and restart.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Folder of the workspace's built binaries (target/debug next to this test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Real captures shipped beside the repository (override with WARDLINE_PCAPS).
pub fn pcaps_dir() -> PathBuf {
    std::env::var_os("WARDLINE_PCAPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps"))
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free tcp port")
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("free udp port")
}

/// Run a command to completion; fail with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A temporary fleet: CA, node and sensor certificates, working folders.
pub struct Fleet {
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub fn new() -> Result<Fleet> {
        let dir = tempfile::tempdir()?;
        run_ok(
            Command::new(bin("wardline-aggregator")).args(["admin", "ca-init", "--dir"]).arg(dir.path().join("ca")),
        )?;
        Ok(Fleet { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// Issue a sensor certificate into `dir` with `wardline-aggregator admin issue-sensor`, as
    /// an operator would; the serial it prints (it must print serial and expiry).
    pub fn issue_sensor_cli(&self, sensor_id: &str, site: &str, dir: &Path) -> Result<String> {
        let out = run_ok(
            Command::new(bin("wardline-aggregator"))
                .args(["admin", "issue-sensor", "--sensor-id", sensor_id, "--site", site, "--ca-dir"])
                .arg(self.ca_dir())
                .arg("--out-dir")
                .arg(dir),
        )?;
        let serial = out.split("(serial ").nth(1).and_then(|s| s.split(',').next()).unwrap_or_default();
        anyhow::ensure!(
            !serial.is_empty() && out.contains("expires"),
            "issue-sensor should print serial and expiry: {out}"
        );
        Ok(serial.to_string())
    }

    pub fn issue_node(&self, node_id: u64) -> Result<PathBuf> {
        let out = self.dir.path().join(format!("node{node_id}"));
        run_ok(
            Command::new(bin("wardline-aggregator"))
                .args(["admin", "issue-node", "--node-id", &node_id.to_string(), "--ca-dir"])
                .arg(self.ca_dir())
                .arg("--out-dir")
                .arg(&out),
        )?;
        Ok(out)
    }

    pub fn issue_sensor(&self, sensor_id: &str, site: &str) -> Result<PathBuf> {
        let out = self.dir.path().join(format!("sensor-{sensor_id}"));
        run_ok(
            Command::new(bin("wardline-aggregator"))
                .args(["admin", "issue-sensor", "--sensor-id", sensor_id, "--site", site, "--ca-dir"])
                .arg(self.ca_dir())
                .arg("--out-dir")
                .arg(&out),
        )?;
        Ok(out)
    }

    /// Issue an operator certificate (operator.pem/.key/ca.pem) for calling the API;
    /// returns its folder (what `--cert-dir` takes). Issued once per name.
    pub fn issue_operator(&self, name: &str, role: &str) -> Result<PathBuf> {
        let out = self.dir.path().join(format!("operator-{name}"));
        if !out.join("operator.pem").exists() {
            run_ok(
                Command::new(bin("wardline-aggregator"))
                    .args(["admin", "issue-operator", "--name", name, "--role", role, "--ca-dir"])
                    .arg(self.ca_dir())
                    .arg("--out-dir")
                    .arg(&out),
            )?;
        }
        Ok(out)
    }

    /// Generate a capture with the project's generator (`wardline-sim`); returns its ground
    /// truth JSON.
    pub fn generate(&self, scenario: &str, seed: u64, name: &str) -> Result<(PathBuf, Value)> {
        let out = self.dir.path().join(name);
        run_ok(
            Command::new(bin("wardline-sim"))
                .args(["--scenario", scenario, "--seed", &seed.to_string(), "--out"])
                .arg(&out),
        )?;
        let truth_path = PathBuf::from(format!("{}.truth.json", out.display()));
        let truth: Value = serde_json::from_slice(&std::fs::read(&truth_path)?)
            .with_context(|| format!("ground truth {}", truth_path.display()))?;
        Ok((out, truth))
    }
}

/// One aggregator node process.
pub struct Aggregator {
    pub node_id: u64,
    pub tls_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Admin operator certificate the test uses to call the API.
    pub operator_dir: PathBuf,
    pub api_port: u16,
    pub quic_port: u16,
    pub raft_port: u16,
    pub clickhouse_url: Option<String>,
    pub log: PathBuf,
    /// Crash point armed for the next start (`WARDLINE_FAULT`), see wardline_common::fault.
    pub fault: Option<String>,
    /// Extra `run` arguments for the next start (e.g. `--kb-dir`).
    pub extra_args: Vec<String>,
    /// Extra environment for every start (e.g. libfaketime for the clock-jump nemesis).
    pub extra_env: Vec<(String, String)>,
    /// Started without `--init`: the node waits for `cluster join`, so its first start waits
    /// only for its API, not for a leader.
    pub joiner: bool,
    /// Network namespace to run the node in (`ip netns exec`), for partition nemeses.
    pub netns: Option<String>,
    /// The `wardline-aggregator` executable of the next start; None: this build's
    /// ([`bin`]). The upgrade test starts nodes of the previous version and swaps it.
    pub binary: Option<PathBuf>,
    child: Option<Child>,
    starts: u32,
}

impl Aggregator {
    /// `wardline-aggregator ARGS --api <this node>` as the admin operator; its stdout.
    pub fn admin_cli(&self, args: &[&str]) -> Result<String> {
        run_ok(
            Command::new(bin("wardline-aggregator"))
                .args(args)
                .args(["--api", &self.api()])
                .env("WARDLINE_CERT_DIR", &self.operator_dir),
        )
    }

    pub fn start(fleet: &Fleet, node_id: u64, clickhouse_url: Option<String>) -> Result<Aggregator> {
        Self::start_with_env(fleet, node_id, clickhouse_url, Vec::new())
    }

    /// [`start`](Self::start) with extra environment variables for the node process.
    pub fn start_with_env(
        fleet: &Fleet,
        node_id: u64,
        clickhouse_url: Option<String>,
        extra_env: Vec<(String, String)>,
    ) -> Result<Aggregator> {
        let mut a = Self::prepare(fleet, node_id, clickhouse_url, extra_env)?;
        a.spawn()?;
        Ok(a)
    }

    /// Certificates, ports and folders of a node, not started yet: set `joiner`,
    /// `extra_args` (e.g. `--advertise-raft` through a fault proxy), then [`launch`](Self::launch).
    pub fn prepare(
        fleet: &Fleet,
        node_id: u64,
        clickhouse_url: Option<String>,
        extra_env: Vec<(String, String)>,
    ) -> Result<Aggregator> {
        let tls_dir = fleet.issue_node(node_id)?;
        Ok(Aggregator {
            node_id,
            data_dir: tls_dir.join("data"),
            tls_dir,
            operator_dir: fleet.issue_operator("chaos-admin", "admin")?,
            api_port: free_tcp_port(),
            quic_port: free_udp_port(),
            raft_port: free_tcp_port(),
            clickhouse_url,
            log: fleet.path().join(format!("aggregator{node_id}.log")),
            fault: None,
            extra_args: Vec::new(),
            extra_env,
            joiner: false,
            netns: None,
            binary: None,
            child: None,
            starts: 0,
        })
    }

    /// Start a [`prepare`](Self::prepare)d node.
    pub fn launch(&mut self) -> Result<()> {
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let exe = self.binary.clone().unwrap_or_else(|| bin("wardline-aggregator"));
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the node, so the child's pid is the node's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        // --init: each node founds its own one-node cluster on first start (what nodes did
        // before `cluster join` existed); a restart resumes it.
        cmd.args(["run", "--node-id", &self.node_id.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--tls-dir")
            .arg(&self.tls_dir)
            .args(["--listen-api", &format!("127.0.0.1:{}", self.api_port)])
            .args(["--listen-quic", &format!("127.0.0.1:{}", self.quic_port)])
            .args(["--listen-raft", &format!("127.0.0.1:{}", self.raft_port)])
            .env("RUST_LOG", "info,openraft=warn,sled=warn")
            .env_remove("WARDLINE_CLICKHOUSE_URL")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(u) = &self.clickhouse_url {
            cmd.args(["--clickhouse-url", u]);
        }
        if !self.joiner {
            cmd.arg("--init");
        }
        cmd.args(&self.extra_args);
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        match &self.fault {
            Some(f) => cmd.env("WARDLINE_FAULT", f),
            None => cmd.env_remove("WARDLINE_FAULT"),
        };
        self.child = Some(cmd.spawn().with_context(|| format!("cannot start {}", exe.display()))?);
        if self.joiner && self.starts == 1 {
            return self.wait_api(Duration::from_secs(60));
        }
        self.wait_ready(Duration::from_secs(60))
    }

    /// Wait until the node's API answers (it may not know a leader yet).
    pub fn wait_api(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.get("/healthz").is_err() {
            if self.exited() {
                bail!("aggregator exited during start-up:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!("aggregator API not up after {timeout:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub fn api(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    pub fn quic_addr(&self) -> String {
        format!("127.0.0.1:{}", self.quic_port)
    }

    /// Wait until the node answers and knows a leader.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(h) = self.get("/healthz") {
                if !h["leader"].is_null() {
                    return Ok(());
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!("aggregator exited ({st}) during start-up:\n{}", self.log_text());
                }
            }
            if Instant::now() > deadline {
                bail!("aggregator not ready after {timeout:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` behind Raft's read barrier (`x-wardline-consistency: linearizable`).
    pub fn get_linearizable(&self, path: &str) -> Result<Value> {
        let resp = self
            .api_client()?
            .get(format!("{}{}", self.api(), path))
            .header("x-wardline-consistency", "linearizable")
            .send()?;
        let status = resp.status();
        let v: Value = resp.json()?;
        if !status.is_success() {
            bail!("GET {path} (linearizable) → {status}: {v}");
        }
        Ok(v)
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        let resp = self.api_client()?.get(format!("{}{}", self.api(), path)).send()?;
        let status = resp.status();
        let v: Value = resp.json()?;
        if !status.is_success() {
            bail!("GET {path} → {status}: {v}");
        }
        Ok(v)
    }

    /// Wait until the node's flow outbox is empty: every acked flow is in the flow store
    /// (decision 0016: acks come before the drain). Asked as a linearizable read, so a node
    /// that has just restarted answers only after it re-applied what was committed (its
    /// snapshot alone may show an empty outbox).
    pub fn wait_outbox_drained(&self, within: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let totals = self.get_linearizable("/api/v1/flows/totals").ok();
            if totals.as_ref().and_then(|t| t["outbox"]["rows"].as_u64()) == Some(0) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!("the flow outbox did not drain within {within:?}: {totals:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// HTTPS client trusting the fleet CA and presenting the admin operator certificate.
    pub fn api_client(&self) -> Result<reqwest::blocking::Client> {
        let mut pem = std::fs::read(self.operator_dir.join("operator.pem"))?;
        pem.extend(std::fs::read(self.operator_dir.join("operator.key"))?);
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.operator_dir.join("ca.pem"))?)?;
        Ok(reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(reqwest::Identity::from_pem(&pem)?)
            .build()?)
    }

    /// Kill -9: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Restart with a crash point armed (or disarmed with None).
    pub fn restart_with_fault(&mut self, fault: Option<&str>) -> Result<()> {
        self.fault = fault.map(str::to_string);
        self.restart()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Process id of the running node (for the SIGSTOP / SIGCONT nemesis).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True when the process was started and has exited (crashed or killed).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Start again after [`kill9`](Self::kill9) over the same data folder.
    pub fn start_again(&mut self) -> Result<()> {
        self.spawn()
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One sensor process reading capture files.
/// `count` nodes on loopback with no fault proxies: node 1 initialises the cluster, the
/// others join it through the `cluster join` CLI (benchmarks and demos; the chaos suite's
/// own start puts fault proxies in between).
pub fn start_plain_cluster(fleet: &Fleet, count: u64, clickhouse_url: Option<String>) -> Result<Vec<Aggregator>> {
    let mut nodes: Vec<Aggregator> = Vec::new();
    for id in 1..=count {
        let mut node = Aggregator::prepare(fleet, id, clickhouse_url.clone(), Vec::new())?;
        node.joiner = id > 1;
        node.launch()?;
        if id > 1 {
            run_ok(
                Command::new(bin("wardline-aggregator"))
                    .args(["cluster", "join", "--api", &nodes[0].api(), "--node-id", &id.to_string()])
                    .env("WARDLINE_CERT_DIR", &nodes[0].operator_dir)
                    .args(["--raft-addr", &format!("127.0.0.1:{}", node.raft_port)])
                    .args(["--api-addr", &format!("127.0.0.1:{}", node.api_port)])
                    .args(["--ingest-addr", &node.quic_addr()]),
            )
            .with_context(|| format!("node {id} could not join the cluster"))?;
        }
        nodes.push(node);
    }
    Ok(nodes)
}

pub struct Sensor {
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// Settings of a test sensor.
pub struct SensorSpec<'a> {
    pub sensor_id: &'a str,
    pub site: &'a str,
    pub tls_dir: PathBuf,
    pub server: String,
    pub pcaps: Vec<PathBuf>,
    pub max_events: usize,
}

impl Sensor {
    /// The config of the tests' one ward sensor (`ward-a-1` at site `north`, certificate
    /// issued now) shipping `pcap` to `agg` in batches of at most `max_events`.
    pub fn ward_config(fleet: &Fleet, agg: &Aggregator, pcap: PathBuf, max_events: usize) -> Result<PathBuf> {
        let tls_dir = fleet.issue_sensor("ward-a-1", "north")?;
        let spec = SensorSpec {
            sensor_id: "ward-a-1",
            site: "north",
            tls_dir,
            server: agg.quic_addr(),
            pcaps: vec![pcap],
            max_events,
        };
        Self::write_config(fleet, &spec)
    }

    pub fn write_config(fleet: &Fleet, spec: &SensorSpec<'_>) -> Result<PathBuf> {
        let spool = fleet.path().join(format!("spool-{}", spec.sensor_id));
        let files: Vec<String> = spec.pcaps.iter().map(|p| format!("{:?}", p.display().to_string())).collect();
        let text = format!(
            "sensor_id = {:?}\nsite = {:?}\nspool_dir = {:?}\n[uplink]\nserver = {:?}\nserver_name = \"localhost\"\n\
             [tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n[capture]\nfiles = [{}]\n[batch]\nmax_events = {}\ninterval_secs = 5\n",
            spec.sensor_id,
            spec.site,
            spool.display().to_string(),
            spec.server,
            spec.tls_dir.join("sensor.pem").display().to_string(),
            spec.tls_dir.join("sensor.key").display().to_string(),
            spec.tls_dir.join("ca.pem").display().to_string(),
            files.join(", "),
            spec.max_events,
        );
        let path = fleet.path().join(format!("sensor-{}.toml", spec.sensor_id));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Start `wardline-sensor run --config F --exit-when-drained` with extra environment.
    pub fn start(config: &Path, log: &Path, env: &[(&str, &str)]) -> Result<Sensor> {
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut cmd = Command::new(bin("wardline-sensor"));
        cmd.args(["run", "--exit-when-drained", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,sled=warn")
            .stdout(Stdio::null())
            .stderr(logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(Sensor { config: config.to_path_buf(), log: log.to_path_buf(), child: Some(cmd.spawn()?) })
    }

    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("sensor not running")?;
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("sensor did not finish within {timeout:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Process id of the running sensor (to pause it with SIGSTOP and resume it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True when the sensor was started and has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.kill9();
    }
}
