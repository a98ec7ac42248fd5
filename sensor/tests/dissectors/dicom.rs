//! DICOM upper layer on real captures (/work/shared/pcaps/dicom) plus spec-built PDUs for
//! the PDUs the captures lack (A-ASSOCIATE-RJ, A-ABORT), and property tests.

use crate::dissect_medical_support::*;

use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::dicom::{self, DicomDissector, DicomPdu, DicomTlsDissector};
use wardline_sensor::dissect::{Dissector, Transport};

fn dicom_messages(rel: &str) -> Vec<Message> {
    messages(&read_packets(&pcap(rel)), dicom_framing)
}

fn has(
    facts: &std::collections::BTreeSet<(std::net::IpAddr, Field, String)>,
    who: &str,
    field: Field,
    value: &str,
) -> bool {
    facts.contains(&(ip(who), field, value.to_string()))
}

#[test]
fn dcmtk_store_association_sides_and_stack() {
    let msgs = dicom_messages("dicom/lab-dicom-dcmtk-store.pcap");
    let (f, errors) = facts(&DicomDissector, &msgs);
    assert_eq!(errors, 0, "every reassembled PDU parses");
    // CT 10.77.0.21 requests: it is the calling AE and runs DCMTK 3.6.7.
    assert!(has(&f, "10.77.0.21", Field::DicomCallingAe, "CT_ROOM2"), "{f:#?}");
    assert!(has(&f, "10.77.0.21", Field::DicomImplClassUid, "1.2.276.0.7230010.3.0.3.6.7"));
    assert!(has(&f, "10.77.0.21", Field::DicomImplVersion, "OFFIS_DCMTK_367"));
    assert!(has(&f, "10.77.0.21", Field::DicomAppContext, "1.2.840.10008.3.1.1.1"));
    // Verification SOP class offered for the C-ECHO.
    assert!(has(&f, "10.77.0.21", Field::DicomAbstractSyntax, "1.2.840.10008.1.1"));
    // PACS 10.77.0.10 is called (from the RQ) and answers as itself (from the AC).
    assert!(has(&f, "10.77.0.10", Field::DicomCalledAe, "PACS_ARCHIVE"));
    assert!(has(&f, "10.77.0.10", Field::DicomImplVersion, "OFFIS_DCMTK_367"));
    // The US on another association.
    assert!(has(&f, "10.77.0.31", Field::DicomCallingAe, "US_WARD5"));
    // The acceptor never gets the requestor's AE as calling.
    assert!(!has(&f, "10.77.0.10", Field::DicomCallingAe, "PACS_ARCHIVE"));
}

#[test]
fn mixed_stacks_each_side_keeps_its_own_implementation() {
    let msgs = dicom_messages("dicom/lab-dicom-pynetdicom-to-dcmtk.pcap");
    let (f, _) = facts(&DicomDissector, &msgs);
    assert!(has(&f, "10.77.0.15", Field::DicomImplVersion, "PYNETDICOM_304"));
    assert!(has(&f, "10.77.0.15", Field::DicomImplClassUid, "1.2.826.0.1.3680043.9.3811.3.0.4"));
    assert!(has(&f, "10.77.0.16", Field::DicomImplVersion, "OFFIS_DCMTK_367"));
    assert!(!has(&f, "10.77.0.16", Field::DicomImplVersion, "PYNETDICOM_304"));
    assert!(!has(&f, "10.77.0.15", Field::DicomImplVersion, "OFFIS_DCMTK_367"));
}

#[test]
fn every_pdu_kind_in_a_session_is_typed_and_pdata_only_counted() {
    let msgs = dicom_messages("dicom/lab-dicom-dcmtk-mwl.pcap");
    let mut kinds = std::collections::BTreeSet::new();
    let mut pdvs = 0u32;
    let mut bytes = 0u64;
    for m in &msgs {
        let rec = dicom::parse(&m.bytes).expect("reassembled PDU parses");
        for pdu in rec.pdus {
            kinds.insert(match pdu {
                DicomPdu::AssociateRq(a) => {
                    assert_eq!(a.max_pdu_len, Some(16384));
                    assert_eq!(a.called_ae, "RIS_WORKLIST");
                    "rq"
                }
                DicomPdu::AssociateAc(a) => {
                    assert!(!a.context_results.is_empty() && a.abstract_syntaxes.is_empty());
                    "ac"
                }
                DicomPdu::AssociateRj { .. } => "rj",
                DicomPdu::PData { pdv_count, pdv_bytes, truncated } => {
                    assert!(!truncated);
                    pdvs += pdv_count;
                    bytes += pdv_bytes;
                    "pdata"
                }
                DicomPdu::ReleaseRq => "release-rq",
                DicomPdu::ReleaseRp => "release-rp",
                DicomPdu::Abort { .. } => "abort",
            });
        }
    }
    for k in ["rq", "ac", "pdata", "release-rq", "release-rp"] {
        assert!(kinds.contains(k), "missing {k} in {kinds:?}");
    }
    // tshark counts the C-FIND request, 2 pending + 1 final response per association, each a command+data set.
    assert!(pdvs >= 8, "PDVs counted: {pdvs}");
    assert!(bytes > 0);
}

