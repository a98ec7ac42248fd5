//! The capture generator, checked against ground truth and an independent decoder (tshark).
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

#[path = "../generate_common/mod.rs"]
mod generate_common;

mod cli;
mod hospital;
mod identity;
mod risky;
mod ward;
