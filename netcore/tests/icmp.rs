//! ICMP echo to the emulated hosts, driven through the engine as a guest would send it.

mod common;

use std::net::Ipv4Addr;

use common::*;
use netcore::Engine;
use netplan::{MacAddr, NetPlan};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, IpProtocol,
    Ipv4Packet,
};

fn engine() -> Engine {
    Engine::isolated(NetPlan::slirp_default())
}

/// Checks an echo reply from `from` and returns (IP header bytes, ICMP bytes).
fn check_reply(frame: &[u8], from: Ipv4Addr, gateway_mac: MacAddr) -> (Vec<u8>, Vec<u8>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.dst_addr(), EthernetAddress(GUEST_MAC.0));
    assert_eq!(eth.src_addr(), EthernetAddress(gateway_mac.0));
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.header_len(), 20);
    assert_eq!(ip.hop_limit(), 255);
    assert_eq!(ip.next_header(), IpProtocol::Icmp);
    assert_eq!(ip.src_addr(), from);
    assert_eq!(ip.dst_addr(), GUEST_IP);
    let total = usize::from(ip.total_len());
    let icmp_bytes = eth.payload()[20..total].to_vec();
    let icmp = Icmpv4Packet::new_checked(&icmp_bytes[..]).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.msg_type(), Icmpv4Message::EchoReply);
    (eth.payload()[..20].to_vec(), icmp_bytes)
}

#[test]
fn gateway_and_dns_answer_pings() {
    let mut e = engine();
    let data: Vec<u8> = (0..56u8).collect();
    for (dst, seq) in [(GATEWAY, 1), (DNS, 2)] {
        let reply = run_one(&mut e, &ping_frame(dst, 0x4242, seq, &data));
        let (_, icmp) = check_reply(&reply, dst, e.plan().gateway_mac);
        let icmp = Icmpv4Packet::new_checked(&icmp[..]).unwrap();
        assert_eq!(icmp.msg_code(), 0);
        assert_eq!(icmp.echo_ident(), 0x4242);
        assert_eq!(icmp.echo_seq_no(), seq);
        assert_eq!(icmp.data(), &data[..]);
        assert_eq!(reply.len(), 14 + 20 + 8 + 56);
    }
    assert_eq!(e.counters().icmp_replies, 2);
}

#[test]
fn reply_keeps_tos_df_and_code_and_counts_ids() {
    let mut e = engine();
    let mut echo = echo_request(1, 1, b"abc");
    // An unusual code is echoed back, as slirp only flips the type.
    echo[1] = 3;
    echo[2..4].fill(0);
    let sum = !smoltcp::wire::checksum::data(&echo);
    echo[2..4].copy_from_slice(&sum.to_be_bytes());
    let o = IpOpts {
        tos: 0xb8,
        dont_frag: false,
        ..IpOpts::default()
    };
    let reply = run_one(
        &mut e,
        &ipv4_frame(GUEST_IP, GATEWAY, IpProtocol::Icmp, &echo, &o),
    );
    let (ip, icmp) = check_reply(&reply, GATEWAY, e.plan().gateway_mac);
    assert_eq!(ip[1], 0xb8);
    assert_eq!(ip[6] & 0x40, 0, "DF as the request had it");
    assert_eq!(&ip[4..6], &[0, 0], "first packet: ident 0");
    assert_eq!(icmp[1], 3);
    // Short replies are padded to the Ethernet minimum.
    assert_eq!(reply.len(), 60);

    let reply = run_one(&mut e, &ping_frame(GATEWAY, 1, 2, b"abc"));
    let (ip, _) = check_reply(&reply, GATEWAY, e.plan().gateway_mac);
    assert_eq!(ip[6] & 0x40, 0x40, "DF kept");
    assert_eq!(&ip[4..6], &[0, 1]);
}

#[test]
fn source_mac_is_the_plan_gateway_mac_even_for_dns() {
    let mut plan = NetPlan::slirp_default();
    plan.gateway_mac = MacAddr([0x02, 0, 0, 0, 0, 9]);
    let mut e = Engine::isolated(plan.clone());
    let reply = run_one(&mut e, &ping_frame(DNS, 1, 1, b"x"));
    check_reply(&reply, DNS, plan.gateway_mac);
}

#[test]
fn answered_even_when_restricted() {
    let mut plan = NetPlan::slirp_default();
    plan.restrict = true;
    let mut e = Engine::isolated(plan);
    assert_eq!(run(&mut e, &ping_frame(GATEWAY, 1, 1, b"x")).len(), 1);
}

#[test]
fn other_destinations_are_not_answered_here() {
    // Restricted, so that nothing is forwarded to real hosts through ping sockets: only the
    // emulated hosts answer, and only locally.
    let mut plan = NetPlan::slirp_default();
    plan.restrict = true;
    let mut e = Engine::isolated(plan);
    for dst in [
        Ipv4Addr::new(10, 0, 2, 99),
        Ipv4Addr::new(10, 0, 2, 15),
        Ipv4Addr::new(192, 0, 2, 1),
    ] {
        assert!(run(&mut e, &ping_frame(dst, 1, 1, b"x")).is_empty());
    }
    assert_eq!(e.counters().tx_unhandled, 3);
    assert_eq!(e.counters().tx_malformed, 0);
}

