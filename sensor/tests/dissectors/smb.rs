//! SMB1/2/3 negotiate and session setup on real captures (/work/shared/pcaps/smb).

use crate::dissect_medical_support::*;

use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::smb::{self, SmbDissector, SmbMessage};
use wardline_sensor::dissect::{Dissector, Transport};

fn smb_facts(rel: &str) -> std::collections::BTreeSet<(std::net::IpAddr, Field, String)> {
    let msgs = messages(&read_packets(&pcap(rel)), smb_framing);
    let (f, errors) = facts(&SmbDissector, &msgs);
    assert_eq!(errors, 0, "{rel}: every framed SMB message parses");
    f
}

fn values(f: &std::collections::BTreeSet<(std::net::IpAddr, Field, String)>, field: Field) -> Vec<String> {
    let mut v: Vec<String> = f.iter().filter(|(_, fl, _)| *fl == field).map(|(_, _, v)| v.clone()).collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn smb1_only_client_and_native_strings() {
    let f = smb_facts("smb/smbv1.pcap");
    let d = values(&f, Field::SmbDialect);
    assert!(d.contains(&"NT LM 0.12".to_string()) && d.contains(&"PC NETWORK PROGRAM 1.0".to_string()), "{d:?}");
    assert_eq!(values(&f, Field::SmbNativeOs), vec!["Windows 2000 2195", "Windows 7 Ultimate 7601 Service Pack 1"]);
    assert_eq!(values(&f, Field::SmbNativeLanman), vec!["Windows 2000 5.0", "Windows 7 Ultimate 6.1"]);
    // No SMB2 dialect offered: SMBv1 in use on both ends.
    let v1: Vec<_> = f.iter().filter(|(_, fl, _)| *fl == Field::Smb1InUse).collect();
    assert!(v1.iter().any(|(_, _, v)| v == "server") && v1.iter().any(|(_, _, v)| v == "client"));
}

#[test]
fn ascii_session_setup_strings() {
    let f = smb_facts("smb/smb-smb1-ascii.pcap");
    assert!(values(&f, Field::SmbNativeOs).contains(&"Windows Server 2008 R2 Standard 7601 Service Pack 1".to_string()));
    assert!(values(&f, Field::SmbNativeLanman).contains(&"Windows 2000 5.0".to_string()));
}

#[test]
fn smb2_negotiate_dialects_offered_and_chosen() {
    let f = smb_facts("smb/smb3_negotiate_context.pcap");
    let d = values(&f, Field::SmbDialect);
    for want in ["0x0202", "0x0210", "0x0300", "0x0302", "0x0311", "0x02ff"] {
        assert!(d.contains(&want.to_string()), "{want} missing from {d:?}");
    }
    let msgs = messages(&read_packets(&pcap("smb/smb3_negotiate_context.pcap")), smb_framing);
    let chosen: Vec<u16> = msgs
        .iter()
        .filter_map(|m| smb::parse(&m.bytes).ok())
        .flat_map(|r| r.messages)
        .filter_map(|m| match m {
            SmbMessage::Smb2(s) => s.chosen_dialect,
            _ => None,
        })
        .collect();
    assert_eq!(chosen, vec![0x02ff, 0x0311]);
    // The SMB1 negotiate here offers SMB 2.002: a probe, not SMBv1 use; no SMB1 follows.
    assert!(values(&f, Field::Smb1InUse).is_empty(), "{f:#?}");
}

#[test]
fn smb3_direct_negotiate() {
    let f = smb_facts("smb/smb3.pcap");
    assert_eq!(values(&f, Field::SmbDialect), vec!["0x0300"]);
}

#[test]
fn big_smb2_transfer_never_errors() {
    // 1.6 MB of reads/writes: frames must either parse or be skipped at non-boundaries.
    let f = smb_facts("smb/smb2.pcap");
    assert!(values(&f, Field::SmbDialect).contains(&"0x0202".to_string()));
}

#[test]
fn account_name_in_ntlm_session_setup_is_never_kept() {
    // Hand-built SMB1 Session Setup AndX request (WordCount 13, ASCII): passwords, account
    // "alice", domain "CORP", native OS, native LAN manager.
    let mut smb1 = vec![0xFF, b'S', b'M', b'B', 0x73, 0, 0, 0, 0, 0x18, 0x01, 0x00];
    smb1.extend_from_slice(&[0; 20]);
    smb1.push(13);
    let mut words = [0u16; 13];
    words[0] = 0x00FF;
    words[7] = 3; // OEM password length
    words[8] = 0;
    for w in words {
        smb1.extend_from_slice(&w.to_le_bytes());
    }
    let bytes: Vec<u8> = [&b"pw!"[..], b"alice\0", b"CORP\0", b"Unix\0", b"Samba 4.19\0"].concat();
    smb1.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    smb1.extend_from_slice(&bytes);
    let mut frame = vec![0, 0, 0, smb1.len() as u8];
    frame.extend_from_slice(&smb1);
    let rec = smb::parse(&frame).unwrap();
    let SmbMessage::Smb1(m) = &rec.messages[0] else { panic!() };
    assert_eq!(m.native_os.as_deref(), Some("Unix"));
    assert_eq!(m.native_lanman.as_deref(), Some("Samba 4.19"));
    let mut out = Vec::new();
    SmbDissector.dissect(&ctx(Transport::Tcp, 50000, 445), &frame, &mut out).unwrap();
    let all = format!("{rec:?}{out:?}");
    assert!(!all.contains("alice") && !all.contains("pw!") && !all.contains("CORP"), "{all}");
}

#[test]
fn shape_check() {
    let c = ctx(Transport::Tcp, 50000, 445);
    assert!(!SmbDissector.wants(&c, b"\x00\x00\x00\x10GET / HTTP/1.1\r\n"));
    assert!(SmbDissector.wants(&c, b"\x00\x00\x00\x40\xfeSMB"));
    assert!(smb::parse(b"\x00\x00\x00\x40\xfeSMB").is_err(), "truncated SMB2 header is an error");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096), sig in 0usize..3) {
        let _ = smb::parse(&data);
        let mut framed = vec![0, 0, (data.len() >> 8) as u8 + 1, data.len() as u8];
        framed.extend_from_slice([&b"\xffSMB"[..], b"\xfeSMB", b"\xfdSMB"][sig]);
        framed.extend_from_slice(&data);
        let _ = smb::parse(&framed);
    }

    #[test]
    fn truncations_of_real_messages_never_panic(cut in 0usize..600, idx in 0usize..8) {
        let msgs = messages(&read_packets(&pcap("smb/smb-smbclient.pcap")), smb_framing);
        let m = &msgs[idx % msgs.len()].bytes;
        let _ = smb::parse(&m[..cut.min(m.len())]);
    }

    #[test]
    fn absurd_counts_are_bounded(count in any::<u16>(), blob in any::<u16>()) {
        // SMB2 negotiate with DialectCount up to 65535 and SMB1 session setup with a huge blob length.
        let mut m = vec![0u8; 4];
        m.extend_from_slice(b"\xfeSMB");
        m.extend_from_slice(&[64, 0]);
        m.resize(4 + 64, 0);
        m.extend_from_slice(&36u16.to_le_bytes());
        m.extend_from_slice(&count.to_le_bytes());
        m.resize(m.len() + 40, 2);
        let n = m.len() - 4;
        m[2] = (n >> 8) as u8; m[3] = n as u8;
        let rec = smb::parse(&m).unwrap();
        if let SmbMessage::Smb2(s) = &rec.messages[0] { prop_assert!(s.dialects.len() <= 64); }
        let mut s1 = vec![0, 0, 0, 0, 0xFF, b'S', b'M', b'B', 0x73, 0, 0, 0, 0, 0x80, 0, 0x80];
        s1.resize(4 + 32, 0);
        s1.push(4);
        s1.extend_from_slice(&[0xFF, 0, 0, 0, 0, 0]);
        s1.extend_from_slice(&blob.to_le_bytes());
        s1.extend_from_slice(&[10, 0, 1, 2, 3]);
        let n = s1.len() - 4;
        s1[3] = n as u8;
        let _ = smb::parse(&s1);
    }
}
