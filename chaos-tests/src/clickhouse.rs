//! A throwaway ClickHouse server for tests: Debian's `clickhouse-server` (18.16) started as a
//! plain child process with a generated minimal config, its data, logs and temp files in a
//! temporary folder, listening on free loopback ports. Killed on drop.
//!
//! Own one server per test (a local value, not a `static`): statics are never dropped, so a
//! server kept in one would outlive the test binary.

use anyhow::{bail, Context, Result};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh (or restarted) server may take to answer `/ping`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Overrides the server binary (for a ClickHouse installed somewhere else).
pub const BINARY_ENV: &str = "WARDLINE_CLICKHOUSE_SERVER";
const INSTALL_HINT: &str = "install clickhouse-server (apt-get install -y clickhouse-server)";

/// The ports one server listens on (all on 127.0.0.1).
#[derive(Clone, Copy, Debug)]
pub struct ServerPorts {
    pub http: u16,
    pub tcp: u16,
    /// Replicas fetch parts from each other here.
    pub interserver: u16,
}

pub struct ClickHouseServer {
    /// `http://127.0.0.1:<http_port>`, what the aggregator's `--clickhouse-url` takes.
    pub http_url: String,
    pub http_port: u16,
    pub tcp_port: u16,
    pub interserver_port: u16,
    child: Option<Child>,
    http: reqwest::blocking::Client,
    /// Holds config, data and logs; removed when the server is dropped.
    dir: tempfile::TempDir,
}

/// The server program and the arguments that come before `--config-file`.
fn server_command() -> Result<(PathBuf, Vec<&'static str>)> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok((path, vec![]));
        }
        bail!("{BINARY_ENV}={} does not name a file; unset it or {INSTALL_HINT}", path.display());
    }
    // Debian's package ships a dedicated binary; upstream packages ship one multi-call
    // `clickhouse` binary that takes `server` as its first argument.
    let debian = PathBuf::from("/usr/sbin/clickhouse-server");
    if debian.is_file() {
        return Ok((debian, vec![]));
    }
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let multi = Path::new(dir).join("clickhouse");
        if multi.is_file() {
            return Ok((multi, vec!["server"]));
        }
    }
    bail!("no ClickHouse server binary found (looked for /usr/sbin/clickhouse-server and clickhouse in /usr/bin, /usr/local/bin): {INSTALL_HINT}")
}

/// Reserve `n` distinct free loopback ports. All listeners are held until every port is
/// known so the kernel cannot hand out the same port twice; a small race with other
/// processes remains until the server binds them.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("binding 127.0.0.1:0 to find a free port")?;
    let mut ports = [0u16; N];
    for (slot, l) in ports.iter_mut().zip(&listeners) {
        *slot = l.local_addr()?.port();
    }
    Ok(ports)
}

fn config_xml(dir: &Path, http: u16, tcp: u16, interserver: u16, extra: &str) -> String {
    let d = dir.display();
    // Caches are kept small: several servers may run side by side on a shared test machine.
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{d}/log/server.log</log>
        <errorlog>{d}/log/server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <interserver_http_port>{interserver}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>64</max_concurrent_queries>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <mark_cache_size>67108864</mark_cache_size>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
{extra}</yandex>
"#
    )
}

const USERS_XML: &str = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"#;

impl ClickHouseServer {
    /// Start a fresh server and wait until it answers `/ping`.
    pub fn start() -> Result<Self> {
        let [http, tcp, interserver] = free_ports::<3>()?;
        Self::start_with(ServerPorts { http, tcp, interserver }, "")
    }

