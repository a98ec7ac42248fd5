//! Flow sinks: ClickHouse (a real server on a free port, or a two-replica cluster with
//! ZooKeeper) and the embedded store.
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

#[path = "../sink_support/mod.rs"]
mod sink_support;

mod clickhouse;
mod clickhouse_cluster;
mod clickhouse_retention;
mod embedded;
mod grafana_panels;
mod outbox;
