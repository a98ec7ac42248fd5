//! `/metrics` of a real `wardline-sensor run` process (decision 0026): refused without
//! the bearer token, and with it an exposition that `promtool check metrics` accepts and
//! whose capture and spool metrics moved after reading a synthetic capture. The aggregator
//! it points at is not there, so the batches stay in the spool and the process stays up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wardline-sensor");
const TOKEN: &str = "metrics-test-token-0123456789abcdef0123456789";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 GET; (status, body). `None` when nothing listens yet.
fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    // Bodies of this server are sent whole (Content-Length), never chunked.
    Some((status, body.to_string()))
}

/// The value of the sample `name` whose labels include every `labels` pair.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let all = labels.iter().all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        (metric == name && all).then(|| value.parse().ok())?
    })
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_tls(dir: &Path) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("sensor.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("sensor.key"), ck.key_pair.serialize_pem()).unwrap();
}

#[test]
fn sensor_metrics_need_the_token_pass_promtool_and_move() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let capture = d.join("ward.pcap");
    wardline_sim::generate_named("ward", 7, 1, &capture).unwrap();
    write_tls(d);
    std::fs::write(d.join("metrics.token"), format!("{TOKEN}\n")).unwrap();
    let port = free_tcp();
    let config = format!(
        "sensor_id = \"ward-m-1\"\nsite = \"ward-m\"\nspool_dir = {spool:?}\n\
         [uplink]\nserver = \"127.0.0.1:{quic}\"\n\
         [tls]\ncert = {cert:?}\nkey = {key:?}\nca = {ca:?}\n\
         [capture]\nfiles = [{capture:?}]\n\
         [metrics]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = {token:?}\n",
        spool = d.join("spool").display().to_string(),
        quic = free_udp(),
        cert = d.join("sensor.pem").display().to_string(),
        key = d.join("sensor.key").display().to_string(),
        ca = d.join("ca.pem").display().to_string(),
        capture = capture.display().to_string(),
        token = d.join("metrics.token").display().to_string(),
    );
    std::fs::write(d.join("sensor.toml"), config).unwrap();
    let _sensor = Killed(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(d.join("sensor.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Wait until the capture is read and spooled (the uplink cannot deliver anything).
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        if let Some((200, body)) = get(port, "/metrics", Some(TOKEN)) {
            let spooled = sample(&body, "wardline_spool_batches", &[]).unwrap_or(0.0);
            let packets = sample(&body, "wardline_capture_packets_total", &[]).unwrap_or(0.0);
            if spooled >= 1.0 && packets >= 1.0 {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "the sensor never served metrics showing a spooled capture");
        std::thread::sleep(Duration::from_millis(200));
    };
    promtool_check(&text);
    assert!(sample(&text, "wardline_spool_bytes", &[]).unwrap() > 0.0, "{text}");
    assert!(sample(&text, "wardline_capture_bytes_total", &[]).unwrap() > 0.0);
    assert!(text.contains("wardline_dissected_payloads_total{protocol="), "dissector counters are exported:\n{text}");
    assert_eq!(sample(&text, "wardline_uplink_batches_total", &[("outcome", "acked")]), Some(0.0));
    assert!(text.contains("# TYPE wardline_uplink_round_trip_seconds histogram"));

    // No token, a wrong token: refused; the token does not open other paths.
    let (status, _) = get(port, "/metrics", None).unwrap();
    assert_eq!(status, 401);
    let (status, _) = get(port, "/metrics", Some("metrics-test-token-0123456789abcdef0123456780")).unwrap();
    assert_eq!(status, 401);
    let (status, _) = get(port, "/other", Some(TOKEN)).unwrap();
    assert_eq!(status, 404);

    // The uplink keeps trying the missing aggregator; the failures are counted.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get(port, "/metrics", Some(TOKEN)).unwrap();
        if sample(&body, "wardline_uplink_connections_total", &[("result", "failed")]).unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "connection failures never counted:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
