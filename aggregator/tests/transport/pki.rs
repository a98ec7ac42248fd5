//! Fleet PKI: what the admin commands write, and what the ingest reads back from it.

use std::path::Path;
use wardline_aggregator::pki::{self, SensorIdentity};
use wardline_aggregator::tls::load_certs;

fn der(path: &Path) -> Vec<u8> {
    load_certs(path).unwrap().remove(0).to_vec()
}

#[test]
fn sensor_certificate_roundtrips_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    pki::init_ca(&ca, "Mercy General fleet").unwrap();
    let out = dir.path().join("s");
    let pem = pki::issue_sensor(&ca, "bldg-a.icu_1", "north-campus", &out).unwrap();
    assert_eq!(pem, out.join("sensor.pem"));
    for f in ["sensor.pem", "sensor.key", "ca.pem"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), std::fs::read(ca.join("ca.pem")).unwrap());
    let cert = der(&pem);
    let id = pki::sensor_identity(&cert).unwrap();
    assert_eq!(id, SensorIdentity { sensor_id: "bldg-a.icu_1".into(), site: "north-campus".into() });

    // Subject names it for humans too, and it is signed by the CA.
    let (_, x) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let subject = x.subject().to_string();
    assert!(subject.contains("CN=bldg-a.icu_1") && subject.contains("OU=north-campus"), "{subject}");
    let ca_der = der(&ca.join("ca.pem"));
    let (_, cax) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(x.issuer(), cax.subject());
    x.verify_signature(Some(cax.public_key())).expect("signed by the fleet CA key");
    assert!(cax.is_ca());
    // A sensor certificate is no node certificate.
    assert!(pki::node_identity(&cert).is_err());
}

#[test]
fn node_certificate_names_hosts_and_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    pki::init_ca(&ca, "fleet").unwrap();
    let out = dir.path().join("n");
    let pem = pki::issue_node(&ca, 3, &["agg3.hospital.example".into(), "10.20.0.3".into(), "localhost".into()], &out)
        .unwrap();
    assert_eq!(pem, out.join("node.pem"));
    assert!(out.join("node.key").is_file() && out.join("ca.pem").is_file());
    let cert = der(&pem);
    assert_eq!(pki::node_identity(&cert).unwrap(), 3);
    assert!(pki::sensor_identity(&cert).is_err(), "a node certificate names no sensor");
    let (_, x) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let san = x.subject_alternative_name().unwrap().unwrap();
    use x509_parser::extensions::GeneralName;
    let mut names = Vec::new();
    for g in &san.value.general_names {
        names.push(match g {
            GeneralName::DNSName(d) => format!("dns:{d}"),
            GeneralName::URI(u) => format!("uri:{u}"),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                format!("ip:{}", std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            GeneralName::IPAddress(b) if b.len() == 16 => {
                format!("ip:{}", std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap()))
            }
            other => format!("other:{other}"),
        });
    }
    for want in [
        "dns:localhost",
        "dns:agg3.hospital.example",
        "ip:127.0.0.1",
        "ip:::1",
        "ip:10.20.0.3",
        "uri:urn:wardline:node:3",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    assert_eq!(names.len(), 6, "no duplicate SANs: {names:?}");
    assert!(pki::issue_node(&ca, 4, &["bad host!".into()], &dir.path().join("n4")).is_err());
}

#[test]
fn bad_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    pki::init_ca(&ca, "fleet").unwrap();
    let long = "x".repeat(65);
    for (id, site) in [
        ("", "north"),
        ("s1", ""),
        ("a:b", "north"),
        ("s1", "no:rth"),
        ("s 1", "n"),
        ("s/1", "n"),
        (long.as_str(), "n"),
        ("sé", "n"),
    ] {
        let out = dir.path().join("bad");
        let err = pki::issue_sensor(&ca, id, site, &out).expect_err(&format!("{id:?}/{site:?} must be refused"));
        assert!(err.to_string().contains("invalid"), "{err}");
        assert!(!out.join("sensor.pem").exists(), "nothing written for {id:?}");
    }
    assert!(pki::issue_sensor(&ca, &"x".repeat(64), "n", &dir.path().join("ok")).is_ok());
}

#[test]
fn ca_is_never_overwritten_and_keys_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    pki::init_ca(&ca, "fleet").unwrap();
    let before = std::fs::read(ca.join("ca.pem")).unwrap();
    let err = pki::init_ca(&ca, "fleet again").unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(ca.join("ca.pem")).unwrap(), before);
    pki::issue_sensor(&ca, "s1", "n", &dir.path().join("s")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [ca.join("ca.key"), dir.path().join("s/sensor.key")] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
    // Issuing from a folder with no CA names the missing file and the fix.
    let err = pki::issue_sensor(&dir.path().join("nope"), "s1", "n", &dir.path().join("x")).unwrap_err();
    assert!(format!("{err:#}").contains("ca-init"), "{err:#}");
}

#[test]
fn garbage_certificates_are_errors_not_panics() {
    assert!(pki::sensor_identity(&[]).is_err());
    assert!(pki::sensor_identity(&[0x30, 0x82, 0xff, 0xff, 0x00]).is_err());
    assert!(pki::sensor_identity(&vec![0x41; 4096]).is_err());
}
