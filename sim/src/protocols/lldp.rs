//! LLDP frames (IEEE 802.1AB) as access switches send them every 30 s.

fn tlv(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let h: u16 = (u16::from(kind) << 9) | (body.len() as u16 & 0x1ff);
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(body);
}

pub const LLDP_MULTICAST: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];

pub fn frame_body(chassis_mac: [u8; 6], port: &str, sys_name: &str, sys_descr: &str, mgmt_ip: [u8; 4]) -> Vec<u8> {
    let mut b = Vec::with_capacity(200);
    let mut chassis = vec![4u8];
    chassis.extend_from_slice(&chassis_mac);
    tlv(&mut b, 1, &chassis);
    let mut p = vec![5u8];
    p.extend_from_slice(port.as_bytes());
    tlv(&mut b, 2, &p);
    tlv(&mut b, 3, &120u16.to_be_bytes());
    tlv(&mut b, 5, sys_name.as_bytes());
    tlv(&mut b, 6, sys_descr.as_bytes());
    tlv(&mut b, 7, &[0x00, 0x14, 0x00, 0x14]); // bridge + router, both enabled
    let mut m = vec![5u8, 1];
    m.extend_from_slice(&mgmt_ip);
    m.extend_from_slice(&[2, 0, 0, 0, 1, 0]);
    tlv(&mut b, 8, &m);
    tlv(&mut b, 0, &[]);
    b
}
