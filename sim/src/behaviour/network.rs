//! Network services every kind of device uses: address assignment at boot (DHCP through
//! the core switch's relay, or a gratuitous ARP), LLDP from the core switches, DNS lookups,
//! TLS sessions, NTP and syslog.

use super::{Activity, DeviceSchedule, NextRun, TlsPeer, DOMAIN, SEC};
use crate::profiles::DhcpStyle;
use crate::protocols::{dhcp, dns, lldp, tls, vendor};
use crate::topology::DeviceEvent;
use crate::wire::frames::{ETHERTYPE_LLDP, L2};
use crate::wire::{HostId, TcpConn};
use crate::world::World;
use rand::Rng;
use std::io::Write;
use std::net::Ipv4Addr;
use wardline_common::Field;

/// Core switches announce themselves on every zone; servers send syslog to the DC.
pub(super) fn schedule<W: Write>(plan: &mut DeviceSchedule<W>) {
    let dev = plan.dev;
    match plan.device().profile.key {
        "cisco_router" => {
            let zones = plan.world.sites[plan.device().site].zones.len();
            for zone in 0..zones {
                let at = SEC / 4 + zone as u64 * 1000;
                plan.at(at, Activity::Lldp { router: dev, zone });
            }
        }
        "dell_pacs" | "dell_mwl" | "hp_lis" | "dell_nvr" => {
            if let Some(dc) = plan.role("dc") {
                plan.after_boot(50, Activity::Syslog { dev, server: dc });
            }
        }
        _ => {}
    }
}

pub(super) fn lldp<W: Write>(w: &mut World<W>, router: usize, zone: usize) -> NextRun {
    let site = w.devices[router].site;
    let z = &w.sites[site].zones[zone];
    let rh = z.router_host;
    let h = &w.em.hosts[rh];
    let (mac, vlan, ip) = (h.mac, h.vlan, h.ip);
    let name = w.hostname(router);
    let descr = "Cisco IOS Software [Bengaluru], Catalyst L3 Switch Software (CAT9K_IOSXE), Version 17.6.4";
    let body = lldp::frame_body(mac, &format!("Gi1/0/{}", zone + 1), &name, descr, ip.octets());
    let l2 = L2 { src: mac, dst: lldp::LLDP_MULTICAST, vlan };
    w.em.raw(rh, l2, ETHERTYPE_LLDP, &body)?;
    w.ev(router, Field::LldpSystemName, name);
    w.ev(router, Field::LldpSystemDescription, descr);
    Ok(Some(30 * SEC))
}

/// A TLS session from `client` to `peer`.
pub(super) fn tls<W: Write>(
    w: &mut World<W>,
    client: usize,
    peer: TlsPeer,
    sni: &str,
    profile: &tls::ClientProfile,
) -> NextRun {
    let sh = match peer {
        TlsPeer::Device(s) => w.host(s),
        TlsPeer::Internet(ip) => {
            dns_lookup(w, client, sni, Some(ip))?;
            w.external(ip)
        }
    };
    let ch = w.host(client);
    tls_session(w, ch, sh, sni, profile, 4)?;
    w.ev(client, Field::TlsSni, sni);
    if let TlsPeer::Device(s) = peer {
        w.ev(s, Field::ListeningPort, "tcp/443");
    }
    Ok(Some(120 * SEC))
}

pub(super) fn ntp<W: Write>(w: &mut World<W>, client: usize, server: usize) -> NextRun {
    let (ch, sh) = (w.host(client), w.host(server));
    let now = w.em.now_us;
    w.em.udp_exchange(ch, sh, 123, 123, &vendor::ntp(true, now), Some(&vendor::ntp(false, now + 800)), "ntp")?;
    Ok(Some(64 * SEC))
}

pub(super) fn syslog<W: Write>(w: &mut World<W>, dev: usize, server: usize) -> NextRun {
    let host = w.hostname(dev);
    let msg = vendor::syslog(134, "Mar 12 10:00:00", &host, "storescp", "association accepted");
    let (dh, sh) = (w.host(dev), w.host(server));
    w.em.udp_exchange(dh, sh, 514, 514, &msg, None, "syslog")?;
    Ok(Some(60 * SEC))
}

/// One TLS session to port 443: handshake, `exchanges` request/response records, close.
pub(super) fn tls_session<W: Write>(
    w: &mut World<W>,
    c: HostId,
    s: HostId,
    sni: &str,
    p: &tls::ClientProfile,
    exchanges: usize,
) -> anyhow::Result<()> {
    let mut random = [0u8; 32];
    w.em.rng.fill(&mut random);
    let mut conn = TcpConn::open(&mut w.em, c, s, 443, "tls")?;
    conn.request(&mut w.em, &tls::client_hello(p, sni, random), &tls::server_hello(p.ciphers[0].max(0xc02f), random))?;
    conn.request(&mut w.em, &tls::change_cipher_and_finished(0x3c), &tls::change_cipher_and_finished(0x77))?;
    for i in 0..exchanges {
        conn.request(
            &mut w.em,
            &tls::application_data(300 + i * 40, &[0x17, 0x42, 0x99]),
            &tls::application_data(2500 + i * 900, &[0x8e, 0x23]),
        )?;
    }
    conn.close(&mut w.em, true)
}

