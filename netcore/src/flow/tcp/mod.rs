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
//!   retransmit. The window we offer is the socket's free send-buffer space. Small segments
//!   are written with `MSG_MORE` and pushed when the batch ends, so a guest without
//!   segmentation offload does not cost the host one loopback packet per 1460 bytes.
//! * **Host to guest.** Data stays in the socket's receive queue until the guest ACKs it. We
//!   `recvmsg(MSG_PEEK)` it straight into guest RX buffers, up to 16 frames per call (reserved
//!   together through [`RxLink::reserve_frames`]); with `SO_PEEK_OFF` the kernel keeps
//!   the peek position at "bytes already sent" (`snd_nxt - snd_una`), and removes bytes with
//!   `MSG_TRUNC` as ACKs arrive, moving the position back accordingly. Retransmission (timeout or
//!   three duplicate ACKs) just resets the peek offset to zero and sends again from `snd_una`.
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
//! engine's epoll; retransmission and probes are driven by the engine's timer tick.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smoltcp::wire::{IpProtocol, TcpPacket};

use super::epoll::{self, Token};
use super::table::{FlowTable, Keyed};
use crate::ip;
use crate::link::{
    FrameOf, Gso, RxBytes, RxCsum, RxFrames, RxLink, RxMeta, RxOffloads, RxSlot, TxFrame,
};
use crate::nat::Ctx;
use crate::sys;

/// The IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
const TCP_HEADER_LEN: usize = 20;
/// SYN-ACK options: MSS (4) + NOP + window scale (3) = 8 bytes.
const SYN_OPTIONS_LEN: usize = 8;
/// The window scale we offer when the guest offers one: windows up to 8 MiB.
const OUR_WSCALE: u8 = 7;
const INITIAL_RTO: Duration = Duration::from_secs(1);
const MAX_RTO: Duration = Duration::from_secs(30);
/// Retransmissions without progress before the connection is reset both ways.
const MAX_RETRIES: u32 = 8;
/// Largest TCP payload per frame toward the guest without segmentation offload.
const DEFAULT_GUEST_MSS: u16 = 536;
/// `Flow::window` when no estimate is kept.
const NO_WINDOW: u64 = u64::MAX;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Host connect() in progress; nothing sent to the guest yet.
    Connecting,
    /// A host connection accepted on a forwarded port: our SYN went to the guest, which has
    /// not answered yet.
    SynSent,
    /// SYN-ACK sent, waiting for the guest's ACK (or data).
    SynAckSent,
    Established,
}

/// Why a flow ended, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Both directions finished.
    Done,
    /// Reset: the guest gets an RST.
    ResetGuest,
    /// The guest reset: the host socket is closed with an RST.
    ResetHost,
    /// The guest refused a forwarded connection: as `ResetHost`, counted apart.
    Refused,
}

#[derive(Debug)]
struct Flow {
    key: FlowKey,
    /// This flow's index in the table (its epoll token).
    slot: usize,
    sock: OwnedFd,
    state: State,
    /// Guest to host: next sequence number expected from the guest (our ACK number).
    rcv_nxt: u32,
    /// The guest's FIN has been passed on (`shutdown(SHUT_WR)`).
    guest_fin: bool,
    /// Host to guest: our initial sequence number (the SYN's).
    iss: u32,
    /// Oldest sequence number the guest has not acknowledged.
    snd_una: u32,
    /// Next sequence number to send.
    snd_nxt: u32,
    /// The host socket reached end of stream: a FIN follows the data.
    host_eof: bool,
    /// Guest data went to the socket with `MSG_MORE` in this batch: the kernel holds a partial
    /// segment until [`TcpTable::end_batch`] pushes it, so consecutive guest segments leave as
    /// one (a guest without segmentation offload writes 1460 bytes at a time).
    corked: bool,
    /// Epoll reported the peer's FIN: reads go on until they find the end of stream, as no
    /// later event would announce it.
    peer_closed: bool,
    /// The last `SIOCINQ` found nothing beyond what is in flight (or the peek after it took
    /// all it found), and no socket event came since: new data would have brought one
    /// (edge-triggered epoll reports every arrival), so pushes skip asking again. Cleared by
    /// socket events and by retransmission.
    drained: bool,
    /// The last peek filled all the room it had: the socket likely holds more, so the next
    /// push sizes its frames by the window alone and spares the `SIOCINQ` (a wrong guess
    /// costs only RX chains popped and given back).
    peeked_full: bool,
    /// Sequence number of our FIN once sent.
    fin_seq: Option<u32>,
    /// The guest's receive window, in bytes, from `snd_una`.
    snd_wnd: u32,
    /// The guest's window scale, if it offered one (then ours is `OUR_WSCALE`).
    wscale: Option<u8>,
    mss: u16,
    /// The largest payload the guest has sent in one segment (its MSS to begin with; up to
    /// 64 KiB with segmentation offload): how the window counts the kernel's per-buffer cost.
    largest_segment: u32,
    dup_acks: u32,
    rto: Duration,
    retries: u32,
    /// When to retransmit or probe, if anything is outstanding.
    timer: Option<Instant>,
    /// The last guest segment or socket event: [`IDLE_TIMEOUT`] after it, the flow goes.
    last_activity: Instant,
    /// An ACK is owed to the guest (sent at the end of the batch).
    ack_owed: bool,
    /// Waiting for the socket to take more data (EPOLLOUT armed).
    want_write: bool,
    /// The send-buffer space we may offer (see [`send_space`]) in the high half and the free
    /// space in the low half, as last measured (one system call) minus what we wrote since:
    /// the real free space can only be larger, so the guest's right window edge stays put
    /// until we measure again, once half of it is used (or the socket drained).
    /// (An atomic only so that the engine stays `Sync`; one thread uses it.)
    window: AtomicU64,
    /// The guest acknowledged data or opened its window: there may be room to send.
    room: bool,
    /// Sending stopped for want of guest RX buffers.
    waiting_rx: bool,
    /// Acknowledged data leaves the socket by a read into scratch space, not `MSG_TRUNC`:
    /// unix stream sockets (forwards from `hostfwd=unix:`) take that flag differently.
    discard_by_reading: bool,
}

impl Keyed for Flow {
    type Key = FlowKey;
    fn key(&self) -> FlowKey {
        self.key
    }
}

impl Flow {
    /// A flow that has sent nothing yet and knows nothing of the guest's side.
    fn new(key: FlowKey, slot: usize, sock: OwnedFd, state: State, iss: u32, now: Instant) -> Flow {
        Flow {
            key,
            slot,
            sock,
            state,
            rcv_nxt: 0,
            guest_fin: false,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            host_eof: false,
            peer_closed: false,
            drained: false,
            peeked_full: false,
            corked: false,
            fin_seq: None,
            snd_wnd: 0,
            wscale: None,
            mss: DEFAULT_GUEST_MSS,
            largest_segment: u32::from(DEFAULT_GUEST_MSS),
            dup_acks: 0,
            rto: INITIAL_RTO,
            retries: 0,
            timer: None,
            last_activity: now,
            ack_owed: false,
            want_write: false,
            window: AtomicU64::new(NO_WINDOW),
            room: false,
            waiting_rx: false,
            discard_by_reading: false,
        }
    }

    /// Takes the MSS and window scale of the guest's SYN or SYN-ACK.
    fn set_guest_options(&mut self, seg: &Segment) {
        self.mss = seg.mss.unwrap_or(DEFAULT_GUEST_MSS).max(64);
        self.largest_segment = u32::from(self.mss);
        self.wscale = seg.wscale.map(|s| s.min(14));
    }

    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Data bytes sent but not acknowledged (what the peek offset counts).
    fn data_in_flight(&self) -> u32 {
        let mut n = self.snd_nxt.wrapping_sub(self.snd_una);
        if self.snd_una == self.iss && n > 0 {
            n -= 1; // our SYN
        }
        if let Some(fin) = self.fin_seq
            && n > 0
            && self.snd_nxt == fin.wrapping_add(1)
        {
            n -= 1; // our FIN
        }
        n
    }

    fn fin_acked(&self) -> bool {
        self.fin_seq
            .is_some_and(|fin| self.snd_una == fin.wrapping_add(1))
    }

    fn window_shift(&self) -> u8 {
        if self.wscale.is_some() { OUR_WSCALE } else { 0 }
    }

    /// The (scaled) window field to advertise, from the estimate when there is one.
    fn window_field(&self) -> u16 {
        let free = match self.window.load(Ordering::Relaxed) {
            NO_WINDOW => {
                let (limit, free) = send_space(self.fd(), self.largest_segment);
                self.keep_window(limit, free);
                free
            }
            packed => packed as u32,
        };
        (free >> self.window_shift()).min(65535) as u16
    }

    /// We wrote `n` bytes to the socket: the estimate shrinks by as much, and is dropped once
    /// half the space is used, to be measured again.
    fn wrote(&self, n: usize) {
        let packed = self.window.load(Ordering::Relaxed);
        if packed == NO_WINDOW {
            return;
        }
        let limit = (packed >> 32) as u32;
        let free = (packed as u32).saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
        if free < limit / 2 {
            self.forget_window();
        } else {
            self.keep_window(limit, free);
        }
    }

    fn keep_window(&self, limit: u32, free: u32) {
        self.window
            .store(u64::from(limit) << 32 | u64::from(free), Ordering::Relaxed);
    }

    /// The socket drained or refused data: measure the window again when next needed.
    fn forget_window(&self) {
        self.window.store(NO_WINDOW, Ordering::Relaxed);
    }
}

/// Counters for the TCP side.
/// A connection with no segment from the guest and no event from its socket for this long is
/// reset and closed, as passt closes idle flows: a guest that never closes its connections must
/// not hold host sockets and flow slots for ever. Two hours, the TCP keepalive default
/// (`tcp_keepalive_time`): a guest that keeps a quiet connection on purpose sends keepalives
/// before then, and those count as traffic.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

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
    /// Retransmissions after a timeout (the others followed three duplicate ACKs).
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

/// What the engine must do after a guest segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentOutcome {
    Handled,
    /// A SYN to a target that cannot be reached: answer with ICMP unreachable.
    Unreachable {
        host: bool,
    },
}

