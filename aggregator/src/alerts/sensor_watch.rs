//! The leader's sensor-silence tick (decision 0033): every [`INTERVAL`], the node that leads
//! proposes `Command::SensorTick` with its clock when the tick would change something (a
//! sensor delivered, or one reached the silence threshold), so `sensor_silent` alerts open
//! and resolve in the replicated state, alike on every node, and a new leader carries on.

use crate::auth::now_ms;
use crate::query::QueryService;
use crate::raft::RaftNode;
use crate::state::Command;
use std::sync::Arc;
use std::time::Duration;

/// How often the leader looks.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Propose a tick at `now_ms` if it would change anything; returns whether one applied.
pub async fn tick_once(raft: &RaftNode, now_ms: u64) -> Result<bool, String> {
    let due = raft.read_state(move |s| s.detectors().tick_would_change(now_ms, s.sensors())).await;
    if !due {
        return Ok(false);
    }
    let applied = raft.propose(Command::SensorTick { now_ms }).await.map_err(|e| e.to_string())?.applied;
    Ok(applied)
}

/// Run [`tick_once`] every `every` on whichever node leads, until `stop` turns true.
pub async fn run(query: Arc<QueryService>, every: Duration, stop: tokio::sync::watch::Receiver<bool>) {
    crate::raft::every_while_leader(query.raft(), every, "propose the sensor-silence tick", stop, || {
        let query = query.clone();
        async move { tick_once(query.raft(), now_ms()).await }
    })
    .await
}
