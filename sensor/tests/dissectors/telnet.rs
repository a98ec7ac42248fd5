//! Telnet on the lab capture (/work/shared/pcaps/mgmt/lab-mgmt-telnet-login.pcap): banner
//! after IAC negotiation, cleartext login flagged, credentials never kept.

use crate::dissect_medical_support::*;

use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::telnet::{self, TelnetDissector};
use wardline_sensor::dissect::{Dissector, Finding};

#[test]
fn banner_and_cleartext_login_without_credentials() {
    let pkts = read_packets(&pcap("mgmt/lab-mgmt-telnet-login.pcap"));
    let msgs = messages(&pkts, per_packet);
    let (f, errors) = facts(&TelnetDissector, &msgs);
    assert_eq!(errors, 0);
    let server = ip("10.77.0.103");
    let client = ip("10.77.0.102");
    assert!(f.contains(&(server, Field::TelnetBanner, "PUMPGW-ICU3 login:".into())), "{f:#?}");
    assert!(f.contains(&(server, Field::CleartextLogin, "telnet".into())));
    assert!(f.contains(&(client, Field::CleartextLogin, "telnet".into())));
    // The failure line after the bad password is not part of the banner.
    assert!(f.iter().filter(|(_, fl, _)| *fl == Field::TelnetBanner).all(|(_, _, v)| !v.contains("incorrect")));
    let mut every: Vec<Finding> = Vec::new();
    let mut records = String::new();
    for m in &msgs {
        let c = m.last.ctx();
        if TelnetDissector.wants(&c, &m.bytes) {
            let _ = TelnetDissector.dissect(&c, &m.bytes, &mut every);
            records.push_str(&format!("{:?}", telnet::parse(&m.bytes, c.src_port == 23)));
        }
    }
    let all = format!("{every:?}{records}");
    for secret in ["admin", "Baxter123!"] {
        assert!(
            msgs.iter().any(|m| m.bytes.windows(secret.len()).any(|w| w == secret.as_bytes())),
            "capture carries {secret}"
        );
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}

#[test]
fn negotiation_is_stripped() {
    // IAC DO ECHO, IAC WILL SGA, IAC SB TTYPE SEND IAC SE, then text with an escaped 0xFF.
    let p = [255, 253, 1, 255, 251, 3, 255, 250, 24, 1, 255, 240, b'h', b'i', 255, 255];
    let (opts, text) = telnet::strip_negotiation(&p);
    assert_eq!(opts, vec![(253, 1), (251, 3), (250, 24)]);
    assert_eq!(text, vec![b'h', b'i', 255]);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096), server in any::<bool>()) {
        let _ = telnet::parse(&data, server);
        if let Ok(r) = telnet::parse(&data, server) {
            prop_assert!(r.options.len() <= 64);
            prop_assert!(r.banner.map_or(0, |b| b.len()) <= 256);
        }
    }
}
