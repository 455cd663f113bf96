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
//! * `GET_QUEUE_NUM` is answered by the relay with the number of queue pairs allowed
//!   (`--max-queue-pairs`), not passed on: vhost-user-backend answers with its number of
//!   vrings, twice that, while QEMU's net client compares the answer with the queue pairs
//!   it wants (`queues=`).
//! * daemon to frontend: bytes and descriptors pass unchanged.
//!
//! QEMU waits for each reply before sending the next request that needs one, so the relay's
//! own replies never interleave with the daemon's. Either side closing ends both, and so
//! does a frontend that sends more early enables than `MAX_HELD` or one that is not a plain
//! vring state: what the relay holds is bounded.
//!
//! A QEMU that wants more queue pairs than allowed checks our answer itself ("you are asking
//! more queues than supported"), having set up its first pair's vrings only (`SET_VRING_CALL`
//! and `SET_VRING_ERR` for vrings 0 and 1: nothing names the pairs it wanted), and hangs up;
//! starting up, QEMU 7.2 and 10 alike then reconnect at once, for ever (the server pauses
//! after such a connection). So a connection that ends within [`REFUSAL_WINDOW`] of the
//! answer, before any memory table, is logged as that refusal, with the number allowed and
//! what to change (rate-limited: the loop repeats it). A frontend that goes on to address a
//! vring beyond the allowed pairs anyway is refused with the pair it wanted named.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use netcore::ratelimit::RateLimit;
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

    /// The vring a message about one vring addresses: the low byte of the u64 body of
    /// `SET_VRING_KICK`/`CALL`/`ERR` (the next bit says "no descriptor"), else the first u32
    /// of a vring state or address.
    fn vring_index(&self) -> Option<u32> {
        let req = FrontendReq::try_from(self.request()).ok()?;
        match req {
            FrontendReq::SET_VRING_KICK
            | FrontendReq::SET_VRING_CALL
            | FrontendReq::SET_VRING_ERR => Some((self.u64_value()? & VRING_INDEX_MASK) as u32),
            FrontendReq::SET_VRING_NUM
            | FrontendReq::SET_VRING_ADDR
            | FrontendReq::SET_VRING_BASE
            | FrontendReq::GET_VRING_BASE
            | FrontendReq::SET_VRING_ENABLE
            | FrontendReq::SET_VRING_ENDIAN => {
                let bytes: [u8; 4] = self.payload.get(..4)?.try_into().ok()?;
                Some(u32::from_le_bytes(bytes))
            }
            _ => None,
        }
    }

    /// A short description for the trace log: the request and the vring it addresses.
    fn describe(&self) -> String {
        let name = FrontendReq::try_from(self.request()).map_or_else(
            |_| format!("request {}", self.request()),
            |r| format!("{r:?}"),
        );
        match self.vring_index() {
            Some(index) => format!("{name} vring {index}"),
            None => name,
        }
    }
}

/// The vring index bits of a `SET_VRING_KICK`/`CALL`/`ERR` body.
const VRING_INDEX_MASK: u64 = 0xff;

/// A connection that ends this soon after the relay answered `GET_QUEUE_NUM`, before any
/// memory table, is QEMU refusing the answer: it hangs up within microseconds, whereas a QEMU
/// that accepted it waits for its guest's driver.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(1);

/// The refusals logged: a QEMU that wants too many pairs reconnects in a loop.
static REFUSALS: RateLimit = RateLimit::new();

