//! The BOOTP/DHCP message as slirp's `bootp.c` reads and writes it: the fixed fields, the
//! options it looks at in a request, and the answer frame with its options in slirp's order
//! and padding. Apart from the server so that the lease rules read without byte layout.

use std::net::Ipv4Addr;

use netplan::{MacAddr, NetPlan};
use smoltcp::wire::{DhcpPacket, IpProtocol};

use super::{CLIENT_PORT, SERVER_PORT};
use crate::wire::ip::Addrs;
use crate::wire::ipv4::{self, Ident};
use crate::wire::{ethernet, udp};

/// The fixed BOOTP fields, up to and without the magic cookie.
pub(super) const BOOTP_FIXED_LEN: usize = 236;
/// slirp's `DHCP_OPT_LEN`: the options area including the magic cookie.
pub(super) const OPTIONS_LEN: usize = 312;
/// UDP payload of every answer.
pub const REPLY_BOOTP_LEN: usize = BOOTP_FIXED_LEN + OPTIONS_LEN;
/// Whole answer frame.
pub const REPLY_FRAME_LEN: usize =
    ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + REPLY_BOOTP_LEN;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Room in the BOOTP `file` field: 128 bytes with the terminating zero.
const FILE_FIELD_LEN: usize = 128;
const FILE_FIELD_START: usize = 108;

pub(super) const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;

// Message types (option 53).
pub(super) const DISCOVER: u8 = 1;
pub(super) const OFFER: u8 = 2;
pub(super) const REQUEST: u8 = 3;
pub(super) const DECLINE: u8 = 4;
pub(super) const ACK: u8 = 5;
pub(super) const NAK: u8 = 6;
pub(super) const RELEASE: u8 = 7;
pub(super) const INFORM: u8 = 8;

// Option codes.
pub(super) const OPT_NETMASK: u8 = 1;
pub(super) const OPT_ROUTER: u8 = 3;
pub(super) const OPT_DNS: u8 = 6;
pub(super) const OPT_HOSTNAME: u8 = 12;
pub(super) const OPT_DOMAIN_NAME: u8 = 15;
pub(super) const OPT_MTU: u8 = 26;
const OPT_REQUESTED_IP: u8 = 50;
pub(super) const OPT_LEASE_TIME: u8 = 51;
pub(super) const OPT_MSG_TYPE: u8 = 53;
pub(super) const OPT_SERVER_ID: u8 = 54;
pub(super) const OPT_MESSAGE: u8 = 56;
pub(super) const OPT_VENDOR_CLASS: u8 = 60;
pub(super) const OPT_TFTP_SERVER_NAME: u8 = 66;
pub(super) const OPT_END: u8 = 255;

/// What a guest message asks for, as slirp's `dhcp_decode` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decoded {
    /// Option 53; 0 without one.
    pub(super) msg_type: u8,
    /// Option 50, else (for a REQUEST) `ciaddr`; unspecified when neither.
    pub(super) requested: Ipv4Addr,
}

/// slirp's `dhcp_decode`: the last message type and requested address given, options read
/// up to the end of the datagram; a REQUEST without option 50 asks for its `ciaddr`.
pub(super) fn decode(msg: &DhcpPacket<&[u8]>) -> Decoded {
    let mut d = Decoded {
        msg_type: 0,
        requested: Ipv4Addr::UNSPECIFIED,
    };
    if msg.magic_number() != u32::from_be_bytes(MAGIC_COOKIE) {
        return d;
    }
    for opt in msg.options() {
        match opt.kind {
            OPT_MSG_TYPE => {
                if let Some(&t) = opt.data.first() {
                    d.msg_type = t;
                }
            }
            OPT_REQUESTED_IP => {
                if let Some(a) = opt.data.get(..4) {
                    d.requested = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                }
            }
            _ => {}
        }
    }
    if d.msg_type == REQUEST && d.requested.is_unspecified() {
        d.requested = msg.client_ip();
    }
    d
}

/// The options area of an answer: the cookie, options, `END`, zero padding to 312 bytes.
///
/// Written by hand on purpose: smoltcp's `DhcpRepr::emit` chooses its own options and order,
/// and a guest must get slirp's bytes (its order, its fit-or-omit rule, its padding).
pub(super) struct Options {
    pub(super) buf: [u8; OPTIONS_LEN],
    pub(super) pos: usize,
}