#[test]
fn request_spanning_two_segments_needs_pdu_len_reassembly() {
    let pkts = read_packets(&pcap("dicom/dicom_arq_2_get_testclient.pcap"));
    let first = pkts.iter().find(|p| !p.payload.is_empty()).expect("a data segment");
    let total = dicom::pdu_len(&first.payload).expect("PDU header in the first segment");
    assert!(total > first.payload.len(), "this capture's RQ spans segments");
    assert!(matches!(dicom::parse(&first.payload), Err(e) if e.kind == "truncated"));
    let msgs = messages(&pkts, dicom_framing);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].bytes.len(), total);
    let rec = dicom::parse(&msgs[0].bytes).expect("reassembled RQ parses");
    let DicomPdu::AssociateRq(a) = &rec.pdus[0] else { panic!("expected RQ: {rec:?}") };
    assert_eq!((a.called_ae.as_str(), a.calling_ae.as_str()), ("testserver", "testclient"));
    assert_eq!(a.impl_class_uid.as_deref(), Some("1.2.826.0.1.3680043.9.7133.1.1"));
    assert_eq!(a.impl_version.as_deref(), Some("GODICOM_1_1"));
    assert_eq!(a.max_pdu_len, Some(4194304));
    assert!(a.abstract_syntaxes.len() > 10, "C-GET offers many storage SOP classes: {}", a.abstract_syntaxes.len());
}

#[test]
fn reject_and_abort_per_ps3_8() {
    // A-ASSOCIATE-RJ: result 1 (permanent), source 1 (service user), reason 7 (called AE not recognised).
    let rj = [0x03, 0, 0, 0, 0, 4, 0, 1, 1, 7];
    assert_eq!(dicom::parse(&rj).unwrap().pdus, vec![DicomPdu::AssociateRj { result: 1, source: 1, reason: 7 }]);
    let abort = [0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6];
    let release = [0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    let both: Vec<u8> = abort.iter().chain(&release).copied().collect();
    assert_eq!(dicom::parse(&both).unwrap().pdus, vec![DicomPdu::Abort { source: 2, reason: 6 }, DicomPdu::ReleaseRq]);
    // Fixed-size PDUs with the wrong length are errors, not guesses.
    assert_eq!(dicom::parse(&[0x05, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0]).unwrap_err().kind, "bad_length");
    assert_eq!(dicom::parse(&[0x09, 0, 0, 0, 0, 4, 0, 0, 0, 0]).unwrap_err().kind, "bad_pdu_type");
}

#[test]
fn dicom_tls_is_recognised_by_port_and_record_header_only() {
    let client_hello_start = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0, 0, 1, 0];
    let c = ctx(Transport::Tcp, 50000, 2762);
    assert!(DicomTlsDissector.wants(&c, &client_hello_start));
    let mut out = Vec::new();
    DicomTlsDissector.dissect(&c, &client_hello_start, &mut out).unwrap();
    assert!(out.iter().any(|f| f.field == Field::DicomTls && f.side == wardline_sensor::dissect::Side::Dst));
    assert!(!DicomTlsDissector.wants(&ctx(Transport::Tcp, 50000, 443), &client_hello_start));
    assert!(!DicomTlsDissector.wants(&c, b"GET / HTTP/1.1\r\n"));
}

#[test]
fn wants_only_pdu_shapes() {
    let c = ctx(Transport::Tcp, 40000, 104);
    assert!(!DicomDissector.wants(&c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(!DicomDissector.wants(&c, &[0x01, 0, 0, 0, 0, 4]), "an association body is at least 68 bytes");
    let rq = &dicom_messages("dicom/lab-dicom-orthanc.pcap")[0].bytes;
    assert!(DicomDissector.wants(&ctx(Transport::Tcp, 40000, 4242), rq));
    assert!(DicomDissector.wants(&ctx(Transport::Tcp, 40000, 31337), rq), "RQ shape is recognised off-port");
}

fn real_rq() -> Vec<u8> {
    dicom_messages("dicom/lab-dicom-pynetdicom.pcap")[0].bytes.clone()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = dicom::parse(&data);
        let _ = dicom::pdu_len(&data);
        let mut out = Vec::new();
        let c = ctx(Transport::Tcp, 1, 104);
        if DicomDissector.wants(&c, &data) { let _ = DicomDissector.dissect(&c, &data, &mut out); }
    }

    #[test]
    fn truncations_and_corruptions_of_a_real_rq_never_panic(cut in 0usize..2000, at in 0usize..2000, byte in any::<u8>()) {
        let mut rq = real_rq();
        let at = at % rq.len();
        rq[at] = byte;
        let cut = cut.min(rq.len());
        let r = dicom::parse(&rq[..cut]);
        if cut < 6 { prop_assert!(r.is_err()); }
    }

    #[test]
    fn absurd_lengths_are_bounded(len in any::<u32>(), item_len in any::<u16>(), pdu_type in 1u8..=7) {
        // Declared PDU/item lengths far beyond the bytes present must not allocate or loop.
        let mut b = vec![pdu_type, 0];
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&[0, 1, 0, 0]);
        b.extend(std::iter::repeat_n(b' ', 64));
        b.extend_from_slice(&[0x20, 0, (item_len >> 8) as u8, item_len as u8, 1, 0, 0, 0]);
        let r = dicom::parse(&b);
        prop_assert_eq!(dicom::pdu_len(&b), Some(6 + len as usize));
        if let Ok(rec) = r { prop_assert!(rec.pdus.len() <= 256); }
    }
}
