//! One translated connection: its state, sequence numbers and window estimate.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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
pub(super) enum Close {
    /// Both directions finished.
    Done,
    /// Reset: the guest gets an RST.
    ResetGuest,
    /// The guest reset: the host socket is closed with an RST.
    ResetHost,
    /// The guest refused a forwarded connection: as `ResetHost`, counted apart.
    Refused,
}

/// How far the guest-to-host direction has got toward its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GuestEnd {
    Open,
    /// The guest's FIN has been passed on (`shutdown(SHUT_WR)`) and taken into `rcv_nxt`.
    Fin,
}

/// How far the host-to-guest direction has got toward its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HostEnd {
    Open,
    /// The host socket reached end of stream: a FIN follows the data.
    Eof,
    /// Our FIN went to the guest with this sequence number. A retransmission that rewinds to
    /// it goes back to `Eof`, and the FIN is sent again; one that rewinds to data before it
    /// goes back to `Open`, so that the data goes again before the FIN.
    FinSent(u32),
}

/// How acknowledged data leaves the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Discard {
    /// `recv(MSG_TRUNC)`: dropped without a copy.
    Truncate,
    /// Read into scratch space: unix stream sockets (forwards from `hostfwd=unix:`) take
    /// `MSG_TRUNC` differently.
    Read,
}

/// Conditions of a flow that come and go independently of its state, as bits.
///
/// * Batch work, done (and cleared) when the table's end of batch visits the flow, which a
///   flow with any of them is pending for: [`Flags::ACK_OWED`], [`Flags::ROOM`],
///   [`Flags::WAITING_RX`], [`Flags::CORKED`], [`Flags::SHORT_WRITE`].
/// * A delayed ACK ([`Flags::ACK_DELAYED`]), cleared when any frame carries the ACK or the
///   table's delayed-ACK timer sends it.
/// * What we know of the socket's receive queue, cleared by its next event:
///   [`Flags::DRAINED`] (also cleared by retransmission) and [`Flags::PEEKED_FULL`] (set or
///   cleared by every peek); [`Flags::PEER_CLOSED`] stays once set.
/// * The epoll interest: [`Flags::WANT_WRITE`].
///
/// A `Connecting` flow has none (nothing is sent, and the only event it waits for is the
/// connect's). `CORKED`, `SHORT_WRITE`, `ACK_DELAYED` and `WANT_WRITE` come only with guest
/// data, so only once `Established`; `DRAINED` and `PEEKED_FULL` only from reads, also only
/// once `Established`.
/// `PEER_CLOSED` may come before, for a forwarded connection whose client closes before the
/// guest answers our SYN.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Flags(u16);

impl Flags {
    /// An ACK is owed to the guest (sent at the end of the batch).
    pub(super) const ACK_OWED: Flags = Flags(1 << 0);
    /// The guest acknowledged data or opened its window: there may be room to send.
    pub(super) const ROOM: Flags = Flags(1 << 1);
    /// Sending stopped for want of guest RX buffers.
    pub(super) const WAITING_RX: Flags = Flags(1 << 2);
    /// Guest data went to the socket with `MSG_MORE` in this batch: the kernel holds a partial
    /// segment until [`TcpTable::end_batch`] pushes it, so consecutive guest segments leave as
    /// one (a guest without segmentation offload writes 1460 bytes at a time).
    pub(super) const CORKED: Flags = Flags(1 << 3);
    /// Epoll reported the peer's FIN, or a read found the end of stream: reads go on until
    /// they find it (again, after a rewind), as no later event would announce it.
    pub(super) const PEER_CLOSED: Flags = Flags(1 << 4);
    /// The last `SIOCINQ` found nothing beyond what is in flight (or the peek after it took
    /// all it found), and no socket event came since: new data would have brought one
    /// (edge-triggered epoll reports every arrival), so pushes skip asking again.
    pub(super) const DRAINED: Flags = Flags(1 << 5);
    /// The last peek filled all the room it had: the socket likely holds more, so the next
    /// push sizes its frames by the window alone and spares the `SIOCINQ` (a wrong guess
    /// costs only RX chains popped and given back).
    pub(super) const PEEKED_FULL: Flags = Flags(1 << 6);
    /// Waiting for the socket to take more data (EPOLLOUT armed).
    pub(super) const WANT_WRITE: Flags = Flags(1 << 7);
    /// The last write of the guest's payload in this batch was shorter than a full segment at
    /// the link's MTU: the end of a message, which the peer may answer at once (see
    /// [`Flags::ACK_DELAYED`]).
    pub(super) const SHORT_WRITE: Flags = Flags(1 << 8);
    /// The ACK owed for a short write waits for [`DELAYED_ACK`], so that the peer's answer,
    /// if it comes by then, carries it: the guest gets one frame, not an ACK and then the
    /// answer. Only once in a row: the next ACK owed goes at the batch's end.
    pub(super) const ACK_DELAYED: Flags = Flags(1 << 9);

