//! IPv6 Neighbor Discovery (RFC 4861): the MAC–address bindings that neighbour
//! solicitations and advertisements state in their link-layer address options.
//!
//! `payload` is the ICMPv6 message from its type byte. A solicitation (135) binds its IP
//! source (unless unspecified, as in duplicate address detection) to its source
//! link-layer address option (type 1); an advertisement (136) binds its target address to
//! its target link-layer address option (type 2). tshark calls these `icmpv6.nd.ns.target_address`,
//! `icmpv6.nd.na.target_address` and `icmpv6.opt.linkaddr`.

use std::net::{IpAddr, Ipv6Addr};
use wardline_common::MacAddr;

/// ICMPv6 header (4) + reserved/flags (4) + target address (16).
pub const MIN_LEN: usize = 24;

/// A parsed NS or NA: its type, target and link-layer address option, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdpRecord {
    pub icmp_type: u8,
    pub target: Ipv6Addr,
    /// The source (NS) or target (NA) link-layer address option, when Ethernet-sized.
    pub lladdr: Option<MacAddr>,
}

/// Parse an NS or NA; None for other types, short messages or malformed options (an
/// option of length 0 would loop forever and makes the message invalid per RFC 4861).
pub fn parse(payload: &[u8]) -> Option<NdpRecord> {
    let icmp_type = *payload.first()?;
    let want_option = match icmp_type {
        135 => 1,
        136 => 2,
        _ => return None,
    };
    let target: [u8; 16] = payload.get(8..24)?.try_into().ok()?;
    let mut lladdr = None;
    let mut off = MIN_LEN;
    while off + 2 <= payload.len() {
        let (kind, units) = (payload[off], payload[off + 1] as usize);
        if units == 0 {
            return None;
        }
        let opt = payload.get(off..off + units * 8)?;
        if kind == want_option && units == 1 {
            lladdr = Some(MacAddr(opt[2..8].try_into().ok()?));
        }
        off += units * 8;
    }
    Some(NdpRecord { icmp_type, target: Ipv6Addr::from(target), lladdr })
}

/// The (MAC, IPv6 address) a message binds, given its IP source address.
pub fn binding(payload: &[u8], src: IpAddr) -> Option<(MacAddr, Ipv6Addr)> {
    let rec = parse(payload)?;
    let mac = rec.lladdr.filter(|m| m.is_device())?;
    let ip = match (rec.icmp_type, src) {
        (135, IpAddr::V6(s)) if !s.is_unspecified() => s,
        (136, _) => rec.target,
        _ => return None,
    };
    (!ip.is_unspecified() && !ip.is_multicast()).then_some((mac, ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(t: u8, target: &str, opt: Option<(u8, [u8; 6])>) -> Vec<u8> {
        let mut p = vec![t, 0, 0, 0, 0x60, 0, 0, 0];
        p.extend_from_slice(&target.parse::<Ipv6Addr>().unwrap().octets());
        if let Some((k, mac)) = opt {
            p.extend_from_slice(&[k, 1]);
            p.extend_from_slice(&mac);
        }
        p
    }

    const MAC: [u8; 6] = [0x00, 0x1b, 0x21, 1, 2, 3];

    #[test]
    fn advertisement_binds_its_target_and_solicitation_its_source() {
        let na = msg(136, "fe80::21b:21ff:fe01:203", Some((2, MAC)));
        let src: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(binding(&na, src), Some((MacAddr(MAC), "fe80::21b:21ff:fe01:203".parse().unwrap())));
        let ns = msg(135, "fe80::9", Some((1, MAC)));
        assert_eq!(binding(&ns, src), Some((MacAddr(MAC), "fe80::1".parse().unwrap())));
        // Duplicate address detection: unspecified source, nothing bound.
        assert_eq!(binding(&ns, "::".parse().unwrap()), None);
        // The wrong option kind for the message, no option, a zero-length option.
        assert_eq!(binding(&msg(136, "fe80::9", Some((1, MAC))), src), None);
        assert_eq!(binding(&msg(136, "fe80::9", None), src), None);
        let mut bad = msg(136, "fe80::9", Some((2, MAC)));
        bad[25] = 0;
        assert_eq!(parse(&bad), None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), t in 135u8..137) {
            let mut b = bytes;
            if !b.is_empty() { b[0] = t; }
            let _ = binding(&b, "fe80::1".parse().unwrap());
        }
    }
}
