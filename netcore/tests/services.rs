//! passt's service switches through the engine: with a service off (`plan.services`), the
//! guest frame it would answer gets nothing at all and is counted as unhandled; with the
//! default plan the same frame is answered. Nothing leaves the host's loopback: flows go to the
//! gateway address (127.0.0.1) or to a DNS upstream on 127.0.0.1, at ports of our own.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use netcore::nat::Upstream;
use netcore::{Engine, EngineOptions, MemoryLink};
use netplan::{MacAddr, NetPlan, Services};
use smoltcp::wire::{IpAddress, IpProtocol, TcpPacket};

const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
const GUEST_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 2);
const ROUTER: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

const ICMPV6_ECHO_REPLY: u8 = 129;
const ROUTER_ADVERT: u8 = 134;
const NEIGHBOUR_ADVERT: u8 = 136;

fn plan_with(services: Services) -> NetPlan {
    NetPlan {
        services,
        ..NetPlan::slirp_default()
    }
}

/// An engine whose flow tables take flows, so that what it leaves unanswered it leaves for the
/// switch, not for want of room; DNS goes to `dns` (nowhere when `None`).
fn flowing(services: Services, dns: Option<SocketAddr>) -> Engine {
    let options = EngineOptions {
        upstream: Upstream {
            dns_v4: dns,
            dns_v6: None,
        },
        ..EngineOptions::default()
    };
    Engine::with_options(plan_with(services), options).expect("engine")
}

fn isolated(services: Services) -> Engine {
    Engine::isolated(plan_with(services))
}

/// The types of the ICMPv6 messages among `frames`.
fn icmpv6_types(frames: &[Vec<u8>]) -> Vec<u8> {
    frames
        .iter()
        .filter(|f| f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[20] == 58)
        .map(|f| f[54])
        .collect()
}

/// An NDP message from `src` to `dst` with hop limit 255, as neighbour discovery requires
/// (the hop limit is outside the checksum).
fn ndp_frame(src: Ipv6Addr, dst: Ipv6Addr, icmp: Vec<u8>) -> Vec<u8> {
    let mut frame = ipv6_frame(src, dst, IpProtocol::Icmpv6, icmp);
    frame[21] = 255;
    frame
}

/// A neighbour solicitation for `target` from the guest's link-local address, to the target's
/// solicited-node multicast address.
fn neighbour_solicitation(target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let solicited_node = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&GUEST_MAC.0);
    let mut frame = ndp_frame(GUEST_LINK_LOCAL, solicited_node, icmp);
    frame[0..6].copy_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    frame
}

/// A router solicitation to all routers from `src`.
fn router_solicitation(src: Ipv6Addr) -> Vec<u8> {
    let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
    let mut frame = ndp_frame(src, all_routers, vec![133, 0, 0, 0, 0, 0, 0, 0]);
    frame[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 2]);
    frame
}

fn echo6(dst: Ipv6Addr) -> Vec<u8> {
    ipv6_frame(
        GUEST_V6,
        dst,
        IpProtocol::Icmpv6,
        vec![128, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'],
    )
}

/// A TCP SYN from the guest to `dst`:`port`, checksummed.
fn syn4(dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut syn = tcp_syn(40000, port, 1000);
    TcpPacket::new_unchecked(&mut syn[..])
        .fill_checksum(&IpAddress::Ipv4(GUEST_IP), &IpAddress::Ipv4(dst));
    ipv4_frame(GUEST_IP, dst, IpProtocol::Tcp, &syn, &IpOpts::default())
}

fn udp4(dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let datagram = udp(GUEST_IP, 5000, dst, port, payload);
    ipv4_frame(
        GUEST_IP,
        dst,
        IpProtocol::Udp,
        &datagram,
        &IpOpts::default(),
    )
}

/// What reaches the guest for `frame` at once and from the host side within `wait`.
fn answers_within(engine: &mut Engine, frame: &[u8], wait: Duration) -> Vec<Vec<u8>> {
    let mut link = MemoryLink::new();
    engine.handle_frame(frame, &mut link);
    let deadline = Instant::now() + wait;
    let mut frames = link.take();
    while frames.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        engine.poll_host(&mut link);
        frames = link.take();
    }
    frames
}

