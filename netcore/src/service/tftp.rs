//! slirp's read-only TFTP server on the gateway address, port 69 (`tftp=DIR`), which network
//! boot (PXE, iPXE, `bootfile=`) fetches its files from.
//!
//! # Theory of operation
//!
//! Like slirp's `tftp.c`, the server answers read requests (RRQ) in octet mode from up to 20
//! sessions, one per guest address and port, each free again after 5 s without a message.
//! Every reply comes from port 69 of the address the guest wrote to. An RRQ is checked in
//! slirp's order, with slirp's errors: no `tftp=` or a malformed request is "Access
//! violation" (2), a mode other than octet "Unsupported transfer mode" (4), a name with a
//! `../` or ending in `/` "Access violation", a file that does not open "File not found" (1).
//! The first two options of `tsize` and `blksize` are answered in an OACK (a `tsize` of 0 asks
//! for the size; `blksize` is capped at 1428, which fits a 1500-byte MTU, or lower to fit a
//! smaller link MTU, since nothing here fragments); otherwise block 1
//! goes out at once. A request from a client that has a session starts it afresh; with all 20
//! sessions busy, requests go unanswered. An ERROR from the client ends its session.
//!
//! Unlike slirp, an ACK is matched to the block it acknowledges. slirp sends the next block on
//! any ACK, so a client that re-acknowledges after a lost DATA gets the wrong block; here the
//! ACK of the last block sent brings the next one, and the ACK of the one before (the client
//! timed out waiting) brings the last block again, unless it was sent less than
//! [`RESEND_AFTER`] ago: a duplicate DATA must not start a duplicate chain (RFC 1123's
//! sorcerer's apprentice). The session outlives the last block until its ACK, so that block can
//! be sent again too. Stricter than slirp, a name with a `..` component is refused, only
//! regular files are served (a directory or a FIFO named under the root fails as not found,
//! and opening never blocks), and no symbolic link below the root is followed (slirp follows
//! them out of the root): a link is "File not found".

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netplan::{MacAddr, NetPlan};
use smoltcp::wire::IpProtocol;

use super::Verdict;
use crate::wire::frame::Frame;
use crate::wire::ip::{self, Addrs, PacketMeta};
use crate::wire::ipv4::{self, Ident};
use crate::wire::{ethernet, ipv6, udp};

pub const SERVER_PORT: u16 = 69;
const MAX_SESSIONS: usize = 20;
/// A session with no message for this long gives its place to a new request.
const SESSION_IDLE: Duration = Duration::from_secs(5);
/// A re-acknowledged block is sent again only this long after it was last sent.
pub const RESEND_AFTER: Duration = Duration::from_millis(200);
const DEFAULT_BLOCK_SIZE: usize = 512;
/// slirp's `TFTP_BLOCKSIZE_MAX`: a block fits one frame at MTU 1500.
pub const MAX_BLOCK_SIZE: usize = 1428;
/// slirp's `TFTP_FILENAME_MAX`, with the terminating zero.
const MAX_FILENAME: usize = 512;
/// The TFTP header in front of a DATA block: opcode and block number.
const DATA_HEADER_LEN: usize = 4;

const OP_RRQ: u16 = 1;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

const FILE_NOT_FOUND: (u16, &str) = (1, "File not found");
const ACCESS_VIOLATION: (u16, &str) = (2, "Access violation");
const UNSUPPORTED_MODE: (u16, &str) = (4, "Unsupported transfer mode");

/// Whether a guest UDP datagram to `dst`:`dst_port` is for the TFTP server: port 69 of the
/// gateway address, of either family, whether or not `tftp=` is set (slirp answers "Access
/// violation" then, rather than passing the datagram to the host).
pub fn is_request(plan: &NetPlan, dst: IpAddr, dst_port: u16) -> bool {
    dst_port == SERVER_PORT
        && match dst {
            IpAddr::V4(a) => plan.ipv4.as_ref().is_some_and(|v4| v4.gateway == a),
            IpAddr::V6(a) => plan.ipv6.as_ref().is_some_and(|v6| v6.gateway == a),
        }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TftpCounters {
    /// Read requests that found their file.
    pub transfers: u64,
    /// Transfers whose last block the client acknowledged.
    pub completed: u64,
    pub data_blocks: u64,
    /// DATA blocks sent again for a client that re-acknowledged the one before.
    pub resent: u64,
    pub errors_sent: u64,
    /// Read requests unanswered because every session was busy.
    pub busy: u64,
    /// Messages that matched no session or no block, or were not ours to serve.
    pub ignored: u64,
}

#[derive(Debug)]
struct Session {
    client: SocketAddr,
    file: File,
    block_size: usize,
    /// Number of the last DATA block sent (0: none yet, or only the OACK).
    sent: u32,
    /// Length of that block: shorter than `block_size` once the file is all sent.
    sent_len: usize,
    sent_at: Instant,
    last_activity: Instant,
}

impl Session {
    fn finished(&self) -> bool {
        self.sent > 0 && self.sent_len < self.block_size
    }
}

/// The guest-facing side of one exchange: who wrote, to which address, and how frames to the
/// guest are addressed.
#[derive(Debug)]
pub struct Exchange<'a> {
    /// From the guest's address to the server's.
    pub addrs: Addrs,
    pub client_port: u16,
    pub guest_mac: MacAddr,
    pub gateway_mac: MacAddr,
    pub ident: &'a mut Ident,
    pub now: Instant,
}

