//! The faults a chaos run injects. Each nemesis is injected once the sensors stream, held
//! for the run's fault time, then healed; the checker judges the end state.
//!
//! Some need a cluster of three or more nodes (the cluster lifecycle CLI); on a one-node
//! cluster they are reported as skipped with the reason.

use rand::seq::SliceRandom;
use rand::Rng;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nemesis {
    /// kill -9 the Raft leader; restarted over its data folder when the fault ends.
    KillLeader,
    /// kill -9 one follower; restarted when the fault ends.
    KillFollower,
    /// SIGSTOP the leader (a hung process: sockets open, nothing answers); SIGCONT at the end.
    PauseLeader,
    /// Cut the leader off from the majority (its network namespace link down).
    PartitionLeader,
    /// Cut a minority of nodes off from the rest.
    IsolateMinority,
    /// Sensor links through the fault proxy with loss (5-30 %), delay with jitter,
    /// duplicates and reordering (and Raft links too, on a cluster).
    FlakyLinks,
    /// Sensors cut off from the cluster entirely (blackhole), then healed.
    PartitionSensors,
    /// ClickHouse killed with SIGKILL and restarted over its data.
    ClickHouseRestart,
    /// One node's data folder (a small tmpfs) filled to the last byte, then freed.
    FullDisk,
    /// A node removed and another added while the sensors stream.
    MembershipChange,
    /// One node's clock jumps forward (libfaketime), then back.
    ClockJump,
    /// Two of the above at once, chosen by the seed.
    Random,
}

impl Nemesis {
    pub const ALL: [Nemesis; 12] = [
        Nemesis::KillLeader,
        Nemesis::KillFollower,
        Nemesis::PauseLeader,
        Nemesis::PartitionLeader,
        Nemesis::IsolateMinority,
        Nemesis::FlakyLinks,
        Nemesis::PartitionSensors,
        Nemesis::ClickHouseRestart,
        Nemesis::FullDisk,
        Nemesis::MembershipChange,
        Nemesis::ClockJump,
        Nemesis::Random,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::KillLeader => "kill-leader",
            Nemesis::KillFollower => "kill-follower",
            Nemesis::PauseLeader => "pause-leader",
            Nemesis::PartitionLeader => "partition-leader",
            Nemesis::IsolateMinority => "isolate-minority",
            Nemesis::FlakyLinks => "flaky-links",
            Nemesis::PartitionSensors => "partition-sensors",
            Nemesis::ClickHouseRestart => "clickhouse-restart",
            Nemesis::FullDisk => "full-disk",
            Nemesis::MembershipChange => "membership-change",
            Nemesis::ClockJump => "clock-jump",
            Nemesis::Random => "random",
        }
    }

    /// Nodes the nemesis needs to mean anything (a follower, a majority, a member to swap).
    pub fn min_nodes(self) -> usize {
        match self {
            Nemesis::KillFollower | Nemesis::PartitionLeader | Nemesis::IsolateMinority | Nemesis::MembershipChange => {
                3
            }
            _ => 1,
        }
    }

    /// Whether the run puts each node in its own network namespace (partitions cut links).
    pub fn needs_netns(self) -> bool {
        matches!(self, Nemesis::PartitionLeader | Nemesis::IsolateMinority | Nemesis::Random)
    }

    /// The nemeses a Random run combines from, on a cluster of `nodes`.
    pub fn combinable(nodes: usize) -> Vec<Nemesis> {
        Nemesis::ALL
            .into_iter()
            // Each of these changes how the cluster is built or who is in it.
            .filter(|n| {
                !matches!(n, Nemesis::Random | Nemesis::ClockJump | Nemesis::FullDisk | Nemesis::MembershipChange)
            })
            .filter(|n| n.min_nodes() <= nodes)
            .collect()
    }

    /// Two distinct nemeses for a Random run.
    pub fn pick_two(rng: &mut impl Rng, nodes: usize) -> (Nemesis, Nemesis) {
        let pool = Nemesis::combinable(nodes);
        let two: Vec<Nemesis> = pool.choose_multiple(rng, 2).copied().collect();
        (two[0], two[1])
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nemesis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Nemesis::ALL.into_iter().find(|n| n.name() == s).ok_or_else(|| {
            format!(
                "unknown nemesis {s:?}; known: {}",
                Nemesis::ALL.iter().map(|n| n.name()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for n in Nemesis::ALL {
            assert_eq!(n.name().parse::<Nemesis>().unwrap(), n);
        }
        let err = "kill-everything".parse::<Nemesis>().unwrap_err();
        assert!(err.contains("kill-leader") && err.contains("clock-jump"), "{err}");
    }

    #[test]
    fn random_picks_two_distinct_runnable_nemeses_replayably() {
        let pick = |seed| Nemesis::pick_two(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed), 1);
        for seed in 0..50 {
            let (a, b) = pick(seed);
            assert_ne!(a, b);
            assert!(a.min_nodes() == 1 && b.min_nodes() == 1, "{a} {b} need a cluster");
            assert_eq!(pick(seed), (a, b), "seed {seed} must replay the same pair");
        }
    }
}
