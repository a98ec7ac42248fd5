//! Device behaviours: the periodic exchanges each kind of device performs, and the
//! time-ordered scheduler that runs them.
//!
//! Every activity is a small state machine; each run emits one complete exchange (a TCP
//! session, a request/response, a burst) and says when it wants to run again. Each module
//! owns the kinds of devices it names and the activities they start:
//! - `network`: address assignment (DHCP, ARP), LLDP from the core switches, DNS, TLS
//!   sessions, NTP and syslog, which every kind of device uses;
//! - `clinical`: infusion pumps, patient monitors, ventilators, lab analyzers, the EHR
//!   and other HL7 senders;
//! - `imaging`: modalities storing studies to PACS and querying the worklist (DICOM);
//! - `office`: Windows workstations, thin clients and printers;
//! - `facilities`: phones, badges, building automation, cameras and location tracking;
//! - `risky`: the labelled risky exchanges of `--risky` (placed by `topology/risky.rs`).
//!
//! Adding a device kind = a profile in `profiles.rs`, a place in a zone plan
//! (`topology/plans.rs`) and a `match` arm in the `schedule` of the module it belongs to.

mod clinical;
mod facilities;
mod imaging;
mod network;
mod office;
mod risky;

use crate::protocols::tls;
use crate::topology::{Device, DeviceEvent, RiskyAct};
use crate::world::World;
use rand::Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::net::Ipv4Addr;

pub(crate) const SEC: u64 = 1_000_000;
/// DNS domain of every generated hospital.
pub(crate) const DOMAIN: &str = "hosp.local";

/// The delay until an activity's next run, or `None` once it is done.
type NextRun = anyhow::Result<Option<u64>>;

/// One scheduled behaviour: a small state machine; each run emits one complete exchange.
pub(crate) enum Activity {
    Boot {
        dev: usize,
    },
    Lldp {
        router: usize,
        zone: usize,
    },
    AlarisCheckin {
        pump: usize,
        server: usize,
        seq: u32,
    },
    IntellivuePoll {
        central: usize,
        monitor: usize,
        poll: u16,
        associated: bool,
    },
    Hl7Oru {
        sender: usize,
        receiver: usize,
        kind: Hl7Kind,
    },
    /// `nic`: which of the modality's interfaces (0 = primary) the association uses.
    DicomStore {
        modality: usize,
        pacs: usize,
        nic: usize,
    },
    DicomWorklist {
        modality: usize,
        mwl: usize,
    },
    WinStartup {
        ws: usize,
    },
    WebBrowse {
        ws: usize,
    },
    Smb {
        ws: usize,
        server: usize,
    },
    PrintIpp {
        ws: usize,
        printer: usize,
    },
    PrintRaw {
        ws: usize,
        printer: usize,
    },
    SnmpPoll {
        manager: usize,
        agent: usize,
    },
    PrinterWeb {
        ws: usize,
        printer: usize,
    },
    Sip {
        phone: usize,
        pbx: usize,
    },
    RtpCall {
        a: usize,
        b: usize,
    },
    Bacnet {
        bms: usize,
        controller: usize,
        invoke: u8,
    },
    Rtsp {
        nvr: usize,
        camera: usize,
        seq: u16,
    },
    Ascii {
        client: usize,
        server: usize,
        exchange: facilities::AsciiExchange,
    },
    Tls {
        client: usize,
        peer: TlsPeer,
        sni: &'static str,
        profile: tls::ClientProfile,
    },
    Rdp {
        client: usize,
        server: usize,
    },
    Ntp {
        client: usize,
        server: usize,
    },
    Syslog {
        dev: usize,
        server: usize,
    },
    Telnet {
        client: usize,
        server: usize,
    },
    /// A scripted change of the device (release, leave, arrive at another site).
    Scripted {
        dev: usize,
        event: DeviceEvent,
    },
    /// One injected risky exchange (`--risky`), run once.
    Risky {
        act: RiskyAct,
    },
}

