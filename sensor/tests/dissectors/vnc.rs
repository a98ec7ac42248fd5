//! VNC presence from the RFB ProtocolVersion message (RFC 6143 §7.1.1). No VNC capture is
//! in the shared corpus, so the messages are the literal strings the RFC defines.

use crate::dissect_medical_support::*;

use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::vnc::{self, VncDissector};
use wardline_sensor::dissect::{Dissector, Transport};

#[test]
fn version_message() {
    let c = ctx(Transport::Tcp, 5900, 40000);
    assert!(VncDissector.wants(&c, b"RFB 003.008\n"));
    let mut out = Vec::new();
    VncDissector.dissect(&c, b"RFB 003.008\n", &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].field, out[0].value.as_str()), (Field::VncInUse, "003.008"));
    assert_eq!(vnc::parse(b"RFB 003.889\n").unwrap().version, "003.889");
    for bad in [&b"RFB 003.008"[..], b"RFB 3.8\n", b"RFB 003.008\nxx", b"SSH-2.0-x\r\n"] {
        assert!(vnc::parse(bad).is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = vnc::parse(&data);
    }
}
