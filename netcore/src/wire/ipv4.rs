//! IPv4 headers: accepting the guest's, writing ours.
//!
//! # Theory of operation
//!
//! [`parse`] is the one place a guest's IPv4 header is accepted, by slirp's `ip_input` rules:
//! version 4, a header of at least 20 bytes that was copied whole, a correct header checksum,
//! and a total length no shorter than the header and no longer than what arrived. Bytes past
//! the total length (Ethernet padding) are not part of the packet. Anything else is malformed
//! and the caller drops it. Fragments are reported as such; nothing here reassembles them.
//! The header may come from a copied prefix of a larger frame: the caller says how many bytes
//! of the packet arrived, so the payload need not have been copied to be measured.
//!
//! [`write_header`] emits the 20-byte header of every IPv4 packet the engine builds: never any
//! options, the header checksum always filled in. The identification field comes from one
//! [`Ident`] counter per engine, as slirp takes it from one counter per instance, so the
//! guest sees the same sequence whatever protocol produced the packet.

use std::net::Ipv4Addr;

use smoltcp::wire::{IpProtocol, Ipv4Packet};

/// Length of an IPv4 header without options: all we ever emit.
pub const HEADER_LEN: usize = 20;
/// The largest IPv4 packet (the total-length field is 16 bits).
pub const MAX_PACKET_LEN: usize = 65535;
/// The largest header (a 4-bit length in 32-bit words).
pub const MAX_HEADER_LEN: usize = 60;
/// IPTOS_LOWDELAY: the TOS slirp's `udp_output` is given for BOOTP and TFTP.
pub const TOS_LOWDELAY: u8 = 0x10;
/// slirp's IPTOS_PREC_INTERNETCONTROL: the precedence of its ICMP errors.
pub const TOS_PREC_INTERNETCONTROL: u8 = 0xc0;
/// The type-of-service bits (without precedence and the reserved low bit) an ICMP error keeps
/// from the packet it is about (slirp's `icmp_send_error`).
pub const TOS_SERVICE_MASK: u8 = 0x1e;
/// IPDEFTTL, slirp's TTL for the packets it originates.
pub const DEFAULT_TTL: u8 = 64;
/// slirp's MAXTTL, for every ICMP packet it sends.
pub const MAX_TTL: u8 = 255;

/// The identification counter for IPv4 packets sent to the guest.
///
/// slirp numbers every IPv4 packet it emits from one counter that starts at 0; one `Ident`
/// per engine keeps that sequence.
#[derive(Debug, Default, Clone)]
pub struct Ident(u16);

impl Ident {
    pub fn new() -> Self {
        Self::default()
    }

    /// The identification for the next packet.
    pub fn next_id(&mut self) -> u16 {
        let id = self.0;
        self.0 = self.0.wrapping_add(1);
        id
    }
}

/// A guest IPv4 header that passed slirp's `ip_input` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestHeader {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: IpProtocol,
    pub tos: u8,
    pub ttl: u8,
    pub dont_frag: bool,
    /// More-fragments set or a non-zero offset: part of a datagram, not all of it.
    pub fragment: bool,
    /// Bytes of header, options included: where the payload starts.
    pub header_len: usize,
    /// Bytes of payload, up to the total length.
    pub payload_len: usize,
}

/// Checks the IPv4 header at the start of `packet` as slirp's `ip_input` does; `arrived` is
/// how many bytes of the packet the guest sent (`packet` may be a shorter copied prefix, but
/// holds the whole header). `None` if malformed.
pub fn parse(packet: &[u8], arrived: usize) -> Option<GuestHeader> {
    if packet.len() < HEADER_LEN {
        return None;
    }
    let ip = Ipv4Packet::new_unchecked(packet);
    let header_len = usize::from(ip.header_len());
    let total_len = usize::from(ip.total_len());
    if ip.version() != 4
        || header_len < HEADER_LEN
        || header_len > packet.len()
        || total_len < header_len
        || total_len > arrived.max(packet.len())
        || !ip.verify_checksum()
    {
        return None;
    }
    Some(GuestHeader {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        protocol: ip.next_header(),
        tos: (ip.dscp() << 2) | ip.ecn(),
        ttl: ip.hop_limit(),
        dont_frag: ip.dont_frag(),
        fragment: ip.more_frags() || ip.frag_offset() != 0,
        header_len,
        payload_len: total_len - header_len,
    })
}

