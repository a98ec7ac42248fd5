//! `/metrics` of a real `wardline-aggregator` process (decision 0026): HTTPS with a viewer
//! credential like every read, refused without one, an exposition that
//! `promtool check metrics` accepts, and counters that move when a real sensor uplink
//! delivers batches. The sensor side's uplink metrics (same process as the uplink here)
//! are checked against the same delivery.

#[path = "../raft/node_process.rs"]
#[allow(dead_code)]
mod node_process;
#[path = "../raft_support/mod.rs"]
mod raft_support;
mod rules;

use node_process::{operator, Proc};
use raft_support::ca_dir;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wardline_aggregator::auth::client::{api_client, ApiAuth};
use wardline_aggregator::auth::Role;
use wardline_common::{DeviceObservation, Event, MacAddr};
use wardline_sensor::spool::Spool;
use wardline_sensor::uplink::{self, UplinkConfig};

/// The value of the sample `name` whose labels include every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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

fn device(n: u8) -> Event {
    Event::Device(DeviceObservation {
        mac: MacAddr([0x00, 0x1a, 0x2b, 0, 0, n]),
        ips: vec![[10, 0, 0, n].into()],
        vlans: vec![],
        first_seen_us: 1,
        last_seen_us: 2,
        packets: 1,
        bytes: 60,
        evidence: vec![],
    })
}

async fn scrape(client: &reqwest::Client, url: &str) -> (reqwest::StatusCode, String) {
    let resp = client.get(url).send().await.expect("the node answers");
    (resp.status(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_metrics_are_authenticated_valid_and_move_with_ingest() {
    let root = tempfile::tempdir().unwrap();
    let node = Proc::start(1, root.path(), &["--init"]);
    let url = format!("{}/metrics", node.api());
    let viewer = api_client(&ApiAuth { token: None, cert_dir: Some(operator(Role::Viewer)), ca: None }).unwrap();

    // Up and leading.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = viewer.get(&url).send().await {
            let text = resp.text().await.unwrap_or_default();
            if sample(&text, "wardline_raft_is_leader", &[]) == Some(1.0) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "node 1 never served /metrics as leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Without a credential: 401, like every read of the API.
    let anonymous = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(ca_dir("fleet").join("ca.pem")).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let (status, _) = scrape(&anonymous, &url).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);

    // A viewer bearer token (Prometheus' `authorization.credentials_file`) works too.
    let created = node_process::cli(&[
        "admin",
        "token",
        "create",
        "--name",
        "prometheus",
        "--role",
        "viewer",
        "--api",
        &node.api(),
    ]);
    assert!(created.status.success(), "{}", node_process::stderr(&created));
    let token = String::from_utf8(created.stdout).unwrap().trim().to_string();
    let ca = Some(ca_dir("fleet").join("ca.pem"));
    let with_token = api_client(&ApiAuth { token: Some(token.clone()), cert_dir: None, ca: ca.clone() }).unwrap();
    let (status, text) = scrape(&with_token, &url).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{text}");
    assert!(sample(&text, "wardline_raft_term", &[]).unwrap() >= 1.0);
    // The same token with another secret is refused.
    let forged = format!("{}{}", &token[..token.len() - 1], if token.ends_with('0') { '1' } else { '0' });
    let with_forged = api_client(&ApiAuth { token: Some(forged), cert_dir: None, ca }).unwrap();
    let (status, _) = scrape(&with_forged, &url).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);

    // A real sensor uplink delivers three batches.
    let sensor_dir = root.path().join("sensor");
    wardline_aggregator::pki::issue_sensor(ca_dir("fleet"), "ward-m-1", "ward-m", &sensor_dir).unwrap();
    let spool = Arc::new(Spool::open(&root.path().join("spool"), 1 << 30).unwrap());
    for i in 0..3u8 {
        spool.push(vec![device(i)], "ward-m-1", "ward-m").unwrap();
    }
    let mut cfg = UplinkConfig::new(
        format!("127.0.0.1:{}", node.ports.2).parse().unwrap(),
        "localhost".into(),
        sensor_dir.join("sensor.pem"),
        sensor_dir.join("sensor.key"),
        sensor_dir.join("ca.pem"),
    );
    cfg.backoff_initial = Duration::from_millis(50);
    let stats =
        tokio::time::timeout(Duration::from_secs(60), uplink::drain_once(spool.clone(), cfg, std::future::pending()))
            .await
            .expect("the spool drains")
            .unwrap();
    assert_eq!(stats.acked, 3);

    let (status, text) = scrape(&viewer, &url).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    promtool_check(&text);
    let acked =
        sample(&text, "wardline_ingest_sensor_batches_total", &[("sensor_id", "ward-m-1"), ("outcome", "acked")]);
    assert_eq!(acked, Some(3.0), "{text}");
    assert_eq!(sample(&text, "wardline_ingest_batches_total", &[("outcome", "acked")]), Some(3.0));
    assert!(sample(&text, "wardline_raft_applied_index", &[]).unwrap() >= 2.0);
    assert_eq!(sample(&text, "wardline_raft_leader_id", &[]), Some(1.0));
    assert!(sample(&text, "wardline_tls_certificate_expiry_timestamp_seconds", &[]).unwrap() > 1.7e9);
    assert!(sample(&text, "wardline_alerts_open", &[("severity", "high")]).is_some());
    // Ingest limits (decision 0039): the uplink proved its address with a QUIC Retry first.
    assert!(sample(&text, "wardline_ingest_address_validation_retries_total", &[]).unwrap_or(0.0) >= 1.0, "{text}");
    let refused = |reason| sample(&text, "wardline_ingest_connections_refused_by_reason_total", &[("reason", reason)]);
    assert_eq!(refused("sensor_connections"), Some(0.0), "{text}");
    // The earlier scrapes were timed by route template.
    let scrapes =
        sample(&text, "wardline_api_request_duration_seconds_count", &[("route", "/metrics"), ("status", "200")]);
    assert!(scrapes.unwrap_or(0.0) >= 1.0, "{text}");

    // The sensor side of the same delivery (this process ran the uplink).
    let sensor_text = wardline_sensor::telemetry::render();
    promtool_check(&sensor_text);
    assert_eq!(sample(&sensor_text, "wardline_uplink_batches_total", &[("outcome", "acked")]), Some(3.0));
    // One round trip per frame: a backlog travels in multi-batch frames (uplink version 2),
    // so the three batches took one to three.
    let trips = sample(&sensor_text, "wardline_uplink_round_trip_seconds_count", &[]).unwrap_or(0.0);
    assert!((1.0..=3.0).contains(&trips), "{trips} round trips for 3 batches:\n{sensor_text}");
    assert!(sample(&sensor_text, "wardline_uplink_sent_bytes_total", &[]).unwrap() > 0.0);
    assert!(sample(&sensor_text, "wardline_uplink_last_reply_timestamp_seconds", &[]).unwrap() > 1.7e9);
}
