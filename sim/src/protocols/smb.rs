//! SMB2 NEGOTIATE request and response (MS-SMB2 §2.2.3/2.2.4) over NetBIOS session framing.

fn nbss(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&body);
    out
}

fn header(response: bool, msg_id: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(b"\xfeSMB");
    h.extend_from_slice(&64u16.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // credit charge
    h.extend_from_slice(&0u32.to_le_bytes()); // status
    h.extend_from_slice(&0u16.to_le_bytes()); // NEGOTIATE
    h.extend_from_slice(&1u16.to_le_bytes()); // credits
    h.extend_from_slice(&(if response { 1u32 } else { 0 }).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // next command
    h.extend_from_slice(&msg_id.to_le_bytes());
    h.extend_from_slice(&[0u8; 4 + 4 + 8 + 16]); // reserved, tree id, session id, signature
    h
}

/// Windows 7 offers SMB 2.0.2 and 2.1.
pub fn negotiate_request(client_guid: [u8; 16], dialects: &[u16]) -> Vec<u8> {
    let mut b = header(false, 0);
    b.extend_from_slice(&36u16.to_le_bytes());
    b.extend_from_slice(&(dialects.len() as u16).to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // signing enabled
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&0u32.to_le_bytes()); // capabilities
    b.extend_from_slice(&client_guid);
    b.extend_from_slice(&[0u8; 8]); // client start time
    for d in dialects {
        b.extend_from_slice(&d.to_le_bytes());
    }
    nbss(b)
}

pub fn negotiate_response(server_guid: [u8; 16], dialect: u16, filetime: u64) -> Vec<u8> {
    let mut b = header(true, 0);
    b.extend_from_slice(&65u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // signing enabled
    b.extend_from_slice(&dialect.to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&server_guid);
    b.extend_from_slice(&1u32.to_le_bytes()); // DFS capability
    for max in [65536u32, 65536, 65536] {
        b.extend_from_slice(&max.to_le_bytes());
    }
    b.extend_from_slice(&filetime.to_le_bytes());
    b.extend_from_slice(&(filetime - 3_600_000_000_000).to_le_bytes()); // boot time
    b.extend_from_slice(&128u16.to_le_bytes()); // security buffer offset (64 + 64)
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    nbss(b)
}

/// Microseconds since the Unix epoch → Windows FILETIME (100 ns since 1601).
pub fn filetime(us: u64) -> u64 {
    (us + 11_644_473_600_000_000) * 10
}
