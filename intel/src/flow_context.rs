//! Clinical context of a flow: is it required for the device's clinical function,
//! acceptable, risky, or unknown to the knowledge base?
//!
//! Expected communications are looked up most specific first: the device's profile, then
//! its class, then the global list. If none speaks to the flow, the peer's own expectations
//! are consulted from the other side (a PACS that expects stores from modalities makes a
//! CT's store to it required even if the CT profile forgot to say so).

use crate::classify::Classification;
use crate::model::{Comm, Direction, FlowTag, KnowledgeBase, PeerRole, Transport};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use wardline_common::{FlowRecord, MacAddr};

/// The parts of a flow that matter for its clinical context, seen from one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSpec {
    pub transport: Transport,
    /// The service (server-side) port.
    pub port: u16,
    /// Outbound: the device opened the conversation; inbound: the peer did.
    pub direction: Direction,
    /// The peer address is outside private/local ranges (internet, vendor cloud).
    pub peer_external: bool,
}

impl FlowSpec {
    /// The flow as seen from `device`, or `None` if the device is not an end of it or the
    /// transport is neither TCP nor UDP. The record's `a` side sent the first packet seen;
    /// when that packet came from a well-known port to an ephemeral one the capture most
    /// likely started mid-conversation, so the sides are swapped.
    pub fn from_record(rec: &FlowRecord, device: &MacAddr) -> Option<FlowSpec> {
        let transport = Transport::from_ip_proto(rec.ip_proto)?;
        let a_is_server = rec.a_port < 1024 && rec.b_port >= 1024;
        let (client_mac, server_mac, server_port, client_ip, server_ip) = if a_is_server {
            (rec.b_mac, rec.a_mac, rec.a_port, rec.b_ip, rec.a_ip)
        } else {
            (rec.a_mac, rec.b_mac, rec.b_port, rec.a_ip, rec.b_ip)
        };
        let (direction, peer_ip) = if *device == client_mac {
            (Direction::Outbound, server_ip)
        } else if *device == server_mac {
            (Direction::Inbound, client_ip)
        } else {
            return None;
        };
        Some(FlowSpec { transport, port: server_port, direction, peer_external: is_external(&peer_ip) })
    }
}

/// Not private, loopback, link-local, unique-local, multicast or unspecified.
pub fn is_external(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let cgnat = o[0] == 100 && (64..128).contains(&o[1]);
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || cgnat)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let ula = (s[0] & 0xfe00) == 0xfc00;
            let link_local = (s[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || v6.is_multicast() || v6.is_unspecified() || ula || link_local)
        }
    }
}

/// The label of one flow and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowContext {
    pub tag: FlowTag,
    pub reason: String,
    /// Id of the expected-communication entry that decided it.
    pub comm: Option<String>,
    pub source: Option<String>,
}

fn peer_matches(role: &PeerRole, peer: Option<&Classification>, external: bool) -> bool {
    match role {
        PeerRole::Any => true,
        PeerRole::External => external,
        PeerRole::Internal => !external,
        PeerRole::Class(c) => peer.is_some_and(|p| &p.class.value == c),
        PeerRole::Category(cat) => peer.is_some_and(|p| p.category.value == *cat),
    }
}

fn comm_lists<'a>(kb: &'a KnowledgeBase, c: &Classification) -> Vec<(&'static str, &'a [Comm])> {
    let mut lists: Vec<(&'static str, &'a [Comm])> = Vec::new();
    if let Some(p) = c.profile.as_ref().and_then(|p| kb.profile(&p.value)) {
        lists.push(("profile", &p.comms));
    }
    if let Some(cl) = kb.class(&c.class.value) {
        lists.push(("class", &cl.comms));
    }
    lists
}

fn decided(level: &str, comm: &Comm, from_peer: bool) -> FlowContext {
    let side = if from_peer { "peer's " } else { "" };
    FlowContext {
        tag: comm.tag,
        reason: format!("{}: {} ({side}{level} expectation {} at {})", comm.tag, comm.reason, comm.id, comm.origin),
        comm: Some(comm.id.clone()),
        source: comm.source.clone(),
    }
}

/// Label one flow of `device` with `peer` (the classification of the other end, if it is
/// a known device).
pub fn flow_context(
    kb: &KnowledgeBase,
    device: &Classification,
    peer: Option<&Classification>,
    flow: &FlowSpec,
) -> FlowContext {
    let fits = |c: &Comm, direction: Direction| {
        c.transport.matches(flow.transport) && c.matches_port(flow.port) && c.direction.matches(direction)
    };
    let mut near_miss: Option<String> = None;
    let mut lists = comm_lists(kb, device);
    lists.push(("global", &kb.comms));
    for (level, comms) in &lists {
        for c in comms.iter().filter(|c| fits(c, flow.direction)) {
            if c.peers.iter().any(|r| peer_matches(r, peer, flow.peer_external)) {
                return decided(level, c, false);
            }
            if near_miss.is_none() {
                let roles: Vec<String> = c.peers.iter().map(|r| r.to_string()).collect();
                let actual = peer.map(|p| p.class.value.clone()).unwrap_or_else(|| {
                    if flow.peer_external {
                        "an external address".into()
                    } else {
                        "an unclassified peer".into()
                    }
                });
                near_miss = Some(format!(
                    "{} on {}/{} is expected with {} but the peer is {actual}",
                    c.id,
                    flow.transport.as_str(),
                    flow.port,
                    roles.join(" or ")
                ));
            }
        }
    }
    // The other end's expectations, mirrored.
    if let Some(p) = peer {
        for (level, comms) in comm_lists(kb, p) {
            for c in comms.iter().filter(|c| fits(c, flow.direction.reversed())) {
                if c.peers.iter().any(|r| peer_matches(r, Some(device), false)) {
                    return decided(level, c, true);
                }
            }
        }
    }
    let reason = match near_miss {
        Some(m) => format!("unknown: {m}"),
        None => format!(
            "unknown: no expected communication of {} covers {} {}/{}",
            device.class.value,
            match flow.direction {
                Direction::Outbound => "outbound",
                Direction::Inbound => "inbound",
                Direction::Any => "",
            },
            flow.transport.as_str(),
            flow.port
        ),
    };
    FlowContext { tag: FlowTag::Unknown, reason, comm: None, source: None }
}
