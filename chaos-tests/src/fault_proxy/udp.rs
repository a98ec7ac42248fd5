//! UDP forwarding: one upstream socket per client address (so QUIC's replies find their
//! way back), every datagram passed through [`Shared::udp_fate`], delayed ones delivered by
//! a scheduler thread in deadline order.

use super::{Shared, POLL};
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

enum Target {
    /// Back to a client through the listen socket.
    Client(Arc<UdpSocket>, SocketAddr),
    /// To the upstream through that client's connected socket.
    Upstream(Arc<UdpSocket>),
}

impl Target {
    fn send(&self, data: &[u8]) {
        // A send error (upstream not listening, buffer full) is what a lossy link does anyway.
        let _ = match self {
            Target::Client(s, to) => s.send_to(data, to),
            Target::Upstream(s) => s.send(data),
        };
    }
}

struct Pending {
    at: Instant,
    order: u64,
    data: Vec<u8>,
    target: Arc<Target>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    // Reversed: BinaryHeap is a max-heap and the earliest deadline must come out first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

#[derive(Default)]
struct Queue {
    heap: Mutex<(BinaryHeap<Pending>, u64)>,
    wake: Condvar,
}

struct Link {
    shared: Arc<Shared>,
    queue: Arc<Queue>,
}

impl Link {
    /// Forward one datagram under the current faults.
    fn pass(&self, data: &[u8], target: &Arc<Target>) {
        let fate = self.shared.udp_fate();
        for _ in 0..fate.copies {
            self.shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            if fate.delay.is_zero() {
                target.send(data);
            } else {
                let mut q = self.queue.heap.lock().expect("queue lock");
                q.1 += 1;
                let order = q.1;
                q.0.push(Pending {
                    at: Instant::now() + fate.delay,
                    order,
                    data: data.to_vec(),
                    target: target.clone(),
                });
                self.queue.wake.notify_one();
            }
        }
    }
}

pub(super) fn start(listen: SocketAddr, upstream: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let sock = Arc::new(UdpSocket::bind(listen)?);
    sock.set_read_timeout(Some(POLL))?;
    let bound = sock.local_addr()?;
    let queue = Arc::new(Queue::default());
    spawn_scheduler(shared.clone(), queue.clone());
    std::thread::Builder::new().name(format!("udp-proxy-{bound}")).spawn(move || {
        let link = Arc::new(Link { shared: shared.clone(), queue });
        let mut clients: HashMap<SocketAddr, Arc<Target>> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        while !shared.stopped() {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(_) => continue,
            };
            let target = match clients.get(&from) {
                Some(t) => t.clone(),
                None => match open_client(&sock, from, upstream, link.clone()) {
                    Ok(t) => clients.entry(from).or_insert(t).clone(),
                    Err(_) => continue,
                },
            };
            link.pass(&buf[..n], &target);
        }
    })?;
    Ok(bound)
}

/// A socket towards the upstream for one client, and the thread carrying its replies back.
fn open_client(
    listen: &Arc<UdpSocket>,
    client: SocketAddr,
    upstream: SocketAddr,
    link: Arc<Link>,
) -> std::io::Result<Arc<Target>> {
    // A socket bound to loopback cannot send to another address (a namespace's bridge).
    let bind: SocketAddr = match (upstream.is_ipv4(), upstream.ip().is_loopback()) {
        (true, true) => "127.0.0.1:0",
        (true, false) => "0.0.0.0:0",
        (false, true) => "[::1]:0",
        (false, false) => "[::]:0",
    }
    .parse()
    .expect("literal");
    let up = Arc::new(UdpSocket::bind(bind)?);
    up.connect(upstream)?;
    up.set_read_timeout(Some(POLL))?;
    let back = Arc::new(Target::Client(listen.clone(), client));
    let reader = up.clone();
    std::thread::Builder::new().name(format!("udp-proxy-back-{client}")).spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !link.shared.stopped() {
            match reader.recv(&mut buf) {
                Ok(n) => link.pass(&buf[..n], &back),
                Err(_) => continue,
            }
        }
    })?;
    Ok(Arc::new(Target::Upstream(up)))
}

fn spawn_scheduler(shared: Arc<Shared>, queue: Arc<Queue>) {
    let _ = std::thread::Builder::new().name("udp-proxy-scheduler".into()).spawn(move || {
        let mut q = queue.heap.lock().expect("queue lock");
        while !shared.stopped() {
            let now = Instant::now();
            match q.0.peek() {
                Some(p) if p.at <= now => {
                    let p = q.0.pop().expect("peeked");
                    drop(q);
                    p.target.send(&p.data);
                    q = queue.heap.lock().expect("queue lock");
                }
                Some(p) => {
                    let wait = (p.at - now).min(POLL);
                    q = queue.wake.wait_timeout(q, wait).expect("queue lock").0;
                }
                None => q = queue.wake.wait_timeout(q, POLL).expect("queue lock").0,
            }
        }
    });
}
