//! Office IT: Windows workstations (start-up, browsing, file shares, the EHR), thin
//! clients on RDP, and printers (IPP, raw port 9100, SNMP, embedded web server).

use super::network::{dns_lookup, tls_session};
use super::{Activity, DeviceSchedule, NextRun, TlsPeer, DOMAIN, SEC};
use crate::protocols::{http, netbios, smb, snmp, tls, vendor};
use crate::wire::frames::L2;
use crate::wire::{tcp_transaction, TcpConn};
use crate::world::World;
use rand::Rng;
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::Field;

/// Activities of workstations, thin clients and printers; other kinds are left alone.
pub(super) fn schedule<W: Write>(plan: &mut DeviceSchedule<W>) {
    let dev = plan.dev;
    match plan.device().profile.key {
        "win7_workstation" | "win10_workstation" => {
            plan.after_boot(2, Activity::WinStartup { ws: dev });
            plan.after_boot(40, Activity::WebBrowse { ws: dev });
            if let Some(dc) = plan.role("dc") {
                plan.after_boot(60, Activity::Smb { ws: dev, server: dc });
            }
            if let Some(ehr) = plan.role("ehr") {
                let tls = Activity::Tls {
                    client: dev,
                    peer: TlsPeer::Device(ehr),
                    sni: "ehr.hosp.local",
                    profile: tls::WINDOWS7_SCHANNEL,
                };
                plan.after_boot(30, tls);
            }
        }
        "hp_printer" => {
            if let Some(ws) = first_workstation_of_zone(plan) {
                plan.after_boot(30, Activity::PrinterWeb { ws, printer: dev });
                plan.after_boot(45, Activity::PrintIpp { ws, printer: dev });
                let snmp = Activity::SnmpPoll { manager: ws, agent: dev };
                plan.after_boot(12, snmp);
            }
        }
        "zebra_label_printer" => {
            if let Some(ws) = first_workstation_of_zone(plan) {
                plan.after_boot(20, Activity::PrintRaw { ws, printer: dev });
            }
        }
        "hp_thin_client" => {
            if let Some(server) = plan.role("ehr") {
                plan.after_boot(10, Activity::Rdp { client: dev, server });
            }
        }
        _ => {}
    }
}

/// Printers are driven by the first workstation of their zone.
fn first_workstation_of_zone<W: Write>(plan: &DeviceSchedule<W>) -> Option<usize> {
    let d = plan.device();
    plan.world.devices.iter().position(|o| {
        o.site == d.site && o.zone == d.zone && matches!(o.profile.key, "win7_workstation" | "win10_workstation")
    })
}

/// Browsing to Bing: DNS lookup, then a TLS session.
pub(super) fn web_browse<W: Write>(w: &mut World<W>, ws: usize) -> NextRun {
    let ip = Ipv4Addr::new(204, 79, 197, 200);
    dns_lookup(w, ws, "www.bing.com", Some(ip))?;
    let ext = w.external(ip);
    let client = w.host(ws);
    tls_session(w, client, ext, "www.bing.com", &tls::WINDOWS7_SCHANNEL, 3)?;
    w.ev(ws, Field::TlsSni, "www.bing.com");
    Ok(Some(90 * SEC))
}

/// SMB2 dialect negotiation with the domain controller.
pub(super) fn smb<W: Write>(w: &mut World<W>, ws: usize, server: usize) -> NextRun {
    let (c, s) = (w.host(ws), w.host(server));
    let mut guid = [0u8; 16];
    w.em.rng.fill(&mut guid);
    let req = smb::negotiate_request(guid, &[0x0202, 0x0210]);
    let resp = smb::negotiate_response([0x5a; 16], 0x0210, smb::filetime(w.em.now_us));
    tcp_transaction(&mut w.em, c, s, 445, "smb", &req, &resp)?;
    w.ev(server, Field::SmbDialect, "2.1");
    w.ev(server, Field::ListeningPort, "tcp/445");
    Ok(Some(300 * SEC))
}

