//! IPv6 neighbour discovery, local ICMPv6 echo and ICMPv6 errors, as slirp sends them.
//!
//! # Theory of operation
//!
//! The gateway and DNS addresses exist in two forms each: in the plan's prefix (fec0::2,
//! fec0::3) and link-local (fe80::2, fe80::3). Each emulated address answers from the MAC
//! 52:56 followed by its low 32 bits (fe80::2 and fec0::2 both from 52:56:00:00:00:02).
//!
//! * Router Solicitation with hop limit 255: answered at once by a Router Advertisement from
//!   fe80::2 to ff02::1 (hop limit 64, M=0, O=0, router lifetime 1800 s; options: source
//!   link-layer address, the prefix with L=1 A=1, valid 86400 s, preferred 14400 s, and RDNSS
//!   with the DNS address when the host has an IPv6 resolver). The same advertisement goes out
//!   unsolicited every 200 to 600 s.
//! * Neighbour Solicitation for an emulated address: a Neighbour Advertisement with R=1, O=1,
//!   and S=1 unless it goes to a multicast address, carrying the target link-layer address.
//! * Echo request to an emulated address: an echo reply from that address.
//! * A TCP connection or UDP datagram the engine cannot deliver: a destination unreachable
//!   from fe80::2 quoting the packet ([`unreachable()`]).
//!
//! passt's switches turn parts off (see [`serves`]): `--no-ndp` all neighbour discovery,
//! `--no-ra` router advertisements (solicited and unsolicited), `--no-icmp` echo.
//!
//! Every packet we send has hop limit 255 (slirp's IPv6 output), except the RA's own
//! current-hop-limit field, which advertises 64. The messages are written by hand, with named
//! fields: smoltcp's `NdiscRepr` has no RDNSS option and its own option order (see
//! `wire::icmpv6`). The engine hands [`handle`] the checked IPv6 header and the
//! message; the checksum is verified here. Nothing here keeps state: the time of the next
//! unsolicited advertisement is the engine's.
//!
//! What is asked and who answers it is decided here; the answers themselves, and the ICMPv6
//! errors, are written in `emit.rs`.

mod emit;
#[cfg(test)]
mod tests;

use std::net::Ipv6Addr;

use netplan::{Ipv6Plan, MacAddr, NetPlan, Services};

use super::Verdict;
use crate::wire::frame::Frame;
use crate::wire::icmpv6::{
    ND_HOP_LIMIT, ND_TARGET, NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT, REDIRECT, ROUTER_ADVERT,
    ROUTER_SOLICIT,
};
use crate::wire::{icmpv6, ipv6};
use emit::{echo_reply, neighbor_advert};

pub use crate::wire::icmpv6::{
    DEST_UNREACHABLE, ECHO_REPLY, ECHO_REQUEST, PACKET_TOO_BIG, TIME_EXCEEDED, UNREACH_ADDRESS,
    UNREACH_NO_ROUTE,
};
pub use emit::{MAX_QUOTE, error, router_advert, unreachable};

/// The address a guest's duplicate address detection probes: the target of a neighbour
/// solicitation from the unspecified address (RFC 4862 5.4.2), `icmp` being the message after
/// the header `ip`, its checksum checked by the caller. A guest announces a new address this
/// way before using it.
pub fn dad_target(ip: &ipv6::GuestHeader, icmp: &[u8]) -> Option<Ipv6Addr> {
    if !ip.src.is_unspecified() || ip.hop_limit != ND_HOP_LIMIT {
        return None;
    }
    let icmp = Frame::new(icmp);
    if icmp.u8(0)? != NEIGHBOR_SOLICIT {
        return None;
    }
    icmp.ipv6(ND_TARGET)
}

/// The link-local form of an emulated address: fe80:: with the same interface identifier.
fn link_local(addr: Ipv6Addr) -> Ipv6Addr {
    let s = addr.segments();
    Ipv6Addr::new(0xfe80, 0, 0, 0, s[4], s[5], s[6], s[7])
}

/// Whether `addr` is one of the emulated hosts, in prefix or link-local form.
pub fn is_emulated(v6: &Ipv6Plan, addr: Ipv6Addr) -> bool {
    [v6.gateway, v6.dns]
        .iter()
        .any(|&a| addr == a || addr == link_local(a))
}

/// The router's link-local address, the source of advertisements (fe80::2 by default).
pub fn router_address(v6: &Ipv6Plan) -> Ipv6Addr {
    link_local(v6.gateway)
}

/// Whether guest ICMPv6 messages of `icmp_type` are served under `services`: neighbour
/// discovery while `ndp` is on (router solicitations only while advertisements go out), echo
/// while `icmp` is on. The engine asks before copying the message, so that what is switched
/// off costs nothing.
pub fn serves(services: &Services, icmp_type: u8) -> bool {
    match icmp_type {
        ROUTER_SOLICIT => services.router_advertisements(),
        NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT | ROUTER_ADVERT | REDIRECT => services.ndp,
        ECHO_REQUEST => services.icmp,
        _ => true,
    }
}

/// Handles the ICMPv6 message `icmp` the guest sent under the header `ip`; the answer frame
/// goes into `out`.
pub fn handle(
    plan: &NetPlan,
    has_v6_resolver: bool,
    guest_mac: MacAddr,
    ip: &ipv6::GuestHeader,
    icmp: &[u8],
    out: &mut Vec<u8>,
) -> Verdict {
    let Some(v6) = &plan.ipv6 else {
        return Verdict::Unhandled;
    };
    if !icmpv6::verify(&ip.src, &ip.dst, icmp) {
        return Verdict::Malformed;
    }
    match icmp[0] {
        ROUTER_SOLICIT if ip.hop_limit == ND_HOP_LIMIT => {
            router_advert(v6, has_v6_resolver, out);
            Verdict::Reply
        }
        NEIGHBOR_SOLICIT if ip.hop_limit == ND_HOP_LIMIT => {
            let Some(target) = Frame::new(icmp).ipv6(ND_TARGET) else {
                return Verdict::Malformed;
            };
            if !is_emulated(v6, target) {
                return Verdict::Unhandled;
            }
            neighbor_advert(target, ip.src, guest_mac, out);
            Verdict::Reply
        }
        ECHO_REQUEST if is_emulated(v6, ip.dst) => {
            echo_reply(ip, icmp, guest_mac, out);
            Verdict::Reply
        }
        ROUTER_ADVERT | NEIGHBOR_ADVERT => Verdict::Consumed,
        _ => Verdict::Unhandled,
    }
}
