//! Palo Alto Networks PAN-OS: no rulebase is generated (the security rules reference the
//! objects below and are written once by the operator); what changes with the policy is
//! the membership of each group, delivered two ways:
//!
//! - an external dynamic list per group (`edl/<group>.txt`: one address per line, the
//!   policy stamp as the line's comment), which the aggregator serves at a stable URL for
//!   an EDL object of type IP List;
//! - a User-ID XML API message registering every address with the tag
//!   `wardline-<group>` (`userid-register.xml`), which feeds dynamic address groups whose
//!   match criterion is that tag. [`userid_update`] produces the message that moves a
//!   firewall from one policy version to the next: `unregister` for every (address, tag)
//!   pair that disappeared, `register` for every new one.
//!
//! The message format is the `uid-message` of the PAN-OS User-ID API
//! (`type=user-id&cmd=<uid-message>…`).

use super::{ExportFile, Exporter};
use crate::error::ExportError;
use crate::model::ResolvedPolicy;
use crate::names::{NameRule, NameTable};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

pub struct PaloAlto;

const TARGET: &str = "PAN-OS";
/// Tags allow letters, digits, space, `-`, `_` and `.`, up to 127 characters.
const TAGS: NameRule = NameRule {
    target: TARGET,
    max_len: 127,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
    replacement: '_',
    prefix: "wardline-",
};
/// EDL object names are limited to 32 characters; the list's file name matches so the
/// operator can name the object after its URL.
const EDLS: NameRule = NameRule {
    target: TARGET,
    max_len: 32,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
    replacement: '_',
    prefix: "wl-",
};
/// PAN-OS accepts at most 32 tags per registered address.
const MAX_TAGS_PER_IP: usize = 32;

impl Exporter for PaloAlto {
    fn name(&self) -> &'static str {
        "paloalto"
    }
    fn file_name(&self) -> &'static str {
        "userid-register.xml"
    }
    fn render(&self, policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        let p = policy.canonical()?;
        let tags = tag_map(&p)?;
        Ok(uid_message(&p.stamp_plain(), &BTreeMap::new(), &tags).into_bytes())
    }
    fn render_all(&self, policy: &ResolvedPolicy) -> Result<Vec<ExportFile>, ExportError> {
        let p = policy.canonical()?;
        let mut files = vec![ExportFile { path: self.file_name().into(), bytes: self.render(&p)? }];
        let mut names = NameTable::new(EDLS);
        for g in &p.groups {
            let name = names.name(&g.name)?;
            let mut text = String::new();
            for a in g.addresses() {
                // The comment must share the entry's line (EDL format: `<ip> <comment>`).
                writeln!(text, "{a} #{} group {}", p.stamp_plain(), g.name.replace(char::is_whitespace, "_")).unwrap();
            }
            files.push(ExportFile { path: format!("edl/{name}.txt"), bytes: text.into_bytes() });
        }
        Ok(files)
    }
}

/// The User-ID message that moves a firewall's registered tags from `old` to `new`.
pub fn userid_update(old: &ResolvedPolicy, new: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
    let (o, n) = (old.canonical()?, new.canonical()?);
    let (before, after) = (tag_map(&o)?, tag_map(&n)?);
    let diff = |a: &BTreeMap<IpAddr, BTreeSet<String>>, b: &BTreeMap<IpAddr, BTreeSet<String>>| {
        let mut out: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        for (ip, tags) in a {
            let gone: BTreeSet<String> = tags.difference(b.get(ip).unwrap_or(&BTreeSet::new())).cloned().collect();
            if !gone.is_empty() {
                out.insert(*ip, gone);
            }
        }
        out
    };
    let stamp = format!("{} (from {} version {})", n.stamp_plain(), o.name, o.version);
    Ok(uid_message(&stamp, &diff(&before, &after), &diff(&after, &before)).into_bytes())
}

/// Address -> tags of the groups it belongs to.
fn tag_map(p: &ResolvedPolicy) -> Result<BTreeMap<IpAddr, BTreeSet<String>>, ExportError> {
    let mut names = NameTable::new(TAGS);
    let mut out: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    for g in &p.groups {
        let tag = names.name(&g.name)?;
        for a in g.addresses() {
            let tags = out.entry(a).or_default();
            tags.insert(tag.clone());
            if tags.len() > MAX_TAGS_PER_IP {
                return Err(ExportError::unsupported(
                    TARGET,
                    format!("address {a} in more than {MAX_TAGS_PER_IP} groups (tags per registered address)"),
                ));
            }
        }
    }
    Ok(out)
}

fn uid_message(
    stamp: &str,
    unregister: &BTreeMap<IpAddr, BTreeSet<String>>,
    register: &BTreeMap<IpAddr, BTreeSet<String>>,
) -> String {
    let mut o = String::new();
    writeln!(o, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>").unwrap();
    // "--" may not appear inside an XML comment.
    writeln!(o, "<!-- {} -->", stamp.replace("--", "- -")).unwrap();
    writeln!(o, "<uid-message>").unwrap();
    writeln!(o, "  <type>update</type>").unwrap();
    writeln!(o, "  <payload>").unwrap();
    for (verb, entries, persistent) in [("unregister", unregister, false), ("register", register, true)] {
        if entries.is_empty() {
            continue;
        }
        writeln!(o, "    <{verb}>").unwrap();
        for (ip, tags) in entries {
            // Persistent registrations survive a firewall reboot.
            let attr = if persistent { " persistent=\"1\"" } else { "" };
            writeln!(o, "      <entry ip=\"{ip}\"{attr}>").unwrap();
            writeln!(o, "        <tag>").unwrap();
            for t in tags {
                writeln!(o, "          <member>{t}</member>").unwrap();
            }
            writeln!(o, "        </tag>").unwrap();
            writeln!(o, "      </entry>").unwrap();
        }
        writeln!(o, "    </{verb}>").unwrap();
    }
    writeln!(o, "  </payload>").unwrap();
    writeln!(o, "</uid-message>").unwrap();
    o
}
