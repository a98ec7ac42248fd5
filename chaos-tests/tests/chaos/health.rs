//! Sensor health heartbeats end to end (decision 0038): a real sensor (live capture on the
//! loopback interface, a filter that matches nothing, so it runs until stopped) sends a
//! heartbeat every second over QUIC to a real aggregator node. The sensor runs under
//! Debian's libfaketime with its wall clock 20 s ahead: the node records the heartbeat in
//! the replicated state, the measured clock offset is about −20 s, and a `sensor_unhealthy`
//! alert (`clock_offset`) opens; the clock is then put right in the running sensor and the
//! offset, the sensor's status and the alert follow.

use serde_json::Value;
use std::time::{Duration, Instant};
use wardline_chaos_tests::procs::*;

const SENSOR: &str = "ward-hb-1";
/// Where Debian's libfaketime package puts the multi-threaded library.
const FAKETIME_LIBS: [&str; 2] =
    ["/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1"];
/// How far ahead the sensor's clock runs at first.
const AHEAD_S: i64 = 20;

/// Poll `f` every 200 ms until it gives a value; panics naming `what` after `within`.
fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>, context: impl Fn() -> String) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} not within {within:?}\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn health(agg: &Aggregator) -> Option<Value> {
    let v = agg.get("/api/v1/sensors").ok()?;
    let h = v["health"][SENSOR].clone();
    (!h.is_null()).then_some(h)
}

/// The sensor's `sensor_unhealthy` alert about `target`, if any.
fn alert(agg: &Aggregator, target: &str) -> Option<Value> {
    let v = agg.get(&format!("/api/v1/alerts?kind=sensor_unhealthy&device={SENSOR}")).ok()?;
    v["alerts"].as_array()?.iter().find(|a| a["target"] == target).cloned()
}

fn metrics(agg: &Aggregator) -> String {
    agg.api_client().unwrap().get(format!("{}/metrics", agg.api())).send().unwrap().text().unwrap()
}

