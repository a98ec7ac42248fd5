//! Every Grafana dashboard under deploy/grafana/dashboards/ against real ClickHouse.
//!
//! Each panel's SQL (and each template variable query) has the ClickHouse plugin's macros
//! expanded exactly as the plugin does for a fixed time range (pkg/macros/macros.go of
//! grafana/clickhouse-datasource), then runs on Debian's clickhouse-server 18.16 over known
//! flows written through the sink (including re-sent duplicates), after the rollup job.
//! Every panel's result is checked against values computed from the inserted flows, and the
//! same schema, data, rollup statements and panels run on a current engine through chDB
//! (scripts/chdb_check.py), which must give the same rows. The panels also run on each
//! replica of a two-replica cluster (decision 0028), through its Distributed tables.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use ulid::Ulid;
use wardline_aggregator::sink::clickhouse::{schema_statements, ClickHouseSink};
use wardline_aggregator::sink::clickhouse_rollup::{refresh_statements, refresh_touched_hours};
use wardline_aggregator::sink::{FlowRow, FlowSink};
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_common::FlowRecord;

/// The dashboards' time range: 2023-11-14 00:00:00 to 06:00:00 UTC.
const FROM: u64 = 1_699_920_000;
const TO: u64 = FROM + 6 * 3600;
/// What Grafana would pass as the query interval ($__interval_s).
const INTERVAL_S: u64 = 300;
/// The data source uid the provisioning file gives and every panel must use.
const DATASOURCE_UID: &str = "wardline-clickhouse";

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

// ---------------------------------------------------------------------------------------
// Macro expansion, as the official plugin does it.

/// Civil date (UTC) of a Unix time, `YYYY-MM-DD`.
fn utc_date(secs: u64) -> String {
    // Days to civil date (Howard Hinnant's algorithm), valid for any date after 1970.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

struct Range {
    from: u64,
    to: u64,
    interval_s: u64,
}

fn expand_macro(name: &str, args: &[String], r: &Range) -> Result<String, String> {
    let want = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("$__{name} expects {n} argument(s), got {}", args.len()))
        }
    };
    let dt = |t: u64| format!("toDateTime({t})");
    let dt_ms = |t: u64| format!("fromUnixTimestamp64Milli({})", t * 1000);
    let date = |t: u64| format!("toDate('{}')", utc_date(t));
    Ok(match name {
        "fromTime" => dt(r.from),
        "toTime" => dt(r.to),
        "fromTime_ms" => dt_ms(r.from),
        "toTime_ms" => dt_ms(r.to),
        "timeFilter" => {
            want(1)?;
            format!("{c} >= {} AND {c} <= {}", dt(r.from), dt(r.to), c = args[0])
        }
        "timeFilter_ms" => {
            want(1)?;
            format!("{c} >= {} AND {c} <= {}", dt_ms(r.from), dt_ms(r.to), c = args[0])
        }
        "dateFilter" => {
            want(1)?;
            format!("{c} >= {} AND {c} <= {}", date(r.from), date(r.to), c = args[0])
        }
        "dateTimeFilter" | "dt" => {
            want(2)?;
            format!(
                "({d} >= {} AND {d} <= {}) AND ({t} >= {} AND {t} <= {})",
                date(r.from),
                date(r.to),
                dt(r.from),
                dt(r.to),
                d = args[0],
                t = args[1]
            )
        }
        "timeInterval" => {
            want(1)?;
            format!("toStartOfInterval(toDateTime({}), INTERVAL {} second)", args[0], r.interval_s.max(1))
        }
        "timeInterval_ms" => {
            want(1)?;
            format!(
                "toStartOfInterval(toDateTime64({}, 3), INTERVAL {} millisecond)",
                args[0],
                (r.interval_s * 1000).max(1)
            )
        }
        "interval_s" => r.interval_s.max(1).to_string(),
        other => return Err(format!("$__{other} is not a macro of grafana-clickhouse-datasource")),
    })
}

/// Expand Grafana template variables (`${name}`) and then the plugin's `$__macro(args)`.
fn expand(sql: &str, vars: &BTreeMap<&str, &str>, r: &Range) -> Result<String, String> {
    let mut text = sql.to_string();
    while let Some(start) = text.find("${") {
        let end = text[start..].find('}').ok_or_else(|| format!("unclosed ${{ in {sql}"))? + start;
        let name = &text[start + 2..end];
        let value = vars.get(name).ok_or_else(|| format!("no value for template variable {name} in {sql}"))?;
        text.replace_range(start..=end, value);
    }
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(pos) = rest.find("$__") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 3..];
        let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        let name = &after[..name_len];
        let mut tail = &after[name_len..];
        let mut args = Vec::new();
        if tail.starts_with('(') {
            let mut depth = 0;
            let mut current = String::new();
            let mut closed = None;
            for (i, c) in tail.char_indices() {
                match c {
                    '(' => {
                        depth += 1;
                        if depth == 1 {
                            continue;
                        }
                    }
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            closed = Some(i);
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        args.push(current.trim().to_string());
                        current.clear();
                        continue;
                    }
                    _ => {}
                }
                current.push(c);
            }
            let closed = closed.ok_or_else(|| format!("unclosed argument list of $__{name} in {sql}"))?;
            if !current.trim().is_empty() || !args.is_empty() {
                args.push(current.trim().to_string());
            }
            tail = &tail[closed + 1..];
        }
        out.push_str(&expand_macro(name, &args, r)?);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[test]
