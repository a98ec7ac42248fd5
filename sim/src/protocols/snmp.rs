//! SNMPv1/v2c GetRequest/GetResponse (RFC 1157/3416) with BER encoding.

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 128 {
        out.push(n as u8);
    } else if n < 256 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(body);
    out
}

fn int(v: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut i = 0;
    while i < 3 && b[i] == 0 && b[i + 1] & 0x80 == 0 {
        i += 1;
    }
    tlv(0x02, &b[i..])
}

/// BER-encodes a dotted OID such as "1.3.6.1.2.1.1.1.0".
pub fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u32> = dotted.split('.').filter_map(|a| a.parse().ok()).collect();
    let mut body = Vec::new();
    if arcs.len() >= 2 {
        body.push((arcs[0] * 40 + arcs[1]) as u8);
        for &a in &arcs[2..] {
            let mut tmp = vec![(a & 0x7f) as u8];
            let mut v = a >> 7;
            while v > 0 {
                tmp.push(((v & 0x7f) as u8) | 0x80);
                v >>= 7;
            }
            tmp.reverse();
            body.extend_from_slice(&tmp);
        }
    }
    tlv(0x06, &body)
}

pub enum Value<'a> {
    Null,
    Str(&'a str),
    Oid(&'a str),
}

fn message(version: u32, community: &str, pdu_tag: u8, request_id: u32, binds: &[(&str, Value)]) -> Vec<u8> {
    let mut vbl = Vec::new();
    for (name, val) in binds {
        let mut vb = oid(name);
        vb.extend(match val {
            Value::Null => vec![0x05, 0x00],
            Value::Str(s) => tlv(0x04, s.as_bytes()),
            Value::Oid(o) => oid(o),
        });
        vbl.extend(tlv(0x30, &vb));
    }
    let mut pdu = int(request_id);
    pdu.extend(int(0));
    pdu.extend(int(0));
    pdu.extend(tlv(0x30, &vbl));
    let mut msg = int(version);
    msg.extend(tlv(0x04, community.as_bytes()));
    msg.extend(tlv(pdu_tag, &pdu));
    tlv(0x30, &msg)
}

pub const SYS_DESCR: &str = "1.3.6.1.2.1.1.1.0";
pub const SYS_OBJECT_ID: &str = "1.3.6.1.2.1.1.2.0";
pub const SYS_NAME: &str = "1.3.6.1.2.1.1.5.0";

/// v1 GetRequest for sysDescr, sysObjectID and sysName.
pub fn get_system(community: &str, request_id: u32) -> Vec<u8> {
    message(
        0,
        community,
        0xa0,
        request_id,
        &[(SYS_DESCR, Value::Null), (SYS_OBJECT_ID, Value::Null), (SYS_NAME, Value::Null)],
    )
}

pub fn system_response(community: &str, request_id: u32, descr: &str, object_id: &str, name: &str) -> Vec<u8> {
    message(
        0,
        community,
        0xa2,
        request_id,
        &[(SYS_DESCR, Value::Str(descr)), (SYS_OBJECT_ID, Value::Oid(object_id)), (SYS_NAME, Value::Str(name))],
    )
}
