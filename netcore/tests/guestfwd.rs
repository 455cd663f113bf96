//! slirp's `guestfwd=…-cmd:…` through the whole engine, with the guest played by frames: the
//! forward's address answers ARP, a guest connection to its port runs the command with the
//! connection as its standard streams (under `restrict=on` too, as in slirp), and a command
//! that cannot start resets the connection.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{GUEST_IP, GUEST_MAC, IpOpts, arp_request, ipv4_frame};
use netcore::{Engine, EngineOptions, MemoryLink};
use netplan::{GuestForward, MacAddr, NetPlan};
use smoltcp::wire::{
    ArpPacket, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, TcpPacket,
    TcpSeqNumber,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const PORT: u16 = 1234;
const GUEST_PORT: u16 = 40000;
const GUEST_ISN: u32 = 7000;

fn plan_with(argv: &[&str]) -> NetPlan {
    let mut plan = NetPlan::slirp_default();
    plan.guest_forwards = vec![GuestForward {
        addr: SERVER,
        port: PORT,
        command: argv.join(" "),
        argv: argv.iter().map(|s| s.to_string()).collect(),
    }];
    plan
}

/// An engine for `plan` that has learnt the guest's MAC.
fn engine(plan: NetPlan) -> Engine {
    let mut engine = Engine::with_options(plan, EngineOptions::default()).expect("engine");
    common::run(&mut engine, &arp_request(GUEST_IP, common::GATEWAY));
    engine
}

/// A TCP segment from the guest to `port` on the forward's address.
fn segment(port: u16, seq: u32, ack: Option<u32>, syn: bool, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 20 + data.len()];
    let mut tcp = TcpPacket::new_unchecked(&mut buf[..]);
    tcp.set_src_port(GUEST_PORT);
    tcp.set_dst_port(port);
    tcp.set_seq_number(TcpSeqNumber(seq as i32));
    tcp.set_ack_number(TcpSeqNumber(ack.unwrap_or(0) as i32));
    tcp.set_header_len(20);
    tcp.clear_flags();
    tcp.set_syn(syn);
    tcp.set_fin(fin);
    tcp.set_ack(ack.is_some());
    tcp.set_psh(!data.is_empty());
    tcp.set_window_len(65535);
    tcp.payload_mut().copy_from_slice(data);
    tcp.fill_checksum(&IpAddress::Ipv4(GUEST_IP), &IpAddress::Ipv4(SERVER));
    ipv4_frame(GUEST_IP, SERVER, IpProtocol::Tcp, &buf, &IpOpts::default())
}

/// What a TCP segment to the guest says: the port it came from, flags (SYN, ACK, FIN, RST),
/// seq, ack, payload.
#[derive(Debug)]
struct Seen {
    port: u16,
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
    seq: u32,
    ack_number: u32,
    payload: Vec<u8>,
}

fn seen(frame: &[u8]) -> Seen {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    assert_eq!(eth.dst_addr().0, GUEST_MAC.0);
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (SERVER, GUEST_IP));
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(tcp.dst_port(), GUEST_PORT);
    Seen {
        port: tcp.src_port(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        seq: tcp.seq_number().0 as u32,
        ack_number: tcp.ack_number().0 as u32,
        payload: tcp.payload().to_vec(),
    }
}

/// Feeds `frame` and returns the TCP segments that reached the guest at once.
fn send(engine: &mut Engine, frame: &[u8]) -> Vec<Seen> {
    let mut link = MemoryLink::new();
    engine.handle_frame(frame, &mut link);
    engine.end_batch(&mut link);
    link.take().iter().map(|f| seen(f)).collect()
}

