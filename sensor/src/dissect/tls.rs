//! TLS handshake metadata from the cleartext start of a TCP stream.
//!
//! [`parse`] takes the bytes of one direction from a record boundary (one or more TLS
//! records; handshake messages may span records) and extracts every ClientHello,
//! ServerHello and plaintext Certificate message before ChangeCipherSpec. From a
//! ClientHello we derive SNI, offered versions, ALPN, JA3 (string and MD5) and JA4
//! (FoxIO spec, `t` prefix: this dissector only sees TLS over TCP). Certificates are
//! only visible up to TLS 1.2 (1.3 encrypts them); we keep subject and issuer CN.
//!
//! Findings describe the sender: ClientHello facts the client (Src), ServerHello and
//! certificate facts the server (Src of that direction).

use super::text::{be16, display};
use super::*;
use md5::{Digest, Md5};

const PROTO: Proto = Proto::Tls;
/// Handshake bytes gathered per payload; a certificate chain fits easily.
const MAX_HANDSHAKE_BYTES: usize = 256 * 1024;
const MAX_LIST: usize = 4096;

const EXT_SNI: u16 = 0x0000;
const EXT_GROUPS: u16 = 0x000a;
const EXT_POINT_FORMATS: u16 = 0x000b;
const EXT_SIG_ALGS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub legacy_version: u16,
    pub ciphers: Vec<u16>,
    /// Extension types in the order sent (GREASE included; fingerprints drop it).
    pub extensions: Vec<u16>,
    pub sni: Option<String>,
    /// ALPN protocol names, raw bytes (JA4 needs the bytes; display via [`alpn_text`]).
    pub alpn: Vec<Vec<u8>>,
    pub supported_versions: Vec<u16>,
    pub groups: Vec<u16>,
    pub point_formats: Vec<u8>,
    pub sig_algs: Vec<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerHello {
    pub legacy_version: u16,
    pub cipher: u16,
    pub extensions: Vec<u16>,
    /// supported_versions extension (TLS 1.3), if sent.
    pub selected_version: Option<u16>,
}