/// Sends the frontend a reply to `request` as the daemon would: version 1, a u64 body.
fn reply_u64(frontend: &UnixStream, request: u32, value: u64) -> io::Result<()> {
    let header = Header {
        request,
        flags: VhostUserHeaderFlag::REPLY.bits() | 0x1,
        size: 8,
    };
    send_all(frontend, &[&header.to_bytes(), &value.to_le_bytes()], &[])
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

/// The relay's view of negotiation, enough to know when enables may pass, how many queue
/// pairs there may be, and how far the frontend got.
#[derive(Debug)]
struct Negotiation {
    max_queue_pairs: u16,
    protocol_features_acked: bool,
    reply_ack: bool,
    held: Vec<Message>,
    /// When the relay answered `GET_QUEUE_NUM`.
    queue_num_answered: Option<Instant>,
    /// Whether the frontend sent guest memory (`SET_MEM_TABLE` or `ADD_MEM_REG`).
    memory_table: bool,
    /// Why the connection ended over the number of queue pairs, if it did.
    refusal: Option<String>,
}

impl Negotiation {
    fn new(max_queue_pairs: u16) -> Negotiation {
        Negotiation {
            max_queue_pairs,
            protocol_features_acked: false,
            reply_ack: false,
            held: Vec::new(),
            queue_num_answered: None,
            memory_table: false,
            refusal: None,
        }
    }

    /// Handles one frontend message: forwards it, answers it, holds it, or releases held ones
    /// after it.
    fn relay(
        &mut self,
        msg: Message,
        frontend: &UnixStream,
        daemon: &UnixStream,
    ) -> io::Result<()> {
        log::trace!("frontend: {}", msg.describe());
        if msg.is(FrontendReq::GET_QUEUE_NUM) {
            return self.answer_queue_num(&msg, frontend);
        }
        if let Some(index) = msg.vring_index() {
            let pair = index / 2;
            if pair >= u32::from(self.max_queue_pairs) {
                self.refuse(format!(
                    "QEMU wants queue pair {pair} (vring {index}) but at most {}: raise \
                     --max-queue-pairs or lower queues=",
                    self.allowed()
                ));
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("vring {index} beyond the queue pairs allowed"),
                ));
            }
        }
        if msg.is(FrontendReq::SET_MEM_TABLE) || msg.is(FrontendReq::ADD_MEM_REG) {
            self.memory_table = true;
        }
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

    /// Answers `GET_QUEUE_NUM` as the daemon would (a reply of the same request, version 1,
    /// u64 body) with the number of queue pairs allowed.
    fn answer_queue_num(&mut self, msg: &Message, frontend: &UnixStream) -> io::Result<()> {
        let pairs = u64::from(self.max_queue_pairs);
        reply_u64(frontend, msg.request(), pairs)?;
        log::debug!("answered GET_QUEUE_NUM: {pairs} queue pairs");
        self.queue_num_answered = Some(Instant::now());
        Ok(())
    }

    /// "N queue pair(s) are allowed (--max-queue-pairs N)", for refusals.
    fn allowed(&self) -> String {
        let n = self.max_queue_pairs;
        let (noun, verb) = if n == 1 {
            ("pair", "is")
        } else {
            ("pairs", "are")
        };
        format!("{n} queue {noun} {verb} allowed (--max-queue-pairs {n})")
    }

    /// Logs `why` as the reason this connection ends (rate-limited: QEMU reconnects at once
    /// and fails the same way) and keeps it for the [`Outcome`].
    fn refuse(&mut self, why: String) {
        match REFUSALS.allow() {
            Some(0) => log::error!("{why}"),
            Some(n) => log::error!("{why} ({n} more like this not logged)"),
            None => {}
        }
        self.refusal = Some(why);
    }

    /// Called when the frontend has gone: a QEMU that hangs up right after our answer to
    /// `GET_QUEUE_NUM`, never having sent guest memory, wants more queue pairs than that.
    fn frontend_gone(&mut self) {
        let Some(answered) = self.queue_num_answered else {
            return;
        };
        if !self.memory_table && answered.elapsed() < REFUSAL_WINDOW {
            self.refuse(format!(
                "QEMU hung up right after hearing that at most {}: it wants more (QEMU says \
                 \"you are asking more queues than supported\"); raise --max-queue-pairs or \
                 lower queues=",
                self.allowed()
            ));
        }
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
            // A u64 body of 0: success.
            reply_u64(frontend, msg.request(), 0)?;
        }
        msg.set_flags(msg.flags() & !VhostUserHeaderFlag::NEED_REPLY.bits());
        self.held.push(msg);
        Ok(())
    }
}

/// What became of a relayed connection, once both directions have ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the frontend sent guest memory: a connection that ended before it never served
    /// a guest (QEMU gave up on it, and may be about to retry at once).
    pub memory_table: bool,
    /// Why it ended over the number of queue pairs, if it did: the error logged (or left out
    /// of the log by its rate limit).
    pub refusal: Option<String>,
}