impl Activity {
    /// The devices an activity involves; it waits while any of them is off the network.
    fn devices(&self) -> [Option<usize>; 2] {
        use Activity as A;
        let (a, b) = match *self {
            A::Boot { dev } | A::WinStartup { ws: dev } | A::WebBrowse { ws: dev } | A::Syslog { dev, .. } => {
                (dev, None)
            }
            A::Lldp { router, .. } => (router, None),
            A::AlarisCheckin { pump, server, .. } => (pump, Some(server)),
            A::IntellivuePoll { central, monitor, .. } => (central, Some(monitor)),
            A::Hl7Oru { sender, receiver, .. } => (sender, Some(receiver)),
            A::DicomStore { modality, pacs, .. } => (modality, Some(pacs)),
            A::DicomWorklist { modality, mwl } => (modality, Some(mwl)),
            A::Smb { ws, server } => (ws, Some(server)),
            A::PrintIpp { ws, printer } | A::PrintRaw { ws, printer } | A::PrinterWeb { ws, printer } => {
                (ws, Some(printer))
            }
            A::SnmpPoll { manager, agent } => (manager, Some(agent)),
            A::Sip { phone, pbx } => (phone, Some(pbx)),
            A::RtpCall { a, b } => (a, Some(b)),
            A::Bacnet { bms, controller, .. } => (bms, Some(controller)),
            A::Rtsp { nvr, camera, .. } => (nvr, Some(camera)),
            A::Ascii { client, server, .. }
            | A::Rdp { client, server }
            | A::Ntp { client, server }
            | A::Telnet { client, server } => (client, Some(server)),
            A::Tls { client, peer, .. } => (client, if let TlsPeer::Device(s) = peer { Some(s) } else { None }),
            // Scripted events are what take devices off and on the network.
            A::Scripted { .. } => return [None, None],
            A::Risky { act } => return act.devices(),
        };
        [Some(a), b]
    }
}

/// The server end of a TLS session.
#[derive(Clone, Copy)]
pub(crate) enum TlsPeer {
    /// A device of the hospital (it gets a listening-port fact).
    Device(usize),
    /// A server on the Internet, looked up in DNS by its SNI first.
    Internet(Ipv4Addr),
}

#[derive(Clone, Copy)]
pub(crate) enum Hl7Kind {
    /// A monitor reporting its own vitals (device id = its EUI-64).
    MonitorVitals,
    /// The central station gateway forwarding one monitor's vitals.
    Gateway { monitor: usize },
    /// A lab analyzer result.
    LabResult,
    /// The EHR's ADT feed.
    Adt,
}

/// The activities being planned for one device.
struct DeviceSchedule<'a, W: Write> {
    world: &'a World<W>,
    dev: usize,
    /// When the device boots, in seconds from the start; staggered by device index (and
    /// later for a device that joins during the run).
    boot_secs: u64,
    out: &'a mut Vec<(u64, Activity)>,
}

impl<W: Write> DeviceSchedule<'_, W> {
    fn device(&self) -> &Device {
        &self.world.devices[self.dev]
    }
    /// The device holding `role` at this device's site.
    fn role(&self, role: &str) -> Option<usize> {
        self.world.role(self.device().site, role)
    }
    /// First run of `activity` `secs` seconds after the device booted.
    fn after_boot(&mut self, secs: u64, activity: Activity) {
        self.out.push(((self.boot_secs + secs) * SEC, activity));
    }
    /// First run of `activity` at `at_us` microseconds from the start.
    fn at(&mut self, at_us: u64, activity: Activity) {
        self.out.push((at_us, activity));
    }
}

/// Every activity of every device, with its first run time (microseconds from the start).
pub(crate) fn schedule<W: Write>(w: &World<W>) -> Vec<(u64, Activity)> {
    let mut out = Vec::new();
    for dev in 0..w.devices.len() {
        let joins_at_us = w.devices[dev].joins_at_us;
        let stagger = 1 + (dev as u64 % 20);
        let boot_secs = joins_at_us / SEC + stagger;
        let mut plan = DeviceSchedule { world: w, dev, boot_secs, out: &mut out };
        plan.at(joins_at_us + stagger * SEC / 2, Activity::Boot { dev });
        // Each device kind belongs to exactly one module; the others ignore it.
        network::schedule(&mut plan);
        clinical::schedule(&mut plan);
        imaging::schedule(&mut plan);
        office::schedule(&mut plan);
        facilities::schedule(&mut plan);
    }
    for e in &w.scripted {
        out.push((e.at_us, Activity::Scripted { dev: e.dev, event: e.event }));
    }
    for (at_us, act) in w.risky.iter().flat_map(|p| &p.acts) {
        out.push((*at_us, Activity::Risky { act: *act }));
    }
    out
}

