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

/// The most frames one socket read fills: a guest without segmentation offload takes about
/// 93 KiB per `recvmsg` (64 frames of 1460 bytes; 16 cost the kernel a tenth more per GB, in
/// more, smaller reads: perf/README.md), one with it as much as its window and buffers allow.
pub(crate) const MAX_FRAMES_PER_READ: usize = 64;

/// The most iovecs one read gathers, below the kernel's `UIO_MAXIOV` (1024).
pub(super) const MAX_IOVECS_PER_READ: usize = 1000;

/// Peeks up to `window_left` bytes from the socket into RX frames, reserved together and
/// filled by one `recvmsg`, and sends them as consecutive segments.
pub(super) fn send_data<L: RxLink>(
    flow: &mut Flow,
    io: &mut Io<'_, '_, L>,
    window_left: usize,
) -> Push {
    // Known before `SIOCINQ` measures the queue: the peer's FIN, and so all of its data, had
    // arrived.
    let peer_closed = flow.flags.has(Flags::PEER_CLOSED);
    let Some(unread) = unread(flow) else {
        return Push::Empty;
    };
    // With nothing left after the peer's FIN, one read finds the end of stream.
    let wanted_bytes = window_left.min(unread.max(1));
    let layout = Layout::new(flow, io.ctx, io.rx.offloads(), wanted_bytes);
    let wanted = wanted_bytes
        .div_ceil(layout.frame_payload)
        .clamp(1, MAX_FRAMES_PER_READ);
    let frame_len = layout.header_len + layout.frame_payload;
    let Some(frames) = io.rx.reserve_frames(frame_len, wanted) else {
        return Push::NoBuffers;
    };
    let in_flight = flow.data_in_flight() as usize;
    let peek_again = !io.bufs.peek_offset() && in_flight > 0;
    let mut iovs = io.bufs.iovs.for_recv();
    if peek_again {
        // Without a peek offset, the bytes in flight are peeked again, into scratch space.
        if io.bufs.scratch.len() < in_flight {
            io.bufs.scratch.resize(in_flight, 0);
        }
        iovs.push(&mut io.bufs.scratch[..in_flight]);
    }
    let skip_len = iovs.bytes_from(0);
    let mut planned = [0usize; MAX_FRAMES_PER_READ];
    let frame_count = plan_frames(&frames, &layout, wanted_bytes, &mut iovs, &mut planned);
    let planned = &planned[..frame_count];
    let room: usize = planned.iter().sum();
    flow.flags.remove(Flags::PEEKED_FULL);
    let n = match sys::recvmsg(&flow.sock, &mut iovs, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        // Nothing at all left to peek: the peer closed its side.
        Ok(r) if r.len == 0 => {
            flow.host_end = HostEnd::Eof;
            // Known now, event or not: a rewind that sends data again must look for the end
            // of stream again (see `unread`).
            flow.flags.insert(Flags::PEER_CLOSED);
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
    // All the peer sent before its FIN: our FIN rides on the last segment, one frame (and one
    // guest interrupt) fewer per connection the host closes.
    let fin = peer_closed && n == unread && flow.host_end == HostEnd::Open;
    write_frames(flow, io.ctx, frames, &layout, planned, n, fin);
    // Everything the socket held beyond what is in flight went out: until its next event (an
    // edge for every arrival, also one after our `SIOCINQ`), another look would find nothing.
    if n == unread {
        flow.flags.insert(Flags::DRAINED);
    }
    flow.flags.set(Flags::PEEKED_FULL, n == room);
    let start = flow.snd_nxt;
    flow.snd_nxt = flow.snd_nxt.wrapping_add(n as u32);
    if fin {
        flow.host_end = HostEnd::FinSent(flow.snd_nxt);
        flow.snd_nxt = flow.snd_nxt.wrapping_add(1);
    }
    flow.rtt.sent(start, flow.snd_nxt, io.ctx.now);
    flow.flags.remove(Flags::ACK_OWED);
    flow.flags.remove(Flags::ACK_DELAYED);
    if flow.timer.is_none() {
        flow.timer = Some(io.ctx.now + flow.rto);
    }
    Push::Sent
}

/// What the socket holds beyond what is in flight, as far as we know without reading it
/// (`usize::MAX` when a full peek suggests more than any window takes, or `SIOCINQ` failed);
/// `None` when it holds nothing new, so that no frames need reserving.
///
/// Frames are sized to it: reserving a burst of 64 KiB frames for a 32-byte answer would walk
/// the whole RX ring for nothing. After a full peek, a bulk sender most likely left more than
/// the window takes.
fn unread(flow: &mut Flow) -> Option<usize> {
    let peer_closed = flow.flags.has(Flags::PEER_CLOSED);
    if flow.flags.has(Flags::DRAINED) && !peer_closed {
        return None;
    }
    let in_flight = flow.data_in_flight() as usize;
    let unread = if flow.flags.has(Flags::PEEKED_FULL) {
        usize::MAX
    } else {
        sys::queued_for_reading(&flow.sock)
            .map_or(usize::MAX, |queued| queued.saturating_sub(in_flight))
    };
    if unread == 0 && !peer_closed {
        flow.flags.insert(Flags::DRAINED);
        return None;
    }
    Some(unread)
}

/// How the frames of one read are cut.
#[derive(Debug)]
struct Layout {
    /// Ethernet, IP and TCP headers.
    header_len: usize,
    /// The guest's segment size (its MSS, within our MTU).
    segment: usize,
    /// The payload of one frame: a segment, or up to 64 KiB with segmentation offload.
    frame_payload: usize,
    offloads: RxOffloads,
}

impl Layout {
    fn new(flow: &Flow, ctx: &Ctx<'_>, offloads: RxOffloads, wanted_bytes: usize) -> Layout {
        let guest = flow.key.guest.ip();
        let segment = usize::from(flow.mss).min(ctx.max_payload(&guest, TCP_HEADER_LEN));
        // With segmentation offload one frame carries up to 64 KiB, cut by the guest's stack
        // into MSS-sized pieces only if it ever forwards them.
        let frame_payload = if tso(offloads, &flow.key) {
            MAX_TSO_PAYLOAD
        } else {
            segment
        }
        .min(wanted_bytes);
        Layout {
            header_len: ip::l2_l3_len(&guest) + TCP_HEADER_LEN,
            segment,
            frame_payload,
            offloads,
        }
    }
}

/// Gathers the payload regions of the reserved frames into `iovs` for up to `wanted_bytes`,
/// noting each frame's share in `planned`; returns how many frames take part.
///
/// Each frame takes its share of the window; a frame whose iovecs would pass the kernel's
/// limit is left out of this read, or, the first one, carries what its first iovecs hold (a
/// guest that posts buffers of a few bytes each gets small segments, not a reset).
fn plan_frames<'m, R: RxFrames>(
    frames: &'m R,
    layout: &Layout,
    wanted_bytes: usize,
    iovs: &mut sys::RecvIovs<'_, 'm>,
    planned: &mut [usize; MAX_FRAMES_PER_READ],
) -> usize {
    let mut frame_count = 0;
    let mut left = wanted_bytes;
    while frame_count < frames.count().min(MAX_FRAMES_PER_READ) && left > 0 {
        let len = left.min(layout.frame_payload);
        let before = iovs.len();
        frames.iovecs(frame_count, layout.header_len, len, iovs);
        if iovs.len() > MAX_IOVECS_PER_READ {
            if frame_count > 0 {
                iovs.truncate(before);
                break;
            }
            iovs.truncate(MAX_IOVECS_PER_READ);
            planned[0] = iovs.bytes_from(before);
            return 1;
        }
        planned[frame_count] = len;
        left -= len;
        frame_count += 1;
    }
    frame_count
}

/// Writes the headers of the frames a read filled with `n` bytes, in order (every one but
/// the last is full), the last with our FIN if `fin`, and commits them.
fn write_frames<R: RxFrames>(
    flow: &mut Flow,
    ctx: &mut Ctx<'_>,
    mut frames: R,
    layout: &Layout,
    planned: &[usize],
    n: usize,
    fin: bool,
) {
    let mut lens = [0usize; MAX_FRAMES_PER_READ];
    let mut filled = 0;
    let mut unsent = n;
    while unsent > 0 && filled < planned.len() {
        let payload = unsent.min(planned[filled]);
        let (meta, csum) = segment_meta(layout, flow, payload);
        if let Some(meta) = meta {
            frames.set_meta(filled, meta);
        }
        let seq = flow.snd_nxt.wrapping_add((n - unsent) as u32);
        let last = fin && payload == unsent;
        let tcp_flags = flags::ACK | flags::PSH | if last { flags::FIN } else { 0 };
        let header = Header::of(flow, seq, tcp_flags);
        let mut frame = FrameOf {
            frames: &mut frames,
            index: filled,
        };
        write_segment(&mut frame, ctx, &header, payload, csum);
        lens[filled] = layout.header_len + payload;
        unsent -= payload;
        filled += 1;
    }
    frames.commit(&lens[..filled]);
}

/// How a segment of `payload` bytes toward `flow`'s guest is offloaded: the frame's metadata
/// (none for plain frames) and how much of its checksum we compute.
fn segment_meta(layout: &Layout, flow: &Flow, payload: usize) -> (Option<RxMeta>, Checksum) {
    let Layout {
        header_len,
        segment,
        offloads,
        ..
    } = *layout;
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

/// The send-buffer space we may offer the guest, and how much of it is free now, in payload
/// bytes, for a guest that sends segments of `segment` bytes (see [`seq::payload_space`]).
pub(super) fn send_space(fd: BorrowedFd<'_>, segment: u32) -> (u32, u32) {
    match sys::send_memory(fd) {
        Ok(memory) => seq::payload_space(memory.budget, memory.queued, segment),
        Err(_) => (0, 0),
    }
}

/// A write the socket did not take whole: with the window kept within the socket's room this
/// should be rare (the guest resends what follows), so say what the socket had. A guest that
/// ignores the window causes one per segment: rate-limited.
pub(super) fn log_short_write(flow: &Flow, took: usize, len: usize) {
    crate::ratelimit::guest_log!(
        log::Level::Info,
        "{}: the socket took {took} of {len} bytes; window estimate {:?}, largest segment \
         {}, memory {:?}",
        flow.key.remote,
        flow.window,
        flow.largest_segment,
        sys::send_memory(&flow.sock),
    );
}
