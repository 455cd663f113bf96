//! The host side of the synthetic tests: one TCP connection on 127.0.0.1 that the synthetic
//! guest opens through the gateway address, served by a thread that either takes everything
//! (guest→host) or sends as fast as the socket takes it (host→guest).
//!
//! Both ends agree on the byte stream: byte `n` of the connection is `pattern(n)` (see
//! [`Pattern`]), so either end can check every byte it receives with a plain comparison, and
//! the guest can send any stretch of the stream by pointing a descriptor into one fixed copy of
//! the pattern in guest memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::wire;

/// The stream's content: `byte(n) = (n mod PERIOD) as u8 ^ 0x5a`. The period is prime, so it
/// never lines up with segment sizes and a misplaced segment does not compare equal.
#[derive(Debug)]
pub struct Pattern {
    bytes: Vec<u8>,
    /// One's complement sums of (start mod PERIOD, length) already computed.
    sums: HashMap<(usize, usize), u64>,
}

impl Pattern {
    pub const PERIOD: usize = 251;

    /// A pattern from which any `max_len` bytes of the stream can be taken as one slice.
    pub fn new(max_len: usize) -> Pattern {
        let bytes = (0..Self::PERIOD + max_len)
            .map(|i| (i % Self::PERIOD) as u8 ^ 0x5a)
            .collect();
        Pattern {
            bytes,
            sums: HashMap::new(),
        }
    }

    /// All of it, to copy into guest memory.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where the stream's byte `offset` sits in [`Pattern::bytes`].
    pub fn position(offset: u64) -> usize {
        (offset % Self::PERIOD as u64) as usize
    }

    /// The stream's bytes `offset..offset + len`.
    pub fn slice(&self, offset: u64, len: usize) -> &[u8] {
        let at = Self::position(offset);
        &self.bytes[at..at + len]
    }

    /// The one's complement sum ([`wire::sum16`]) of the stream's bytes `offset..offset+len`.
    pub fn sum(&mut self, offset: u64, len: usize) -> u64 {
        let at = Self::position(offset);
        let bytes = &self.bytes;
        *self
            .sums
            .entry((at, len))
            .or_insert_with(|| wire::sum16(&bytes[at..at + len], 0))
    }
}

/// What the host side does with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// Reads everything (checking it if `verify`): the guest→host test.
    Sink { verify: bool },
    /// Writes the stream as fast as the socket takes it: the host→guest test.
    Source,
}

/// The thread serving one test's connection.
#[derive(Debug)]
pub struct Peer {
    port: u16,
    bytes: Arc<AtomicU64>,
    tid: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), String>>>,
}

const CHUNK: usize = 256 << 10;
const POLL: Duration = Duration::from_millis(100);

