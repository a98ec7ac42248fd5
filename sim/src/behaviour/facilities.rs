//! Facilities and communications: IP phones (SIP registration, RTP calls), Vocera badges,
//! building automation (BACnet), door badge readers, nurse call, location tracking and
//! cameras streaming to the video recorder (RTSP).

use super::{Activity, DeviceSchedule, NextRun, DOMAIN, SEC};
use crate::protocols::{bacnet, vendor};
use crate::wire::frames::L2;
use crate::wire::{tcp_transaction, TcpConn};
use crate::world::World;
use rand::Rng;
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::Field;

/// A line-oriented vendor protocol exchange (badge events, nurse calls, tag reports).
#[derive(Clone, Copy)]
pub(crate) struct AsciiExchange {
    pub port: u16,
    /// Application label of the flow in the ground truth.
    pub app: &'static str,
    /// Event kind; picks the fields and the period.
    pub kind: &'static str,
    pub udp: bool,
}

/// An `Activity::Ascii` to the site's `role` server, if the site has one, `secs` after boot.
fn schedule_ascii<W: Write>(plan: &mut DeviceSchedule<W>, role: &str, secs: u64, exchange: AsciiExchange) {
    if let Some(server) = plan.role(role) {
        let client = plan.dev;
        let event = Activity::Ascii { client, server, exchange };
        plan.after_boot(secs, event);
    }
}

/// Activities of phones, badges, building and security devices; other kinds are left alone.
pub(super) fn schedule<W: Write>(plan: &mut DeviceSchedule<W>) {
    let dev = plan.dev;
    let ascii = |port, app, kind, udp| AsciiExchange { port, app, kind, udp };
    match plan.device().profile.key {
        "yealink_phone" => schedule_phone(plan),
        "vocera_badge" => {
            let e = ascii(5002, "vocera", "VOCERA_KEEPALIVE", true);
            schedule_ascii(plan, "call_manager", 5, e);
        }
        "jci_hvac" => {
            if let Some(bms) = plan.role("bms") {
                let poll = Activity::Bacnet { bms, controller: dev, invoke: 0 };
                plan.after_boot(5, poll);
            }
        }
        "stanley_badge" => {
            let e = ascii(3001, "access_control", "BADGE", false);
            schedule_ascii(plan, "access_server", 7, e);
        }
        "axis_camera" => {
            if let Some(nvr) = plan.role("nvr") {
                let stream = Activity::Rtsp { nvr, camera: dev, seq: 0 };
                plan.after_boot(6, stream);
            }
        }
        "rauland_nurse_call" => {
            let e = ascii(5001, "nurse_call", "NURSECALL", false);
            schedule_ascii(plan, "hl7_engine", 25, e);
        }
        "aeroscout_rtls" => {
            let e = ascii(1144, "rtls", "TAGREPORT", true);
            schedule_ascii(plan, "access_server", 2, e);
        }
        _ => {}
    }
}

/// A phone registers with the call manager; every other phone of the site calls the next.
fn schedule_phone<W: Write>(plan: &mut DeviceSchedule<W>) {
    let dev = plan.dev;
    let Some(pbx) = plan.role("call_manager") else {
        return;
    };
    plan.after_boot(3, Activity::Sip { phone: dev, pbx });
    let site = plan.device().site;
    let phones: Vec<usize> = plan
        .world
        .devices
        .iter()
        .enumerate()
        .filter(|(_, o)| o.site == site && o.profile.key == "yealink_phone")
        .map(|(i, _)| i)
        .collect();
    if let Some(pos) = phones.iter().position(|&p| p == dev) {
        if pos % 2 == 0 && pos + 1 < phones.len() {
            let call = Activity::RtpCall { a: dev, b: phones[pos + 1] };
            plan.after_boot(30, call);
        }
    }
}

