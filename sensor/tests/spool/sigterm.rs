//! The real sensor binary on a live source (loopback): SIGTERM writes the flows and devices
//! it holds in memory to the spool before it exits, and an uplink that cannot even start
//! (unreadable TLS files) is restarted with backoff, not ended silently.

use super::*;
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn wait_for_line(lines: &mpsc::Receiver<String>, log: &mut Vec<String>, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(needle);
                log.push(l);
                if hit {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn sigterm_spools_live_flows_and_devices_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (spool_dir, tls_dir) = (dir.path().join("spool"), dir.path().join("tls"));
    std::fs::create_dir_all(&tls_dir).unwrap();
    for f in ["sensor.pem", "sensor.key", "ca.pem"] {
        std::fs::write(tls_dir.join(f), "not a certificate").unwrap();
    }
    let target = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardline-sensor"))
        .args(["run", "--sensor-id", "s1", "--site", "north", "--server", "127.0.0.1:9", "--interface", "lo"])
        .arg("--spool-dir")
        .arg(&spool_dir)
        .arg("--tls-dir")
        .arg(&tls_dir)
        .args(["--bpf", &format!("udp port {port}")])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut log = Vec::new();
    assert!(wait_for_line(&lines, &mut log, "reading", Duration::from_secs(30)), "capture started: {log:#?}");
    // The uplink cannot set up TLS with these files: it must say so and be restarted.
    assert!(wait_for_line(&lines, &mut log, "restarting it in", Duration::from_secs(30)), "{log:#?}");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sport = sender.local_addr().unwrap().port();
    // "reading" is logged before the capture handle is active: keep sending a while, so
    // the sensor has seen some of them (each read returns within its 250 ms timeout).
    let mut sent = 0u64;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        sender.send_to(b"wardline sigterm test", ("127.0.0.1", port)).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    // The flow is only in memory now (far from any idle timeout); stop as a service manager would.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            while let Ok(l) = lines.recv_timeout(Duration::from_secs(1)) {
                log.push(l);
            }
            panic!("the sensor did not stop within 30 s of SIGTERM: {log:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(2)) {
        log.push(l);
    }
    assert!(exit.success(), "graceful exit: {exit:?} {log:#?}");
    assert!(log.iter().any(|l| l.contains("stopping on SIGTERM")), "{log:#?}");
    let spool = Spool::open(&spool_dir, 1 << 30).unwrap();
    let batches = spool.next_batches(usize::MAX).unwrap();
    let flow = batches
        .iter()
        .flat_map(|b| b.flows())
        .find(|f| (f.a_port, f.b_port) == (sport, port))
        .unwrap_or_else(|| panic!("the live flow was spooled at SIGTERM: {batches:#?}"));
    assert!(flow.packets_ab > 0 && flow.packets_ab <= sent, "{flow:?} of {sent} sent");
    let packets = flow.packets_ab;
    assert!(batches.iter().flat_map(|b| &b.events).any(|e| matches!(e, Event::Stats(s) if s.packets >= packets)));
}