/// A discharge summary printed over IPP.
pub(super) fn print_ipp<W: Write>(w: &mut World<W>, ws: usize, printer: usize) -> NextRun {
    let n = w.next();
    let pip = w.ip(printer);
    let uri = format!("ipp://{pip}/ipp/print");
    let doc: Vec<u8> =
        b"\x1b%-12345X@PJL JOB NAME=\"Discharge summary\"\r\n".iter().copied().cycle().take(6000).collect();
    let body = http::ipp_print_job(n, &uri, "nurse", "Discharge summary", &doc);
    let req =
        http::post(&format!("{pip}:631"), "/ipp/print", "Microsoft-Windows/6.1 UPnP/1.0", "application/ipp", &body);
    let resp = http::response(
        "HP HTTP Server; HP LaserJet M402dn - C5F94A",
        "application/ipp",
        &http::ipp_print_job_response(n, 100 + n),
    );
    let (c, s) = (w.host(ws), w.host(printer));
    tcp_transaction(&mut w.em, c, s, 631, "ipp", &req, &resp)?;
    w.ev(printer, Field::ListeningPort, "tcp/631");
    Ok(Some(180 * SEC))
}

/// A ZPL specimen label sent to a label printer's raw port 9100.
pub(super) fn print_raw<W: Write>(w: &mut World<W>, ws: usize, printer: usize) -> NextRun {
    let zpl = b"^XA^FO50,50^A0N,40,40^FDSPECIMEN 0042 HGB^FS^BY2^FO50,120^BCN,80,Y,N,N^FD0042^FS^XZ\r\n";
    let (c, s) = (w.host(ws), w.host(printer));
    let mut conn = TcpConn::open(&mut w.em, c, s, 9100, "raw_print")?;
    conn.send(&mut w.em, true, zpl)?;
    conn.close(&mut w.em, true)?;
    w.ev(printer, Field::ListeningPort, "tcp/9100");
    Ok(Some(120 * SEC))
}

/// An SNMPv2c GET of the printer's system group, community "public".
pub(super) fn snmp_poll<W: Write>(w: &mut World<W>, manager: usize, agent: usize) -> NextRun {
    let n = w.next();
    let descr = "HP ETHERNET MULTI-ENVIRONMENT,ROM none,JETDIRECT,JD153,EEPROM JSI23900012,CIDATE 02/05/2015";
    let name = w.hostname(agent);
    let req = snmp::get_system("public", n);
    let resp = snmp::system_response("public", n, descr, "1.3.6.1.4.1.11.2.3.9.1", &name);
    let (mh, ah) = (w.host(manager), w.host(agent));
    let port = 49152 + (n % 1000) as u16;
    w.em.udp_exchange(mh, ah, port, 161, &req, Some(&resp), "snmp")?;
    w.ev(agent, Field::SnmpSysDescr, descr);
    w.ev(agent, Field::SnmpSysObjectId, "1.3.6.1.4.1.11.2.3.9.1");
    w.ev(manager, Field::SnmpCommunityInUse, "public");
    Ok(Some(60 * SEC))
}

/// A status page from the printer's embedded web server.
pub(super) fn printer_web<W: Write>(w: &mut World<W>, ws: usize, printer: usize) -> NextRun {
    let server = "HP HTTP Server; HP LaserJet M402dn - C5F94A; Serial Number: PHBBK12345; Built: Thu Feb 05, 2015 04:26:16PM {FDP1CN1505BR}";
    let ua = ua_of(w.devices[ws].profile.os);
    let pip = w.ip(printer).to_string();
    let req = http::get(&pip, "/hp/device/DeviceStatus/Index", ua);
    let resp = http::response(
        server,
        "text/html; charset=utf-8",
        b"<html><head><title>HP LaserJet M402dn</title></head><body>Ready</body></html>",
    );
    let (c, s) = (w.host(ws), w.host(printer));
    tcp_transaction(&mut w.em, c, s, 80, "http", &req, &resp)?;
    w.ev(printer, Field::HttpServer, server);
    w.ev(ws, Field::HttpUserAgent, ua);
    w.ev(printer, Field::ListeningPort, "tcp/80");
    Ok(Some(600 * SEC))
}