/// SIP REGISTER to the call manager, answered 200 OK.
pub(super) fn sip_register<W: Write>(w: &mut World<W>, phone: usize, pbx: usize) -> NextRun {
    let n = w.next();
    let ua = "Yealink SIP-T46S 66.86.0.15";
    let pip = w.ip(phone).to_string();
    let user = format!("{}", 4000 + phone);
    let call_id = format!("{:08x}", n.wrapping_mul(2_654_435_761));
    let req = vendor::sip_register(&user, DOMAIN, &pip, 5060, &call_id, n, ua);
    let resp = vendor::sip_ok(&user, DOMAIN, &pip, 5060, &call_id, n, "Cisco-CUCM14.0");
    let (ph, xh) = (w.host(phone), w.host(pbx));
    w.em.udp_exchange(ph, xh, 5060, 5060, &req, Some(&resp), "sip")?;
    w.ev(phone, Field::VendorProtocol, format!("sip user-agent {ua}"));
    Ok(Some(120 * SEC))
}

/// Ten seconds of G.711 both ways between two phones, 20 ms packets.
pub(super) fn rtp_call<W: Write>(w: &mut World<W>, a: usize, b: usize) -> NextRun {
    let (ah, bh) = (w.host(a), w.host(b));
    let leg = w.em.leg(ah, bh);
    let ssrc_a: u32 = w.em.rng.gen();
    let ssrc_b: u32 = w.em.rng.gen();
    let base: u16 = w.em.rng.gen_range(0..30000);
    for i in 0..500u16 {
        let ts = u32::from(i) * 160;
        w.em.udp(&leg, ah, bh, true, 16384, 16386, &vendor::rtp_pcmu(base.wrapping_add(i), ts, ssrc_a, 0xff), "rtp")?;
        w.em.gap(100, 400);
        w.em.udp(&leg, ah, bh, false, 16384, 16386, &vendor::rtp_pcmu(base.wrapping_add(i), ts, ssrc_b, 0x7f), "rtp")?;
        w.em.gap(2000, 3000);
    }
    Ok(Some(240 * SEC))
}

/// The building management system reads a controller's temperature; the first run
/// discovers it (Who-Is broadcast, I-Am back). `invoke` is the BACnet invoke id.
pub(super) fn bacnet_poll<W: Write>(w: &mut World<W>, bms: usize, controller: usize, invoke: &mut u8) -> NextRun {
    let (bh, ch) = (w.host(bms), w.host(controller));
    if *invoke == 0 {
        let h = &w.em.hosts[bh];
        let bcast = Ipv4Addr::new(h.ip.octets()[0], h.ip.octets()[1], 255, 255);
        let l2 = L2 { src: h.mac, dst: [0xff; 6], vlan: h.vlan };
        let (ip, ttl) = (h.ip, h.stack.ttl);
        w.em.udp_raw(l2, ip, bcast, ttl, bh, 47808, 47808, &bacnet::who_is(), "bacnet")?;
        w.em.gap(2000, 9000);
        let inst = 1000 + controller as u32;
        w.em.udp_exchange(ch, bh, 47808, 47808, &bacnet::i_am(inst, 5), None, "bacnet")?;
        w.ev(controller, Field::VendorProtocol, "bacnet/udp 47808 vendor-id 5");
    }
    *invoke = invoke.wrapping_add(1).max(1);
    let temp = 21.0 + f32::from(*invoke % 10) / 10.0;
    let req = bacnet::read_property(*invoke, bacnet::OBJECT_ANALOG_INPUT, 1, bacnet::PROP_PRESENT_VALUE);
    let resp = bacnet::read_property_ack(*invoke, bacnet::OBJECT_ANALOG_INPUT, 1, bacnet::PROP_PRESENT_VALUE, temp);
    w.em.udp_exchange(bh, ch, 47808, 47808, &req, Some(&resp), "bacnet")?;
    Ok(Some(10 * SEC))
}

