//! IP fragment and TCP stream reassembly, alone and inside the pipeline.
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

#[path = "../corpus/mod.rs"]
mod corpus;
#[path = "../dataplane_support/mod.rs"]
mod dataplane_support;
#[path = "../reassembly_support/mod.rs"]
mod reassembly_support;

mod ip_frag;
mod pipeline;
mod tcp;