#[test]
fn jumbo_ping_of_8972_bytes() {
    let mut e = engine();
    let data: Vec<u8> = (0..8972u32).map(|i| (i * 7 % 251) as u8).collect();
    let frame = ping_frame(GATEWAY, 9, 9, &data);
    assert_eq!(frame.len(), 14 + 9000);
    let reply = run_one(&mut e, &frame);
    assert_eq!(reply.len(), 14 + 9000);
    let (_, icmp) = check_reply(&reply, GATEWAY, e.plan().gateway_mac);
    assert_eq!(&icmp[8..], &data[..]);
}

#[test]
fn largest_possible_ping() {
    let mut e = engine();
    let data = vec![0xa5u8; 65535 - 20 - 8];
    let frame = ping_frame(DNS, 1, 1, &data);
    let reply = run_one(&mut e, &frame);
    assert_eq!(reply.len(), 14 + 65535);
    let (_, icmp) = check_reply(&reply, DNS, e.plan().gateway_mac);
    assert_eq!(icmp.len(), 65535 - 20);
}

#[test]
fn ip_options_are_stripped() {
    let mut e = engine();
    let o = IpOpts {
        // Record route (7), length 7, pointer 4, room for one address, then end of list.
        options: vec![7, 7, 4, 0, 0, 0, 0, 0],
        ..IpOpts::default()
    };
    let echo = echo_request(5, 6, b"payload");
    let frame = ipv4_frame(GUEST_IP, GATEWAY, IpProtocol::Icmp, &echo, &o);
    let reply = run_one(&mut e, &frame);
    let (ip, icmp) = check_reply(&reply, GATEWAY, e.plan().gateway_mac);
    assert_eq!(ip[0], 0x45);
    assert_eq!(&icmp[8..], b"payload");
}

#[test]
fn ethernet_padding_after_the_packet_is_ignored() {
    let mut e = engine();
    let mut frame = ping_frame(GATEWAY, 1, 1, b"");
    frame.resize(60, 0xee);
    let reply = run_one(&mut e, &frame);
    let (_, icmp) = check_reply(&reply, GATEWAY, e.plan().gateway_mac);
    assert_eq!(icmp.len(), 8);
}

#[test]
fn broken_pings_are_malformed() {
    let mut e = engine();
    let good = ping_frame(GATEWAY, 1, 1, b"hello");

    let mut bad_icmp = good.clone();
    bad_icmp[14 + 20 + 9] ^= 1; // data byte: ICMP checksum no longer matches
    let mut bad_ip = good.clone();
    bad_ip[14 + 8] ^= 1; // TTL: header checksum no longer matches
    let short_icmp = ipv4_frame(
        GUEST_IP,
        GATEWAY,
        IpProtocol::Icmp,
        &[8, 0, 0xf7, 0xff],
        &IpOpts::default(),
    );
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    let mut long_total = good.clone();
    long_total[14 + 2..14 + 4].copy_from_slice(&200u16.to_be_bytes());

    for f in [
        &bad_icmp,
        &bad_ip,
        &short_icmp,
        &bad_version,
        &bad_ihl,
        &long_total,
    ] {
        assert!(run(&mut e, f).is_empty());
    }
    assert!(run(&mut e, &good[..good.len() - 3]).is_empty());
    assert!(run(&mut e, &good[..20]).is_empty());
    assert!(run(&mut e, &good[..10]).is_empty());
    assert_eq!(e.counters().tx_malformed, 9);
    assert_eq!(e.counters().icmp_replies, 0);
    assert_eq!(e.counters().tx_frames, 9);
}

#[test]
fn fragments_and_other_icmp_are_unhandled() {
    let mut e = engine();
    let echo = echo_request(1, 1, &[0u8; 64]);
    let first = IpOpts {
        more_frags: true,
        dont_frag: false,
        ..IpOpts::default()
    };
    let later = IpOpts {
        frag_offset: 64,
        dont_frag: false,
        ..IpOpts::default()
    };
    assert!(
        run(
            &mut e,
            &ipv4_frame(GUEST_IP, GATEWAY, IpProtocol::Icmp, &echo, &first)
        )
        .is_empty()
    );
    assert!(
        run(
            &mut e,
            &ipv4_frame(GUEST_IP, GATEWAY, IpProtocol::Icmp, &echo, &later)
        )
        .is_empty()
    );
    // An echo reply or a timestamp request to the gateway.
    let mut reply = echo.clone();
    reply[0] = 0;
    reply[2..4].fill(0);
    let sum = !smoltcp::wire::checksum::data(&reply);
    reply[2..4].copy_from_slice(&sum.to_be_bytes());
    assert!(
        run(
            &mut e,
            &ipv4_frame(
                GUEST_IP,
                GATEWAY,
                IpProtocol::Icmp,
                &reply,
                &IpOpts::default()
            )
        )
        .is_empty()
    );
    // TTL 0 (slirp would send time-exceeded).
    let ttl0 = IpOpts {
        ttl: 0,
        ..IpOpts::default()
    };
    assert!(
        run(
            &mut e,
            &ipv4_frame(GUEST_IP, GATEWAY, IpProtocol::Icmp, &echo, &ttl0)
        )
        .is_empty()
    );
    assert_eq!(e.counters().tx_unhandled, 4, "{:?}", e.counters());
    assert_eq!(e.counters().tx_malformed, 0);
}

#[test]
fn no_ipv4_plan_means_no_echo() {
    let mut plan = NetPlan::slirp_default();
    plan.ipv4 = None;
    let mut e = Engine::isolated(plan);
    assert!(run(&mut e, &ping_frame(GATEWAY, 1, 1, b"x")).is_empty());
    assert_eq!(e.counters().tx_unhandled, 1);
}