/// A DNS query for `name` to the site's domain controller, if the site has one.
pub(super) fn dns_lookup<W: Write>(
    w: &mut World<W>,
    dev: usize,
    name: &str,
    answer: Option<Ipv4Addr>,
) -> anyhow::Result<()> {
    let Some(dc) = w.role(w.devices[dev].site, "dc") else {
        return Ok(());
    };
    let id: u16 = w.em.rng.gen();
    let (c, s) = (w.host(dev), w.host(dc));
    let port = w.em.ephemeral_port(c);
    w.em.udp_exchange(c, s, port, 53, &dns::query(id, name), Some(&dns::response(id, name, answer)), "dns")?;
    w.ev(dev, Field::DnsQuery, name);
    Ok(())
}

/// DHCP DORA for DHCP clients (relayed by the core switch across VLANs; served by its own
/// router at a routed site), a gratuitous ARP for statically addressed devices and for every
/// further NIC. Each announced address becomes a binding of the ground truth.
pub(super) fn boot<W: Write>(w: &mut World<W>, dev: usize) -> anyhow::Result<()> {
    let d = &w.devices[dev];
    if d.profile.key == "cisco_router" {
        return Ok(());
    }
    let extra: Vec<HostId> = d.extra_hosts.clone();
    match (d.profile.dhcp, dhcp_server(w, dev)) {
        (Some(style), Some(server)) => dhcp_dora(w, dev, style, server)?,
        _ => announce_by_arp(w, dev, w.host(dev))?,
    }
    for h in extra {
        announce_by_arp(w, dev, h)?;
    }
    Ok(())
}

fn announce_by_arp<W: Write>(w: &mut World<W>, dev: usize, h: HostId) -> anyhow::Result<()> {
    let at = w.em.now_us;
    w.em.gratuitous_arp(h)?;
    w.bind(dev, h, "arp", at);
    Ok(())
}

/// The DHCP server of `dev`'s segment: the router at a routed site, else the site's DC.
fn dhcp_server<W: Write>(w: &World<W>, dev: usize) -> Option<HostId> {
    let d = &w.devices[dev];
    if w.sites[d.site].is_routed() {
        return w.em.hosts[d.host].gateway;
    }
    w.role(d.site, "dc").map(|dc| w.host(dc))
}

/// DISCOVER, OFFER, REQUEST, ACK between `dev`'s primary NIC and the server host `sh`.
fn dhcp_dora<W: Write>(w: &mut World<W>, dev: usize, style: DhcpStyle, sh: HostId) -> anyhow::Result<()> {
    let d = &w.devices[dev];
    let ch = d.host;
    let host = w.em.hosts[ch].clone();
    let server_host = w.em.hosts[sh].clone();
    let dns = w.role(d.site, "dc").map_or(server_host.ip, |dc| w.ip(dc));
    let relayed = host.vlan != server_host.vlan || host.ip.octets()[..2] != server_host.ip.octets()[..2];
    let gw = host.gateway.map(|g| w.em.hosts[g].clone());
    let (reply_mac, reply_ip, reply_ttl, reply_id_host) = match (&gw, relayed) {
        (Some(g), true) => (g.mac, g.ip, g.stack.ttl, host.gateway.unwrap_or(sh)),
        _ => (server_host.mac, server_host.ip, server_host.stack.ttl, sh),
    };
    let hostname = d.hostname.clone();
    let id = client_identity(w, dev, style);
    let o = host.ip.octets();
    let lease = dhcp::Lease {
        server_id: server_host.ip,
        yiaddr: host.ip,
        subnet_mask: Ipv4Addr::new(255, 255, 0, 0),
        router: Ipv4Addr::new(o[0], o[1], 0, 1),
        dns,
        domain: DOMAIN.into(),
        lease_secs: 86_400,
        giaddr: if relayed { Ipv4Addr::new(o[0], o[1], 0, 1) } else { Ipv4Addr::UNSPECIFIED },
    };
    let xid: u32 = w.em.rng.gen();
    let bcast_l2 = L2 { src: host.mac, dst: [0xff; 6], vlan: host.vlan };
    let reply_dst = if style.broadcast { ([0xff; 6], Ipv4Addr::BROADCAST) } else { (host.mac, host.ip) };
    let reply_l2 = L2 { src: reply_mac, dst: reply_dst.0, vlan: host.vlan };
    let (src0, bcast) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST);
    let msgs = [
        dhcp::client_message(&id, dhcp::DISCOVER, xid, 0, None),
        dhcp::server_message(&lease, dhcp::OFFER, xid, host.mac, style.broadcast),
        dhcp::client_message(&id, dhcp::REQUEST, xid, 1, Some((host.ip, server_host.ip))),
        dhcp::server_message(&lease, dhcp::ACK, xid, host.mac, style.broadcast),
    ];
    let mut ack_us = 0;
    for (i, m) in msgs.iter().enumerate() {
        if i % 2 == 0 {
            w.em.udp_raw(bcast_l2, src0, bcast, host.stack.ttl, ch, 68, 67, m, "dhcp")?;
            w.em.gap(1000, 20_000);
        } else {
            ack_us = w.em.now_us;
            w.em.udp_raw(reply_l2, reply_ip, reply_dst.1, reply_ttl, reply_id_host, 67, 68, m, "dhcp")?;
            w.em.gap(500, 3000);
        }
    }
    w.bind(dev, ch, "dhcp_ack", ack_us);
    if let Some(h) = hostname {
        w.ev(dev, Field::Hostname, h);
    }
    if let Some(vc) = style.vendor_class {
        w.ev(dev, Field::DhcpVendorClass, vc);
    }
    let params: Vec<String> = style.params.iter().map(|p| p.to_string()).collect();
    w.ev(dev, Field::DhcpParamList, params.join(","));
    if style.client_id {
        w.ev(dev, Field::DhcpClientId, format!("01{}", hex::encode(host.mac)));
    }
    if let Some(f) = &id.fqdn {
        w.ev(dev, Field::DhcpFqdn, f.clone());
    }
    Ok(())
}