/// When an activity due at `t_us` may run, if not now: a later time, or `u64::MAX` for
/// never (one of its devices has left for good).
fn deferred_until<W: Write>(w: &World<W>, activity: &Activity, t_us: u64) -> Option<u64> {
    activity.devices().into_iter().flatten().filter_map(|d| w.devices[d].deferred_until(t_us)).max()
}

/// Runs every activity in time order until `end_us` (or `max_packets`).
pub(crate) fn run<W: Write>(
    w: &mut World<W>,
    acts: Vec<(u64, Activity)>,
    start_us: u64,
    end_us: u64,
    max_packets: Option<u64>,
) -> anyhow::Result<()> {
    let mut heap = BinaryHeap::new();
    let mut slots: Vec<Activity> = Vec::with_capacity(acts.len());
    for (i, (t, a)) in acts.into_iter().enumerate() {
        heap.push(Reverse((start_us + t, i)));
        slots.push(a);
    }
    while let Some(Reverse((t, i))) = heap.pop() {
        if t > end_us || max_packets.is_some_and(|m| w.em.packets() >= m) {
            break;
        }
        if let Some(resume) = deferred_until(w, &slots[i], t) {
            if resume != u64::MAX {
                heap.push(Reverse((resume, i)));
            }
            continue;
        }
        w.em.now_us = w.em.now_us.max(t);
        if let Some(next) = step(w, &mut slots[i])? {
            let jitter = w.em.rng.gen_range(0..=next / 10 + 1);
            heap.push(Reverse((t + next + jitter, i)));
        }
    }
    Ok(())
}

/// Runs one activity; returns the delay until its next run.
fn step<W: Write>(w: &mut World<W>, activity: &mut Activity) -> NextRun {
    match activity {
        Activity::Boot { dev } => network::boot(w, *dev).map(|()| None),
        Activity::Lldp { router, zone } => network::lldp(w, *router, *zone),
        Activity::AlarisCheckin { pump, server, seq } => clinical::alaris_checkin(w, *pump, *server, seq),
        Activity::IntellivuePoll { central, monitor, poll, associated } => {
            clinical::intellivue_poll(w, *central, *monitor, poll, associated)
        }
        Activity::Hl7Oru { sender, receiver, kind } => clinical::hl7_message(w, *sender, *receiver, *kind),
        Activity::DicomStore { modality, pacs, nic } => imaging::store(w, *modality, *pacs, *nic),
        Activity::DicomWorklist { modality, mwl } => imaging::worklist(w, *modality, *mwl),
        Activity::WinStartup { ws } => office::windows_startup(w, *ws).map(|()| None),
        Activity::WebBrowse { ws } => office::web_browse(w, *ws),
        Activity::Smb { ws, server } => office::smb(w, *ws, *server),
        Activity::PrintIpp { ws, printer } => office::print_ipp(w, *ws, *printer),
        Activity::PrintRaw { ws, printer } => office::print_raw(w, *ws, *printer),
        Activity::SnmpPoll { manager, agent } => office::snmp_poll(w, *manager, *agent),
        Activity::PrinterWeb { ws, printer } => office::printer_web(w, *ws, *printer),
        Activity::Sip { phone, pbx } => facilities::sip_register(w, *phone, *pbx),
        Activity::RtpCall { a, b } => facilities::rtp_call(w, *a, *b),
        Activity::Bacnet { bms, controller, invoke } => facilities::bacnet_poll(w, *bms, *controller, invoke),
        Activity::Rtsp { nvr, camera, seq } => facilities::rtsp_stream(w, *nvr, *camera, seq),
        Activity::Ascii { client, server, exchange } => facilities::ascii_event(w, *client, *server, *exchange),
        Activity::Tls { client, peer, sni, profile } => network::tls(w, *client, *peer, sni, profile),
        Activity::Rdp { client, server } => office::rdp(w, *client, *server),
        Activity::Ntp { client, server } => network::ntp(w, *client, *server),
        Activity::Syslog { dev, server } => network::syslog(w, *dev, *server),
        Activity::Telnet { client, server } => clinical::pca_telnet(w, *client, *server),
        Activity::Scripted { dev, event } => network::scripted(w, *dev, *event).map(|()| None),
        Activity::Risky { act } => risky::run(w, *act),
    }
}
