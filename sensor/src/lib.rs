//! Wardline sensor: passive capture → decode → flows and dissectors → device observations
//! → batches → durable spool → QUIC uplink. Sources, transforms and sinks are separate
//! modules so each can be tested alone.

pub mod analyze;
pub mod bundle;
pub mod capture;
pub mod config;
pub mod decode;
pub mod devices;
mod digits;
pub mod dissect;
pub mod flow;
pub mod hugepages;
pub mod pipeline;
mod prefetch;
pub mod protocols;
pub mod reassembly;
pub mod run;
pub mod spool;
pub mod telemetry;
pub mod tls;
pub mod uplink;
