//! Random and truncated mutations of valid guest frames must never panic the engine.
//!
//! Mutated frames mostly fail a checksum; half of them get their IPv4, UDP and ICMP checksums
//! fixed up after mutating, so the deeper parsers (BOOTP fields, options, lengths) see them too.

mod common;

use std::net::Ipv4Addr;

use common::*;
use netcore::{Engine, MemoryLink};
use policy::NetPlan;
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

/// Recomputes IPv4, UDP and ICMP checksums where the header makes that possible, reading
/// only through `get` so that any garbage is survivable here too.
fn fix_checksums(frame: &mut [u8]) {
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
        _ => {}
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
    let mut link = MemoryLink::new();
    let iterations = 30_000;
    for i in 0..iterations {
        let mut frame = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut frame);
        if i % 2 == 0 {
            fix_checksums(&mut frame);
        }
        e.handle_frame(&frame[..], &mut link);
        // Everything sent to the guest is at least an Ethernet minimum frame.
        for f in link.take() {
            assert!(f.len() >= 60);
        }
    }
    let c = e.counters();
    assert_eq!(c.tx_frames, iterations);
    assert!(c.tx_malformed > 0);
    assert!(c.arp_replies + c.dhcp_replies + c.icmp_replies > 0);
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
