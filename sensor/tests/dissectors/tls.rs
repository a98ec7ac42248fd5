//! TLS dissector on real captures: SNI, ALPN, JA3, JA4, ServerHello and certificates.
//!
//! JA4 expectations come from FoxIO's own reference output for the same captures
//! (FoxIO-LLC/ja4, rust/ja4/src/snapshots/ja4__insta@tls-alpn-h2.pcap.snap and
//! ja4__insta@badcurveball.pcap.snap). tshark 4.0 has no JA4 field; JA3 is compared with
//! tshark in tests/tshark_diff/discovery.rs.
use crate::dissect_common::*;
use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::tls;

#[test]
fn ja4_matches_foxio_reference_tls12_h2() {
    let (found, errors) = run_dissector(&pcap("tls/tls-alpn-h2.pcap"), &tls::TlsDissector);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(values(&found, Field::Ja4), vec!["t12d4605h2_85626a9a5f7f_aaf95bb78ec9".to_string()]);
    assert_eq!(values(&found, Field::TlsSni), vec!["www.cloudflare.com".to_string()]);
    assert!(values(&found, Field::TlsAlpn)[0].starts_with("h2"));
    // TLS 1.2: the certificate is visible. FoxIO's snapshot lists the same CNs.
    assert_eq!(values(&found, Field::TlsCertSubject), vec!["cloudflare.com".to_string()]);
    assert_eq!(values(&found, Field::TlsCertIssuer), vec!["DigiCert ECC Extended Validation Server CA".to_string()]);
    assert_eq!(values(&found, Field::TlsServerVersion), vec!["TLSv1.2".to_string()]);
}

#[test]
fn ja4_matches_foxio_reference_tls13() {
    let (found, _) = run_dissector(&pcap("tls/badcurveball.pcap"), &tls::TlsDissector);
    assert_eq!(values(&found, Field::Ja4), vec!["t13d1615h2_46e7e9700bed_45f260be83e2".to_string()]);
    assert_eq!(values(&found, Field::TlsVersion), vec!["TLSv1.3".to_string()]);
}

#[test]
fn ja4_hand_computed_for_tls12_capture() {
    // tls/tls12.pcap, one ClientHello. Hand computation (documented so it can be checked):
    // JA4_a = "t" + version + "d" (SNI present) + cipher count + extension count + ALPN
    // first/last char, all GREASE removed; JA4_b/JA4_c = first 12 hex of SHA-256 over the
    // sorted 4-hex cipher list / sorted extensions without SNI and ALPN, "_", sig algs.
    let cap = load(&pcap("tls/tls12.pcap"));
    let s = cap.streams.iter().find(|s| tls::looks_like_tls(&s.data)).unwrap();
    let ch = tls::parse(&s.data).unwrap().client_hellos.remove(0);
    let ja4 = ch.ja4();
    let ciphers: Vec<u16> = ch.ciphers.iter().copied().filter(|c| !tls::is_grease(*c)).collect();
    let exts: Vec<u16> = ch.extensions.iter().copied().filter(|c| !tls::is_grease(*c)).collect();
    let a = format!(
        "t{}d{:02}{:02}",
        match ch.max_version() {
            0x0304 => "13",
            0x0303 => "12",
            _ => "??",
        },
        ciphers.len(),
        exts.len()
    );
    assert!(ja4.starts_with(&a), "{ja4} vs {a}");
    let mut sorted = ciphers.clone();
    sorted.sort();
    let text = sorted.iter().map(|c| format!("{c:04x}")).collect::<Vec<_>>().join(",");
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    assert_eq!(ja4.split('_').nth(1).unwrap(), &hex::encode(digest.as_ref())[..12]);
    // And JA3's MD5 is of the JA3 string.
    use md5::Digest;
    assert_eq!(ch.ja3_hash(), hex::encode(md5::Md5::digest(ch.ja3_string().as_bytes())));
}

#[test]
fn grease_is_ignored_in_fingerprints() {
    let cap = load(&pcap("tls/tls_grease.pcap"));
    let s = cap.streams.iter().find(|s| tls::looks_like_tls(&s.data)).unwrap();
    let ch = tls::parse(&s.data).unwrap().client_hellos.remove(0);
    assert!(ch.ciphers.iter().any(|c| tls::is_grease(*c)), "capture should contain GREASE");
    for part in ch.ja3_string().split(',') {
        for v in part.split('-').filter(|v| !v.is_empty()) {
            assert!(!tls::is_grease(v.parse().unwrap()), "GREASE {v} in JA3");
        }
    }
}

#[test]
fn non_alphanumeric_alpn_uses_hex_in_ja4() {
    let cap = load(&pcap("tls/tls-non-ascii-alpn.pcapng"));
    let s = cap.streams.iter().find(|s| tls::looks_like_tls(&s.data)).unwrap();
    let ch = tls::parse(&s.data).unwrap().client_hellos.remove(0);
    let alpn = ch.alpn.first().expect("alpn").clone();
    let ja4a = ch.ja4().split('_').next().unwrap().to_string();
    let tail = &ja4a[ja4a.len() - 2..];
    if !(alpn[0].is_ascii_alphanumeric() && alpn[alpn.len() - 1].is_ascii_alphanumeric()) {
        let h = hex::encode(&alpn);
        assert_eq!(tail, format!("{}{}", &h[..1], &h[h.len() - 1..]));
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = tls::parse(&bytes);
    }

    #[test]
    fn handshake_shaped_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..1024), ty in 1u8..12) {
        let mut m = vec![22, 3, 1, 0, 0, ty, 0, (body.len() >> 8) as u8, body.len() as u8];
        m.extend_from_slice(&body);
        let rl = m.len() - 5;
        m[3] = (rl >> 8) as u8;
        m[4] = rl as u8;
        let _ = tls::parse(&m);
    }

    #[test]
    fn truncations_of_a_real_client_hello(cut in 0usize..600) {
        let cap = load(&pcap("tls/tls12.pcap"));
        let s = cap.streams.iter().find(|s| tls::looks_like_tls(&s.data)).unwrap();
        let cut = cut.min(s.data.len());
        match tls::parse(&s.data[..cut]) {
            Ok(r) => prop_assert!(cut == s.data.len() || r.client_hellos.is_empty()),
            Err(e) => prop_assert!(!e.kind.is_empty()),
        }
    }
}
