//! Reports (issue 11 part 5): the inventory by class and site, the top risks with their
//! reasons, vulnerable and end-of-support devices, and open alerts, each as CSV (RFC 4180,
//! one header row) or a self-contained HTML page. Rendered by hand: the tables are plain,
//! and escaping is the one thing a template engine would add (decision 0027).

use crate::query::risk::DeviceRiskRow;
use crate::state::alerts::Alert;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The reports there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportName {
    Inventory,
    Risk,
    Vulnerable,
    Alerts,
}

impl ReportName {
    pub const ALL: [ReportName; 4] =
        [ReportName::Inventory, ReportName::Risk, ReportName::Vulnerable, ReportName::Alerts];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportName::Inventory => "inventory",
            ReportName::Risk => "risk",
            ReportName::Vulnerable => "vulnerable",
            ReportName::Alerts => "alerts",
        }
    }

    fn title(self) -> &'static str {
        match self {
            ReportName::Inventory => "Device inventory by class and site",
            ReportName::Risk => "Top risks",
            ReportName::Vulnerable => "Vulnerable and end-of-support devices",
            ReportName::Alerts => "Open alerts",
        }
    }
}

impl std::str::FromStr for ReportName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ReportName::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("no report {s:?}: use inventory, risk, vulnerable or alerts"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(Format::Csv),
            "html" => Ok(Format::Html),
            other => Err(format!("no report format {other:?}: use csv or html")),
        }
    }
}

/// What a report is made of; every node builds the same from the same applied state.
pub struct ReportInput<'a> {
    /// Scored devices, highest score first.
    pub devices: &'a [DeviceRiskRow],
    pub open_alerts: &'a [Alert],
    /// Devices listed in the risk report.
    pub top: usize,
    /// Cluster state position the report was built from ("applied index 123").
    pub source: String,
}

/// A report's table: a header and rows of cells, plus summary lines for the HTML page.
struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    summary: Vec<String>,
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// Per policy group (a device in two groups counts in both): devices, highest and mean score.
fn group_summary(devices: &[DeviceRiskRow]) -> Vec<String> {
    let mut groups: BTreeMap<&str, (usize, f64, f64)> = BTreeMap::new();
    for d in devices {
        for g in &d.groups {
            let e = groups.entry(g.as_str()).or_insert((0, 0.0, 0.0));
            e.0 += 1;
            e.1 = e.1.max(d.score);
            e.2 += d.score;
        }
    }
    groups
        .into_iter()
        .map(|(g, (n, max, sum))| format!("group {g}: {n} devices, highest {max:.1}, mean {:.1}", sum / n as f64))
        .collect()
}

