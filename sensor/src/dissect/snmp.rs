//! SNMP v1/v2c/v3 (UDP 161/162).
//!
//! **The community string is a password and is never stored.** The parser reduces it to
//! a marker at once: `"public (default)"` / `"private (default)"` for the factory
//! defaults every scanner tries first, `"empty"`, or `"non-default (len N)"`. That marker
//! is what becomes `SnmpCommunityInUse` evidence (on the sender: a manager using it, or an
//! agent answering with it), so the inventory can say "this infusion-pump gateway answers
//! to `public`" without ever holding a real secret.
//!
//! From responses, reports and traps (sent by the agent, i.e. Src) we take the MIB-II
//! system group scalars that identify it: sysDescr (1.3.6.1.2.1.1.1.0), sysObjectID
//! (1.3.6.1.2.1.1.2.0), sysContact (.4.0), sysName (.5.0) and sysLocation (.6.0). The same
//! OIDs in a manager's request (a SetRequest writing sysLocation, say) are not evidence:
//! the agent may refuse the write, and its response says what it holds. SNMPv3 gives the
//! authoritative engine id (hex) and the user name: the engine id belongs to the agent
//! (Dst of a request, Src of a response/report/trap); the user to the requester.

use super::ber::{self, Reader};
use super::text::display;
use super::*;
use crate::protocols::SNMP;

const PROTO: Proto = Proto::Snmp;
pub const SYS_DESCR: &str = "1.3.6.1.2.1.1.1.0";
pub const SYS_OBJECT_ID: &str = "1.3.6.1.2.1.1.2.0";
pub const SYS_CONTACT: &str = "1.3.6.1.2.1.1.4.0";
pub const SYS_NAME: &str = "1.3.6.1.2.1.1.5.0";
pub const SYS_LOCATION: &str = "1.3.6.1.2.1.1.6.0";
/// entPhysicalSerialNum (ENTITY-MIB): a column, one instance per physical entity.
pub const ENT_PHYSICAL_SERIAL_NUM: &str = "1.3.6.1.2.1.47.1.1.1.1.11.";
const MAX_VARBINDS: usize = 1024;

/// What we keep of a community string: never the string itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Community {
    Default(&'static str),
    Empty,
    NonDefault { len: usize },
}