impl Options {
    pub(super) fn new() -> Self {
        let mut buf = [0u8; OPTIONS_LEN];
        buf[..4].copy_from_slice(&MAGIC_COOKIE);
        Options { buf, pos: 4 }
    }

    /// Appends one option unless it would leave no room for `END` (slirp's
    /// `q + len + 2 >= end` test). Values over 255 bytes cannot be one option.
    pub(super) fn put(&mut self, code: u8, value: &[u8]) -> bool {
        let Ok(len) = u8::try_from(value.len()) else {
            return false;
        };
        if self.pos + value.len() + 2 >= OPTIONS_LEN {
            return false;
        }
        self.buf[self.pos] = code;
        self.buf[self.pos + 1] = len;
        self.buf[self.pos + 2..self.pos + 2 + value.len()].copy_from_slice(value);
        self.pos += 2 + value.len();
        true
    }

    /// Appends ready-made options (with their headers) under the same rule.
    pub(super) fn put_raw(&mut self, bytes: &[u8]) -> bool {
        if self.pos + bytes.len() >= OPTIONS_LEN {
            return false;
        }
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
        true
    }

    pub(super) fn end(&mut self) {
        // `put` always leaves this byte free.
        if let Some(b) = self.buf.get_mut(self.pos) {
            *b = OPT_END;
        }
    }
}

/// Writes the whole answer frame into `out`.
#[allow(clippy::too_many_arguments)]
pub(super) fn build_reply(
    plan: &NetPlan,
    gateway: Ipv4Addr,
    ident: &mut Ident,
    request: &DhcpPacket<&[u8]>,
    yiaddr: Ipv4Addr,
    bootfile: Option<&str>,
    options: &[u8; OPTIONS_LEN],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(REPLY_FRAME_LEN, 0);
    ethernet::write_header(
        out,
        MacAddr::BROADCAST,
        plan.gateway_mac,
        ethernet::ETHERTYPE_IPV4,
    );
    let ip_start = ethernet::HEADER_LEN;
    let udp_start = ip_start + ipv4::HEADER_LEN;
    let bootp_start = udp_start + udp::HEADER_LEN;

    let bootp = &mut out[bootp_start..];
    let mut reply = DhcpPacket::new_unchecked(&mut bootp[..]);
    reply.set_opcode(smoltcp::wire::DhcpOpCode::Reply);
    reply.set_hardware_type(smoltcp::wire::ArpHardware::Ethernet);
    reply.set_hardware_len(6);
    reply.set_transaction_id(request.transaction_id());
    reply.set_your_ip(yiaddr);
    reply.set_server_ip(gateway);
    reply.set_client_hardware_address(request.client_hardware_address());
    debug_assert_eq!(bootp[0], BOOTREPLY);
    // The flags stay zero, as slirp leaves them: the answer is a broadcast either way.
    if let Some(file) = bootfile {
        // slirp's snprintf into the 128-byte field: at most 127 bytes and a zero.
        let n = file.len().min(FILE_FIELD_LEN - 1);
        bootp[FILE_FIELD_START..FILE_FIELD_START + n].copy_from_slice(&file.as_bytes()[..n]);
    }
    bootp[BOOTP_FIXED_LEN..].copy_from_slice(options);

    let udp_len = udp::HEADER_LEN + REPLY_BOOTP_LEN;
    let addrs = Addrs::V4 {
        src: gateway,
        dst: Ipv4Addr::BROADCAST,
    };
    udp::write_header(&mut out[udp_start..], &addrs, SERVER_PORT, CLIENT_PORT);
    ipv4::write_header(
        &mut out[ip_start..],
        &ipv4::Header {
            src: gateway,
            dst: Ipv4Addr::BROADCAST,
            protocol: IpProtocol::Udp,
            tos: ipv4::TOS_LOWDELAY,
            ttl: ipv4::DEFAULT_TTL,
            ident: ident.next_id(),
            dont_frag: false,
            payload_len: udp_len,
        },
    );
}
