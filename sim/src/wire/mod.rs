//! Everything below the payloads: frame builders, the pcap writer, the hosts, the emitter
//! (simulated clock, UDP/ARP/raw frames), TCP conversations and the flow ledger.

mod emitter;
mod flows;
pub mod frames;
mod host;
pub mod pcap;
mod tcp;

pub use emitter::{CaptureSummary, Emitter, Leg, View, WanLink};
pub use host::{CaptureId, Host, HostId, Sighting, Stack, MAX_CAPTURES};
pub use pcap::PcapWriter;
pub use tcp::{tcp_transaction, TcpConn};
