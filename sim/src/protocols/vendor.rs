//! Vendor and building-system protocols. Where the real payload format is public the
//! structure follows it (SIP, RTP, RTSP, NTP, syslog, RDP X.224, IntelliVue ROSE headers);
//! where it is not (Alaris 3613, nurse call, badge controllers, RTLS), the payload is a
//! synthetic but stable binary/ASCII format on the documented port, marked as such.

/// Alaris PC unit ↔ Systems Manager on TCP 3613. The real format is not public; this
/// synthetic one carries what a fingerprint might use (serial, model, firmware, library).
pub fn alaris_status(
    seq: u32,
    serial: &str,
    model: &str,
    firmware: &str,
    drug_library: &str,
    infusing: bool,
) -> Vec<u8> {
    let body = format!(
        "SN={serial};MODEL={model};FW={firmware};DL={drug_library};STATE={}",
        if infusing { "INFUSING" } else { "IDLE" }
    );
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(b"\xa1\x5a"); // synthetic magic
    out.extend_from_slice(&1u16.to_be_bytes()); // message type: status
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

pub fn alaris_ack(seq: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(b"\xa1\x5a");
    out.extend_from_slice(&0x8001u16.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

/// Philips IntelliVue Data Export association request (session CN SPDU 0x0D). The session
/// and presentation parameters are abbreviated; the header byte and port are the real ones.
pub fn intellivue_assoc_request() -> Vec<u8> {
    let body: [u8; 14] = [0x05, 0x08, 0x13, 0x01, 0x00, 0x16, 0x01, 0x02, 0x80, 0x00, 0x14, 0x02, 0x00, 0x02];
    let mut out = vec![0x0d, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

/// Association result (session AC SPDU 0x0E).
pub fn intellivue_assoc_result() -> Vec<u8> {
    vec![0x0e, 0x0c, 0x05, 0x08, 0x13, 0x01, 0x00, 0x16, 0x01, 0x02, 0x80, 0x00, 0x14, 0x02]
}

/// ROSE invoke carrying a Poll MDIB Data request for numerics (Data Export Programming Guide:
/// SPpdu, ROapdus ROIV, ActionArgument NOM_ACT_POLL_MDIB_DATA).
pub fn intellivue_poll_request(invoke_id: u16, poll_number: u16) -> Vec<u8> {
    let mut action = Vec::with_capacity(22);
    action.extend_from_slice(&[0x00, 0x21, 0x00, 0x00, 0x00, 0x00]); // managed object: MDS
    action.extend_from_slice(&[0, 0, 0, 0]); // scope
    action.extend_from_slice(&[0x0c, 0x16]); // NOM_ACT_POLL_MDIB_DATA
    action.extend_from_slice(&8u16.to_be_bytes());
    action.extend_from_slice(&poll_number.to_be_bytes());
    action.extend_from_slice(&[0x00, 0x01, 0x00, 0x06, 0x00, 0x00]); // numerics, all groups
    rose(1, invoke_id, 7, &action)
}

/// ROSE result with `n` synthetic observed values (handle, code, float value).
pub fn intellivue_poll_result(invoke_id: u16, poll_number: u16, values: &[(u16, u32)]) -> Vec<u8> {
    let mut r = Vec::with_capacity(32 + values.len() * 10);
    r.extend_from_slice(&[0x00, 0x21, 0x00, 0x00, 0x00, 0x00]);
    r.extend_from_slice(&[0x0c, 0x16]);
    let mut poll = Vec::new();
    poll.extend_from_slice(&poll_number.to_be_bytes());
    poll.extend_from_slice(&(values.len() as u16).to_be_bytes());
    for (code, v) in values {
        poll.extend_from_slice(&code.to_be_bytes());
        poll.extend_from_slice(&v.to_be_bytes());
    }
    r.extend_from_slice(&(poll.len() as u16).to_be_bytes());
    r.extend_from_slice(&poll);
    rose(2, invoke_id, 7, &r)
}

fn rose(ro_type: u16, invoke_id: u16, command: u16, arg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(arg.len() + 16);
    out.extend_from_slice(&[0xe1, 0x00, 0x00, 0x02]); // SPpdu: session id, context id
    out.extend_from_slice(&ro_type.to_be_bytes());
    out.extend_from_slice(&((arg.len() + 6) as u16).to_be_bytes());
    out.extend_from_slice(&invoke_id.to_be_bytes());
    out.extend_from_slice(&command.to_be_bytes());
    out.extend_from_slice(&(arg.len() as u16).to_be_bytes());
    out.extend_from_slice(arg);
    out
}

/// SIP REGISTER (RFC 3261).
pub fn sip_register(
    user: &str,
    domain: &str,
    phone_ip: &str,
    port: u16,
    call_id: &str,
    cseq: u32,
    user_agent: &str,
) -> Vec<u8> {
    format!(
        "REGISTER sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {phone_ip}:{port};branch=z9hG4bK{cseq:08x}{call_id}\r\nFrom: <sip:{user}@{domain}>;tag={call_id}\r\nTo: <sip:{user}@{domain}>\r\nCall-ID: {call_id}@{phone_ip}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{phone_ip}:{port}>\r\nMax-Forwards: 70\r\nUser-Agent: {user_agent}\r\nExpires: 3600\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY, REFER\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

pub fn sip_ok(user: &str, domain: &str, phone_ip: &str, port: u16, call_id: &str, cseq: u32, server: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {phone_ip}:{port};branch=z9hG4bK{cseq:08x}{call_id}\r\nFrom: <sip:{user}@{domain}>;tag={call_id}\r\nTo: <sip:{user}@{domain}>;tag=srv{cseq}\r\nCall-ID: {call_id}@{phone_ip}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{phone_ip}:{port}>;expires=3600\r\nServer: {server}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// RTP (RFC 3550) G.711 µ-law packet with a 20 ms (160-byte) payload.
pub fn rtp_pcmu(seq: u16, timestamp: u32, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(172);
    out.extend_from_slice(&[0x80, 0x00]);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend(std::iter::repeat_n(fill, 160));
    out
}

/// RTSP (RFC 2326) request.
pub fn rtsp_request(method: &str, url: &str, cseq: u32, user_agent: &str, extra: &str) -> Vec<u8> {
    format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: {user_agent}\r\n{extra}\r\n").into_bytes()
}

pub fn rtsp_response(cseq: u32, server: &str, extra: &str, body: &str) -> Vec<u8> {
    let cl = if body.is_empty() { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nServer: {server}\r\n{extra}{cl}\r\n{body}").into_bytes()
}

/// RTP over RTSP interleaved framing ('$', channel, length) carrying an H.264 fragment.
pub fn rtsp_interleaved_video(channel: u8, seq: u16, timestamp: u32, ssrc: u32, len: usize) -> Vec<u8> {
    let mut rtp = Vec::with_capacity(len + 12);
    rtp.extend_from_slice(&[0x80, 0x60]);
    rtp.extend_from_slice(&seq.to_be_bytes());
    rtp.extend_from_slice(&timestamp.to_be_bytes());
    rtp.extend_from_slice(&ssrc.to_be_bytes());
    rtp.extend_from_slice(&[0x7c, 0x85]); // FU-A, IDR slice
    rtp.extend((0..len.saturating_sub(2)).map(|i| (i as u8).wrapping_mul(31) ^ (seq as u8)));
    let mut out = vec![b'$', channel];
    out.extend_from_slice(&(rtp.len() as u16).to_be_bytes());
    out.extend_from_slice(&rtp);
    out
}

/// NTPv4 client request / server reply (RFC 5905), 48 bytes.
pub fn ntp(client: bool, unix_us: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = if client { 0x23 } else { 0x24 }; // v4, mode 3 or 4
    p[1] = if client { 0 } else { 2 };
    p[2] = 6;
    p[3] = 0xe9;
    let secs = (unix_us / 1_000_000 + 2_208_988_800) as u32;
    let frac = (((unix_us % 1_000_000) << 32) / 1_000_000) as u32;
    p[40..44].copy_from_slice(&secs.to_be_bytes());
    p[44..48].copy_from_slice(&frac.to_be_bytes());
    if !client {
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[32..36].copy_from_slice(&secs.to_be_bytes());
        p[36..40].copy_from_slice(&frac.to_be_bytes());
    }
    p
}

/// BSD syslog line (RFC 3164).
pub fn syslog(priority: u8, timestamp: &str, host: &str, tag: &str, msg: &str) -> Vec<u8> {
    format!("<{priority}>{timestamp} {host} {tag}: {msg}").into_bytes()
}

/// RDP X.224 Connection Request with the mstshash cookie (MS-RDPBCGR §2.2.1.1).
pub fn rdp_connection_request(user: &str) -> Vec<u8> {
    let cookie = format!("Cookie: mstshash={user}\r\n");
    let neg = [0x01u8, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00]; // TLS | CredSSP
    let x224_len = 6 + cookie.len() + neg.len();
    let total = 4 + 1 + x224_len;
    let mut out = vec![0x03, 0x00];
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.push(x224_len as u8);
    out.extend_from_slice(&[0xe0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(cookie.as_bytes());
    out.extend_from_slice(&neg);
    out
}

pub fn rdp_connection_confirm() -> Vec<u8> {
    vec![0x03, 0x00, 0x00, 0x13, 0x0e, 0xd0, 0, 0, 0x12, 0x34, 0x00, 0x02, 0x1f, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00]
}

/// Synthetic ASCII event line used by nurse call, badge and RTLS controllers.
pub fn ascii_event(kind: &str, fields: &[(&str, String)]) -> Vec<u8> {
    let mut s = String::from(kind);
    for (k, v) in fields {
        s.push(' ');
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s.push_str("\r\n");
    s.into_bytes()
}
