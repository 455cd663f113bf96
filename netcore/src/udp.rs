//! UDP NAT: one host socket per guest source address and port.
//!
//! # Theory of operation
//!
//! As slirp does, each guest (address, port) gets one unconnected host socket; every datagram
//! it sends goes out through that socket to its (translated) destination, and whatever comes
//! back to the socket, from any remote, is delivered to the guest (endpoint-independent
//! mapping and filtering). Payload moves between guest memory and the socket through iovecs.
//!
//! A flow expires after 240 s without traffic, or 10 s after a reply from port 53 (DNS
//! sockets are not kept around). Datagrams larger than the link MTU allows are dropped.
//!
//! A forwarded UDP port's socket becomes the flow of the guest socket it forwards to
//! ([`UdpTable::adopt_forward`]): what arrives on it goes to the guest, what that guest socket
//! sends leaves through it, and the flow never expires, as with slirp's hostfwd.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use policy::NetPlan;
use smoltcp::wire::IpProtocol;

use crate::ip;
use crate::link::{RxCsum, RxLink, RxMeta, RxSlot, TxFrame};
use crate::nat::{self, Ctx, DNS_PORT, Target, Upstream};
use crate::sys;

const UDP_HEADER_LEN: usize = 8;
const IDLE_TIMEOUT: Duration = Duration::from_secs(240);
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Epoll token of UDP flow slot `slot`.
pub fn token(slot: usize) -> u64 {
    crate::engine::TOKEN_UDP | slot as u64
}

#[derive(Debug)]
struct Flow {
    guest: SocketAddr,
    sock: OwnedFd,
    last_activity: Instant,
    /// When a reply from port 53 arrived: the flow ends soon after.
    dns_reply: Option<Instant>,
    /// The socket of a forwarded host port (a copy of its descriptor): the flow never
    /// expires, as slirp's hostfwd sockets do not.
    forwarded: bool,
}

/// What became of a guest datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Sent,
    /// The guest gets ICMP net unreachable (slirp: EPERM from translation, sendto errors).
    Unreachable,
    /// Dropped (table full, socket error); counted.
    Dropped,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpCounters {
    pub to_host: u64,
    pub to_guest: u64,
    pub truncated: u64,
    pub table_full: u64,
    pub expired: u64,
    /// Datagrams to forwarded ports dropped: the guest had no address of a family to take them.
    pub no_guest_address: u64,
    /// Datagrams a restricted guest sent, dropped as slirp drops them.
    pub restricted: u64,
}

/// The table of UDP flows.
#[derive(Debug)]
pub struct UdpTable {
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    index: HashMap<SocketAddr, usize>,
    limit: usize,
    /// Flows with datagrams waiting for guest RX buffers.
    pending: Vec<usize>,
    /// The list being retried at batch end, kept so that neither list allocates again.
    visiting: Vec<usize>,
    iovs: sys::IoVecs,
    pub counters: UdpCounters,
}