impl Exchange<'_> {
    /// The guest's address and port.
    pub fn client(&self) -> SocketAddr {
        SocketAddr::new(self.addrs.src(), self.client_port)
    }

    /// The address the guest wrote to.
    pub fn server(&self) -> IpAddr {
        self.addrs.dst()
    }
}

/// The TFTP server of one engine.
#[derive(Debug)]
pub struct Server {
    root: Option<PathBuf>,
    /// The link MTU: a negotiated block must fit one packet, as we never fragment.
    mtu: u16,
    sessions: Vec<Option<Session>>,
    pub counters: TftpCounters,
}

impl Server {
    pub fn new(plan: &NetPlan) -> Self {
        Server {
            root: plan.tftp_root.clone(),
            mtu: plan.mtu,
            sessions: (0..MAX_SESSIONS).map(|_| None).collect(),
            counters: TftpCounters::default(),
        }
    }

    /// Sessions in use (not yet given up).
    pub fn sessions(&self) -> usize {
        self.sessions.iter().filter(|s| s.is_some()).count()
    }

    /// Answers `msg`, the UDP payload the guest sent in `ex`; a reply frame goes into `out`.
    pub fn handle(&mut self, ex: &mut Exchange<'_>, msg: &[u8], out: &mut Vec<u8>) -> Verdict {
        let msg = Frame::new(msg);
        let Some(opcode) = msg.u16(0) else {
            return Verdict::Malformed;
        };
        match (opcode, msg.u16(2)) {
            (OP_RRQ, _) => self.read_request(ex, msg.from(2).map_or(&[], |m| m.bytes()), out),
            (OP_ACK, Some(block)) => self.ack(ex, block, out),
            (OP_ERROR, _) => {
                match self.find(ex.client()) {
                    Some(i) => self.sessions[i] = None,
                    None => self.counters.ignored += 1,
                }
                Verdict::Consumed
            }
            // Writes and anything else go unanswered, as in slirp.
            _ => {
                self.counters.ignored += 1;
                Verdict::Consumed
            }
        }
    }

    /// The largest `blksize` granted: slirp's 1428, less where the link MTU is smaller (slirp
    /// would fragment; we do not), but never below the default block.
    fn max_block_size(&self, server: IpAddr) -> usize {
        let headers =
            ip::l2_l3_len(&server) - ethernet::HEADER_LEN + udp::HEADER_LEN + DATA_HEADER_LEN;
        usize::from(self.mtu)
            .saturating_sub(headers)
            .clamp(DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE)
    }

