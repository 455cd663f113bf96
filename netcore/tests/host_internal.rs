//! The guest never reaches the host's loopback, "this host" or v4-mapped addresses by naming
//! them: only the gateway address, when the plan maps it, leads to the host's loopback. A
//! guest that could address 127.0.0.1 itself would bypass `--no-map-gw` and, with the mapping
//! on, reach 127.0.0.53 and every other 127/8 listener.

mod common;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use common::{
    GATEWAY, GUEST_IP, IpOpts, ipv4_frame, ipv6_frame, ping_frame, tcp_syn, udp, udp6_frame,
};
use netcore::{Engine, EngineOptions, MemoryLink};
use netplan::NetPlan;
use smoltcp::wire::{IpAddress, IpProtocol, TcpPacket};

const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);

fn engine(map_gateway_to_loopback: bool) -> Engine {
    let mut plan = NetPlan::slirp_default();
    plan.map_gateway_to_loopback = map_gateway_to_loopback;
    Engine::with_options(plan, EngineOptions::default()).expect("engine")
}

fn syn4(dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut syn = tcp_syn(40000, port, 1000);
    TcpPacket::new_unchecked(&mut syn[..])
        .fill_checksum(&IpAddress::Ipv4(GUEST_IP), &IpAddress::Ipv4(dst));
    ipv4_frame(GUEST_IP, dst, IpProtocol::Tcp, &syn, &IpOpts::default())
}

fn udp4(dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let datagram = udp(GUEST_IP, 5000, dst, port, b"hello loopback");
    ipv4_frame(
        GUEST_IP,
        dst,
        IpProtocol::Udp,
        &datagram,
        &IpOpts::default(),
    )
}

fn send(engine: &mut Engine, frame: &[u8]) {
    let mut link = MemoryLink::new();
    engine.handle_frame(frame, &mut link);
}

/// Addresses the guest must not reach, and the host loopback listener each would land on.
fn internal_v4() -> Vec<Ipv4Addr> {
    vec![
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(127, 0, 0, 53),
        Ipv4Addr::new(127, 1, 2, 3),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(0, 1, 2, 3),
    ]
}

fn internal_v6() -> Vec<Ipv6Addr> {
    vec![
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::UNSPECIFIED,
        Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
        Ipv4Addr::new(127, 0, 0, 53).to_ipv6_mapped(),
        Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
    ]
}

/// A listener on every loopback address the internal ones would reach, all on one port.
fn loopback_listeners() -> (u16, Vec<TcpListener>) {
    let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = first.local_addr().unwrap().port();
    let mut all = vec![first];
    for addr in [
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, 53), port)),
        SocketAddr::from((Ipv4Addr::new(127, 1, 2, 3), port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ] {
        all.push(TcpListener::bind(addr).unwrap());
    }
    for l in &all {
        l.set_nonblocking(true).unwrap();
    }
    (port, all)
}

fn accept_within(listener: &TcpListener, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok(_) => return true,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
}

#[test]
fn tcp_to_host_internal_addresses_is_dropped_whatever_the_mapping() {
    for map in [false, true] {
        let mut e = engine(map);
        let (port, listeners) = loopback_listeners();
        let mut sent = 0;
        for dst in internal_v4() {
            send(&mut e, &syn4(dst, port));
            sent += 1;
        }
        for dst in internal_v6() {
            send(
                &mut e,
                &ipv6_frame(GUEST_V6, dst, IpProtocol::Tcp, tcp_syn(40001, port, 7)),
            );
            sent += 1;
        }
        assert_eq!(e.open_flows(), (0, 0, 0), "map={map}: no flow opened");
        assert_eq!(e.counters().tx_host_internal, sent, "map={map}");
        if map {
            // The gateway still leads to 127.0.0.1. Accept queues are first in, first out: had
            // an earlier SYN connected, its connection would come first and one would be left.
            send(&mut e, &syn4(GATEWAY, port));
            assert!(
                accept_within(&listeners[0], Duration::from_secs(5)),
                "the gateway's connection"
            );
        }
        for (n, l) in listeners.iter().enumerate() {
            let left = l.accept();
            assert!(
                matches!(&left, Err(err) if err.kind() == ErrorKind::WouldBlock),
                "map={map}: listener {n} got a connection: {left:?}"
            );
        }
    }
}

#[test]
fn udp_and_echo_to_host_internal_addresses_are_dropped() {
    for map in [false, true] {
        let mut e = engine(map);
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        let server6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).unwrap();
        let mut sent = 0;
        for dst in internal_v4() {
            send(&mut e, &udp4(dst, port));
            send(&mut e, &ping_frame(dst, 7, 1, b"ping"));
            sent += 2;
        }
        for dst in internal_v6() {
            send(
                &mut e,
                &udp6_frame(GUEST_V6, 5000, dst, port, b"hello loopback"),
            );
            sent += 1;
        }
        assert_eq!(e.open_flows(), (0, 0, 0), "map={map}: no flow opened");
        assert_eq!(e.counters().tx_host_internal, sent, "map={map}");
        // Loopback delivery is synchronous: a datagram the engine sent would be queued now.
        for s in [&server, &server6] {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            let got = s.recv_from(&mut buf);
            assert!(
                matches!(&got, Err(err) if err.kind() == ErrorKind::WouldBlock),
                "map={map}: a datagram reached loopback: {got:?}"
            );
        }
    }
}
