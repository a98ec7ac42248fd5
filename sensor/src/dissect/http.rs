//! HTTP/1.x request and response heads.
//!
//! A request tells us about the client (User-Agent → Src) and names the server (Host →
//! Dst); a response tells us about the server (Server → Src). An `Authorization: Basic`
//! header means a password crossed the wire in cleartext: we record only that it was
//! present (`HttpBasicAuth = "present"` on both ends), never the credential.
//!
//! [`parse`] reads one message head; [`parse_stream`] walks a reassembled TCP direction
//! message by message using Content-Length / chunked framing.

use super::text::display;
use super::*;

const PROTO: Proto = Proto::Http;
/// Heads larger than this are not HTTP we want to keep (and bound the work per message).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header lines kept per message.
const MAX_HEADERS: usize = 256;

pub const METHODS: &[&str] = &[
    "GET",
    "POST",
    "HEAD",
    "PUT",
    "DELETE",
    "OPTIONS",
    "TRACE",
    "CONNECT",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "NOTIFY",
    "M-SEARCH",
    "REPORT",
    "SEARCH",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, target: String, version: String },
    Response { version: String, status: u16, reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRecord {
    pub start: StartLine,
    /// Header names as sent, values with folded continuation lines joined by one space.
    pub headers: Vec<(String, String)>,
    /// Bytes of the head including the blank line, or None when the head was cut short.
    pub head_len: Option<usize>,
}

impl HttpRecord {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// `Authorization` (or `Proxy-Authorization`) uses the Basic scheme.
    pub fn basic_auth_present(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            (n.eq_ignore_ascii_case("authorization") || n.eq_ignore_ascii_case("proxy-authorization"))
                && v.trim_start().get(..6).is_some_and(|s| s.eq_ignore_ascii_case("basic "))
        })
    }
}

/// Does the payload start like an HTTP/1.x request or response?
pub fn looks_like_http(payload: &[u8]) -> bool {
    // Asked of every TCP payload that no other dissector took: most are binary, and the
    // first byte rules them out before any method name is compared.
    let Some(&first) = payload.first() else { return false };
    if !first.is_ascii_uppercase() {
        return false;
    }
    if payload.starts_with(b"HTTP/1.") {
        return true;
    }
    METHODS.iter().any(|m| {
        m.as_bytes()[0] == first
            && payload.len() > m.len()
            && payload.starts_with(m.as_bytes())
            && payload[m.len()] == b' '
    })
}

/// Parse the start line and headers of one message (HTTP over TCP, or SSDP over UDP).
pub fn parse(payload: &[u8]) -> Result<HttpRecord, DissectError> {
    parse_with(payload, PROTO)
}

pub(crate) fn parse_with(payload: &[u8], proto: Proto) -> Result<HttpRecord, DissectError> {
    let window = &payload[..payload.len().min(MAX_HEAD_BYTES)];
    let mut lines = Lines { buf: window, pos: 0 };
    let first = lines.next().ok_or_else(|| DissectError::truncated(proto, "no complete start line"))?;
    let first =
        std::str::from_utf8(first).map_err(|_| DissectError::new(proto, "not_text", "start line is not UTF-8"))?;
    let start = parse_start(first).ok_or_else(|| {
        DissectError::new(
            proto,
            "bad_start_line",
            format!("not an HTTP/1.x start line: {:?}", display(first.as_bytes())),
        )
    })?;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut head_len = None;
    while let Some(line) = lines.next() {
        if line.is_empty() {
            head_len = Some(lines.pos);
            break;
        }
        if (line[0] == b' ' || line[0] == b'\t') && !headers.is_empty() {
            // obs-fold: continuation of the previous header value.
            if let Some(last) = headers.last_mut() {
                let more = display(line);
                let more = more.trim();
                if !more.is_empty() {
                    last.1.push(' ');
                    last.1.push_str(more);
                }
            }
            continue;
        }
        if headers.len() >= MAX_HEADERS {
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = display(&line[..colon]).trim().to_string();
            let value = display(&line[colon + 1..]).trim().to_string();
            headers.push((name, value));
        }
    }
    if head_len.is_none() && payload.len() > MAX_HEAD_BYTES {
        return Err(DissectError::new(
            proto,
            "head_too_large",
            format!("no end of headers within {MAX_HEAD_BYTES} bytes"),
        ));
    }
    Ok(HttpRecord { start, headers, head_len })
}

/// Splits on LF, dropping a CR before it; a final line without LF is not returned
/// (it may be cut short).
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.buf.get(self.pos..)?;
        let nl = rest.iter().position(|&b| b == b'\n')?;
        self.pos += nl + 1;
        let line = &rest[..nl];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

