//! A fault-injecting proxy for loopback links: TCP (Raft RPC, API) and UDP (QUIC ingest).
//!
//! `tc netem` is not available on the test machines (decision 0017), so delay, loss,
//! duplication, reordering and partitions come from a process in the path instead. Each
//! proxy forwards one listen address to one upstream address; its [`Faults`] can be changed
//! at any moment through a [`FaultHandle`] (in-process) or the control socket of the
//! `wardline-fault-proxy` binary.
//!
//! Randomness comes from a seeded generator so a run's fault pattern can be replayed.

mod control;
mod tcp;
mod udp;

pub use control::{apply_command, serve_control};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to traffic right now. The default forwards everything untouched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// UDP: probability a datagram is dropped. TCP: probability a chunk is held back for a
    /// retransmission-like pause (TCP itself never loses bytes; loss shows as stalls).
    pub loss: f64,
    /// Fixed delay added to every datagram / chunk.
    pub delay: Duration,
    /// Extra uniformly random delay in `0..jitter` (UDP: reorders datagrams as a side effect).
    pub jitter: Duration,
    /// UDP: probability a datagram is sent twice.
    pub duplicate: f64,
    /// UDP: probability a datagram is held back by [`REORDER_HOLD`] so later ones overtake it.
    pub reorder: f64,
    /// Blackhole: UDP datagrams are dropped both ways; TCP connections stall (bytes are held,
    /// not lost, as a real partition does to a live connection) and new connections are
    /// accepted but never reach the upstream until healed.
    pub partitioned: bool,
}

/// How long a reordered datagram waits (long enough for several others to overtake it).
pub const REORDER_HOLD: Duration = Duration::from_millis(15);
/// The pause a "lost" TCP chunk costs, like one retransmission timeout on loopback.
pub const TCP_LOSS_STALL: Duration = Duration::from_millis(200);

/// Which transport a proxy forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// Counters of what the proxy did (both directions together).
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams (UDP) or chunks (TCP) received from either side.
    pub received: AtomicU64,
    /// Datagrams or chunks written to the other side (duplicates included).
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    /// TCP connections accepted / cut by [`FaultHandle::cut_connections`].
    pub connections: AtomicU64,
    pub cut: AtomicU64,
}

/// A plain copy of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub received: u64,
    pub forwarded: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub connections: u64,
    pub cut: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: g(&self.received),
            forwarded: g(&self.forwarded),
            dropped: g(&self.dropped),
            duplicated: g(&self.duplicated),
            reordered: g(&self.reordered),
            connections: g(&self.connections),
            cut: g(&self.cut),
        }
    }
}

/// State shared by a proxy's threads and its handles.
pub(crate) struct Shared {
    faults: Mutex<Faults>,
    rng: Mutex<ChaCha8Rng>,
    pub(crate) stats: Stats,
    pub(crate) stop: AtomicBool,
    /// Bumped by `cut_connections`; TCP pumps started under an older epoch close.
    pub(crate) cut_epoch: AtomicU64,
}

/// What to do with one datagram or chunk, decided under the current faults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fate {
    /// 0 = drop, 1 = forward, 2 = forward twice.
    pub copies: u8,
    pub delay: Duration,
}

impl Shared {
    fn new(seed: u64) -> Shared {
        Shared {
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            stats: Stats::default(),
            stop: AtomicBool::new(false),
            cut_epoch: AtomicU64::new(0),
        }
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults.lock().expect("faults lock").clone()
    }

    pub(crate) fn partitioned(&self) -> bool {
        self.faults.lock().expect("faults lock").partitioned
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Decide a UDP datagram's fate.
    pub(crate) fn udp_fate(&self) -> Fate {
        let f = self.faults();
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let mut rng = self.rng.lock().expect("rng lock");
        if f.partitioned || (f.loss > 0.0 && rng.gen::<f64>() < f.loss) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Fate { copies: 0, delay: Duration::ZERO };
        }
        let mut delay = f.delay + jitter(&mut *rng, f.jitter);
        if f.reorder > 0.0 && rng.gen::<f64>() < f.reorder {
            self.stats.reordered.fetch_add(1, Ordering::Relaxed);
            delay += REORDER_HOLD;
        }
        let copies = if f.duplicate > 0.0 && rng.gen::<f64>() < f.duplicate {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        Fate { copies, delay }
    }

    /// How long to hold a TCP chunk before writing it (never dropped: TCP is a byte stream).
    pub(crate) fn tcp_delay(&self) -> Duration {
        let f = self.faults();
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let mut rng = self.rng.lock().expect("rng lock");
        let mut delay = f.delay + jitter(&mut *rng, f.jitter);
        if f.loss > 0.0 && rng.gen::<f64>() < f.loss {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            delay += TCP_LOSS_STALL;
        }
        delay
    }
}

fn jitter(rng: &mut impl Rng, max: Duration) -> Duration {
    if max.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_micros(rng.gen_range(0..max.as_micros().max(1) as u64))
    }
}

/// Changes a running proxy's faults; cheap to clone and send to other threads.
#[derive(Clone)]
pub struct FaultHandle {
    shared: Arc<Shared>,
}

impl FaultHandle {
    pub fn set(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults lock") = faults;
    }

    pub fn update(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.shared.faults.lock().expect("faults lock"));
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Blackhole the link (both directions).
    pub fn partition(&self) {
        self.update(|f| f.partitioned = true);
    }

    /// Remove every fault: the link forwards untouched again.
    pub fn heal(&self) {
        self.set(Faults::default());
    }

    /// Close every live TCP connection through this proxy (new ones are still accepted).
    pub fn cut_connections(&self) {
        self.shared.cut_epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }
}

/// One running proxy. Stops its threads when dropped.
pub struct FaultProxy {
    pub transport: Transport,
    /// Where clients connect / send (the proxy's own address).
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    handle: FaultHandle,
}

impl FaultProxy {
    /// Start forwarding `listen` → `upstream` (give port 0 to let the OS pick; read
    /// [`FaultProxy::listen`] for the address). `seed` drives every random choice.
    pub fn start(transport: Transport, listen: SocketAddr, upstream: SocketAddr, seed: u64) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::new(seed));
        let listen = match transport {
            Transport::Tcp => tcp::start(listen, upstream, shared.clone())?,
            Transport::Udp => udp::start(listen, upstream, shared.clone())?,
        };
        Ok(FaultProxy { transport, listen, upstream, handle: FaultHandle { shared } })
    }

    pub fn handle(&self) -> FaultHandle {
        self.handle.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.handle.shared.stop.store(true, Ordering::SeqCst);
        self.handle.cut_connections();
    }
}

/// Poll interval of the proxy threads' blocking calls (how fast they notice stop / cut).
pub(crate) const POLL: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests;
