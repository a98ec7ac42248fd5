//! HTTP/1.x dissector on real captures.
use crate::dissect_common::*;
use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::{http, Side};

#[test]
fn wget_and_apache() {
    let (found, errors) = run_dissector(&pcap("http/get.pcap"), &http::HttpDissector);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(values(&found, Field::HttpUserAgent), vec!["Wget/1.14 (darwin12.2.0)".to_string()]);
    assert_eq!(values(&found, Field::HttpServer), vec!["Apache/2.4.3 (Fedora)".to_string()]);
    // User-Agent is the client's (Src of the request), Server the server's (Src of the response).
    for (c, f) in &found {
        if f.field == Field::HttpServer {
            assert_eq!((f.side, c.src_port), (Side::Src, 80));
        }
        if f.field == Field::HttpUserAgent {
            assert_eq!(f.side, Side::Src);
            assert_eq!(c.dst_port, 80);
        }
    }
}

#[test]
fn basic_auth_is_flagged_never_stored() {
    let (found, _) = run_dissector(&pcap("http/http_auth.pcap"), &http::HttpDissector);
    assert_eq!(values(&found, Field::HttpBasicAuth), vec!["present".to_string()]);
    assert!(found.iter().all(|(_, f)| !f.value.contains("Basic ")));
}

#[test]
fn user_agent_split_over_two_segments_is_reassembled() {
    let (found, _) = run_dissector(&pcap("http/http_ua_splitted_in_two_pkts.pcapng"), &http::HttpDissector);
    assert!(values(&found, Field::HttpUserAgent)
        .iter()
        .any(|u| u.starts_with("Mozilla/5.0 (Linux; Android 6.0.1; SM-T805")));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = http::parse(&bytes);
        let _ = http::parse_stream(&bytes);
    }

    #[test]
    fn arbitrary_heads_never_panic(lines in proptest::collection::vec("[ -~]{0,40}", 0..20)) {
        let msg = format!("GET / HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"));
        prop_assert!(http::parse(msg.as_bytes()).is_ok());
        let _ = http::parse_stream(msg.as_bytes());
    }
}
