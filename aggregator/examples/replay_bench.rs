//! Replay benchmark (docs/benchmarks.md, "Replay over stored flows"): how long "what would
//! this policy have blocked" takes over N flows stored in a real ClickHouse 18.16.
//!
//! `bash scripts/bench-replay.sh [ROWS]` (or `just bench-replay ROWS`); default 1,000,000.
//!
//! - The flow mix is the generated hospital's (wardline-sim, seed 7, risky variant): every
//!   TCP/UDP flow of its main capture, weighted by its sessions, written once as template
//!   rows through the ClickHouse sink.
//! - The N rows are made inside ClickHouse (`INSERT … SELECT` from `system.numbers` joined
//!   to the templates: row n copies template n mod T, with its own time over 30 days,
//!   source port, batch and index), so the fill costs no client traffic.
//! - Timed after background merges settle: `blocked_by_workflow` (one scan with `FINAL`,
//!   the policy as one `multiIf`, grouped by clinical workflow) and `compare` against a
//!   relaxed version.
//! - Checked: the denied total and every workflow's count equal what the in-memory
//!   evaluator (`CompiledPolicy`) decides for the templates times their copies, and a
//!   sample of stored rows read back is decided alike. A mismatch fails the run (CI runs
//!   this at 1M rows through `tests/policy/replay_bench.rs`, so the bench cannot rot).

use anyhow::{bail, Context, Result};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use ulid::Ulid;
use wardline_aggregator::policy::resolve::membership;
use wardline_aggregator::sink::clickhouse::ClickHouseSink;
use wardline_aggregator::sink::replay::{action_sql, blocked_by_workflow, compare, ReplayContext};
use wardline_aggregator::sink::FlowSink;
use wardline_aggregator::state::policy::parse;
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_common::{FlowRecord, MacAddr};
use wardline_intel::policy::{CompiledPolicy, Flow, FlowEnd, Policy, PolicyDevice, PortRange};
use wardline_intel::{Category, Criticality, KnowledgeBase};

/// The hospital's policy: class groups, its clinical workflows and IT services, default
/// deny; hand rules on top (medical devices never reach the Internet, telnet nowhere, HL7
/// only with its app label), and life-sustaining devices in a monitor scope so a first
/// enforcement never hard-blocks therapy.
pub const POLICY: &str = r#"
[policy]
name = "hospital"
default = "deny"

[[group]]
name = "pumps"
match = 'class in ["infusion_pump", "pca_pump"]'

[[group]]
name = "pump_servers"
match = 'class == "pump_server"'

[[group]]
name = "modalities"
match = 'class in ["ct", "mr", "xray", "ultrasound"]'

[[group]]
name = "imaging_servers"
match = 'class in ["pacs", "modality_worklist"]'

[[group]]
name = "hl7_senders"
match = 'class in ["central_station", "anesthesia_machine", "ventilator", "telemetry", "patient_monitor", "nurse_call", "lab_analyzer", "blood_gas", "server"]'

[[group]]
name = "hl7_receivers"
match = 'class in ["hl7_interface_engine", "lis", "central_station"]'

[[group]]
name = "desktops"
match = 'class in ["workstation", "thin_client"]'

[[group]]
name = "servers"
match = 'class == "server"'

[[group]]
name = "medical"
match = 'category == "medical"'

[[group]]
name = "life_sustaining"
match = 'criticality == "life_sustaining"'

[[group]]
name = "building"
match = 'class in ["badge_reader", "rtls", "bms_hvac", "camera"]'

[[group]]
name = "phones"
match = 'class in ["voip_phone", "mobile"]'

[[group]]
name = "printers"
match = 'class == "printer"'

[[scope]]
group = "life_sustaining"
default = "monitor"

[[rule]]
name = "no telnet"
from = ["any"]
to = ["any"]
protocol = "tcp"
ports = [23]
action = "deny"

[[rule]]
name = "medical stays inside"
from = ["medical"]
to = ["external"]
action = "deny"

[[rule]]
name = "pump library and status"
from = ["pumps"]
to = ["pump_servers"]
protocol = "tcp"
ports = [443, 3613]

