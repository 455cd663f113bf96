//! Neighbour discovery, echo and errors checked byte by byte against what slirp sends.

use super::emit::ALL_NODES;
use super::*;
use crate::wire::ip::{self, Addrs, GuestHeader, GuestPacket, PacketMeta};
use netplan::MacAddr;
use smoltcp::wire::{IpProtocol, checksum};

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

/// A router solicitation from `src` to all routers, sent with `hop_limit`.
fn router_solicitation(src: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    guest_frame(
        src,
        "ff02::2".parse().unwrap(),
        hop_limit,
        &[ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0],
    )
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
    let rs = router_solicitation("fe80::5054:ff:fe41:2c49".parse().unwrap(), 255);
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
    let rs = router_solicitation("fe80::1".parse().unwrap(), 64);
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
    let frame = router_solicitation(Ipv6Addr::UNSPECIFIED, 255);
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
    let mut rs = router_solicitation("fe80::1".parse().unwrap(), 255);
    let last = rs.len() - 1;
    rs[last] ^= 1;
    assert_eq!(answer(&plan, &rs).0, Verdict::Malformed);
}
