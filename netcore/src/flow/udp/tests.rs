//! The UDP table against real loopback sockets: datagrams out and back, DNS and idle expiry,
//! fragments, errors and forwarded ports.

use super::*;
use crate::link::MemoryLink;
use std::net::{Ipv4Addr, UdpSocket};
use vmm_sys_util::epoll::{Epoll, EpollEvent};

const GUEST_MAC: netplan::MacAddr = netplan::MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const GW_MAC: netplan::MacAddr = netplan::MacAddr([0x52, 0x55, 10, 0, 2, 2]);

struct Rig {
    table: UdpTable,
    epoll: Epoll,
    link: MemoryLink,
    ident: crate::wire::ipv4::Ident,
    now: Instant,
    plan: NetPlan,
    upstream: Upstream,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            table: UdpTable::new(8),
            epoll: Epoll::new().unwrap(),
            link: MemoryLink::new(),
            ident: crate::wire::ipv4::Ident::new(),
            now: Instant::now(),
            plan: NetPlan::slirp_default(),
            upstream: Upstream::default(),
        }
    }

    /// The engine's context for one call, beside the table and the guest's link.
    fn parts(&mut self) -> (Ctx<'_>, &mut UdpTable, &mut MemoryLink) {
        let ctx = Ctx {
            guest_mac: GUEST_MAC,
            gateway_mac: GW_MAC,
            mtu: 1500,
            epoll: &self.epoll,
            ident: &mut self.ident,
            now: self.now,
            hand_off: false,
        };
        (ctx, &mut self.table, &mut self.link)
    }

    fn send(&mut self, guest: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Sent {
        let target = nat::outbound(&self.plan, &self.upstream, dst);
        let (mut ctx, table, _) = self.parts();
        table.on_datagram(&mut ctx, guest, target, payload, 0, payload.len())
    }

    /// Makes `sock` the forward of the guest socket `guest()`.
    fn adopt(&mut self, sock: OwnedFd) -> Option<usize> {
        let (mut ctx, table, _) = self.parts();
        table.adopt_forward(&mut ctx, guest(), sock)
    }

    fn poll(&mut self) {
        let mut events = [EpollEvent::default(); 8];
        let n = crate::wait_for_events(&self.epoll, 1000, &mut events);
        let (plan, upstream) = (self.plan.clone(), self.upstream);
        for ev in &events[..n] {
            let Some(Token::Udp(slot)) = Token::decode(ev.data()) else {
                panic!("not a UDP flow's token: {:#x}", ev.data());
            };
            let (mut ctx, table, link) = self.parts();
            table.on_socket_event(slot, ev.events(), &plan, &upstream, &mut ctx, link);
        }
    }
}

fn guest() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 2, 15), 5555))
}

/// A server on the host's loopback, and the address the guest writes to to reach it: its port
/// on the gateway address.
fn host_server() -> (UdpSocket, SocketAddr) {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    (server, SocketAddr::from((Ipv4Addr::new(10, 0, 2, 2), port)))
}

/// (source address, destination port, payload) of a frame sent to the guest, with its
/// checksums verified.
fn decode(frame: &[u8]) -> (SocketAddr, u16, Vec<u8>) {
    assert_eq!(!smoltcp::wire::checksum::data(&frame[14..34]), 0);
    let src = SocketAddr::from((
        [frame[26], frame[27], frame[28], frame[29]],
        u16::from_be_bytes([frame[34], frame[35]]),
    ));
    let dst_ip = std::net::IpAddr::from([frame[30], frame[31], frame[32], frame[33]]);
    let udp = &frame[34..];
    let pseudo = ip::pseudo_header_sum(&src.ip(), &dst_ip, IpProtocol::Udp, udp.len());
    let sum = smoltcp::wire::checksum::combine(&[pseudo, smoltcp::wire::checksum::data(udp)]);
    assert_eq!(sum, 0xffff, "UDP checksum");
    (src, u16::from_be_bytes([udp[2], udp[3]]), udp[8..].to_vec())
}

#[test]
fn datagrams_go_out_and_replies_from_any_remote_come_back() {
    let mut rig = Rig::new();
    // To the gateway address: the host's loopback.
    let (server, dst) = host_server();
    assert_eq!(rig.send(guest(), dst, b"ping"), Sent::Sent);
    let mut buf = [0u8; 64];
    let (n, peer) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    server.send_to(b"pong", peer).unwrap();
    // A second remote answers the same guest socket: delivered too.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    other.send_to(b"hello from elsewhere", peer).unwrap();
    let mut frames = Vec::new();
    for _ in 0..20 {
        rig.poll();
        frames.extend(rig.link.take());
        if frames.len() >= 2 {
            break;
        }
    }
    let decoded: Vec<_> = frames.iter().map(|f| decode(f)).collect();
    assert_eq!(decoded[0], (dst, 5555, b"pong".to_vec()));
    assert_eq!(
        decoded[1].0.ip(),
        std::net::IpAddr::from(Ipv4Addr::new(10, 0, 2, 2))
    );
    assert_eq!(decoded[1].2, b"hello from elsewhere");
    assert_eq!(rig.table.len(), 1);
}

#[test]
fn dns_replies_appear_from_the_dns_address_and_expire_quickly() {
    let mut rig = Rig::new();
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The test's resolver is not on port 53; map it as if it were the upstream.
    rig.upstream.dns_v4 = Some(resolver.local_addr().unwrap());
    let dst = SocketAddr::from((Ipv4Addr::new(10, 0, 2, 3), 53));
    assert_eq!(rig.send(guest(), dst, b"query"), Sent::Sent);
    let mut buf = [0u8; 64];
    let (_, peer) = resolver.recv_from(&mut buf).unwrap();
    resolver.send_to(b"answer", peer).unwrap();
    rig.poll();
    let frames = rig.link.take();
    let (src, _, payload) = decode(&frames[0]);
    assert_eq!(src, dst);
    assert_eq!(payload, b"answer");
    rig.table.on_tick(rig.now + Duration::from_secs(5));
    assert_eq!(rig.table.len(), 1);
    rig.table.on_tick(rig.now + Duration::from_secs(241));
    assert!(rig.table.is_empty());
}