impl UdpTable {
    pub fn new(limit: usize) -> Self {
        UdpTable {
            flows: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            limit,
            pending: Vec::new(),
            visiting: Vec::new(),
            iovs: sys::IoVecs::default(),
            counters: UdpCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Sends the guest datagram whose payload is `frame[payload_offset..][..len]` to `target`.
    pub fn on_datagram<F: TxFrame + ?Sized>(
        &mut self,
        ctx: &mut Ctx<'_>,
        guest: SocketAddr,
        target: Target,
        frame: &F,
        payload_offset: usize,
        len: usize,
    ) -> Sent {
        let dest = match target {
            Target::Connect(dest) => dest,
            // Guest forwards are TCP only: `nat::outbound` never gives one for UDP.
            Target::Unreachable | Target::Command(_) => return Sent::Unreachable,
            Target::Restricted => {
                self.counters.restricted += 1;
                return Sent::Dropped;
            }
        };
        let slot = match self.index.get(&guest) {
            Some(&slot) => slot,
            None => match self.open(ctx, guest, &dest) {
                Ok(slot) => slot,
                Err(sent) => return sent,
            },
        };
        let Some(flow) = self.flows[slot].as_mut() else {
            return Sent::Dropped;
        };
        flow.last_activity = ctx.now;
        self.iovs.clear();
        frame.iovecs(payload_offset, len, &mut self.iovs);
        match sys::sendmsg(
            flow.sock.as_raw_fd(),
            &self.iovs,
            Some(&dest),
            libc::MSG_DONTWAIT,
        ) {
            Ok(_) => {
                self.counters.to_host += 1;
                Sent::Sent
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::Dropped,
            Err(e) => {
                log::debug!("UDP to {dest}: {e}");
                Sent::Unreachable
            }
        }
    }

    fn open(
        &mut self,
        ctx: &mut Ctx<'_>,
        guest: SocketAddr,
        dest: &SocketAddr,
    ) -> Result<usize, Sent> {
        if self.index.len() >= self.limit {
            self.counters.table_full += 1;
            return Err(Sent::Dropped);
        }
        let sock = sys::socket(sys::family(&dest.ip()), libc::SOCK_DGRAM, 0).map_err(|e| {
            log::warn!("UDP socket: {e}");
            Sent::Dropped
        })?;
        self.insert(ctx, guest, sock, false).ok_or(Sent::Dropped)
    }

    /// Adds the flow of guest socket `guest` on `sock`, watched from now on; `None` when the
    /// socket cannot be watched.
    fn insert(
        &mut self,
        ctx: &mut Ctx<'_>,
        guest: SocketAddr,
        sock: OwnedFd,
        forwarded: bool,
    ) -> Option<usize> {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.flows.push(None);
            self.flows.len() - 1
        });
        let interest = (libc::EPOLLIN | libc::EPOLLET) as u32;
        if let Err(e) = crate::tcp::epoll_add(ctx.epoll, sock.as_raw_fd(), interest, token(slot)) {
            log::warn!("epoll add for UDP: {e}");
            self.free.push(slot);
            return None;
        }
        self.flows[slot] = Some(Flow {
            guest,
            sock,
            last_activity: ctx.now,
            dns_reply: None,
            forwarded,
        });
        self.index.insert(guest, slot);
        Some(slot)
    }

    /// Makes the socket of a forwarded host port the guest socket `guest`'s own: datagrams
    /// to the port go to `guest`, and what `guest` sends leaves through it, so that host
    /// peers see their answers come from the port they wrote to. A flow the guest socket
    /// already had is replaced. `sock` is the engine's copy of the forward's descriptor.
    /// Returns the flow's slot; `None` when the table is full or the socket cannot be watched.
    pub fn adopt_forward(
        &mut self,
        ctx: &mut Ctx<'_>,
        guest: SocketAddr,
        sock: OwnedFd,
    ) -> Option<usize> {
        if let Some(&slot) = self.index.get(&guest) {
            if self.flows[slot].as_ref().is_some_and(|f| f.forwarded) {
                return None; // another forwarded port already owns this guest socket
            }
            self.remove(slot);
        }
        if self.index.len() >= self.limit {
            self.counters.table_full += 1;
            return None;
        }
        self.insert(ctx, guest, sock, true)
    }

    fn remove(&mut self, slot: usize) {
        if let Some(flow) = self.flows[slot].take() {
            self.index.remove(&flow.guest);
            self.pending.retain(|&s| s != slot);
            self.free.push(slot);
        }
    }

    /// Delivers datagrams waiting on flow `slot`'s socket while the guest has buffers.
    pub fn on_socket_event<L: RxLink>(
        &mut self,
        slot: usize,
        plan: &NetPlan,
        upstream: &Upstream,
        ctx: &mut Ctx<'_>,
        rx: &mut L,
    ) {
        let Some(flow) = self.flows.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let header_len = ip::l2_l3_len(&flow.guest.ip()) + UDP_HEADER_LEN;
        let max = ctx.max_payload(&flow.guest.ip(), UDP_HEADER_LEN);
        let offloads = rx.offloads();
        loop {
            let Some(mut slot_buf) = rx.reserve(header_len + max) else {
                if !self.pending.contains(&slot) {
                    self.pending.push(slot);
                }
                return;
            };
            self.iovs.clear();
            slot_buf.iovecs(header_len, max, &mut self.iovs);
            let received = match sys::recvmsg(
                flow.sock.as_raw_fd(),
                &self.iovs,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            ) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors reported on the socket; the flow itself carries on.
                    log::debug!("UDP from host for {}: {e}", flow.guest);
                    continue;
                }
            };
            if received.truncated || received.len > max {
                self.counters.truncated += 1;
                continue;
            }
            let Some(from) = received.from else { continue };
            let src = nat::inbound_source(plan, upstream, from);
            if src.is_ipv4() != flow.guest.is_ipv4() {
                continue;
            }
            flow.last_activity = ctx.now;
            if from.port() == DNS_PORT {
                flow.dns_reply = Some(ctx.now);
            }
            if offloads.csum {
                slot_buf.set_meta(RxMeta {
                    csum: RxCsum::Valid,
                    gso: None,
                });
            }
            write_udp_headers(
                &mut slot_buf,
                ctx,
                src,
                flow.guest,
                received.len,
                !offloads.csum,
            );
            slot_buf.commit(header_len + received.len);
            self.counters.to_guest += 1;
        }
    }

    /// Retries flows that waited for guest RX buffers.
    pub fn end_batch<L: RxLink>(
        &mut self,
        plan: &NetPlan,
        upstream: &Upstream,
        ctx: &mut Ctx<'_>,
        rx: &mut L,
    ) {
        let mut visiting = std::mem::take(&mut self.visiting);
        std::mem::swap(&mut visiting, &mut self.pending);
        for &slot in &visiting {
            self.on_socket_event(slot, plan, upstream, ctx, rx);
        }
        visiting.clear();
        self.visiting = visiting;
    }

    /// Closes flows that were idle too long, or answered by DNS a while ago.
    pub fn on_tick(&mut self, now: Instant) {
        for slot in 0..self.flows.len() {
            let expired = self.flows[slot].as_ref().is_some_and(|f| {
                !f.forwarded
                    && (now.duration_since(f.last_activity) >= IDLE_TIMEOUT
                        || f.dns_reply
                            .is_some_and(|t| now.duration_since(t) >= DNS_TIMEOUT))
            });
            if expired {
                self.remove(slot);
                self.counters.expired += 1;
            }
        }
    }
}

