//! The risky variant (`--risky`, hospital only): labelled risky behaviours injected into the
//! clean hospital after the identity cases, and a pump reporting vulnerable firmware. The
//! clean run is untouched: nothing here runs (or draws from the random source) without
//! `--risky`, and everything it adds comes after the clean devices, so their MACs, names
//! and addresses stay the same.
//!
//! Every behaviour happens late in the run (from 65 % on), after the identity cases (35–50 %),
//! so a detector that learns for the first half of the run sees the clean hospital while
//! learning and only the injected behaviours after it. Each is written to the truth
//! ([`crate::TruthRisky`]) with its device, peer, target and first frame time:
//!
//! | at | kind | what |
//! |---|---|---|
//! | 65 % | `web_browsing` | a ward infusion pump: HTTP GET to an Internet host, Chrome user agent |
//! | 68 % | `smb1_server` | a radiology workstation negotiates SMB1 only; the Windows 7 X-ray answers it |
//! | 70 % | `cleartext_credentials` | a lab workstation logs in to the Sysmex analyzer over Telnet (login and password prompts) |
//! | 72 % | `remote_access` | the MRI console connects out to a TeamViewer server (tcp/5938) |
//! | 74 % | `phi_cleartext_unexpected_peer` | the EHR sends an HL7 ADT (PID segment) to an admin workstation instead of the interface engine |
//! | 76 % | `new_device_on_clinical_vlan` | a new laptop (Windows 10) joins the ICU VLAN |
//! | 80–83 % | `device_moved` | the east campus's portable ultrasound leaves and turns up at the clinic |
//! | 88 % | `traffic_spike` | the CT sends 40 studies to the PACS back to back |
//!
//! Vulnerable models: the first ICU pump of the main campus reports Alaris firmware 9.19
//! (inside every affected range of the Alaris PC unit advisories); the other pumps report
//! 9.33.1.4 (newer than all of them). The truth lists every device of a model that an
//! advisory names ([`crate::TruthVulnerable`]), with the advisory ids expected.

use super::{add_device, profile, Counters, DeviceEvent, ScriptedEvent};
use crate::options::GenerateOptions;
use crate::truth::{TruthDevice, TruthRisky, TruthVulnerable};
use crate::world::World;
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::MacAddr;

/// Firmware every Alaris PC unit reports unless it is the vulnerable one.
pub(crate) const ALARIS_FIRMWARE: &str = "9.33.1.4";
/// Inside "<= 9.33" (ICSMA-17-017-02), listed in ICSMA-20-170-06 and inside "<= 9.33.1"
/// (ICSMA-20-317-01).
pub(crate) const ALARIS_VULNERABLE_FIRMWARE: &str = "9.19";

/// Which CISA medical advisories name each generated model (read from the advisories'
/// product trees; `intel/tests/vuln/matching.rs` checks the matcher finds exactly these).
const ADVISORIES: &[(&str, &[&str])] = &[
    ("alaris_pcu", &["ICSMA-17-017-02", "ICSMA-20-170-06", "ICSMA-20-317-01"]),
    ("alaris_systems_manager", &["ICSMA-20-317-01"]),
    ("philips_intellivue", &["ICSMA-18-156-01", "ICSMA-20-254-01"]),
    ("philips_piic", &["ICSMA-18-233-01", "ICSMA-20-254-01", "ICSMA-21-322-02"]),
    ("ge_ct", &["ICSMA-20-343-01"]),
    ("ge_anesthesia", &["ICSMA-19-190-01"]),
    ("bd_pyxis", &["ICSMA-18-114-01", "ICSMA-19-248-01", "ICSMA-20-091-01", "ICSMA-22-062-01", "ICSMA-22-151-01"]),
];

/// One injected exchange, run once by `behaviour::risky` at its time.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RiskyAct {
    Browse { pump: usize },
    Smb1 { client: usize, server: usize },
    TelnetLogin { client: usize, server: usize },
    TeamViewer { console: usize },
    Hl7Leak { sender: usize, receiver: usize },
    Spike { modality: usize, pacs: usize },
}

impl RiskyAct {
    /// The devices the exchange involves (it waits while one is off the network).
    pub fn devices(&self) -> [Option<usize>; 2] {
        match *self {
            RiskyAct::Browse { pump } => [Some(pump), None],
            RiskyAct::TeamViewer { console } => [Some(console), None],
            RiskyAct::Smb1 { client, server } | RiskyAct::TelnetLogin { client, server } => {
                [Some(client), Some(server)]
            }
            RiskyAct::Hl7Leak { sender, receiver } => [Some(sender), Some(receiver)],
            RiskyAct::Spike { modality, pacs } => [Some(modality), Some(pacs)],
        }
    }
}