/// A port on 127.0.0.1 that nobody listens on (it was free a moment ago).
fn unused_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The datagram `socket` receives within `wait`, if any.
fn received(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn no_dhcp_leaves_a_discover_unanswered_and_keeps_it_from_the_host() {
    let discover = dhcp_frame(GUEST_MAC, Some(DISCOVER), None, Ipv4Addr::UNSPECIFIED);
    let mut on = flowing(Services::ALL, None);
    let offer = parse_dhcp_answer(
        &run_one(&mut on, &discover),
        MacAddr::slirp_for_ipv4(GATEWAY),
        GATEWAY,
    );
    assert_eq!(offer.option(53), Some(&[OFFER][..]));

    let mut off = flowing(
        Services {
            dhcp: false,
            ..Services::ALL
        },
        None,
    );
    assert!(run(&mut off, &discover).is_empty());
    // Unicast to the gateway too (a renewal), which NAT would send to the host's port 67.
    let renewal = dhcp_frame_raw(
        GUEST_MAC,
        GATEWAY,
        &bootp(GUEST_MAC, 1, GUEST_IP, &[(53, &[REQUEST])]),
    );
    assert!(run(&mut off, &renewal).is_empty());
    assert_eq!(off.counters().dhcp_replies, 0);
    assert_eq!(off.counters().tx_unhandled, 2);
    assert_eq!(off.open_flows(), (0, 0, 0));
}

#[test]
fn no_dhcpv6_leaves_an_information_request_unanswered() {
    let all_dhcp_agents: Ipv6Addr = "ff02::1:2".parse().unwrap();
    // Information-Request asking for DNS: the message slirp's stateless server answers.
    let request = udp6_frame(
        GUEST_LINK_LOCAL,
        546,
        all_dhcp_agents,
        547,
        &[11, 1, 2, 3, 0, 6, 0, 2, 0, 23],
    );
    let dhcpv6_replies = |frames: &[Vec<u8>]| {
        frames
            .iter()
            .filter(|f| f.len() > 62 && f[20] == 17 && f[62] == 7)
            .count()
    };
    let mut on = flowing(Services::ALL, None);
    assert_eq!(dhcpv6_replies(&run(&mut on, &request)), 1);

    let mut off = flowing(
        Services {
            dhcpv6: false,
            ..Services::ALL
        },
        None,
    );
    assert_eq!(dhcpv6_replies(&run(&mut off, &request)), 0);
    assert_eq!(off.counters().dhcp_replies, 0);
    assert_eq!(off.counters().tx_unhandled, 1);
    assert_eq!(off.open_flows(), (0, 0, 0));
}

#[test]
fn a_neighbour_solicitation_is_answered_unless_ndp_is_off() {
    let solicitation = neighbour_solicitation(ROUTER);
    // The guest's first IPv6 frame from its own address also brings the greeting RA.
    let mut on = isolated(Services::ALL);
    assert_eq!(
        icmpv6_types(&run(&mut on, &solicitation)),
        [ROUTER_ADVERT, NEIGHBOUR_ADVERT]
    );

    // --no-ra: the neighbour advertisement still, but no greeting.
    let mut no_ra = isolated(Services {
        ra: false,
        ..Services::ALL
    });
    let answers = run(&mut no_ra, &solicitation);
    assert_eq!(icmpv6_types(&answers), [NEIGHBOUR_ADVERT]);
    assert_eq!(answers.len(), 1);
    assert_eq!(&answers[0][62..78], &ROUTER.octets(), "the target fe80::2");

    // --no-ndp (which turns RAs off too, as policy does) answers nothing.
    let mut no_ndp = isolated(Services {
        ndp: false,
        ra: false,
        ..Services::ALL
    });
    assert!(run(&mut no_ndp, &solicitation).is_empty());
    assert_eq!(no_ndp.counters().tx_unhandled, 1);
    assert_eq!(no_ndp.counters().icmp_replies, 0);
    // ndp off alone stops advertisements as well.
    let mut ndp_only_off = isolated(Services {
        ndp: false,
        ..Services::ALL
    });
    assert!(run(&mut ndp_only_off, &solicitation).is_empty());
}

#[test]
fn a_router_solicitation_is_answered_unless_ra_or_ndp_is_off() {
    let from_unspecified = router_solicitation(Ipv6Addr::UNSPECIFIED);
    let from_link_local = router_solicitation(GUEST_LINK_LOCAL);
    let mut on = isolated(Services::ALL);
    assert_eq!(
        icmpv6_types(&run(&mut on, &from_unspecified)),
        [ROUTER_ADVERT]
    );
    // Greeting and answer.
    assert_eq!(
        icmpv6_types(&run(&mut on, &from_link_local)),
        [ROUTER_ADVERT, ROUTER_ADVERT]
    );

    for services in [
        Services {
            ra: false,
            ..Services::ALL
        },
        Services {
            ndp: false,
            ..Services::ALL
        },
    ] {
        let mut off = isolated(services);
        assert!(run(&mut off, &from_unspecified).is_empty(), "{services:?}");
        assert!(run(&mut off, &from_link_local).is_empty(), "{services:?}");
        assert_eq!(off.counters().tx_unhandled, 2, "{services:?}");
    }
}

#[test]
fn no_icmp_drops_echo_requests_even_to_the_gateway() {
    let pings = [
        ping_frame(GATEWAY, 7, 1, b"ping"),
        ping_frame(DNS, 7, 2, b"ping"),
    ];
    let mut on = isolated(Services::ALL);
    for ping in &pings {
        let reply = run_one(&mut on, ping);
        assert_eq!(reply[34], 0, "an echo reply");
    }
    assert_eq!(
        icmpv6_types(&run(&mut on, &echo6(GATEWAY_V6))),
        [ROUTER_ADVERT, ICMPV6_ECHO_REPLY]
    );
    assert_eq!(
        icmpv6_types(&run(&mut on, &echo6(ROUTER))),
        [ICMPV6_ECHO_REPLY]
    );
    assert_eq!(on.counters().icmp_replies, 4);

    let mut off = isolated(Services {
        icmp: false,
        ..Services::ALL
    });
    for ping in &pings {
        assert!(run(&mut off, ping).is_empty());
    }
    // Only the greeting RA: that is NDP's, not an answer to the echo.
    assert_eq!(
        icmpv6_types(&run(&mut off, &echo6(GATEWAY_V6))),
        [ROUTER_ADVERT]
    );
    assert!(run(&mut off, &echo6(ROUTER)).is_empty());
    // Echo to a real host is dropped before any ping socket.
    assert!(
        run(
            &mut off,
            &ping_frame(Ipv4Addr::new(198, 51, 100, 7), 7, 3, b"x")
        )
        .is_empty()
    );
    assert_eq!(off.counters().icmp_replies, 0);
    assert_eq!(off.counters().tx_unhandled, 5);
    assert_eq!(off.open_flows(), (0, 0, 0));

    // Echo is not NDP: --no-icmp leaves neighbour solicitations answered.
    let mut off = isolated(Services {
        icmp: false,
        ..Services::ALL
    });
    assert!(
        icmpv6_types(&run(&mut off, &neighbour_solicitation(ROUTER))).contains(&NEIGHBOUR_ADVERT)
    );
}

#[test]
fn no_tcp_drops_a_syn_without_a_reset() {
    let port = unused_tcp_port();
    let syn = syn4(GATEWAY, port);
    let tcp_answers = |frames: &[Vec<u8>]| -> Vec<u8> {
        frames
            .iter()
            .filter(|f| f[12..14] == [0x08, 0x00] && f[23] == 6)
            .map(|f| f[34 + 13])
            .collect()
    };

    // On: 10.0.2.2 is 127.0.0.1, where the port is closed: the guest gets a reset.
    let mut on = flowing(Services::ALL, None);
    let flags = tcp_answers(&answers_within(&mut on, &syn, Duration::from_secs(2)));
    assert_eq!(flags, [0x14], "RST+ACK");

    let mut off = flowing(
        Services {
            tcp: false,
            ..Services::ALL
        },
        None,
    );
    assert!(answers_within(&mut off, &syn, Duration::from_millis(200)).is_empty());
    let syn6 = ipv6_frame(
        GUEST_V6,
        GATEWAY_V6,
        IpProtocol::Tcp,
        tcp_syn(40000, port, 1000),
    );
    let answers = answers_within(&mut off, &syn6, Duration::from_millis(200));
    assert_eq!(icmpv6_types(&answers), [ROUTER_ADVERT], "the greeting only");
    assert_eq!(answers.len(), 1);
    assert_eq!(off.counters().tx_unhandled, 2);
    assert_eq!(off.tcp_counters().refused, 0, "no connection was tried");
    assert_eq!(off.open_flows(), (0, 0, 0));
}

#[test]
fn no_udp_drops_nat_and_the_dns_relay() {
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = resolver.local_addr().unwrap();
    let host_port = host.local_addr().unwrap().port();
    let cases = [
        (&resolver, udp4(DNS, 53, b"query")),
        (&host, udp4(GATEWAY, host_port, b"hello")),
    ];

    let mut on = flowing(Services::ALL, Some(dns));
    for (socket, frame) in &cases {
        assert!(run(&mut on, frame).is_empty());
        assert!(received(socket, Duration::from_secs(2)).is_some());
    }
    // One flow: both came from the guest's port 5000.
    assert_eq!(on.open_flows().1, 1);

    let mut off = flowing(
        Services {
            udp: false,
            ..Services::ALL
        },
        Some(dns),
    );
    for (socket, frame) in &cases {
        assert!(run(&mut off, frame).is_empty());
        assert_eq!(received(socket, Duration::from_millis(200)), None);
    }
    assert_eq!(off.counters().tx_unhandled, 2);
    assert_eq!(off.open_flows(), (0, 0, 0));
}

/// passt's `--no-udp` turns off its UDP handler, not its DHCP: the emulated DHCP, DHCPv6 and
/// TFTP servers still answer.
#[test]
fn no_udp_keeps_the_emulated_servers() {
    let mut e = isolated(Services {
        udp: false,
        ..Services::ALL
    });
    let discover = dhcp_frame(GUEST_MAC, Some(DISCOVER), None, Ipv4Addr::UNSPECIFIED);
    let offer = parse_dhcp_answer(
        &run_one(&mut e, &discover),
        MacAddr::slirp_for_ipv4(GATEWAY),
        GATEWAY,
    );
    assert_eq!(offer.option(53), Some(&[OFFER][..]));

    // Without tftp= every read request gets an error, from the gateway's port 69.
    let rrq = udp4(GATEWAY, 69, b"\0\x01boot.img\0octet\0");
    let reply = run_one(&mut e, &rrq);
    assert_eq!(&reply[34..36], &69u16.to_be_bytes());
    assert_eq!(&reply[42..44], &[0, 5], "a TFTP error");

    let request = udp6_frame(
        GUEST_LINK_LOCAL,
        546,
        "ff02::1:2".parse().unwrap(),
        547,
        &[11, 1, 2, 3, 0, 6, 0, 2, 0, 23],
    );
    let answers = run(&mut e, &request);
    assert_eq!(
        answers
            .iter()
            .filter(|f| f.len() > 62 && f[20] == 17 && f[62] == 7)
            .count(),
        1
    );
    assert_eq!(e.counters().dhcp_replies, 2);
    assert_eq!(e.counters().tx_unhandled, 0);
}

/// `-4` and `-6` leave a family out of the plan: its frames are ignored whole.
#[test]
fn a_family_left_out_of_the_plan_is_ignored() {
    let mut v4_only = Engine::isolated(NetPlan {
        ipv6: None,
        ..NetPlan::slirp_default()
    });
    for frame in [
        neighbour_solicitation(ROUTER),
        router_solicitation(GUEST_LINK_LOCAL),
        echo6(GATEWAY_V6),
    ] {
        assert!(run(&mut v4_only, &frame).is_empty());
    }
    assert_eq!(v4_only.counters().tx_unhandled, 3);
    assert_eq!(
        run_one(&mut v4_only, &ping_frame(GATEWAY, 1, 1, b"x"))[34],
        0
    );

    let mut v6_only = Engine::isolated(NetPlan {
        ipv4: None,
        ..NetPlan::slirp_default()
    });
    let discover = dhcp_frame(GUEST_MAC, Some(DISCOVER), None, Ipv4Addr::UNSPECIFIED);
    for frame in [discover, ping_frame(GATEWAY, 1, 1, b"x")] {
        assert!(run(&mut v6_only, &frame).is_empty());
    }
    assert_eq!(v6_only.counters().tx_unhandled, 2);
    assert!(
        icmpv6_types(&run(&mut v6_only, &neighbour_solicitation(ROUTER)))
            .contains(&NEIGHBOUR_ADVERT)
    );
}
