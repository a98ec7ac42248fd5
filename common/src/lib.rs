//! Shared vocabulary of Wardline: what a sensor ships, how it is framed on the wire,
//! and the knowledge used to name devices. No I/O runtime lives here, so both the lean
//! sensor and the aggregator can depend on it.

pub mod evidence;
pub mod fault;
pub mod kb;
pub mod net;
pub mod oui;
pub mod tls_files;
pub mod wire;
#[cfg(feature = "logging")]
pub mod logging;

pub use evidence::{Evidence, Field, Proto};
pub use net::MacAddr;
pub use wire::{Batch, DeviceObservation, Event, FlowRecord, SensorStats};
