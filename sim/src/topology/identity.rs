//! The hospital's identity cases, with known answers in the ground truth:
//! - a routed clinic: the main capture sees it only on the transit link behind its router's
//!   MAC; its own access-layer capture sees its segment (ARP, DHCP, the devices' MACs);
//! - DHCP churn: at the clinic, one workstation releases its address and, later, another
//!   workstation is given the same address (the two must never be merged);
//! - a portable ultrasound unplugged at the main campus and plugged in at the clinic (new
//!   site, address and VLAN);
//! - a dual-homed CT: a second NIC on the datacenter VLAN sends DICOM with the same AE title
//!   and implementation class UID as the first (one device, two MACs).
//!
//! Times are fractions of the run so every case fits any duration.

use super::plans::CLINIC_PLAN;
use super::{add_device, add_nic, add_site, profile, Counters, DeviceEvent, ScriptedEvent};
use crate::options::{GenerateOptions, Scenario};
use crate::wire::{CaptureId, WanLink};
use crate::world::World;
use std::io::Write;

/// The transit VLAN between a routed site's router and the core switch.
pub(crate) const TRANSIT_VLAN: u16 = 900;

/// Fractions (per mille) of the run at which the scripted events happen.
const RELEASE_AT: u64 = 350;
const REASSIGN_AT: u64 = 500;
const LEAVE_AT: u64 = 400;
const ARRIVE_AT: u64 = 450;
/// How long after a device comes back its other activities resume (its DHCP goes first).
const RESUME_AFTER_US: u64 = 5_000_000;

/// Adds the routed clinic (capture `access_capture`) and the identity cases.
pub(super) fn add_identity_cases<W: Write>(
    w: &mut World<W>,
    opts: &GenerateOptions,
    counters: &mut Counters,
    access_capture: CaptureId,
    clinic_name: String,
) {
    let start = opts.start_time_us;
    let run_us = u64::from(opts.scale.minutes) * 60_000_000;
    let at = |per_mille: u64| run_us / 1000 * per_mille;
    let clinic = add_routed_site(w, opts, counters, access_capture, clinic_name);
    add_dual_homed_ct(w, counters);

    // DHCP churn at the clinic: `first` releases its address, `second` gets it later.
    let ws = profile("win10_workstation");
    let first = add_device(w, counters, ws, clinic, 0);
    let second = add_device(w, counters, ws, clinic, 0);
    let shared_ip = w.devices[first].ips[0];
    let second_host = &mut w.em.hosts[w.devices[second].host];
    second_host.ip = shared_ip;
    second_host.set_next_port(second_host.stack.ephemeral_base + 5000);
    w.devices[second].ips = vec![shared_ip];
    w.scripted.push(ScriptedEvent { at_us: at(RELEASE_AT), dev: first, event: DeviceEvent::Release });
    w.devices[first].absent.push((start + at(RELEASE_AT) + 1, u64::MAX));
    w.devices[second].joins_at_us = at(REASSIGN_AT);
    w.devices[second].absent.push((start, start + at(REASSIGN_AT)));

    // A portable ultrasound of the main campus moves to the clinic.
    let mover = w.devices.iter().position(|d| d.site == 0 && d.profile.key == "sonosite_us");
    if let Some(mover) = mover {
        let ip = w.sites[clinic].zones[0].next_address(true);
        let arrive = DeviceEvent::Arrive { site: clinic, zone: 0, ip };
        w.scripted.push(ScriptedEvent { at_us: at(LEAVE_AT), dev: mover, event: DeviceEvent::Leave });
        w.scripted.push(ScriptedEvent { at_us: at(ARRIVE_AT), dev: mover, event: arrive });
        w.devices[mover].absent.push((start + at(LEAVE_AT) + 1, start + at(ARRIVE_AT) + RESUME_AFTER_US));
    }
}

/// The clinic: a site after the campuses whose router links it to the main campus's core
/// switch over the transit VLAN. Its router serves DHCP; its other servers are the main
/// campus's.
fn add_routed_site<W: Write>(
    w: &mut World<W>,
    opts: &GenerateOptions,
    counters: &mut Counters,
    access_capture: CaptureId,
    name: String,
) -> usize {
    let s = w.sites.len();
    add_site(w, Scenario::Hospital, CLINIC_PLAN, s, name, counters);
    let router = w.devices.iter().rposition(|d| d.profile.key == "cisco_router").expect("the site's router");
    w.devices[router].hostname = Some(format!("clinic-rtr-{}", s + 1));
    let core = w.sites[0].zones[0].router_host;
    let site_router = w.devices[router].host;
    let link = w.em.add_wan_link(WanLink {
        access_capture,
        core_capture: 0,
        transit_vlan: Some(TRANSIT_VLAN),
        site_router,
        site_router_mac: w.em.hosts[site_router].mac,
        core,
        core_mac: w.em.hosts[core].mac,
    });
    let site = &mut w.sites[s];
    site.capture = access_capture;
    site.wan = Some(link);
    site.hub = Some(0);
    for z in &site.zones {
        let h = &mut w.em.hosts[z.router_host];
        h.capture = access_capture;
        h.wan = Some(link);
    }
    let mult = opts.scale.device_multiplier.max(1);
    for (zi, (_, _, members)) in CLINIC_PLAN.iter().enumerate() {
        for &(key, per_unit, fixed) in members.iter() {
            for _ in 0..per_unit * mult + fixed {
                add_device(w, counters, profile(key), s, zi);
            }
        }
    }
    s
}

/// The main campus's CT gets a second NIC on the datacenter VLAN (where the PACS is).
fn add_dual_homed_ct<W: Write>(w: &mut World<W>, counters: &mut Counters) {
    let Some(ct) = w.devices.iter().position(|d| d.site == 0 && d.profile.key == "ge_ct") else {
        return;
    };
    let Some(dc_zone) = w.sites[0].zones.iter().position(|z| z.name == "datacenter") else {
        return;
    };
    let p = w.devices[ct].profile;
    let (_, mac) = counters.next_device(p);
    let host = add_nic(w, mac, p, 0, dc_zone);
    let ip = w.em.hosts[host].ip;
    let d = &mut w.devices[ct];
    d.extra_hosts.push(host);
    d.ips.push(ip);
}
