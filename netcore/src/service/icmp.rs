//! ICMP echo to the emulated hosts, answered on the spot (slirp's `icmp_reflect`).
//!
//! # Theory of operation
//!
//! An echo request to the gateway or the DNS address is turned around here: same code,
//! identifier, sequence number and data, type 0, so `ping 10.0.2.2` works without any host
//! socket and even when restricted. The reply carries the request's TOS and don't-fragment
//! bit (slirp keeps both), TTL 255, no IP options (slirp strips them), the pinged address as
//! its source, and comes from `plan.gateway_mac` (slirp's source MAC for every IPv4 frame) to
//! the Ethernet source of the request.
//!
//! The engine hands [`handle`] the guest's IPv4 header, already checked as slirp's `ip_input`
//! checks it (see [`crate::wire::ipv4`]), and the ICMP message; here the message must have at
//! least 8 bytes and a correct checksum, or it is malformed. A reply is never larger than its
//! request, so whatever size the guest's link carried one way (up to a 65535-byte IP packet)
//! it carries back. Fragments are not reassembled and stay unhandled, as do echoes to other
//! addresses (the engine forwards those through ping sockets, see `crate::ping`) and every
//! other ICMP message.
//!
//! [`error`] builds the ICMP errors the engine and the UDP flows send about a guest packet
//! they could not deliver, as slirp's `icmp_send_error` builds them. Nothing in this module
//! keeps state.

use netplan::{MacAddr, NetPlan};
use smoltcp::wire::{IpProtocol, Ipv4Packet};

use super::Verdict;
use crate::wire::frame::Frame;
use crate::wire::ipv4::{self, Ident};
use crate::wire::{ethernet, icmpv4};

pub use crate::wire::icmpv4::{DEST_UNREACHABLE, ECHO_REQUEST, TIME_EXCEEDED, UNREACH_NEEDFRAG};

/// Bytes of the offending datagram an error quotes at most (slirp's limit).
pub const MAX_QUOTE: usize = 548;

/// Answers an echo request to the gateway or DNS address, `icmp` being the message after the
/// checked header `ip` in a frame from `eth_src`; the answer frame goes into `out`. `ident`
/// numbers the IPv4 packet of the answer.
pub fn handle(
    plan: &NetPlan,
    ident: &mut Ident,
    eth_src: MacAddr,
    ip: &ipv4::GuestHeader,
    icmp: &[u8],
    out: &mut Vec<u8>,
) -> Verdict {
    let Some(v4) = &plan.ipv4 else {
        return Verdict::Unhandled;
    };
    // slirp answers TTL 0 with time-exceeded and reassembles fragments; neither is done here.
    if ip.fragment || ip.protocol != IpProtocol::Icmp || ip.ttl == 0 {
        return Verdict::Unhandled;
    }
    if !icmpv4::verify(icmp) {
        return Verdict::Malformed;
    }
    if icmp.first() != Some(&ECHO_REQUEST) || (ip.dst != v4.gateway && ip.dst != v4.dns) {
        return Verdict::Unhandled;
    }

    let ip_start = ethernet::HEADER_LEN;
    let icmp_start = ip_start + ipv4::HEADER_LEN;
    let len = icmp_start + icmp.len();
    out.clear();
    out.resize(len.max(ethernet::MIN_FRAME_LEN), 0);
    ethernet::write_header(out, eth_src, plan.gateway_mac, ethernet::ETHERTYPE_IPV4);
    ipv4::write_header(
        &mut out[ip_start..],
        &ipv4::Header {
            src: ip.dst,
            dst: ip.src,
            protocol: IpProtocol::Icmp,
            tos: ip.tos,
            ttl: ipv4::MAX_TTL,
            ident: ident.next_id(),
            dont_frag: ip.dont_frag,
            payload_len: icmp.len(),
        },
    );
    let reply = &mut out[icmp_start..len];
    reply.copy_from_slice(icmp);
    reply[0] = icmpv4::ECHO_REPLY;
    icmpv4::fill_checksum(reply);
    Verdict::Reply
}

/// Builds an ICMP destination-unreachable error about the guest packet at the start of
/// `frame` (Ethernet onwards, possibly cut short), as slirp's `icmp_send_error` does: from the
/// gateway, TTL 255, TOS `(tos & 0x1e) | 0xc0` (IPTOS_PREC_INTERNETCONTROL), quoting up to [`MAX_QUOTE`] bytes of the packet.
/// Returns false for packets that must not cause errors (ICMP errors themselves, broadcasts).
pub fn unreachable(
    plan: &NetPlan,
    ident: &mut Ident,
    frame: &[u8],
    code: u8,
    out: &mut Vec<u8>,
) -> bool {
    error(plan, ident, frame, DEST_UNREACHABLE, code, [0; 4], out)
}

/// An ICMP error of `icmp_type` and `code` about the guest packet in `frame`, as
/// [`unreachable()`] builds it; `rest` is the header's second word (the next-hop MTU of
/// "fragmentation needed").
pub fn error(
    plan: &NetPlan,
    ident: &mut Ident,
    frame: &[u8],
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    out: &mut Vec<u8>,
) -> bool {
    let Some(v4) = &plan.ipv4 else {
        return false;
    };
    let Some((_, eth_src, _)) = ethernet::parse_header(frame) else {
        return false;
    };
    let Some(packet) = Frame::new(frame).from(ethernet::HEADER_LEN) else {
        return false;
    };
    if packet.len() < ipv4::HEADER_LEN {
        return false;
    }
    let header = Ipv4Packet::new_unchecked(packet.bytes());
    let src = header.src_addr();
    let is_icmp_error = header.next_header() == IpProtocol::Icmp
        && packet
            .u8(usize::from(header.header_len()))
            .is_some_and(|t| t != ECHO_REQUEST && t != icmpv4::ECHO_REPLY);
    if is_icmp_error || src.is_broadcast() || src.is_multicast() || src.is_unspecified() {
        return false;
    }
    let tos = (header.dscp() << 2) | header.ecn();
    let quote = packet
        .up_to(usize::from(header.total_len()))
        .up_to(MAX_QUOTE)
        .bytes();
    let icmp_start = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    let len = icmp_start + icmpv4::HEADER_LEN + quote.len();
    out.clear();
    out.resize(len.max(ethernet::MIN_FRAME_LEN), 0);
    ethernet::write_header(out, eth_src, plan.gateway_mac, ethernet::ETHERTYPE_IPV4);
    ipv4::write_header(
        &mut out[ethernet::HEADER_LEN..],
        &ipv4::Header {
            src: v4.gateway,
            dst: src,
            protocol: IpProtocol::Icmp,
            tos: (tos & ipv4::TOS_SERVICE_MASK) | ipv4::TOS_PREC_INTERNETCONTROL,
            ttl: ipv4::MAX_TTL,
            ident: ident.next_id(),
            dont_frag: false,
            payload_len: icmpv4::HEADER_LEN + quote.len(),
        },
    );
    let icmp = &mut out[icmp_start..len];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[4..8].copy_from_slice(&rest);
    icmp[icmpv4::HEADER_LEN..].copy_from_slice(quote);
    icmpv4::fill_checksum(icmp);
    true
}
