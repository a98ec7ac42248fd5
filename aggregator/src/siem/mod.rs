//! Forwarding alert events to a SIEM as RFC 5424 syslog (decision 0024).
//!
//! Alert events wait in the replicated state (`state::alerts`) with a replicated
//! "forwarded through" watermark. The forwarder runs on every node, and only the leader
//! sends: it reads the events after the watermark, sends them in order, then commits
//! `Command::AlertsForwarded` through Raft. A new leader starts after the last committed
//! watermark, so a failover drops nothing; events the old leader sent but had not yet
//! marked are sent again (at least once), with the same `event` sequence number in their
//! structured data for the SIEM to drop the repeat. Over UDP the datagrams themselves may
//! be lost (no acknowledgement exists); use TCP where every event must arrive.

pub mod syslog;

use crate::raft::RaftNode;
use crate::state::alerts::AlertEvent;
use crate::state::Command;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use syslog::{Origin, Payload};
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

/// How the syslog messages travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Octet-counted frames on one TCP connection (RFC 6587).
    Tcp,
    /// One message per datagram (RFC 5426).
    Udp,
}

/// `[siem]` in the node config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiemConfig {
    /// The syslog receiver, host:port.
    pub address: String,
    #[serde(default = "default_transport")]
    pub transport: Transport,
    #[serde(default = "default_payload")]
    pub format: Payload,
    /// Syslog facility number (0–23); default 16 (local0).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// HOSTNAME of the messages; default `wardline-node-<id>`.
    #[serde(default)]
    pub hostname: Option<String>,
}

fn default_transport() -> Transport {
    Transport::Tcp
}
fn default_payload() -> Payload {
    Payload::Cef
}
fn default_facility() -> u8 {
    16
}

impl SiemConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.facility > 23 {
            return Err(format!("siem.facility {} is not a syslog facility (0 to 23)", self.facility));
        }
        if !self.address.contains(':') {
            return Err(format!("siem.address {:?} must be host:port of the syslog receiver", self.address));
        }
        Ok(())
    }
}

/// Events sent at most per round (then the watermark is committed).
pub const EVENTS_PER_ROUND: usize = 500;
/// How often the forwarder looks for events.
const TICK: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Node-local counters of the forwarder.
#[derive(Debug, Default)]
pub struct SiemStatus {
    pub events_sent: AtomicU64,
    pub send_failures: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Udp(tokio::net::UdpSocket),
}

pub struct Forwarder {
    raft: Arc<RaftNode>,
    config: SiemConfig,
    origin: Origin,
    pub status: Arc<SiemStatus>,
}

impl Forwarder {
    pub fn new(raft: Arc<RaftNode>, config: SiemConfig) -> Self {
        let node_id = raft.node_id();
        let hostname = config.hostname.clone().unwrap_or_else(|| format!("wardline-node-{node_id}"));
        let origin = Origin { facility: config.facility, hostname, node_id };
        Forwarder { raft, config, origin, status: Arc::new(SiemStatus::default()) }
    }