/// Polls the engine's host side until the command's output and FIN have reached the guest
/// (5 s at most): the payload and the FIN's sequence number.
fn until_fin(engine: &mut Engine) -> (Vec<u8>, u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut link = MemoryLink::new();
    let mut payload = Vec::new();
    loop {
        engine.poll_host(&mut link);
        for s in link.take().iter().map(|f| seen(f)) {
            assert!(!s.rst && s.port == PORT, "{s:?}");
            payload.extend_from_slice(&s.payload);
            if s.fin {
                return (payload, s.seq.wrapping_add(s.payload.len() as u32));
            }
        }
        assert!(
            Instant::now() < deadline,
            "no FIN; got {:?}",
            String::from_utf8_lossy(&payload)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The guest connects, sends `line`, and reads until the command ends: what it read.
fn converse(engine: &mut Engine, line: &[u8]) -> Vec<u8> {
    let answers = send(engine, &segment(PORT, GUEST_ISN, None, true, false, &[]));
    assert_eq!(answers.len(), 1, "{answers:?}");
    let synack = &answers[0];
    assert!(
        synack.syn && synack.ack && !synack.rst && synack.port == PORT,
        "{synack:?}"
    );
    assert_eq!(synack.ack_number, GUEST_ISN + 1);
    let ours = synack.seq.wrapping_add(1);
    send(
        engine,
        &segment(PORT, GUEST_ISN + 1, Some(ours), false, false, &[]),
    );
    send(
        engine,
        &segment(PORT, GUEST_ISN + 1, Some(ours), false, false, line),
    );
    let (output, fin_seq) = until_fin(engine);
    let next = GUEST_ISN + 1 + line.len() as u32;
    send(
        engine,
        &segment(PORT, next, Some(fin_seq + 1), false, true, &[]),
    );
    output
}

#[test]
fn the_forwards_address_answers_arp_with_its_slirp_mac() {
    let mut engine = engine(plan_with(&["cat"]));
    let reply = common::run_one(&mut engine, &arp_request(GUEST_IP, SERVER));
    let arp = ArpPacket::new_checked(&reply[14..]).unwrap();
    assert_eq!(arp.source_protocol_addr(), SERVER.octets());
    assert_eq!(
        arp.source_hardware_addr(),
        MacAddr::slirp_for_ipv4(SERVER).0
    );
    // Without a guest forward there, nobody answers (as in slirp).
    let mut plain = engine_without_forwards();
    assert!(common::run(&mut plain, &arp_request(GUEST_IP, SERVER)).is_empty());
}

fn engine_without_forwards() -> Engine {
    engine(NetPlan::slirp_default())
}

#[test]
fn a_connection_runs_the_command_on_its_standard_streams() {
    let mut engine = engine(plan_with(&[
        "sh",
        "-c",
        "read line; echo \"out $line\"; echo err >&2",
    ]));
    let output = converse(&mut engine, b"hello\n");
    assert_eq!(String::from_utf8_lossy(&output), "out hello\nerr\n");
    // A second connection starts the command again.
    let output = converse(&mut engine, b"again\n");
    assert_eq!(String::from_utf8_lossy(&output), "out again\nerr\n");
    let tcp = *engine.tcp_counters();
    assert_eq!(
        (tcp.commands, tcp.command_failures, tcp.connects),
        (2, 0, 0)
    );
}

#[test]
fn a_restricted_guest_still_reaches_the_command_but_not_other_ports() {
    let mut plan = plan_with(&["sh", "-c", "read line; echo \"[$line]\""]);
    plan.restrict = true;
    let mut engine = engine(plan);
    assert_eq!(
        String::from_utf8_lossy(&converse(&mut engine, b"x\n")),
        "[x]\n"
    );
    let answers = send(
        &mut engine,
        &segment(PORT + 1, GUEST_ISN, None, true, false, &[]),
    );
    assert!(
        answers.len() == 1 && answers[0].rst && answers[0].port == PORT + 1,
        "another port is restricted: {answers:?}"
    );
}

#[test]
fn a_command_that_cannot_start_resets_the_connection() {
    let mut engine = engine(plan_with(&["/nonexistent/vnu-no-such-command"]));
    let answers = send(
        &mut engine,
        &segment(PORT, GUEST_ISN, None, true, false, &[]),
    );
    assert!(answers.len() == 1 && answers[0].rst, "{answers:?}");
    assert_eq!(answers[0].ack_number, GUEST_ISN + 1);
    let tcp = *engine.tcp_counters();
    assert_eq!((tcp.commands, tcp.command_failures), (0, 1));
}

#[test]
fn other_ports_and_udp_to_the_forwards_address_are_routed_as_any_address() {
    // As in slirp, whose guest forwards catch only their own TCP port: the rest goes where
    // the address leads (here nowhere: 10.0.2.100 is nobody's).
    let plan = plan_with(&["cat"]);
    let up = netcore::nat::Upstream::default();
    let elsewhere = SocketAddr::from((SERVER, 80));
    let to_port = |port| netcore::nat::outbound_tcp(&plan, &up, SocketAddr::from((SERVER, port)));
    assert_eq!(to_port(PORT), netcore::nat::Target::Command(0));
    assert_eq!(to_port(80), netcore::nat::Target::Connect(elsewhere));
    assert_eq!(
        netcore::nat::outbound(&plan, &up, SocketAddr::from((SERVER, PORT))),
        netcore::nat::Target::Connect(SocketAddr::from((SERVER, PORT))),
        "UDP to the forward's port: guest forwards are TCP only"
    );
}
