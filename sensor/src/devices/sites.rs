//! Which site an address belongs to. The sensor's own site networks (`local_networks`) hold
//! hosts that may sit on its segment; a remote site's networks (`remote_sites`) hold hosts
//! that never do: the sensor sees them only through a router, so a MAC sending from such an
//! address is a router, and what is learned about the address belongs to a host of that
//! site.

use super::IpNet;
use std::net::IpAddr;

/// One remote site and its networks, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSite {
    pub site: String,
    pub networks: Vec<IpNet>,
}

/// Remote-site networks ready for matching: longest prefix first, so a nested network of
/// another site wins over the one around it.
#[derive(Clone, Debug, Default)]
pub struct RemoteSiteMap {
    /// (network, index into `sites`), sorted by prefix length, longest first.
    networks: Vec<(IpNet, u16)>,
    sites: Vec<String>,
}

/// Index of a site in a [`RemoteSiteMap`].
pub type SiteIndex = u16;

impl RemoteSiteMap {
    pub fn new(remote: &[RemoteSite]) -> RemoteSiteMap {
        let mut sites: Vec<String> = Vec::new();
        let mut networks = Vec::new();
        for r in remote {
            let i = match sites.iter().position(|s| *s == r.site) {
                Some(i) => i,
                None => {
                    sites.push(r.site.clone());
                    sites.len() - 1
                }
            };
            // More sites than u16 cannot be configured meaningfully; the rest never match.
            let Ok(i) = SiteIndex::try_from(i) else { continue };
            networks.extend(r.networks.iter().map(|n| (canonical(*n), i)));
        }
        // Stable: on equal prefixes the first configured wins (validation refuses that case).
        networks.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix));
        RemoteSiteMap { networks, sites }
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The remote site whose most specific network holds `ip`.
    pub fn site_of(&self, ip: &IpAddr) -> Option<SiteIndex> {
        self.networks.iter().find(|(n, _)| n.contains(ip)).map(|&(_, i)| i)
    }

    pub fn name(&self, i: SiteIndex) -> &str {
        &self.sites[i as usize]
    }
}

/// The network with the host bits cleared (10.41.3.4/16 → 10.41.0.0/16).
fn canonical(n: IpNet) -> IpNet {
    let addr = match n.addr {
        IpAddr::V4(a) => {
            let p = n.prefix.min(32) as u32;
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let p = n.prefix.min(128) as u32;
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    IpNet { addr, prefix: n.prefix }
}

/// Do two networks share any address?
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.addr) || b.contains(&a.addr)
}

/// Refuses a configuration where a remote site's network overlaps one of the sensor's own
/// networks (an address cannot be both on the segment and never on it), or where two sites
/// claim the same network. Nested networks of different remote sites are allowed: the most
/// specific one wins. The error names the entries.
pub fn check_remote_sites(local: &[IpNet], remote: &[RemoteSite]) -> Result<(), String> {
    for r in remote {
        if r.site.is_empty() {
            return Err("an entry has an empty site name".into());
        }
        if r.networks.is_empty() {
            return Err(format!("site {:?} lists no networks", r.site));
        }
        for n in &r.networks {
            if let Some(l) = local.iter().find(|l| overlaps(l, n)) {
                return Err(format!(
                    "network {} of site {:?} overlaps local network {}: an address is either on this \
                     sensor's site or behind a router, not both",
                    show(n),
                    r.site,
                    show(l)
                ));
            }
        }
    }
    for (i, a) in remote.iter().enumerate() {
        for b in &remote[i + 1..] {
            if a.site == b.site {
                continue;
            }
            for n in &a.networks {
                if let Some(m) = b.networks.iter().find(|m| canonical(**m) == canonical(*n)) {
                    return Err(format!(
                        "network {} is claimed by both site {:?} and site {:?}",
                        show(m),
                        a.site,
                        b.site
                    ));
                }
            }
        }
    }
    Ok(())
}

