//! Random and truncated mutations of valid guest frames must never panic the engine.
//!
//! Mutated frames mostly fail a checksum; half of them get their IP-layer and transport
//! checksums fixed up after mutating, so the deeper parsers (BOOTP fields, NDP and DHCPv6
//! options, TCP options, lengths) see them too.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::*;
use netcore::{Engine, MemoryLink};
use netplan::NetPlan;
use smoltcp::wire::checksum;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let zero = Ipv4Addr::UNSPECIFIED;
    let pool = Ipv4Addr::new(10, 0, 2, 15);
    let mut raw = bootp(
        GUEST_MAC,
        1,
        zero,
        &[(53, &[1]), (50, &[10, 0, 2, 20]), (61, &[1, 2, 3])],
    );
    raw.truncate(260);
    vec![
        arp_request(GUEST_IP, GATEWAY),
        arp_request(GUEST_IP, DNS),
        dhcp_frame(GUEST_MAC, Some(DISCOVER), None, zero),
        dhcp_frame(GUEST_MAC, Some(REQUEST), Some(pool), zero),
        dhcp_frame(GUEST_MAC, Some(REQUEST), None, pool),
        dhcp_frame(GUEST_MAC, None, None, zero),
        dhcp_frame_raw(GUEST_MAC, GATEWAY, &raw),
        ping_frame(GATEWAY, 1, 1, b"0123456789abcdef"),
        ping_frame(DNS, 2, 2, &[0u8; 300]),
        ipv4_frame(
            GUEST_IP,
            GATEWAY,
            smoltcp::wire::IpProtocol::Icmp,
            &echo_request(3, 3, b"opt"),
            &IpOpts {
                options: vec![1, 1, 1, 0],
                ..IpOpts::default()
            },
        ),
    ]
}

const ETHERTYPE_IPV6: u16 = 0x86dd;
const GUEST_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
const GUEST_GLOBAL: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 2);
const DNS6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 3);

/// An IPv6 frame from the guest to the all-routers MAC, hop limit 255, carrying `l4` (its
/// checksum field filled in here): a seed of its own, not `common::ipv6_frame`.
fn seed_ipv6_frame(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(54 + l4.len());
    frame.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 2]);
    frame.extend_from_slice(&GUEST_MAC.0);
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[next_header, 255]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(l4);
    fix_checksums(&mut frame);
    frame
}

/// A TCP segment (checksum left zero) with MSS, window scale, SACK-permitted and timestamp
/// options on a SYN, and `data` otherwise.
fn tcp_segment(dport: u16, syn: bool, data: &[u8]) -> Vec<u8> {
    let options: &[u8] = if syn {
        &[
            2, 4, 5, 0xb4, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1,
        ]
    } else {
        &[]
    };
    let header_len = (20 + options.len()).div_ceil(4) * 4;
    let mut tcp = vec![0u8; header_len];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&if syn { 0u32 } else { 1u32 }.to_be_bytes());
    tcp[12] = ((header_len / 4) as u8) << 4;
    tcp[13] = if syn { 0x02 } else { 0x18 };
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[20..20 + options.len()].copy_from_slice(options);
    tcp.extend_from_slice(data);
    tcp
}

/// A UDP datagram (checksum left zero).
fn udp_datagram(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&5353u16.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    udp
}

/// A DNS query for `example.com`, type A.
const DNS_QUERY: &[u8] = &[
    0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c',
    b'o', b'm', 0, 0, 1, 0, 1,
];

