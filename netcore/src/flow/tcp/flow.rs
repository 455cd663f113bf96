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

#[derive(Debug)]
pub(super) struct Flow {
    pub(super) key: FlowKey,
    /// This flow's index in the table (its epoll token).
    pub(super) slot: usize,
    pub(super) sock: OwnedFd,
    pub(super) state: State,
    /// Guest to host: next sequence number expected from the guest (our ACK number).
    pub(super) rcv_nxt: u32,
    /// The guest's FIN has been passed on (`shutdown(SHUT_WR)`).
    pub(super) guest_fin: bool,
    /// Host to guest: our initial sequence number (the SYN's).
    pub(super) iss: u32,
    /// Oldest sequence number the guest has not acknowledged.
    pub(super) snd_una: u32,
    /// Next sequence number to send.
    pub(super) snd_nxt: u32,
    /// The host socket reached end of stream: a FIN follows the data.
    pub(super) host_eof: bool,
    /// Guest data went to the socket with `MSG_MORE` in this batch: the kernel holds a partial
    /// segment until [`TcpTable::end_batch`] pushes it, so consecutive guest segments leave as
    /// one (a guest without segmentation offload writes 1460 bytes at a time).
    pub(super) corked: bool,
    /// Epoll reported the peer's FIN: reads go on until they find the end of stream, as no
    /// later event would announce it.
    pub(super) peer_closed: bool,
    /// The last `SIOCINQ` found nothing beyond what is in flight (or the peek after it took
    /// all it found), and no socket event came since: new data would have brought one
    /// (edge-triggered epoll reports every arrival), so pushes skip asking again. Cleared by
    /// socket events and by retransmission.
    pub(super) drained: bool,
    /// The last peek filled all the room it had: the socket likely holds more, so the next
    /// push sizes its frames by the window alone and spares the `SIOCINQ` (a wrong guess
    /// costs only RX chains popped and given back).
    pub(super) peeked_full: bool,
    /// Sequence number of our FIN once sent.
    pub(super) fin_seq: Option<u32>,
    /// The guest's receive window, in bytes, from `snd_una`.
    pub(super) snd_wnd: u32,
    /// The guest's window scale, if it offered one (then ours is `OUR_WSCALE`).
    pub(super) wscale: Option<u8>,
    pub(super) mss: u16,
    /// The largest payload the guest has sent in one segment (its MSS to begin with; up to
    /// 64 KiB with segmentation offload): how the window counts the kernel's per-buffer cost.
    pub(super) largest_segment: u32,
    pub(super) dup_acks: u32,
    pub(super) rto: Duration,
    pub(super) retries: u32,
    /// When to retransmit or probe, if anything is outstanding.
    pub(super) timer: Option<Instant>,
    /// The last guest segment or socket event: [`IDLE_TIMEOUT`] after it, the flow goes.
    pub(super) last_activity: Instant,
    /// An ACK is owed to the guest (sent at the end of the batch).
    pub(super) ack_owed: bool,
    /// Waiting for the socket to take more data (EPOLLOUT armed).
    pub(super) want_write: bool,
    /// The send-buffer space we may offer (see [`send_space`]) in the high half and the free
    /// space in the low half, as last measured (one system call) minus what we wrote since:
    /// the real free space can only be larger, so the guest's right window edge stays put
    /// until we measure again, once half of it is used (or the socket drained).
    /// (An atomic only so that the engine stays `Sync`; one thread uses it.)
    pub(super) window: AtomicU64,
    /// The guest acknowledged data or opened its window: there may be room to send.
    pub(super) room: bool,
    /// Sending stopped for want of guest RX buffers.
    pub(super) waiting_rx: bool,
    /// Acknowledged data leaves the socket by a read into scratch space, not `MSG_TRUNC`:
    /// unix stream sockets (forwards from `hostfwd=unix:`) take that flag differently.
    pub(super) discard_by_reading: bool,
}

impl Keyed for Flow {
    type Key = FlowKey;
    fn key(&self) -> FlowKey {
        self.key
    }
}

impl Flow {
    /// A flow that has sent nothing yet and knows nothing of the guest's side.
    pub(super) fn new(
        key: FlowKey,
        slot: usize,
        sock: OwnedFd,
        state: State,
        iss: u32,
        now: Instant,
    ) -> Flow {
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
    pub(super) fn set_guest_options(&mut self, seg: &Segment) {
        self.mss = seg.mss.unwrap_or(DEFAULT_GUEST_MSS).max(64);
        self.largest_segment = u32::from(self.mss);
        self.wscale = seg.wscale.map(|s| s.min(14));
    }

    pub(super) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Data bytes sent but not acknowledged (what the peek offset counts).
    pub(super) fn data_in_flight(&self) -> u32 {
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

    pub(super) fn fin_acked(&self) -> bool {
        self.fin_seq
            .is_some_and(|fin| self.snd_una == fin.wrapping_add(1))
    }

    pub(super) fn window_shift(&self) -> u8 {
        if self.wscale.is_some() { OUR_WSCALE } else { 0 }
    }

    /// The (scaled) window field to advertise, from the estimate when there is one.
    pub(super) fn window_field(&self) -> u16 {
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
    pub(super) fn wrote(&self, n: usize) {
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

    pub(super) fn keep_window(&self, limit: u32, free: u32) {
        self.window
            .store(u64::from(limit) << 32 | u64::from(free), Ordering::Relaxed);
    }

    /// The socket drained or refused data: measure the window again when next needed.
    pub(super) fn forget_window(&self) {
        self.window.store(NO_WINDOW, Ordering::Relaxed);
    }
}
