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

use std::net::Ipv6Addr;

use netplan::{Ipv6Plan, MacAddr, NetPlan, Services};
use smoltcp::wire::IpProtocol;

use super::Verdict;
use crate::wire::frame::Frame;
use crate::wire::icmpv6::{
    ND_HOP_LIMIT, ND_TARGET, NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT, REDIRECT, ROUTER_ADVERT,
    ROUTER_SOLICIT,
};
use crate::wire::ip::{self, Addrs, PacketMeta};
use crate::wire::{ethernet, icmpv6, ipv6};

pub use crate::wire::icmpv6::{
    DEST_UNREACHABLE, ECHO_REPLY, ECHO_REQUEST, PACKET_TOO_BIG, TIME_EXCEEDED, UNREACH_ADDRESS,
    UNREACH_NO_ROUTE,
};

const RA_CUR_HOP_LIMIT: u8 = 64;
const ROUTER_LIFETIME: u16 = 1800;
const PREFIX_VALID: u32 = 86400;
const PREFIX_PREFERRED: u32 = 14400;
/// slirp's RDNSS lifetime: `2 * 600000`, a unit mix-up it has always sent.
const RDNSS_LIFETIME: u32 = 1_200_000;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The Ethernet address of [`ALL_NODES`] (33:33 and its low 32 bits).
const ALL_NODES_MAC: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
/// The most of the invoking packet an error quotes: slirp's 1500-byte MTU less the error's
/// IPv6 and ICMPv6 headers.
pub const MAX_QUOTE: usize = 1500 - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;

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