/// What `dev` puts in its DHCP messages.
fn client_identity<W: Write>(w: &World<W>, dev: usize, style: DhcpStyle) -> dhcp::ClientIdentity {
    let d = &w.devices[dev];
    let hostname = d.hostname.clone();
    dhcp::ClientIdentity {
        mac: w.em.hosts[d.host].mac,
        fqdn: if style.fqdn { hostname.as_ref().map(|h| format!("{h}.{DOMAIN}")) } else { None },
        hostname,
        vendor_class: style.vendor_class.map(str::to_string),
        param_list: style.params.to_vec(),
        client_id: style.client_id,
        max_msg_size: style.max_size,
        broadcast: style.broadcast,
    }
}

/// A scripted change of `dev` (see `topology::identity`).
pub(super) fn scripted<W: Write>(w: &mut World<W>, dev: usize, event: DeviceEvent) -> anyhow::Result<()> {
    match event {
        DeviceEvent::Release => release(w, dev),
        DeviceEvent::Leave => {
            let now = w.em.now_us;
            w.unbind(dev, now);
            w.history(dev, now, "disconnected", w.sites[w.devices[dev].site].name.clone(), String::new());
            Ok(())
        }
        DeviceEvent::Arrive { site, zone, ip } => arrive(w, dev, site, zone, ip),
    }
}

/// DHCPRELEASE of the device's address; the device then leaves the network.
fn release<W: Write>(w: &mut World<W>, dev: usize) -> anyhow::Result<()> {
    let d = &w.devices[dev];
    let (Some(style), Some(sh)) = (d.profile.dhcp, dhcp_server(w, dev)) else {
        return Ok(());
    };
    let ch = d.host;
    let id = client_identity(w, dev, style);
    let xid: u32 = w.em.rng.gen();
    let (ip, server_ip) = (w.em.hosts[ch].ip, w.em.hosts[sh].ip);
    let now = w.em.now_us;
    w.em.udp_exchange(ch, sh, 68, 67, &dhcp::release(&id, xid, ip, server_ip), None, "dhcp")?;
    w.unbind(dev, now);
    w.history(dev, now, "address_released", ip.to_string(), String::new());
    Ok(())
}

/// The device is plugged in on zone `zone` of `site` and takes `ip` by DHCP there.
fn arrive<W: Write>(w: &mut World<W>, dev: usize, site: usize, zone: usize, ip: Ipv4Addr) -> anyhow::Result<()> {
    let (old_site, old_vlan, h) = (w.devices[dev].site, w.devices[dev].vlan, w.devices[dev].host);
    let old_ip = w.em.hosts[h].ip;
    let s = &w.sites[site];
    let z = &s.zones[zone];
    let (zname, vlan, router_host, capture, wan) = (z.name, z.vlan, z.router_host, s.capture, s.wan);
    let host = &mut w.em.hosts[h];
    host.ip = ip;
    host.vlan = vlan;
    host.gateway = Some(router_host);
    host.capture = capture;
    host.wan = wan;
    let d = &mut w.devices[dev];
    d.site = site;
    d.zone = zname;
    d.vlan = vlan;
    d.ips.push(ip);
    let Some(style) = d.profile.dhcp else {
        return announce_by_arp(w, dev, h);
    };
    let server = dhcp_server(w, dev).unwrap_or(router_host);
    dhcp_dora(w, dev, style, server)?;
    let at = w.devices[dev].bindings.last().map_or(w.em.now_us, |b| b.from_us);
    let vlan_name = |v: Option<u16>| v.map(|v| v.to_string()).unwrap_or_default();
    let (from_site, to_site) = (w.sites[old_site].name.clone(), w.sites[site].name.clone());
    w.history(dev, at, "site_move", from_site, to_site);
    w.history(dev, at, "ip_change", old_ip.to_string(), ip.to_string());
    w.history(dev, at, "vlan_change", vlan_name(old_vlan), vlan_name(vlan));
    Ok(())
}
