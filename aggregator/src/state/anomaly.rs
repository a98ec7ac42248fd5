//! The first anomaly detectors (issue 11 part 3, decision 0024): per-device baselines learned
//! from the replicated batches, and the occurrences that behaviour outside them produces.
//!
//! Everything runs inside `ClusterState::apply` on the batch being applied, so it is
//! deterministic: time is the capture time carried by the batch (never the wall clock), and
//! collections are ordered. A device learns for `learning_us` of data time from its first
//! sighting; nothing it does in that time alerts, it becomes its baseline. A site learns
//! the same way from its first batch: a device that first appears on a clinical VLAN after
//! its site finished learning is new on that VLAN.
//!
//! | kind | input | target |
//! |---|---|---|
//! | `new_peer` | flows (either side) | the peer's IP |
//! | `new_external_destination` | flows the device started to a global address | the IP |
//! | `new_protocol` | flows the device started | `tcp/443` (responder's port) |
//! | `new_listening_service` | `listening_port` evidence | `tcp/3613` |
//! | `cleartext_credentials` | `cleartext_login`, `http_basic_auth` evidence | `ftp`, `telnet`, `http` |
//! | `device_moved` | device observations' site | the new site |
//! | `new_device_on_clinical_vlan` | device observations' VLANs | `vlan 40` |
//!
//! A flow side counts as a device only when that MAC's record holds that IP (a router's MAC
//! carrying a routed host's traffic is not the host). Baselines are bounded per device; a
//! set that fills up during learning marks the device as too diverse for that detector
//! (a server talking to hundreds of peers), which then stays quiet for it — counted in
//! `saturated`, shown by `GET /api/v1/alerts/settings`.
//!
//! Traffic spikes, wrong segments, PHI to unexpected peers and silent sensors are in
//! [`detectors`] (decision 0033); they read these baselines (learning period, peers).

pub mod detectors;

use super::alerts::{AlertKind, Occurrence, Severity};
use super::{BatchSummary, DeviceRecord, VecSet};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use wardline_common::{Field, FlowRecord, MacAddr};

/// Peers learned per device.
pub const MAX_BASELINE_PEERS: usize = 64;
/// Protocols (responder ports) learned per device.
pub const MAX_BASELINE_PROTOCOLS: usize = 32;
/// Listening services learned per device.
pub const MAX_BASELINE_SERVICES: usize = 32;
/// Sites learned per device.
pub const MAX_BASELINE_SITES: usize = 8;
/// Cleartext-credential protocols learned per device.
pub const MAX_BASELINE_CLEARTEXT: usize = 8;
/// Default learning period: 7 days of capture time.
pub const DEFAULT_LEARNING_US: u64 = 7 * 86_400 * 1_000_000;

/// A VLAN whose devices are clinical (at one site, or at every site).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicalVlan {
    pub site: Option<String>,
    pub vlan: u16,
}

/// Detector settings, replicated (`Command::SetAnomalyConfig`) so every node decides alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyConfig {
    /// Learning period of a device and of a site, µs of capture time.
    pub learning_us: u64,
    pub clinical_vlans: Vec<ClinicalVlan>,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig { learning_us: DEFAULT_LEARNING_US, clinical_vlans: Vec::new() }
    }
}

impl AnomalyConfig {
    fn is_clinical(&self, site: &str, vlan: u16) -> bool {
        self.clinical_vlans.iter().any(|c| c.vlan == vlan && c.site.as_deref().is_none_or(|s| s == site))
    }
}

/// Which sets of a baseline filled up while learning.
pub mod saturated {
    pub const PEERS: u8 = 1;
    pub const PROTOCOLS: u8 = 2;
    pub const SERVICES: u8 = 4;
    pub const SITES: u8 = 8;
    pub const CLEARTEXT: u8 = 16;
}

/// What one device did while it learned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceBaseline {
    /// Earliest capture time the detectors saw for it.
    pub first_us: u64,
    pub peers: VecSet<IpAddr>,
    pub protocols: VecSet<String>,
    pub services: VecSet<String>,
    pub sites: VecSet<String>,
    pub cleartext: VecSet<String>,
    /// [`saturated`] bits.
    pub saturated: u8,
}

/// Counters of the detectors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyCounters {
    /// Baseline sets that filled up while learning (each device and set once).
    pub saturated: u64,
    /// Flow sides not attributed to a device (its MAC's record does not hold its IP).
    pub flow_sides_unattributed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    config: AnomalyConfig,
    devices: BTreeMap<MacAddr, Arc<DeviceBaseline>>,
    /// Earliest capture time per site.
    site_first_us: BTreeMap<String, u64>,
    counters: AnomalyCounters,
}

/// Whether an address is on the Internet rather than a private, local or special network.
pub fn is_global(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space (CGNAT)
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking (tests, chaos)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
}

/// Which sides of each flow of a batch are a device: that MAC's record holds that IP (a
/// router's MAC carrying a routed host's traffic is not the host). Worked out once per batch
/// for every detector, on the inventory after the batch was merged: each detector asking
/// again was a fifth of a node's apply.
pub struct FlowSides(Vec<[bool; 2]>);

