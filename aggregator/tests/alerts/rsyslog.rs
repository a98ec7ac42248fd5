//! Alert events to a real rsyslog (Debian's `rsyslogd`, started here on free loopback
//! ports with a throw-away config): octet-counted RFC 5424 over TCP with a CEF body, then
//! one datagram per message over UDP with a JSON body. Every received line must parse as
//! RFC 5424 with Wardline's structured data, each event arrives once, and a second
//! forwarder (as a new leader would run) continues after the replicated watermark.

use crate::raft_support::{config, open_unserved, WAIT};
use crate::scenario;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wardline_aggregator::raft::RaftNode;
use wardline_aggregator::siem::syslog::Payload;
use wardline_aggregator::siem::{Forwarder, SiemConfig, Transport};
use wardline_aggregator::state::alerts::{AlertAction, Triage};
use wardline_aggregator::state::Command;

/// A private rsyslogd writing every message it receives, raw, to `out`.
struct Rsyslog {
    child: Child,
    out: PathBuf,
    tcp: u16,
    udp: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Rsyslog {
    fn start() -> Rsyslog {
        let dir = tempfile::tempdir().unwrap();
        let (tcp, udp) = (free_port(), free_udp_port());
        let out = dir.path().join("received.log");
        let conf = dir.path().join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{dir}\")\n\
                 module(load=\"imtcp\")\nmodule(load=\"imudp\")\n\
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 ruleset(name=\"wardline\") {{ action(type=\"omfile\" file=\"{out}\" template=\"raw\") }}\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp}\" ruleset=\"wardline\")\n\
                 input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp}\" ruleset=\"wardline\")\n",
                dir = dir.path().display(),
                out = out.display(),
            ),
        )
        .unwrap();
        let child = Process::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rsyslogd runs (Debian package rsyslog; scripts/setup.sh installs it)");
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", tcp)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not listen on 127.0.0.1:{tcp}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog { child, out, tcp, udp, _dir: dir }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One RFC 5424 message, parsed strictly enough to fail on a malformed one.
#[derive(Debug)]
struct Syslog {
    pri: u16,
    timestamp: String,
    hostname: String,
    app: String,
    procid: String,
    msgid: String,
    sd_id: String,
    sd: BTreeMap<String, String>,
    msg: String,
}

fn parse_5424(line: &str) -> Result<Syslog, String> {
    let rest = line.strip_prefix('<').ok_or("no PRI")?;
    let (pri, rest) = rest.split_once('>').ok_or("PRI not closed")?;
    let pri: u16 = pri.parse().map_err(|_| "PRI not a number")?;
    if pri > 191 {
        return Err(format!("PRI {pri} out of range"));
    }
    let rest = rest.strip_prefix("1 ").ok_or("VERSION is not 1")?;
    let mut fields = rest.splitn(6, ' ');
    let mut next = |what: &str| fields.next().map(str::to_string).ok_or(format!("no {what}"));
    let (timestamp, hostname, app, procid, msgid) =
        (next("TIMESTAMP")?, next("HOSTNAME")?, next("APP-NAME")?, next("PROCID")?, next("MSGID")?);
    let rest = next("STRUCTURED-DATA")?;
    let ts = timestamp.as_bytes();
    let shape_ok = ts.len() == 24
        && ts.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(format!("TIMESTAMP {timestamp:?} is not RFC 3339 UTC with ms"));
    }
    for (name, v, max) in
        [("HOSTNAME", &hostname, 255), ("APP-NAME", &app, 48), ("PROCID", &procid, 128), ("MSGID", &msgid, 32)]
    {
        if v.is_empty() || v.len() > max || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{name} {v:?} is not 1..{max} printable characters"));
        }
    }
    // One SD-ELEMENT: [id name="value" ...] with \" \\ \] escapes.
    let mut chars = rest.char_indices().peekable();
    if chars.next().map(|(_, c)| c) != Some('[') {
        return Err("no SD-ELEMENT".into());
    }
    let mut sd = BTreeMap::new();
    let mut token = String::new();
    let mut sd_id = None;
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        match c {
            // The space after a value.
            ' ' if token.is_empty() => {}
            ' ' | ']' => {
                if sd_id.is_none() {
                    sd_id = Some(std::mem::take(&mut token));
                }
                if c == ']' {
                    end = Some(i);
                    break;
                }
            }
            '=' => {
                let name = std::mem::take(&mut token);
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(format!("SD-PARAM {name} value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push(chars.next().ok_or("escape at end")?.1),
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err("SD-PARAM value not closed".into()),
                    }
                }
                sd.insert(name, value);
            }
            c => token.push(c),
        }
    }
    let end = end.ok_or("SD-ELEMENT not closed")?;
    let msg = rest[end + 1..].strip_prefix(' ').ok_or("no MSG after the structured data")?.to_string();
    Ok(Syslog { pri, timestamp, hostname, app, procid, msgid, sd_id: sd_id.ok_or("no SD-ID")?, sd, msg })
}