fn macro_expansion_matches_the_plugin() {
    let r = Range { from: FROM, to: TO, interval_s: INTERVAL_S };
    let vars = BTreeMap::from([("device", "00:1a:2b:00:00:01")]);
    let got = expand(
        "SELECT $__timeInterval(first_seen) t FROM f WHERE $__dateTimeFilter(day, first_seen) AND \
         $__timeFilter(toStartOfHour(x)) AND mac = '${device}' AND y < $__toTime - $__interval_s",
        &vars,
        &r,
    )
    .unwrap();
    assert_eq!(
        got,
        "SELECT toStartOfInterval(toDateTime(first_seen), INTERVAL 300 second) t FROM f WHERE \
         (day >= toDate('2023-11-14') AND day <= toDate('2023-11-14')) AND (first_seen >= toDateTime(1699920000) \
         AND first_seen <= toDateTime(1699941600)) AND toStartOfHour(x) >= toDateTime(1699920000) AND \
         toStartOfHour(x) <= toDateTime(1699941600) AND mac = '00:1a:2b:00:00:01' AND y < toDateTime(1699941600) - 300"
    );
    assert_eq!(expand("$__fromTime_ms", &vars, &r).unwrap(), "fromUnixTimestamp64Milli(1699920000000)");
    assert!(expand("$__timeFilter(a, b)", &vars, &r).unwrap_err().contains("expects 1"));
    assert!(expand("$__timeGroup(a, '5m')", &vars, &r).unwrap_err().contains("not a macro"));
    assert!(expand("x = ${nope}", &vars, &r).unwrap_err().contains("nope"));
    assert_eq!(utc_date(0), "1970-01-01");
    assert_eq!(utc_date(951_782_400), "2000-02-29");
    assert_eq!(utc_date(TO), "2023-11-14");
}

#[test]
fn rollup_statements_cover_every_hour_once_per_table_in_bounded_chunks() {
    let hours: Vec<u32> = (0..500).map(|i| 1_699_920_000 + i * 3600).collect();
    let sql = refresh_statements("wl", &hours);
    assert_eq!(sql.len(), 2 * 3, "500 hours in chunks of 240, two tables each");
    assert!(sql[0].starts_with("INSERT INTO wl.device_hourly"), "{}", sql[0]);
    assert!(sql[1].starts_with("INSERT INTO wl.segment_pair_hourly"), "{}", sql[1]);
    for h in &hours {
        let n = sql.iter().filter(|s| s.contains(&format!("{h}, ")) || s.contains(&format!("{h})"))).count();
        assert_eq!(n, 2, "hour {h}");
    }
    assert!(refresh_statements("wl", &[]).is_empty());
}

// ---------------------------------------------------------------------------------------
// Dashboards.

/// One query of a dashboard: a panel target or a template variable.
struct PanelQuery {
    /// `<dashboard uid> / <panel title>` or `<dashboard uid> / variable <name>`.
    key: String,
    sql: String,
}

