//! TCP by translation: each guest connection is spliced onto one host socket, with no TCP
//! stack and no payload buffer of our own.
//!
//! # Theory of operation
//!
//! The host kernel runs the real TCP toward the remote; toward the guest we only rewrite
//! headers. Two invariants carry everything:
//!
//! * **Guest to host.** A guest segment that starts at `rcv_nxt` is written to the socket
//!   straight from guest memory (iovecs into the frame). We ACK exactly what the socket took, so
//!   acknowledged data is never dropped: a short write simply leaves the rest for the guest to
//!   retransmit. The window we offer is the socket's free send-buffer space. The in-order
//!   segments of one flow in a batch of frames wait as iovecs (`Deferred`) and go in one
//!   `sendmsg` when another flow's segment, a FIN, a reset or the batch's end comes; a
//!   write under 16 KiB goes with `MSG_MORE` and is pushed when the batch ends. So a guest
//!   without segmentation offload costs the host neither a system call nor a loopback packet
//!   per 1460 bytes. The ACK goes at the batch's end, except after a write shorter than a
//!   segment (the end of a message, as a request): then it waits up to [`DELAYED_ACK`] for
//!   the peer's answer, whose first segment carries it, so the guest takes one frame, not two.
//! * **Host to guest.** Data stays in the socket's receive queue until the guest ACKs it. We
//!   `recvmsg(MSG_PEEK)` it straight into guest RX buffers, up to 64 frames per call (reserved
//!   together through [`RxLink::reserve_frames`]); with `SO_PEEK_OFF` the kernel keeps
//!   the peek position at "bytes already sent" (`snd_nxt - snd_una`), and removes bytes with
//!   `MSG_TRUNC` as ACKs arrive, moving the position back accordingly. Retransmission (a
//!   timeout, or the first duplicate ACK) just resets the peek offset to zero and sends again
//!   from `snd_una`. The timeout follows the guest's measured round trip (`rtt`); a
//!   duplicate ACK means a dropped segment, since the virtio link does not reorder.
//!   Without `SO_PEEK_OFF` (kernels before 6.9), the bytes in flight are peeked into a scratch
//!   buffer in front of the RX slot instead.
//!
//! Our SYN and FIN take one sequence number each, as in TCP; data sequence numbers start at
//! `iss + 1`. The SYN-ACK goes to the guest only once the host `connect()` has succeeded (as
//! slirp does); a refused connect becomes an RST, an unreachable one an ICMP error.
//!
//! A forwarded port works the other way round: the host connection is already accepted
//! ([`TcpTable::on_accepted`]), and we open the guest side with our SYN. The guest's SYN-ACK
//! makes the flow established, after which both kinds are the same; its RST resets the host
//! client.
//!
//! Everything runs on the engine's thread: sockets are non-blocking, edge-triggered in the
//! engine's epoll; retransmission and probes are driven by the engine's timer tick, delayed
//! ACKs by a one-shot timer of its own ([`TcpTable::send_delayed_acks`]).
//!
//! The code follows the two directions: `guest` applies guest segments (ACKs, payload to the
//! socket), `host` peeks socket data into guest frames, `emit` writes every header toward the
//! guest, and `connect` opens flows either way. What a flow's state is made of, and which
//! parts of it go together, is written down at `flow::Flow`; the sequence and window
//! arithmetic is in `seq`, as pure functions; the round-trip estimate in `rtt`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use smoltcp::wire::{IpProtocol, TcpOption, TcpPacket, TcpSeqNumber};
use vmm_sys_util::epoll::Epoll;

use super::epoll::{self, Token};
use super::table::{FlowTable, Keyed};
use crate::link::{
    FrameOf, Gso, RxBytes, RxCsum, RxFrames, RxLink, RxMeta, RxOffloads, RxSlot, TxFrame,
};
use crate::nat::Ctx;
use crate::sys;
use crate::wire::ip;

