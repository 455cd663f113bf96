//! Guest segments on an existing flow: handshake answers, ACKs, and payload to the socket.

use super::*;

/// What the table must do after a guest segment was applied to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    Continue,
    /// A duplicate ACK ([`DUP_ACK_THRESHOLD`]): resend from `snd_una`.
    Retransmit,
    Close(Close),
}

/// Applies a guest segment to an existing flow; its payload may wait in `deferred`.
pub(super) fn flow_segment<'m, F, L>(
    flow: &mut Flow,
    io: &mut Io<'_, '_, L>,
    seg: &Segment,
    frame: &'m F,
    deferred: &mut Deferred<'_, 'm>,
) -> Next
where
    F: TxFrame + ?Sized,
    L: RxLink,
{
    if flow.state == State::SynSent {
        return syn_sent_segment(flow, seg, io.ctx.now);
    }
    if seg.has(flags::RST) {
        return Next::Close(Close::ResetHost);
    }
    if seg.has(flags::SYN) {
        // A retransmitted SYN: our SYN-ACK was lost, or we are still connecting.
        if flow.state == State::SynAckSent {
            send_syn_ack(flow, io.ctx, io.rx);
        }
        return Next::Continue;
    }
    if flow.state == State::Connecting {
        return Next::Continue;
    }
    let fast_retransmit = seg.has(flags::ACK) && on_ack(flow, seg, io.ctx.now);
    if flow.state == State::SynAckSent {
        if flow.snd_una == flow.iss {
            return Next::Continue; // not yet acked: ignore data until the handshake completes
        }
        flow.state = State::Established;
    }
    if let Some(next) = guest_data(flow, io, seg, frame, deferred) {
        return next;
    }
    // Payload waiting for the socket is checked once written ([`write_deferred`]), against
    // the window after it, not per segment against the one before.
    if deferred.bytes_of(flow.slot) == 0 {
        want_write_if_window_closed(flow, io.ctx);
    }
    if fast_retransmit {
        Next::Retransmit
    } else {
        Next::Continue
    }
}

/// Guest to host payload and FIN, in order only: what the socket takes moves `rcv_nxt`.
/// In-order payload waits in `deferred`, which takes the flow's next segments after it, so
/// "in order" is after what waits there. `Some` when the segment ends here (out of order, or
/// the socket failed).
fn guest_data<'m, F, L>(
    flow: &mut Flow,
    io: &mut Io<'_, '_, L>,
    seg: &Segment,
    frame: &'m F,
    deferred: &mut Deferred<'_, 'm>,
) -> Option<Next>
where
    F: TxFrame + ?Sized,
    L: RxLink,
{
    let taken_to = flow.rcv_nxt.wrapping_add(deferred.bytes_of(flow.slot));
    let mut offset = 0usize;
    let mut len = seg.payload_len;
    let mut seq = seg.seq;
    if let Some(skip) = seq::already_taken(taken_to, seq, len) {
        // Starts before what we already took (a window probe, a keepalive, a resent segment):
        // it gets an ACK, as any TCP answers one (RFC 9293 3.10.7.4). A guest probing our zero
        // window learns this way that it reopened.
        flow.flags.insert(Flags::ACK_OWED);
        // Skip the part we have.
        offset += skip;
        len -= skip;
        seq = seq.wrapping_add(skip as u32);
    }
    if len == 0 && !seg.has(flags::FIN) {
        return None;
    }
    if seq != taken_to {
        flow.flags.insert(Flags::ACK_OWED); // out of order: a duplicate ACK asks for the gap
        io.counters.out_of_order += 1;
        return Some(Next::Continue);
    }
    if len > 0 && flow.guest_end == GuestEnd::Open {
        if let Err(e) = defer_write(flow, io, deferred, frame, seg.payload_offset + offset, len) {
            log::debug!("TCP write to {}: {e}", flow.key.remote);
            return Some(Next::Close(Close::ResetGuest));
        }
        flow.flags.insert(Flags::ACK_OWED);
    }
    if seg.has(flags::FIN) && flow.guest_end == GuestEnd::Open {
        // The FIN follows the payload: write what waits first, and close only if all of it
        // was taken.
        if let Err(e) = write_deferred(flow, io.ctx, io.counters, deferred) {
            log::debug!("TCP write to {}: {e}", flow.key.remote);
            return Some(Next::Close(Close::ResetGuest));
        }
        let all_taken = flow.rcv_nxt == seg.seq.wrapping_add(seg.payload_len as u32);
        if all_taken {
            flow.guest_end = GuestEnd::Fin;
            flow.rcv_nxt = flow.rcv_nxt.wrapping_add(1);
            let _ = sys::shutdown_write(&flow.sock);
            flow.flags.insert(Flags::ACK_OWED);
        }
    }
    None
}

