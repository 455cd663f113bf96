//! DHCPv4 as slirp serves it (`bootp.c`).
//!
//! # Theory of operation
//!
//! The server answers BOOTREQUESTs sent to UDP port 67 of the gateway address or of
//! 255.255.255.255 (not the subnet broadcast). Only DISCOVER and REQUEST are answered; a
//! message without a type option is plain BOOTP and is treated as a REQUEST, answered with a
//! DHCPACK carrying options. RELEASE, DECLINE and INFORM are consumed silently.
//!
//! Leases: `plan.dhcp.pool_size` slots, slot `i` holding `dhcp_start + i`, each recording the
//! client MAC (`chaddr`) that took it. A client gets the lowest slot that is free or already
//! its own; slots are never freed and never expire, and a client that finds none is ignored.
//! DISCOVER honours a requested address (option 50) that is in the pool and free or own.
//! REQUEST takes option 50, else `ciaddr`: in the pool and free or own → ACK, anything else →
//! NAK; with neither it gets the slot holding its MAC, or a new one. The server identifier a
//! client sends is never checked. These are slirp's rules, quirks included.
//!
//! Every answer goes from gateway:67 to 255.255.255.255:68 as an Ethernet broadcast from
//! `plan.gateway_mac`, IPv4 TOS 0x10 and TTL 64, and is always 548 bytes of BOOTP: the options
//! area is zero-padded to 312 bytes. Options come in slirp's order: 53, 54, 1, 3 and 6 (not
//! when restricted), 51, then 26 when the plan asks for an MTU (slirp never sends one), 12,
//! 15, 66, 119 and 60, each of the last ones only when configured and only if it still fits,
//! and 255. A NAK carries only 53 and 56, and its `yiaddr` is 255.255.255.255 (slirp's quirk).
//!
//! The engine hands [`Server::handle`] the datagram already checked as slirp's `udp_input`
//! checks it (see [`crate::wire::udp`]); the BOOTP fixed part is read through smoltcp's
//! `DhcpPacket`. The answer's options are written by hand (`Options`): smoltcp's `DhcpRepr`
//! emits its own choice and order of options, and a guest must get slirp's bytes.
//!
//! The only state is the slot table; each slot is written only on an OFFER or ACK.

use std::net::{IpAddr, Ipv4Addr};

use netplan::{MacAddr, NetPlan};
use smoltcp::wire::{DhcpPacket, IpProtocol};

use super::Verdict;
use crate::wire::ip::Addrs;
use crate::wire::ipv4::{self, Ident};
use crate::wire::{dnssearch, ethernet, udp};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// The fixed BOOTP fields, up to and without the magic cookie.
const BOOTP_FIXED_LEN: usize = 236;
/// slirp's `DHCP_OPT_LEN`: the options area including the magic cookie.
const OPTIONS_LEN: usize = 312;
/// UDP payload of every answer.
pub const REPLY_BOOTP_LEN: usize = BOOTP_FIXED_LEN + OPTIONS_LEN;
/// Whole answer frame.
pub const REPLY_FRAME_LEN: usize =
    ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + REPLY_BOOTP_LEN;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Room in the BOOTP `file` field: 128 bytes with the terminating zero.
const FILE_FIELD_LEN: usize = 128;
const FILE_FIELD_START: usize = 108;
const NAK_MESSAGE: &[u8] = b"requested address not available";
const HTTP_CLIENT: &[u8] = b"HTTPClient";

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;

// Message types (option 53).
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const DECLINE: u8 = 4;
const ACK: u8 = 5;
const NAK: u8 = 6;
const RELEASE: u8 = 7;
const INFORM: u8 = 8;

// Option codes.
const OPT_NETMASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_DOMAIN_NAME: u8 = 15;
const OPT_MTU: u8 = 26;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_MESSAGE: u8 = 56;
const OPT_VENDOR_CLASS: u8 = 60;
const OPT_TFTP_SERVER_NAME: u8 = 66;
const OPT_END: u8 = 255;

