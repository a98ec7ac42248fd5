//! The hosts on the wire: one network interface each, with the TCP/IP stack it shows.

use std::net::Ipv4Addr;

pub type HostId = usize;

/// Index of a capture (vantage point) of the emitter; 0 is the main (core) capture.
pub type CaptureId = usize;

/// The most captures one run writes (the main one plus one per routed site).
pub const MAX_CAPTURES: usize = 4;

/// What one capture saw a host send: frames carrying its own MAC (native), or its address
/// behind a router's MAC (routed), and when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sighting {
    pub native: bool,
    pub routed: bool,
    /// Timestamps of the first and last frame the host sent on that capture.
    pub first_us: u64,
    pub last_us: u64,
}

/// How a host's TCP/IP stack looks on the wire (p0f-style signals).
#[derive(Clone, Copy, Debug)]
pub struct Stack {
    pub ttl: u8,
    pub syn_window: u16,
    pub window: u16,
    pub mss: u16,
    /// Window-scale shift offered in the SYN, if any.
    pub wscale: Option<u8>,
    pub sack: bool,
    /// First ephemeral port the OS hands out.
    pub ephemeral_base: u16,
}

impl Stack {
    pub const WINDOWS: Stack = Stack {
        ttl: 128,
        syn_window: 8192,
        window: 256,
        mss: 1460,
        wscale: Some(8),
        sack: true,
        ephemeral_base: 49152,
    };
    pub const LINUX: Stack = Stack {
        ttl: 64,
        syn_window: 29200,
        window: 229,
        mss: 1460,
        wscale: Some(7),
        sack: true,
        ephemeral_base: 32768,
    };
    /// Small embedded TCP stacks (pumps, monitors, controllers): no options beyond MSS.
    pub const EMBEDDED: Stack =
        Stack { ttl: 64, syn_window: 4096, window: 4096, mss: 1460, wscale: None, sack: false, ephemeral_base: 1024 };
    pub const VXWORKS: Stack =
        Stack { ttl: 255, syn_window: 8192, window: 8192, mss: 1460, wscale: None, sack: false, ephemeral_base: 1025 };
}

/// One network interface on the wire.
#[derive(Clone, Debug)]
pub struct Host {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub vlan: Option<u16>,
    /// The router interface this host uses to leave its subnet.
    pub gateway: Option<HostId>,
    pub stack: Stack,
    /// The capture that sees this host's segment.
    pub capture: CaptureId,
    /// The routed link (index into the emitter's WAN links) that joins this host's site to
    /// the core, if its site is only reachable through a router.
    pub wan: Option<usize>,
    /// What each capture saw this host send.
    pub sightings: [Sighting; MAX_CAPTURES],
    pub(super) ip_id: u16,
    pub(super) next_port: u16,
}

impl Host {
    pub fn new(mac: [u8; 6], ip: Ipv4Addr, vlan: Option<u16>, stack: Stack) -> Host {
        // The starting IP id is derived from the MAC so it is deterministic but varied.
        let ip_id = u16::from_be_bytes([mac[4], mac[5]]);
        Host {
            mac,
            ip,
            vlan,
            gateway: None,
            stack,
            capture: 0,
            wan: None,
            sightings: [Sighting::default(); MAX_CAPTURES],
            ip_id,
            next_port: stack.ephemeral_base,
        }
    }
}

impl Host {
    /// The next ephemeral port this host hands out (a later holder of an address must not
    /// reuse its predecessor's connections' ports).
    pub fn set_next_port(&mut self, port: u16) {
        self.next_port = port;
    }

    /// Counts a frame this host sent at `ts_us` on `capture` with source MAC `src_mac`.
    pub(super) fn note_sent(&mut self, capture: CaptureId, src_mac: [u8; 6], ts_us: u64) {
        let s = &mut self.sightings[capture];
        if !s.native && !s.routed {
            s.first_us = ts_us;
        }
        s.last_us = ts_us;
        if src_mac == self.mac {
            s.native = true;
        } else {
            s.routed = true;
        }
    }
}
