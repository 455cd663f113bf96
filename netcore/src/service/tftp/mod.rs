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
//!
//! The server and its sessions are here; the message format and the reply's framing are in
//! `packet.rs`, the guarded walk into the served directory in `files.rs`.

mod files;
mod packet;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netplan::{MacAddr, NetPlan};

use super::Verdict;
use crate::wire::frame::Frame;
use crate::wire::ip::{self, Addrs};
use crate::wire::ipv4::Ident;
use crate::wire::{ethernet, udp};
use files::{name_is_allowed, open_beneath, read_fully};
use packet::{
    ACCESS_VIOLATION, DATA_HEADER_LEN, FILE_NOT_FOUND, MAX_FILENAME, OP_ACK, OP_DATA, OP_ERROR,
    OP_OACK, OP_RRQ, UNSUPPORTED_MODE, atoi, c_string, finish_reply, start_reply,
};

pub const SERVER_PORT: u16 = 69;
const MAX_SESSIONS: usize = 20;
/// A session with no message for this long gives its place to a new request.
const SESSION_IDLE: Duration = Duration::from_secs(5);
/// A re-acknowledged block is sent again only this long after it was last sent.
pub const RESEND_AFTER: Duration = Duration::from_millis(200);
const DEFAULT_BLOCK_SIZE: usize = 512;
/// slirp's `TFTP_BLOCKSIZE_MAX`: a block fits one frame at MTU 1500.
pub const MAX_BLOCK_SIZE: usize = 1428;

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
