//! What a hostile guest, or a host out of resources, can make of the engine's host side: each
//! test here drives the whole engine through the in-memory link and checks that the engine
//! makes progress and stays responsive.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{GATEWAY, GUEST_IP, GUEST_MAC, IpOpts, arp_request, ipv4_frame, udp};
use netcore::{Engine, EngineOptions, MemoryLink};
use netplan::NetPlan;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket};

const GUEST_PORT: u16 = 5000;

fn engine() -> Engine {
    let options = EngineOptions {
        max_flows: 16,
        ..EngineOptions::default()
    };
    Engine::with_options(NetPlan::slirp_default(), options).unwrap()
}

/// A UDP datagram from the guest's port [`GUEST_PORT`] to `dst`.
fn guest_udp(dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let std::net::IpAddr::V4(ip) = dst.ip() else {
        panic!("an IPv4 destination");
    };
    let datagram = udp(GUEST_IP, GUEST_PORT, ip, dst.port(), payload);
    ipv4_frame(GUEST_IP, ip, IpProtocol::Udp, &datagram, &IpOpts::default())
}

/// A loopback UDP server the guest reaches through the gateway address.
fn server() -> (UdpSocket, SocketAddr) {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    (server, SocketAddr::from((GATEWAY, port)))
}

/// Polls the engine's host side on another thread until `done` says the guest has what it
/// waited for; fails if that takes more than 10 s, which is what a delivery loop that never
/// ends looks like from here (the thread spinning in it is left behind).
fn poll_until(
    mut engine: Engine,
    mut link: MemoryLink,
    done: impl Fn(&MemoryLink) -> bool + Send + 'static,
) -> (Engine, MemoryLink) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(&link) && Instant::now() < deadline {
            engine.poll_host(&mut link);
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = tx.send((engine, link));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the engine's host side never came back: a loop that makes no progress")
}

/// The UDP payloads of the IPv4 frames sent to the guest, fragments reassembled (by ident).
fn udp_payloads(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut whole = Vec::new();
    // Per ident: the pieces (offset, bytes) and, once the last arrived, the total length.
    type Pieces = Vec<(usize, Vec<u8>)>;
    let mut partial: Vec<(u16, Pieces, Option<usize>)> = Vec::new();
    for frame in frames {
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            continue;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum(), "IPv4 header checksum");
        if ip.next_header() != IpProtocol::Udp {
            continue;
        }
        if !ip.more_frags() && ip.frag_offset() == 0 {
            whole.push(ip.payload().to_vec());
            continue;
        }
        let entry = match partial.iter_mut().position(|p| p.0 == ip.ident()) {
            Some(i) => &mut partial[i],
            None => {
                partial.push((ip.ident(), Vec::new(), None));
                partial.last_mut().unwrap()
            }
        };
        let offset = usize::from(ip.frag_offset());
        if !ip.more_frags() {
            entry.2 = Some(offset + ip.payload().len());
        }
        entry.1.push((offset, ip.payload().to_vec()));
    }
    for (_, mut pieces, total) in partial {
        let total = total.expect("a last fragment");
        pieces.sort();
        let mut datagram = Vec::new();
        for (offset, bytes) in pieces {
            assert_eq!(offset, datagram.len(), "fragments leave no gap nor overlap");
            datagram.extend_from_slice(&bytes);
        }
        assert_eq!(datagram.len(), total);
        whole.push(datagram);
    }
    whole
        .into_iter()
        .map(|datagram| {
            let udp = UdpPacket::new_checked(&datagram[..]).unwrap();
            assert_eq!(usize::from(udp.len()), datagram.len());
            assert_eq!(udp.dst_port(), GUEST_PORT);
            udp.payload().to_vec()
        })
        .collect()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Issue 19, defect 2: receive buffers of one byte each made a 1400-byte datagram need 1400
/// iovecs; `recvmsg` refused them (`EMSGSIZE`) and the delivery loop tried the same datagram
/// again forever. It now reaches the guest (read through a bounce buffer), the loop ends, and
/// the guest's next frame is served.
#[test]
fn a_datagram_into_buffers_of_one_byte_pieces_arrives_and_the_engine_goes_on() {
    let mut engine = engine();
    let mut link = MemoryLink {
        iovec_piece: Some(1),
        ..MemoryLink::default()
    };
    let (server, dst) = server();
    engine.handle_frame(&guest_udp(dst, b"hello")[..], &mut link);
    let mut buf = [0u8; 64];
    let (_, peer) = server.recv_from(&mut buf).unwrap();
    let answer = pattern(1400);
    server.send_to(&answer, peer).unwrap();
    server.send_to(b"and a small one", peer).unwrap();

    let (mut engine, mut link) = poll_until(engine, link, |link| link.frames.len() >= 2);
    let payloads = udp_payloads(&link.take());
    assert_eq!(payloads, vec![answer, b"and a small one".to_vec()]);
    assert_eq!(engine.udp_counters().bounced, 2);

    engine.handle_frame(&arp_request(GUEST_IP, GATEWAY)[..], &mut link);
    assert_eq!(link.take().len(), 1, "the ARP request is answered");
}

