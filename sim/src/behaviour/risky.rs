//! The risky variant's exchanges (`topology/risky.rs` places them): each runs once and
//! records what it did, with the time of its first frame, for the truth.

use super::{clinical, imaging, NextRun};
use crate::protocols::{hl7, http, smb};
use crate::topology::{RiskyAct, RiskyEntry};
use crate::wire::{tcp_transaction, TcpConn};
use crate::world::World;
use rand::Rng;
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::Field;

/// An Internet web server (the pump browses to it) and a TeamViewer router.
const WEB_SERVER: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
const TEAMVIEWER_ROUTER: Ipv4Addr = Ipv4Addr::new(37, 252, 227, 52);
/// What a desktop Chrome sends; a pump has no business sending it.
pub(crate) const BROWSER_USER_AGENT: &str =
    "Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36";
/// Studies the CT sends back to back in the spike.
const SPIKE_STUDIES: usize = 40;

/// Runs `act` once.
pub(super) fn run<W: Write>(w: &mut World<W>, act: RiskyAct) -> NextRun {
    let t = w.em.now_us;
    let entry = match act {
        RiskyAct::Browse { pump } => browse(w, pump)?,
        RiskyAct::Smb1 { client, server } => smb1(w, client, server)?,
        RiskyAct::TelnetLogin { client, server } => telnet_login(w, client, server)?,
        RiskyAct::TeamViewer { console } => teamviewer(w, console)?,
        RiskyAct::Hl7Leak { sender, receiver } => hl7_leak(w, sender, receiver)?,
        RiskyAct::Spike { modality, pacs } => spike(w, modality, pacs)?,
    };
    let entry = RiskyEntry { first_us: t, ..entry };
    if let Some(plan) = w.risky.as_mut() {
        plan.entries.push(entry);
    }
    Ok(None)
}

fn entry<W: Write>(
    w: &World<W>,
    kind: &'static str,
    dev: usize,
    peer: Peer,
    target: &str,
    detail: String,
) -> RiskyEntry {
    let (peer_dev, peer_ip) = match peer {
        Peer::Device(p) => (Some(p), Some(w.ip(p))),
        Peer::Internet(ip) => (None, Some(ip)),
    };
    RiskyEntry { kind, dev, ip: w.ip(dev), peer_dev, peer_ip, target: target.to_string(), first_us: 0, detail }
}

enum Peer {
    Device(usize),
    Internet(Ipv4Addr),
}

/// The pump fetches a web page from an Internet host with a desktop browser's user agent.
fn browse<W: Write>(w: &mut World<W>, pump: usize) -> anyhow::Result<RiskyEntry> {
    let ext = w.external(WEB_SERVER);
    let c = w.host(pump);
    let body = b"<!doctype html><html><head><title>Example Domain</title></head><body></body></html>";
    let mut conn = TcpConn::open(&mut w.em, c, ext, 80, "http")?;
    let req = http::get("www.example.com", "/", BROWSER_USER_AGENT);
    conn.request(&mut w.em, &req, &http::response("ECS (nyb/1D2E)", "text/html; charset=UTF-8", body))?;
    conn.close(&mut w.em, true)?;
    w.ev(pump, Field::HttpUserAgent, BROWSER_USER_AGENT);
    let detail = format!("HTTP GET http://www.example.com/ with user agent {BROWSER_USER_AGENT:?}");
    Ok(entry(w, "web_browsing", pump, Peer::Internet(WEB_SERVER), "tcp/80", detail))
}

/// The client offers only SMB1's "NT LM 0.12"; the Windows 7 modality accepts it.
fn smb1<W: Write>(w: &mut World<W>, client: usize, server: usize) -> anyhow::Result<RiskyEntry> {
    let (c, s) = (w.host(client), w.host(server));
    let pid: u16 = w.em.rng.gen();
    let mut challenge = [0u8; 8];
    w.em.rng.fill(&mut challenge);
    let mut conn = TcpConn::open(&mut w.em, c, s, 445, "smb")?;
    let req = smb::smb1_negotiate_request(pid, &["NT LM 0.12"]);
    let resp = smb::smb1_negotiate_response(pid, 0, challenge, "WORKGROUP", smb::filetime(w.em.now_us));
    conn.request(&mut w.em, &req, &resp)?;
    conn.close(&mut w.em, true)?;
    w.ev(server, Field::ListeningPort, "tcp/445");
    w.ev(server, Field::Smb1InUse, "server");
    w.ev(client, Field::Smb1InUse, "client");
    let detail =
        format!("{} answers an SMB1 NEGOTIATE (dialect NT LM 0.12) from {}", w.hostname(server), w.hostname(client));
    Ok(entry(w, "smb1_server", server, Peer::Device(client), "tcp/445", detail))
}