/// Whether a guest UDP datagram to `dst`:`dst_port` is for the DHCP server: port 67 of the
/// gateway or of the limited broadcast, the messages [`Server::handle`] owns (checksums are
/// checked there). Decided from the headers alone, so that the engine can drop the request
/// unread when DHCP is switched off.
pub fn is_request(plan: &NetPlan, dst: IpAddr, dst_port: u16) -> bool {
    let Some(v4) = &plan.ipv4 else {
        return false;
    };
    dst_port == SERVER_PORT
        && matches!(dst, IpAddr::V4(a) if a == v4.gateway || a == Ipv4Addr::BROADCAST)
}

/// What a guest message asks for, as slirp's `dhcp_decode` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decoded {
    /// Option 53; 0 without one.
    msg_type: u8,
    /// Option 50, else (for a REQUEST) `ciaddr`; unspecified when neither.
    requested: Ipv4Addr,
}

/// The DHCP server: leases keyed by client MAC.
#[derive(Debug)]
pub struct Server {
    /// Slot `i` is `dhcp_start + i`; `Some(mac)` once handed to that client.
    slots: Vec<Option<MacAddr>>,
    /// Option 119 chunks, encoded once.
    search: Option<Vec<u8>>,
}

impl Server {
    pub fn new(plan: &NetPlan) -> Self {
        Server {
            slots: vec![None; usize::from(plan.dhcp.pool_size)],
            search: dnssearch::encode_option(&plan.dhcp.search),
        }
    }

    /// The client holding each pool slot, lowest address first (for logs and tests).
    pub fn leases(&self) -> &[Option<MacAddr>] {
        &self.slots
    }

    /// Answers a DHCP message, the checked datagram `request` the guest sent to `dst`; the
    /// answer frame goes into `out`. `ident` numbers the IPv4 packet of the answer.
    pub fn handle(
        &mut self,
        plan: &NetPlan,
        ident: &mut Ident,
        dst: Ipv4Addr,
        request: &udp::Datagram<'_>,
        out: &mut Vec<u8>,
    ) -> Verdict {
        let Some(v4) = &plan.ipv4 else {
            return Verdict::Unhandled;
        };
        if request.dst_port != SERVER_PORT || (dst != v4.gateway && dst != Ipv4Addr::BROADCAST) {
            return Verdict::Unhandled;
        }
        let bootp = request.payload;
        if bootp.len() < BOOTP_FIXED_LEN {
            return Verdict::Malformed;
        }
        if bootp.first() != Some(&BOOTREQUEST) {
            return Verdict::Unhandled;
        }
        // smoltcp's view wants the cookie too; a message without one has no options.
        let mut short = [0u8; BOOTP_FIXED_LEN + 4];
        let view = if bootp.len() < short.len() {
            short[..bootp.len()].copy_from_slice(bootp);
            &short[..]
        } else {
            bootp
        };
        let Ok(msg) = DhcpPacket::new_checked(view) else {
            return Verdict::Malformed;
        };
        let decoded = decode(&msg);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&msg.client_hardware_address().0);
        let client = MacAddr(chaddr);

        let msg_type = match decoded.msg_type {
            // Plain BOOTP: answered as a REQUEST (slirp: "Force reply for old BOOTP clients").
            0 => REQUEST,
            DISCOVER => DISCOVER,
            REQUEST => REQUEST,
            DECLINE | RELEASE | INFORM => return Verdict::Consumed,
            _ => return Verdict::Unhandled,
        };
        let requested = (!decoded.requested.is_unspecified()).then_some(decoded.requested);
        let answer = match (msg_type, requested) {
            (DISCOVER, req) => {
                let slot = req
                    .and_then(|a| self.request_slot(v4.dhcp_start, a, client))
                    .or_else(|| self.new_slot(client));
                match slot {
                    Some(i) => Answer::Lease(OFFER, i),
                    None => return self.pool_full(client),
                }
            }
            (_, Some(addr)) => match self.request_slot(v4.dhcp_start, addr, client) {
                Some(i) => Answer::Lease(ACK, i),
                None => Answer::Nak,
            },
            (_, None) => match self.find_slot(client).or_else(|| self.new_slot(client)) {
                Some(i) => Answer::Lease(ACK, i),
                None => return self.pool_full(client),
            },
        };
        let yiaddr = match answer {
            Answer::Lease(_, i) => {
                if let Some(slot) = self.slots.get_mut(i) {
                    *slot = Some(client);
                }
                slot_addr(v4.dhcp_start, i)
            }
            Answer::Nak => Ipv4Addr::BROADCAST,
        };

