//! A device's score over time, compact and bounded: only changes are kept, and the oldest
//! points go first when the history is full. Timestamps come from the caller.

use crate::model::RiskSettings;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The score from `ts_us` (microseconds since the Unix epoch) on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskPoint {
    pub ts_us: u64,
    pub score: f64,
}

/// What [`RiskHistory::record`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Added,
    /// Within `min_change` of the latest point: nothing new to keep.
    Unchanged,
    /// Older than the latest point: ignored, so replays cannot rewrite history.
    OutOfOrder,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskHistory {
    capacity: usize,
    min_change: f64,
    points: VecDeque<RiskPoint>,
}

impl RiskHistory {
    /// At most `capacity` points (at least 1); changes smaller than `min_change` are not kept.
    pub fn new(capacity: usize, min_change: f64) -> RiskHistory {
        let min_change = if min_change.is_nan() { 0.0 } else { min_change.max(0.0) };
        RiskHistory { capacity: capacity.max(1), min_change, points: VecDeque::new() }
    }

    /// Sized by `history_len` and `history_min_change` of risk.toml.
    pub fn for_settings(s: &RiskSettings) -> RiskHistory {
        RiskHistory::new(s.history_len, s.history_min_change)
    }

    pub fn record(&mut self, ts_us: u64, score: f64) -> Recorded {
        if score.is_nan() {
            return Recorded::Unchanged;
        }
        if let Some(last) = self.points.back() {
            if ts_us < last.ts_us {
                return Recorded::OutOfOrder;
            }
            if (score - last.score).abs() < self.min_change {
                return Recorded::Unchanged;
            }
        }
        self.points.push_back(RiskPoint { ts_us, score });
        while self.points.len() > self.capacity.max(1) {
            self.points.pop_front();
        }
        Recorded::Added
    }

    pub fn latest(&self) -> Option<RiskPoint> {
        self.points.back().copied()
    }

    /// Oldest first.
    pub fn points(&self) -> impl Iterator<Item = &RiskPoint> {
        self.points.iter()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The score in force at `ts_us` (the latest point at or before it).
    pub fn score_at(&self, ts_us: u64) -> Option<f64> {
        self.points.iter().take_while(|p| p.ts_us <= ts_us).last().map(|p| p.score)
    }

    /// Latest score minus the score in force at `since_us` (or the oldest kept point).
    pub fn change_since(&self, since_us: u64) -> Option<f64> {
        let latest = self.latest()?;
        let then = self.score_at(since_us).or_else(|| self.points.front().map(|p| p.score))?;
        Some(latest.score - then)
    }
}
