//! Clinical devices: infusion pumps (Alaris check-ins, a PCA pump's telnet exposure),
//! patient monitors (IntelliVue data export, HL7 vitals through the central station),
//! ventilators, anaesthesia machines, defibrillators, lab analyzers, the EHR's ADT feed and
//! medication cabinets.

use super::{Activity, DeviceSchedule, Hl7Kind, NextRun, TlsPeer, SEC};
use crate::protocols::{hl7, tls, vendor};
use crate::topology::{eui64, ALARIS_FIRMWARE};
use crate::wire::{tcp_transaction, TcpConn};
use crate::world::World;
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::Field;

/// Activities of the clinical device kinds; other kinds are left alone.
pub(super) fn schedule<W: Write>(plan: &mut DeviceSchedule<W>) {
    let dev = plan.dev;
    let key = plan.device().profile.key;
    match key {
        "alaris_pcu" => {
            if let Some(server) = plan.role("pump_server") {
                let checkin = Activity::AlarisCheckin { pump: dev, server, seq: 0 };
                plan.after_boot(5, checkin);
            }
        }
        "philips_intellivue" => schedule_monitor(plan),
        "icu_pca" => schedule_pca_pump(plan),
        "mindray_telemetry" | "drager_ventilator" | "ge_anesthesia" => {
            if let Some(engine) = plan.role("hl7_engine") {
                plan.after_boot(20, hl7(dev, engine, Hl7Kind::MonitorVitals));
            }
            if key == "ge_anesthesia" {
                if let Some(dc) = plan.role("dc") {
                    plan.after_boot(3, Activity::Ntp { client: dev, server: dc });
                }
            }
        }
        "zoll_defib" => {
            let case_upload = Activity::Tls {
                client: dev,
                peer: TlsPeer::Internet(Ipv4Addr::new(52, 45, 120, 17)),
                sni: "casereview.zollonline.com",
                profile: tls::EMBEDDED_OPENSSL,
            };
            plan.after_boot(60, case_upload);
        }
        "sysmex_analyzer" | "roche_analyzer" | "abbott_blood_gas" => {
            if let Some(lis) = plan.role("lis") {
                plan.after_boot(15, hl7(dev, lis, Hl7Kind::LabResult));
            }
        }
        "dell_ehr" => {
            if let Some(engine) = plan.role("hl7_engine") {
                plan.after_boot(30, hl7(dev, engine, Hl7Kind::Adt));
            }
        }
        "bd_pyxis" => {
            if let Some(server) = plan.role("pyxis_server") {
                let sync = Activity::Tls {
                    client: dev,
                    peer: TlsPeer::Device(server),
                    sni: "pyxis-es.hosp.local",
                    profile: tls::MODERN_BROWSER,
                };
                plan.after_boot(20, sync);
            }
        }
        _ => {}
    }
}

fn hl7(sender: usize, receiver: usize, kind: Hl7Kind) -> Activity {
    Activity::Hl7Oru { sender, receiver, kind }
}

/// A bedside monitor: polled by its central station, which also forwards its vitals.
fn schedule_monitor<W: Write>(plan: &mut DeviceSchedule<W>) {
    let monitor = plan.dev;
    let Some(central) = plan.role("central_station") else {
        return;
    };
    let poll = Activity::IntellivuePoll { central, monitor, poll: 0, associated: false };
    plan.after_boot(8, poll);
    plan.after_boot(20, hl7(monitor, central, Hl7Kind::MonitorVitals));
    if let Some(engine) = plan.role("hl7_engine") {
        plan.after_boot(25, hl7(central, engine, Hl7Kind::Gateway { monitor }));
    }
}

/// A PCA pump: Hospira MedNet (on the pump server role here) over TLS, and a biomed telnet
/// session from the site's first Windows 7 workstation, the documented risky exposure
/// (ICSA-15-125-01B).
fn schedule_pca_pump<W: Write>(plan: &mut DeviceSchedule<W>) {
    let dev = plan.dev;
    if let Some(server) = plan.role("pump_server") {
        let mednet = Activity::Tls {
            client: dev,
            peer: TlsPeer::Device(server),
            sni: "mednet.hosp.local",
            profile: tls::EMBEDDED_OPENSSL,
        };
        plan.after_boot(10, mednet);
    }
    let site = plan.device().site;
    let biomed_ws = plan.world.devices.iter().position(|o| o.site == site && o.profile.key == "win7_workstation");
    if let Some(ws) = biomed_ws {
        let telnet = Activity::Telnet { client: ws, server: dev };
        plan.after_boot(90, telnet);
    }
}