    const NAMES: [&'static str; 10] = [
        "ACK_OWED",
        "ROOM",
        "WAITING_RX",
        "CORKED",
        "PEER_CLOSED",
        "DRAINED",
        "PEEKED_FULL",
        "WANT_WRITE",
        "SHORT_WRITE",
        "ACK_DELAYED",
    ];

    pub(super) fn has(self, flag: Flags) -> bool {
        self.0 & flag.0 != 0
    }

    pub(super) fn insert(&mut self, flag: Flags) {
        self.0 |= flag.0;
    }

    pub(super) fn remove(&mut self, flag: Flags) {
        self.0 &= !flag.0;
    }

    pub(super) fn set(&mut self, flag: Flags, on: bool) {
        if on {
            self.insert(flag);
        } else {
            self.remove(flag);
        }
    }

    /// Whether `flag` was set; clears it.
    pub(super) fn take(&mut self, flag: Flags) -> bool {
        let had = self.has(flag);
        self.remove(flag);
        had
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut set = f.debug_set();
        for (bit, name) in Flags::NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                set.entry(&format_args!("{name}"));
            }
        }
        set.finish()
    }
}

/// One translated connection.
///
/// Its state is four independent parts: how far the opening has got ([`State`]), how far
/// each direction has got toward its end ([`GuestEnd`], [`HostEnd`]), and the [`Flags`].
/// Both ends move only once `Established` (the guest's data and FIN are ignored before, and
/// the socket is read only after); the flow closes once `GuestEnd::Fin` meets a `FinSent`
/// the guest acknowledged.
#[derive(Debug)]
pub(super) struct Flow {
    pub(super) key: FlowKey,
    /// This flow's index in the table (its epoll token), once [`Flow::watch`] registered it.
    pub(super) slot: usize,
    pub(super) sock: OwnedFd,
    pub(super) state: State,
    pub(super) guest_end: GuestEnd,
    pub(super) host_end: HostEnd,
    pub(super) flags: Flags,
    pub(super) discard: Discard,
    /// Guest to host: next sequence number expected from the guest (our ACK number).
    pub(super) rcv_nxt: u32,
    /// Host to guest: our initial sequence number (the SYN's).
    pub(super) iss: u32,
    /// Oldest sequence number the guest has not acknowledged.
    pub(super) snd_una: u32,
    /// Next sequence number to send.
    pub(super) snd_nxt: u32,
    /// The guest's receive window, in bytes, from `snd_una`.
    pub(super) snd_wnd: u32,
    /// The guest's window scale, if it offered one (then ours is `OUR_WSCALE`).
    pub(super) wscale: Option<u8>,
    pub(super) mss: u16,
    /// The largest payload the guest has sent in one segment (its MSS to begin with; up to
    /// 64 KiB with segmentation offload): how the window counts the kernel's per-buffer cost.
    pub(super) largest_segment: u32,
    pub(super) dup_acks: u32,
    /// After a retransmission, the `snd_nxt` it went back from: no duplicate ACK starts
    /// another until the guest acknowledges up to it.
    pub(super) recover: Option<u32>,
    /// The retransmission timeout, doubled after each timeout, back to the estimate's on
    /// progress.
    pub(super) rto: Duration,
    pub(super) rtt: super::rtt::Rtt,
    pub(super) retries: u32,
    /// When to retransmit or probe, if anything is outstanding.
    pub(super) timer: Option<Instant>,
    /// The last guest segment or socket event: [`IDLE_TIMEOUT`] after it, the flow goes.
    pub(super) last_activity: Instant,
    /// The send-buffer space we may offer (see [`send_space`]) and the free space, as last
    /// measured (one system call) minus what we wrote since: the real free space can only be
    /// larger, so the guest's right window edge stays put until we measure again, once half
    /// of it is used (or the socket drained). None: measure when next needed.
    pub(super) window: Option<Estimate>,
    /// When the flow was made, and the payload bytes each way (see [`crate::flow::FlowInfo`]).
    pub(super) created: Instant,
    pub(super) to_host: u64,
    pub(super) to_guest: u64,
}

