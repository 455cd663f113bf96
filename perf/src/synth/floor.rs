//! The floor: a backend's host-side socket calls with no backend, no ring and no guest.
//!
//! One thread connects to the [`Peer`](super::peer::Peer) and moves one TCP flow with the calls
//! a vhost-user net backend makes for it, each frame's payload in a buffer of its own, as if the
//! guest had posted every buffer and acknowledged every byte at once:
//!
//! * host→guest: `recvmsg(MSG_PEEK)` into the frames' receive buffers (the payload of a frame
//!   spread over ring-sized buffers, the first one's start left for headers, cycling through a
//!   ring's worth of them), then `recv(MSG_TRUNC)` of as many bytes, which drops them without a
//!   copy: what a backend does once the guest has acknowledged them. The peek waits for all the
//!   bytes it asks for (`MSG_WAITALL`, up to a quarter of the receive buffer, for at most
//!   [`PEEK_WAIT`]), so reads are full batches;
//! * guest→host: `sendmsg` of frame-sized pieces of the stream, a batch of frames a call.
//!
//! Nothing else runs in that thread (but a `getsockopt` of the buffer's size a read), so its
//! CPU time per GB is what these calls cost on this kernel: about the least a backend that
//! makes them could cost, whatever its own code does. Acting on every byte at once makes the
//! calls as large and as few as they can be, and keeps the receive window open, so that a
//! host→guest sender sends from its own calls; a backend behind a slower guest leaves the
//! sender waiting for window and pays for its sending in the calls that open it. The figure is
//! a floor, not an estimate of a backend.

use std::io::{IoSlice, IoSliceMut};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustix::net::{RecvAncillaryBuffer, RecvFlags, SendAncillaryBuffer, SendFlags};

use super::peer::Pattern;
use super::session::{Mark, Role};
use super::wire;

/// What the floor moves and how.
#[derive(Debug, Clone, Copy)]
pub struct FloorConfig {
    pub role: Role,
    /// TCP payload bytes of one frame.
    pub frame_payload: usize,
    /// Frames one call moves at most.
    pub frames_per_call: usize,
    /// Host→guest: bytes of one receive buffer (a mergeable RX buffer).
    pub rx_buffer: usize,
    /// Host→guest: how many receive buffers a ring holds.
    pub rx_buffers: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// The peer's port on 127.0.0.1.
    pub port: u16,
}

/// Where the stream stood at the measured interval's two ends.
#[derive(Debug, Clone, Copy)]
pub struct FloorOutcome {
    /// When, and how many bytes the floor had moved (received and dropped, or sent).
    pub start: (Instant, u64),
    pub end: (Instant, u64),
}

/// Host→guest bytes checked against the pattern during the warm-up, outside the measured
/// interval: enough to show the floor reads the peer's stream, not something else.
const CHECKED_BYTES: u64 = 4 << 20;

impl FloorConfig {
    /// Splits one frame's payload into receive buffers: the first buffer keeps room for the
    /// virtio-net header and the frame's headers, as a backend's does.
    fn frame_pieces(&self) -> Vec<usize> {
        let first_room = self.rx_buffer.saturating_sub(FRAME_HEADERS).max(1);
        let mut pieces = vec![first_room.min(self.frame_payload)];
        let mut left = self.frame_payload - pieces[0];
        while left > 0 {
            let piece = left.min(self.rx_buffer);
            pieces.push(piece);
            left -= piece;
        }
        pieces
    }
}

/// Runs the floor for one flow: connects, calls `mark` at each [`Mark`] (the caller samples CPU
/// time and the peer's bytes there), and returns the bytes moved at the interval's ends.
pub fn run(
    config: &FloorConfig,
    pattern: &Pattern,
    mut mark: impl FnMut(Mark),
) -> Result<FloorOutcome, String> {
    if config.frame_payload == 0 || config.frame_payload > wire::MAX_IP_PAYLOAD {
        return Err(format!(
            "floor: frames carry 1 to {} payload bytes",
            wire::MAX_IP_PAYLOAD
        ));
    }
    if config.frames_per_call == 0 || config.rx_buffers == 0 {
        return Err("floor: at least one frame a call and one receive buffer".into());
    }
    if config.rx_buffer <= FRAME_HEADERS {
        return Err(format!(
            "floor: receive buffers hold more than the {FRAME_HEADERS} header bytes"
        ));
    }
    let stream = TcpStream::connect(("127.0.0.1", config.port))
        .map_err(|e| format!("floor: connecting to the peer: {e}"))?;
    mark(Mark::Connected);
    let flow = Flow {
        config,
        pattern,
        stream,
        interval: Interval::new(config),
        mark,
    };
    match config.role {
        Role::Receive => flow.receive(),
        Role::Send => flow.send(),
    }
}

/// One run's flow: what it moves, its socket, and the marks it makes.
struct Flow<'a, M: FnMut(Mark)> {
    config: &'a FloorConfig,
    pattern: &'a Pattern,
    stream: TcpStream,
    interval: Interval,
    mark: M,
}

