//! Small network value types shared by every crate.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// An Ethernet MAC address. Displayed as lower-case colon-separated hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const ZERO: MacAddr = MacAddr([0; 6]);
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// The first three bytes: the IEEE organisationally unique identifier.
    pub fn oui(&self) -> [u8; 3] {
        [self.0[0], self.0[1], self.0[2]]
    }
    /// Group (multicast/broadcast) addresses never name a single device.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
    /// Locally administered (randomised or virtual) addresses carry no vendor.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
    /// A unicast, non-zero address that can identify one device.
    pub fn is_device(&self) -> bool {
        !self.is_multicast() && *self != Self::ZERO
    }
}

impl MacAddr {
    /// The canonical text, "00:1a:2b:3c:4d:5e". By hand, not six `{:02x}`: every flow row
    /// written to ClickHouse formats two MACs, and the formatting machinery was 5 % of a
    /// leader's CPU during ingest.
    fn text_bytes(&self) -> [u8; 17] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b':'; 17];
        for (i, byte) in self.0.iter().enumerate() {
            out[i * 3] = HEX[usize::from(byte >> 4)];
            out[i * 3 + 1] = HEX[usize::from(byte & 0x0f)];
        }
        out
    }

    /// The canonical text as a string of exactly its length (what `to_string` gives, in
    /// one allocation and without the formatting machinery).
    pub fn to_text(&self) -> String {
        // Only ASCII hex digits and colons are written.
        self.text_bytes().iter().map(|b| char::from(*b)).collect()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.text_bytes()).map_err(|_| fmt::Error)?)
    }
}

/// An address's display text (`IpAddr`'s `Display`), IPv4 written by hand: two per flow row,
/// and the formatting machinery was the largest part of building rows on a leader.
pub fn ip_text(ip: &std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if o >= 100 {
                    s.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    s.push(char::from(b'0' + o / 10 % 10));
                }
                s.push(char::from(b'0' + o % 10));
            }
            s
        }
        std::net::IpAddr::V6(v6) => v6.to_string(),
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

// Human-readable formats (JSON, TOML) get "00:1a:2b:3c:4d:5e"; compact binary formats
// (bincode on the wire and in storage) get the six bytes.
impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(MacAddr(<[u8; 6]>::deserialize(d)?))
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?}: expected six hex bytes such as 00:1a:2b:3c:4d:5e")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(MacParseError(s.to_string()));
        }
        let mut out = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(MacParseError(s.to_string()));
            }
            out[i] = u8::from_str_radix(p, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_lowercase_hex_pairs_for_every_byte_value() {
        for b in 0..=255u8 {
            let m = MacAddr([b, 0xff - b, b ^ 0x5a, 0, 0xff, b.rotate_left(3)]);
            let bytes = m.0;
            let expected = bytes.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":");
            assert_eq!(m.to_string(), expected);
            assert_eq!(m.to_text(), expected);
            assert_eq!(m.to_string().parse::<MacAddr>().unwrap(), m);
        }
    }

    proptest::proptest! {
        /// The hand-written address text is exactly `Display`'s, for every address.
        #[test]
        fn ip_text_is_the_display_text(v4 in proptest::prelude::any::<[u8; 4]>(), v6 in proptest::prelude::any::<[u8; 16]>()) {
            let v4 = std::net::IpAddr::from(v4);
            proptest::prop_assert_eq!(ip_text(&v4), v4.to_string());
            let v6 = std::net::IpAddr::from(v6);
            proptest::prop_assert_eq!(ip_text(&v6), v6.to_string());
        }
    }

    #[test]
    fn ip_text_covers_each_octet_width() {
        for o in [0u8, 9, 10, 99, 100, 199, 200, 255] {
            let ip = std::net::IpAddr::from([o, 0, o, 255]);
            assert_eq!(ip_text(&ip), ip.to_string());
        }
    }

    #[test]
    fn display_parse_roundtrip() {
        let m: MacAddr = "00:1A:2b:3c:4d:5e".parse().unwrap();
        assert_eq!(m.to_string(), "00:1a:2b:3c:4d:5e");
        assert!(m.is_device());
        assert!(!MacAddr::BROADCAST.is_device());
        assert!("00:1a:2b".parse::<MacAddr>().is_err());
        assert!("zz:1a:2b:3c:4d:5e".parse::<MacAddr>().is_err());
    }

    #[test]
    fn serde_is_text_in_json_and_bytes_in_bincode() {
        let m = MacAddr([0, 0x09, 0xfb, 1, 2, 3]);
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"00:09:fb:01:02:03\"");
        assert_eq!(serde_json::from_str::<MacAddr>("\"00:09:FB:01:02:03\"").unwrap(), m);
        assert!(serde_json::from_str::<MacAddr>("\"nonsense\"").is_err());
        let cfg = bincode::config::standard();
        let b = bincode::serde::encode_to_vec(m, cfg).unwrap();
        assert_eq!(b.len(), 6);
        let (back, _): (MacAddr, usize) = bincode::serde::decode_from_slice(&b, cfg).unwrap();
        assert_eq!(back, m);
    }
}
