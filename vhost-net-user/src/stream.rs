//! The stream link: QEMU's `-netdev stream` over a UNIX socket, the framing passt's socket
//! mode also uses: every frame preceded by its length as 4 bytes big-endian.
//!
//! # Theory of operation
//!
//! The same engine serves this link, through owned buffers instead of guest memory: frames
//! read from the socket are handed to the engine as slices of the input buffer, and frames
//! for the guest are built in place in the output buffer (the length prefix is written when
//! the frame is committed), then written to the socket in large batches.
//!
//! Backpressure replaces ring space: while more than `MAX_BACKLOG` bytes wait to be
//! written, the link reports itself full, so TCP flows leave data in their host sockets and
//! resume when the socket drains. There is no virtio header, hence no offloads: the guest
//! sends and expects complete checksums.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};

use netcore::Engine;
use netcore::engine::MAX_FRAME_LEN;
use netcore::link::{OneFrame, RecvIovs, RxLink, RxSlot, copy_from_cells, copy_to_cells};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::server::{self, ServeConfig, ServeError};

const LEN_PREFIX: usize = 4;
/// Output waiting for the socket, at most, before the link reports itself full.
const MAX_BACKLOG: usize = 4 << 20;
const READ_CHUNK: usize = 256 << 10;
const TOKEN_STREAM: u64 = 1;
const TOKEN_HOST: u64 = 2;
const TOKEN_CONTROL: u64 = 3;

/// Frames toward the guest, built in place in the output buffer.
#[derive(Debug, Default)]
struct StreamRx {
    /// Committed frames up to `end`; the room of a frame being built after it.
    out: Vec<u8>,
    end: usize,
    /// How much of `out` has been written to the socket already.
    written: usize,
}

impl StreamRx {
    fn backlog(&self) -> usize {
        self.end - self.written
    }

    /// Writes what the socket takes; returns whether everything went.
    fn flush(&mut self, sock: &mut UnixStream) -> io::Result<bool> {
        while self.written < self.end {
            match sock.write(&self.out[self.written..self.end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.end = 0;
        self.written = 0;
        Ok(true)
    }

    /// The committed frames, length prefixes included.
    #[cfg(test)]
    fn committed(&self) -> &[u8] {
        &self.out[..self.end]
    }
}

/// Room for one frame at the end of the output buffer: its length prefix, then the frame, as
/// cells so that the kernel may fill them through the shared borrow iovecs take.
#[derive(Debug)]
struct StreamSlot<'a> {
    room: &'a [Cell<u8>],
    /// The output's end, moved past the frame when it is committed.
    end: &'a mut usize,
}

impl StreamSlot<'_> {
    fn frame(&self) -> &[Cell<u8>] {
        &self.room[LEN_PREFIX..]
    }
}

impl RxSlot for StreamSlot<'_> {
    fn capacity(&self) -> usize {
        self.frame().len()
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) {
        copy_to_cells(&self.frame()[offset..offset + data.len()], data);
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        copy_from_cells(self.frame().get(offset..).unwrap_or(&[]), buf)
    }

    fn iovecs<'m>(&'m self, offset: usize, len: usize, out: &mut RecvIovs<'_, 'm>) {
        let frame = self.frame();
        let end = offset.saturating_add(len).min(frame.len());
        if offset < end {
            out.push_cells(&frame[offset..end]);
        }
    }

    fn commit(self, len: usize) {
        let len = len.min(self.capacity());
        copy_to_cells(&self.room[..LEN_PREFIX], &(len as u32).to_be_bytes());
        *self.end += LEN_PREFIX + len;
    }
}

impl RxLink for StreamRx {
    type Slot<'a> = StreamSlot<'a>;
    type Frames<'a> = OneFrame<StreamSlot<'a>>;

    /// One frame at a time: the output buffer is copied to the socket anyway.
    fn reserve_frames(&mut self, max_len: usize, _count: usize) -> Option<Self::Frames<'_>> {
        self.reserve(max_len).map(OneFrame)
    }

    fn reserve(&mut self, max_len: usize) -> Option<StreamSlot<'_>> {
        if self.backlog() > MAX_BACKLOG {
            return None;
        }
        // Whatever an uncommitted slot left after `end` is overwritten.
        let start = self.end;
        self.out.truncate(start);
        self.out.resize(start + LEN_PREFIX + max_len, 0);
        Some(StreamSlot {
            room: Cell::from_mut(&mut self.out[start..]).as_slice_of_cells(),
            end: &mut self.end,
        })
    }
}

/// Serves QEMU `-netdev stream` clients connecting to `listener`, one at a time.
pub fn serve(listener: UnixListener, config: &ServeConfig) -> Result<(), ServeError> {
    server::accept_loop(&listener, config, "stream frontend", serve_connection)
}

/// Serves the one `-netdev stream` client already connected to `sock` (passt's `--fd`) until
/// it disconnects.
pub fn serve_connected(sock: UnixStream, config: &ServeConfig) -> Result<(), ServeError> {
    server::serve_logged(sock, config, "stream frontend", serve_connection);
    Ok(())
}