/// The virtio-net header and the frame's Ethernet, IPv4 and TCP headers, at the start of a
/// frame's first receive buffer.
const FRAME_HEADERS: usize = wire::VNET_LEN + wire::HEADERS_LEN;

/// The warm-up and the measured interval after it.
struct Interval {
    start_at: Instant,
    end_at: Instant,
    /// When the interval started, with the bytes moved by then.
    started: Option<(Instant, u64)>,
}

impl Interval {
    fn new(config: &FloorConfig) -> Interval {
        let start_at = Instant::now() + config.warmup;
        Interval {
            start_at,
            end_at: start_at + config.duration,
            started: None,
        }
    }

    /// After each call, with the bytes moved so far: marks the start once the warm-up is over,
    /// and returns the outcome once the interval is.
    fn tick(&mut self, moved: u64, mark: &mut impl FnMut(Mark)) -> Option<FloorOutcome> {
        let now = Instant::now();
        match self.started {
            None if now >= self.start_at => {
                mark(Mark::Start);
                self.started = Some((Instant::now(), moved));
                None
            }
            Some(start) if now >= self.end_at => {
                mark(Mark::End);
                Some(FloorOutcome {
                    start,
                    end: (Instant::now(), moved),
                })
            }
            _ => None,
        }
    }
}

/// A socket call again while a signal interrupts it.
fn retry<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match call() {
            Err(rustix::io::Errno::INTR) => {}
            other => return other,
        }
    }
}

/// The receive buffer the floor asks for where `net.core.rmem_max` allows it (the kernel
/// doubles it for its own overhead).
const RECEIVE_BUFFER: usize = 4 << 20;

/// How long one peek waits for the bytes it asks for.
const PEEK_WAIT: Duration = Duration::from_millis(1);

impl<M: FnMut(Mark)> Flow<'_, M> {
    /// Host→guest: peek into the next frames' buffers, then drop what was peeked.
    fn receive(mut self) -> Result<FloorOutcome, String> {
        let (config, pattern, stream) = (self.config, self.pattern, &self.stream);
        let pieces = config.frame_pieces();
        let per_frame = pieces.len();
        let ring_frames = (config.rx_buffers / per_frame).max(1);
        let frames_per_call = config.frames_per_call.min(ring_frames);
        // A fixed buffer of 8 MiB where `net.core.rmem_max` allows it (passt asks for the most it
        // may have): larger than autotuning makes it early on, so reads are larger. Where it would
        // be smaller than autotuning can make it, autotuning keeps it.
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if rmem_max >= RECEIVE_BUFFER {
            rustix::net::sockopt::set_socket_recv_buffer_size(stream, RECEIVE_BUFFER)
                .map_err(|e| format!("floor: SO_RCVBUF: {e}"))?;
        }
        // A peek that waits for more than the receive buffer can queue would wait for ever, and
        // small segments can fill its memory before the bytes asked for are in (each segment's
        // whole allocation counts against it): one call asks for a quarter of the buffer at most,
        // as the kernel sizes it now, and a wait that runs out returns what there is.
        stream
            .set_read_timeout(Some(PEEK_WAIT))
            .map_err(|e| format!("floor: SO_RCVTIMEO: {e}"))?;
        let mut ring = vec![0u8; ring_frames * per_frame * config.rx_buffer];
        // Every frame's pieces in ring order, each at its buffer's start but the first, which
        // follows the headers.
        let mut iov: Vec<IoSliceMut<'_>> = Vec::with_capacity(ring_frames * per_frame);
        for buffer in ring.chunks_mut(config.rx_buffer) {
            let k = iov.len() % per_frame;
            let at = if k == 0 { FRAME_HEADERS } else { 0 };
            iov.push(IoSliceMut::new(&mut buffer[at..at + pieces[k]]));
        }
        let mut dropped = vec![0u8; frames_per_call * config.frame_payload];
        let (mut frame, mut moved) = (0usize, 0u64);
        loop {
            let receive_buffer = rustix::net::sockopt::socket_recv_buffer_size(stream)
                .map_err(|e| format!("floor: SO_RCVBUF: {e}"))?;
            let frames = frames_per_call
                .min(ring_frames - frame)
                .min(receive_buffer / 4 / config.frame_payload)
                .max(1);
            let these = &mut iov[frame * per_frame..(frame + frames) * per_frame];
            let peeked = retry(|| {
                rustix::net::recvmsg(
                    stream,
                    these,
                    &mut RecvAncillaryBuffer::default(),
                    RecvFlags::PEEK | RecvFlags::WAITALL,
                )
            });
            let n = match peeked {
                Ok(r) => r.bytes,
                // The wait ran out with nothing queued.
                Err(rustix::io::Errno::AGAIN) => {
                    if let Some(outcome) = self.interval.tick(moved, &mut self.mark) {
                        return Ok(outcome);
                    }
                    continue;
                }
                Err(e) => return Err(format!("floor: recvmsg(MSG_PEEK): {e}")),
            };
            if n == 0 {
                return Err("floor: the peer closed the connection".into());
            }
            if moved < CHECKED_BYTES {
                check(these, n, moved, pattern)?;
            }
            let (_, gone) =
                retry(|| rustix::net::recv(stream, &mut dropped[..n], RecvFlags::TRUNC))
                    .map_err(|e| format!("floor: recv(MSG_TRUNC): {e}"))?;
            if gone != n {
                return Err(format!("floor: dropped {gone} of the {n} bytes peeked"));
            }
            moved += n as u64;
            frame = (frame + n.div_ceil(config.frame_payload)) % ring_frames;
            if let Some(outcome) = self.interval.tick(moved, &mut self.mark) {
                return Ok(outcome);
            }
        }
    }

    /// Guest→host: frame-sized pieces of the stream, a batch a call.
    fn send(mut self) -> Result<FloorOutcome, String> {
        let (config, pattern, stream) = (self.config, self.pattern, &self.stream);
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(config.frames_per_call);
        let mut sent = 0u64;
        loop {
            iov.clear();
            iov.extend((0..config.frames_per_call).map(|i| {
                IoSlice::new(pattern.slice(
                    sent + (i * config.frame_payload) as u64,
                    config.frame_payload,
                ))
            }));
            let n = retry(|| {
                rustix::net::sendmsg(
                    stream,
                    &iov,
                    &mut SendAncillaryBuffer::default(),
                    SendFlags::NOSIGNAL,
                )
            })
            .map_err(|e| format!("floor: sendmsg: {e}"))?;
            sent += n as u64;
            if let Some(outcome) = self.interval.tick(sent, &mut self.mark) {
                return Ok(outcome);
            }
        }
    }
}

