//! Shared vocabulary of Wardline: what a sensor ships (evidence, flows, device
//! observations) and how it is framed on the wire. No I/O runtime lives here, so both the
//! lean sensor and the aggregator can depend on it (the optional `tls-reload` feature, used by
//! both binaries, adds the tokio task that reloads certificates). The knowledge base and classifier that
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
#[cfg(feature = "tls-reload")]
pub mod tls_reload;
pub mod wire;

pub use evidence::{Evidence, Field, Proto};
pub use net::MacAddr;
pub use wire::{Batch, DeviceObservation, Event, FlowRecord, SensorStats};