fn serve_connection(mut sock: UnixStream, config: &ServeConfig) -> io::Result<()> {
    let mut engine = Engine::with_options(config.plan.clone(), config.engine.clone())?;
    if let Some(capture) = &config.capture {
        engine.set_capture(capture.clone());
    }
    sock.set_nonblocking(true)?;
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        sock.as_raw_fd(),
        EpollEvent::new(EventSet::IN | EventSet::READ_HANG_UP, TOKEN_STREAM),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        engine.host_fd(),
        EpollEvent::new(EventSet::IN, TOKEN_HOST),
    )?;
    if let Some(fd) = engine.control_fd() {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, TOKEN_CONTROL),
        )?;
    }
    let mut input: Vec<u8> = Vec::with_capacity(2 * READ_CHUNK);
    let mut rx = StreamRx::default();
    let mut want_out = false;
    engine.start(&mut rx);
    let mut events = [EpollEvent::default(); 8];
    let result = loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        let mut closed = false;
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_STREAM
                    if ev.event_set().contains(EventSet::IN)
                        || ev.event_set().contains(EventSet::READ_HANG_UP) =>
                {
                    match read_frames(&mut sock, &mut input, &mut engine, &mut rx) {
                        Ok(true) => {}
                        Ok(false) => closed = true,
                        Err(e) => {
                            log::debug!("stream read: {e}");
                            closed = true;
                        }
                    }
                }
                TOKEN_HOST => engine.poll_host(&mut rx),
                TOKEN_CONTROL => engine.on_control_event(),
                _ => {}
            }
        }
        if closed {
            break Ok(());
        }
        // Write out; when the backlog drains, flows that waited for room go on.
        let before = rx.backlog();
        let all_out = match rx.flush(&mut sock) {
            Ok(done) => done,
            Err(e) => break Err(e),
        };
        if before > MAX_BACKLOG && rx.backlog() <= MAX_BACKLOG {
            engine.end_batch(&mut rx);
        }
        // Watch for room to write only while output waits.
        if want_out == all_out {
            want_out = !all_out;
            let mut set = EventSet::IN | EventSet::READ_HANG_UP;
            if want_out {
                set |= EventSet::OUT;
            }
            if let Err(e) = epoll.ctl(
                ControlOperation::Modify,
                sock.as_raw_fd(),
                EpollEvent::new(set, TOKEN_STREAM),
            ) {
                break Err(e);
            }
        }
    };
    log::info!("connection summary: {}", engine.stats());
    result
}

/// Reads what the socket has and hands every complete frame to the engine. Returns false
/// when the peer closed the connection or broke the framing.
fn read_frames(
    sock: &mut UnixStream,
    input: &mut Vec<u8>,
    engine: &mut Engine,
    rx: &mut StreamRx,
) -> io::Result<bool> {
    loop {
        let start = input.len();
        input.resize(start + READ_CHUNK, 0);
        let n = match sock.read(&mut input[start..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                input.truncate(start);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                input.truncate(start);
                continue;
            }
            Err(e) => return Err(e),
        };
        input.truncate(start + n);
        if n == 0 {
            return Ok(false);
        }
        let mut at = 0;
        while input.len() - at >= LEN_PREFIX {
            let len = u32::from_be_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]])
                as usize;
            if len > MAX_FRAME_LEN {
                log::warn!("stream frame of {len} bytes: closing the connection");
                return Ok(false);
            }
            if input.len() - at < LEN_PREFIX + len {
                break;
            }
            let frame = &input[at + LEN_PREFIX..at + LEN_PREFIX + len];
            engine.handle_frame(frame, rx);
            at += LEN_PREFIX + len;
        }
        input.drain(..at);
        if n < READ_CHUNK {
            break;
        }
    }
    engine.end_batch(rx);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_length_prefixed_and_cancelled_slots_leave_nothing() {
        let mut rx = StreamRx::default();
        rx.send(&[b"hello", b" frame"]).unwrap();
        {
            let mut slot = rx.reserve(100).unwrap();
            slot.write_at(0, b"dropped");
        }
        let mut slot = rx.reserve(10).unwrap();
        slot.write_at(0, b"ab");
        slot.commit(2);
        assert_eq!(rx.committed(), b"\0\0\0\x0bhello frame\0\0\0\x02ab");
    }

    #[test]
    fn a_large_backlog_reports_full() {
        let mut rx = StreamRx::default();
        rx.out.resize(MAX_BACKLOG + 1, 0);
        rx.end = rx.out.len();
        assert!(rx.reserve(10).is_none());
        rx.written = 2;
        assert!(rx.reserve(10).is_some());
    }

    #[test]
    fn engine_answers_over_the_stream() {
        let (mut qemu, backend) = UnixStream::pair().unwrap();
        let config = ServeConfig {
            plan: policy::NetPlan::slirp_default(),
            engine: netcore::EngineOptions {
                max_flows: 0,
                ..Default::default()
            },
            one_off: true,
            capture: None,
            max_queue_pairs: 1,
        };
        let server = std::thread::spawn(move || serve_connection(backend, &config));
        // An ARP request for the gateway, split across two writes.
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x06]);
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        arp.extend_from_slice(&[10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
        let mut msg = (arp.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&arp);
        qemu.write_all(&msg[..10]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        qemu.write_all(&msg[10..]).unwrap();
        let mut len = [0u8; 4];
        qemu.read_exact(&mut len).unwrap();
        let len = u32::from_be_bytes(len) as usize;
        let mut reply = vec![0u8; len];
        qemu.read_exact(&mut reply).unwrap();
        // Router advertisements may come first; find the ARP reply.
        while reply.get(12..14) != Some(&[0x08, 0x06]) {
            let mut len = [0u8; 4];
            qemu.read_exact(&mut len).unwrap();
            reply = vec![0u8; u32::from_be_bytes(len) as usize];
            qemu.read_exact(&mut reply).unwrap();
        }
        assert_eq!(reply.len(), 60);
        assert_eq!(&reply[6..12], &[0x52, 0x55, 10, 0, 2, 2]);
        assert_eq!(&reply[20..22], &[0, 2]);
        drop(qemu);
        server.join().unwrap().unwrap();
    }
}