fn neighbor_advert(target: Ipv6Addr, to: Ipv6Addr, guest_mac: MacAddr, out: &mut Vec<u8>) {
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

fn echo_reply(ip: &ipv6::GuestHeader, icmp: &[u8], guest_mac: MacAddr, out: &mut Vec<u8>) {
    let mut body = icmp.to_vec();
    body[0] = ECHO_REPLY;
    frame_into(ip.dst, ip.src, guest_mac, &body, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::{GuestHeader, GuestPacket};
    use smoltcp::wire::checksum;

    /// A guest or answer frame's IPv6 header and where its message lies.
    struct Ipv6Header {
        header: ipv6::GuestHeader,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        l4_offset: usize,
        l4_len: usize,
    }

    impl Ipv6Header {
        fn parse(frame: &[u8], frame_len: usize) -> Option<Ipv6Header> {
            let p = GuestPacket::ipv6(frame, frame_len)?;
            let GuestHeader::V6(header) = p.header else {
                return None;
            };
            Some(Ipv6Header {
                header,
                src: header.src,
                dst: header.dst,
                hop_limit: header.hop_limit,
                l4_offset: p.l4_offset,
                l4_len: p.l4_len,
            })
        }

        fn message<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
            &frame[self.l4_offset..self.l4_offset + self.l4_len]
        }
    }

    const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x41, 0x2c, 0x49]);

    fn guest_frame(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, icmp_body: &[u8]) -> Vec<u8> {
        let meta = PacketMeta {
            src_mac: GUEST_MAC,
            dst_mac: MacAddr([0x33, 0x33, 0, 0, 0, 2]),
            addrs: Addrs::V6 { src, dst },
            protocol: IpProtocol::Icmpv6,
            ttl: hop_limit,
            tos: 0,
            ident: 0,
        };
        let mut out = vec![0u8; 54 + icmp_body.len()];
        let off = ip::write_headers(&mut out, &meta, icmp_body.len());
        out[off..].copy_from_slice(icmp_body);
        let pseudo = meta
            .addrs
            .pseudo_header_sum(IpProtocol::Icmpv6, icmp_body.len());
        let sum = !checksum::combine(&[pseudo, checksum::data(&out[off..])]);
        out[off + 2..off + 4].copy_from_slice(&sum.to_be_bytes());
        out
    }

    fn answer(plan: &NetPlan, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let ip = Ipv6Header::parse(frame, frame.len()).unwrap();
        let mut out = Vec::new();
        let v = handle(
            plan,
            false,
            GUEST_MAC,
            &ip.header,
            ip.message(frame),
            &mut out,
        );
        (v, out)
    }

    fn checksum_ok(frame: &[u8]) -> bool {
        let ip = Ipv6Header::parse(frame, frame.len()).unwrap();
        let body = &frame[ip.l4_offset..];
        let pseudo = ip::pseudo_header_sum(
            &ip.src.into(),
            &ip.dst.into(),
            IpProtocol::Icmpv6,
            body.len(),
        );
        checksum::combine(&[pseudo, checksum::data(body)]) == 0xffff
    }

    #[test]
    fn router_solicitation_gets_slirps_advertisement() {
        let plan = NetPlan::slirp_default();
        let rs = guest_frame(
            "fe80::5054:ff:fe41:2c49".parse().unwrap(),
            "ff02::2".parse().unwrap(),
            255,
            &[ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0],
        );
        let (v, ra) = answer(&plan, &rs);
        assert_eq!(v, Verdict::Reply);
        assert!(checksum_ok(&ra));
        assert_eq!(&ra[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&ra[6..12], &[0x52, 0x56, 0, 0, 0, 2]);
        let ip = Ipv6Header::parse(&ra, ra.len()).unwrap();
        assert_eq!(ip.src, "fe80::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.dst, ALL_NODES);
        assert_eq!(ip.hop_limit, 255);
        let body = &ra[ip.l4_offset..];
        assert_eq!(body[0], ROUTER_ADVERT);
        assert_eq!(body[4], 64, "current hop limit");
        assert_eq!(body[5], 0, "M and O clear");
        assert_eq!(u16::from_be_bytes([body[6], body[7]]), 1800);
        assert_eq!(&body[16..24], &[1, 1, 0x52, 0x56, 0, 0, 0, 2]);
        assert_eq!(&body[24..28], &[3, 4, 64, 0xc0]);
        assert_eq!(&body[28..32], &86400u32.to_be_bytes());
        assert_eq!(&body[32..36], &14400u32.to_be_bytes());
        assert_eq!(
            &body[40..56],
            &"fec0::".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            body.len(),
            56,
            "no RDNSS without an IPv6 resolver, no MTU option"
        );

        let mut with_dns = Vec::new();
        router_advert(plan.ipv6.as_ref().unwrap(), true, &mut with_dns);
        let ip = Ipv6Header::parse(&with_dns, with_dns.len()).unwrap();
        let body = &with_dns[ip.l4_offset..];
        assert_eq!(&body[56..60], &[25, 3, 0, 0]);
        assert_eq!(&body[60..64], &1_200_000u32.to_be_bytes());
        assert_eq!(
            &body[64..80],
            &"fec0::3".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    #[test]
    fn solicitations_with_a_lower_hop_limit_are_ignored() {
        let plan = NetPlan::slirp_default();
        let rs = guest_frame(
            "fe80::1".parse().unwrap(),
            "ff02::2".parse().unwrap(),
            64,
            &[ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(answer(&plan, &rs).0, Verdict::Unhandled);
    }

    fn ns(target: &str, src: &str) -> Vec<u8> {
        let mut body = vec![NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&target.parse::<Ipv6Addr>().unwrap().octets());
        guest_frame(
            src.parse().unwrap(),
            "ff02::1:ff00:2".parse().unwrap(),
            255,
            &body,
        )
    }

    #[test]
    fn neighbour_solicitations_for_emulated_hosts_are_answered() {
        let plan = NetPlan::slirp_default();
        for (target, mac_low) in [
            ("fe80::2", 2),
            ("fec0::2", 2),
            ("fec0::3", 3),
            ("fe80::3", 3),
        ] {
            let (v, na) = answer(&plan, &ns(target, "fec0::5054:ff:fe41:2c49"));
            assert_eq!(v, Verdict::Reply, "{target}");
            assert!(checksum_ok(&na));
            assert_eq!(&na[0..6], &GUEST_MAC.0);
            assert_eq!(&na[6..12], &[0x52, 0x56, 0, 0, 0, mac_low]);
            let ip = Ipv6Header::parse(&na, na.len()).unwrap();
            let body = &na[ip.l4_offset..];
            assert_eq!(body[0], NEIGHBOR_ADVERT);
            assert_eq!(body[4], 0xe0, "R, S and O set");
            assert_eq!(&body[8..24], &target.parse::<Ipv6Addr>().unwrap().octets());
            assert_eq!(&body[24..32], &[2, 1, 0x52, 0x56, 0, 0, 0, mac_low]);
        }
        // Duplicate address detection (from ::) is answered to all nodes, without S.
        let (_, na) = answer(&plan, &ns("fec0::2", "::"));
        let ip = Ipv6Header::parse(&na, na.len()).unwrap();
        assert_eq!(ip.dst, ALL_NODES);
        assert_eq!(na[ip.l4_offset + 4], 0xa0);
        // Anything else is not ours.
        assert_eq!(
            answer(&plan, &ns("fec0::5054:ff:fe41:2c49", "::")).0,
            Verdict::Unhandled
        );
    }

    #[test]
    fn duplicate_address_detection_shows_the_address_the_guest_takes() {
        let frame = ns("fec0::5054:ff:fe41:2c49", "::");
        let ip = Ipv6Header::parse(&frame, frame.len()).unwrap();
        assert_eq!(
            dad_target(&ip.header, ip.message(&frame)),
            Some("fec0::5054:ff:fe41:2c49".parse().unwrap())
        );
        // An ordinary solicitation (from an address) probes nothing of the guest's own.
        let frame = ns("fec0::2", "fec0::5054:ff:fe41:2c49");
        let ip = Ipv6Header::parse(&frame, frame.len()).unwrap();
        assert_eq!(dad_target(&ip.header, ip.message(&frame)), None);
        // Nor does another ICMPv6 message from ::.
        let frame = guest_frame(
            Ipv6Addr::UNSPECIFIED,
            "ff02::2".parse().unwrap(),
            255,
            &[ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0],
        );
        let ip = Ipv6Header::parse(&frame, frame.len()).unwrap();
        assert_eq!(dad_target(&ip.header, ip.message(&frame)), None);
    }

    #[test]
    fn echo_to_the_gateway_is_answered_locally() {
        let plan = NetPlan::slirp_default();
        let mut body = vec![ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 9];
        body.extend_from_slice(b"ipv6 ping");
        let req = guest_frame(
            "fec0::5054:ff:fe41:2c49".parse().unwrap(),
            "fec0::2".parse().unwrap(),
            64,
            &body,
        );
        let (v, reply) = answer(&plan, &req);
        assert_eq!(v, Verdict::Reply);
        assert!(checksum_ok(&reply));
        let ip = Ipv6Header::parse(&reply, reply.len()).unwrap();
        assert_eq!(ip.src, "fec0::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.hop_limit, 255);
        assert_eq!(reply[ip.l4_offset], ECHO_REPLY);
        assert_eq!(&reply[ip.l4_offset + 4..], &body[4..]);
    }

    #[test]
    fn unreachable_quotes_at_most_max_quote_and_never_answers_multicast_or_unspecified() {
        let v6 = NetPlan::slirp_default().ipv6.unwrap();
        let guest: Ipv6Addr = "fec0::5054:ff:fe41:2c49".parse().unwrap();
        let big = guest_frame(guest, v6.gateway, 64, &vec![0xab; 3000]);
        let mut out = Vec::new();
        assert!(unreachable(&v6, &big, UNREACH_ADDRESS, &mut out));
        assert_eq!(
            out.len(),
            54 + 8 + MAX_QUOTE,
            "the packet quoted up to 1452 bytes"
        );
        assert_eq!(out.len(), 14 + 1500);
        assert_eq!((out[54], out[55]), (1, UNREACH_ADDRESS));
        assert_eq!(
            &out[62..62 + 40],
            &big[14..54],
            "the quote starts at the IPv6 header"
        );
        for src in [Ipv6Addr::UNSPECIFIED, "ff02::1".parse().unwrap()] {
            let frame = guest_frame(src, v6.gateway, 64, &[0; 8]);
            assert!(
                !unreachable(&v6, &frame, UNREACH_NO_ROUTE, &mut out),
                "{src}"
            );
        }
        assert!(
            !unreachable(&v6, &big[..30], UNREACH_NO_ROUTE, &mut out),
            "cut short"
        );
    }

    #[test]
    fn bad_checksums_are_malformed() {
        let plan = NetPlan::slirp_default();
        let mut rs = guest_frame(
            "fe80::1".parse().unwrap(),
            "ff02::2".parse().unwrap(),
            255,
            &[ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0],
        );
        let last = rs.len() - 1;
        rs[last] ^= 1;
        assert_eq!(answer(&plan, &rs).0, Verdict::Malformed);
    }
}