/// The most iovecs one `sendmsg` takes (Linux's `UIO_MAXIOV`).
const MAX_IOVS: usize = 1024;

/// Guest payload gathered for one `sendmsg`: the in-order segments of one flow that a batch of
/// guest frames carried, straight from guest memory. The table writes it when a segment of
/// another flow comes, when anything but payload needs the flow's true state (a FIN, a reset,
/// a retransmission), and when the batch ends; a guest without segmentation offload then
/// costs one system call per batch instead of one per 1460 bytes.
///
/// It borrows the frames' memory for `'m`, so it cannot outlive them, and it moves no sequence
/// number: `rcv_nxt` moves, and the guest is ACKed, only for what the socket took when it is
/// written. Until then a segment is in order if it follows what waits here.
#[derive(Debug)]
pub(crate) struct Deferred<'s, 'm> {
    iovs: sys::SendIovs<'s, 'm>,
    /// The flow whose payload waits, if any.
    slot: Option<usize>,
    bytes: usize,
}

impl<'s, 'm> Deferred<'s, 'm> {
    /// An empty gathering, its iovecs kept in `storage`.
    pub(crate) fn new(storage: &'s mut sys::IoVecs) -> Self {
        Deferred {
            iovs: storage.for_send(),
            slot: None,
            bytes: 0,
        }
    }

    /// The flow whose payload waits to be written.
    pub(crate) fn slot(&self) -> Option<usize> {
        self.slot
    }

    /// The bytes waiting for flow `slot`.
    fn bytes_of(&self, slot: usize) -> u32 {
        if self.slot == Some(slot) {
            self.bytes as u32
        } else {
            0
        }
    }

    pub(super) fn clear(&mut self) {
        self.iovs.truncate(0);
        self.slot = None;
        self.bytes = 0;
    }
}

/// Adds `len` bytes of the frame from `offset` to what waits for the flow, writing what
/// waits first when the list would grow past what one call takes. Only a failure of the
/// socket is an error.
fn defer_write<'m, F, L>(
    flow: &mut Flow,
    io: &mut Io<'_, '_, L>,
    deferred: &mut Deferred<'_, 'm>,
    frame: &'m F,
    offset: usize,
    len: usize,
) -> io::Result<()>
where
    F: TxFrame + ?Sized,
    L: RxLink,
{
    debug_assert!(deferred.slot.is_none_or(|slot| slot == flow.slot));
    let mut waiting = deferred.bytes;
    frame.iovecs(offset, len, &mut deferred.iovs);
    if deferred.iovs.len() > MAX_IOVS && waiting > 0 {
        // Write what waited, then start again with this segment, if it still follows.
        deferred.iovs.truncate_to_bytes(waiting);
        let expected = flow.rcv_nxt.wrapping_add(waiting as u32);
        write_deferred(flow, io.ctx, io.counters, deferred)?;
        if flow.rcv_nxt != expected {
            return Ok(()); // the socket was full: the guest resends from what it took
        }
        waiting = 0;
        frame.iovecs(offset, len, &mut deferred.iovs);
    }
    // Counted from the list itself: what it holds is exactly what follows `rcv_nxt`.
    let added = deferred.iovs.bytes_from(0) - waiting;
    if added > 0 {
        flow.largest_segment = flow.largest_segment.max(added as u32);
        deferred.slot = Some(flow.slot);
        deferred.bytes = waiting + added;
    }
    Ok(())
}

