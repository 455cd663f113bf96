//! Guest segments on an existing flow: handshake answers, ACKs, and payload to the socket.

use super::*;

/// What the table must do after a guest segment was applied to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    Continue,
    /// Three duplicate ACKs: resend from `snd_una`.
    Retransmit,
    Close(Close),
}

/// Applies a guest segment to an existing flow.
pub(super) fn flow_segment<F, L>(
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
    flow.ack_owed = true;
    flow.room = true;
    Next::Continue
}

/// Arms EPOLLOUT so we hear when the socket's send buffer drains (to reopen the window).
pub(super) fn want_write(flow: &mut Flow, epoll: &vmm_sys_util::epoll::Epoll) {
    if !flow.want_write {
        flow.want_write = true;
        let interest = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLOUT | libc::EPOLLET;
        let _ = epoll::modify(epoll, flow.fd(), interest as u32, Token::Tcp(flow.slot));
    }
}

/// Takes the guest's ACK number and window; true on the third duplicate ACK.
pub(super) fn on_ack(flow: &mut Flow, seg: &Segment, now: Instant) -> bool {
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
