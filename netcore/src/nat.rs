//! Address translation between the guest's view and the host's sockets, from the plan.
//!
//! # Theory of operation
//!
//! The guest talks to real addresses, except for the emulated hosts: the gateway address
//! stands for the host's own loopback (slirp's default; `--no-map-gw` turns it off) and the
//! DNS address, port 53 only, for the upstream resolver. Traffic coming back from loopback or
//! from the resolver is shown to the guest as coming from those addresses again, so the
//! guest never sees 127.0.0.1 or the host's resolver.
//!
//! The host's own addresses are not reachable by naming them: the engine drops guest packets
//! to [`is_host_internal`] destinations before they get here (as passt's tap.c does), so the
//! gateway mapping is the only way to the host's loopback and `--no-map-gw` closes it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use netplan::{MacAddr, NetPlan};
use smoltcp::wire::IpProtocol;

use crate::wire::ip::{self, PacketMeta};

/// Where a guest flow should really go, decided from the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Connect(SocketAddr),
    /// Not allowed or not routable: the guest gets an ICMP error (slirp's EPERM case).
    Unreachable,
    /// `restrict=on`: slirp resets a TCP connection attempt and drops a UDP datagram or an
    /// echo request without a word.
    Restricted,
    /// A TCP connection to guest forward `n` of the plan: it starts that forward's command.
    Command(usize),
}

/// The engine-wide things the flow tables need for each operation.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub guest_mac: MacAddr,
    pub gateway_mac: MacAddr,
    pub mtu: u16,
    pub epoll: &'a vmm_sys_util::epoll::Epoll,
    pub ident: &'a mut crate::wire::ipv4::Ident,
    pub now: Instant,
    /// A guest frame that matches no flow of this queue pair goes to the pair that holds its
    /// flow ([`crate::queue_pairs`]); false with one pair, and for frames handed over already.
    pub hand_off: bool,
}

impl Ctx<'_> {
    /// Framing for a packet from `src` to the guest at `dst`.
    ///
    /// IPv4 frames come from the gateway's MAC whatever their source (slirp's `if_encap4`);
    /// IPv6 frames from 52:56 + the source's low 32 bits, with hop limit 255, as slirp's.
    pub fn meta(&mut self, src: IpAddr, dst: IpAddr, protocol: IpProtocol) -> PacketMeta {
        let (src_mac, ttl) = match src {
            IpAddr::V4(_) => (self.gateway_mac, 64),
            IpAddr::V6(v6) => (MacAddr::slirp_for_ipv6(v6), 255),
        };
        PacketMeta {
            src_mac,
            dst_mac: self.guest_mac,
            addrs: ip::Addrs::new(src, dst).expect("a flow's two ends come from one header"),
            protocol,
            ttl,
            tos: 0,
            ident: self.ident.next_id(),
        }
    }

    /// The largest L4 payload after an L4 header of `l4_header` bytes, at the link MTU.
    pub fn max_payload(&self, addr: &IpAddr, l4_header: usize) -> usize {
        let ip_header = ip::l2_l3_len(addr) - crate::wire::ethernet::HEADER_LEN;
        usize::from(self.mtu).saturating_sub(ip_header + l4_header)
    }
}

/// Where DNS queries to the DNS address really go: resolv.conf's first nameserver, or
/// `--resolv-conf FILE`'s. Found by the program, not by the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upstream {
    pub dns_v4: Option<SocketAddr>,
    pub dns_v6: Option<SocketAddr>,
}

pub const DNS_PORT: u16 = 53;

/// The destination of a guest TCP connection to `dst`: a guest forward's command (even when
/// restricted, as in slirp), or what [`outbound`] says.
pub fn outbound_tcp(plan: &NetPlan, upstream: &Upstream, dst: SocketAddr) -> Target {
    let command = plan
        .guest_forwards
        .iter()
        .position(|f| SocketAddr::from((f.addr, f.port)) == dst);
    match command {
        Some(n) => Target::Command(n),
        None => outbound(plan, upstream, dst),
    }
}