/// Writes Ethernet, IP and UDP headers in front of `len` payload bytes already in the slot;
/// the checksum only when `checksum` (the guest may take the frame as verified otherwise).
fn write_udp_headers<S: RxSlot>(
    slot: &mut S,
    ctx: &mut Ctx<'_>,
    src: SocketAddr,
    dst: SocketAddr,
    len: usize,
    checksum: bool,
) {
    let meta = ctx.meta(src.ip(), dst.ip(), IpProtocol::Udp);
    let l4_len = UDP_HEADER_LEN + len;
    let mut hdr = [0u8; 14 + 40 + UDP_HEADER_LEN];
    let off = ip::write_headers(&mut hdr, &meta, l4_len);
    let udp = &mut hdr[off..off + UDP_HEADER_LEN];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    if !checksum {
        slot.write_at(0, &hdr[..off + UDP_HEADER_LEN]);
        return;
    }
    let pseudo = ip::pseudo_header_sum(&meta.src, &meta.dst, IpProtocol::Udp, l4_len);
    let payload_sum = ip::slot_sum(slot, off + UDP_HEADER_LEN, len);
    let mut sum = !smoltcp::wire::checksum::combine(&[
        pseudo,
        smoltcp::wire::checksum::data(udp),
        payload_sum,
    ]);
    if sum == 0 {
        sum = 0xffff; // zero means "no checksum" in UDP
    }
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    slot.write_at(0, &hdr[..off + UDP_HEADER_LEN]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::MemoryLink;
    use std::net::{Ipv4Addr, UdpSocket};
    use vmm_sys_util::epoll::{Epoll, EpollEvent};

    const GUEST_MAC: policy::MacAddr = policy::MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const GW_MAC: policy::MacAddr = policy::MacAddr([0x52, 0x55, 10, 0, 2, 2]);

    struct Rig {
        table: UdpTable,
        epoll: Epoll,
        link: MemoryLink,
        ident: crate::ipv4::Ident,
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
                ident: crate::ipv4::Ident::new(),
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
                let slot = (ev.data() & 0xffff_ffff) as usize;
                let (mut ctx, table, link) = self.parts();
                table.on_socket_event(slot, &plan, &upstream, &mut ctx, link);
            }
        }
    }

    fn guest() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(10, 0, 2, 15), 5555))
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
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        // To the gateway address: the host's loopback.
        let dst = SocketAddr::from((Ipv4Addr::new(10, 0, 2, 2), port));
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
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = SocketAddr::from((
            Ipv4Addr::new(10, 0, 2, 2),
            server.local_addr().unwrap().port(),
        ));
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
    fn oversized_replies_are_dropped_and_counted() {
        let mut rig = Rig::new();
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = SocketAddr::from((
            Ipv4Addr::new(10, 0, 2, 2),
            server.local_addr().unwrap().port(),
        ));
        rig.send(guest(), dst, b"x");
        let mut buf = [0u8; 8];
        let (_, peer) = server.recv_from(&mut buf).unwrap();
        server.send_to(&[0u8; 3000], peer).unwrap();
        server.send_to(b"small", peer).unwrap();
        rig.poll();
        let frames = rig.link.take();
        assert_eq!(frames.len(), 1);
        assert_eq!(decode(&frames[0]).2, b"small");
        assert_eq!(rig.table.counters.truncated, 1);
    }

    #[test]
    fn a_forwarded_port_serves_as_the_guest_sockets_own_and_never_expires() {
        let mut rig = Rig::new();
        // The forward's socket, as the program binds it.
        let forward = UdpSocket::bind("127.0.0.1:0").unwrap();
        forward.set_nonblocking(true).unwrap();
        let forward_addr = forward.local_addr().unwrap();
        // The guest socket had a flow of its own: the forward replaces it.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let dst = SocketAddr::from((Ipv4Addr::new(10, 0, 2, 2), port));
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
}