        let mut options = Options::new();
        match answer {
            Answer::Lease(kind, _) => self.lease_options(plan, v4, kind, &mut options),
            Answer::Nak => {
                options.put(OPT_MSG_TYPE, &[NAK]);
                options.put(OPT_MESSAGE, NAK_MESSAGE);
            }
        }
        options.end();
        let bootfile = match answer {
            Answer::Lease(..) => plan.dhcp.bootfile.as_deref(),
            Answer::Nak => None,
        };
        build_reply(
            plan,
            v4.gateway,
            ident,
            &msg,
            yiaddr,
            bootfile,
            &options.buf,
            out,
        );
        Verdict::Reply
    }

    /// slirp's `request_addr`: the slot of `addr` if it is in the pool and free or `client`'s.
    fn request_slot(&self, start: Ipv4Addr, addr: Ipv4Addr, client: MacAddr) -> Option<usize> {
        let i = usize::try_from(u32::from(addr).checked_sub(u32::from(start))?).ok()?;
        match self.slots.get(i)? {
            None => Some(i),
            Some(mac) if *mac == client => Some(i),
            Some(_) => None,
        }
    }

    /// slirp's `get_new_addr`: the lowest slot that is free or already `client`'s.
    fn new_slot(&self, client: MacAddr) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.is_none() || *s == Some(client))
    }

    /// slirp's `find_addr`: the lowest slot `client` holds.
    fn find_slot(&self, client: MacAddr) -> Option<usize> {
        self.slots.iter().position(|s| *s == Some(client))
    }

    fn pool_full(&self, client: MacAddr) -> Verdict {
        log::debug!("dhcp: no address left for {client}");
        Verdict::Consumed
    }

    /// The options of an OFFER or ACK, in slirp's order.
    fn lease_options(&self, plan: &NetPlan, v4: &netplan::Ipv4Plan, kind: u8, o: &mut Options) {
        o.put(OPT_MSG_TYPE, &[kind]);
        o.put(OPT_SERVER_ID, &v4.gateway.octets());
        o.put(OPT_NETMASK, &v4.netmask().octets());
        if !plan.restrict {
            o.put(OPT_ROUTER, &v4.gateway.octets());
            o.put(OPT_DNS, &v4.dns.octets());
        }
        o.put(OPT_LEASE_TIME, &plan.dhcp.lease_secs.to_be_bytes());
        if let Some(mtu) = plan.dhcp.mtu_option {
            o.put(OPT_MTU, &mtu.to_be_bytes());
        }
        // slirp omits each of these, with a warning, when it would not fit.
        for (code, value) in [
            (OPT_HOSTNAME, &plan.dhcp.hostname),
            (OPT_DOMAIN_NAME, &plan.dhcp.domain_name),
            (OPT_TFTP_SERVER_NAME, &plan.dhcp.tftp_server_name),
        ] {
            if let Some(v) = value
                && !o.put(code, v.as_bytes())
            {
                crate::ratelimit::guest_log!(
                    log::Level::Warn,
                    "dhcp: option {code} does not fit, omitted"
                );
            }
        }
        if let Some(search) = &self.search
            && !o.put_raw(search)
        {
            crate::ratelimit::guest_log!(
                log::Level::Warn,
                "dhcp: domain search list does not fit, omitted"
            );
        }
        // UEFI HTTP boot wants the vendor class "HTTPClient" when the boot file is a URL.
        if let Some(file) = &plan.dhcp.bootfile
            && (file.starts_with("http://") || file.starts_with("https://"))
            && !o.put(OPT_VENDOR_CLASS, HTTP_CLIENT)
        {
            crate::ratelimit::guest_log!(
                log::Level::Warn,
                "dhcp: vendor class option does not fit, omitted"
            );
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    /// OFFER or ACK of the address of a slot.
    Lease(u8, usize),
    Nak,
}

fn slot_addr(start: Ipv4Addr, slot: usize) -> Ipv4Addr {
    let slot = u32::try_from(slot).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(start).wrapping_add(slot))
}