impl Peer {
    /// Listens on a free port of 127.0.0.1 and serves the first connection in a thread; in the
    /// network namespace `netns` (a path such as `/run/netns/NAME`) if given: only that thread
    /// moves there, as the backend under test (passt) connects to its own namespace's loopback.
    pub fn start(role: PeerRole, netns: Option<&Path>) -> Result<Peer, String> {
        let netns = netns
            .map(|p| File::open(p).map_err(|e| format!("opening {}: {e}", p.display())))
            .transpose()?;
        let (listening, bound) = std::sync::mpsc::channel();
        let bytes = Arc::new(AtomicU64::new(0));
        let tid = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, t, s) = (bytes.clone(), tid.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("synthetic-peer".into())
            .spawn(move || {
                t.store(own_tid().unwrap_or(0), Ordering::Relaxed);
                let listener = match listen(netns) {
                    Ok((listener, port)) => {
                        let _ = listening.send(Ok(port));
                        listener
                    }
                    Err(e) => {
                        let _ = listening.send(Err(e));
                        return Ok(());
                    }
                };
                let Some(conn) = accept(&listener, &s)? else {
                    return Ok(());
                };
                drop(listener);
                match role {
                    PeerRole::Sink { verify } => sink(conn, verify, &b, &s),
                    PeerRole::Source => source(conn, &b, &s),
                }
            })
            .map_err(|e| format!("peer thread: {e}"))?;
        let port = bound
            .recv()
            .map_err(|_| "the peer thread ended before listening".to_string())??;
        Ok(Peer {
            port,
            bytes,
            tid,
            stop,
            handle: Some(handle),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bytes read (sink) or written (source) so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The serving thread's id, for `/proc/self/task/TID/stat` (0 until it has started).
    pub fn tid(&self) -> u32 {
        self.tid.load(Ordering::Relaxed)
    }

    /// Stops the thread and returns what it found wrong, if anything.
    pub fn finish(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("peer thread panicked".into()),
            None => Ok(()),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// This thread's id, from the `/proc/thread-self` link (`PID/task/TID`).
pub fn own_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Enters `netns` (this thread only) and listens on a free port of its 127.0.0.1.
fn listen(netns: Option<File>) -> Result<(TcpListener, u16), String> {
    if let Some(ns) = netns {
        use std::os::fd::AsFd;
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| format!("entering the network namespace: {e}"))?;
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("peer bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok((listener, port))
}

fn accept(listener: &TcpListener, stop: &AtomicBool) -> Result<Option<TcpStream>, String> {
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(Some(conn));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("peer accept: {e}")),
        }
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn sink(
    mut conn: TcpStream,
    verify: bool,
    bytes: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(), String> {
    conn.set_read_timeout(Some(POLL))
        .map_err(|e| e.to_string())?;
    let pattern = Pattern::new(CHUNK);
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if verify && buf[..n] != *pattern.slice(offset, n) {
                    let at = (0..n)
                        .find(|&i| buf[i] != pattern.slice(offset + i as u64, 1)[0])
                        .unwrap_or(0);
                    return Err(format!(
                        "guest→host data corrupt at stream byte {}",
                        offset + at as u64
                    ));
                }
                offset += n as u64;
                bytes.store(offset, Ordering::Relaxed);
            }
            Err(e) if would_block(&e) => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The backend closes (or resets) the connection when the guest goes away.
            Err(_) => return Ok(()),
        }
    }
}

fn source(mut conn: TcpStream, bytes: &AtomicU64, stop: &AtomicBool) -> Result<(), String> {
    conn.set_write_timeout(Some(POLL))
        .map_err(|e| e.to_string())?;
    let pattern = Pattern::new(CHUNK);
    let mut offset = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match conn.write(pattern.slice(offset, CHUNK)) {
            Ok(n) => {
                offset += n as u64;
                bytes.store(offset, Ordering::Relaxed);
            }
            Err(e) if would_block(&e) || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_slices_follow_the_stream() {
        let mut p = Pattern::new(1000);
        assert_eq!(p.slice(0, 3), &[0x5a, 1 ^ 0x5a, 2 ^ 0x5a]);
        assert_eq!(p.slice(251, 2), p.slice(0, 2));
        assert_eq!(p.slice(1000, 1)[0], (1000 % 251) as u8 ^ 0x5a);
        let direct = wire::sum16(p.slice(300, 777), 0);
        assert_eq!(p.sum(300, 777), direct);
        assert_eq!(p.sum(300 + 251, 777), direct, "cached by position");
    }

    #[test]
    fn sink_checks_and_counts_the_stream() {
        let peer = Peer::start(PeerRole::Sink { verify: true }, None).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", peer.port())).unwrap();
        let p = Pattern::new(5000);
        c.write_all(p.slice(0, 3000)).unwrap();
        c.write_all(p.slice(3000, 2000)).unwrap();
        drop(c);
        while peer.bytes() < 5000 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(peer.tid() > 0);
        peer.finish().unwrap();

        let peer = Peer::start(PeerRole::Sink { verify: true }, None).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", peer.port())).unwrap();
        c.write_all(p.slice(0, 100)).unwrap();
        c.write_all(p.slice(101, 100)).unwrap(); // a byte lost
        drop(c);
        let err = peer.finish().unwrap_err();
        assert!(err.contains("stream byte 100"), "{err}");
    }

    #[test]
    fn source_sends_the_stream() {
        let peer = Peer::start(PeerRole::Source, None).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", peer.port())).unwrap();
        let mut got = vec![0u8; 600_000];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got[..], Pattern::new(600_000).slice(0, 600_000)[..]);
        drop(c);
        peer.finish().unwrap();
    }
}