#[test]
fn idle_flows_expire_after_240_seconds() {
    let mut rig = Rig::new();
    let (_server, dst) = host_server();
    rig.send(guest(), dst, b"x");
    rig.table.on_tick(rig.now + Duration::from_secs(239));
    assert_eq!(rig.table.len(), 1);
    rig.table.on_tick(rig.now + Duration::from_secs(240));
    assert!(rig.table.is_empty());
    assert_eq!(rig.table.counters.expired, 1);
}

#[test]
fn other_ports_on_the_dns_address_are_unreachable() {
    let mut rig = Rig::new();
    let dst = SocketAddr::from((Ipv4Addr::new(10, 0, 2, 3), 5353));
    assert_eq!(rig.send(guest(), dst, b"x"), Sent::Unreachable);
    assert!(rig.table.is_empty());
}

#[test]
fn replies_larger_than_the_mtu_come_as_ipv4_fragments() {
    let mut rig = Rig::new();
    let (server, dst) = host_server();
    rig.send(guest(), dst, b"x");
    let mut buf = [0u8; 8];
    let (_, peer) = server.recv_from(&mut buf).unwrap();
    let big: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    server.send_to(&big, peer).unwrap();
    server.send_to(b"small", peer).unwrap();
    rig.poll();
    let frames = rig.link.take();
    // 3008 bytes of UDP at 1480 per fragment: 1480 + 1480 + 48, then the small one.
    let lens: Vec<usize> = frames.iter().map(Vec::len).collect();
    assert_eq!(lens, vec![1514, 1514, 82, 14 + 20 + 8 + 5]);
    let mut datagram = Vec::new();
    for (i, frame) in frames[..3].iter().enumerate() {
        let ip = smoltcp::wire::Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.frag_offset()), i * 1480);
        assert_eq!(ip.more_frags(), i < 2);
        assert_eq!(ip.ident(), 0, "one ident for the whole datagram");
        datagram.extend_from_slice(ip.payload());
    }
    let pseudo = ip::pseudo_header_sum(&dst.ip(), &guest().ip(), IpProtocol::Udp, datagram.len());
    let sum = smoltcp::wire::checksum::combine(&[pseudo, smoltcp::wire::checksum::data(&datagram)]);
    assert_eq!(sum, 0xffff, "UDP checksum over the reassembled datagram");
    assert_eq!(&datagram[8..], &big[..]);
    assert_eq!(decode(&frames[3]).2, b"small");
    assert_eq!(rig.table.counters.fragmented, 1);
    assert_eq!(rig.table.counters.to_guest, 2);
}

/// With `IP_RECVERR`, an ICMP error about one datagram is pending on the socket until
/// read, and the socket's next send would report it instead of sending: the next datagram,
/// to another destination, must still go out.
#[test]
fn an_error_about_one_destination_does_not_fail_the_next_send() {
    let mut rig = Rig::new();
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let open_port = server.local_addr().unwrap().port();
    let gw = Ipv4Addr::new(10, 0, 2, 2);
    assert_eq!(
        rig.send(guest(), SocketAddr::from((gw, closed_port)), b"a"),
        Sent::Sent
    );
    // The port unreachable comes back over loopback: the socket reports it (EPOLLERR),
    // and nothing reads it yet.
    let mut events = [EpollEvent::default(); 1];
    assert_eq!(crate::wait_for_events(&rig.epoll, 5000, &mut events), 1);
    assert_ne!(events[0].events() & libc::EPOLLERR as u32, 0);
    assert_eq!(
        rig.send(guest(), SocketAddr::from((gw, open_port)), b"b"),
        Sent::Sent
    );
    let mut buf = [0u8; 8];
    let n = server.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"b");
}

#[test]
fn a_forwarded_port_serves_as_the_guest_sockets_own_and_never_expires() {
    let mut rig = Rig::new();
    // The forward's socket, as the program binds it.
    let forward = UdpSocket::bind("127.0.0.1:0").unwrap();
    forward.set_nonblocking(true).unwrap();
    let forward_addr = forward.local_addr().unwrap();
    // The guest socket had a flow of its own: the forward replaces it.
    let (_server, dst) = host_server();
    assert_eq!(rig.send(guest(), dst, b"x"), Sent::Sent);
    assert!(rig.adopt(OwnedFd::from(forward)).is_some());
    assert_eq!(rig.table.len(), 1);

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(forward_addr).unwrap();
    client.send(b"to the guest").unwrap();
    rig.poll();
    let frames = rig.link.take();
    assert_eq!(frames.len(), 1);
    let (src, dst_port, payload) = decode(&frames[0]);
    let client_port = client.local_addr().unwrap().port();
    assert_eq!(
        src,
        SocketAddr::from((Ipv4Addr::new(10, 0, 2, 2), client_port))
    );
    assert_eq!(dst_port, 5555);
    assert_eq!(payload, b"to the guest");

    // The guest answers where it came from; the client, connected to the forwarded port,
    // takes the answer only from that port.
    assert_eq!(rig.send(guest(), src, b"answer"), Sent::Sent);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"answer");

    rig.table.on_tick(rig.now + IDLE_TIMEOUT * 2);
    assert_eq!(rig.table.len(), 1, "a forward's flow does not expire");
}