/// IPv6 (router solicitation, neighbour solicitation, echo, DHCPv6, MLD) and transport (TCP
/// with options, UDP, DNS) frames, both address families.
fn ipv6_and_transport_seeds() -> Vec<Vec<u8>> {
    let slla = |t: u8| {
        let mut m = vec![t, 1];
        m.extend_from_slice(&GUEST_MAC.0);
        m
    };
    let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
    let mut rs = vec![133, 0, 0, 0, 0, 0, 0, 0];
    rs.extend_from_slice(&slla(1));
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&GATEWAY6.octets());
    ns.extend_from_slice(&slla(1));
    let solicited = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2);
    let echo = [128, 0, 0, 0, 0, 7, 0, 1, b'p', b'i', b'n', b'g'];
    let mld = [143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0]
        .iter()
        .copied()
        .chain(solicited.octets())
        .collect::<Vec<u8>>();
    // DHCPv6 Information-request: client id (DUID-LL), option request (DNS, domain list),
    // elapsed time.
    let mut dhcpv6 = vec![11, 0xab, 0xcd, 0xef];
    dhcpv6.extend_from_slice(&[0, 1, 0, 10, 0, 3, 0, 1]);
    dhcpv6.extend_from_slice(&GUEST_MAC.0);
    dhcpv6.extend_from_slice(&[0, 6, 0, 4, 0, 23, 0, 24, 0, 8, 0, 2, 0, 0]);
    let mut solicit = dhcpv6.clone();
    solicit[0] = 1;
    solicit.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    let dhcp_servers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
    let v4 = |proto, l4: &[u8]| {
        let mut f = ipv4_frame(GUEST_IP, GATEWAY, proto, l4, &IpOpts::default());
        fix_checksums(&mut f);
        f
    };
    let v4_dns = {
        let mut f = ipv4_frame(
            GUEST_IP,
            DNS,
            smoltcp::wire::IpProtocol::Udp,
            &udp_datagram(53, DNS_QUERY),
            &IpOpts::default(),
        );
        fix_checksums(&mut f);
        f
    };
    vec![
        seed_ipv6_frame(GUEST_LINK_LOCAL, all_routers, 58, &rs),
        seed_ipv6_frame(GUEST_LINK_LOCAL, solicited, 58, &ns),
        seed_ipv6_frame(GUEST_GLOBAL, GATEWAY6, 58, &echo),
        seed_ipv6_frame(GUEST_LINK_LOCAL, solicited, 0, &mld),
        seed_ipv6_frame(GUEST_LINK_LOCAL, dhcp_servers, 17, &{
            let mut u = udp_datagram(547, &dhcpv6);
            u[0..2].copy_from_slice(&546u16.to_be_bytes());
            u
        }),
        seed_ipv6_frame(GUEST_LINK_LOCAL, dhcp_servers, 17, &{
            let mut u = udp_datagram(547, &solicit);
            u[0..2].copy_from_slice(&546u16.to_be_bytes());
            u
        }),
        seed_ipv6_frame(GUEST_GLOBAL, DNS6, 17, &udp_datagram(53, DNS_QUERY)),
        seed_ipv6_frame(GUEST_GLOBAL, GATEWAY6, 6, &tcp_segment(22, true, &[])),
        seed_ipv6_frame(GUEST_GLOBAL, GATEWAY6, 6, &tcp_segment(22, false, b"data")),
        v4(smoltcp::wire::IpProtocol::Tcp, &tcp_segment(22, true, &[])),
        v4(
            smoltcp::wire::IpProtocol::Tcp,
            &tcp_segment(22, false, b"data"),
        ),
        v4(
            smoltcp::wire::IpProtocol::Udp,
            &udp_datagram(9, b"discard me"),
        ),
        v4_dns,
    ]
}

fn mutate(rng: &mut Rng, frame: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            // Flip bits of a random byte.
            0 | 1 => {
                let i = rng.below(frame.len());
                if let Some(b) = frame.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            // Overwrite a byte with an interesting value.
            2 => {
                let i = rng.below(frame.len());
                let v = [0u8, 1, 0x7f, 0x80, 0xff, 5, 6, 20, 53, 255][rng.below(10)];
                if let Some(b) = frame.get_mut(i) {
                    *b = v;
                }
            }
            // Truncate.
            3 => {
                let len = rng.below(frame.len() + 1);
                frame.truncate(len);
            }
            // Grow with garbage.
            4 => {
                for _ in 0..rng.below(64) {
                    frame.push(rng.next() as u8);
                }
            }
            // Corrupt a 16-bit length field: IP total length, UDP length, ARP lengths.
            5 => {
                let at = [16usize, 38, 18, 19][rng.below(4)];
                let v = [0u16, 1, 8, 19, 20, 21, 236, 240, 0xffff][rng.below(9)];
                if let Some(b) = frame.get_mut(at..at + 2) {
                    b.copy_from_slice(&v.to_be_bytes());
                }
            }
            // Change the IP header length.
            _ => {
                if let Some(b) = frame.get_mut(14) {
                    *b = 0x40 | (rng.below(16) as u8);
                }
            }
        }
    }
}

