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
    let (mut plan, net_origin) = network(req, w)?;
    place_given(req, &mut plan, &net_origin)?;
    warn_address_kind(req, &plan, w);
    warn_pool(&plan, w);
    Ok(plan)
}

/// `network/prefix` of a plan, as messages show it.
fn cidr(plan: &Ipv4Plan) -> String {
    format!("{}/{}", plan.network, plan.prefix_len)
}

/// The network (slirp's 10.0.2.0/24 unless an address is given, with QEMU's classful mask
/// when no prefix is) and slirp's positions in it; also the words the network came from.
fn network(req: &Request, w: &mut Vec<Warning>) -> Result<(Ipv4Plan, String), ConfigError> {
    let d = NetPlan::slirp_default()
        .ipv4
        .expect("slirp default has IPv4");
    let Some(a) = &req.v4_addr else {
        if let Some(p) = &req.v4_prefix {
            return Err(ConfigError::invalid(
                &p.origin,
                "a netmask needs an IPv4 address (--address, <ip> or net=)",
            ));
        }
        return Ok((d, "the default network 10.0.2.0/24".to_string()));
    };
    let prefix = match &req.v4_prefix {
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
    let net = v4_net(a.value, prefix);
    let n = u32::from(net);
    let plan = Ipv4Plan {
        network: net,
        prefix_len: prefix,
        gateway: v4_or(n | (0x0202 & !mask)),
        dns: v4_or(n | (0x0203 & !mask)),
        dhcp_start: v4_or(n | (0x020f & !mask)),
    };
    Ok((plan, a.origin.clone()))
}

/// The gateway (`host=`), DNS and first DHCP address as given, with QEMU's checks: inside
/// the network (the DNS address only under `restrict=on`) and all three different.
fn place_given(req: &Request, plan: &mut Ipv4Plan, net_origin: &str) -> Result<(), ConfigError> {
    let cidr = cidr(plan);
    let inside = |a| v4_in(plan.network, plan.prefix_len, a);
    if let Some(g) = &req.v4_gateway {
        if !inside(g.value) {
            return Err(ConfigError::invalid(
                &g.origin,
                format!(
                    "the gateway {} is outside the guest's network {cidr}",
                    g.value
                ),
            ));
        }
        plan.gateway = g.value;
    }
    if let Some(d) = &req.v4_dns {
        if req.restrict && !inside(d.value) {
            return Err(ConfigError::invalid(
                &d.origin,
                format!("with restrict=on the DNS address must be inside {cidr}"),
            ));
        }
        plan.dns = d.value;
    }
    let (host, dns) = (plan.gateway, plan.dns);
    if dns == host {
        return Err(ConfigError::invalid(
            blame(&req.v4_dns, net_origin),
            format!("the DNS address {dns} must differ from the gateway {host}"),
        ));
    }
    if let Some(s) = &req.v4_dhcp_start {
        if !inside(s.value) {
            return Err(ConfigError::invalid(
                &s.origin,
                format!("the first DHCP address {} is outside {cidr}", s.value),
            ));
        }
        plan.dhcp_start = s.value;
    }
    let dhcp = plan.dhcp_start;
    if dhcp == host || dhcp == dns {
        return Err(ConfigError::invalid(
            blame(&req.v4_dhcp_start, net_origin),
            format!(
                "the first DHCP address {dhcp} must differ from the gateway {host} and the DNS address {dns}"
            ),
        ));
    }
    Ok(())
}

/// An address given as the guest's (`<ip>`, `--address`) that the guest will not get, or a
/// `net=` with host bits.
fn warn_address_kind(req: &Request, plan: &Ipv4Plan, w: &mut Vec<Warning>) {
    let Some(a) = &req.v4_addr else {
        return;
    };
    let (net, dhcp) = (plan.network, plan.dhcp_start);
    match req.v4_addr_kind {
        AddrKind::Address if a.value == net && a.value != dhcp => w.push(Warning::NetworkAddress {
            addr: a.value,
            guest: dhcp,
        }),
        AddrKind::Address if a.value != dhcp => w.push(Warning::AddressIsNetwork {
            addr: a.value,
            network: cidr(plan),
            guest: dhcp,
        }),
        AddrKind::Network if a.value != net => w.push(Warning::HostBitsSet {
            at: a.origin.clone(),
            what: "network",
            network: cidr(plan),
        }),
        _ => {}
    }
}

/// QEMU's 16 leases running past the broadcast address, or over the gateway or DNS address:
/// legal for QEMU, so warnings.
fn warn_pool(plan: &Ipv4Plan, w: &mut Vec<Warning>) {
    let (net, prefix, dhcp) = (plan.network, plan.prefix_len, plan.dhcp_start);
    let bcast = v4_broadcast(net, prefix);
    let last = v4_or(u32::from(dhcp).saturating_add(u32::from(POOL_SLIRP) - 1));
    let pool = dhcp..=last;
    if pool.contains(&bcast) || !v4_in(net, prefix, last) {
        w.push(Warning::PoolPastBroadcast {
            first: dhcp,
            last,
            broadcast: bcast,
            network: cidr(plan),
        });
    }
    for (what, a) in [("gateway", plan.gateway), ("DNS address", plan.dns)] {
        if pool.contains(&a) {
            w.push(Warning::PoolIncludes {
                first: dhcp,
                last,
                what,
                addr: a,
            });
        }
    }
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