/// The host destination for a guest packet to `dst`.
pub fn outbound(plan: &NetPlan, upstream: &Upstream, dst: SocketAddr) -> Target {
    if plan.restrict {
        return Target::Restricted;
    }
    match dst.ip() {
        IpAddr::V4(ip) => {
            let Some(v4) = plan.ipv4.as_ref() else {
                return Target::Unreachable;
            };
            if ip == v4.gateway || ip == Ipv4Addr::BROADCAST {
                return if plan.map_gateway_to_loopback {
                    Target::Connect(SocketAddr::from((Ipv4Addr::LOCALHOST, dst.port())))
                } else {
                    Target::Unreachable
                };
            }
            if ip == v4.dns {
                return match (dst.port(), upstream.dns_v4) {
                    (DNS_PORT, Some(resolver)) => Target::Connect(resolver),
                    _ => Target::Unreachable,
                };
            }
            if ip.is_unspecified() || ip.is_multicast() {
                return Target::Unreachable;
            }
            Target::Connect(dst)
        }
        IpAddr::V6(ip) => {
            let Some(v6) = plan.ipv6.as_ref() else {
                return Target::Unreachable;
            };
            if ip == v6.dns {
                return match (dst.port(), upstream.dns_v6) {
                    (DNS_PORT, Some(resolver)) => Target::Connect(resolver),
                    _ => Target::Unreachable,
                };
            }
            // slirp sends every address of the prefix (the emulated hosts' and any other) to
            // the host's loopback.
            if ip == v6.gateway || in_prefix(ip, v6.prefix, v6.prefix_len) {
                return if plan.map_gateway_to_loopback {
                    Target::Connect(SocketAddr::from((Ipv6Addr::LOCALHOST, dst.port())))
                } else {
                    Target::Unreachable
                };
            }
            if ip.is_unspecified() || ip.is_multicast() || ip.is_unicast_link_local() {
                return Target::Unreachable;
            }
            Target::Connect(dst)
        }
    }
}

/// Destinations that name the host itself rather than a host on the network: loopback
/// (127.0.0.0/8, ::1), "this host" (0.0.0.0/8, ::, which the kernel sends to loopback), and
/// every IPv4-mapped IPv6 address (never valid on a wire; a dual-stack socket would carry it
/// to IPv4, ::ffff:127.0.0.1 included).
pub fn is_host_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[0], 0 | 127),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || v6.to_ipv4_mapped().is_some(),
    }
}

fn in_prefix(addr: Ipv6Addr, prefix: Ipv6Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    };
    u128::from(addr) & mask == u128::from(prefix) & mask
}

/// How the guest should see a packet that came from `from` on the host.
pub fn inbound_source(plan: &NetPlan, upstream: &Upstream, from: SocketAddr) -> SocketAddr {
    if let (Some(v6), IpAddr::V6(ip)) = (plan.ipv6.as_ref(), from.ip()) {
        if Some(from) == upstream.dns_v6 {
            return SocketAddr::from((v6.dns, DNS_PORT));
        }
        if plan.map_gateway_to_loopback && ip.is_loopback() {
            return SocketAddr::from((v6.gateway, from.port()));
        }
        return from;
    }
    if let Some(v4) = plan.ipv4.as_ref() {
        if Some(from) == upstream.dns_v4 {
            return SocketAddr::from((v4.dns, DNS_PORT));
        }
        if plan.map_gateway_to_loopback
            && let IpAddr::V4(ip) = from.ip()
            && ip.is_loopback()
        {
            return SocketAddr::from((v4.gateway, from.port()));
        }
    }
    from
}

