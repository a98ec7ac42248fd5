//! SSH banner dissector on real captures.
use crate::dissect_common::*;
use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::ssh;

#[test]
fn both_banners_attributed_to_their_senders() {
    let (found, errors) = run_dissector(&pcap("mgmt/lab-mgmt-ssh-dropbear.pcap"), &ssh::SshDissector);
    assert!(errors.is_empty(), "{errors:?}");
    let by_ip: Vec<(String, String)> = found
        .iter()
        .filter(|(_, f)| f.field == Field::SshBanner)
        .map(|(c, f)| (c.src_ip.unwrap().to_string(), f.value.clone()))
        .collect();
    assert!(by_ip.contains(&("10.77.0.102".into(), "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6".into())), "{by_ip:?}");
    assert!(by_ip.contains(&("10.77.0.100".into(), "SSH-2.0-dropbear_2022.83".into())));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut b = b"SSH-".to_vec();
        b.extend_from_slice(&bytes);
        let _ = ssh::parse(&b);
        let _ = ssh::parse(&bytes);
    }
}