/// CEF: 7 header fields split on unescaped `|`, then `key=value` extensions.
fn parse_cef(msg: &str) -> Result<(Vec<String>, BTreeMap<String, String>), String> {
    let body = msg.strip_prefix("CEF:").ok_or("not CEF")?;
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = body.chars();
    while header.len() < 7 {
        match chars.next().ok_or("CEF header cut short")? {
            '\\' => field.push(chars.next().ok_or("escape at end")?),
            '|' => header.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    let ext_text: String = chars.collect();
    let mut ext = BTreeMap::new();
    let mut key: Option<String> = None;
    let mut value = String::new();
    for token in ext_text.split(' ') {
        let starts_key = token
            .split_once('=')
            .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()) && !k.ends_with('\\'));
        if starts_key {
            if let Some(k) = key.take() {
                ext.insert(k, unescape_cef(&value));
            }
            let (k, v) = token.split_once('=').unwrap();
            key = Some(k.to_string());
            value = v.to_string();
        } else {
            value.push(' ');
            value.push_str(token);
        }
    }
    if let Some(k) = key {
        ext.insert(k, unescape_cef(&value));
    }
    Ok((header, ext))
}

fn unescape_cef(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => {}
            },
            c => out.push(c),
        }
    }
    out
}

fn siem(transport: Transport, port: u16, format: Payload) -> SiemConfig {
    SiemConfig {
        address: format!("127.0.0.1:{port}"),
        transport,
        format,
        facility: 16,
        hostname: Some("ward-agg-1".into()),
    }
}