/// Compares the `n` bytes received into `iov`, the stream's from byte `offset` on, with the
/// pattern.
fn check(iov: &[IoSliceMut<'_>], n: usize, offset: u64, pattern: &Pattern) -> Result<(), String> {
    let mut at = 0usize;
    for piece in iov {
        for chunk in piece.chunks(4096) {
            let len = chunk.len().min(n - at);
            if len == 0 {
                return Ok(());
            }
            let expected = pattern.slice(offset + at as u64, len);
            if let Some(k) = (0..len).find(|&k| chunk[k] != expected[k]) {
                return Err(format!(
                    "floor: host→guest data differ from the stream at byte {}",
                    offset + (at + k) as u64
                ));
            }
            at += len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::peer::{Peer, PeerRole};

    fn config(role: Role, port: u16) -> FloorConfig {
        FloorConfig {
            role,
            frame_payload: 65480,
            frames_per_call: 64,
            rx_buffer: 4096,
            rx_buffers: 256,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(200),
            port,
        }
    }

    #[test]
    fn a_frame_fills_its_first_buffer_after_the_headers_then_whole_buffers() {
        let c = config(Role::Receive, 0);
        let pieces = c.frame_pieces();
        assert_eq!(pieces[0], 4096 - FRAME_HEADERS);
        assert!(pieces[1..pieces.len() - 1].iter().all(|&p| p == 4096));
        assert_eq!(pieces.iter().sum::<usize>(), 65480);
        let small = FloorConfig {
            frame_payload: 1460,
            rx_buffer: 1536,
            ..c
        };
        assert_eq!(small.frame_pieces(), vec![1460]);
    }

    #[test]
    fn a_byte_out_of_the_stream_is_found() {
        let pattern = Pattern::new(wire::MAX_IP_PAYLOAD);
        let mut a = pattern.slice(1000, 3000).to_vec();
        let mut b = pattern.slice(4000, 5000).to_vec();
        let mut iov = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        check(&iov, 8000, 1000, &pattern).unwrap();
        iov[1][4999] ^= 1;
        check(&iov, 7999, 1000, &pattern).unwrap();
        let err = check(&iov, 8000, 1000, &pattern).unwrap_err();
        assert!(err.contains("at byte 8999"), "{err}");
    }

    #[test]
    fn the_floor_receives_the_peers_stream_and_marks_its_interval() {
        let peer = Peer::start(PeerRole::Source, None).unwrap();
        let pattern = Pattern::new(wire::MAX_IP_PAYLOAD);
        let mut marks = Vec::new();
        let outcome = run(&config(Role::Receive, peer.port()), &pattern, |m| {
            marks.push(m)
        })
        .unwrap();
        assert_eq!(marks, [Mark::Connected, Mark::Start, Mark::End]);
        assert!(outcome.end.1 > outcome.start.1, "{outcome:?}");
        assert!(
            outcome.start.1 >= CHECKED_BYTES,
            "the warm-up checked the stream"
        );
        peer.finish().unwrap();
    }

    #[test]
    fn the_floor_sends_the_stream_the_peer_checks() {
        let peer = Peer::start(PeerRole::Sink { verify: true }, None).unwrap();
        let pattern = Pattern::new(wire::MAX_IP_PAYLOAD);
        let c = FloorConfig {
            frame_payload: 1460,
            frames_per_call: 128,
            ..config(Role::Send, peer.port())
        };
        let outcome = run(&c, &pattern, |_| {}).unwrap();
        assert!(outcome.end.1 > outcome.start.1, "{outcome:?}");
        while peer.bytes() < outcome.end.1 {
            std::thread::sleep(Duration::from_millis(5));
        }
        peer.finish().unwrap();
    }
}