/// Writes what waits for `flow` to its socket and takes into `rcv_nxt` what the socket took.
/// A short write (counted) leaves the rest for the guest to resend and arms EPOLLOUT; only a
/// failure of the socket is an error. Waiting bytes of another flow are not this flow's.
pub(super) fn write_deferred(
    flow: &mut Flow,
    ctx: &Ctx<'_>,
    counters: &mut TcpCounters,
    deferred: &mut Deferred<'_, '_>,
) -> io::Result<()> {
    if deferred.slot != Some(flow.slot) || deferred.bytes == 0 {
        return Ok(());
    }
    let len = deferred.bytes;
    let small = len < COALESCE_BELOW;
    let more = if small { libc::MSG_MORE } else { 0 };
    let sent = sys::sendmsg(&flow.sock, &deferred.iovs, None, libc::MSG_DONTWAIT | more);
    deferred.clear();
    let took = match sent {
        Ok(n) => {
            if small {
                flow.flags.insert(Flags::CORKED);
            }
            // Less than a full segment: the guest had no more to send, the end of a message.
            let full = ctx.max_payload(&flow.key.guest.ip(), TCP_HEADER_LEN);
            flow.flags.set(Flags::SHORT_WRITE, len < full);
            flow.rcv_nxt = flow.rcv_nxt.wrapping_add(n as u32);
            flow.to_host += n as u64;
            flow.wrote(n);
            n
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if took < len {
        counters.short_writes += 1;
        log_short_write(flow, took, len);
        flow.forget_window();
        want_write(flow, ctx.epoll);
    }
    want_write_if_window_closed(flow, ctx);
    Ok(())
}

/// The window never lets the guest overfill the socket, so no short write arms EPOLLOUT for
/// us: once the window is below a segment, arm it ourselves, or the guest waits for a window
/// update that never comes.
fn want_write_if_window_closed(flow: &mut Flow, ctx: &Ctx<'_>) {
    let segment = ctx.max_payload(&flow.key.guest.ip(), TCP_HEADER_LEN) as u32;
    if flow.flags.has(Flags::ACK_OWED)
        && flow.guest_end == GuestEnd::Open
        && flow.window_bytes() < segment
    {
        want_write(flow, ctx.epoll);
    }
}

/// The guest's answer to the SYN of a forwarded connection. A SYN-ACK for it completes the
/// handshake (our ACK goes at the batch's end, data that waited in the socket after it); an
/// RST for it closes the host connection with an RST, as a refused connect would. Anything
/// else is ignored: the SYN is retransmitted until the guest answers.
pub(super) fn syn_sent_segment(flow: &mut Flow, seg: &Segment, now: Instant) -> Next {
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
    flow.flags.insert(Flags::ACK_OWED);
    flow.flags.insert(Flags::ROOM);
    Next::Continue
}

/// Arms EPOLLOUT so we hear when the socket's send buffer drains (to reopen the window).
pub(super) fn want_write(flow: &mut Flow, epoll: &Epoll) {
    if !flow.flags.has(Flags::WANT_WRITE) {
        flow.flags.insert(Flags::WANT_WRITE);
        let interest = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLOUT | libc::EPOLLET;
        let _ = epoll::modify(epoll, &flow.sock, interest as u32, Token::Tcp(flow.slot));
    }
}

/// Takes the guest's ACK number and window; true on the duplicate ACK that starts a fast
/// retransmission.
pub(super) fn on_ack(flow: &mut Flow, seg: &Segment, now: Instant) -> bool {
    let shift = if seg.has(flags::SYN) {
        0
    } else {
        flow.wscale.unwrap_or(0)
    };
    let window = seq::window_bytes(seg.window, shift);
    match seq::ack(flow.snd_una, flow.snd_nxt, seg.ack) {
        seq::Ack::New(acked) => {
            let fin = flow.fin_seq();
            let data = seq::acked_data(flow.iss, flow.snd_una, seg.ack, acked, fin);
            flow.to_guest += u64::from(data);
            if data > 0 {
                let _ = match flow.discard {
                    Discard::Read => sys::discard_by_reading(&flow.sock, data as usize),
                    Discard::Truncate => sys::discard(&flow.sock, data as usize),
                };
            }
            flow.snd_una = seg.ack;
            flow.flags.insert(Flags::ROOM);
            flow.dup_acks = 0;
            if flow
                .recover
                .is_some_and(|recover| !seq::before(seg.ack, recover))
            {
                flow.recover = None;
            }
            flow.retries = 0;
            flow.rtt.acked(seg.ack, now);
            flow.rto = flow.rtt.rto();
            flow.timer = if flow.snd_una == flow.snd_nxt {
                None
            } else {
                Some(now + flow.rto)
            };
        }
        seq::Ack::Same
            if seg.payload_len == 0
                && flow.snd_nxt != flow.snd_una
                && window == flow.snd_wnd
                && !seg.has(flags::FIN) =>
        {
            flow.dup_acks += 1;
            flow.snd_wnd = window;
            // Once per loss: the copies a retransmission resends draw duplicate ACKs of their
            // own until the guest acknowledges past what was outstanding.
            return flow.dup_acks == DUP_ACK_THRESHOLD && flow.recover.is_none();
        }
        seq::Ack::Same | seq::Ack::Outside => {}
    }
    if window > flow.snd_wnd {
        flow.flags.insert(Flags::ROOM);
    }
    flow.snd_wnd = window;
    false
}
