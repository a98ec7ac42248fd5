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
    let lib = FAKETIME_LIBS.iter().find(|p| std::path::Path::new(p).exists()).expect(
        "libfaketime is not installed (Debian package faketime): the clock offset cannot be set for this test",
    );
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
        || health(&agg).filter(|h| h["clock_offset_ms"].as_f64().is_some_and(|o| (o + AHEAD_S as f64 * 1e3).abs() < 1500.0)),
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
    assert!(text.contains(&format!("wardline_sensor_unhealthy{{sensor=\"{SENSOR}\",condition=\"clock_offset\"}} 1")), "{text}");
    let offset_line = text
        .lines()
        .find(|l| l.starts_with(&format!("wardline_sensor_clock_offset_seconds{{sensor=\"{SENSOR}\"}}")))
        .unwrap_or_else(|| panic!("no clock offset metric:\n{text}"));
    let offset: f64 = offset_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((offset + AHEAD_S as f64).abs() < 1.5, "{offset_line}");

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