#[test]
fn heartbeats_are_recorded_measure_the_clock_offset_and_raise_and_clear_an_alert() {
    let lib = FAKETIME_LIBS
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime is not installed (Debian package faketime): the clock offset cannot be set for this test");
    let fleet = Fleet::new().unwrap();
    let agg = Aggregator::start(&fleet, 1, None).unwrap();
    let tls = fleet.issue_sensor(SENSOR, "north").unwrap();
    let clock = fleet.path().join("sensor-clock");
    std::fs::write(&clock, format!("+{AHEAD_S}\n")).unwrap();
    let config = fleet.path().join("sensor-hb.toml");
    std::fs::write(
        &config,
        format!(
            "sensor_id = {SENSOR:?}\nsite = \"north\"\nspool_dir = {:?}\n[uplink]\nserver = {:?}\nserver_name = \
             \"localhost\"\nheartbeat_interval_secs = 1\n[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n[capture]\n\
             interface = \"lo\"\nbpf = \"udp port 9\"\n",
            fleet.path().join("spool-hb").display().to_string(),
            agg.quic_addr(),
            tls.join("sensor.pem").display().to_string(),
            tls.join("sensor.key").display().to_string(),
            tls.join("ca.pem").display().to_string(),
        ),
    )
    .unwrap();
    let log = fleet.path().join("sensor-hb.log");
    let clock_env = clock.display().to_string();
    let mut sensor = Sensor::start(
        &config,
        &log,
        &[
            ("LD_PRELOAD", lib),
            ("FAKETIME_TIMESTAMP_FILE", &clock_env),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("DONT_FAKE_MONOTONIC", "1"),
            ("RUST_LOG", "info,wardline_sensor::uplink=debug,sled=warn"),
        ],
    )
    .unwrap();
    let context = || format!("sensor log:\n{}\naggregator log:\n{}", sensor_log(&log), agg.log_text());

    // The heartbeat arrives and carries the offset the sensor measured: about −20 s.
    let h = wait_for(
        "a heartbeat with a clock offset near -20 s",
        Duration::from_secs(30),
        || {
            health(&agg)
                .filter(|h| h["clock_offset_ms"].as_f64().is_some_and(|o| (o + AHEAD_S as f64 * 1e3).abs() < 1500.0))
        },
        context,
    );
    assert_eq!(h["status"], "unhealthy", "{h}");
    assert_eq!(h["conditions"], serde_json::json!(["clock_offset"]), "{h}");
    let hb = &h["heartbeat"];
    assert_eq!(hb["site"], "north");
    assert_eq!(hb["version"], env!("CARGO_PKG_VERSION"));
    assert!(hb["spool_max_bytes"].as_u64().unwrap() > 0, "{hb}");
    assert!(hb["round_trip_us"].as_u64().is_some(), "{hb}");
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let end = hb["cert_not_after_s"].as_i64().expect("certificate end recorded");
    assert!(end > now_s + 30 * 86_400, "a freshly issued certificate ends later than 30 days: {end}");
    assert!(h["last_seen_ms"].as_u64().unwrap() / 1000 <= now_s as u64 + 1, "last seen is the node's clock: {h}");
    let open = alert(&agg, "clock_offset").expect("a clock_offset alert");
    assert_eq!(open["state"], "open", "{open}");
    assert_eq!(open["severity"], "medium", "{open}");
    let text = metrics(&agg);
    assert!(
        text.contains(&format!("wardline_sensor_unhealthy{{sensor=\"{SENSOR}\",condition=\"clock_offset\"}} 1")),
        "{text}"
    );
    let offset_line = text
        .lines()
        .find(|l| l.starts_with(&format!("wardline_sensor_clock_offset_seconds{{sensor=\"{SENSOR}\"}}")))
        .unwrap_or_else(|| panic!("no clock offset metric:\n{text}"));
    let offset: f64 = offset_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((offset + AHEAD_S as f64).abs() < 1.5, "{offset_line}");

    // The operator's view: `wardline-aggregator sensors` shows the sensor's health line.
    let table = agg.admin_cli(&["sensors"]).unwrap();
    let line =
        table.lines().find(|l| l.starts_with(SENSOR) && l.contains("unhealthy")).unwrap_or_else(|| panic!("{table}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    let clock_ms: f64 = columns[3].parse().unwrap_or_else(|_| panic!("{line}"));
    assert!((clock_ms + AHEAD_S as f64 * 1e3).abs() < 1500.0, "{line}");
    assert_eq!(columns.last(), Some(&"clock_offset"), "{line}");

    // The clock is put right in the running sensor: the offset follows, the alert resolves.
    std::fs::write(&clock, "+0\n").unwrap();
    let h = wait_for(
        "a heartbeat with the clock put right",
        Duration::from_secs(30),
        || health(&agg).filter(|h| h["clock_offset_ms"].as_f64().is_some_and(|o| o.abs() < 1500.0)),
        context,
    );
    assert_eq!(h["status"], "healthy", "{h}");
    assert!(h["heartbeats_recorded"].as_u64().unwrap() >= 2, "{h}");
    let resolved = alert(&agg, "clock_offset").unwrap();
    assert_eq!(resolved["state"], "resolved", "{resolved}");
    assert!(!metrics(&agg).contains("wardline_sensor_unhealthy{"), "no condition is raised any more");

    // Wrong again: the alert reopens (same alert, not a second one).
    std::fs::write(&clock, "-30\n").unwrap();
    let h = wait_for(
        "a heartbeat with the clock 30 s behind",
        Duration::from_secs(30),
        || health(&agg).filter(|h| h["clock_offset_ms"].as_f64().is_some_and(|o| (o - 30_000.0).abs() < 1500.0)),
        context,
    );
    assert_eq!(h["conditions"], serde_json::json!(["clock_offset"]), "{h}");
    let reopened = alert(&agg, "clock_offset").unwrap();
    assert_eq!(reopened["state"], "open", "{reopened}");
    assert_eq!(reopened["id"], open["id"], "the alert reopens");
    assert!(!sensor.exited(), "the sensor keeps running:\n{}", sensor_log(&log));
    sensor.kill9();
}

fn sensor_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The N binary of the upgrade test (decision 0029), if built.
fn previous_binary() -> Option<std::path::PathBuf> {
    let commit = include_str!("../../../scripts/build-previous.sh")
        .lines()
        .find_map(|l| l.strip_prefix("PREVIOUS_COMMIT="))?
        .trim()
        .to_string();
    let path = bin_dir().parent()?.join("previous").join(format!("wardline-aggregator-{commit}"));
    path.exists().then_some(path)
}

fn leader(nodes: &[&Aggregator]) -> Option<u64> {
    nodes.iter().find_map(|n| n.get("/api/v1/cluster").ok().filter(|c| c["state"] == "Leader").map(|_| n.node_id))
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0, "signal {sig} to {pid}");
}

/// (watermark, whether heartbeats are recorded) of the sensor on `node`.
fn sensor_on(node: &Aggregator, id: &str) -> Option<(u64, bool)> {
    let v = node.get("/api/v1/sensors").ok()?;
    Some((v["sensors"][id]["last_seq"].as_u64().unwrap_or(0), !v["health"][id].is_null()))
}

/// Upgrade safety (decision 0038): while a node of the previous version is a member, the
/// leader answers heartbeats but does not propose `SensorHeartbeat` (that node could not
/// decode it), and batches keep flowing through the mixed cluster; once the node runs this
/// version, heartbeats are recorded on every node. The sensor (this build) also meets the N
/// node directly: it refuses the health protocol at the handshake, and batches go on.
#[test]
fn heartbeats_wait_for_every_node_to_know_them_and_batches_flow_meanwhile() {
    let Some(previous) = previous_binary() else {
        // The upgrade test fails loudly when the binary is missing; this one follows it.
        eprintln!("SKIPPED: the previous aggregator is not built (scripts/build-previous.sh)");
        return;
    };
    const ID: &str = "ward-hb-2";
    let fleet = Fleet::new().unwrap();
    let mut n: Vec<Aggregator> = (1..=3).map(|id| Aggregator::prepare(&fleet, id, None, Vec::new()).unwrap()).collect();
    // Node 1 (N) founds the cluster; nodes 2 and 3 (this build) join it.
    n[0].binary = Some(previous.clone());
    n[0].launch().unwrap();
    for i in 1..3 {
        n[i].joiner = true;
        n[i].launch().unwrap();
        run_ok(
            std::process::Command::new(&previous)
                .args(["cluster", "join", "--api", &n[0].api(), "--node-id", &n[i].node_id.to_string()])
                .env("WARDLINE_CERT_DIR", &n[0].operator_dir)
                .args(["--raft-addr", &format!("127.0.0.1:{}", n[i].raft_port)])
                .args(["--api-addr", &format!("127.0.0.1:{}", n[i].api_port)])
                .args(["--ingest-addr", &n[i].quic_addr()]),
        )
        .unwrap();
    }
    // An N+1 leader with the N node following: pause node 1 until one of the others leads.
    let n1 = n[0].pid().unwrap();
    signal(n1, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader(&[&n[1], &n[2]]).is_none() {
        assert!(Instant::now() < deadline, "no N+1 leader within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(n1, libc::SIGCONT);

    // A live sensor on loopback whose traffic the test makes: UDP to a port of its own.
    let port = free_udp_port();
    let tls = fleet.issue_sensor(ID, "north").unwrap();
    let config = fleet.path().join("sensor-gate.toml");
    std::fs::write(
        &config,
        format!(
            "sensor_id = {ID:?}\nsite = \"north\"\nspool_dir = {:?}\n[uplink]\nserver = {:?}\nfallback_servers = \
             [{:?}, {:?}]\nserver_name = \"localhost\"\nheartbeat_interval_secs = 1\n[tls]\ncert = {:?}\nkey = {:?}\n\
             ca = {:?}\n[capture]\ninterface = \"lo\"\nbpf = \"udp port {port}\"\n[batch]\ninterval_secs = 1\n",
            fleet.path().join("spool-gate").display().to_string(),
            n[0].quic_addr(),
            n[1].quic_addr(),
            n[2].quic_addr(),
            tls.join("sensor.pem").display().to_string(),
            tls.join("sensor.key").display().to_string(),
            tls.join("ca.pem").display().to_string(),
        ),
    )
    .unwrap();
    let log = fleet.path().join("sensor-gate.log");
    let mut sensor =
        Sensor::start(&config, &log, &[("RUST_LOG", "info,wardline_sensor::uplink=debug,sled=warn")]).unwrap();
    let traffic_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = traffic_stop.clone();
        std::thread::spawn(move || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = socket.send_to(b"wardline heartbeat test", ("127.0.0.1", port));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let context = |nodes: &[Aggregator]| {
        let logs: Vec<String> = nodes.iter().map(|a| format!("node {}:\n{}", a.node_id, a.log_text())).collect();
        format!("sensor log:\n{}\n{}", sensor_log(&log), logs.join("\n"))
    };
    let leader_id = leader(&[&n[0], &n[1], &n[2]]).unwrap();
    assert_ne!(leader_id, 1, "an N+1 node leads");
    let lead = (leader_id - 1) as usize;

    // Batches flow through the mixed cluster and the N node applies them; the leader answers
    // heartbeats and says why it does not record them.
    let mark = wait_for(
        "batches applied on every node, the N node included",
        Duration::from_secs(60),
        || {
            let marks: Vec<u64> = n.iter().filter_map(|a| sensor_on(a, ID).map(|s| s.0)).collect();
            (marks.len() == 3 && marks[0] > 0 && marks.iter().all(|m| *m == marks[0])).then_some(marks[0])
        },
        || context(&n),
    );
    wait_for(
        "the leader refusing to record heartbeats while node 1 runs version N",
        Duration::from_secs(60),
        || {
            n[lead]
                .log_text()
                .contains("answered but not recorded: node 1 runs a version that does not know")
                .then_some(())
        },
        || context(&n),
    );
    for a in &n {
        assert_eq!(sensor_on(a, ID).map(|s| s.1), Some(false), "node {}: no heartbeat recorded yet", a.node_id);
    }
    assert!(!n[0].exited(), "the N node keeps running:\n{}", n[0].log_text());

    // Node 1 runs this build from now on: heartbeats are recorded, alike on every node.
    n[0].kill9();
    n[0].binary = None;
    n[0].start_again().unwrap_or_else(|e| panic!("node 1 as N+1: {e:#}"));
    wait_for(
        "heartbeats recorded on every node once all run this build",
        Duration::from_secs(90),
        || n.iter().all(|a| sensor_on(a, ID).is_some_and(|s| s.1)).then_some(()),
        || context(&n),
    );
    let after = wait_for(
        "batches still flowing",
        Duration::from_secs(60),
        || sensor_on(&n[lead], ID).map(|s| s.0).filter(|m| *m > mark),
        || context(&n),
    );
    assert!(after > mark);
    traffic_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
    assert!(!sensor.exited(), "the sensor keeps running:\n{}", sensor_log(&log));
    // It met the N node first (its `uplink.server`), which refused the health protocol only.
    assert!(
        sensor_log(&log).contains("does not take heartbeats (a version before them); batches are unaffected"),
        "{}",
        sensor_log(&log)
    );
    sensor.kill9();
}