    async fn connect(&self) -> std::io::Result<Conn> {
        match self.config.transport {
            Transport::Tcp => {
                let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.config.address))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
            Transport::Udp => {
                let target = tokio::net::lookup_host(&self.config.address).await?.next().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "the address resolves to nothing")
                })?;
                let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let s = tokio::net::UdpSocket::bind(bind).await?;
                s.connect(target).await?;
                Ok(Conn::Udp(s))
            }
        }
    }

    async fn send(&self, conn: &mut Conn, events: &[AlertEvent]) -> std::io::Result<()> {
        match conn {
            Conn::Tcp(s) => {
                let mut buf = Vec::new();
                for e in events {
                    buf.extend(syslog::octet_counted(&syslog::message(e, &self.origin, self.config.format)));
                }
                s.write_all(&buf).await?;
                s.flush().await
            }
            Conn::Udp(s) => {
                for e in events {
                    s.send(syslog::message(e, &self.origin, self.config.format).as_bytes()).await?;
                }
                Ok(())
            }
        }
    }

    /// Run until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut conn: Option<Conn> = None;
        let mut failures = 0u32;
        let mut retry_at = Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
            if *stop.borrow() {
                break;
            }
            if self.raft.metrics().current_leader != Some(self.raft.node_id()) {
                // Only the leader sends; a follower holds no connection.
                conn = None;
                continue;
            }
            if Instant::now() < retry_at {
                continue;
            }
            let events: Vec<AlertEvent> = self
                .raft
                .read_state(|s| {
                    let alerts = s.alerts();
                    let after = alerts.forwarded_through();
                    alerts.pending_events().iter().filter(|e| e.seq > after).take(EVENTS_PER_ROUND).cloned().collect()
                })
                .await;
            let Some(through) = events.last().map(|e| e.seq) else { continue };
            if conn.is_none() {
                match self.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        self.failed(&mut failures, &mut retry_at, format!("cannot connect: {e}"));
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            if let Err(e) = self.send(c, &events).await {
                conn = None;
                self.failed(&mut failures, &mut retry_at, format!("cannot send: {e}"));
                continue;
            }
            if failures > 0 {
                info!(siem = %self.config.address, "alert events reach the SIEM again");
            }
            failures = 0;
            self.status.events_sent.fetch_add(events.len() as u64, Ordering::Relaxed);
            if let Ok(mut last) = self.status.last_error.lock() {
                *last = None;
            }
            match self.raft.propose(Command::AlertsForwarded { through }).await {
                Ok(_) => debug!(through, "alert events forwarded"),
                // Sent but not marked: the next leader sends them again (same event seq).
                Err(e) => debug!("cannot record alert events forwarded through {through}: {e}"),
            }
        }
    }

    fn failed(&self, failures: &mut u32, retry_at: &mut Instant, what: String) {
        *failures = failures.saturating_add(1);
        let wait = Duration::from_millis(250u64.saturating_mul(1 << (*failures).min(7))).min(Duration::from_secs(30));
        *retry_at = Instant::now() + wait;
        self.status.send_failures.fetch_add(1, Ordering::Relaxed);
        warn!(
            siem = %self.config.address,
            "alert events not forwarded to the SIEM: {what}; they stay queued (replicated), retrying in {wait:.1?} — \
             check that the syslog receiver listens there ({:?})",
            self.config.transport
        );
        if let Ok(mut last) = self.status.last_error.lock() {
            *last = Some(what);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::NodeConfig;

    const BASE: &str = "node_id = 1\ndata_dir = \"/tmp/x\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nca=\"c\"\n";

    #[test]
    fn the_siem_section_has_defaults_and_refuses_mistakes() {
        let cfg: NodeConfig = toml::from_str(&format!("{BASE}[siem]\naddress = \"127.0.0.1:514\"\n")).unwrap();
        let siem = cfg.siem.unwrap();
        assert_eq!((siem.transport, siem.format, siem.facility), (super::Transport::Tcp, super::Payload::Cef, 16));
        assert!(siem.validate().is_ok());
        let udp_json = format!("{BASE}[siem]\naddress = \"h:514\"\ntransport = \"udp\"\nformat = \"json\"\n");
        let siem = toml::from_str::<NodeConfig>(&udp_json).unwrap().siem.unwrap();
        assert_eq!((siem.transport, siem.format), (super::Transport::Udp, super::Payload::Json));
        let typo = format!("{BASE}[siem]\naddress = \"h:514\"\nformta = \"json\"\n");
        assert!(toml::from_str::<NodeConfig>(&typo).unwrap_err().to_string().contains("formta"));
        let bad = format!("{BASE}[siem]\naddress = \"h:514\"\nfacility = 30\n");
        assert!(toml::from_str::<NodeConfig>(&bad).unwrap().siem.unwrap().validate().unwrap_err().contains("facility"));
        assert!(toml::from_str::<NodeConfig>(BASE).unwrap().siem.is_none(), "off unless configured");
    }
}
