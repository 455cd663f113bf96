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
//!
//! The datagram paths and the table are here; what does not fit the guest's frame as it is
//! goes out as IPv4 fragments (`frag.rs`), and errors the host sockets queue come back as
//! ICMP errors (`errors.rs`).

mod errors;
mod frag;
#[cfg(test)]
mod tests;

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

/// The inode that names `sock`'s socket, the same through every descriptor of it.
pub fn socket_ino(sock: &impl std::os::fd::AsFd) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let copy = sock.as_fd().try_clone_to_owned().ok()?;
    std::fs::File::from(copy).metadata().ok().map(|m| m.ino())
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
    /// When the flow was made, payload bytes each way, and the host end it last sent to.
    created: Instant,
    to_host: u64,
    to_guest: u64,
    last_peer: Option<SocketAddr>,
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
    /// The guest socket's flow lives on this other queue pair: the frame goes there.
    HeldElsewhere(u16),
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

    /// Records this table's flows for the other queue pairs' engines.
    pub(crate) fn join(&mut self, pair: &crate::queue_pairs::QueuePair) {
        self.flows.set_listing(pair.listing(&pair.shared().udp));
    }

    /// Closes the flows that adopted the forwarded socket `ino` (see [`UdpTable::adopt_forward`]):
    /// runtime control removed the forward, and its port must close as slirp's does. Returns
    /// how many went.
    pub fn close_forwarded(&mut self, epoll: &vmm_sys_util::epoll::Epoll, ino: u64) -> usize {
        let mut closed = 0;
        for slot in self.flows.slots() {
            let adopted = self
                .flows
                .get(slot)
                .is_some_and(|f| f.forwarded && socket_ino(&f.sock) == Some(ino));
            if adopted && let Some(flow) = self.flows.remove(slot) {
                // Another descriptor of the socket may still be open for a moment.
                let _ = epoll::remove(epoll, &flow.sock);
                closed += 1;
            }
        }
        closed
    }

    /// The open flows, as runtime control lists them.
    pub fn flow_infos(&self, now: Instant, out: &mut Vec<crate::flow::FlowInfo>) {
        for f in self.flows.iter() {
            out.push(crate::flow::FlowInfo {
                proto: "udp",
                guest: f.guest,
                remote: f.last_peer,
                state: if f.forwarded { "FORWARDED" } else { "OPEN" },
                to_host: f.to_host,
                to_guest: f.to_guest,
                age: now.saturating_duration_since(f.created),
                idle: now.saturating_duration_since(f.last_activity),
            });
        }
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
            None => {
                if ctx.hand_off
                    && let Some(owner) = self.flows.held_elsewhere(&guest)
                {
                    return Sent::HeldElsewhere(owner);
                }
                match self.open(ctx, guest, &dest) {
                    Ok(slot) => slot,
                    Err(sent) => return sent,
                }
            }
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
            Ok(n) => {
                flow.to_host += n as u64;
                flow.last_peer = Some(dest);
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
            created: ctx.now,
            to_host: 0,
            to_guest: 0,
            last_peer: None,
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
            let Some(src) = seen_from(plan, upstream, from, flow.guest) else {
                continue;
            };
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
                let sent =
                    frag::first_fragment(slot_buf, &mut self.bounce, ctx, src, flow.guest, len)
                        .is_some_and(|meta| {
                            frag::other_fragments(rx, &self.bounce, &meta, ctx.mtu, len)
                        });
                if sent {
                    flow.to_guest += len as u64;
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
            flow.to_guest += len as u64;
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

/// The address the guest socket `guest` sees host address `from` as ([`nat::inbound_source`]:
/// the host's loopback as the gateway, the resolver as the DNS address); `None` when it is of
/// the other family, which that socket cannot take.
fn seen_from(
    plan: &NetPlan,
    upstream: &Upstream,
    from: SocketAddr,
    guest: SocketAddr,
) -> Option<SocketAddr> {
    let seen = nat::inbound_source(plan, upstream, from);
    (seen.is_ipv4() == guest.is_ipv4()).then_some(seen)
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
    write_ports_and_len(udp, src, dst, l4_len);
    if !checksum {
        slot.write_at(0, &hdr[..off + UDP_HEADER_LEN]);
        return;
    }
    let pseudo = ip::pseudo_header_sum(&meta.src(), &meta.dst(), IpProtocol::Udp, l4_len);
    let payload_sum = slot.sum_at(off + UDP_HEADER_LEN, len);
    let sum = checksum_field(&[pseudo, smoltcp::wire::checksum::data(udp), payload_sum]);
    udp[6..8].copy_from_slice(&sum);
    slot.write_at(0, &hdr[..off + UDP_HEADER_LEN]);
}

/// Writes the ports and the length of the UDP header at the start of `udp`, of a datagram of
/// `l4_len` bytes (header included) from `src` to `dst`; the checksum field stays as it is.
fn write_ports_and_len(udp: &mut [u8], src: SocketAddr, dst: SocketAddr, l4_len: usize) {
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
}

/// The UDP checksum field over `parts` (the pseudo-header's sum and the sums of the whole
/// datagram, its checksum field zero): a computed zero goes out as all ones, as zero means
/// "no checksum".
fn checksum_field(parts: &[u16]) -> [u8; 2] {
    let sum = !smoltcp::wire::checksum::combine(parts);
    let sum = if sum == 0 { 0xffff } else { sum };
    sum.to_be_bytes()
}
