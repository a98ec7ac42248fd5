//! The Raft node: storage suite, single node, multi-node cluster, and the API served from
//! the replicated state (error answers, identical answers on every node).
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

#[path = "../raft_support/mod.rs"]
mod raft_support;

mod api_errors;
mod backup_processes;
mod backup_restore;
mod cert_reload_processes;
mod cluster;
mod ground_truth_alerts;
mod ground_truth_class_segments;
mod ground_truth_identity;
mod node_process;
mod processes;
mod replicated_answers;
mod single_node;
mod storage_suite;
mod transport_auth;
