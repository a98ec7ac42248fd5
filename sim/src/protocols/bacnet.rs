//! BACnet/IP (ASHRAE 135 Annex J) BVLC + NPDU + APDU for Who-Is/I-Am and ReadProperty.

fn bvlc(function: u8, npdu_apdu: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81, function];
    out.extend_from_slice(&((npdu_apdu.len() + 4) as u16).to_be_bytes());
    out.extend_from_slice(npdu_apdu);
    out
}

fn object_id(kind: u16, instance: u32) -> [u8; 4] {
    ((u32::from(kind) << 22) | (instance & 0x3f_ffff)).to_be_bytes()
}

pub const OBJECT_ANALOG_INPUT: u16 = 0;
pub const OBJECT_DEVICE: u16 = 8;
pub const PROP_PRESENT_VALUE: u8 = 85;

/// Broadcast Who-Is (unconfirmed service 8).
pub fn who_is() -> Vec<u8> {
    bvlc(0x0b, &[0x01, 0x20, 0xff, 0xff, 0x00, 0xff, 0x10, 0x08])
}

/// I-Am (unconfirmed service 0) for device `instance` of `vendor_id`.
pub fn i_am(instance: u32, vendor_id: u8) -> Vec<u8> {
    let mut a = vec![0x01, 0x00, 0x10, 0x00, 0xc4];
    a.extend_from_slice(&object_id(OBJECT_DEVICE, instance));
    a.extend_from_slice(&[0x22, 0x05, 0xc4, 0x91, 0x00, 0x21, vendor_id]);
    bvlc(0x0b, &a)
}

/// Confirmed ReadProperty request.
pub fn read_property(invoke_id: u8, kind: u16, instance: u32, property: u8) -> Vec<u8> {
    let mut a = vec![0x01, 0x04, 0x00, 0x05, invoke_id, 0x0c, 0x0c];
    a.extend_from_slice(&object_id(kind, instance));
    a.extend_from_slice(&[0x19, property]);
    bvlc(0x0a, &a)
}

/// ComplexACK carrying a REAL present value.
pub fn read_property_ack(invoke_id: u8, kind: u16, instance: u32, property: u8, value: f32) -> Vec<u8> {
    let mut a = vec![0x01, 0x00, 0x30, invoke_id, 0x0c, 0x0c];
    a.extend_from_slice(&object_id(kind, instance));
    a.extend_from_slice(&[0x19, property, 0x3e, 0x44]);
    a.extend_from_slice(&value.to_be_bytes());
    a.push(0x3f);
    bvlc(0x0a, &a)
}
