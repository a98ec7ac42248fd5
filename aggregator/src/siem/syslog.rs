//! RFC 5424 syslog messages for alert events, with a CEF or JSON body, and their framing:
//! octet counting over TCP (RFC 6587 §3.4.1), one message per datagram over UDP (RFC 5426).
//!
//! `<PRI>1 TIMESTAMP HOSTNAME wardline PROCID MSGID [wardline@32473 ...] BODY`; the
//! structured data carries the event's sequence number (`event`), which stays the same when
//! a new leader sends an event again, so a SIEM can drop the repeat. 32473 is the enterprise
//! number RFC 5612 sets aside for examples; a site with its own number can keep it, the
//! element name is what matters to parsers.

use crate::state::alerts::{AlertEvent, Severity};
use serde::{Deserialize, Serialize};

/// The structured-data id of Wardline's element.
pub const SD_ID: &str = "wardline@32473";

/// The message body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// ArcSight Common Event Format, version 0.
    Cef,
    /// The event as one JSON object (the API's alert fields plus event seq, action, by, at_ms).
    Json,
}

/// Syslog severity (RFC 5424 §6.2.1) of an alert severity.
pub fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// CEF severity (0–10) of an alert severity.
pub fn cef_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 10,
        Severity::High => 8,
        Severity::Medium => 5,
        Severity::Low => 3,
        Severity::Info => 1,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a time in ms since the epoch (RFC 3339, UTC).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// A header field: printable US-ASCII without spaces, at most `max` characters, `-` if empty.
fn header_field(text: &str, max: usize) -> String {
    let clean: String = text.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if clean.is_empty() {
        "-".into()
    } else {
        clean
    }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn sd_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A CEF header field: `\` and `|` escaped, line breaks as spaces.
fn cef_header(text: &str) -> String {
    text.replace('\\', "\\\\").replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// A CEF extension value: `\` and `=` escaped, line breaks as `\n`/`\r`.
fn cef_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('=', "\\=").replace('\n', "\\n").replace('\r', "\\r")
}

/// The CEF body of one event.
pub fn cef(event: &AlertEvent) -> String {
    let a = &event.alert;
    let name = format!("{} {} on {}", a.kind, event.action, a.device);
    let ext = [
        ("rt", event.at_ms.to_string()),
        ("act", event.action.to_string()),
        ("externalId", a.id.to_string()),
        ("cnt", a.count.to_string()),
        ("start", (a.first_seen_us / 1000).to_string()),
        ("end", (a.last_seen_us / 1000).to_string()),
        ("suser", event.by.clone()),
        ("msg", a.evidence.clone()),
        ("cs1Label", "device".into()),
        ("cs1", a.device.clone()),
        ("cs2Label", "target".into()),
        ("cs2", a.target.clone()),
        ("cs3Label", "site".into()),
        ("cs3", a.site.clone()),
        ("cs4Label", "state".into()),
        ("cs4", a.state.to_string()),
        ("cn1Label", "eventSeq".into()),
        ("cn1", event.seq.to_string()),
    ];
    let ext: Vec<String> = ext.iter().map(|(k, v)| format!("{k}={}", cef_value(v))).collect();
    format!(
        "CEF:0|Wardline|Wardline|{}|{}|{}|{}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(&a.kind.to_string()),
        cef_header(&name),
        cef_severity(a.severity),
        ext.join(" ")
    )
}

/// The JSON body of one event.
pub fn json(event: &AlertEvent) -> String {
    serde_json::json!({
        "event_seq": event.seq,
        "action": event.action,
        "at_ms": event.at_ms,
        "by": event.by,
        "alert": event.alert,
    })
    .to_string()
}

/// Who sends: the syslog header's facility, hostname and procid.
#[derive(Clone, Debug)]
pub struct Origin {
    /// RFC 5424 facility number (0–23).
    pub facility: u8,
    pub hostname: String,
    /// The sending node's id.
    pub node_id: u64,
}

/// One RFC 5424 message (without framing).
pub fn message(event: &AlertEvent, origin: &Origin, payload: Payload) -> String {
    let a = &event.alert;
    let pri = u16::from(origin.facility.min(23)) * 8 + u16::from(syslog_severity(a.severity));
    let sd = format!(
        "[{SD_ID} event=\"{}\" alert=\"{}\" kind=\"{}\" action=\"{}\" severity=\"{}\" state=\"{}\" device=\"{}\" \
         site=\"{}\"]",
        event.seq,
        a.id,
        a.kind,
        event.action,
        a.severity,
        a.state,
        sd_value(&a.device),
        sd_value(&a.site)
    );
    let body = match payload {
        Payload::Cef => cef(event),
        Payload::Json => json(event),
    };
    format!(
        "<{pri}>1 {} {} wardline {} {} {sd} {body}",
        rfc3339_ms(event.at_ms),
        header_field(&origin.hostname, 255),
        origin.node_id,
        header_field(&format!("alert_{}", event.action), 32),
    )
}

/// Octet-counting frame for TCP: `LEN SP MSG`.
pub fn octet_counted(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::alerts::{Alert, AlertAction, AlertKind, AlertState};

    pub fn event() -> AlertEvent {
        AlertEvent {
            seq: 7,
            action: AlertAction::Opened,
            at_ms: 1_767_225_600_123,
            by: "wardline".into(),
            alert: Alert {
                id: 3,
                kind: AlertKind::CleartextCredentials,
                severity: Severity::High,
                device: "00:09:fb:10:20:01".into(),
                site: "ward-3".into(),
                target: "telnet".into(),
                first_seen_us: 1_767_225_600_123_000,
                last_seen_us: 1_767_225_600_123_000,
                count: 1,
                evidence: "a=b | c\\d]\"".into(),
                state: AlertState::Open,
                reopened: 0,
                history: vec![],
            },
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn message_header_structured_data_and_cef_escaping() {
        let origin = Origin { facility: 16, hostname: "node one".into(), node_id: 1 };
        let m = message(&event(), &origin, Payload::Cef);
        // local0 (16) * 8 + err (3).
        assert!(
            m.starts_with(
                "<131>1 2026-01-01T00:00:00.123Z nodeone wardline 1 alert_opened [wardline@32473 event=\"7\""
            ),
            "{m}"
        );
        assert!(m.contains("|cleartext_credentials|cleartext_credentials opened on 00:09:fb:10:20:01|8|"), "{m}");
        assert!(m.contains(r#"msg=a\=b | c\\d]""#), "{m}");
        let framed = octet_counted(&m);
        assert!(framed.starts_with(format!("{} <131>", m.len()).as_bytes()));
        let j = message(&event(), &origin, Payload::Json);
        let body: serde_json::Value = serde_json::from_str(j.split_once("] ").unwrap().1).unwrap();
        assert_eq!(
            (body["event_seq"].as_u64(), body["alert"]["kind"].as_str()),
            (Some(7), Some("cleartext_credentials"))
        );
    }
}
