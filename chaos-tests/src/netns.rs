//! Network namespaces for partition nemeses: each node in its own namespace with an address
//! in 198.18.K.0/24 (the benchmarking range, never routed; K differs per lab so runs side by
//! side do not share a subnet), all joined by a bridge in the test's namespace (198.18.K.254).
//! Taking a node's link down cuts it off in both directions; bringing it up heals.
//! Everything is removed on drop. Needs root (`ip`).

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::process::Command;

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip(8) (install iproute2)")?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

pub struct NetLab {
    tag: String,
    bridge: String,
    count: usize,
    /// The K of 198.18.K.0/24.
    subnet: u8,
}

impl NetLab {
    /// Create `count` namespaces (node 1 at 198.18.K.1, …) joined by a fresh bridge.
    pub fn create(count: usize) -> Result<NetLab> {
        assert!((1..=200).contains(&count));
        // Interface names are at most 15 bytes; the pid and a counter keep labs apart.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = format!("wc{}x{n}", std::process::id() % 100_000);
        let bridge = format!("{tag}b");
        // From here on, drop removes whatever was created.
        let lab = NetLab { tag, bridge, count: 0, subnet: (n % 250) as u8 };
        ip(&["link", "add", &lab.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", lab.bridge_addr()), "dev", &lab.bridge])?;
        ip(&["link", "set", &lab.bridge, "up"])?;
        let mut lab = lab;
        for i in 1..=count {
            let ns = lab.ns_name(i);
            let (host, inner) = (format!("{}h{i}", lab.tag), format!("{}n{i}", lab.tag));
            ip(&["netns", "add", &ns])?;
            lab.count = i;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &lab.bridge])?;
            ip(&["link", "set", &host, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", lab.addr(i)), "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    pub fn ns_name(&self, node: usize) -> String {
        format!("{}-{node}", self.tag)
    }

    /// Node `node`'s address (198.18.K.node).
    pub fn addr(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, node as u8)
    }

    /// The bridge's address, the test's own side (sensors and monitors reach nodes from here).
    pub fn bridge_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 254)
    }

    /// Cut node `node` off from every other node and from the test (both directions).
    pub fn isolate(&self, node: usize) -> Result<()> {
        ip(&["link", "set", &format!("{}h{node}", self.tag), "down"])
    }

    /// Bring node `node`'s link back and wait (at most 5 s) until the bridge forwards on it:
    /// `ip link set up` returns before the veth carrier and the bridge port are up, and a
    /// packet sent in that window is dropped (a TCP SYN then waits a full second to retry).
    pub fn heal(&self, node: usize) -> Result<()> {
        let host = format!("{}h{node}", self.tag);
        ip(&["link", "set", &host, "up"])?;
        let read = |file: &str| std::fs::read_to_string(format!("/sys/class/net/{host}/{file}")).unwrap_or_default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // Bridge port state 3 is BR_STATE_FORWARDING.
        while read("operstate").trim() != "up" || read("brport/state").trim() != "3" {
            if std::time::Instant::now() > deadline {
                bail!(
                    "link {host} of node {node} is not forwarding 5 s after it was brought up \
                     (operstate {:?}, bridge port state {:?})",
                    read("operstate").trim(),
                    read("brport/state").trim()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }

    /// A command that runs `program` inside node `node`'s namespace.
    pub fn command(&self, node: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name(node)]).arg(program);
        c
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for i in 1..=self.count {
            let _ = ip(&["netns", "del", &self.ns_name(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Run `f` on a thread that has entered namespace `ns` (sockets it creates stay there).
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || -> Result<T> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only, with a namespace fd we hold open.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    #[test]
    fn isolated_node_is_unreachable_until_healed_and_everything_is_removed() {
        if unsafe { libc::geteuid() } != 0 {
            return eprintln!("skipped: network namespaces need root");
        }
        let lab = NetLab::create(2).unwrap();
        let ns = lab.ns_name(1);
        let at = lab.addr(1);
        let listener = in_namespace(&ns, move || TcpListener::bind((at, 0)).unwrap()).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        std::thread::spawn(move || for _ in listener.incoming() {});
        let reach = || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok();
        assert!(reach(), "node 1 unreachable from the bridge");
        // Node 2 reaches node 1 through the bridge too.
        let from_2 = in_namespace(&lab.ns_name(2), move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        })
        .unwrap();
        assert!(from_2, "node 2 cannot reach node 1");
        lab.isolate(1).unwrap();
        assert!(!reach(), "an isolated node answered");
        lab.heal(1).unwrap();
        // The neighbour entry for node 1 went stale while it was cut off; allow a few tries.
        assert!((0..10).any(|_| reach()), "healed node unreachable");
        drop(lab);
        let list = String::from_utf8(Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
        assert!(!list.contains(&ns), "namespace {ns} left behind: {list}");
    }
}