/// The table of translated connections.
#[derive(Debug)]
pub struct TcpTable {
    /// The flows; the pending ones owe the guest an ACK or wait for RX buffers.
    flows: FlowTable<Flow>,
    peek_offset_supported: Option<bool>,
    scratch: Vec<u8>,
    iovs: sys::IoVecs,
    isn_state: u64,
    /// Set when a guest ACK or window update made room for host data. An ACK that frees data
    /// lets the peer send, and the kernel runs that transmission inside our discard, so the
    /// socket's events are already waiting (see [`TcpTable::take_socket_events_waiting`]).
    socket_events_waiting: bool,
    /// Guest forwards' commands, started by the connections to them.
    commands: crate::guestfwd::Commands,
    /// [`IDLE_TIMEOUT`] but where the engine's options say otherwise.
    idle_timeout: Duration,
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
            peek_offset_supported: None,
            scratch: Vec::new(),
            iovs: sys::IoVecs::default(),
            isn_state: seed | 1,
            socket_events_waiting: false,
            commands: crate::guestfwd::Commands::default(),
            idle_timeout: IDLE_TIMEOUT,
            counters: TcpCounters::default(),
        }
    }

    /// How long a connection may go without traffic before it is closed.
    pub fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout = timeout;
    }

    /// The plan's guest forwards, whose commands connections to them start.
    pub fn set_guest_forwards(&mut self, forwards: Vec<netplan::GuestForward>) {
        self.commands = crate::guestfwd::Commands::new(forwards);
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
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

    /// Handles one guest segment. `target` is consulted only for a new connection.
    pub fn on_segment<F, L>(
        &mut self,
        ctx: &mut Ctx<'_>,
        seg: &Segment,
        frame: &F,
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
        let Some(slot) = self.flows.find(&key) else {
            return self.on_new(ctx, seg, key, target, rx);
        };
        let next = {
            let flow = self.flows.get_mut(slot).expect("indexed slot holds a flow");
            flow.last_activity = ctx.now;
            flow_segment(
                flow,
                ctx,
                seg,
                frame,
                &mut self.iovs,
                &mut self.counters,
                rx,
            )
        };
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
                    .is_some_and(|f| std::mem::take(&mut f.room));
                if room {
                    self.socket_events_waiting = true;
                    self.push_to_guest(slot, ctx, rx);
                }
                self.mark_pending(slot);
            }
        }
        SegmentOutcome::Handled
    }

    fn on_new<L: RxLink>(
        &mut self,
        ctx: &mut Ctx<'_>,
        seg: &Segment,
        key: FlowKey,
        target: impl FnOnce() -> Target,
        rx: &mut L,
    ) -> SegmentOutcome {
        if seg.has(flags::RST) {
            return SegmentOutcome::Handled;
        }
        if !seg.has(flags::SYN) || seg.has(flags::ACK) {
            // No such connection: reset, as a TCP would.
            send_reset_for(ctx, seg, rx);
            return SegmentOutcome::Handled;
        }
        if self.flows.is_full() {
            self.counters.table_full += 1;
            send_reset_for(ctx, seg, rx);
            return SegmentOutcome::Handled;
        }
        let (sock, connected, command) = match target() {
            Target::Connect(dest) => match connect(dest) {
                Ok((sock, connected)) => (sock, connected, false),
                Err(ConnectFailure::Unreachable { host }) => {
                    return SegmentOutcome::Unreachable { host };
                }
                Err(failure) => {
                    if failure == ConnectFailure::Refused {
                        self.counters.refused += 1;
                    }
                    send_reset_for(ctx, seg, rx);
                    return SegmentOutcome::Handled;
                }
            },
            Target::Command(index) => match self.commands.start(index) {
                Ok(sock) => (sock, true, true),
                Err(e) => {
                    crate::ratelimit::guest_log!(
                        log::Level::Warn,
                        "guest forward to {}: the command did not start: {e}",
                        key.remote
                    );
                    self.counters.command_failures += 1;
                    send_reset_for(ctx, seg, rx);
                    return SegmentOutcome::Handled;
                }
            },
            Target::Unreachable => return SegmentOutcome::Unreachable { host: false },
            Target::Restricted => {
                self.counters.restricted += 1;
                send_reset_for(ctx, seg, rx);
                return SegmentOutcome::Handled;
            }
        };
        if command {
            self.counters.commands += 1;
        } else {
            self.counters.connects += 1;
        }
        let iss = self.next_isn();
        let slot = self.flows.reserve();
        let mut flow = Flow::new(key, slot, sock, State::Connecting, iss, ctx.now);
        flow.rcv_nxt = seg.seq.wrapping_add(1);
        flow.snd_wnd = u32::from(seg.window);
        flow.set_guest_options(seg);
        let interest = libc::EPOLLOUT | libc::EPOLLET;
        if let Err(e) = epoll::add(ctx.epoll, flow.fd(), interest as u32, Token::Tcp(slot)) {
            crate::ratelimit::guest_log!(log::Level::Warn, "epoll add for {}: {e}", key.remote);
            self.flows.release(slot);
            send_reset_for(ctx, seg, rx);
            return SegmentOutcome::Handled;
        }
        self.flows.insert(slot, flow);
        if connected {
            self.on_connected(slot, ctx, rx);
        }
        SegmentOutcome::Handled
    }

    /// Opens the guest side of a host connection accepted on a forwarded port: a SYN from
    /// `key.remote` to `key.guest`. `unix`: the socket is a unix stream socket, whose data
    /// the guest acknowledged is discarded by reading it. The socket is closed at once (an
    /// RST for a TCP peer) when the table is full or the pair is already in use; false then.
    pub fn on_accepted<L: RxLink>(
        &mut self,
        sock: OwnedFd,
        key: FlowKey,
        unix: bool,
        ctx: &mut Ctx<'_>,
        rx: &mut L,
    ) -> bool {
        if self.flows.is_full() || self.flows.find(&key).is_some() {
            self.counters.table_full += 1;
            let _ = sys::set_linger_zero(sock.as_raw_fd());
            return false;
        }
        let _ = sys::set_nodelay(sock.as_raw_fd());
        self.use_peek_offset(sock.as_raw_fd());
        let slot = self.flows.reserve();
        let iss = self.next_isn();
        let mut flow = Flow::new(key, slot, sock, State::SynSent, iss, ctx.now);
        flow.discard_by_reading = unix;
        // Data or a FIN may come before the guest answers; the handshake's end pushes it.
        let interest = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
        if let Err(e) = epoll::add(ctx.epoll, flow.fd(), interest as u32, Token::Tcp(slot)) {
            crate::ratelimit::guest_log!(
                log::Level::Warn,
                "epoll add for the forward to {}: {e}",
                key.guest
            );
            let _ = sys::set_linger_zero(flow.fd());
            self.flows.release(slot);
            return false;
        }
        self.counters.accepted += 1;
        send_syn(&mut flow, ctx, rx);
        flow.timer = Some(ctx.now + flow.rto);
        self.flows.insert(slot, flow);
        true
    }

    /// Starts peeking at the front of `fd`'s queue, learning on the first socket whether the
    /// kernel supports peek offsets.
    fn use_peek_offset(&mut self, fd: RawFd) {
        if self.peek_offset_supported.is_none() {
            let ok = sys::set_peek_offset(fd, 0).is_ok();
            if !ok {
                log::info!("SO_PEEK_OFF unsupported: peeking past sent data instead");
            }
            self.peek_offset_supported = Some(ok);
        } else if self.peek_offset_supported == Some(true) {
            let _ = sys::set_peek_offset(fd, 0);
        }
    }

    fn on_connected<L: RxLink>(&mut self, slot: usize, ctx: &mut Ctx<'_>, rx: &mut L) {
        let Some(fd) = self.flows.get(slot).map(Flow::fd) else {
            return;
        };
        self.use_peek_offset(fd);
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        flow.state = State::SynAckSent;
        let interest = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
        let _ = epoll::modify(ctx.epoll, flow.fd(), interest as u32, Token::Tcp(slot));
        send_syn_ack(flow, ctx, rx);
        flow.timer = Some(ctx.now + flow.rto);
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
            match sys::take_error(flow.fd()) {
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
            let err = sys::take_error(flow.fd()).ok().flatten();
            log::debug!("TCP {} error: {err:?}", flow.key.remote);
            self.close(slot, Close::ResetGuest, ctx, rx);
            return;
        }
        if events & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
            flow.peer_closed = true;
        }
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
            flow.drained = false;
        }
        if events & libc::EPOLLOUT as u32 != 0 && flow.want_write {
            flow.want_write = false;
            flow.forget_window();
            let interest = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
            let _ = epoll::modify(ctx.epoll, flow.fd(), interest as u32, Token::Tcp(slot));
            // The socket drained: tell the guest its window reopened.
            flow.ack_owed = true;
            self.mark_pending(slot);
        }
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
            self.push_to_guest(slot, ctx, rx);
        }
    }

    /// Sends what the socket holds beyond what is in flight, while the guest's window and
    /// RX buffers allow.
    fn push_to_guest<L: RxLink>(&mut self, slot: usize, ctx: &mut Ctx<'_>, rx: &mut L) {
        let peek_offset = self.peek_offset_supported == Some(true);
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        if flow.state != State::Established && flow.state != State::SynAckSent {
            return;
        }
        if flow.state == State::SynAckSent {
            return; // data waits until the handshake completes
        }
        let mut outcome = Push::Idle;
        while !flow.host_eof {
            let in_flight = flow.data_in_flight();
            let window_left = flow.snd_wnd.saturating_sub(in_flight) as usize;
            if window_left == 0 {
                if flow.timer.is_none() {
                    flow.timer = Some(ctx.now + flow.rto);
                }
                break;
            }
            outcome = send_data(
                flow,
                ctx,
                rx,
                window_left,
                peek_offset,
                &mut self.scratch,
                &mut self.iovs,
            );
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
                    flow.waiting_rx = true;
                }
                self.mark_pending(slot);
            }
            _ => {}
        }
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        if flow.host_eof && flow.fin_seq.is_none() {
            if send_flags(flow, ctx, rx, flags::FIN | flags::ACK, flow.snd_nxt) {
                flow.fin_seq = Some(flow.snd_nxt);
                flow.snd_nxt = flow.snd_nxt.wrapping_add(1);
                if flow.timer.is_none() {
                    flow.timer = Some(ctx.now + flow.rto);
                }
            } else {
                flow.waiting_rx = true;
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
            if let Some(flow) = self.flows.get_mut(slot).filter(|f| f.corked) {
                flow.corked = false;
                // Setting TCP_NODELAY (already on) transmits what MSG_MORE held back.
                let _ = sys::set_nodelay(flow.fd());
            }
            let resume = self.flows.get_mut(slot).is_some_and(|f| {
                let resume = f.room || f.waiting_rx;
                f.room = false;
                f.waiting_rx = false;
                resume
            });
            if resume {
                self.push_to_guest(slot, ctx, rx);
            }
            let Some(flow) = self.flows.get_mut(slot) else {
                continue;
            };
            if flow.ack_owed {
                if send_flags(flow, ctx, rx, flags::ACK, flow.snd_nxt) {
                    flow.ack_owed = false;
                } else {
                    self.mark_pending(slot);
                }
            }
        }
        self.flows.end_visit(visiting);
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
            if flow.snd_una == flow.snd_nxt && flow.snd_wnd == 0 && !flow.host_eof {
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
        let peek_offset = self.peek_offset_supported == Some(true);
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
        flow.snd_nxt = flow.snd_una;
        flow.drained = false;
        if flow.fin_seq.is_some_and(|fin| fin == flow.snd_una) {
            flow.fin_seq = None;
        }
        flow.dup_acks = 0;
        if peek_offset {
            let _ = sys::set_peek_offset(flow.fd(), 0);
        }
        self.push_to_guest(slot, ctx, rx);
    }

    fn maybe_finished<L: RxLink>(&mut self, slot: usize, ctx: &mut Ctx<'_>, rx: &mut L) {
        let done = self
            .flows
            .get(slot)
            .is_some_and(|f| f.guest_fin && f.fin_acked());
        if done {
            self.close(slot, Close::Done, ctx, rx);
        }
    }

    fn close<L: RxLink>(&mut self, slot: usize, how: Close, ctx: &mut Ctx<'_>, rx: &mut L) {
        let Some(flow) = self.flows.remove(slot) else {
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
                send_flags(&flow, ctx, rx, rst_flags, seq);
                let _ = sys::set_linger_zero(flow.fd());
            }
            Close::ResetHost => {
                let _ = sys::set_linger_zero(flow.fd());
            }
            Close::Refused => {
                self.counters.guest_refused += 1;
                let _ = sys::set_linger_zero(flow.fd());
            }
            Close::Done => {
                // The guest's FIN may have been the last segment: ACK it before the flow goes,
                // or the guest resends it and gets an RST.
                if flow.ack_owed {
                    send_flags(&flow, ctx, rx, flags::ACK, flow.snd_nxt);
                }
            }
        }
        self.counters.flows_closed += 1;
        // Dropping the socket closes it, which also removes it from the epoll set.
        drop(flow);
    }
}

