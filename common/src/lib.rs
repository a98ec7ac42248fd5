//! Shared vocabulary of Wardline: what a sensor ships (evidence, flows, device
//! observations) and how it is framed on the wire. No I/O runtime lives here, so both the
//! lean sensor and the aggregator can depend on it. The knowledge base and classifier that
//! interpret the evidence are in `wardline-intel`.

pub mod bundle;
#[cfg(feature = "cli-docs")]
pub mod cli_docs;
pub mod evidence;
pub mod fault;
#[cfg(feature = "logging")]
pub mod logging;
pub mod metrics_text;
pub mod net;
pub mod tls_files;
pub mod wire;

pub use evidence::{Evidence, Field, Proto};
pub use net::MacAddr;
pub use wire::{Batch, DeviceObservation, Event, FlowRecord, SensorStats};
