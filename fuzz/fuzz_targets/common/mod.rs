//! Shared by the fuzz targets: a packet context for dissectors whose findings depend only
//! on transport and ports.

use wardline_common::MacAddr;
use wardline_sensor::dissect::{PacketCtx, Transport};

pub fn ctx(transport: Transport, src_port: u16, dst_port: u16) -> PacketCtx {
    PacketCtx {
        ts_us: 0,
        src_mac: MacAddr([0; 6]),
        dst_mac: MacAddr([0; 6]),
        vlan: None,
        src_ip: None,
        dst_ip: None,
        src_port,
        dst_port,
        transport,
    }
}