/// What the table must do after a guest segment was applied to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    /// Three duplicate ACKs: resend from `snd_una`.
    Retransmit,
    Close(Close),
}

/// Applies a guest segment to an existing flow.
fn flow_segment<F, L>(
    flow: &mut Flow,
    ctx: &mut Ctx<'_>,
    seg: &Segment,
    frame: &F,
    iovs: &mut Vec<libc::iovec>,
    counters: &mut TcpCounters,
    rx: &mut L,
) -> Next
where
    F: TxFrame + ?Sized,
    L: RxLink,
{
    if flow.state == State::SynSent {
        return syn_sent_segment(flow, seg, ctx.now);
    }
    if seg.has(flags::RST) {
        return Next::Close(Close::ResetHost);
    }
    if seg.has(flags::SYN) {
        // A retransmitted SYN: our SYN-ACK was lost, or we are still connecting.
        if flow.state == State::SynAckSent {
            send_syn_ack(flow, ctx, rx);
        }
        return Next::Continue;
    }
    if flow.state == State::Connecting {
        return Next::Continue;
    }
    let fast_retransmit = seg.has(flags::ACK) && on_ack(flow, seg, ctx.now);
    if flow.state == State::SynAckSent {
        if flow.snd_una == flow.iss {
            return Next::Continue; // not yet acked: ignore data until the handshake completes
        }
        flow.state = State::Established;
    }

    // Guest to host payload, in order only.
    let mut offset = 0usize;
    let mut len = seg.payload_len;
    let mut seq = seg.seq;
    let behind = flow.rcv_nxt.wrapping_sub(seq) as i32;
    if behind > 0 {
        // Starts before what we already took (a window probe, a keepalive, a resent segment):
        // it gets an ACK, as any TCP answers one (RFC 9293 3.10.7.4). A guest probing our zero
        // window learns this way that it reopened.
        flow.ack_owed = true;
        // Skip the part we have.
        let skip = (behind as usize).min(len);
        offset += skip;
        len -= skip;
        seq = seq.wrapping_add(skip as u32);
    }
    if len > 0 || seg.has(flags::FIN) {
        if seq != flow.rcv_nxt {
            flow.ack_owed = true; // out of order: a duplicate ACK asks for the gap
            counters.out_of_order += 1;
            return Next::Continue;
        }
        if len > 0 && !flow.guest_fin {
            iovs.clear();
            frame.iovecs(seg.payload_offset + offset, len, iovs);
            flow.largest_segment = flow.largest_segment.max(len as u32);
            let small = len < COALESCE_BELOW;
            let more = if small { libc::MSG_MORE } else { 0 };
            match sys::sendmsg(flow.fd(), iovs, None, libc::MSG_DONTWAIT | more) {
                Ok(n) => {
                    flow.corked |= small;
                    flow.rcv_nxt = flow.rcv_nxt.wrapping_add(n as u32);
                    flow.wrote(n);
                    if n < len {
                        counters.short_writes += 1;
                        log_short_write(flow, n, len);
                        flow.forget_window();
                        want_write(flow, ctx.epoll);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    counters.short_writes += 1;
                    log_short_write(flow, 0, len);
                    flow.forget_window();
                    want_write(flow, ctx.epoll);
                }
                Err(e) => {
                    log::debug!("TCP write to {}: {e}", flow.key.remote);
                    return Next::Close(Close::ResetGuest);
                }
            }
            flow.ack_owed = true;
        }
        let all_taken = flow.rcv_nxt == seg.seq.wrapping_add(seg.payload_len as u32);
        if seg.has(flags::FIN) && all_taken && !flow.guest_fin {
            flow.guest_fin = true;
            flow.rcv_nxt = flow.rcv_nxt.wrapping_add(1);
            let _ = sys::shutdown_write(flow.fd());
            flow.ack_owed = true;
        }
    }
    // The window never lets the guest overfill the socket, so no short write arms EPOLLOUT for
    // us: once the window is below a segment, arm it ourselves, or the guest waits for a window
    // update that never comes.
    let segment = ctx.max_payload(&flow.key.guest.ip(), TCP_HEADER_LEN) as u32;
    if flow.ack_owed && !flow.guest_fin && window_bytes(flow) < segment {
        want_write(flow, ctx.epoll);
    }
    if fast_retransmit {
        Next::Retransmit
    } else {
        Next::Continue
    }
}

/// The guest's answer to the SYN of a forwarded connection. A SYN-ACK for it completes the
/// handshake (our ACK goes at the batch's end, data that waited in the socket after it); an
/// RST for it closes the host connection with an RST, as a refused connect would. Anything
/// else is ignored: the SYN is retransmitted until the guest answers.
fn syn_sent_segment(flow: &mut Flow, seg: &Segment, now: Instant) -> Next {
    let ours = seg.has(flags::ACK) && seg.ack == flow.iss.wrapping_add(1);
    if seg.has(flags::RST) {
        return if ours {
            Next::Close(Close::Refused)
        } else {
            Next::Continue
        };
    }
    if !(ours && seg.has(flags::SYN)) {
        return Next::Continue;
    }
    flow.rcv_nxt = seg.seq.wrapping_add(1);
    flow.set_guest_options(seg);
    on_ack(flow, seg, now);
    flow.state = State::Established;
    flow.ack_owed = true;
    flow.room = true;
    Next::Continue
}

/// Arms EPOLLOUT so we hear when the socket's send buffer drains (to reopen the window).
fn want_write(flow: &mut Flow, epoll: &vmm_sys_util::epoll::Epoll) {
    if !flow.want_write {
        flow.want_write = true;
        let interest = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLOUT | libc::EPOLLET;
        let _ = epoll::modify(epoll, flow.fd(), interest as u32, Token::Tcp(flow.slot));
    }
}

/// Takes the guest's ACK number and window; true on the third duplicate ACK.
fn on_ack(flow: &mut Flow, seg: &Segment, now: Instant) -> bool {
    let shift = if seg.has(flags::SYN) {
        0
    } else {
        flow.wscale.unwrap_or(0)
    };
    let window = u32::from(seg.window) << shift;
    let acked = seg.ack.wrapping_sub(flow.snd_una);
    let outstanding = flow.snd_nxt.wrapping_sub(flow.snd_una);
    if acked > 0 && acked <= outstanding {
        let mut data = acked;
        if flow.snd_una == flow.iss {
            data -= 1; // our SYN
        }
        if flow
            .fin_seq
            .is_some_and(|fin| seg.ack == fin.wrapping_add(1))
        {
            data -= 1; // our FIN
        }
        if data > 0 {
            let _ = if flow.discard_by_reading {
                sys::discard_by_reading(flow.fd(), data as usize)
            } else {
                sys::discard(flow.fd(), data as usize)
            };
        }
        flow.snd_una = seg.ack;
        flow.room = true;
        flow.dup_acks = 0;
        flow.retries = 0;
        flow.rto = INITIAL_RTO;
        flow.timer = if flow.snd_una == flow.snd_nxt {
            None
        } else {
            Some(now + flow.rto)
        };
    } else if acked == 0
        && seg.payload_len == 0
        && outstanding > 0
        && window == flow.snd_wnd
        && !seg.has(flags::FIN)
    {
        flow.dup_acks += 1;
        flow.snd_wnd = window;
        return flow.dup_acks == 3;
    }
    if window > flow.snd_wnd {
        flow.room = true;
    }
    flow.snd_wnd = window;
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Push {
    Idle,
    Sent,
    /// Nothing more in the socket right now.
    Empty,
    NoBuffers,
    Reset,
}

/// Guest segments shorter than this are written with `MSG_MORE`, to leave the socket together
/// at the end of the batch; larger ones go at once, as holding them back only delays the peer.
const COALESCE_BELOW: usize = 16 << 10;

/// The most frames one socket read fills: enough that a 64 KiB-segment guest takes 1 MiB per
/// `recvmsg`, and an MSS-segment guest about 23 KiB.
const MAX_FRAMES_PER_READ: usize = 16;

/// The most iovecs one read gathers, below the kernel's `UIO_MAXIOV` (1024).
const MAX_IOVECS_PER_READ: usize = 1000;

/// Peeks up to `window_left` bytes from the socket into RX frames, reserved together and
/// filled by one `recvmsg`, and sends them as consecutive segments.
fn send_data<L: RxLink>(
    flow: &mut Flow,
    ctx: &mut Ctx<'_>,
    rx: &mut L,
    window_left: usize,
    peek_offset: bool,
    scratch: &mut Vec<u8>,
    iovs: &mut Vec<libc::iovec>,
) -> Push {
    if flow.drained && !flow.peer_closed {
        return Push::Empty;
    }
    // Frames are sized to what the socket holds beyond what is in flight: reserving a burst of
    // 64 KiB frames for a 32-byte answer would walk the whole RX ring for nothing. After a full
    // peek, a bulk sender most likely left more than the window takes.
    let in_flight = flow.data_in_flight() as usize;
    let unread = if flow.peeked_full {
        usize::MAX
    } else {
        sys::queued_for_reading(flow.fd())
            .map_or(usize::MAX, |queued| queued.saturating_sub(in_flight))
    };
    if unread == 0 && !flow.peer_closed {
        flow.drained = true;
        return Push::Empty;
    }
    // With nothing left after the peer's FIN, one read finds the end of stream.
    let wanted_bytes = window_left.min(unread.max(1));
    let header_len = ip::l2_l3_len(&flow.key.guest.ip()) + TCP_HEADER_LEN;
    let offloads = rx.offloads();
    // With segmentation offload one frame carries up to 64 KiB, cut by the guest's stack into
    // MSS-sized pieces only if it ever forwards them.
    let segment = usize::from(flow.mss).min(ctx.max_payload(&flow.key.guest.ip(), TCP_HEADER_LEN));
    let frame_payload = if tso(offloads, &flow.key) {
        MAX_TSO_PAYLOAD
    } else {
        segment
    }
    .min(wanted_bytes);
    let wanted = wanted_bytes
        .div_ceil(frame_payload)
        .clamp(1, MAX_FRAMES_PER_READ);
    let Some(mut frames) = rx.reserve_frames(header_len + frame_payload, wanted) else {
        return Push::NoBuffers;
    };
    iovs.clear();
    if !peek_offset {
        let skip = in_flight;
        if scratch.len() < skip {
            scratch.resize(skip, 0);
        }
        if skip > 0 {
            iovs.push(libc::iovec {
                iov_base: scratch.as_mut_ptr().cast(),
                iov_len: skip,
            });
        }
    }
    let skip_len: usize = iovs.iter().map(|v| v.iov_len).sum();
    // Each frame takes its share of the window; a frame whose iovecs would pass the kernel's
    // limit is left out of this read, or, the first one, carries what its first iovecs hold
    // (a guest that posts buffers of a few bytes each gets small segments, not a reset).
    let mut planned = [0usize; MAX_FRAMES_PER_READ];
    let mut frame_count = 0;
    let mut left = wanted_bytes;
    while frame_count < frames.count().min(MAX_FRAMES_PER_READ) && left > 0 {
        let mut len = left.min(frame_payload);
        let before = iovs.len();
        frames.iovecs(frame_count, header_len, len, iovs);
        if iovs.len() > MAX_IOVECS_PER_READ {
            if frame_count > 0 {
                iovs.truncate(before);
                break;
            }
            iovs.truncate(MAX_IOVECS_PER_READ);
            len = iovs[before..].iter().map(|v| v.iov_len).sum();
            planned[0] = len;
            frame_count = 1;
            break;
        }
        planned[frame_count] = len;
        left -= len;
        frame_count += 1;
    }
    let room: usize = planned[..frame_count].iter().sum();
    flow.peeked_full = false;
    let n = match sys::recvmsg(flow.fd(), iovs, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        // Nothing at all left to peek: the peer closed its side.
        Ok(r) if r.len == 0 => {
            flow.host_eof = true;
            return Push::Empty;
        }
        // Only bytes already in flight (peeking without SO_PEEK_OFF): nothing new yet.
        Ok(r) if r.len <= skip_len => return Push::Empty,
        Ok(r) => r.len - skip_len,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Push::Empty,
        Err(e) => {
            log::debug!("TCP read from {}: {e}", flow.key.remote);
            return Push::Reset;
        }
    };
    // The read filled the frames in order: every one but the last is full.
    let mut lens = [0usize; MAX_FRAMES_PER_READ];
    let mut filled = 0;
    let mut unsent = n;
    while unsent > 0 && filled < frame_count {
        let payload = unsent.min(planned[filled]);
        let (meta, csum) = segment_meta(offloads, flow, header_len, segment, payload);
        if let Some(meta) = meta {
            frames.set_meta(filled, meta);
        }
        let seq = flow.snd_nxt.wrapping_add((n - unsent) as u32);
        let mut frame = FrameOf {
            frames: &mut frames,
            index: filled,
        };
        write_segment(
            &mut frame,
            ctx,
            &Header::of(flow, seq, flags::ACK | flags::PSH),
            payload,
            csum,
        );
        lens[filled] = header_len + payload;
        unsent -= payload;
        filled += 1;
    }
    frames.commit(&lens[..filled]);
    // Everything the socket held beyond what is in flight went out: until its next event (an
    // edge for every arrival, also one after our `SIOCINQ`), another look would find nothing.
    if n == unread {
        flow.drained = true;
    }
    flow.peeked_full = n == room;
    flow.snd_nxt = flow.snd_nxt.wrapping_add(n as u32);
    flow.ack_owed = false;
    if flow.timer.is_none() {
        flow.timer = Some(ctx.now + flow.rto);
    }
    Push::Sent
}

/// How a segment of `payload` bytes toward `flow`'s guest is offloaded: the frame's metadata
/// (none for plain frames) and how much of its checksum we compute.
fn segment_meta(
    offloads: RxOffloads,
    flow: &Flow,
    header_len: usize,
    segment: usize,
    payload: usize,
) -> (Option<RxMeta>, Checksum) {
    if payload > segment && tso(offloads, &flow.key) {
        let meta = RxMeta {
            csum: RxCsum::Partial {
                start: (header_len - TCP_HEADER_LEN) as u16,
                offset: 16,
            },
            gso: Some(Gso {
                ipv6: flow.key.guest.is_ipv6(),
                segment_size: segment as u16,
                header_len: header_len as u16,
            }),
        };
        (Some(meta), Checksum::PseudoOnly)
    } else if offloads.csum {
        let meta = RxMeta {
            csum: RxCsum::Valid,
            gso: None,
        };
        (Some(meta), Checksum::Skip)
    } else {
        (None, Checksum::Full)
    }
}

/// What the kernel charges a TCP send queue for each buffer besides its payload, with some
/// margin: on Linux 6.x writes of 100, 1460, 4096 and 65536 bytes that each became their own
/// buffer cost about 830 bytes more than their payload.
const BUFFER_OVERHEAD: u64 = 1024;

/// The most payload counted per kernel buffer: one large write may become several buffers (the
/// kernel first tops up the last unsent buffer, and bounds a buffer by half the peer's window).
const BUFFER_PAYLOAD: u32 = 16 << 10;

/// The send-buffer space we may offer the guest, and how much of it is free now, in payload
/// bytes, for a guest that sends segments of `segment` bytes.
///
/// The kernel's budget counts memory, not payload: each segment the guest sends is written as
/// it comes and may become a buffer of its own, charged its payload plus [`BUFFER_OVERHEAD`].
/// Offering the guest only the payload that fits means what it sends into the window is what
/// the socket takes: a short write makes the guest resend everything after it.
fn send_space(fd: RawFd, segment: u32) -> (u32, u32) {
    let Ok(memory) = sys::send_memory(fd) else {
        return (0, 0);
    };
    let segment = u64::from(segment.clamp(1, BUFFER_PAYLOAD));
    let payload = |bytes: usize| {
        let bytes = bytes as u64 * segment / (segment + BUFFER_OVERHEAD);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    };
    (
        payload(memory.budget),
        payload(memory.budget.saturating_sub(memory.queued)),
    )
}

/// A write the socket did not take whole: with the window kept within the socket's room this
/// should be rare (the guest resends what follows), so say what the socket had. A guest that
/// ignores the window causes one per segment: rate-limited.
fn log_short_write(flow: &Flow, took: usize, len: usize) {
    crate::ratelimit::guest_log!(
        log::Level::Info,
        "{}: the socket took {took} of {len} bytes; window estimate {:#x}, largest segment \
         {}, memory {:?}",
        flow.key.remote,
        flow.window.load(Ordering::Relaxed),
        flow.largest_segment,
        sys::send_memory(flow.fd()),
    );
}

/// The window we advertise to `flow`'s guest, in bytes.
fn window_bytes(flow: &Flow) -> u32 {
    u32::from(flow.window_field()) << flow.window_shift()
}

/// One TCP header toward the guest.
#[derive(Debug)]
struct Header<'o> {
    key: FlowKey,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &'o [u8],
}

impl Header<'_> {
    /// A header for `flow` with its current ACK number and window.
    fn of(flow: &Flow, seq: u32, tcp_flags: u8) -> Header<'static> {
        let window = if tcp_flags & flags::RST != 0 {
            0
        } else if tcp_flags & flags::SYN != 0 {
            // The window in a SYN is never scaled.
            send_space(flow.fd(), flow.largest_segment).1.min(65535) as u16
        } else {
            flow.window_field()
        };
        Header {
            key: flow.key,
            seq,
            ack: if tcp_flags & flags::ACK != 0 {
                flow.rcv_nxt
            } else {
                0
            },
            flags: tcp_flags,
            window,
            options: &[],
        }
    }

    fn len(&self, key_ip: &IpAddr) -> usize {
        ip::l2_l3_len(key_ip) + TCP_HEADER_LEN + self.options.len()
    }
}

