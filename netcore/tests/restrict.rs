//! `restrict=on` as slirp applies it, through the engine: a connection attempt to anywhere is
//! reset (slirp's `tcp_input` drops it with a reset), and a UDP datagram to anywhere is dropped
//! without an answer, over both families; no host socket is opened for either.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::*;
use netcore::{Engine, EngineOptions};
use netplan::NetPlan;
use smoltcp::wire::{IpAddress, IpProtocol, TcpPacket};

const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);

/// A restricted engine whose flow tables would take flows: what it refuses, it refuses for
/// the restriction, not for want of room.
fn restricted() -> Engine {
    let mut plan = NetPlan::slirp_default();
    plan.restrict = true;
    Engine::with_options(plan, EngineOptions::default()).expect("engine")
}

/// The IP protocol (or IPv6 next header) of an answer, and where its L4 header starts.
fn protocol(frame: &[u8]) -> (u8, usize) {
    match frame[12..14] {
        [0x86, 0xdd] => (frame[20], 54),
        _ => (frame[23], 34),
    }
}

/// The TCP flags and acknowledgment number of the one TCP segment among `frames`.
fn tcp_answer(frames: &[Vec<u8>]) -> (u8, u32) {
    let tcp: Vec<&Vec<u8>> = frames.iter().filter(|f| protocol(f).0 == 6).collect();
    assert_eq!(tcp.len(), 1, "one TCP answer expected: {frames:02x?}");
    let seg = &tcp[0][protocol(tcp[0]).1..];
    (
        seg[13],
        u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]),
    )
}

const RST_ACK: u8 = 0x14;

#[test]
fn a_connection_attempt_is_reset_over_ipv4() {
    let mut e = restricted();
    let remote = Ipv4Addr::new(198, 51, 100, 7);
    for dst in [remote, GATEWAY] {
        let mut syn = tcp_syn(40000, 80, 1000);
        TcpPacket::new_unchecked(&mut syn[..])
            .fill_checksum(&IpAddress::Ipv4(GUEST_IP), &IpAddress::Ipv4(dst));
        let frame = ipv4_frame(GUEST_IP, dst, IpProtocol::Tcp, &syn, &IpOpts::default());
        let answers = run(&mut e, &frame);
        assert_eq!(tcp_answer(&answers), (RST_ACK, 1001), "to {dst}");
        assert!(
            answers.iter().all(|f| f[23] != 1),
            "no ICMP error: {answers:02x?}"
        );
    }
    assert_eq!(e.open_flows(), (0, 0, 0));
    assert_eq!(e.stats().tcp.restricted, 2, "{}", e.stats());
}

#[test]
fn a_connection_attempt_is_reset_over_ipv6() {
    let mut e = restricted();
    let gateway: Ipv6Addr = "fec0::2".parse().unwrap();
    let frame = ipv6_frame(GUEST_V6, gateway, IpProtocol::Tcp, tcp_syn(40000, 22, 77));
    let answers = run(&mut e, &frame);
    // The guest's first IPv6 frame also brings a router advertisement.
    assert_eq!(tcp_answer(&answers), (RST_ACK, 78));
    assert_eq!(e.open_flows(), (0, 0, 0));
}

#[test]
fn a_datagram_to_anywhere_is_dropped_without_an_answer() {
    let mut e = restricted();
    let remote = Ipv4Addr::new(198, 51, 100, 7);
    for dst in [remote, GATEWAY, DNS] {
        let datagram = udp(GUEST_IP, 5000, dst, 53, b"query");
        let frame = ipv4_frame(
            GUEST_IP,
            dst,
            IpProtocol::Udp,
            &datagram,
            &IpOpts::default(),
        );
        assert!(run(&mut e, &frame).is_empty(), "an answer to UDP for {dst}");
    }
    let gateway: Ipv6Addr = "fec0::2".parse().unwrap();
    let answers = run(&mut e, &udp6_frame(GUEST_V6, 5000, gateway, 53, b"query"));
    assert!(
        answers
            .iter()
            .all(|f| f[20] != 17 && f[20] != 58 || f[54] == 134)
    );
    assert_eq!(e.counters().unreachables, 0);
    assert_eq!(e.open_flows(), (0, 0, 0));
}
