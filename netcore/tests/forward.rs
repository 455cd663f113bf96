//! Forwarded ports through the whole engine, with the guest played by frames: the sockets
//! [`netcore::forward::open`] binds once serve one engine after another, as they do for
//! successive QEMU connections (a UDP forward's socket is handed to the first engine's flow
//! table and must come back to the next).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{GATEWAY, GUEST_IP, GUEST_MAC, IpOpts, ipv4_frame, udp};
use netcore::{Engine, EngineOptions, MemoryLink};
use netplan::{HostListen, NetPlan, PortForward, PortRange, Proto};
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, TcpPacket, TcpSeqNumber,
    UdpPacket,
};

const GUEST_TCP_PORT: u16 = 5000;
const GUEST_UDP_PORT: u16 = 5001;

/// A port free for both TCP and UDP on 127.0.0.1 when asked.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn forward(proto: Proto, port: u16, guest_port: u16) -> PortForward {
    PortForward {
        proto,
        host: HostListen::Inet {
            addr: Some(Ipv4Addr::LOCALHOST.into()),
            iface: None,
            ports: PortRange::single(port),
        },
        guest_addr: None,
        guest_port,
        skip_ephemeral: false,
    }
}

/// Polls the engine's host side until frames reach the guest (2 s at most); all of them.
fn frames(engine: &mut Engine, link: &mut MemoryLink) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        engine.poll_host(link);
        let frames = link.take();
        if !frames.is_empty() {
            return frames;
        }
        assert!(Instant::now() < deadline, "nothing reached the guest");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The one frame that reaches the guest next.
fn only_frame(engine: &mut Engine, link: &mut MemoryLink) -> Vec<u8> {
    let mut frames = frames(engine, link);
    assert_eq!(frames.len(), 1, "one frame for the guest");
    frames.remove(0)
}

/// A TCP segment from the guest to `remote`, checksummed.
fn guest_tcp(remote: SocketAddr, seq: u32, ack: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 20 + payload.len()];
    let mut tcp = TcpPacket::new_unchecked(&mut buf[..]);
    tcp.set_src_port(GUEST_TCP_PORT);
    tcp.set_dst_port(remote.port());
    tcp.set_seq_number(TcpSeqNumber(seq as i32));
    tcp.set_ack_number(TcpSeqNumber(ack as i32));
    tcp.set_header_len(20);
    tcp.clear_flags();
    tcp.set_syn(syn);
    tcp.set_ack(true);
    tcp.set_psh(!payload.is_empty());
    tcp.set_window_len(65535);
    tcp.payload_mut().copy_from_slice(payload);
    let remote_ip = match remote.ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("an IPv4 remote, not {other}"),
    };
    tcp.fill_checksum(&IpAddress::Ipv4(GUEST_IP), &IpAddress::Ipv4(remote_ip));
    ipv4_frame(
        GUEST_IP,
        remote_ip,
        IpProtocol::Tcp,
        &buf,
        &IpOpts::default(),
    )
}

/// The IPv4 packet of a frame to the guest.
fn ipv4_of(frame: &[u8]) -> Ipv4Packet<&[u8]> {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    assert_eq!(eth.dst_addr().0, GUEST_MAC.0);
    Ipv4Packet::new_checked(&frame[14..]).unwrap()
}

/// A new engine the guest has made itself known to (its MAC, with any frame), and a host
/// client of the TCP forward at `tcp_port`, accepted: the SYN the engine sent the guest for it.
fn engine_with_forwarded_client(
    plan: &NetPlan,
    options: &EngineOptions,
    tcp_port: u16,
) -> (Engine, MemoryLink, TcpStream, Vec<u8>) {
    let mut engine = Engine::with_options(plan.clone(), options.clone()).unwrap();
    let mut link = MemoryLink::new();
    engine.handle_frame(&common::arp_request(GUEST_IP, GATEWAY)[..], &mut link);
    link.take();
    let client = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let syn = only_frame(&mut engine, &mut link);
    (engine, link, client, syn)
}

