//! SMB2 NEGOTIATE request and response (MS-SMB2 §2.2.3/2.2.4) over NetBIOS session framing, and
//! the SMB1 NEGOTIATE a legacy (SMBv1-only) exchange uses (MS-CIFS §2.2.4.52).

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

/// An SMB1 header (MS-CIFS §2.2.3.1) for NEGOTIATE (0x72); `reply` sets the reply flag.
fn smb1_header(reply: bool, pid: u16, mid: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(32);
    h.extend_from_slice(b"\xffSMB");
    h.push(0x72);
    h.extend_from_slice(&0u32.to_le_bytes()); // status
    h.push(if reply { 0x98 } else { 0x18 }); // case-insensitive paths, canonicalised (+ reply)
    h.extend_from_slice(&0xc853u16.to_le_bytes()); // flags2: unicode, NT status, long names
    h.extend_from_slice(&[0u8; 2 + 8 + 2]); // pid high, security features, reserved
    h.extend_from_slice(&0xffffu16.to_le_bytes()); // tree id
    h.extend_from_slice(&pid.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // user id
    h.extend_from_slice(&mid.to_le_bytes());
    h
}

/// An SMB1-only NEGOTIATE request: the client offers `dialects` ("NT LM 0.12"), no SMB2.
pub fn smb1_negotiate_request(pid: u16, dialects: &[&str]) -> Vec<u8> {
    let mut b = smb1_header(false, pid, 0);
    b.push(0); // word count
    let bytes: Vec<u8> = dialects.iter().flat_map(|d| std::iter::once(2).chain(d.bytes()).chain([0])).collect();
    b.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    b.extend_from_slice(&bytes);
    nbss(b)
}

/// The server accepts dialect `index` of the request: SMBv1 is answered, so it serves SMB1.
pub fn smb1_negotiate_response(pid: u16, index: u16, challenge: [u8; 8], domain: &str, filetime: u64) -> Vec<u8> {
    let mut b = smb1_header(true, pid, 0);
    b.push(17); // word count
    b.extend_from_slice(&index.to_le_bytes());
    b.push(0x03); // security mode: user level, challenge/response
    b.extend_from_slice(&50u16.to_le_bytes()); // max mpx
    b.extend_from_slice(&1u16.to_le_bytes()); // max VCs
    b.extend_from_slice(&16644u32.to_le_bytes()); // max buffer
    b.extend_from_slice(&65536u32.to_le_bytes()); // max raw
    b.extend_from_slice(&0u32.to_le_bytes()); // session key
    b.extend_from_slice(&0x0000_f3fdu32.to_le_bytes()); // capabilities (no extended security)
    b.extend_from_slice(&filetime.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // time zone
    b.push(8); // challenge length
    let name: Vec<u8> = domain.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect();
    b.extend_from_slice(&((8 + name.len()) as u16).to_le_bytes());
    b.extend_from_slice(&challenge);
    b.extend_from_slice(&name);
    nbss(b)
}