impl ServerHello {
    pub fn version(&self) -> u16 {
        self.selected_version.unwrap_or(self.legacy_version)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertSummary {
    pub subject_cn: Option<String>,
    pub issuer_cn: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsRecord {
    pub client_hellos: Vec<ClientHello>,
    pub server_hellos: Vec<ServerHello>,
    /// Certificate chain as sent, leaf first.
    pub certificates: Vec<CertSummary>,
}

/// GREASE values (RFC 8701): 0x?a?a with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

pub fn version_name(v: u16) -> String {
    match v {
        0x0002 => "SSLv2".into(),
        0x0300 => "SSLv3".into(),
        0x0301 => "TLSv1.0".into(),
        0x0302 => "TLSv1.1".into(),
        0x0303 => "TLSv1.2".into(),
        0x0304 => "TLSv1.3".into(),
        0x7f00..=0x7fff => format!("TLSv1.3-draft-{}", v & 0xff),
        _ => format!("0x{v:04x}"),
    }
}

pub fn alpn_text(a: &[u8]) -> String {
    display(a)
}

fn err(kind: &'static str, detail: impl Into<String>) -> DissectError {
    DissectError::new(PROTO, kind, detail)
}

/// Does the payload start with a TLS handshake record header?
pub fn looks_like_tls(payload: &[u8]) -> bool {
    payload.len() >= 6 && payload[0] == 22 && payload[1] == 3 && payload[2] <= 4 && (1..=4).contains(&payload[5])
}

/// Parse the cleartext handshake at the start of one direction of a TLS stream.
pub fn parse(payload: &[u8]) -> Result<TlsRecord, DissectError> {
    let mut hs: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut records = 0;
    let mut after_ccs = false;
    while pos + 5 <= payload.len() {
        let ct = payload[pos];
        if !(20..=24).contains(&ct) || payload[pos + 1] != 3 {
            if records == 0 {
                return Err(err(
                    "not_tls",
                    format!("no TLS record header at the start (bytes {})", hex::encode(&payload[..5])),
                ));
            }
            break;
        }
        let len = be16(payload, pos + 3).unwrap_or(0) as usize;
        let end = (pos + 5 + len).min(payload.len());
        records += 1;
        match ct {
            23 => break,
            // After ChangeCipherSpec handshake records are encrypted, except the second
            // ClientHello a TLS 1.3 client sends after a HelloRetryRequest (its CCS is
            // only for middlebox compatibility).
            20 => after_ccs = true,
            22 if after_ccs => {
                let rec = &payload[pos + 5..end];
                let hs_len = rec.get(1..4).map(|b| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize);
                if rec.first() == Some(&1)
                    && hs_len == Some(len.saturating_sub(4))
                    && hs.len() + rec.len() <= MAX_HANDSHAKE_BYTES
                {
                    hs.extend_from_slice(rec);
                } else {
                    break;
                }
            }
            22 => {
                let take = (end - (pos + 5)).min(MAX_HANDSHAKE_BYTES.saturating_sub(hs.len()));
                hs.extend_from_slice(&payload[pos + 5..pos + 5 + take]);
            }
            _ => {}
        }
        pos += 5 + len;
    }
    if records == 0 {
        return Err(DissectError::truncated(PROTO, format!("{} bytes cannot hold a TLS record header", payload.len())));
    }
    let mut rec = TlsRecord::default();
    let mut p = 0;
    let mut cut_short = None;
    while p + 4 <= hs.len() {
        let ty = hs[p];
        let len = ((hs[p + 1] as usize) << 16) | ((hs[p + 2] as usize) << 8) | hs[p + 3] as usize;
        let Some(body) = hs.get(p + 4..p + 4 + len) else {
            cut_short = Some(format!("handshake message type {ty} says {len} bytes, {} present", hs.len() - p - 4));
            break;
        };
        match ty {
            1 => rec.client_hellos.push(parse_client_hello(body)?),
            2 => rec.server_hellos.push(parse_server_hello(body)?),
            11 => rec.certificates.extend(parse_certificates(body)?),
            _ => {}
        }
        p += 4 + len;
    }
    if rec.client_hellos.is_empty() && rec.server_hellos.is_empty() && rec.certificates.is_empty() {
        if let Some(detail) = cut_short {
            return Err(DissectError::truncated(PROTO, detail));
        }
    }
    Ok(rec)
}

/// Cursor with bounds-checked reads that name the field on failure.
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DissectError> {
        let s = self.b.get(self.p..self.p + n).ok_or_else(|| {
            DissectError::truncated(
                PROTO,
                format!("{what}: need {n} bytes at offset {}, have {}", self.p, self.b.len().saturating_sub(self.p)),
            )
        })?;
        self.p += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DissectError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DissectError> {
        let s = self.take(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn vec8(&mut self, what: &str) -> Result<&'a [u8], DissectError> {
        let n = self.u8(what)? as usize;
        self.take(n, what)
    }
    fn vec16(&mut self, what: &str) -> Result<&'a [u8], DissectError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    fn rest(&self) -> usize {
        self.b.len().saturating_sub(self.p)
    }
}

fn u16_list(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2).take(MAX_LIST).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()
}

fn parse_client_hello(body: &[u8]) -> Result<ClientHello, DissectError> {
    let mut c = Cur { b: body, p: 0 };
    let mut ch = ClientHello { legacy_version: c.u16("client version")?, ..Default::default() };
    c.take(32, "client random")?;
    c.vec8("session id")?;
    ch.ciphers = u16_list(c.vec16("cipher suites")?);
    c.vec8("compression methods")?;
    if c.rest() == 0 {
        return Ok(ch);
    }
    let exts = c.vec16("extensions")?;
    let mut e = Cur { b: exts, p: 0 };
    while e.rest() > 0 {
        let ty = e.u16("extension type")?;
        let data = e.vec16("extension data")?;
        if ch.extensions.len() < MAX_LIST {
            ch.extensions.push(ty);
        }
        let mut d = Cur { b: data, p: 0 };
        match ty {
            EXT_SNI => {
                let list = d.vec16("server name list")?;
                let mut l = Cur { b: list, p: 0 };
                while l.rest() > 0 {
                    let kind = l.u8("server name type")?;
                    let name = l.vec16("server name")?;
                    if kind == 0 && ch.sni.is_none() {
                        ch.sni = Some(display(name));
                    }
                }
            }
            EXT_GROUPS => ch.groups = u16_list(d.vec16("supported groups")?),
            EXT_POINT_FORMATS => ch.point_formats = d.vec8("ec point formats")?.to_vec(),
            EXT_SIG_ALGS => ch.sig_algs = u16_list(d.vec16("signature algorithms")?),
            EXT_ALPN => {
                let list = d.vec16("alpn list")?;
                let mut l = Cur { b: list, p: 0 };
                while l.rest() > 0 && ch.alpn.len() < 64 {
                    ch.alpn.push(l.vec8("alpn protocol")?.to_vec());
                }
            }
            EXT_SUPPORTED_VERSIONS => ch.supported_versions = u16_list(d.vec8("supported versions")?),
            _ => {}
        }
    }
    Ok(ch)
}

fn parse_server_hello(body: &[u8]) -> Result<ServerHello, DissectError> {
    let mut c = Cur { b: body, p: 0 };
    let mut sh = ServerHello { legacy_version: c.u16("server version")?, ..Default::default() };
    c.take(32, "server random")?;
    c.vec8("session id")?;
    sh.cipher = c.u16("cipher suite")?;
    c.u8("compression method")?;
    if c.rest() == 0 {
        return Ok(sh);
    }
    let exts = c.vec16("extensions")?;
    let mut e = Cur { b: exts, p: 0 };
    while e.rest() > 0 {
        let ty = e.u16("extension type")?;
        let data = e.vec16("extension data")?;
        sh.extensions.push(ty);
        if ty == EXT_SUPPORTED_VERSIONS && data.len() == 2 {
            sh.selected_version = be16(data, 0);
        }
    }
    Ok(sh)
}

fn parse_certificates(body: &[u8]) -> Result<Vec<CertSummary>, DissectError> {
    let mut c = Cur { b: body, p: 0 };
    let len = {
        let s = c.take(3, "certificate list length")?;
        ((s[0] as usize) << 16) | ((s[1] as usize) << 8) | s[2] as usize
    };
    let list = c.take(len, "certificate list")?;
    let mut l = Cur { b: list, p: 0 };
    let mut out = Vec::new();
    while l.rest() >= 3 && out.len() < 32 {
        let s = l.take(3, "certificate length")?;
        let n = ((s[0] as usize) << 16) | ((s[1] as usize) << 8) | s[2] as usize;
        let der = l.take(n, "certificate")?;
        // A certificate x509-parser rejects is still a certificate: keep an empty summary.
        let summary = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => CertSummary { subject_cn: cn(cert.subject()), issuer_cn: cn(cert.issuer()) },
            Err(_) => CertSummary::default(),
        };
        out.push(summary);
    }
    Ok(out)
}

fn cn(name: &x509_parser::x509::X509Name) -> Option<String> {
    name.iter_common_name().next().and_then(|a| a.as_str().ok()).map(|s| display(s.as_bytes()))
}

/// Append the decimal values of `v` joined by '-' (JA3's list format).
fn push_dashed<T: Into<u64>>(out: &mut String, v: impl Iterator<Item = T>) {
    for (i, x) in v.enumerate() {
        if i > 0 {
            out.push('-');
        }
        crate::digits::push_decimal(out, x.into());
    }
}

/// Append `v` as 4-digit lowercase hex joined by ',' (JA4's list format).
fn push_hex4(out: &mut String, v: &[u16]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for shift in [12, 8, 4, 0] {
            out.push(HEX[(x >> shift) as usize & 0xf] as char);
        }
    }
}

