//! SSH identification banners ("SSH-2.0-OpenSSH_9.2p1 Debian-2"), sent in cleartext by both
//! client and server before key exchange (RFC 4253 §4.2). The banner names the
//! implementation and often the OS build, so it is evidence about whichever end sent it.

use super::text::display;
use super::*;

const PROTO: Proto = Proto::Ssh;
/// RFC 4253 caps the identification line at 255 bytes including CR LF.
const MAX_BANNER: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshRecord {
    /// The whole identification line without CR LF.
    pub banner: String,
    /// "2.0", "1.99", "1.5".
    pub proto_version: String,
    pub software: String,
    pub comments: Option<String>,
}

pub fn parse(payload: &[u8]) -> Result<SshRecord, DissectError> {
    if !payload.starts_with(b"SSH-") {
        return Err(DissectError::new(PROTO, "not_banner", "payload does not start with \"SSH-\""));
    }
    let window = &payload[..payload.len().min(MAX_BANNER)];
    let end = window.iter().position(|&b| b == b'\n').ok_or_else(|| {
        DissectError::truncated(PROTO, format!("no line end within {MAX_BANNER} bytes of the banner"))
    })?;
    let line = &window[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let banner = display(line);
    let rest = &banner[4..];
    let (proto_version, after) = rest
        .split_once('-')
        .ok_or_else(|| DissectError::new(PROTO, "bad_banner", format!("no software version in {banner:?}")))?;
    let (software, comments) = match after.split_once(' ') {
        Some((s, c)) => (s.to_string(), Some(c.to_string())),
        None => (after.to_string(), None),
    };
    Ok(SshRecord { proto_version: proto_version.to_string(), software, comments, banner })
}

pub fn findings(rec: &SshRecord, out: &mut Vec<Finding>) {
    out.push(Finding::src(Field::SshBanner, rec.banner.clone()));
}

pub struct SshDissector;

impl Dissector for SshDissector {
    fn proto(&self) -> Proto {
        Proto::Ssh
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Tcp && payload.starts_with(b"SSH-")
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
    fn splits_banner() {
        let r = parse(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n\0\0").unwrap();
        assert_eq!(r.banner, "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6");
        assert_eq!(r.proto_version, "2.0");
        assert_eq!(r.software, "OpenSSH_9.2p1");
        assert_eq!(r.comments.as_deref(), Some("Debian-2+deb12u6"));
        assert_eq!(parse(b"SSH-2.0-cut").unwrap_err().kind, "truncated");
    }
}
