//! The exposition text both binaries serve on `/metrics` (decision 0026).

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition: counter families are
/// named with their `_total` suffix, `# UNIT` and `# EOF` go. Every Prometheus version and
/// `promtool check metrics` read this format; OpenMetrics names a counter family without
/// the suffix, which the text parser takes for a different metric.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match descriptor {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) { "_total" } else { "" };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_get_their_suffix_and_openmetrics_only_lines_go() {
        let om = "# HELP wl_batches Batches.\n# TYPE wl_batches counter\nwl_batches_total 3\n\
                  # HELP wl_up Up.\n# TYPE wl_up gauge\n# UNIT wl_up seconds\nwl_up 1\n# EOF\n";
        assert_eq!(
            super::prometheus_text(om),
            "# HELP wl_batches_total Batches.\n# TYPE wl_batches_total counter\nwl_batches_total 3\n\
             # HELP wl_up Up.\n# TYPE wl_up gauge\nwl_up 1\n"
        );
    }
}