/// The IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
const TCP_HEADER_LEN: usize = 20;
/// The window scale we offer when the guest offers one: windows up to 8 MiB.
const OUR_WSCALE: u8 = 7;
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// Duplicate ACKs that make us resend from the first unacknowledged byte: the first one. The
/// virtio link neither reorders nor duplicates frames, so a guest that acknowledges the same
/// byte again with the same window got data past a hole: it dropped a segment (for lack of
/// receive memory, 16 streams into a small guest). Waiting for three, as over a network that
/// reorders, leaves a guest that had fewer later segments to acknowledge to the timeout.
/// passt resends on the first as well.
const DUP_ACK_THRESHOLD: u32 = 1;
const MAX_RTO: Duration = Duration::from_secs(30);
/// Retransmissions without progress before the connection is reset both ways.
const MAX_RETRIES: u32 = 8;
/// Largest TCP payload per frame toward the guest without segmentation offload.
const DEFAULT_GUEST_MSS: u16 = 536;
/// How long the ACK for the end of a guest message waits for the peer's answer to carry it
/// ([`Flags::ACK_DELAYED`]): an answer from this host comes within tens of microseconds,
/// and a guest waits on the ACK only when Nagle holds its next small write, far below the
/// 40 ms a Linux receiver may delay its own.
pub const DELAYED_ACK: Duration = Duration::from_micros(500);

/// An ACK may wait for the peer's answer when both ends are open, the window is not what
/// holds the guest back, and it did not wait already.
fn may_delay_ack(flow: &mut Flow, ctx: &Ctx<'_>) -> bool {
    let segment = ctx.max_payload(&flow.key.guest.ip(), TCP_HEADER_LEN) as u32;
    !flow.flags.has(Flags::ACK_DELAYED)
        && flow.state == State::Established
        && flow.guest_end == GuestEnd::Open
        && flow.host_end == HostEnd::Open
        && flow.window_bytes() >= 4 * segment
}

/// Largest payload of one offloaded segment: the IP length fields are 16 bits.
const MAX_TSO_PAYLOAD: usize = 65535 - 40 - TCP_HEADER_LEN;

/// TCP flags as bits of the header's flags byte.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A TCP segment from the guest, parsed from the copied header prefix.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub guest: SocketAddr,
    pub remote: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    /// Where the payload starts in the frame, and its length.
    pub payload_offset: usize,
    pub payload_len: usize,
}

impl Segment {
    /// Parses the TCP header at `l4` (a copy of the frame's header bytes).
    pub fn parse(
        src: IpAddr,
        dst: IpAddr,
        l4: &[u8],
        l4_offset: usize,
        l4_len: usize,
    ) -> Option<Segment> {
        let packet = TcpPacket::new_checked(l4).ok()?;
        let header_len = usize::from(packet.header_len());
        if header_len > l4_len {
            return None;
        }
        let (mss, wscale) = if packet.syn() {
            let summary = packet.options_summary().ok()?;
            (summary.max_segment_size, summary.window_scale)
        } else {
            (None, None)
        };
        let raw_flags = l4.get(13).copied()?;
        Some(Segment {
            guest: SocketAddr::new(src, packet.src_port()),
            remote: SocketAddr::new(dst, packet.dst_port()),
            seq: packet.seq_number().0 as u32,
            ack: packet.ack_number().0 as u32,
            flags: raw_flags & 0x1f,
            window: packet.window_len(),
            mss,
            wscale,
            payload_offset: l4_offset + header_len,
            payload_len: l4_len - header_len,
        })
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Addresses as the guest sees them: its own socket and the remote it connected to (or, for a
/// forwarded port, that connected to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub guest: SocketAddr,
    pub remote: SocketAddr,
}

/// A connection with no segment from the guest and no event from its socket for this long is
/// reset and closed, as passt closes idle flows: a guest that never closes its connections must
/// not hold host sockets and flow slots for ever. Two hours, the TCP keepalive default
/// (`tcp_keepalive_time`): a guest that keeps a quiet connection on purpose sends keepalives
/// before then, and those count as traffic.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

/// Counters for the TCP side.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounters {
    pub connects: u64,
    /// Established connections closed after [`IDLE_TIMEOUT`] without traffic.
    pub idle_closed: u64,
    pub refused: u64,
    pub resets_to_guest: u64,
    pub retransmits: u64,
    pub flows_closed: u64,
    pub table_full: u64,
    /// Retransmissions after a timeout (the others followed a duplicate ACK).
    pub timeouts: u64,
    /// Guest segments the socket took only in part (the guest resends the rest).
    pub short_writes: u64,
    /// Connection attempts a restricted guest made, reset as slirp resets them.
    pub restricted: u64,
    /// Guest segments dropped for arriving after a gap (a duplicate ACK asks for the gap).
    pub out_of_order: u64,
    /// Host connections taken on forwarded ports.
    pub accepted: u64,
    /// Forwarded connections the guest refused (an RST for our SYN).
    pub guest_refused: u64,
    /// Forwarded connections closed at once: the guest had no address of a family to take them.
    pub no_guest_address: u64,
    /// Guest connections that started a guest forward's command (slirp's `guestfwd=…-cmd:`).
    pub commands: u64,
    /// Guest forward connections reset because their command could not start (or too many
    /// ran).
    pub command_failures: u64,
}

pub use crate::nat::Target;
pub(crate) use guest::Deferred;
pub(crate) use host::MAX_FRAMES_PER_READ;

/// What the engine must do after a guest segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentOutcome {
    Handled,
    /// A SYN to a target that cannot be reached: answer with ICMP unreachable.
    Unreachable {
        host: bool,
    },
    /// The connection lives on this other queue pair: the frame goes there.
    HeldElsewhere(u16),
}

