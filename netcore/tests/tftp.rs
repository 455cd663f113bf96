//! The TFTP server as the engine serves it: datagrams to port 69 of the gateway address, of
//! either family, are answered by the engine itself (never passed to a host socket), whether
//! or not `tftp=` is set, and a datagram whose UDP checksum does not hold is dropped as
//! malformed. A restricted guest is served over IPv4 only: slirp drops all of its IPv6 UDP.

mod common;

use std::net::Ipv6Addr;

use common::*;
use netcore::{Engine, EngineOptions};
use netplan::NetPlan;
use smoltcp::wire::IpProtocol;
use vmm_sys_util::tempdir::TempDir;

const GUEST_V6: &str = "fec0::5054:ff:fe12:3456";
const GATEWAY_V6: &str = "fec0::2";

/// A directory holding `boot.img`, and a plan serving it.
fn served() -> (TempDir, NetPlan) {
    let dir = TempDir::new_with_prefix("/tmp/vnu-tftp-engine-").expect("temp dir");
    std::fs::write(dir.as_path().join("boot.img"), b"kernel bytes").unwrap();
    let mut plan = NetPlan::slirp_default();
    plan.tftp_root = Some(dir.as_path().to_owned());
    (dir, plan)
}

fn rrq(name: &str) -> Vec<u8> {
    [&[0, 1], name.as_bytes(), b"\0octet\0"].concat()
}

fn tftp_frame(payload: &[u8]) -> Vec<u8> {
    let datagram = udp(GUEST_IP, 2001, GATEWAY, 69, payload);
    ipv4_frame(
        GUEST_IP,
        GATEWAY,
        IpProtocol::Udp,
        &datagram,
        &IpOpts::default(),
    )
}

/// The TFTP message in an IPv4 reply from 10.0.2.2:69 to the guest's port 2001.
fn tftp_reply(frame: &[u8]) -> Vec<u8> {
    assert_eq!(&frame[26..30], &GATEWAY.octets(), "from the gateway");
    assert_eq!(&frame[30..34], &GUEST_IP.octets());
    assert_eq!(&frame[34..38], &[0, 69, 0x07, 0xd1], "69 → 2001");
    let len = usize::from(u16::from_be_bytes([frame[38], frame[39]]));
    frame[42..34 + len].to_vec()
}

#[test]
fn a_read_request_to_the_gateway_is_answered_with_the_files_first_block() {
    let (_dir, plan) = served();
    let mut e = Engine::isolated(plan);
    let reply = run_one(&mut e, &tftp_frame(&rrq("boot.img")));
    assert_eq!(tftp_reply(&reply), b"\0\x03\0\x01kernel bytes");
    assert_eq!(e.tftp_counters().transfers, 1);
}

#[test]
fn restricted_guests_are_served_too() {
    let (_dir, mut plan) = served();
    plan.restrict = true;
    let mut e = Engine::isolated(plan);
    let reply = run_one(&mut e, &tftp_frame(&rrq("boot.img")));
    assert_eq!(tftp_reply(&reply), b"\0\x03\0\x01kernel bytes");
}

#[test]
fn without_tftp_the_gateways_port_69_answers_access_violation_and_nothing_reaches_the_host() {
    // An engine whose flow tables take flows: a datagram passed to NAT would open one.
    let mut e = Engine::with_options(NetPlan::slirp_default(), EngineOptions::default()).unwrap();
    let reply = run_one(&mut e, &tftp_frame(&rrq("boot.img")));
    assert_eq!(tftp_reply(&reply), b"\0\x05\0\x02Access violation\0");
    assert_eq!(e.open_flows(), (0, 0, 0));
}

#[test]
fn a_bad_udp_checksum_is_malformed_and_a_zero_one_is_no_checksum() {
    let (_dir, plan) = served();
    let mut e = Engine::isolated(plan);
    let mut datagram = udp(GUEST_IP, 2001, GATEWAY, 69, &rrq("boot.img"));
    datagram[6] ^= 0x40;
    let o = IpOpts::default();
    let bad = ipv4_frame(GUEST_IP, GATEWAY, IpProtocol::Udp, &datagram, &o);
    assert!(run(&mut e, &bad).is_empty());
    assert_eq!(e.counters().tx_malformed, 1);
    datagram[6..8].copy_from_slice(&[0, 0]);
    let unchecked = ipv4_frame(GUEST_IP, GATEWAY, IpProtocol::Udp, &datagram, &o);
    let reply = run_one(&mut e, &unchecked);
    assert_eq!(tftp_reply(&reply)[..4], [0, 3, 0, 1]);
}

#[test]
fn over_ipv6_the_gateway_address_serves_it() {
    let (_dir, plan) = served();
    let mut e = Engine::isolated(plan);
    let guest: Ipv6Addr = GUEST_V6.parse().unwrap();
    let gateway: Ipv6Addr = GATEWAY_V6.parse().unwrap();
    let frame = udp6_frame(guest, 2001, gateway, 69, &rrq("boot.img"));
    let replies = run(&mut e, &frame);
    // The guest's first IPv6 frame also brings a router advertisement.
    let reply = replies
        .iter()
        .find(|f| f.len() > 54 && f[20] == 17)
        .expect("a UDP reply");
    assert_eq!(&reply[22..38], &gateway.octets());
    assert_eq!(&reply[38..54], &guest.octets());
    assert_eq!(&reply[54..58], &[0, 69, 0x07, 0xd1]);
    assert_eq!(&reply[62..], b"\0\x03\0\x01kernel bytes");
}

#[test]
fn restricted_guests_get_nothing_over_ipv6_as_slirp_drops_all_their_ipv6_udp() {
    let (_dir, mut plan) = served();
    plan.restrict = true;
    let mut e = Engine::isolated(plan);
    let guest: Ipv6Addr = GUEST_V6.parse().unwrap();
    let gateway: Ipv6Addr = GATEWAY_V6.parse().unwrap();
    let frame = udp6_frame(guest, 2001, gateway, 69, &rrq("boot.img"));
    let replies = run(&mut e, &frame);
    assert!(
        replies.iter().all(|f| f[20] != 17),
        "no UDP answer: {replies:02x?}"
    );
    assert_eq!(e.tftp_counters().transfers, 0);
    assert_eq!(e.counters().tx_unhandled, 1);
}