impl FlowSides {
    pub fn of(flows: &[FlowRecord], devices: &BTreeMap<MacAddr, Arc<DeviceRecord>>) -> FlowSides {
        let holds = |mac: &MacAddr, ip: &IpAddr| devices.get(mac).is_some_and(|d| d.ips.contains_key(ip));
        FlowSides(flows.iter().map(|f| [holds(&f.a_mac, &f.a_ip), holds(&f.b_mac, &f.b_ip)]).collect())
    }

    /// Whether side a (the side that sent first) or b of flow `i` is a device.
    pub fn is_device(&self, i: usize, a_side: bool) -> bool {
        self.0.get(i).is_some_and(|s| s[usize::from(!a_side)])
    }
}

impl AnomalyCounters {
    /// Count the baseline sets that filled up between two readings of a device's
    /// [`saturated`] bits.
    fn count_saturated(&mut self, before: u8, after: u8) {
        self.saturated = self.saturated.saturating_add(u64::from((after & !before).count_ones()));
    }
}

/// The baseline of `mac` (created at `ts` if new, its start moved back to `ts` if that is
/// earlier), ready to change, and whether it is learning at `ts`.
fn baseline_at(
    devices: &mut BTreeMap<MacAddr, Arc<DeviceBaseline>>,
    mac: MacAddr,
    ts: u64,
    learning_us: u64,
) -> (&mut DeviceBaseline, bool) {
    let b = Arc::make_mut(
        devices.entry(mac).or_insert_with(|| Arc::new(DeviceBaseline { first_us: ts, ..Default::default() })),
    );
    b.first_us = b.first_us.min(ts);
    let learning = ts < b.first_us.saturating_add(learning_us);
    (b, learning)
}

/// Learn `item` or report it as new. `None`: known, learned, or the set is saturated.
fn check<T, Q>(set: &mut VecSet<T>, item: &Q, cap: usize, learning: bool, flags: &mut u8, bit: u8) -> bool
where
    T: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ToOwned<Owned = T> + ?Sized,
{
    if set.contains(item) {
        return false;
    }
    if learning {
        if set.len() < cap {
            set.insert(item.to_owned());
        } else {
            *flags |= bit;
        }
        return false;
    }
    *flags & bit == 0
}

