//! ARP answers, driven through the engine as a guest would send them.

mod common;

use std::net::Ipv4Addr;

use common::*;
use netcore::Engine;
use netplan::{MacAddr, NetPlan};
use smoltcp::wire::ArpOperation;

fn engine() -> Engine {
    Engine::isolated(NetPlan::slirp_default())
}

/// The exact reply slirp's arp_input builds (apart from its length: see `arp::REPLY_FRAME_LEN`).
fn expected_reply(from: MacAddr, from_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&GUEST_MAC.0);
    f.extend_from_slice(&from.0);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&from.0);
    f.extend_from_slice(&from_ip.octets());
    f.extend_from_slice(&GUEST_MAC.0);
    f.extend_from_slice(&GUEST_IP.octets());
    f.resize(60, 0);
    f
}

#[test]
fn answers_for_gateway_and_dns_with_derived_macs() {
    let mut e = engine();
    let reply = run_one(&mut e, &arp_request(GUEST_IP, GATEWAY));
    assert_eq!(reply.len(), 60);
    assert_eq!(
        reply,
        expected_reply(MacAddr([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]), GATEWAY)
    );

    let reply = run_one(&mut e, &arp_request(GUEST_IP, DNS));
    assert_eq!(reply.len(), 60);
    assert_eq!(
        reply,
        expected_reply(MacAddr([0x52, 0x55, 0x0a, 0x00, 0x02, 0x03]), DNS)
    );
    assert_eq!(e.counters().arp_replies, 2);
    assert_eq!(e.counters().rx_frames, 2);
}

#[test]
fn answers_before_the_guest_has_an_address() {
    // A DHCP client probing with sender 0.0.0.0 still gets the gateway's answer.
    let mut e = engine();
    let reply = run_one(&mut e, &arp_request(Ipv4Addr::UNSPECIFIED, GATEWAY));
    assert_eq!(&reply[38..42], &[0, 0, 0, 0]);
    assert_eq!(&reply[0..6], &GUEST_MAC.0);
}

#[test]
fn gateway_answers_with_the_plan_mac() {
    let mut plan = NetPlan::slirp_default();
    plan.gateway_mac = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    let mut e = Engine::isolated(plan.clone());
    let reply = run_one(&mut e, &arp_request(GUEST_IP, GATEWAY));
    assert_eq!(reply, expected_reply(plan.gateway_mac, GATEWAY));
    // The DNS address keeps slirp's derivation: 52:55 and the address.
    let reply = run_one(&mut e, &arp_request(GUEST_IP, DNS));
    let slirp_dns_mac = MacAddr([0x52, 0x55, 10, 0, 2, 3]);
    assert_eq!(reply, expected_reply(slirp_dns_mac, DNS));
}

#[test]
fn no_answer_for_other_addresses() {
    let mut e = engine();
    for target in [
        Ipv4Addr::new(10, 0, 2, 15),   // a DHCP pool address
        Ipv4Addr::new(10, 0, 2, 16),   // another
        Ipv4Addr::new(10, 0, 2, 4),    // smb/guestfwd default, unused
        Ipv4Addr::new(10, 0, 2, 255),  // subnet broadcast
        Ipv4Addr::new(192, 168, 1, 1), // off-subnet
    ] {
        assert!(
            run(&mut e, &arp_request(Ipv4Addr::new(10, 0, 2, 20), target)).is_empty(),
            "{target}"
        );
    }
    assert_eq!(e.counters().tx_unhandled, 5);
    assert_eq!(e.counters().tx_malformed, 0);
    assert_eq!(e.counters().arp_replies, 0);
}

#[test]
fn gratuitous_requests_and_replies_are_consumed() {
    let mut e = engine();
    // Gratuitous, even for the gateway's own address.
    assert!(run(&mut e, &arp_request(GUEST_IP, GUEST_IP)).is_empty());
    assert!(run(&mut e, &arp_request(GATEWAY, GATEWAY)).is_empty());
    // A reply from the guest.
    assert!(
        run(
            &mut e,
            &arp(ArpOperation::Reply, GUEST_MAC, GUEST_IP, GATEWAY)
        )
        .is_empty()
    );
    let c = e.counters();
    assert_eq!((c.tx_unhandled, c.tx_malformed, c.arp_replies), (0, 0, 0));
    assert_eq!(e.guest_mac(), Some(GUEST_MAC));
}

#[test]
fn dns_outside_the_subnet_is_not_answered() {
    let mut plan = NetPlan::slirp_default();
    plan.ipv4.as_mut().unwrap().dns = Ipv4Addr::new(10, 0, 3, 3);
    let mut e = Engine::isolated(plan);
    assert!(run(&mut e, &arp_request(GUEST_IP, Ipv4Addr::new(10, 0, 3, 3))).is_empty());
    assert_eq!(run(&mut e, &arp_request(GUEST_IP, GATEWAY)).len(), 1);
}

#[test]
fn no_ipv4_plan_means_no_arp() {
    let mut plan = NetPlan::slirp_default();
    plan.ipv4 = None;
    let mut e = Engine::isolated(plan);
    assert!(run(&mut e, &arp_request(GUEST_IP, GATEWAY)).is_empty());
    assert_eq!(e.counters().tx_unhandled, 1);
}

#[test]
fn truncated_and_foreign_arp() {
    let mut e = engine();
    let good = arp_request(GUEST_IP, GATEWAY);
    // Cut inside the ARP body: malformed.
    for len in [14, 15, 21, 22, 41] {
        assert!(run(&mut e, &good[..len]).is_empty());
    }
    assert_eq!(e.counters().tx_malformed, 5);
    // Ethernet padding after a whole request is fine.
    let mut padded = good.clone();
    padded.resize(60, 0);
    assert_eq!(run(&mut e, &padded).len(), 1);
    // Another hardware type: well-formed, not ours.
    let mut foreign = good.clone();
    foreign[15] = 6;
    assert!(run(&mut e, &foreign).is_empty());
    // An unknown operation.
    let mut op = good.clone();
    op[21] = 3;
    assert!(run(&mut e, &op).is_empty());
    assert_eq!(e.counters().tx_unhandled, 2);
    assert_eq!(e.counters().tx_malformed, 5);
}
