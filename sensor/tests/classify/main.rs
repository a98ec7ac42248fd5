//! Classification of the pipeline's devices: generated captures with ground truth, and real captures.
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

#[path = "../corpus/mod.rs"]
mod corpus;

mod accuracy;
mod real_pcaps;
mod routed_site;
