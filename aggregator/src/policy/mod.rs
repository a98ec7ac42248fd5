//! Segmentation policy in the aggregator (issue 12, decision 0025): the API over the
//! versions kept in the replicated state (`crate::state::policy`), and the resolution of a
//! policy against the current inventory (device attributes, group membership) that the
//! proposing node does with its knowledge base.

pub mod api;
pub mod blast;
pub mod groups;
pub mod recommend;
pub mod refresh;
pub mod replay;
pub mod resolve;
pub mod tags;