/// The fields of an IPv4 header we emit.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: IpProtocol,
    pub tos: u8,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    /// Bytes after the header; the caller keeps `HEADER_LEN + payload_len` within 65535.
    pub payload_len: usize,
}

/// Writes `h` as a 20-byte header with its checksum into the start of `buf`
/// (which must hold at least [`HEADER_LEN`] bytes).
pub fn write_header(buf: &mut [u8], h: &Header) {
    let total = u16::try_from(HEADER_LEN + h.payload_len).unwrap_or(u16::MAX);
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..HEADER_LEN]);
    ip.set_version(4);
    ip.set_header_len(HEADER_LEN as u8);
    ip.set_dscp(h.tos >> 2);
    ip.set_ecn(h.tos & 0x3);
    ip.set_total_len(total);
    ip.set_ident(h.ident);
    ip.clear_flags();
    ip.set_dont_frag(h.dont_frag);
    ip.set_frag_offset(0);
    ip.set_hop_limit(h.ttl);
    ip.set_next_header(h.protocol);
    ip.set_src_addr(h.src);
    ip.set_dst_addr(h.dst);
    ip.fill_checksum();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload_len: usize) -> Header {
        Header {
            src: Ipv4Addr::new(10, 0, 2, 2),
            dst: Ipv4Addr::new(10, 0, 2, 15),
            protocol: IpProtocol::Udp,
            tos: 0x10,
            ttl: 64,
            ident: 7,
            dont_frag: false,
            payload_len,
        }
    }

    fn parse_all(packet: &[u8]) -> Option<GuestHeader> {
        parse(packet, packet.len())
    }

    #[test]
    fn written_header_parses_back() {
        let mut buf = vec![0u8; HEADER_LEN + 4];
        write_header(&mut buf, &header(4));
        let p = parse_all(&buf).expect("valid");
        assert_eq!(p.src, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(p.dst, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(p.tos, 0x10);
        assert_eq!(p.ttl, 64);
        assert!(!p.dont_frag && !p.fragment);
        assert_eq!(p.payload_len, 4);
        assert_eq!(&buf[4..6], &[0, 7]);
    }

    #[test]
    fn rejects_bad_checksum_version_and_lengths() {
        let mut buf = vec![0u8; HEADER_LEN + 4];
        write_header(&mut buf, &header(4));
        let mut bad = buf.clone();
        bad[10] ^= 1;
        assert!(parse_all(&bad).is_none());
        assert!(parse_all(&buf[..HEADER_LEN + 3]).is_none());
        assert!(parse_all(&buf[..10]).is_none());
        let mut v6 = buf.clone();
        v6[0] = 0x65;
        assert!(parse_all(&v6).is_none());
        // Trailing padding is not part of the packet.
        let mut padded = buf.clone();
        padded.extend_from_slice(&[0xaa; 10]);
        assert_eq!(parse_all(&padded).unwrap().payload_len, 4);
        // A copied prefix: the header alone, with what arrived beyond it counted.
        assert_eq!(parse(&buf[..HEADER_LEN], buf.len()).unwrap().payload_len, 4);
        assert!(parse(&buf[..HEADER_LEN], buf.len() - 1).is_none());
    }

    #[test]
    fn ident_counts_from_zero_and_wraps() {
        let mut id = Ident::new();
        assert_eq!(id.next_id(), 0);
        assert_eq!(id.next_id(), 1);
        id.0 = u16::MAX;
        assert_eq!(id.next_id(), u16::MAX);
        assert_eq!(id.next_id(), 0);
    }
}