fn parse_start(line: &str) -> Option<StartLine> {
    if let Some(rest) = line.strip_prefix("HTTP/") {
        let mut it = rest.splitn(3, ' ');
        let version = format!("HTTP/{}", it.next()?);
        let status: u16 = it.next()?.trim().parse().ok()?;
        let reason = it.next().unwrap_or("").trim().to_string();
        return Some(StartLine::Response { version, status, reason });
    }
    let mut it = line.splitn(3, ' ');
    let method = it.next()?;
    if !METHODS.contains(&method) {
        return None;
    }
    let target = it.next()?.to_string();
    let version = it.next()?.trim();
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    Some(StartLine::Request { method: method.to_string(), target, version: version.to_string() })
}

/// Walk a reassembled TCP direction: every message head in order. Stops at the first
/// message whose body length cannot be known (read-until-close) or that is cut short.
pub fn parse_stream(stream: &[u8]) -> Vec<Result<HttpRecord, DissectError>> {
    let mut out = Vec::new();
    let mut pos = 0;
    // A stream cannot hold more messages than it has head bytes; cap anyway.
    while pos < stream.len() && out.len() < 10_000 {
        let rest = &stream[pos..];
        if !looks_like_http(rest) {
            break;
        }
        let rec = match parse(rest) {
            Ok(r) => r,
            Err(e) => {
                out.push(Err(e));
                break;
            }
        };
        let Some(head_len) = rec.head_len else {
            out.push(Ok(rec));
            break;
        };
        let body = body_len(&rec, &rest[head_len..]);
        out.push(Ok(rec));
        match body {
            Some(n) => pos += head_len + n,
            None => break,
        }
    }
    out
}

/// Length of the body that follows a head, if the framing says so.
fn body_len(rec: &HttpRecord, after: &[u8]) -> Option<usize> {
    if let StartLine::Response { status, .. } = rec.start {
        if status < 200 || status == 204 || status == 304 {
            return Some(0);
        }
    }
    if rec.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return chunked_len(after);
    }
    if let Some(cl) = rec.header("content-length") {
        return cl.trim().parse::<usize>().ok();
    }
    if rec.is_request() {
        return Some(0);
    }
    None
}

fn chunked_len(b: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let nl = b.get(pos..)?.iter().position(|&c| c == b'\n')?;
        let line = std::str::from_utf8(&b[pos..pos + nl]).ok()?;
        let size_hex = line.trim().split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        pos += nl + 1;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                let nl = b.get(pos..)?.iter().position(|&c| c == b'\n')?;
                let empty = b[pos..pos + nl].iter().all(|&c| c == b'\r');
                pos += nl + 1;
                if empty {
                    return Some(pos);
                }
            }
        }
        pos = pos.checked_add(size)?.checked_add(2)?;
        if pos > b.len() {
            return None;
        }
    }
}

pub fn findings(rec: &HttpRecord, out: &mut Vec<Finding>) {
    match &rec.start {
        StartLine::Request { .. } => {
            if let Some(ua) = rec.header("user-agent").filter(|v| !v.is_empty()) {
                out.push(Finding::src(Field::HttpUserAgent, ua));
            }
            if let Some(host) = rec.header("host").filter(|v| !v.is_empty()) {
                out.push(Finding::dst(Field::HttpHost, host));
            }
            if rec.basic_auth_present() {
                out.push(Finding::src(Field::HttpBasicAuth, "present"));
                out.push(Finding::dst(Field::HttpBasicAuth, "present"));
            }
        }
        StartLine::Response { .. } => {
            if let Some(server) = rec.header("server").filter(|v| !v.is_empty()) {
                out.push(Finding::src(Field::HttpServer, server));
            }
        }
    }
}

pub struct HttpDissector;

impl Dissector for HttpDissector {
    fn proto(&self) -> Proto {
        Proto::Http
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Tcp && looks_like_http(payload)
    }
    fn dissect(&self, _ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        for rec in parse_stream(payload) {
            findings(&rec?, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_flagged_without_credential() {
        let req =
            b"GET / HTTP/1.1\r\nHost: pump.local\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\nUser-Agent: x/1\r\n\r\n";
        let rec = parse(req).unwrap();
        let mut out = Vec::new();
        findings(&rec, &mut out);
        assert!(out.contains(&Finding::src(Field::HttpBasicAuth, "present")));
        assert!(out.iter().all(|f| !f.value.contains("YWRt")));
        assert!(out.contains(&Finding::dst(Field::HttpHost, "pump.local")));
    }

    #[test]
    fn folded_header_joined_and_stream_split() {
        let s = b"HTTP/1.1 200 OK\r\nServer: a\r\n b\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 304 Not Modified\r\nServer: c\r\n\r\n";
        let recs: Vec<_> = parse_stream(s).into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].header("server"), Some("a b"));
        assert_eq!(recs[1].header("Server"), Some("c"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"\x16\x03\x01 hello\r\n\r\n").is_err());
        assert!(parse(b"GET").is_err());
        assert!(parse(b"GET").unwrap_err().to_string().contains("http"));
    }
}
