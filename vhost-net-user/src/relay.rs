//! A relay on the vhost-user control socket that makes QEMU acceptable to the vhost crate.
//!
//! # Theory of operation
//!
//! QEMU's virtio-net (7.2 and 10.0 alike) sends `SET_VRING_ENABLE` right after connecting,
//! before `SET_FEATURES`, and does not send it again when the driver starts. The vhost crate (0.18)
//! refuses an enable before `PROTOCOL_FEATURES` is acked (`InactiveFeature`) and drops the
//! connection, so the guest never gets a link. We may not patch the crate, so the daemon
//! talks to QEMU through this relay instead:
//!
//! * frontend to daemon, message by message (header, payload, attached descriptors): an
//!   early `SET_VRING_ENABLE` is held back; if QEMU asked for a reply (`NEED_REPLY` with
//!   `REPLY_ACK` negotiated) the relay acks it itself. Right after the first `SET_FEATURES`
//!   that acks `PROTOCOL_FEATURES` has been passed on, the held enables follow it in their
//!   original order, with `NEED_REPLY` cleared since QEMU already has its answer. Everything
//!   else passes unchanged and in order.
//! * daemon to frontend: bytes and descriptors pass unchanged.
//!
//! QEMU waits for each reply before sending the next request that needs one, so the relay's
//! own acks never interleave with the daemon's replies. Either side closing ends both, and so
//! does a frontend that sends more early enables than `MAX_HELD` or one that is not a plain
//! vring state: what the relay holds is bounded.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    FrontendReq, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::sys;

/// A vhost-user message header: request, flags and payload size, each 4 bytes little-endian.
///
/// Written out here because the vhost crate (0.18) keeps its `VhostUserMsgHeader` private to
/// itself; the request codes and flag bits are still the crate's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    request: u32,
    flags: u32,
    size: u32,
}

const HEADER_LEN: usize = 12;

impl Header {
    fn parse(bytes: &[u8; HEADER_LEN]) -> Header {
        let field = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        Header {
            request: field(0),
            flags: field(4),
            size: field(8),
        }
    }

    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..4].copy_from_slice(&self.request.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.flags.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.size.to_le_bytes());
        bytes
    }
}

/// Larger payloads are not vhost-user messages we know; the connection is closed.
const MAX_PAYLOAD: usize = 64 * 1024;

/// Early `SET_VRING_ENABLE`s held at most: one per queue of the most queue pairs vhost-user
/// allows a net device (0x8000 / 2 is far beyond any QEMU; 256 covers 128 pairs).
const MAX_HELD: usize = 256;