impl Baselines {
    pub fn config(&self) -> &AnomalyConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: &AnomalyConfig) {
        self.config = config.clone();
    }

    pub fn counters(&self) -> &AnomalyCounters {
        &self.counters
    }

    pub fn device(&self, mac: &MacAddr) -> Option<&Arc<DeviceBaseline>> {
        self.devices.get(mac)
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// When `site` finished learning (its first device sighting plus the learning period);
    /// None before any batch of the site.
    pub fn site_learned_at(&self, site: &str) -> Option<u64> {
        self.site_first_us.get(site).map(|f| f.saturating_add(self.config.learning_us))
    }

    /// Run the detectors over one applied batch; returns the occurrences in a fixed order.
    /// `devices` is the inventory after the batch was merged.
    /// `sides` tells which flow sides are devices (`FlowSides::of` the inventory after the
    /// batch was merged).
    pub fn detect(&mut self, batch: &BatchSummary, flows: &[FlowRecord], sides: &FlowSides) -> Vec<Occurrence> {
        let mut out = Vec::new();
        let learning_us = self.config.learning_us;
        if let Some(first) = batch.devices.iter().map(|d| d.first_seen_us).min() {
            let site_first = self.site_first_us.entry(batch.site.clone()).or_insert(first);
            *site_first = (*site_first).min(first);
        }
        let site_learned_at = self.site_first_us.get(&batch.site).map(|f| f.saturating_add(learning_us));
        for obs in &batch.devices {
            let ts = obs.first_seen_us;
            let device = obs.mac.to_string();
            let occ = |kind, severity, target: String, evidence: String| Occurrence {
                kind,
                severity,
                device: device.clone(),
                site: batch.site.clone(),
                target,
                ts_us: ts,
                evidence,
            };
            let (b, learning) = baseline_at(&mut self.devices, obs.mac, ts, learning_us);
            let before = b.saturated;
            // A sensor reports a device's first sighting ever in every batch, so each fact is
            // judged at its own time: a site at the batch's last sighting, evidence at its
            // timestamp. Otherwise a device seen from the start would learn forever.
            let learned_at = b.first_us.saturating_add(learning_us);
            let learning_site = obs.last_seen_us < learned_at;
            let new_device = learning && site_learned_at.is_some_and(|at| b.first_us >= at);
            if new_device {
                for vlan in &obs.vlans {
                    if self.config.is_clinical(&batch.site, *vlan) {
                        out.push(occ(
                            AlertKind::NewDeviceOnClinicalVlan,
                            Severity::High,
                            format!("vlan {vlan}"),
                            format!("first seen by sensor {} on clinical VLAN {vlan}", batch.sensor_id),
                        ));
                    }
                }
            }
            if check(&mut b.sites, &batch.site, MAX_BASELINE_SITES, learning_site, &mut b.saturated, saturated::SITES) {
                let known: Vec<&str> = b.sites.iter().map(String::as_str).collect();
                out.push(occ(
                    AlertKind::DeviceMoved,
                    Severity::Medium,
                    batch.site.clone(),
                    format!("seen at site {} by sensor {}; known at {}", batch.site, batch.sensor_id, known.join(", ")),
                ));
            }
            for ev in &obs.evidence {
                let learning = ev.ts_us < learned_at;
                match ev.field {
                    Field::ListeningPort
                        if check(
                            &mut b.services,
                            &ev.value,
                            MAX_BASELINE_SERVICES,
                            learning,
                            &mut b.saturated,
                            saturated::SERVICES,
                        ) =>
                    {
                        out.push(Occurrence {
                            ts_us: ev.ts_us,
                            ..occ(
                                AlertKind::NewListeningService,
                                Severity::Medium,
                                ev.value.clone(),
                                format!("accepted a connection on {} ({})", ev.value, ev.proto),
                            )
                        });
                    }
                    Field::CleartextLogin | Field::HttpBasicAuth => {
                        let proto =
                            if ev.field == Field::HttpBasicAuth { "http".to_string() } else { ev.value.clone() };
                        if check(
                            &mut b.cleartext,
                            &proto,
                            MAX_BASELINE_CLEARTEXT,
                            learning,
                            &mut b.saturated,
                            saturated::CLEARTEXT,
                        ) {
                            out.push(Occurrence {
                                ts_us: ev.ts_us,
                                ..occ(
                                    AlertKind::CleartextCredentials,
                                    Severity::High,
                                    proto.clone(),
                                    format!("{} credentials sent in cleartext ({} evidence)", proto, ev.field),
                                )
                            });
                        }
                    }
                    _ => {}
                }
            }
            self.counters.count_saturated(before, b.saturated);
        }
        // One buffer for every flow's service name (`tcp/443`), not two strings per flow.
        let mut service = String::new();
        for (i, f) in flows.iter().enumerate() {
            for a_side in [true, false] {
                if sides.is_device(i, a_side) {
                    self.detect_flow_side(batch, f, a_side, &mut service, &mut out);
                } else {
                    self.counters.flow_sides_unattributed = self.counters.flow_sides_unattributed.saturating_add(1);
                }
            }
        }
        out
    }

    /// Peers and protocols of one side of a flow that is a device (`a`: the side that sent
    /// first). One baseline lookup; strings are made only for an occurrence.
    fn detect_flow_side(
        &mut self,
        batch: &BatchSummary,
        f: &FlowRecord,
        a_side: bool,
        service: &mut String,
        out: &mut Vec<Occurrence>,
    ) {
        use std::fmt::Write;
        let (mac, peer, peer_port) = if a_side { (f.a_mac, f.b_ip, f.b_port) } else { (f.b_mac, f.a_ip, f.a_port) };
        let ts = f.first_seen_us;
        let (b, learning) = baseline_at(&mut self.devices, mac, ts, self.config.learning_us);
        let before = b.saturated;
        let occ = |kind, severity, target: String, evidence: String| Occurrence {
            kind,
            severity,
            device: mac.to_string(),
            site: batch.site.clone(),
            target,
            ts_us: ts,
            evidence,
        };
        service.clear();
        let _ = match f.ip_proto {
            6 => write!(service, "tcp/{peer_port}"),
            17 => write!(service, "udp/{peer_port}"),
            p => write!(service, "ip{p}/{peer_port}"),
        };
        let transport = &service[..service.find('/').unwrap_or(service.len())];
        if check(&mut b.peers, &peer, MAX_BASELINE_PEERS, learning, &mut b.saturated, saturated::PEERS) {
            let external = a_side && is_global(&peer);
            let (kind, severity) = if external {
                (AlertKind::NewExternalDestination, Severity::Medium)
            } else {
                (AlertKind::NewPeer, Severity::Low)
            };
            let direction = if a_side { "to" } else { "from" };
            out.push(occ(
                kind,
                severity,
                peer.to_string(),
                format!("{} flow {direction} {peer} ({service}, app {})", transport, f.app),
            ));
        }
        if a_side
            && check(
                &mut b.protocols,
                service.as_str(),
                MAX_BASELINE_PROTOCOLS,
                learning,
                &mut b.saturated,
                saturated::PROTOCOLS,
            )
        {
            out.push(occ(
                AlertKind::NewProtocol,
                Severity::Low,
                service.clone(),
                format!("opened {service} (app {}) to {peer}", f.app),
            ));
        }
        self.counters.count_saturated(before, b.saturated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::alerts::{Alert, AlertState};
    use crate::state::{ClusterState, Command, IngestBatch};
    use std::borrow::Cow;
    use ulid::Ulid;
    use wardline_common::{DeviceObservation, Evidence, Proto};

    const HOUR: u64 = 3_600_000_000;
    const T0: u64 = 1_767_225_600_000_000;
    const PUMP: MacAddr = MacAddr([0x00, 0x09, 0xfb, 0, 0, 1]);
    const SERVER: MacAddr = MacAddr([0x00, 0x09, 0xfb, 0, 0, 2]);
    const ROUTER: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0, 1, 1]);

    struct Feed {
        state: ClusterState,
        seq: u64,
    }

    fn obs(mac: MacAddr, ip: &str, vlan: u16, ts: u64, evidence: &[(Field, &str)]) -> DeviceObservation {
        DeviceObservation {
            mac,
            ips: vec![ip.parse().unwrap()],
            vlans: vec![vlan],
            first_seen_us: ts,
            last_seen_us: ts + 1,
            packets: 1,
            bytes: 60,
            evidence: evidence.iter().map(|(f, v)| Evidence::new(*f, *v, Proto::Telnet, ts)).collect(),
        }
    }

    fn flow(a: (MacAddr, &str), b: (MacAddr, &str), port: u16, ts: u64) -> FlowRecord {
        FlowRecord {
            ip_proto: 6,
            vlan: Some(40),
            a_mac: a.0,
            b_mac: b.0,
            a_ip: a.1.parse().unwrap(),
            b_ip: b.1.parse().unwrap(),
            a_port: 50_000,
            b_port: port,
            first_seen_us: ts,
            last_seen_us: ts + 10,
            packets_ab: 3,
            packets_ba: 3,
            bytes_ab: 300,
            bytes_ba: 300,
            tcp_flags_ab: 0x1b,
            tcp_flags_ba: 0x1b,
            app: Cow::Borrowed("unknown"),
            end_reason: Cow::Borrowed("fin"),
        }
    }

    impl Feed {
        fn new(learning_us: u64, clinical: &[u16]) -> Feed {
            let mut state = ClusterState::new();
            let clinical_vlans =
                clinical.iter().map(|v| ClinicalVlan { site: Some("ward".into()), vlan: *v }).collect();
            state.apply(&Command::SetAnomalyConfig(AnomalyConfig { learning_us, clinical_vlans }));
            Feed { state, seq: 0 }
        }

        fn send(&mut self, site: &str, devices: Vec<DeviceObservation>, flows: Vec<FlowRecord>) {
            self.seq += 1;
            let mut summary = BatchSummary::empty(Ulid::from_parts(self.seq, 7), "s1".into(), site.into(), self.seq);
            summary.devices = devices;
            let cmd = Command::ApplyBatches(vec![IngestBatch { summary, flows }]);
            assert!(self.state.apply(&cmd).applied);
        }

        fn alerts(&self) -> Vec<(AlertKind, String, String)> {
            self.state.alerts().alerts().values().map(|a| (a.kind, a.device.clone(), a.target.clone())).collect()
        }

        fn alert(&self, kind: AlertKind) -> Alert {
            self.state.alerts().alerts().values().find(|a| a.kind == kind).cloned().unwrap()
        }
    }

    #[test]
    fn nothing_alerts_while_learning_and_news_alerts_after_it() {
        let mut f = Feed::new(24 * HOUR, &[]);
        let learn = |f: &mut Feed, ts| {
            f.send(
                "ward",
                vec![
                    obs(
                        PUMP,
                        "10.0.40.5",
                        40,
                        ts,
                        &[(Field::ListeningPort, "tcp/3613"), (Field::CleartextLogin, "telnet")],
                    ),
                    obs(SERVER, "10.0.40.9", 40, ts, &[]),
                ],
                vec![flow((PUMP, "10.0.40.5"), (SERVER, "10.0.40.9"), 2575, ts)],
            );
        };
        learn(&mut f, T0);
        // Something new, but still inside the learning day: it joins the baseline.
        f.send("ward", vec![], vec![flow((PUMP, "10.0.40.5"), (SERVER, "10.0.40.9"), 443, T0 + 2 * HOUR)]);
        learn(&mut f, T0 + 23 * HOUR);
        assert!(f.alerts().is_empty(), "{:?}", f.alerts());

        // After learning: the known behaviour stays quiet, the new one alerts.
        let later = T0 + 25 * HOUR;
        learn(&mut f, later);
        f.send("ward", vec![], vec![flow((PUMP, "10.0.40.5"), (SERVER, "10.0.40.9"), 443, later)]);
        assert!(f.alerts().is_empty(), "{:?}", f.alerts());
        f.send(
            "ward",
            vec![obs(
                PUMP,
                "10.0.40.5",
                40,
                later,
                &[(Field::ListeningPort, "tcp/23"), (Field::HttpBasicAuth, "present")],
            )],
            vec![
                flow((PUMP, "10.0.40.5"), (SERVER, "10.0.40.9"), 22, later),
                flow((PUMP, "10.0.40.5"), (ROUTER, "203.0.113.80"), 443, later),
                flow((PUMP, "10.0.40.5"), (ROUTER, "93.184.216.34"), 443, later),
            ],
        );
        f.send("clinic", vec![obs(PUMP, "10.0.40.5", 40, later + 1, &[])], vec![]);
        let pump = PUMP.to_string();
        let t = |k, target: &str| (k, pump.clone(), target.to_string());
        assert_eq!(
            f.alerts(),
            [
                t(AlertKind::NewListeningService, "tcp/23"),
                t(AlertKind::CleartextCredentials, "http"),
                t(AlertKind::NewProtocol, "tcp/22"),
                // Documentation addresses are not the Internet; the global one is.
                t(AlertKind::NewPeer, "203.0.113.80"),
                t(AlertKind::NewExternalDestination, "93.184.216.34"),
                t(AlertKind::DeviceMoved, "clinic"),
            ]
        );
        // The responder of a flow is attributed too only if its record holds the address:
        // the router's MAC carrying Internet traffic is not a device that alerts.
        assert!(f.state.baselines().counters().flow_sides_unattributed >= 2);
        let external = f.alert(AlertKind::NewExternalDestination);
        assert_eq!(
            (external.severity, external.state, external.first_seen_us),
            (Severity::Medium, AlertState::Open, later)
        );
        assert!(external.evidence.contains("tcp/443"), "{}", external.evidence);
        // The same news again is the same alert, counted.
        f.send("ward", vec![], vec![flow((PUMP, "10.0.40.5"), (SERVER, "10.0.40.9"), 22, later + 5)]);
        assert_eq!(f.alert(AlertKind::NewProtocol).count, 2);
    }

    #[test]
    fn a_new_device_on_a_clinical_vlan_alerts_once_its_site_has_learned() {
        let mut f = Feed::new(HOUR, &[40]);
        f.send("ward", vec![obs(PUMP, "10.0.40.5", 40, T0, &[])], vec![]);
        f.send("ward", vec![obs(MacAddr([0, 9, 0xfb, 0, 0, 3]), "10.0.40.6", 40, T0 + HOUR / 2, &[])], vec![]);
        assert!(f.alerts().is_empty(), "devices arriving while the site learns are its baseline");
        let late = T0 + 2 * HOUR;
        let newcomer = MacAddr([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        f.send(
            "ward",
            vec![obs(newcomer, "10.0.40.77", 40, late, &[]), obs(SERVER, "10.0.50.9", 50, late, &[])],
            vec![],
        );
        assert_eq!(f.alerts(), [(AlertKind::NewDeviceOnClinicalVlan, newcomer.to_string(), "vlan 40".to_string())]);
        assert_eq!(f.alert(AlertKind::NewDeviceOnClinicalVlan).severity, Severity::High);
    }

    #[test]
    fn a_baseline_that_fills_up_while_learning_makes_that_detector_quiet_and_is_counted() {
        let mut f = Feed::new(HOUR, &[]);
        let mut devices = vec![obs(SERVER, "10.0.40.9", 40, T0, &[])];
        let mut flows = Vec::new();
        for i in 0..=MAX_BASELINE_PEERS as u32 {
            let ip = format!("10.0.41.{}", i + 1);
            let mac = MacAddr([0, 9, 0xfb, 1, (i >> 8) as u8, i as u8]);
            devices.push(obs(mac, &ip, 41, T0, &[]));
            flows.push(flow((mac, &ip), (SERVER, "10.0.40.9"), 2575, T0));
        }
        f.send("ward", devices, flows);
        let server = f.state.baselines().device(&SERVER).unwrap().clone();
        assert_eq!(server.peers.len(), MAX_BASELINE_PEERS);
        assert_eq!(server.saturated & saturated::PEERS, saturated::PEERS);
        assert_eq!(f.state.baselines().counters().saturated, 1);
        let stranger = MacAddr([0, 9, 0xfb, 2, 0, 1]);
        f.send(
            "ward",
            vec![obs(stranger, "10.0.42.1", 42, T0 + 2 * HOUR, &[])],
            vec![flow((stranger, "10.0.42.1"), (SERVER, "10.0.40.9"), 2575, T0 + 2 * HOUR)],
        );
        assert!(
            f.alerts().iter().all(|(_, device, _)| *device != SERVER.to_string()),
            "the saturated server does not alert on a new peer: {:?}",
            f.alerts()
        );
    }

    /// Batches of a few devices with listening ports, cleartext logins, sites and flows
    /// among themselves and to the Internet, over a few learning periods.
    fn arb_batches() -> impl proptest::strategy::Strategy<Value = Vec<(String, Vec<DeviceObservation>, Vec<FlowRecord>)>>
    {
        use proptest::prelude::*;
        let ev = (0usize..3, 0u16..4).prop_map(|(f, v)| match f {
            0 => (Field::ListeningPort, format!("tcp/{}", 20 + v)),
            1 => (Field::CleartextLogin, ["telnet", "ftp", "telnet", "ftp"][v as usize].to_string()),
            _ => (Field::HttpBasicAuth, "present".to_string()),
        });
        let dev = (1u8..5, 0u64..6, proptest::collection::vec(ev, 0..3), 39u16..42);
        let fl = (1u8..5, 0u8..6, 0u64..6, 0u16..3);
        let step = (0usize..2, proptest::collection::vec(dev, 0..3), proptest::collection::vec(fl, 0..4));
        proptest::collection::vec(step, 1..25).prop_map(|steps| {
            steps
                .into_iter()
                .map(|(site, devs, flows)| {
                    let mac = |m: u8| MacAddr([0, 9, 0xfb, 0, 0, m]);
                    let ip = |m: u8| format!("10.0.40.{m}");
                    let devices = devs
                        .into_iter()
                        .map(|(m, hours, ev, vlan)| {
                            let ev: Vec<(Field, &str)> = ev.iter().map(|(f, v)| (*f, v.as_str())).collect();
                            obs(mac(m), &ip(m), vlan, T0 + hours * HOUR, &ev)
                        })
                        .collect();
                    let flows = flows
                        .into_iter()
                        .map(|(a, b, hours, port)| {
                            let peer = if b >= 5 { (ROUTER, "93.184.216.34".to_string()) } else { (mac(b), ip(b)) };
                            flow(
                                (mac(a), &ip(a)),
                                (peer.0, &peer.1),
                                [443, 2575, 104][port as usize],
                                T0 + hours * HOUR,
                            )
                        })
                        .collect();
                    (["ward", "clinic"][site].to_string(), devices, flows)
                })
                .collect()
        })
    }

    proptest::proptest! {
        /// Alerts and baselines are a function of the applied log: grouped or one by one,
        /// with re-sent batches, and after a snapshot round trip, the same state.
        #[test]
        fn alerts_are_deterministic_grouped_resent_and_snapshotted(batches in arb_batches(), cut in 0usize..25) {
            let config = Command::SetAnomalyConfig(AnomalyConfig {
                learning_us: 2 * HOUR,
                clinical_vlans: vec![ClinicalVlan { site: None, vlan: 40 }],
            });
            let ingest: Vec<IngestBatch> = batches
                .iter()
                .enumerate()
                .map(|(i, (site, devices, flows))| {
                    let seq = i as u64 + 1;
                    let mut summary = BatchSummary::empty(Ulid::from_parts(seq, 9), "s1".into(), site.clone(), seq);
                    summary.devices = devices.clone();
                    IngestBatch { summary, flows: flows.clone() }
                })
                .collect();
            let mut single = ClusterState::new();
            single.apply(&config);
            for b in &ingest {
                single.apply(&Command::ApplyBatches(vec![b.clone()]));
                // Re-sent: changes nothing.
                single.apply(&Command::ApplyBatches(vec![b.clone()]));
            }
            let mut grouped = ClusterState::new();
            grouped.apply(&config);
            let (head, tail) = ingest.split_at(cut.min(ingest.len()));
            grouped.apply(&Command::ApplyBatches(head.to_vec()));
            grouped.apply(&Command::ApplyBatches(tail.to_vec()));
            proptest::prop_assert_eq!(grouped.alerts(), single.alerts());
            proptest::prop_assert_eq!(&grouped, &single);
            let bytes = bincode::serde::encode_to_vec(&single, bincode::config::standard()).unwrap();
            let (back, _): (ClusterState, usize) =
                bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
            proptest::prop_assert_eq!(&back, &single);
            // Nothing a device does in its first two hours alerts, except being new on a
            // clinical VLAN at a site that has learned.
            for a in single.alerts().alerts().values() {
                let mac: MacAddr = a.device.parse().unwrap();
                let first = single.baselines().device(&mac).unwrap().first_us;
                proptest::prop_assert!(
                    a.kind == AlertKind::NewDeviceOnClinicalVlan || a.first_seen_us >= first + 2 * HOUR,
                    "{:?} during learning", a
                );
            }
        }
    }

    fn detector_feed(learning_us: u64, config: detectors::DetectorConfig) -> Feed {
        let mut f = Feed::new(learning_us, &[]);
        f.state.apply(&Command::SetDetectorConfig(config));
        f
    }

    fn sized(mut f: FlowRecord, bytes: u64, packets: u64) -> FlowRecord {
        (f.bytes_ab, f.bytes_ba, f.packets_ab, f.packets_ba) = (bytes, 0, packets, 0);
        f
    }

    fn spike_config() -> detectors::DetectorConfig {
        detectors::DetectorConfig {
            spike_bucket_us: HOUR,
            spike_factor_percent: 400,
            spike_min_bytes: 1_000_000,
            spike_min_packets: 1_000,
            spike_min_flows: 20,
            ..Default::default()
        }
    }

    #[test]
    fn a_bucket_far_over_the_learned_maximum_is_a_traffic_spike_once() {
        let mut f = detector_feed(4 * HOUR, spike_config());
        let devices = |ts| vec![obs(PUMP, "10.0.40.5", 40, ts, &[]), obs(SERVER, "10.0.40.9", 40, ts, &[])];
        let transfer =
            |ts, bytes| sized(flow((PUMP, "10.0.40.5"), (SERVER, "10.0.40.9"), 104, ts), bytes, bytes / 1000);
        // Learning: up to 600 kB an hour (two flows in the busiest hour).
        f.send("ward", devices(T0), vec![transfer(T0, 300_000), transfer(T0 + 60, 300_000)]);
        f.send("ward", devices(T0 + 2 * HOUR), vec![transfer(T0 + 2 * HOUR, 200_000)]);
        // After learning: a normal hour stays quiet, and so does 2 MB (over the floor but
        // under 4 × 600 kB).
        let later = T0 + 5 * HOUR;
        f.send("ward", devices(later), vec![transfer(later, 500_000), transfer(later + 1, 1_500_000)]);
        assert!(f.alerts().is_empty(), "{:?}", f.alerts());
        let learned = f.state.detectors().traffic(&PUMP).unwrap().clone();
        assert_eq!((learned.learned_max.bytes, learned.learned_max.flows, learned.learned_buckets), (600_000, 2, 2));
        // The next hour: 3 MB in 30 flows — over 4 × on bytes and packets, over the flow
        // floor and 4 × 2 flows: one alert per device for the bucket, both ends.
        let spike = T0 + 6 * HOUR;
        let flows: Vec<FlowRecord> = (0..30).map(|i| transfer(spike + i, 100_000)).collect();
        f.send("ward", devices(spike), flows);
        let spikes: Vec<_> =
            f.alerts().into_iter().filter(|(k, _, _)| *k == AlertKind::TrafficSpike).map(|(_, d, t)| (d, t)).collect();
        assert_eq!(
            spikes,
            [(PUMP.to_string(), "traffic".to_string()), (SERVER.to_string(), "traffic".to_string())],
            "{:?}",
            f.alerts()
        );
        let a = f.alert(AlertKind::TrafficSpike);
        assert_eq!(a.count, 1, "one occurrence per bucket: {a:?}");
        // The 20th flow crossed first (2 MB was still under 4 × 600 kB).
        assert!(a.evidence.starts_with("20 flows (learned max 2)"), "{}", a.evidence);
        // More of the same bucket adds nothing; a later spike counts on the same alert.
        f.send("ward", vec![], vec![transfer(spike + 100, 2_000_000)]);
        assert_eq!(f.alert(AlertKind::TrafficSpike).count, 1);
        let again = T0 + 8 * HOUR;
        f.send("ward", vec![], vec![transfer(again, 5_000_000)]);
        assert_eq!(f.alert(AlertKind::TrafficSpike).count, 2);
        // A flow older than every bucket kept is counted late, not added.
        f.send("ward", vec![], vec![transfer(T0 + HOUR, 50_000_000)]);
        assert_eq!(f.state.detectors().counters().late_flows, 2, "both ends");
        assert_eq!(f.alert(AlertKind::TrafficSpike).count, 2);
    }

    #[test]
    fn phi_to_a_peer_outside_the_baseline_and_the_expected_receivers_alerts() {
        const ENGINE: MacAddr = MacAddr([0, 9, 0xfb, 0, 0, 8]);
        const DESK: MacAddr = MacAddr([0, 9, 0xfb, 0, 0, 9]);
        let config = detectors::DetectorConfig {
            phi_expected_receivers: vec!["10.0.40.20".parse().unwrap()],
            ..Default::default()
        };
        let mut f = detector_feed(HOUR, config);
        let hl7 = |to: (MacAddr, &str), ts| FlowRecord {
            app: Cow::Borrowed("hl7"),
            ..flow((SERVER, "10.0.40.9"), to, 2575, ts)
        };
        let ehr = |ts| obs(SERVER, "10.0.40.9", 40, ts, &[(Field::Hl7PhiSegments, "2")]);
        let others = |ts| {
            vec![
                obs(ENGINE, "10.0.40.10", 40, ts, &[]),
                obs(DESK, "10.0.40.11", 40, ts, &[]),
                obs(PUMP, "10.0.40.5", 40, ts, &[]),
            ]
        };
        let mut devices = others(T0);
        devices.push(ehr(T0));
        f.send("ward", devices, vec![hl7((ENGINE, "10.0.40.10"), T0)]);
        let later = T0 + 2 * HOUR;
        let mut devices = others(later);
        devices.push(ehr(later));
        f.send(
            "ward",
            devices,
            vec![
                // The learned interface engine and a configured receiver: expected.
                hl7((ENGINE, "10.0.40.10"), later),
                hl7((ROUTER, "10.0.40.20"), later),
                // A workstation: PHI to an unexpected peer.
                hl7((DESK, "10.0.40.11"), later),
                // HL7 from a device that never reported PHI segments: a new peer only.
                FlowRecord {
                    app: Cow::Borrowed("hl7"),
                    ..flow((PUMP, "10.0.40.5"), (DESK, "10.0.40.11"), 2575, later)
                },
            ],
        );
        let phi: Vec<_> = f
            .alerts()
            .into_iter()
            .filter(|(k, _, _)| *k == AlertKind::PhiCleartextUnexpectedPeer)
            .map(|(_, d, t)| (d, t))
            .collect();
        assert_eq!(phi, [(SERVER.to_string(), "10.0.40.11".to_string())], "{:?}", f.alerts());
        let a = f.alert(AlertKind::PhiCleartextUnexpectedPeer);
        assert_eq!(a.severity, Severity::High);
        assert!(a.evidence.contains("hl7 with patient data"), "{}", a.evidence);
        // A DICOM store of a dataset to a new peer is PHI too; an echo-sized flow is not.
        let dicom = |to: (MacAddr, &str), bytes| {
            let mut fl = sized(flow((SERVER, "10.0.40.9"), to, 104, later + 5), bytes, 100);
            fl.app = Cow::Borrowed("dicom");
            fl
        };
        f.send("ward", vec![], vec![dicom((PUMP, "10.0.40.5"), 2_000), dicom((ENGINE, "10.0.40.10"), 900_000)]);
        let targets: Vec<String> = f
            .alerts()
            .into_iter()
            .filter(|(k, _, _)| *k == AlertKind::PhiCleartextUnexpectedPeer)
            .map(|(_, _, t)| t)
            .collect();
        assert_eq!(targets, ["10.0.40.11"], "the engine is a learned peer, the echo carries no dataset");
        f.send("ward", vec![], vec![dicom((DESK, "10.0.40.11"), 900_000)]);
        assert_eq!(f.alert(AlertKind::PhiCleartextUnexpectedPeer).count, 2, "same sender and receiver: counted");
    }

    #[test]
    fn a_group_member_on_a_vlan_its_expectation_does_not_list_is_in_the_wrong_segment() {
        use crate::state::policy::GroupMembers;
        let config = detectors::DetectorConfig {
            segment_expectations: vec![detectors::SegmentExpectation {
                group: "pumps".into(),
                site: Some("ward".into()),
                vlans: vec![40],
            }],
            ..Default::default()
        };
        let mut d = detectors::Detectors::default();
        d.set_config(&config);
        let membership = [GroupMembers { group: "pumps".into(), members: vec![PUMP] }];
        let mut summary = BatchSummary::empty(Ulid::from_parts(1, 1), "s1".into(), "ward".into(), 1);
        summary.devices = vec![obs(PUMP, "10.0.60.5", 60, T0, &[]), obs(SERVER, "10.0.60.9", 60, T0, &[])];
        let devices = BTreeMap::new();
        let baselines = Baselines::default();
        let out = d.detect(&summary, &[], &FlowSides::of(&[], &devices), &devices, &baselines, &membership);
        assert_eq!(
            out.iter().map(|o| (o.kind, o.device.clone(), o.target.clone())).collect::<Vec<_>>(),
            [(AlertKind::WrongSegment, PUMP.to_string(), "vlan 60".to_string())],
            "the server is in no group"
        );
        summary.devices = vec![obs(PUMP, "10.0.40.5", 40, T0, &[])];
        assert!(
            d.detect(&summary, &[], &FlowSides::of(&[], &devices), &devices, &baselines, &membership).is_empty(),
            "its own VLAN"
        );
        summary.site = "clinic".into();
        summary.devices = vec![obs(PUMP, "10.0.60.5", 60, T0, &[])];
        assert!(
            d.detect(&summary, &[], &FlowSides::of(&[], &devices), &devices, &baselines, &membership).is_empty(),
            "another site's rules"
        );
    }

    #[test]
    fn a_sensor_that_stops_delivering_is_silent_at_the_tick_and_resolves_when_it_delivers() {
        const MIN_MS: u64 = 60_000;
        let config = detectors::DetectorConfig { sensor_silent_after_ms: 10 * MIN_MS, ..Default::default() };
        let mut f = detector_feed(HOUR, config);
        let t0 = 1_800_000_000_000;
        let tick = |f: &mut Feed, now_ms| {
            let would = f.state.detectors().tick_would_change(now_ms, f.state.sensors());
            f.state.apply(&Command::SensorTick { now_ms });
            would
        };
        assert!(!tick(&mut f, t0), "no sensor yet");
        f.send("ward", vec![obs(PUMP, "10.0.40.5", 40, T0, &[])], vec![]);
        assert!(tick(&mut f, t0 + MIN_MS), "a new sensor is noted");
        assert!(!tick(&mut f, t0 + 5 * MIN_MS));
        f.send("ward", vec![], vec![]);
        assert!(tick(&mut f, t0 + 6 * MIN_MS), "it delivered: time starts again");
        assert!(!tick(&mut f, t0 + 15 * MIN_MS) && f.alerts().is_empty(), "nine minutes");
        // A leader whose clock is behind never moves time back.
        tick(&mut f, t0);
        assert!(tick(&mut f, t0 + 16 * MIN_MS), "ten minutes silent");
        assert_eq!(f.alerts(), [(AlertKind::SensorSilent, "s1".to_string(), "silent".to_string())]);
        let a = f.alert(AlertKind::SensorSilent);
        assert_eq!((a.severity, a.state, a.site.as_str()), (Severity::High, AlertState::Open, "ward"));
        assert!(a.evidence.contains("for 600 s"), "{}", a.evidence);
        assert!(!tick(&mut f, t0 + 30 * MIN_MS));
        assert_eq!(f.alert(AlertKind::SensorSilent).count, 1, "one alert while silent");
        f.send("ward", vec![], vec![]);
        assert!(tick(&mut f, t0 + 31 * MIN_MS));
        let a = f.alert(AlertKind::SensorSilent);
        assert_eq!(a.state, AlertState::Resolved);
        assert_eq!(a.history.last().map(|t| t.by.as_str()), Some("wardline"));
        // Silent again: the resolved alert reopens.
        tick(&mut f, t0 + 45 * MIN_MS);
        let a = f.alert(AlertKind::SensorSilent);
        assert_eq!((a.state, a.reopened, a.count), (AlertState::Open, 1, 2));
    }

    #[test]
    fn global_addresses() {
        for (ip, global) in [
            ("10.1.2.3", false),
            ("192.168.1.1", false),
            ("100.64.0.1", false),
            ("198.18.0.5", false),
            ("169.254.1.1", false),
            ("8.8.8.8", true),
            ("fd00::1", false),
            ("fe80::1", false),
            ("2606:4700::1111", true),
        ] {
            assert_eq!(is_global(&ip.parse().unwrap()), global, "{ip}");
        }
    }
}