    /// Start a fresh server on the given ports with `extra_config` (XML elements such as
    /// `<remote_servers>`, `<zookeeper>`, `<macros>`) added to its config.
    pub fn start_with(ports: ServerPorts, extra_config: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("wardline-clickhouse-")
            .tempdir()
            .context("creating a temporary folder for ClickHouse")?;
        for sub in ["log", "data", "tmp", "user_files", "format_schemas"] {
            fs::create_dir_all(dir.path().join(sub))
                .with_context(|| format!("creating {}/{sub}", dir.path().display()))?;
        }
        let ServerPorts { http: http_port, tcp: tcp_port, interserver: interserver_port } = ports;
        fs::write(
            dir.path().join("config.xml"),
            config_xml(dir.path(), http_port, tcp_port, interserver_port, extra_config),
        )?;
        fs::write(dir.path().join("users.xml"), USERS_XML)?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client for ClickHouse")?;
        let mut server = ClickHouseServer {
            http_url: format!("http://127.0.0.1:{http_port}"),
            http_port,
            tcp_port,
            interserver_port,
            child: None,
            http,
            dir,
        };
        server.spawn_and_wait()?;
        Ok(server)
    }

    /// The folder holding config, data (`data/`) and logs (`log/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let (program, pre_args) = server_command()?;
        let stdout = fs::File::create(self.dir.path().join("log/stdout.log"))?;
        let stderr = fs::File::create(self.dir.path().join("log/stderr.log"))?;
        let mut cmd = Command::new(&program);
        cmd.args(&pre_args)
            .arg(format!("--config-file={}", self.dir.path().join("config.xml").display()))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // If the test process dies without unwinding (kill -9, abort), the kernel kills the
        // server too, so no orphan keeps ports and disk.
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {}: {INSTALL_HINT}", program.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let ping = format!("{}/ping", self.http_url);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("clickhouse-server exited during start-up ({status}); log tail:\n{}", self.log_tail(40));
                }
            }
            if let Ok(resp) = self.http.get(&ping).timeout(Duration::from_secs(2)).send() {
                if resp.text().map(|t| t.trim() == "Ok.").unwrap_or(false) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail(40);
                self.kill();
                bail!("clickhouse-server did not answer {ping} within {}s; log tail:\n{tail}", START_TIMEOUT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of the server log, its error log and its stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["log/server.log", "log/server.err.log", "log/stderr.log"] {
            let path = self.dir.path().join(name);
            let text = fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            out.push_str(&format!("--- {} ---\n", path.display()));
            for l in &all[start..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Run one SQL statement over HTTP and return the response body (TabSeparated by default).
    pub fn query(&self, sql: &str) -> Result<String> {
        let resp = self
            .http
            .post(&self.http_url)
            .body(sql.to_string())
            .send()
            .with_context(|| format!("sending to ClickHouse at {}: {sql}", self.http_url))?;
        let status = resp.status();
        let body = resp.text().context("reading the ClickHouse response")?;
        if !status.is_success() {
            bail!("ClickHouse answered {status} to `{sql}`: {}", body.trim());
        }
        Ok(body)
    }

    /// SIGKILL the server (no clean shutdown), keeping its data for [`restart`](Self::restart).
    pub fn stop_kill9(&mut self) {
        self.kill();
    }

    /// Start the server again over the same data and ports (after [`stop_kill9`](Self::stop_kill9),
    /// or while running: then it is killed first).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn_and_wait()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix; wait reaps it so no zombie remains.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// ClickHouse's ZooKeeper session timeout in a test cluster: a killed replica's session
/// (and its "active" mark, which keeps it from coming back) expires within this time.
pub const CLUSTER_SESSION_TIMEOUT_MS: u32 = 4_000;

/// Several servers forming one ClickHouse cluster of one shard, every server a replica of
/// it: `<remote_servers>` names them all, `<zookeeper>` points at `zookeeper`, and each has
/// the macros `{shard}` = `01` and `{replica}` = `r1`, `r2`, … for replicated table paths.
pub struct ClickHouseCluster {
    /// The cluster's name in `<remote_servers>`.
    pub name: String,
    pub replicas: Vec<ClickHouseServer>,
}

/// The XML a cluster member gets in addition to the plain server config.
pub fn cluster_config_xml(name: &str, tcp_ports: &[u16], zookeeper_port: u16, replica: &str) -> String {
    let replicas: String = tcp_ports
        .iter()
        .map(|p| format!("                <replica><host>127.0.0.1</host><port>{p}</port></replica>\n"))
        .collect();
    format!(
        r#"    <remote_servers>
        <{name}>
            <shard>
                <internal_replication>true</internal_replication>
{replicas}            </shard>
        </{name}>
    </remote_servers>
    <zookeeper>
        <node><host>127.0.0.1</host><port>{zookeeper_port}</port></node>
        <session_timeout_ms>{CLUSTER_SESSION_TIMEOUT_MS}</session_timeout_ms>
    </zookeeper>
    <macros>
        <shard>01</shard>
        <replica>{replica}</replica>
    </macros>
"#
    )
}

impl ClickHouseCluster {
    /// Start `replicas` servers as one shard of cluster `name`, coordinated by `zookeeper`.
    pub fn start(zookeeper: &crate::zookeeper::ZooKeeperServer, name: &str, replicas: usize) -> Result<Self> {
        // Every member's config lists every member, so all ports are chosen first.
        let ports: Vec<ServerPorts> = (0..replicas)
            .map(|_| free_ports::<3>().map(|[http, tcp, interserver]| ServerPorts { http, tcp, interserver }))
            .collect::<Result<_>>()?;
        let tcp: Vec<u16> = ports.iter().map(|p| p.tcp).collect();
        let mut servers = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let extra = cluster_config_xml(name, &tcp, zookeeper.port, &format!("r{}", i + 1));
            servers.push(
                ClickHouseServer::start_with(*p, &extra)
                    .with_context(|| format!("starting replica r{} of ClickHouse cluster {name}", i + 1))?,
            );
        }
        Ok(ClickHouseCluster { name: name.to_string(), replicas: servers })
    }

    /// The replicas' HTTP URLs, in order.
    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.http_url.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_server_cluster_replicates_through_zookeeper() {
        let zk = crate::zookeeper::ZooKeeperServer::start().expect("start ZooKeeper");
        let cluster = ClickHouseCluster::start(&zk, "wl", 2).expect("start the cluster");
        let [a, b] = &cluster.replicas[..] else { panic!("two replicas") };
        assert_eq!(a.query("SELECT count() FROM system.clusters WHERE cluster = 'wl'").unwrap().trim(), "2");
        for r in [a, b] {
            r.query(
                "CREATE TABLE default.t (x UInt32) ENGINE = \
                 ReplicatedMergeTree('/clickhouse/tables/{shard}/default/t', '{replica}') ORDER BY x",
            )
            .unwrap();
        }
        a.query("INSERT INTO default.t VALUES (7)").unwrap();
        b.query("SYSTEM SYNC REPLICA default.t").unwrap();
        assert_eq!(b.query("SELECT sum(x) FROM default.t").unwrap().trim(), "7");
    }

    #[test]
    fn starts_answers_and_survives_kill9_restart() {
        let mut ch = ClickHouseServer::start().expect("start ClickHouse");
        assert_eq!(ch.query("SELECT 1 + 1").unwrap().trim(), "2");
        ch.query("CREATE TABLE default.t (x UInt32) ENGINE = MergeTree() ORDER BY x").unwrap();
        ch.query("INSERT INTO default.t VALUES (7)").unwrap();
        let pid = ch.pid().unwrap();
        ch.stop_kill9();
        assert!(ch.query("SELECT 1").is_err(), "server still answers after kill -9");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "killed server left a process");
        ch.restart().unwrap();
        assert_eq!(ch.query("SELECT sum(x) FROM default.t").unwrap().trim(), "7");
        let err = ch.query("SELECT * FROM no_such_table").unwrap_err().to_string();
        assert!(err.contains("no_such_table"), "{err}");
        let pid = ch.pid().unwrap();
        drop(ch);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "dropped server left a process");
    }
}