/// A thin client's RDP session to the EHR: X.224 connection, TLS, a few records each way.
pub(super) fn rdp<W: Write>(w: &mut World<W>, client: usize, server: usize) -> NextRun {
    let user = w.hostname(client).to_lowercase();
    let (ch, sh) = (w.host(client), w.host(server));
    let mut conn = TcpConn::open(&mut w.em, ch, sh, 3389, "rdp")?;
    conn.request(&mut w.em, &vendor::rdp_connection_request(&user), &vendor::rdp_connection_confirm())?;
    let cp = tls::WINDOWS7_SCHANNEL;
    let mut random = [0u8; 32];
    w.em.rng.fill(&mut random);
    conn.request(&mut w.em, &tls::client_hello(&cp, "", random), &tls::server_hello(0xc030, random))?;
    for _ in 0..10 {
        conn.request(
            &mut w.em,
            &tls::application_data(120, &[0x21, 0x7e]),
            &tls::application_data(2800, &[0x5a, 0x11, 0x93]),
        )?;
    }
    conn.close(&mut w.em, true)?;
    w.ev(server, Field::RdpInUse, "true");
    w.ev(server, Field::ListeningPort, "tcp/3389");
    Ok(Some(60 * SEC))
}

/// A Windows workstation's start-up: NetBIOS name registrations, DNS lookups of its domain
/// controller and the connectivity probe, then the probe itself over HTTP.
pub(super) fn windows_startup<W: Write>(w: &mut World<W>, ws: usize) -> anyhow::Result<()> {
    let h = w.em.hosts[w.host(ws)].clone();
    let name = w.hostname(ws);
    let o = h.ip.octets();
    let bcast = Ipv4Addr::new(o[0], o[1], 255, 255);
    let l2 = L2 { src: h.mac, dst: [0xff; 6], vlan: h.vlan };
    // Windows registers <00> (workstation) and <20> (server) and its domain group <00>.
    for (nm, suffix, group) in [(name.as_str(), 0x00, false), (name.as_str(), 0x20, false), ("HOSP", 0x00, true)] {
        let id: u16 = w.em.rng.gen();
        let msg = netbios::registration(id, nm, suffix, group, h.ip);
        w.em.udp_raw(l2, h.ip, bcast, h.stack.ttl, w.devices[ws].host, 137, 137, &msg, "netbios")?;
        w.em.gap(700, 1500);
    }
    w.ev(ws, Field::NetbiosName, name.to_uppercase());
    let dc_ip = w.ip(w.role(w.devices[ws].site, "dc").unwrap_or(ws));
    dns_lookup(w, ws, &format!("dc01.{DOMAIN}"), Some(dc_ip))?;
    let ncsi = Ipv4Addr::new(131, 107, 255, 255);
    dns_lookup(w, ws, "www.msftncsi.com", Some(ncsi))?;
    let ext = w.external(ncsi);
    let c = w.host(ws);
    let req = http::get("www.msftncsi.com", "/ncsi.txt", "Microsoft NCSI");
    let resp = http::response("Microsoft-IIS/8.5", "text/plain", b"Microsoft NCSI");
    tcp_transaction(&mut w.em, c, ext, 80, "http", &req, &resp)?;
    w.ev(ws, Field::HttpUserAgent, "Microsoft NCSI");
    w.ev(ws, Field::HttpHost, "www.msftncsi.com");
    Ok(())
}

/// The browser User-Agent of a Windows version.
fn ua_of(os: &str) -> &'static str {
    if os.starts_with("Windows 10") {
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Trident/7.0; rv:11.0) like Gecko"
    } else {
        "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; WOW64; Trident/5.0)"
    }
}