/// Writes Ethernet, IP and TCP headers in front of `payload_len` bytes already in the slot,
/// with checksums.
/// How much of a segment's TCP checksum we compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksum {
    /// All of it, over the payload read back from the slot.
    Full,
    /// None: the frame is marked valid for the guest (`GUEST_CSUM`).
    Skip,
    /// The pseudo-header sum only, as segmentation offload expects (`NEEDS_CSUM`).
    PseudoOnly,
}

/// Whether TCP segments for `key` may be larger than the MTU.
fn tso(offloads: RxOffloads, key: &FlowKey) -> bool {
    if key.guest.is_ipv6() {
        offloads.tso6
    } else {
        offloads.tso4
    }
}

fn write_segment<S: RxBytes>(
    slot: &mut S,
    ctx: &mut Ctx<'_>,
    h: &Header<'_>,
    payload_len: usize,
    csum: Checksum,
) {
    let meta = ctx.meta(h.key.remote.ip(), h.key.guest.ip(), IpProtocol::Tcp);
    let tcp_len = TCP_HEADER_LEN + h.options.len();
    let l4_len = tcp_len + payload_len;
    let mut hdr = [0u8; 14 + 40 + 60];
    let off = ip::write_headers(&mut hdr, &meta, l4_len);
    let tcp = &mut hdr[off..off + tcp_len];
    tcp[0..2].copy_from_slice(&h.key.remote.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&h.key.guest.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&h.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&h.ack.to_be_bytes());
    tcp[12] = ((tcp_len / 4) as u8) << 4;
    tcp[13] = h.flags;
    tcp[14..16].copy_from_slice(&h.window.to_be_bytes());
    tcp[20..].copy_from_slice(h.options);
    let pseudo = ip::pseudo_header_sum(&meta.src, &meta.dst, IpProtocol::Tcp, l4_len);
    let sum = match csum {
        Checksum::Skip => 0,
        Checksum::PseudoOnly => pseudo,
        Checksum::Full => {
            let header_sum = smoltcp::wire::checksum::data(tcp);
            let payload_sum = if payload_len > 0 {
                ip::slot_sum(slot, off + tcp_len, payload_len)
            } else {
                0
            };
            !smoltcp::wire::checksum::combine(&[pseudo, header_sum, payload_sum])
        }
    };
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    slot.write_at(0, &hdr[..off + tcp_len]);
}

/// Sends a segment without payload; false if the guest has no RX buffer for it.
fn send_flags<L: RxLink>(
    flow: &Flow,
    ctx: &mut Ctx<'_>,
    rx: &mut L,
    tcp_flags: u8,
    seq: u32,
) -> bool {
    send_header(ctx, rx, &Header::of(flow, seq, tcp_flags))
}

fn send_header<L: RxLink>(ctx: &mut Ctx<'_>, rx: &mut L, h: &Header<'_>) -> bool {
    let len = h.len(&h.key.guest.ip());
    let Some(mut slot) = rx.reserve(len) else {
        return false;
    };
    write_segment(&mut slot, ctx, h, 0, Checksum::Full);
    slot.commit(len);
    true
}

