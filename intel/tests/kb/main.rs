//! The knowledge base: loading, OUI registry, classifier and flow context.
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

mod classify;
mod flow;
mod load;
mod oui;