/// One engine's life: a TCP connection and a UDP exchange through the forwards.
fn serve_one_engine(plan: &NetPlan, options: &EngineOptions, tcp_port: u16, udp_port: u16) {
    // TCP: the host client is accepted, and the guest gets our SYN from the gateway.
    let (mut engine, mut link, mut client, syn) =
        engine_with_forwarded_client(plan, options, tcp_port);
    let client_port = client.local_addr().unwrap().port();
    let ip = ipv4_of(&syn);
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (GATEWAY, GUEST_IP),
        "a loopback peer comes from the gateway"
    );
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.syn() && !tcp.ack());
    assert_eq!(
        (tcp.src_port(), tcp.dst_port()),
        (client_port, GUEST_TCP_PORT)
    );
    let iss = tcp.seq_number().0 as u32;
    let remote = SocketAddr::from((GATEWAY, client_port));

    let synack = guest_tcp(remote, 7000, iss.wrapping_add(1), true, &[]);
    engine.handle_frame(&synack[..], &mut link);
    let data = guest_tcp(remote, 7001, iss.wrapping_add(1), false, b"from the guest");
    engine.handle_frame(&data[..], &mut link);
    engine.end_batch(&mut link);
    link.take(); // our ACKs
    let mut got = [0u8; 14];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from the guest");
    client.write_all(b"to the guest").unwrap();
    let mut payload = Vec::new();
    while payload.len() < 12 {
        for frame in frames(&mut engine, &mut link) {
            let ip = ipv4_of(&frame);
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(
                tcp.seq_number().0 as u32,
                iss.wrapping_add(1) + payload.len() as u32
            );
            payload.extend_from_slice(tcp.payload());
        }
    }
    assert_eq!(payload, b"to the guest");

    // UDP: a datagram to the forwarded port reaches the guest; its answer comes back from
    // that port.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    peer.send_to(b"question", ("127.0.0.1", udp_port)).unwrap();
    let frame = only_frame(&mut engine, &mut link);
    let ip = ipv4_of(&frame);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GATEWAY, GUEST_IP));
    let datagram = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (datagram.src_port(), datagram.dst_port()),
        (peer_port, GUEST_UDP_PORT)
    );
    assert_eq!(datagram.payload(), b"question");
    let answer = udp(GUEST_IP, GUEST_UDP_PORT, GATEWAY, peer_port, b"answer");
    let frame = ipv4_frame(
        GUEST_IP,
        GATEWAY,
        IpProtocol::Udp,
        &answer,
        &IpOpts::default(),
    );
    engine.handle_frame(&frame[..], &mut link);
    let mut buf = [0u8; 16];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"answer");
    assert_eq!(from, SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port)));
}

#[test]
fn forwards_serve_one_engine_after_another() {
    let (tcp_port, udp_port) = (free_port(), free_port());
    let mut plan = NetPlan::slirp_default();
    plan.forwards = vec![
        forward(Proto::Tcp, tcp_port, GUEST_TCP_PORT),
        forward(Proto::Udp, udp_port, GUEST_UDP_PORT),
    ];
    let options = common::options_with_forwards_of(&plan);
    for _ in 0..2 {
        serve_one_engine(&plan, &options, tcp_port, udp_port);
    }
}

/// The ACK for the end of a guest message waits for an answer to carry it; when none comes,
/// the engine's own timer sends it.
#[test]
fn a_message_no_one_answers_is_acked_when_the_delay_is_up() {
    let tcp_port = free_port();
    let mut plan = NetPlan::slirp_default();
    plan.forwards = vec![forward(Proto::Tcp, tcp_port, GUEST_TCP_PORT)];
    let options = common::options_with_forwards_of(&plan);
    let (mut engine, mut link, mut client, syn) =
        engine_with_forwarded_client(&plan, &options, tcp_port);
    let client_port = client.local_addr().unwrap().port();
    let iss = TcpPacket::new_checked(ipv4_of(&syn).payload())
        .unwrap()
        .seq_number()
        .0 as u32;
    let remote = SocketAddr::from((GATEWAY, client_port));
    let synack = guest_tcp(remote, 7000, iss.wrapping_add(1), true, &[]);
    engine.handle_frame(&synack[..], &mut link);
    engine.end_batch(&mut link);
    link.take();

    let data = guest_tcp(remote, 7001, iss.wrapping_add(1), false, b"hello");
    engine.handle_frame(&data[..], &mut link);
    engine.end_batch(&mut link);
    assert!(link.take().is_empty(), "the ACK waits for an answer");
    let mut got = [0u8; 5];
    client.read_exact(&mut got).unwrap();
    // No answer: the timer's event on the engine's descriptor brings the ACK alone.
    let ack = only_frame(&mut engine, &mut link);
    let tcp = TcpPacket::new_checked(ipv4_of(&ack).payload()).unwrap();
    assert!(tcp.ack() && !tcp.psh() && !tcp.fin() && !tcp.syn());
    assert_eq!(tcp.ack_number().0 as u32, 7001 + 5);
    assert!(tcp.payload().is_empty());
}