[[rule]]
name = "images and worklist"
from = ["modalities"]
to = ["imaging_servers"]
protocol = "tcp"
ports = [104, 11112]

[[rule]]
name = "hl7"
from = ["hl7_senders"]
to = ["hl7_receivers", "medical"]
protocol = "tcp"
ports = [2575]
app = "hl7"

[[rule]]
name = "nurse call"
from = ["hl7_senders"]
to = ["hl7_receivers"]
protocol = "tcp"
ports = [5001]

[[rule]]
name = "monitor network"
from = ["medical"]
to = ["medical"]
protocol = "udp"
ports = [24105]

[[rule]]
name = "desktop services"
from = ["desktops"]
to = ["servers"]
protocol = "tcp"
ports = [443, 445, 3389]

[[rule]]
name = "printing"
from = ["desktops"]
to = ["printers"]
protocol = "any"
ports = [80, 161, 631, 9100]

[[rule]]
name = "web"
from = ["desktops"]
to = ["external"]
protocol = "tcp"
ports = [443]

[[rule]]
name = "name service, time, logs"
from = ["any"]
to = ["servers"]
protocol = "udp"
ports = [53, 123, 514]

[[rule]]
name = "video and building control"
from = ["servers", "building"]
to = ["building", "servers"]
protocol = "any"
ports = [554, 1144, 3001, 47808]

[[rule]]
name = "voice"
from = ["phones"]
to = ["servers", "phones"]
protocol = "udp"
ports = [5002, 5060, "16384-32767"]
action = "monitor"
"#;

/// Campus and clinic flows are spread over this many days.
const SPAN_DAYS: u64 = 30;
/// 2026-11-01T00:00:00Z: every generated row falls in one monthly partition.
const T0_US: u64 = 1_793_491_200_000_000;
/// Rows per generated batch id.
const BATCH_ROWS: u64 = 4096;
/// How long to wait for background merges before timing anyway (the report gives the parts).
const SETTLE_MAX: Duration = Duration::from_secs(900);
/// One stored row in this many is read back and decided by the evaluator.
const SAMPLE_ONE_IN: u64 = 1000;

/// What one run measured and checked.
#[derive(Debug)]
pub struct Report {
    pub rows: u64,
    pub templates: u64,
    pub devices: usize,
    pub clickhouse: String,
    pub fill: Duration,
    pub settle: Duration,
    pub parts: u64,
    pub bytes_on_disk: u64,
    pub replay: Duration,
    pub compare: Duration,
    pub denied: u64,
    pub workflows: usize,
    pub no_longer_blocked: u64,
    pub sampled: u64,
}

impl Report {
    pub fn rows_per_sec(&self, d: Duration) -> f64 {
        self.rows as f64 / d.as_secs_f64()
    }
}

/// The generated hospital: devices as the policy sees them (every address they held) and
/// the template flows, weighted by sessions.
fn hospital(dir: &std::path::Path) -> Result<(Vec<PolicyDevice>, Vec<FlowRecord>)> {
    let mut opts = wardline_sim::GenerateOptions::new(wardline_sim::Scenario::Hospital);
    opts.seed = 7;
    opts.risky = true;
    let truth = wardline_sim::generate(&opts, &dir.join("hospital.pcap")).context("generating the hospital")?;
    let kb = KnowledgeBase::builtin().context("loading the built-in knowledge base")?;
    let devices = truth
        .devices
        .iter()
        .map(|d| {
            let (category, criticality) = kb
                .class(&d.class)
                .map(|c| (c.category, c.criticality))
                .unwrap_or((Category::It, Criticality::NonClinical));
            let mut p = PolicyDevice::new(d.mac, &d.class, category, criticality);
            p.ips = d.ips.iter().map(|ip| IpAddr::V4(*ip)).collect();
            p.site = Some(d.site.clone());
            p
        })
        .collect();
    let mut templates = Vec::new();
    for f in truth.flows.iter().filter(|f| matches!(f.ip_proto, 6 | 17)) {
        let r = FlowRecord {
            ip_proto: f.ip_proto,
            vlan: f.vlan,
            a_mac: f.a_mac,
            b_mac: f.b_mac,
            a_ip: IpAddr::V4(f.a_ip),
            b_ip: IpAddr::V4(f.b_ip),
            a_port: f.a_port,
            b_port: f.b_port,
            first_seen_us: f.first_us,
            last_seen_us: f.last_us,
            packets_ab: f.packets_ab,
            packets_ba: f.packets_ba,
            bytes_ab: f.bytes_ab,
            bytes_ba: f.bytes_ba,
            tcp_flags_ab: if f.ip_proto == 6 { 0x1b } else { 0 },
            tcp_flags_ba: if f.ip_proto == 6 { 0x1b } else { 0 },
            app: Cow::Owned(f.app.clone()),
            end_reason: Cow::Borrowed(if f.ip_proto == 6 { "fin" } else { "idle" }),
        };
        for _ in 0..f.tcp_sessions.max(1) {
            templates.push(r.clone());
        }
    }
    Ok((devices, templates))
}

