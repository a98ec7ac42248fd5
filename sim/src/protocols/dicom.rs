//! DICOM upper-layer PDUs (PS3.8 §9.3) and DIMSE messages (PS3.7) for C-STORE and
//! worklist C-FIND, with command sets in Implicit VR Little Endian and data sets in Explicit
//! VR Little Endian, as real modalities and PACS exchange them.

pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
pub const DX_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1.1";
pub const US_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.6.1";
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
pub const MWL_FIND: &str = "1.2.840.10008.5.1.4.31";
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// One side's identity in an association.
#[derive(Clone, Debug)]
pub struct AeIdentity {
    pub ae_title: String,
    pub impl_class_uid: String,
    pub impl_version: String,
    pub max_pdu: u32,
}

/// A proposed presentation context: one abstract syntax, several transfer syntaxes.
#[derive(Clone, Debug)]
pub struct PresentationContext {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
}

fn ae16(title: &str) -> [u8; 16] {
    let mut out = [b' '; 16];
    for (o, b) in out.iter_mut().zip(title.bytes()) {
        *o = b;
    }
    out
}

fn item(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

fn pdu(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn user_info(me: &AeIdentity) -> Vec<u8> {
    let mut ui = Vec::new();
    item(&mut ui, 0x51, &me.max_pdu.to_be_bytes());
    item(&mut ui, 0x52, me.impl_class_uid.as_bytes());
    item(&mut ui, 0x55, me.impl_version.as_bytes());
    let mut out = Vec::new();
    item(&mut out, 0x50, &ui);
    out
}

fn assoc_fixed(called: &str, calling: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(512);
    b.extend_from_slice(&1u16.to_be_bytes()); // protocol version
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&ae16(called));
    b.extend_from_slice(&ae16(calling));
    b.extend_from_slice(&[0u8; 32]);
    item(&mut b, 0x10, APPLICATION_CONTEXT.as_bytes());
    b
}

/// A-ASSOCIATE-RQ from `calling` to the AE titled `called`.
pub fn associate_rq(called: &str, calling: &AeIdentity, contexts: &[PresentationContext]) -> Vec<u8> {
    let mut b = assoc_fixed(called, &calling.ae_title);
    for pc in contexts {
        let mut body = vec![pc.id, 0, 0, 0];
        item(&mut body, 0x30, pc.abstract_syntax.as_bytes());
        for ts in &pc.transfer_syntaxes {
            item(&mut body, 0x40, ts.as_bytes());
        }
        item(&mut b, 0x20, &body);
    }
    b.extend_from_slice(&user_info(calling));
    pdu(0x01, &b)
}

/// A-ASSOCIATE-AC: accepts every context with the transfer syntax given for it.
pub fn associate_ac(called: &AeIdentity, calling: &str, accepted: &[(u8, &str)]) -> Vec<u8> {
    let mut b = assoc_fixed(&called.ae_title, calling);
    for (id, ts) in accepted {
        let mut body = vec![*id, 0, 0, 0]; // result 0 = acceptance
        item(&mut body, 0x40, ts.as_bytes());
        item(&mut b, 0x21, &body);
    }
    b.extend_from_slice(&user_info(called));
    pdu(0x02, &b)
}

pub fn release_rq() -> Vec<u8> {
    pdu(0x05, &[0, 0, 0, 0])
}
pub fn release_rp() -> Vec<u8> {
    pdu(0x06, &[0, 0, 0, 0])
}

/// P-DATA-TF PDUs carrying one message (command or data set), fragmented so no PDU exceeds
/// the peer's `max_pdu`.
pub fn p_data(ctx_id: u8, is_command: bool, data: &[u8], max_pdu: u32) -> Vec<Vec<u8>> {
    let frag = (max_pdu as usize).saturating_sub(6).max(1);
    let chunks: Vec<&[u8]> = if data.is_empty() { vec![data] } else { data.chunks(frag).collect() };
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mch = u8::from(is_command) | if i + 1 == n { 0x02 } else { 0 };
            let mut body = Vec::with_capacity(c.len() + 6);
            body.extend_from_slice(&((c.len() + 2) as u32).to_be_bytes());
            body.push(ctx_id);
            body.push(mch);
            body.extend_from_slice(c);
            pdu(0x04, &body)
        })
        .collect()
}

fn even(v: &[u8], pad: u8) -> Vec<u8> {
    let mut v = v.to_vec();
    if v.len() % 2 == 1 {
        v.push(pad);
    }
    v
}

