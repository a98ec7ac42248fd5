//! Multi-process tests: real sensor and aggregator binaries, real ClickHouse, kill -9.
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

mod bundle;
mod e2e_clickhouse;
mod failover;
mod flapping;
mod health;
mod kb_override;
mod kill9;
mod nemeses;
mod outage;
mod reinstall;
mod revocation;
mod rotation;
mod upgrade;
