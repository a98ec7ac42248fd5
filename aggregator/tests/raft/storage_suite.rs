//! openraft's own storage conformance suite, run against the sled log store and the
//! state machine: log reads, truncation, purge, vote, membership and snapshot behaviour
//! as openraft expects them.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use wardline_aggregator::raft::log_store::LogStore;
use wardline_aggregator::raft::state_machine::StateMachineStore;
use wardline_aggregator::raft::TypeConfig;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::open(dir.path().join("raft.sled")).expect("open sled");
        let log = LogStore::open(&db).expect("log trees");
        let sm = StateMachineStore::open(&db).expect("state machine tree");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).expect("storage suite");
}