/// Implicit VR LE element.
fn imp(out: &mut Vec<u8>, group: u16, elem: u16, value: &[u8]) {
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// A command set: the elements after (0000,0000), prefixed with the group length.
fn command(elements: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut rest = Vec::new();
    for (e, v) in elements {
        imp(&mut rest, 0x0000, *e, v);
    }
    let mut out = Vec::with_capacity(rest.len() + 12);
    imp(&mut out, 0x0000, 0x0000, &(rest.len() as u32).to_le_bytes());
    out.extend_from_slice(&rest);
    out
}

fn uid(s: &str) -> Vec<u8> {
    even(s.as_bytes(), 0)
}

pub fn c_store_rq(sop_class: &str, sop_instance: &str, msg_id: u16) -> Vec<u8> {
    command(&[
        (0x0002, uid(sop_class)),
        (0x0100, 0x0001u16.to_le_bytes().to_vec()),
        (0x0110, msg_id.to_le_bytes().to_vec()),
        (0x0700, 0u16.to_le_bytes().to_vec()),
        (0x0800, 0u16.to_le_bytes().to_vec()),
        (0x1000, uid(sop_instance)),
    ])
}

pub fn c_store_rsp(sop_class: &str, sop_instance: &str, msg_id: u16) -> Vec<u8> {
    command(&[
        (0x0002, uid(sop_class)),
        (0x0100, 0x8001u16.to_le_bytes().to_vec()),
        (0x0120, msg_id.to_le_bytes().to_vec()),
        (0x0800, 0x0101u16.to_le_bytes().to_vec()),
        (0x0900, 0u16.to_le_bytes().to_vec()),
        (0x1000, uid(sop_instance)),
    ])
}

pub fn c_find_rq(sop_class: &str, msg_id: u16) -> Vec<u8> {
    command(&[
        (0x0002, uid(sop_class)),
        (0x0100, 0x0020u16.to_le_bytes().to_vec()),
        (0x0110, msg_id.to_le_bytes().to_vec()),
        (0x0700, 0u16.to_le_bytes().to_vec()),
        (0x0800, 0u16.to_le_bytes().to_vec()),
    ])
}

/// C-FIND-RSP: `pending` (0xFF00, a data set follows) or final success (0x0000, none).
pub fn c_find_rsp(sop_class: &str, msg_id: u16, pending: bool) -> Vec<u8> {
    let (dst, status) = if pending { (0x0000u16, 0xff00u16) } else { (0x0101, 0x0000) };
    command(&[
        (0x0002, uid(sop_class)),
        (0x0100, 0x8020u16.to_le_bytes().to_vec()),
        (0x0120, msg_id.to_le_bytes().to_vec()),
        (0x0800, dst.to_le_bytes().to_vec()),
        (0x0900, status.to_le_bytes().to_vec()),
    ])
}

/// Explicit VR LE data set builder.
#[derive(Default)]
pub struct DataSet(pub Vec<u8>);

impl DataSet {
    pub fn str(&mut self, group: u16, elem: u16, vr: &str, value: &str) -> &mut Self {
        let pad = if vr == "UI" { 0 } else { b' ' };
        let v = even(value.as_bytes(), pad);
        self.0.extend_from_slice(&group.to_le_bytes());
        self.0.extend_from_slice(&elem.to_le_bytes());
        self.0.extend_from_slice(vr.as_bytes());
        self.0.extend_from_slice(&(v.len() as u16).to_le_bytes());
        self.0.extend_from_slice(&v);
        self
    }
    pub fn us(&mut self, group: u16, elem: u16, value: u16) -> &mut Self {
        self.0.extend_from_slice(&group.to_le_bytes());
        self.0.extend_from_slice(&elem.to_le_bytes());
        self.0.extend_from_slice(b"US");
        self.0.extend_from_slice(&2u16.to_le_bytes());
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }
    /// A long-form element (OB, OW, SQ, UN, UT) with an explicit length.
    pub fn long(&mut self, group: u16, elem: u16, vr: &str, value: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&group.to_le_bytes());
        self.0.extend_from_slice(&elem.to_le_bytes());
        self.0.extend_from_slice(vr.as_bytes());
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.0.extend_from_slice(value);
        self
    }
    /// A sequence holding one item with the given (already encoded) data set.
    pub fn seq1(&mut self, group: u16, elem: u16, item_body: &[u8]) -> &mut Self {
        let mut v = Vec::with_capacity(item_body.len() + 8);
        v.extend_from_slice(&0xfffeu16.to_le_bytes());
        v.extend_from_slice(&0xe000u16.to_le_bytes());
        v.extend_from_slice(&(item_body.len() as u32).to_le_bytes());
        v.extend_from_slice(item_body);
        self.long(group, elem, "SQ", &v)
    }
}