/// JA4's two-character code of a TLS/DTLS version.
fn ja4_version(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// Append `n` (< 100) as two digits.
fn push_2digits(out: &mut String, n: usize) {
    let n = n.min(99);
    out.push((b'0' + (n / 10) as u8) as char);
    out.push((b'0' + (n % 10) as u8) as char);
}

impl ClientHello {
    /// Highest offered version: supported_versions if present, else the legacy field.
    pub fn max_version(&self) -> u16 {
        self.supported_versions.iter().copied().filter(|v| !is_grease(*v)).max().unwrap_or(self.legacy_version)
    }

    /// JA3 string: version,ciphers,extensions,groups,point formats (GREASE removed).
    // Built by hand: one per ClientHello, and the formatter allocated a String per number.
    pub fn ja3_string(&self) -> String {
        let mut s = String::with_capacity(8 + 6 * (self.ciphers.len() + self.extensions.len() + self.groups.len()));
        crate::digits::push_decimal(&mut s, self.legacy_version.into());
        s.push(',');
        push_dashed(&mut s, self.ciphers.iter().copied().filter(|v| !is_grease(*v)));
        s.push(',');
        push_dashed(&mut s, self.extensions.iter().copied().filter(|v| !is_grease(*v)));
        s.push(',');
        push_dashed(&mut s, self.groups.iter().copied().filter(|v| !is_grease(*v)));
        s.push(',');
        push_dashed(&mut s, self.point_formats.iter().copied());
        s
    }

    pub fn ja3_hash(&self) -> String {
        hex::encode(Md5::digest(self.ja3_string().as_bytes()))
    }

    /// JA4 fingerprint (a_b_c) with the `t` (TCP) transport prefix: the sensor parses
    /// ClientHellos from TCP streams only (QUIC Initials are encrypted and not decoded).
    pub fn ja4(&self) -> String {
        let version = ja4_version(self.max_version());
        let mut ciphers: Vec<u16> = self.ciphers.iter().copied().filter(|v| !is_grease(*v)).collect();
        let exts: Vec<u16> = self.extensions.iter().copied().filter(|v| !is_grease(*v)).collect();
        let mut out = String::with_capacity(36);
        out.push('t');
        out.push_str(version);
        out.push(if self.sni.is_some() { 'd' } else { 'i' });
        push_2digits(&mut out, ciphers.len());
        push_2digits(&mut out, exts.len());
        match self.alpn.first().filter(|a| !a.is_empty()) {
            None => out.push_str("00"),
            Some(a) => {
                let (first, last) = (a[0], a[a.len() - 1]);
                if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
                    out.push(first as char);
                    out.push(last as char);
                } else {
                    // First hex digit of the first byte, last hex digit of the last byte.
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.push(HEX[(first >> 4) as usize] as char);
                    out.push(HEX[(last & 0xf) as usize] as char);
                }
            }
        }
        out.push('_');
        let mut list = String::with_capacity(5 * (ciphers.len() + exts.len() + self.sig_algs.len()) + 1);
        ciphers.sort_unstable();
        if ciphers.is_empty() {
            out.push_str("000000000000");
        } else {
            push_hex4(&mut list, &ciphers);
            push_sha12(&mut out, &list);
        }
        out.push('_');
        let mut sorted_e: Vec<u16> = exts.into_iter().filter(|e| *e != EXT_SNI && *e != EXT_ALPN).collect();
        sorted_e.sort_unstable();
        let sigs: Vec<u16> = self.sig_algs.iter().copied().filter(|v| !is_grease(*v)).collect();
        if sorted_e.is_empty() {
            out.push_str("000000000000");
        } else {
            list.clear();
            push_hex4(&mut list, &sorted_e);
            if !sigs.is_empty() {
                list.push('_');
                push_hex4(&mut list, &sigs);
            }
            push_sha12(&mut out, &list);
        }
        out
    }
}

