//! Telnet (RFC 854/855): server banner and login prompts, option negotiation stripped.
//!
//! Telnet is an exposed cleartext management service. From the server's side we keep the
//! pre-login banner (the text up to and including the login prompt) and note a password
//! prompt, which means credentials cross the wire in cleartext. Client text is never kept:
//! it is what the user types (user names, passwords).

use super::*;
use crate::protocols::TELNET;

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const MAX_OPTIONS: usize = 64;
const MAX_BANNER_CHARS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    FromServer,
    FromClient,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelnetRecord {
    pub direction: Direction,
    /// (command, option) pairs negotiated: WILL 251, WONT 252, DO 253, DONT 254, SB 250.
    pub options: Vec<(u8, u8)>,
    /// Bytes of application text after stripping negotiation (counted for both directions).
    pub text_len: usize,
    /// Server only: pre-login text up to and including a login prompt.
    pub banner: Option<String>,
    pub login_prompt: bool,
    pub password_prompt: bool,
}

/// Split a payload into negotiation commands and plain text (IAC IAC is a literal 0xFF).
pub fn strip_negotiation(payload: &[u8]) -> (Vec<(u8, u8)>, Vec<u8>) {
    let mut options = Vec::new();
    let mut text = Vec::with_capacity(payload.len());
    let mut i = 0;
    while i < payload.len() {
        let b = payload[i];
        if b != IAC {
            text.push(b);
            i += 1;
            continue;
        }
        match payload.get(i + 1) {
            Some(&IAC) => {
                text.push(IAC);
                i += 2;
            }
            Some(&cmd @ 251..=254) => {
                if let (Some(&opt), true) = (payload.get(i + 2), options.len() < MAX_OPTIONS) {
                    options.push((cmd, opt));
                }
                i += 3;
            }
            Some(&SB) => {
                if let (Some(&opt), true) = (payload.get(i + 2), options.len() < MAX_OPTIONS) {
                    options.push((SB, opt));
                }
                // Skip to IAC SE (or the end of the payload if the subnegotiation is cut).
                let body = payload.get(i + 2..).unwrap_or(&[]);
                let end = body.windows(2).position(|w| w == [IAC, SE]).map(|p| p + 2).unwrap_or(body.len());
                i += 2 + end;
            }
            Some(_) => i += 2, // two-byte commands: NOP, GA, AYT, ...
            None => i += 1,
        }
    }
    (options, text)
}

fn is_login_prompt(line: &str) -> bool {
    let l = line.trim_end().to_ascii_lowercase();
    l.ends_with("login:") || l.ends_with("username:") || l.ends_with("user name:") || l.ends_with("user:")
}

fn is_password_prompt(line: &str) -> bool {
    line.trim_end().to_ascii_lowercase().ends_with("password:")
}

/// Lines a server prints after a failed attempt are not part of its identity.
fn is_failure_line(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("incorrect") || l.contains("failed") || l.contains("denied") || l.contains("invalid")
}

/// Parse one Telnet payload; `from_server` comes from the port (the end on 23 is the server).
pub fn parse(payload: &[u8], from_server: bool) -> Result<TelnetRecord, DissectError> {
    if payload.is_empty() {
        return Err(DissectError::truncated(Proto::Telnet, "empty payload"));
    }
    let (options, text) = strip_negotiation(payload);
    let mut rec = TelnetRecord {
        direction: if from_server { Direction::FromServer } else { Direction::FromClient },
        options,
        text_len: text.len(),
        banner: None,
        login_prompt: false,
        password_prompt: false,
    };
    if !from_server {
        return Ok(rec); // client keystrokes: never inspected
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.split(['\r', '\n']).map(str::trim).filter(|l| !l.is_empty()).collect();
    rec.password_prompt = lines.iter().any(|l| is_password_prompt(l));
    if let Some(prompt_at) = lines.iter().position(|l| is_login_prompt(l)) {
        rec.login_prompt = true;
        let banner: Vec<&str> = lines[..=prompt_at].iter().copied().filter(|l| !is_failure_line(l)).collect();
        let mut joined = banner.join(" | ");
        if joined.len() > MAX_BANNER_CHARS {
            let mut cut = MAX_BANNER_CHARS;
            while !joined.is_char_boundary(cut) {
                cut -= 1;
            }
            joined.truncate(cut);
        }
        rec.banner = Some(joined.chars().filter(|c| !c.is_control()).collect());
    }
    Ok(rec)
}

/// Server banner to the server (Src when it sends); a password prompt flags both ends as
/// using a cleartext login.
pub fn findings(rec: &TelnetRecord, _ctx: &PacketCtx, out: &mut Vec<Finding>) {
    if rec.direction != Direction::FromServer {
        return;
    }
    if let Some(b) = &rec.banner {
        out.push(Finding::src(Field::TelnetBanner, b.clone()));
    }
    if rec.password_prompt {
        out.push(Finding::src(Field::CleartextLogin, "telnet"));
        out.push(Finding::dst(Field::CleartextLogin, "telnet"));
    }
}

pub struct TelnetDissector;

impl Dissector for TelnetDissector {
    fn proto(&self) -> Proto {
        Proto::Telnet
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Tcp && !payload.is_empty() && TELNET.claims(ctx)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        let rec = parse(payload, TELNET.has_port(ctx.src_port))?;
        findings(&rec, ctx, out);
        Ok(())
    }
}