/// The data set of one synthetic image: identifying header plus `pixel_bytes` of pixel data.
#[allow(clippy::too_many_arguments)]
pub fn image_dataset(
    sop_class: &str,
    sop_instance: &str,
    study_uid: &str,
    modality: &str,
    manufacturer: &str,
    model: &str,
    station: &str,
    patient_id: &str,
    pixels: &[u8],
) -> Vec<u8> {
    let mut d = DataSet::default();
    d.str(0x0008, 0x0016, "UI", sop_class)
        .str(0x0008, 0x0018, "UI", sop_instance)
        .str(0x0008, 0x0060, "CS", modality)
        .str(0x0008, 0x0070, "LO", manufacturer)
        .str(0x0008, 0x1010, "SH", station)
        .str(0x0008, 0x1090, "LO", model)
        .str(0x0010, 0x0010, "PN", "TEST^SYNTHETIC")
        .str(0x0010, 0x0020, "LO", patient_id)
        .str(0x0020, 0x000d, "UI", study_uid)
        .us(0x0028, 0x0010, 64)
        .us(0x0028, 0x0011, (pixels.len() / 128).max(1) as u16)
        .us(0x0028, 0x0100, 16)
        .long(0x7fe0, 0x0010, "OW", pixels);
    d.0
}

/// A modality worklist query identifier for `modality` scheduled on `station_ae`.
pub fn mwl_query(modality: &str, station_ae: &str) -> Vec<u8> {
    let mut sps = DataSet::default();
    sps.str(0x0008, 0x0060, "CS", modality).str(0x0040, 0x0001, "AE", station_ae).str(0x0040, 0x0002, "DA", "");
    let mut d = DataSet::default();
    d.str(0x0008, 0x0050, "SH", "")
        .str(0x0010, 0x0010, "PN", "")
        .str(0x0010, 0x0020, "LO", "")
        .seq1(0x0040, 0x0100, &sps.0);
    d.0
}

pub fn mwl_result(modality: &str, station_ae: &str, accession: &str, patient_id: &str) -> Vec<u8> {
    let mut sps = DataSet::default();
    sps.str(0x0008, 0x0060, "CS", modality).str(0x0040, 0x0001, "AE", station_ae).str(0x0040, 0x0002, "DA", "20240312");
    let mut d = DataSet::default();
    d.str(0x0008, 0x0050, "SH", accession)
        .str(0x0010, 0x0010, "PN", "TEST^SYNTHETIC")
        .str(0x0010, 0x0020, "LO", patient_id)
        .seq1(0x0040, 0x0100, &sps.0);
    d.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associate_rq_layout_matches_ps3_8() {
        let me = AeIdentity {
            ae_title: "CT01".into(),
            impl_class_uid: "1.2.840.113619.6.374".into(),
            impl_version: "GE_REV_1".into(),
            max_pdu: 16384,
        };
        let pc = PresentationContext {
            id: 1,
            abstract_syntax: CT_IMAGE_STORAGE.into(),
            transfer_syntaxes: vec![EXPLICIT_VR_LE.into()],
        };
        let p = associate_rq("PACS", &me, &[pc]);
        assert_eq!(p[0], 0x01);
        assert_eq!(u32::from_be_bytes([p[2], p[3], p[4], p[5]]) as usize, p.len() - 6);
        assert_eq!(&p[10..26], b"PACS            ");
        assert_eq!(&p[26..42], b"CT01            ");
        assert_eq!(p[74], 0x10);
    }

    #[test]
    fn p_data_fragments_respect_max_pdu() {
        let data = vec![7u8; 40_000];
        let pdus = p_data(3, false, &data, 16384);
        assert_eq!(pdus.len(), 3);
        assert!(pdus.iter().all(|p| p.len() <= 16384 + 6));
        assert_eq!(pdus.last().map(|p| p[11]), Some(0x02));
        assert_eq!(pdus[0][11], 0x00);
    }
}
