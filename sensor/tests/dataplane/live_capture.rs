//! The live capture path, the way every production sensor runs: libpcap on a real interface.
//! Each test makes its own network namespace with a veth pair (`cap` ↔ `inj`), nothing on the
//! host's interfaces. The sensor's capture code reads `cap` while the test writes a generated
//! capture's frames into `inj` (the test transmits; the sensor never does). IPv6 is off in the
//! namespace so the kernel adds no frames of its own and every count is exact.
//! Needs root (network namespaces, raw sockets); skipped with a message otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wardline_common::{Event, MacAddr};
use wardline_sensor::capture::live::{self, LiveConfig};
use wardline_sensor::capture::{for_each_packet, CaptureSummary, RawPacket, Source};
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip(8)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A namespace with the veth pair `cap` ↔ `inj`; removed on drop.
struct Lab {
    ns: String,
}

impl Lab {
    fn create() -> Option<Lab> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: live capture in a network namespace needs root");
            return None;
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let ns = format!("wlcap{}x{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::SeqCst));
        ip(&["netns", "add", &ns]);
        let lab = Lab { ns };
        let sysctl = |key: &str| {
            let out = Command::new("ip").args(["netns", "exec", &lab.ns, "sysctl", "-qw", key]).output().unwrap();
            assert!(out.status.success(), "sysctl {key}: {}", String::from_utf8_lossy(&out.stderr));
        };
        // No router solicitations, DAD or MLD: the only frames on the pair are the test's.
        sysctl("net.ipv6.conf.all.disable_ipv6=1");
        sysctl("net.ipv6.conf.default.disable_ipv6=1");
        ip(&["-n", &lab.ns, "link", "add", "cap", "type", "veth", "peer", "name", "inj"]);
        for dev in ["cap", "inj"] {
            lab.link_mtu_up(dev);
        }
        Some(lab)
    }

