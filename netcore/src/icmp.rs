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
//! What arrives is checked as slirp checks it: the IPv4 header (see [`crate::ipv4`]), at
//! least 8 bytes of ICMP and a correct ICMP checksum; anything else is malformed. A reply is
//! never larger than its request, so whatever size the guest's link carried one way (up to a
//! 65535-byte IP packet) it carries back. Fragments are not reassembled and stay unhandled, as
//! do echoes to other addresses (forwarded through ping sockets by the NAT, later) and every
//! other ICMP message. Nothing in this module keeps state.

use netplan::NetPlan;
use smoltcp::wire::checksum;

use crate::engine::Verdict;
use crate::ethernet;
use crate::ipv4::{self, Ident};

/// ICMP header: type, code, checksum, identifier, sequence number.
const HEADER_LEN: usize = 8;
const ECHO_REPLY: u8 = 0;
pub const ECHO_REQUEST: u8 = 8;
/// slirp's MAXTTL, for every ICMP packet it sends.
const REPLY_TTL: u8 = 255;
pub const DEST_UNREACHABLE: u8 = 3;
pub const TIME_EXCEEDED: u8 = 11;
/// Destination-unreachable codes.
pub const UNREACH_NET: u8 = 0;
pub const UNREACH_HOST: u8 = 1;
pub const UNREACH_PORT: u8 = 3;
/// "Fragmentation needed", with the next-hop MTU.
pub const UNREACH_NEEDFRAG: u8 = 4;
/// Bytes of the offending datagram an error quotes at most (slirp's limit).
pub const MAX_QUOTE: usize = 548;

/// Answers an echo request to the gateway or DNS address; the answer frame goes into `out`.
/// `ident` numbers the IPv4 packet of the answer.
pub fn handle(plan: &NetPlan, ident: &mut Ident, frame: &[u8], out: &mut Vec<u8>) -> Verdict {
    let Some(v4) = &plan.ipv4 else {
        return Verdict::Unhandled;
    };
    let Some((_, eth_src, _)) = ethernet::parse_header(frame) else {
        return Verdict::Malformed;
    };
    let Some(ip) = frame.get(ethernet::HEADER_LEN..).and_then(ipv4::parse) else {
        return Verdict::Malformed;
    };
    // slirp answers TTL 0 with time-exceeded and reassembles fragments; neither is done here.
    if ip.fragment || ip.protocol != ipv4::PROTO_ICMP || ip.ttl == 0 {
        return Verdict::Unhandled;
    }
    let icmp = ip.payload;
    if icmp.len() < HEADER_LEN || checksum::data(icmp) != !0 {
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
            protocol: ipv4::PROTO_ICMP,
            tos: ip.tos,
            ttl: REPLY_TTL,
            ident: ident.next_id(),
            dont_frag: ip.dont_frag,
            payload_len: icmp.len(),
        },
    );
    let reply = &mut out[icmp_start..len];
    reply.copy_from_slice(icmp);
    reply[0] = ECHO_REPLY;
    reply[2..4].fill(0);
    let sum = !checksum::data(reply);
    reply[2..4].copy_from_slice(&sum.to_be_bytes());
    Verdict::Reply
}

/// Builds an ICMP destination-unreachable error about the guest packet at the start of
/// `frame` (Ethernet onwards, possibly cut short), as slirp's `icmp_send_error` does: from the
/// gateway, TTL 255, TOS `(tos & 0x1e) | 0xc0`, quoting up to [`MAX_QUOTE`] bytes of the packet.
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
/// [`unreachable`] builds it; `rest` is the header's second word (the next-hop MTU of
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
    let Some(packet) = frame.get(ethernet::HEADER_LEN..) else {
        return false;
    };
    if packet.len() < ipv4::HEADER_LEN {
        return false;
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    let src = std::net::Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let is_icmp_error = packet[9] == ipv4::PROTO_ICMP
        && packet
            .get(header_len)
            .is_some_and(|&t| t != ECHO_REQUEST && t != ECHO_REPLY);
    if is_icmp_error || src.is_broadcast() || src.is_multicast() || src.is_unspecified() {
        return false;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let quote = &packet[..total.min(packet.len()).min(MAX_QUOTE)];
    let icmp_start = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    let len = icmp_start + HEADER_LEN + quote.len();
    out.clear();
    out.resize(len.max(ethernet::MIN_FRAME_LEN), 0);
    ethernet::write_header(out, eth_src, plan.gateway_mac, ethernet::ETHERTYPE_IPV4);
    ipv4::write_header(
        &mut out[ethernet::HEADER_LEN..],
        &ipv4::Header {
            src: v4.gateway,
            dst: src,
            protocol: ipv4::PROTO_ICMP,
            tos: (packet[1] & 0x1e) | 0xc0,
            ttl: REPLY_TTL,
            ident: ident.next_id(),
            dont_frag: false,
            payload_len: HEADER_LEN + quote.len(),
        },
    );
    let icmp = &mut out[icmp_start..len];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[4..8].copy_from_slice(&rest);
    icmp[HEADER_LEN..].copy_from_slice(quote);
    let sum = !checksum::data(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    true
}