fn dashboard_files() -> Vec<PathBuf> {
    let dir = repo_path("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// Parse every dashboard, check its structure, and collect its queries.
fn dashboard_queries() -> Vec<PanelQuery> {
    let mut out = Vec::new();
    let mut uids = BTreeSet::new();
    for path in dashboard_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let d: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
        let uid = d["uid"].as_str().unwrap_or_else(|| panic!("{}: no uid", path.display())).to_string();
        assert!(uids.insert(uid.clone()), "duplicate dashboard uid {uid}");
        assert_eq!(path.file_stem().unwrap().to_str().unwrap(), uid, "file name should be the uid");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{uid}: no title");
        let mut ids = BTreeSet::new();
        let panels = d["panels"].as_array().unwrap_or_else(|| panic!("{uid}: no panels"));
        assert!(!panels.is_empty(), "{uid}: no panels");
        for p in panels {
            let title = p["title"].as_str().unwrap_or_else(|| panic!("{uid}: panel without title"));
            assert!(ids.insert(p["id"].as_u64().expect("panel id")), "{uid}: duplicate panel id");
            assert_eq!(p["datasource"]["uid"], DATASOURCE_UID, "{uid} / {title}: data source");
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{uid} / {title}: no targets"));
            assert_eq!(targets.len(), 1, "{uid} / {title}: one query per panel");
            let t = &targets[0];
            assert_eq!(t["datasource"]["type"], "grafana-clickhouse-datasource", "{uid} / {title}");
            assert_eq!(t["datasource"]["uid"], DATASOURCE_UID, "{uid} / {title}");
            assert_eq!(t["editorType"], "sql", "{uid} / {title}");
            let sql = t["rawSql"].as_str().unwrap_or_else(|| panic!("{uid} / {title}: no rawSql"));
            out.push(PanelQuery { key: format!("{uid} / {title}"), sql: sql.to_string() });
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap();
            if v["type"] == "query" {
                assert_eq!(v["datasource"]["uid"], DATASOURCE_UID, "{uid} / variable {name}");
                let sql = v["query"].as_str().unwrap_or_else(|| panic!("{uid} / variable {name}: no query"));
                out.push(PanelQuery { key: format!("{uid} / variable {name}"), sql: sql.to_string() });
            }
        }
    }
    assert!(uids.len() >= 9, "expected the nine dashboards, found {uids:?}");
    out
}

#[test]
fn provisioning_files_name_the_plugin_the_database_and_the_dashboards() {
    let ds =
        std::fs::read_to_string(repo_path("deploy/grafana/provisioning/datasources/wardline-clickhouse.yaml")).unwrap();
    for needle in [
        "type: grafana-clickhouse-datasource",
        &format!("uid: {DATASOURCE_UID}"),
        "protocol: http",
        "port: 8123",
        "defaultDatabase: wardline",
        "username:",
        "secureJsonData:",
        "password:",
        // The plugin type-asserts dialTimeout as a string; a YAML number would break loading.
        "dialTimeout: \"",
    ] {
        assert!(ds.contains(needle), "datasource provisioning lacks {needle:?}");
    }
    let dash = std::fs::read_to_string(repo_path("deploy/grafana/provisioning/dashboards/wardline.yaml")).unwrap();
    assert!(dash.contains("type: file") && dash.contains("path:"), "{dash}");
    // Structure checks of every dashboard.
    assert!(dashboard_queries().len() > 20);
}

// ---------------------------------------------------------------------------------------
// Known data.

type Host = (&'static str, &'static str);
const CT: Host = ("00:1a:2b:00:00:01", "10.20.0.5");
const PACS: Host = ("00:50:56:00:09:09", "10.30.0.9");
const MONITOR: Host = ("00:1a:2b:00:00:02", "10.20.0.6");
const HL7_ENGINE: Host = ("00:50:56:00:09:0a", "10.30.0.10");
const WORKSTATION: Host = ("00:1a:2b:00:00:03", "fd00:30::7");
const WEB: Host = ("00:50:56:00:09:0b", "fd00:30::b");
const LEGACY: Host = ("00:1a:2b:00:00:04", "10.40.0.8");
const TELNET_HOST: Host = ("00:50:56:00:09:0c", "10.30.0.12");
const DNS: Host = ("00:50:56:00:09:0d", "10.40.0.1");
const OLD_SCANNER: Host = ("00:1a:2b:00:00:09", "10.50.0.9");

struct Conv {
    a: Host,
    b: Host,
    b_port: u16,
    ip_proto: u8,
    app: &'static str,
    vlan: Option<u16>,
    bytes_ab: u64,
    bytes_ba: u64,
    end_reason: &'static str,
}

fn flows_of(c: &Conv, times: impl Iterator<Item = u64>) -> Vec<FlowRecord> {
    times
        .enumerate()
        .map(|(i, t)| FlowRecord {
            ip_proto: c.ip_proto,
            vlan: c.vlan,
            a_mac: c.a.0.parse().unwrap(),
            b_mac: c.b.0.parse().unwrap(),
            a_ip: c.a.1.parse().unwrap(),
            b_ip: c.b.1.parse().unwrap(),
            a_port: 40_000 + i as u16,
            b_port: c.b_port,
            first_seen_us: t * 1_000_000,
            last_seen_us: t * 1_000_000 + 2_000_000,
            packets_ab: c.bytes_ab / 1000 + 1,
            packets_ba: c.bytes_ba / 1000 + 1,
            bytes_ab: c.bytes_ab,
            bytes_ba: c.bytes_ba,
            tcp_flags_ab: if c.ip_proto == 6 { 0x1b } else { 0 },
            tcp_flags_ba: if c.ip_proto == 6 { 0x1b } else { 0 },
            app: c.app.into(),
            end_reason: c.end_reason.into(),
        })
        .collect()
}

fn conv(a: Host, b: Host, b_port: u16, app: &'static str, vlan: Option<u16>, bytes: (u64, u64)) -> Conv {
    Conv { a, b, b_port, ip_proto: 6, app, vlan, bytes_ab: bytes.0, bytes_ba: bytes.1, end_reason: "fin" }
}

struct SentBatch {
    id: Ulid,
    sensor: &'static str,
    site: &'static str,
    flows: Vec<FlowRecord>,
}

/// The flows the test writes: four batches, two of them (wholly) outside the time range.
fn dataset() -> Vec<SentBatch> {
    let north = [
        flows_of(&conv(CT, PACS, 104, "dicom", Some(20), (1_000_000, 10_000)), (0..12).map(|i| FROM + i * 1500)),
        flows_of(
            &conv(MONITOR, HL7_ENGINE, 2575, "hl7", Some(20), (5_000, 2_000)),
            (0..20).map(|i| FROM + 600 + i * 900),
        ),
        flows_of(
            &conv(WORKSTATION, WEB, 443, "tls", Some(30), (40_000, 300_000)),
            (0..8).map(|i| FROM + 300 + i * 2000),
        ),
    ]
    .concat();
    let dns = Conv { ip_proto: 17, end_reason: "idle", ..conv(LEGACY, DNS, 53, "dns", None, (80, 160)) };
    let south = [
        flows_of(
            &conv(LEGACY, TELNET_HOST, 23, "telnet", None, (3_000, 9_000)),
            (0..4).map(|i| FROM + 1000 + i * 3000),
        ),
        flows_of(&dns, (0..10).map(|i| FROM + 50 + i * 1800)),
    ]
    .concat();
    // Outside the range, and big: a broken time filter would make them top talkers.
    let before = flows_of(
        &conv(OLD_SCANNER, PACS, 104, "dicom", Some(20), (50_000_000, 1_000)),
        (0..3).map(|i| FROM - 86_400 + i * 60),
    );
    let after =
        flows_of(&conv(MONITOR, HL7_ENGINE, 2575, "hl7", Some(20), (20_000_000, 1_000)), (0..2).map(|i| TO + 3600 + i));
    vec![
        SentBatch { id: Ulid::from_parts(1_700_000_000_000, 1), sensor: "sens-n1", site: "north", flows: north },
        SentBatch { id: Ulid::from_parts(1_700_000_000_000, 2), sensor: "sens-s1", site: "south", flows: south },
        SentBatch { id: Ulid::from_parts(1_700_000_000_000, 3), sensor: "sens-old", site: "south", flows: before },
        SentBatch { id: Ulid::from_parts(1_700_000_000_000, 4), sensor: "sens-n1", site: "north", flows: after },
    ]
}

/// Rows of the dataset inside the time range.
fn in_range(data: &[SentBatch]) -> Vec<FlowRow> {
    data.iter()
        .flat_map(|b| {
            b.flows.iter().enumerate().map(|(i, f)| FlowRow::from_record(b.id, i as u32, b.sensor, b.site, f))
        })
        .filter(|r| (FROM..=TO).contains(&u64::from(r.first_seen)))
        .collect()
}

/// Violations for the policy table (the policy engine will write these): two in range, one
/// before it, and a re-sent copy of the first that FINAL must collapse.
fn violation_inserts() -> Vec<String> {
    let row = |id: &str, at: u64, rule: &str, name: &str, sev: u8, a: Host, b: Host, port: u16, app: &str| {
        format!(
            "('{id}', toDate(toDateTime({at})), toDateTime({at}), 'north', 'sens-n1', '{rule}', '{name}', {sev}, 'alert', 6, 20, \
             '{}', '{}', '{}', '{}', {port}, '{app}', 12345, '', 0, 'test')",
            a.0, b.0, a.1, b.1
        )
    };
    let v1 =
        row("v-1", FROM + 1600, "no-cleartext-phi", "Cleartext PHI off the imaging VLAN", 3, CT, PACS, 104, "dicom");
    let v2 = row("v-2", FROM + 12_000, "no-telnet", "Telnet to clinical hosts", 4, LEGACY, TELNET_HOST, 23, "telnet");
    let v3 = row("v-3", FROM - 7200, "no-telnet", "Telnet to clinical hosts", 4, LEGACY, TELNET_HOST, 23, "telnet");
    vec![
        format!("INSERT INTO wardline.policy_violations VALUES {v1}, {v2}, {v3}"),
        format!("INSERT INTO wardline.policy_violations VALUES {v1}"),
    ]
}

// ---------------------------------------------------------------------------------------
// Expected results.

type Rows = Vec<Vec<String>>;

fn parse_tsv(tsv: &str) -> Rows {
    tsv.lines().filter(|l| !l.is_empty()).map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

fn n(rows: &Rows, r: usize, c: usize) -> u64 {
    let cell = rows.get(r).and_then(|row| row.get(c)).unwrap_or_else(|| panic!("no cell ({r}, {c}) in {rows:?}"));
    cell.parse().unwrap_or_else(|_| panic!("cell ({r}, {c}) = {cell:?} is not a number in {rows:?}"))
}

fn col_sum(rows: &Rows, c: usize) -> u64 {
    (0..rows.len()).map(|r| n(rows, r, c)).sum()
}

fn col(rows: &Rows, c: usize) -> Vec<&str> {
    rows.iter().map(|r| r[c].as_str()).collect()
}

fn bytes(r: &FlowRow) -> u64 {
    r.bytes_ab + r.bytes_ba
}

fn sum_by<K: Ord>(rows: &[FlowRow], key: impl Fn(&FlowRow) -> K, val: impl Fn(&FlowRow) -> u64) -> BTreeMap<K, u64> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(key(r)).or_insert(0) += val(r);
    }
    m
}

