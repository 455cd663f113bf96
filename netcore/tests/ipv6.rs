//! The engine's IPv6 entry points: the first IPv6 frame of a guest from an address of its own
//! gets one router advertisement, then advertisements come only when solicited (or
//! periodically).

mod common;

use std::net::Ipv6Addr;

use netcore::{Engine, MemoryLink};
use netplan::NetPlan;
use smoltcp::wire::checksum;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x41, 0x2c, 0x49];

/// The guest's link-local address, fe80::5054:ff:fe41:2c49.
const GUEST_LINK_LOCAL: [u8; 16] = [
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x41, 0x2c, 0x49,
];

/// An MLDv2 report as a Linux guest sends it: hop-by-hop options header, from `src` (`::`
/// first, before its link-local address is up).
fn mld_report(src: [u8; 16]) -> Vec<u8> {
    let mut f = vec![0x33, 0x33, 0, 0, 0, 0x16];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    let payload_len: u16 = 8 + 28;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&payload_len.to_be_bytes());
    f.extend_from_slice(&[0, 1]); // next header: hop-by-hop; hop limit 1
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16]);
    f.extend_from_slice(&[58, 0, 5, 2, 0, 0, 1, 0]); // HBH: router alert
    f.extend_from_slice(&[143, 0, 0, 0, 0, 0, 0, 1]); // MLDv2 report, one record
    f.extend_from_slice(&[4, 0, 0, 0]);
    f.extend_from_slice(&[
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0x41, 0x2c, 0x49,
    ]);
    f
}

fn is_router_advert(frame: &[u8]) -> bool {
    frame.len() > 54 && frame[12..14] == [0x86, 0xdd] && frame[20] == 58 && frame[54] == 134
}

#[test]
fn the_first_ipv6_frame_from_the_guests_own_address_gets_one_router_advertisement() {
    let mut engine = Engine::isolated(NetPlan::slirp_default());
    let mut link = MemoryLink::new();
    engine.handle_frame(&mld_report([0; 16])[..], &mut link);
    assert!(
        link.take().is_empty(),
        "a frame from :: (no address yet) is not greeted"
    );
    engine.handle_frame(&mld_report(GUEST_LINK_LOCAL)[..], &mut link);
    let frames = link.take();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(is_router_advert(&frames[0]));
    assert_eq!(
        &frames[0][6..12],
        &[0x52, 0x56, 0, 0, 0, 2],
        "from fe80::2's MAC"
    );
    engine.handle_frame(&mld_report(GUEST_LINK_LOCAL)[..], &mut link);
    assert!(
        link.take().is_empty(),
        "only the first IPv6 frame is greeted"
    );
}

#[test]
fn no_ipv6_plan_means_no_advertisement() {
    let mut plan = NetPlan::slirp_default();
    plan.ipv6 = None;
    let mut engine = Engine::isolated(plan);
    let mut link = MemoryLink::new();
    engine.handle_frame(&mld_report(GUEST_LINK_LOCAL)[..], &mut link);
    assert!(link.take().is_empty());
}

/// DHCPv6 answers an Information-Request, except from a restricted guest: slirp's
/// `udp6_input` drops all of a restricted guest's IPv6 UDP.
#[test]
fn dhcpv6_is_not_served_to_a_restricted_guest() {
    let all_dhcp_agents: Ipv6Addr = "ff02::1:2".parse().unwrap();
    let information_request = [11, 1, 2, 3, 0, 6, 0, 2, 0, 23];
    let frame = common::udp6_frame(
        Ipv6Addr::from(GUEST_LINK_LOCAL),
        546,
        all_dhcp_agents,
        547,
        &information_request,
    );
    let is_dhcpv6_reply = |f: &Vec<u8>| f.len() > 62 && f[20] == 17 && f[62] == 7;
    for restrict in [false, true] {
        let mut plan = NetPlan::slirp_default();
        plan.restrict = restrict;
        let mut engine = Engine::isolated(plan);
        let mut link = MemoryLink::new();
        engine.handle_frame(&frame[..], &mut link);
        let replies = link.take().iter().filter(|f| is_dhcpv6_reply(f)).count();
        assert_eq!(replies, usize::from(!restrict), "restrict={restrict}");
    }
}

/// A connection or datagram the backend cannot deliver gets an ICMPv6 destination unreachable
/// (no route) from fe80::2 quoting it, as slirp's `icmp6_send_error` sends one: a guest tool
/// trying IPv6 first falls back at once rather than after its SYN timeout.
#[test]
fn undeliverable_tcp_and_udp_get_icmpv6_destination_unreachable() {
    let guest: Ipv6Addr = "fec0::5054:ff:fe12:3456".parse().unwrap();
    let gateway: Ipv6Addr = "fec0::2".parse().unwrap();
    let router: Ipv6Addr = "fe80::2".parse().unwrap();
    let mut plan = NetPlan::slirp_default();
    // The gateway address leads nowhere: every connection to it fails.
    plan.map_gateway_to_loopback = false;
    let syn = common::ipv6_frame(
        guest,
        gateway,
        smoltcp::wire::IpProtocol::Tcp,
        common::tcp_syn(40000, 22, 9),
    );
    let datagram = common::udp6_frame(guest, 5000, gateway, 7, b"echo?");
    let options = netcore::EngineOptions::default();
    let mut engine = Engine::with_options(plan, options).expect("engine");
    for frame in [syn, datagram] {
        let mut link = MemoryLink::new();
        engine.handle_frame(&frame[..], &mut link);
        let errors: Vec<Vec<u8>> = link
            .take()
            .into_iter()
            .filter(|f| f.len() > 54 && f[20] == 58 && f[54] == 1)
            .collect();
        assert_eq!(errors.len(), 1, "one destination unreachable");
        let e = &errors[0];
        assert_eq!(&e[0..6], &frame[6..12], "to the guest's MAC");
        assert_eq!(&e[6..12], &[0x52, 0x56, 0, 0, 0, 2], "from fe80::2's MAC");
        assert_eq!(e[21], 255, "hop limit");
        assert_eq!(&e[22..38], &router.octets());
        assert_eq!(&e[38..54], &guest.octets());
        assert_eq!(e[55], 0, "code: no route");
        assert_eq!(&e[62..], &frame[14..], "the whole packet quoted");
        let pseudo = checksum::pseudo_header_v6(
            &router,
            &guest,
            smoltcp::wire::IpProtocol::Icmpv6,
            (e.len() - 54) as u32,
        );
        assert_eq!(
            checksum::combine(&[pseudo, checksum::data(&e[54..])]),
            0xffff
        );
    }
    assert_eq!(engine.counters().unreachables, 2);
    assert_eq!(engine.open_flows(), (0, 0, 0));
}
