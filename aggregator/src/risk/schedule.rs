//! Scheduled reports: the leader writes each configured report into a folder at its
//! interval (`[reports]` in the node config, docs/risk.md "Serving"). Only the node that
//! leads writes, so a cluster with a shared folder writes each report once per interval;
//! every node runs the loop, so a new leader takes over without configuration changes.
//! Each file is written whole (temporary file, then rename): a reader never sees half a
//! report.

use super::api::report_text;
use super::reports::{Format, ReportName};
use crate::query::QueryService;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// `[reports]`: where scheduled reports go and which.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSchedule {
    pub dir: PathBuf,
    #[serde(default)]
    pub schedule: Vec<ScheduledReport>,
}

/// `[[reports.schedule]]`: one report, its format and how often.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledReport {
    /// inventory, risk, vulnerable or alerts.
    pub report: String,
    /// csv, html or pdf (the HTML printed by headless chromium, `super::pdf`).
    pub format: String,
    /// Seconds between writes (at least 1).
    pub every_secs: u64,
}

impl ReportSchedule {
    /// Every entry names a known report and format with a positive interval.
    pub fn validate(&self) -> Result<()> {
        for r in &self.schedule {
            r.report.parse::<ReportName>().map_err(anyhow::Error::msg).context("[[reports.schedule]] report")?;
            output(&r.format).map_err(anyhow::Error::msg).context("[[reports.schedule]] format")?;
            if r.every_secs == 0 {
                bail!("[[reports.schedule]] {}.{}: every_secs must be at least 1", r.report, r.format);
            }
        }
        Ok(())
    }
}

/// What a scheduled entry writes: a text report, or the HTML one printed to PDF.
#[derive(Clone, Copy)]
enum Output {
    Text(Format),
    Pdf,
}

fn output(format: &str) -> Result<Output, String> {
    match format {
        "pdf" => Ok(Output::Pdf),
        other => other.parse().map(Output::Text).map_err(|e| format!("{e} (or pdf)")),
    }
}

/// Write `text` to `dir/file` through a temporary file and a rename.
fn write_whole(dir: &Path, file: &str, text: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(file))
}

/// Run until `stop` turns true: every second, write each report that is due, if this node
/// leads. A report is due at start-up (on the leader) and then every `every_secs`.
pub async fn run(query: Arc<QueryService>, schedule: ReportSchedule, mut stop: tokio::sync::watch::Receiver<bool>) {
    let entries: Vec<(ReportName, Output, Duration)> = schedule
        .schedule
        .iter()
        .filter_map(|r| {
            Some((r.report.parse().ok()?, output(&r.format).ok()?, Duration::from_secs(r.every_secs.max(1))))
        })
        .collect();
    let mut last: Vec<Option<Instant>> = vec![None; entries.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let raft = query.raft();
        if raft.metrics().current_leader != Some(raft.node_id()) {
            // A follower forgets its timers: when it becomes leader it writes at once.
            last.iter_mut().for_each(|l| *l = None);
            continue;
        }
        for ((name, format, every), last) in entries.iter().zip(last.iter_mut()) {
            if last.is_some_and(|t| t.elapsed() < *every) {
                continue;
            }
            *last = Some(Instant::now());
            let (bytes, ext) = match format {
                Output::Text(f) => {
                    let ext = if *f == Format::Csv { "csv" } else { "html" };
                    (report_text(&query, *name, *f).await.into_bytes(), ext)
                }
                Output::Pdf => match super::pdf::html_to_pdf(&report_text(&query, *name, Format::Html).await).await {
                    Ok(pdf) => (pdf, "pdf"),
                    Err(e) => {
                        warn!(report = name.as_str(), "cannot write the scheduled PDF report: {e}");
                        continue;
                    }
                },
            };
            let file = format!("{}.{ext}", name.as_str());
            match write_whole(&schedule.dir, &file, &bytes) {
                Ok(()) => info!(report = %file, dir = %schedule.dir.display(), "scheduled report written"),
                Err(e) => warn!(
                    report = %file,
                    "cannot write the scheduled report into {}: {e}; check the folder exists and is writable",
                    schedule.dir.display()
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_entries_are_checked() {
        let ok: ReportSchedule =
            toml::from_str("dir = \"/tmp/r\"\n[[schedule]]\nreport = \"risk\"\nformat = \"html\"\nevery_secs = 3600\n")
                .unwrap();
        ok.validate().unwrap();
        for bad in [("secrets", "csv", 1), ("risk", "docx", 1), ("risk", "csv", 0)] {
            let s = ReportSchedule {
                dir: "/tmp/r".into(),
                schedule: vec![ScheduledReport { report: bad.0.into(), format: bad.1.into(), every_secs: bad.2 }],
            };
            assert!(s.validate().is_err(), "{bad:?}");
        }
    }
}