fn as_map(rows: &Rows, k: usize, v: usize) -> BTreeMap<String, u64> {
    (0..rows.len()).map(|r| (rows[r][k].clone(), n(rows, r, v))).collect()
}

fn to_string_map<K: ToString>(m: BTreeMap<K, u64>) -> BTreeMap<String, u64> {
    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn bucket_count(rows: &[FlowRow], width: u64) -> usize {
    rows.iter().map(|r| u64::from(r.first_seen) / width).collect::<BTreeSet<_>>().len()
}

fn time_cells_aligned(rows: &Rows, width: u64) -> bool {
    rows.iter().all(|r| {
        let t = &r[0];
        let (h, m, s): (u64, u64, u64) =
            (t[11..13].parse().unwrap(), t[14..16].parse().unwrap(), t[17..19].parse().unwrap());
        (h * 3600 + m * 60 + s) % width == 0
    })
}

const CLEARTEXT_PHI: [&str; 4] = ["dicom", "hl7", "intellivue", "carescape"];

/// Check one panel's rows; every dashboard query must have a check here.
fn check(key: &str, rows: &Rows, data: &[FlowRow]) -> Result<(), String> {
    let total_bytes: u64 = data.iter().map(bytes).sum();
    let macs: BTreeSet<&str> = data.iter().flat_map(|r| [r.a_mac.as_str(), r.b_mac.as_str()]).collect();
    let phi: Vec<FlowRow> = data.iter().filter(|r| CLEARTEXT_PHI.contains(&r.app.as_str())).cloned().collect();
    let phi_bytes: u64 = phi.iter().map(bytes).sum();
    let ct_flows: Vec<&FlowRow> = data.iter().filter(|r| r.a_mac == CT.0).collect();
    let ct_sent: u64 = ct_flows.iter().map(|r| r.bytes_ab).sum();
    let ct_received: u64 = ct_flows.iter().map(|r| r.bytes_ba).sum();
    let ok = |cond: bool, what: &str| if cond { Ok(()) } else { Err(format!("{what}; rows: {rows:?}")) };
    match key {
        "wardline-fleet / Flows" => ok(n(rows, 0, 0) == data.len() as u64, "flow count"),
        "wardline-fleet / Bytes" => ok(n(rows, 0, 0) == total_bytes, "byte total"),
        "wardline-fleet / Devices seen" => ok(n(rows, 0, 0) == macs.len() as u64, "distinct MACs"),
        "wardline-fleet / Sensors reporting" => ok(n(rows, 0, 0) == 2, "two sensors in range"),
        "wardline-fleet / Traffic per site" => {
            let flows = to_string_map(sum_by(data, |r| r.site.clone(), |_| 1));
            let b = to_string_map(sum_by(data, |r| r.site.clone(), bytes));
            ok(as_map(rows, 0, 1) == flows && as_map(rows, 0, 2) == b && rows[0][0] == "north", "per-site flows/bytes")
        }
        "wardline-flows-over-time / Flows per interval" => ok(
            col_sum(rows, 1) == data.len() as u64
                && rows.len() == bucket_count(data, INTERVAL_S)
                && time_cells_aligned(rows, INTERVAL_S),
            "flows per 300 s bucket",
        ),
        "wardline-flows-over-time / Bytes per interval by site" => {
            ok(col_sum(rows, 2) == total_bytes && time_cells_aligned(rows, INTERVAL_S), "bytes per bucket and site")
        }
        "wardline-flows-over-time / Bytes per hour (rollup)" => ok(
            col_sum(rows, 1) == total_bytes && rows.len() == bucket_count(data, 3600) && time_cells_aligned(rows, 3600),
            "rollup bytes per hour equal raw bytes (no duplicate counted)",
        ),
        "wardline-top-talkers / Top talkers by bytes sent (hourly rollup)" => ok(
            rows[0][0] == CT.0
                && rows[0][1] == CT.1
                && n(rows, 0, 2) == ct_sent
                && n(rows, 0, 3) == ct_received
                && n(rows, 0, 4) == ct_flows.len() as u64
                && rows.len() == macs.len()
                && col_sum(rows, 2) == total_bytes,
            "the CT sends the most; every in-range device once",
        ),
        "wardline-top-talkers / Top conversations" => ok(
            rows[0][..5] == [CT.0, CT.1, PACS.0, PACS.1, "dicom"]
                && n(rows, 0, 5) == ct_flows.len() as u64
                && n(rows, 0, 6) == ct_flows.iter().map(|r| bytes(r)).sum::<u64>()
                && rows.len() == 5,
            "CT -> PACS is the top conversation",
        ),
        "wardline-segments / Traffic between segments (hourly rollup)" => {
            let first = ["north", "20", "10.20.0.0/24", "10.30.0.0/24"];
            let v6 = rows.iter().find(|r| r[1] == "30");
            ok(
                rows.len() == 4
                    && rows[0][..4] == first
                    && n(rows, 0, 4) == 32
                    && col_sum(rows, 4) == data.len() as u64
                    && col_sum(rows, 5) == total_bytes
                    && v6.is_some_and(|r| r[2] == "fd00:30::/64" && r[3] == "fd00:30::/64")
                    && rows.iter().any(|r| r[..4] == ["south", "untagged", "10.40.0.0/24", "10.40.0.0/24"]),
                "segment pairs",
            )
        }
        "wardline-segments / Bytes by VLAN" => {
            let vlan = |r: &FlowRow| r.vlan.map_or("untagged".to_string(), |v| v.to_string());
            ok(
                as_map(rows, 0, 1) == sum_by(data, vlan, |_| 1) && as_map(rows, 0, 2) == sum_by(data, vlan, bytes),
                "per-VLAN flows and bytes",
            )
        }
        "wardline-segments / Segment pairs per hour" => {
            ok(col_sum(rows, 2) == total_bytes && time_cells_aligned(rows, 3600), "pair bytes per hour")
        }
        "wardline-device / variable device" => {
            ok(col(rows, 0) == macs.iter().copied().collect::<Vec<_>>(), "device list = MACs of the day, sorted")
        }
        "wardline-device / Sent and received per hour" => {
            ok(col_sum(rows, 1) == ct_sent && col_sum(rows, 2) == ct_received, "the CT's hourly volume")
        }
        "wardline-device / Peers" => ok(
            rows.len() == 1 && rows[0][..3] == [PACS.0, PACS.1, "dicom"] && n(rows, 0, 3) == ct_flows.len() as u64,
            "the CT's only peer is the PACS",
        ),
        "wardline-device / Protocols" => ok(rows.len() == 1 && rows[0][0] == "dicom", "the CT speaks DICOM only"),
        "wardline-protocols / Bytes by application" => ok(
            as_map(rows, 0, 1) == to_string_map(sum_by(data, |r| r.app.clone(), bytes)) && rows[0][0] == "dicom",
            "bytes per application sum to the inserted totals",
        ),
        "wardline-protocols / Flows by IP protocol" => {
            let expect = BTreeMap::from([("tcp".to_string(), 44), ("udp".to_string(), 10)]);
            ok(as_map(rows, 0, 1) == expect && col_sum(rows, 2) == total_bytes, "tcp/udp split")
        }
        "wardline-protocols / Flows by application over time" => {
            let apps: BTreeSet<&str> = col(rows, 1).into_iter().collect();
            let want: BTreeSet<&str> = data.iter().map(|r| r.app.as_str()).collect();
            ok(col_sum(rows, 2) == data.len() as u64 && apps == want, "apps over time")
        }
        "wardline-cleartext-phi / Cleartext PHI flows" => ok(n(rows, 0, 0) == phi.len() as u64, "DICOM + HL7 flows"),
        "wardline-cleartext-phi / Cleartext PHI bytes" => ok(n(rows, 0, 0) == phi_bytes, "DICOM + HL7 bytes"),
        "wardline-cleartext-phi / Devices sending cleartext PHI" => ok(n(rows, 0, 0) == 2, "the CT and the monitor"),
        "wardline-cleartext-phi / Cleartext flows by application" => {
            let expect =
                BTreeMap::from([("dicom".to_string(), 12), ("hl7".to_string(), 20), ("telnet".to_string(), 4)]);
            let phi_flag = as_map(rows, 0, 1);
            ok(
                as_map(rows, 0, 2) == expect
                    && phi_flag["dicom"] == 1
                    && phi_flag["hl7"] == 1
                    && phi_flag["telnet"] == 0,
                "cleartext apps, PHI flag",
            )
        }
        "wardline-cleartext-phi / Cleartext PHI conversations" => ok(
            rows.len() == 2 && rows[0][2] == CT.0 && rows[0][6] == "104" && rows[1][2] == MONITOR.0,
            "two PHI conversations, the CT's first",
        ),
        "wardline-cleartext-phi / Cleartext PHI bytes over time" => ok(col_sum(rows, 2) == phi_bytes, "PHI bytes"),
        "wardline-violations / Violations" => ok(n(rows, 0, 0) == 2, "two violations in range, re-sent one once"),
        "wardline-violations / High and critical" => ok(n(rows, 0, 0) == 2, "both are severity >= 3"),
        "wardline-violations / Violations by rule" => ok(
            rows.len() == 2 && rows[0][0] == "no-telnet" && n(rows, 0, 3) == 1 && n(rows, 1, 3) == 1,
            "one per rule, critical first",
        ),
        "wardline-violations / Recent violations" => ok(
            rows.len() == 2 && rows[0][2] == "critical" && rows[0][5] == LEGACY.0 && rows[1][2] == "high",
            "newest first",
        ),
        "wardline-sensor-health / Sensors" => {
            let mut expect = Vec::new();
            for sensor in ["sens-n1", "sens-s1"] {
                let mine: Vec<&FlowRow> = data.iter().filter(|r| r.sensor_id == sensor).collect();
                let last = mine.iter().map(|r| u64::from(r.first_seen)).max().unwrap();
                expect.push((sensor.to_string(), mine.len() as u64, TO - last));
            }
            let got: Vec<(String, u64, u64)> =
                (0..rows.len()).map(|r| (rows[r][0].clone(), n(rows, r, 2), n(rows, r, 6))).collect();
            ok(got == expect && n(rows, 0, 3) == 1, "flows and silence per sensor")
        }
        "wardline-sensor-health / Flows per sensor" => ok(col_sum(rows, 2) == data.len() as u64, "flows per sensor"),
        "wardline-sensor-health / Silent sensors (reported in the 7 days before, nothing in range)" => {
            ok(rows.len() == 1 && rows[0][0] == "sens-old", "only the sensor that stopped a day before")
        }
        "wardline-sensor-health / Flow end reasons" => {
            let got: Vec<(String, String, u64)> =
                (0..rows.len()).map(|r| (rows[r][0].clone(), rows[r][1].clone(), n(rows, r, 2))).collect();
            let expect = vec![
                ("sens-n1".to_string(), "fin".to_string(), 40),
                ("sens-s1".to_string(), "idle".to_string(), 10),
                ("sens-s1".to_string(), "fin".to_string(), 4),
            ];
            ok(got == expect, "end reasons per sensor")
        }
        other => Err(format!("no expected result for panel {other:?}: add one to grafana_panels.rs")),
    }
}

// ---------------------------------------------------------------------------------------
// The run.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Per query key: the TabSeparated rows, or the engine's error.
pub(crate) type EngineResults = BTreeMap<String, Result<String, String>>;

/// Run `job` (statements, then named queries) on chDB; `None` when chDB is not installed.
pub(crate) fn run_on_chdb(
    statements: &[String],
    queries: &BTreeMap<String, String>,
) -> Option<(String, EngineResults)> {
    let script = repo_path("scripts/chdb_check.py");
    let job = serde_json::json!({ "statements": statements, "queries": queries });
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running python3 {}: {e}", script.display()));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(job.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => {
            eprintln!("SKIPPED the current-ClickHouse half of the panel test: {}", stderr.trim());
            return None;
        }
        _ => panic!("scripts/chdb_check.py failed ({}): {stderr}", out.status),
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("chdb_check.py output is JSON");
    let results = v["results"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, r)| {
            let res = match r["tsv"].as_str() {
                Some(tsv) => Ok(tsv.to_string()),
                None => Err(r["error"].as_str().unwrap_or("?").to_string()),
            };
            (k.clone(), res)
        })
        .collect();
    Some((v["version"].as_str().unwrap_or("?").to_string(), results))
}