/// Reads the first IPv4 and IPv6 `nameserver` lines of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> Upstream {
    let mut upstream = Upstream::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        // `fe80::1%eth0`: the scope is for the host's own use; keep the address.
        let addr = addr.split('%').next().unwrap_or(addr);
        match addr.parse::<IpAddr>() {
            Ok(ip @ IpAddr::V4(_)) if upstream.dns_v4.is_none() => {
                upstream.dns_v4 = Some(SocketAddr::new(ip, DNS_PORT));
            }
            Ok(ip @ IpAddr::V6(_)) if upstream.dns_v6.is_none() => {
                upstream.dns_v6 = Some(SocketAddr::new(ip, DNS_PORT));
            }
            _ => {}
        }
    }
    if upstream.dns_v4.is_none() && upstream.dns_v6.is_none() {
        // No nameserver lines at all: the resolver's default, as libslirp 4.8 does.
        upstream.dns_v4 = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, DNS_PORT)));
    }
    upstream
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_maps_to_loopback_and_back() {
        let plan = NetPlan::slirp_default();
        let up = Upstream::default();
        assert_eq!(
            outbound(&plan, &up, sa("10.0.2.2:8080")),
            Target::Connect(sa("127.0.0.1:8080"))
        );
        assert_eq!(
            inbound_source(&plan, &up, sa("127.0.0.1:8080")),
            sa("10.0.2.2:8080")
        );
        let mut off = plan.clone();
        off.map_gateway_to_loopback = false;
        assert_eq!(
            outbound(&off, &up, sa("10.0.2.2:8080")),
            Target::Unreachable
        );
        assert_eq!(
            inbound_source(&off, &up, sa("127.0.0.1:8080")),
            sa("127.0.0.1:8080")
        );
    }

    #[test]
    fn dns_address_relays_port_53_only() {
        let plan = NetPlan::slirp_default();
        let up =
            parse_resolv_conf("# x\nsearch example\nnameserver 198.51.100.1\nnameserver 9.9.9.9\n");
        assert_eq!(up.dns_v4, Some(sa("198.51.100.1:53")));
        assert_eq!(
            outbound(&plan, &up, sa("10.0.2.3:53")),
            Target::Connect(sa("198.51.100.1:53"))
        );
        assert_eq!(outbound(&plan, &up, sa("10.0.2.3:80")), Target::Unreachable);
        assert_eq!(
            inbound_source(&plan, &up, sa("198.51.100.1:53")),
            sa("10.0.2.3:53")
        );
        assert_eq!(
            inbound_source(&plan, &up, sa("198.51.100.1:54")),
            sa("198.51.100.1:54")
        );
    }

    #[test]
    fn resolv_conf_defaults_and_families() {
        assert_eq!(parse_resolv_conf("").dns_v4, Some(sa("127.0.0.1:53")));
        let up = parse_resolv_conf("nameserver fe80::1%eth0\nnameserver 192.0.2.53\n");
        assert_eq!(up.dns_v6, Some(sa("[fe80::1]:53")));
        assert_eq!(up.dns_v4, Some(sa("192.0.2.53:53")));
    }

    #[test]
    fn ipv6_prefix_maps_to_loopback_and_dns_to_the_v6_resolver() {
        let plan = NetPlan::slirp_default();
        let up = parse_resolv_conf("nameserver 2001:db8::53\n");
        assert_eq!(
            outbound(&plan, &up, sa("[fec0::2]:8080")),
            Target::Connect(sa("[::1]:8080"))
        );
        assert_eq!(
            outbound(&plan, &up, sa("[fec0::99]:22")),
            Target::Connect(sa("[::1]:22"))
        );
        assert_eq!(
            outbound(&plan, &up, sa("[fec0::3]:53")),
            Target::Connect(sa("[2001:db8::53]:53"))
        );
        assert_eq!(
            outbound(&plan, &up, sa("[2001:db8::7]:80")),
            Target::Connect(sa("[2001:db8::7]:80"))
        );
        assert_eq!(
            outbound(&plan, &up, sa("[fe80::1]:80")),
            Target::Unreachable
        );
        assert_eq!(
            inbound_source(&plan, &up, sa("[::1]:8080")),
            sa("[fec0::2]:8080")
        );
        assert_eq!(
            inbound_source(&plan, &up, sa("[2001:db8::53]:53")),
            sa("[fec0::3]:53")
        );
    }

    #[test]
    fn other_destinations_pass_and_restrict_blocks() {
        let mut plan = NetPlan::slirp_default();
        let up = Upstream::default();
        assert_eq!(
            outbound(&plan, &up, sa("198.51.100.7:80")),
            Target::Connect(sa("198.51.100.7:80"))
        );
        plan.restrict = true;
        for dst in [
            "198.51.100.7:80",
            "10.0.2.2:22",
            "10.0.2.3:53",
            "[fec0::2]:22",
        ] {
            assert_eq!(outbound(&plan, &up, sa(dst)), Target::Restricted, "{dst}");
        }
    }
}