fn table(name: ReportName, input: &ReportInput) -> Table {
    match name {
        ReportName::Inventory => {
            let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
            for d in input.devices {
                *counts.entry((d.class.as_str(), d.site.as_str())).or_default() += 1;
            }
            let mut devices: Vec<&DeviceRiskRow> = input.devices.iter().collect();
            devices.sort_by(|a, b| (&a.class, &a.site, &a.id).cmp(&(&b.class, &b.site, &b.id)));
            Table {
                header: vec!["class", "site", "id", "mac", "ips", "category", "criticality", "vendor", "model", "os"],
                rows: devices
                    .into_iter()
                    .map(|d| {
                        vec![
                            d.class.clone(),
                            d.site.clone(),
                            d.id.clone(),
                            opt(&d.mac),
                            d.ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(" "),
                            d.category.clone(),
                            d.criticality.clone(),
                            opt(&d.vendor),
                            opt(&d.model),
                            opt(&d.os),
                        ]
                    })
                    .collect(),
                summary: counts.into_iter().map(|((class, site), n)| format!("{class} at {site}: {n}")).collect(),
            }
        }
        ReportName::Risk => Table {
            header: vec!["rank", "id", "site", "class", "groups", "score", "reasons", "vulnerabilities"],
            rows: input
                .devices
                .iter()
                .take(input.top)
                .enumerate()
                .map(|(i, d)| {
                    vec![
                        (i + 1).to_string(),
                        d.id.clone(),
                        d.site.clone(),
                        d.class.clone(),
                        d.groups.join(" "),
                        format!("{:.1}", d.score),
                        d.reasons.join("; "),
                        d.vulnerabilities.len().to_string(),
                    ]
                })
                .collect(),
            summary: std::iter::once(format!("{} devices scored; the top {} listed", input.devices.len(), input.top))
                .chain(group_summary(input.devices))
                .collect(),
        },
        ReportName::Vulnerable => {
            let mut rows = Vec::new();
            for d in input.devices {
                for v in &d.vulnerabilities {
                    rows.push(vec![
                        d.id.clone(),
                        d.site.clone(),
                        d.class.clone(),
                        format!("{} {}", opt(&d.vendor), opt(&d.model)).trim().to_string(),
                        "vulnerability".into(),
                        v.advisory_id.to_string(),
                        v.cve.as_deref().unwrap_or("").to_string(),
                        v.cvss_score.map(|s| format!("{s:.1}")).unwrap_or_default(),
                        if v.kev { "yes" } else { "no" }.into(),
                        serde_json::to_value(v.confidence)
                            .ok()
                            .and_then(|c| c.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        v.remediation.to_string(),
                    ]);
                }
                if d.os_unsupported {
                    rows.push(vec![
                        d.id.clone(),
                        d.site.clone(),
                        d.class.clone(),
                        format!("{} {}", opt(&d.vendor), opt(&d.model)).trim().to_string(),
                        "end_of_support".into(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        format!("{} out of support since {}", opt(&d.os), opt(&d.os_end_of_support)),
                    ]);
                }
            }
            let devices = input.devices.iter().filter(|d| !d.vulnerabilities.is_empty() || d.os_unsupported).count();
            Table {
                header: vec![
                    "id",
                    "site",
                    "class",
                    "product",
                    "finding",
                    "advisory",
                    "cve",
                    "cvss",
                    "kev",
                    "confidence",
                    "remediation",
                ],
                rows,
                summary: vec![format!("{devices} of {} devices have findings", input.devices.len())],
            }
        }
        ReportName::Alerts => Table {
            header: vec!["id", "severity", "kind", "device", "site", "target", "count", "last_seen_us", "evidence"],
            rows: input
                .open_alerts
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        a.severity.as_str(),
                        a.kind.as_str(),
                        a.device.clone(),
                        a.site.clone(),
                        a.target.clone(),
                        a.count.to_string(),
                        a.last_seen_us.to_string(),
                        a.evidence.clone(),
                    ]
                })
                .collect(),
            summary: vec![format!("{} open alerts", input.open_alerts.len())],
        },
    }
}

/// A CSV field: quoted when it holds a separator, quote or line break; a leading `=`, `+`,
/// `-` or `@` is prefixed with `'` so a spreadsheet does not run device-supplied text as a
/// formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Render report `name` in `format`.
pub fn render(name: ReportName, format: Format, input: &ReportInput) -> String {
    let t = table(name, input);
    match format {
        Format::Csv => {
            let mut out = t.header.join(",");
            out.push_str("\r\n");
            for row in &t.rows {
                out.push_str(&row.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
                out.push_str("\r\n");
            }
            out
        }
        Format::Html => {
            let title = name.title();
            let mut out = format!(
                "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Wardline: {title}</title>\n\
                 <style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}\
                 th,td{{border:1px solid #999;padding:2px 6px;text-align:left;vertical-align:top}}\
                 th{{background:#eee}}</style></head>\n<body>\n<h1>{title}</h1>\n<p>{}</p>\n<ul>\n",
                html_escape(&input.source)
            );
            for line in &t.summary {
                let _ = writeln!(out, "<li>{}</li>", html_escape(line));
            }
            out.push_str("</ul>\n<table>\n<thead><tr>");
            for h in &t.header {
                let _ = write!(out, "<th>{h}</th>");
            }
            out.push_str("</tr></thead>\n<tbody>\n");
            for row in &t.rows {
                out.push_str("<tr>");
                for c in row {
                    let _ = write!(out, "<td>{}</td>", html_escape(c));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody>\n</table>\n</body></html>\n");
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_separators_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(html_escape("<b>&'\""), "&lt;b&gt;&amp;&#39;&quot;");
        assert_eq!("risk".parse::<ReportName>(), Ok(ReportName::Risk));
        assert!("secrets".parse::<ReportName>().is_err());
        assert!("pdf".parse::<Format>().is_err());
    }
}