/// What a flow's handlers borrow besides the flow for one call: the engine's context, the
/// guest's RX link, and the table's reusable buffers and counters.
struct Io<'i, 'c, L> {
    ctx: &'i mut Ctx<'c>,
    rx: &'i mut L,
    bufs: &'i mut Buffers,
    counters: &'i mut TcpCounters,
}

/// What the table keeps for moving data through sockets, reused by every flow.
#[derive(Debug, Default)]
struct Buffers {
    iovs: sys::IoVecs,
    /// Where bytes in flight are peeked again when the kernel keeps no peek offset.
    scratch: Vec<u8>,
    /// Whether the kernel keeps our peek position (`SO_PEEK_OFF`), once the first socket
    /// told.
    peek_offset_supported: Option<bool>,
}

impl Buffers {
    fn peek_offset(&self) -> bool {
        self.peek_offset_supported == Some(true)
    }
}

/// The table of translated connections.
#[derive(Debug)]
pub struct TcpTable {
    /// The flows; the pending ones owe the guest an ACK or wait for RX buffers.
    flows: FlowTable<Flow>,
    bufs: Buffers,
    isn_state: u64,
    /// Set when a guest ACK or window update made room for host data. An ACK that frees data
    /// lets the peer send, and the kernel runs that transmission inside our discard, so the
    /// socket's events are already waiting (see [`TcpTable::take_socket_events_waiting`]).
    socket_events_waiting: bool,
    /// Guest forwards' commands, started by the connections to them.
    commands: crate::guestfwd::Commands,
    /// [`IDLE_TIMEOUT`] but where the engine's options say otherwise.
    idle_timeout: Duration,
    /// Flows whose ACK waits ([`Flags::ACK_DELAYED`]) until [`TcpTable::send_delayed_acks`];
    /// a slot whose flow went, or whose ACK went with data, is skipped there.
    delayed_acks: Vec<usize>,
    pub counters: TcpCounters,
}