/// One vhost-user message as it crossed the socket.
#[derive(Debug)]
struct Message {
    header: [u8; HEADER_LEN],
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Message {
    fn request(&self) -> u32 {
        Header::parse(&self.header).request
    }

    fn flags(&self) -> u32 {
        Header::parse(&self.header).flags
    }

    fn set_flags(&mut self, flags: u32) {
        self.header = Header {
            flags,
            ..Header::parse(&self.header)
        }
        .to_bytes();
    }

    /// The u64 body of SET_FEATURES / SET_PROTOCOL_FEATURES.
    fn u64_value(&self) -> Option<u64> {
        let bytes: [u8; 8] = self.payload.get(..8)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    fn is(&self, req: FrontendReq) -> bool {
        self.request() == u32::from(req)
    }
}

/// Reads one message from the frontend; `Ok(None)` at a clean end of stream.
fn read_message(sock: &mut UnixStream) -> io::Result<Option<Message>> {
    let mut header = [0u8; HEADER_LEN];
    let (mut got, fds) = sys::recv_with_fds(sock, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    while got < HEADER_LEN {
        let n = sock.read(&mut header[got..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let size = Header::parse(&header).size as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message of {size} bytes"),
        ));
    }
    let mut payload = vec![0u8; size];
    sock.read_exact(&mut payload)?;
    Ok(Some(Message {
        header,
        payload,
        fds,
    }))
}

fn send_all(sock: &UnixStream, parts: &[&[u8]], fds: &[RawFd]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let sent = sock
        .send_with_fds(parts, fds)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    if sent < total {
        let rest: Vec<u8> = parts.concat();
        (&*sock).write_all(&rest[sent..])?;
    }
    Ok(())
}

/// How long the daemon may take to read a message carrying descriptors before they are marked
/// close-on-exec anyway (it is waiting in `recvmsg`: microseconds).
const DAEMON_READ_WAIT: Duration = Duration::from_secs(1);

/// Passes `msg` to the daemon. The vhost crate receives descriptors without
/// `MSG_CMSG_CLOEXEC`, so once the daemon has read a message that carries some (its copies
/// exist then), every descriptor is marked close-on-exec: guest RAM and the kick and call
/// eventfds never reach a child process.
fn forward(to: &UnixStream, msg: &Message) -> io::Result<()> {
    let fds: Vec<RawFd> = msg.fds.iter().map(|fd| fd.as_raw_fd()).collect();
    send_all(to, &[&msg.header, &msg.payload], &fds)?;
    if !fds.is_empty() {
        let deadline = Instant::now() + DAEMON_READ_WAIT;
        while sys::unread_by_peer(to)? > 0 {
            if Instant::now() > deadline {
                log::debug!("the daemon has not read a message with descriptors after 1 s");
                break;
            }
            thread::sleep(Duration::from_micros(50));
        }
        sys::mark_all_close_on_exec()?;
    }
    Ok(())
}

/// The relay's view of negotiation, enough to know when enables may pass.
#[derive(Debug, Default)]
struct Negotiation {
    protocol_features_acked: bool,
    reply_ack: bool,
    held: Vec<Message>,
}

impl Negotiation {
    /// Handles one frontend message: forwards it, holds it, or releases held ones after it.
    fn relay(
        &mut self,
        msg: Message,
        frontend: &UnixStream,
        daemon: &UnixStream,
    ) -> io::Result<()> {
        if msg.is(FrontendReq::SET_PROTOCOL_FEATURES) {
            self.reply_ack = msg
                .u64_value()
                .is_some_and(|v| v & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0);
        }
        if msg.is(FrontendReq::SET_VRING_ENABLE) && !self.protocol_features_acked {
            return self.hold(msg, frontend);
        }
        forward(daemon, &msg)?;
        if msg.is(FrontendReq::SET_FEATURES)
            && msg
                .u64_value()
                .is_some_and(|v| v & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0)
        {
            self.protocol_features_acked = true;
            if !self.held.is_empty() {
                log::debug!(
                    "replaying {} SET_VRING_ENABLE sent before SET_FEATURES",
                    self.held.len()
                );
            }
            for held in self.held.drain(..) {
                forward(daemon, &held)?;
            }
        }
        Ok(())
    }

    fn hold(&mut self, mut msg: Message, frontend: &UnixStream) -> io::Result<()> {
        // An enable is a vring state (8 bytes) and nothing else; QEMU sends one per queue. What
        // is held is bounded, whoever connects.
        if self.held.len() >= MAX_HELD || msg.payload.len() != 8 || !msg.fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "early SET_VRING_ENABLE refused ({} held, {} bytes, {} descriptors)",
                    self.held.len(),
                    msg.payload.len(),
                    msg.fds.len()
                ),
            ));
        }
        let need_reply = msg.flags() & VhostUserHeaderFlag::NEED_REPLY.bits() != 0;
        if need_reply && self.reply_ack {
            // Version 1, a reply, and a u64 body of 0: success.
            let header = Header {
                request: msg.request(),
                flags: VhostUserHeaderFlag::REPLY.bits() | 0x1,
                size: 8,
            };
            send_all(frontend, &[&header.to_bytes(), &0u64.to_le_bytes()], &[])?;
        }
        msg.set_flags(msg.flags() & !VhostUserHeaderFlag::NEED_REPLY.bits());
        self.held.push(msg);
        Ok(())
    }
}