/// A behaviour as it happened (device indices; ids and MACs are filled in for the truth).
pub(crate) struct RiskyEntry {
    pub kind: &'static str,
    pub dev: usize,
    pub ip: Ipv4Addr,
    pub peer_dev: Option<usize>,
    pub peer_ip: Option<Ipv4Addr>,
    pub target: String,
    pub first_us: u64,
    pub detail: String,
}

/// What the risky variant adds to a run.
#[derive(Default)]
pub(crate) struct RiskyPlan {
    /// Offset from the start (µs) and the exchange.
    pub acts: Vec<(u64, RiskyAct)>,
    /// The laptop that joins the ICU VLAN, and the VLAN.
    pub new_device: Option<(usize, Option<u16>)>,
    /// The ultrasound that moves to the clinic.
    pub mover: Option<usize>,
    /// Filled in as the exchanges run.
    pub entries: Vec<RiskyEntry>,
}

/// Per mille of the run at which each behaviour starts.
const BROWSE_AT: u64 = 650;
const SMB1_AT: u64 = 680;
const TELNET_AT: u64 = 700;
const REMOTE_AT: u64 = 720;
const HL7_LEAK_AT: u64 = 740;
const NEW_DEVICE_AT: u64 = 760;
const MOVE_LEAVE_AT: u64 = 800;
const MOVE_ARRIVE_AT: u64 = 830;
const SPIKE_AT: u64 = 880;
/// How long after a device comes back its other activities resume (its DHCP goes first).
const RESUME_AFTER_US: u64 = 5_000_000;

/// Adds the risky devices, moves and exchanges (after every clean device).
pub(super) fn add_risky_cases<W: Write>(w: &mut World<W>, opts: &GenerateOptions, counters: &mut Counters) {
    let start = opts.start_time_us;
    let run_us = u64::from(opts.scale.minutes) * 60_000_000;
    let at = |per_mille: u64| run_us / 1000 * per_mille;
    let find = |w: &World<W>, site: usize, zone: Option<&str>, key: &str| {
        w.devices.iter().position(|d| {
            d.placed.0 == site && zone.is_none_or(|z| d.placed.1 == z) && d.profile.key == key && d.joins_at_us == 0
        })
    };
    let mut plan = RiskyPlan::default();
    if let Some(pump) = find(w, 0, Some("icu"), "alaris_pcu") {
        w.devices[pump].firmware = Some(ALARIS_VULNERABLE_FIRMWARE);
    }
    if let Some(pump) = find(w, 0, Some("ward"), "alaris_pcu") {
        plan.acts.push((at(BROWSE_AT), RiskyAct::Browse { pump }));
    }
    if let (Some(client), Some(server)) =
        (find(w, 0, Some("radiology"), "win10_workstation"), find(w, 0, None, "carestream_xray"))
    {
        plan.acts.push((at(SMB1_AT), RiskyAct::Smb1 { client, server }));
    }
    if let (Some(client), Some(server)) =
        (find(w, 0, Some("lab"), "win10_workstation"), find(w, 0, None, "sysmex_analyzer"))
    {
        plan.acts.push((at(TELNET_AT), RiskyAct::TelnetLogin { client, server }));
    }
    if let Some(console) = find(w, 0, None, "siemens_mr") {
        plan.acts.push((at(REMOTE_AT), RiskyAct::TeamViewer { console }));
    }
    if let (Some(sender), Some(receiver)) =
        (find(w, 0, None, "dell_ehr"), find(w, 0, Some("admin"), "win10_workstation"))
    {
        plan.acts.push((at(HL7_LEAK_AT), RiskyAct::Hl7Leak { sender, receiver }));
    }
    if let (Some(modality), Some(pacs)) = (find(w, 0, None, "ge_ct"), w.role(0, "pacs")) {
        plan.acts.push((at(SPIKE_AT), RiskyAct::Spike { modality, pacs }));
    }
    // A laptop nobody registered, plugged into the main campus's ICU.
    if let Some(icu) = w.sites[0].zones.iter().position(|z| z.name == "icu") {
        let laptop = add_device(w, counters, profile("win10_workstation"), 0, icu);
        w.devices[laptop].joins_at_us = at(NEW_DEVICE_AT);
        w.devices[laptop].absent.push((start, start + at(NEW_DEVICE_AT)));
        plan.new_device = Some((laptop, w.sites[0].zones[icu].vlan));
    }
    // The east campus's portable ultrasound turns up at the clinic.
    let clinic = w.sites.iter().position(|s| s.is_routed());
    if let (Some(mover), Some(clinic)) = (find(w, 1, None, "sonosite_us"), clinic) {
        let ip = w.sites[clinic].zones[0].next_address(true);
        let arrive = DeviceEvent::Arrive { site: clinic, zone: 0, ip };
        w.scripted.push(ScriptedEvent { at_us: at(MOVE_LEAVE_AT), dev: mover, event: DeviceEvent::Leave });
        w.scripted.push(ScriptedEvent { at_us: at(MOVE_ARRIVE_AT), dev: mover, event: arrive });
        w.devices[mover].absent.push((start + at(MOVE_LEAVE_AT) + 1, start + at(MOVE_ARRIVE_AT) + RESUME_AFTER_US));
        plan.mover = Some(mover);
    }
    w.risky = Some(plan);
}

