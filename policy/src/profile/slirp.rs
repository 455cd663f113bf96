//! The slirp profile: QEMU's `-netdev user` derivation, where an address names the network
//! and gateway, DNS and the first DHCP address take slirp's fixed positions in it
//! (net/slirp.c `net_slirp_init`), with QEMU's consistency checks.

use std::net::Ipv6Addr;

use crate::addr::{classful_qemu, v4_broadcast, v4_in, v4_net, v4_or, v6_in, v6_net};
use crate::error::ConfigError;
use crate::request::{AddrKind, Request, blame};
use crate::warning::Warning;
use crate::{Ipv4Plan, Ipv6Plan, NetPlan, prefix_to_mask};

/// How many addresses QEMU's DHCP server hands out.
pub(super) const POOL_SLIRP: u8 = 16;

/// IPv4 as QEMU derives it: the address names the network, and gateway, DNS and the first
/// lease sit at slirp's positions in it unless given.
pub(super) fn ipv4(req: &Request, w: &mut Vec<Warning>) -> Result<Ipv4Plan, ConfigError> {
    let d = NetPlan::slirp_default()
        .ipv4
        .expect("slirp default has IPv4");
    let (mut net, mut prefix) = (d.network, d.prefix_len);
    let (mut host, mut dns, mut dhcp) = (d.gateway, d.dns, d.dhcp_start);
    let mut net_origin = "the default network 10.0.2.0/24".to_string();
    if let Some(a) = &req.v4_addr {
        prefix = match &req.v4_prefix {
            Some(p) if !(4..=32).contains(&p.value) => {
                return Err(ConfigError::invalid(
                    &p.origin,
                    format!("/{} is outside the 4-32 slirp accepts", p.value),
                ));
            }
            Some(p) => p.value,
            None => {
                let p = classful_qemu(a.value);
                if req.v4_addr_kind == AddrKind::Address {
                    w.push(Warning::ClassfulMask {
                        at: a.origin.clone(),
                        addr: a.value,
                        prefix: p,
                        passt: false,
                    });
                }
                p
            }
        };
        let mask = prefix_to_mask(prefix);
        net = v4_net(a.value, prefix);
        let n = u32::from(net);
        host = v4_or(n | (0x0202 & !mask));
        dhcp = v4_or(n | (0x020f & !mask));
        dns = v4_or(n | (0x0203 & !mask));
        net_origin = a.origin.clone();
    } else if let Some(p) = &req.v4_prefix {
        return Err(ConfigError::invalid(
            &p.origin,
            "a netmask needs an IPv4 address (--address, <ip> or net=)",
        ));
    }
    let cidr = format!("{net}/{prefix}");
    if let Some(g) = &req.v4_gateway {
        host = g.value;
        if !v4_in(net, prefix, host) {
            return Err(ConfigError::invalid(
                &g.origin,
                format!("the gateway {host} is outside the guest's network {cidr}"),
            ));
        }
    }
    if let Some(d) = &req.v4_dns {
        dns = d.value;
        if req.restrict && !v4_in(net, prefix, dns) {
            return Err(ConfigError::invalid(
                &d.origin,
                format!("with restrict=on the DNS address must be inside {cidr}"),
            ));
        }
    }
    if dns == host {
        return Err(ConfigError::invalid(
            blame(&req.v4_dns, &net_origin),
            format!("the DNS address {dns} must differ from the gateway {host}"),
        ));
    }
    if let Some(s) = &req.v4_dhcp_start {
        dhcp = s.value;
        if !v4_in(net, prefix, dhcp) {
            return Err(ConfigError::invalid(
                &s.origin,
                format!("the first DHCP address {dhcp} is outside {cidr}"),
            ));
        }
    }
    if dhcp == host || dhcp == dns {
        return Err(ConfigError::invalid(
            blame(&req.v4_dhcp_start, &net_origin),
            format!(
                "the first DHCP address {dhcp} must differ from the gateway {host} and the DNS address {dns}"
            ),
        ));
    }

    if let Some(a) = &req.v4_addr {
        match req.v4_addr_kind {
            AddrKind::Address if a.value == net && a.value != dhcp => {
                w.push(Warning::NetworkAddress {
                    addr: a.value,
                    guest: dhcp,
                })
            }
            AddrKind::Address if a.value != dhcp => w.push(Warning::AddressIsNetwork {
                addr: a.value,
                network: cidr.clone(),
                guest: dhcp,
            }),
            AddrKind::Network if a.value != net => w.push(Warning::HostBitsSet {
                at: a.origin.clone(),
                what: "network",
                network: cidr.clone(),
            }),
            _ => {}
        }
    }
    let bcast = v4_broadcast(net, prefix);
    let last = v4_or(u32::from(dhcp).saturating_add(u32::from(POOL_SLIRP) - 1));
    let pool = dhcp..=last;
    if pool.contains(&bcast) || !v4_in(net, prefix, last) {
        w.push(Warning::PoolPastBroadcast {
            first: dhcp,
            last,
            broadcast: bcast,
            network: cidr,
        });
    }
    for (what, a) in [("gateway", host), ("DNS address", dns)] {
        if pool.contains(&a) {
            w.push(Warning::PoolIncludes {
                first: dhcp,
                last,
                what,
                addr: a,
            });
        }
    }
    Ok(Ipv4Plan {
        network: net,
        prefix_len: prefix,
        gateway: host,
        dns,
        dhcp_start: dhcp,
    })
}