impl TcpTable {
    pub fn new(limit: usize) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        TcpTable {
            flows: FlowTable::new(limit),
            bufs: Buffers::default(),
            isn_state: seed | 1,
            socket_events_waiting: false,
            commands: crate::guestfwd::Commands::default(),
            idle_timeout: IDLE_TIMEOUT,
            delayed_acks: Vec::new(),
            counters: TcpCounters::default(),
        }
    }

    /// How long a connection may go without traffic before it is closed.
    pub fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout = timeout;
    }

    /// Records this table's flows for the other queue pairs' engines.
    pub(crate) fn join(&mut self, pair: &crate::queue_pairs::QueuePair) {
        self.flows.set_listing(pair.listing(&pair.shared().tcp));
    }

    /// The plan's guest forwards, whose commands connections to them start.
    pub fn set_guest_forwards(&mut self, forwards: Vec<netplan::GuestForward>) {
        self.commands = crate::guestfwd::Commands::new(forwards);
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// The open flows, as runtime control lists them.
    pub fn flow_infos(&self, now: Instant, out: &mut Vec<crate::flow::FlowInfo>) {
        for f in self.flows.iter() {
            let state = match (f.state, f.guest_end, f.host_end) {
                (flow::State::Connecting, ..) => "CONNECTING",
                (flow::State::SynSent, ..) => "SYN_SENT",
                (flow::State::SynAckSent, ..) => "SYN_RECEIVED",
                (_, flow::GuestEnd::Open, flow::HostEnd::Open) => "ESTABLISHED",
                (_, flow::GuestEnd::Fin, flow::HostEnd::Open) => "GUEST_CLOSED",
                (_, flow::GuestEnd::Open, _) => "HOST_CLOSED",
                _ => "CLOSING",
            };
            out.push(crate::flow::FlowInfo {
                proto: "tcp",
                guest: f.key.guest,
                remote: Some(f.key.remote),
                state,
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

    /// Flow `slot`, and what its handlers borrow besides it.
    fn flow_io<'i, 'c, L>(
        &'i mut self,
        slot: usize,
        ctx: &'i mut Ctx<'c>,
        rx: &'i mut L,
    ) -> Option<(&'i mut Flow, Io<'i, 'c, L>)> {
        let flow = self.flows.get_mut(slot)?;
        let io = Io {
            ctx,
            rx,
            bufs: &mut self.bufs,
            counters: &mut self.counters,
        };
        Some((flow, io))
    }

    /// Whether any flow has a timer running (the engine keeps its tick going while so).
    pub fn needs_tick(&self) -> bool {
        self.flows.iter().any(|f| f.timer.is_some())
    }

    fn next_isn(&mut self) -> u32 {
        // xorshift64*: unpredictable enough for a private link, and cheap.
        let mut x = self.isn_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.isn_state = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// Handles one guest segment. `target` is consulted only for a new connection. Its
    /// payload may wait in `deferred` (see [`Deferred`]), which this writes first when the
    /// segment is another flow's.
    pub(crate) fn on_segment<'m, F, L>(
        &mut self,
        ctx: &mut Ctx<'_>,
        seg: &Segment,
        frame: &'m F,
        deferred: &mut Deferred<'_, 'm>,
        target: impl FnOnce() -> Target,
        rx: &mut L,
    ) -> SegmentOutcome
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        let key = FlowKey {
            guest: seg.guest,
            remote: seg.remote,
        };
        // A batch's segments mostly follow the flow whose payload waits: no lookup for those.
        let found = match deferred.slot() {
            Some(slot) if self.flows.get(slot).is_some_and(|f| f.key == key) => Some(slot),
            _ => self.flows.find(&key),
        };
        if deferred.slot().is_some() && deferred.slot() != found {
            self.write_deferred(deferred, ctx, rx);
        }
        let Some(slot) = found else {
            if ctx.hand_off
                && let Some(owner) = self.flows.held_elsewhere(&key)
            {
                return SegmentOutcome::HeldElsewhere(owner);
            }
            return self.on_new(ctx, seg, key, target, rx);
        };
        let next = {
            let (flow, mut io) = self
                .flow_io(slot, ctx, rx)
                .expect("indexed slot holds a flow");
            flow.last_activity = io.ctx.now;
            flow_segment(flow, &mut io, seg, frame, deferred)
        };
        if next != Next::Continue {
            // A reset or a retransmission goes with the flow's true state.
            self.write_deferred(deferred, ctx, rx);
        }
        match next {
            Next::Close(how) => self.close(slot, how, ctx, rx),
            Next::Retransmit => {
                self.counters.retransmits += 1;
                self.retransmit(slot, ctx, rx);
                self.mark_pending(slot);
            }
            Next::Continue => {
                // New room for host data only comes with an ACK or a larger window; new data
                // itself comes with an epoll event. Peeking after every segment of an upload
                // would be a wasted system call each time.
                let room = self
                    .flows
                    .get_mut(slot)
                    .is_some_and(|f| f.flags.take(Flags::ROOM));
                if room {
                    self.socket_events_waiting = true;
                    self.push_to_guest(slot, ctx, rx);
                }
                self.mark_pending(slot);
            }
        }
        SegmentOutcome::Handled
    }

    /// Writes the payload waiting in `deferred` to its flow's socket (see [`Deferred`]); a
    /// socket that failed resets the guest's connection, as a failed write always does.
    pub(crate) fn write_deferred<L: RxLink>(
        &mut self,
        deferred: &mut Deferred<'_, '_>,
        ctx: &mut Ctx<'_>,
        rx: &mut L,
    ) {
        let Some(slot) = deferred.slot() else {
            return;
        };
        let Some(flow) = self.flows.get_mut(slot) else {
            deferred.clear();
            return;
        };
        if let Err(e) = write_deferred(flow, ctx, &mut self.counters, deferred) {
            log::debug!("TCP write to {}: {e}", flow.key.remote);
            self.close(slot, Close::ResetGuest, ctx, rx);
        }
    }

    /// Handles readiness of flow `slot`'s socket.
    pub fn on_socket_event<L: RxLink>(
        &mut self,
        slot: usize,
        events: u32,
        ctx: &mut Ctx<'_>,
        rx: &mut L,
    ) {
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        flow.last_activity = ctx.now;
        if flow.state == State::Connecting {
            match sys::take_error(&flow.sock) {
                Ok(None) if events & libc::EPOLLOUT as u32 != 0 => {
                    self.on_connected(slot, ctx, rx);
                }
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    log::debug!("connect to {} failed: {e}", flow.key.remote);
                    if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                        self.counters.refused += 1;
                    }
                    self.close(slot, Close::ResetGuest, ctx, rx);
                }
            }
            return;
        }
        if events & libc::EPOLLERR as u32 != 0 {
            let err = sys::take_error(&flow.sock).ok().flatten();
            log::debug!("TCP {} error: {err:?}", flow.key.remote);
            self.close(slot, Close::ResetGuest, ctx, rx);
            return;
        }
        if events & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
            flow.flags.insert(Flags::PEER_CLOSED);
        }
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
            flow.flags.remove(Flags::DRAINED);
        }
        if events & libc::EPOLLOUT as u32 != 0 && flow.flags.take(Flags::WANT_WRITE) {
            flow.forget_window();
            let interest = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
            let _ = epoll::modify(ctx.epoll, &flow.sock, interest as u32, Token::Tcp(slot));
            // The socket drained: tell the guest its window reopened.
            flow.flags.insert(Flags::ACK_OWED);
            self.mark_pending(slot);
        }
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
            self.push_to_guest(slot, ctx, rx);
        }
    }

    /// Sends what the socket holds beyond what is in flight, while the guest's window and
    /// RX buffers allow.
    fn push_to_guest<L: RxLink>(&mut self, slot: usize, ctx: &mut Ctx<'_>, rx: &mut L) {
        let Some((flow, mut io)) = self.flow_io(slot, ctx, rx) else {
            return;
        };
        if flow.state != State::Established {
            return; // data waits until the handshake completes
        }
        let mut outcome = Push::Idle;
        while flow.host_end == HostEnd::Open {
            let in_flight = flow.data_in_flight();
            let window_left = flow.snd_wnd.saturating_sub(in_flight) as usize;
            if window_left == 0 {
                if flow.timer.is_none() {
                    flow.timer = Some(io.ctx.now + flow.rto);
                }
                break;
            }
            outcome = send_data(flow, &mut io, window_left);
            if outcome != Push::Sent {
                break;
            }
        }
        match outcome {
            Push::Reset => {
                self.close(slot, Close::ResetGuest, ctx, rx);
                return;
            }
            Push::NoBuffers => {
                if let Some(flow) = self.flows.get_mut(slot) {
                    flow.flags.insert(Flags::WAITING_RX);
                }
                self.mark_pending(slot);
            }
            _ => {}
        }
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        if flow.host_end == HostEnd::Eof {
            if send_flags(flow, ctx, rx, flags::FIN | flags::ACK, flow.snd_nxt) {
                flow.host_end = HostEnd::FinSent(flow.snd_nxt);
                flow.snd_nxt = flow.snd_nxt.wrapping_add(1);
                if flow.timer.is_none() {
                    flow.timer = Some(ctx.now + flow.rto);
                }
            } else {
                flow.flags.insert(Flags::WAITING_RX);
                self.mark_pending(slot);
            }
        }
        self.maybe_finished(slot, ctx, rx);
    }

    /// Whether a guest segment in this batch made room for host data (and so likely made the
    /// peer send): a caller that polls the sockets before telling the guest moves that data in
    /// the same notification, and spares itself the wakeup their events would cause. Clears
    /// the flag.
    pub fn take_socket_events_waiting(&mut self) -> bool {
        std::mem::take(&mut self.socket_events_waiting)
    }

    fn mark_pending(&mut self, slot: usize) {
        self.flows.mark_pending(slot);
    }

    /// End of a batch (TX ring drained, or RX buffers arrived): owed ACKs go out and flows that
    /// waited for RX buffers try again.
    pub fn end_batch<L: RxLink>(&mut self, ctx: &mut Ctx<'_>, rx: &mut L) {
        let visiting = self.flows.start_visit();
        for &slot in &visiting {
            let mut short_write = false;
            if let Some(flow) = self.flows.get_mut(slot) {
                short_write = flow.flags.take(Flags::SHORT_WRITE);
                if flow.flags.take(Flags::CORKED) {
                    // Setting TCP_NODELAY (already on) transmits what MSG_MORE held back.
                    let _ = sys::set_nodelay(&flow.sock);
                }
            }
            let resume = self.flows.get_mut(slot).is_some_and(|f| {
                let room = f.flags.take(Flags::ROOM);
                f.flags.take(Flags::WAITING_RX) || room
            });
            if resume {
                self.push_to_guest(slot, ctx, rx);
            }
            let Some(flow) = self.flows.get_mut(slot) else {
                continue;
            };
            if flow.flags.has(Flags::ACK_OWED) {
                if short_write && may_delay_ack(flow, ctx) {
                    flow.flags.insert(Flags::ACK_DELAYED);
                    self.delayed_acks.push(slot);
                    continue;
                }
                self.send_owed_ack(slot, ctx, rx);
            }
        }
        self.flows.end_visit(visiting);
    }

    /// Whether ACKs wait for [`TcpTable::send_delayed_acks`]: the caller runs it once
    /// [`DELAYED_ACK`] has passed.
    pub fn has_delayed_acks(&self) -> bool {
        !self.delayed_acks.is_empty()
    }

    /// Sends the ACKs that waited ([`Flags::ACK_DELAYED`]) and that no answer carried.
    pub fn send_delayed_acks<L: RxLink>(&mut self, ctx: &mut Ctx<'_>, rx: &mut L) {
        // Taken and put back, so that its storage is reused.
        let mut slots = std::mem::take(&mut self.delayed_acks);
        for &slot in &slots {
            let still_owed = self.flows.get_mut(slot).is_some_and(|flow| {
                flow.flags.take(Flags::ACK_DELAYED) && flow.flags.has(Flags::ACK_OWED)
            });
            if still_owed {
                self.send_owed_ack(slot, ctx, rx);
            }
        }
        slots.clear();
        self.delayed_acks = slots;
    }

    /// Sends the ACK flow `slot` owes; without room in the guest's RX ring, it stays owed and
    /// the flow pending for the next end of batch.
    fn send_owed_ack<L: RxLink>(&mut self, slot: usize, ctx: &mut Ctx<'_>, rx: &mut L) {
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        if send_flags(flow, ctx, rx, flags::ACK, flow.snd_nxt) {
            flow.flags.remove(Flags::ACK_OWED);
            flow.flags.remove(Flags::ACK_DELAYED);
        } else {
            self.mark_pending(slot);
        }
    }

    /// Retransmission, zero-window probing, giving up on dead peers, and closing idle flows.
    pub fn on_tick<L: RxLink>(&mut self, ctx: &mut Ctx<'_>, rx: &mut L) {
        self.commands.reap();
        for slot in self.flows.slots() {
            let Some(flow) = self.flows.get_mut(slot) else {
                continue;
            };
            // A connect in progress is the kernel's to time out.
            if flow.state != State::Connecting
                && ctx.now.saturating_duration_since(flow.last_activity) >= self.idle_timeout
            {
                log::debug!("TCP {}: idle, closed", flow.key.remote);
                self.counters.idle_closed += 1;
                self.close(slot, Close::ResetGuest, ctx, rx);
                continue;
            }
            let Some(when) = flow.timer else { continue };
            if when > ctx.now {
                continue;
            }
            if flow.state == State::Connecting {
                continue; // the kernel times out the connect
            }
            flow.retries += 1;
            if flow.retries > MAX_RETRIES {
                log::debug!("TCP {}: guest stopped answering", flow.key.remote);
                self.close(slot, Close::ResetGuest, ctx, rx);
                continue;
            }
            flow.rto = (flow.rto * 2).min(MAX_RTO);
            flow.timer = Some(ctx.now + flow.rto);
            if flow.snd_una == flow.snd_nxt && flow.snd_wnd == 0 && flow.host_end == HostEnd::Open {
                // Zero-window probe: an out-of-window ACK makes the guest restate its window.
                send_flags(flow, ctx, rx, flags::ACK, flow.snd_nxt.wrapping_sub(1));
                continue;
            }
            if flow.snd_una == flow.snd_nxt {
                flow.timer = None;
                flow.retries = 0;
                continue;
            }
            self.counters.retransmits += 1;
            self.counters.timeouts += 1;
            self.retransmit(slot, ctx, rx);
        }
    }

    fn retransmit<L: RxLink>(&mut self, slot: usize, ctx: &mut Ctx<'_>, rx: &mut L) {
        let peek_offset = self.bufs.peek_offset();
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        if flow.state == State::SynSent {
            send_syn(flow, ctx, rx);
            return;
        }
        if flow.state == State::SynAckSent || flow.snd_una == flow.iss {
            send_syn_ack(flow, ctx, rx);
            return;
        }
        flow.rtt.resending(flow.snd_nxt);
        flow.recover = Some(flow.snd_nxt);
        flow.snd_nxt = flow.snd_una;
        flow.flags.remove(Flags::DRAINED);
        // Rewound to our FIN, it goes again at once; rewound to data before it, the data goes
        // again first, and the FIN once that peek reaches the end of stream again.
        if let HostEnd::FinSent(fin) = flow.host_end {
            flow.host_end = if fin == flow.snd_una {
                HostEnd::Eof
            } else {
                HostEnd::Open
            };
        }
        flow.dup_acks = 0;
        if peek_offset {
            let _ = sys::set_peek_offset(&flow.sock, 0);
        }
        self.push_to_guest(slot, ctx, rx);
    }

    fn maybe_finished<L: RxLink>(&mut self, slot: usize, ctx: &mut Ctx<'_>, rx: &mut L) {
        let done = self.flows.get(slot).is_some_and(Flow::finished);
        if done {
            self.close(slot, Close::Done, ctx, rx);
        }
    }

    fn close<L: RxLink>(&mut self, slot: usize, how: Close, ctx: &mut Ctx<'_>, rx: &mut L) {
        let Some(mut flow) = self.flows.remove(slot) else {
            return;
        };
        match how {
            Close::ResetGuest => {
                self.counters.resets_to_guest += 1;
                // Before our SYN-ACK the guest only knows its own numbers: RST|ACK of its SYN.
                let (seq, rst_flags) = if flow.state == State::Connecting {
                    (0, flags::RST | flags::ACK)
                } else {
                    (flow.snd_nxt, flags::RST | flags::ACK)
                };
                send_flags(&mut flow, ctx, rx, rst_flags, seq);
                let _ = sys::set_linger_zero(&flow.sock);
            }
            Close::ResetHost => {
                let _ = sys::set_linger_zero(&flow.sock);
            }
            Close::Refused => {
                self.counters.guest_refused += 1;
                let _ = sys::set_linger_zero(&flow.sock);
            }
            Close::Done => {
                // The guest's FIN may have been the last segment: ACK it before the flow goes,
                // or the guest resends it and gets an RST.
                if flow.flags.has(Flags::ACK_OWED) {
                    let seq = flow.snd_nxt;
                    send_flags(&mut flow, ctx, rx, flags::ACK, seq);
                }
            }
        }
        self.counters.flows_closed += 1;
        // Dropping the socket closes it, which also removes it from the epoll set.
        drop(flow);
    }
}

mod connect;
mod emit;
mod flow;
mod guest;
mod host;
mod rtt;
mod seq;
#[cfg(test)]
mod tests;

use emit::*;
use flow::*;
use guest::*;
use host::*;
use seq::Estimate;