impl Keyed for Flow {
    type Key = FlowKey;
    fn key(&self) -> FlowKey {
        self.key
    }
}

impl Flow {
    /// A flow that has sent nothing yet and knows nothing of the guest's side.
    pub(super) fn new(key: FlowKey, sock: OwnedFd, state: State, iss: u32, now: Instant) -> Flow {
        Flow {
            key,
            slot: usize::MAX,
            sock,
            state,
            guest_end: GuestEnd::Open,
            host_end: HostEnd::Open,
            flags: Flags::default(),
            discard: Discard::Truncate,
            rcv_nxt: 0,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_wnd: 0,
            wscale: None,
            mss: DEFAULT_GUEST_MSS,
            largest_segment: u32::from(DEFAULT_GUEST_MSS),
            dup_acks: 0,
            recover: None,
            rto: INITIAL_RTO,
            rtt: Default::default(),
            retries: 0,
            timer: None,
            last_activity: now,
            window: None,
            created: now,
            to_host: 0,
            to_guest: 0,
        }
    }

    /// Takes the MSS and window scale of the guest's SYN or SYN-ACK.
    pub(super) fn set_guest_options(&mut self, seg: &Segment) {
        self.mss = seg.mss.unwrap_or(DEFAULT_GUEST_MSS).max(64);
        self.largest_segment = u32::from(self.mss);
        self.wscale = seg.wscale.map(|s| s.min(14));
    }

    /// Registers the socket in `epoll` for `events`, as the flow in `slot` (kept in the flow,
    /// which changes its interest later).
    pub(super) fn watch(
        &mut self,
        epoll: &Epoll,
        events: libc::c_int,
        slot: usize,
    ) -> io::Result<()> {
        self.slot = slot;
        epoll::add(epoll, &self.sock, events as u32, Token::Tcp(slot))
    }

    /// The sequence number of our FIN, once sent.
    pub(super) fn fin_seq(&self) -> Option<u32> {
        match self.host_end {
            HostEnd::FinSent(seq) => Some(seq),
            HostEnd::Open | HostEnd::Eof => None,
        }
    }

    /// Data bytes sent but not acknowledged (what the peek offset counts).
    pub(super) fn data_in_flight(&self) -> u32 {
        seq::data_in_flight(self.iss, self.snd_una, self.snd_nxt, self.fin_seq())
    }

    pub(super) fn fin_acked(&self) -> bool {
        seq::fin_acked(self.snd_una, self.fin_seq())
    }

    /// Both directions ended, and the guest has our FIN: nothing is left to do.
    pub(super) fn finished(&self) -> bool {
        self.guest_end == GuestEnd::Fin && self.fin_acked()
    }

    pub(super) fn window_shift(&self) -> u8 {
        if self.wscale.is_some() { OUR_WSCALE } else { 0 }
    }

    /// The (scaled) window field to advertise, from the estimate when there is one (or from
    /// a fresh measurement, kept as the estimate).
    pub(super) fn window_field(&mut self) -> u16 {
        let free = match self.window {
            Some(estimate) => estimate.free,
            None => {
                let (limit, free) = send_space(self.sock.as_fd(), self.largest_segment);
                self.window = Some(Estimate { limit, free });
                free
            }
        };
        seq::window_field(free, self.window_shift())
    }

    /// The window we advertise, in bytes.
    pub(super) fn window_bytes(&mut self) -> u32 {
        let field = self.window_field();
        seq::window_bytes(field, self.window_shift())
    }

    /// We wrote `n` bytes to the socket: the estimate shrinks by as much, and is dropped once
    /// half the space is used, to be measured again.
    pub(super) fn wrote(&mut self, n: usize) {
        self.window = self.window.and_then(|estimate| estimate.after_write(n));
    }

    /// The socket drained or refused data: measure the window again when next needed.
    pub(super) fn forget_window(&mut self) {
        self.window = None;
    }
}
