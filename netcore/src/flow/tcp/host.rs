//! Host data to the guest: peeking the socket into RX frames, sized by the window.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Push {
    Idle,
    Sent,
    /// Nothing more in the socket right now.
    Empty,
    NoBuffers,
    Reset,
}

/// Guest segments shorter than this are written with `MSG_MORE`, to leave the socket together
/// at the end of the batch; larger ones go at once, as holding them back only delays the peer.
pub(super) const COALESCE_BELOW: usize = 16 << 10;

/// The most frames one socket read fills: enough that a 64 KiB-segment guest takes 1 MiB per
/// `recvmsg`, and an MSS-segment guest about 23 KiB.
pub(super) const MAX_FRAMES_PER_READ: usize = 16;

/// The most iovecs one read gathers, below the kernel's `UIO_MAXIOV` (1024).
pub(super) const MAX_IOVECS_PER_READ: usize = 1000;

/// Peeks up to `window_left` bytes from the socket into RX frames, reserved together and
/// filled by one `recvmsg`, and sends them as consecutive segments.
pub(super) fn send_data<L: RxLink>(
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
pub(super) fn segment_meta(
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
pub(super) const BUFFER_OVERHEAD: u64 = 1024;

/// The most payload counted per kernel buffer: one large write may become several buffers (the
/// kernel first tops up the last unsent buffer, and bounds a buffer by half the peer's window).
pub(super) const BUFFER_PAYLOAD: u32 = 16 << 10;

/// The send-buffer space we may offer the guest, and how much of it is free now, in payload
/// bytes, for a guest that sends segments of `segment` bytes.
///
/// The kernel's budget counts memory, not payload: each segment the guest sends is written as
/// it comes and may become a buffer of its own, charged its payload plus [`BUFFER_OVERHEAD`].
/// Offering the guest only the payload that fits means what it sends into the window is what
/// the socket takes: a short write makes the guest resend everything after it.
pub(super) fn send_space(fd: RawFd, segment: u32) -> (u32, u32) {
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
pub(super) fn log_short_write(flow: &Flow, took: usize, len: usize) {
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
pub(super) fn window_bytes(flow: &Flow) -> u32 {
    u32::from(flow.window_field()) << flow.window_shift()
}
