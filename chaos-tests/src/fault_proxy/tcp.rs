//! TCP forwarding: two pump threads per connection. Faults delay chunks (loss shows as a
//! retransmission-like stall), a partition stalls live connections and parks new ones, and
//! `cut_connections` closes every live connection.

use super::{Shared, POLL};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn start(listen: SocketAddr, upstream: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name(format!("tcp-proxy-{bound}")).spawn(move || {
        while !shared.stopped() {
            match listener.accept() {
                Ok((client, _)) => {
                    let shared = shared.clone();
                    let _ = std::thread::Builder::new()
                        .name("tcp-proxy-conn".into())
                        .spawn(move || connection(client, upstream, shared));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    })?;
    Ok(bound)
}

fn connection(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let epoch = shared.cut_epoch.load(Ordering::SeqCst);
    // Partitioned: the client's connect "succeeds" at the proxy but nothing ever answers,
    // as with a peer behind a blackhole; the connection is dropped when the link heals.
    while shared.partitioned() {
        if shared.stopped() || shared.cut_epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        std::thread::sleep(POLL);
    }
    let Ok(server) = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let shared2 = shared.clone();
    let up =
        std::thread::Builder::new().name("tcp-proxy-up".into()).spawn(move || pump(client, server, shared2, epoch));
    pump(s2, c2, shared, epoch);
    if let Ok(t) = up {
        let _ = t.join();
    }
}

/// Copy `from` → `to` until EOF, a cut or stop.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>, epoch: u64) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    let cut = |s: &Shared| s.stopped() || s.cut_epoch.load(Ordering::SeqCst) != epoch;
    loop {
        if cut(&shared) {
            shared.stats.cut.fetch_add(1, Ordering::Relaxed);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                continue
            }
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        };
        // A partition stalls the bytes in hand; they go through once healed (TCP would
        // retransmit them), unless the connection is cut meanwhile.
        while shared.partitioned() && !cut(&shared) {
            std::thread::sleep(POLL);
        }
        let delay = shared.tcp_delay();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if cut(&shared) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
    }
}
