//! FTP control channel (RFC 959): the server's 220 greeting and whether USER/PASS cross in
//! cleartext. Command arguments (user names, passwords) are never kept.

use super::*;
use crate::protocols::FTP;

const MAX_LINES: usize = 64;
const MAX_BANNER_CHARS: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FtpLine {
    /// A server reply: code and text (the text is kept only for 220 greetings).
    Reply { code: u16, text: Option<String> },
    /// A client command verb, upper-cased; the argument is dropped.
    Command { verb: String },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FtpRecord {
    pub lines: Vec<FtpLine>,
}

impl FtpRecord {
    pub fn banner(&self) -> Option<&str> {
        self.lines.iter().find_map(|l| match l {
            FtpLine::Reply { code: 220, text: Some(t) } => Some(t.as_str()),
            _ => None,
        })
    }
    pub fn login_attempt(&self) -> bool {
        self.lines.iter().any(|l| matches!(l, FtpLine::Command { verb } if verb == "USER" || verb == "PASS"))
    }
}

fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(MAX_BANNER_CHARS).collect::<String>().trim().to_string()
}

/// Parse CRLF-separated FTP lines. `from_server` comes from the port (the end on 21 is the server).
pub fn parse(payload: &[u8], from_server: bool) -> Result<FtpRecord, DissectError> {
    let mut rec = FtpRecord::default();
    for raw in payload.split(|&b| b == b'\n').take(MAX_LINES) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        if from_server {
            // "220 text" or "220-text" (first line of a multi-line reply); continuation lines have no code.
            if raw.len() >= 3
                && raw[..3].iter().all(u8::is_ascii_digit)
                && matches!(raw.get(3), None | Some(b' ') | Some(b'-'))
            {
                let code = raw[..3].iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
                let text = (code == 220).then(|| clip(&String::from_utf8_lossy(raw.get(4..).unwrap_or(&[]))));
                rec.lines.push(FtpLine::Reply { code, text });
            }
        } else {
            let verb_len = raw.iter().position(|&b| b == b' ').unwrap_or(raw.len());
            let verb = &raw[..verb_len];
            if (3..=4).contains(&verb.len()) && verb.iter().all(u8::is_ascii_alphabetic) {
                rec.lines.push(FtpLine::Command { verb: String::from_utf8_lossy(verb).to_ascii_uppercase() });
            }
        }
    }
    if rec.lines.is_empty() {
        return Err(DissectError::new(
            Proto::Ftp,
            "not_ftp",
            format!("no FTP {} line in {} bytes", if from_server { "reply" } else { "command" }, payload.len()),
        ));
    }
    Ok(rec)
}

/// The greeting identifies the server (Src of a reply). USER/PASS from the client mark both
/// ends as using a cleartext login.
pub fn findings(rec: &FtpRecord, _ctx: &PacketCtx, out: &mut Vec<Finding>) {
    if let Some(b) = rec.banner() {
        out.push(Finding::src(Field::FtpBanner, b));
    }
    if rec.login_attempt() {
        out.push(Finding::src(Field::CleartextLogin, "ftp"));
        out.push(Finding::dst(Field::CleartextLogin, "ftp"));
    }
}

pub struct FtpDissector;

impl Dissector for FtpDissector {
    fn proto(&self) -> Proto {
        Proto::Ftp
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Tcp && !payload.is_empty() && FTP.claims(ctx)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        let rec = parse(payload, FTP.has_port(ctx.src_port))?;
        findings(&rec, ctx, out);
        Ok(())
    }
}
