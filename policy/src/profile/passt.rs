//! The passt profile: the address as given is the guest's own, with the gateway and DNS
//! address taken from the configuration or from free host addresses of its subnet; what
//! would leave the guest broken is refused.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::kind::Profile;
use super::slirp;
use crate::addr::{classful_passt, v4_broadcast, v4_in, v4_net, v4_or, v6_in, v6_net};
use crate::error::ConfigError;
use crate::request::Request;
use crate::warning::Warning;
use crate::{Ipv4Plan, Ipv6Plan, prefix_to_mask};

/// The guest's IPv4 address and its subnet, with the words each came from.
struct Subnet {
    addr: Ipv4Addr,
    prefix: u8,
    prefix_origin: String,
    net: Ipv4Addr,
    bcast: Ipv4Addr,
    cidr: String,
}

impl Subnet {
    /// A host address of the subnet other than the guest's own.
    fn other_host(&self, a: Ipv4Addr) -> bool {
        v4_in(self.net, self.prefix, a) && a != self.net && a != self.bcast && a != self.addr
    }
}

/// What the passt profile refuses because the guest would be broken.
fn refused(subject: &str, reason: String) -> ConfigError {
    ConfigError::refused(Profile::Passt, subject, reason)
}

/// IPv4 with the address as the guest's own (one lease), the gateway and DNS address from
/// the configuration or free host addresses of the subnet.
pub(super) fn ipv4(req: &Request, w: &mut Vec<Warning>) -> Result<Ipv4Plan, ConfigError> {
    let subnet = guest_subnet(req, w)?;
    let gateway = gateway(req, &subnet)?;
    let dns = dns(req, &subnet, gateway)?;
    Ok(Ipv4Plan {
        network: subnet.net,
        prefix_len: subnet.prefix,
        gateway,
        dns,
        dhcp_start: subnet.addr,
    })
}

/// The guest's address (slirp's 10.0.2.15/24 when none is given) and prefix, refused when it
/// is no host address of its subnet.
fn guest_subnet(req: &Request, w: &mut Vec<Warning>) -> Result<Subnet, ConfigError> {
    let default_origin = "the default guest address 10.0.2.15/24".to_string();
    let (addr, origin) = match &req.v4_addr {
        Some(a) => (a.value, a.origin.clone()),
        None => {
            if let Some(p) = &req.v4_prefix {
                return Err(ConfigError::invalid(
                    &p.origin,
                    "a netmask needs an IPv4 address (--address or <ip>)",
                ));
            }
            (Ipv4Addr::new(10, 0, 2, 15), default_origin)
        }
    };
    let (prefix, prefix_origin) = match (&req.v4_prefix, &req.v4_addr) {
        (Some(p), _) => (p.value, p.origin.clone()),
        (None, None) => (24, origin.clone()),
        (None, Some(_)) => {
            let p = classful_passt(addr).ok_or_else(|| {
                refused(
                    &origin,
                    format!("{addr} has no address class to take a netmask from"),
                )
            })?;
            w.push(Warning::ClassfulMask {
                at: origin.clone(),
                addr,
                prefix: p,
                passt: true,
            });
            (p, origin.clone())
        }
    };
    if prefix == 0 || prefix > 30 {
        return Err(refused(
            &prefix_origin,
            format!("a /{prefix} subnet has no room for both the guest and a gateway"),
        ));
    }
    let net = v4_net(addr, prefix);
    let bcast = v4_broadcast(addr, prefix);
    let cidr = format!("{net}/{prefix}");
    let o = addr.octets();
    if o[0] == 0 {
        return Err(refused(
            &origin,
            format!("{addr} is in 0.0.0.0/8, which no host may use"),
        ));
    }
    if addr.is_loopback() {
        return Err(refused(&origin, format!("{addr} is a loopback address")));
    }
    if o[0] >= 224 {
        return Err(refused(
            &origin,
            format!("{addr} is a multicast or reserved address"),
        ));
    }
    if addr == net {
        let slirp_guest = v4_or(u32::from(net) | (0x020f & !prefix_to_mask(prefix)));
        return Err(refused(
            &origin,
            format!(
                "{addr} is the network address of {cidr}, not a host address \
                 (slirp semantics would give the guest {slirp_guest})"
            ),
        ));
    }
    if addr == bcast {
        return Err(refused(
            &origin,
            format!("{addr} is the broadcast address of {cidr}, not a host address"),
        ));
    }
    Ok(Subnet {
        addr,
        prefix,
        prefix_origin,
        net,
        bcast,
        cidr,
    })
}

