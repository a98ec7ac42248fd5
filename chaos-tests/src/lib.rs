//! Test harness for multi-process tests.

pub mod clickhouse;
pub mod expect;
pub mod procs;
