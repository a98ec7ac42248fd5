//! HL7 v2 messages framed with MLLP (0x0B ... 0x1C 0x0D), the way device gateways,
//! analyzers and interface engines exchange them.

/// Sender/receiver naming in MSH-3..6.
#[derive(Clone, Debug)]
pub struct Hl7Party {
    pub application: String,
    pub facility: String,
}

/// One observation for an OBX segment.
#[derive(Clone, Debug)]
pub struct Observation {
    pub code: &'static str,
    pub value: String,
    pub units: &'static str,
}

pub fn mllp(msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 3);
    out.push(0x0b);
    out.extend_from_slice(msg.as_bytes());
    out.extend_from_slice(&[0x1c, 0x0d]);
    out
}

fn msh(from: &Hl7Party, to: &Hl7Party, ts: &str, msg_type: &str, control_id: &str, version: &str) -> String {
    format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||{}|{}|P|{}|||AL|NE\r",
        from.application, from.facility, to.application, to.facility, ts, msg_type, control_id, version
    )
}

/// ORU^R01 with one OBX per observation; `device_id` goes in OBX-18 (equipment instance).
#[allow(clippy::too_many_arguments)]
pub fn oru_r01(
    from: &Hl7Party,
    to: &Hl7Party,
    ts: &str,
    control_id: &str,
    version: &str,
    patient_id: &str,
    location: &str,
    device_id: &str,
    obs: &[Observation],
) -> String {
    let mut m = msh(from, to, ts, "ORU^R01^ORU_R01", control_id, version);
    m.push_str(&format!("PID|||{patient_id}^^^HOSP^MR||TEST^SYNTHETIC\r"));
    m.push_str(&format!("PV1||I|{location}\r"));
    m.push_str(&format!("OBR|1|{control_id}||182777000^monitoring of patient^SCT|||{ts}\r"));
    for (i, o) in obs.iter().enumerate() {
        // OBX-1..18: set id, type, id, sub-id, value, units, range, flags, prob, nature,
        // status, date last normal, access checks, time, producer, observer, method, equipment.
        m.push_str(&format!("OBX|{}|NM|{}||{}|{}|||||R|||{}||||{}\r", i + 1, o.code, o.value, o.units, ts, device_id));
    }
    m
}

/// ACK^R01 (or other trigger) acknowledging `control_id`.
pub fn ack(
    from: &Hl7Party,
    to: &Hl7Party,
    ts: &str,
    trigger: &str,
    control_id: &str,
    ack_id: &str,
    version: &str,
) -> String {
    let mut m = msh(from, to, ts, &format!("ACK^{trigger}^ACK"), ack_id, version);
    m.push_str(&format!("MSA|AA|{control_id}\r"));
    m
}

/// ADT^A01 admit notification (from the EHR to departmental systems).
pub fn adt_a01(from: &Hl7Party, to: &Hl7Party, ts: &str, control_id: &str, patient_id: &str, location: &str) -> String {
    let mut m = msh(from, to, ts, "ADT^A01^ADT_A01", control_id, "2.5.1");
    m.push_str(&format!("EVN|A01|{ts}\r"));
    m.push_str(&format!("PID|||{patient_id}^^^HOSP^MR||TEST^SYNTHETIC||19700101|U\r"));
    m.push_str(&format!("PV1||I|{location}\r"));
    m
}

/// HL7/DICOM style timestamp (UTC, `YYYYMMDDHHMMSS`) from microseconds since the epoch.
pub fn timestamp(us: u64) -> String {
    let secs = us / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_formats_known_instant() {
        // 2024-03-12T10:00:00Z
        assert_eq!(timestamp(1_710_237_600_000_000), "20240312100000");
        assert_eq!(timestamp(0), "19700101000000");
    }

    #[test]
    fn oru_fields_land_where_hl7_puts_them() {
        let a = Hl7Party { application: "MONGW".into(), facility: "WARD".into() };
        let b = Hl7Party { application: "ENGINE".into(), facility: "HOSP".into() };
        let m = oru_r01(
            &a,
            &b,
            "20240101120000",
            "C1",
            "2.6",
            "P1",
            "W^1",
            "0009FBFFFE000001^MX800^EUI-64",
            &[Observation {
                code: "150456^MDC_PULS_OXIM_SAT_O2^MDC",
                value: "97".into(),
                units: "262688^MDC_DIM_PERCENT^MDC",
            }],
        );
        let msh: Vec<&str> = m.split('\r').next().unwrap_or("").split('|').collect();
        assert_eq!(msh[2], "MONGW"); // MSH-3 (MSH-1 is the separator itself)
        assert_eq!(msh[5], "HOSP"); // MSH-6
        assert_eq!(msh[8], "ORU^R01^ORU_R01"); // MSH-9
        assert_eq!(msh[11], "2.6"); // MSH-12
        let obx = m.split('\r').find(|s| s.starts_with("OBX")).unwrap_or("");
        assert_eq!(obx.split('|').nth(18), Some("0009FBFFFE000001^MX800^EUI-64"));
        let framed = mllp(&m);
        assert_eq!(framed[0], 0x0b);
        assert_eq!(&framed[framed.len() - 2..], &[0x1c, 0x0d]);
    }
}