    fn find(&self, client: SocketAddr) -> Option<usize> {
        self.sessions
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.client == client))
    }

    /// A free place, or one idle for longer than [`SESSION_IDLE`].
    fn allocate(&mut self, now: Instant) -> Option<usize> {
        self.sessions.iter().position(|s| match s {
            None => true,
            Some(s) => now.duration_since(s.last_activity) > SESSION_IDLE,
        })
    }

    /// An RRQ; `req` follows the opcode. The checks come in slirp's order, so that the same
    /// request gets the same error.
    fn read_request(&mut self, ex: &mut Exchange<'_>, req: &[u8], out: &mut Vec<u8>) -> Verdict {
        if let Some(old) = self.find(ex.client()) {
            self.sessions[old] = None;
        }
        let Some(slot) = self.allocate(ex.now) else {
            self.counters.busy += 1;
            return Verdict::Consumed;
        };
        let Some(root) = &self.root else {
            return self.error(ex, ACCESS_VIOLATION, out);
        };
        let Some(name_len) = req.iter().take(MAX_FILENAME).position(|&b| b == 0) else {
            return self.error(ex, ACCESS_VIOLATION, out);
        };
        let name = &req[..name_len];
        let mut at = name_len + 1;
        if req.len() - at < b"octet\0".len() {
            return self.error(ex, ACCESS_VIOLATION, out);
        }
        if !c_string(&req[at..]).eq_ignore_ascii_case(b"octet") {
            return self.error(ex, UNSUPPORTED_MODE, out);
        }
        at += b"octet\0".len();
        if !name_is_allowed(name) {
            return self.error(ex, ACCESS_VIOLATION, out);
        }
        let Some(file) = open_beneath(root, name) else {
            return self.error(ex, FILE_NOT_FOUND, out);
        };
        if req.last() != Some(&0) {
            return self.error(ex, ACCESS_VIOLATION, out);
        }

        // The options: the first two of tsize and blksize that appear, others skipped.
        let mut block_size = DEFAULT_BLOCK_SIZE;
        let mut answered: [(&str, u64); 2] = [("", 0); 2];
        let mut count = 0;
        while at < req.len() && count < answered.len() {
            let key = c_string(&req[at..]);
            at += key.len() + 1;
            if at >= req.len() {
                return self.error(ex, ACCESS_VIOLATION, out);
            }
            let value = c_string(&req[at..]);
            at += value.len() + 1;
            if key.eq_ignore_ascii_case(b"tsize") {
                let asked = atoi(value);
                let size = if asked == 0 {
                    match file.metadata() {
                        Ok(m) => m.len(),
                        Err(_) => return self.error(ex, FILE_NOT_FOUND, out),
                    }
                } else {
                    // slirp prints the client's value back with %u.
                    u64::from(asked as u32)
                };
                answered[count] = ("tsize", size);
                count += 1;
            } else if key.eq_ignore_ascii_case(b"blksize") {
                let asked = atoi(value);
                if asked > 0 {
                    block_size = (asked as usize).min(self.max_block_size(ex.server()));
                    answered[count] = ("blksize", block_size as u64);
                    count += 1;
                }
            }
        }

        self.sessions[slot] = Some(Session {
            client: ex.client(),
            file,
            block_size,
            sent: 0,
            sent_len: block_size,
            sent_at: ex.now,
            last_activity: ex.now,
        });
        self.counters.transfers += 1;
        if count > 0 {
            let body = start_reply(ex, out);
            out.extend_from_slice(&OP_OACK.to_be_bytes());
            for (key, value) in &answered[..count] {
                out.extend_from_slice(key.as_bytes());
                out.push(0);
                // Writing to a vector cannot fail.
                let _ = write!(out, "{value}\0");
            }
            finish_reply(ex, body, out);
            return Verdict::Reply;
        }
        self.send_block(slot, 1, ex, out)
    }

    /// An ACK of block `block` (16 bits, wrapping, as on the wire).
    fn ack(&mut self, ex: &mut Exchange<'_>, block: u16, out: &mut Vec<u8>) -> Verdict {
        let Some(slot) = self.find(ex.client()) else {
            self.counters.ignored += 1;
            return Verdict::Consumed;
        };
        let Some(session) = self.sessions[slot].as_mut() else {
            return Verdict::Consumed;
        };
        session.last_activity = ex.now;
        let sent = session.sent;
        if block == sent as u16 {
            if session.finished() {
                self.sessions[slot] = None;
                self.counters.completed += 1;
                return Verdict::Consumed;
            }
            return self.send_block(slot, sent + 1, ex, out);
        }
        if sent > 0
            && block == (sent - 1) as u16
            && ex.now.duration_since(session.sent_at) >= RESEND_AFTER
        {
            self.counters.resent += 1;
            return self.send_block(slot, sent, ex, out);
        }
        self.counters.ignored += 1;
        Verdict::Consumed
    }

    /// Sends DATA block `number` (from 1) of the session in `slot`.
    fn send_block(
        &mut self,
        slot: usize,
        number: u32,
        ex: &mut Exchange<'_>,
        out: &mut Vec<u8>,
    ) -> Verdict {
        let Some(Session {
            file, block_size, ..
        }) = self.sessions[slot].as_ref()
        else {
            return Verdict::Consumed;
        };
        let block_size = *block_size;
        let body = start_reply(ex, out);
        out.extend_from_slice(&OP_DATA.to_be_bytes());
        out.extend_from_slice(&(number as u16).to_be_bytes());
        let data_at = out.len();
        out.resize(data_at + block_size, 0);
        let offset = u64::from(number - 1) * block_size as u64;
        let Some(len) = read_fully(file, &mut out[data_at..], offset) else {
            // The error ends the session.
            return self.error(ex, FILE_NOT_FOUND, out);
        };
        out.truncate(data_at + len);
        finish_reply(ex, body, out);
        if let Some(session) = self.sessions[slot].as_mut() {
            session.sent = number;
            session.sent_len = len;
            session.sent_at = ex.now;
            session.last_activity = ex.now;
        }
        self.counters.data_blocks += 1;
        Verdict::Reply
    }

    /// An ERROR for the client of `ex`; as in slirp, it ends the client's session (if any).
    fn error(
        &mut self,
        ex: &mut Exchange<'_>,
        (code, text): (u16, &str),
        out: &mut Vec<u8>,
    ) -> Verdict {
        if let Some(slot) = self.find(ex.client()) {
            self.sessions[slot] = None;
        }
        let body = start_reply(ex, out);
        out.extend_from_slice(&OP_ERROR.to_be_bytes());
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        out.push(0);
        finish_reply(ex, body, out);
        self.counters.errors_sent += 1;
        Verdict::Reply
    }
}

