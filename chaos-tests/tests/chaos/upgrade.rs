//! Rolling upgrade with real binaries of two versions (docs/operations.md "Upgrades",
//! decision 0029): a three-node cluster of the previous version N (the aggregator of the
//! commit pinned in scripts/build-previous.sh, built by that script) takes a sensor's
//! batches while it is upgraded to this build (N+1) one node at a time.
//!
//! 0. N node 1 takes the first batches, then refounds the cluster from N's own backup
//!    (`run --init --restore`), so the state lives only in a snapshot of N's state format
//!    (the log is purged behind it); N nodes 2 and 3 join and install it;
//! 1. node 3 stops and starts again with the N+1 binary over its N data folder (N's
//!    snapshot and log from disk);
//! 2. node 2 (N) is replaced by a fresh N+1 node 4 (`cluster replace`), which installs the
//!    snapshot from the N leader;
//! 3. node 1 (N, the leader until then) is paused until an N+1 node leads, and follows
//!    it once resumed; then it stops and starts as N+1 over its data folder.
//!
//! The sensor keeps delivering during every step (its watermark must move within the
//! step); between steps it is paused for a checkpoint: a leader exists, and every node has
//! the same inventory, replicated flow totals and sensor watermark. At the end, with the
//! whole capture acknowledged, every node's inventory equals the ground truth and the flow
//! store (ClickHouse, written by N and N+1 leaders) holds every flow exactly once. Last,
//! what is refused: N offered an N+1 snapshot, and N started over N+1 state.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_chaos_tests::expect::*;
use wardline_chaos_tests::procs::*;

/// The script that builds version N names its commit; the test finds its binary by it.
const BUILD_PREVIOUS: &str = include_str!("../../../scripts/build-previous.sh");
/// Set to skip this test when the previous binary was not built (never in scripts/test.sh).
const SKIP_ENV: &str = "WARDLINE_SKIP_UPGRADE_TEST";
const SENSOR: &str = "ward-up-1";

/// Environment turning N+1's risk history recorder off (`WARDLINE_RISK_HISTORY_SECS=0`).
fn recorder_off() -> Vec<(String, String)> {
    vec![("WARDLINE_RISK_HISTORY_SECS".into(), "0".into())]
}

/// The N binary, or None (with the reason printed) when it is absent and SKIP_ENV is set.
fn previous_binary() -> Option<PathBuf> {
    let commit = BUILD_PREVIOUS
        .lines()
        .find_map(|l| l.strip_prefix("PREVIOUS_COMMIT="))
        .expect("scripts/build-previous.sh sets PREVIOUS_COMMIT=")
        .trim();
    // bin_dir() is <target>/debug; the script writes <target>/previous.
    let path = bin_dir().parent().expect("target dir").join("previous").join(format!("wardline-aggregator-{commit}"));
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os(SKIP_ENV).is_some() {
        eprintln!(
            "SKIPPED rolling upgrade test: {} is not built and {SKIP_ENV} is set \
             (run scripts/build-previous.sh to build version N from {commit})",
            path.display()
        );
        return None;
    }
    panic!(
        "{} is not built: run scripts/build-previous.sh (scripts/test.sh does), \
         or set {SKIP_ENV}=1 to skip the rolling upgrade test",
        path.display()
    );
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0, "signal {sig} to {pid}");
}

/// True when the node answers a route that only N+1 has (vulnerability feeds, state
/// format 6): tells which binary a node runs from the outside.
fn runs_this_build(node: &Aggregator) -> bool {
    let resp = node.api_client().unwrap().get(format!("{}/api/v1/vuln/feeds", node.api())).send().unwrap();
    resp.status() != reqwest::StatusCode::NOT_FOUND
}

/// The sensor's applied watermark on `node` (0 before its first batch).
fn watermark(node: &Aggregator) -> Option<u64> {
    let v = node.get("/api/v1/sensors").ok()?;
    Some(v["sensors"][SENSOR]["last_seq"].as_u64().unwrap_or(0))
}

/// What every node must agree on: inventory, replicated flow totals, the sensor's record.
fn replicated_view(node: &Aggregator) -> anyhow::Result<Value> {
    let inventory = node.get("/api/v1/inventory")?;
    let totals = node.get("/api/v1/flows/totals")?;
    let sensors = node.get("/api/v1/sensors")?;
    Ok(serde_json::json!({
        "inventory": inventory,
        "replicated_totals": totals["replicated"],
        "sensor": sensors["sensors"][SENSOR],
    }))
}