/// An Alaris pump's status check-in with its systems manager; `seq` counts check-ins.
pub(super) fn alaris_checkin<W: Write>(w: &mut World<W>, pump: usize, server: usize, seq: &mut u32) -> NextRun {
    *seq += 1;
    let d = &w.devices[pump];
    let firmware = d.firmware.unwrap_or(ALARIS_FIRMWARE);
    let status = vendor::alaris_status(*seq, &d.serial, "8015", firmware, "DL-2024-03", !(*seq).is_multiple_of(3));
    let (ch, sh) = (w.host(pump), w.host(server));
    let mut conn = TcpConn::open(&mut w.em, ch, sh, 3613, "alaris")?;
    conn.request(&mut w.em, &status, &vendor::alaris_ack(*seq))?;
    conn.close(&mut w.em, true)?;
    w.ev(pump, Field::VendorProtocol, "alaris/tcp 3613");
    w.ev(server, Field::ListeningPort, "tcp/3613");
    Ok(Some(30 * SEC))
}

/// The central station's IntelliVue data export: associate once, then poll every second.
pub(super) fn intellivue_poll<W: Write>(
    w: &mut World<W>,
    central: usize,
    monitor: usize,
    poll: &mut u16,
    associated: &mut bool,
) -> NextRun {
    let (c, m) = (w.host(central), w.host(monitor));
    if !*associated {
        w.em.udp_exchange(
            c,
            m,
            24105,
            24105,
            &vendor::intellivue_assoc_request(),
            Some(&vendor::intellivue_assoc_result()),
            "intellivue",
        )?;
        *associated = true;
        w.ev(monitor, Field::VendorProtocol, "intellivue/udp 24105");
    }
    *poll = poll.wrapping_add(1);
    let hr = 60 + u32::from(*poll % 30);
    let spo2 = 94 + u32::from(*poll % 5);
    let req = vendor::intellivue_poll_request(*poll, *poll);
    let res = vendor::intellivue_poll_result(*poll, *poll, &[(0x4182, hr), (0x4bb8, spo2), (0x4a05, 120)]);
    w.em.udp_exchange(c, m, 24105, 24105, &req, Some(&res), "intellivue")?;
    Ok(Some(SEC))
}

/// One HL7 message of `kind`, repeated at the kind's period.
pub(super) fn hl7_message<W: Write>(w: &mut World<W>, sender: usize, receiver: usize, kind: Hl7Kind) -> NextRun {
    hl7_exchange(w, sender, receiver, kind)?;
    let period = match kind {
        Hl7Kind::MonitorVitals => 60,
        Hl7Kind::Gateway { .. } => 30,
        Hl7Kind::LabResult => 45,
        Hl7Kind::Adt => 90,
    };
    Ok(Some(period * SEC))
}

/// A biomed engineer's telnet session to a PCA pump's root shell.
pub(super) fn pca_telnet<W: Write>(w: &mut World<W>, client: usize, server: usize) -> NextRun {
    let banner = b"\xff\xfd\x18\xff\xfd\x20LifeCare PCA 3.0\r\nlogin: ";
    let (ch, sh) = (w.host(client), w.host(server));
    let mut conn = TcpConn::open(&mut w.em, ch, sh, 23, "telnet")?;
    conn.send(&mut w.em, false, banner)?;
    conn.request(&mut w.em, b"root\r\n", b"# ")?;
    conn.request(&mut w.em, b"cat /etc/version\r\n", b"3.0.2.1\r\n# ")?;
    conn.close(&mut w.em, true)?;
    w.ev(server, Field::TelnetBanner, "LifeCare PCA 3.0");
    w.ev(server, Field::ListeningPort, "tcp/23");
    Ok(Some(600 * SEC))
}

/// HL7 naming of a device in MSH-3/4.
pub(super) fn hl7_party<W: Write>(w: &World<W>, dev: usize) -> hl7::Hl7Party {
    let d = &w.devices[dev];
    let facility = format!("{}^{}", d.zone.to_uppercase(), w.sites[d.site].name.to_uppercase());
    let application = match d.profile.key {
        "philips_intellivue" => format!("MX450^{}^EUI-64", eui64(w.em.hosts[d.host].mac)),
        "philips_piic" => "PIIC_IX^Philips".into(),
        "mindray_telemetry" => "MINDRAY_TMS^Mindray".into(),
        "drager_ventilator" => "EVITA_V500^Draeger".into(),
        "ge_anesthesia" => "AISYS_CS2^GE".into(),
        "sysmex_analyzer" => "XN-1000^Sysmex".into(),
        "roche_analyzer" => "COBAS6000^Roche".into(),
        "abbott_blood_gas" => "ISTAT^Abbott".into(),
        "hp_lis" => "LIS".into(),
        "dell_ehr" => "EHR".into(),
        _ => "HL7ENGINE".into(),
    };
    hl7::Hl7Party { application, facility }
}