/// Every panel's SQL with the macros expanded for the fixed range, by panel key.
fn expanded_queries() -> BTreeMap<String, String> {
    let queries = dashboard_queries();
    let range = Range { from: FROM, to: TO, interval_s: INTERVAL_S };
    let vars = BTreeMap::from([("device", CT.0)]);
    let expanded: BTreeMap<String, String> = queries
        .iter()
        .map(|q| (q.key.clone(), expand(&q.sql, &vars, &range).unwrap_or_else(|e| panic!("{}: {e}", q.key))))
        .collect();
    assert_eq!(expanded.len(), queries.len(), "panel titles must be unique within a dashboard");
    expanded
}

/// The data set written through `sink`, then the first batch re-sent (physical duplicates).
async fn write_dataset(sink: &dyn FlowSink, data: &[SentBatch]) {
    for b in data {
        sink.write_batch(b.id, b.sensor, b.site, &b.flows).await.unwrap();
    }
    let again: Vec<FlowRow> = data[0]
        .flows
        .iter()
        .enumerate()
        .map(|(i, f)| FlowRow::from_record(data[0].id, i as u32, "sens-n1", "north", f))
        .collect();
    sink.write_rows(&again).await.unwrap();
}

/// The same panels on a two-replica ClickHouse cluster (decision 0028): data written through
/// the cluster sink, rollups on one replica, every panel read on each replica through the
/// Distributed tables that carry the usual names.
#[test]
fn every_dashboard_panel_gives_the_expected_result_on_a_clickhouse_cluster() {
    use wardline_aggregator::sink::clickhouse_cluster::{ClickHouseClusterSink, ClusterConfig};
    let expanded = expanded_queries();
    let zk = wardline_chaos_tests::zookeeper::ZooKeeperServer::start().expect("start ZooKeeper");
    let cluster = wardline_chaos_tests::clickhouse::ClickHouseCluster::start(&zk, "panels", 2).expect("start cluster");
    let config = ClusterConfig { name: "panels".into(), replicas: cluster.urls(), replicated_database: None };
    let rt = runtime();
    let sink = ClickHouseClusterSink::new(&config, "wardline").unwrap();
    let data = dataset();
    rt.block_on(async {
        let report = sink.create_schema().await.expect("schema");
        assert!(report.failed.is_empty(), "{report:?}");
        write_dataset(&sink, &data).await;
    });
    // The policy engine's writes go to the replicated table, like the flows.
    for sql in violation_inserts() {
        cluster.replicas[1].query(&sql.replace("INTO wardline.", "INTO wardline_local.")).unwrap();
    }
    rt.block_on(async {
        let live = sink.live_replica().await.unwrap();
        refresh_touched_hours(&live, 0).await.expect("rollup refresh");
    });
    let in_range = in_range(&data);
    let mut failures = Vec::new();
    for r in &cluster.replicas {
        for table in ["flows", "policy_violations", "device_hourly", "segment_pair_hourly"] {
            r.query(&format!("SYSTEM SYNC REPLICA wardline_local.{table}")).unwrap();
        }
        for (key, sql) in &expanded {
            match r.query(sql) {
                Ok(tsv) => {
                    if let Err(e) = check(key, &parse_tsv(&tsv), &in_range) {
                        failures.push(format!("{}: {key}: {e}\n  SQL: {sql}", r.http_url));
                    }
                }
                Err(e) => failures.push(format!("{}: {key}: {e}", r.http_url)),
            }
        }
    }
    assert!(failures.is_empty(), "{} panel(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_dashboard_panel_gives_the_expected_result_on_clickhouse_18_16_and_current() {
    let expanded = expanded_queries();

    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let version = ch.query("SELECT version()").unwrap();
    eprintln!("ClickHouse {}", version.trim());
    let rt = runtime();
    let sink = rt.block_on(ClickHouseSink::connect(&ch.http_url, "wardline")).expect("connect");
    let data = dataset();
    // The outbox re-sends the first batch after a leader change: physical duplicates.
    rt.block_on(write_dataset(&sink, &data));
    let raw: usize = ch.query("SELECT count() FROM wardline.flows").unwrap().trim().parse().unwrap();
    assert_eq!(
        raw,
        data.iter().map(|b| b.flows.len()).sum::<usize>() + data[0].flows.len(),
        "duplicates really stored"
    );
    for sql in violation_inserts() {
        ch.query(&sql).unwrap();
    }

    // The rollup job, twice (a second node, or the next pass): recomputing replaces.
    let report = rt.block_on(refresh_touched_hours(&sink, 0)).expect("rollup refresh");
    let expected_hours: BTreeSet<u32> =
        data.iter().flat_map(|b| b.flows.iter().map(|f| (f.first_seen_us / 3_600_000_000 * 3600) as u32)).collect();
    assert_eq!(report.hours.iter().copied().collect::<BTreeSet<_>>(), expected_hours);
    rt.block_on(refresh_touched_hours(&sink, 0)).expect("second rollup refresh");

    let in_range = in_range(&data);
    assert_eq!(in_range.len(), 54);
    let mut failures = Vec::new();
    let mut results_1816 = BTreeMap::new();
    for (key, sql) in &expanded {
        match ch.query(sql) {
            Ok(tsv) => {
                let rows = parse_tsv(&tsv);
                if let Err(e) = check(key, &rows, &in_range) {
                    failures.push(format!("18.16: {key}: {e}\n  SQL: {sql}"));
                }
                results_1816.insert(key.clone(), rows);
            }
            Err(e) => failures.push(format!("18.16: {key}: {e}")),
        }
    }

    // The same on a current engine: schema, the stored rows (with their duplicates),
    // violations, the rollup job's statements, then every panel.
    let mut statements = schema_statements("wardline");
    for table in ["flows", "policy_violations"] {
        let rows = ch.query(&format!("SELECT * FROM wardline.{table} FORMAT TabSeparated")).unwrap();
        statements.push(format!("INSERT INTO wardline.{table} FORMAT TabSeparated\n{rows}"));
    }
    statements.extend(refresh_statements("wardline", &report.hours));
    match run_on_chdb(&statements, &expanded) {
        None => {}
        Some((chdb_version, results)) => {
            eprintln!("chDB (ClickHouse {chdb_version})");
            for (key, res) in results {
                match res {
                    Ok(tsv) => {
                        let rows = parse_tsv(&tsv);
                        if let Err(e) = check(&key, &rows, &in_range) {
                            failures.push(format!("chDB {chdb_version}: {key}: {e}"));
                        } else if results_1816.get(&key).is_some_and(|r| *r != rows) {
                            failures.push(format!(
                                "{key}: 18.16 and {chdb_version} differ: {:?} vs {rows:?}",
                                results_1816[&key]
                            ));
                        }
                    }
                    Err(e) => failures.push(format!("chDB {chdb_version}: {key}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} panel(s) failed:\n{}", failures.len(), failures.join("\n"));
}