fn leader(nodes: &[&Aggregator]) -> Option<u64> {
    nodes.iter().find_map(|n| n.get("/api/v1/cluster").ok().filter(|c| c["state"] == "Leader").map(|_| n.node_id))
}

/// Every node of `nodes` has the same replicated view (waits for followers to apply), a
/// leader exists; returns the sensor watermark they agree on.
fn checkpoint(step: &str, nodes: &[&Aggregator]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let views: Vec<anyhow::Result<Value>> = nodes.iter().map(|n| replicated_view(n)).collect();
        let agreed =
            views.iter().all(|v| v.is_ok()) && views.windows(2).all(|w| w[0].as_ref().ok() == w[1].as_ref().ok());
        if agreed && leader(nodes).is_some() {
            let mark = views[0].as_ref().unwrap()["sensor"]["last_seq"].as_u64().unwrap_or(0);
            eprintln!(
                "upgrade: {step}: nodes {:?} agree (leader {:?}, sensor watermark {mark})",
                nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(),
                leader(nodes)
            );
            return mark;
        }
        if Instant::now() > deadline {
            let shown: Vec<String> = nodes
                .iter()
                .zip(&views)
                .map(|(n, v)| match v {
                    Ok(v) => format!("node {}: totals {} sensor {}", n.node_id, v["replicated_totals"], v["sensor"]),
                    Err(e) => format!("node {}: {e:#}", n.node_id),
                })
                .collect();
            panic!("{step}: the nodes do not agree within 60 s (leader {:?}):\n{}", leader(nodes), shown.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Lets a paused sensor run in short slices (10 ms of every 400 ms) on a thread, so its
/// capture, which it would otherwise send in about two seconds, lasts through a step; when
/// dropped, it leaves the sensor paused.
struct Pacer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pacer {
    fn start(pid: u32) -> Pacer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: kill(2) on the test's own sensor; once it has exited and been reaped
            // the call fails (ESRCH), which ends nothing here.
            let send = |sig| unsafe { libc::kill(pid as libc::pid_t, sig) };
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                send(libc::SIGCONT);
                std::thread::sleep(Duration::from_millis(10));
                send(libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(390));
            }
        });
        Pacer { stop, thread: Some(thread) }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Wait until the sensor's watermark on any of `nodes` passes `above` (a batch acked in
/// this phase); returns it.
fn wait_delivery(what: &str, sensor: &mut Sensor, nodes: &[&Aggregator], above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(mark) = nodes.iter().filter_map(|n| watermark(n)).max().filter(|&m| m > above) {
            return mark;
        }
        assert!(
            !sensor.exited(),
            "{what}: the sensor finished its capture at watermark {above} before this step; the capture \
             must outlast the upgrade:\n{}",
            sensor.log_text()
        );
        assert!(Instant::now() < deadline, "{what}: no batch acked within 120 s (watermark {above})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rolling_upgrade_from_the_previous_version_loses_and_duplicates_nothing() {
    let Some(previous) = previous_binary() else { return };
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let fleet = Fleet::new().unwrap();
    let (pcap, truth) = fleet.generate("ward", 29, "ward.pcap").unwrap();

    // Every node's certificates and ports first: the sensor knows them all.
    // N+1's risk recorder proposes a command N cannot decode: off until every node runs
    // N+1, as docs/operations.md "Upgrades" tells operators (decision 0043). N ignores it.
    let mut n: Vec<Aggregator> = (1..=4u64)
        .map(|id| Aggregator::prepare(&fleet, id, Some(ch.http_url.clone()), recorder_off()).unwrap())
        .collect();
    let mut n4 = n.pop().unwrap();
    n4.joiner = true;

    // One sensor that knows every node, one event per batch, paused at once and then paced
    // (Pacer) so its capture outlasts the steps.
    let tls_dir = fleet.issue_sensor(SENSOR, "north").unwrap();
    let spec = SensorSpec {
        sensor_id: SENSOR,
        site: "north",
        tls_dir,
        server: n[0].quic_addr(),
        pcaps: vec![pcap],
        max_events: 1,
    };
    let cfg = Sensor::write_config(&fleet, &spec).unwrap();
    let fallbacks = [n[1].quic_addr(), n[2].quic_addr(), n4.quic_addr()].map(|a| format!("{a:?}")).join(", ");
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[uplink]\n",
        // Frames of two batches: uplink version 2 is still spoken with the N+1 nodes (version
        // 1 with the N ones), and a 10 ms slice cannot ship the whole backlog at once.
        &format!("[uplink]\nfallback_servers = [{fallbacks}]\nmax_frame_batches = 2\n"),
        1,
    );
    std::fs::write(&cfg, text).unwrap();

    // Version N, node 1 alone: the first batches.
    n[0].binary = Some(previous.clone());
    n[0].launch().unwrap();
    assert!(!runs_this_build(&n[0]), "node 1 should run version N ({})", previous.display());
    let mut sensor = Sensor::start(&cfg, &fleet.path().join("sensor.log"), &[]).unwrap();
    let pid = sensor.pid().unwrap();
    signal(pid, libc::SIGSTOP);
    let pacer = Pacer::start(pid);
    wait_delivery("version N, one node", &mut sensor, &[&n[0]], 2);
    drop(pacer);
    let before_backup = checkpoint("version N, one node", &[&n[0]]);

    // Node 1 refounds the cluster from N's own backup (`run --init --restore`): the restored
    // state exists only in a snapshot of state format 5 (the log is purged behind it), so
    // every node that shows it below either loaded that snapshot from its disk or had it
    // installed by a leader.
    let backup = fleet.path().join("n.wlbackup");
    run_ok(
        Command::new(&previous)
            .args(["cluster", "backup", "--api", &n[0].api(), "--out"])
            .arg(&backup)
            .env("WARDLINE_CERT_DIR", &n[0].operator_dir),
    )
    .unwrap();
    n[0].kill9();
    std::fs::rename(&n[0].data_dir, n[0].data_dir.with_extension("before-restore")).unwrap();
    n[0].extra_args = vec!["--restore".into(), backup.display().to_string()];
    n[0].start_again().unwrap_or_else(|e| panic!("node 1 (version N) restoring its backup: {e:#}"));
    n[0].extra_args.clear();

    // Nodes 2 and 3 (N) join through N's own CLI and install the snapshot.
    for i in 1..3 {
        n[i].binary = Some(previous.clone());
        n[i].joiner = true;
        n[i].launch().unwrap();
        let id = n[i].node_id.to_string();
        run_ok(
            Command::new(&previous)
                .args(["cluster", "join", "--api", &n[0].api(), "--node-id", &id])
                .env("WARDLINE_CERT_DIR", &n[0].operator_dir)
                .args(["--raft-addr", &format!("127.0.0.1:{}", n[i].raft_port)])
                .args(["--api-addr", &format!("127.0.0.1:{}", n[i].api_port)])
                .args(["--ingest-addr", &n[i].quic_addr()]),
        )
        .unwrap_or_else(|e| panic!("node {id} (version N) could not join: {e:#}"));
        assert!(!runs_this_build(&n[i]), "node {id} should run version N ({})", previous.display());
    }
    assert_eq!(
        checkpoint("version N, three nodes from the restored snapshot", &[&n[0], &n[1], &n[2]]),
        before_backup,
        "the restored cluster holds every batch acked before the backup"
    );
    let pacer = Pacer::start(pid);
    wait_delivery("version N, three nodes", &mut sensor, &[&n[0], &n[1], &n[2]], before_backup);
    drop(pacer);
    let mut mark = checkpoint("all on version N", &[&n[0], &n[1], &n[2]]);

    // Step 1: node 3 stops and starts as N+1 over its N data folder (state and log of N).
    let pacer = Pacer::start(pid);
    n[2].kill9();
    mark = wait_delivery("step 1, node 3 down", &mut sensor, &[&n[0], &n[1]], mark);
    n[2].binary = None;
    n[2].start_again().unwrap_or_else(|e| panic!("node 3 as N+1 over N's data folder: {e:#}"));
    assert!(runs_this_build(&n[2]));
    wait_delivery("step 1, node 3 on N+1", &mut sensor, &[&n[0], &n[1], &n[2]], mark);
    drop(pacer);
    mark = checkpoint("step 1: node 3 upgraded in place", &[&n[0], &n[1], &n[2]]);

    // Step 2: a fresh N+1 node 4 replaces node 2 (N): it catches up from the mixed cluster.
    let pacer = Pacer::start(pid);
    n4.launch().unwrap();
    run_ok(
        Command::new(bin("wardline-aggregator"))
            .args(["cluster", "replace", "--api", &n[0].api(), "--old", "2", "--new", "4"])
            .env("WARDLINE_CERT_DIR", &n[0].operator_dir)
            .args(["--raft-addr", &format!("127.0.0.1:{}", n4.raft_port)])
            .args(["--api-addr", &format!("127.0.0.1:{}", n4.api_port)])
            .args(["--ingest-addr", &n4.quic_addr()]),
    )
    .unwrap_or_else(|e| panic!("N+1 node 4 could not replace N node 2: {e:#}\nnode 4 log:\n{}", n4.log_text()));
    n[1].kill9();
    wait_delivery("step 2, node 2 replaced by node 4", &mut sensor, &[&n[0], &n[2], &n4], mark);
    drop(pacer);
    mark = checkpoint("step 2: node 2 replaced by a fresh N+1 node 4", &[&n[0], &n[2], &n4]);

    // Step 3a: an N+1 leader with an N follower. Node 1 (N, the leader so far) is paused
    // until one of the N+1 nodes 3 and 4 takes the lead, then resumed: it must follow,
    // applying what the N+1 leader replicates.
    let pacer = Pacer::start(pid);
    let n1_pid = n[0].pid().expect("node 1 runs");
    signal(n1_pid, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader(&[&n[2], &n4]).is_none() {
        assert!(Instant::now() < deadline, "no N+1 leader within 60 s while node 1 (N) was paused");
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(n1_pid, libc::SIGCONT);
    wait_delivery("step 3a, N+1 leader", &mut sensor, &[&n[2], &n4], mark);
    drop(pacer);
    mark = checkpoint("step 3a: an N+1 leader, node 1 (N) follows", &[&n[0], &n[2], &n4]);
    assert_ne!(leader(&[&n[0], &n[2], &n4]), Some(1), "an N+1 node leads");
    assert!(!runs_this_build(&n[0]), "node 1 still runs version N");

    // Step 3: node 1, the founder, stops and starts as N+1 over its data folder.
    let pacer = Pacer::start(pid);
    n[0].kill9();
    mark = wait_delivery("step 3, node 1 down", &mut sensor, &[&n[2], &n4], mark);
    n[0].binary = None;
    n[0].start_again().unwrap_or_else(|e| panic!("node 1 as N+1 over N's data folder: {e:#}"));
    wait_delivery("step 3, node 1 on N+1", &mut sensor, &[&n[0], &n[2], &n4], mark);
    drop(pacer);
    mark = checkpoint("step 3: node 1 upgraded in place", &[&n[0], &n[2], &n4]);
    for node in [&n[0], &n[2], &n4] {
        assert!(runs_this_build(node), "node {} runs N+1", node.node_id);
    }

    // The rest of the capture on N+1 alone; the sensor exits once everything is acked.
    signal(pid, libc::SIGCONT);
    let st = sensor.wait(Duration::from_secs(300)).unwrap();
    assert!(st.success(), "sensor failed:\n{}", sensor.log_text());
    let upgraded = [&n[0], &n[2], &n4];
    let total = checkpoint("capture acknowledged", &upgraded);
    let packets: u64 = truth_flows(&truth).values().map(|v| v.0).sum();
    for node in upgraded {
        let diffs = inventory_differences(&truth, &node.get("/api/v1/inventory").unwrap());
        assert!(
            diffs.is_empty(),
            "node {}: inventory differs from the ground truth:\n{}",
            node.node_id,
            diffs.join("\n")
        );
        let totals = node.get("/api/v1/flows/totals").unwrap();
        assert_eq!(
            totals["replicated"]["packets"].as_u64(),
            Some(packets),
            "node {}: replicated flow packets lost or double counted: {totals}",
            node.node_id
        );
    }
    // The flow store, written by N and N+1 leaders: every flow once.
    // Asked of the leader: the drain check is a linearizable read.
    let lead = leader(&upgraded).expect("a leader after the upgrade");
    let lead = upgraded.iter().find(|node| node.node_id == lead).unwrap();
    if let Err(e) = lead.wait_outbox_drained(Duration::from_secs(60)) {
        let seen: Vec<String> = upgraded
            .iter()
            .map(|node| {
                format!(
                    "node {}: linearizable {:?}; local {:?}; cluster {:?}",
                    node.node_id,
                    node.get_linearizable("/api/v1/flows/totals").map_err(|e| format!("{e:#}")),
                    node.get("/api/v1/flows/totals").map_err(|e| format!("{e:#}")),
                    node.get("/api/v1/cluster").map(|c| c["outbox"].clone()).map_err(|e| format!("{e:#}"))
                )
            })
            .collect();
        panic!("{e:#}\n{}", seen.join("\n"));
    }
    let stored = tsv_flows(&ch.query(CLICKHOUSE_FLOWS_SQL).unwrap()).unwrap();
    let diffs = flow_differences(&truth_flows(&truth), &stored);
    assert!(diffs.is_empty(), "ClickHouse differs from the ground truth after the upgrade:\n{}", diffs.join("\n"));
    refused_newer_state(&previous, &fleet, lead);
    eprintln!(
        "upgrade: {mark} of {total} batches acked while nodes of version N took part; {packets} packets stored once"
    );
}

/// Version N facing a snapshot of N+1 (state format 6) refuses it with the message that
/// names both formats, instead of mis-reading it: (a) an N node asked to join a cluster of
/// N+1 cannot install the leader's snapshot; (b) N started over an N+1 node's data folder
/// (a downgrade) does not start. The N+1 state lives in a snapshot because node 5 founds
/// its cluster from a backup of the upgraded cluster.
fn refused_newer_state(previous: &std::path::Path, fleet: &Fleet, upgraded_leader: &Aggregator) {
    const REFUSAL: &str = "this build reads formats 0x574c0003 to 0x574c0005";
    let backup = fleet.path().join("n-plus-1.wlbackup");
    run_ok(
        Command::new(bin("wardline-aggregator"))
            .args(["cluster", "backup", "--api", &upgraded_leader.api(), "--out"])
            .arg(&backup)
            .env("WARDLINE_CERT_DIR", &upgraded_leader.operator_dir),
    )
    .unwrap();
    let mut n5 = Aggregator::prepare(fleet, 5, None, recorder_off()).unwrap();
    n5.extra_args = vec!["--restore".into(), backup.display().to_string()];
    n5.launch().unwrap_or_else(|e| panic!("N+1 node 5 restoring the upgraded cluster's backup: {e:#}"));
    n5.extra_args.clear();

    // (a) An N node joins the N+1 cluster: the snapshot it is sent is refused.
    let mut n6 = Aggregator::prepare(fleet, 6, None, vec![]).unwrap();
    n6.binary = Some(previous.to_path_buf());
    n6.joiner = true;
    n6.launch().unwrap();
    let mut join = Command::new(bin("wardline-aggregator"))
        .args(["cluster", "join", "--api", &n5.api(), "--node-id", "6"])
        .env("WARDLINE_CERT_DIR", &n5.operator_dir)
        .args(["--raft-addr", &format!("127.0.0.1:{}", n6.raft_port)])
        .args(["--api-addr", &format!("127.0.0.1:{}", n6.api_port)])
        .args(["--ingest-addr", &n6.quic_addr()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // N answers each attempt with 400 and counts it (`malformed`); the reason, naming both
    // formats, reaches the N+1 leader's log.
    let malformed = |node: &Aggregator| node.get("/api/v1/cluster/status").ok()?["refused_rpcs"]["malformed"].as_u64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(n5.log_text().contains(REFUSAL) && malformed(&n6).unwrap_or(0) > 0) {
        assert!(
            Instant::now() < deadline,
            "the N node did not refuse the N+1 snapshot within 60 s:\n{}\nN+1 leader:\n{}",
            n6.log_text(),
            n5.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(n5.log_text().contains("newer Wardline version"), "{}", n5.log_text());
    // The leader backs off between attempts (it used to resend at once, hundreds of times a
    // second, each logged on both nodes): over 3 s, at most a few attempts.
    let first = malformed(&n6).unwrap();
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let attempts = malformed(&n6).unwrap() - first;
    assert!(
        attempts <= 20,
        "{attempts} snapshot attempts refused in {:?}: the leader does not back off",
        window.elapsed()
    );
    let _ = join.kill();
    let _ = join.wait();
    eprintln!("upgrade: an N node refuses the snapshot of an N+1 leader ({attempts} attempts in 3 s)");

    // (b) Downgrade: N over node 5's data folder (an N+1 snapshot on disk) does not start.
    n5.kill9();
    n5.binary = Some(previous.to_path_buf());
    let err = n5.start_again().expect_err("version N must not start over N+1 state");
    let err = format!("{err:#}");
    assert!(err.contains(REFUSAL) && err.contains("newer Wardline version"), "{err}");
    eprintln!("upgrade: version N refuses to start over N+1 state");
}