/// `addr` with its last byte or-ed with `b`: QEMU's `s6_addr[15] |= b`.
fn v6_or_last(addr: Ipv6Addr, b: u8) -> Ipv6Addr {
    let mut o = addr.octets();
    o[15] |= b;
    Ipv6Addr::from(o)
}

/// IPv6 as QEMU derives it: a prefix (fec0::/64 by default) with the gateway at `::2` and
/// DNS at `::3` of the address given unless set; the guest autoconfigures its own address.
pub(super) fn ipv6(req: &Request, w: &mut Vec<Warning>) -> Result<Ipv6Plan, ConfigError> {
    let (prefix_addr, origin) = match &req.v6_addr {
        Some(a) => (a.value, a.origin.clone()),
        None => (
            Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
            "the default prefix fec0::/64".to_string(),
        ),
    };
    let len = match &req.v6_prefix {
        None => 64,
        Some(p) if p.value == 0 => 64,
        Some(p) if p.value > 126 => {
            return Err(ConfigError::invalid(
                &p.origin,
                format!("/{} is longer than the 126 slirp accepts", p.value),
            ));
        }
        Some(p) => p.value,
    };
    let net = v6_net(prefix_addr, len);
    let gateway = match &req.v6_gateway {
        Some(g) => {
            if !v6_in(prefix_addr, len, g.value) {
                return Err(ConfigError::invalid(
                    &g.origin,
                    format!(
                        "the IPv6 gateway {} is outside the prefix {net}/{len}",
                        g.value
                    ),
                ));
            }
            g.value
        }
        None => v6_or_last(prefix_addr, 2),
    };
    let dns = match &req.v6_dns {
        Some(d) => {
            if req.restrict && !v6_in(prefix_addr, len, d.value) {
                return Err(ConfigError::invalid(
                    &d.origin,
                    format!("with restrict=on the IPv6 DNS address must be inside {net}/{len}"),
                ));
            }
            d.value
        }
        None => v6_or_last(prefix_addr, 3),
    };
    if prefix_addr != net {
        w.push(match req.v6_addr_kind {
            AddrKind::Address => Warning::Ipv6AddressIsPrefix {
                addr: prefix_addr,
                prefix: format!("{net}/{len}"),
                gateway,
            },
            AddrKind::Network => Warning::HostBitsSet {
                at: origin,
                what: "prefix",
                network: format!("{net}/{len}"),
            },
        });
    }
    if dns == gateway {
        w.push(Warning::Ipv6DnsIsGateway { dns });
    }
    Ok(Ipv6Plan {
        prefix: net,
        prefix_len: len,
        gateway,
        dns,
        guest_addr: None,
    })
}
