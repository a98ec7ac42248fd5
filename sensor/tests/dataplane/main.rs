//! Capture reading, decoding, the pipeline's events, the spool, and the sensor's dependency tree.
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

#[path = "../corpus/mod.rs"]
mod corpus;
#[path = "../dataplane_support/mod.rs"]
mod dataplane_support;

mod capture_file;
mod decode_props;
mod hosts;
mod lean_dependencies;
#[cfg(feature = "live")]
mod live_capture;
mod pipeline_events;
mod spool_durability;
mod tunnels;
