//! The proxy on real loopback sockets: loss, duplicates, reordering, partition and heal,
//! for UDP and TCP.

use super::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Instant;

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A UDP sink behind a proxy, and a client socket sending to the proxy.
fn udp_link(seed: u64) -> (FaultProxy, UdpSocket, UdpSocket) {
    let sink = UdpSocket::bind(any()).unwrap();
    let proxy = FaultProxy::start(Transport::Udp, any(), sink.local_addr().unwrap(), seed).unwrap();
    let client = UdpSocket::bind(any()).unwrap();
    client.connect(proxy.listen).unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
    (proxy, sink, client)
}

/// Send `n` numbered datagrams and return every datagram the sink got until 400 ms pass
/// without one after the last was sent (a busy machine may pause the sender longer than
/// that). The sink reads while the client sends, and the client paces itself: a socket
/// buffer holds only a few hundred small datagrams, and overflowing one (the proxy's or the
/// sink's) would look like proxy loss.
fn exchange(client: &UdpSocket, sink: &UdpSocket, n: u32) -> Vec<u32> {
    let sink = sink.try_clone().unwrap();
    let sent_all = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let sent_all = sent_all.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                match sink.recv(&mut buf) {
                    Ok(len) => {
                        assert_eq!(len, 4);
                        got.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                    }
                    Err(_) if sent_all.load(std::sync::atomic::Ordering::SeqCst) => return got,
                    Err(_) => {}
                }
            }
        })
    };
    for i in 0..n {
        client.send(&i.to_be_bytes()).unwrap();
        if i % 5 == 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sent_all.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().unwrap()
}

#[test]
fn udp_loss_drops_roughly_the_configured_share() {
    let (proxy, sink, client) = udp_link(1);
    proxy.handle().update(|f| f.loss = 0.2);
    let got = exchange(&client, &sink, 2000);
    let stats = proxy.handle().stats();
    // What the proxy forwarded arrived, and what it dropped is what is missing of what it got
    // (on a starved machine the kernel may drop a few before the proxy reads them).
    assert_eq!(got.len() as u64, stats.forwarded, "{stats:?}");
    assert_eq!(stats.received - stats.forwarded, stats.dropped, "{stats:?}");
    assert!(stats.received >= 1900, "the proxy got only {} of 2000: {stats:?}", stats.received);
    // 20 % of ~2000 = 400; a binomial's 5 sigma is about ±90.
    let lost = stats.dropped;
    assert!((300..=500).contains(&lost), "lost {lost} of {} at 20 % loss", stats.received);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), got.len(), "loss alone must not duplicate");
}

#[test]
fn udp_duplicates_are_delivered_twice() {
    let (proxy, sink, client) = udp_link(2);
    proxy.handle().update(|f| f.duplicate = 0.3);
    let got = exchange(&client, &sink, 1000);
    let distinct: HashSet<_> = got.iter().collect();
    assert_eq!(distinct.len(), 1000, "duplication must not lose datagrams");
    let extra = got.len() - 1000;
    assert!((200..=400).contains(&extra), "{extra} duplicates of 1000 at 30 %");
    assert_eq!(proxy.handle().stats().duplicated as usize, extra);
}

#[test]
fn udp_reorder_lets_later_datagrams_overtake() {
    let (proxy, sink, client) = udp_link(3);
    proxy.handle().update(|f| f.reorder = 0.2);
    let got = exchange(&client, &sink, 500);
    let stats = proxy.handle().stats();
    assert_eq!(got.len() as u64, stats.received, "reordering must not lose datagrams: {stats:?}");
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), got.len(), "nor duplicate them");
    let inversions = got.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions > 10, "only {inversions} out-of-order arrivals at 20 % reorder");
    // Without the fault the same link keeps order.
    proxy.handle().heal();
    let got = exchange(&client, &sink, 300);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "healed link reordered datagrams");
}

#[test]
fn udp_partition_blocks_both_ways_and_heal_restores() {
    let echo = UdpSocket::bind(any()).unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let proxy = FaultProxy::start(Transport::Udp, any(), echo_addr, 4).unwrap();
    let client = UdpSocket::bind(any()).unwrap();
    client.connect(proxy.listen).unwrap();
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 64];
    client.send(b"ping").unwrap();
    assert_eq!(client.recv(&mut buf).unwrap(), 4, "healthy link must echo");
    proxy.handle().partition();
    for _ in 0..5 {
        client.send(b"ping").unwrap();
        assert!(client.recv(&mut buf).is_err(), "a partitioned link delivered a reply");
    }
    proxy.handle().heal();
    client.send(b"ping").unwrap();
    assert_eq!(client.recv(&mut buf).unwrap(), 4, "healed link must echo again");
}

fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind(any()).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

#[test]
fn tcp_partition_stalls_then_heal_delivers_the_held_bytes() {
    let proxy = FaultProxy::start(Transport::Tcp, any(), tcp_echo(), 5).unwrap();
    let mut s = TcpStream::connect(proxy.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert_eq!(roundtrip(&mut s, b"hello").unwrap(), b"hello");
    proxy.handle().partition();
    s.write_all(b"held!").unwrap();
    let mut buf = [0u8; 5];
    assert!(s.read_exact(&mut buf).is_err(), "a partitioned TCP link delivered bytes");
    // A new connection during the partition reaches nobody.
    let mut fresh = TcpStream::connect(proxy.listen).unwrap();
    fresh.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    fresh.write_all(b"x").unwrap();
    let echoed = fresh.read(&mut [0u8; 1]).map(|n| n == 1).unwrap_or(false);
    assert!(!echoed, "a new connection got through a partition");
    proxy.handle().heal();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held!", "the stalled bytes arrive after heal, none lost");
    assert_eq!(roundtrip(&mut s, b"again").unwrap(), b"again");
}

#[test]
fn tcp_delay_is_added_each_way_and_cut_closes_connections() {
    let proxy = FaultProxy::start(Transport::Tcp, any(), tcp_echo(), 6).unwrap();
    let mut s = TcpStream::connect(proxy.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    proxy.handle().update(|f| f.delay = Duration::from_millis(100));
    let t = Instant::now();
    assert_eq!(roundtrip(&mut s, b"slow").unwrap(), b"slow");
    assert!(t.elapsed() >= Duration::from_millis(200), "round trip took only {:?}", t.elapsed());
    proxy.handle().heal();
    proxy.handle().cut_connections();
    let mut buf = [0u8; 4];
    let r = s.write_all(b"gone").and_then(|_| s.read(&mut buf));
    assert!(matches!(r, Ok(0) | Err(_)), "a cut connection still answered: {r:?}");
    assert!(proxy.handle().stats().cut >= 1);
    // New connections work after a cut.
    let mut s2 = TcpStream::connect(proxy.listen).unwrap();
    s2.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert_eq!(roundtrip(&mut s2, b"new!").unwrap(), b"new!");
}

#[test]
fn same_seed_gives_the_same_fault_pattern() {
    let pattern = |seed| {
        let (proxy, sink, client) = udp_link(seed);
        proxy.handle().update(|f| f.loss = 0.3);
        exchange(&client, &sink, 300)
    };
    assert_eq!(pattern(42), pattern(42), "a seed must replay the same drops");
    assert_ne!(pattern(42), pattern(43));
}

#[test]
fn control_commands_change_faults_and_refuse_bad_input() {
    let proxy = FaultProxy::start(Transport::Udp, any(), any(), 7).unwrap();
    let h = [proxy.handle()];
    assert!(apply_command(&h, "loss 0.25").starts_with("ok"));
    assert!(apply_command(&h, "delay 40 10").starts_with("ok"));
    assert!(apply_command(&h, "duplicate 0.1").starts_with("ok"));
    assert!(apply_command(&h, "reorder 0.05").starts_with("ok"));
    assert!(apply_command(&h, "partition").starts_with("ok"));
    let f = h[0].faults();
    assert_eq!((f.loss, f.duplicate, f.reorder, f.partitioned), (0.25, 0.1, 0.05, true));
    assert_eq!((f.delay, f.jitter), (Duration::from_millis(40), Duration::from_millis(10)));
    let bad = apply_command(&h, "loss 1.5");
    assert!(bad.starts_with("error") && bad.contains("between 0 and 1"), "{bad}");
    assert!(apply_command(&h, "delay soon").contains("whole number"));
    assert!(apply_command(&h, "explode").contains("unknown command `explode`"));
    assert!(apply_command(&h, "heal").starts_with("ok"));
    assert_eq!(h[0].faults(), Faults::default());
}
