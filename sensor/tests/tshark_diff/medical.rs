//! Differential test against tshark (Debian 4.0.x) on every DICOM, HL7 and SMB capture in the
//! shared corpus: per file and per field, the SET of values Wardline extracts must equal the
//! set tshark extracts. Every disagreement is printed; the test fails if there is any.
//!
//! Normalisations (each a representation difference, not a content difference):
//! - DICOM AE titles: tshark shows the 16-byte space-padded field; Wardline trims the padding
//!   (PS3.8 §9.3.2: leading/trailing spaces are not significant).
//! - DICOM application context / abstract syntax: tshark prints "Name (UID)" for known UIDs;
//!   the UID inside the last parentheses is compared.
//! - HL7: tshark 4.0 has no hl7.msh.* fields; it shows each field as "field N: value" under
//!   its segment (PDML), numbering MSH fields as HL7 does (field 3 = MSH-3) but other
//!   segments one higher (the segment name is its "field 1", so "field 19" of OBX = OBX-18).
//!   MSH-3..6: Wardline keeps component 1 (HD namespace id), so tshark's field is cut at the
//!   first component separator. MSH-9: Wardline keeps "code^trigger", i.e. tshark's
//!   hl7.message.type and hl7.event.type joined by ^, and the whole field (code ^ trigger ^
//!   structure) as the full message type. MSH-3/MSH-5 universal ids: components 2 and 3 of
//!   tshark's field joined by ^ (trailing empty dropped; none without component 2). Values
//!   are re-joined with ^ whatever the message's component separator. Device ids: tshark's OBX-18 / PRT-10 / PRT-16 field split into repetitions,
//!   plus component 2 of MSH-3 when component 3 is "EUI-64" (the same rule Wardline applies).
//!   PHI count: tshark's segments per message whose names are in hl7::PHI_SEGMENTS; tshark
//!   drops a final segment that has no CR before the MLLP end block, so Wardline's count is
//!   compared minus that segment when it is PHI-bearing (see tshark_visible_phi_counts).
//! - HL7 files tshark does not decode at all because they carry unframed HL7 in TCP SYN
//!   packets (its dissector needs MLLP framing) are reported and skipped.
//! - SMB: smb.dialect (SMB1 negotiate request strings) and smb2.dialect ("0x0202"; requests
//!   and responses) together against Wardline's SmbDialect values; native OS / LAN manager
//!   strings as they are.

use crate::dissect_medical_support::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use wardline_common::Field;
use wardline_sensor::dissect::dicom::DicomDissector;
use wardline_sensor::dissect::hl7::{self, Hl7Dissector};
use wardline_sensor::dissect::smb::SmbDissector;
use wardline_sensor::dissect::Dissector;

type Sets = BTreeMap<&'static str, BTreeSet<String>>;

/// Ports tshark must decode as DICOM / HL7 beyond its defaults (from MANIFEST.tsv notes).
const DECODE_AS: [&str; 4] =
    ["tcp.port==11112,dicom", "tcp.port==4242,dicom", "tcp.port==6661,hl7", "tcp.port==2575,hl7"];