/// The video recorder pulls two seconds of a camera's stream over RTSP, RTP interleaved
/// in the TCP session. `seq` continues the RTP sequence numbers across runs.
pub(super) fn rtsp_stream<W: Write>(w: &mut World<W>, nvr: usize, camera: usize, seq: &mut u16) -> NextRun {
    let (nh, ch) = (w.host(nvr), w.host(camera));
    let url = format!("rtsp://{}/axis-media/media.amp", w.ip(camera));
    let ua = "Milestone XProtect RTSP client";
    let server = "GStreamer RTSP server";
    let mut conn = TcpConn::open(&mut w.em, nh, ch, 554, "rtsp")?;
    conn.request(
        &mut w.em,
        &vendor::rtsp_request("OPTIONS", &url, 1, ua, ""),
        &vendor::rtsp_response(1, server, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n", ""),
    )?;
    let sdp =
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=Media Presentation\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
    conn.request(
        &mut w.em,
        &vendor::rtsp_request("DESCRIBE", &url, 2, ua, "Accept: application/sdp\r\n"),
        &vendor::rtsp_response(2, server, "Content-Type: application/sdp\r\n", sdp),
    )?;
    conn.request(
        &mut w.em,
        &vendor::rtsp_request(
            "SETUP",
            &format!("{url}/trackID=1"),
            3,
            ua,
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
        ),
        &vendor::rtsp_response(
            3,
            server,
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678\r\n",
            "",
        ),
    )?;
    conn.request(
        &mut w.em,
        &vendor::rtsp_request("PLAY", &url, 4, ua, "Session: 12345678\r\n"),
        &vendor::rtsp_response(4, server, "Session: 12345678\r\n", ""),
    )?;
    // Two seconds of 25 fps video, one RTP packet per frame slice.
    let ssrc = 0x1234_0000 | camera as u32;
    for f in 0..50u32 {
        *seq = seq.wrapping_add(1);
        let len = if f % 25 == 0 { 1400 } else { 700 + (f as usize * 13) % 600 };
        let pkt = vendor::rtsp_interleaved_video(0, *seq, f * 3600, ssrc, len);
        conn.send(&mut w.em, false, &pkt)?;
        w.em.gap(30_000, 40_000);
    }
    conn.request(
        &mut w.em,
        &vendor::rtsp_request("TEARDOWN", &url, 5, ua, "Session: 12345678\r\n"),
        &vendor::rtsp_response(5, server, "", ""),
    )?;
    conn.close(&mut w.em, true)?;
    w.ev(camera, Field::ListeningPort, "tcp/554");
    Ok(Some(20 * SEC))
}

/// One vendor event from `client` to `server`, over UDP or a short TCP session.
pub(super) fn ascii_event<W: Write>(
    w: &mut World<W>,
    client: usize,
    server: usize,
    exchange: AsciiExchange,
) -> NextRun {
    let AsciiExchange { port, app, kind, udp } = exchange;
    let msg = ascii_fields(w, kind, client);
    let (chh, shh) = (w.host(client), w.host(server));
    if udp {
        w.em.udp_exchange(chh, shh, port, port, &msg, None, app)?;
    } else {
        tcp_transaction(&mut w.em, chh, shh, port, app, &msg, b"ACK\r\n")?;
    }
    w.ev(client, Field::VendorProtocol, format!("{app}/{} {port}", if udp { "udp" } else { "tcp" }));
    Ok(Some(match kind {
        "TAGREPORT" => 5 * SEC,
        "VOCERA_KEEPALIVE" => 20 * SEC,
        _ => 45 * SEC,
    }))
}

/// The text of one vendor event of `kind` from `dev`.
fn ascii_fields<W: Write>(w: &mut World<W>, kind: &str, dev: usize) -> Vec<u8> {
    let n = w.next();
    let room = 300 + (n % 40);
    let serial = w.devices[dev].serial.clone();
    match kind {
        "BADGE" => vendor::ascii_event(
            "DOOR_EVENT",
            &[("reader", serial), ("card", format!("{:08}", n * 37 % 99_999_999)), ("result", "GRANTED".into())],
        ),
        "NURSECALL" => vendor::ascii_event(
            "CALL",
            &[("station", serial), ("room", room.to_string()), ("bed", "A".into()), ("priority", "NORMAL".into())],
        ),
        "TAGREPORT" => vendor::ascii_event(
            "TAG",
            &[("receiver", serial), ("tag", format!("000CCC{:06X}", n)), ("rssi", format!("-{}", 40 + n % 50))],
        ),
        _ => vendor::ascii_event(kind, &[("id", serial), ("seq", n.to_string())]),
    }
}