fn send_syn_ack<L: RxLink>(flow: &mut Flow, ctx: &mut Ctx<'_>, rx: &mut L) {
    let scale = flow.wscale.is_some();
    send_opening(flow, ctx, rx, flags::SYN | flags::ACK, scale);
}

/// The SYN of a forwarded connection, offering window scaling: the guest's SYN-ACK says
/// whether it is used.
fn send_syn<L: RxLink>(flow: &mut Flow, ctx: &mut Ctx<'_>, rx: &mut L) {
    send_opening(flow, ctx, rx, flags::SYN, true);
}

/// Our SYN or SYN-ACK, with our MSS (from the MTU) and, if `scale`, our window scale.
fn send_opening<L: RxLink>(
    flow: &mut Flow,
    ctx: &mut Ctx<'_>,
    rx: &mut L,
    tcp_flags: u8,
    scale: bool,
) {
    let mut options = [0u8; SYN_OPTIONS_LEN];
    let mss = ctx
        .max_payload(&flow.key.guest.ip(), TCP_HEADER_LEN)
        .min(65535) as u16;
    options[0] = 2;
    options[1] = 4;
    options[2..4].copy_from_slice(&mss.to_be_bytes());
    let options_len = if scale {
        options[4] = 1; // NOP
        options[5] = 3;
        options[6] = 3;
        options[7] = OUR_WSCALE;
        8
    } else {
        4
    };
    let mut header = Header::of(flow, flow.iss, tcp_flags);
    header.options = &options[..options_len];
    // If the guest has no buffer the retransmission timer tries again.
    send_header(ctx, rx, &header);
    flow.snd_nxt = flow.iss.wrapping_add(1);
}

/// An RST answering a segment that belongs to no connection (RFC 793 reset generation).
/// Why a connection to a host did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectFailure {
    /// The host said no at once: the guest gets an RST.
    Refused,
    /// No route: the guest gets ICMP unreachable, "host" when the kernel said so.
    Unreachable { host: bool },
    /// No socket: the guest gets an RST.
    NoSocket,
}

/// Starts a non-blocking connection to `dest`: the socket, and whether it is connected
/// already.
fn connect(dest: SocketAddr) -> Result<(OwnedFd, bool), ConnectFailure> {
    let sock = sys::socket(sys::family(&dest.ip()), libc::SOCK_STREAM, 0).map_err(|e| {
        crate::ratelimit::guest_log!(log::Level::Warn, "TCP socket for {dest}: {e}");
        ConnectFailure::NoSocket
    })?;
    let _ = sys::set_nodelay(sock.as_raw_fd());
    match sys::connect(&sock, &dest) {
        Ok(connected) => Ok((sock, connected)),
        Err(e) => Err(match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ConnectFailure::Refused,
            Some(libc::EHOSTUNREACH) => ConnectFailure::Unreachable { host: true },
            _ => ConnectFailure::Unreachable { host: false },
        }),
    }
}