/// slirp's `dhcp_decode`: the last message type and requested address given, options read
/// up to the end of the datagram; a REQUEST without option 50 asks for its `ciaddr`.
fn decode(msg: &DhcpPacket<&[u8]>) -> Decoded {
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
struct Options {
    buf: [u8; OPTIONS_LEN],
    pos: usize,
}

impl Options {
    fn new() -> Self {
        let mut buf = [0u8; OPTIONS_LEN];
        buf[..4].copy_from_slice(&MAGIC_COOKIE);
        Options { buf, pos: 4 }
    }

    /// Appends one option unless it would leave no room for `END` (slirp's
    /// `q + len + 2 >= end` test). Values over 255 bytes cannot be one option.
    fn put(&mut self, code: u8, value: &[u8]) -> bool {
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
    fn put_raw(&mut self, bytes: &[u8]) -> bool {
        if self.pos + bytes.len() >= OPTIONS_LEN {
            return false;
        }
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
        true
    }

    fn end(&mut self) {
        // `put` always leaves this byte free.
        if let Some(b) = self.buf.get_mut(self.pos) {
            *b = OPT_END;
        }
    }
}

/// Writes the whole answer frame into `out`.
#[allow(clippy::too_many_arguments)]
fn build_reply(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0x12, 0x34, last])
    }

    fn server(pool: u8) -> Server {
        let mut plan = NetPlan::slirp_default();
        plan.dhcp.pool_size = pool;
        Server::new(&plan)
    }

    #[test]
    fn slots_follow_slirp_allocation() {
        let start = Ipv4Addr::new(10, 0, 2, 15);
        let mut s = server(4);
        assert_eq!(s.new_slot(mac(1)), Some(0));
        s.slots[0] = Some(mac(1));
        assert_eq!(s.new_slot(mac(1)), Some(0));
        assert_eq!(s.new_slot(mac(2)), Some(1));
        assert_eq!(s.find_slot(mac(2)), None);
        // A requested address: in the pool and free or own.
        assert_eq!(
            s.request_slot(start, Ipv4Addr::new(10, 0, 2, 17), mac(2)),
            Some(2)
        );
        assert_eq!(s.request_slot(start, start, mac(2)), None);
        assert_eq!(s.request_slot(start, start, mac(1)), Some(0));
        assert_eq!(
            s.request_slot(start, Ipv4Addr::new(10, 0, 2, 19), mac(2)),
            None
        );
        assert_eq!(
            s.request_slot(start, Ipv4Addr::new(10, 0, 2, 14), mac(2)),
            None
        );
        // A client holding a higher slot still gets the lowest free one from get_new_addr.
        s.slots[3] = Some(mac(3));
        assert_eq!(s.new_slot(mac(3)), Some(1));
        assert_eq!(s.find_slot(mac(3)), Some(3));
    }

    #[test]
    fn options_never_overrun_and_keep_room_for_end() {
        let mut o = Options::new();
        let long = [b'x'; 255];
        assert!(o.put(OPT_HOSTNAME, &long));
        assert!(!o.put(OPT_DOMAIN_NAME, &long));
        assert!(!o.put(OPT_DOMAIN_NAME, &[b'y'; 300]));
        // 4 + 257 = 261 used; 312 - 261 - 2 = 49 bytes of value would touch the end.
        assert!(!o.put(OPT_DOMAIN_NAME, &[b'y'; 49]));
        assert!(o.put(OPT_DOMAIN_NAME, &[b'y'; 48]));
        assert_eq!(o.pos, OPTIONS_LEN - 1);
        o.end();
        assert_eq!(o.buf[OPTIONS_LEN - 1], OPT_END);
        assert!(!o.put_raw(&[1]));
    }
}
