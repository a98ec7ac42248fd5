//! cargo fuzz run raft_rpc — Raft RPC bodies and snapshot chunks as a node receives them
//! from a peer (after mTLS, so from a node certificate, but never trusted to be well formed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use wardline_aggregator::raft::network::SnapshotChunk;
use wardline_aggregator::raft::state_machine::SnapshotPayload;
use wardline_aggregator::raft::{codec, TypeConfig};

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<AppendEntriesRequest<TypeConfig>>(data);
    let _ = codec::decode::<VoteRequest<u64>>(data);
    let _ = codec::decode::<SnapshotChunk>(data);
    let _ = SnapshotPayload::decode(data);
});