/// Append the first 12 hex digits of SHA-256(`s`).
fn push_sha12(out: &mut String, s: &str) {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    out.push_str(&hex::encode(&d.as_ref()[..6]));
}

pub fn findings(rec: &TlsRecord, out: &mut Vec<Finding>) {
    for ch in &rec.client_hellos {
        if let Some(sni) = ch.sni.as_ref().filter(|s| !s.is_empty()) {
            out.push(Finding::src(Field::TlsSni, sni.clone()));
        }
        out.push(Finding::src(Field::TlsVersion, version_name(ch.max_version())));
        if !ch.alpn.is_empty() {
            out.push(Finding::src(Field::TlsAlpn, ch.alpn.iter().map(|a| alpn_text(a)).collect::<Vec<_>>().join(",")));
        }
        out.push(Finding::src(Field::Ja3, ch.ja3_hash()));
        out.push(Finding::src(Field::Ja4, ch.ja4()));
    }
    for sh in &rec.server_hellos {
        out.push(Finding::src(Field::TlsServerVersion, version_name(sh.version())));
    }
    if let Some(leaf) = rec.certificates.first() {
        if let Some(s) = &leaf.subject_cn {
            out.push(Finding::src(Field::TlsCertSubject, s.clone()));
        }
        if let Some(i) = &leaf.issuer_cn {
            out.push(Finding::src(Field::TlsCertIssuer, i.clone()));
        }
    }
}

pub struct TlsDissector;

