//! Cluster ingest benchmark (docs/benchmarks.md, "Cluster ingest"); run by
//! `scripts/bench-ingest.sh`, which builds the release binaries and the capture first.
//!
//!   cargo run --release -p wardline-aggregator --example ingest_bench -- CAPTURE.pcap
//!
//! Starts a real ClickHouse server and one aggregator node on loopback and measures:
//! 1. live: a sensor reads the capture and ships it; time from sensor start until every
//!    flow is in ClickHouse (outbox drained);
//! 2. direct: the same rows (read back from ClickHouse) inserted with the `clickhouse`
//!    crate into a fresh table, 100,000 rows per insert;
//! 3. backlog: a second sensor spools the whole capture while no node is reachable, then
//!    drains its spool into the node; flows acked per second.
//! 4. cluster: a third sensor's spooled capture drained into a three-node cluster (the
//!    sensor knows every node) until every row is in ClickHouse; flows per second from the
//!    first ack to the last row, against `direct` (capture analysis is not in this figure).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wardline_aggregator::sink::clickhouse::schema_statements;
use wardline_aggregator::sink::FlowRow;
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_chaos_tests::procs::{free_udp_port, start_plain_cluster, Aggregator, Fleet, Sensor, SensorSpec};

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `uplink.max_in_flight` and `uplink.max_frame_batches` for the sensors
/// (`WARDLINE_BENCH_IN_FLIGHT`, `WARDLINE_BENCH_FRAME_BATCHES`; default: the sensor's).
fn with_in_flight(cfg: &std::path::Path) -> Result<()> {
    for (var, key) in
        [("WARDLINE_BENCH_IN_FLIGHT", "max_in_flight"), ("WARDLINE_BENCH_FRAME_BATCHES", "max_frame_batches")]
    {
        if let Ok(n) = std::env::var(var) {
            let text = std::fs::read_to_string(cfg)?;
            let text = text.replacen(
                "server_name = \"localhost\"\n",
                &format!("server_name = \"localhost\"\n{key} = {n}\n"),
                1,
            );
            std::fs::write(cfg, text)?;
        }
    }
    Ok(())
}

/// `WARDLINE_BENCH_PHASES` (comma-separated, default `live,backlog,cluster`): which drains to
/// run; `direct` is measured with `live` (it re-inserts the live rows).
fn phase(name: &str) -> bool {
    std::env::var("WARDLINE_BENCH_PHASES").map_or(true, |p| p.split(',').any(|x| x.trim() == name))
}

/// `WARDLINE_BENCH_PERF=DIR`: record `perf record --call-graph dwarf` of a process into `DIR/<name>.data`
/// while a drain runs (stopped with SIGINT by `stop_perf`).
fn start_perf(name: &str, pid: Option<u32>) -> Option<std::process::Child> {
    let dir = std::env::var("WARDLINE_BENCH_PERF").ok()?;
    let pid = pid?;
    std::fs::create_dir_all(&dir).ok()?;
    let out = std::path::Path::new(&dir).join(format!("{name}.data"));
    std::process::Command::new("perf")
        .args(["record", "--call-graph", "dwarf,8192", "-F", "499", "-o"])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
}

fn stop_perf(perf: Vec<std::process::Child>) {
    for mut p in perf {
        // SIGINT makes perf write its data file and exit.
        let _ = std::process::Command::new("kill").args(["-INT", &p.id().to_string()]).status();
        let _ = p.wait();
    }
}

fn sensor_flows(agg: &Aggregator, sensor: &str) -> u64 {
    agg.get("/api/v1/sensors").ok().and_then(|v| v["sensors"][sensor]["flows"].as_u64()).unwrap_or(0)
}

/// The node's group-commit counters (`ingest.group_commit` of `/api/v1/sensors`).
fn group_commits(agg: &Aggregator) -> [u64; 4] {
    let v = agg.get("/api/v1/sensors").ok().map(|v| v["ingest"]["group_commit"].clone()).unwrap_or_default();
    ["groups", "batches", "flows", "commit_micros"].map(|k| v[k].as_u64().unwrap_or(0))
}