/// Run a forwarder until `lines` lines arrived and the watermark reached the last event.
async fn forward_until(raft: &Arc<RaftNode>, rsyslog: &Rsyslog, config: SiemConfig, lines: usize) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Forwarder::new(raft.clone(), config).run(stop_rx));
    let deadline = Instant::now() + WAIT;
    loop {
        let (through, last) = raft.read_state(|s| (s.alerts().forwarded_through(), s.alerts().last_event_seq())).await;
        if rsyslog.lines().len() >= lines && through == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {lines} lines, forwarded through {through} of {last}",
            rsyslog.lines().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

fn setup_dir(p: &Path) -> PathBuf {
    p.join("raft")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_events_reach_rsyslog_as_rfc5424_with_cef_then_json_each_once() {
    let rsyslog = Rsyslog::start();
    let data = tempfile::tempdir().unwrap();
    let raft = open_unserved(1, &setup_dir(data.path()), config(1000)).await.unwrap();
    raft.initialize_single_if_new().await.unwrap();
    raft.wait_for_leader(WAIT).await.unwrap();
    for cmd in scenario() {
        raft.propose(cmd).await.unwrap();
    }
    let ack = Triage {
        id: 1,
        action: AlertAction::Acknowledged,
        by: "ana".into(),
        at_ms: 1_767_315_600_000,
        note: String::new(),
    };
    assert!(raft.propose(Command::AlertTriage(ack)).await.unwrap().applied);
    let events = raft.read_state(|s| s.alerts().last_event_seq()).await as usize;
    assert_eq!(events, 7, "six alerts opened, one acknowledged");

    forward_until(&raft, &rsyslog, siem(Transport::Tcp, rsyslog.tcp, Payload::Cef), events).await;
    let lines = rsyslog.lines();
    assert_eq!(lines.len(), events, "each event once: {lines:#?}");
    let alerts = raft.read_state(|s| s.alerts().alerts().clone()).await;
    for (i, line) in lines.iter().enumerate() {
        let m = parse_5424(line).unwrap_or_else(|e| panic!("not RFC 5424 ({e}): {line}"));
        assert_eq!((m.hostname.as_str(), m.app.as_str(), m.procid.as_str()), ("ward-agg-1", "wardline", "1"));
        assert_eq!(m.sd_id, "wardline@32473");
        assert_eq!(m.sd["event"], (i + 1).to_string(), "in order");
        let alert = &alerts[&m.sd["alert"].parse::<u64>().unwrap()];
        assert_eq!(m.sd["kind"], alert.kind.to_string());
        assert_eq!(m.sd["device"], alert.device);
        let syslog_severity = u16::from(wardline_aggregator::siem::syslog::syslog_severity(alert.severity));
        assert_eq!(m.pri, 16 * 8 + syslog_severity, "local0 and the alert's severity");
        let (header, ext) = parse_cef(&m.msg).unwrap_or_else(|e| panic!("not CEF ({e}): {}", m.msg));
        assert_eq!(&header[..3], ["0", "Wardline", "Wardline"]);
        assert_eq!(header[4], alert.kind.to_string(), "signature id");
        assert_eq!(ext["externalId"], alert.id.to_string());
        assert_eq!(ext["cs1"], alert.device);
        assert_eq!(ext["cs2"], alert.target);
        assert_eq!(ext["cs3"], alert.site);
        assert_eq!(ext["cn1"], m.sd["event"]);
        if i + 1 < events {
            assert_eq!(
                (m.msgid.as_str(), ext["act"].as_str(), ext["suser"].as_str()),
                ("alert_opened", "opened", "wardline")
            );
            assert_eq!(ext["msg"], alert.evidence, "evidence survives CEF escaping");
            assert_eq!(ext["rt"], (alert.first_seen_us / 1000).to_string(), "opened at the capture time");
        } else {
            assert_eq!(
                (m.msgid.as_str(), ext["suser"].as_str(), ext["cs4"].as_str()),
                ("alert_acknowledged", "ana", "acknowledged")
            );
            assert_eq!(m.timestamp, "2026-01-02T01:00:00.000Z");
        }
    }

    // A new forwarder (a new leader) starts after the replicated watermark: only the new
    // event goes out, now as JSON over UDP.
    let resolve = Triage {
        id: 2,
        action: AlertAction::Resolved,
        by: "ana".into(),
        at_ms: 1_767_315_700_000,
        note: "fixed".into(),
    };
    assert!(raft.propose(Command::AlertTriage(resolve)).await.unwrap().applied);
    forward_until(&raft, &rsyslog, siem(Transport::Udp, rsyslog.udp, Payload::Json), events + 1).await;
    let lines = rsyslog.lines();
    assert_eq!(lines.len(), events + 1, "nothing sent twice: {lines:#?}");
    let m = parse_5424(&lines[events]).unwrap();
    assert_eq!((m.sd["event"].as_str(), m.msgid.as_str()), ("8", "alert_resolved"));
    let body: serde_json::Value = serde_json::from_str(&m.msg).unwrap_or_else(|e| panic!("not JSON ({e}): {}", m.msg));
    assert_eq!(body["event_seq"], 8);
    assert_eq!(body["action"], "resolved");
    assert_eq!(body["by"], "ana");
    assert_eq!(body["alert"]["id"], 2);
    assert_eq!(body["alert"]["state"], "resolved");
    assert_eq!(body["alert"]["history"].as_array().unwrap().last().unwrap()["note"], "fixed");
    assert!(raft.read_state(|s| s.alerts().pending_events().is_empty()).await, "forwarded events leave the queue");
    raft.shutdown().await;
}

/// Three nodes, each running a forwarder: only the leader sends; after the leader is gone
/// the new leader sends only the events after the replicated watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_forwards_and_a_new_leader_continues_after_the_watermark() {
    use crate::raft_support::ServedNode;
    use std::collections::BTreeSet;

    let rsyslog = Rsyslog::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        nodes.push(ServedNode::start(i as u64 + 1, d.path(), config(1000)).await);
    }
    let n1 = nodes[0].node.clone();
    assert!(n1.initialize_single_if_new().await.unwrap());
    n1.wait_for_leader(WAIT).await.unwrap();
    for n in &nodes[1..] {
        n1.add_learner(n.node.node_id(), n.member(), true).await.unwrap();
    }
    n1.change_membership(BTreeSet::from([1, 2, 3]), false).await.unwrap();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for n in &nodes {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let cfg = SiemConfig {
            hostname: Some(format!("agg-{}", n.node.node_id())),
            ..siem(Transport::Tcp, rsyslog.tcp, Payload::Cef)
        };
        tasks.push(tokio::spawn(Forwarder::new(n.node.clone(), cfg).run(rx)));
        stops.push(tx);
    }
    for cmd in scenario() {
        n1.propose(cmd).await.unwrap();
    }
    let wait_forwarded = |node: Arc<RaftNode>, lines: usize| {
        let rsyslog = &rsyslog;
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let (through, last) =
                    node.read_state(|s| (s.alerts().forwarded_through(), s.alerts().last_event_seq())).await;
                if through == last && rsyslog.lines().len() >= lines {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "forwarded through {through} of {last}, {} lines",
                    rsyslog.lines().len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_forwarded(n1.clone(), 6).await;
    let index = n1.applied_index().await.unwrap();
    for n in &nodes[1..] {
        n.node.wait_for_applied(index, WAIT).await.unwrap();
    }

    // The leader goes away (its forwarder with it, as when the process dies).
    stops[0].send(true).unwrap();
    let mut nodes = nodes.into_iter();
    let old = nodes.next().unwrap();
    old.stop().await;
    let rest: Vec<ServedNode> = nodes.collect();
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        if let Some(l) = rest.iter().find(|n| n.node.metrics().current_leader == Some(n.node.node_id())) {
            break l.node.clone();
        }
        assert!(Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let t = Triage {
        id: 4,
        action: AlertAction::Suppressed,
        by: "ana".into(),
        at_ms: 1_767_315_600_000,
        note: String::new(),
    };
    assert!(leader.propose(Command::AlertTriage(t)).await.unwrap().applied);
    wait_forwarded(leader.clone(), 7).await;

    let lines = rsyslog.lines();
    let parsed: Vec<Syslog> = lines.iter().map(|l| parse_5424(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let seqs: Vec<&str> = parsed.iter().map(|m| m.sd["event"].as_str()).collect();
    assert_eq!(seqs, ["1", "2", "3", "4", "5", "6", "7"], "every event once, in order");
    assert!(parsed[..6].iter().all(|m| m.procid == "1" && m.hostname == "agg-1"), "only the first leader sent them");
    assert_eq!(parsed[6].procid, leader.node_id().to_string(), "the new leader sent the new event");
    assert_eq!(parsed[6].msgid, "alert_suppressed");

    for s in &stops[1..] {
        s.send(true).unwrap();
    }
    for t in tasks {
        let _ = t.await;
    }
    for n in rest {
        n.stop().await;
    }
}
