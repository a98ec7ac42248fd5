//! SSDP / UPnP discovery over UDP 1900 (HTTP-formatted datagrams, "HTTPU").
//!
//! NOTIFY announcements and M-SEARCH responses describe the sender: `SERVER` (OS and UPnP
//! stack, often the model), `USN` (unique service name, which embeds the NT/ST device or
//! service type) and `LOCATION` (URL of the device description). M-SEARCH requests show
//! the searcher's `USER-AGENT`. NT/ST are kept in the record; they produce no finding of
//! their own because the USN already carries them for the announcing device.

use super::http::{parse_with, HttpRecord, StartLine};
use super::*;
use crate::protocols::SSDP;

const PROTO: Proto = Proto::Ssdp;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SsdpKind {
    MSearch,
    Notify,
    /// A unicast answer to an M-SEARCH ("HTTP/1.1 200 OK").
    Response,
    /// Any other HTTPU method.
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsdpRecord {
    pub kind: SsdpKind,
    pub server: Option<String>,
    pub usn: Option<String>,
    pub location: Option<String>,
    pub user_agent: Option<String>,
    pub nt: Option<String>,
    pub nts: Option<String>,
    pub st: Option<String>,
    /// The underlying head, for callers that want other headers.
    pub head: HttpRecord,
}

/// Does the datagram start like SSDP (used on non-standard ports)?
pub fn looks_like_ssdp(payload: &[u8]) -> bool {
    payload.starts_with(b"M-SEARCH * HTTP/1.") || payload.starts_with(b"NOTIFY * HTTP/1.")
}

pub fn parse(payload: &[u8]) -> Result<SsdpRecord, DissectError> {
    let head = parse_with(payload, PROTO)?;
    let kind = match &head.start {
        StartLine::Request { method, .. } if method == "M-SEARCH" => SsdpKind::MSearch,
        StartLine::Request { method, .. } if method == "NOTIFY" => SsdpKind::Notify,
        StartLine::Request { method, .. } => SsdpKind::Other(method.clone()),
        StartLine::Response { .. } => SsdpKind::Response,
    };
    let get = |n: &str| head.header(n).filter(|v| !v.is_empty()).map(str::to_string);
    Ok(SsdpRecord {
        kind,
        server: get("server"),
        usn: get("usn"),
        location: get("location"),
        user_agent: get("user-agent"),
        nt: get("nt"),
        nts: get("nts"),
        st: get("st"),
        head,
    })
}

pub fn findings(rec: &SsdpRecord, out: &mut Vec<Finding>) {
    if let Some(ua) = &rec.user_agent {
        out.push(Finding::src(Field::HttpUserAgent, ua.clone()));
    }
    // A bye-bye still names the device that is leaving; all announcements describe Src.
    if rec.kind != SsdpKind::MSearch {
        if let Some(v) = &rec.server {
            out.push(Finding::src(Field::SsdpServer, v.clone()));
        }
        if let Some(v) = &rec.usn {
            out.push(Finding::src(Field::SsdpUsn, v.clone()));
        }
        if let Some(v) = &rec.location {
            out.push(Finding::src(Field::SsdpLocation, v.clone()));
        }
    }
}

pub struct SsdpDissector;

impl Dissector for SsdpDissector {
    fn proto(&self) -> Proto {
        Proto::Ssdp
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Udp
            && (SSDP.claims(ctx) && super::http::looks_like_http(payload) || looks_like_ssdp(payload))
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
    fn notify_fields() {
        let p = b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\nSERVER: Linux/3.0 UPnP/1.0 X/1\r\nUSN: uuid:1::upnp:rootdevice\r\nLOCATION: http://10.0.0.5:80/d.xml\r\n\r\n";
        let r = parse(p).unwrap();
        assert_eq!(r.kind, SsdpKind::Notify);
        assert_eq!(r.nt.as_deref(), Some("upnp:rootdevice"));
        let mut out = Vec::new();
        findings(&r, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out.contains(&Finding::src(Field::SsdpLocation, "http://10.0.0.5:80/d.xml")));
    }
}
