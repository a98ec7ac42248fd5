//! Differential tests against tshark on every capture in the shared corpus.
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

#[path = "../corpus/mod.rs"]
mod corpus;
#[path = "../dataplane_support/mod.rs"]
mod dataplane_support;
#[path = "../dissect_common/mod.rs"]
mod dissect_common;
#[path = "../dissect_medical_support/mod.rs"]
mod dissect_medical_support;

mod bindings;
mod discovery;
mod flows;
mod identity;
mod medical;
