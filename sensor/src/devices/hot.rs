//! The per-packet part of a device, one cache line each.
//!
//! Accounting a frame (counters, times, the settled source address and VLAN) and resolving
//! the sender of its findings touch only this line; the bulk of a device (addresses,
//! evidence, the facts waiting for the next drain) lives in a separate array and is read
//! only when something new is learned.

use super::{DeviceSlot, NO_DEVICE};
use std::net::IpAddr;
use wardline_common::MacAddr;

/// Changed since the previous drain (the slot is in the table's dirty list).
const DIRTY: u8 = 1;
/// Sends frames for more hosts than one device has.
const GATEWAY: u8 = 2;
/// `settled_vlan` holds a VLAN.
const HAS_VLAN: u8 = 4;

#[repr(C, align(64))]
#[derive(Debug)]
pub(super) struct HotDevice {
    pub packets: u64,
    pub bytes: u64,
    pub first_us: u64,
    pub last_us: u64,
    /// Owner in the table's `ip_owner` of `settled_src`, valid while that owner's
    /// `owner_epoch` still equals `resolved_epoch`; [`NO_DEVICE`] when not known.
    resolved_owner: DeviceSlot,
    /// A VLAN already recorded (or past the per-device bound), when `HAS_VLAN` is set.
    settled_vlan: u16,
    /// A source address whose accounting can no longer change (already among the
    /// device's addresses, not local, or the device is a gateway): its next packets skip
    /// the checks (and the heap read of the address list).
    pub settled_src: Option<IpAddr>,
    pub mac: MacAddr,
    flags: u8,
    /// Bumped (wrapping) whenever an `ip_owner` entry naming this device is replaced or
    /// removed: every cached resolution to this device taken before is stale.
    owner_epoch: u8,
    /// `owner_epoch` of `resolved_owner` when the resolution was cached.
    resolved_epoch: u8,
}

// One line per device is the point of this struct: a new field must not grow it.
const _: () = assert!(std::mem::size_of::<HotDevice>() == 64);

impl HotDevice {
    pub fn new(mac: MacAddr, ts_us: u64) -> HotDevice {
        HotDevice {
            packets: 0,
            bytes: 0,
            first_us: ts_us,
            last_us: ts_us,
            resolved_owner: NO_DEVICE,
            settled_vlan: 0,
            settled_src: None,
            mac,
            flags: 0,
            owner_epoch: 0,
            resolved_epoch: 0,
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.flags & DIRTY != 0
    }
    pub fn set_dirty(&mut self, on: bool) {
        self.set_flag(DIRTY, on);
    }
    pub fn is_gateway(&self) -> bool {
        self.flags & GATEWAY != 0
    }
    pub fn set_gateway(&mut self) {
        self.set_flag(GATEWAY, true);
    }
    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    pub fn settled_vlan(&self) -> Option<u16> {
        (self.flags & HAS_VLAN != 0).then_some(self.settled_vlan)
    }
    pub fn settle_vlan(&mut self, v: u16) {
        self.settled_vlan = v;
        self.flags |= HAS_VLAN;
    }

    /// Settle a source address; a cached owner of the previous one no longer applies.
    pub fn settle_src(&mut self, ip: IpAddr) {
        if self.settled_src != Some(ip) {
            self.settled_src = Some(ip);
            self.resolved_owner = NO_DEVICE;
        }
    }

    /// The cached owner of `settled_src` and the owner epoch it was taken at.
    pub fn resolved(&self) -> Option<(DeviceSlot, u8)> {
        (self.resolved_owner != NO_DEVICE).then_some((self.resolved_owner, self.resolved_epoch))
    }
    /// Cache `owner` (at its current `epoch`) as the owner of `settled_src`.
    pub fn cache_resolved(&mut self, owner: DeviceSlot, epoch: u8) {
        self.resolved_owner = owner;
        self.resolved_epoch = epoch;
    }
    /// Forget the cached owner if it is `owner`.
    pub fn forget_resolved_to(&mut self, owner: DeviceSlot) {
        if self.resolved_owner == owner {
            self.resolved_owner = NO_DEVICE;
        }
    }

    pub fn owner_epoch(&self) -> u8 {
        self.owner_epoch
    }
    /// Start a new owner epoch; true when the counter wrapped to 0, so an old cached
    /// epoch could match again and the caller must forget every resolution to this device.
    pub fn bump_owner_epoch(&mut self) -> bool {
        self.owner_epoch = self.owner_epoch.wrapping_add(1);
        self.owner_epoch == 0
    }
}