impl Dissector for TlsDissector {
    fn proto(&self) -> Proto {
        Proto::Tls
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Tcp && looks_like_tls(payload)
    }
    fn dissect(&self, _ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        findings(&parse(payload)?, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grease_detection() {
        assert!(is_grease(0x0a0a));
        assert!(is_grease(0xfafa));
        assert!(!is_grease(0x0a1a));
        assert!(!is_grease(0x1301));
    }

    /// The formatter-based JA3/JA4 this module used before the hand-built strings: the
    /// oracle for `builders_match_the_formatter_versions`.
    fn ja3_string_fmt(ch: &ClientHello) -> String {
        let dash_join = |v: Vec<String>| v.join("-");
        let dec = |v: &[u16]| v.iter().filter(|x| !is_grease(**x)).map(|x| x.to_string()).collect::<Vec<_>>();
        format!(
            "{},{},{},{},{}",
            ch.legacy_version,
            dash_join(dec(&ch.ciphers)),
            dash_join(dec(&ch.extensions)),
            dash_join(dec(&ch.groups)),
            dash_join(ch.point_formats.iter().map(|x| x.to_string()).collect()),
        )
    }

    fn ja4_fmt(ch: &ClientHello) -> String {
        let sha12 = |s: &str| hex::encode(&ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref()[..6]);
        let version = ja4_version(ch.max_version());
        let ciphers: Vec<u16> = ch.ciphers.iter().copied().filter(|v| !is_grease(*v)).collect();
        let exts: Vec<u16> = ch.extensions.iter().copied().filter(|v| !is_grease(*v)).collect();
        let alpn = match ch.alpn.first().filter(|a| !a.is_empty()) {
            None => "00".to_string(),
            Some(a) => {
                let (first, last) = (a[0], a[a.len() - 1]);
                if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
                    format!("{}{}", first as char, last as char)
                } else {
                    let h = hex::encode(a);
                    format!("{}{}", &h[..1], &h[h.len() - 1..])
                }
            }
        };
        let a = format!(
            "t{}{}{:02}{:02}{}",
            version,
            if ch.sni.is_some() { 'd' } else { 'i' },
            ciphers.len().min(99),
            exts.len().min(99),
            alpn
        );
        let hex4 = |v: &[u16]| v.iter().map(|x| format!("{x:04x}")).collect::<Vec<_>>().join(",");
        let mut sorted_c = ciphers.clone();
        sorted_c.sort_unstable();
        let b = if sorted_c.is_empty() { "000000000000".to_string() } else { sha12(&hex4(&sorted_c)) };
        let mut sorted_e: Vec<u16> = exts.iter().copied().filter(|e| *e != EXT_SNI && *e != EXT_ALPN).collect();
        sorted_e.sort_unstable();
        let sigs: Vec<u16> = ch.sig_algs.iter().copied().filter(|v| !is_grease(*v)).collect();
        let c = if sorted_e.is_empty() {
            "000000000000".to_string()
        } else if sigs.is_empty() {
            sha12(&hex4(&sorted_e))
        } else {
            sha12(&format!("{}_{}", hex4(&sorted_e), hex4(&sigs)))
        };
        format!("{a}_{b}_{c}")
    }

    proptest::proptest! {
        #[test]
        fn builders_match_the_formatter_versions(
            legacy_version in proptest::prelude::any::<u16>(),
            // Values near GREASE and the SNI/ALPN extension numbers come up often.
            ciphers in proptest::collection::vec(proptest::prop_oneof![proptest::prelude::any::<u16>(), 0u16..20, proptest::prelude::Just(0x0a0a)], 0..120),
            extensions in proptest::collection::vec(proptest::prop_oneof![proptest::prelude::any::<u16>(), 0u16..20, proptest::prelude::Just(0xfafa)], 0..120),
            groups in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..8),
            point_formats in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4),
            sig_algs in proptest::collection::vec(proptest::prop_oneof![proptest::prelude::any::<u16>(), proptest::prelude::Just(0x1a1a)], 0..12),
            supported_versions in proptest::collection::vec(proptest::prop_oneof![0x0300u16..0x0305, 0xfefcu16..0xff00, proptest::prelude::any::<u16>()], 0..4),
            alpn in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6), 0..3),
            sni in proptest::option::of("[a-z.]{0,12}"),
        ) {
            let ch = ClientHello { legacy_version, ciphers, extensions, sni, alpn, supported_versions, groups, point_formats, sig_algs };
            proptest::prop_assert_eq!(ch.ja3_string(), ja3_string_fmt(&ch));
            proptest::prop_assert_eq!(ch.ja4(), ja4_fmt(&ch));
        }
    }

    #[test]
    fn not_tls_is_error() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n").unwrap_err().kind, "not_tls");
        assert_eq!(parse(b"\x16\x03").unwrap_err().kind, "truncated");
    }
}
