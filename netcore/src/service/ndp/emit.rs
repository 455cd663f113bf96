//! The frames the emulated router and hosts send: router and neighbour advertisements, echo
//! replies and ICMPv6 errors, written by hand with slirp's fields and option order (smoltcp's
//! `NdiscRepr` has no RDNSS option). Apart from the request handling so that what is
//! answered and how its bytes look can each be read on its own.

use std::net::Ipv6Addr;

use netplan::{Ipv6Plan, MacAddr};
use smoltcp::wire::IpProtocol;

use super::{DEST_UNREACHABLE, ECHO_REPLY, router_address};
use crate::wire::frame::Frame;
use crate::wire::icmpv6::{NEIGHBOR_ADVERT, ROUTER_ADVERT};
use crate::wire::ip::{self, Addrs, PacketMeta};
use crate::wire::{ethernet, icmpv6, ipv6};

const RA_CUR_HOP_LIMIT: u8 = 64;
const ROUTER_LIFETIME: u16 = 1800;
const PREFIX_VALID: u32 = 86400;
const PREFIX_PREFERRED: u32 = 14400;
/// slirp's RDNSS lifetime: `2 * 600000`, a unit mix-up it has always sent.
const RDNSS_LIFETIME: u32 = 1_200_000;
pub(super) const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The Ethernet address of [`ALL_NODES`] (33:33 and its low 32 bits).
const ALL_NODES_MAC: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
/// The most of the invoking packet an error quotes: slirp's 1500-byte MTU less the error's
/// IPv6 and ICMPv6 headers.
pub const MAX_QUOTE: usize = 1500 - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;

/// Writes an ICMPv6 packet `body` from `src` to `dst` as a frame, its checksum filled in.
fn frame_into(src: Ipv6Addr, dst: Ipv6Addr, dst_mac: MacAddr, body: &[u8], out: &mut Vec<u8>) {
    let meta = PacketMeta {
        src_mac: MacAddr::slirp_for_ipv6(src),
        dst_mac,
        addrs: Addrs::V6 { src, dst },
        protocol: IpProtocol::Icmpv6,
        ttl: ipv6::HOP_LIMIT,
        tos: 0,
        ident: 0,
    };
    out.clear();
    out.resize(ip::l2_l3_len(&meta.dst()) + body.len(), 0);
    let off = ip::write_headers(out, &meta, body.len());
    out[off..].copy_from_slice(body);
    icmpv6::fill_checksum(&src, &dst, &mut out[off..]);
}

/// A Router Advertisement to all nodes; sent in answer to a solicitation and periodically.
pub fn router_advert(v6: &Ipv6Plan, has_v6_resolver: bool, out: &mut Vec<u8>) {
    let router = router_address(v6);
    let mut body = Vec::with_capacity(80);
    // Type, code, checksum, current hop limit, flags (M=0, O=0), router lifetime.
    body.extend_from_slice(&[ROUTER_ADVERT, 0, 0, 0, RA_CUR_HOP_LIMIT, 0]);
    body.extend_from_slice(&ROUTER_LIFETIME.to_be_bytes());
    body.extend_from_slice(&[0; 8]); // reachable time, retransmission timer
    // Options, in slirp's order, each with its length in units of 8 bytes.
    body.extend_from_slice(&[icmpv6::OPT_SOURCE_LLADDR, 1]);
    body.extend_from_slice(&MacAddr::slirp_for_ipv6(router).0);
    body.extend_from_slice(&[
        icmpv6::OPT_PREFIX_INFO,
        4,
        v6.prefix_len,
        icmpv6::PREFIX_ON_LINK | icmpv6::PREFIX_AUTONOMOUS,
    ]);
    body.extend_from_slice(&PREFIX_VALID.to_be_bytes());
    body.extend_from_slice(&PREFIX_PREFERRED.to_be_bytes());
    body.extend_from_slice(&[0; 4]); // reserved
    body.extend_from_slice(&v6.prefix.octets());
    if has_v6_resolver {
        body.extend_from_slice(&[icmpv6::OPT_RDNSS, 3, 0, 0]);
        body.extend_from_slice(&RDNSS_LIFETIME.to_be_bytes());
        body.extend_from_slice(&v6.dns.octets());
    }
    frame_into(router, ALL_NODES, ALL_NODES_MAC, &body, out);
}

pub(super) fn neighbor_advert(
    target: Ipv6Addr,
    to: Ipv6Addr,
    guest_mac: MacAddr,
    out: &mut Vec<u8>,
) {
    let (dst, dst_mac) = if to.is_unspecified() {
        (ALL_NODES, ALL_NODES_MAC)
    } else {
        (to, guest_mac)
    };
    let solicited = if dst.is_multicast() {
        0
    } else {
        icmpv6::NA_SOLICITED
    };
    let flags = icmpv6::NA_ROUTER | solicited | icmpv6::NA_OVERRIDE;
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(&[NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0]);
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[icmpv6::OPT_TARGET_LLADDR, 1]);
    body.extend_from_slice(&MacAddr::slirp_for_ipv6(target).0);
    frame_into(target, dst, dst_mac, &body, out);
}

/// Builds an ICMPv6 destination-unreachable error about the guest packet at the start of
/// `frame` (Ethernet onwards, possibly cut short), as slirp's `icmp6_send_error` does: from
/// the router's link-local address, quoting up to [`MAX_QUOTE`] bytes of the packet. Returns
/// false for a packet from a multicast or unspecified address, which gets no error. Only TCP
/// and UDP failures call it, so an error never answers an error.
pub fn unreachable(v6: &Ipv6Plan, frame: &[u8], code: u8, out: &mut Vec<u8>) -> bool {
    error(v6, frame, DEST_UNREACHABLE, code, [0; 4], out)
}

/// An ICMPv6 error of `icmp_type` and `code` about the guest packet in `frame`, as
/// [`unreachable()`] builds it; `rest` is the header's second word (the MTU of "packet too big").
pub fn error(
    v6: &Ipv6Plan,
    frame: &[u8],
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    out: &mut Vec<u8>,
) -> bool {
    let Some((_, guest_mac, _)) = ethernet::parse_header(frame) else {
        return false;
    };
    let Some(packet) = Frame::new(frame).from(ethernet::HEADER_LEN) else {
        return false;
    };
    // The source and payload length of the fixed header, which may be cut short after them.
    let (Some(src), Some(payload_len)) = (packet.ipv6(8), packet.u16(4)) else {
        return false;
    };
    if src.is_multicast() || src.is_unspecified() {
        return false;
    }
    let total = ipv6::HEADER_LEN + usize::from(payload_len);
    let quote = packet.up_to(total).up_to(MAX_QUOTE).bytes();
    let mut body = Vec::with_capacity(icmpv6::HEADER_LEN + quote.len());
    body.extend_from_slice(&[icmp_type, code, 0, 0]);
    body.extend_from_slice(&rest);
    body.extend_from_slice(quote);
    frame_into(router_address(v6), src, guest_mac, &body, out);
    true
}

pub(super) fn echo_reply(
    ip: &ipv6::GuestHeader,
    icmp: &[u8],
    guest_mac: MacAddr,
    out: &mut Vec<u8>,
) {
    let mut body = icmp.to_vec();
    body[0] = ECHO_REPLY;
    frame_into(ip.dst, ip.src, guest_mac, &body, out);
}