impl Community {
    fn classify(raw: &[u8]) -> Community {
        match raw {
            b"public" => Community::Default("public"),
            b"private" => Community::Default("private"),
            [] => Community::Empty,
            _ => Community::NonDefault { len: raw.len() },
        }
    }
    /// The marker stored as evidence.
    pub fn marker(&self) -> String {
        match self {
            Community::Default(s) => format!("{s} (default)"),
            Community::Empty => "empty".to_string(),
            Community::NonDefault { len } => format!("non-default (len {len})"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PduType {
    GetRequest,
    GetNextRequest,
    Response,
    SetRequest,
    TrapV1,
    GetBulkRequest,
    InformRequest,
    TrapV2,
    Report,
    /// SNMPv3 with privacy: the PDU is encrypted.
    Encrypted,
}

impl PduType {
    fn from_ident(ident: u8) -> Option<PduType> {
        Some(match ident {
            0xa0 => PduType::GetRequest,
            0xa1 => PduType::GetNextRequest,
            0xa2 => PduType::Response,
            0xa3 => PduType::SetRequest,
            0xa4 => PduType::TrapV1,
            0xa5 => PduType::GetBulkRequest,
            0xa6 => PduType::InformRequest,
            0xa7 => PduType::TrapV2,
            0xa8 => PduType::Report,
            _ => return None,
        })
    }
    /// Sent by an agent about itself.
    pub fn from_agent(self) -> bool {
        matches!(self, PduType::Response | PduType::TrapV1 | PduType::TrapV2 | PduType::Report)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Integer(i64),
    OctetString(Vec<u8>),
    Oid(String),
    Null,
    /// Any other type: its identifier octet and contents length.
    Other {
        ident: u8,
        len: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarBind {
    pub oid: String,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnmpRecord {
    /// 0 = v1, 1 = v2c, 3 = v3.
    pub version: i64,
    /// v1/v2c only; see [`Community`].
    pub community: Option<Community>,
    pub pdu_type: PduType,
    pub varbinds: Vec<VarBind>,
    /// v3 msgAuthoritativeEngineID as hex (may be empty during discovery).
    pub engine_id: Option<String>,
    /// v3 msgUserName.
    pub user: Option<String>,
    /// v3 msgFlags reportable bit: set on requests.
    pub reportable: bool,
}

impl SnmpRecord {
    fn text_of(&self, oid: &str) -> Option<String> {
        self.varbinds.iter().find(|v| v.oid == oid).and_then(|v| match &v.value {
            Value::OctetString(b) => Some(display(b)),
            Value::Oid(o) => Some(o.clone()),
            _ => None,
        })
    }
    pub fn sys_descr(&self) -> Option<String> {
        self.text_of(SYS_DESCR)
    }
    pub fn sys_object_id(&self) -> Option<String> {
        self.text_of(SYS_OBJECT_ID)
    }
    pub fn sys_name(&self) -> Option<String> {
        self.text_of(SYS_NAME)
    }
    pub fn sys_location(&self) -> Option<String> {
        self.text_of(SYS_LOCATION)
    }
    pub fn sys_contact(&self) -> Option<String> {
        self.text_of(SYS_CONTACT)
    }
    /// Every non-empty entPhysicalSerialNum instance, in varbind order.
    pub fn serial_numbers(&self) -> Vec<String> {
        self.varbinds
            .iter()
            .filter(|v| v.oid.strip_prefix(ENT_PHYSICAL_SERIAL_NUM).is_some_and(|index| !index.is_empty()))
            .filter_map(|v| match &v.value {
                Value::OctetString(b) => Some(display(b)),
                _ => None,
            })
            .filter(|s| !s.is_empty())
            .collect()
    }
}

fn bad(detail: impl Into<String>) -> DissectError {
    let d = detail.into();
    if d.contains("cut short") || d.contains("remain") || d.starts_with("no ") {
        DissectError::truncated(PROTO, d)
    } else {
        DissectError::new(PROTO, "bad_ber", d)
    }
}

pub fn parse(payload: &[u8]) -> Result<SnmpRecord, DissectError> {
    let msg = Reader::new(payload).expect(ber::SEQUENCE, "SNMP message").map_err(bad)?;
    let mut r = Reader::new(msg.body);
    let version = ber::integer(r.expect(ber::INTEGER, "version").map_err(bad)?.body).map_err(bad)?;
    match version {
        0 | 1 => {
            let community = Community::classify(r.expect(ber::OCTET_STRING, "community").map_err(bad)?.body);
            let (pdu_type, varbinds) = parse_pdu(&mut r)?;
            Ok(SnmpRecord {
                version,
                community: Some(community),
                pdu_type,
                varbinds,
                engine_id: None,
                user: None,
                reportable: false,
            })
        }
        3 => parse_v3(&mut r),
        v => Err(DissectError::new(PROTO, "bad_version", format!("SNMP version field {v} (expected 0, 1 or 3)"))),
    }
}

fn parse_v3(r: &mut Reader) -> Result<SnmpRecord, DissectError> {
    let global = r.expect(ber::SEQUENCE, "msgGlobalData").map_err(bad)?;
    let mut g = Reader::new(global.body);
    g.expect(ber::INTEGER, "msgID").map_err(bad)?;
    g.expect(ber::INTEGER, "msgMaxSize").map_err(bad)?;
    let flags = g.expect(ber::OCTET_STRING, "msgFlags").map_err(bad)?.body.first().copied().unwrap_or(0);
    let model = ber::integer(g.expect(ber::INTEGER, "msgSecurityModel").map_err(bad)?.body).map_err(bad)?;
    let sec = r.expect(ber::OCTET_STRING, "msgSecurityParameters").map_err(bad)?;
    let (mut engine_id, mut user) = (None, None);
    if model == 3 {
        // USM parameters are themselves a BER SEQUENCE inside the OCTET STRING.
        let usm = Reader::new(sec.body).expect(ber::SEQUENCE, "UsmSecurityParameters").map_err(bad)?;
        let mut u = Reader::new(usm.body);
        engine_id =
            Some(super::text::hex_bounded(u.expect(ber::OCTET_STRING, "msgAuthoritativeEngineID").map_err(bad)?.body));
        u.expect(ber::INTEGER, "msgAuthoritativeEngineBoots").map_err(bad)?;
        u.expect(ber::INTEGER, "msgAuthoritativeEngineTime").map_err(bad)?;
        user = Some(display(u.expect(ber::OCTET_STRING, "msgUserName").map_err(bad)?.body));
    }
    let data = r.read().map_err(bad)?;
    let (pdu_type, varbinds) = if data.ident == ber::SEQUENCE {
        let mut s = Reader::new(data.body);
        s.expect(ber::OCTET_STRING, "contextEngineID").map_err(bad)?;
        s.expect(ber::OCTET_STRING, "contextName").map_err(bad)?;
        parse_pdu(&mut s)?
    } else {
        (PduType::Encrypted, Vec::new())
    };
    Ok(SnmpRecord { version: 3, community: None, pdu_type, varbinds, engine_id, user, reportable: flags & 0x04 != 0 })
}

fn parse_pdu(r: &mut Reader) -> Result<(PduType, Vec<VarBind>), DissectError> {
    let pdu = r.read().map_err(bad)?;
    let pdu_type = PduType::from_ident(pdu.ident).ok_or_else(|| {
        DissectError::new(PROTO, "bad_pdu", format!("PDU tag 0x{:02x} is not an SNMP PDU", pdu.ident))
    })?;
    let mut p = Reader::new(pdu.body);
    if pdu_type == PduType::TrapV1 {
        p.expect(ber::OID, "enterprise").map_err(bad)?;
        p.read().map_err(bad)?; // agent-addr
        p.expect(ber::INTEGER, "generic-trap").map_err(bad)?;
        p.expect(ber::INTEGER, "specific-trap").map_err(bad)?;
        p.read().map_err(bad)?; // time-stamp
    } else {
        p.expect(ber::INTEGER, "request-id").map_err(bad)?;
        p.expect(ber::INTEGER, "error-status").map_err(bad)?;
        p.expect(ber::INTEGER, "error-index").map_err(bad)?;
    }
    let list = p.expect(ber::SEQUENCE, "variable-bindings").map_err(bad)?;
    let mut l = Reader::new(list.body);
    let mut varbinds = Vec::new();
    while !l.is_empty() {
        if varbinds.len() >= MAX_VARBINDS {
            return Err(DissectError::new(
                PROTO,
                "too_many_varbinds",
                format!("more than {MAX_VARBINDS} variable bindings"),
            ));
        }
        let vb = l.expect(ber::SEQUENCE, "VarBind").map_err(bad)?;
        let mut v = Reader::new(vb.body);
        let oid = ber::oid(v.expect(ber::OID, "VarBind name").map_err(bad)?.body).map_err(bad)?;
        let val = v.read().map_err(bad)?;
        let value = match val.ident {
            ber::INTEGER => ber::integer(val.body)
                .map(Value::Integer)
                .unwrap_or(Value::Other { ident: val.ident, len: val.body.len() }),
            // Keep at most what a display string can use; sysDescr is 255 by definition.
            ber::OCTET_STRING => Value::OctetString(val.body[..val.body.len().min(4096)].to_vec()),
            ber::OID => {
                ber::oid(val.body).map(Value::Oid).unwrap_or(Value::Other { ident: val.ident, len: val.body.len() })
            }
            ber::NULL => Value::Null,
            other => Value::Other { ident: other, len: val.body.len() },
        };
        varbinds.push(VarBind { oid, value });
    }
    Ok((pdu_type, varbinds))
}

pub fn findings(rec: &SnmpRecord, out: &mut Vec<Finding>) {
    if let Some(c) = &rec.community {
        out.push(Finding::src(Field::SnmpCommunityInUse, c.marker()));
    }
    if rec.pdu_type.from_agent() {
        if let Some(d) = rec.sys_descr().filter(|d| !d.is_empty()) {
            out.push(Finding::src(Field::SnmpSysDescr, d));
        }
        if let Some(o) = rec.sys_object_id() {
            out.push(Finding::src(Field::SnmpSysObjectId, o));
        }
        // An unset sysName/sysLocation/sysContact is an empty string: nothing to say.
        for (value, field) in [
            (rec.sys_name(), Field::SnmpSysName),
            (rec.sys_location(), Field::SnmpSysLocation),
            (rec.sys_contact(), Field::SnmpSysContact),
        ] {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                out.push(Finding::src(field, v));
            }
        }
        for serial in rec.serial_numbers() {
            out.push(Finding::src(Field::SerialNumber, serial));
        }
    }
    let agent_sent = rec.pdu_type.from_agent() || (rec.pdu_type == PduType::Encrypted && !rec.reportable);
    if let Some(e) = rec.engine_id.as_ref().filter(|e| !e.is_empty()) {
        out.push(if agent_sent {
            Finding::src(Field::SnmpV3EngineId, e.clone())
        } else {
            Finding::dst(Field::SnmpV3EngineId, e.clone())
        });
    }
    if let Some(u) = rec.user.as_ref().filter(|u| !u.is_empty()) {
        out.push(if agent_sent {
            Finding::dst(Field::SnmpV3User, u.clone())
        } else {
            Finding::src(Field::SnmpV3User, u.clone())
        });
    }
}

pub struct SnmpDissector;

impl Dissector for SnmpDissector {
    fn proto(&self) -> Proto {
        Proto::Snmp
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Udp && SNMP.claims(ctx) && payload.first() == Some(&ber::SEQUENCE)
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
    fn community_never_kept() {
        assert_eq!(Community::classify(b"public").marker(), "public (default)");
        assert_eq!(Community::classify(b"s3cr3t!").marker(), "non-default (len 7)");
        assert_eq!(Community::classify(b"").marker(), "empty");
    }
}