fn replay_context(policy: &Policy, devices: &[PolicyDevice]) -> ReplayContext {
    let by_mac: BTreeMap<MacAddr, &PolicyDevice> = devices.iter().map(|d| (d.mac, d)).collect();
    ReplayContext {
        group_ips: membership(policy, devices)
            .into_iter()
            .map(|m| (m.group, m.members.iter().flat_map(|mac| by_mac[mac].ips.clone()).collect()))
            .collect(),
        classes: devices.iter().flat_map(|d| d.ips.iter().map(|ip| (*ip, d.class.clone()))).collect(),
    }
}

/// The evaluator's action for a flow given by addresses, as the replay sees it.
fn decide(compiled: &CompiledPolicy, a: IpAddr, b: IpAddr, proto: u8, port: u16, app: &str) -> &'static str {
    compiled
        .evaluate(&Flow {
            src: FlowEnd { device: None, ip: Some(a) },
            dst: FlowEnd { device: None, ip: Some(b) },
            ip_proto: proto,
            dst_port: port,
            app: Some(app).filter(|a| !a.is_empty() && *a != "unknown"),
            dst_domain: None,
        })
        .action
        .as_str()
}

/// One statement over ClickHouse's HTTP interface, with no client-side time limit (the
/// fill of 100M rows takes minutes).
async fn sql(http: &reqwest::Client, url: &str, statement: &str) -> Result<String> {
    let resp = http.post(url).body(statement.to_string()).send().await.context("sending to ClickHouse")?;
    let status = resp.status();
    let text = resp.text().await.context("reading ClickHouse's answer")?;
    if !status.is_success() {
        bail!("ClickHouse refused `{}`: {status} {}", &statement[..statement.len().min(200)], text.trim());
    }
    Ok(text)
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Fill a fresh ClickHouse with `rows` generated flows, time the replay, check it.
pub fn run(rows: u64) -> Result<Report> {
    if rows == 0 {
        bail!("ROWS must be at least 1");
    }
    let dir = tempfile::tempdir().context("temporary folder for the hospital capture")?;
    let (devices, templates) = hospital(dir.path())?;
    let policy = parse(POLICY).map_err(|e| anyhow::anyhow!("bench policy: {e}"))?;
    let ctx = replay_context(&policy, &devices);
    let compiled = CompiledPolicy::compile(&policy, &devices);
    // The relaxed version `compare` times: desktops may browse over plain HTTP too.
    let mut relaxed = policy.clone();
    relaxed.rules.iter_mut().filter(|r| r.name == "web").for_each(|r| r.ports.push(PortRange { lo: 80, hi: 80 }));

    let ch = ClickHouseServer::start().context("starting ClickHouse")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let http = reqwest::Client::new();
    let url = ch.http_url.clone();
    let t = templates.len() as u64;
    let (sink, fill, settle, parts) = rt.block_on(async {
        let tpl = ClickHouseSink::connect(&url, "replay_templates").await?;
        tpl.write_batch(Ulid::from_parts(1, 1), "core", "hospital", &templates).await?;
        let sink = ClickHouseSink::connect(&url, "replay_bench").await?.with_timeout(Duration::from_secs(4 * 3600));
        let step = SPAN_DAYS * 86_400_000_000 / rows;
        let fill_sql = format!(
            "INSERT INTO replay_bench.flows (batch_id, idx, sensor_id, site, day, first_seen, first_seen_us, \
             last_seen_us, ip_proto, vlan, a_mac, b_mac, a_ip, b_ip, a_port, b_port, packets_ab, packets_ba, \
             bytes_ab, bytes_ba, tcp_flags_ab, tcp_flags_ba, app, end_reason) \
             SELECT concat('bench-', toString(intDiv(number, {BATCH_ROWS}))), toUInt32(number % {BATCH_ROWS}), \
             'core', 'hospital', toDate(toDateTime(intDiv(us, 1000000))), toDateTime(intDiv(us, 1000000)), us, \
             us + t_dur, t_proto, t_vlan, t_a_mac, t_b_mac, t_a_ip, t_b_ip, toUInt16(32768 + number % 28000), \
             t_b_port, t_pab, t_pba, t_bab, t_bba, t_fab, t_fba, t_app, t_end \
             FROM (SELECT number, toUInt64(number % {t}) AS k, toUInt64({T0_US} + number * {step}) AS us \
                   FROM system.numbers LIMIT {rows}) \
             ANY INNER JOIN \
             (SELECT toUInt64(idx) AS k, last_seen_us - first_seen_us AS t_dur, ip_proto AS t_proto, vlan AS t_vlan, \
                     a_mac AS t_a_mac, b_mac AS t_b_mac, a_ip AS t_a_ip, b_ip AS t_b_ip, b_port AS t_b_port, \
                     packets_ab AS t_pab, packets_ba AS t_pba, bytes_ab AS t_bab, bytes_ba AS t_bba, \
                     tcp_flags_ab AS t_fab, tcp_flags_ba AS t_fba, app AS t_app, end_reason AS t_end \
              FROM replay_templates.flows FINAL) USING k"
        );
        let started = Instant::now();
        sql(&http, &url, &fill_sql).await.context("filling the flows table")?;
        let fill = started.elapsed();
        // Time the replay on a settled table, not against background merges.
        let started = Instant::now();
        let mut quiet = 0;
        while quiet < 3 && started.elapsed() < SETTLE_MAX {
            let merging = sql(&http, &url, "SELECT count() FROM system.merges").await?;
            quiet = if merging.trim() == "0" { quiet + 1 } else { 0 };
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let settle = started.elapsed();
        let parts = sql(
            &http,
            &url,
            "SELECT count() FROM system.parts WHERE database = 'replay_bench' AND table = 'flows' AND active",
        )
        .await?;
        anyhow::Ok((sink, fill, settle, parts.trim().parse::<u64>().unwrap_or(0)))
    })?;
    let stored = rt.block_on(sql(&http, &url, "SELECT count() FROM replay_bench.flows FINAL"))?;
    if stored.trim() != rows.to_string() {
        bail!("the fill stored {} rows, not {rows}", stored.trim());
    }

    let started = Instant::now();
    let workflows = rt.block_on(blocked_by_workflow(&sink, &policy, &ctx, 0, u64::MAX, 100_000))?;
    let replay = started.elapsed();
    let started = Instant::now();
    let changes = rt.block_on(compare(&sink, &policy, &relaxed, &ctx, 0, u64::MAX))?;
    let compare_time = started.elapsed();

    // Expected: each template's verdict times its copies (row n copies template n mod T).
    let class = |ip: &IpAddr| ctx.classes.get(ip).cloned().unwrap_or_else(|| "unknown".into());
    let relaxed_compiled = CompiledPolicy::compile(&relaxed, &devices);
    let mut want: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut want_moved = 0u64;
    for (k, f) in templates.iter().enumerate() {
        let copies = rows / t + u64::from((k as u64) < rows % t);
        let verdict = decide(&compiled, f.a_ip, f.b_ip, f.ip_proto, f.b_port, &f.app);
        if verdict == "deny" && copies > 0 {
            *want.entry((class(&f.a_ip), class(&f.b_ip), f.app.to_string())).or_default() += copies;
            if decide(&relaxed_compiled, f.a_ip, f.b_ip, f.ip_proto, f.b_port, &f.app) != "deny" {
                want_moved += copies;
            }
        }
    }
    let got: BTreeMap<(String, String, String), u64> =
        workflows.iter().map(|w| ((w.src_class.clone(), w.dst_class.clone(), w.app.clone()), w.flows)).collect();
    if got != want {
        bail!("replay and evaluator disagree per workflow:\nreplay    {got:?}\nevaluator {want:?}");
    }
    let no_longer_blocked: u64 = changes.iter().map(|c| c.no_longer_blocked).sum();
    let newly_blocked: u64 = changes.iter().map(|c| c.newly_blocked).sum();
    if (no_longer_blocked, newly_blocked) != (want_moved, 0) {
        bail!("compare counted {no_longer_blocked} no longer / {newly_blocked} newly blocked; the evaluator {want_moved} / 0");
    }

    // A sample of stored rows, each decided by the SQL and by the evaluator from its columns.
    let action = action_sql(&policy, &ctx).map_err(|e| anyhow::anyhow!(e))?;
    let sample = rt.block_on(sql(
        &http,
        &url,
        &format!(
            "SELECT a_ip, b_ip, ip_proto, b_port, app, {action} FROM replay_bench.flows FINAL \
             WHERE cityHash64(batch_id, idx) % {SAMPLE_ONE_IN} = 0 FORMAT TabSeparated"
        ),
    ))?;
    let mut sampled = 0;
    for line in sample.lines() {
        let c: Vec<&str> = line.split('\t').collect();
        let parsed = (c.len() == 6)
            .then(|| Some((c[0].parse().ok()?, c[1].parse().ok()?, c[2].parse().ok()?, c[3].parse().ok()?)));
        let Some(Some((a, b, proto, port))) = parsed else { bail!("unexpected sample row {line:?}") };
        let want = decide(&compiled, a, b, proto, port, c[4]);
        if c[5] != want {
            bail!("stored flow {line:?}: the SQL says {}, the evaluator {want}", c[5]);
        }
        sampled += 1;
    }
    if sampled == 0 && rows >= SAMPLE_ONE_IN * 100 {
        bail!("the sample of stored rows is empty");
    }

    Ok(Report {
        rows,
        templates: t,
        devices: devices.len(),
        clickhouse: ch.query("SELECT version()").map(|v| v.trim().to_string()).unwrap_or_default(),
        fill,
        settle,
        parts,
        bytes_on_disk: dir_size(&ch.dir().join("data/data/replay_bench")),
        replay,
        compare: compare_time,
        denied: got.values().sum(),
        workflows: got.len(),
        no_longer_blocked,
        sampled,
    })
}

pub fn print(r: &Report) {
    println!("replay over {} stored flows (ClickHouse {}):", r.rows, r.clickhouse);
    println!(
        "  mix: {} template flows of the generated hospital ({} devices), {} parts, {:.2} GB on disk",
        r.templates,
        r.devices,
        r.parts,
        r.bytes_on_disk as f64 / 1e9
    );
    println!(
        "  fill (INSERT ... SELECT in ClickHouse): {:.1} s ({:.0} rows/s); merges settled after {:.1} s more",
        r.fill.as_secs_f64(),
        r.rows_per_sec(r.fill),
        r.settle.as_secs_f64()
    );
    println!(
        "  blocked_by_workflow: {:.2} s = {:.0} rows/s ({} denied in {} workflows)",
        r.replay.as_secs_f64(),
        r.rows_per_sec(r.replay),
        r.denied,
        r.workflows
    );
    println!(
        "  compare with a relaxed version: {:.2} s = {:.0} rows/s ({} no longer blocked)",
        r.compare.as_secs_f64(),
        r.rows_per_sec(r.compare),
        r.no_longer_blocked
    );
    println!("  checked: every workflow's count and the comparison against the evaluator, {} sampled rows", r.sampled);
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let rows = match std::env::args().nth(1) {
        Some(a) => a.replace('_', "").parse::<u64>().with_context(|| format!("ROWS must be a number, not {a:?}"))?,
        None => 1_000_000,
    };
    let report = run(rows)?;
    print(&report);
    Ok(())
}
