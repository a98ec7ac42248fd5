//! Imaging modalities (CT, MR, X-ray, ultrasound): DICOM associations that store studies
//! to the PACS and query the modality worklist.

use super::{Activity, DeviceSchedule, NextRun, SEC};
use crate::protocols::dicom;
use crate::wire::TcpConn;
use crate::world::World;
use rand::Rng;
use std::io::Write;
use wardline_common::Field;

/// Modalities store to the site's PACS and query its worklist server.
pub(super) fn schedule<W: Write>(plan: &mut DeviceSchedule<W>) {
    let modality = plan.dev;
    if !matches!(plan.device().profile.key, "ge_ct" | "siemens_mr" | "carestream_xray" | "sonosite_us") {
        return;
    }
    if let Some(pacs) = plan.role("pacs") {
        plan.after_boot(15, Activity::DicomStore { modality, pacs, nic: 0 });
        // A second NIC (dual-homed modality) stores studies too, with the same AE title.
        for nic in 1..=plan.device().extra_hosts.len() {
            plan.after_boot(15 + 20 * nic as u64, Activity::DicomStore { modality, pacs, nic });
        }
    }
    if let Some(mwl) = plan.role("mwl") {
        plan.after_boot(10, Activity::DicomWorklist { modality, mwl });
    }
}

/// A modality's DICOM identity: AE, implementation UID/version, SOP class, modality code and
/// the Manufacturer (0008,0070) string its data sets carry. AE titles are unique per device
/// (numbered by site for the one-per-site modalities), as PACS administrators configure them.
fn modality_identity(
    key: &str,
    dev: usize,
    site: usize,
) -> (dicom::AeIdentity, &'static str, &'static str, &'static str) {
    let (ae, uid, ver, sop, modality, manufacturer) = match key {
        "ge_ct" => {
            ("CT_REV", "1.2.840.113619.6.374", "REVOLUTION_CT_1", dicom::CT_IMAGE_STORAGE, "CT", "GE MEDICAL SYSTEMS")
        }
        "siemens_mr" => ("MR_AERA", "1.3.12.2.1107.5.2", "MR_VE11C", dicom::MR_IMAGE_STORAGE, "MR", "SIEMENS"),
        "carestream_xray" => (
            "DRX_EVO",
            "1.2.276.0.7230010.3.0.3.6.2",
            "OFFIS_DCMTK_362",
            dicom::DX_IMAGE_STORAGE,
            "DX",
            "Carestream Health",
        ),
        _ => ("SONOSITE", "1.2.276.0.7230010.3.0.3.6.0", "OFFIS_DCMTK_360", dicom::US_IMAGE_STORAGE, "US", "SonoSite"),
    };
    let ae_title = if key == "sonosite_us" { format!("US{dev:04}") } else { format!("{ae}{:02}", site + 1) };
    (
        dicom::AeIdentity { ae_title, impl_class_uid: uid.into(), impl_version: ver.into(), max_pdu: 16384 },
        sop,
        modality,
        manufacturer,
    )
}

fn identity_of<W: Write>(
    w: &World<W>,
    modality: usize,
) -> (dicom::AeIdentity, &'static str, &'static str, &'static str) {
    let d = &w.devices[modality];
    modality_identity(d.profile.key, modality, d.placed.0)
}

/// The PACS archive's DICOM identity (a DCMTK storescp).
fn pacs_identity() -> dicom::AeIdentity {
    dicom::AeIdentity {
        ae_title: "PACS_ARCHIVE".into(),
        impl_class_uid: "1.2.276.0.7230010.3.0.3.6.4".into(),
        impl_version: "OFFIS_DCMTK_364".into(),
        max_pdu: 16384,
    }
}

/// Sends PDUs one after another from one side, with short gaps.
fn send_pdus<W: Write>(
    w: &mut World<W>,
    conn: &mut TcpConn,
    from_client: bool,
    pdus: &[Vec<u8>],
) -> anyhow::Result<()> {
    for p in pdus {
        conn.send(&mut w.em, from_client, p)?;
        w.em.gap(100, 600);
    }
    Ok(())
}

/// The association facts the capture now carries about both ends.
fn record_dicom<W: Write>(
    w: &mut World<W>,
    modality: usize,
    pacs: usize,
    me: &dicom::AeIdentity,
    peer: &dicom::AeIdentity,
    sop: &str,
) {
    w.ev(modality, Field::DicomCallingAe, me.ae_title.clone());
    w.ev(modality, Field::DicomImplClassUid, me.impl_class_uid.clone());
    w.ev(modality, Field::DicomImplVersion, me.impl_version.clone());
    w.ev(modality, Field::DicomAbstractSyntax, sop);
    w.ev(pacs, Field::DicomCalledAe, peer.ae_title.clone());
    w.ev(pacs, Field::DicomImplClassUid, peer.impl_class_uid.clone());
    w.ev(pacs, Field::DicomImplVersion, peer.impl_version.clone());
    w.ev(pacs, Field::ListeningPort, "tcp/104");
}

