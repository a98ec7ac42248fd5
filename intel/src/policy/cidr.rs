//! IP networks written as CIDR ("10.20.0.0/16", "2001:db8::/32", or a bare address).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network. Host bits are cleared on parse, so "10.1.2.3/16" and
/// "10.1.0.0/16" are the same network (and print the same in the canonical form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The address as a 128-bit number (IPv4 in the low 32 bits).
    bits: u128,
    prefix: u8,
    v6: bool,
}

impl Cidr {
    /// The single-address network of `ip`.
    pub fn host(ip: IpAddr) -> Cidr {
        match ip {
            IpAddr::V4(a) => Cidr { bits: u32::from(a) as u128, prefix: 32, v6: false },
            IpAddr::V6(a) => Cidr { bits: u128::from(a), prefix: 128, v6: true },
        }
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) if !self.v6 => {
                let a = u32::from(*a) as u128;
                mask(a, self.prefix, 32) == self.bits
            }
            IpAddr::V6(a) if self.v6 => mask(u128::from(*a), self.prefix, 128) == self.bits,
            _ => false,
        }
    }

    /// Whether every address of `other` is in `self`.
    pub fn covers(&self, other: &Cidr) -> bool {
        let width = if self.v6 { 128 } else { 32 };
        self.v6 == other.v6 && other.prefix >= self.prefix && mask(other.bits, self.prefix, width) == self.bits
    }
}

fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let host_bits = (width - prefix) as u32;
    (bits >> host_bits) << host_bits
}

/// Why a string is not a network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an IP network: write an address with a prefix length, e.g. \"10.20.0.0/16\" or \"2001:db8::/32\""
)]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_string());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let host = Cidr::host(ip);
        let width = if host.v6 { 128 } else { 32 };
        let prefix = match len {
            // Only plain decimal digits: "+8" or " 8" would parse but reads as a typo.
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None => width,
        };
        if prefix > width {
            return Err(bad());
        }
        Ok(Cidr { bits: mask(host.bits, prefix, width), prefix, v6: host.v6 })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip: IpAddr = if self.v6 { IpAddr::V6(self.bits.into()) } else { IpAddr::V4((self.bits as u32).into()) };
        write!(f, "{ip}/{}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_contains_display() {
        let c: Cidr = "10.20.3.4/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.20.0.0/16");
        assert!(c.contains(&"10.20.255.1".parse().unwrap()));
        assert!(!c.contains(&"10.21.0.1".parse().unwrap()));
        assert!(!c.contains(&"::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"203.0.113.9".parse().unwrap()));
        let h: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(h.to_string(), "192.0.2.7/32");
        let v6: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert!(v6.contains(&"2001:db8:ffff::2".parse().unwrap()));
        assert!(all.covers(&c) && !c.covers(&all));
        for bad in ["10.0.0/8", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "x", "::/129", "10.0.0.0/8/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