/// Issue 19, defect 6: a 2000-byte answer (a large DNS answer, say) was dropped because it
/// does not fit the 1500-byte MTU; it now reaches the guest as IPv4 fragments, as slirp sends
/// it.
#[test]
fn an_answer_larger_than_the_mtu_reaches_the_guest_in_fragments() {
    let mut engine = engine();
    let mut link = MemoryLink::new();
    let (server, dst) = server();
    engine.handle_frame(&guest_udp(dst, b"query")[..], &mut link);
    let mut buf = [0u8; 64];
    let (_, peer) = server.recv_from(&mut buf).unwrap();
    let answer = pattern(2000);
    server.send_to(&answer, peer).unwrap();
    let (engine, mut link) = poll_until(engine, link, |link| link.frames.len() >= 2);
    let frames = link.take();
    assert_eq!(frames.len(), 2, "two fragments");
    assert!(
        frames.iter().all(|f| f.len() <= 1514),
        "each within the MTU"
    );
    assert_eq!(udp_payloads(&frames), vec![answer]);
    assert_eq!(engine.udp_counters().fragmented, 1);
}

/// Issue 19, defect 6: the ICMP errors a host socket reports about what the guest sent
/// (`IP_RECVERR`) reach the guest: a datagram to a closed port is answered with port
/// unreachable, quoting it.
#[test]
fn a_datagram_to_a_closed_port_gets_port_unreachable() {
    let mut engine = engine();
    let mut link = MemoryLink::new();
    let (closed, dst) = server();
    drop(closed);
    engine.handle_frame(&guest_udp(dst, b"anyone there?")[..], &mut link);
    let (engine, mut link) = poll_until(engine, link, |link| !link.frames.is_empty());
    let frames = link.take();
    assert_eq!(frames.len(), 1);
    let eth = EthernetFrame::new_checked(&frames[0][..]).unwrap();
    assert_eq!(eth.dst_addr().0, GUEST_MAC.0);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Icmp);
    assert_eq!(ip.dst_addr(), GUEST_IP);
    let icmp = ip.payload();
    assert_eq!((icmp[0], icmp[1]), (3, 3), "port unreachable");
    assert_eq!(!smoltcp::wire::checksum::data(icmp), 0, "ICMP checksum");
    let quoted = Ipv4Packet::new_unchecked(&icmp[8..]);
    assert_eq!(quoted.src_addr(), GUEST_IP);
    assert_eq!(quoted.dst_addr(), GATEWAY);
    assert_eq!(quoted.next_header(), IpProtocol::Udp);
    let quoted_udp = &icmp[8 + 20..];
    assert_eq!(
        u16::from_be_bytes([quoted_udp[0], quoted_udp[1]]),
        GUEST_PORT
    );
    assert_eq!(
        u16::from_be_bytes([quoted_udp[2], quoted_udp[3]]),
        dst.port()
    );
    assert_eq!(&quoted_udp[8..], b"anyone there?");
    assert_eq!(engine.udp_counters().icmp_relayed, 1);
}

/// The same over IPv6 (`IPV6_RECVERR`): ICMPv6 port unreachable, quoting the datagram as the
/// guest addressed it (to the gateway, which maps to the host's `::1`).
#[test]
fn an_ipv6_datagram_to_a_closed_port_gets_port_unreachable() {
    let Ok(closed) = UdpSocket::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let guest: std::net::Ipv6Addr = "fec0::5054:ff:fe12:3456".parse().unwrap();
    let gateway: std::net::Ipv6Addr = "fec0::2".parse().unwrap();
    let mut engine = engine();
    let mut link = MemoryLink::new();
    let frame = common::udp6_frame(guest, GUEST_PORT, gateway, port, b"v6?");
    engine.handle_frame(&frame[..], &mut link);
    // Besides the router advertisement a guest's first IPv6 frame brings.
    let is_error = |f: &Vec<u8>| f.len() > 62 && f[20] == 58 && f[54] == 1;
    let (engine, mut link) = poll_until(engine, link, move |link| link.frames.iter().any(is_error));
    let frames: Vec<Vec<u8>> = link.take().into_iter().filter(is_error).collect();
    assert_eq!(frames.len(), 1);
    let e = &frames[0];
    assert_eq!(&e[38..54], &guest.octets());
    assert_eq!(
        (e[54], e[55]),
        (1, 4),
        "destination unreachable: port unreachable"
    );
    assert_eq!(
        &e[62..],
        &frame[14..],
        "the datagram quoted as the guest sent it"
    );
    assert_eq!(engine.udp_counters().icmp_relayed, 1);
}
