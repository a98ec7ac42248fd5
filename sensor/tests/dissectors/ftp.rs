//! FTP on the lab capture (/work/shared/pcaps/mgmt/lab-mgmt-ftp-vsftpd.pcap).

use crate::dissect_medical_support::*;

use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::ftp::{self, FtpDissector};
use wardline_sensor::dissect::{Dissector, Transport};

#[test]
fn banner_and_login_flag_without_values() {
    let msgs = messages(&read_packets(&pcap("mgmt/lab-mgmt-ftp-vsftpd.pcap")), per_packet);
    let (f, errors) = facts(&FtpDissector, &msgs);
    assert_eq!(errors, 0);
    let server = ip("10.77.0.101");
    // tshark: ftp.response.arg "(vsFTPd 3.0.3)".
    assert!(f.contains(&(server, Field::FtpBanner, "(vsFTPd 3.0.3)".into())), "{f:#?}");
    assert!(f.contains(&(server, Field::CleartextLogin, "ftp".into())));
    assert!(f.contains(&(ip("10.77.0.102"), Field::CleartextLogin, "ftp".into())));
    let rendered =
        format!("{f:?}{:?}", msgs.iter().map(|m| ftp::parse(&m.bytes, m.last.src_port == 21)).collect::<Vec<_>>());
    for secret in ["biomed", "Ecg#Upload2024"] {
        assert!(!rendered.contains(secret), "{secret} leaked: {rendered}");
    }
}

#[test]
fn multiline_greeting_and_non_ftp() {
    let rec = ftp::parse(b"220-Welcome to PACS export\r\n220 ready\r\n", true).unwrap();
    assert_eq!(rec.banner(), Some("Welcome to PACS export"));
    assert!(ftp::parse(b"\x16\x03\x01\x00", true).is_err());
    assert!(!FtpDissector.wants(&ctx(Transport::Tcp, 5000, 80), b"USER x\r\n"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096), server in any::<bool>()) {
        if let Ok(r) = ftp::parse(&data, server) { prop_assert!(r.lines.len() <= 64); }
    }
}
