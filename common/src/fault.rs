//! Crash points for fault tests: `WARDLINE_FAULT=<point>:<seq>` makes the process abort
//! (like kill -9: no destructors, no flush) when it reaches `point` for batch `seq`.
//! Timed kills cannot land reliably between two steps a few microseconds apart; these
//! points can. Unset in production, where a check costs one atomic load.

use std::sync::OnceLock;

/// Named points between the steps whose ordering the delivery guarantees depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Sensor: the aggregator acknowledged the batch, the spool still holds it.
    SensorAfterAck,
    /// Aggregator: the outbox drainer wrote a batch's flows to the flow sink, the drain is
    /// not yet committed to Raft (decision 0016). Fires for the first drained batch at or
    /// after the configured seq ([`crash_point_at_or_after`]): batches without flows never
    /// reach the outbox, so an exact seq might never come.
    AggregatorAfterSink,
    /// Aggregator: batch committed and applied, ack not yet sent.
    AggregatorAfterCommit,
    /// Sensor spool: the nth (1-based, per process) sequence assignment is written, not flushed.
    SpoolAfterSeal,
    /// Sensor spool: the nth roll-up of flow detail into summaries is written, not flushed.
    SpoolAfterRollup,
    /// Sensor spool: the nth eviction is written, not flushed.
    SpoolAfterEvict,
}

impl CrashPoint {
    fn name(self) -> &'static str {
        match self {
            CrashPoint::SensorAfterAck => "sensor-after-ack",
            CrashPoint::AggregatorAfterSink => "aggregator-after-sink",
            CrashPoint::AggregatorAfterCommit => "aggregator-after-commit",
            CrashPoint::SpoolAfterSeal => "spool-after-seal",
            CrashPoint::SpoolAfterRollup => "spool-after-rollup",
            CrashPoint::SpoolAfterEvict => "spool-after-evict",
        }
    }
}

fn configured() -> &'static Option<(String, u64)> {
    static CFG: OnceLock<Option<(String, u64)>> = OnceLock::new();
    CFG.get_or_init(|| {
        let v = std::env::var("WARDLINE_FAULT").ok()?;
        let (p, s) = v.split_once(':')?;
        Some((p.to_string(), s.parse().ok()?))
    })
}

/// Abort the process if the configured crash point is `point` at batch `seq`.
pub fn crash_point(point: CrashPoint, seq: u64) {
    if let Some((p, s)) = configured() {
        if p == point.name() && *s == seq {
            eprintln!("WARDLINE_FAULT: aborting at {} for batch seq {seq}", point.name());
            std::process::abort();
        }
    }
}

/// Abort the process if the configured crash point is `point` at a batch seq ≤ `seq`:
/// for points that see only some batches (the outbox drainer sees those with flows).
pub fn crash_point_at_or_after(point: CrashPoint, seq: u64) {
    if let Some((p, s)) = configured() {
        if p == point.name() && seq >= *s {
            eprintln!("WARDLINE_FAULT: aborting at {} for batch seq {seq} (armed at {s})", point.name());
            std::process::abort();
        }
    }
}