fn send_reset_for<L: RxLink>(ctx: &mut Ctx<'_>, seg: &Segment, rx: &mut L) {
    let key = FlowKey {
        guest: seg.guest,
        remote: seg.remote,
    };
    let mut len = seg.payload_len as u32;
    if seg.has(flags::SYN) {
        len += 1;
    }
    if seg.has(flags::FIN) {
        len += 1;
    }
    let (seq, tcp_flags, rcv_nxt) = if seg.has(flags::ACK) {
        (seg.ack, flags::RST, 0)
    } else {
        (0, flags::RST | flags::ACK, seg.seq.wrapping_add(len))
    };
    send_header(
        ctx,
        rx,
        &Header {
            key,
            seq,
            ack: rcv_nxt,
            flags: tcp_flags,
            window: 0,
            options: &[],
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::PacketMeta;
    use crate::link::MemoryLink;
    use netplan::MacAddr;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use vmm_sys_util::epoll::{Epoll, EpollEvent};

    const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const GW_MAC: MacAddr = MacAddr([0x52, 0x55, 10, 0, 2, 2]);
    const GUEST_ISN: u32 = 1000;

    /// A guest, a TCP table and a real loopback server to translate to.
    struct Rig {
        table: TcpTable,
        epoll: Epoll,
        link: MemoryLink,
        ident: crate::ipv4::Ident,
        now: Instant,
        listener: TcpListener,
        guest: SocketAddr,
        remote: SocketAddr,
    }

    /// A segment the guest received, decoded.
    #[derive(Debug, Clone)]
    struct Seen {
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        options: Vec<u8>,
        payload: Vec<u8>,
    }

    impl Rig {
        fn new() -> Rig {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let remote = listener.local_addr().unwrap();
            Rig {
                table: TcpTable::new(64),
                epoll: Epoll::new().unwrap(),
                link: MemoryLink::new(),
                ident: crate::ipv4::Ident::new(),
                now: Instant::now(),
                listener,
                guest: SocketAddr::from((Ipv4Addr::new(10, 0, 2, 15), 40000)),
                remote,
            }
        }

        fn ctx(&mut self) -> (Ctx<'_>, &mut TcpTable, &mut MemoryLink) {
            (
                Ctx {
                    guest_mac: GUEST_MAC,
                    gateway_mac: GW_MAC,
                    mtu: 1500,
                    epoll: &self.epoll,
                    ident: &mut self.ident,
                    now: self.now,
                },
                &mut self.table,
                &mut self.link,
            )
        }

        /// Passes a guest segment to the table within the current batch (the device ends a
        /// batch once the TX ring is drained).
        fn send_in_batch(
            &mut self,
            seq: u32,
            ack: u32,
            tcp_flags: u8,
            window: u16,
            options: &[u8],
            payload: &[u8],
        ) {
            let frame = guest_frame(
                self.guest,
                self.remote,
                seq,
                ack,
                tcp_flags,
                window,
                options,
                payload,
            );
            let seg = Segment::parse(
                self.guest.ip(),
                self.remote.ip(),
                &frame[34..],
                34,
                frame.len() - 34,
            )
            .unwrap();
            let remote = self.remote;
            let (mut ctx, table, link) = self.ctx();
            let out =
                table.on_segment(&mut ctx, &seg, &frame[..], || Target::Connect(remote), link);
            assert_eq!(out, SegmentOutcome::Handled);
        }

        /// One guest segment as a batch of its own.
        fn send(
            &mut self,
            seq: u32,
            ack: u32,
            tcp_flags: u8,
            window: u16,
            options: &[u8],
            payload: &[u8],
        ) {
            self.send_in_batch(seq, ack, tcp_flags, window, options, payload);
            self.end_batch();
        }

        fn end_batch(&mut self) {
            let (mut ctx, table, link) = self.ctx();
            table.end_batch(&mut ctx, link);
        }

        /// Delivers pending socket events for up to `ms` milliseconds.
        fn poll(&mut self, ms: i32) {
            let mut events = [EpollEvent::default(); 16];
            let n = crate::wait_for_events(&self.epoll, ms, &mut events);
            for ev in &events[..n] {
                let Some(Token::Tcp(slot)) = Token::decode(ev.data()) else {
                    panic!("not a TCP flow's token: {:#x}", ev.data());
                };
                let (mut ctx, table, link) = self.ctx();
                table.on_socket_event(slot, ev.events(), &mut ctx, link);
                table.end_batch(&mut ctx, link);
            }
        }

        fn tick_after(&mut self, d: Duration) {
            self.now += d;
            let (mut ctx, table, link) = self.ctx();
            table.on_tick(&mut ctx, link);
            table.end_batch(&mut ctx, link);
        }

        fn seen(&mut self) -> Vec<Seen> {
            self.link.take().iter().map(|f| decode(f)).collect()
        }

        /// SYN with MSS 1460 and window scale 7, then the SYN-ACK, then the ACK. Returns
        /// the accepted host side and our ISS.
        fn establish(&mut self) -> (TcpStream, u32) {
            let opts = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];
            self.send(GUEST_ISN, 0, flags::SYN, 64240, &opts, &[]);
            let (server, _) = self.listener.accept().unwrap();
            for _ in 0..50 {
                if !self.link.frames.is_empty() {
                    break;
                }
                self.poll(20);
            }
            let seen = self.seen();
            assert_eq!(seen.len(), 1, "{seen:?}");
            let synack = &seen[0];
            assert_eq!(synack.flags, flags::SYN | flags::ACK);
            assert_eq!(synack.ack, GUEST_ISN + 1);
            let iss = synack.seq;
            // Window 1024 << 7 = 128 KiB.
            self.send(
                GUEST_ISN + 1,
                iss.wrapping_add(1),
                flags::ACK,
                1024,
                &[],
                &[],
            );
            assert!(self.seen().is_empty(), "no answer to a bare ACK");
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            (server, iss)
        }
    }

    fn checksum(data: &[u8]) -> u16 {
        !smoltcp::wire::checksum::data(data)
    }

    #[allow(clippy::too_many_arguments)]
    fn guest_frame(
        guest: SocketAddr,
        remote: SocketAddr,
        seq: u32,
        ack: u32,
        tcp_flags: u8,
        window: u16,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let meta = PacketMeta {
            src_mac: GUEST_MAC,
            dst_mac: GW_MAC,
            src: guest.ip(),
            dst: remote.ip(),
            protocol: IpProtocol::Tcp,
            ttl: 64,
            tos: 0,
            ident: 1,
        };
        let tcp_len = 20 + options.len();
        let mut frame = vec![0u8; 34 + tcp_len + payload.len()];
        ip::write_headers(&mut frame, &meta, tcp_len + payload.len());
        let tcp = &mut frame[34..];
        tcp[0..2].copy_from_slice(&guest.port().to_be_bytes());
        tcp[2..4].copy_from_slice(&remote.port().to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = tcp_flags;
        tcp[14..16].copy_from_slice(&window.to_be_bytes());
        tcp[20..tcp_len].copy_from_slice(options);
        tcp[tcp_len..].copy_from_slice(payload);
        frame
    }

    /// Decodes a frame sent to the guest, checking its addresses and checksums.
    fn decode(frame: &[u8]) -> Seen {
        assert_eq!(&frame[0..6], &GUEST_MAC.0);
        assert_eq!(&frame[6..12], &GW_MAC.0);
        assert_eq!(checksum(&frame[14..34]), 0, "IPv4 header checksum");
        let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
        assert_eq!(total + 14, frame.len());
        let tcp = &frame[34..];
        let src = IpAddr::from([frame[26], frame[27], frame[28], frame[29]]);
        let dst = IpAddr::from([frame[30], frame[31], frame[32], frame[33]]);
        let pseudo = ip::pseudo_header_sum(&src, &dst, IpProtocol::Tcp, tcp.len());
        let sum = smoltcp::wire::checksum::combine(&[pseudo, smoltcp::wire::checksum::data(tcp)]);
        assert_eq!(sum, 0xffff, "TCP checksum");
        let hl = usize::from(tcp[12] >> 4) * 4;
        Seen {
            seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
            ack: u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
            flags: tcp[13],
            window: u16::from_be_bytes([tcp[14], tcp[15]]),
            options: tcp[20..hl].to_vec(),
            payload: tcp[hl..].to_vec(),
        }
    }

    /// Polls until the guest has seen `bytes` of payload; returns the segments.
    fn collect_payload(rig: &mut Rig, bytes: usize) -> Vec<Seen> {
        let mut all = Vec::new();
        for _ in 0..100 {
            all.extend(rig.seen());
            if all.iter().map(|s| s.payload.len()).sum::<usize>() >= bytes {
                break;
            }
            rig.poll(20);
        }
        all
    }

    #[test]
    fn handshake_waits_for_connect_and_offers_mss_and_window_scale() {
        let mut rig = Rig::new();
        let opts = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];
        rig.send(GUEST_ISN, 0, flags::SYN, 64240, &opts, &[]);
        let (_server, _) = rig.listener.accept().unwrap();
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen.extend(rig.seen());
            if !seen.is_empty() {
                break;
            }
            rig.poll(20);
        }
        let synack = &seen[0];
        assert_eq!(synack.flags, flags::SYN | flags::ACK);
        assert_eq!(synack.ack, GUEST_ISN + 1);
        assert_eq!(&synack.options, &[2, 4, 0x05, 0xb4, 1, 3, 3, OUR_WSCALE]);
        // A retransmitted SYN gets the same SYN-ACK again.
        rig.send(GUEST_ISN, 0, flags::SYN, 64240, &opts, &[]);
        let again = rig.seen();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].seq, synack.seq);
    }

    #[test]
    fn refused_connect_is_reset() {
        let mut rig = Rig::new();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        rig.remote = closed.local_addr().unwrap();
        drop(closed);
        rig.send(GUEST_ISN, 0, flags::SYN, 64240, &[], &[]);
        let mut seen = rig.seen();
        for _ in 0..50 {
            if !seen.is_empty() {
                break;
            }
            rig.poll(20);
            seen.extend(rig.seen());
        }
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].flags, flags::RST | flags::ACK);
        assert_eq!(seen[0].ack, GUEST_ISN + 1);
        assert!(rig.table.is_empty());
        assert_eq!(rig.table.counters.refused, 1);
    }

    #[test]
    fn guest_data_reaches_the_socket_and_is_acked_for_what_it_took() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        rig.send(
            GUEST_ISN + 1,
            iss + 1,
            flags::ACK | flags::PSH,
            1024,
            &[],
            b"hello",
        );
        let acks = rig.seen();
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].ack, GUEST_ISN + 1 + 5);
        assert!(acks[0].window > 0);
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");

        // Out of order (a gap): nothing written, a duplicate ACK asks for the gap.
        rig.send(GUEST_ISN + 1 + 10, iss + 1, flags::ACK, 1024, &[], b"later");
        let dup = rig.seen();
        assert_eq!(dup[0].ack, GUEST_ISN + 6);
        // A retransmission overlapping what we took: only the new part is written.
        rig.send(
            GUEST_ISN + 1 + 3,
            iss + 1,
            flags::ACK,
            1024,
            &[],
            b"loworld",
        );
        assert_eq!(rig.seen()[0].ack, GUEST_ISN + 6 + 5);
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"world");
    }

    /// What the guest writes is taken off the window we offer until we measure the socket
    /// again: the right edge of the window stays put, with no system call per segment.
    #[test]
    fn the_right_window_edge_holds_while_the_guest_writes() {
        let mut rig = Rig::new();
        let (_server, iss) = rig.establish();
        let chunk = [7u8; 1280]; // ten units of the window scale (128 bytes)
        let mut edges = Vec::new();
        for k in 0..3u32 {
            rig.send(
                GUEST_ISN + 1 + k * 1280,
                iss + 1,
                flags::ACK,
                1024,
                &[],
                &chunk,
            );
            let ack = rig.seen().pop().expect("an ACK");
            assert_eq!(ack.ack, GUEST_ISN + 1 + (k + 1) * 1280);
            assert!(ack.window > 0);
            edges.push(ack.ack + (u32::from(ack.window) << OUR_WSCALE));
        }
        assert!(
            edges.windows(2).all(|w| w[0] == w[1]),
            "right edges moved: {edges:?}"
        );
    }

    /// The window offered for MSS-sized segments is taken in full by the socket even when every
    /// segment stays a kernel buffer of its own (as segments in flight on a real path do;
    /// `MSG_EOR` forces it here): no short write, which would make the guest resend the rest.
    #[test]
    fn the_offered_window_fits_the_send_buffer_with_one_buffer_per_segment() {
        const SEGMENT: u32 = 1460;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_peer, _) = listener.accept().unwrap(); // reads nothing: our queue fills
        let (limit, free) = send_space(client.as_raw_fd(), SEGMENT);
        assert!(free > 0 && free <= limit, "free {free} limit {limit}");
        let data = [0x5au8; SEGMENT as usize];
        let iov = [libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        }];
        let segments = free as usize / data.len();
        for k in 0..segments {
            let sent = sys::sendmsg(
                client.as_raw_fd(),
                &iov,
                None,
                libc::MSG_DONTWAIT | libc::MSG_EOR,
            );
            assert!(
                matches!(sent, Ok(n) if n == data.len()),
                "segment {k} of {segments} (window {free} bytes): {sent:?}"
            );
        }
        let memory = sys::send_memory(client.as_raw_fd()).unwrap();
        assert!(memory.queued > 0, "{memory:?}");
    }

    #[test]
    fn host_data_stays_in_the_socket_until_acked_and_is_retransmitted() {
        host_data_retransmission(Rig::new());
    }

    #[test]
    fn retransmission_without_peek_offset_support() {
        let mut rig = Rig::new();
        rig.table.peek_offset_supported = Some(false);
        host_data_retransmission(rig);
    }

    fn host_data_retransmission(mut rig: Rig) {
        let (mut server, iss) = rig.establish();
        let data: Vec<u8> = (0..4000u32).map(|i| (i % 253) as u8).collect();
        server.write_all(&data).unwrap();
        let segs = collect_payload(&mut rig, data.len());
        let got: Vec<u8> = segs.iter().flat_map(|s| s.payload.clone()).collect();
        assert!(got == data, "received {} bytes", got.len());
        assert!(segs.iter().all(|s| s.payload.len() <= 1460));
        assert_eq!(segs[0].seq, iss + 1);

        // The guest acknowledges the first segment only, then loses the rest: after the
        // retransmission timeout everything from the first unacked byte comes again.
        rig.send(GUEST_ISN + 1, iss + 1 + 1460, flags::ACK, 1024, &[], &[]);
        assert!(rig.seen().is_empty());
        rig.tick_after(Duration::from_millis(1500));
        let again: Vec<u8> = rig.seen().iter().flat_map(|s| s.payload.clone()).collect();
        assert!(again == data[1460..], "retransmitted {} bytes", again.len());
        assert_eq!(rig.table.counters.retransmits, 1);

        // Three duplicate ACKs: fast retransmit from the same point.
        for _ in 0..3 {
            rig.send(GUEST_ISN + 1, iss + 1 + 1460, flags::ACK, 1024, &[], &[]);
        }
        let fast: Vec<Seen> = rig.seen();
        assert_eq!(fast[0].seq, iss + 1 + 1460);
        assert_eq!(rig.table.counters.retransmits, 2);

        // All acknowledged: the socket is empty, nothing more is sent on timeout.
        rig.send(GUEST_ISN + 1, iss + 1 + 4000, flags::ACK, 1024, &[], &[]);
        rig.tick_after(Duration::from_secs(5));
        assert!(rig.seen().is_empty());
    }

    #[test]
    fn small_guest_segments_of_one_batch_leave_the_socket_together_at_its_end() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 247) as u8).collect();
        for (i, part) in data.chunks(1000).enumerate() {
            let seq = GUEST_ISN + 1 + (i * 1000) as u32;
            rig.send_in_batch(seq, iss + 1, flags::ACK, 1024, &[], part);
        }
        // Held back with MSG_MORE while the batch lasts...
        server.set_nonblocking(true).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = vec![0u8; 4000];
        let early = server.read(&mut buf);
        assert!(
            matches!(&early, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{early:?}"
        );
        // ...and sent when it ends, with one ACK for all three.
        rig.end_batch();
        server.set_nonblocking(false).unwrap();
        let mut got = vec![0u8; data.len()];
        server.read_exact(&mut got).unwrap();
        assert!(got == data);
        let acks = rig.seen();
        assert_eq!(acks.len(), 1, "{acks:?}");
        assert_eq!(acks[0].ack, GUEST_ISN + 1 + 3000);
    }

    #[test]
    fn one_socket_read_fills_many_segments() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 239) as u8).collect();
        server.write_all(&data).unwrap();
        let segs = collect_payload(&mut rig, data.len());
        let got: Vec<u8> = segs.iter().flat_map(|s| s.payload.clone()).collect();
        assert!(got == data, "received {} bytes", got.len());
        let mut seq = iss + 1;
        for seg in &segs {
            assert_eq!(seg.seq, seq, "segments follow each other");
            seq += seg.payload.len() as u32;
        }
        // Every segment but the last is full: the reads filled their frames in order.
        let (last, full) = segs.split_last().unwrap();
        assert!(full.iter().all(|s| s.payload.len() == 1460));
        assert!(last.payload.len() <= 1460);
        // 28 segments at 16 per read: two reads, or three if the data arrived in two parts.
        assert!(
            rig.link.frame_reservations.len() <= 3,
            "{:?} reservations for {} segments",
            rig.link.frame_reservations,
            segs.len()
        );
    }

    /// Issue 19, defect 2: a guest whose buffers come in one-byte pieces made the first frame
    /// of a read need more iovecs than the kernel takes, and the connection was reset. It now
    /// gets smaller segments.
    #[test]
    fn buffers_of_tiny_pieces_get_small_segments_not_a_reset() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        rig.link.iovec_piece = Some(1);
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 241) as u8).collect();
        server.write_all(&data).unwrap();
        let segs = collect_payload(&mut rig, data.len());
        assert!(segs.iter().all(|s| s.flags & flags::RST == 0), "{segs:?}");
        assert!(segs.iter().all(|s| s.payload.len() <= MAX_IOVECS_PER_READ));
        assert_eq!(segs[0].seq, iss + 1);
        let got: Vec<u8> = segs.iter().flat_map(|s| s.payload.clone()).collect();
        assert!(got == data, "received {} bytes", got.len());
    }

    #[test]
    fn a_small_answer_reserves_one_frame_of_its_size() {
        let mut rig = Rig::new();
        let (mut server, _) = rig.establish();
        server.write_all(&[7u8; 32]).unwrap();
        let segs = collect_payload(&mut rig, 32);
        assert_eq!(segs.len(), 1);
        // Not sixteen MSS-sized frames for 32 bytes; and no read at all once they are sent.
        assert_eq!(rig.link.frame_reservations, [(54 + 32, 1)]);
    }

    #[test]
    fn a_read_takes_only_as_many_segments_as_the_guest_has_buffers_for() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        rig.link.buffers_left = Some(5);
        server.write_all(&data).unwrap();
        rig.poll(200);
        let first = rig.seen();
        assert_eq!(first.len(), 5, "{first:?}");
        assert!(first.iter().all(|s| s.payload.len() == 1460));
        // Buffers come back: the rest follows on from the fifth segment, nothing lost or
        // repeated.
        rig.link.buffers_left = None;
        rig.end_batch();
        let rest = collect_payload(&mut rig, data.len() - 5 * 1460);
        assert_eq!(rest[0].seq, iss + 1 + 5 * 1460);
        let got: Vec<u8> = first
            .iter()
            .chain(&rest)
            .flat_map(|s| s.payload.clone())
            .collect();
        assert!(got == data, "received {} bytes", got.len());
    }

    #[test]
    fn segmentation_offload_sends_large_segments_with_partial_checksums() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        rig.link.offloads = RxOffloads {
            csum: true,
            tso4: true,
            tso6: true,
        };
        let data: Vec<u8> = (0..60_000u32).map(|i| (i % 241) as u8).collect();
        server.write_all(&data).unwrap();
        let mut frames = Vec::new();
        let mut metas = Vec::new();
        for _ in 0..50 {
            rig.poll(20);
            metas.append(&mut rig.link.metas);
            frames.append(&mut rig.link.frames);
            let got: usize = frames.iter().map(|f| f.len() - 54).sum();
            if got >= data.len() {
                break;
            }
        }
        let payload: Vec<u8> = frames.iter().flat_map(|f| f[54..].to_vec()).collect();
        assert!(payload == data, "received {} bytes", payload.len());
        // Window 128 KiB: the whole burst fits in one or two frames, not 42 MSS-sized ones.
        assert!(frames.len() <= 2, "{} frames", frames.len());
        let big = frames
            .iter()
            .position(|f| f.len() - 54 > 1460)
            .expect("a large segment");
        assert_eq!(
            metas[big].gso,
            Some(Gso {
                ipv6: false,
                segment_size: 1460,
                header_len: 54,
            })
        );
        assert_eq!(
            metas[big].csum,
            RxCsum::Partial {
                start: 34,
                offset: 16
            }
        );
        // The checksum field holds the pseudo-header sum, which the guest completes.
        let f = &frames[big];
        let src = IpAddr::from([f[26], f[27], f[28], f[29]]);
        let dst = IpAddr::from([f[30], f[31], f[32], f[33]]);
        let pseudo = ip::pseudo_header_sum(&src, &dst, IpProtocol::Tcp, f.len() - 34);
        assert_eq!(u16::from_be_bytes([f[50], f[51]]), pseudo);
        assert_eq!(u32::from_be_bytes(f[38..42].try_into().unwrap()), iss + 1);
    }

    /// A frame in ordinary memory that counts the bytes the engine copies out of it.
    struct CountingFrame<'a> {
        bytes: &'a [u8],
        read: std::cell::Cell<usize>,
    }

    impl TxFrame for CountingFrame<'_> {
        fn len(&self) -> usize {
            self.bytes.len()
        }

        fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
            let n = self.bytes.read_at(offset, buf);
            self.read.set(self.read.get() + n);
            n
        }

        fn iovecs(&self, offset: usize, len: usize, out: &mut Vec<libc::iovec>) {
            self.bytes.iovecs(offset, len, out);
        }
    }

    /// With the guest's checksum offload, TCP payload is never copied by us either way: guest
    /// payload reaches the socket through iovecs into the frame, and host payload is peeked
    /// into the guest's buffers with nothing read back.
    #[test]
    fn no_userspace_copy_of_payload_with_checksum_offload() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        rig.link.offloads = RxOffloads {
            csum: true,
            tso4: true,
            tso6: true,
        };
        let payload = vec![0x5au8; 30_000];
        let frame = guest_frame(
            rig.guest,
            rig.remote,
            GUEST_ISN + 1,
            iss + 1,
            flags::ACK | flags::PSH,
            1024,
            &[],
            &payload,
        );
        let counting = CountingFrame {
            bytes: &frame,
            read: std::cell::Cell::new(0),
        };
        // As the engine does: it copies a bounded header prefix for parsing, not the payload.
        let mut prefix = [0u8; 134];
        let n = counting.read_at(0, &mut prefix);
        let seg = Segment::parse(
            rig.guest.ip(),
            rig.remote.ip(),
            &prefix[34..n],
            34,
            frame.len() - 34,
        )
        .unwrap();
        let remote = rig.remote;
        let (mut ctx, table, link) = rig.ctx();
        table.on_segment(&mut ctx, &seg, &counting, || Target::Connect(remote), link);
        table.end_batch(&mut ctx, link);
        assert_eq!(
            counting.read.get(),
            134,
            "only the header prefix was copied"
        );
        let mut got = vec![0u8; payload.len()];
        server.read_exact(&mut got).unwrap();
        assert!(got == payload);

        server.write_all(&payload).unwrap();
        let mut received = Vec::new();
        for _ in 0..50 {
            rig.poll(20);
            received.extend(rig.link.take().iter().flat_map(|f| f[54..].to_vec()));
            if received.len() >= payload.len() {
                break;
            }
        }
        assert!(received == payload, "received {} bytes", received.len());
        assert_eq!(
            rig.link.bytes_read_back, 0,
            "payload read back from guest buffers"
        );
    }

    #[test]
    fn checksum_offload_alone_marks_segments_valid() {
        let mut rig = Rig::new();
        let (mut server, _iss) = rig.establish();
        rig.link.offloads.csum = true;
        server.write_all(&[5u8; 3000]).unwrap();
        let mut metas = Vec::new();
        let mut frames = Vec::new();
        for _ in 0..50 {
            rig.poll(20);
            metas.append(&mut rig.link.metas);
            frames.append(&mut rig.link.frames);
            if frames.iter().map(|f| f.len() - 54).sum::<usize>() >= 3000 {
                break;
            }
        }
        assert!(frames.iter().all(|f| f.len() - 54 <= 1460));
        assert!(
            metas
                .iter()
                .all(|m| m.csum == RxCsum::Valid && m.gso.is_none())
        );
        assert!(
            frames.iter().all(|f| f[50..52] == [0, 0]),
            "checksum left out"
        );
    }

    #[test]
    fn closed_window_stops_data_and_reopening_resumes_it() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        rig.send(GUEST_ISN + 1, iss + 1, flags::ACK, 0, &[], &[]);
        server.write_all(&[7u8; 3000]).unwrap();
        rig.poll(200);
        assert!(rig.seen().is_empty(), "data sent into a zero window");
        // The probe: an ACK one below snd_nxt so that the guest restates its window.
        rig.tick_after(Duration::from_millis(1500));
        let probe = rig.seen();
        assert_eq!(probe.len(), 1);
        assert_eq!(probe[0].seq, iss);
        assert!(probe[0].payload.is_empty());
        rig.send(GUEST_ISN + 1, iss + 1, flags::ACK, 1024, &[], &[]);
        let segs = collect_payload(&mut rig, 3000);
        assert_eq!(segs.iter().map(|s| s.payload.len()).sum::<usize>(), 3000);
    }

    /// Log lines of this process, for tests that count what a guest makes us log.
    static LOG_LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    struct CaptureLog;

    impl log::Log for CaptureLog {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }

        fn log(&self, record: &log::Record<'_>) {
            let line = record.args().to_string();
            LOG_LINES.lock().unwrap().push(line);
        }

        fn flush(&self) {}
    }

    static CAPTURE_LOG: CaptureLog = CaptureLog;

    /// Issue 19, defect 8: a guest that writes past the window (the socket full) made one
    /// INFO line per segment. Now the lines stay within the rate limit's burst.
    #[test]
    fn a_guest_ignoring_the_window_floods_no_log() {
        if log::set_logger(&CAPTURE_LOG).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
        let mut rig = Rig::new();
        let (_server, iss) = rig.establish();
        let marker = format!("{}: the socket took", rig.remote);
        let mut seq = GUEST_ISN + 1;
        let payload = [0x55u8; 1400];
        // Until the socket has filled often enough: how soon depends on the host's buffer
        // sizes and their autotuning (47 times in 3000 segments here, once none at all).
        let enough = 4 * u64::from(crate::ratelimit::BURST);
        for _ in 0..100_000 {
            if rig.table.counters.short_writes >= enough {
                break;
            }
            rig.send(seq, iss + 1, flags::ACK, 1024, &[], &payload);
            // Whatever the window says, the guest sends on from what we acknowledged.
            if let Some(ack) = rig
                .seen()
                .iter()
                .map(|s| s.ack)
                .max_by_key(|a| a.wrapping_sub(seq))
            {
                seq = ack;
            }
        }
        let short_writes = rig.table.counters.short_writes;
        assert!(
            short_writes >= enough,
            "the socket filled: {short_writes} short writes"
        );
        let lines = LOG_LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&marker))
            .count();
        assert!(
            lines <= crate::ratelimit::BURST as usize + 1,
            "{lines} lines for {short_writes} short writes"
        );
        assert!(lines > 0, "the first ones are logged");
    }

    #[test]
    fn window_limits_bytes_in_flight() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        // Window 16 << 7 = 2048 bytes.
        rig.send(GUEST_ISN + 1, iss + 1, flags::ACK, 16, &[], &[]);
        server.write_all(&[1u8; 6000]).unwrap();
        let segs = collect_payload(&mut rig, 6000);
        assert_eq!(segs.iter().map(|s| s.payload.len()).sum::<usize>(), 2048);
    }

    #[test]
    fn guest_reset_closes_the_host_socket() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        rig.send(GUEST_ISN + 1, iss + 1, flags::RST, 0, &[], &[]);
        assert!(rig.table.is_empty());
        let mut buf = [0u8; 1];
        let r = server.read(&mut buf);
        assert!(matches!(r, Ok(0)) || r.is_err(), "{r:?}");
    }

    #[test]
    fn host_reset_resets_the_guest() {
        let mut rig = Rig::new();
        let (server, _iss) = rig.establish();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&server);
        sys::set_linger_zero(raw).unwrap();
        drop(server);
        let mut seen = Vec::new();
        for _ in 0..50 {
            rig.poll(20);
            seen.extend(rig.seen());
            if !seen.is_empty() {
                break;
            }
        }
        assert!(seen.iter().any(|s| s.flags & flags::RST != 0), "{seen:?}");
        assert!(rig.table.is_empty());
    }

    #[test]
    fn half_close_both_ways_then_the_flow_is_gone() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        // The guest closes its side: the server reads EOF but can still send.
        rig.send(
            GUEST_ISN + 1,
            iss + 1,
            flags::ACK | flags::FIN,
            1024,
            &[],
            b"bye",
        );
        let ack = rig.seen();
        assert_eq!(ack[0].ack, GUEST_ISN + 1 + 3 + 1);
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye");
        server.write_all(b"still here").unwrap();
        server.shutdown(std::net::Shutdown::Write).unwrap();
        let mut seen = Vec::new();
        for _ in 0..50 {
            rig.poll(20);
            seen.extend(rig.seen());
            if seen.iter().any(|s| s.flags & flags::FIN != 0) {
                break;
            }
        }
        let payload: Vec<u8> = seen.iter().flat_map(|s| s.payload.clone()).collect();
        assert_eq!(payload, b"still here");
        let fin = seen.iter().find(|s| s.flags & flags::FIN != 0).unwrap();
        assert_eq!(fin.seq, iss + 1 + 10);
        assert_eq!(rig.table.len(), 1);
        rig.send(GUEST_ISN + 5, iss + 1 + 10 + 1, flags::ACK, 1024, &[], &[]);
        assert!(rig.table.is_empty(), "flow kept after both FINs were acked");
    }

    #[test]
    fn a_guest_fin_after_ours_is_acked_before_the_flow_goes() {
        let mut rig = Rig::new();
        let (server, iss) = rig.establish();
        // The server closes first: our FIN goes to the guest.
        server.shutdown(std::net::Shutdown::Write).unwrap();
        let mut seen = Vec::new();
        for _ in 0..50 {
            rig.poll(20);
            seen.extend(rig.seen());
            if seen.iter().any(|s| s.flags & flags::FIN != 0) {
                break;
            }
        }
        let fin = seen.iter().find(|s| s.flags & flags::FIN != 0).unwrap();
        assert_eq!(fin.seq, iss + 1);
        // The guest acknowledges it and closes its side in the same segment.
        rig.send(
            GUEST_ISN + 1,
            iss + 2,
            flags::ACK | flags::FIN,
            1024,
            &[],
            &[],
        );
        let ack = rig.seen();
        assert_eq!(ack.len(), 1, "the guest's FIN went unacknowledged: {ack:?}");
        assert_eq!(ack[0].flags, flags::ACK);
        assert_eq!((ack[0].seq, ack[0].ack), (iss + 2, GUEST_ISN + 2));
        assert!(rig.table.is_empty(), "flow kept after both FINs were acked");
    }

    #[test]
    fn a_window_probe_from_the_guest_is_answered() {
        let mut rig = Rig::new();
        let (_server, iss) = rig.establish();
        // Linux probes a zero window with an empty segment one below the next sequence number.
        rig.send(GUEST_ISN, iss + 1, flags::ACK, 1024, &[], &[]);
        let ack = rig.seen();
        assert_eq!(ack.len(), 1, "the probe went unanswered: {ack:?}");
        assert_eq!((ack[0].flags, ack[0].ack), (flags::ACK, GUEST_ISN + 1));
        assert!(ack[0].window > 0);
    }

    #[test]
    fn a_window_below_one_segment_is_reopened_when_the_socket_drains() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        // The server does not read: send what the window allows until it is below a segment.
        let chunk = [5u8; 1400];
        let mut seq = GUEST_ISN + 1;
        let mut sent = 0usize;
        loop {
            rig.send(seq, iss + 1, flags::ACK, 1024, &[], &chunk);
            let ack = rig.seen().pop().expect("an ACK for the data");
            seq = ack.ack;
            sent += chunk.len();
            if (u32::from(ack.window) << 7) < 1460 {
                break;
            }
            assert!(sent < 64 << 20, "the window never closed");
        }
        // The server drains the socket: the guest must hear that the window reopened.
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while got < sent {
            got += server.read(&mut buf).unwrap();
        }
        let mut update = None;
        for _ in 0..50 {
            rig.poll(20);
            if let Some(s) = rig.seen().into_iter().last() {
                update = Some(s);
                break;
            }
        }
        let update = update.expect("no window update after the socket drained");
        assert!(u32::from(update.window) << 7 >= 1460, "{update:?}");
    }

    #[test]
    fn a_guest_that_never_acks_is_reset_eventually() {
        let mut rig = Rig::new();
        let (mut server, _iss) = rig.establish();
        server.write_all(b"anyone there?").unwrap();
        collect_payload(&mut rig, 13);
        let mut reset = false;
        for _ in 0..=MAX_RETRIES + 1 {
            rig.tick_after(MAX_RTO);
            reset |= rig.seen().iter().any(|s| s.flags & flags::RST != 0);
        }
        assert!(reset);
        assert!(rig.table.is_empty());
    }

    /// An established connection with no traffic either way for the idle timeout is reset
    /// and its socket closed; traffic either way keeps it.
    #[test]
    fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let mut rig = Rig::new();
        let (mut server, iss) = rig.establish();
        rig.tick_after(IDLE_TIMEOUT - Duration::from_secs(1));
        assert_eq!(rig.table.len(), 1, "not idle long enough");
        // Guest data: activity.
        rig.send(
            GUEST_ISN + 1,
            iss.wrapping_add(1),
            flags::ACK,
            1024,
            &[],
            b"hi",
        );
        rig.tick_after(Duration::from_secs(2));
        assert_eq!(
            rig.table.len(),
            1,
            "the guest's segment counted as activity"
        );
        rig.seen();
        rig.tick_after(IDLE_TIMEOUT);
        assert!(rig.table.is_empty());
        assert!(
            rig.seen().iter().any(|s| s.flags & flags::RST != 0),
            "the guest is reset"
        );
        assert_eq!(rig.table.counters.idle_closed, 1);
        let mut buf = [0u8; 8];
        let mut got = Vec::new();
        loop {
            match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(got, b"hi", "then the host side ends");
    }

    #[test]
    fn segments_for_unknown_connections_are_reset() {
        let mut rig = Rig::new();
        rig.send(5000, 77, flags::ACK, 1024, &[], b"stray");
        let seen = rig.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].flags, flags::RST);
        assert_eq!(seen[0].seq, 77);
        assert!(rig.table.is_empty());
    }

    #[test]
    fn table_limit_refuses_new_connections() {
        let mut rig = Rig::new();
        rig.table = TcpTable::new(1);
        rig.establish();
        rig.guest = SocketAddr::from((Ipv4Addr::new(10, 0, 2, 15), 40001));
        rig.send(GUEST_ISN, 0, flags::SYN, 64240, &[], &[]);
        let seen = rig.seen();
        assert_eq!(seen[0].flags, flags::RST | flags::ACK);
        assert_eq!(rig.table.counters.table_full, 1);
    }

    /// A host client of a forwarded port, its connection handed to the table as the backend
    /// accepts it (to the guest at `rig.guest`, from `rig.remote`). Returns the client and
    /// the SYN the guest got.
    fn forwarded(rig: &mut Rig) -> (TcpStream, Seen) {
        let client = TcpStream::connect(rig.remote).unwrap();
        let (accepted, _) = rig.listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let key = FlowKey {
            guest: rig.guest,
            remote: rig.remote,
        };
        let (mut ctx, table, link) = rig.ctx();
        assert!(table.on_accepted(OwnedFd::from(accepted), key, false, &mut ctx, link));
        let seen = rig.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (client, seen[0].clone())
    }

    #[test]
    fn a_forwarded_connection_opens_with_our_syn_and_carries_data_both_ways() {
        let mut rig = Rig::new();
        let (mut client, syn) = forwarded(&mut rig);
        assert_eq!(syn.flags, flags::SYN);
        assert_eq!(syn.ack, 0);
        assert_eq!(syn.options, [2, 4, 0x05, 0xb4, 1, 3, 3, OUR_WSCALE]);
        // The client speaks first, before the guest has answered: the data waits.
        client.write_all(b"early").unwrap();
        rig.poll(50);
        assert!(rig.seen().is_empty(), "nothing before the handshake ends");

        let opts = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];
        rig.send(
            GUEST_ISN,
            syn.seq.wrapping_add(1),
            flags::SYN | flags::ACK,
            64240,
            &opts,
            &[],
        );
        let seen = rig.seen();
        let data: Vec<&Seen> = seen.iter().filter(|s| !s.payload.is_empty()).collect();
        assert_eq!(data.len(), 1, "{seen:?}");
        assert_eq!(data[0].payload, b"early");
        assert_eq!(data[0].seq, syn.seq.wrapping_add(1));
        assert!(
            seen.iter()
                .all(|s| s.flags & flags::ACK != 0 && s.ack == GUEST_ISN + 1),
            "every segment acknowledges the guest's SYN: {seen:?}"
        );

        rig.send(
            GUEST_ISN + 1,
            syn.seq.wrapping_add(6),
            flags::ACK | flags::PSH,
            1024,
            &[],
            b"hello host",
        );
        let mut got = [0u8; 10];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello host");
        assert_eq!(rig.table.counters.accepted, 1);
    }

    #[test]
    fn a_guest_rst_for_our_syn_resets_the_host_client() {
        let mut rig = Rig::new();
        let (mut client, syn) = forwarded(&mut rig);
        // An RST that does not acknowledge our SYN is not the guest's answer to it.
        rig.send(0, syn.seq, flags::RST | flags::ACK, 0, &[], &[]);
        assert_eq!(rig.table.len(), 1);
        rig.send(
            0,
            syn.seq.wrapping_add(1),
            flags::RST | flags::ACK,
            0,
            &[],
            &[],
        );
        assert!(rig.table.is_empty());
        assert_eq!(rig.table.counters.guest_refused, 1);
        let err = client.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn our_syn_is_sent_again_until_the_guest_answers_or_we_give_up() {
        let mut rig = Rig::new();
        let (mut client, syn) = forwarded(&mut rig);
        rig.tick_after(INITIAL_RTO);
        let again = rig.seen();
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!((again[0].flags, again[0].seq), (flags::SYN, syn.seq));
        for _ in 0..MAX_RETRIES {
            rig.tick_after(MAX_RTO);
        }
        assert!(rig.table.is_empty());
        let outcome = client.read(&mut [0u8; 4]);
        assert!(
            matches!(&outcome, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_unix_forward_discards_what_the_guest_acknowledged_by_reading_it() {
        let mut rig = Rig::new();
        let (mut client, ours) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let watch = ours.try_clone().unwrap();
        let key = FlowKey {
            guest: rig.guest,
            remote: rig.remote,
        };
        let (mut ctx, table, link) = rig.ctx();
        assert!(table.on_accepted(OwnedFd::from(ours), key, true, &mut ctx, link));
        let syn = rig.seen().remove(0);
        client.write_all(b"over a unix socket").unwrap();
        let opts = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];
        let isn = syn.seq.wrapping_add(1);
        rig.send(GUEST_ISN, isn, flags::SYN | flags::ACK, 64240, &opts, &[]);
        let data = collect_payload(&mut rig, 18);
        let payload: Vec<u8> = data.iter().flat_map(|s| s.payload.clone()).collect();
        assert_eq!(payload, b"over a unix socket");
        assert_eq!(
            sys::queued_for_reading(watch.as_raw_fd()).unwrap(),
            18,
            "kept until acknowledged"
        );
        rig.send(
            GUEST_ISN + 1,
            isn.wrapping_add(18),
            flags::ACK,
            1024,
            &[],
            &[],
        );
        assert_eq!(sys::queued_for_reading(watch.as_raw_fd()).unwrap(), 0);
        // And the other way, with the guest's FIN: the client reads to the end.
        rig.send(
            GUEST_ISN + 1,
            isn.wrapping_add(18),
            flags::ACK | flags::PSH | flags::FIN,
            1024,
            &[],
            b"and back",
        );
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut back = String::new();
        client.read_to_string(&mut back).unwrap();
        assert_eq!(back, "and back");
    }
}