/// Recomputes IPv4, IPv6, TCP, UDP, ICMP and ICMPv6 checksums where the headers make that
/// possible, reading only through `get` so that any garbage is survivable here too.
fn fix_checksums(frame: &mut [u8]) {
    if frame.get(12..14) == Some(&ETHERTYPE_IPV6.to_be_bytes()[..]) {
        fix_checksums_v6(frame);
        return;
    }
    let Some(ip) = frame.get_mut(14..) else {
        return;
    };
    let Some(&vihl) = ip.first() else {
        return;
    };
    let hl = usize::from(vihl & 0xf) * 4;
    if hl < 20 || ip.len() < hl {
        return;
    }
    ip[10..12].fill(0);
    let sum = !checksum::data(&ip[..hl]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if total < hl {
        return;
    }
    let (src, dst) = (
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
    );
    let proto = ip[9];
    let l4 = &mut ip[hl..total];
    match proto {
        1 if l4.len() >= 4 => {
            l4[2..4].fill(0);
            let sum = !checksum::data(l4);
            l4[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        17 if l4.len() >= 8 => {
            let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if ulen < 8 || ulen > l4.len() {
                return;
            }
            l4[6..8].fill(0);
            let sum = !checksum::combine(&[
                checksum::pseudo_header_v4(&src, &dst, smoltcp::wire::IpProtocol::Udp, ulen as u32),
                checksum::data(&l4[..ulen]),
            ]);
            l4[6..8].copy_from_slice(&sum.to_be_bytes());
        }
        6 if l4.len() >= 20 => {
            l4[16..18].fill(0);
            let sum = !checksum::combine(&[
                checksum::pseudo_header_v4(
                    &src,
                    &dst,
                    smoltcp::wire::IpProtocol::Tcp,
                    l4.len() as u32,
                ),
                checksum::data(l4),
            ]);
            l4[16..18].copy_from_slice(&sum.to_be_bytes());
        }
        _ => {}
    }
}

/// The IPv6 half of [`fix_checksums`]: the transport checksum of a packet without extension
/// headers (next header 6, 17 or 58), over what the payload length covers.
fn fix_checksums_v6(frame: &mut [u8]) {
    let Some(ip) = frame.get_mut(14..) else {
        return;
    };
    if ip.len() < 40 {
        return;
    }
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]])).min(ip.len() - 40);
    let next_header = ip[6];
    let octets = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap());
    let (src, dst) = (octets(&ip[8..24]), octets(&ip[24..40]));
    let (protocol, at) = match next_header {
        6 => (smoltcp::wire::IpProtocol::Tcp, 16),
        17 => (smoltcp::wire::IpProtocol::Udp, 6),
        58 => (smoltcp::wire::IpProtocol::Icmpv6, 2),
        _ => return,
    };
    let l4 = &mut ip[40..40 + len];
    if l4.len() < at + 2 {
        return;
    }
    l4[at..at + 2].fill(0);
    let sum = !checksum::combine(&[
        checksum::pseudo_header_v6(&src, &dst, protocol, len as u32),
        checksum::data(l4),
    ]);
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// Sends `iterations` mutated copies of the seeds (half with checksums fixed up) through
/// `engine`, checking that everything it answers is at least an Ethernet minimum frame.
fn feed_mutations(engine: &mut Engine, seeds: &[Vec<u8>], rng: &mut Rng, iterations: u64) {
    let mut link = MemoryLink::new();
    for i in 0..iterations {
        let mut frame = seeds[rng.below(seeds.len())].clone();
        mutate(rng, &mut frame);
        if i % 2 == 0 {
            fix_checksums(&mut frame);
        }
        engine.handle_frame(&frame[..], &mut link);
        for answer in link.take() {
            assert!(
                answer.len() >= 60,
                "a {}-byte answer: {answer:02x?}\nto {frame:02x?}",
                answer.len()
            );
        }
    }
}

#[test]
fn mutated_frames_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut plan = NetPlan::slirp_default();
    plan.dhcp.search = vec!["example.com".into(), "corp.example.com".into()];
    plan.dhcp.hostname = Some("guest".into());
    let mut e = Engine::isolated(plan);
    let iterations = 30_000;
    feed_mutations(&mut e, &seeds, &mut rng, iterations);
    let c = e.counters();
    assert_eq!(c.tx_frames, iterations);
    assert!(c.tx_malformed > 0);
    assert!(c.arp_replies + c.dhcp_replies + c.icmp_replies > 0);
}