/// The bytes of `bytes` up to its first zero (all of it if none).
fn c_string(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// C's `atoi` as slirp uses it: optional blanks and sign, then digits; anything else ends it,
/// and no digits is 0. Saturates rather than overflowing.
fn atoi(text: &[u8]) -> i64 {
    let s = text.trim_ascii_start();
    let (negative, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut value: i64 = 0;
    for &d in digits.iter().take_while(|d| d.is_ascii_digit()) {
        value = value.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    let value = value.min(i64::from(i32::MAX));
    if negative { -value } else { value }
}

/// slirp's checks on a requested name (no `../`, no trailing `/`, not empty), and ours: no
/// `..` component at all.
fn name_is_allowed(name: &[u8]) -> bool {
    !name.is_empty()
        && name.last() != Some(&b'/')
        && !name.windows(3).any(|w| w == b"../")
        && !name.split(|&b| b == b'/').any(|part| part == b"..")
}

/// Opens `name` beneath `root` for reading if it is a regular file reached without following
/// a symbolic link, and without blocking (a FIFO would). The root itself is the operator's
/// and may be reached through links; nothing the guest names below it may be a link, so a
/// link in the served tree cannot lead out of it (openat2's RESOLVE_BENEATH and
/// RESOLVE_NO_SYMLINKS, or a walk of `openat`s with O_NOFOLLOW where openat2 is missing).
fn open_beneath(root: &Path, name: &[u8]) -> Option<File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let file_flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // slirp joins the root and the name with '/': a leading '/' stays under the root.
    let relative = name.strip_prefix(b"/").unwrap_or(name);
    let relative = std::ffi::OsStr::from_bytes(relative);
    let file = match rustix::fs::openat2(
        &root,
        relative,
        file_flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => walk_beneath(root, name, file_flags)?,
        other => other.ok()?,
    };
    let file = File::from(file);
    file.metadata().ok()?.is_file().then_some(file)
}

/// openat2's resolution by hand: one `openat` per component, none of them followed if it is a
/// link. Names with `..` components never get here ([`name_is_allowed`]).
fn walk_beneath(
    root: std::os::fd::OwnedFd,
    name: &[u8],
    file_flags: rustix::fs::OFlags,
) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let mut parts = name
        .split(|&b| b == b'/')
        .filter(|part| !part.is_empty() && *part != b".")
        .peekable();
    let mut dir = root;
    while let Some(part) = parts.next() {
        let part = std::ffi::OsStr::from_bytes(part);
        if parts.peek().is_none() {
            return rustix::fs::openat(&dir, part, file_flags, Mode::empty()).ok();
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        dir = rustix::fs::openat(&dir, part, flags, Mode::empty()).ok()?;
    }
    None
}

/// Reads up to `buf.len()` bytes at `offset`; `None` on an error.
fn read_fully(file: &File, buf: &mut [u8], offset: u64) -> Option<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(done)
}

/// Starts a reply frame: room for the Ethernet, IP and UDP headers, which [`finish_reply`]
/// writes once the TFTP message behind them is complete. Returns where the UDP header starts.
fn start_reply(ex: &Exchange<'_>, out: &mut Vec<u8>) -> usize {
    out.clear();
    let udp = ip::l2_l3_len(&ex.server());
    out.resize(udp + udp::HEADER_LEN, 0);
    udp
}

/// Writes the headers of the reply in `out`, from the gateway's port 69 to the client.
fn finish_reply(ex: &mut Exchange<'_>, udp: usize, out: &mut [u8]) {
    let udp_len = out.len() - udp;
    let addrs = ex.addrs.reversed();
    let (src_mac, ttl, tos) = match ex.server() {
        IpAddr::V4(_) => (ex.gateway_mac, ipv4::DEFAULT_TTL, ipv4::TOS_LOWDELAY),
        IpAddr::V6(v6) => (MacAddr::slirp_for_ipv6(v6), ipv6::HOP_LIMIT, 0),
    };
    let meta = PacketMeta {
        src_mac,
        dst_mac: ex.guest_mac,
        addrs,
        protocol: IpProtocol::Udp,
        ttl,
        tos,
        ident: ex.ident.next_id(),
    };
    ip::write_headers(out, &meta, udp_len);
    udp::write_header(&mut out[udp..], &addrs, SERVER_PORT, ex.client_port);
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use vmm_sys_util::tempdir::TempDir;

    use super::*;

    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const GATEWAY_MAC: MacAddr = MacAddr([0x52, 0x55, 10, 0, 2, 2]);

    /// A server over a directory of its own, and a clock the test moves.
    struct Rig {
        server: Server,
        ident: Ident,
        now: Instant,
        dir: TempDir,
    }

    /// A reply, read back from its frame after checking every header.
    #[derive(Debug, PartialEq, Eq)]
    enum Reply {
        Data(u16, Vec<u8>),
        Oack(Vec<(String, String)>),
        Error(u16, String),
    }

    fn rig(files: &[(&str, &[u8])]) -> Rig {
        let dir = TempDir::new_with_prefix("/tmp/vnu-tftp-").expect("temp dir");
        for (name, data) in files {
            let path = dir.as_path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
        let mut plan = NetPlan::slirp_default();
        plan.tftp_root = Some(dir.as_path().to_owned());
        Rig {
            server: Server::new(&plan),
            ident: Ident::new(),
            now: Instant::now(),
            dir,
        }
    }

    fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
        let mut m = OP_RRQ.to_be_bytes().to_vec();
        for part in [name, "octet"]
            .into_iter()
            .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
        {
            m.extend_from_slice(part.as_bytes());
            m.push(0);
        }
        m
    }

    fn ack(block: u16) -> Vec<u8> {
        [OP_ACK.to_be_bytes(), block.to_be_bytes()].concat()
    }

    impl Rig {
        fn send_from(&mut self, client: SocketAddr, server: IpAddr, msg: &[u8]) -> Option<Vec<u8>> {
            let mut ex = Exchange {
                addrs: Addrs::new(client.ip(), server).expect("one family"),
                client_port: client.port(),
                guest_mac: GUEST_MAC,
                gateway_mac: GATEWAY_MAC,
                ident: &mut self.ident,
                now: self.now,
            };
            let mut out = Vec::new();
            match self.server.handle(&mut ex, msg, &mut out) {
                Verdict::Reply => Some(out),
                Verdict::Consumed => None,
                other => panic!("{other:?} for {msg:?}"),
            }
        }

        /// Sends `msg` from guest port `port` to 10.0.2.2:69; the reply, its headers checked.
        fn send(&mut self, port: u16, msg: &[u8]) -> Option<Reply> {
            let client = SocketAddr::new(GUEST.into(), port);
            let frame = self.send_from(client, GATEWAY.into(), msg)?;
            assert_eq!(&frame[0..6], &GUEST_MAC.0);
            assert_eq!(&frame[6..12], &GATEWAY_MAC.0);
            let ip = ipv4::parse(&frame[14..], frame.len() - 14).expect("a valid IPv4 header");
            assert_eq!((ip.src, ip.dst, ip.tos, ip.ttl), (GATEWAY, GUEST, 0x10, 64));
            let addrs = Addrs::V4 {
                src: ip.src,
                dst: ip.dst,
            };
            let udp = udp::parse(&addrs, &frame[34..34 + ip.payload_len]);
            let udp = udp.expect("a UDP checksum that holds").payload;
            assert_eq!(&frame[34..36], &SERVER_PORT.to_be_bytes());
            assert_eq!(&frame[36..38], &port.to_be_bytes());
            Some(decode(udp))
        }

        fn later(&mut self, by: Duration) {
            self.now += by;
        }
    }

    fn decode(msg: &[u8]) -> Reply {
        let op = u16::from_be_bytes([msg[0], msg[1]]);
        let strings = |b: &[u8]| -> Vec<String> {
            let b = b.strip_suffix(&[0]).expect("ends in a zero");
            b.split(|&c| c == 0)
                .map(|s| String::from_utf8(s.to_vec()).unwrap())
                .collect()
        };
        match op {
            OP_DATA => Reply::Data(u16::from_be_bytes([msg[2], msg[3]]), msg[4..].to_vec()),
            OP_OACK => {
                let s = strings(&msg[2..]);
                Reply::Oack(s.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect())
            }
            OP_ERROR => Reply::Error(
                u16::from_be_bytes([msg[2], msg[3]]),
                strings(&msg[4..]).concat(),
            ),
            other => panic!("opcode {other}"),
        }
    }

    fn data(block: u16, bytes: &[u8]) -> Option<Reply> {
        Some(Reply::Data(block, bytes.to_vec()))
    }

    fn error((code, text): (u16, &str)) -> Option<Reply> {
        Some(Reply::Error(code, text.to_owned()))
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_file_comes_in_512_byte_blocks_each_brought_by_the_ack_of_the_one_before() {
        let file = pattern(1300);
        let mut r = rig(&[("boot.img", &file)]);
        assert_eq!(r.send(1001, &rrq("boot.img", &[])), data(1, &file[..512]));
        assert_eq!(r.send(1001, &ack(1)), data(2, &file[512..1024]));
        assert_eq!(r.send(1001, &ack(2)), data(3, &file[1024..]));
        assert_eq!(
            r.server.sessions(),
            1,
            "kept until the last block is acknowledged"
        );
        assert_eq!(r.send(1001, &ack(3)), None);
        assert_eq!(r.server.sessions(), 0);
        let c = r.server.counters;
        assert_eq!((c.transfers, c.completed, c.data_blocks), (1, 1, 3));
    }

    #[test]
    fn a_file_of_whole_blocks_ends_with_an_empty_one_and_an_empty_file_with_one() {
        let file = pattern(1024);
        let mut r = rig(&[("even", &file), ("empty", b"")]);
        assert_eq!(r.send(7, &rrq("even", &[])), data(1, &file[..512]));
        assert_eq!(r.send(7, &ack(1)), data(2, &file[512..]));
        assert_eq!(r.send(7, &ack(2)), data(3, b""));
        assert_eq!(r.send(8, &rrq("empty", &[])), data(1, b""));
    }

    #[test]
    fn tsize_and_blksize_are_answered_in_an_oack_and_blksize_is_capped() {
        let file = pattern(3000);
        let mut r = rig(&[("f", &file)]);
        let oack = Reply::Oack(vec![
            ("tsize".into(), "3000".into()),
            ("blksize".into(), "1428".into()),
        ]);
        let asked = rrq("f", &[("tsize", "0"), ("blksize", "1468")]);
        assert_eq!(r.send(9, &asked), Some(oack));
        assert_eq!(r.send(9, &ack(0)), data(1, &file[..1428]));
        assert_eq!(r.send(9, &ack(1)), data(2, &file[1428..2856]));
        assert_eq!(r.send(9, &ack(2)), data(3, &file[2856..]));
        // Options are matched without case, unknown ones skipped, a non-zero tsize echoed,
        // and a blksize that is not a positive number ignored.
        let oack = Reply::Oack(vec![("tsize".into(), "77".into())]);
        let asked = rrq(
            "f",
            &[("windowsize", "4"), ("TSIZE", "77"), ("blksize", "x")],
        );
        assert_eq!(r.send(10, &asked), Some(oack));
        assert_eq!(r.send(10, &ack(0)), data(1, &file[..512]));
        // Only the first two answered options count; a blksize after them is not applied.
        let asked = rrq(
            "f",
            &[("blksize", "8"), ("tsize", "0"), ("blksize", "1000")],
        );
        let oack = Reply::Oack(vec![
            ("blksize".into(), "8".into()),
            ("tsize".into(), "3000".into()),
        ]);
        assert_eq!(r.send(11, &asked), Some(oack));
        assert_eq!(r.send(11, &ack(0)), data(1, &file[..8]));
    }

    #[test]
    fn blksize_is_capped_to_what_fits_the_link_mtu() {
        let mut r = rig(&[("f", &pattern(3000))]);
        r.server.mtu = 1000;
        let oack = |n: &str| Some(Reply::Oack(vec![("blksize".into(), n.into())]));
        // 1000 - 20 (IPv4) - 8 (UDP) - 4 (TFTP)
        assert_eq!(r.send(1, &rrq("f", &[("blksize", "1428")])), oack("968"));
        assert_eq!(r.send(2, &rrq("f", &[("blksize", "900")])), oack("900"));
        r.server.mtu = 576;
        assert_eq!(r.send(3, &rrq("f", &[("blksize", "1428")])), oack("544"));
        r.server.mtu = 300;
        assert_eq!(r.send(4, &rrq("f", &[("blksize", "1428")])), oack("512"));
    }

    #[test]
    fn requests_slirp_refuses_get_slirps_errors() {
        let mut r = rig(&[("f", b"x"), ("sub/g", b"y")]);
        std::fs::create_dir(r.dir.as_path().join("d")).unwrap();
        let mut netascii = rrq("f", &[]);
        netascii.truncate(netascii.len() - 6);
        netascii.extend_from_slice(b"netascii\0");
        assert_eq!(r.send(1, &netascii), error(UNSUPPORTED_MODE));
        for name in ["../f", "sub/../f", "sub/", "", "..", "sub/.."] {
            assert_eq!(
                r.send(1, &rrq(name, &[])),
                error(ACCESS_VIOLATION),
                "{name:?}"
            );
        }
        for name in ["missing", "d"] {
            assert_eq!(
                r.send(1, &rrq(name, &[])),
                error(FILE_NOT_FOUND),
                "{name:?}"
            );
        }
        // A name without its zero, a mode cut short, an option without a value, or a request
        // not ending in a zero.
        assert_eq!(r.send(1, &[0, 1, b'f']), error(ACCESS_VIOLATION));
        assert_eq!(r.send(1, b"\0\x01f\0oct"), error(ACCESS_VIOLATION));
        assert_eq!(
            r.send(1, b"\0\x01f\0octet\0tsize\0"),
            error(ACCESS_VIOLATION)
        );
        assert_eq!(
            r.send(1, b"\0\x01f\0octet\0tsize\x000"),
            error(ACCESS_VIOLATION)
        );
        assert_eq!(r.server.sessions(), 0, "errors end their sessions");
        // A leading '/' stays under the root; the mode is matched without case.
        assert_eq!(r.send(2, &rrq("/sub/g", &[])), data(1, b"y"));
        assert_eq!(r.send(3, b"\0\x01f\0OCTET\0"), data(1, b"x"));
        assert_eq!(r.server.counters.errors_sent, 13);
    }

    /// Links are never followed, wherever they point: a file link out of the root, a directory
    /// link out of it, and even a link to a file inside it (RESOLVE_NO_SYMLINKS, as the
    /// issue asks; the root itself may be reached through links, it is the operator's).
    #[test]
    fn symbolic_links_under_the_root_are_not_followed() {
        let outside = TempDir::new_with_prefix("/tmp/vnu-tftp-outside-").expect("temp dir");
        std::fs::write(outside.as_path().join("secret"), b"host file").unwrap();
        let mut r = rig(&[("f", b"x"), ("sub/g", b"y")]);
        let root = r.dir.as_path().to_owned();
        let link = |target: &std::path::Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        };
        link(&outside.as_path().join("secret"), "pw");
        link(outside.as_path(), "d");
        link(std::path::Path::new("f"), "inside");
        link(std::path::Path::new("sub"), "sublink");
        for name in ["pw", "d/secret", "/d/secret", "inside", "sublink/g"] {
            assert_eq!(
                r.send(1, &rrq(name, &[])),
                error(FILE_NOT_FOUND),
                "{name:?}"
            );
        }
        assert_eq!(r.send(2, &rrq("sub/g", &[])), data(1, b"y"));
        assert_eq!(r.send(3, &rrq("./f", &[])), data(1, b"x"));
        assert_eq!(r.send(4, &rrq("sub//g", &[])), data(1, b"y"));
    }

    /// The walk used where openat2 is missing refuses the same links.
    #[test]
    fn the_openat_walk_follows_no_link_either() {
        use rustix::fs::{Mode, OFlags};
        let r = rig(&[("f", b"x"), ("sub/g", b"y")]);
        let root = r.dir.as_path();
        std::os::unix::fs::symlink("sub", root.join("sublink")).unwrap();
        std::os::unix::fs::symlink("f", root.join("flink")).unwrap();
        let open = |name: &str| {
            let dir =
                rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
            walk_beneath(dir, name.as_bytes(), OFlags::RDONLY | OFlags::NOFOLLOW).map(|fd| {
                std::fs::read_to_string(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&fd)
                ))
                .unwrap()
            })
        };
        assert_eq!(open("sub/g").as_deref(), Some("y"));
        assert_eq!(open("/./sub//g").as_deref(), Some("y"));
        assert_eq!(open("f").as_deref(), Some("x"));
        assert_eq!(open("sublink/g"), None);
        assert_eq!(open("flink"), None);
        assert_eq!(open(""), None);
    }

    #[test]
    fn without_a_root_every_request_is_an_access_violation() {
        let mut r = rig(&[("f", b"x")]);
        r.server.root = None;
        assert_eq!(r.send(5, &rrq("f", &[])), error(ACCESS_VIOLATION));
        assert_eq!(r.server.sessions(), 0);
    }

    #[test]
    fn a_re_acknowledged_block_is_sent_again_but_not_for_a_duplicate_in_quick_succession() {
        let file = pattern(2000);
        let mut r = rig(&[("f", &file)]);
        assert_eq!(r.send(3, &rrq("f", &[])), data(1, &file[..512]));
        assert_eq!(r.send(3, &ack(1)), data(2, &file[512..1024]));
        // Block 2 was lost; the client acknowledges block 1 again once it times out.
        r.later(Duration::from_millis(50));
        assert_eq!(
            r.send(3, &ack(1)),
            None,
            "too soon: a duplicate, not a timeout"
        );
        r.later(RESEND_AFTER);
        assert_eq!(r.send(3, &ack(1)), data(2, &file[512..1024]));
        assert_eq!(r.send(3, &ack(7)), None, "a block never sent");
        assert_eq!(r.send(3, &ack(2)), data(3, &file[1024..1536]));
        assert_eq!(r.send(3, &ack(3)), data(4, &file[1536..]));
        // The last block can be asked for again too.
        r.later(RESEND_AFTER);
        assert_eq!(r.send(3, &ack(3)), data(4, &file[1536..]));
        assert_eq!(r.send(3, &ack(4)), None);
        assert_eq!(r.server.counters.resent, 2);
        assert_eq!(r.send(3, &ack(4)), None, "the session is gone");
    }

    #[test]
    fn block_numbers_wrap_past_65535() {
        let file = pattern(65_540);
        let mut r = rig(&[("f", &file)]);
        let oack = Reply::Oack(vec![("blksize".into(), "1".into())]);
        assert_eq!(r.send(4, &rrq("f", &[("blksize", "1")])), Some(oack));
        let mut reply = r.send(4, &ack(0));
        for n in 1..=65_540u32 {
            assert_eq!(
                reply,
                data(n as u16, &file[n as usize - 1..n as usize]),
                "block {n}"
            );
            reply = r.send(4, &ack(n as u16));
        }
        assert_eq!(reply, data(65_541u32 as u16, b""));
    }

    #[test]
    fn twenty_sessions_at_most_each_free_after_five_idle_seconds() {
        let mut r = rig(&[("f", &pattern(5000))]);
        for port in 0..20 {
            assert!(matches!(
                r.send(100 + port, &rrq("f", &[])),
                Some(Reply::Data(1, _))
            ));
        }
        assert_eq!(r.send(200, &rrq("f", &[])), None, "all busy");
        assert_eq!(r.server.counters.busy, 1);
        // A client's new request restarts its own session.
        assert_eq!(
            r.send(105, &ack(1)).map(|d| matches!(d, Reply::Data(2, _))),
            Some(true)
        );
        assert!(matches!(
            r.send(105, &rrq("f", &[])),
            Some(Reply::Data(1, _))
        ));
        r.later(Duration::from_secs(4));
        assert!(matches!(r.send(105, &ack(1)), Some(Reply::Data(2, _))));
        r.later(Duration::from_millis(1500));
        // 5.5 s since the others' last message: their places are free; 105's is not.
        assert!(matches!(
            r.send(200, &rrq("f", &[])),
            Some(Reply::Data(1, _))
        ));
        assert_eq!(r.server.sessions(), 20);
        assert!(matches!(r.send(105, &ack(2)), Some(Reply::Data(3, _))));
    }

    #[test]
    fn an_error_from_the_client_ends_its_session_and_writes_are_not_served() {
        let mut r = rig(&[("f", &pattern(2000))]);
        assert!(r.send(6, &rrq("f", &[])).is_some());
        assert_eq!(r.send(6, &[0, OP_ERROR as u8, 0, 0, 0]), None);
        assert_eq!(r.server.sessions(), 0);
        assert_eq!(r.send(6, &ack(1)), None);
        assert_eq!(r.send(6, b"\0\x02f\0octet\0"), None, "WRQ");
        assert_eq!(r.server.counters.ignored, 2);
    }

    #[test]
    fn over_ipv6_replies_come_from_the_gateway_as_slirp_frames_them() {
        let file = pattern(600);
        let mut r = rig(&[("f", &file)]);
        let guest: Ipv6Addr = "fec0::5054:ff:fe12:3456".parse().unwrap();
        let gateway: Ipv6Addr = "fec0::2".parse().unwrap();
        let client = SocketAddr::new(guest.into(), 2000);
        let frame = r.send_from(client, gateway.into(), &rrq("f", &[])).unwrap();
        assert_eq!(&frame[6..12], &MacAddr::slirp_for_ipv6(gateway).0);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(frame[14 + 7], 255, "hop limit");
        assert_eq!(&frame[22..38], &gateway.octets());
        assert_eq!(&frame[38..54], &guest.octets());
        let len = frame.len() - 54;
        let addrs = Addrs::V6 {
            src: gateway,
            dst: guest,
        };
        let udp = udp::parse(&addrs, &frame[54..54 + len])
            .expect("checksum")
            .payload;
        assert_eq!(decode(udp), Reply::Data(1, file[..512].to_vec()));
    }

    #[test]
    fn atoi_reads_as_c_does() {
        for (text, value) in [
            ("512", 512),
            ("  42x", 42),
            ("-3", -3),
            ("+9", 9),
            ("", 0),
            ("abc", 0),
            ("99999999999", i64::from(i32::MAX)),
        ] {
            assert_eq!(atoi(text.as_bytes()), value, "{text:?}");
        }
    }
}