/// One HL7 message over MLLP from `sender` to `receiver`, acknowledged.
fn hl7_exchange<W: Write>(w: &mut World<W>, sender: usize, receiver: usize, kind: Hl7Kind) -> anyhow::Result<()> {
    let n = w.next();
    let ts = hl7::timestamp(w.em.now_us);
    let from = hl7_party(w, sender);
    let to = hl7_party(w, receiver);
    let control = format!("MSG{n:08}");
    let subject = match kind {
        Hl7Kind::Gateway { monitor } => monitor,
        _ => sender,
    };
    let subject_mac = w.em.hosts[w.host(subject)].mac;
    let model = w.devices[subject].profile.model;
    let device_id = format!("{}^{}^EUI-64", eui64(subject_mac), model.split_whitespace().last().unwrap_or(model));
    let location = format!("{}^{}^A", w.devices[subject].zone.to_uppercase(), 300 + subject % 50);
    let (msg, version, trigger) = match kind {
        Hl7Kind::MonitorVitals | Hl7Kind::Gateway { .. } => {
            let obs = vital_signs(n);
            (
                hl7::oru_r01(
                    &from,
                    &to,
                    &ts,
                    &control,
                    "2.6",
                    &format!("PID{:06}", subject),
                    &location,
                    &device_id,
                    &obs,
                ),
                "2.6",
                "R01",
            )
        }
        Hl7Kind::LabResult => {
            let obs = lab_results(n);
            (
                hl7::oru_r01(&from, &to, &ts, &control, "2.5.1", &format!("PID{:06}", n), "LAB^1^A", &device_id, &obs),
                "2.5.1",
                "R01",
            )
        }
        Hl7Kind::Adt => {
            (hl7::adt_a01(&from, &to, &ts, &control, &format!("PID{:06}", n), "WARD^312^A"), "2.5.1", "A01")
        }
    };
    let ack = hl7::ack(&to, &from, &ts, trigger, &control, &format!("ACK{n:08}"), version);
    let (ch, sh) = (w.host(sender), w.host(receiver));
    tcp_transaction(&mut w.em, ch, sh, 2575, "hl7", &hl7::mllp(&msg), &hl7::mllp(&ack))?;
    let app0 = from.application.split('^').next().unwrap_or("").to_string();
    w.ev(sender, Field::Hl7SendingApp, app0);
    w.ev(sender, Field::Hl7SendingFacility, from.facility.split('^').next().unwrap_or("").to_string());
    w.ev(sender, Field::Hl7MessageType, msg.split('|').nth(8).unwrap_or("").to_string());
    w.ev(sender, Field::Hl7Version, version);
    if !matches!(kind, Hl7Kind::Adt) {
        w.ev(subject, Field::Hl7DeviceId, device_id.split('^').next().unwrap_or("").to_string());
    }
    w.ev(receiver, Field::Hl7ReceivingApp, to.application.split('^').next().unwrap_or("").to_string());
    w.ev(receiver, Field::ListeningPort, "tcp/2575");
    Ok(())
}

/// Heart rate and SpO2, varying with the message number `n`.
fn vital_signs(n: u32) -> [hl7::Observation; 2] {
    [
        hl7::Observation {
            code: "147842^MDC_ECG_HEART_RATE^MDC",
            value: (60 + n % 30).to_string(),
            units: "264864^MDC_DIM_BEAT_PER_MIN^MDC",
        },
        hl7::Observation {
            code: "150456^MDC_PULS_OXIM_SAT_O2^MDC",
            value: (94 + n % 5).to_string(),
            units: "262688^MDC_DIM_PERCENT^MDC",
        },
    ]
}

/// Hemoglobin and leukocytes, varying with the message number `n`.
fn lab_results(n: u32) -> [hl7::Observation; 2] {
    [
        hl7::Observation { code: "718-7^Hemoglobin^LN", value: format!("{}.{}", 11 + n % 5, n % 10), units: "g/dL" },
        hl7::Observation { code: "6690-2^Leukocytes^LN", value: format!("{}.{}", 4 + n % 7, n % 10), units: "10*3/uL" },
    ]
}
