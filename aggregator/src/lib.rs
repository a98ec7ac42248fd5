//! Wardline aggregator node: QUIC ingest with mutual TLS, an openraft node whose state
//! machine holds the merged inventory and per-sensor watermarks, flow sinks (ClickHouse
//! or embedded), the HTTP API, and the fleet PKI admin commands.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod bundle;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod heartbeat;
pub mod ingest;
pub mod node;
pub mod outbox;
pub mod pki;
pub mod policy;
pub mod query;
pub mod raft;
pub mod risk;
pub mod siem;
pub mod sink;
pub mod state;
pub mod telemetry;
pub mod tls;
