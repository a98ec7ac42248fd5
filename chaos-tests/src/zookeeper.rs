//! A throwaway ZooKeeper for tests: Debian's `zookeeper` package (3.8) run as a standalone
//! server (`ZooKeeperServerMain`) with a generated config, its data in a temporary folder,
//! its client port on a free loopback port and the admin web server off. Killed on drop.
//!
//! ClickHouse replicated tables coordinate through it (`ClickHouseCluster` in
//! [`crate::clickhouse`]). Like the ClickHouse server, own one per test, not in a `static`.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer `ruok`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Overrides the ZooKeeper jar (its manifest names the other jars it needs).
pub const JAR_ENV: &str = "WARDLINE_ZOOKEEPER_JAR";
const DEBIAN_JAR: &str = "/usr/share/java/zookeeper.jar";
const INSTALL_HINT: &str = "install zookeeper (apt-get install -y zookeeper, or scripts/setup.sh)";
/// ZooKeeper's tick in ms. Sessions may last 2 to 20 ticks, so ClickHouse's session timeout
/// (see `ClickHouseCluster`) must lie within 1–10 s: a killed replica's session, and with it
/// its "active" mark, then expires within seconds instead of the usual 30.
pub const TICK_MS: u32 = 500;

pub struct ZooKeeperServer {
    pub port: u16,
    child: Option<Child>,
    /// Holds config, data and the server's output; removed on drop.
    dir: tempfile::TempDir,
}

fn jar() -> Result<PathBuf> {
    let path = std::env::var_os(JAR_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEBIAN_JAR));
    if path.is_file() {
        Ok(path)
    } else {
        bail!("no ZooKeeper jar at {}: {INSTALL_HINT}, or set {JAR_ENV}", path.display())
    }
}

impl ZooKeeperServer {
    /// Start a fresh standalone server and wait until it answers `ruok`.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("wardline-zookeeper-")
            .tempdir()
            .context("creating a temporary folder for ZooKeeper")?;
        fs::create_dir_all(dir.path().join("data"))?;
        let mut server = ZooKeeperServer { port: 0, child: None, dir };
        // A free port can be taken by another test's server between choosing it and
        // ZooKeeper binding it (ZooKeeper then exits at once, its log silent without a
        // logging backend): choose again, a few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let [port] = crate::clickhouse::free_ports::<1>()?;
            server.port = port;
            let config = format!(
                "tickTime={TICK_MS}\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n\
                 maxClientCnxns=0\n",
                server.dir.path().join("data").display()
            );
            fs::write(server.dir.path().join("zoo.cfg"), config)?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) if attempt < 3 && server.child.is_none() => {
                    eprintln!("ZooKeeper did not start on port {port} (attempt {attempt}), trying another port: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `127.0.0.1:<port>`, the address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let jar = jar()?;
        let out = fs::File::create(self.dir.path().join("server.log"))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("java");
        // A small heap and the quick JIT tier: a test server holds a few hundred znodes.
        cmd.args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp"])
            .arg(&jar)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.path().join("zoo.cfg"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Killed with the test process, like the ClickHouse servers.
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
        let child = cmd.spawn().with_context(|| format!("starting java for ZooKeeper: {INSTALL_HINT}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("ZooKeeper exited during start-up ({status}); output:\n{}", self.log_tail(40));
                }
            }
            if self.four_letter("ruok").map(|a| a == "imok").unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail(40);
                self.kill();
                bail!(
                    "ZooKeeper did not answer ruok on {} within {}s; output:\n{tail}",
                    self.addr(),
                    START_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Send a four-letter command (`ruok`, `srvr`) and return the answer.
    pub fn four_letter(&self, command: &str) -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(command.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// The last `lines` lines of the server's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        self.kill();
    }
}
