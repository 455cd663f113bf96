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
//! sockets are not kept around).
//!
//! Datagrams from the host larger than the link MTU allows reach an IPv4 guest as fragments
//! (slirp's `ip_output`): the frame's buffers take the first part and a bounce buffer the
//! rest, read by the same `recvmsg`. IPv6 ones are dropped and counted, as slirp's
//! `ip6_output` does not fragment. Guest buffers made of more pieces than one `recvmsg` takes
//! are read through the bounce buffer too. ICMP errors the host sockets report
//! (`IP_RECVERR`/`IPV6_RECVERR`) go back to the guest about the datagram that caused them.
//! The delivery loop consumes a datagram or an error on every pass, or stops.
//!
//! A forwarded UDP port's socket becomes the flow of the guest socket it forwards to
//! ([`UdpTable::adopt_forward`]): what arrives on it goes to the guest, what that guest socket
//! sends leaves through it, and the flow never expires, as with slirp's hostfwd.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use netplan::NetPlan;
use smoltcp::wire::IpProtocol;

use super::epoll::{self, Token};
use super::table::{FlowTable, Keyed};
use crate::link::{RxCsum, RxLink, RxMeta, RxSlot, TxFrame};
use crate::nat::{self, Ctx, DNS_PORT, Target, Upstream};
use crate::sys;
use crate::wire::ip;

const UDP_HEADER_LEN: usize = 8;
const IDLE_TIMEOUT: Duration = Duration::from_secs(240);
const DNS_TIMEOUT: Duration = Duration::from_secs(10);
/// The bounce buffer's size: the largest datagram, with room for `MSG_TRUNC` to tell.
const BOUNCE_LEN: usize = 65536;
/// Payload bytes of the offending datagram an ICMP error relayed to the guest quotes, at most
/// (slirp quotes up to 548 bytes of packet).
const QUOTED_PAYLOAD: usize = 512;
/// Errors taken off a socket's error queue per event, at most: enough to empty it (queued
/// errors count against the socket's receive buffer, so a queue left full would keep data
/// out, and no new event would come for it). The bound only guards against a flood that
/// refills it as fast as it drains.
const MAX_ERRORS_PER_EVENT: usize = 4096;

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

impl Keyed for Flow {
    type Key = SocketAddr;
    fn key(&self) -> SocketAddr {
        self.guest
    }
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
    /// Datagrams read through the bounce buffer: the guest's buffers came in more pieces than
    /// one read takes.
    pub bounced: u64,
    /// Datagrams larger than the MTU sent as IPv4 fragments.
    pub fragmented: u64,
    /// Datagrams whose fragments did not all fit in the guest's buffers.
    pub fragments_lost: u64,
    /// Reads that failed (ICMP errors the socket reported, or worse).
    pub read_errors: u64,
    /// ICMP errors from the host relayed to the guest.
    pub icmp_relayed: u64,
}

/// The table of UDP flows.
#[derive(Debug)]
pub struct UdpTable {
    /// Flows by guest socket; the pending ones have datagrams waiting for guest RX buffers.
    flows: FlowTable<Flow>,
    iovs: sys::IoVecs,
    /// Where datagrams go that the guest's frame cannot take as they are: the part past the
    /// MTU, or all of one when the frame's buffers are too many pieces to read into at once.
    bounce: Vec<u8>,
    pub counters: UdpCounters,
}

