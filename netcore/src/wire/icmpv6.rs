//! ICMPv6 and neighbour-discovery message numbers and checksums.
//!
//! The messages slirp sends are built in place (see `service::ndp`): smoltcp's `NdiscRepr`
//! cannot carry the RDNSS option slirp puts in its router advertisements, nor keep slirp's
//! option order, and a guest must get the same bytes from us as from QEMU. What lives here is
//! what the builders and the engine need to agree on.

use std::net::Ipv6Addr;

use smoltcp::wire::Icmpv6Packet;

/// Type, code, checksum: what every ICMPv6 message has.
pub const BASE_LEN: usize = 4;
/// The header of an error or echo: the base and a 4-byte rest.
pub const HEADER_LEN: usize = 8;
pub const DEST_UNREACHABLE: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const ROUTER_SOLICIT: u8 = 133;
pub const ROUTER_ADVERT: u8 = 134;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;
pub const REDIRECT: u8 = 137;
/// Destination-unreachable codes slirp sends: no route (a connect or send that failed) and
/// address unreachable (`EHOSTUNREACH`).
pub const UNREACH_NO_ROUTE: u8 = 0;
pub const UNREACH_ADDRESS: u8 = 3;
/// Where the target address of a neighbour solicitation or advertisement starts.
pub const ND_TARGET: usize = 8;
/// The hop limit neighbour discovery messages must arrive with (RFC 4861: not forwarded).
pub const ND_HOP_LIMIT: u8 = 255;
/// Neighbour-discovery option types.
pub const OPT_SOURCE_LLADDR: u8 = 1;
pub const OPT_TARGET_LLADDR: u8 = 2;
pub const OPT_PREFIX_INFO: u8 = 3;
pub const OPT_RDNSS: u8 = 25;
/// Flags of a neighbour advertisement (its fifth byte): router, solicited, override.
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;
/// Flags of a prefix information option: on-link, autonomous.
pub const PREFIX_ON_LINK: u8 = 0x80;
pub const PREFIX_AUTONOMOUS: u8 = 0x40;

/// Whether `icmp` sent from `src` to `dst` has at least the base header and a checksum that
/// holds.
pub fn verify(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> bool {
    icmp.len() >= BASE_LEN && Icmpv6Packet::new_unchecked(icmp).verify_checksum(src, dst)
}

/// Fills in the checksum of the message in `icmp`, sent from `src` to `dst`.
pub fn fill_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &mut [u8]) {
    Icmpv6Packet::new_unchecked(icmp).fill_checksum(src, dst);
}