#[test]
fn mutated_ipv6_and_transport_frames_never_panic() {
    let seeds = ipv6_and_transport_seeds();
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let plan = NetPlan::slirp_default();
    assert!(plan.ipv6.is_some(), "the IPv6 parsers are reached");
    // No flows: TCP and UDP are parsed and refused, nothing reaches the host.
    let mut e = Engine::isolated(plan);
    let mut link = MemoryLink::new();
    // The unmutated seeds get answers: they are valid, so mutations start from real paths.
    for seed in &seeds {
        e.handle_frame(&seed[..], &mut link);
    }
    let answered = link.take().len();
    assert!(answered >= 5, "only {answered} answers to the seeds");
    let iterations = 30_000;
    feed_mutations(&mut e, &seeds, &mut rng, iterations);
    let c = e.counters();
    assert_eq!(c.tx_frames, iterations + seeds.len() as u64);
    assert!(c.tx_malformed > 0);
}

/// TFTP read requests (options included), ACKs and ERRORs to the gateway, both families.
fn tftp_seeds() -> Vec<Vec<u8>> {
    let rrq: &[u8] = b"\0\x01boot.img\0octet\0tsize\x000\0blksize\x001428\0";
    let plain: &[u8] = b"\0\x01sub/file\0OCTET\0";
    let mut seeds = Vec::new();
    for msg in [
        rrq,
        plain,
        b"\0\x04\0\x01",
        b"\0\x04\0\0",
        b"\0\x05\0\0oops\0",
    ] {
        let mut v4 = ipv4_frame(
            GUEST_IP,
            GATEWAY,
            smoltcp::wire::IpProtocol::Udp,
            &udp_datagram(69, msg),
            &IpOpts::default(),
        );
        fix_checksums(&mut v4);
        seeds.push(v4);
        seeds.push(seed_ipv6_frame(
            GUEST_GLOBAL,
            GATEWAY6,
            17,
            &udp_datagram(69, msg),
        ));
    }
    seeds
}

#[test]
fn mutated_tftp_messages_never_panic() {
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/vnu-tftp-fuzz-").unwrap();
    std::fs::write(dir.as_path().join("boot.img"), vec![7u8; 5000]).unwrap();
    std::fs::create_dir(dir.as_path().join("sub")).unwrap();
    std::fs::write(dir.as_path().join("sub/file"), b"small").unwrap();
    let mut plan = NetPlan::slirp_default();
    plan.tftp_root = Some(dir.as_path().to_owned());
    let seeds = tftp_seeds();
    let mut e = Engine::isolated(plan);
    let mut link = MemoryLink::new();
    for seed in &seeds {
        e.handle_frame(&seed[..], &mut link);
    }
    assert!(e.tftp_counters().transfers >= 2, "{:?}", e.tftp_counters());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    feed_mutations(&mut e, &seeds, &mut rng, 30_000);
    let t = e.tftp_counters();
    assert!(t.errors_sent > 0 && t.data_blocks > 0, "{t:?}");
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = Rng(42);
    let mut e = Engine::isolated(NetPlan::slirp_default());
    let mut link = MemoryLink::new();
    for _ in 0..20_000 {
        let len = rng.below(400);
        let mut frame: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Steer a share of them at the interesting ethertypes and protocols.
        match rng.below(4) {
            0 => {
                if let Some(t) = frame.get_mut(12..14) {
                    t.copy_from_slice(&[0x08, 0x06]);
                }
            }
            1 | 2 => {
                if let Some(t) = frame.get_mut(12..15) {
                    t.copy_from_slice(&[0x08, 0x00, 0x45]);
                }
                if let Some(p) = frame.get_mut(23) {
                    *p = [1u8, 17][rng.below(2)];
                }
                if let Some(port) = frame.get_mut(36..38) {
                    port.copy_from_slice(&67u16.to_be_bytes());
                }
                if rng.below(2) == 0 {
                    fix_checksums(&mut frame);
                }
            }
            _ => {}
        }
        e.handle_frame(&frame[..], &mut link);
        link.take();
    }
    assert_eq!(e.counters().tx_frames, 20_000);
}