/// A service login to the analyzer over Telnet: login and password prompts, then a shell.
fn telnet_login<W: Write>(w: &mut World<W>, client: usize, server: usize) -> anyhow::Result<RiskyEntry> {
    let (c, s) = (w.host(client), w.host(server));
    let mut conn = TcpConn::open(&mut w.em, c, s, 23, "telnet")?;
    conn.send(&mut w.em, false, b"\xff\xfd\x18\xff\xfd\x20\xff\xfb\x01Sysmex XN-1000 service port\r\nlogin: ")?;
    conn.request(&mut w.em, b"service\r\n", b"Password: ")?;
    conn.request(&mut w.em, b"sysmex123\r\n", b"\r\nLast login: never\r\n$ ")?;
    conn.request(&mut w.em, b"exit\r\n", b"logout\r\n")?;
    conn.close(&mut w.em, false)?;
    w.ev(server, Field::TelnetBanner, "Sysmex XN-1000 service port | login:");
    w.ev(server, Field::ListeningPort, "tcp/23");
    w.ev(server, Field::CleartextLogin, "telnet");
    w.ev(client, Field::CleartextLogin, "telnet");
    let detail =
        format!("{} logs in to {} over Telnet (login and password prompts)", w.hostname(client), w.hostname(server));
    Ok(entry(w, "cleartext_credentials", server, Peer::Device(client), "telnet", detail))
}

/// The MRI console opens a TeamViewer session through TeamViewer's router on tcp/5938.
fn teamviewer<W: Write>(w: &mut World<W>, console: usize) -> anyhow::Result<RiskyEntry> {
    let ext = w.external(TEAMVIEWER_ROUTER);
    let c = w.host(console);
    let mut conn = TcpConn::open(&mut w.em, c, ext, 5938, "teamviewer")?;
    // TeamViewer's framing: magic 0x17 0x24, command, length; the body is opaque here.
    let mut hello = vec![0x17, 0x24, 0x0a, 0x20, 0x00, 0x00, 0x00];
    hello.extend((0..25).map(|i| (i * 37 + 11) as u8));
    let mut reply = vec![0x17, 0x24, 0x0b, 0x10, 0x00, 0x00, 0x00];
    reply.extend((0..9).map(|i| (i * 53 + 7) as u8));
    for _ in 0..3 {
        conn.request(&mut w.em, &hello, &reply)?;
        w.em.gap(200_000, 400_000);
    }
    conn.close(&mut w.em, true)?;
    w.ev(console, Field::ConnectsTo, "tcp/5938");
    let detail = format!("{} connects to TeamViewer at {TEAMVIEWER_ROUTER} (tcp/5938)", w.hostname(console));
    Ok(entry(w, "remote_access", console, Peer::Internet(TEAMVIEWER_ROUTER), "tcp/5938", detail))
}

/// The EHR's ADT (with a PID segment) goes to a workstation, not the interface engine.
fn hl7_leak<W: Write>(w: &mut World<W>, sender: usize, receiver: usize) -> anyhow::Result<RiskyEntry> {
    let n = w.next();
    let ts = hl7::timestamp(w.em.now_us);
    let from = clinical::hl7_party(w, sender);
    let to = hl7::Hl7Party { application: "HL7SPY".into(), facility: "ADMIN".into() };
    let control = format!("MSG{n:08}");
    let msg = hl7::adt_a01(&from, &to, &ts, &control, &format!("PID{n:06}"), "WARD^312^A");
    let ack = hl7::ack(&to, &from, &ts, "A01", &control, &format!("ACK{n:08}"), "2.5.1");
    let (c, s) = (w.host(sender), w.host(receiver));
    tcp_transaction(&mut w.em, c, s, 2575, "hl7", &hl7::mllp(&msg), &hl7::mllp(&ack))?;
    w.ev(receiver, Field::ListeningPort, "tcp/2575");
    let detail =
        format!("ADT^A01 with a PID segment from {} to workstation {}", w.hostname(sender), w.hostname(receiver));
    Ok(entry(w, "phi_cleartext_unexpected_peer", sender, Peer::Device(receiver), "tcp/2575", detail))
}

/// The CT sends many studies at once: its usual peer and protocol, many times the volume.
fn spike<W: Write>(w: &mut World<W>, modality: usize, pacs: usize) -> anyhow::Result<RiskyEntry> {
    for _ in 0..SPIKE_STUDIES {
        imaging::store(w, modality, pacs, 0)?;
        w.em.gap(50_000, 150_000);
    }
    let detail = format!("{SPIKE_STUDIES} DICOM C-STOREs from {} to the PACS within seconds", w.hostname(modality));
    Ok(entry(w, "traffic_spike", modality, Peer::Device(pacs), "tcp/104", detail))
}
