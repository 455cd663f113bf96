//! The TFTP messages (RFC 1350, options RFC 2347-2349) as slirp reads and writes them, and
//! the framing of a reply. Apart from the server so that its file reads as sessions and
//! slirp's rules; a request itself is read in `Server::read_request`, as slirp reads it,
//! interleaved with opening the file.

use std::net::IpAddr;

use netplan::MacAddr;
use smoltcp::wire::IpProtocol;

use super::{Exchange, SERVER_PORT};
use crate::wire::ip::{self, PacketMeta};
use crate::wire::{ipv4, ipv6, udp};

/// slirp's `TFTP_FILENAME_MAX`, with the terminating zero.
pub(super) const MAX_FILENAME: usize = 512;
/// The TFTP header in front of a DATA block: opcode and block number.
pub(super) const DATA_HEADER_LEN: usize = 4;

pub(super) const OP_RRQ: u16 = 1;
pub(super) const OP_DATA: u16 = 3;
pub(super) const OP_ACK: u16 = 4;
pub(super) const OP_ERROR: u16 = 5;
pub(super) const OP_OACK: u16 = 6;

pub(super) const FILE_NOT_FOUND: (u16, &str) = (1, "File not found");
pub(super) const ACCESS_VIOLATION: (u16, &str) = (2, "Access violation");
pub(super) const UNSUPPORTED_MODE: (u16, &str) = (4, "Unsupported transfer mode");

/// The bytes of `bytes` up to its first zero (all of it if none).
pub(super) fn c_string(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// C's `atoi` as slirp uses it: optional blanks and sign, then digits; anything else ends it,
/// and no digits is 0. Saturates rather than overflowing.
pub(super) fn atoi(text: &[u8]) -> i64 {
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

/// Starts a reply frame: room for the Ethernet, IP and UDP headers, which [`finish_reply`]
/// writes once the TFTP message behind them is complete. Returns where the UDP header starts.
pub(super) fn start_reply(ex: &Exchange<'_>, out: &mut Vec<u8>) -> usize {
    out.clear();
    let udp = ip::l2_l3_len(&ex.server());
    out.resize(udp + udp::HEADER_LEN, 0);
    udp
}

/// Writes the headers of the reply in `out`, from the gateway's port 69 to the client.
pub(super) fn finish_reply(ex: &mut Exchange<'_>, udp: usize, out: &mut [u8]) {
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