fn show(n: &IpNet) -> String {
    format!("{}/{}", n.addr, n.prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn site(name: &str, nets: &[&str]) -> RemoteSite {
        RemoteSite { site: name.into(), networks: nets.iter().map(|n| n.parse().unwrap()).collect() }
    }

    fn of<'a>(m: &'a RemoteSiteMap, ip: &str) -> Option<&'a str> {
        m.site_of(&ip.parse().unwrap()).map(|i| m.name(i))
    }

    #[test]
    fn longest_prefix_wins_for_v4_and_v6() {
        let m = RemoteSiteMap::new(&[
            site("region", &["10.40.0.0/14", "2001:db8::/32"]),
            site("clinic", &["10.41.0.0/16", "2001:db8:41::/48"]),
        ]);
        assert_eq!(of(&m, "10.41.2.3"), Some("clinic"));
        assert_eq!(of(&m, "10.42.2.3"), Some("region"));
        assert_eq!(of(&m, "10.44.0.1"), None);
        assert_eq!(of(&m, "2001:db8:41::7"), Some("clinic"));
        assert_eq!(of(&m, "2001:db8:42::7"), Some("region"));
        assert_eq!(of(&m, "2001:db9::1"), None);
        // An IPv4 network never holds an IPv6 address, even a mapped one.
        assert_eq!(of(&m, "::ffff:10.41.2.3"), None);
    }

    #[test]
    fn configuration_errors_name_the_entry() {
        let local: Vec<IpNet> = vec!["10.0.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let err = check_remote_sites(&local, &[site("clinic", &["10.0.128.0/17"])]).unwrap_err();
        assert!(err.contains("10.0.128.0/17") && err.contains("clinic") && err.contains("10.0.0.0/16"), "{err}");
        let err = check_remote_sites(&local, &[site("clinic", &["fd41::/16"])]).unwrap_err();
        assert!(err.contains("fd41::/16") && err.contains("fd00::/8"), "{err}");
        // A remote network around a local one overlaps too.
        assert!(check_remote_sites(&local, &[site("all", &["10.0.0.0/8"])]).is_err());
        let err =
            check_remote_sites(&local, &[site("a", &["10.41.0.0/16"]), site("b", &["10.41.9.9/16"])]).unwrap_err();
        assert!(err.contains("\"a\"") && err.contains("\"b\""), "{err}");
        assert!(check_remote_sites(&local, &[site("empty", &[])]).unwrap_err().contains("empty"));
        assert!(check_remote_sites(&local, &[site("a", &["10.40.0.0/14"]), site("b", &["10.41.0.0/16"])]).is_ok());
    }

    fn net_v4() -> impl Strategy<Value = IpNet> {
        (any::<u32>(), 8u8..=32).prop_map(|(a, p)| canonical(IpNet { addr: IpAddr::V4(a.into()), prefix: p }))
    }

    fn net_v6() -> impl Strategy<Value = IpNet> {
        (any::<u128>(), 16u8..=128).prop_map(|(a, p)| canonical(IpNet { addr: IpAddr::V6(a.into()), prefix: p }))
    }

    proptest! {
        /// Against a brute-force model: the answer is the site of the longest matching
        /// network (first configured on ties), for IPv4 and IPv6 alike.
        #[test]
        fn matches_the_longest_prefix_model(
            nets in proptest::collection::vec((prop_oneof![net_v4(), net_v6()], 0u8..4), 1..12),
            probes in proptest::collection::vec(prop_oneof![any::<u32>().prop_map(|a| IpAddr::V4(a.into())), any::<u128>().prop_map(|a| IpAddr::V6(a.into()))], 1..20),
        ) {
            let remote: Vec<RemoteSite> = nets.iter().map(|(n, s)| RemoteSite { site: format!("s{s}"), networks: vec![*n] }).collect();
            let m = RemoteSiteMap::new(&remote);
            // Probe inside each network too, not only random addresses.
            let inside = nets.iter().map(|(n, _)| n.addr);
            for ip in probes.into_iter().chain(inside) {
                let mut best: Option<(u8, &str)> = None;
                for r in &remote {
                    let n = r.networks[0];
                    if n.contains(&ip) && best.is_none_or(|(p, _)| n.prefix > p) {
                        best = Some((n.prefix, &r.site));
                    }
                }
                prop_assert_eq!(of(&m, &ip.to_string()), best.map(|(_, s)| s));
            }
        }

        /// Overlap is symmetric and means a shared address: the lower network's base is in both.
        #[test]
        fn overlap_means_a_shared_address(a in net_v4(), b in net_v4()) {
            prop_assert_eq!(overlaps(&a, &b), overlaps(&b, &a));
            let shared = if a.prefix >= b.prefix { a.addr } else { b.addr };
            prop_assert_eq!(overlaps(&a, &b), a.contains(&shared) && b.contains(&shared));
        }
    }
}
