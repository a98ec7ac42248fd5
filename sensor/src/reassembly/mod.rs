//! Reassembly between decode and dissect: IP fragments back into datagrams
//! ([`ip_frag`]), TCP segments back into streams ([`tcp`]) and streams into application
//! messages ([`framing`]). Both tables are bounded in memory and run on packet time.

pub mod framing;
pub mod ip_frag;
pub mod tcp;

pub use ip_frag::{fragment_of, FragConfig, FragInfo, FragStats, FragTable};
pub use tcp::{Segment, TcpReassembler, TcpReassemblyConfig, TcpStats};
