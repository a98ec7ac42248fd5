//! Scheduled reports: the leader writes the configured reports into the folder, whole.

use crate::raft_support::{config, ServedNode, WAIT};
use crate::{pump_batch, PUMP};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::risk::schedule::{run, ReportSchedule, ScheduledReport};
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_intel::KnowledgeBase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_writes_scheduled_reports_into_the_folder() {
    let data = tempfile::tempdir().unwrap();
    let served = ServedNode::start(1, &data.path().join("raft"), config(1000)).await;
    let raft = served.node.clone();
    raft.initialize_single_if_new().await.unwrap();
    raft.wait_for_leader(WAIT).await.unwrap();
    raft.propose(pump_batch()).await.unwrap();
    let sink = Arc::new(EmbeddedSink::open(&data.path().join("flows")).unwrap());
    let query = Arc::new(QueryService::new(
        raft.clone(),
        sink,
        Arc::new(KnowledgeBase::builtin().unwrap()),
        Arc::new(IngestStats::default()),
    ));
    let out = data.path().join("reports");
    let schedule = ReportSchedule {
        dir: out.clone(),
        schedule: vec![
            ScheduledReport { report: "inventory".into(), format: "csv".into(), every_secs: 3600 },
            ScheduledReport { report: "risk".into(), format: "html".into(), every_secs: 3600 },
            // Printed by Debian's headless chromium (needed here: apt-get install chromium).
            ScheduledReport { report: "alerts".into(), format: "pdf".into(), every_secs: 3600 },
        ],
    };
    schedule.validate().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(query, schedule, stop_rx));

    let deadline = Instant::now() + WAIT;
    while !["inventory.csv", "risk.html", "alerts.pdf"].iter().all(|f| out.join(f).exists()) {
        assert!(Instant::now() < deadline, "the leader wrote no reports into {}", out.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let csv = std::fs::read_to_string(out.join("inventory.csv")).unwrap();
    assert!(csv.starts_with("class,site,id,mac,"), "{csv}");
    assert!(csv.contains(&PUMP.to_string()), "{csv}");
    let html = std::fs::read_to_string(out.join("risk.html")).unwrap();
    assert!(html.ends_with("</html>\n") && html.contains(&PUMP.to_string()), "a whole page: {html}");
    let pdf = std::fs::read(out.join("alerts.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-") && String::from_utf8_lossy(&pdf).contains("/Title (Wardline: Open alerts)"));
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files remain");

    stop_tx.send(true).unwrap();
    tokio::time::timeout(WAIT, task).await.expect("the scheduler stops when told").unwrap();
    served.stop().await;
}