/// The advisories expected for a device of profile `key` reporting `firmware`.
fn advisories_for(key: &str, firmware: Option<&str>) -> Option<Vec<String>> {
    let ids = ADVISORIES.iter().find(|(k, _)| *k == key)?.1;
    // 9.33.1.4 is newer than every Alaris PC unit range; 9.19 is inside all of them.
    if key == "alaris_pcu" && firmware == Some(ALARIS_FIRMWARE) {
        return Some(Vec::new());
    }
    let mut out: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    out.sort();
    Some(out)
}

/// The truth's `risky` and `vulnerable` lists (empty without `--risky`).
pub(crate) fn risky_truth<W: Write>(w: &World<W>, devices: &[TruthDevice]) -> (Vec<TruthRisky>, Vec<TruthVulnerable>) {
    let Some(plan) = &w.risky else {
        return (Vec::new(), Vec::new());
    };
    let id = |dev: usize| devices[dev].id.clone();
    let mac = |dev: usize| MacAddr(w.em.hosts[w.devices[dev].host].mac);
    let mut risky: Vec<TruthRisky> = plan
        .entries
        .iter()
        .map(|e| TruthRisky {
            kind: e.kind.to_string(),
            device: id(e.dev),
            mac: mac(e.dev),
            ip: e.ip,
            peer_ip: e.peer_ip,
            peer_device: e.peer_dev.map(id),
            peer_mac: e.peer_dev.map(mac),
            target: e.target.clone(),
            first_us: e.first_us,
            detail: e.detail.clone(),
        })
        .collect();
    if let Some((dev, vlan)) = plan.new_device {
        let d = &devices[dev];
        let first = w.em.hosts[w.devices[dev].host].sightings[0];
        if first.native {
            risky.push(TruthRisky {
                kind: "new_device_on_clinical_vlan".into(),
                device: d.id.clone(),
                mac: d.mac,
                ip: d.ips[0],
                peer_ip: None,
                peer_device: None,
                peer_mac: None,
                target: vlan.map(|v| format!("vlan {v}")).unwrap_or_default(),
                first_us: first.first_us,
                detail: format!("{} ({}) first seen on the {} zone of {}", d.name, d.model, d.zone, d.site),
            });
        }
    }
    if let Some(dev) = plan.mover {
        let d = &devices[dev];
        if let Some(m) = d.history.iter().find(|h| h.kind == "site_move") {
            let ip = d.bindings.last().map_or(d.ips[0], |b| b.ip);
            // Its first frame at the new site (the DHCPDISCOVER), on the capture that sees it.
            let host = &w.em.hosts[w.devices[dev].host];
            let first_us = host.sightings[host.capture].first_us;
            risky.push(TruthRisky {
                kind: "device_moved".into(),
                device: d.id.clone(),
                mac: d.mac,
                ip,
                peer_ip: None,
                peer_device: None,
                peer_mac: None,
                target: m.to.clone(),
                first_us,
                detail: format!("{} moved from {} to {}", d.name, m.from, m.to),
            });
        }
    }
    risky.sort_by_key(|r| r.first_us);
    let vulnerable = w
        .devices
        .iter()
        .enumerate()
        .filter_map(|(i, dev)| {
            let firmware = match dev.profile.key {
                "alaris_pcu" => Some(dev.firmware.unwrap_or(ALARIS_FIRMWARE)),
                _ => dev.firmware,
            };
            let advisories = advisories_for(dev.profile.key, firmware)?;
            let d = &devices[i];
            Some(TruthVulnerable {
                device: d.id.clone(),
                mac: d.mac,
                profile: d.profile.clone(),
                manufacturer: d.manufacturer.clone(),
                model: d.model.clone(),
                firmware: firmware.map(str::to_string),
                advisories,
            })
        })
        .collect();
    (risky, vulnerable)
}