/// Relays between `frontend` (QEMU) and `daemon` (the vhost-user-backend daemon's socket) on
/// two threads; returns their handles. Both end when either side closes.
pub fn spawn(frontend: UnixStream, daemon: UnixStream) -> io::Result<[JoinHandle<()>; 2]> {
    let (fe_in, fe_out) = (frontend.try_clone()?, frontend);
    let (be_in, be_out) = (daemon.try_clone()?, daemon);

    let to_daemon = thread::Builder::new()
        .name("relay-to-daemon".into())
        .spawn(move || {
            let mut fe_in = fe_in;
            let mut negotiation = Negotiation::default();
            loop {
                match read_message(&mut fe_in) {
                    Ok(Some(msg)) => {
                        if let Err(e) = negotiation.relay(msg, &fe_in, &be_out) {
                            log::debug!("relay to daemon ended: {e}");
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log::debug!("frontend connection ended: {e}");
                        break;
                    }
                }
            }
            let _ = be_out.shutdown(Shutdown::Both);
            let _ = fe_in.shutdown(Shutdown::Both);
        })?;

    let to_frontend = thread::Builder::new()
        .name("relay-to-frontend".into())
        .spawn(move || {
            let mut buf = vec![0u8; MAX_PAYLOAD];
            loop {
                match sys::recv_with_fds(&be_in, &mut buf) {
                    Ok((0, _)) => break,
                    Ok((n, fds)) => {
                        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
                        if let Err(e) = send_all(&fe_out, &[&buf[..n]], &raw) {
                            log::debug!("relay to frontend ended: {e}");
                            break;
                        }
                    }
                    Err(e) => {
                        log::debug!("daemon connection ended: {e}");
                        break;
                    }
                }
            }
            let _ = fe_out.shutdown(Shutdown::Both);
            let _ = be_in.shutdown(Shutdown::Both);
        })?;

    Ok([to_daemon, to_frontend])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(req: FrontendReq, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&u32::from(req).to_le_bytes());
        m.extend_from_slice(&flags.to_le_bytes());
        m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn read_exactly(sock: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        sock.read_exact(&mut buf).unwrap();
        buf
    }

    fn enable(index: u32, flags: u32) -> Vec<u8> {
        let mut body = index.to_le_bytes().to_vec();
        body.extend_from_slice(&1u32.to_le_bytes());
        message(FrontendReq::SET_VRING_ENABLE, flags, &body)
    }

    #[test]
    fn early_enables_follow_set_features() {
        let (mut qemu, fe) = UnixStream::pair().unwrap();
        let (be, mut daemon) = UnixStream::pair().unwrap();
        let handles = spawn(fe, be).unwrap();

        let reply_ack = VhostUserProtocolFeatures::REPLY_ACK.bits().to_le_bytes();
        let set_proto = message(FrontendReq::SET_PROTOCOL_FEATURES, 1, &reply_ack);
        qemu.write_all(&set_proto).unwrap();
        assert_eq!(read_exactly(&mut daemon, set_proto.len()), set_proto);

        // Two early enables, the second asking for a reply: the relay answers it itself.
        qemu.write_all(&enable(0, 1)).unwrap();
        qemu.write_all(&enable(1, 1 | 0x8)).unwrap();
        let ack = read_exactly(&mut qemu, 20);
        assert_eq!(&ack[0..4], &18u32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(ack[4..8].try_into().unwrap()) & 0x4, 0x4);
        assert_eq!(&ack[12..20], &[0; 8]);

        let features = (VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() | 1 << 32).to_le_bytes();
        let set_features = message(FrontendReq::SET_FEATURES, 1, &features);
        qemu.write_all(&set_features).unwrap();
        assert_eq!(read_exactly(&mut daemon, set_features.len()), set_features);
        assert_eq!(read_exactly(&mut daemon, 20), enable(0, 1));
        assert_eq!(
            read_exactly(&mut daemon, 20),
            enable(1, 1),
            "NEED_REPLY cleared"
        );

        // Later enables pass straight through, and replies flow back unchanged.
        qemu.write_all(&enable(0, 1 | 0x8)).unwrap();
        assert_eq!(read_exactly(&mut daemon, 20), enable(0, 1 | 0x8));
        daemon.write_all(b"reply-bytes").unwrap();
        assert_eq!(read_exactly(&mut qemu, 11), b"reply-bytes");

        drop(qemu);
        let mut rest = Vec::new();
        daemon.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn descriptors_pass_with_their_message() {
        let (qemu, fe) = UnixStream::pair().unwrap();
        let (be, daemon) = UnixStream::pair().unwrap();
        let _handles = spawn(fe, be).unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let msg = message(FrontendReq::SET_VRING_KICK, 1, &0u64.to_le_bytes());
        qemu.send_with_fds(&[&msg[..]], &[file.as_raw_fd()])
            .unwrap();
        let mut buf = [0u8; 20];
        let (n, fds) = sys::recv_with_fds(&daemon, &mut buf).unwrap();
        assert_eq!(n, 20);
        assert_eq!(&buf[..], &msg[..]);
        assert_eq!(fds.len(), 1);
    }

    /// A frontend cannot make the relay hold more than [`MAX_HELD`] early enables, nor hold
    /// descriptors or bodies with one.
    #[test]
    fn held_enables_are_bounded() {
        for case in ["too many", "descriptors", "body"] {
            let (mut qemu, fe) = UnixStream::pair().unwrap();
            let (be, mut daemon) = UnixStream::pair().unwrap();
            let handles = spawn(fe, be).unwrap();
            match case {
                "too many" => {
                    for i in 0..=MAX_HELD {
                        if qemu.write_all(&enable(i as u32, 1)).is_err() {
                            break;
                        }
                    }
                }
                "descriptors" => {
                    let file = std::fs::File::open("/dev/null").unwrap();
                    qemu.send_with_fds(&[&enable(0, 1)[..]], &[file.as_raw_fd()])
                        .unwrap();
                }
                _ => {
                    let msg = message(FrontendReq::SET_VRING_ENABLE, 1, &[0; 4096]);
                    qemu.write_all(&msg).unwrap();
                }
            }
            // The relay ends both sides; the daemon got nothing.
            let mut rest = Vec::new();
            daemon.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "{case}");
            for h in handles {
                h.join().unwrap();
            }
        }
    }

    #[test]
    fn oversized_message_closes_both_sides() {
        let (mut qemu, fe) = UnixStream::pair().unwrap();
        let (be, mut daemon) = UnixStream::pair().unwrap();
        let handles = spawn(fe, be).unwrap();
        let mut header = Vec::new();
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        qemu.write_all(&header).unwrap();
        let mut rest = Vec::new();
        daemon.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        for h in handles {
            h.join().unwrap();
        }
    }
}
