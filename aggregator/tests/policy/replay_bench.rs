//! The replay benchmark (`aggregator/examples/replay_bench.rs`, `just bench-replay`) at a
//! size CI can afford: 1M generated hospital flows in a real ClickHouse 18.16, every
//! workflow's denied count and a version comparison equal to the in-memory evaluator's, and
//! a sample of stored rows decided alike. Keeps the bench code from rotting; the timings it
//! prints are not asserted (docs/benchmarks.md has the 100M-row run).

#[path = "../../examples/replay_bench.rs"]
#[allow(dead_code)]
mod bench;

#[test]
fn the_replay_bench_at_one_million_rows_agrees_with_the_evaluator() {
    let report = bench::run(1_000_000).expect("replay bench");
    bench::print(&report);
    assert_eq!(report.rows, 1_000_000);
    assert!(report.denied > 0 && report.denied < report.rows, "{report:?}");
    assert!(report.workflows > 1 && report.no_longer_blocked > 0, "{report:?}");
    assert!(report.sampled > 500, "about one row in 1000 is sampled: {report:?}");
}