/// A modality stores a study of 2 to 4 images to the PACS (C-STORE), every two minutes.
pub(super) fn store<W: Write>(w: &mut World<W>, modality: usize, pacs: usize, nic: usize) -> NextRun {
    let (me, sop, mod_code, manufacturer) = identity_of(w, modality);
    let peer = pacs_identity();
    let study_no = w.next();
    let root = me.impl_class_uid.clone();
    let study_uid = format!("{root}.2.{study_no}");
    let contexts = vec![
        dicom::PresentationContext {
            id: 1,
            abstract_syntax: sop.into(),
            transfer_syntaxes: vec![dicom::EXPLICIT_VR_LE.into(), dicom::IMPLICIT_VR_LE.into()],
        },
        dicom::PresentationContext {
            id: 3,
            abstract_syntax: dicom::VERIFICATION.into(),
            transfer_syntaxes: vec![dicom::IMPLICIT_VR_LE.into()],
        },
    ];
    let ch = w.devices[modality].hosts().nth(nic).unwrap_or(w.host(modality));
    let sh = w.host(pacs);
    let mut conn = TcpConn::open(&mut w.em, ch, sh, 104, "dicom")?;
    let rq = dicom::associate_rq(&peer.ae_title, &me, &contexts);
    let ac = dicom::associate_ac(&peer, &me.ae_title, &[(1, dicom::EXPLICIT_VR_LE), (3, dicom::IMPLICIT_VR_LE)]);
    conn.request(&mut w.em, &rq, &ac)?;
    let images = w.em.rng.gen_range(2..=4u16);
    let model = w.devices[modality].profile.model;
    let station = w.hostname(modality);
    for img in 1..=images {
        let instance = format!("{study_uid}.{img}");
        let px_len = w.em.rng.gen_range(3000..=12_000usize) & !1;
        let seed: u8 = w.em.rng.gen();
        let pixels: Vec<u8> =
            (0..px_len).map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add((i >> 7) as u8)).collect();
        let ds = dicom::image_dataset(
            sop,
            &instance,
            &study_uid,
            mod_code,
            manufacturer,
            model,
            &station,
            &format!("PID{:06}", study_no),
            &pixels,
        );
        let cmd = dicom::c_store_rq(sop, &instance, img);
        let mut pdus = dicom::p_data(1, true, &cmd, peer.max_pdu);
        pdus.extend(dicom::p_data(1, false, &ds, peer.max_pdu));
        send_pdus(w, &mut conn, true, &pdus)?;
        w.em.gap(2000, 15_000);
        let rsp = dicom::p_data(1, true, &dicom::c_store_rsp(sop, &instance, img), me.max_pdu);
        send_pdus(w, &mut conn, false, &rsp)?;
    }
    conn.request(&mut w.em, &dicom::release_rq(), &dicom::release_rp())?;
    conn.close(&mut w.em, true)?;
    record_dicom(w, modality, pacs, &me, &peer, sop);
    w.ev(modality, Field::DicomAppContext, dicom::APPLICATION_CONTEXT);
    Ok(Some(120 * SEC))
}

/// A modality queries the modality worklist (C-FIND), every five minutes.
pub(super) fn worklist<W: Write>(w: &mut World<W>, modality: usize, mwl: usize) -> NextRun {
    let (me, _, mod_code, _) = identity_of(w, modality);
    let peer = dicom::AeIdentity {
        ae_title: "MWL_SCP".into(),
        impl_class_uid: "1.2.826.0.1.3680043.9.3811.2.0.2".into(),
        impl_version: "PYNETDICOM_202".into(),
        max_pdu: 16384,
    };
    // Identifiers below are Explicit VR LE (DataSet), so that is the syntax negotiated.
    let ctx = [dicom::PresentationContext {
        id: 1,
        abstract_syntax: dicom::MWL_FIND.into(),
        transfer_syntaxes: vec![dicom::EXPLICIT_VR_LE.into(), dicom::IMPLICIT_VR_LE.into()],
    }];
    let (ch, sh) = (w.host(modality), w.host(mwl));
    let mut conn = TcpConn::open(&mut w.em, ch, sh, 104, "dicom")?;
    conn.request(
        &mut w.em,
        &dicom::associate_rq(&peer.ae_title, &me, &ctx),
        &dicom::associate_ac(&peer, &me.ae_title, &[(1, dicom::EXPLICIT_VR_LE)]),
    )?;
    let mut pdus = dicom::p_data(1, true, &dicom::c_find_rq(dicom::MWL_FIND, 1), peer.max_pdu);
    pdus.extend(dicom::p_data(1, false, &dicom::mwl_query(mod_code, &me.ae_title), peer.max_pdu));
    send_pdus(w, &mut conn, true, &pdus)?;
    let n = w.next();
    let mut rsp = Vec::new();
    for k in 0..2 {
        rsp.extend(dicom::p_data(1, true, &dicom::c_find_rsp(dicom::MWL_FIND, 1, true), me.max_pdu));
        rsp.extend(dicom::p_data(
            1,
            false,
            &dicom::mwl_result(mod_code, &me.ae_title, &format!("ACC{n:05}{k}"), &format!("PID{n:06}")),
            me.max_pdu,
        ));
    }
    rsp.extend(dicom::p_data(1, true, &dicom::c_find_rsp(dicom::MWL_FIND, 1, false), me.max_pdu));
    send_pdus(w, &mut conn, false, &rsp)?;
    conn.request(&mut w.em, &dicom::release_rq(), &dicom::release_rp())?;
    conn.close(&mut w.em, true)?;
    record_dicom(w, modality, mwl, &me, &peer, dicom::MWL_FIND);
    Ok(Some(300 * SEC))
}
