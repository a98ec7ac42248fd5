//! TLS 1.2 records: ClientHello (SNI, cipher list and extensions give JA3/JA4),
//! ServerHello, and opaque encrypted records of a given size.

/// A client's TLS personality.
#[derive(Clone, Debug)]
pub struct ClientProfile {
    pub ciphers: &'static [u16],
    pub groups: &'static [u16],
    pub alpn: &'static [&'static str],
}

pub const WINDOWS7_SCHANNEL: ClientProfile = ClientProfile {
    ciphers: &[
        0xc02c, 0xc02b, 0xc030, 0xc02f, 0x009f, 0x009e, 0xc024, 0xc023, 0xc028, 0xc027, 0xc00a, 0xc009, 0xc014, 0xc013,
        0x009d, 0x009c, 0x003d, 0x003c, 0x0035, 0x002f, 0x000a,
    ],
    groups: &[0x0017, 0x0018],
    alpn: &[],
};
pub const MODERN_BROWSER: ClientProfile = ClientProfile {
    ciphers: &[
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c, 0x009d, 0x002f,
        0x0035,
    ],
    groups: &[0x001d, 0x0017, 0x0018],
    alpn: &["h2", "http/1.1"],
};
pub const EMBEDDED_OPENSSL: ClientProfile = ClientProfile {
    ciphers: &[
        0xc030, 0xc02c, 0xc028, 0xc024, 0xc014, 0xc00a, 0x009f, 0x006b, 0x0039, 0x009d, 0x003d, 0x0035, 0xc02f, 0xc02b,
        0x009c, 0x002f, 0x00ff,
    ],
    groups: &[0x0017, 0x0019, 0x0018],
    alpn: &[],
};

fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![content_type, 3, 3];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

fn ext(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

fn u16_list(items: &[u16]) -> Vec<u8> {
    let mut v = ((items.len() * 2) as u16).to_be_bytes().to_vec();
    for i in items {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v
}

pub fn client_hello(p: &ClientProfile, sni: &str, random: [u8; 32]) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend_from_slice(&random);
    b.push(0); // no session id
    b.extend_from_slice(&u16_list(p.ciphers));
    b.extend_from_slice(&[1, 0]);
    let mut e = Vec::new();
    let mut sn = Vec::new();
    sn.extend_from_slice(&((sni.len() + 3) as u16).to_be_bytes());
    sn.push(0);
    sn.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sn.extend_from_slice(sni.as_bytes());
    ext(&mut e, 0x0000, &sn);
    ext(&mut e, 0x000a, &u16_list(p.groups));
    ext(&mut e, 0x000b, &[1, 0]);
    ext(&mut e, 0x000d, &u16_list(&[0x0401, 0x0501, 0x0201, 0x0403, 0x0503, 0x0203, 0x0402, 0x0202]));
    if !p.alpn.is_empty() {
        let mut list = Vec::new();
        for a in p.alpn {
            list.push(a.len() as u8);
            list.extend_from_slice(a.as_bytes());
        }
        let mut body = (list.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&list);
        ext(&mut e, 0x0010, &body);
    }
    ext(&mut e, 0x0017, &[]);
    ext(&mut e, 0xff01, &[0]);
    b.extend_from_slice(&(e.len() as u16).to_be_bytes());
    b.extend_from_slice(&e);
    record(0x16, &handshake(1, &b))
}

pub fn server_hello(cipher: u16, random: [u8; 32]) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend_from_slice(&random);
    b.push(32);
    b.extend_from_slice(&random); // session id: reuse the random bytes
    b.extend_from_slice(&cipher.to_be_bytes());
    b.push(0);
    let mut e = Vec::new();
    ext(&mut e, 0xff01, &[0]);
    ext(&mut e, 0x0017, &[]);
    b.extend_from_slice(&(e.len() as u16).to_be_bytes());
    b.extend_from_slice(&e);
    let mut out = record(0x16, &handshake(2, &b));
    out.extend(record(0x16, &handshake(14, &[]))); // ServerHelloDone
    out
}

/// ChangeCipherSpec followed by an encrypted Finished message.
pub fn change_cipher_and_finished(fill: u8) -> Vec<u8> {
    let mut out = record(0x14, &[1]);
    out.extend(record(0x16, &[fill; 40]));
    out
}

/// Application data records totalling about `len` bytes of ciphertext.
pub fn application_data(len: usize, fill: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    let mut left = len.max(1);
    while left > 0 {
        let n = left.min(16_384);
        let body: Vec<u8> = fill.iter().copied().cycle().take(n).collect();
        out.extend(record(0x17, &body));
        left -= n;
    }
    out
}