impl UdpTable {
    pub fn new(limit: usize) -> Self {
        UdpTable {
            flows: FlowTable::new(limit),
            iovs: sys::IoVecs::default(),
            bounce: Vec::new(),
            counters: UdpCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
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
        let slot = match self.flows.find(&guest) {
            Some(slot) => slot,
            None => match self.open(ctx, guest, &dest) {
                Ok(slot) => slot,
                Err(sent) => return sent,
            },
        };
        let Some(flow) = self.flows.get_mut(slot) else {
            return Sent::Dropped;
        };
        flow.last_activity = ctx.now;
        let mut iovs = self.iovs.for_send();
        frame.iovecs(payload_offset, len, &mut iovs);
        let send = || sys::sendmsg(&flow.sock, &iovs, Some(&dest), libc::MSG_DONTWAIT);
        // An ICMP error about an earlier datagram (IP_RECVERR) is pending on the socket until
        // read, and a send reports it instead of sending (clearing it): once more, then.
        let sent = match send() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                log::debug!("UDP to {dest}: {e}; once more");
                send()
            }
            other => other,
        };
        match sent {
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
        if self.flows.is_full() {
            self.counters.table_full += 1;
            return Err(Sent::Dropped);
        }
        let sock = sys::socket(sys::family(&dest.ip()), libc::SOCK_DGRAM, 0).map_err(|e| {
            crate::ratelimit::guest_log!(log::Level::Warn, "UDP socket: {e}");
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
        // ICMP errors about what the guest sends through the socket come back to it.
        if let Err(e) = sys::set_recv_errors(&sock, sys::family(&guest.ip())) {
            log::debug!("IP_RECVERR for UDP: {e}");
        }
        let flow = Flow {
            guest,
            sock,
            last_activity: ctx.now,
            dns_reply: None,
            forwarded,
        };
        let interest = (libc::EPOLLIN | libc::EPOLLET) as u32;
        let watched = self.flows.add_watched(flow, |flow, slot| {
            epoll::add(ctx.epoll, &flow.sock, interest, Token::Udp(slot))
        });
        watched
            .inspect_err(|e| {
                crate::ratelimit::guest_log!(log::Level::Warn, "epoll add for UDP: {e}")
            })
            .ok()
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
        if let Some(slot) = self.flows.find(&guest) {
            if self.flows.get(slot).is_some_and(|f| f.forwarded) {
                return None; // another forwarded port already owns this guest socket
            }
            self.flows.remove(slot);
        }
        if self.flows.is_full() {
            self.counters.table_full += 1;
            return None;
        }
        self.insert(ctx, guest, sock, true)
    }

    /// Delivers datagrams waiting on flow `slot`'s socket while the guest has buffers, and
    /// relays the ICMP errors the socket reported (`events` holds `EPOLLERR`).
    ///
    /// Every pass of the loop consumes a datagram or an error, or returns: a datagram the
    /// frame cannot take as it is (more iovecs than the kernel accepts, longer than the MTU)
    /// goes another way or is dropped and counted, never left at the front of the queue to be
    /// tried again.
    pub fn on_socket_event<L: RxLink>(
        &mut self,
        slot: usize,
        events: u32,
        plan: &NetPlan,
        upstream: &Upstream,
        ctx: &mut Ctx<'_>,
        rx: &mut L,
    ) {
        if events & libc::EPOLLERR as u32 != 0 {
            self.relay_errors(slot, plan, upstream, ctx, rx);
        }
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        let header_len = ip::l2_l3_len(&flow.guest.ip()) + UDP_HEADER_LEN;
        let max = ctx.max_payload(&flow.guest.ip(), UDP_HEADER_LEN);
        let offloads = rx.offloads();
        if self.bounce.len() < BOUNCE_LEN {
            self.bounce.resize(BOUNCE_LEN, 0);
        }
        let mut failures = 0;
        loop {
            let Some(mut slot_buf) = rx.reserve(header_len + max) else {
                self.flows.mark_pending(slot);
                return;
            };
            let mut iovs = self.iovs.for_recv();
            slot_buf.iovecs(header_len, max, &mut iovs);
            // Guest buffers made of more pieces than one call takes are read through the
            // bounce buffer and copied; what does not fit the frame lands there too, at its
            // offset in the datagram, to go out as IPv4 fragments.
            let bounced = iovs.len() >= sys::MAX_IOVECS;
            let overflow_from = if bounced {
                iovs.truncate(0);
                0
            } else {
                max
            };
            iovs.push(&mut self.bounce[overflow_from..BOUNCE_LEN]);
            let received =
                match sys::recvmsg(&flow.sock, &mut iovs, libc::MSG_DONTWAIT | libc::MSG_TRUNC) {
                    Ok(r) => {
                        failures = 0;
                        r
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => {
                        // An ICMP error the socket reported: reading it cleared it (its details
                        // wait on the error queue). An error that stays would fail again on the
                        // same datagram: the second in a row drops the datagram, a third ends
                        // this pass.
                        drop(slot_buf);
                        self.counters.read_errors += 1;
                        log::debug!("UDP from host for {}: {e}", flow.guest);
                        failures += 1;
                        if failures == 2 && sys::discard_datagram(&flow.sock).is_ok() {
                            continue;
                        }
                        if failures >= 2 {
                            return;
                        }
                        continue;
                    }
                };
            if received.truncated || received.len > BOUNCE_LEN {
                self.counters.truncated += 1;
                continue;
            }
            let Some(from) = received.from else { continue };
            let src = nat::inbound_source(plan, upstream, from);
            if src.is_ipv4() != flow.guest.is_ipv4() {
                continue;
            }
            let len = received.len;
            if bounced {
                self.counters.bounced += 1;
                slot_buf.write_at(header_len, &self.bounce[..len.min(max)]);
            }
            flow.last_activity = ctx.now;
            if from.port() == DNS_PORT {
                flow.dns_reply = Some(ctx.now);
            }
            if len > max {
                // Larger than the MTU: IPv4 fragments, as slirp's ip_output sends them. Like
                // slirp (ip6_output does not fragment), nothing for IPv6.
                if !flow.guest.is_ipv4() {
                    self.counters.truncated += 1;
                    continue;
                }
                let sent = first_fragment(slot_buf, &mut self.bounce, ctx, src, flow.guest, len)
                    .is_some_and(|meta| other_fragments(rx, &self.bounce, &meta, ctx.mtu, len));
                if sent {
                    self.counters.fragmented += 1;
                    self.counters.to_guest += 1;
                } else {
                    self.counters.fragments_lost += 1;
                }
                continue;
            }
            if offloads.csum {
                slot_buf.set_meta(RxMeta {
                    csum: RxCsum::Valid,
                    gso: None,
                });
            }
            write_udp_headers(&mut slot_buf, ctx, src, flow.guest, len, !offloads.csum);
            slot_buf.commit(header_len + len);
            self.counters.to_guest += 1;
        }
    }

    /// Relays the ICMP errors queued on flow `slot`'s socket (`IP_RECVERR`) to the guest as
    /// errors about the datagram it sent, rebuilt from what the queue gives back (passt's
    /// `udp_sock_recverr`; slirp sends port unreachable for the errors its reads see).
    fn relay_errors<L: RxLink>(
        &mut self,
        slot: usize,
        plan: &NetPlan,
        upstream: &Upstream,
        ctx: &mut Ctx<'_>,
        rx: &mut L,
    ) {
        let Some(flow) = self.flows.get(slot) else {
            return;
        };
        let mut quoted = [0u8; QUOTED_PAYLOAD];
        let mut frame = Vec::new();
        let mut out = Vec::new();
        for _ in 0..MAX_ERRORS_PER_EVENT {
            let Ok(err) = sys::recv_error(&flow.sock, &mut quoted) else {
                return;
            };
            let Some((icmp_type, code, rest)) = guest_error(&err, flow.guest.is_ipv4()) else {
                continue;
            };
            let Some(dest) = err.dest else { continue };
            let dest = nat::inbound_source(plan, upstream, dest);
            if dest.is_ipv4() != flow.guest.is_ipv4() {
                continue;
            }
            quoted_datagram(
                ctx,
                flow.guest,
                dest,
                &quoted[..err.payload_len],
                &mut frame,
            );
            let built = match flow.guest {
                SocketAddr::V4(_) => crate::service::icmp::error(
                    plan, ctx.ident, &frame, icmp_type, code, rest, &mut out,
                ),
                SocketAddr::V6(_) => plan.ipv6.as_ref().is_some_and(|v6| {
                    crate::service::ndp::error(v6, &frame, icmp_type, code, rest, &mut out)
                }),
            };
            if built && rx.send(&[&out]).is_ok() {
                self.counters.icmp_relayed += 1;
            }
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
        let visiting = self.flows.start_visit();
        for &slot in &visiting {
            self.on_socket_event(slot, 0, plan, upstream, ctx, rx);
        }
        self.flows.end_visit(visiting);
    }

    /// Closes flows that were idle too long, or answered by DNS a while ago.
    pub fn on_tick(&mut self, now: Instant) {
        for slot in self.flows.slots() {
            let expired = self.flows.get(slot).is_some_and(|f| {
                !f.forwarded
                    && (now.duration_since(f.last_activity) >= IDLE_TIMEOUT
                        || f.dns_reply
                            .is_some_and(|t| now.duration_since(t) >= DNS_TIMEOUT))
            });
            if expired {
                self.flows.remove(slot);
                self.counters.expired += 1;
            }
        }
    }
}

/// The ICMP message (type, code, second header word) that tells the guest of `err`, for the
/// errors that concern it: unreachable, time exceeded, and fragmentation needed or packet
/// too big with the MTU. Local errors (our own socket's) are not the guest's business.
fn guest_error(err: &sys::SockError, ipv4: bool) -> Option<(u8, u8, [u8; 4])> {
    use crate::service::{icmp, ndp};
    let mtu = u16::try_from(err.info).unwrap_or(u16::MAX);
    match (ipv4, err.origin, err.icmp_type) {
        (true, libc::SO_EE_ORIGIN_ICMP, icmp::DEST_UNREACHABLE) => {
            let rest = if err.icmp_code == icmp::UNREACH_NEEDFRAG {
                let [hi, lo] = mtu.to_be_bytes();
                [0, 0, hi, lo]
            } else {
                [0; 4]
            };
            Some((icmp::DEST_UNREACHABLE, err.icmp_code, rest))
        }
        (true, libc::SO_EE_ORIGIN_ICMP, icmp::TIME_EXCEEDED) => {
            Some((icmp::TIME_EXCEEDED, err.icmp_code, [0; 4]))
        }
        (false, libc::SO_EE_ORIGIN_ICMP6, t @ (ndp::DEST_UNREACHABLE | ndp::TIME_EXCEEDED)) => {
            Some((t, err.icmp_code, [0; 4]))
        }
        (false, libc::SO_EE_ORIGIN_ICMP6, ndp::PACKET_TOO_BIG) => {
            Some((ndp::PACKET_TOO_BIG, 0, err.info.to_be_bytes()))
        }
        _ => None,
    }
}

/// The datagram the guest at `guest` sent to `dest` (as it addressed it), rebuilt as a frame
/// from the guest for the ICMP builders to quote: headers and what is known of the payload.
fn quoted_datagram(
    ctx: &Ctx<'_>,
    guest: SocketAddr,
    dest: SocketAddr,
    payload: &[u8],
    frame: &mut Vec<u8>,
) {
    frame.clear();
    let Some(addrs) = ip::Addrs::new(guest.ip(), dest.ip()) else {
        return;
    };
    let meta = ip::PacketMeta {
        src_mac: ctx.guest_mac,
        dst_mac: ctx.gateway_mac,
        addrs,
        protocol: IpProtocol::Udp,
        ttl: 64,
        tos: 0,
        ident: 0,
    };
    let l4_len = UDP_HEADER_LEN + payload.len();
    frame.clear();
    frame.resize(ip::l2_l3_len(&guest.ip()) + l4_len, 0);
    let off = ip::write_headers(frame, &meta, l4_len);
    let udp = &mut frame[off..];
    udp[0..2].copy_from_slice(&guest.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dest.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    udp[UDP_HEADER_LEN..].copy_from_slice(payload);
    // IPv6 has no checksum-less UDP: the sum the guest sent, if the payload came back whole.
    if guest.is_ipv6() {
        let pseudo = ip::pseudo_header_sum(&guest.ip(), &dest.ip(), IpProtocol::Udp, l4_len);
        let mut sum =
            !smoltcp::wire::checksum::combine(&[pseudo, smoltcp::wire::checksum::data(udp)]);
        if sum == 0 {
            sum = 0xffff;
        }
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The bytes of the UDP datagram (header included) every IPv4 fragment but the last carries:
/// the MTU's IP payload, rounded down to the 8-byte units fragment offsets count in.
fn fragment_unit(mtu: u16) -> usize {
    usize::from(mtu).saturating_sub(crate::wire::ipv4::HEADER_LEN) & !7
}

/// Marks the IPv4 header at `frame[14..34]` as the fragment at byte `offset` of its datagram,
/// more to come or not, and checksums it again.
fn set_fragment(frame: &mut [u8], offset: usize, more: bool) {
    let ip = &mut frame[crate::wire::ethernet::HEADER_LEN..][..crate::wire::ipv4::HEADER_LEN];
    let mut ip = smoltcp::wire::Ipv4Packet::new_unchecked(ip);
    ip.set_more_frags(more);
    ip.set_frag_offset(offset as u16);
    ip.fill_checksum();
}

/// Sends the first IPv4 fragment of a datagram of `len` payload bytes (`len` above the MTU's
/// room) from `src` to the guest at `dst`: the frame's payload region of `slot` holds the
/// datagram's first bytes, `bounce` the rest from the frame's capacity on. The bytes of the
/// frame past the first fragment's share are copied back into `bounce`, so that it holds
/// everything after that share. Returns the framing the other fragments repeat (its ident),
/// or `None` when an MTU this small leaves no room to fragment (the datagram is dropped).
fn first_fragment<S: RxSlot>(
    mut slot: S,
    bounce: &mut [u8],
    ctx: &mut Ctx<'_>,
    src: SocketAddr,
    dst: SocketAddr,
    len: usize,
) -> Option<ip::PacketMeta> {
    let unit = fragment_unit(ctx.mtu);
    let max = ctx.max_payload(&dst.ip(), UDP_HEADER_LEN);
    if unit <= UDP_HEADER_LEN || len <= max {
        return None;
    }
    let header_len = ip::l2_l3_len(&dst.ip()) + UDP_HEADER_LEN;
    let first = unit - UDP_HEADER_LEN;
    slot.read_at(header_len + first, &mut bounce[first..max]);
    let meta = ctx.meta(src.ip(), dst.ip(), IpProtocol::Udp);
    let l4_len = UDP_HEADER_LEN + len;
    let mut hdr = [0u8; 14 + 20 + UDP_HEADER_LEN];
    let off = ip::write_headers(&mut hdr, &meta, unit);
    set_fragment(&mut hdr, 0, true);
    let udp = &mut hdr[off..];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    // The guest checks the sum over the reassembled datagram: all of it, always (a
    // checksum-verified mark would cover only the first fragment).
    let pseudo = ip::pseudo_header_sum(&meta.src(), &meta.dst(), IpProtocol::Udp, l4_len);
    let mut sum = !smoltcp::wire::checksum::combine(&[
        pseudo,
        smoltcp::wire::checksum::data(udp),
        ip::slot_sum(&slot, header_len, first),
        smoltcp::wire::checksum::data(&bounce[first..len]),
    ]);
    if sum == 0 {
        sum = 0xffff;
    }
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    slot.write_at(0, &hdr);
    slot.commit(header_len + first);
    Some(meta)
}

/// Sends the fragments after the first of a datagram of `len` payload bytes whose bytes past
/// the first fragment are in `bounce` (see [`first_fragment`]); false when the guest ran out
/// of buffers on the way (it then drops the fragments it has when its reassembly times out).
fn other_fragments<L: RxLink>(
    rx: &mut L,
    bounce: &[u8],
    meta: &ip::PacketMeta,
    mtu: u16,
    len: usize,
) -> bool {
    let unit = fragment_unit(mtu);
    let l4_len = UDP_HEADER_LEN + len;
    let mut offset = unit;
    while offset < l4_len {
        let chunk = unit.min(l4_len - offset);
        let mut hdr = [0u8; 14 + 20];
        let off = ip::write_headers(&mut hdr, meta, chunk);
        set_fragment(&mut hdr, offset, offset + chunk < l4_len);
        let at = offset - UDP_HEADER_LEN;
        if rx.send(&[&hdr[..off], &bounce[at..at + chunk]]).is_err() {
            return false;
        }
        offset += chunk;
    }
    true
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
    let pseudo = ip::pseudo_header_sum(&meta.src(), &meta.dst(), IpProtocol::Udp, l4_len);
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
    fn replies_larger_than_the_mtu_come_as_ipv4_fragments() {
        let mut rig = Rig::new();
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = SocketAddr::from((
            Ipv4Addr::new(10, 0, 2, 2),
            server.local_addr().unwrap().port(),
        ));
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
        let pseudo =
            ip::pseudo_header_sum(&dst.ip(), &guest().ip(), IpProtocol::Udp, datagram.len());
        let sum =
            smoltcp::wire::checksum::combine(&[pseudo, smoltcp::wire::checksum::data(&datagram)]);
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
