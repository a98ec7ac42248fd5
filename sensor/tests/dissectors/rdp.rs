//! RDP presence. The shared corpus has no RDP capture, so the inputs are built from
//! [MS-RDPBCGR] 2.2.1.1 / 2.2.1.2 byte layouts (the examples in §4.1.1 / §4.1.2).

use crate::dissect_medical_support::*;

use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::rdp::{self, RdpDissector, RdpRecord};
use wardline_sensor::dissect::{Dissector, Side, Transport};

/// TPKT + X.224 CR + "Cookie: mstshash=eltons\r\n" + RDP_NEG_REQ(TLS|CredSSP), per [MS-RDPBCGR] 4.1.1.
fn connection_request() -> Vec<u8> {
    let mut x224 = vec![0xE0, 0, 0, 0, 0, 0];
    x224.extend_from_slice(b"Cookie: mstshash=eltons\r\n");
    x224.extend_from_slice(&[0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00]);
    let mut p = vec![3, 0, 0, 0, x224.len() as u8];
    p.extend_from_slice(&x224);
    let n = p.len() as u16;
    p[2..4].copy_from_slice(&n.to_be_bytes());
    p
}

#[test]
fn connection_request_records_presence_not_user() {
    let p = connection_request();
    let c = ctx(Transport::Tcp, 50000, 3389);
    assert!(RdpDissector.wants(&c, &p));
    let rec = rdp::parse(&p).unwrap();
    assert_eq!(rec, RdpRecord::ConnectionRequest { cookie_present: true, requested_protocols: Some(3) });
    let mut out = Vec::new();
    RdpDissector.dissect(&c, &p, &mut out).unwrap();
    assert!(out.iter().any(|f| f.side == Side::Dst && f.field == Field::RdpInUse && f.value == "present"));
    assert!(!format!("{out:?}{rec:?}").contains("eltons"));
    // Off port: only with the cookie.
    assert!(RdpDissector.wants(&ctx(Transport::Tcp, 50000, 13389), &p));
}

#[test]
fn connection_confirm_selected_protocol() {
    // [MS-RDPBCGR] 4.1.2: 03 00 00 13 0e d0 00 00 12 34 00 02 00 08 00 00 00 00 00
    let p = [
        0x03, 0x00, 0x00, 0x13, 0x0e, 0xd0, 0x00, 0x00, 0x12, 0x34, 0x00, 0x02, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00,
        0x00,
    ];
    assert_eq!(
        rdp::parse(&p).unwrap(),
        RdpRecord::ConnectionConfirm { selected_protocol: Some(0), failure_code: None }
    );
    // S7comm also uses TPKT/COTP: a CR on port 102 without the cookie is not RDP.
    let mut s7 = p;
    s7[5] = 0xE0;
    assert!(!RdpDissector.wants(&ctx(Transport::Tcp, 50000, 102), &s7));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = rdp::parse(&data);
        let mut tpkt = vec![3, 0, 0xFF, 0xFF, 0xFF, 0xE0];
        tpkt.extend_from_slice(&data);
        let _ = rdp::parse(&tpkt);
    }

    #[test]
    fn truncations_never_panic(cut in 0usize..64) {
        let p = connection_request();
        let _ = rdp::parse(&p[..cut.min(p.len())]);
    }
}