/// The gateway as given, inside the subnet and not the guest's; else the subnet's first host
/// address (the second when the guest has the first).
fn gateway(req: &Request, s: &Subnet) -> Result<Ipv4Addr, ConfigError> {
    let Subnet {
        addr,
        prefix,
        net,
        bcast,
        ref cidr,
        ..
    } = *s;
    let first_host = v4_or(u32::from(net) + 1);
    Ok(match &req.v4_gateway {
        Some(g) => {
            let gw = g.value;
            if !v4_in(net, prefix, gw) {
                return Err(refused(
                    &g.origin,
                    format!(
                        "the gateway {gw} is outside the guest's subnet {cidr}: the guest could not reach it"
                    ),
                ));
            }
            if gw == addr {
                return Err(refused(
                    &g.origin,
                    format!("the gateway {gw} is the guest's own address"),
                ));
            }
            if gw == net || gw == bcast {
                return Err(refused(
                    &g.origin,
                    format!("the gateway {gw} is the network or broadcast address of {cidr}"),
                ));
            }
            gw
        }
        // Nothing configured at all: slirp's familiar 10.0.2.2, as passt is run to mimic it.
        None if req.v4_addr.is_none() => Ipv4Addr::new(10, 0, 2, 2),
        None if first_host == addr => v4_or(u32::from(net) + 2),
        None => first_host,
    })
}

/// The DNS address as given, or slirp's `.3` position when free, else the lowest free host
/// address.
fn dns(req: &Request, s: &Subnet, gateway: Ipv4Addr) -> Result<Ipv4Addr, ConfigError> {
    let Subnet {
        addr,
        prefix,
        net,
        bcast,
        ref cidr,
        ref prefix_origin,
        ..
    } = *s;
    let usable = |a: Ipv4Addr| s.other_host(a) && a != gateway;
    Ok(match &req.v4_dns {
        Some(d) => {
            let dns = d.value;
            if dns == gateway {
                return Err(ConfigError::invalid(
                    &d.origin,
                    format!("the DNS address {dns} must differ from the gateway {gateway}"),
                ));
            }
            if dns == addr {
                return Err(refused(
                    &d.origin,
                    format!("the DNS address {dns} is the guest's own address"),
                ));
            }
            let inside = v4_in(net, prefix, dns);
            if req.restrict && !inside {
                return Err(ConfigError::invalid(
                    &d.origin,
                    format!("with restrict=on the DNS address must be inside {cidr}"),
                ));
            }
            if inside && !usable(dns) {
                return Err(refused(
                    &d.origin,
                    format!("the DNS address {dns} is the network or broadcast address of {cidr}"),
                ));
            }
            dns
        }
        None => {
            // slirp's .3 position when free, else the lowest free host address.
            let slirp_pos = v4_or(u32::from(net) | (0x0203 & !prefix_to_mask(prefix)));
            std::iter::once(slirp_pos)
                .chain((u32::from(net) + 1..u32::from(bcast)).map(v4_or))
                .find(|a| usable(*a))
                .ok_or_else(|| {
                    refused(
                        prefix_origin,
                        format!("{cidr} has no address left for the DNS relay: give --dns"),
                    )
                })?
        }
    })
}

/// IPv6 with the address as the guest's own; without one, slirp's prefix.
pub(super) fn ipv6(req: &Request, w: &mut Vec<Warning>) -> Result<Ipv6Plan, ConfigError> {
    let Some(a) = &req.v6_addr else {
        return slirp::ipv6(req, w);
    };
    let addr = a.value;
    let (len, len_origin) = match &req.v6_prefix {
        Some(p) => (p.value, p.origin.clone()),
        None => (64, a.origin.clone()),
    };
    if len == 0 || len > 126 {
        return Err(refused(
            &len_origin,
            format!("a /{len} IPv6 prefix has no room for both the guest and a gateway"),
        ));
    }
    let net = v6_net(addr, len);
    let cidr = format!("{net}/{len}");
    if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
        return Err(refused(
            &a.origin,
            format!("{addr} is not a unicast host address"),
        ));
    }
    if addr == net {
        return Err(refused(
            &a.origin,
            format!("{addr} is the subnet-router anycast address of {cidr}, not a host address"),
        ));
    }
    let n = u128::from(net);
    let gateway = match &req.v6_gateway {
        Some(g) => {
            if !v6_in(net, len, g.value) {
                return Err(refused(
                    &g.origin,
                    format!(
                        "the IPv6 gateway {} is outside the guest's prefix {cidr}",
                        g.value
                    ),
                ));
            }
            if g.value == addr || g.value == net {
                return Err(refused(
                    &g.origin,
                    format!(
                        "the IPv6 gateway {} is the guest's own or the subnet's address",
                        g.value
                    ),
                ));
            }
            g.value
        }
        None if Ipv6Addr::from(n + 1) == addr => Ipv6Addr::from(n + 2),
        None => Ipv6Addr::from(n + 1),
    };
    let dns = match &req.v6_dns {
        Some(d) => {
            if d.value == addr {
                return Err(refused(
                    &d.origin,
                    format!("the IPv6 DNS address {} is the guest's own", d.value),
                ));
            }
            if req.restrict && !v6_in(net, len, d.value) {
                return Err(ConfigError::invalid(
                    &d.origin,
                    format!("with restrict=on the IPv6 DNS address must be inside {cidr}"),
                ));
            }
            d.value
        }
        None => [3u128, 2, 4, 5]
            .into_iter()
            .map(|k| Ipv6Addr::from(n | k))
            .find(|c| *c != addr && *c != gateway)
            .expect("two of four candidates are free"),
    };
    w.push(Warning::Ipv6AddressNotLeased { addr, prefix: cidr });
    Ok(Ipv6Plan {
        prefix: net,
        prefix_len: len,
        gateway,
        dns,
        guest_addr: Some(addr),
    })
}