/// The two threads of one relayed connection, from [`spawn`].
#[derive(Debug)]
pub struct Relay {
    to_daemon: JoinHandle<Outcome>,
    to_frontend: JoinHandle<()>,
}

impl Relay {
    /// Waits for both directions to end.
    pub fn join(self) -> Outcome {
        let _ = self.to_frontend.join();
        self.to_daemon.join().unwrap_or(Outcome {
            memory_table: false,
            refusal: None,
        })
    }
}

/// Relays between `frontend` (QEMU) and `daemon` (the vhost-user-backend daemon's socket) on
/// two threads, telling the frontend that at most `max_queue_pairs` queue pairs are served.
/// Both end when either side closes.
pub fn spawn(frontend: UnixStream, daemon: UnixStream, max_queue_pairs: u16) -> io::Result<Relay> {
    let (fe_in, fe_out) = (frontend.try_clone()?, frontend);
    let (be_in, be_out) = (daemon.try_clone()?, daemon);

    let to_daemon = thread::Builder::new()
        .name("relay-to-daemon".into())
        .spawn(move || {
            let mut fe_in = fe_in;
            let mut negotiation = Negotiation::new(max_queue_pairs);
            loop {
                match read_message(&mut fe_in) {
                    Ok(Some(msg)) => {
                        if let Err(e) = negotiation.relay(msg, &fe_in, &be_out) {
                            log::debug!("relay to daemon ended: {e}");
                            break;
                        }
                    }
                    Ok(None) => {
                        negotiation.frontend_gone();
                        break;
                    }
                    Err(e) => {
                        log::debug!("frontend connection ended: {e}");
                        negotiation.frontend_gone();
                        break;
                    }
                }
            }
            let _ = be_out.shutdown(Shutdown::Both);
            let _ = fe_in.shutdown(Shutdown::Both);
            Outcome {
                memory_table: negotiation.memory_table,
                refusal: negotiation.refusal,
            }
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

    Ok(Relay {
        to_daemon,
        to_frontend,
    })
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
        let relay = spawn(fe, be, 1).unwrap();

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
        relay.join();
    }

    #[test]
    fn descriptors_pass_with_their_message() {
        let (qemu, fe) = UnixStream::pair().unwrap();
        let (be, daemon) = UnixStream::pair().unwrap();
        let _relay = spawn(fe, be, 1).unwrap();
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
            let relay = spawn(fe, be, 1).unwrap();
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
            relay.join();
        }
    }

    #[test]
    fn oversized_message_closes_both_sides() {
        let (mut qemu, fe) = UnixStream::pair().unwrap();
        let (be, mut daemon) = UnixStream::pair().unwrap();
        let relay = spawn(fe, be, 1).unwrap();
        let mut header = Vec::new();
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        qemu.write_all(&header).unwrap();
        let mut rest = Vec::new();
        daemon.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        relay.join();
    }

    fn vring_file(req: FrontendReq, index: u64) -> Vec<u8> {
        message(req, 1, &index.to_le_bytes())
    }

    /// GET_QUEUE_NUM gets the number of queue pairs from the relay, as a reply the daemon
    /// would send; the daemon never sees it. Later messages pass as before.
    #[test]
    fn get_queue_num_is_answered_with_the_pairs_allowed() {
        let (mut qemu, fe) = UnixStream::pair().unwrap();
        let (be, mut daemon) = UnixStream::pair().unwrap();
        let relay = spawn(fe, be, 3).unwrap();

        qemu.write_all(&message(FrontendReq::GET_QUEUE_NUM, 1, &[]))
            .unwrap();
        let reply = read_exactly(&mut qemu, 20);
        let header = Header::parse(reply[..HEADER_LEN].try_into().unwrap());
        assert_eq!(
            header,
            Header {
                request: u32::from(FrontendReq::GET_QUEUE_NUM),
                flags: VhostUserHeaderFlag::REPLY.bits() | 0x1,
                size: 8,
            }
        );
        assert_eq!(u64::from_le_bytes(reply[12..].try_into().unwrap()), 3);

        // The highest vring of the third pair passes; the daemon's first bytes are its.
        let call = vring_file(FrontendReq::SET_VRING_CALL, 5);
        qemu.write_all(&call).unwrap();
        assert_eq!(read_exactly(&mut daemon, call.len()), call);
        let mem = message(FrontendReq::SET_MEM_TABLE, 1, &[0; 8]);
        qemu.write_all(&mem).unwrap();
        assert_eq!(read_exactly(&mut daemon, mem.len()), mem);

        drop(qemu);
        let outcome = relay.join();
        assert_eq!(
            outcome,
            Outcome {
                memory_table: true,
                refusal: None
            }
        );
    }

    /// A frontend addressing a vring beyond the pairs allowed, by any vring message (an early
    /// enable too), ends the connection; the daemon gets nothing of it, and the refusal names
    /// the pair and vring wanted and the option.
    #[test]
    fn vrings_beyond_the_pairs_allowed_are_refused() {
        let cases = [
            vring_file(FrontendReq::SET_VRING_CALL, 4),
            vring_file(FrontendReq::SET_VRING_KICK, 4 | 0x100),
            enable(4, 1),
            message(FrontendReq::SET_VRING_NUM, 1, &[4, 0, 0, 0, 0, 1, 0, 0]),
        ];
        for (i, msg) in cases.iter().enumerate() {
            let (mut qemu, fe) = UnixStream::pair().unwrap();
            let (be, mut daemon) = UnixStream::pair().unwrap();
            let relay = spawn(fe, be, 2).unwrap();
            qemu.write_all(msg).unwrap();
            let mut rest = Vec::new();
            daemon.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "case {i}");
            let refusal = relay.join().refusal.unwrap_or_else(|| panic!("case {i}"));
            assert_eq!(
                refusal,
                "QEMU wants queue pair 2 (vring 4) but at most 2 queue pairs are allowed \
                 (--max-queue-pairs 2): raise --max-queue-pairs or lower queues=",
                "case {i}"
            );
        }
    }

    /// QEMU that wants more pairs than the answer says hangs up at once, before guest memory:
    /// that is the refusal logged. One that goes on to send guest memory, or that never asked,
    /// is not.
    #[test]
    fn a_hang_up_right_after_the_answer_is_a_refusal() {
        for (case, after_answer) in [
            ("hang-up", None),
            ("memory", Some(FrontendReq::SET_MEM_TABLE)),
            ("memory slots", Some(FrontendReq::ADD_MEM_REG)),
            ("never asked", Some(FrontendReq::GET_FEATURES)),
        ] {
            let (mut qemu, fe) = UnixStream::pair().unwrap();
            let (be, mut daemon) = UnixStream::pair().unwrap();
            let relay = spawn(fe, be, 1).unwrap();
            if case != "never asked" {
                qemu.write_all(&message(FrontendReq::GET_QUEUE_NUM, 1, &[]))
                    .unwrap();
                read_exactly(&mut qemu, 20);
            }
            // Pair 0's vrings, as QEMU sets them up before it checks the answer.
            for index in [0, 1] {
                let call = vring_file(FrontendReq::SET_VRING_CALL, index);
                qemu.write_all(&call).unwrap();
                assert_eq!(read_exactly(&mut daemon, call.len()), call, "{case}");
            }
            if let Some(req) = after_answer {
                let msg = message(req, 1, &[0; 8]);
                qemu.write_all(&msg).unwrap();
                assert_eq!(read_exactly(&mut daemon, msg.len()), msg, "{case}");
            }
            drop(qemu);
            let outcome = relay.join();
            match case {
                "hang-up" => assert_eq!(
                    outcome.refusal.as_deref(),
                    Some(
                        "QEMU hung up right after hearing that at most 1 queue pair is allowed \
                         (--max-queue-pairs 1): it wants more (QEMU says \"you are asking more \
                         queues than supported\"); raise --max-queue-pairs or lower queues="
                    )
                ),
                _ => assert_eq!(outcome.refusal, None, "{case}"),
            }
            assert_eq!(outcome.memory_table, case.starts_with("memory"), "{case}");
        }
    }
}