/// One line on the Raft proposals a drain took: how large, how long, and how much of the
/// drain's wall time the committer spent waiting on them (near 100 %: the node's commit path
/// bounds the drain; far below: the sensor or the network does).
fn print_commits(label: &str, before: [u64; 4], after: [u64; 4], wall_secs: f64) {
    let [g, b, f, us] = [0, 1, 2, 3].map(|i| after[i].saturating_sub(before[i]));
    let n = g.max(1) as f64;
    println!(
        "{label}: {g} group commits, {:.1} batches and {:.0} flows each, {:.1} ms each; the committer waited on \
         Raft {:.2} s of the {wall_secs:.2} s ({:.0} %)",
        b as f64 / n,
        f as f64 / n,
        us as f64 / 1e3 / n,
        us as f64 / 1e6,
        us as f64 / 1e4 / wall_secs.max(1e-9)
    );
}

/// CPU seconds (user + system) process `pid` has used so far, from /proc (0 when gone).
fn cpu_secs(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok()) else { return 0.0 };
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Bytes process `pid` has caused to be written to storage so far (/proc/PID/io).
fn written_bytes(pid: Option<u32>) -> u64 {
    let Some(io) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/io")).ok()) else { return 0 };
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Sample [`cpu_secs`] of `pids` until `sensor` exits (bounded: 30 min), keeping the last
/// reading of each (a process that exited reads 0 afterwards).
fn cpu_until_exit<const N: usize>(sensor: &mut Sensor, pids: &[Option<u32>; N]) -> [f64; N] {
    let mut last = [0.0f64; N];
    let mut written = 0;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !sensor.exited() && Instant::now() < deadline {
        for (l, p) in last.iter_mut().zip(pids) {
            *l = l.max(cpu_secs(*p));
        }
        written = written.max(written_bytes(sensor.pid()));
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("sensor wrote {:.1} MB to its disk while draining", written as f64 / 1e6);
    last
}

/// CPU used by each named process between two [`cpu_secs`] readings, as one line.
fn print_cpu(label: &str, names: &[&str], before: &[f64], after: &[f64], wall_secs: f64) {
    let parts: Vec<String> =
        names.iter().zip(before.iter().zip(after)).map(|(n, (b, a))| format!("{n} {:.2} s", a - b)).collect();
    let total: f64 = after.iter().sum::<f64>() - before.iter().sum::<f64>();
    println!(
        "{label}: CPU over the {wall_secs:.2} s: {} (together {total:.2} s of the {:.2} core-seconds the machine had)",
        parts.join(", "),
        wall_secs * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
    );
}

fn outbox_rows(agg: &Aggregator) -> Option<u64> {
    agg.get("/api/v1/flows/totals").ok().and_then(|v| v["outbox"]["rows"].as_u64())
}

fn outbox_drained(agg: &Aggregator) -> u64 {
    agg.get("/api/v1/flows/totals").ok().and_then(|v| v["outbox"]["inserts"].as_u64()).unwrap_or(0)
}

fn main() -> Result<()> {
    let pcap = PathBuf::from(std::env::args().nth(1).context("usage: ingest_bench CAPTURE.pcap")?);
    let pcap = pcap.canonicalize().with_context(|| format!("no capture at {}", pcap.display()))?;
    let ch = ClickHouseServer::start()?;
    let fleet = Fleet::new()?;
    let agg = Aggregator::start(&fleet, 1, Some(ch.http_url.clone()))?;
    let spec = |id: &'static str, server: String| SensorSpec {
        sensor_id: id,
        site: "north",
        tls_dir: fleet.issue_sensor(id, "north").expect("issue sensor"),
        server,
        pcaps: vec![pcap.clone()],
        max_events: 2000,
    };
    // An empty capture for the draining sensors, so a drain does not share the CPU with
    // reading the big one.
    let empty = fleet.path().join("empty.pcap");
    let mut header = Vec::new();
    for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65_535, 1] {
        header.extend_from_slice(&word.to_le_bytes());
    }
    std::fs::write(&empty, header)?;

    // 1. Live capture through one node into ClickHouse, and 2. the same rows straight into
    //    ClickHouse with the clickhouse crate: the direct rate the cluster is compared with.
    let mut direct_rate = None;
    if phase("live") {
        let cfg = Sensor::write_config(&fleet, &spec("live-1", agg.quic_addr()))?;
        with_in_flight(&cfg)?;
        let t0 = Instant::now();
        let mut sensor = Sensor::start(&cfg, &fleet.path().join("live.log"), &[])?;
        let st = sensor.wait(Duration::from_secs(1800))?;
        if !st.success() {
            bail!("sensor failed:\n{}", sensor.log_text());
        }
        let acked_at = t0.elapsed();
        let t1 = wait_for("the outbox to drain", Duration::from_secs(600), || Ok(outbox_rows(&agg) == Some(0)))?;
        let live_secs = (t1 - t0).as_secs_f64();
        let flows = sensor_flows(&agg, "live-1");
        let stored: u64 = ch.query("SELECT count() FROM wardline.flows FINAL")?.trim().parse()?;
        if stored != flows {
            bail!("ClickHouse holds {stored} distinct rows, the cluster acked {flows} flows");
        }
        println!(
            "live: {flows} flows in {live_secs:.2} s = {:.0} flows/s into ClickHouse (sensor done and acked at {:.2} s)",
            flows as f64 / live_secs,
            acked_at.as_secs_f64()
        );
        let rt = tokio::runtime::Runtime::new()?;
        let direct_secs = rt.block_on(async {
            let client = clickhouse::Client::default().with_url(ch.http_url.clone()).with_validation(false);
            let rows: Vec<FlowRow> = client.query("SELECT ?fields FROM wardline.flows FINAL").fetch_all().await?;
            for sql in schema_statements("wardline_direct") {
                client.query(&sql).execute().await?;
            }
            let client = client.with_database("wardline_direct");
            let t = Instant::now();
            for chunk in rows.chunks(100_000) {
                let mut insert = client.insert::<FlowRow>("flows").await?;
                for r in chunk {
                    insert.write(r).await?;
                }
                insert.end().await?;
            }
            anyhow::Ok(t.elapsed().as_secs_f64())
        })?;
        direct_rate = Some(flows as f64 / direct_secs);
        println!(
            "direct: {flows} rows in {direct_secs:.2} s = {:.0} rows/s; live path = {:.1} % of direct",
            flows as f64 / direct_secs,
            100.0 * direct_secs / live_secs
        );
    }
    let share = |rate: f64| direct_rate.map_or(String::new(), |d| format!(" = {:.1} % of direct", 100.0 * rate / d));

    // 3. A spooled backlog: capture while no node is reachable, then drain.
    if phase("backlog") {
        let dead = format!("127.0.0.1:{}", free_udp_port());
        let cfg = Sensor::write_config(&fleet, &spec("backlog-1", dead))?;
        let log = fleet.path().join("backlog.log");
        let mut sensor = Sensor::start(&cfg, &log, &[])?;
        wait_for("the backlog sensor to spool the capture", Duration::from_secs(1800), || {
            Ok(std::fs::read_to_string(&log).unwrap_or_default().contains("capture finished"))
        })?;
        sensor.kill9();
        // Same sensor, same spool, now pointed at the node, reading the empty capture.
        let cfg = Sensor::write_config(
            &fleet,
            &SensorSpec { pcaps: vec![empty.clone()], ..spec("backlog-1", agg.quic_addr()) },
        )?;
        with_in_flight(&cfg)?;
        let before = outbox_drained(&agg);
        let started = Instant::now();
        let mut sensor = Sensor::start(&cfg, &log, &[])?;
        let perf: Vec<_> = [start_perf("backlog-node", agg.pid()), start_perf("backlog-sensor", sensor.pid())]
            .into_iter()
            .flatten()
            .collect();
        let first =
            wait_for("the first backlog ack", Duration::from_secs(120), || Ok(sensor_flows(&agg, "backlog-1") > 0))?;
        let first_flows = sensor_flows(&agg, "backlog-1");
        let commits_before = group_commits(&agg);
        let pids = [agg.pid(), sensor.pid(), ch.pid()];
        let cpu_before = pids.map(cpu_secs);
        let cpu_after = cpu_until_exit(&mut sensor, &pids);
        let st = sensor.wait(Duration::from_secs(1800))?;
        let done = Instant::now();
        stop_perf(perf);
        if !st.success() {
            bail!("backlog sensor failed:\n{}", sensor.log_text());
        }
        let total = sensor_flows(&agg, "backlog-1");
        let secs = (done - first).as_secs_f64();
        println!(
            "backlog: {} flows acked in {secs:.2} s = {:.0} flows/s (one sensor's spool into one node); from sensor \
             start: {total} flows in {:.2} s = {:.0} flows/s",
            total - first_flows,
            (total - first_flows) as f64 / secs,
            (done - started).as_secs_f64(),
            total as f64 / (done - started).as_secs_f64()
        );
        print_commits("backlog", commits_before, group_commits(&agg), secs);
        print_cpu("backlog", &["node", "sensor", "ClickHouse"], &cpu_before, &cpu_after, secs);
        let t2 = wait_for("the outbox to drain", Duration::from_secs(600), || Ok(outbox_rows(&agg) == Some(0)))?;
        let rate = total as f64 / (t2 - started).as_secs_f64();
        println!(
            "backlog: outbox drained {:.2} s after the last ack ({} inserts); from sensor start to every row in \
             ClickHouse {:.2} s = {rate:.0} flows/s{}",
            (t2 - done).as_secs_f64(),
            outbox_drained(&agg).saturating_sub(before),
            (t2 - started).as_secs_f64(),
            share(rate)
        );
    }
    drop(agg);

    // 4. A spooled backlog through a three-node cluster into ClickHouse (fresh database, so
    //    the rows counted are this run's).
    if !phase("cluster") {
        return Ok(());
    }
    ch.query("DROP DATABASE IF EXISTS wardline")?;
    let nodes = start_plain_cluster(&fleet, 3, Some(ch.http_url.clone()))?;
    let dead = format!("127.0.0.1:{}", free_udp_port());
    let cfg = Sensor::write_config(&fleet, &spec("cluster-1", dead))?;
    let log = fleet.path().join("cluster.log");
    let mut sensor = Sensor::start(&cfg, &log, &[])?;
    wait_for("the cluster sensor to spool the capture", Duration::from_secs(1800), || {
        Ok(std::fs::read_to_string(&log).unwrap_or_default().contains("capture finished"))
    })?;
    sensor.kill9();
    let servers: Vec<String> = nodes.iter().map(Aggregator::quic_addr).collect();
    let empty_spec = SensorSpec { pcaps: vec![empty.clone()], ..spec("cluster-1", servers[0].clone()) };
    let cfg = Sensor::write_config(&fleet, &empty_spec)?;
    let others: Vec<String> = servers[1..].iter().map(|s| format!("{s:?}")).collect();
    let text = std::fs::read_to_string(&cfg)?.replacen(
        "server_name = \"localhost\"\n",
        &format!("server_name = \"localhost\"\nfallback_servers = [{}]\n", others.join(", ")),
        1,
    );
    std::fs::write(&cfg, text)?;
    with_in_flight(&cfg)?;
    let leader = &nodes[0];
    let started = Instant::now();
    let mut sensor = Sensor::start(&cfg, &log, &[])?;
    let perf: Vec<_> = [
        start_perf("cluster-leader", leader.pid()),
        start_perf("cluster-follower", nodes[1].pid()),
        start_perf("cluster-sensor", sensor.pid()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let first =
        wait_for("the first cluster ack", Duration::from_secs(120), || Ok(sensor_flows(leader, "cluster-1") > 0))?;
    let commits_before = group_commits(leader);
    let pids = [nodes[0].pid(), nodes[1].pid(), nodes[2].pid(), sensor.pid(), ch.pid()];
    let cpu_before = pids.map(cpu_secs);
    let cpu_after = cpu_until_exit(&mut sensor, &pids);
    let st = sensor.wait(Duration::from_secs(1800))?;
    let acked = Instant::now();
    print_commits("cluster", commits_before, group_commits(leader), (acked - first).as_secs_f64());
    let names = ["leader", "follower", "follower", "sensor", "ClickHouse"];
    print_cpu("cluster", &names, &cpu_before, &cpu_after, (acked - first).as_secs_f64());
    stop_perf(perf);
    if !st.success() {
        bail!("cluster sensor failed:\n{}", sensor.log_text());
    }
    let total = sensor_flows(leader, "cluster-1");
    let stored = wait_for("every row in ClickHouse", Duration::from_secs(600), || {
        let n: u64 = ch.query("SELECT count() FROM wardline.flows FINAL")?.trim().parse().unwrap_or(0);
        Ok(n >= total && nodes.iter().all(|n| outbox_rows(n) == Some(0)))
    })?;
    let secs = (stored - first).as_secs_f64();
    println!(
        "cluster: {total} flows from one sensor's spool through 3 nodes into ClickHouse in {secs:.2} s = {:.0} flows/s{} \
         (last ack at {:.2} s)",
        total as f64 / secs,
        share(total as f64 / secs),
        (acked - first).as_secs_f64()
    );
    // From sensor start the figure also holds the process start, spool open, handshake and
    // the first group commit, which the first-ack figure leaves out.
    let from_start = (stored - started).as_secs_f64();
    println!(
        "cluster: from sensor start {from_start:.2} s = {:.0} flows/s{}",
        total as f64 / from_start,
        share(total as f64 / from_start)
    );
    Ok(())
}