fn tshark(file: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).arg("-n");
    for d in DECODE_AS {
        cmd.args(["-d", d]);
    }
    cmd.args(extra);
    let out = cmd.output().unwrap_or_else(|e| panic!("tshark not runnable ({e}); install the Debian tshark package"));
    assert!(out.status.success(), "tshark failed on {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `-T fields` with all occurrences joined by '|' (no value here contains one).
fn tshark_fields(file: &Path, filter: &str, fields: &[&str]) -> Vec<BTreeSet<String>> {
    let mut args = vec!["-Y", filter, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"];
    for f in fields {
        args.extend(["-e", f]);
    }
    let text = tshark(file, &args);
    let mut sets = vec![BTreeSet::new(); fields.len()];
    for line in text.lines() {
        for (i, col) in line.split('\t').enumerate().take(fields.len()) {
            for v in col.split('|').filter(|v| !v.trim().is_empty()) {
                sets[i].insert(v.to_string());
            }
        }
    }
    sets
}

fn ours(d: &dyn Dissector, msgs: &[Message], fields: &[(&'static str, Field)]) -> Sets {
    let (facts, _) = facts(d, msgs);
    fields
        .iter()
        .map(|(name, field)| (*name, facts.iter().filter(|(_, f, _)| f == field).map(|(_, _, v)| v.clone()).collect()))
        .collect()
}

fn compare(file: &Path, theirs: &Sets, ours: &Sets, disagreements: &mut Vec<String>) {
    for (name, t) in theirs {
        let o = ours.get(name).cloned().unwrap_or_default();
        let only_t: Vec<_> = t.difference(&o).collect();
        let only_o: Vec<_> = o.difference(t).collect();
        if !only_t.is_empty() || !only_o.is_empty() {
            disagreements.push(format!("{} {name}: only tshark {only_t:?}; only wardline {only_o:?}", file.display()));
        } else {
            println!("agree {} {name}: {} values", file.display(), t.len());
        }
    }
}

fn uid_of(tshark_value: &str) -> String {
    match (tshark_value.rfind('('), tshark_value.ends_with(')')) {
        (Some(open), true) => tshark_value[open + 1..tshark_value.len() - 1].to_string(),
        _ => tshark_value.trim().to_string(),
    }
}

#[test]
fn dicom_matches_tshark() {
    let mut disagreements = Vec::new();
    for file in pcaps_in("dicom") {
        let cols = tshark_fields(
            &file,
            "dicom",
            &[
                "dicom.assoc.ae.called",
                "dicom.assoc.ae.calling",
                "dicom.actx",
                "dicom.pctx.abss.syntax",
                "dicom.userinfo.uid",
                "dicom.userinfo.version",
            ],
        );
        let mut theirs = Sets::new();
        theirs.insert("called_ae", cols[0].iter().map(|v| v.trim().to_string()).collect());
        theirs.insert("calling_ae", cols[1].iter().map(|v| v.trim().to_string()).collect());
        theirs.insert("app_context", cols[2].iter().map(|v| uid_of(v)).collect());
        theirs.insert("abstract_syntax", cols[3].iter().map(|v| uid_of(v)).collect());
        theirs.insert("impl_class_uid", cols[4].iter().map(|v| v.trim().to_string()).collect());
        theirs.insert("impl_version", cols[5].iter().map(|v| v.trim().to_string()).collect());
        assert!(!theirs["calling_ae"].is_empty(), "tshark decoded no association in {}", file.display());
        let msgs = messages(&read_packets(&file), dicom_framing);
        let o = ours(
            &DicomDissector,
            &msgs,
            &[
                ("called_ae", Field::DicomCalledAe),
                ("calling_ae", Field::DicomCallingAe),
                ("app_context", Field::DicomAppContext),
                ("abstract_syntax", Field::DicomAbstractSyntax),
                ("impl_class_uid", Field::DicomImplClassUid),
                ("impl_version", Field::DicomImplVersion),
            ],
        );
        compare(&file, &theirs, &o, &mut disagreements);
    }
    for d in &disagreements {
        println!("DISAGREE {d}");
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements with tshark:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#x0d;", "\r")
        .replace("&amp;", "&")
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = line.find(&key)? + key.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// One HL7 segment as tshark shows it: name and (tshark field number, value).
struct TSeg {
    name: String,
    fields: BTreeMap<usize, String>,
}

/// tshark's HL7 tree from PDML, grouped into messages (a message starts at each MSH).
fn tshark_hl7_messages(file: &Path) -> Vec<Vec<TSeg>> {
    let pdml = tshark(file, &["-Y", "hl7", "-T", "pdml"]);
    let mut msgs: Vec<Vec<TSeg>> = Vec::new();
    for line in pdml.lines() {
        match attr(line, "name") {
            Some("hl7.segment") => {
                let show = attr(line, "showname").unwrap_or("");
                let name = show.split(' ').next().unwrap_or("").to_string();
                if name == "MSH" || msgs.is_empty() {
                    msgs.push(Vec::new());
                }
                msgs.last_mut().unwrap().push(TSeg { name, fields: BTreeMap::new() });
            }
            Some("hl7.field") => {
                let showname = xml_unescape(attr(line, "showname").unwrap_or(""));
                let Some(rest) = showname.strip_prefix("field ") else { continue };
                let Some((n, _)) = rest.split_once(':') else { continue };
                let value = xml_unescape(attr(line, "show").unwrap_or(""));
                if let (Ok(n), Some(seg)) = (n.parse::<usize>(), msgs.last_mut().and_then(|m| m.last_mut())) {
                    seg.fields.insert(n, value);
                }
            }
            _ => {}
        }
    }
    msgs
}

#[test]
fn hl7_matches_tshark() {
    let mut disagreements = Vec::new();
    for file in pcaps_in("hl7") {
        let msgs = messages(&read_packets(&file), hl7_framing);
        let tmsgs = tshark_hl7_messages(&file);
        if tmsgs.is_empty() {
            let unframed = msgs
                .iter()
                .filter_map(|m| hl7::parse(&m.bytes).ok())
                .flat_map(|r| r.messages)
                .all(|m| m.framing == hl7::Framing::Unframed);
            assert!(unframed, "tshark decoded no HL7 in {} although it is MLLP framed", file.display());
            println!(
                "skip {}: unframed HL7 in SYN packets, which tshark's MLLP dissector does not decode",
                file.display()
            );
            continue;
        }
        let mut theirs = Sets::new();
        for key in [
            "sending_app",
            "sending_facility",
            "receiving_app",
            "receiving_facility",
            "message_type",
            "version",
            "device_id",
            "phi_segments",
            "sending_app_universal_id",
            "receiving_app_universal_id",
            "message_type_full",
        ] {
            theirs.insert(key, BTreeSet::new());
        }
        for m in &tmsgs {
            let Some(msh) = m.first().filter(|s| s.name == "MSH") else { continue };
            let comp_sep = msh.fields.get(&2).and_then(|e| e.chars().next()).unwrap_or('^');
            let rep_sep = msh.fields.get(&2).and_then(|e| e.chars().nth(1)).unwrap_or('~');
            let comp = |v: &str, i: usize| {
                v.split(rep_sep).next().unwrap_or("").split(comp_sep).nth(i).unwrap_or("").trim().to_string()
            };
            let mut put = |key: &'static str, v: String| {
                if !v.is_empty() {
                    theirs.get_mut(key).unwrap().insert(v);
                }
            };
            let f = |n: usize| msh.fields.get(&n).cloned().unwrap_or_default();
            put("sending_app", comp(&f(3), 0));
            put("sending_facility", comp(&f(4), 0));
            put("receiving_app", comp(&f(5), 0));
            put("receiving_facility", comp(&f(6), 0));
            let (code, trigger) = (comp(&f(9), 0), comp(&f(9), 1));
            put("message_type", if trigger.is_empty() { code } else { format!("{code}^{trigger}") });
            put("version", comp(&f(12), 0));
            let joined = |v: &str, parts: &[usize]| {
                let c: Vec<String> = parts.iter().map(|&i| comp(v, i)).collect();
                let used = c.iter().rposition(|p| !p.is_empty()).map_or(0, |p| p + 1);
                if c[0].is_empty() {
                    String::new()
                } else {
                    c[..used].join("^")
                }
            };
            put("sending_app_universal_id", joined(&f(3), &[1, 2]));
            put("receiving_app_universal_id", joined(&f(5), &[1, 2]));
            put("message_type_full", joined(&f(9), &[0, 1, 2]));
            if comp(&f(3), 2) == "EUI-64" {
                put("device_id", comp(&f(3), 1));
            }
            let mut phi = 0;
            for seg in &m[1..] {
                if hl7::PHI_SEGMENTS.contains(&seg.name.as_str()) {
                    phi += 1;
                }
                // tshark numbers non-MSH fields one higher than HL7: OBX-18 is its field 19.
                let wanted: &[usize] = match seg.name.as_str() {
                    "OBX" => &[19],
                    "PRT" => &[11, 17],
                    _ => &[],
                };
                for n in wanted {
                    for rep in seg.fields.get(n).map(String::as_str).unwrap_or("").split(rep_sep) {
                        let rep: String = rep.chars().map(|c| if c == comp_sep { '^' } else { c }).collect();
                        if !rep.trim_matches('^').is_empty() {
                            put("device_id", rep.trim().to_string());
                        }
                    }
                }
            }
            if phi > 0 {
                put("phi_segments", phi.to_string());
            }
        }
        let o = ours(
            &Hl7Dissector,
            &msgs,
            &[
                ("sending_app", Field::Hl7SendingApp),
                ("sending_facility", Field::Hl7SendingFacility),
                ("receiving_app", Field::Hl7ReceivingApp),
                ("receiving_facility", Field::Hl7ReceivingFacility),
                ("message_type", Field::Hl7MessageType),
                ("version", Field::Hl7Version),
                ("device_id", Field::Hl7DeviceId),
                ("phi_segments", Field::Hl7PhiSegments),
                ("sending_app_universal_id", Field::Hl7SendingAppUniversalId),
                ("receiving_app_universal_id", Field::Hl7ReceivingAppUniversalId),
                ("message_type_full", Field::Hl7MessageTypeFull),
            ],
        );
        let mut o = o;
        // tshark lists every equipment id; ours are split into the devices' own and relayed ones.
        let relayed = ours(&Hl7Dissector, &msgs, &[("device_id", Field::Hl7RelayedDeviceId)]);
        o.entry("device_id").or_default().extend(relayed.into_values().flatten());
        o.insert("phi_segments", tshark_visible_phi_counts(&msgs));
        compare(&file, &theirs, &o, &mut disagreements);
    }
    for d in &disagreements {
        println!("DISAGREE {d}");
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements with tshark:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

/// Wardline's PHI counts as tshark can see them: tshark 4.0 drops a message's last segment
/// when it is not CR-terminated before the MLLP end block (lab-hl7-adt-orm-rde.pcap ends
/// each message that way; HL7 v2 allows it, the 0x1C ends the segment). Wardline counts that
/// segment; for the comparison, one is subtracted when the dropped segment is PHI-bearing.
fn tshark_visible_phi_counts(msgs: &[Message]) -> BTreeSet<String> {
    let mut counts = BTreeSet::new();
    for m in msgs {
        let Ok(rec) = hl7::parse(&m.bytes) else { continue };
        let bodies: Vec<&[u8]> = m.bytes.split(|&b| b == 0x1C).collect();
        for (i, msg) in rec.messages.iter().enumerate() {
            let body = bodies.get(i).copied().unwrap_or(&[]);
            let last_seg = body.rsplit(|&b| b == b'\r').next().unwrap_or(&[]);
            let hidden = !body.ends_with(b"\r")
                && msg.framing == hl7::Framing::Mllp
                && hl7::PHI_SEGMENTS.iter().any(|p| last_seg.starts_with(p.as_bytes()));
            let visible = msg.phi_segments - u32::from(hidden);
            if visible > 0 {
                counts.insert(visible.to_string());
            }
        }
    }
    counts
}

#[test]
fn smb_matches_tshark() {
    let mut disagreements = Vec::new();
    for file in pcaps_in("smb") {
        let cols =
            tshark_fields(&file, "smb or smb2", &["smb.dialect", "smb2.dialect", "smb.native_os", "smb.native_lanman"]);
        let mut theirs = Sets::new();
        theirs.insert("dialect", cols[0].union(&cols[1]).cloned().collect());
        theirs.insert("native_os", cols[2].clone());
        theirs.insert("native_lanman", cols[3].clone());
        let msgs = messages(&read_packets(&file), smb_framing);
        let o = ours(
            &SmbDissector,
            &msgs,
            &[
                ("dialect", Field::SmbDialect),
                ("native_os", Field::SmbNativeOs),
                ("native_lanman", Field::SmbNativeLanman),
            ],
        );
        compare(&file, &theirs, &o, &mut disagreements);
    }
    for d in &disagreements {
        println!("DISAGREE {d}");
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements with tshark:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}