    /// Run `f` on a thread inside the namespace (its sockets stay there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only, with a namespace fd we hold open.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {path}");
            f()
        })
    }

    fn link(&self, dev: &str, state: &str) {
        ip(&["-n", &self.ns, "link", "set", dev, state]);
    }

    fn link_mtu_up(&self, dev: &str) {
        // Generated frames may be up to a jumbo frame; the pair must carry them whole.
        ip(&["-n", &self.ns, "link", "set", dev, "mtu", "9000", "up"]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn frames_of(path: &Path) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for_each_packet(&Source::File(path.to_path_buf()), None, |p| {
        frames.push(p.data.to_vec());
        ControlFlow::Continue(())
    })
    .unwrap();
    frames
}

/// Write `frames` into `inj`, a few at a time so the veth never overruns the receive backlog
/// (that loss would be the test's, not the sensor's).
fn inject(frames: Vec<Vec<u8>>) -> usize {
    let mut out = pcap::Capture::from_device("inj").unwrap().open().unwrap();
    for (i, f) in frames.iter().enumerate() {
        out.sendpacket(&f[..]).unwrap_or_else(|e| panic!("injecting frame {i} ({} bytes): {e}", f.len()));
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    frames.len()
}

/// What the tests compare, free of capture time: devices with their addresses and evidence,
/// and packets and bytes per conversation (summed, so an idle timeout that splits a flow in
/// capture time but not in the faster replay changes nothing).
#[derive(Debug, Default, PartialEq)]
struct Seen {
    devices: BTreeMap<MacAddr, (BTreeSet<IpAddr>, BTreeSet<String>)>,
    conversations: BTreeMap<String, (u64, u64)>,
}

fn seen(events: Vec<Event>) -> Seen {
    let mut s = Seen::default();
    for e in events {
        match e {
            Event::Device(d) => {
                let (ips, evidence) = s.devices.entry(d.mac).or_default();
                ips.extend(d.ips);
                evidence.extend(d.evidence.iter().map(|e| format!("{:?}={}", e.field, e.value)));
            }
            Event::Flow(f) => {
                let key = format!(
                    "{} vlan {:?} {}:{} {}:{} {}",
                    f.ip_proto, f.vlan, f.a_ip, f.a_port, f.b_ip, f.b_port, f.app
                );
                let c = s.conversations.entry(key).or_default();
                c.0 += f.packets_ab + f.packets_ba;
                c.1 += f.bytes_ab + f.bytes_ba;
            }
            _ => {}
        }
    }
    s
}

/// Run the sensor's pipeline over `source`, counting frames in `read` as they come.
fn pipeline_over(source: &Source, stop: Option<&AtomicBool>, read: &AtomicU64) -> (Seen, CaptureSummary) {
    let mut pl = Pipeline::new(PipelineConfig::default());
    let summary = for_each_packet(source, stop, |p: &RawPacket<'_>| {
        pl.process(p);
        read.fetch_add(1, Ordering::SeqCst);
        ControlFlow::Continue(())
    })
    .unwrap();
    let (events, _) = pl.finish();
    (seen(events), summary)
}

/// Wait until `count` stops moving for a moment (everything written has been read).
fn settle(count: &AtomicU64) {
    let (mut last, mut since) = (count.load(Ordering::SeqCst), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(20);
    while since.elapsed() < Duration::from_millis(500) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = count.load(Ordering::SeqCst);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

fn generated_ward(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ward.pcap");
    wardline_sim::generate_named("ward", 3, 1, &path).unwrap();
    path
}

#[test]
fn live_capture_finds_the_devices_and_flows_analyze_finds_in_the_same_file() {
    let Some(lab) = Lab::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = generated_ward(dir.path());
    let (expected, file_summary) = pipeline_over(&Source::File(file.clone()), None, &AtomicU64::new(0));
    assert!(expected.devices.len() >= 10 && expected.conversations.len() >= 10, "{expected:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicU64::new(0));
    let capture = {
        let (stop, read) = (stop.clone(), read.clone());
        lab.run(move || pipeline_over(&Source::Live { iface: "cap".into(), bpf: None }, Some(&stop), &read))
    };
    // Let the capture open its socket first: a frame sent before would be missed, and the
    // equality below would say so.
    std::thread::sleep(Duration::from_millis(300));
    let frames = frames_of(&file);
    let sent = lab.run(move || inject(frames)).join().unwrap();
    assert_eq!(sent as u64, file_summary.packets);
    settle(&read);
    stop.store(true, Ordering::SeqCst);
    let (got, summary) = capture.join().unwrap();
    assert_eq!(summary.packets, sent as u64, "frames captured vs sent: {summary:?}");
    assert_eq!(summary.kernel_dropped + summary.interface_dropped, 0, "{summary:?}");
    assert_eq!(summary.kernel_received, sent as u64, "{summary:?}");
    assert_eq!(got.devices, expected.devices, "devices differ between live capture and the file");
    assert_eq!(got.conversations, expected.conversations, "flows differ between live capture and the file");
}

#[test]
fn overload_drops_are_counted_by_the_kernel_and_reported() {
    let Some(lab) = Lab::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let frames = frames_of(&generated_ward(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicU64::new(0));
    let capture = {
        let (stop, read) = (stop.clone(), read.clone());
        lab.run(move || {
            // A small kernel buffer and a reader slower than the sender: the buffer overflows.
            let mut cfg = LiveConfig::new("cap", None);
            cfg.buffer_size = 64 * 1024;
            live::run(&cfg, Some(&stop), |_| {
                read.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                ControlFlow::Continue(())
            })
            .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let sent = lab.run(move || inject(frames)).join().unwrap() as u64;
    settle(&read);
    stop.store(true, Ordering::SeqCst);
    let s = capture.join().unwrap();
    assert!(s.kernel_dropped > 0, "a 64 KiB buffer behind a slow reader dropped nothing: {s:?}");
    assert!(s.packets < sent, "{s:?}");
    // Every frame sent is accounted for: read by the sensor or counted as dropped.
    assert_eq!(s.packets + s.kernel_dropped + s.interface_dropped, sent, "{s:?}");
    assert_eq!(s.kernel_received, s.packets + s.kernel_dropped, "{s:?}");
}

/// Send `frames` while the capture counts into `read`; how many of them it read.
fn deliver(lab: &Lab, read: &AtomicU64, frames: Vec<Vec<u8>>) -> u64 {
    let before = read.load(Ordering::SeqCst);
    lab.run(move || inject(frames)).join().unwrap();
    settle(read);
    read.load(Ordering::SeqCst) - before
}

/// Probe with single frames until the capture reads one again (bounded): it has resumed.
fn wait_until_capturing(lab: &Lab, read: &AtomicU64, probe: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let before = read.load(Ordering::SeqCst);
    while read.load(Ordering::SeqCst) == before {
        assert!(Instant::now() < deadline, "capture did not resume within 15 s of the interface coming back");
        let p = probe.to_vec();
        lab.run(move || inject(vec![p])).join().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    settle(read);
}

#[test]
fn an_interface_that_goes_down_or_away_and_comes_back_is_captured_again() {
    let Some(lab) = Lab::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let frames = frames_of(&generated_ward(dir.path()));
    let probe = frames[0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicU64::new(0));
    let capture = {
        let (stop, read) = (stop.clone(), read.clone());
        lab.run(move || {
            live::run(&LiveConfig::new("cap", None), Some(&stop), |_| {
                read.fetch_add(1, Ordering::SeqCst);
                ControlFlow::Continue(())
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(deliver(&lab, &read, frames[..500].to_vec()), 500);

    // Down and up: the same interface comes back; frames after it are read.
    lab.link("cap", "down");
    std::thread::sleep(Duration::from_millis(300));
    lab.link("cap", "up");
    wait_until_capturing(&lab, &read, &probe);
    assert_eq!(deliver(&lab, &read, frames[500..1000].to_vec()), 500, "frames lost after the link came back up");

    // Away and back (a replugged NIC, a reloaded driver): the old handle fails with the
    // device gone, and the capture reopens the new interface of the same name.
    ip(&["-n", &lab.ns, "link", "del", "cap"]);
    std::thread::sleep(Duration::from_millis(500));
    ip(&["-n", &lab.ns, "link", "add", "cap", "type", "veth", "peer", "name", "inj"]);
    for dev in ["cap", "inj"] {
        lab.link_mtu_up(dev);
    }
    wait_until_capturing(&lab, &read, &probe);
    assert_eq!(deliver(&lab, &read, frames[1000..1500].to_vec()), 500, "frames lost after the interface came back");

    stop.store(true, Ordering::SeqCst);
    let s = capture.join().unwrap().expect("a capture that reopens ends cleanly when stopped");
    assert!(s.reopens >= 1, "the interface was replaced but never reopened: {s:?}");
    assert_eq!(s.packets, read.load(Ordering::SeqCst));
}
