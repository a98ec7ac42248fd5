//! Test harness for multi-process tests.

pub mod checker;
pub mod clickhouse;
pub mod disk;
pub mod expect;
pub mod fault_proxy;
pub mod multiday;
pub mod nemesis;
pub mod netns;
pub mod procs;
pub mod run;
pub mod zookeeper;
