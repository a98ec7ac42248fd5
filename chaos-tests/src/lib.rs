//! Test harness for multi-process tests.

pub mod clickhouse;
pub mod procs;
pub mod expect;
